"""The hour-long run of issue 22: one prompt of every shape for 28,800 frames (an hour at
8 fps), holding long_drift.py's bars with memory flat.

Each video streams out of the pipeline frame by frame and is scored window by window as
it comes (`videogen.evaluation.drift.DriftAccumulator`, the same numbers as `score_drift`
on the whole video), so a worker holds one window of frames, never the video (354 MB at
28,800 frames), and its memory can be watched: the process's RSS is sampled after every
window. RSS moves by a few MB from one window to the next as the allocator takes and
returns buffers, so one sample against another is mostly noise: memory is flat when the
least-squares line through the RSS from the end of the warm-up (the first WARMUP of the
windows) on rises by at most FLAT_MB over the rest of the video. The JSON has the curve,
its first, max and last values, the last minus the warmed-up value, the slope (MB per
1,000 frames) and the line's rise.

The prompts (data/prompts_shapes.txt), one per shape, each in its own colour and motion,
two axes: "a red circle moving right" (horizontal), "a cyan square moving up" and "a purple
triangle moving down" (vertical, both directions). All three are seen pairs: the hour asks
whether what holds at 2,400 frames keeps holding, and long_drift.py covers the held-out
pairs. Prompt i is generated with seed i. With three videos a bar's share is 0, 1/3, 2/3 or
1, so each bar (>= 0.90 or 0.95 of videos) needs all three.

Writes results/long_drift_hour.json (settings; per prompt the drift row with its per-window
curves and checks, the RSS curve and summary, seconds, frames/s; the aggregate against
DRIFT_BARS) and results/long_drift_hour.png (area ratio, off-axis wander, purity, sharpness
ratio and RSS per window for the three prompts, and the hour-long sheet: frames at 0, 1/4,
1/2, 3/4 of the video and the last). Prints progress (frames done, frames/s, ETA) as it goes.

    python benchmarks/long_drift_hour.py [--model DIR] [--frames 28800] [--window 240] [--workers 3]
    python benchmarks/long_drift_hour.py --frames 960 --window 96 --workers 1 --out /tmp/hour_check   # a check

Workers are processes of one thread each, decoding in turn (the cores are busy already);
three on two cores finish together, sooner than
two then one. --steps, --guidance and --context-noise override the pipeline's sampler
settings; the JSON records those used.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: one thread per worker
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep instead of spinning

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import queue as queue_lib  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _common import (RESULTS, add_sampler_arguments, figure, sampler_overrides,  # noqa: E402
                     sampler_settings, write_report)
from long_drift import curve_panel, line_style, summarise  # noqa: E402

PROMPTS = ("a red circle moving right", "a cyan square moving up", "a purple triangle moving down")
WARMUP = 0.1  # share of the windows before memory counts as warmed up
FLAT_MB = 5.0  # the RSS line after warm-up rises at most this: memory flat
PROGRESS_S = 30.0  # seconds between progress lines

_pipe = None
_queue = None


def _init(model: str | None, progress) -> None:
    global _pipe, _queue
    import torch

    from videogen.pipelines.pipeline import load_pipeline

    torch.set_num_threads(1)
    _pipe, _queue = load_pipeline(model), progress


def sheet_frames(frames: int) -> list[int]:
    """The frames kept for the hour-long sheet: 0, 1/4, 1/2, 3/4 of the video and the last."""
    return sorted({0, frames // 4, frames // 2, 3 * frames // 4, frames - 1})


def _generate(job: tuple) -> tuple:
    """(index, prompt, seed, frames, window, overrides) -> (index, row, (K, H, W, 3) sheet frames).

    Holds one window of frames (a buffer reused for every window), the sheet's frames and
    the accumulator's per-window numbers; reports (index, frames done, window values) to
    the progress queue after every window."""
    import psutil

    from videogen.evaluation.drift import DriftAccumulator

    index, prompt, seed, frames, window, overrides = job
    process = psutil.Process()
    acc = DriftAccumulator(prompt, frames, window)
    keep, kept, rss, buffer = sheet_frames(frames), [], [], None
    loaded_mb = process.memory_info().rss / 2**20
    start, scoring, done = time.perf_counter(), 0.0, 0
    a, b = acc.next_window()
    for f, frame in enumerate(_pipe(prompt, frames, seed=seed, decode_ahead=False, **overrides)):
        if buffer is None:
            buffer = np.empty((max(e - s for s, e in acc.bounds), *frame.shape), frame.dtype)
        buffer[f - a] = frame
        if f in keep:
            kept.append(frame.copy())
        done = f + 1
        if done == b:
            tick = time.perf_counter()
            values = acc.add(buffer[: b - a])
            scoring += time.perf_counter() - tick
            rss.append(process.memory_info().rss / 2**20)
            _queue.put((index, done, values))
            a, b = acc.next_window() or (frames, frames)
    assert done == frames, f"the pipeline yielded {done} of {frames} frames"
    seconds = time.perf_counter() - start
    row = {**acc.result(), "seed": seed, "seconds": round(seconds, 1), "frames_per_s": round(frames / seconds, 2),
           "scoring_s": round(scoring, 1), "video_fps": _pipe.config.fps, "sheet_frames": keep,
           "memory": memory_summary(rss, [e for _, e in acc.bounds], loaded_mb)}
    return index, row, np.stack(kept)


def memory_summary(rss_mb: list[float], ends: list[int], loaded_mb: float) -> dict:
    """The RSS curve (MB after each window, which ends at frame `ends[i]`) and whether it
    stays flat after warm-up: the rise of a least-squares line from the warm-up on (with a
    single window after it, the last value minus the warmed-up one)."""
    warm = max(1, round(WARMUP * len(rss_mb))) - 1  # the last warm-up window
    x, y = np.array(ends[warm:]) / 1000, np.array(rss_mb[warm:])
    slope = float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else None
    growth = float(rss_mb[-1] - rss_mb[warm])
    rise = growth if slope is None else slope * float(x[-1] - x[0])
    return {"rss_mb": [round(v, 2) for v in rss_mb], "loaded_mb": round(loaded_mb, 1),
            "first_mb": round(rss_mb[0], 1), "warm_window": warm, "warm_mb": round(rss_mb[warm], 1),
            "max_mb": round(max(rss_mb), 1), "last_mb": round(rss_mb[-1], 1),
            "last_minus_warm_mb": round(growth, 2),
            "slope_mb_per_1k_frames": None if slope is None else round(slope, 4),
            "fitted_rise_mb": round(rise, 2), "flat": abs(rise) <= FLAT_MB}


def progress_line(done: list[int], frames: int, elapsed: float, latest: list) -> str:
    """Frames done of all videos, frames/s so far, ETA; per video its frames and the
    latest window's area and sharpness against its first window's."""
    total, n = frames * len(done), sum(done)
    fps = n / elapsed if elapsed > 0 else 0.0
    eta = (total - n) / fps / 60 if fps else float("nan")
    cells = []
    for count, values in zip(done, latest):
        ratios = "" if not values else " area {:.2f} sharp {:.2f}".format(*values)
        cells.append(f"{count:,}{ratios}")
    return (f"{n:,}/{total:,} frames ({n / total:.0%}), {fps:.1f} frames/s, {elapsed / 60:.1f} min, "
            f"ETA {eta:.1f} min | " + " | ".join(cells))


def run(jobs: list[tuple], args: argparse.Namespace) -> tuple[list, list]:
    """Generate and score the jobs in worker processes, printing progress; (rows, sheets)."""
    progress = mp.Queue()
    done, first, latest = [0] * len(jobs), [None] * len(jobs), [None] * len(jobs)
    start = last_print = time.perf_counter()
    with mp.Pool(args.workers, initializer=_init, initargs=(args.model, progress)) as pool:  # exit kills workers
        pending = [pool.apply_async(_generate, (job,)) for job in jobs]
        while not all(p.ready() for p in pending):
            try:
                index, count, values = progress.get(timeout=1.0)
            except queue_lib.Empty:
                continue
            done[index] = count
            first[index] = first[index] or values
            latest[index] = tuple(v / f if f else float("nan") for v, f in
                                  ((values["area"], first[index]["area"]),
                                   (values["sharpness"], first[index]["sharpness"])))
            now = time.perf_counter()
            if now - last_print >= PROGRESS_S or count == args.frames:
                print(progress_line(done, args.frames, now - start, latest), flush=True)
                last_print = now
        results = [p.get() for p in pending]  # re-raises a worker's error
    rows, sheets = [None] * len(jobs), [None] * len(jobs)
    for index, row, sheet in results:
        rows[index], sheets[index] = row, sheet
    return rows, sheets


def _rss_panel(ax, rows: list[dict]) -> None:
    for row in rows:
        rgb, style = line_style(row["prompt"])
        mem = row["memory"]
        ends = [s + row["window"] for s in row["window_starts"][:-1]] + [row["frames"]]
        ax.plot(ends, mem["rss_mb"], color=rgb, linestyle=style, marker=".", linewidth=1.2,
                label=f"line after warm-up rises {mem['fitted_rise_mb']:+.1f} MB")
        ax.axvline(ends[mem["warm_window"]], color=rgb, linestyle=":", linewidth=0.8, alpha=0.6)
    ax.set_ylabel("worker RSS (MB, after each window)")
    ax.set_xlabel("frame (window end; dotted: warm-up end)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _sheet_panel(ax, rows: list[dict], sheets: list[np.ndarray], gap: int = 2) -> None:
    """Rows: prompts; columns: the sheet frames, labelled with frame and time."""
    k, h, w = sheets[0].shape[:3]
    image = np.full((len(sheets) * (h + gap), k * (w + gap), 3), 255, np.uint8)
    for r, frames in enumerate(sheets):
        for c, frame in enumerate(frames):
            image[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = frame
    ax.imshow(image, interpolation="nearest")
    fps = rows[0]["video_fps"]

    def clock(f: int) -> str:
        s = f / fps
        return f"{int(s // 3600)}:{int(s % 3600 // 60):02d}:{s % 60:04.1f}"

    ax.set_xticks([c * (w + gap) + w / 2 for c in range(k)],
                  [f"frame {f:,}\n{clock(f)}" for f in rows[0]["sheet_frames"]], fontsize=7)
    ax.set_yticks([r * (h + gap) + h / 2 for r in range(len(rows))], [r["prompt"][2:] for r in rows], fontsize=7)
    ax.tick_params(length=0)
    ax.set_title(f"the hour-long sheet (at {fps} fps)", fontsize=9)


def plot(path: str, rows: list[dict], sheets: list[np.ndarray]) -> None:
    from videogen.evaluation.drift import AREA_RANGE, MAX_WANDER, MIN_SHARPNESS

    with figure(path, 3, 2, figsize=(13, 12.5), dpi=110) as (fig, axes):
        curve_panel(axes[0, 0], rows, "area_ratio", "object area / first window's", AREA_RANGE)
        curve_panel(axes[0, 1], rows, "wander", "off-axis wander (share of width)", (-np.inf, MAX_WANDER))
        curve_panel(axes[1, 0], rows, "purity", "colour purity (share near the palette colour)")
        curve_panel(axes[1, 1], rows, "sharpness_ratio", "edge sharpness / first window's", (MIN_SHARPNESS, np.inf))
        for row in rows:
            rgb, style = line_style(row["prompt"])
            axes[0, 0].plot([], [], color=rgb, linestyle=style, label=row["prompt"])
        axes[0, 0].plot([], [], "k-.", alpha=0.6, label="bar limit")
        axes[0, 0].legend(fontsize=7)
        _rss_panel(axes[2, 0], rows)
        _sheet_panel(axes[2, 1], rows, sheets)
        fig.suptitle(f"hour-long drift: {len(rows)} prompts x {rows[0]['frames']:,} frames, "
                     f"windows of {rows[0]['window']}")


def _print_row(row: dict) -> None:
    def cell(v, fmt):
        return "-" if v is None else format(v, fmt)

    mem, failed = row["memory"], [k for k, ok in row["checks"].items() if ok is False]
    print(f"{row['prompt']:<30} {row['frames_per_s']:5.1f} frames/s  area {cell(row['area_ratio'], '.3f')} "
          f"sharp {cell(row['sharpness_ratio'], '.3f')} wander {cell(row['wander'], '.3f')} "
          f"purity {cell(row['purity_last'], '.2f')} ghost {'yes' if row['ghost'] else 'no'} "
          f"failed {failed or 'none'}  RSS {mem['first_mb']} -> {mem['last_mb']} MB (max {mem['max_mb']}, "
          f"last-warm {mem['last_minus_warm_mb']:+.1f}, line {cell(mem['slope_mb_per_1k_frames'], '+.3f')} MB/1k "
          f"frames, rise {mem['fitted_rise_mb']:+.1f}, flat {mem['flat']})")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline directory (default: the embedded model)")
    parser.add_argument("--frames", type=int, default=28800, help="frames per video (28,800: an hour at 8 fps)")
    parser.add_argument("--window", type=int, default=240, help="frames per drift window (short videos: less)")
    parser.add_argument("--workers", type=int, default=3, help="processes, one thread each")
    parser.add_argument("--name", default="long_drift_hour", help="NAME.json and NAME.png")
    parser.add_argument("--out", default=RESULTS, help="directory for NAME.json and NAME.png (default: results/)")
    add_sampler_arguments(parser)
    args = parser.parse_args()
    for name, low in (("frames", 2), ("window", 1), ("workers", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be at least {low}")
    return args


def main() -> None:
    args = parse_args()
    overrides = sampler_overrides(args)
    settings = sampler_settings(args.model, overrides)
    jobs = [(i, p, i, args.frames, args.window, overrides) for i, p in enumerate(PROMPTS)]
    os.makedirs(args.out, exist_ok=True)
    print(f"{len(jobs)} prompts x {args.frames:,} frames, {args.workers} workers; progress every {PROGRESS_S:.0f} s",
          flush=True)
    start = time.perf_counter()
    rows, sheets = run(jobs, args)
    summary = summarise(rows, args.frames)
    summary["bars_note"] = ("issue 22 holds long_drift.py's bars (2,400 frames) at 28,800; with 3 videos each "
                            "needs all 3" + ("" if args.frames >= 28800 else f"; at {args.frames} frames a preview"))
    flat = all(r["memory"]["flat"] for r in rows)
    report = {
        "model": args.model or "embedded default (videogen/default_model)", "frames": args.frames,
        "window": rows[0]["window"], "window_asked": args.window, "prompts": [{"prompt": p, "seed": s}
                                                                             for _, p, s, *_ in jobs],
        "prompt_choice": "one per shape, three colours and motions, both axes; seen pairs (see the script)",
        "sampler": settings, "workers": args.workers, "wall_s": round(time.perf_counter() - start, 1),
        **summary, "memory": {"flat_mb": FLAT_MB, "warmup_share": WARMUP, "all_flat": flat},
        "passes_all_bars_and_memory_flat": summary["passes_all_bars"] and flat, "videos_scored": rows,
    }
    path = write_report(args.name, report, lambda p: plot(p, rows, sheets), args.out)
    for row in rows:
        _print_row(row)
    print(f"{path}: all bars {report['passes_all_bars']} ({summary['bars_note']}); memory flat {flat}; "
          f"{report['wall_s']:.0f} s")
    print(os.path.join(args.out, f"{args.name}.png"))


if __name__ == "__main__":
    main()
