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
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
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


def contrast_prompt(prompt: str, contrast: dict) -> str:
    """The prompt with each word of `contrast` swapped for its opposite ("a red circle moving
    left" -> "a red circle moving right"), or "" when it names none of them.

    Guidance from such a prompt (contrastive guidance: v = v_contrast + w (v_prompt - v_contrast))
    amplifies only what the two prompts differ in: here the sign of the motion, which the
    default model otherwise took from the seed (`StreamSession`, benchmarks/direction_probe.py)."""
    if not contrast:
        return ""
    table = {word.lower(): opposite for word, opposite in contrast.items()}
    words = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(table, key=len, reverse=True)) + r")\b",
                       re.IGNORECASE)
    swapped = words.sub(lambda m: table[m.group(0).lower()], prompt)
    return "" if swapped == prompt else swapped


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
    schedule: (new-frame index, prompt) pairs known in advance (`pipe(prompt_schedule=...)`):
    each comes in at the latent frame a `set_prompt` right after that frame would.
    decode_ahead: decode each latent frame on a second thread while the next one is sampled
    (`_iter_ahead`): the same frames, sooner; a `set_prompt` comes in one latent frame later.
    negative_prompt: what guidance steers away from, for this and every later prompt. None:
    the empty prompt, except at the start of a video from a prompt alone (no init frames),
    where the pipeline names `contrast` words: its latent frames 1 .. `contrast_frames` - 1
    (where the motion begins) are guided away from the contrast prompt (`contrast_prompt`:
    "moving left" from "moving right"), which sets the sign of the motion from the prompt
    rather than the seed. Into and out of that window the frames in the ring are
    re-committed into a fresh state under the new negative prompt, which (with
    contrast_frames <= ring) is exactly the state a stream guided from it all along reaches
    on those frames. After the start, the motion carries on (bounces included) under plain
    guidance.
    """

    def __init__(self, pipe, prompt: str, num_frames: Optional[int] = None, *,
                 init_frames: Optional[Iterable] = None, include_init: bool = True, seed: int = 0,
                 steps: Optional[int] = None, guidance: Optional[float] = None,
                 context_noise: Optional[float] = None, switch: str = DEFAULT_SWITCH, ring: int = DEFAULT_RING,
                 recommit_noise: Optional[float] = DEFAULT_RECOMMIT_NOISE, height: Optional[int] = None,
                 width: Optional[int] = None, schedule: Iterable = (), decode_ahead: bool = False,
                 negative_prompt: Optional[str] = None):
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
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise UsageError(f"the negative prompt must be text, not {type(negative_prompt).__name__}")
        self.negative_prompt = negative_prompt
        contrast, until = pipe.config.get("contrast") or {}, pipe.config.get("contrast_frames") or 0
        # (a ring shorter than the window could not re-commit the whole start: no contrast then)
        self.contrast_until = until if (contrast and self.guided and negative_prompt is None
                                        and init_frames is None and ring >= until) else 0
        self._negative: Optional[str] = None  # the negative prompt the text context was built with
        self.sampler = StreamingSampler(pipe.transformer, self._encode(self.prompt, 0), latent_shape,
                                        settings, pipe.scheduler, torch.Generator().manual_seed(seed), ring=ring)
        self.decoder = StreamingDecoder(pipe.vae)
        self.init_frames, self.include_init = init_frames, include_init
        self.given = 0  # given frames used (committed)
        self.generated = 0  # new frames yielded so far
        self.sampled = 0  # new frames whose latent frame is sampled (yielded, decoded or being decoded)
        self._pushes = 0  # latent frames handed to the decoder, given ones included
        self.schedule = deque(schedule)  # (new-frame index, prompt): prompt changes known in advance
        if any(b[0] <= a[0] for a, b in zip(self.schedule, list(self.schedule)[1:])):
            raise UsageError("a prompt schedule's frames must increase, e.g. [(120, 'a blue square')]")
        self.decode_ahead = decode_ahead
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
        yield from (self._iter_ahead() if self.decode_ahead else self._iter_in_turn())

    def _iter_in_turn(self) -> Iterator[np.ndarray]:
        """Sample a latent frame, decode it, yield its frames; then the next."""
        while self.num_frames is None or self.generated < self.num_frames:
            if not self._decoded:
                self._decoded.extend(self._decode(self._sample_latent()))
            self.generated += 1
            yield self._decoded.popleft()

    def _iter_ahead(self) -> Iterator[np.ndarray]:
        """Decode on a second thread while the next latent frame is sampled (`decode_ahead`).

        After the first latent frame (decoded and yielded at once: the time to the first
        frame is as in turn), latent frame k + 1 is sampled while frame k decodes, and frame
        k + 1 decodes while the frames of k are consumed. The frames are the same as in turn:
        the decoder takes the latents in order, and a `schedule` comes in at the same latent
        frames. A `set_prompt` call comes in one latent frame later than in turn, since the
        next one is already sampled. On the CPU the threads are shared between the two: on a
        2-core machine the default model's DiT runs faster on one thread than on two, and its
        decoder gains nothing from a second (`videogen generate`, 240 frames: 0.65x the
        default's time of decoding in turn, benchmarks/results/cli_speed.json).
        """
        if self._decoded:
            raise RuntimeError("decode_ahead needs a session whose decoded frames are all yielded")
        threads = self._split_threads()
        pool = ThreadPoolExecutor(1, thread_name_prefix="videogen-decode",
                                  initializer=None if threads is None else torch.set_num_threads,
                                  initargs=() if threads is None else (threads[1],))
        inflight, first = None, True  # the decode of the latest latent frame sampled
        try:
            while self.num_frames is None or self.generated < self.num_frames:
                if inflight is None:
                    inflight = pool.submit(self._decode, self._sample_latent())
                ahead = None if first or not self._wants_more() else self._sample_latent()
                first = False
                frames = inflight.result()
                inflight = None if ahead is None else pool.submit(self._decode, ahead)
                for frame in frames:
                    if self.num_frames is not None and self.generated >= self.num_frames:
                        break
                    self.generated += 1
                    yield frame
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # no decode runs on once the caller stops
            if threads is not None:
                torch.set_num_threads(threads[2])

    def _split_threads(self) -> Optional[tuple]:
        """(sampler's, decoder's, before) CPU threads for `_iter_ahead`: half each, the sampler
        keeping the odd one; None off the CPU."""
        if self.pipe.transformer.device.type != "cpu":
            return None
        before = torch.get_num_threads()
        decoder = max(1, before // 2)
        sampler = max(1, before - decoder)
        torch.set_num_threads(sampler)  # this thread's; the decode thread sets its own
        return sampler, decoder, before

    def _wants_more(self) -> bool:
        return self.num_frames is None or self.sampled < self.num_frames

    def _decode(self, latent: torch.Tensor) -> list:
        return list(frames_to_uint8(self.decoder.push(latent))[0])  # push casts to the VAE's dtype

    def _sample_latent(self) -> torch.Tensor:
        """The next latent frame, under the prompt due at its first frame (a pending
        `set_prompt`, then the schedule's entries up to that frame)."""
        while self.schedule and self.schedule[0][0] <= self.sampled:
            self._pending = self.schedule.popleft()[1]
        self._apply_pending()
        frames = 1 if self._pushes == 0 else self.temporal
        last = self.num_frames is not None and self.num_frames - self.sampled <= frames
        latent = self.sampler.next(lookahead=not last)  # the last frames wanted need no step of one more
        self._update_contrast()
        self._pushes += 1
        self.sampled += frames
        return latent

    def _negative_for(self, prompt: str, frames: int) -> Optional[str]:
        """What guidance steers away from for the latent frame after `frames` committed ones:
        the contrast prompt in the contrast window (`_in_contrast`), where it has one, else
        the session's negative prompt (None: the empty prompt)."""
        if self._in_contrast(frames):
            return contrast_prompt(prompt, self.pipe.config.contrast) or self.negative_prompt
        return self.negative_prompt

    def _encode(self, prompt: str, frames: int):
        """The text context of `prompt` for the latent frame after `frames` committed ones;
        `_negative` records the negative prompt it was built with."""
        self._negative = self._negative_for(prompt, frames)
        return self.pipe.encode(prompt, self.guided, self._negative)

    def _in_contrast(self, frames: int) -> bool:
        """Latent frames 1 .. contrast_frames - 1 are contrast-guided. Frame 0 is a still
        image, with no motion to contrast: guided from the empty prompt, so its colour and
        shape get the whole guidance."""
        return 1 <= frames < self.contrast_until

    def _update_contrast(self) -> None:
        """Into and out of the contrast window: the ring re-committed into a fresh state under
        the new negative prompt (at the context noise, with the frames' own commit noise), so
        the state is exactly that of a stream guided from that negative all along."""
        frames = self.sampler.frames
        if self.contrast_until and self._negative_for(self.prompt, frames) != self._negative:
            self.sampler.set_context(self._encode(self.prompt, frames), "recommit")

    def _apply_pending(self) -> None:
        if self._pending is not None and self._pending != self.prompt:
            self.sampler.set_context(self._encode(self._pending, self.sampler.frames), self.switch,
                                     self.recommit_noise)
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
            self._pushes += 1
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
