"""Which stored frames a clip read at another frame rate takes, and gathering them.

A clip resampled to `fps` is the stored frames nearest to the times 0, 1/fps, ... that
fall inside the clip; a window of it is a slice of that list, counted after resampling.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def nearest_indices(num_stored: int, stored_fps: float, fps: Optional[float]) -> np.ndarray:
    """Stored-frame indices nearest to the times 0, 1/fps, ... within the clip (all with fps None)."""
    if fps is None:
        return np.arange(num_stored)
    count = max(1, math.ceil(num_stored * fps / stored_fps - 1e-9))
    times = np.arange(count) / fps
    return np.minimum(np.floor(times * stored_fps + 0.5).astype(np.int64), num_stored - 1)


def source_index(k: int, stored_fps: float, fps: Optional[float]) -> int:
    """`nearest_indices(...)[k]` before its clamp to the last frame, by the same float steps:
    for a stream read in order, whose length is known only at its end."""
    return k if fps is None else int(math.floor(k / fps * stored_fps + 0.5))


def window(items, start: int, num_frames: Optional[int]):
    """items[start:start + num_frames] (to the end when num_frames is None)."""
    return items[start:None if num_frames is None else start + num_frames]


def collect_frames(frames, capacity: Optional[int]) -> np.ndarray:
    """(F, H, W, 3) from an iterator of (H, W, 3) frames; (0, 0, 0, 3) when it is empty.

    With a known capacity (at most that many frames) they go into one array as they come,
    so the clip is never held twice, as by a list and its np.stack.
    """
    if capacity is None:
        kept = list(frames)
        return np.stack(kept) if kept else np.zeros((0, 0, 0, 3), np.uint8)
    out, count = None, 0
    for frame in frames:
        if out is None:
            out = np.empty((capacity, *frame.shape), frame.dtype)
        out[count] = frame
        count += 1
    return np.zeros((0, 0, 0, 3), np.uint8) if out is None else out[:count]
