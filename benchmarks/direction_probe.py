"""Where the default model's direction of motion comes from: the prompt, or the seed.

Two measurements per model, side by side in one run:

1. Flip test (sampling, 17 frames). For colour-shape pairs x seeds, each of the four
   directions is generated with the same seed. `same_motion` is the share of seed-matched
   opposite prompts (left/right, up/down) whose videos move the same way: 0 when the prompt
   sets the sign, 1 when the seed does. `direction` is the share right (shapes scorer).
2. Frame-1 margins (one teacher-forced forward, no sampling). Pairs of clips drawn from
   one start, moving along opposite directions of one axis (`sign`) or along two axes
   (`axis`: right/down, left/up), VAE-encoded. Latent frame 0 is re-noised to the
   sampler's context noise, latent frame 1 is pure noise (t=1), as when the sampler
   starts it. Under each clip's caption the DiT's predicted x0 of latent frame 1 is
   compared with both clips' true frame 1:
       margin = (distance to the other clip - distance to its own) / distance between them
   0 when the caption does not move the prediction towards its clip, 1 when the prediction
   is exactly its own clip; `follows` is the share of positive margins. The two clips'
   frame 1 differ by about as much as a latent frame holds (mean square 0.8 against 0.8),
   so a model that knew the sign at the start would gain much.

    python benchmarks/direction_probe.py        # the embedded model
    python benchmarks/direction_probe.py --model shipped= --model start=runs/default_start/pipeline \\
        --model raw750=runs/default_start/pipeline,runs/default_start/checkpoint-000750

A model is LABEL=PIPELINE_DIR (empty: the embedded model), optionally ,CHECKPOINT_DIR to
use that training checkpoint's raw weights (model.safetensors) in the pipeline's
transformer, optionally ;negative=TEXT to guide from that fixed negative prompt instead of
the pipeline's own (its contrast prompt: "moving left" guided away from "moving right").
The default compares the embedded model guided from the empty prompt (plain CFG) and from
the contrast prompt, side by side. Writes results/direction_probe.json and .png.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import figure, write_report

PAIRS = (("red", "circle"), ("green", "triangle"), ("white", "square"), ("purple", "circle"))
DIRECTIONS = ("left", "right", "up", "down")
OPPOSITE = (("left", "right"), ("up", "down"))
MARGIN_PAIRS = {"sign": (("moving right", "moving left"), ("moving down", "moving up")),
                "axis": (("moving right", "moving down"), ("moving left", "moving up"))}


DEFAULT_MODELS = ("plain CFG=;negative=", "contrast=")


def load(spec: str):
    """LABEL=PIPE[,CHECKPOINT][;negative=TEXT] -> (label, pipeline, negative prompt or None)."""
    from videogen.pipelines.pipeline import load_pipeline
    from videogen.training.checkpoint import load_weights

    spec, fixed, negative = spec.partition(";negative=")
    label, _, where = spec.partition("=")
    pipe_dir, _, checkpoint = where.partition(",")
    pipe = load_pipeline(pipe_dir or None)
    if checkpoint:
        pipe.transformer.load_state_dict(load_weights(checkpoint, "model"))
    return label or "shipped", pipe, (negative if fixed else None)


def flip_test(pipe, seeds: int, frames: int, negative=None) -> dict:
    from videogen.evaluation.shapes_scorer import classify_motion, detect

    motion = {}
    for colour, shape in PAIRS:
        for seed in range(seeds):
            for d in DIRECTIONS:
                video = np.stack(list(pipe(f"a {colour} {shape} moving {d}", frames, seed=seed,
                                           negative_prompt=negative)))
                motion[(colour, shape, seed, d)] = classify_motion(detect(video))[0]
    right = [motion[k] == f"moving {k[3]}" for k in motion]
    same = [motion[(c, s, seed, a)] == motion[(c, s, seed, b)]
            for c, s in PAIRS for seed in range(seeds) for a, b in OPPOSITE]
    return {"videos": len(motion), "direction": float(np.mean(right)), "same_motion": float(np.mean(same)),
            "detected": {f"{c} {s} seed {seed} {d}": m for (c, s, seed, d), m in motion.items()}}


def frame1_margins(pipe, clips: int, context_noise: float, t: float) -> dict:
    import torch

    from videogen.diffusion.flow import add_noise
    from videogen.data.shapes import Clip, allowed_pairs, sample_clip
    from videogen.models.text import encode_prompts
    from videogen.models.vae import encode_video

    model = pipe.transformer.eval()
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    pairs = allowed_pairs()
    out = {}
    for kind, motions in MARGIN_PAIRS.items():
        margins, contrast = [], []
        for i in range(clips):
            colour, shape = pairs[rng.integers(len(pairs))]
            a, b = motions[i % len(motions)]
            first = sample_clip(colour, shape, a, rng=rng)
            pair = (first, Clip(colour, shape, b, first.size, first.extent, first.start))
            video = torch.stack([torch.from_numpy(c.render(9)).float().div(127.5).sub(1).permute(3, 0, 1, 2)
                                 for c in pair])
            lat = encode_video(pipe.vae, video)  # (2, z, 3, h, w); frame 0 the same
            text, mask = encode_prompts(pipe.tokenizer, pipe.text_encoder,
                                        [f"a {colour} {shape} {m}" for m in (a, b)], pipe.config.max_text_length)
            f = lat.shape[2]
            shape_1 = (1, *lat.shape[1:])
            context = add_noise(lat[:1], torch.randn(shape_1, generator=gen), torch.full((1, f), context_noise))
            noisy = add_noise(lat[:1], torch.randn(shape_1, generator=gen), torch.full((1, f), t))
            with torch.no_grad():  # frame 1 reads only frame 0, the same for both clips
                v = model.forward_teacher(context.expand_as(lat), torch.full((2, f), context_noise),
                                          noisy.expand_as(lat), torch.full((2, f), t), text, mask)
            x0 = (noisy - t * v)[:, :, 1]
            truth = lat[:, :, 1]
            between = (truth[0] - truth[1]).pow(2).mean().item()
            for k in range(2):
                own, other = ((x0[k] - truth[j]).pow(2).mean().item() for j in (k, 1 - k))
                margins.append((other - own) / between)
            contrast.append(between)
        out[kind] = {"pairs": clips, "follows": float(np.mean(np.array(margins) > 0)),
                     "margin": float(np.mean(margins)), "between_clips_mean_sq": float(np.mean(contrast))}
    return out


def plot(path: str, rows: dict) -> None:
    labels = list(rows)
    keys = [("flip", "same_motion", "same motion, opposite prompts"), ("flip", "direction", "direction right"),
            ("sign", "margin", "frame-1 sign margin"), ("axis", "margin", "frame-1 axis margin")]
    with figure(path, 1, 1, figsize=(9, 4)) as (fig, ax):
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            r = rows[label]
            values = [r["flip"][k] if part == "flip" else r["margins"][part][k] for part, k, _ in keys]
            ax.bar(np.arange(len(keys)) + i * width, values, width, label=label)
        ax.set_xticks(np.arange(len(keys)) + width * (len(labels) - 1) / 2, [k[2] for k in keys], fontsize=8)
        ax.axhline(0, color="black", lw=0.6)
        ax.set(ylabel="share / margin", title="direction: prompt or seed?")
        ax.legend(fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append",
                        help="LABEL=PIPELINE_DIR[,CHECKPOINT_DIR][;negative=TEXT] (repeatable)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--clips", type=int, default=24, help="clip pairs per margin kind")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="direction_probe")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = {}
    for spec in args.model or DEFAULT_MODELS:
        start = time.perf_counter()
        label, pipe, negative = load(spec)
        context_noise = pipe.config.context_noise
        rows[label] = {"model": spec, "negative_prompt": negative if negative is not None else "the pipeline's own",
                       "flip": flip_test(pipe, args.seeds, args.frames, negative),
                       "margins": frame1_margins(pipe, args.clips, context_noise, t=1.0),
                       "context_noise": context_noise, "seconds": round(time.perf_counter() - start, 1)}
        r = rows[label]
        print(f"{label}: direction {r['flip']['direction']:.2f}, same motion for opposite prompts "
              f"{r['flip']['same_motion']:.2f}; frame-1 margin sign {r['margins']['sign']['margin']:.3f} "
              f"(follows {r['margins']['sign']['follows']:.2f}), axis {r['margins']['axis']['margin']:.3f} "
              f"(follows {r['margins']['axis']['follows']:.2f})")
    report = {"seeds": args.seeds, "frames": args.frames, "pairs": [" ".join(p) for p in PAIRS], "models": rows}
    print(write_report(args.name, report, lambda p: plot(p, rows)))


if __name__ == "__main__":
    main()
