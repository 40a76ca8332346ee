"""Typed training configs that validate themselves: YAML read with omegaconf into dataclasses.

`load_config` (the DiT) and `load_vae_train_config` (the VAE) merge a YAML file with
`key=value` overrides, reject unknown keys with the nearest known key, and return a
dataclass. Each section checks its own fields in `__post_init__` (which OmegaConf's
`to_object` runs), once; checks across sections sit in the composed config's
`__post_init__`. `LoopConfig` holds the keys of the one training loop (training/loop.py)
that both trainers share. Every default makes a working tiny model.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from videogen.data.datasets import DataConfig, size_hw
from videogen.diffusion.sampler import SamplingConfig
from videogen.errors import UsageError
from videogen.models.dit import ModelConfig
from videogen.models.text import TextConfig
from videogen.models.vae import VAEConfig, check_frame_count, temporal_factor
from videogen.training.logs import TRACKERS
from videogen.utils.config import load_structured

PRECISIONS = ("no", "fp16", "bf16")


def at_least(section: str, minimum: int, **values) -> None:
    """Each value >= minimum (1: a count; 0: a period or count where 0 disables it)."""
    for name, value in values.items():
        if value < minimum:
            hint = " (0 disables it)" if minimum == 0 else ""
            raise UsageError(f"{section}.{name} must be >= {minimum}{hint}, not {value}")


def finite(section: str, **values) -> None:
    """Each value a finite number (a list: each item): inf or nan would train NaN weights,
    and only at the first step; caught here, before any work."""
    for name, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in items):
            raise UsageError(f"{section}.{name} must be a finite number{'s' if items is value else ''}, not {value}")


def check_ema_decay(decay: float) -> None:
    finite("train", ema_decay=decay)
    if not 0 <= decay < 1:
        raise UsageError(f"train.ema_decay must be in [0, 1) (0 disables EMA), not {decay}")


@dataclass
class LoopConfig:
    """The training loop's keys (training/loop.py). Steps are optimizer steps."""

    output_dir: str = "runs/default"
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
    mixed_precision: str = "no"  # no | fp16 | bf16
    cpu: bool = False  # train on CPU even when a GPU is present
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    log_with: Optional[str] = None  # tensorboard | wandb | None; log.jsonl is always written

    def __post_init__(self):
        finite("train", lr=self.lr, weight_decay=self.weight_decay, adam_betas=list(self.adam_betas),
               grad_clip=self.grad_clip)
        at_least("train", 1, batch_size=self.batch_size, grad_accum=self.grad_accum, max_steps=self.max_steps,
                 keep_checkpoints=self.keep_checkpoints, log_every=self.log_every)
        at_least("train", 0, checkpoint_every=self.checkpoint_every, stop_at_step=self.stop_at_step,
                 warmup_steps=self.warmup_steps, grad_clip=self.grad_clip,
                 weight_decay=self.weight_decay)
        if not self.lr > 0:
            raise UsageError(f"train.lr must be positive, not {self.lr}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise UsageError(f"train.adam_betas must be two numbers in [0, 1), e.g. [0.9, 0.99], not {self.adam_betas}")
        if self.mixed_precision not in PRECISIONS:
            raise UsageError(f"train.mixed_precision must be no, fp16 or bf16, not '{self.mixed_precision}'")
        if self.log_with is not None and self.log_with not in TRACKERS:
            raise UsageError(f"train.log_with must be one of {', '.join(TRACKERS)} or null, not '{self.log_with}'")


# ============================================================================ the DiT
@dataclass
class TrainConfig(LoopConfig):
    """The DiT's training (training/dit_task.py)."""

    init_from: Optional[str] = None  # a pipeline directory to start from (else built from this config)
    ema_decay: float = 0.999  # 0 disables EMA (the pipeline then holds the raw weights)
    caption_dropout: float = 0.1
    sample_every: int = 0  # 0 disables sample videos
    sample_prompt: str = "a red circle moving right"
    sample_frames: int = 33
    t_logit_mean: float = 0.0
    t_logit_std: float = 1.0
    t_shift: float = 1.0  # >1 spends more training on high noise levels
    teacher_forcing: float = 0.0  # share of steps denoised on clean context (as the sampler does), 2x cost
    # learning-rate multiplier for the frame-position embeddings (model.frame_positions):
    # zero-initialised beside a conditioning of norm ~15, at the base rate they stay ~100x
    # smaller than it for a whole fine-tune
    frame_positions_lr_mult: float = 1.0
    # the clip start trained jointly with the whole clip: each step adds, at this weight, a
    # teacher-forced loss on the clip's first train.start_frames latent frames alone (the
    # only place the caption's sign of motion holds: objects bounce every ~28 frames)
    start_loss_weight: float = 0.0
    start_frames: int = 2
    # share of steps whose context is the model's own stream: the clip's first
    # train.rollout_prime latent frames primed, the rest sampled by the model as the
    # streaming sampler does (sampling.*), and the clip's true frames learnt after it
    # (dit_task.rollout_context; a rollout costs about sampling.steps x 2 passes per frame)
    rollout: float = 0.0
    rollout_prime: int = 2
    # a stream's frames trained only up to where it first leaves its clip by more than this
    # (squared distance over the clip's object energy; dit_task.rollout_weights); null: all
    rollout_tolerance: Optional[float] = None
    gradient_checkpointing: bool = False  # recompute block activations in backward: less memory, ~30% slower

    def __post_init__(self):
        super().__post_init__()
        finite("train", ema_decay=self.ema_decay, caption_dropout=self.caption_dropout,
               t_logit_mean=self.t_logit_mean, t_logit_std=self.t_logit_std, t_shift=self.t_shift,
               teacher_forcing=self.teacher_forcing, frame_positions_lr_mult=self.frame_positions_lr_mult,
               start_loss_weight=self.start_loss_weight, rollout=self.rollout)
        at_least("train", 1, sample_frames=self.sample_frames, start_frames=self.start_frames,
                 rollout_prime=self.rollout_prime)
        at_least("train", 0, sample_every=self.sample_every, start_loss_weight=self.start_loss_weight)
        if not 0 <= self.caption_dropout < 1:
            raise UsageError(f"train.caption_dropout must be in [0, 1), not {self.caption_dropout}")
        if not 0 <= self.teacher_forcing <= 1:
            raise UsageError(f"train.teacher_forcing must be in [0, 1] (a share of steps), not {self.teacher_forcing}")
        if self.rollout_tolerance is not None and not self.rollout_tolerance > 0:
            raise UsageError(f"train.rollout_tolerance must be > 0 (or null: every frame), not {self.rollout_tolerance}")
        if not 0 <= self.rollout <= 1:
            raise UsageError(f"train.rollout must be in [0, 1] (a share of steps), not {self.rollout}")
        if self.frame_positions_lr_mult <= 0:
            raise UsageError(f"train.frame_positions_lr_mult must be > 0, not {self.frame_positions_lr_mult}")
        check_ema_decay(self.ema_decay)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        m, d = self.model, self.data
        if m.mixer not in ("pom", "attention"):
            raise UsageError(f"model.mixer must be 'pom' or 'attention', not '{m.mixer}'")
        if m.ffn not in ("mix", "mlp"):
            raise UsageError(f"model.ffn must be 'mix' or 'mlp', not '{m.ffn}'")
        if m.mixer == "attention" and m.dim % m.heads:
            raise UsageError(f"model.dim ({m.dim}) must be divisible by model.heads ({m.heads})")
        check_frame_count(d.frames, temporal_factor(self.vae), "data.frames")
        at_least("data", 0, num_workers=d.num_workers)
        if d.fps is not None and d.fps <= 0:
            raise UsageError(f"data.fps must be positive or null (keep the file's), not {d.fps}")


def load_config(path: Optional[str] = None, overrides: Optional[list] = None) -> Config:
    """Read `path` (YAML) and `overrides` (['train.lr=1e-4', ...]) into a validated Config."""
    return load_structured(Config, path, overrides, example="configs/tiny.yaml")


# ============================================================================ distillation
@dataclass
class DistillConfig:
    """What `videogen distill` distils (training/distill_task.py)."""

    teacher: Optional[str] = None  # the teacher pipeline directory; the student starts as a copy of it
    # Or the student starts from this pipeline's transformer (a directory, or `default-fast`
    # for the embedded student) to go on distilling it; it must have the teacher's architecture
    student: Optional[str] = None
    # A text file of prompts, one per line; null: the shapes-world captions (every caption
    # form of every colour-shape pair the teacher was trained on: the held-out pairs stay out)
    prompts: Optional[str] = None
    teacher_steps: Optional[int] = None  # null: the teacher pipeline's own sampler settings
    teacher_guidance: Optional[float] = None
    student_steps: int = 1  # denoising calls per latent frame (plus the commit pass), no CFG
    # The first latent frame's steps (0: student_steps): it alone has no context to go on,
    # so from pure noise one step drew it poorly (two objects, a wrong colour, an empty
    # frame) and the frames after it took ~8 frames to recover. Its sigmas are evenly
    # spaced before the shift (`diffusion.sampler.even_sigmas`), e.g. 1, 0.75, 0 for 2.
    first_frame_steps: int = 0
    rollout_frames: int = 9  # latent frames of each self-rollout (9: 33 video frames)
    # true: the teacher's targets as it streams by default, where its pipeline names contrast
    # words: the latent frames where the motion begins guided against the prompt with its
    # motion reversed (StreamSession), not the empty prompt. Tried once, 60 steps on from the
    # shipped student with the rollout default as teacher: direction 0.91, colour unchanged
    # at the end 0.91 (results/logs/distill_contrast_step60_quality.json), below the student
    # it started from (0.93, 0.96), so the shipped recipe keeps plain CFG throughout
    contrast_start: bool = False

    def __post_init__(self):
        at_least("distill", 1, student_steps=self.student_steps, rollout_frames=self.rollout_frames)
        at_least("distill", 0, first_frame_steps=self.first_frame_steps)
        if self.teacher_steps is not None:
            at_least("distill", 1, teacher_steps=self.teacher_steps)
        if self.teacher_guidance is not None:
            finite("distill", teacher_guidance=self.teacher_guidance)


@dataclass
class DistillTrainConfig(LoopConfig):
    output_dir: str = "runs/distill"
    lr: float = 5e-5
    warmup_steps: int = 20
    max_steps: int = 500
    checkpoint_every: int = 50
    ema_decay: float = 0.99  # 0 disables EMA

    def __post_init__(self):
        super().__post_init__()
        check_ema_decay(self.ema_decay)


@dataclass
class DistillRunConfig:
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: DistillTrainConfig = field(default_factory=DistillTrainConfig)


def load_distill_config(path: Optional[str] = None, overrides: Optional[list] = None) -> DistillRunConfig:
    """Read `path` (YAML) and `overrides` into a validated DistillRunConfig."""
    cfg = load_structured(DistillRunConfig, path, overrides, example="configs/shapes_distill.yaml")
    if cfg.distill.teacher is None:
        raise UsageError("distill.teacher is not set: name the teacher pipeline directory, e.g. "
                         "distill.teacher=videogen/default_model")
    return cfg


# ============================================================================ the VAE
@dataclass
class VAEDataConfig:
    dataset: Optional[str] = None  # a shapes dataset dir or metadata.csv; None renders clips on the fly
    frames: int = 17  # pixel frames per training clip, 1+4k
    size: Any = 64  # int (square) or [H, W]: rendered clips are the centre crop of a square canvas
    holdout: str = "default"  # rendered clips: leave out the held-out pairs (default) or not (none)
    # Single frames (other clips') trained beside each batch of clips, as image+video VAEs
    # are: 1/frames of a clip's cost each, so a step sees many more objects and colours.
    image_batch: int = 0
    # Up to this many latent frames (4 pixel frames each) before each training clip, run
    # without gradient to fill the causal caches (the count drawn per step, 0..this).
    # The caches reach back ~20 latent frames, so clips of 17 frames never showed the VAE
    # its steady state: at step 1750 colours were right through frame 16 and drifted after
    # (blue to purple, yellow to white by frame 32), and generation decodes 61 latents.
    warmup_chunks: int = 0

    def __post_init__(self):
        if self.holdout not in ("default", "none"):
            raise UsageError(f"data.holdout must be 'default' or 'none', not '{self.holdout}'")
        height, width = size_hw(self.size)
        self.size = height if height == width else [height, width]
        at_least("data", 0, image_batch=self.image_batch, warmup_chunks=self.warmup_chunks)


@dataclass
class VAELossConfig:
    l1: float = 1.0
    mse: float = 1.0
    edge: float = 0.0  # L1 between spatial finite differences of input and reconstruction
    # L1 + MSE again over the foreground only: pixels that differ from their frame's median
    # colour (the background), grown by 1 px to take in edges. Small objects on a flat
    # background are a few % of the pixels, so the plain losses barely see their colour:
    # at step 1500 the shapes VAE's background was within 1/255 but its objects 40/255 off in
    # colour (cyan decoded as a pale blue), and a probe read colour poorly from its latents.
    foreground: float = 0.0
    kl: float = 1e-6

    def __post_init__(self):
        weights = asdict(self)
        finite("loss", **weights)
        if any(v < 0 for v in weights.values()) or self.l1 + self.mse == 0:
            raise UsageError(f"loss weights must be >= 0 with loss.l1 or loss.mse positive, not {weights}")


@dataclass
class VAETrainConfig(LoopConfig):
    """The VAE's training (training/vae_task.py)."""

    output_dir: str = "runs/vae"
    export_dir: Optional[str] = None  # where the trained VAE goes; None = output_dir/export
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_steps: int = 4000
    checkpoint_every: int = 250
    eval_every: int = 250  # 0: only at the end
    eval_clips: int = 64
    eval_frames: int = 33
    eval_seed: int = 1234
    # Also PSNR over a few long clips, logged as eval_psnr_long: generation decodes 61 latent
    # frames for 240 pixel frames, far past eval_frames. 0 clips: off.
    eval_long_clips: int = 0
    eval_long_frames: int = 129
    eval_batch: int = 8
    stats_clips: int = 128  # training clips for latents_mean / latents_std
    # Posterior log-variance a fresh VAE starts from (the bias of its quant_conv); null keeps
    # diffusers' init. That init (logvar ~ 0) buries the latent mean in unit noise, and with a
    # tiny KL weight the encoder spends thousands of steps shrinking it: start where it ends.
    init_logvar: Optional[float] = None
    # Start a fresh VAE's temporal resampling convs as identities (`identity_time_convs`):
    # each later latent frame then begins as the features of one of its pixel frames, the
    # way the first latent frame is made. With diffusers' random init the latents after the
    # first lost the objects' hue for hundreds of steps (a colour kNN on them: 47% right at
    # step 750, against 100% on the first latent frame; decoded, every object pale blue).
    identity_time_convs: bool = False
    # From this step on only the decoder side (post_quant_conv, decoder) trains: the encoder
    # and so the latent space (and its export statistics) stay fixed, so a DiT can train on
    # latents cached from an export at or after this step while the decoder keeps
    # sharpening, and the later decoder drops into its pipeline. 0 = never freeze.
    freeze_encoder_at: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.init_logvar is not None:
            finite("train", init_logvar=self.init_logvar)
        at_least("train", 1, eval_clips=self.eval_clips, eval_batch=self.eval_batch, stats_clips=self.stats_clips)
        at_least("train", 0, eval_every=self.eval_every, freeze_encoder_at=self.freeze_encoder_at,
                 eval_long_clips=self.eval_long_clips)


@dataclass
class VAERunConfig:
    vae: VAEConfig = field(default_factory=VAEConfig)
    data: VAEDataConfig = field(default_factory=VAEDataConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    train: VAETrainConfig = field(default_factory=VAETrainConfig)

    def __post_init__(self):
        temporal = temporal_factor(self.vae)
        check_frame_count(self.data.frames, temporal, "data.frames")
        check_frame_count(self.train.eval_frames, temporal, "train.eval_frames")
        check_frame_count(self.train.eval_long_frames, temporal, "train.eval_long_frames")


def load_vae_train_config(path: Optional[str] = None, overrides: Optional[list] = None) -> VAERunConfig:
    """Read `path` (YAML) and `overrides` (['train.lr=1e-4', ...]) into a validated VAERunConfig."""
    cfg: VAERunConfig = load_structured(VAERunConfig, path, overrides, example="configs/shapes_vae.yaml")
    if cfg.data.dataset is not None and not os.path.exists(cfg.data.dataset):
        raise UsageError(f"data.dataset '{cfg.data.dataset}' not found; make one with `videogen data shapes "
                         "--out data/shapes --num 2000`, or set data.dataset=null to render clips on the fly")
    return cfg
