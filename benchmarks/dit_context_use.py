"""Does a DiT checkpoint use the frames before it? (A proxy for motion, long before samples show it.)

A frame whose earlier frames are known is nearly determined (same object, moved a little),
so a model that reads its context denoises it far better than the first frame, which only
has the prompt. This measures the flow-matching loss per latent frame on 64 cached clips,
every frame at one noise level t (default 0.8, where the frame itself says little), in two
regimes with the same noise:
  - committed: the earlier frames as the streaming sampler commits them (clean, re-noised
    to sampling.context_noise) -- `forward(..., context=...)`, i.e. teacher forcing;
  - noisy: the earlier frames at t as well (the plain parallel forward).
`context_gain` = 1 - mean committed loss of frames 1.. / loss of frame 0: 0 means the
context is ignored; the closer to 1, the more of each frame comes from the ones before it.
`prompt_gain` = 1 - committed loss with the caption / with the empty caption (all frames):
whether the model reads the prompt at all (a DiT at step 1500 that gave every prompt the
same video had 0.07; prompt-following samples came with ~0.3).

    python benchmarks/dit_context_use.py runs/default/checkpoint-001000 [more checkpoints] [--t 0.8]
        [--context-noise 0.6]     # default: the config's sampling.context_noise

Needs the latent cache of configs/shapes.yaml (`videogen cache`). Writes
results/dit_context_use.json (merged per checkpoint) and .png (loss per frame).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import RESULTS, figure, write_report  # noqa: E402

from videogen.training.config import load_config  # noqa: E402
from videogen.data.datasets import collate_clips  # noqa: E402
from videogen.data.latent_cache import LatentCacheDataset  # noqa: E402
from videogen.models.dit import PoMVideoDiT  # noqa: E402
from videogen.diffusion.flow import add_noise, velocity_target  # noqa: E402
from videogen.training.checkpoint import is_checkpoint  # noqa: E402

CLIPS, BATCH, SEED = 64, 16, 0


def load(checkpoint: str, cfg) -> PoMVideoDiT:
    from videogen.training.checkpoint import load_weights

    model = PoMVideoDiT(in_channels=cfg.vae.z_dim, text_dim=cfg.text.d_model, **asdict(cfg.model))
    model.load_state_dict(load_weights(checkpoint, "model"))
    return model.eval()


@torch.no_grad()
def measure(model: PoMVideoDiT, dataset, t_value: float, context_noise: float) -> dict:
    g = torch.Generator().manual_seed(SEED)
    rows = torch.randperm(len(dataset), generator=g)[:CLIPS].tolist()
    uncond_text, uncond_mask = dataset.uncond()
    committed = noisy = unprompted = 0
    for i in range(0, len(rows), BATCH):
        batch = collate_clips([dataset[j] for j in rows[i:i + BATCH]])
        x, text, mask = batch["latents"].float(), batch["text"].float(), batch["text_mask"]
        t = torch.full(x.shape[:1] + x.shape[2:3], t_value)
        noise = torch.randn(x.shape, generator=g)
        x_t, target = add_noise(x, noise, t), velocity_target(x, noise)
        t_ctx = torch.full_like(t, context_noise)
        context = add_noise(x, torch.randn(x.shape, generator=g), t_ctx)
        loss = lambda pred: ((pred - target) ** 2).mean(dim=(1, 3, 4)).sum(0)  # noqa: E731
        committed = committed + loss(model(x_t, t, text, mask, context=context, t_context=t_ctx))
        noisy = noisy + loss(model(x_t, t, text, mask))
        empty = (uncond_text.float().expand_as(text), uncond_mask.expand_as(mask))
        unprompted = unprompted + loss(model(x_t, t, *empty, context=context, t_context=t_ctx))
    committed, noisy = (committed / len(rows)).tolist(), (noisy / len(rows)).tolist()
    gain = 1 - sum(committed[1:]) / len(committed[1:]) / committed[0]
    prompt_gain = 1 - sum(committed) / (unprompted / len(rows)).sum().item()
    return {"t": t_value, "context_noise": context_noise, "clips": len(rows), "context_gain": round(gain, 4),
            "prompt_gain": round(prompt_gain, 4),
            "loss_per_frame_committed": [round(v, 5) for v in committed],
            "loss_per_frame_noisy": [round(v, 5) for v in noisy]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint directories of videogen train")
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "shapes.yaml"))
    parser.add_argument("--t", type=float, default=0.8, help="noise level of every frame (default 0.8)")
    parser.add_argument("--context-noise", type=float, default=None,
                        help="noise level of the committed context (default: the config's sampling.context_noise)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    missing = [c for c in args.checkpoints if not is_checkpoint(c)]
    if missing:
        sys.exit(f"dit_context_use: {', '.join(missing)}: not a checkpoint; pass checkpoint directories "
                 "of videogen train (runs/default/checkpoint-NNNNNN)")
    context_noise = cfg.sampling.context_noise if args.context_noise is None else args.context_noise
    dataset = LatentCacheDataset(os.path.join(REPO, cfg.data.cache_dir))
    path = os.path.join(RESULTS, "dit_context_use.json")
    results = json.load(open(path)).get("checkpoints", {}) if os.path.exists(path) else {}
    for checkpoint in args.checkpoints:
        result = measure(load(checkpoint, cfg), dataset, args.t, context_noise)
        results[os.path.relpath(os.path.abspath(checkpoint), REPO)] = result
        print(checkpoint, "context gain", result["context_gain"], "prompt gain", result["prompt_gain"])
    print("wrote", write_report("dit_context_use", {"checkpoints": results}, lambda p: plot(p, results)))


def plot(path: str, results: dict) -> None:
    with figure(path, figsize=(7, 4)) as (fig, ax):
        for name, r in results.items():
            line, = ax.plot(r["loss_per_frame_committed"], marker=".",
                            label=f"{name} (t={r['t']}): context gain {r['context_gain']:.3f}, "
                                  f"prompt gain {r.get('prompt_gain', float('nan')):.3f}")
            ax.plot(r["loss_per_frame_noisy"], ls=":", color=line.get_color())
        ax.set_xlabel("latent frame (0 has no context)")
        ax.set_ylabel("flow-matching loss")
        ax.set_title("DiT loss per frame: committed context (solid), noisy context (dotted)")
        ax.legend(fontsize=7)


if __name__ == "__main__":
    main()
