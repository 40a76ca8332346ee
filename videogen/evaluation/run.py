"""`videogen eval`: which videos with which prompts, scored, then tables, JSON and plots.

Inputs: a file is one video; a directory with metadata.csv is a dataset (its videos with
their captions); a directory of video files gives them sorted by name; any other
directory is one video stored as frames. Prompts come from --prompt, --prompts FILE or
the dataset's captions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from videogen.data.manifests import read_csv_rows
from videogen.data.shapes import parse_prompt
from videogen.data.video_io import VideoReadError
from videogen.errors import UsageError
from videogen.evaluation.drift import WINDOW, aggregate_drift
from videogen.evaluation.metrics import evaluate_video
from videogen.evaluation.model_scores import ClipScorer, DinoScorer
from videogen.evaluation.report import format_drift_table, format_shapes_table, format_table, plot_curves
from videogen.evaluation.shapes_scorer import aggregate
from videogen.utils import atomic
from videogen.utils.textfile import utf8_lines

VIDEO_EXTENSIONS = (".mp4", ".gif", ".mov", ".mkv", ".avi", ".webm")
PLOT_EXTENSIONS = (".png", ".pdf", ".svg")


def expand_inputs(paths: list[str]) -> list[tuple[str, str | None]]:
    """(video path, caption or None) for each input.

    A file is one video. A directory with metadata.csv is a shapes dataset: its videos
    with their captions. A directory with video files gives those, sorted by name.
    Any other directory is one video stored as frames.
    """
    items = []
    for p in paths:
        meta = os.path.join(p, "metadata.csv")
        if os.path.isdir(p) and os.path.isfile(meta):
            rows = read_csv_rows(meta)[1:]  # after the header
            items += [(os.path.join(p, row.get("video", "")), row.get("caption")) for _, row in rows]
        elif os.path.isdir(p):
            videos = sorted(n for n in os.listdir(p) if n.lower().endswith(VIDEO_EXTENSIONS))
            items += [(os.path.join(p, n), None) for n in videos] if videos else [(p, None)]
        else:
            items.append((p, None))
    return items


def read_prompts(file: str, videos: list[str]) -> list[str]:
    """The prompt of each video from a prompts file.

    Two layouts: lines 'name<TAB>prompt', matched by the video's file name (or its
    name without extension, or its path as given); or one prompt per line, line i for
    the i-th video (directories expanded in sorted file-name order, so name videos
    000.mp4, 001.mp4, ...). Blank lines and lines starting with '#' are skipped.
    """
    try:
        lines = [line for line in utf8_lines(file) if line.strip() and not line.startswith("#")]
    except OSError as err:
        raise UsageError(f"--prompts {file}: {err.strerror}; check the path") from None
    if lines and all("\t" in line for line in lines):
        table = dict(line.split("\t", 1) for line in lines)
        prompts = []
        for v in videos:
            keys = (v, Path(v).name, Path(v).stem)
            match = next((table[k] for k in keys if k in table), None)
            if match is None:
                raise UsageError(f"--prompts {file} has no line for {v}; add '{Path(v).name}<TAB>prompt'")
            prompts.append(match.strip())
        return prompts
    if len(lines) != len(videos):
        raise UsageError(f"--prompts {file} has {len(lines)} prompts for {len(videos)} videos; give one "
                         "line per video in sorted order, or 'name<TAB>prompt' lines")
    return [line.strip() for line in lines]


def resolve_items(args) -> list[tuple[str, str | None]]:
    """(video, prompt) pairs from the CLI arguments, validated for --shapes and --clip."""
    if args.prompt is not None and args.prompts is not None:
        raise UsageError("give --prompt (one prompt for all videos) or --prompts FILE, not both")
    items = expand_inputs(args.videos)
    if args.prompts is not None:
        items = list(zip([v for v, _ in items], read_prompts(args.prompts, [v for v, _ in items])))
    elif args.prompt is not None:
        items = [(v, args.prompt) for v, _ in items]
    needs = "--shapes" if args.shapes else "--clip" if args.clip else None
    for video, prompt in items:
        if needs and prompt is None:
            raise UsageError(f"{needs} needs a prompt for every video ({video} has none); "
                             "pass --prompt or --prompts FILE")
        if args.shapes and parse_prompt(prompt) is None:
            raise UsageError(f"prompt {prompt!r} of {video} is not a shapes-world prompt; "
                             "use e.g. 'a red circle moving left'")
    return items


def score_all(items: list, *, shapes: bool, clip: ClipScorer | None, dino: DinoScorer | None,
              window: int = WINDOW) -> dict:
    """{"videos": reports, "failed": [{"video", "error"}], and with `shapes` "shapes": rates
    and "drift": drift rates (drift windows of `window` frames)}.

    An unreadable video is reported in one line and skipped, so one bad file does not
    cost the scores of the others.
    """
    from tqdm import tqdm

    reports, failed = [], []
    for video, prompt in tqdm(items, desc="eval", unit="video", disable=None):
        try:
            reports.append(evaluate_video(video, prompt, shapes=shapes, clip=clip, dino=dino, drift_window=window))
        except VideoReadError as err:
            failed.append({"video": video, "error": str(err)})
            tqdm.write(f"videogen eval: {err}", file=sys.stderr)
    result = {"videos": reports, "failed": failed}
    if shapes:
        result["shapes"] = aggregate([r["shapes"] for r in reports])
        result["drift"] = aggregate_drift([r["drift"] for r in reports])
    return result


def write_plots(reports: list, out: str, *, compare: bool) -> None:
    """One plot of all videos (compare, or a single video), else OUT-000-NAME.png, ..."""
    if compare or len(reports) == 1:
        plot_curves(reports, out)
        return
    stem, suffix = os.path.splitext(out)
    for i, r in enumerate(reports):
        plot_curves([r], f"{stem}-{i:03d}-{Path(r['video']).stem}{suffix}")


def drift_window_arg(args) -> int:
    """The --window of the drift scores, which --shapes computes."""
    window = getattr(args, "window", None)  # Namespaces made in code may predate it
    if window is None:
        return WINDOW
    if not args.shapes:
        raise UsageError("--window sets the drift windows of --shapes; add --shapes or leave --window out")
    if window < 1:
        raise UsageError(f"--window must be at least 1 frame, got {window}")
    return window


def evaluate_cli(args) -> None:
    """`videogen eval`: score every video, write the table/JSON/plots, then report failures.

    Unreadable videos are reported one line each and skipped; the others are scored
    and written, then a UsageError (exit status 2) names the failures.
    """
    items = resolve_items(args)
    if args.plot and not args.plot.lower().endswith(PLOT_EXTENSIONS):
        raise UsageError(f"--plot {args.plot}: the plot must end in .png, .pdf or .svg")
    for option, out in (("--json", args.json), ("--plot", args.plot)):
        if out:  # before the scoring, not after it
            atomic.check_output(out, fix=f"give {option} a file name")
    window = drift_window_arg(args)
    clip = ClipScorer(args.clip) if args.clip else None
    dino = DinoScorer(args.dino) if args.dino else None
    result = score_all(items, shapes=args.shapes, clip=clip, dino=dino, window=window)
    reports = result["videos"]
    if args.json:
        atomic.write_json(args.json, result)
        print(f"wrote {args.json}")
    elif reports:
        groups = [reports] if args.compare else [[r] for r in reports]
        print("\n\n".join(format_table(g) for g in groups))
        if args.shapes:
            print("\n" + format_shapes_table(reports, result["shapes"]))
            print("\n" + format_drift_table(reports, result["drift"]))
    if args.plot and reports:
        write_plots(reports, args.plot, compare=args.compare)
    if result["failed"]:
        names = ", ".join(f["video"] for f in result["failed"])
        raise UsageError(f"{len(result['failed'])} of {len(items)} videos could not be read ({names}); "
                         "the others were scored")
