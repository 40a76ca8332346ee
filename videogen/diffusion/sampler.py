"""Streaming sampler: denoise one latent frame at a time with constant memory (design §6).

For each latent frame: start from noise, take Euler steps on the flow-matching sigmas,
with classifier-free guidance `v = v_u + w (v_c - v_u)` where the conditional and the
unconditional branch each carry their own per-layer state (they ride in one batch of 2B);
then *commit* the clean frame, re-noised to a small context level as in training, which
folds it into the states. Nothing grows with the number of frames. The next frame's first
Euler step starts from noise known before the commit, so it rides in the commit pass
(`PoMVideoDiT.prefill_then_step`): `steps` model calls per frame, not `steps` + 1.

`StreamingSampler` holds that state. `prime` commits given latents (continuation,
image-to-video) by the same commit pass, so the state after priming z_0..z_k is the one the
sampler reaches after producing them. A prompt change comes in at a latent-frame boundary:
a plain swap of the text context (the cross-mixer aggregates, computed once per prompt,
O(1)), or a re-commit of the last few committed latents, kept in a constant-size ring,
under the new prompt into a fresh state (design §10).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Dict, Optional

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
    # word -> its opposite (the pipeline's `contrast`): latent frames 1 .. contrast_frames - 1 of
    # a prompt naming one (where the motion begins) are guided away from the prompt with the
    # opposite word instead of from the empty prompt (contrastive guidance); null or 0: never
    contrast: Optional[Dict[str, str]] = None
    contrast_frames: int = 0


SWITCH_MODES = ("recommit", "swap")


@dataclass
class SamplerSettings:
    steps: int = 8
    guidance: float = 3.0
    context_noise: float = 0.05  # the sigma shift lives in the diffusers scheduler
    first_steps: Optional[int] = None  # the first latent frame's steps, on `even_sigmas` (a student's)


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
    return guide(model.step(torch.cat([x, x]), sigma.expand(2 * x.shape[0]), ctx, state), guidance)


def guide(v: torch.Tensor, guidance: float) -> torch.Tensor:
    """v_u + w (v_c - v_u) from velocities of 2B rows (conditional, then unconditional)."""
    if guidance == 1.0:
        return v
    v_c, v_u = v.chunk(2)
    return v_u + guidance * (v_c - v_u)


def even_sigmas(scheduler, steps: int) -> torch.Tensor:
    """`steps` sigmas evenly spaced before the scheduler's shift, then 0: (steps + 1,).
    For a few-step student's first frame: `euler_sigmas` puts the last step of any count at
    ~0.01 (the schedule's floor), so 2 steps there would be 1 step and a no-op; these give
    1, 0.75, 0 for 2 steps at shift 3."""
    scheduler.set_timesteps(sigmas=[1 - i / steps for i in range(steps)])
    return scheduler.sigmas.float().cpu()


class StreamingSampler:
    """The streaming sampler's state: per-layer states (conditional rows, then unconditional
    rows when guided), the text context, and a ring buffer of the last `ring` committed
    latent frames. Everything is a fixed size, so nothing grows with the number of frames.

    `prime` commits given latents (continuation, image-to-video) exactly as `next` commits
    its own output; `set_context` changes the prompt at the next latent frame, as a plain
    swap or by re-committing the ring under the new prompt into a fresh state (design §10).
    Noise is drawn on the CPU from `generator`, so a seed fixes the output on any device:
    per frame its start noise, then its commit noise, in that order whether or not the next
    frame's first step rode in the commit pass (`lookahead`).
    """

    def __init__(self, model: PoMVideoDiT, ctx: TextContext, latent_shape: tuple, settings: SamplerSettings,
                 scheduler, generator: torch.Generator, batch: int = 1, ring: int = 2):
        self.model, self.ctx, self.settings, self.generator = model, ctx, settings, generator
        self.latent_shape, self.batch = tuple(latent_shape), batch
        self.guided = settings.guidance != 1.0
        self.device, self.dtype = model.device, model.dtype  # each a walk over the modules: once
        self.state = model.init_state(self._rows(), self.device, self.dtype)
        self.sigmas = euler_sigmas(scheduler, settings.steps)
        self.dts = (self.sigmas[1:] - self.sigmas[:-1]).tolist()  # Python floats: no per-step .item()
        # the first latent frame, when it has steps of its own and nothing is committed before it
        self.first_sigmas = even_sigmas(scheduler, settings.first_steps) if settings.first_steps else None
        self.first_dts = None if self.first_sigmas is None else (self.first_sigmas[1:] - self.first_sigmas[:-1]).tolist()
        self.ring = deque(maxlen=ring)  # (clean latent, its commit noise), (B, C, H, W) each
        self.frames = 0  # latent frames committed
        # (the next frame's start noise, its first velocity or None once stale), drawn and
        # taken in the last commit pass with lookahead; None when there is none
        self._ahead: Optional[tuple] = None

    def _rows(self) -> int:
        return 2 * self.batch if self.guided else self.batch

    def _noise(self) -> torch.Tensor:
        return torch.randn(self.batch, *self.latent_shape, generator=self.generator).to(self.device, self.dtype)

    def _rows_of(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x]) if self.guided else x

    def _commit(self, clean: list, noise: list, level: float, state: list,
                following: Optional[torch.Tensor] = None) -> tuple:
        """Fold clean latent frames [(B, C, H, W)], each re-noised to `level` with its noise,
        into `state` in one pass (the commit pass). Returns (the new state, the guided velocity
        of the noise `following` (B, C, H, W) at the first sigma, taken in the same pass, or
        None without it)."""
        x = self._rows_of(torch.stack([(1 - level) * z + level * n for z, n in zip(clean, noise)], dim=2))
        t = torch.full(x.shape[:1] + x.shape[2:3], level, device=x.device, dtype=x.dtype)
        if following is None:
            return self.model.prefill(x, t, self.ctx, state), None
        nxt = self._rows_of(following)
        v, state = self.model.prefill_then_step(x, t, nxt, self.sigmas[0].expand(nxt.shape[0]), self.ctx, state)
        return state, guide(v, self.settings.guidance)

    def _fold(self, clean: list, noise: list, lookahead: bool = False) -> None:
        following = self._noise() if lookahead else None  # drawn after the commit noise, as `next` would
        self.state, v = self._commit(clean, noise, self.settings.context_noise, self.state, following)
        if following is not None:
            self._ahead = (following, v)
        self.ring.extend(zip(clean, noise))
        self.frames += len(clean)

    def _stale(self) -> None:
        """The state or the prompt changed: a velocity taken ahead no longer holds (its noise does)."""
        if self._ahead is not None:
            self._ahead = (self._ahead[0], None)

    @torch.no_grad()
    def prime(self, latents: torch.Tensor, noise: Optional[torch.Tensor] = None) -> None:
        """Commit given clean latents (B, C, F, H, W) as context, as `next` commits its own
        output; `noise` (B, C, F, H, W) replaces the drawn commit noise (tests)."""
        clean = list(latents.unbind(dim=2))
        self._stale()
        self._fold(clean, [self._noise() for _ in clean] if noise is None else list(noise.unbind(dim=2)))

    @torch.no_grad()
    def next(self, lookahead: bool = True) -> torch.Tensor:
        """Denoise the next latent frame, commit it, and return it clean, (B, C, H, W).

        With `lookahead` the commit pass also takes the next frame's first step (its start
        noise is drawn now); pass False for the last frame wanted, which has no next. The
        first latent frame of an unprimed stream takes `first_steps` when set."""
        x, v = self._ahead if self._ahead is not None else (self._noise(), None)
        self._ahead = None
        first = self.frames == 0 and self.first_sigmas is not None
        sigmas, dts = (self.first_sigmas, self.first_dts) if first else (self.sigmas, self.dts)
        for i, dt in enumerate(dts):
            if i or v is None:  # a velocity taken ahead is at sigma 1, where every schedule starts
                v = guided_velocity(self.model, x, sigmas[i], self.ctx, self.state, self.settings.guidance)
            x = x + dt * v
        self._fold([x], [self._noise()], lookahead)
        return x

    @torch.no_grad()
    def set_context(self, ctx: TextContext, mode: str = "recommit", level: Optional[float] = None) -> None:
        """The prompt from the next latent frame on. `swap`: only the text context changes
        (O(1)); the state keeps every frame committed under the old prompt, whose λ = 1
        channels hold it for long. `recommit`: a fresh state, into which the ring's frames
        are re-committed under the new prompt (at noise `level`, default the context noise),
        so position and motion carry over and the old prompt's long-term average does not
        (O(ring)). Frame indices go on counting."""
        if mode not in SWITCH_MODES:
            raise UsageError(f"unknown switch mode '{mode}': use {' or '.join(SWITCH_MODES)}")
        self.ctx = ctx
        self._stale()
        if mode == "swap" or not self.ring:
            return
        fresh = self.model.init_state(self._rows(), self.device, self.dtype)
        for block_state in fresh:
            block_state.frames = self.frames - len(self.ring)
        clean, noise = zip(*self.ring)
        level = self.settings.context_noise if level is None else level
        self.state = self._commit(list(clean), list(noise), level, fresh)[0]
