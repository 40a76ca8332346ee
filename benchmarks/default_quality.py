"""Prompt following of the embedded default model, scored by the shapes scorer.

Every prompt of data/prompts_shapes.txt (every colour, shape and motion, the held-out
colour-shape pairs included) is generated for 240 frames with its own seed, then
`videogen.evaluation.shapes_scorer.score_video` checks colour, shape, direction, presence, drift at
the end (background still dark, object's colour unchanged) and motion over the last 60
frames. Writes results/default_quality.json (rates, bars, one row per prompt) and
results/default_quality.png, a contact sheet of frames 0, 60, 120, 180, 239 of 8 prompts.

    python benchmarks/default_quality.py [--model DIR] [--frames 240] [--workers 2]
    python benchmarks/default_quality.py --model runs/default/now --every 4 --frames 96 --out runs/default/quick
    python benchmarks/default_quality.py --model DIR --guidance 5 --context-noise 0.3   # sampler settings to try

--steps, --guidance and --context-noise override the pipeline's own sampler settings (its
model_index.json); the JSON records the settings used either way.

Workers are processes of one thread each (the 2-core machine runs two prompts at once),
each decoding in turn (decode_ahead=False: the cores are busy already; the frames are the same).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from _common import RESULTS, add_sampler_arguments, figure, sampler_overrides, sampler_settings, write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = os.path.join(REPO, "data", "prompts_shapes.txt")
SHEET_FRAMES = (0, 60, 120, 180, 239)  # at 240 frames; shorter runs (--frames) scale them


def sheet_frames(frames: int) -> list[int]:
    return [round(f * (frames - 1) / 239) for f in SHEET_FRAMES]
# Drift at the end of the video, beyond the scorer's per-video rates.
DARK_BACKGROUND = 20.0  # mean brightness outside the object over the last 60 frames, 0..255
MAX_COLOUR_DRIFT = 40.0  # RGB distance, last vs first 60 frames (nearest named colours are >= 70 apart)
MOVING_BAR = 0.80  # share of moving prompts still moving over the last 60 frames
SHEET_PROMPTS = 8

_pipe = None


def _init(model: str | None, threads: int) -> None:
    global _pipe
    import torch

    from videogen.pipelines.pipeline import load_pipeline

    torch.set_num_threads(threads)
    _pipe = load_pipeline(model)


def _generate(job: tuple) -> tuple:
    """(index, prompt, seed, frames, sampler overrides) -> (index, score row, sheet frames, seconds)."""
    from videogen.evaluation.shapes_scorer import score_video

    index, prompt, seed, frames, overrides = job
    start = time.perf_counter()
    video = np.stack(list(_pipe(prompt, frames, seed=seed, decode_ahead=False, **overrides)))
    seconds = time.perf_counter() - start
    row = score_video(video, prompt)
    row["seed"] = seed
    row["seconds"] = round(seconds, 2)
    sheet = video[sheet_frames(frames)]
    return index, row, sheet, seconds


def end_checks(row: dict) -> dict:
    """The drift checks of one video: background dark and colour unchanged at the end."""
    drift = row["colour_drift"]
    return {"background_dark_at_end": row["background_end"] <= DARK_BACKGROUND,
            "colour_stable_at_end": drift is not None and drift <= MAX_COLOUR_DRIFT}


def summarise(rows: list[dict]) -> dict:
    from videogen.evaluation.shapes_scorer import aggregate

    rates = aggregate(rows)
    checks = [end_checks(r) for r in rows]
    no_drift = {key: float(np.mean([c[key] for c in checks])) for key in checks[0]}
    moving = rates["all"]["moving_at_end"]
    bars = {
        "colour >= 0.90": rates["all"]["colour"] >= 0.90,
        "shape >= 0.80": rates["all"]["shape"] >= 0.80,
        "direction >= 0.80": rates["all"]["direction"] >= 0.80,
        "held-out colour, shape, direction >= 0.70": all(
            rates["held_out"][k] >= 0.70 for k in ("colour", "shape", "direction")),
        "presence >= 0.95": rates["all"]["presence"] >= 0.95,
        "background dark at the end (all videos)": no_drift["background_dark_at_end"] == 1.0,
        "colour unchanged at the end (all videos)": no_drift["colour_stable_at_end"] == 1.0,
        f"still moving in the last 60 frames >= {MOVING_BAR}": moving is not None and moving >= MOVING_BAR,
    }
    return {"rates": rates, "end_of_video": no_drift, "bars": bars, "passes_all_bars": all(bars.values())}


def sheet_indices(prompts: list[str]) -> list[int]:
    """8 prompts: one per held-out pair, then each next one the prompt that adds the most
    colours, shapes and motions not shown yet."""
    from videogen.data.shapes import HELD_OUT, parse_prompt

    parsed = [parse_prompt(p) for p in prompts]
    chosen: list[int] = []
    for pair in HELD_OUT:
        hits = [i for i, p in enumerate(parsed) if (p[0], p[1]) == pair]
        chosen += hits[len(chosen) % len(hits):][:1] if hits else []
    while len(chosen) < min(SHEET_PROMPTS, len(prompts)):
        shown = [set(parsed[i][k] for i in chosen) for k in range(3)]
        gain = [-1 if i in chosen else sum(p[k] not in shown[k] for k in range(3)) for i, p in enumerate(parsed)]
        chosen.append(int(np.argmax(gain)))
    return chosen


def plot_sheet(path: str, prompts: list[str], rows: list[dict], sheets: dict, frames: int) -> None:
    order = sorted(sheets)
    size = (1.6 * len(SHEET_FRAMES), 1.75 * len(order))
    with figure(path, len(order), len(SHEET_FRAMES), figsize=size, dpi=110) as (fig, axes):
        axes = np.atleast_2d(axes)
        for r, i in enumerate(order):
            row = rows[i]
            marks = "".join("✓" if row[k] else "✗" for k in ("colour_ok", "shape_ok", "direction_ok"))
            for c, frame in enumerate(sheets[i]):
                ax = axes[r, c]
                ax.imshow(frame, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"frame {sheet_frames(frames)[c]}", fontsize=8)
            held = " (held out)" if row["held_out"] else ""
            axes[r, 0].set_ylabel(f"{prompts[i].removeprefix('a ')}{held}\ncol/shp/dir {marks}", fontsize=6)
        fig.suptitle(f"{frames} frames per prompt", fontsize=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline directory (default: the embedded model)")
    parser.add_argument("--prompts", default=PROMPTS, help="one prompt per line")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--every", type=int, default=1, help="every K-th prompt only (a quick look mid-training)")
    parser.add_argument("--name", default="default_quality", help="results/NAME.json and NAME.png")
    parser.add_argument("--out", default=RESULTS, help="directory for NAME.json and NAME.png (default: results/)")
    add_sampler_arguments(parser)
    args = parser.parse_args()
    overrides = sampler_overrides(args)
    settings = sampler_settings(args.model, overrides)

    with open(args.prompts) as f:
        prompts = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    prompts = prompts[:: args.every]
    want_sheet = set(sheet_indices(prompts))
    jobs = [(i, p, i, args.frames, overrides) for i, p in enumerate(prompts)]
    rows: list = [None] * len(jobs)
    sheets = {}
    start = time.perf_counter()
    from tqdm import tqdm

    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(args.model, 1)) as pool:
        for index, row, sheet, _ in tqdm(pool.map(_generate, jobs), total=len(jobs), unit="video"):
            rows[index] = row
            if index in want_sheet:
                sheets[index] = sheet
    report = {
        "model": args.model or "embedded default (videogen/default_model)",
        "frames": args.frames, "prompts_file": os.path.relpath(args.prompts, REPO), "videos": len(rows),
        "sampler": settings, "workers": args.workers, "wall_s": round(time.perf_counter() - start, 1),
        "thresholds": {"dark_background": DARK_BACKGROUND, "max_colour_drift": MAX_COLOUR_DRIFT,
                       "moving_at_end": MOVING_BAR},
        **summarise(rows), "videos_scored": rows,
    }
    path = write_report(args.name, report, lambda p: plot_sheet(p, prompts, rows, sheets, args.frames), args.out)
    rates = report["rates"]
    print(f"{path}: colour {rates['all']['colour']:.2f} shape {rates['all']['shape']:.2f} "
          f"direction {rates['all']['direction']:.2f} presence {rates['all']['presence']:.3f}; "
          f"held out colour {rates['held_out'].get('colour', float('nan')):.2f} "
          f"shape {rates['held_out'].get('shape', float('nan')):.2f} "
          f"direction {rates['held_out'].get('direction', float('nan')):.2f}; "
          f"all bars: {report['passes_all_bars']}")
    print(os.path.join(args.out, f"{args.name}.png"))


if __name__ == "__main__":
    main()
