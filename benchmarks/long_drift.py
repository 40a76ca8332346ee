"""Long-video drift of the embedded default model: does the object stay itself for 2,400 frames?

Issue 22's bars at 2,400 frames, measured by `videogen.evaluation.drift.score_drift`
(windows of 240 frames, the last against the first): colour and shape right in every
window in >= 95% of videos; area last/first within 0.85-1.15 and edge sharpness
last/first >= 0.85 in >= 90%; off-axis wander <= 0.1 of the width in >= 90%; moving
prompts still moving in the last window in >= 95%; and the share of videos with a ghost.

Prompts come from data/prompts_shapes.txt in a fixed order in which each next prompt
shows the most colours, shapes, motions and colour-shape pairs not shown yet (ties: a
held-out pair first, then the pair and the motion shown least, then file order). The
first three are the held-out pairs; the first 21 cover every pair, hence every colour and
shape, and every motion; 24 add a second prompt of each held-out pair (motions 5, 5, 5,
5 and 4 times). Prompt i is generated with seed i.

Writes results/long_drift.json (settings, per-video rows with their per-window curves,
the aggregate, the bars and whether they pass) and results/long_drift.png (area ratio,
off-axis wander, colour purity and sharpness ratio per window for every video, with the
bar limits, and the first and last frame of each video).

    python benchmarks/long_drift.py [--model DIR] [--frames 2400] [--prompts 24] [--workers 2]
    python benchmarks/long_drift.py --frames 480 --prompts 4 --workers 1 --out /tmp/drift_check   # a check
    python benchmarks/long_drift.py --pick 1,2,4 --context-noise 0.4 --name NAME   # some again, other settings

A shorter run (--frames) scales the windows down (a tenth of the video, drift.drift_window)
and only previews the bars, which are the issue's at 2,400 frames. --steps, --guidance and
--context-noise override the pipeline's sampler settings; the JSON records those used.
Each video's off-axis shift is signed (`off_axis_shift`, + right / down) and the JSON lists
the videos over the wander limit with it (`wanderers`): one sign in all is a bias.
Workers are processes of one thread each, decoding in turn (the cores are busy already);
24 x 2,400 frames take ~40 minutes on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: one thread per worker
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep instead of spinning

import argparse  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

from _common import (RESULTS, add_sampler_arguments, figure, sampler_overrides,  # noqa: E402
                     sampler_settings, write_report)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = os.path.join(REPO, "data", "prompts_shapes.txt")
LINESTYLES = {"circle": "-", "square": "--", "triangle": ":"}

_pipe = None


def ordered_prompts(lines: list[str]) -> list[str]:
    """The prompts in the order described above: every prefix as varied as it can be."""
    from videogen.data.shapes import HELD_OUT, parse_prompt

    parsed = [parse_prompt(p) for p in lines]
    chosen: list[int] = []
    while len(chosen) < len(lines):
        colours, shapes, motions = ([parsed[i][k] for i in chosen] for k in range(3))
        pairs = [parsed[i][:2] for i in chosen]

        def rank(i: int) -> tuple:
            c, s, m = parsed[i]
            new = (c not in colours) + (s not in shapes) + (m not in motions) + ((c, s) not in pairs)
            return new, (c, s) in HELD_OUT, -pairs.count((c, s)), -motions.count(m), -i

        chosen.append(max((i for i in range(len(lines)) if i not in chosen), key=rank))
    return [lines[i] for i in chosen]


def _init(model: str | None, threads: int) -> None:
    global _pipe
    import torch

    from videogen.pipelines.pipeline import load_pipeline

    torch.set_num_threads(threads)
    _pipe = load_pipeline(model)


def _generate(job: tuple) -> tuple:
    """(index, prompt, seed, frames, window, overrides) -> (index, row, first and last frame)."""
    from videogen.evaluation.drift import score_drift
    from videogen.evaluation.shapes_scorer import detect, score_video

    index, prompt, seed, frames, window, overrides = job
    start = time.perf_counter()
    video = np.stack(list(_pipe(prompt, frames, seed=seed, decode_ahead=False, **overrides)))
    seconds = time.perf_counter() - start
    det = detect(video)
    shapes = score_video(video, prompt, det)
    row = {**score_drift(video, prompt, window, det), "seed": seed, "seconds": round(seconds, 1),
           "detected": shapes["detected"], "direction_ok": shapes["direction_ok"], "presence": shapes["presence"]}
    return index, row, video[[0, -1]]


def summarise(rows: list[dict], frames: int) -> dict:
    """The aggregate of the drift scorer and the issue's bars, each passed or not."""
    from videogen.evaluation.drift import AREA_RANGE, DRIFT_BARS, MAX_WANDER, MIN_SHARPNESS, aggregate_drift

    rates = aggregate_drift(rows)
    share = rates["all"]
    labels = {
        "colour_shape": "colour and shape right in every window",
        "area_sharpness": f"area last/first in {AREA_RANGE[0]}-{AREA_RANGE[1]} and sharpness >= {MIN_SHARPNESS}",
        "wander": f"off-axis wander <= {MAX_WANDER} of the width",
        "moving": "moving prompts still moving in the last window",
    }
    bars = {f"{labels[k]}: >= {bar:.2f} of videos": share[k] is not None and share[k] >= bar
            for k, bar in DRIFT_BARS.items()}
    # the videos over the wander limit, with the sign of their shift: the same sign in all of
    # them is a bias of the model, mixed signs a random walk
    wanderers = [{"prompt": r["prompt"], "wander": r["wander"], "off_axis_shift": r["off_axis_shift"]}
                 for r in rows if not r["checks"]["wander"]]
    return {"rates": rates, "ghost_share": share["ghost"], "bars": bars, "passes_all_bars": all(bars.values()),
            "wanderers": wanderers,
            "bars_note": "the bars are the issue's at 2,400 frames" + ("" if frames >= 2400 else
                                                                        f"; at {frames} frames only a preview")}


def line_style(prompt: str) -> tuple[np.ndarray, str]:
    """(RGB in 0..1, matplotlib line style) of a prompt's curves: its palette colour, a style per shape."""
    from videogen.data.shapes import COLOURS, parse_prompt

    colour, shape, _ = parse_prompt(prompt)
    return np.array(COLOURS[colour]) / 255 * (0.6 if colour == "white" else 1.0), LINESTYLES[shape]  # white: grey


def curve_panel(ax, rows: list[dict], key: str, label: str, limits: tuple = ()) -> None:
    """One measure per window for every video: palette colour, line style by shape; the
    prompt index (its seed) of each video past a limit at its last point."""
    for row in rows:
        rgb, style = line_style(row["prompt"])
        x = np.array(row["window_starts"]) + row["window"] / 2
        y = np.array([np.nan if v is None else v for v in row["curves"][key]], dtype=float)
        ax.plot(x, y, color=rgb, linestyle=style, marker=".", linewidth=1.2)
        last = y[-1]
        if np.isnan(last) or (limits and not limits[0] <= last <= limits[1]):
            ax.annotate(str(row["seed"]), (x[-1], 0 if np.isnan(last) else last), fontsize=6, xytext=(3, 0),
                        textcoords="offset points")
    for value in (v for v in limits if np.isfinite(v)):
        ax.axhline(value, color="k", linestyle="-.", linewidth=0.8, alpha=0.6)
    ax.set_ylabel(label)
    ax.set_xlabel("frame (window centre)")
    ax.grid(alpha=0.3)


def contact_sheet(sheets: list[np.ndarray], per_row: int = 8, gap: int = 2) -> np.ndarray:
    """(rows*64, per_row*(2*64+gap), 3) image: first|last frame of each video, row by row."""
    h, w = sheets[0].shape[1:3]
    tile_w = 2 * w + 3 * gap
    rows = -(-len(sheets) // per_row)
    image = np.full((rows * (h + gap), per_row * tile_w, 3), 255, np.uint8)
    for i, (first, last) in enumerate(sheets):
        r, c = divmod(i, per_row)
        y, x = r * (h + gap), c * tile_w
        image[y:y + h, x:x + w] = first
        image[y:y + h, x + w + gap:x + 2 * w + gap] = last
    return image


def plot(path: str, rows: list[dict], sheets: list[np.ndarray], frames: int) -> None:
    from videogen.evaluation.drift import AREA_RANGE, MAX_WANDER, MIN_SHARPNESS

    per_row = 8
    sheet_height = 0.85 * -(-len(sheets) // per_row)  # inches, a row of first|last pairs each
    with figure(path, 3, 2, figsize=(12, 8.6 + sheet_height), dpi=110,
                gridspec_kw={"height_ratios": [4, 4, sheet_height]}) as (fig, axes):
        curve_panel(axes[0, 0], rows, "area_ratio", "object area / first window's", AREA_RANGE)
        curve_panel(axes[0, 1], rows, "wander", "off-axis wander (share of width)", (-np.inf, MAX_WANDER))
        curve_panel(axes[1, 0], rows, "purity", "colour purity (share near the palette colour)")
        curve_panel(axes[1, 1], rows, "sharpness_ratio", "edge sharpness / first window's", (MIN_SHARPNESS, np.inf))
        axes[0, 0].plot([], [], "k-", label="circle")
        axes[0, 0].plot([], [], "k--", label="square")
        axes[0, 0].plot([], [], "k:", label="triangle")
        axes[0, 0].plot([], [], "k-.", alpha=0.6, label="bar limit")
        axes[0, 0].legend(fontsize=7)
        grid = axes[0, 0].get_gridspec()
        for ax in axes[2]:
            ax.remove()
        sheet = fig.add_subplot(grid[2, :])
        sheet.imshow(contact_sheet(sheets, per_row), interpolation="nearest")
        sheet.set_axis_off()
        tile = 2 * sheets[0].shape[2] + 6
        for i in range(len(sheets)):
            r, c = divmod(i, per_row)
            sheet.text(c * tile + 2, r * (sheets[0].shape[1] + 2) + 8, str(rows[i]["seed"]), color="w",
                       fontsize=7)
        sheet.set_title("first | last frame of each video (numbers: prompt index; see the JSON)", fontsize=9)
        fig.suptitle(f"long-video drift: {len(rows)} prompts x {frames} frames, windows of {rows[0]['window']}")


def _print_row(write, row: dict, index: int) -> None:
    from videogen.evaluation.report import format_shift

    def cell(v, fmt):
        return "-" if v is None else format(v, fmt)

    write(f"{index:>2} {row['prompt'][:34]:<34} {row['seconds']:>6.0f}s area {cell(row['area_ratio'], '.2f')} "
          f"sharp {cell(row['sharpness_ratio'], '.2f')} wander {cell(row['wander'], '.3f')} "
          f"shift {format_shift(row['off_axis_shift'])} "
          f"purity {cell(row['purity_last'], '.2f')} ghost {'yes' if row['ghost'] else 'no'} "
          f"col+shp {'ok' if row['colour_shape_ok'] else 'no'} moving@end {row['moving_at_end']}")


def pick(text: str | None, count: int) -> list[int]:
    """The prompt indices `--pick` names (all `count` without it)."""
    if text is None:
        return list(range(count))
    try:
        picked = [int(part) for part in text.split(",")]
    except ValueError:
        raise SystemExit(f"--pick takes indices separated by commas, like 1,2,4, not {text!r}") from None
    if not picked or min(picked) < 0 or max(picked) >= count or len(set(picked)) < len(picked):
        raise SystemExit(f"--pick: each index once, from 0 to {count - 1} (--prompts {count}), not {text!r}")
    return picked


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline directory (default: the embedded model)")
    parser.add_argument("--frames", type=int, default=2400)
    parser.add_argument("--prompts", type=int, default=24, help="how many prompts, in the order above (max 69)")
    parser.add_argument("--pick", default=None,
                        help="only these of them, by index in the order (e.g. 1,2,4), each with its own seed")
    parser.add_argument("--window", type=int, default=240, help="frames per drift window (short videos: less)")
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--name", default="long_drift", help="NAME.json and NAME.png")
    parser.add_argument("--out", default=RESULTS, help="directory for NAME.json and NAME.png (default: results/)")
    add_sampler_arguments(parser)
    args = parser.parse_args()
    for name, low in (("frames", 2), ("prompts", 1), ("window", 1), ("workers", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be at least {low}")
    return args


def main() -> None:
    from tqdm import tqdm

    from videogen.utils.textfile import utf8_lines

    args = parse_args()
    overrides = sampler_overrides(args)
    settings = sampler_settings(args.model, overrides)
    lines = [line.strip() for line in utf8_lines(PROMPTS) if line.strip() and not line.startswith("#")]
    prompts = ordered_prompts(lines)[: args.prompts]
    picked = pick(args.pick, len(prompts))
    jobs = [(k, prompts[i], i, args.frames, args.window, overrides) for k, i in enumerate(picked)]
    rows: list = [None] * len(jobs)
    sheets: list = [None] * len(jobs)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(args.model, 1)) as pool:
        for index, row, sheet in tqdm(pool.map(_generate, jobs), total=len(jobs), unit="video"):
            rows[index], sheets[index] = row, sheet
            _print_row(tqdm.write, row, row["seed"])
    report = {
        "model": args.model or "embedded default (videogen/default_model)", "frames": args.frames,
        "window": rows[0]["window"], "window_asked": args.window, "prompts_file": os.path.relpath(PROMPTS, REPO),
        "prompt_order": "each next prompt shows the most new colours, shapes, motions, pairs (see the script)",
        "videos": len(rows), "picked": picked if args.pick else None, "sampler": settings, "workers": args.workers,
        "wall_s": round(time.perf_counter() - start, 1), **summarise(rows, args.frames), "videos_scored": rows,
    }
    path = write_report(args.name, report, lambda p: plot(p, rows, sheets, args.frames), args.out)
    share = report["rates"]["all"]
    print(f"{path}: colour+shape every window {share['colour_shape']:.2f}, "
          f"area+sharpness {share['area_sharpness']:.2f}, wander {share['wander']:.2f}, "
          f"moving at end {share['moving']}, ghost {share['ghost']:.2f}; "
          f"all bars: {report['passes_all_bars']} ({report['bars_note']}); {report['wall_s']:.0f} s")
    print(os.path.join(args.out, f"{args.name}.png"))


if __name__ == "__main__":
    main()
