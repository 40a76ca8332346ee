"""Training with accelerate: one CPU process, N CPU processes (gloo) or N GPUs, same code.

    videogen train configs/shapes.yaml [key=value ...] [--resume latest|DIR]
    accelerate launch --multi_gpu --num_processes 2 -m videogen train configs/tiny.yaml

Objective (design §5): rectified flow, x_t = (1-t) x0 + t eps, target eps - x0, MSE,
with diffusion forcing (an independent t per latent frame), caption dropout to "" for
classifier-free guidance, EMA of the weights, AdamW with linear warmup + cosine decay.
The VAE and the text encoder are frozen: clips are encoded on the fly, or read from the
latent cache that `videogen cache` writes (used when `data.cache_dir` holds one).

Checkpoints (`accelerator.save_state`, plus the EMA weights in `ema.safetensors`) are
written to `checkpoint-NNNNNN.tmp` and renamed into place when complete, so a run killed
mid-write leaves the previous one intact;
`--resume latest` takes the newest complete one. Resume is exact: the noise of every
step is drawn from a generator seeded by (seed, step, micro-batch, rank), the data order
by (seed, epoch), and the data-loader position is restored with `skip_first_batches`.

Outputs in train.output_dir: log.jsonl (step, loss, lr, ...), checkpoints, samples/ (MP4
every train.sample_every steps) and pipeline/ (EMA weights; `videogen generate --model`).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from videogen.training.components import freeze, load_components
from videogen.training.config import Config, load_config
from videogen.data.datasets import (LatentCacheDataset, LatentCacheWriter, VideoTextDataset, collate_clips,
                           has_latent_cache)
from videogen.errors import UsageError
from videogen.diffusion.flow import add_noise, sample_train_t, velocity_target

logger = logging.getLogger("videogen")

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # written last into a checkpoint: marks it complete
# Test hook: at this step, hang inside the checkpoint write (after the state is saved to
# the .tmp directory, before the rename), so a test can SIGKILL the run mid-write.
HANG_ENV = "VIDEOGEN_TEST_HANG_IN_CHECKPOINT"
TRACKERS = ("tensorboard", "wandb")


# ============================================================================ state
class TrainState:
    """The step counter, saved with every checkpoint."""

    def __init__(self):
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


class EMA:
    """Exponential moving average of a model's parameters, kept in float32.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so the
    average is not dominated by the random initial weights (as diffusers' EMAModel).
    Checkpoints hold it as `ema.safetensors`, keyed by parameter name: a weights file of
    the model like any other.
    """

    FILE = "ema.safetensors"

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.names = [name for name, _ in model.named_parameters()]
        self.shadow = [p.detach().clone().float() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for s, p in zip(self.shadow, model.parameters()):
            s.lerp_(p.detach().float(), 1 - decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters()):
            p.copy_(s.to(p.dtype))

    def save(self, directory: str) -> None:
        from safetensors.torch import save_file

        save_file({n: s.cpu().contiguous() for n, s in zip(self.names, self.shadow)},
                  os.path.join(directory, self.FILE), metadata={"updates": str(self.updates)})

    @torch.no_grad()
    def load(self, directory: str) -> None:
        from safetensors import safe_open

        path = os.path.join(directory, self.FILE)
        if not os.path.exists(path):
            raise UsageError(f"checkpoint '{directory}' has no {self.FILE}; resume it with train.ema_decay=0")
        with safe_open(path, "pt") as f:
            self.updates = int(f.metadata()["updates"])
            for name, s in zip(self.names, self.shadow):
                s.copy_(f.get_tensor(name))


LEGACY_EMA = "custom_checkpoint_1.pkl"


def upgrade_checkpoint(accelerator, directory: str, ema: Optional[EMA]) -> None:
    """Checkpoints written before ema.safetensors held the EMA as accelerate's custom object
    1 (custom_checkpoint_1.pkl: {decay, updates, shadow}), and accelerate refuses a folder
    with more custom objects than are registered: write the EMA as ema.safetensors and drop
    the pickle (set aside as ema_legacy.pt when this run keeps no EMA)."""
    legacy = os.path.join(directory, LEGACY_EMA)
    if not os.path.exists(legacy):
        return
    if accelerator.is_main_process:
        if ema is None:
            os.replace(legacy, os.path.join(directory, "ema_legacy.pt"))
        else:
            state = torch.load(legacy, map_location="cpu", weights_only=True)
            with torch.no_grad():
                for s, saved in zip(ema.shadow, state["shadow"]):
                    s.copy_(saved)
            ema.updates = int(state["updates"])
            ema.save(directory)
            os.remove(legacy)
        logger.info("upgraded %s: the EMA weights are ema.safetensors now", directory)
    accelerator.wait_for_everyone()


class EpochSampler(Sampler):
    """A permutation per epoch drawn from (seed, epoch) alone: the same on every rank
    (accelerate shards the batches) and the same again on resume."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.size))
        g = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, 0xDA7A))
        return iter(torch.randperm(self.size, generator=g).tolist())


def _mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


# ============================================================================ setup
def check_train_config(cfg: Config) -> None:
    """Cross-field checks of the data/train sections that a user can get wrong."""
    t, d = cfg.train, cfg.data
    positive = {"train.batch_size": t.batch_size, "train.grad_accum": t.grad_accum,
                "train.max_steps": t.max_steps, "train.keep_checkpoints": t.keep_checkpoints,
                "train.log_every": t.log_every, "data.size": d.size, "train.sample_frames": t.sample_frames}
    for name, value in positive.items():
        if value < 1:
            raise UsageError(f"{name} must be at least 1, not {value}")
    for name, value in {"train.checkpoint_every": t.checkpoint_every, "train.sample_every": t.sample_every,
                        "train.stop_at_step": t.stop_at_step,
                        "train.warmup_steps": t.warmup_steps, "data.num_workers": d.num_workers}.items():
        if value < 0:
            raise UsageError(f"{name} must be >= 0 (0 disables it), not {value}")
    if not t.lr > 0:
        raise UsageError(f"train.lr must be positive, not {t.lr}")
    if not 0 <= t.caption_dropout < 1:
        raise UsageError(f"train.caption_dropout must be in [0, 1), not {t.caption_dropout}")
    if not 0 <= t.teacher_forcing <= 1:
        raise UsageError(f"train.teacher_forcing must be in [0, 1] (a share of steps), not {t.teacher_forcing}")
    if t.frame_positions_lr_mult <= 0:
        raise UsageError(f"train.frame_positions_lr_mult must be > 0, not {t.frame_positions_lr_mult}")
    if not 0 <= t.ema_decay < 1:
        raise UsageError(f"train.ema_decay must be in [0, 1) (0 disables EMA), not {t.ema_decay}")
    if len(t.adam_betas) != 2 or not all(0 <= b < 1 for b in t.adam_betas):
        raise UsageError(f"train.adam_betas must be two numbers in [0, 1), e.g. [0.9, 0.99], not {t.adam_betas}")
    if t.log_with is not None and t.log_with not in TRACKERS:
        raise UsageError(f"train.log_with must be one of {', '.join(TRACKERS)} or null, not '{t.log_with}'")
    if d.fps is not None and d.fps <= 0:
        raise UsageError(f"data.fps must be positive or null (keep the file's), not {d.fps}")
    if not has_latent_cache(d.cache_dir):
        if not d.manifest:
            raise UsageError("data.manifest is not set; point it at a metadata.csv, a .jsonl or a directory "
                             "with prompts.txt + videos.txt (e.g. data.manifest=data/shapes/metadata.csv)")
        if not os.path.exists(d.manifest):
            raise UsageError(f"dataset manifest '{d.manifest}' (data.manifest) not found; make one with "
                             "`videogen data shapes --out data/shapes --num 2000` or fix the path")


def _setup_logging(accelerator) -> None:
    """INFO from the main process, warnings from all; a handler only where nobody set one up."""
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[videogen] %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)


def _tracker(name: Optional[str]) -> Optional[str]:
    if name is None:
        return None
    if importlib.util.find_spec(name) is None:
        logger.warning("train.log_with=%s but the '%s' package is not installed; logging to log.jsonl "
                       "only (pip install %s)", name, name, name)
        return None
    return name


def make_accelerator(cfg: Config):
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    t = cfg.train
    # sync_with_dataloader=False: the batch stream runs across epoch boundaries, and an
    # accumulation window must always be exactly grad_accum micro-batches (exact resume).
    plugin = GradientAccumulationPlugin(num_steps=t.grad_accum, sync_with_dataloader=False)
    return Accelerator(
        mixed_precision=t.mixed_precision,
        gradient_accumulation_plugin=plugin,
        log_with=_tracker(t.log_with),
        project_config=ProjectConfiguration(project_dir=t.output_dir,
                                            logging_dir=os.path.join(t.output_dir, "logs")),
        cpu=_use_cpu(t.cpu),
    )


def _use_cpu(cpu: bool) -> bool:
    """train.cpu, or a multi-process launch (torchrun/accelerate) on a machine without CUDA:
    accelerate only joins CPU processes with gloo when told cpu=True; otherwise each would
    train alone, unaware of the others."""
    return cpu or (int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())


def _check_world(accelerator) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != world:
        raise RuntimeError(f"launched {world} processes but accelerate joined {accelerator.num_processes}")


def _hparams(cfg: Config) -> dict:
    """The config flattened to scalars, as trackers (tensorboard hparams) want it."""
    out = {}
    for section, values in asdict(cfg).items():
        for key, value in values.items():
            ok = isinstance(value, (int, float, str, bool))
            out[f"{section}.{key}"] = value if ok else str(value)
    return out





def cache_fingerprint(cfg: Config) -> dict:
    """What the cached latents and embeddings depend on; a cache built otherwise is stale."""
    d = cfg.data
    return {"data.manifest": d.manifest, "data.frames": d.frames, "data.size": d.size, "data.fps": d.fps,
            "vae": asdict(cfg.vae), "text": asdict(cfg.text), "train.seed": cfg.train.seed,
            "train.init_from": cfg.train.init_from}


def make_dataset(cfg: Config):
    d = cfg.data
    if has_latent_cache(d.cache_dir):
        logger.info("reading latents and text embeddings from the cache in %s", d.cache_dir)
        if d.random_start:
            logger.info("cached clips are fixed windows (their first frames): data.random_start does not apply")
        return LatentCacheDataset(d.cache_dir, fingerprint=cache_fingerprint(cfg))
    if d.cache_dir:
        logger.info("data.cache_dir '%s' holds no cache yet: encoding clips on the fly "
                    "(build it with `videogen cache CONFIG` to train faster)", d.cache_dir)
    return VideoTextDataset(d.manifest, frames=d.frames, size=d.size, fps=d.fps,
                            random_start=d.random_start, seed=cfg.train.seed)


def make_loader(cfg: Config, dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.train.batch_size, sampler=EpochSampler(len(dataset), cfg.train.seed),
                      drop_last=True, num_workers=cfg.data.num_workers, collate_fn=collate_clips,
                      persistent_workers=False)


# ============================================================================ conditioning
class Conditioner:
    """Turns a batch into model inputs: latents (B, C, F, H, W), text (B, L, Dt), mask (B, L).

    Clips are encoded with the frozen VAE and captions with the frozen text encoder, or
    both come from the cache. Dropped captions (for guidance) become "".
    """

    def __init__(self, cfg: Config, components: dict, dataset, device, dtype):
        self.max_length = cfg.text.max_length
        self.device, self.dtype = device, dtype
        self.cached = isinstance(dataset, LatentCacheDataset)
        # With a cache the encoders only serve sample videos: keep them in host memory.
        where = "cpu" if self.cached else device
        self.vae = freeze(components["vae"], where, dtype)
        self.text_encoder = freeze(components["text_encoder"], where, dtype)
        self.tokenizer = components["tokenizer"]
        if self.cached:
            text, mask = dataset.uncond()
            self.uncond = (text.to(device), mask.to(device))

    @torch.no_grad()
    def __call__(self, batch: dict, drop: torch.Tensor) -> tuple:
        if self.cached:
            latents = batch["latents"].float()
            text = torch.where(drop[:, None, None], self.uncond[0], batch["text"]).float()
            mask = torch.where(drop[:, None], self.uncond[1], batch["text_mask"])
            return latents, text, mask
        from videogen.models.text import encode_prompts
        from videogen.models.vae import encode_video

        latents = encode_video(self.vae, batch["video"].to(self.device, self.dtype)).float()
        prompts = ["" if d else c for c, d in zip(batch["caption"], drop.tolist())]
        text, mask = encode_prompts(self.tokenizer, self.text_encoder, prompts, self.max_length, self.device)
        return latents, text.float(), mask


def flow_loss(model, latents: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, cfg: Config,
              generator: torch.Generator) -> torch.Tensor:
    """Rectified-flow MSE with diffusion forcing: one t per latent frame, (B, F).

    With probability train.teacher_forcing the step is teacher-forced instead: every frame
    is denoised on the clean frames before it, re-noised to sampling.context_noise, which is
    exactly what the streaming sampler commits (twice the compute of a plain step).
    """
    t_cfg = cfg.train
    b, _, f = latents.shape[:3]
    teacher = t_cfg.teacher_forcing > 0 and (  # no draw when off: earlier runs resume unchanged
        torch.rand(1, generator=generator, device=latents.device).item() < t_cfg.teacher_forcing)
    t = sample_train_t(b, f, logit_mean=t_cfg.t_logit_mean, logit_std=t_cfg.t_logit_std, shift=t_cfg.t_shift,
                       generator=generator, device=latents.device)
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    noisy = add_noise(latents, noise, t)
    if teacher:
        t_context = torch.full_like(t, cfg.sampling.context_noise)
        context_noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        pred = model(noisy, t, text, mask, context=add_noise(latents, context_noise, t_context), t_context=t_context)
    else:
        pred = model(noisy, t, text, mask)
    return F.mse_loss(pred.float(), velocity_target(latents, noise).float())


# ============================================================================ batches
class BatchStream:
    """Micro-batches forever, epoch after epoch, starting at any micro-batch position."""

    def __init__(self, accelerator, loader, dataset, start: int):
        self.accelerator, self.loader, self.dataset = accelerator, loader, dataset
        self.per_epoch = len(loader)
        self.epoch, skip = divmod(start, self.per_epoch)
        self._it = self._open(skip)

    def _open(self, skip: int):
        source = self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
        # accelerate's loader sets its sampler's epoch from its own counter at every
        # iter(); a resumed (skipping) loader starts that counter at 0, so set it here.
        source.set_epoch(self.epoch)
        self.dataset.set_epoch(self.epoch)
        return iter(source)

    def __next__(self) -> dict:
        try:
            return next(self._it)
        except StopIteration:
            self.epoch += 1
            self._it = self._open(0)
            return next(self._it)


# ============================================================================ checkpoints
def _step_of(name: str) -> Optional[int]:
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    tail = name[len(CHECKPOINT_PREFIX):]
    return int(tail) if tail.isdigit() else None


def list_checkpoints(output_dir: str) -> list:
    """Complete checkpoints in output_dir as (step, path), oldest first; .tmp dirs are not."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        step = _step_of(name)
        path = os.path.join(output_dir, name)
        if step is not None and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((step, path))
    return sorted(found)


def find_resume_dir(output_dir: str, resume: Optional[str]) -> Optional[str]:
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            logger.info("--resume latest: no complete checkpoint in %s yet; starting from step 0", output_dir)
            return None
        return found[-1][1]
    if not os.path.isfile(os.path.join(resume, STATE_FILE)):
        raise UsageError(f"--resume '{resume}' is not a complete checkpoint directory (no {STATE_FILE}); "
                         f"pass one of {output_dir}/{CHECKPOINT_PREFIX}* or 'latest'")
    return resume


def _remove_stale_tmp(output_dir: str) -> None:
    """Tidy up after a killed run: finish a checkpoint that was complete but not yet
    renamed (its state file is written last), delete one whose writing was cut short."""
    for name in os.listdir(output_dir):
        if not (name.startswith(CHECKPOINT_PREFIX) and name.endswith(".tmp")):
            continue
        tmp, final = os.path.join(output_dir, name), os.path.join(output_dir, name[:-len(".tmp")])
        if os.path.isfile(os.path.join(tmp, STATE_FILE)) and not os.path.exists(final):
            logger.warning("completing %s: it was written in full before the run stopped", name)
            os.rename(tmp, final)
        else:
            logger.warning("removing %s: a checkpoint whose writing was interrupted", name)
            shutil.rmtree(tmp, ignore_errors=True)


def save_checkpoint(accelerator, cfg: Config, step: int, ema: Optional[EMA] = None) -> str:
    """accelerator.save_state (+ the EMA weights) into checkpoint-NNNNNN.tmp, then rename;
    keep the last K."""
    out = cfg.train.output_dir
    final = os.path.join(out, f"{CHECKPOINT_PREFIX}{step:06d}")
    tmp = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if accelerator.is_main_process:
        if ema is not None:
            ema.save(tmp)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(asdict(cfg), f, indent=1)
        _maybe_hang(step, tmp)
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump({"step": step, "time": time.time()}, f)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.exists(final):  # an earlier run reached this step; this one replaces it
            shutil.rmtree(final)
        os.rename(tmp, final)
        for _, old in list_checkpoints(out)[:-cfg.train.keep_checkpoints]:
            os.remove(os.path.join(old, STATE_FILE))  # unlisted first: a kill mid-delete leaves no half checkpoint
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved %s", final)
    accelerator.wait_for_everyone()
    return final


def _maybe_hang(step: int, tmp: str) -> None:
    if os.environ.get(HANG_ENV) == str(step):
        print(f"videogen test hook: hanging inside {tmp}", file=sys.stderr, flush=True)
        time.sleep(600)


# ============================================================================ logging
class JsonlLog:
    """log.jsonl in output_dir, one JSON object per logged step (main process only).

    On resume, records past the resumed step (written after that checkpoint by the run
    that died) are dropped, so the file reads as one run.
    """

    def __init__(self, path: str, resume_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        keep = []
        if resume_step > 0 and os.path.isfile(path):
            with open(path) as f:
                keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= resume_step]
        with open(path, "w") as f:
            f.writelines(keep)

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_log(path: str) -> list:
    """The records of a log.jsonl, for plots and tests."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ============================================================================ training
def train(config_path: Optional[str], overrides: Optional[list] = None, resume: Optional[str] = None,
          export: Optional[str] = None) -> dict:
    """Train from a YAML config + key=value overrides; resume=None, "latest" or a checkpoint dir.

    With `export`, train nothing: write the pipeline of a checkpoint (`resume`, default the
    latest; EMA weights where kept) to that directory, e.g. to score it while a run goes on.
    Returns {"step", "loss" (last logged), "output_dir", "pipeline"}.
    """
    cfg = load_config(config_path, overrides)
    check_train_config(cfg)
    accelerator = make_accelerator(cfg)
    _check_world(accelerator)
    _setup_logging(accelerator)
    try:
        return _train(cfg, accelerator, resume, export)
    finally:
        accelerator.end_training()


def _train(cfg: Config, accelerator, resume: Optional[str], export: Optional[str] = None) -> dict:
    from accelerate.utils import DistributedType, set_seed

    t = cfg.train
    out = t.output_dir
    if accelerator.distributed_type == DistributedType.FSDP and t.ema_decay > 0:
        raise UsageError("EMA keeps a full copy of the weights, which FSDP avoids: set train.ema_decay=0 under FSDP")
    resume_dir = _prepare_output_dir(accelerator, out, "latest" if export is not None and not resume else resume)
    if export is not None and resume_dir is None:
        raise UsageError(f"no checkpoint in train.output_dir '{out}' to export; train first, or pass --resume DIR")
    set_seed(t.seed)  # the same initial weights on every rank
    dataset = make_dataset(cfg)
    components = load_components(cfg)
    model = components["transformer"].train()
    _check_sizes(cfg, components, dataset)
    dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[t.mixed_precision]
    cond = Conditioner(cfg, components, dataset, accelerator.device, dtype)
    _first_item_check(dataset)
    loader = make_loader(cfg, dataset)
    n = accelerator.num_processes
    optimizer, scheduler = make_optimizer(cfg, model, n)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if len(loader) == 0:
        raise UsageError(f"the dataset has {len(dataset)} usable clips, fewer than train.batch_size "
                         f"({t.batch_size}) x {n} processes; lower train.batch_size or add clips")
    state = TrainState()
    ema = EMA(accelerator.unwrap_model(model), t.ema_decay) if t.ema_decay > 0 else None
    accelerator.register_for_checkpointing(state)
    if resume_dir:
        upgrade_checkpoint(accelerator, resume_dir, ema)
        accelerator.load_state(resume_dir)
        if ema is not None:
            ema.load(resume_dir)
        logger.info("resumed from %s at step %d", resume_dir, state.step)
    if export is not None:
        pipeline_dir = _finish(cfg, accelerator, model, ema, state, components, dataset, export)
        return {"step": state.step, "loss": None, "output_dir": out, "pipeline": pipeline_dir}
    accelerator.init_trackers("videogen", config=_hparams(cfg))  # a no-op off the main process
    log = JsonlLog(os.path.join(out, "log.jsonl"), state.step, accelerator.is_main_process)
    stream = BatchStream(accelerator, loader, dataset, start=state.step * t.grad_accum)
    logger.info("training %s parameters on %d process(es) (%s), %d clips, batch %d x %d x %d accum",
                f"{sum(p.numel() for p in model.parameters()):,}", n, accelerator.device, len(dataset),
                t.batch_size, n, t.grad_accum)
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logger]):  # log lines above the progress bar, not through it
        last_loss = _loop(cfg, accelerator, model, optimizer, scheduler, ema, state, stream, cond, dataset,
                          components, log)
    if state.step < t.max_steps:
        logger.info("stopped at step %d of %d (train.stop_at_step); continue with --resume latest",
                    state.step, t.max_steps)
        return {"step": state.step, "loss": last_loss, "output_dir": out, "pipeline": None}
    pipeline_dir = _finish(cfg, accelerator, model, ema, state, components, dataset)
    return {"step": state.step, "loss": last_loss, "output_dir": out, "pipeline": pipeline_dir}


def make_optimizer(cfg: Config, model: torch.nn.Module, num_processes: int) -> tuple:
    """AdamW + linear warmup and cosine decay to 0 at train.max_steps."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    t = cfg.train
    embed = getattr(model, "frame_embed", None)
    if embed is None:
        params = model.parameters()
    else:  # the frame-position embeddings in a group of their own, at their own rate
        own = {id(p) for p in embed.parameters()}
        params = [{"params": [p for p in model.parameters() if id(p) not in own]},
                  {"params": list(embed.parameters()), "lr": t.lr * t.frame_positions_lr_mult}]
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.adam_betas), weight_decay=t.weight_decay)
    # The prepared scheduler steps once per process per optimizer step (accelerate's
    # convention), so its horizon is counted in process-steps.
    scheduler = get_cosine_schedule_with_warmup(optimizer, t.warmup_steps * num_processes,
                                                t.max_steps * num_processes)
    return optimizer, scheduler


def _prepare_output_dir(accelerator, out: str, resume: Optional[str]) -> Optional[str]:
    if accelerator.is_main_process:
        os.makedirs(out, exist_ok=True)
        _remove_stale_tmp(out)
    accelerator.wait_for_everyone()
    resume_dir = find_resume_dir(out, resume)
    done = list_checkpoints(out)
    if resume_dir is None and done:
        raise UsageError(f"train.output_dir '{out}' already holds checkpoints (up to step {done[-1][0]}); "
                         "pass --resume latest to continue, or choose another train.output_dir")
    return resume_dir


def _check_sizes(cfg: Config, components: dict, dataset) -> None:
    if isinstance(dataset, LatentCacheDataset):
        return
    from videogen.models.vae import check_video_size, vae_factors

    vae = components["vae"]
    check_video_size(vae, cfg.data.size, cfg.data.size, patch_size=components["transformer"].config.patch_size)
    temporal, _ = vae_factors(vae)
    if (cfg.data.frames - 1) % temporal:
        raise UsageError(f"data.frames ({cfg.data.frames}) must be 1+{temporal}k for this VAE")


def _first_item_check(dataset) -> None:
    """Read one item at start-up: a dataset with no usable clip then fails here with one
    clear line, not inside a data-loader worker."""
    dataset[0]


def _loop(cfg, accelerator, model, optimizer, scheduler, ema, state, stream, cond, dataset,
          components, log) -> Optional[float]:
    from tqdm.auto import tqdm

    t = cfg.train
    bar = tqdm(total=t.max_steps, initial=state.step, desc="train", unit="step",
               disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    window = torch.zeros(2, device=accelerator.device)  # (sum of losses, count) since the last log
    last_loss, started = None, time.time()
    end = min(t.max_steps, t.stop_at_step or t.max_steps)
    while state.step < end:
        losses, grad_norm = _optimizer_step(cfg, accelerator, model, optimizer, scheduler, stream, cond,
                                            dataset, state.step)
        window += torch.stack([losses.sum(), torch.tensor(float(len(losses)), device=window.device)])
        if ema is not None:
            ema.update(accelerator.unwrap_model(model))
        state.step += 1
        bar.update(1)
        if state.step % t.log_every == 0 or state.step == end:
            last_loss = _log_step(accelerator, scheduler, window, grad_norm, state, stream, log, bar, started)
            window.zero_()
        if t.checkpoint_every and (state.step % t.checkpoint_every == 0 or state.step == end):
            save_checkpoint(accelerator, cfg, state.step, ema)
        if t.sample_every and state.step % t.sample_every == 0:
            write_sample(cfg, accelerator, model, ema, components, state.step)
    bar.close()
    return last_loss


def _optimizer_step(cfg, accelerator, model, optimizer, scheduler, stream, cond, dataset, step: int) -> tuple:
    """train.grad_accum micro-batches, then one optimizer step: (micro-batch losses, grad norm)."""
    t = cfg.train
    losses, grad_norm = [], None
    for micro in range(t.grad_accum):
        batch = next(stream)
        if isinstance(dataset, VideoTextDataset):
            dataset.skips.merge(batch["skipped"])
        # Stateless randomness: caption dropout, t and noise depend on (seed, step, micro,
        # rank) only, so a resumed run draws exactly what the uninterrupted one would.
        g = torch.Generator(device=accelerator.device).manual_seed(
            _mix_seed(t.seed, step, micro, accelerator.process_index))
        drop = torch.rand(len(batch["caption"]), generator=g, device=accelerator.device) < t.caption_dropout
        latents, text, mask = cond(batch, drop)
        with accelerator.accumulate(model):
            loss = flow_loss(model, latents, text, mask, cfg, g)
            accelerator.backward(loss)
            if accelerator.sync_gradients and t.grad_clip > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()  # accelerate skips these until the last micro-batch
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach().float())
    assert accelerator.sync_gradients, "an optimizer step must end every grad_accum micro-batches"
    return torch.stack(losses), grad_norm


def _log_step(accelerator, scheduler, window, grad_norm, state, stream, log, bar, started) -> float:
    total = accelerator.reduce(window.clone(), reduction="sum")
    loss = (total[0] / total[1]).item()
    lr = scheduler.get_last_lr()[0]
    record = {"step": state.step, "loss": loss, "lr": lr, "epoch": stream.epoch,
              "grad_norm": None if grad_norm is None else float(grad_norm), "wall_s": round(time.time() - started, 3)}
    log.write(record)
    accelerator.log({"loss": loss, "lr": lr, **({"grad_norm": record["grad_norm"]} if grad_norm is not None else {})},
                    step=state.step)
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
    return loss


# ============================================================================ outputs
def _export_transformer(accelerator, model, ema) -> Optional[torch.nn.Module]:
    """A plain copy of the transformer with EMA weights (the raw ones without EMA); main process only."""
    if ema is None:
        state_dict = accelerator.get_state_dict(model)  # collective under FSDP: every rank calls it
    if not accelerator.is_main_process:
        return None
    net = copy.deepcopy(accelerator.unwrap_model(model)).float().eval()
    if ema is not None:
        ema.copy_to(net)
    else:
        net.load_state_dict(state_dict)
    return net


def _pipeline(cfg: Config, components: dict, transformer):
    from videogen.pipelines.pipeline import pipeline_from_components

    return pipeline_from_components(cfg, dict(components, transformer=transformer))


def write_sample(cfg: Config, accelerator, model, ema, components: dict, step: int) -> None:
    """samples/step-NNNNNN.mp4 from the current (EMA) weights, streamed like `videogen generate`."""
    net = _export_transformer(accelerator, model, ema)
    if net is not None:
        from videogen.data.video_io import open_writer

        pipe = _pipeline(cfg, components, net).to(accelerator.device)
        path = os.path.join(cfg.train.output_dir, "samples", f"step-{step:06d}.mp4")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open_writer(path, fps=cfg.sampling.fps) as writer:
            for frame in pipe(cfg.train.sample_prompt, cfg.train.sample_frames, seed=cfg.train.seed):
                writer.write(frame)
        logger.info("wrote sample %s", path)
    accelerator.wait_for_everyone()


def _finish(cfg: Config, accelerator, model, ema, state, components, dataset,
            pipeline_dir: Optional[str] = None) -> str:
    from accelerate.utils import gather_object

    from videogen.pipelines.pipeline import save_pipeline

    out = cfg.train.output_dir
    pipeline_dir = pipeline_dir or os.path.join(out, "pipeline")
    net = _export_transformer(accelerator, model, ema)
    skips = gather_object([dataset.skips.items]) if isinstance(dataset, VideoTextDataset) else []
    if accelerator.is_main_process:
        # Saved in float32 whatever the training precision; training is over, so the
        # shared frozen modules may be cast in place.
        parts = {k: freeze(v, "cpu", torch.float32) if isinstance(v, torch.nn.Module) else v
                 for k, v in dict(components, transformer=net).items()}
        save_pipeline(_pipeline(cfg, parts, parts["transformer"]), pipeline_dir)
        logger.info("wrote the pipeline (%s weights, step %d) to %s", "EMA" if ema else "raw", state.step,
                    pipeline_dir)
        if isinstance(dataset, VideoTextDataset):
            for items in skips:
                dataset.skips.merge((w, r, m) for w, (r, m) in items.items())
            with open(os.path.join(out, "data_report.json"), "w") as f:
                json.dump(dataset.report(), f, indent=1)
            logger.info("%s", dataset.summary())
    accelerator.wait_for_everyone()
    return pipeline_dir


# ============================================================================ cache
def cache_dataset(config_path: Optional[str], overrides: Optional[list] = None, workers: int = 1) -> str:
    """`videogen cache`: VAE latents + text embeddings of every clip into safetensors shards
    in data.cache_dir. Clips are their first data.frames frames (no random window).

    With workers > 1 the clips are read here and encoded by that many processes of one
    thread each; the shards are the same as with one. The VAE encoder is the cost (~0.4 s
    a 33-frame 64x64 clip on one CPU thread) and it scales with processes far better than
    with threads: 1.58x for 2 processes, 1.19x for 2 threads (benchmarks/cache_workers.py).
    """
    from tqdm.auto import tqdm

    if workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    cfg = load_config(config_path, overrides)
    d = cfg.data
    if not d.cache_dir:
        raise UsageError("data.cache_dir is not set; say where the cache goes, e.g. data.cache_dir=cache/shapes")
    fingerprint = cache_fingerprint(cfg)
    if has_latent_cache(d.cache_dir):
        LatentCacheDataset(d.cache_dir, fingerprint=fingerprint)  # raises if built for another config
        logger.warning("the cache in %s is up to date with this config; nothing to do", d.cache_dir)
        return d.cache_dir
    check_train_config(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() and not cfg.train.cpu else "cpu")
    dataset = VideoTextDataset(d.manifest, frames=d.frames, size=d.size, fps=d.fps, random_start=False)
    components = load_components(cfg)
    _check_sizes(cfg, components, dataset)
    encoder = _CacheEncoder(components, device, cfg.text.max_length)
    writer = LatentCacheWriter(d.cache_dir)

    def batches():
        batch: list = []
        for index in tqdm(range(len(dataset)), desc="caching", unit="clip"):
            item = dataset.try_load(index)
            if item is not None:
                batch.append(item)
            if len(batch) == cfg.train.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def inputs(batch: list) -> tuple:
        return torch.stack([item["video"] for item in batch]), [item["caption"] for item in batch]

    if workers == 1 or device.type != "cpu":
        encoded = (encoder(*inputs(batch)) for batch in batches())
    else:
        encoded = _encode_in_processes(encoder, (inputs(batch) for batch in batches()), workers)
    for latents, text, mask, captions in encoded:
        writer.add(latents, text, mask, captions)
    if not writer.captions:
        raise UsageError(dataset.summary() + "; nothing to cache")
    _, text, mask, _ = encoder(None, [""])
    writer.close(uncond_text=text[0], uncond_mask=mask[0], fingerprint=fingerprint, report=dataset.report())
    logger.warning("cached %d clips in %s; %s", len(writer.captions), d.cache_dir, dataset.summary())
    return d.cache_dir


class _CacheEncoder:
    """(videos (B, 3, F, H, W) or None, captions) -> (latents, text, mask, captions), the
    text padded to the cache's length. Picklable: worker processes get a copy."""

    def __init__(self, components: dict, device, max_length: int):
        self.vae = freeze(components["vae"], device, torch.float32)
        self.text_encoder = freeze(components["text_encoder"], device, torch.float32)
        self.tokenizer, self.max_length, self.device = components["tokenizer"], max_length, device

    @torch.no_grad()
    def __call__(self, videos: Optional[torch.Tensor], captions: list) -> tuple:
        from videogen.models.text import encode_prompts
        from videogen.models.vae import encode_video

        latents = None if videos is None else encode_video(self.vae, videos.to(self.device)).float()
        text, mask = encode_prompts(self.tokenizer, self.text_encoder, captions, self.max_length, self.device)
        return (latents, *_pad_text(text, mask, self.max_length), captions)


_worker_encoder: Optional[_CacheEncoder] = None


def _cache_worker_init(encoder: _CacheEncoder) -> None:
    global _worker_encoder
    torch.set_num_threads(1)
    _worker_encoder = encoder


def _cache_worker_encode(job: tuple) -> tuple:
    return _worker_encoder(*job)


def _encode_in_processes(encoder: _CacheEncoder, jobs, workers: int):
    """encoder(*job) for each job in `workers` spawned processes, in order, with at most
    2 x workers batches in flight (the clips are read lazily, not all at once)."""
    import collections
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child of a process whose OpenMP threads have run can hang
    context = multiprocessing.get_context("spawn")
    pending: collections.deque = collections.deque()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_cache_worker_init,
                             initargs=(encoder,)) as pool:
        for job in jobs:
            pending.append(pool.submit(_cache_worker_encode, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _pad_text(text: torch.Tensor, mask: torch.Tensor, length: int) -> tuple:
    """Pad (B, L', Dt) / (B, L') to L = length with zeros / False, so shards stack."""
    pad = length - text.shape[1]
    return F.pad(text.float(), (0, 0, 0, pad)), F.pad(mask, (0, pad), value=False)
