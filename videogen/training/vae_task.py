"""Training the causal video VAE (diffusers AutoencoderKLWan): the task the one loop
(training/loop.py) drives.

    videogen train-vae configs/shapes_vae.yaml [key=value ...] [--resume latest] [--export DIR]

Data: shapes-world clips rendered on the fly (an endless stream without the held-out
colour-shape pairs; the batch of step s is a pure function of (seed, s, rank), so resume
is exact with no data-loader state), or clips of a shapes dataset (`data.dataset`: a
directory or metadata.csv of MP4 files), drawn the same way.

Loss on pixels in [-1, 1], each term a mean over elements:
    l1 |x - x'| + mse (x - x')^2 + edge |grad x - grad x'| + kl KL(q(z|x) || N(0, I)),
with x' decoded from a sample of q(z|x). The KL weight is tiny: it only keeps the
posterior from drifting; latent scale is handled by the normalisation below.

Every eval_every steps: PSNR over a fixed set of eval_clips clips (their own seed; all
colour-shape pairs, held-out ones included) through `encode_video` / `decode_latents`,
the path generation uses -> eval.json. At the end (or `--export DIR` from a checkpoint):
per-channel mean/std of the posterior means over stats_clips training clips go into the
VAE config (latents_mean/latents_std), so that `encode_video` hands the DiT roughly
unit-variance latents, and the VAE is saved with `save_pretrained` (safetensors).

Outputs in train.output_dir: log.jsonl, eval.json, checkpoint-*/, export/ (the VAE).
Shapes: B batch, F pixel frames, F' latent frames, z latent channels, H x W pixels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from typing import Optional

import numpy as np
import torch

from videogen.data.datasets import VideoTextDataset, clip_to_tensor, size_hw
from videogen.data.shapes import HELD_OUT, MOTIONS, allowed_pairs, render_clip
from videogen.errors import UsageError
from videogen.models.vae import VAEConfig, build_vae, check_video_size, vae_factors
from videogen.training.config import VAERunConfig, load_vae_train_config
from videogen.training.loop import Task, adamw_cosine, run
from videogen.training.seeding import mix_seed, step_generator
from videogen.training.vae_eval import EVAL_FILE, EvalFile, eval_set, evaluate_psnr, export_vae
from videogen.training.vae_model import (CHUNK, IMAGE_STREAM, TRAIN_STREAM, WARMUP_STREAM, Reconstruction,
                                         identity_time_convs, loss_terms, psnr, warmup_frames)
from videogen.utils.atomic import write_json

logger = logging.getLogger("videogen")


def train_vae(config_path: Optional[str], overrides: Optional[list] = None, resume: Optional[str] = None,
              export: Optional[str] = None) -> dict:
    """Train from a YAML config + key=value overrides; resume=None, "latest" or a checkpoint dir.

    With `export`, train nothing: load the checkpoint (`resume`, default the latest) and
    export its VAE to that directory. Returns {"step", "psnr" (last eval), "export", "output_dir"}.
    """
    cfg = load_vae_train_config(config_path, overrides)
    return run(cfg, VAETask(cfg), resume, export)


def export_dir_of(cfg: VAERunConfig) -> str:
    return cfg.train.export_dir or os.path.join(cfg.train.output_dir, "export")


# ============================================================================ data
class ShapesClips:
    """Shapes-world clips rendered on the fly; `batch(n, *key)` depends on (seed, key) only."""

    def __init__(self, frames: int, size, seed: int, holdout: str):
        """size: an int or (H, W); H x W clips are the centre crop of a square canvas of the longer side."""
        self.frames, self.size, self.seed = frames, size_hw(size), seed
        self.pairs = allowed_pairs(holdout)

    def batch(self, n: int, *key: int) -> torch.Tensor:
        """(n, 3, F, H, W) float in [-1, 1]: uniform colour-shape pair and motion per clip."""
        rng = np.random.default_rng([self.seed, *key])
        clips = []
        for _ in range(n):
            colour, shape = self.pairs[rng.integers(len(self.pairs))]
            motion = MOTIONS[rng.integers(len(MOTIONS))]
            clips.append(render_clip(colour, shape, motion, frames=self.frames, size=max(self.size), rng=rng))
        return torch.stack([clip_to_tensor(c, self.size) for c in clips])


class DatasetClips:
    """Clips of a video dataset (metadata.csv of MP4s), drawn like ShapesClips: by (seed, key)."""

    def __init__(self, path: str, frames: int, size: int, seed: int):
        self.dataset = VideoTextDataset(path, frames=frames, size=size, random_start=True, seed=seed)
        self.seed = seed

    def batch(self, n: int, *key: int) -> torch.Tensor:
        mixed = mix_seed(self.seed, *key)
        self.dataset.set_epoch(mixed)  # the clip windows too depend on the key alone
        index = np.random.default_rng(mixed).integers(len(self.dataset), size=n)
        return torch.stack([self.dataset[int(i)]["video"] for i in index])


def make_clips(cfg: VAERunConfig, frames: Optional[int] = None):
    """The training clips of cfg.data (`frames` overrides data.frames: 1 for single frames)."""
    d = dataclasses.replace(cfg.data, frames=frames or cfg.data.frames + CHUNK * cfg.data.warmup_chunks)
    if d.dataset:
        logger.info("training clips from the dataset %s", d.dataset)
        return DatasetClips(d.dataset, d.frames, d.size, cfg.train.seed)
    held = "none" if d.holdout == "none" else ", ".join(" ".join(p) for p in HELD_OUT)
    logger.info("training clips rendered on the fly (%d frames, %dx%d (HxW); held out: %s)", d.frames,
                *size_hw(d.size), held)
    return ShapesClips(d.frames, d.size, cfg.train.seed, d.holdout)


# ============================================================================ setup
def build_model(cfg: VAERunConfig, start_step: int) -> Reconstruction:
    """The VAE to train, wrapped for its training forward; the encoder frozen before
    wrapping (DDP must know which parameters train) if the run resumes at or after
    train.freeze_encoder_at."""
    t = cfg.train
    vae = build_vae(cfg.vae).train()
    temporal, _ = vae_factors(vae)
    if temporal != CHUNK:
        raise UsageError(f"this VAE compresses time {temporal}x; the pipeline needs {CHUNK}x "
                         "(vae.temperal_downsample with two true entries)")
    check_video_size(vae, *size_hw(cfg.data.size))
    if t.init_logvar is not None and not cfg.vae.pretrained:
        with torch.no_grad():  # quant_conv outputs (mean, logvar), z channels each
            vae.quant_conv.bias[vae.config.z_dim:] = t.init_logvar
    if t.identity_time_convs and not cfg.vae.pretrained:
        identity_time_convs(vae)
    model = Reconstruction(vae)
    if t.freeze_encoder_at and start_step >= t.freeze_encoder_at:
        model.freeze_encoder()
        logger.info("encoder frozen (train.freeze_encoder_at=%d): training the decoder only", t.freeze_encoder_at)
    return model


def set_peak_lr(scheduler, lr: float) -> None:
    """Make train.lr the schedule's peak on resume (a checkpoint carries the old one), so a
    run that spikes can go on at a lower rate: the rate now is lr x the schedule's factor."""
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate wraps the LambdaLR
    if all(math.isclose(base, lr) for base in inner.base_lrs):
        return
    logger.info("train.lr changed on resume: peak %.3g -> %.3g", inner.base_lrs[0], lr)
    inner.base_lrs = [lr] * len(inner.base_lrs)
    for group, factor in zip(inner.optimizer.param_groups, inner.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(inner.last_epoch)
    inner._last_lr = [g["lr"] for g in inner.optimizer.param_groups]


# ============================================================================ the task
class VAETask(Task):
    """Clips, the reconstruction loss, PSNR evaluation and the export with latent statistics."""

    name = "train-vae"

    def __init__(self, cfg: VAERunConfig):
        self.cfg, self.t = cfg, cfg.train

    def outputs(self) -> list:
        return [(export_dir_of(self.cfg), "config.json", "VAE export")]

    def architecture(self) -> dict:
        return {f"vae.{key}": value for key, value in dataclasses.asdict(self.cfg.vae).items()}

    def build(self, accelerator, start_step: int) -> tuple:
        self.acc = accelerator
        model = build_model(self.cfg, start_step)
        optimizer, scheduler = adamw_cosine(self.t, model.parameters(), accelerator.num_processes)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        return self.model, self.optimizer, self.scheduler

    def load_extra(self, directory: str) -> None:
        set_peak_lr(self.scheduler, self.t.lr)

    def begin(self, step: int, log) -> None:
        cfg, t, main = self.cfg, self.t, self.acc.is_main_process
        self.log, self.clips = log, make_clips(cfg)
        self.images = make_clips(cfg, frames=1) if cfg.data.image_batch else None
        self.evals = EvalFile(os.path.join(t.output_dir, EVAL_FILE), step, main)
        self.eval_videos = eval_set(t.eval_clips, t.eval_frames, cfg.data.size, t.eval_seed) if main else None
        self.long_videos = (eval_set(t.eval_long_clips, t.eval_long_frames, cfg.data.size, t.eval_seed + 1)
                            if main and t.eval_long_clips else None)
        vae = self.acc.unwrap_model(self.model).vae
        logger.info("training a VAE of %s parameters on %d process(es) (%s, %d threads), batch %d x %d frames",
                    f"{sum(p.numel() for p in vae.parameters()):,}", self.acc.num_processes,
                    self.acc.device, torch.get_num_threads(), t.batch_size, cfg.data.frames)

    def before_step(self, step: int) -> bool:
        t, model = self.t, self.acc.unwrap_model(self.model)
        if not (t.freeze_encoder_at and step == t.freeze_encoder_at and not model.encoder_frozen):
            return False
        if self.acc.num_processes > 1:  # DDP fixes its parameter set when wrapping
            logger.info("step %d: the encoder freezes here; rerun with --resume latest to go on", step)
            return True
        model.freeze_encoder()
        logger.info("step %d: encoder frozen, training the decoder only", step)
        return False

    def forward_backward(self, step: int, micro: int) -> dict:
        t, d, acc = self.t, self.cfg.data, self.acc
        device, rank = acc.device, acc.process_index
        key = (step, rank) + ((micro,) if micro else ())  # micro 0 draws as before grad_accum existed
        video = self.clips.batch(t.batch_size, TRAIN_STREAM, *key).to(device)
        warmup = int(np.random.default_rng([t.seed, WARMUP_STREAM, step, *key[2:]]).integers(d.warmup_chunks + 1))
        video = video[:, :, :d.frames + CHUNK * warmup]
        g = step_generator(device, t.seed, *key)
        # with images, two backward passes: DDP syncs gradients on the second only
        with acc.no_sync(self.model) if self.images is not None else contextlib.nullcontext():
            with acc.autocast():
                recon, mean, logvar = self.model(video, generator=g, warmup=warmup)
            video = video[:, :, warmup_frames(warmup):]
            terms = loss_terms(recon, video, mean, logvar, self.cfg.loss)
            acc.backward(terms["loss"])
        terms = {k: v.detach() for k, v in terms.items()}
        terms["psnr"] = psnr(recon.detach().clamp(-1, 1), video).mean()
        terms["image_psnr"] = torch.zeros((), device=device)
        if self.images is not None:
            image = self.images.batch(d.image_batch, IMAGE_STREAM, *key).to(device)
            with acc.autocast():
                recon_i, mean_i, logvar_i = self.model(image, generator=g)
            image_terms = loss_terms(recon_i, image, mean_i, logvar_i, self.cfg.loss)
            acc.backward(image_terms["loss"])
            terms["loss"] = terms["loss"] + image_terms["loss"].detach()
            terms["image_psnr"] = psnr(recon_i.detach().clamp(-1, 1), image).mean()
        return {k: terms[k] for k in ("loss", "l1", "mse", "edge", "kl", "fg", "psnr", "image_psnr")}

    def after_step(self, step: int, last: bool) -> None:
        if (self.t.eval_every and step % self.t.eval_every == 0) or last:
            self.evaluate(step)

    def evaluate(self, step: int) -> None:
        """PSNR of the eval clips (and the long ones) into eval.json and the log (main process)."""
        if self.acc.is_main_process:
            started = time.time()
            vae = self.acc.unwrap_model(self.model).vae
            result = evaluate_psnr(vae, *self.eval_videos, batch=self.t.eval_batch)
            long = {}
            if self.long_videos is not None:
                res = evaluate_psnr(vae, *self.long_videos, batch=self.t.eval_batch)
                long = {"eval_psnr_long": res["psnr"], "eval_psnr_long_foreground": res["psnr_foreground"]}
                result["long"] = {k: res[k] for k in ("psnr", "psnr_foreground", "psnr_min", "clips", "frames")}
            self.evals.add(step, result)
            self.log.write({"step": step, "eval_psnr": result["psnr"], "eval_psnr_held_out": result["psnr_held_out"],
                            "eval_psnr_foreground": result["psnr_foreground"], **long,
                            "eval_s": round(time.time() - started, 1)})
            tail = f"; {result['long']['frames']}-frame clips {result['long']['psnr']:.2f}" if long else ""
            logger.info("step %d: eval PSNR %.2f dB over %d clips (held-out pairs %.2f, min %.2f, objects %.2f)%s",
                        step, result["psnr"], result["clips"], result["psnr_held_out"] or math.nan,
                        result["psnr_min"], result["psnr_foreground"], tail)
        self.acc.wait_for_everyone()

    def result(self) -> dict:
        latest = self.evals.data["latest"] if hasattr(self, "evals") else None
        return {"export": None, "psnr": (latest or {}).get("psnr")}

    def export(self, step: int, out_dir: Optional[str], final: bool) -> dict:
        """export_vae, then load the export back as users will and write its PSNR to
        out_dir/eval.json (main process)."""
        result = self.result()
        if self.acc.is_main_process:
            t, out_dir = self.t, out_dir or export_dir_of(self.cfg)
            vae = self.acc.unwrap_model(self.model).vae
            export_vae(vae, make_clips(self.cfg), out_dir, t.stats_clips)
            exported = build_vae(VAEConfig(pretrained=out_dir))
            scores = evaluate_psnr(exported, *eval_set(t.eval_clips, t.eval_frames, self.cfg.data.size, t.eval_seed),
                                   batch=t.eval_batch)
            write_json(os.path.join(out_dir, EVAL_FILE), {"step": step, **scores})
            logger.info("exported VAE (step %d): eval PSNR %.2f dB over %d clips", step, scores["psnr"], scores["clips"])
            result["export"] = out_dir
            if not final:
                result["psnr"] = scores["psnr"]
        self.acc.wait_for_everyone()
        return result
