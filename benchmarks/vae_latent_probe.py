"""Do a VAE checkpoint's latents carry the objects' colour? (Before freezing its encoder.)

Encodes 96 shapes clips of 33 frames (all colour-shape pairs; their own seed) with the
checkpoint's encoder (posterior mean, as `videogen cache` does), takes the mean latent over
the 4x4-pixel cells the object covers in each latent frame, and classifies its colour by a
5-nearest-neighbour vote (standardised latents; the first 70% of samples vote, the rest are
scored). Reports the accuracy on the first latent frame and on the later ones apart: the
later ones go through the temporal resampling convs, and there colour was lost.
Chance is 1/7. Also the reconstruction PSNR per pixel frame (encode -> decode, clamped).

    python benchmarks/vae_latent_probe.py runs/shapes_vae/checkpoint-000500 [more checkpoints | random]

Writes results/vae_latent_probe.json (one entry per checkpoint, merged with earlier ones)
and .png (PSNR per pixel frame of each).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import RESULTS, figure, write_report  # noqa: E402

from videogen.models.vae import VAEConfig  # noqa: E402
from videogen.models.vae import build_vae, decode_latents, encode_video  # noqa: E402
from videogen.training.checkpoint import CONFIG_FILE, load_weights  # noqa: E402
from videogen.training.config import load_vae_train_config  # noqa: E402
from videogen.training.vae_eval import eval_set  # noqa: E402
from videogen.training.vae_model import Reconstruction, foreground_mask, psnr  # noqa: E402

CLIPS, FRAMES, SEED, K = 96, 33, 99, 5


def load(checkpoint: str):
    """The VAE of a train-vae checkpoint, sized by the checkpoint's own config.json; or, for
    'random', an untrained one of configs/shapes_vae.yaml's size (seeded: the same each time)."""
    torch.manual_seed(0)
    if checkpoint == "random":
        return build_vae(load_vae_train_config(os.path.join(REPO, "configs", "shapes_vae.yaml")).vae).eval()
    with open(os.path.join(checkpoint, CONFIG_FILE)) as f:
        vae = build_vae(VAEConfig(**json.load(f)["vae"]))
    Reconstruction(vae).load_state_dict(load_weights(checkpoint, "model"))
    return vae.eval()


@torch.no_grad()
def probe(vae) -> dict:
    videos, names = eval_set(CLIPS, FRAMES, 64, SEED)
    feats, colours, frame_of, per_frame = [], [], [], []
    for start in range(0, CLIPS, 8):
        video = videos[start:start + 8].float().div(127.5).sub(1)
        z = encode_video(vae, video)  # (B, z, 9, 16, 16)
        per_frame.append(psnr(decode_latents(vae, z).transpose(1, 2).flatten(0, 1)[:, :, None],
                              video.transpose(1, 2).flatten(0, 1)[:, :, None]).view(len(video), -1))
        mask = foreground_mask(video, grow=0).float()
        for k in range(z.shape[2]):
            cells = F.avg_pool2d(mask[:, :, 0 if k == 0 else 4 * k], 4)[:, 0] > 0.5  # (B, 16, 16)
            for b in range(len(video)):
                if cells[b].any():
                    feats.append(z[b, :, k][:, cells[b]].mean(1).numpy())
                    colours.append(names[start + b].split()[0])
                    frame_of.append(k)
    x, c, k = np.array(feats), np.array(colours), np.array(frame_of)
    train = np.arange(len(x)) < int(0.7 * len(x))
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    dist = ((x[~train][:, None] - x[train][None]) ** 2).sum(-1)
    votes = c[train][np.argsort(dist, 1)[:, :K]]
    right = np.array([max(sorted(set(v)), key=list(v).count) for v in votes]) == c[~train]  # ties: by name
    first = k[~train] == 0
    return {"colour_knn_first_latent_frame": round(float(right[first].mean()), 3),
            "colour_knn_later_latent_frames": round(float(right[~first].mean()), 3),
            "psnr_per_pixel_frame": [round(v, 2) for v in torch.cat(per_frame).mean(0).tolist()],
            "clips": CLIPS, "frames": FRAMES, "samples": int(len(x))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint directories of videogen train-vae, or 'random'")
    args = parser.parse_args()
    path = os.path.join(RESULTS, "vae_latent_probe.json")
    checkpoints = json.load(open(path)).get("checkpoints", {}) if os.path.exists(path) else {}
    for checkpoint in args.checkpoints:
        result = probe(load(checkpoint))
        checkpoints[os.path.relpath(checkpoint, REPO) if checkpoint != "random" else "random"] = result
        print(checkpoint, {k: v for k, v in result.items() if k != "psnr_per_pixel_frame"})
    print("wrote", write_report("vae_latent_probe", {"checkpoints": checkpoints}, lambda p: plot(p, checkpoints)))


def plot(path: str, checkpoints: dict) -> None:
    with figure(path, figsize=(7, 4)) as (fig, ax):
        for name, result in checkpoints.items():
            label = (f"{name}: colour kNN {result['colour_knn_first_latent_frame']:.2f} / "
                     f"{result['colour_knn_later_latent_frames']:.2f}")
            ax.plot(result["psnr_per_pixel_frame"], marker=".", label=label)
        ax.set_xlabel("pixel frame (0: first latent frame; then 4 per latent frame)")
        ax.set_ylabel("reconstruction PSNR (dB)")
        ax.set_title("VAE checkpoints: PSNR per frame; colour kNN first / later latent frames")
        ax.legend(fontsize=7)


if __name__ == "__main__":
    main()
