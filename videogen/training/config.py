"""Typed, validated configs: YAML files read with omegaconf into dataclasses.

`load_config(path, overrides)` merges a YAML file with `key=value` overrides, rejects
unknown keys with the nearest known key, and returns a `Config`. Every section is a
dataclass whose defaults make a working tiny model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from videogen.data.datasets import DataConfig
from videogen.diffusion.sampler import SamplingConfig
from videogen.errors import UsageError
from videogen.models.dit import ModelConfig
from videogen.models.text import TextConfig
from videogen.models.vae import VAEConfig
from videogen.utils.config import load_structured


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
