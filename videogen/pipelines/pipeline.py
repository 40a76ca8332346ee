"""VideoGenPipeline: T5/UMT5 text encoder -> PoM video DiT (streaming) -> causal VAE -> frames.

A diffusers `DiffusionPipeline`, so a model is a directory in the diffusers layout
(`model_index.json`, `transformer/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`)
written by `save_pretrained` and read by `from_pretrained`, weights in safetensors.
Calling the pipeline yields RGB frames as soon as each is final, so callers can stream.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
from dataclasses import asdict
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import logging as diffusers_logging

from videogen.data.datasets import size_hw
from videogen.errors import UsageError
from videogen.models.dit import PoMVideoDiT
from videogen.diffusion.sampler import parse_prompt_schedule
from videogen.pipelines.stream import DEFAULT_RECOMMIT_NOISE, DEFAULT_RING, DEFAULT_SWITCH, StreamSession, check_sampling, check_switch

logger = logging.getLogger("videogen")

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "default_model")
DEFAULT_FAST = "default-fast"  # --model name of the embedded model's distilled few-step student
DEFAULT_FAST_DIR = os.path.join(DEFAULT_MODEL_DIR, "fast")  # its transformer and sampling.json
SAMPLER_KEYS = ("steps", "guidance", "context_noise", "first_steps")  # a pipeline's sampler settings
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


class VideoGenPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer->vae"

    def __init__(self, transformer: PoMVideoDiT, vae, text_encoder, tokenizer, scheduler,
                 height: int = 64, width: int = 64, fps: int = 8, steps: int = 8, guidance: float = 3.0,
                 context_noise: float = 0.05, max_text_length: int = 32, first_steps: Optional[int] = None,
                 contrast: Optional[dict] = None, contrast_frames: int = 0):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              scheduler=scheduler)
        # first_steps: the first latent frame's steps when it differs (a distilled student's)
        # contrast: word -> its opposite. Latent frames 1 .. contrast_frames - 1 of a video made
        # from a prompt alone (where the motion begins) are guided away from the prompt with the
        # opposite word rather than from the empty prompt (contrastive guidance; `StreamSession`)
        self.register_to_config(height=height, width=width, fps=fps, steps=steps, guidance=guidance,
                                context_noise=context_noise, max_text_length=max_text_length, first_steps=first_steps,
                                contrast=contrast, contrast_frames=contrast_frames)

    # ---------------------------------------------------------------------------- text
    def encode(self, prompt: str, guided: bool, negative_prompt: Optional[str] = None):
        """One TextContext for a prompt: its rows, then, when guided, the rows of the prompt
        guidance steers away from (`negative_prompt`; None: the empty prompt)."""
        from videogen.models.text import encode_prompts

        prompts = [prompt, negative_prompt or ""] if guided else [prompt]
        emb, mask = encode_prompts(self.tokenizer, self.text_encoder, prompts, self.config.max_text_length,
                                   device=self.transformer.device)
        with torch.no_grad():
            return self.transformer.encode_text(emb.to(self.transformer.dtype), mask)

    # -------------------------------------------------------------------------- frames
    def stream(self, prompt: str, num_frames: Optional[int] = None, **kwargs) -> StreamSession:
        """A streaming session: iterate it for frames; `set_prompt(text)` takes effect at the
        next latent frame. Keywords as `StreamSession` (init_frames, seed, switch, ...)."""
        return StreamSession(self, prompt, num_frames, **kwargs)

    @torch.no_grad()
    def __call__(self, prompt: str, num_frames: int = 240, *, steps: Optional[int] = None,
                 guidance: Optional[float] = None, context_noise: Optional[float] = None, seed: int = 0,
                 prompt_schedule: Optional[str] = None, height: Optional[int] = None,
                 width: Optional[int] = None, init_frames: Optional[Iterable] = None,
                 include_init_frames: bool = True, switch: str = DEFAULT_SWITCH,
                 recommit_frames: int = DEFAULT_RING,
                 recommit_noise: Optional[float] = DEFAULT_RECOMMIT_NOISE,
                 decode_ahead: bool = True, negative_prompt: Optional[str] = None) -> Iterator[np.ndarray]:
        """Yield RGB frames (H, W, 3) uint8, each as soon as it is decoded: the given
        `init_frames` (any iterable of (H, W, 3) uint8; see `StreamSession`) unless
        `include_init_frames` is False, then `num_frames` new frames.

        steps, guidance and context_noise default to the pipeline's own (model_index.json).
        A `prompt_schedule` ('0:a red circle;120:a blue square') counts new frames; each
        change comes in by `switch` ('recommit' or 'swap'). `decode_ahead` decodes each
        latent frame on a second thread while the next is sampled: the same frames, sooner
        (`StreamSession._iter_ahead`). `negative_prompt`: what guidance steers away from, for
        every frame (None: the empty prompt, but the contrast prompt for latent frames 1 ..
        contrast_frames - 1 of a video from a prompt alone, where the pipeline names contrast words).
        """
        schedule = parse_prompt_schedule(prompt_schedule) if prompt_schedule else [(0, prompt)]
        session = self.stream(schedule.pop(0)[1], num_frames, init_frames=init_frames,
                              include_init=include_init_frames, seed=seed, steps=steps, guidance=guidance,
                              context_noise=context_noise, switch=switch, ring=recommit_frames,
                              recommit_noise=recommit_noise, height=height, width=width, schedule=schedule,
                              decode_ahead=decode_ahead, negative_prompt=negative_prompt)
        yield from session


# ------------------------------------------------------------------------- components
def shapes_corpus() -> list:
    """Every caption form of the shapes world: the tokenizer vocabulary of a fresh pipeline."""
    from videogen.data.shapes import CAPTION_FORMS, COLOURS, MOTIONS, SHAPES

    return [form.format(colour=c, shape=s, motion=m)
            for c in COLOURS for s in SHAPES for m in MOTIONS for form in CAPTION_FORMS]


def build_components(cfg, seed: int = 0) -> dict:
    """Random (or, where a config names a local directory, pretrained) pipeline parts, from a
    config's model, vae, text and sampling sections."""
    from videogen.models.text import build_text_encoder, build_tokenizer, encoder_vocab_size, load_text_components
    from videogen.models.vae import build_vae

    torch.manual_seed(seed)
    t = cfg.text
    if t.pretrained:
        tokenizer, text_encoder = load_text_components(t.pretrained, tokenizer_path=t.tokenizer)
        if text_encoder.config.model_type != t.model_type:
            raise UsageError(f"text.model_type is {t.model_type}, but the encoder in '{t.pretrained}' is a "
                             f"{text_encoder.config.model_type}: set text.model_type={text_encoder.config.model_type}")
    else:
        tokenizer = build_tokenizer(shapes_corpus())
        text_encoder = build_text_encoder(t, vocab_size=encoder_vocab_size(t, tokenizer))
    vae = build_vae(cfg.vae)
    transformer = PoMVideoDiT(in_channels=vae.config.z_dim, text_dim=text_encoder.config.d_model,
                              **asdict(cfg.model))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=cfg.sampling.shift)
    return dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                scheduler=scheduler)


def pipeline_from_components(cfg, components: dict) -> VideoGenPipeline:
    """A pipeline of `components`, its settings from a config's sampling, data and text sections."""
    s = cfg.sampling
    height, width = size_hw(cfg.data.size)
    return VideoGenPipeline(**components, height=height, width=width, fps=s.fps, steps=s.steps,
                            guidance=s.guidance, context_noise=s.context_noise, max_text_length=cfg.text.max_length,
                            contrast=dict(s.contrast) if s.contrast else None, contrast_frames=s.contrast_frames)


def save_pipeline(pipe: VideoGenPipeline, directory: str) -> None:
    """save_pretrained into a temporary sibling folder, then rename it into place (an older
    pipeline there is replaced whole; any other non-empty folder is refused)."""
    from videogen.utils.atomic import atomic_path

    directory = os.path.abspath(directory)
    if os.path.exists(directory) and not os.path.isfile(os.path.join(directory, "model_index.json")):
        if os.listdir(directory):
            raise UsageError(f"'{directory}' exists and is not a pipeline directory; choose a new path")
    with atomic_path(directory, directory=True) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)


# ------------------------------------------------------------------------------ loading
def resolve_device_dtype(device: str, dtype: str):
    if dtype not in DTYPES:
        raise UsageError(f"unknown --dtype '{dtype}': use float32, bfloat16 or float16")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown --device '{device}': use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device} asked for, but no CUDA GPU is available; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps asked for, but MPS is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported --device '{device}': use cpu, cuda, cuda:N or mps")
    return dev, DTYPES[dtype]


def load_pipeline(model: Optional[str] = None, device: str = "cpu", dtype: str = "float32") -> VideoGenPipeline:
    """Load a pipeline directory (default: the embedded shapes model), checking it first;
    `default-fast` is the embedded model's few-step student (see `load_default_fast`)."""
    if model == DEFAULT_FAST:
        return load_default_fast(device, dtype)
    dev, torch_dtype = resolve_device_dtype(device, dtype)
    if model is None:
        model = DEFAULT_MODEL_DIR
        if not os.path.isfile(os.path.join(model, "model_index.json")):
            raise UsageError("this install has no embedded default model; pass --model DIR "
                             "(make one with `videogen init-model DIR` or `videogen train`)")
    if not os.path.isdir(model):
        raise UsageError(f"model directory '{model}' not found; pass a pipeline directory "
                         "(make one with `videogen init-model DIR`)")
    missing = [c for c in ("model_index.json",) + COMPONENTS if not os.path.exists(os.path.join(model, c))]
    if missing:
        raise UsageError(f"model directory '{model}' is incomplete (missing {', '.join(missing)}); "
                         "re-save it with `videogen init-model` or `videogen train`")
    index = os.path.join(model, "model_index.json")
    try:
        with open(index) as f:
            settings = json.load(f)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read '{index}' ({err}); re-save the model with `videogen init-model` "
                         "or `videogen train`") from None
    fps = settings.get("fps", 8) if isinstance(settings, dict) else None
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0):
        raise UsageError(f"'{index}' sets fps to {fps!r}: it must be a positive number; set \"fps\" there to the "
                         "frame rate the model was trained at, e.g. 8")
    for part in COMPONENTS:  # weights as safetensors only: a pickle can run code when it is loaded
        names = os.listdir(os.path.join(model, part)) if os.path.isdir(os.path.join(model, part)) else []
        pickles = sorted(n for n in names if n.endswith(PICKLE_WEIGHTS))
        if pickles and not any(n.endswith(".safetensors") for n in names):
            raise UsageError(f"'{os.path.join(model, part)}' holds its weights as a pickle ({pickles[0]}), which "
                             "videogen does not load: re-save it with save_pretrained(DIR, safe_serialization=True)")
    import videogen.model  # noqa: F401  the old module path, named by pipelines saved before the package layout

    try:  # load as saved (float32) and cast after: the dtype keyword differs across diffusers versions
        pipe = VideoGenPipeline.from_pretrained(model, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"cannot load model directory '{model}': {str(err).splitlines()[0]}") from None
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.transformer, pipe.text_encoder):
        if torch_dtype == torch.float32:
            part.to(dev)  # no dtype argument: diffusers warns on any cast
        else:
            part.to(dev, torch_dtype)
    pipe.vae.to(dev)  # the VAE stays float32: it is small and its decode is precision-sensitive
    return pipe


def load_default_fast(device: str = "cpu", dtype: str = "float32") -> VideoGenPipeline:
    """The embedded model's distilled student (`videogen distill`): the default pipeline with
    the student's transformer (default_model/fast/) and its sampler settings
    (fast/sampling.json: 1 step, 2 for the first latent frame, no CFG), for `--model default-fast`."""
    settings = default_fast_settings()
    pipe = load_pipeline(None, device, dtype)
    student = load_transformer(DEFAULT_FAST_DIR)
    dev, torch_dtype = resolve_device_dtype(device, dtype)
    if torch_dtype == torch.float32:
        student.to(dev)  # no dtype argument: diffusers warns on any cast
    else:
        student.to(dev, torch_dtype)
    pipe.register_modules(transformer=student.eval())
    pipe.register_to_config(**settings)
    return pipe


def default_fast_settings() -> dict:
    """The embedded student's sampler settings (default_model/fast/sampling.json), by SAMPLER_KEYS."""
    path = os.path.join(DEFAULT_FAST_DIR, "sampling.json")
    if not os.path.isfile(path):
        raise UsageError("the embedded default model has no few-step student beside it (default_model/fast); "
                         "leave out --model to use the default model")
    with open(path) as f:
        settings = json.load(f)
    return {k: settings.get(k) for k in SAMPLER_KEYS}


def load_transformer(folder: str) -> PoMVideoDiT:
    """A DiT saved by `save_pretrained` (safetensors only), on the CPU in float32."""
    try:
        return PoMVideoDiT.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"cannot load the transformer in '{folder}': {str(err).splitlines()[0]}") from None


def generate_to_file(prompt: str, output: str, frames: int = 240, *, model: Optional[str] = None,
                     steps: Optional[int] = None, guidance: Optional[float] = None,
                     context_noise: Optional[float] = None, seed: int = 0, fps: Optional[int] = None,
                     prompt_schedule: Optional[str] = None, crf: int = 18,
                     device: str = "cpu", dtype: str = "float32", threads: Optional[int] = None,
                     progress: bool = True, init_video: Optional[str] = None, init_image: Optional[str] = None,
                     include_init_frames: bool = True, switch: str = DEFAULT_SWITCH,
                     recommit_frames: int = DEFAULT_RING, recommit_noise: Optional[float] = DEFAULT_RECOMMIT_NOISE,
                     height: Optional[int] = None, width: Optional[int] = None,
                     negative_prompt: Optional[str] = None, loader: Optional[Callable] = None,
                     on_frame: Optional[Callable[[int, Optional[int]], None]] = None) -> str:
    """`videogen generate`: stream frames from the pipeline into an MP4 or GIF, after the
    frames of `init_video` or the image `init_image` when given (continuation, image-to-video).

    `loader(model, device, dtype)` gives the pipeline (default `load_pipeline`; the worker's
    keeps them loaded); `on_frame(written, total)` follows the frames (raising stops the run).
    The file appears at `output` only when complete (temporary name, then rename). With
    VIDEOGEN_EVENTS=FILE set, the moments the imports are done, the model is loaded, the
    first frame is handed to the encoder and the file is in place go to FILE (utils/events).
    """
    from transformers.utils import logging as transformers_logging

    from videogen.data.video_io import open_writer
    from videogen.models.text import warn_unknown_words
    from videogen.utils.events import event

    event("imported")

    diffusers_logging.disable_progress_bar()  # one bar, ours: frames and frames/s
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()  # load-time notices are not for a CLI user

    if not prompt or not prompt.strip():
        if not prompt_schedule:
            raise UsageError("the prompt is empty; describe the video, e.g. \"a red circle moving right\"")
        prompt = parse_prompt_schedule(prompt_schedule)[0][1]
    check_settings(frames=frames, steps=steps, guidance=guidance, context_noise=context_noise, crf=crf, fps=fps,
                   prompt_schedule=prompt_schedule, height=height, width=width)
    check_switch(switch, recommit_frames, recommit_noise)
    resolve_device_dtype(device, dtype)
    init_frames = open_init_frames(init_video, init_image)
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)
    remove_killed_runs_temps(output)
    with open_writer(output, fps=fps or 8, crf=crf) as writer:
        pipe = (loader or load_pipeline)(model, device, dtype)
        event("loaded")
        warn_unknown_words(pipe.tokenizer, ([text for _, text in parse_prompt_schedule(prompt_schedule)]
                                            if prompt_schedule else [prompt]) + [negative_prompt or ""])
        writer.fps = fps or pipe.config.fps
        frames_iter = pipe(prompt, frames, steps=steps, guidance=guidance, context_noise=context_noise,
                           seed=seed, prompt_schedule=prompt_schedule, init_frames=init_frames,
                           include_init_frames=include_init_frames, switch=switch, recommit_frames=recommit_frames,
                           recommit_noise=recommit_noise, height=height, width=width,
                           negative_prompt=negative_prompt)
        write_frames(writer, frames_iter, None if init_frames is not None else frames, progress, on_frame)
    event("done", frames=writer.frames_written)
    return output


def write_frames(writer, frames: Iterable, total: Optional[int], progress: bool,
                 on_frame: Optional[Callable[[int, Optional[int]], None]] = None) -> None:
    """`frames` into `writer` under one progress bar (frames, frames/s), stopping at a frame
    boundary on Ctrl-C, SIGTERM or SIGHUP (`interrupt_between_frames`); `on_frame(written,
    total)` after each."""
    from tqdm import tqdm

    from videogen.utils.events import event

    with interrupt_between_frames() as check:
        for frame in tqdm(frames, total=total, unit="frame", desc="generating", disable=not progress):
            writer.write(frame)
            if writer.frames_written == 1:
                event("first_frame")
            if on_frame is not None:
                on_frame(writer.frames_written, total)
            check()


def check_settings(*, frames: int, steps: Optional[int], guidance: Optional[float],
                   context_noise: Optional[float], crf: int, fps: Optional[int],
                   prompt_schedule: Optional[str], height: Optional[int] = None,
                   width: Optional[int] = None) -> None:
    """The generate options a user can get wrong, checked before anything is loaded or written
    (--height/--width against the model's VAE and patch size once it is loaded: StreamSession)."""
    if frames < 1:
        raise UsageError(f"--frames must be at least 1, not {frames}")
    for flag, side in (("--height", height), ("--width", width)):
        if side is not None and side < 1:
            raise UsageError(f"{flag} must be at least 1, not {side}")
    check_sampling(steps, guidance, context_noise)
    if not 0 <= crf <= 51:
        raise UsageError(f"--crf must be in 0..51, not {crf}")
    if fps is not None and fps < 1:
        raise UsageError(f"--fps must be at least 1, not {fps}")
    if prompt_schedule:
        late = [(start, text) for start, text in parse_prompt_schedule(prompt_schedule) if start >= frames]
        if late:
            raise UsageError(f"--prompt-schedule entry '{late[0][0]}:{late[0][1]}' starts past the {frames} new "
                             f"frames of --frames (0..{frames - 1}): the schedule counts new frames, after any "
                             "init frames; start it earlier or raise --frames")


def remove_killed_runs_temps(output: str) -> None:
    """Remove the temporary files that killed runs left for this output (only this output's,
    and not one a live run into the same path still holds)."""
    from videogen.utils.atomic import remove_stale_temps

    folder, name = os.path.split(os.path.abspath(output))
    stale = remove_stale_temps(folder, [name])
    if stale:
        logger.warning("removed %s: temporary file%s of %s that a killed run left", ", ".join(sorted(stale)),
                       "s" if len(stale) > 1 else "", name)


def open_init_frames(init_video: Optional[str], init_image: Optional[str]) -> Optional[Iterable]:
    """The given frames of `--init-video` (decoded lazily) or `--init-image`, checked now."""
    from videogen.pipelines.init_frames import open_init_video, read_init_image

    if init_video and init_image:
        raise UsageError("give --init-video or --init-image, not both")
    if init_video:
        return open_init_video(init_video)
    if init_image:
        return [read_init_image(init_image)]
    return None


@contextlib.contextmanager
def interrupt_between_frames():
    """Ctrl-C (SIGINT), SIGTERM or SIGHUP stops generation at the next frame boundary; a
    second one stops at once.

    Yields `check()`, which raises KeyboardInterrupt once a signal came. A signal that
    lands inside the MP4 muxer or a torch kernel can leave it in a state the clean-up then
    waits on; deferred to a boundary, the writer drops its temporary file cleanly, and the
    file at the output path stays as it was. (SIGTERM and SIGHUP would otherwise end the
    process on the spot, leaving the temporary file. Off the main thread, where Python
    delivers no signals, `check` does nothing.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    pressed = []

    def on_signal(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)

    def check():
        if pressed:
            raise KeyboardInterrupt

    signums = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {signum: signal.signal(signum, on_signal) for signum in signums}
    try:
        yield check
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
