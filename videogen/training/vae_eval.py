"""The VAE's evaluation and export: PSNR over a fixed set of clips through the generation
path (`encode_video` / `decode_latents`), eval.json, the latent statistics that go into
the exported config, decode speed, and the training report (JSON + PNG).

Shapes: N clips, F pixel frames, H x W pixels.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time

import numpy as np
import torch

from videogen.data.datasets import size_hw
from videogen.data.shapes import HELD_OUT, dataset_plan, render_clip
from videogen.models.vae import StreamingDecoder, VAEConfig, build_vae, decode_latents, encode_video, vae_factors
from videogen.training.logs import LOG_FILE, read_log
from videogen.training.vae_model import EVAL_STREAM, STATS_STREAM, foreground_mask, psnr
from videogen.utils.atomic import atomic_path, write_json

logger = logging.getLogger("videogen")

EVAL_FILE = "eval.json"


def eval_set(num: int, frames: int, size, seed: int) -> tuple:
    """(videos (N, 3, F, H, W) uint8, names ['red circle', ...]): all colour-shape pairs,
    held-out ones included, each about equally often; a pure function of the arguments.
    size: an int or (H, W); H x W clips are the centre crop of a square canvas of the longer side."""
    height, width = size_hw(size, "size")
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    plan = dataset_plan(num, seed=seed, holdout="none")
    videos = [render_clip(c, s, m, frames=frames, size=side, rng=np.random.default_rng([seed, EVAL_STREAM, i]))
              [:, top:top + height, left:left + width] for i, (c, s, m) in enumerate(plan)]
    stacked = torch.from_numpy(np.stack(videos)).permute(0, 4, 1, 2, 3).contiguous()
    return stacked, [f"{c} {s}" for c, s, _ in plan]


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
            write_json(self.path, self.data)


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
    with atomic_path(out_dir, directory=True) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
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


def write_report(output_dir: str, export_dir: str, out_stem: str, size: int = 64) -> dict:
    """out_stem.json + out_stem.png: the exported VAE's size, decode speed and eval PSNR, and
    the training curves of output_dir (train PSNR per log step, eval PSNR per evaluation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vae = build_vae(VAEConfig(pretrained=export_dir))
    records = read_log(os.path.join(output_dir, LOG_FILE))
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
    write_json(f"{out_stem}.json", report)
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
