"""Streaming sampler: denoise one latent frame at a time with constant memory (design §6).

For each latent frame: start from noise, take Euler steps on the flow-matching sigmas,
with classifier-free guidance `v = v_u + w (v_c - v_u)` where the conditional and the
unconditional branch each carry their own per-layer state (they ride in one batch of 2B);
then *commit* the clean frame, re-noised to a small context level as in training, which
folds it into the states. Nothing grows with the number of frames.

A prompt schedule swaps the text context (the cross-mixer aggregates, computed once per
prompt) at a latent-frame boundary, at O(1) cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import torch

from videogen.errors import UsageError
from videogen.models.dit import PoMVideoDiT, TextContext


@dataclass
class SamplingConfig:
    steps: int = 8
    guidance: float = 3.0
    shift: float = 3.0
    context_noise: float = 0.05
    fps: int = 8


@dataclass
class SamplerSettings:
    steps: int = 8
    guidance: float = 3.0
    context_noise: float = 0.05  # the sigma shift lives in the diffusers scheduler


# ------------------------------------------------------------------------ prompt schedule
def parse_prompt_schedule(text: str) -> list:
    """'0:a red circle;120:a blue square' -> [(0, 'a red circle'), (120, 'a blue square')].

    Video-frame indices, strictly increasing, starting at 0.
    """
    entries = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        match = re.fullmatch(r"(\d+)\s*:\s*(.+)", part)
        if not match:
            raise UsageError(f"bad prompt-schedule entry '{part}': write FRAME:PROMPT, e.g. '0:a red circle;120:a blue square'")
        entries.append((int(match.group(1)), match.group(2).strip()))
    if not entries:
        raise UsageError("empty --prompt-schedule: write FRAME:PROMPT entries separated by ';'")
    frames = [f for f, _ in entries]
    if frames[0] != 0 or any(b <= a for a, b in zip(frames, frames[1:])):
        raise UsageError("--prompt-schedule frames must start at 0 and increase, e.g. '0:a red circle;120:a blue square'")
    return entries


def latent_index_for_frame(frame: int, temporal: int) -> int:
    """The first latent frame whose pixels start at or after video frame `frame`.

    Latent 0 decodes to pixel frame 0, latent k >= 1 to pixels 1+temporal*(k-1) .. temporal*k.
    """
    return 0 if frame <= 0 else -(-(frame - 1) // temporal) + 1


# --------------------------------------------------------------------------------- sampler
def euler_sigmas(scheduler, steps: int) -> torch.Tensor:
    """The diffusers flow-matching scheduler's shifted sigmas, (steps + 1,), from ~1 down to 0."""
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.float().cpu()


def guided_velocity(model: PoMVideoDiT, x: torch.Tensor, sigma: torch.Tensor, ctx: TextContext,
                    state: list, guidance: float) -> torch.Tensor:
    """One model call for both CFG branches. x (B, C, H, W); ctx/state hold 2B rows when guided."""
    if guidance == 1.0:
        return model.step(x, sigma.expand(x.shape[0]), ctx, state)
    v = model.step(torch.cat([x, x]), sigma.expand(2 * x.shape[0]), ctx, state)
    v_c, v_u = v.chunk(2)
    return v_u + guidance * (v_c - v_u)


def stream_latents(
    model: PoMVideoDiT,
    contexts: Sequence,
    num_latent_frames: int,
    latent_shape: tuple,
    settings: SamplerSettings,
    scheduler,
    generator: torch.Generator,
    batch: int = 1,
) -> Iterator[torch.Tensor]:
    """Yield clean latent frames (B, C, H, W) one by one.

    `contexts` is a list of (first latent frame, TextContext) sorted by frame; with guidance
    each TextContext holds the conditional rows then the unconditional rows (2B).
    Noise is drawn on the CPU from `generator`, so a seed fixes the output on any device.
    """
    device, dtype = model.device, model.dtype
    guided = settings.guidance != 1.0
    state = model.init_state(2 * batch if guided else batch, device, dtype)
    sigmas = euler_sigmas(scheduler, settings.steps)
    ctx_noise = torch.tensor(settings.context_noise)
    schedule = list(contexts)
    ctx = schedule.pop(0)[1]
    for f in range(num_latent_frames):
        while schedule and schedule[0][0] <= f:
            ctx = schedule.pop(0)[1]
        x = torch.randn(batch, *latent_shape, generator=generator).to(device, dtype)
        with torch.no_grad():
            for i in range(settings.steps):
                v = guided_velocity(model, x, sigmas[i], ctx, state, settings.guidance)
                x = x + (sigmas[i + 1] - sigmas[i]).item() * v
            noise = torch.randn(batch, *latent_shape, generator=generator).to(device, dtype)
            context_frame = (1 - ctx_noise) * x + ctx_noise * noise
            if guided:
                context_frame = torch.cat([context_frame, context_frame])
            state = model.commit(context_frame, ctx_noise.expand(context_frame.shape[0]), ctx, state)
        yield x

