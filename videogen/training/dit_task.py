"""Training the PoM video DiT: the task the one loop (training/loop.py) drives.

    videogen train configs/shapes.yaml [key=value ...] [--resume latest|DIR] [--export DIR]
    accelerate launch --multi_gpu --num_processes 2 -m videogen train configs/tiny.yaml

Objective (design §5): rectified flow, x_t = (1-t) x0 + t eps, target eps - x0, MSE,
with diffusion forcing (an independent t per latent frame), caption dropout to "" for
classifier-free guidance, EMA of the weights, AdamW with linear warmup + cosine decay.
The VAE and the text encoder are frozen: clips are encoded on the fly, or read from the
latent cache that `videogen cache` writes (used when `data.cache_dir` holds one).

Outputs in train.output_dir: log.jsonl (step, loss, lr, ...), checkpoints (with the EMA
weights in ema.safetensors), samples/ (MP4 every train.sample_every steps), pipeline/ (EMA
weights; `videogen generate --model`) and data_report.json (clips skipped and why).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import asdict
from typing import Optional

import torch
import torch.nn.functional as F

from videogen.data.datasets import VideoTextDataset
from videogen.diffusion.flow import add_noise, sample_train_t, velocity_target
from videogen.errors import UsageError
from videogen.training.components import freeze, load_components
from videogen.training.config import Config, load_config
from videogen.training.dit_data import (BatchStream, Conditioner, check_data_source, check_sizes, make_dataset,
                                        make_loader)
from videogen.training.ema import EMA, EMAHooks
from videogen.training.loop import Task, adamw_cosine, run
from videogen.training.seeding import step_generator
from videogen.utils.atomic import write_json

logger = logging.getLogger("videogen")

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def train(config_path: Optional[str], overrides: Optional[list] = None, resume: Optional[str] = None,
          export: Optional[str] = None) -> dict:
    """Train from a YAML config + key=value overrides; resume=None, "latest" or a checkpoint dir.

    With `export`, train nothing: write the pipeline of a checkpoint (`resume`, default the
    latest; EMA weights where kept) to that directory, e.g. to score it while a run goes on.
    Returns {"step", "loss" (last logged), "output_dir", "pipeline"}.
    """
    cfg = load_config(config_path, overrides)
    return run(cfg, DiTTask(cfg), resume, export)


def flow_loss(model, latents: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, cfg: Config,
              generator: torch.Generator, context: Optional[torch.Tensor] = None,
              weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rectified-flow MSE with diffusion forcing: one t per latent frame, (B, F).

    With probability train.teacher_forcing the step is teacher-forced instead: every frame
    is denoised on the clean frames before it, re-noised to sampling.context_noise, which is
    exactly what the streaming sampler commits (twice the compute of a plain step).
    Given `context` (B, C, F, H, W), already at the context noise (`rollout_context`: the
    model's own stream), every frame of the clip is denoised on the frames of `context`
    before it instead, and `weights` (B, F) (`rollout_weights`) weigh its frames.
    With train.start_loss_weight > 0, the clip's first train.start_frames latent frames are
    also trained alone, teacher-forced, and that loss is added at that weight: the clip
    start trained jointly with the whole clip.
    """
    t_cfg = cfg.train
    if context is not None:
        loss = _denoise_loss(model, latents, text, mask, cfg, generator, True, context, weights)
    else:
        teacher = t_cfg.teacher_forcing > 0 and (  # no draw when off: earlier runs resume unchanged
            torch.rand(1, generator=generator, device=latents.device).item() < t_cfg.teacher_forcing)
        loss = _denoise_loss(model, latents, text, mask, cfg, generator, teacher)
    if t_cfg.start_loss_weight > 0:
        start = latents[:, :, :t_cfg.start_frames]
        loss = loss + t_cfg.start_loss_weight * _denoise_loss(model, start, text, mask, cfg, generator, True)
    return loss


def _denoise_loss(model, latents: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, cfg: Config,
                  generator: torch.Generator, teacher: bool, context: Optional[torch.Tensor] = None,
                  weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One flow-matching loss over (B, C, F, H, W) latents; teacher-forced (on the clip's own
    frames re-noised, or on `context`, already at the context noise) or diffusion forcing;
    the frames weighed by `weights` (B, F) when given (a weighted mean of their MSEs)."""
    t_cfg = cfg.train
    b, _, f = latents.shape[:3]
    t = sample_train_t(b, f, logit_mean=t_cfg.t_logit_mean, logit_std=t_cfg.t_logit_std, shift=t_cfg.t_shift,
                       generator=generator, device=latents.device)
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    noisy = add_noise(latents, noise, t)
    if teacher:
        t_context = torch.full_like(t, cfg.sampling.context_noise)
        if context is None:
            noise_c = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
            context = add_noise(latents, noise_c, t_context)
        pred = model(noisy, t, text, mask, context=context, t_context=t_context)
    else:
        pred = model(noisy, t, text, mask)
    if weights is None:
        return F.mse_loss(pred.float(), velocity_target(latents, noise).float())
    per_frame = (pred.float() - velocity_target(latents, noise).float()).pow(2).mean(dim=(1, 3, 4))
    return (per_frame * weights).sum() / weights.sum().clamp(min=1)


@torch.no_grad()
def rollout_context(model, latents: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, empty: tuple,
                    cfg: Config, scheduler, seed: int) -> torch.Tensor:
    """The context a stream gives itself after the clip's first train.rollout_prime latent
    frames: those primed, then every later frame sampled by `model` on its own committed
    frames before it, with the streaming sampler itself (sampling.steps, guidance and
    context noise; noise drawn from `seed`). Returns (every frame as committed, re-noised to
    the context noise: the `context` of `flow_loss`; every frame clean: the primed ones,
    then the model's), (B, C, F, H, W) each.

    Trained on it, the model learns the clip's true frames after its own mistakes rather
    than after the clip's clean frames only (the exposure bias of teacher forcing, which
    long streams show as drift); Self-Forcing trains in this setting.
    """
    from videogen.diffusion.sampler import SamplerSettings, StreamingSampler
    from videogen.training.distill_task import padded_text

    s, b, frames = cfg.sampling, latents.shape[0], latents.shape[2]
    settings = SamplerSettings(steps=s.steps, guidance=s.guidance, context_noise=s.context_noise)
    if settings.guidance != 1.0:
        e, m = padded_text(*empty, text.shape[1])
        text, mask = torch.cat([text, e.expand(b, -1, -1)]), torch.cat([mask, m.expand(b, -1)])
    latent_shape = latents.shape[1:2] + latents.shape[3:]
    sampler = StreamingSampler(model, model.encode_text(text, mask), latent_shape, settings, scheduler,
                               torch.Generator().manual_seed(seed), batch=b, ring=frames)
    prime = cfg.train.rollout_prime
    sampler.prime(latents[:, :, :prime])
    for k in range(prime, frames):
        sampler.next(lookahead=k < frames - 1)
    level = s.context_noise
    clean, noise = (torch.stack(x, dim=2) for x in zip(*sampler.ring))
    return (1 - level) * clean + level * noise, clean


def rollout_weights(stream: torch.Tensor, latents: torch.Tensor, tolerance: Optional[float]) -> torch.Tensor:
    """Which frames of a stream (B, C, F, H, W, clean) the loss trains, (B, F) float: those
    up to where it first leaves the clip (`latents`) by more than `tolerance`, measured per
    frame as the squared distance to the clip's frame over the clip's object energy (the
    squared distance of its latents to each frame's spatial median, the background). All
    frames when `tolerance` is None.

    Why: a stream that drifts a little from its clip (its size, its axis) is what the loss
    should pull back; one that has gone its own way (out of phase after a bounce, along its
    axis: measured at up to 2x the object's energy 12 latent frames in) has a different
    future from the clip's, and learning the clip's there teaches the model to hedge
    between two places (ghosts, jumps)."""
    if tolerance is None:
        return torch.ones(latents.shape[0], latents.shape[2], device=latents.device)
    background = latents.flatten(3).median(dim=3).values[..., None, None]
    energy = (latents - background).pow(2).mean(dim=(1, 2, 3, 4)).clamp(min=1e-8)  # (B,)
    distance = (stream - latents).pow(2).mean(dim=(1, 3, 4)) / energy[:, None]  # (B, F)
    return ((distance <= tolerance).int().cumprod(dim=1)).float()


def make_optimizer(cfg: Config, model: torch.nn.Module, num_processes: int) -> tuple:
    """AdamW + warmup/cosine; the frame-position embeddings in a group of their own, at
    train.frame_positions_lr_mult times the rate (runs without them keep one group)."""
    t = cfg.train
    embed = getattr(model, "frame_embed", None)
    if embed is None:
        params = model.parameters()
    else:
        own = {id(p) for p in embed.parameters()}
        params = [{"params": [p for p in model.parameters() if id(p) not in own]},
                  {"params": list(embed.parameters()), "lr": t.lr * t.frame_positions_lr_mult}]
    return adamw_cosine(t, params, num_processes)


class DiTTask(EMAHooks, Task):
    """The DiT's data, flow-matching loss, EMA, sample videos and pipeline export."""

    name = "train"

    def __init__(self, cfg: Config):
        self.cfg, self.t = cfg, cfg.train
        self.ema: Optional[EMA] = None

    def check(self) -> None:
        check_data_source(self.cfg)

    def outputs(self) -> list:
        return [(os.path.join(self.t.output_dir, "pipeline"), "model_index.json", "pipeline")]

    def architecture(self) -> dict:
        if self.t.init_from:  # the transformer comes from that pipeline, but for its frame positions
            return {"model.frame_positions": self.cfg.model.frame_positions}
        return {f"model.{key}": value for key, value in asdict(self.cfg.model).items()}

    def build(self, accelerator, start_step: int) -> tuple:
        from accelerate.utils import DistributedType

        cfg, t, acc = self.cfg, self.t, accelerator
        if acc.distributed_type == DistributedType.FSDP and t.ema_decay > 0:
            raise UsageError("EMA keeps a full copy of the weights, which FSDP avoids: set train.ema_decay=0 under FSDP")
        self.acc, self.dataset = acc, make_dataset(cfg)
        self.components = load_components(cfg)
        model = self.components["transformer"].train()
        if t.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        check_sizes(cfg, self.components, self.dataset)
        self.cond = Conditioner(cfg, self.components, self.dataset, acc.device, DTYPES[t.mixed_precision])
        self.dataset[0]  # a dataset with no usable clip fails here in one line, not in a loader worker
        optimizer, scheduler = make_optimizer(cfg, model, acc.num_processes)
        model, optimizer, self.loader, scheduler = acc.prepare(model, optimizer, make_loader(cfg, self.dataset),
                                                               scheduler)
        if len(self.loader) == 0:
            raise UsageError(f"the dataset has {len(self.dataset)} usable clips, fewer than train.batch_size "
                             f"({t.batch_size}) x {acc.num_processes} processes; lower train.batch_size or add clips")
        self.model = model
        self.ema = EMA(acc.unwrap_model(model), t.ema_decay) if t.ema_decay > 0 else None
        return model, optimizer, scheduler

    def begin(self, step: int, log) -> None:
        t, n = self.t, self.acc.num_processes
        self.stream = BatchStream(self.acc, self.loader, self.dataset, start=step * t.grad_accum)
        logger.info("training %s parameters on %d process(es) (%s), %d clips, batch %d x %d x %d accum",
                    f"{sum(p.numel() for p in self.model.parameters()):,}", n, self.acc.device, len(self.dataset),
                    t.batch_size, n, t.grad_accum)

    def forward_backward(self, step: int, micro: int) -> dict:
        acc, t = self.acc, self.t
        batch = next(self.stream)
        if isinstance(self.dataset, VideoTextDataset):
            self.dataset.skips.merge(batch["skipped"])
        # Stateless randomness: caption dropout, t and noise depend on (seed, step, micro,
        # rank) only, so a resumed run draws exactly what the uninterrupted one would.
        g = step_generator(acc.device, t.seed, step, micro, acc.process_index)
        drop = torch.rand(len(batch["caption"]), generator=g, device=acc.device) < t.caption_dropout
        latents, text, mask = self.cond(batch, drop)
        context = weights = None
        if t.rollout > 0 and torch.rand(1, generator=g, device=acc.device).item() < t.rollout:
            self._check_rollout(latents.shape[2])
            seed = int(torch.randint(2**62, (1,), generator=g, device=acc.device))
            context, stream = rollout_context(acc.unwrap_model(self.model), latents, text, mask, self.cond.empty(),
                                              self.cfg, self.components["scheduler"], seed)
            weights = rollout_weights(stream, latents, t.rollout_tolerance)
        loss = flow_loss(self.model, latents, text, mask, self.cfg, g, context, weights)
        acc.backward(loss)
        out = {"loss": loss.detach().float()}
        if weights is not None:  # the share of the streams' frames trained (the rest had left their clip)
            out["rollout_kept"] = weights.mean()
        return out

    def _check_rollout(self, frames: int) -> None:
        if self.t.rollout_prime >= frames:
            raise UsageError(f"train.rollout_prime ({self.t.rollout_prime}) leaves nothing to roll out in clips of "
                             f"{frames} latent frames; lower it or train on longer clips (data.frames)")

    def log_fields(self) -> dict:
        return {"epoch": self.stream.epoch}

    def after_step(self, step: int, last: bool) -> None:
        if self.t.sample_every and step % self.t.sample_every == 0:
            self.write_sample(step)

    def result(self) -> dict:
        return {"pipeline": None}

    def export(self, step: int, out_dir: Optional[str], final: bool) -> dict:
        """The pipeline with the EMA transformer (raw weights without EMA), in float32; at
        the end of a run, with data_report.json (the clips skipped on every rank)."""
        from accelerate.utils import gather_object

        from videogen.pipelines.pipeline import save_pipeline

        acc, out = self.acc, self.t.output_dir
        pipeline_dir = out_dir or os.path.join(out, "pipeline")
        net = self._export_transformer()
        report = final and isinstance(self.dataset, VideoTextDataset)
        skips = gather_object([self.dataset.skips.items]) if report else []
        if acc.is_main_process:
            # training is over, so the shared frozen modules may be cast in place
            parts = {k: freeze(v, "cpu", torch.float32) if isinstance(v, torch.nn.Module) else v
                     for k, v in dict(self.components, transformer=net).items()}
            save_pipeline(self._pipeline(parts), pipeline_dir)
            logger.info("wrote the pipeline (%s weights, step %d) to %s", "EMA" if self.ema else "raw", step,
                        pipeline_dir)
            if report:
                for items in skips:
                    self.dataset.skips.merge((w, r, m) for w, (r, m) in items.items())
                write_json(os.path.join(out, "data_report.json"), self.dataset.report())
                logger.info("%s", self.dataset.summary())
        acc.wait_for_everyone()
        return {"pipeline": pipeline_dir}

    def _export_transformer(self) -> Optional[torch.nn.Module]:
        """A plain copy of the transformer with EMA weights (the raw ones without EMA); main process only."""
        acc = self.acc
        if self.ema is None:
            state_dict = acc.get_state_dict(self.model)  # collective under FSDP: every rank calls it
        if not acc.is_main_process:
            return None
        net = copy.deepcopy(acc.unwrap_model(self.model)).float().eval()
        if self.ema is not None:
            self.ema.copy_to(net)
        else:
            net.load_state_dict(state_dict)
        return net

    def _pipeline(self, parts: dict):
        from videogen.pipelines.pipeline import pipeline_from_components

        return pipeline_from_components(self.cfg, parts)

    def write_sample(self, step: int) -> None:
        """samples/step-NNNNNN.mp4 from the current (EMA) weights, streamed like `videogen generate`."""
        net = self._export_transformer()
        if net is not None:
            from videogen.data.video_io import open_writer

            pipe = self._pipeline(dict(self.components, transformer=net)).to(self.acc.device)
            path = os.path.join(self.t.output_dir, "samples", f"step-{step:06d}.mp4")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open_writer(path, fps=self.cfg.sampling.fps) as writer:
                for frame in pipe(self.t.sample_prompt, self.t.sample_frames, seed=self.t.seed):
                    writer.write(frame)
            logger.info("wrote sample %s", path)
        self.acc.wait_for_everyone()
