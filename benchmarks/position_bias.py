"""Off-axis bias in a minute: true shapes clips continued by the model, side by side.

The long-video wanderers (`long_drift.py`) creep sideways by 0.01-0.02 pixels a frame, four
of five the same way: too slow to see in 240 frames, 28 minutes to measure at 2,400. Here
the bias is measured where it starts. Every colour x shape x motion (105 clips, the
generator's, fixed seed) is rendered for `--given` + `--new` frames; the model is given the
first `--given` frames (`--init-video`'s path: encoded, committed as context) and streams
`--new` more under the clip's own prompt (seed: the clip's index); each new frame's object
centroid is compared with the true clip's at that frame, on the axes the motion must not
change (`drift.off_axes`: x for up, down and still; y for left, right and still). A model
without a bias has a mean signed shift of 0 at every new frame; one that creeps has a
shift that grows with the frame. The teacher-forced start (true frames as context) makes it
the model's own step, not a drift that has already compounded.

Models, measured in turn in one run: `default` (the shipped pipeline), `default-fast` (its
student), and any `NAME=DIR` given with --transformer (a transformer folder: config.json and
safetensors), or `NAME@REV` (the default's transformer at git revision REV of this
repository), each in the shipped pipeline's place. `--soup A,B,ALPHA` adds a model whose
weights are (1 - ALPHA) A + ALPHA B.

Writes results/position_bias.json (per model and axis: the mean and standard error of the
shift at each new frame; per clip, the mean over the last 4) and results/position_bias.png.

    python benchmarks/position_bias.py                                   # default and default-fast
    python benchmarks/position_bias.py --transformer teacher@1dee9ad --soup teacher,default,0.5
    python benchmarks/position_bias.py --transformer mirror=runs/default_mirror/pipeline/transformer
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep instead of spinning

import argparse  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _common import figure, write_report  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAST = 4  # new frames averaged per clip for its figure
AXES = ("x", "y")
SHIPPED = "videogen/default_model/transformer"  # the default's transformer, as `NAME@REV` reads it
WEIGHTS = "diffusion_pytorch_model.safetensors"


def clips(seed: int) -> list:
    """(prompt, Clip) for every colour x shape x motion, in that order."""
    from videogen.data.shapes import COLOURS, MOTIONS, SHAPES, sample_clip

    rng = np.random.default_rng(seed)
    return [(f"a {c} {s} {m}", sample_clip(c, s, m, rng=rng)) for c in COLOURS for s in SHAPES for m in MOTIONS]


def transformer_at(rev: str, into: str) -> str:
    """The default model's transformer folder at git revision `rev`, written under `into`."""
    folder = os.path.join(into, rev)
    os.makedirs(folder, exist_ok=True)
    for name in ("config.json", WEIGHTS):
        blob = subprocess.run(["git", "-C", REPO, "show", f"{rev}:{SHIPPED}/{name}"],
                              check=True, capture_output=True).stdout
        with open(os.path.join(folder, name), "wb") as f:
            f.write(blob)
    return folder


def shifts(pipe, jobs: list, given: int, new: int) -> dict:
    """axis -> (clips on it, new) signed off-axis shift of the stream from the true clip, pixels."""
    from videogen.evaluation.drift import off_axes
    from videogen.evaluation.shapes_scorer import detect

    out = {axis: [] for axis in AXES}
    for i, (prompt, clip) in enumerate(jobs):
        video = clip.render(given + new)
        frames = np.stack(list(pipe(prompt, new, init_frames=list(video[:given]), include_init_frames=False,
                                    seed=i, decode_ahead=False)))
        made, true = detect(frames).centre, detect(video[given:]).centre
        for axis in off_axes(clip.motion):
            out[AXES[axis]].append(made[:, axis] - true[:, axis])
    return {axis: np.array(rows) for axis, rows in out.items()}


def summarise(values: dict) -> dict:
    out = {}
    for axis, rows in values.items():
        tail = np.nanmean(rows[:, -LAST:], axis=1)
        out[axis] = {"clips": len(rows), "mean": np.nanmean(rows, axis=0).round(4).tolist(),
                     "sem": (np.nanstd(rows, axis=0) / np.sqrt(len(rows))).round(4).tolist(),
                     "last": round(float(np.nanmean(tail)), 4),
                     "last_sem": round(float(np.nanstd(tail) / np.sqrt(len(tail))), 4),
                     "per_clip_last": tail.round(3).tolist()}
    return out


def plot(path: str, results: dict) -> None:
    with figure(path, 1, 2, figsize=(12, 4)) as (fig, axes):
        for ax, axis in zip(axes, AXES):
            for name, r in results.items():
                mean, sem = np.array(r[axis]["mean"]), np.array(r[axis]["sem"])
                frames = np.arange(1, len(mean) + 1)
                ax.plot(frames, mean, label=f"{name} ({r[axis]['last']:+.2f})")
                ax.fill_between(frames, mean - sem, mean + sem, alpha=0.2)
            ax.axhline(0, color="k", lw=0.5)
            movers = "up, down, still" if axis == "x" else "left, right, still"
            ax.set(xlabel="new frame", ylabel=f"mean {axis} shift, pixels (+ {'right' if axis == 'x' else 'down'})",
                   title=f"{axis} of {movers}: the stream against the true clip")
            ax.legend(fontsize=8)


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def parse_specs(parser, args) -> None:
    """args.transformer as (name, folder or None, rev or None), args.soup as (a, b, alpha);
    a malformed one is a one-line usage error (exit status 2)."""
    specs = []
    for spec in args.transformer:
        name, sep, rest = spec.partition("=") if "=" in spec else spec.partition("@")
        if not (name and sep and rest):
            parser.error(f"--transformer {spec!r}: give NAME=DIR or NAME@REV")
        if sep == "=" and not os.path.isfile(os.path.join(rest, WEIGHTS)):
            parser.error(f"--transformer {spec!r}: {rest} holds no {WEIGHTS}; give a transformer folder")
        if sep == "@" and subprocess.run(["git", "-C", REPO, "cat-file", "-e", f"{rest}:{SHIPPED}/{WEIGHTS}"],
                                         capture_output=True).returncode:
            parser.error(f"--transformer {spec!r}: revision {rest} of this repository has no {SHIPPED}/{WEIGHTS}")
        specs.append((name, rest, None) if sep == "=" else (name, None, rest))
    args.transformer = specs
    soups, known = [], {"default"} | {name for name, _, _ in specs}
    for spec in args.soup:
        parts = spec.split(",")
        alpha = _number(parts[2]) if len(parts) == 3 else None
        if alpha is None or not set(parts[:2]) <= known:
            parser.error(f"--soup {spec!r}: give A,B,ALPHA with A and B among {', '.join(sorted(known))}")
        soups.append((parts[0], parts[1], alpha))
        known.add(f"{parts[0]}+{parts[1]}@{alpha:g}")
    args.soup = soups


def load_models(args, tmp: str) -> dict:
    """name -> (a pipeline to continue clips with, the transformer weights to load first or
    None), in the order: default, default-fast (unless --only), --transformer, --soup."""
    from safetensors.torch import load_file

    from videogen.pipelines.pipeline import load_default_fast, load_pipeline

    base = load_pipeline()
    weights = {"default": {k: v.clone() for k, v in base.transformer.state_dict().items()}}
    for name, folder, rev in args.transformer:
        folder = folder or transformer_at(rev, tmp)
        weights[name] = load_file(os.path.join(folder, WEIGHTS))
    for a, b, alpha in args.soup:
        weights[f"{a}+{b}@{alpha:g}"] = {k: (1 - alpha) * weights[a][k] + alpha * weights[b][k] for k in weights[a]}
    models = {} if args.only else {"default": (base, weights["default"]), "default-fast": (load_default_fast(), None)}
    models.update((name, (base, w)) for name, w in weights.items() if name != "default")
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transformer", action="append", default=[], help="NAME=DIR or NAME@REV (repeatable)")
    parser.add_argument("--soup", action="append", default=[], help="A,B,ALPHA: (1 - ALPHA) A + ALPHA B")
    parser.add_argument("--only", action="store_true", help="only the models named, not default and default-fast")
    parser.add_argument("--given", type=int, default=17, help="true frames given (1 + 4k)")
    parser.add_argument("--new", type=int, default=16, help="frames streamed after them")
    parser.add_argument("--seed", type=int, default=0, help="the clips' seed")
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips (a quick check)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="position_bias")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    args = parser.parse_args()
    given_specs = {"transformers": list(args.transformer), "soups": list(args.soup)}
    parse_specs(parser, args)

    import torch

    torch.set_num_threads(args.threads)
    jobs = clips(args.seed)[:args.limit]
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        models = load_models(args, tmp)
    for name, (pipe, weights) in models.items():
        if weights is not None:
            pipe.transformer.load_state_dict(weights)
        start = time.time()
        results[name] = summarise(shifts(pipe, jobs, args.given, args.new))
        seconds[name] = round(time.time() - start, 1)
        print(f"{name:>24}: x {results[name]['x']['last']:+.3f} +- {results[name]['x']['last_sem']:.3f}  "
              f"y {results[name]['y']['last']:+.3f} +- {results[name]['y']['last_sem']:.3f} px "
              f"(mean of new frames {args.new - LAST + 1}-{args.new}; {seconds[name]:.0f} s)", flush=True)
    report = {"given_frames": args.given, "new_frames": args.new, "clip_seed": args.seed, "clips": len(jobs),
              **given_specs, "seconds": seconds,
              "results": results,
              "note": "signed off-axis shift of the stream from the true clip (+ right / down), pixels; "
                      f"'last' is the mean over new frames {args.new - LAST + 1}-{args.new}, 'last_sem' its standard error"}
    print(write_report(args.name, report, lambda path: plot(path, results), directory=args.out))


if __name__ == "__main__":
    main()
