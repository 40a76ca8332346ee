"""The causal VAE's frame rule, in a leaf so that data/ can check it without importing models/.

A causal video VAE with temporal factor r encodes the first frame alone, then r frames
per latent frame: a clip must hold 1 + r*k pixel frames.
"""

from __future__ import annotations

from videogen.errors import UsageError


def check_frame_count(num_frames: int, temporal: int, what: str = "a clip to encode") -> None:
    """The causal VAE's frame rule, the one place it is checked: 1 + temporal*k pixel frames
    (the first frame alone, then `temporal` per latent frame). `what` names the setting."""
    if num_frames < 1 or (num_frames - 1) % temporal:
        below = max(1, 1 + (num_frames - 1) // temporal * temporal)
        raise UsageError(f"{what} needs 1+{temporal}k frames, not {num_frames}; "
                         f"use {below} or {below + temporal}")
