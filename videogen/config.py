"""Typed, validated configs: YAML files read with omegaconf into dataclasses.

`load_config(path, overrides)` merges a YAML file with `key=value` overrides, rejects
unknown keys with the nearest known key, and returns a `Config`. Every section is a
dataclass whose defaults make a working tiny model.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videogen.errors import UsageError


@dataclass
class ModelConfig:
    """PoMVideoDiT arguments (see videogen/model.py)."""

    patch_size: int = 2
    dim: int = 128
    depth: int = 4
    degree: int = 2
    expand: int = 2
    heads: int = 4  # attention baseline only
    mixer: str = "pom"  # pom | attention
    decay: bool = True
    ffn: str = "mix"  # mix | mlp
    temporal_tap: bool = True
    ffn_mult: int = 4
    # Learned embeddings of the latent frame's index 0..K-1 and one shared by every later
    # frame (K+1 in all), added to the timestep conditioning: the clip start, which the
    # decayed-mean state cannot tell apart from later frames. 0 = none. Fixed-size, so any
    # length streams. With train.init_from, a pipeline without them gains them zeroed.
    frame_positions: int = 0


@dataclass
class VAEConfig:
    """Causal video VAE (diffusers AutoencoderKLWan). `pretrained` is a local directory."""

    pretrained: Optional[str] = None
    base_dim: int = 16
    z_dim: int = 4
    dim_mult: list = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 1
    temperal_downsample: list = field(default_factory=lambda: [True, True])


@dataclass
class TextConfig:
    """T5 encoder + tokenizer. `pretrained` is a hub name or local directory."""

    pretrained: Optional[str] = None
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 128
    d_kv: int = 16
    max_length: int = 32


@dataclass
class SamplingConfig:
    steps: int = 8
    guidance: float = 3.0
    shift: float = 3.0
    context_noise: float = 0.05
    fps: int = 8


@dataclass
class DataConfig:
    """Training data (see videogen/data.py). Paths are relative to the working directory."""

    manifest: Optional[str] = None  # metadata.csv, *.jsonl, or a dir with prompts.txt + videos.txt
    frames: int = 17  # pixel frames per clip, 1+4k
    size: int = 64  # clips are resized on their short side and centre-cropped to size x size
    fps: Optional[float] = None  # resample clips to this fps; None keeps the file's
    random_start: bool = True  # a random window of each longer clip (False: its first frames)
    cache_dir: Optional[str] = None  # latents + text embeddings from `videogen cache`; used when present
    num_workers: int = 0


@dataclass
class TrainConfig:
    """Training loop (see videogen/train.py). Steps are optimizer steps."""

    output_dir: str = "runs/default"
    init_from: Optional[str] = None  # a pipeline directory to start from (else built from this config)
    seed: int = 0
    batch_size: int = 4  # per process
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.01
    adam_betas: list = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 100
    max_steps: int = 1000
    stop_at_step: int = 0  # end this run early (with a checkpoint), schedule unchanged; 0 = run to max_steps
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.999  # 0 disables EMA (the pipeline then holds the raw weights)
    caption_dropout: float = 0.1
    mixed_precision: str = "no"  # no | fp16 | bf16
    cpu: bool = False  # train on CPU even when a GPU is present
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 0  # 0 disables sample videos
    sample_prompt: str = "a red circle moving right"
    sample_frames: int = 33
    log_every: int = 10
    log_with: Optional[str] = None  # tensorboard | wandb | None; log.jsonl is always written
    t_logit_mean: float = 0.0
    t_logit_std: float = 1.0
    t_shift: float = 1.0  # >1 spends more training on high noise levels
    teacher_forcing: float = 0.0  # share of steps denoised on clean context (as the sampler does), 2x cost
    # learning-rate multiplier for the frame-position embeddings (model.frame_positions):
    # zero-initialised beside a conditioning of norm ~15, at the base rate they stay ~100x
    # smaller than it for a whole fine-tune
    frame_positions_lr_mult: float = 1.0


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _check_keys(given: Any, schema: Any, prefix: str = "") -> None:
    if not isinstance(given, dict) or not is_dataclass(schema):
        return
    known = {f.name: f for f in fields(schema)}
    for key, value in given.items():
        if key not in known:
            path = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"known keys: {', '.join(known)}"
            raise UsageError(f"unknown config key '{path}': {hint}")
        sub = getattr(schema, key) if not isinstance(schema, type) else None
        if sub is not None and is_dataclass(sub):
            _check_keys(value, sub, f"{prefix}{key}.")


def load_structured(schema: type, path: Optional[str], overrides: Optional[list], example: str):
    """Read `path` (YAML) and `overrides` (['train.lr=1e-4', ...]) into dataclass `schema`,
    rejecting unknown keys with the nearest known one. `example` names a config for errors."""
    layers = []
    if path is not None:
        if not os.path.isfile(path):
            raise UsageError(f"config file '{path}' not found; pass a YAML file such as {example}")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as err:  # yaml errors come in many types
            raise UsageError(f"config file '{path}' is not valid YAML: {err}".splitlines()[0]) from None
    for item in overrides or []:
        if "=" not in item:
            raise UsageError(f"override '{item}' must look like key=value, e.g. train.lr=1e-4")
    if overrides:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    defaults = schema()
    for layer in layers:
        _check_keys(OmegaConf.to_container(layer, resolve=True), defaults)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), *layers)
    except OmegaConfBaseException as err:
        raise UsageError(f"bad config value: {str(err).splitlines()[0]}") from None
    return OmegaConf.to_object(merged)


def load_config(path: Optional[str] = None, overrides: Optional[list] = None) -> Config:
    """Read `path` (YAML) and `overrides` (['train.lr=1e-4', ...]) into a validated Config."""
    cfg: Config = load_structured(Config, path, overrides, example="configs/tiny.yaml")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks a user can get wrong."""
    m = cfg.model
    if m.mixer not in ("pom", "attention"):
        raise UsageError(f"model.mixer must be 'pom' or 'attention', not '{m.mixer}'")
    if m.ffn not in ("mix", "mlp"):
        raise UsageError(f"model.ffn must be 'mix' or 'mlp', not '{m.ffn}'")
    if m.mixer == "attention" and m.dim % m.heads:
        raise UsageError(f"model.dim ({m.dim}) must be divisible by model.heads ({m.heads})")
    if (cfg.data.frames - 1) % 4:
        raise UsageError(f"data.frames must be 1+4k (e.g. 17, 33), not {cfg.data.frames}")
    if cfg.train.mixed_precision not in ("no", "fp16", "bf16"):
        raise UsageError("train.mixed_precision must be no, fp16 or bf16")


def to_dict(cfg: Config) -> dict:
    return asdict(cfg)
