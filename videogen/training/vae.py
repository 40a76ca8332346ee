"""Train the causal video VAE (diffusers AutoencoderKLWan) with accelerate.

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

Checkpoints are videogen.training.dit's: `accelerator.save_state` into checkpoint-NNNNNN.tmp,
renamed when complete, the last K kept; `--resume latest` takes the newest complete one.
Outputs in train.output_dir: log.jsonl, eval.json, checkpoint-*/, export/ (the VAE).

Shapes: B batch, F pixel frames, F' latent frames, z latent channels, H x W pixels.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import patchify, unpatchify

from videogen.models.vae import VAEConfig
from videogen.utils.config import load_structured
from videogen.data.datasets import VideoTextDataset, clip_to_tensor
from videogen.errors import UsageError
from videogen.data.shapes import HELD_OUT, MOTIONS, allowed_pairs, dataset_plan, render_clip
from videogen.training.dit import (STATE_FILE, JsonlLog, TrainState, _mix_seed, _prepare_output_dir, _setup_logging, _use_cpu,
                            find_resume_dir, save_checkpoint)
from videogen.models.vae import (StreamingDecoder, build_vae, check_video_size, decode_latents, encode_video,
                          vae_factors)

logger = logging.getLogger("videogen")

# Independent random streams, mixed into every seed.
TRAIN_STREAM, STATS_STREAM, EVAL_STREAM, IMAGE_STREAM, WARMUP_STREAM = 0x7A1, 0x57A, 0xE7A, 0x1A6, 0x3A7
EVAL_FILE = "eval.json"


# ============================================================================ config
@dataclass
class VAEDataConfig:
    dataset: Optional[str] = None  # a shapes dataset dir or metadata.csv; None renders clips on the fly
    frames: int = 17  # pixel frames per training clip, 1+4k
    size: int = 64
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


@dataclass
class VAETrainConfig:
    """Training loop. Steps are optimizer steps; batch_size is per process."""

    output_dir: str = "runs/vae"
    export_dir: Optional[str] = None  # where the trained VAE goes; None = output_dir/export
    seed: int = 0
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    adam_betas: list = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 100
    max_steps: int = 4000
    stop_at_step: int = 0  # end this run early (with a checkpoint), schedule unchanged; 0 = run to max_steps
    grad_clip: float = 1.0  # 0 disables clipping
    mixed_precision: str = "no"  # no | fp16 | bf16
    cpu: bool = False
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    log_every: int = 10
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


@dataclass
class VAERunConfig:
    vae: VAEConfig = field(default_factory=VAEConfig)
    data: VAEDataConfig = field(default_factory=VAEDataConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    train: VAETrainConfig = field(default_factory=VAETrainConfig)


def load_vae_train_config(path: Optional[str] = None, overrides: Optional[list] = None) -> VAERunConfig:
    """Read `path` (YAML) and `overrides` (['train.lr=1e-4', ...]) into a validated VAERunConfig."""
    cfg: VAERunConfig = load_structured(VAERunConfig, path, overrides, example="configs/shapes_vae.yaml")
    check_vae_train_config(cfg)
    return cfg


def check_vae_train_config(cfg: VAERunConfig) -> None:
    """Cross-field checks a user can get wrong (sizes against the VAE come in _check_sizes)."""
    d, t, w = cfg.data, cfg.train, cfg.loss
    if (d.frames - 1) % 4 or (t.eval_frames - 1) % 4:
        raise UsageError(f"data.frames and train.eval_frames must be 1+4k (e.g. 17, 33), "
                         f"not {d.frames} and {t.eval_frames}")
    if d.holdout not in ("default", "none"):
        raise UsageError(f"data.holdout must be 'default' or 'none', not '{d.holdout}'")
    if d.dataset is not None and not os.path.exists(d.dataset):
        raise UsageError(f"data.dataset '{d.dataset}' not found; make one with `videogen data shapes "
                         "--out data/shapes --num 2000`, or set data.dataset=null to render clips on the fly")
    if t.eval_long_clips < 0 or t.eval_long_frames < 1 or (t.eval_long_frames - 1) % 4:
        raise UsageError("train.eval_long_clips must be >= 0 and train.eval_long_frames 1+4k (e.g. 129), not "
                         f"{t.eval_long_clips} and {t.eval_long_frames}")
    for name in ("batch_size", "max_steps", "keep_checkpoints", "log_every", "eval_clips", "eval_batch",
                 "stats_clips"):
        if getattr(t, name) < 1:
            raise UsageError(f"train.{name} must be at least 1, not {getattr(t, name)}")
    if cfg.data.warmup_chunks < 0:
        raise UsageError(f"data.warmup_chunks must be >= 0 (0 disables it), not {cfg.data.warmup_chunks}")
    if cfg.data.image_batch < 0:
        raise UsageError(f"data.image_batch must be >= 0 (0 disables it), not {cfg.data.image_batch}")
    for name in ("warmup_steps", "stop_at_step", "checkpoint_every", "eval_every", "freeze_encoder_at"):
        if getattr(t, name) < 0:
            raise UsageError(f"train.{name} must be >= 0 (0 disables it), not {getattr(t, name)}")
    if not t.lr > 0:
        raise UsageError(f"train.lr must be positive, not {t.lr}")
    if len(t.adam_betas) != 2 or not all(0 <= b < 1 for b in t.adam_betas):
        raise UsageError(f"train.adam_betas must be two numbers in [0, 1), e.g. [0.9, 0.99], not {t.adam_betas}")
    if t.mixed_precision not in ("no", "fp16", "bf16"):
        raise UsageError(f"train.mixed_precision must be no, fp16 or bf16, not '{t.mixed_precision}'")
    weights = asdict(w)
    if any(v < 0 for v in weights.values()) or w.l1 + w.mse == 0:
        raise UsageError(f"loss weights must be >= 0 with loss.l1 or loss.mse positive, not {weights}")


def export_dir_of(cfg: VAERunConfig) -> str:
    return cfg.train.export_dir or os.path.join(cfg.train.output_dir, "export")


# ============================================================================ data
class ShapesClips:
    """Shapes-world clips rendered on the fly; `batch(n, *key)` depends on (seed, key) only."""

    def __init__(self, frames: int, size: int, seed: int, holdout: str):
        self.frames, self.size, self.seed = frames, size, seed
        self.pairs = allowed_pairs(holdout)

    def batch(self, n: int, *key: int) -> torch.Tensor:
        """(n, 3, F, H, W) float in [-1, 1]: uniform colour-shape pair and motion per clip."""
        rng = np.random.default_rng([self.seed, *key])
        clips = []
        for _ in range(n):
            colour, shape = self.pairs[rng.integers(len(self.pairs))]
            motion = MOTIONS[rng.integers(len(MOTIONS))]
            clips.append(render_clip(colour, shape, motion, frames=self.frames, size=self.size, rng=rng))
        return torch.stack([clip_to_tensor(c, self.size) for c in clips])


class DatasetClips:
    """Clips of a video dataset (metadata.csv of MP4s), drawn like ShapesClips: by (seed, key)."""

    def __init__(self, path: str, frames: int, size: int, seed: int):
        self.dataset = VideoTextDataset(path, frames=frames, size=size, random_start=True, seed=seed)
        self.seed = seed

    def batch(self, n: int, *key: int) -> torch.Tensor:
        mixed = _mix_seed(self.seed, *key)
        self.dataset.set_epoch(mixed)  # the clip windows too depend on the key alone
        index = np.random.default_rng(mixed).integers(len(self.dataset), size=n)
        return torch.stack([self.dataset[int(i)]["video"] for i in index])


def make_clips(cfg: VAERunConfig, frames: Optional[int] = None):
    """The training clips of cfg.data (`frames` overrides data.frames: 1 for single frames)."""
    d = dataclasses.replace(cfg.data, frames=frames or cfg.data.frames + 4 * cfg.data.warmup_chunks)
    if d.dataset:
        logger.info("training clips from the dataset %s", d.dataset)
        return DatasetClips(d.dataset, d.frames, d.size, cfg.train.seed)
    held = "none" if d.holdout == "none" else ", ".join(" ".join(p) for p in HELD_OUT)
    logger.info("training clips rendered on the fly (%d frames, %dx%d; held out: %s)", d.frames, d.size, d.size, held)
    return ShapesClips(d.frames, d.size, cfg.train.seed, d.holdout)


def eval_set(num: int, frames: int, size: int, seed: int) -> tuple:
    """(videos (N, 3, F, H, W) uint8, names ['red circle', ...]): all colour-shape pairs,
    held-out ones included, each about equally often; a pure function of the arguments."""
    plan = dataset_plan(num, seed=seed, holdout="none")
    videos = [render_clip(c, s, m, frames=frames, size=size, rng=np.random.default_rng([seed, EVAL_STREAM, i]))
              for i, (c, s, m) in enumerate(plan)]
    stacked = torch.from_numpy(np.stack(videos)).permute(0, 4, 1, 2, 3).contiguous()
    return stacked, [f"{c} {s}" for c, s, _ in plan]


# ============================================================================ model + loss
class Reconstruction(torch.nn.Module):
    """The VAE's training forward: encode, sample z, decode frame by frame without clamping.

    `AutoencoderKLWan.decode` clamps to [-1, 1], which zeroes the gradient of every pixel
    that overshoots (a bright colour could then never come back down); this is its loop
    without the clamp. Wrapping it in a module lets accelerate (DDP) see one forward.
    """

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.encoder_frozen = False

    def freeze_encoder(self) -> None:
        """Stop training encoder and quant_conv (and skip their backward)."""
        for module in (self.vae.encoder, self.vae.quant_conv):
            module.requires_grad_(False)
        self.encoder_frozen = True

    def forward(self, video: torch.Tensor, generator: Optional[torch.Generator] = None, warmup: int = 0) -> tuple:
        """video (B, 3, F, H, W), F = 1+4k -> (reconstruction, mean, logvar (B, z, F', h, w)).

        Encoder and decoder run one latent frame (4 pixel frames; the first: 1) at a time,
        carrying their causal caches, as `AutoencoderKLWan` does. The first `warmup` latent
        frames run without gradient and only fill the caches: the outputs cover the frames
        after them (pixel frames 4*warmup-3 on), so a long clip trains the steady state of
        both caches at the cost of a forward pass over its start (truncated backprop).
        """
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        vae = self.vae
        if vae.config.patch_size is not None:
            video = patchify(video, patch_size=vae.config.patch_size)
        enc_cache = [None] * vae._cached_conv_counts["encoder"]
        dec_cache = [None] * vae._cached_conv_counts["decoder"]
        grad = torch.is_grad_enabled()
        outs, moments = [], []
        for i in range(1 + (video.shape[2] - 1) // 4):
            chunk = video[:, :, :1] if i == 0 else video[:, :, 1 + 4 * (i - 1):1 + 4 * i]
            trained = i >= warmup
            with torch.set_grad_enabled(grad and trained and not self.encoder_frozen):
                h = vae.quant_conv(vae.encoder(chunk, feat_cache=enc_cache, feat_idx=[0]))
            with torch.set_grad_enabled(grad and trained):
                z = DiagonalGaussianDistribution(h).sample(generator=generator)
                out = vae.decoder(vae.post_quant_conv(z), feat_cache=dec_cache, feat_idx=[0], first_chunk=i == 0)
            if trained:
                outs.append(out)
                moments.append(h)
        out = torch.cat(outs, 2)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        mean, logvar = torch.chunk(torch.cat(moments, 2), 2, dim=1)
        return out, mean, torch.clamp(logvar, -30.0, 20.0)


def warmup_frames(warmup: int) -> int:
    """Pixel frames whose latents `Reconstruction(..., warmup=warmup)` only warms up on."""
    return 0 if warmup == 0 else 1 + 4 * (warmup - 1)


def psnr(a: torch.Tensor, b: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-clip PSNR in dB of (B, 3, F, H, W) videos in [-1, 1] (peak = the full range),
    over the pixels where `mask` (broadcast to the videos) is true, or all of them."""
    err = ((a.float() - b.float()) / 2).pow(2)
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        mask = mask.expand_as(err)
        mse = (err * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def _edges(x: torch.Tensor) -> tuple:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def foreground_mask(video: torch.Tensor, threshold: float = 0.1, grow: int = 1) -> torch.Tensor:
    """(B, 1, F, H, W) bool: pixels of a (B, 3, F, H, W) video in [-1, 1] farther than
    `threshold` (any channel) from their frame's median colour, dilated by `grow` pixels."""
    background = video.flatten(3).median(dim=3).values[..., None, None]
    mask = (video - background).abs().amax(dim=1, keepdim=True) > threshold
    if grow:
        k = 2 * grow + 1
        mask = F.max_pool3d(mask.float(), (1, k, k), stride=1, padding=(0, grow, grow)) > 0
    return mask


def loss_terms(recon: torch.Tensor, video: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
               w: VAELossConfig) -> dict:
    """{'loss', 'l1', 'mse', 'edge', 'kl', 'fg'}: scalar tensors; 'loss' is the weighted sum."""
    diff = recon.float() - video.float()
    terms = {"l1": diff.abs().mean(), "mse": diff.pow(2).mean(),
             "kl": 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).mean()}
    terms["edge"] = (sum((a - b).abs().mean() for a, b in zip(_edges(recon.float()), _edges(video.float())))
                     if w.edge else torch.zeros((), device=diff.device))
    if w.foreground:
        fg = foreground_mask(video.float()).expand_as(diff)
        count = fg.sum().clamp_min(1)
        terms["fg"] = (diff.abs() * fg).sum() / count + (diff.pow(2) * fg).sum() / count
    else:
        terms["fg"] = torch.zeros((), device=diff.device)
    terms["loss"] = (w.l1 * terms["l1"] + w.mse * terms["mse"] + w.edge * terms["edge"] + w.kl * terms["kl"]
                     + w.foreground * terms["fg"])
    return terms


# ============================================================================ evaluation
@torch.no_grad()
def evaluate_psnr(vae, videos: torch.Tensor, names: list, batch: int = 8) -> dict:
    """PSNR of encode_video -> decode_latents (posterior mean, clamped), the generation path.

    videos: (N, 3, F, H, W) uint8. Returns {'psnr' (mean over clips), 'psnr_min',
    'psnr_held_out', 'psnr_seen', 'psnr_foreground' (over the objects and their edges only:
    `foreground_mask`), 'clips', 'frames', 'by_pair'}.
    """
    was_training = vae.training
    vae.eval()
    scores, fg_scores = [], []
    for start in range(0, len(videos), batch):
        video = videos[start:start + batch].float().div(127.5).sub(1).to(vae.device)
        recon = decode_latents(vae, encode_video(vae, video))
        scores.append(psnr(recon, video).cpu())
        fg_scores.append(psnr(recon, video, foreground_mask(video)).cpu())
    vae.train(was_training)
    per_clip = torch.cat(scores)
    per_clip_fg = torch.cat(fg_scores)
    held = {" ".join(p) for p in HELD_OUT}
    is_held = torch.tensor([n in held for n in names])
    by_pair = {n: round(per_clip[[i for i, m in enumerate(names) if m == n]].mean().item(), 3)
               for n in sorted(set(names))}
    return {"psnr": per_clip.mean().item(), "psnr_min": per_clip.min().item(),
            "psnr_foreground": per_clip_fg.mean().item(),
            "psnr_held_out": per_clip[is_held].mean().item() if is_held.any() else None,
            "psnr_seen": per_clip[~is_held].mean().item() if (~is_held).any() else None,
            "clips": len(names), "frames": int(videos.shape[2]), "by_pair": by_pair}


class EvalFile:
    """eval.json in output_dir: the latest evaluation and the history (step, psnr).

    On resume, entries past the resumed step are dropped, as in log.jsonl.
    """

    def __init__(self, path: str, resume_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        self.data = {"latest": None, "history": []}
        if enabled and resume_step > 0 and os.path.isfile(path):
            with open(path) as f:
                old = json.load(f)
            self.data["history"] = [h for h in old.get("history", []) if h["step"] <= resume_step]
            if old.get("latest") and old["latest"]["step"] <= resume_step:
                self.data["latest"] = old["latest"]

    def add(self, step: int, result: dict, **extra) -> None:
        if not self.enabled:
            return
        self.data["latest"] = {"step": step, **result, **extra}
        self.data["history"].append({"step": step, "psnr": round(result["psnr"], 3)})
        self.write()

    def write(self) -> None:
        if self.enabled:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.data, f, indent=1)
            os.replace(tmp, self.path)


# ============================================================================ export
@torch.no_grad()
def latent_stats(vae, clips, num: int, batch: int = 8) -> tuple:
    """Per-channel mean and std of the posterior means (raw, unnormalised) of `num` clips."""
    total = sq = count = 0
    vae.eval()
    for i, start in enumerate(range(0, num, batch)):
        video = clips.batch(min(batch, num - start), STATS_STREAM, i).to(vae.device, vae.dtype)
        mu = vae.encode(video).latent_dist.mode().double()
        total = total + mu.sum(dim=(0, 2, 3, 4))
        sq = sq + mu.pow(2).sum(dim=(0, 2, 3, 4))
        count += mu[:, 0].numel()
    mean = total / count
    std = (sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def export_vae(vae, clips, out_dir: str, stats_clips: int) -> str:
    """Set latents_mean/latents_std from `clips` and save_pretrained (safetensors) to out_dir.

    Written into a temporary sibling and renamed into place, replacing an older export.
    """
    vae = copy.deepcopy(vae).float().eval()
    mean, std = latent_stats(vae, clips, stats_clips)
    vae.register_to_config(latents_mean=[round(m, 6) for m in mean], latents_std=[round(s, 6) for s in std])
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.partial-{uuid.uuid4().hex[:8]}")
    try:
        vae.save_pretrained(tmp, safe_serialization=True)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("exported the VAE to %s (latent std %.3g..%.3g)", out_dir, min(std), max(std))
    return out_dir


@torch.no_grad()
def decode_ms_per_latent_frame(vae, size: int, latent_frames: int = 9, repeats: int = 3) -> float:
    """Median wall time (ms) of StreamingDecoder.push for one latent frame at size x size."""
    _, spatial = vae_factors(vae)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, vae.config.z_dim, latent_frames, size // spatial, size // spatial, generator=g)
    decoder = StreamingDecoder(vae)
    times = []
    for _ in range(repeats):
        decoder.reset()
        decoder.push(latents[:, :, 0])  # the first frame is special (1 pixel frame): not timed
        start = time.perf_counter()
        for i in range(1, latent_frames):
            decoder.push(latents[:, :, i])
        times.append((time.perf_counter() - start) / (latent_frames - 1) * 1000)
    return float(np.median(times))


# ============================================================================ training
def train_vae(config_path: Optional[str], overrides: Optional[list] = None, resume: Optional[str] = None,
              export: Optional[str] = None) -> dict:
    """Train from a YAML config + key=value overrides; resume=None, "latest" or a checkpoint dir.

    With `export`, train nothing: load the checkpoint (`resume`, default the latest) and
    export its VAE to that directory. Returns {"step", "psnr" (last eval), "export", "output_dir"}.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    cfg = load_vae_train_config(config_path, overrides)
    t = cfg.train
    accelerator = Accelerator(mixed_precision=t.mixed_precision, cpu=_use_cpu(t.cpu),
                              project_config=ProjectConfiguration(project_dir=t.output_dir))
    _setup_logging(accelerator)
    try:
        if export is not None:
            return _export_checkpoint(cfg, accelerator, resume or "latest", export)
        return _train(cfg, accelerator, resume)
    finally:
        accelerator.end_training()


def _setup(cfg: VAERunConfig, accelerator, start_step: int = 0) -> tuple:
    """(model, optimizer, scheduler, state), prepared and registered for checkpointing.

    `start_step`: the step the run resumes at; the encoder is frozen before wrapping
    (DDP must know which parameters train) if that is at or after train.freeze_encoder_at.
    """
    from accelerate.utils import set_seed
    from diffusers.optimization import get_cosine_schedule_with_warmup

    t = cfg.train
    set_seed(t.seed)  # the same initial weights on every rank
    vae = build_vae(cfg.vae).train()
    _check_sizes(cfg, vae)
    if t.init_logvar is not None and not cfg.vae.pretrained:
        with torch.no_grad():  # quant_conv outputs (mean, logvar), z channels each
            vae.quant_conv.bias[vae.config.z_dim:] = t.init_logvar
    if t.identity_time_convs and not cfg.vae.pretrained:
        identity_time_convs(vae)
    model = Reconstruction(vae)
    if t.freeze_encoder_at and start_step >= t.freeze_encoder_at:
        model.freeze_encoder()
        logger.info("encoder frozen (train.freeze_encoder_at=%d): training the decoder only", t.freeze_encoder_at)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.adam_betas),
                                  weight_decay=t.weight_decay)
    n = accelerator.num_processes  # a prepared scheduler steps once per process per step
    scheduler = get_cosine_schedule_with_warmup(optimizer, t.warmup_steps * n, t.max_steps * n)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    return model, optimizer, scheduler, state


def identity_time_convs(vae) -> int:
    """Set the temporal convs of the VAE's 3D resampling layers to identities; returns how many.

    Encoder (downsample3d): a stride-2 conv over (last frame of the previous chunk, the
    chunk's frames) keeps the middle frame of each window. Decoder (upsample3d): the conv
    makes 2x channels, split into two output frames; both start as copies of the current
    frame. So every latent frame starts out encoded and decoded like the first one (which
    skips these convs). The `init_weight` / `init_weight2` of Wan2.1's own VAE code.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanResample

    count = 0
    with torch.no_grad():
        for module in vae.modules():
            if not isinstance(module, WanResample) or module.mode not in ("downsample3d", "upsample3d"):
                continue
            conv = module.time_conv
            in_ch = conv.weight.shape[1]
            conv.weight.zero_()
            conv.bias.zero_()
            eye = torch.eye(in_ch, dtype=conv.weight.dtype)
            if module.mode == "downsample3d":
                conv.weight[:, :, 1, 0, 0] = eye
            else:
                conv.weight[:in_ch, :, -1, 0, 0] = eye
                conv.weight[in_ch:, :, -1, 0, 0] = eye
            count += 1
    return count


def _check_sizes(cfg: VAERunConfig, vae) -> None:
    temporal, _ = vae_factors(vae)
    if temporal != 4:
        raise UsageError(f"this VAE compresses time {temporal}x; the pipeline needs 4x "
                         "(vae.temperal_downsample with two true entries)")
    check_video_size(vae, cfg.data.size, cfg.data.size)


def _train(cfg: VAERunConfig, accelerator, resume: Optional[str]) -> dict:
    t = cfg.train
    resume_dir = _prepare_output_dir(accelerator, t.output_dir, resume)
    model, optimizer, scheduler, state = _setup(cfg, accelerator, _checkpoint_step(resume_dir))
    if resume_dir:
        accelerator.load_state(resume_dir)
        logger.info("resumed from %s at step %d", resume_dir, state.step)
        _set_peak_lr(scheduler, t.lr)
    clips = make_clips(cfg)
    main = accelerator.is_main_process
    evals = EvalFile(os.path.join(t.output_dir, EVAL_FILE), state.step, main)
    eval_videos = eval_set(t.eval_clips, t.eval_frames, cfg.data.size, t.eval_seed) if main else None
    long_videos = (eval_set(t.eval_long_clips, t.eval_long_frames, cfg.data.size, t.eval_seed + 1)
                   if main and t.eval_long_clips else None)
    log = JsonlLog(os.path.join(t.output_dir, "log.jsonl"), state.step, main)
    vae = accelerator.unwrap_model(model).vae
    logger.info("training a VAE of %s parameters on %d process(es) (%s, %d threads), batch %d x %d frames",
                f"{sum(p.numel() for p in vae.parameters()):,}", accelerator.num_processes,
                accelerator.device, torch.get_num_threads(), t.batch_size, cfg.data.frames)
    _loop(cfg, accelerator, model, optimizer, scheduler, state, clips, log, evals, eval_videos, long_videos)
    result = {"step": state.step, "output_dir": t.output_dir, "export": None,
              "psnr": (evals.data["latest"] or {}).get("psnr")}
    if state.step < t.max_steps:
        logger.info("stopped at step %d of %d (train.stop_at_step); continue with --resume latest",
                    state.step, t.max_steps)
        return result
    if main:
        result["export"] = _export_and_evaluate(cfg, vae, clips, export_dir_of(cfg), state.step)
    accelerator.wait_for_everyone()
    return result


def _set_peak_lr(scheduler, lr: float) -> None:
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


def _checkpoint_step(path: Optional[str]) -> int:
    if not path:
        return 0
    with open(os.path.join(path, STATE_FILE)) as f:
        return int(json.load(f)["step"])


def _loop(cfg, accelerator, model, optimizer, scheduler, state, clips, log, evals, eval_videos, long_videos) -> None:
    from tqdm.auto import tqdm

    t = cfg.train
    rank, device = accelerator.process_index, accelerator.device
    bar = tqdm(total=t.max_steps, initial=state.step, desc="train-vae", unit="step",
               disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    keys = ("loss", "l1", "mse", "edge", "kl", "fg", "psnr", "image_psnr")
    images = make_clips(cfg, frames=1) if cfg.data.image_batch else None
    window = torch.zeros(len(keys) + 1, device=device)  # sums since the last log, then the count
    end = min(t.max_steps, t.stop_at_step or t.max_steps)
    started = tick = time.time()
    while state.step < end:
        if t.freeze_encoder_at and state.step == t.freeze_encoder_at and not accelerator.unwrap_model(model).encoder_frozen:
            if accelerator.num_processes > 1:  # DDP fixes its parameter set when wrapping
                save_checkpoint(accelerator, cfg, state.step)
                logger.info("step %d: the encoder freezes here; rerun with --resume latest to go on", state.step)
                break
            accelerator.unwrap_model(model).freeze_encoder()
            logger.info("step %d: encoder frozen, training the decoder only", state.step)
        video = clips.batch(t.batch_size, TRAIN_STREAM, state.step, rank).to(device)
        warmup = int(np.random.default_rng([t.seed, WARMUP_STREAM, state.step]).integers(cfg.data.warmup_chunks + 1))
        video = video[:, :, :cfg.data.frames + 4 * warmup]
        g = torch.Generator(device=device).manual_seed(_mix_seed(t.seed, state.step, rank))
        # with images, two backward passes: DDP syncs gradients on the second only
        with accelerator.no_sync(model) if images is not None else contextlib.nullcontext():
            with accelerator.autocast():
                recon, mean, logvar = model(video, generator=g, warmup=warmup)
            video = video[:, :, warmup_frames(warmup):]
            terms = loss_terms(recon, video, mean, logvar, cfg.loss)
            accelerator.backward(terms["loss"])
        terms["image_psnr"] = torch.zeros((), device=device)
        if images is not None:
            image = images.batch(cfg.data.image_batch, IMAGE_STREAM, state.step, rank).to(device)
            with accelerator.autocast():
                recon_i, mean_i, logvar_i = model(image, generator=g)
            image_terms = loss_terms(recon_i, image, mean_i, logvar_i, cfg.loss)
            accelerator.backward(image_terms["loss"])
            terms["loss"] = terms["loss"] + image_terms["loss"].detach()
            terms["image_psnr"] = psnr(recon_i.detach().clamp(-1, 1), image).mean()
        if t.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        terms["psnr"] = psnr(recon.detach().clamp(-1, 1), video).mean()
        window += torch.stack([terms[k].detach().float() for k in keys] + [torch.ones((), device=device)])
        state.step += 1
        bar.update(1)
        if state.step % t.log_every == 0 or state.step == end:
            total = accelerator.reduce(window.clone(), reduction="sum")
            record = {"step": state.step, **{k: (total[i] / total[-1]).item() for i, k in enumerate(keys)},
                      "lr": scheduler.get_last_lr()[0], "s_per_step": round((time.time() - tick) / total[-1].item()
                                                                            * accelerator.num_processes, 3),
                      "wall_s": round(time.time() - started, 1)}
            log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{record['psnr']:.2f}")
            window.zero_()
            tick = time.time()
        if (t.eval_every and state.step % t.eval_every == 0) or state.step == end:
            _evaluate(accelerator, model, state.step, evals, eval_videos, long_videos, log, t.eval_batch)
            tick = time.time()
        if t.checkpoint_every and (state.step % t.checkpoint_every == 0 or state.step == end):
            save_checkpoint(accelerator, cfg, state.step)
            tick = time.time()
    bar.close()


def _evaluate(accelerator, model, step: int, evals: EvalFile, eval_videos, long_videos, log, batch: int) -> None:
    if accelerator.is_main_process:
        started = time.time()
        vae = accelerator.unwrap_model(model).vae
        result = evaluate_psnr(vae, *eval_videos, batch=batch)
        long = {}
        if long_videos is not None:
            res = evaluate_psnr(vae, *long_videos, batch=batch)
            long = {"eval_psnr_long": res["psnr"], "eval_psnr_long_foreground": res["psnr_foreground"]}
            result["long"] = {k: res[k] for k in ("psnr", "psnr_foreground", "psnr_min", "clips", "frames")}
        evals.add(step, result)
        log.write({"step": step, "eval_psnr": result["psnr"], "eval_psnr_held_out": result["psnr_held_out"],
                   "eval_psnr_foreground": result["psnr_foreground"], **long,
                   "eval_s": round(time.time() - started, 1)})
        tail = f"; {result['long']['frames']}-frame clips {result['long']['psnr']:.2f}" if long else ""
        logger.info("step %d: eval PSNR %.2f dB over %d clips (held-out pairs %.2f, min %.2f, objects %.2f)%s", step,
                    result["psnr"], result["clips"], result["psnr_held_out"] or math.nan, result["psnr_min"],
                    result["psnr_foreground"], tail)
    accelerator.wait_for_everyone()


def _export_checkpoint(cfg: VAERunConfig, accelerator, resume: str, out_dir: str) -> dict:
    """`--export DIR`: the VAE of a checkpoint (default the latest), exported and evaluated."""
    t = cfg.train
    ckpt = find_resume_dir(t.output_dir, resume)
    if ckpt is None:
        raise UsageError(f"--export: no complete checkpoint in '{t.output_dir}' to export; train first "
                         "or pass --resume CHECKPOINT_DIR")
    model, _, _, state = _setup(cfg, accelerator)
    accelerator.load_state(ckpt)
    result = {"step": state.step, "output_dir": t.output_dir, "export": None, "psnr": None}
    if accelerator.is_main_process:
        vae = accelerator.unwrap_model(model).vae
        result["export"] = _export_and_evaluate(cfg, vae, make_clips(cfg), out_dir, state.step)
        with open(os.path.join(out_dir, EVAL_FILE)) as f:
            result["psnr"] = json.load(f)["psnr"]
    accelerator.wait_for_everyone()
    return result


def _export_and_evaluate(cfg: VAERunConfig, vae, clips, out_dir: str, step: int) -> str:
    """export_vae, then load the export back as users will and write its PSNR to out_dir/eval.json."""
    t = cfg.train
    export_vae(vae, clips, out_dir, t.stats_clips)
    exported = build_vae(VAEConfig(pretrained=out_dir))
    result = evaluate_psnr(exported, *eval_set(t.eval_clips, t.eval_frames, cfg.data.size, t.eval_seed),
                           batch=t.eval_batch)
    with open(os.path.join(out_dir, EVAL_FILE), "w") as f:
        json.dump({"step": step, **result}, f, indent=1)
    logger.info("exported VAE (step %d): eval PSNR %.2f dB over %d clips", step, result["psnr"], result["clips"])
    return out_dir


# ============================================================================ report
def write_report(output_dir: str, export_dir: str, out_stem: str, size: int = 64) -> dict:
    """out_stem.json + out_stem.png: the exported VAE's size, decode speed and eval PSNR, and
    the training curves of output_dir (train PSNR per log step, eval PSNR per evaluation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from videogen.training.dit import read_log

    vae = build_vae(VAEConfig(pretrained=export_dir))
    records = read_log(os.path.join(output_dir, "log.jsonl"))
    train_curve = [(r["step"], r["psnr"]) for r in records if "psnr" in r]
    eval_curve = [(r["step"], r["eval_psnr"]) for r in records if "eval_psnr" in r]
    with open(os.path.join(export_dir, EVAL_FILE)) as f:
        final = json.load(f)
    weights = sum(os.path.getsize(os.path.join(export_dir, n)) for n in os.listdir(export_dir)
                  if n.endswith(".safetensors"))
    report = {
        "vae": {k: vae.config[k] for k in ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample")},
        "parameters": sum(p.numel() for p in vae.parameters()), "safetensors_mb": round(weights / 2**20, 2),
        "decode_ms_per_latent_frame": round(decode_ms_per_latent_frame(vae, size), 1),
        "decode_threads": torch.get_num_threads(), "size": size,
        "eval": final, "steps": records[-1]["step"] if records else 0,
        "train_psnr_curve": train_curve[:: max(1, len(train_curve) // 200)], "eval_psnr_curve": eval_curve,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_stem)), exist_ok=True)
    with open(f"{out_stem}.json", "w") as f:
        json.dump(report, f, indent=1)
    fig, ax = plt.subplots(figsize=(6, 4))
    if train_curve:
        ax.plot(*zip(*train_curve), lw=0.8, alpha=0.6, label="train batch (sampled z)")
    if eval_curve:
        ax.plot(*zip(*eval_curve), "o-", label=f"eval: {final['clips']} clips x {final['frames']} frames")
    ax.axhline(30, color="grey", ls="--", lw=0.8, label="30 dB bar")
    ax.set(xlabel="step", ylabel="PSNR (dB)", title="shapes VAE reconstruction")
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{out_stem}.png", dpi=120)
    plt.close(fig)
    return report
