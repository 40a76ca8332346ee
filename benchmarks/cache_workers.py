"""How fast `videogen cache` encodes shapes clips: one process with 1 or 2 threads, or 2
processes of one thread each (`--workers 2`), side by side in one run.

The VAE is the shipped shapes VAE's architecture (configs/shapes.yaml, random weights: the
same arithmetic as trained ones), 33-frame 64x64 clips, batch 8 as in training.

    python benchmarks/cache_workers.py [--clips 64]

Writes results/cache_workers.json and .png (clips per second per setting).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from _common import figure, write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = [("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1)]


def run(manifest: str, cache: str, workers: int, threads: int) -> float:
    """Seconds for one `videogen cache` in a fresh process (start-up and model build included)."""
    cmd = [sys.executable, "-m", "videogen", "cache", os.path.join(REPO, "configs", "shapes.yaml"),
           f"data.manifest={manifest}", f"data.cache_dir={cache}", "--workers", str(workers)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS=str(threads)),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    args = parser.parse_args()
    from videogen.data.shapes import write_shapes_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shapes = write_shapes_dataset(os.path.join(tmp, "shapes"), num=args.clips, frames=33, size=64, seed=0)
        manifest = os.path.join(shapes, "metadata.csv")
        run(manifest, os.path.join(tmp, "warm"), 1, 1)  # first import and file-cache warm-up, not timed
        for name, workers, threads in SETTINGS:
            seconds = run(manifest, os.path.join(tmp, f"cache-{workers}-{threads}"), workers, threads)
            rows.append({"setting": name, "workers": workers, "threads": threads, "seconds": round(seconds, 2),
                         "clips_per_s": round(args.clips / seconds, 3)})
            print(rows[-1])
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup_vs_1x1"] = round(base / row["seconds"], 3)
    report = {"clips": args.clips, "frames": 33, "size": 64, "batch": 8,
              "note": "wall time of a whole `videogen cache` run each, process start-up and model build included",
              "settings": rows}
    print("wrote", write_report("cache_workers", report, lambda p: plot(p, rows)))


def plot(path: str, rows: list) -> None:
    with figure(path, figsize=(6, 3.5)) as (fig, ax):
        ax.bar([r["setting"] for r in rows], [r["clips_per_s"] for r in rows], color=["grey", "grey", "tab:blue"])
        for i, r in enumerate(rows):
            ax.text(i, r["clips_per_s"], f"{r['speedup_vs_1x1']:.2f}x", ha="center", va="bottom")
        ax.set(ylabel="clips / s", title="videogen cache: 33-frame 64x64 shapes clips")
        ax.tick_params(axis="x", labelsize=8)


if __name__ == "__main__":
    main()
