"""A streaming session: iterate it for frames, steer it with `set_prompt` (design §10).

    stream = pipe.stream("a red circle moving right", init_frames=clip)
    for i, frame in enumerate(stream):       # (H, W, 3) uint8, each as soon as it is decoded
        if i == 120:
            stream.set_prompt("a blue square moving left")   # from the next latent frame on

Given frames (continuation, image-to-video) go through the causal VAE encoder chunk by
chunk (1 frame, then 4) with its feature cache, and each latent is committed into the
per-layer states as the sampler commits its own output, so memory stays constant in the
clip's length. The decoder's cache is warmed on the same latents, so the first new frames
continue the clip. The session owns the sampler (states, text context, ring buffer of the
last committed latents); nothing in it grows with the number of frames.

Switch modes (`switch=`): `recommit` (default) re-commits the last `ring` committed latent
frames under the new prompt into a fresh state, at a raised noise level, which bounds how
long the old prompt lingers (the λ = 1 channels forget it) while the buffered frames carry
position and motion over; `swap` only swaps the text context, so the old prompt fades
slowly (the λ = 1 channels average over every frame committed under it).
"""

from __future__ import annotations

import copy
import logging
import math
from collections import deque
from typing import Iterable, Iterator, Optional

import numpy as np
import torch

from videogen.data.datasets import clip_to_tensor
from videogen.diffusion.sampler import SWITCH_MODES, SamplerSettings, StreamingSampler
from videogen.errors import UsageError
from videogen.models.vae import StreamingDecoder, StreamingEncoder, check_video_size, frames_to_uint8, vae_factors

logger = logging.getLogger("videogen")

DEFAULT_SWITCH = "recommit"
DEFAULT_RING = 2  # latent frames re-committed on a switch (design §10: 2 bounded it best)
# Noise level of the re-committed frames: above the context noise, so the new frames keep
# where the object is and how it moves, but trust its old colour and shape less (diffusion
# forcing trains on every noise level per frame, so a noisier context is in distribution).
# Probed on 9 prompt pairs outside the benchmark's: median 4 frames to the new colour and
# shape (swap 5, re-commit at the context noise 5); red circle -> blue square 2 (swap 17).
DEFAULT_RECOMMIT_NOISE = 0.9
PRIME_CHUNK = 8  # given latents committed per parallel pass: constant memory, fewer calls


def sampler_settings(config, steps: Optional[int], guidance: Optional[float],
                     context_noise: Optional[float]) -> SamplerSettings:
    """The pipeline's own settings (model_index.json) with the caller's overrides, checked.
    The pipeline's first-frame steps (a distilled student's) hold only with its own steps."""
    settings = SamplerSettings(steps=steps or config.steps,
                               guidance=config.guidance if guidance is None else guidance,
                               context_noise=config.context_noise if context_noise is None else context_noise,
                               first_steps=config.get("first_steps") if steps is None else None)
    check_sampling(settings.steps, settings.guidance, settings.context_noise)
    return settings


def check_sampling(steps: Optional[int], guidance: Optional[float], context_noise: Optional[float]) -> None:
    """The sampler's settings a user can get wrong (None: the pipeline's own, not checked)."""
    if steps is not None and steps < 1:
        raise UsageError(f"--steps must be at least 1, not {steps}")
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise UsageError(f"--guidance must be a finite number >= 0, not {guidance}")
    if context_noise is not None and not (math.isfinite(context_noise) and 0 <= context_noise < 1):
        raise UsageError(f"--context-noise must be in [0, 1), not {context_noise}")


def check_switch(switch: str, ring: int, recommit_noise: Optional[float]) -> None:
    if switch not in SWITCH_MODES:
        raise UsageError(f"unknown --switch '{switch}': use {' or '.join(SWITCH_MODES)}")
    if ring < 1:
        raise UsageError(f"--recommit-frames must be at least 1, not {ring}")
    if recommit_noise is not None and not 0 <= recommit_noise < 1:
        raise UsageError(f"--recommit-noise must be in [0, 1), not {recommit_noise}")


def check_prompt(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise UsageError("the prompt is empty; describe the video, e.g. \"a blue square moving left\"")
    return text


class StreamSession:
    """Frames from a prompt, optionally after given frames, steerable while it runs.

    num_frames: new frames to generate (None: endless). init_frames: any iterable of
    (H, W, 3) uint8 frames to continue (one frame: image-to-video); frames of another size
    are resized to cover the model's H x W, keeping their aspect ratio, and centre-cropped;
    a clip of 1+4k+r frames loses its last r.
    include_init: yield the given frames (as resized) before the new ones.
    switch, ring, recommit_noise: how `set_prompt` comes in (module docstring); ring latent
    frames are re-committed at noise level recommit_noise (None: the context noise).
    """

    def __init__(self, pipe, prompt: str, num_frames: Optional[int] = None, *,
                 init_frames: Optional[Iterable] = None, include_init: bool = True, seed: int = 0,
                 steps: Optional[int] = None, guidance: Optional[float] = None,
                 context_noise: Optional[float] = None, switch: str = DEFAULT_SWITCH, ring: int = DEFAULT_RING,
                 recommit_noise: Optional[float] = DEFAULT_RECOMMIT_NOISE, height: Optional[int] = None,
                 width: Optional[int] = None):
        if num_frames is not None and num_frames < 1:
            raise UsageError(f"--frames must be at least 1, not {num_frames}")
        check_switch(switch, ring, recommit_noise)
        self.pipe, self.num_frames, self.switch, self.recommit_noise = pipe, num_frames, switch, recommit_noise
        self.height, self.width = height or pipe.config.height, width or pipe.config.width
        check_video_size(pipe.vae, self.height, self.width, patch_size=pipe.transformer.config.patch_size)
        settings = sampler_settings(pipe.config, steps, guidance, context_noise)
        self.temporal, spatial = vae_factors(pipe.vae)
        latent_shape = (pipe.transformer.config.in_channels, self.height // spatial, self.width // spatial)
        self.guided = settings.guidance != 1.0
        self.prompt = check_prompt(prompt)
        self.sampler = StreamingSampler(pipe.transformer, pipe.encode(self.prompt, self.guided), latent_shape,
                                        settings, pipe.scheduler, torch.Generator().manual_seed(seed), ring=ring)
        self.decoder = StreamingDecoder(pipe.vae)
        self.init_frames, self.include_init = init_frames, include_init
        self.given = 0  # given frames used (committed)
        self.generated = 0  # new frames yielded so far
        self._pending: Optional[str] = None
        self._resize_logged = False
        self._decoded: deque = deque()  # frames of the last latent not yet yielded

    def set_prompt(self, text: str) -> None:
        """The prompt from the next latent frame on (its text context is computed now, once)."""
        check_prompt(text)
        self._pending = text

    def fork(self) -> "StreamSession":
        """An independent copy of this session as it stands (states, ring, text context, noise
        generator, decoder cache, frames decoded but not yet yielded), sharing the pipeline:
        e.g. to try two prompts from one point. Iterating it goes on where this one is."""
        if self.init_frames is not None:
            raise RuntimeError("fork a session after its given frames are committed")
        pipe = self.pipe
        shared = [pipe, pipe.transformer, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler]
        return copy.deepcopy(self, memo={id(m): m for m in shared})

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.init_frames is not None:
            frames, self.init_frames = self.init_frames, None
            yield from self._prime(frames)
        while self.num_frames is None or self.generated < self.num_frames:
            if not self._decoded:
                self._apply_pending()
                latent = self.sampler.next(lookahead=not self._last_latent())
                self._decoded.extend(frames_to_uint8(self.decoder.push(latent))[0])  # push casts to the VAE's dtype
            self.generated += 1
            yield self._decoded.popleft()

    def _last_latent(self) -> bool:
        """Whether the next latent frame gives the last frames wanted (then the sampler need
        not take the first step of one more)."""
        if self.num_frames is None:
            return False
        return self.num_frames - self.generated <= (1 if self.decoder.frames_pushed == 0 else self.temporal)

    def _apply_pending(self) -> None:
        if self._pending is not None and self._pending != self.prompt:
            self.sampler.set_context(self.pipe.encode(self._pending, self.guided), self.switch, self.recommit_noise)
            self.prompt = self._pending
        self._pending = None

    # ------------------------------------------------------------------------ priming
    def _prime(self, frames: Iterable) -> Iterator[np.ndarray]:
        """Encode, commit (and yield, if asked) the given frames, chunk by chunk."""
        encoder, chunk, latents = StreamingEncoder(self.pipe.vae), [], []
        for frame in frames:
            chunk.append(self._checked(frame))
            if len(chunk) < encoder.chunk_size():
                continue
            pixels = clip_to_tensor(np.stack(chunk), (self.height, self.width))[None]  # (1, 3, n, H, W)
            chunk = []
            if self.include_init:
                yield from frames_to_uint8(pixels)[0]
            latent = encoder.push(pixels)
            self.decoder.push(latent)  # warm the decoder's cache: the new frames continue these
            latents.append(latent.to(self.pipe.transformer.dtype))
            if len(latents) == PRIME_CHUNK:
                self.sampler.prime(torch.stack(latents, dim=2))
                latents = []
        if latents:
            self.sampler.prime(torch.stack(latents, dim=2))
        self.given = encoder.frames_pushed
        if not self.given:
            raise UsageError("the init frames are empty: give at least one frame")
        if chunk:
            logger.info("the last %d given frame(s) are left out: the causal VAE encodes 1+%dk frames "
                        "(%d used)", len(chunk), self.temporal, self.given)

    def _checked(self, frame) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise UsageError(f"init frames must be (H, W, 3) uint8 RGB arrays, not {frame.dtype} {frame.shape}")
        if frame.shape[:2] != (self.height, self.width) and not self._resize_logged:
            self._resize_logged = True
            logger.info("init frames of %dx%d are resized to cover %dx%d (WxH), keeping their aspect ratio, "
                        "and centre-cropped to it",
                        frame.shape[1], frame.shape[0], self.width, self.height)
        return frame
