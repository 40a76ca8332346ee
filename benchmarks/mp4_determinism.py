"""Are MP4 bytes the same for the same frames, and what does making them so cost?

Writes one 240-frame 64x64 clip (a shapes-world circle over noise) again and again in one
process, the settings interleaved round by round so that machine load hits them alike:
- "libx264 defaults": videogen before issue 21;
- "x264 threads=1": one x264 thread (threads are not the cause: it still differs);
- "x264 mbtree=0, asm=0": no SIMD at all (also reproducible, many times slower);
- "Mp4Writer (x264 mbtree=0)": data/video_io.Mp4Writer as shipped.
Run it on a busy machine (e.g. beside `python -c "while True: pass"`): the differences
came under load.

    python benchmarks/mp4_determinism.py [--rounds 20]

Writes results/mp4_determinism.json: distinct file digests per setting (1 = reproducible),
the median seconds per write with the ratio to the first setting, and the file size.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from fractions import Fraction

import numpy as np
from _common import write_report

FRAMES, SIZE, FPS = 240, 64, 8


def clip() -> np.ndarray:
    from videogen.data.shapes import render_clip

    frames = render_clip("red", "circle", "moving right", frames=FRAMES, size=SIZE, rng=np.random.default_rng(0))
    noise = np.random.default_rng(1).integers(0, 40, frames.shape, dtype=np.uint8)
    return np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def encode(path: str, frames: np.ndarray, options: dict) -> None:
    """RGB frames through PyAV's libx264 with these codec options (crf 18 added)."""
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.height, stream.width, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.options = {"crf": "18", **options}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def mp4_writer(path: str, frames: np.ndarray) -> None:
    from videogen.data.video_io import Mp4Writer

    with Mp4Writer(path, fps=FPS, crf=18) as writer:
        for frame in frames:
            writer.write(frame)


SETTINGS = {
    "libx264 defaults": lambda path, frames: encode(path, frames, {}),
    "x264 threads=1": lambda path, frames: encode(path, frames, {"threads": "1"}),
    "x264 mbtree=0, asm=0": lambda path, frames: encode(path, frames, {"x264-params": "mbtree=0:asm=0"}),
    "Mp4Writer (x264 mbtree=0)": mp4_writer,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    frames = clip()
    seconds = {name: [] for name in SETTINGS}
    digests = {name: [] for name in SETTINGS}
    sizes = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, write in SETTINGS.items():
                path = os.path.join(tmp, "clip.mp4")
                start = time.perf_counter()
                write(path, frames)
                seconds[name].append(time.perf_counter() - start)
                with open(path, "rb") as f:
                    data = f.read()
                digests[name].append(hashlib.sha256(data).hexdigest())
                sizes[name].append(len(data))
    base = statistics.median(seconds["libx264 defaults"])
    rows = [{"setting": name, "distinct_files": len(set(digests[name])), "writes": args.rounds,
             "median_s_per_write": round(statistics.median(seconds[name]), 4),
             "time_ratio_vs_defaults": round(statistics.median(seconds[name]) / base, 3),
             "median_bytes": int(statistics.median(sizes[name]))}
            for name in SETTINGS]
    for row in rows:
        print(row)
    report = {"frames": FRAMES, "size": SIZE, "crf": 18, "rounds": args.rounds, "settings": rows}
    print("wrote", write_report("mp4_determinism", report))


if __name__ == "__main__":
    main()
