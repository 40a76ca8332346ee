"""End-to-end speed of the embedded default model, as a user runs it.

Times `videogen generate "a red circle moving right" --frames 240 -o OUT.mp4` in a fresh
process (Python start-up, imports, model load, 240 frames generated, decoded and written),
checks that the MP4 holds 240 frames, and writes results/default_generate.json with the
wall time and frames/s of each run (bar: <= 60 s on the 2-core CPU).

    python benchmarks/default_generate.py [--runs 2] [--model DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import write_report

PROMPT = "a red circle moving right"
FRAMES = 240
BAR_S = 60.0


def count_frames(path: str) -> int:
    import av

    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def run_once(out: str, model: str | None, frames: int) -> float:
    cmd = [sys.executable, "-m", "videogen", "generate", PROMPT, "--frames", str(frames), "-o", out, "--seed", "0"]
    if model:
        cmd += ["--model", model]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--model", default=None, help="pipeline directory (default: the embedded model)")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = os.path.join(tmp, f"run{i}.mp4")
            seconds = run_once(out, args.model, args.frames)
            written = count_frames(out)
            runs.append({"wall_s": round(seconds, 2), "frames_written": written,
                         "frames_per_s": round(written / seconds, 2)})
            print(f"run {i}: {seconds:.1f} s, {written} frames, {written / seconds:.2f} frames/s")
    median = statistics.median(r["wall_s"] for r in runs)
    report = {
        "command": f'videogen generate "{PROMPT}" --frames {args.frames} -o OUT.mp4',
        "model": args.model or "embedded default (videogen/default_model)",
        "frames": args.frames, "runs": runs, "median_wall_s": median,
        "median_frames_per_s": round(args.frames / median, 2),
        "bar_s": BAR_S, "meets_bar": median <= BAR_S and all(r["frames_written"] == args.frames for r in runs),
        "note": "end to end in a fresh process: interpreter start-up, imports, model load, "
                "sampling, VAE decode and MP4 writing",
    }
    print(write_report("default_generate", report))


if __name__ == "__main__":
    main()
