"""The shapes world: a synthetic video-text dataset the project makes itself.

One coloured shape per clip on a black square canvas, moving at constant speed and
reflecting off the edges, or standing still (see shapes_world.md). Coordinates are
continuous pixels: pixel (row i, column j) covers [j, j+1) x [i, i+1), x to the right,
y down. Frames are (F, H, W, 3) uint8 with H = W = size.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videogen.errors import UsageError
from videogen.utils import atomic

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (230, 210, 40),
    "green": (40, 190, 70),
    "cyan": (40, 200, 210),
    "blue": (50, 80, 230),
    "purple": (170, 70, 220),
    "white": (235, 235, 235),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[str, ...] = ("moving left", "moving right", "moving up", "moving down", "standing still")
# Colour-shape pairs left out of training data by default, to measure composition.
HELD_OUT: tuple[tuple[str, str], ...] = (("yellow", "triangle"), ("blue", "circle"), ("green", "square"))
CANVAS_FRACTION = 0.30  # diameter or side, as a share of the canvas width
SIZE_JITTER = 0.10  # +-10% per clip
SPEED_FRACTION = 1 / 40  # canvas widths per frame
# Unit velocity (dx, dy) per motion; y points down, so "up" is -y.
VELOCITY: dict[str, tuple[int, int]] = {
    "moving left": (-1, 0), "moving right": (1, 0), "moving up": (0, -1), "moving down": (0, 1),
    "standing still": (0, 0),
}
CAPTION_FORMS: tuple[str, ...] = (
    "a {colour} {shape} {motion}",
    "a {colour} {shape} {motion} on a black background",
    "{colour} {shape}, {motion}",
    "the {colour} {shape} is {motion}",
)
_SUPERSAMPLE = 4


# ---------------------------------------------------------------------------- clips
@dataclass(frozen=True)
class Clip:
    """One clip's attributes; `centres` and `render` are pure functions of them."""

    colour: str
    shape: str
    motion: str
    size: int  # canvas width = height, pixels
    extent: float  # diameter (circle) or side (square, triangle), pixels
    start: tuple[float, float]  # (x, y) of the object's bounding-box centre at frame 0

    def half_extent(self) -> tuple[float, float]:
        """Half width and half height of the object's bounding box, pixels."""
        if self.shape == "triangle":
            return self.extent / 2, self.extent * np.sqrt(3) / 4
        return self.extent / 2, self.extent / 2

    def centres(self, frames: int) -> np.ndarray:
        """(F, 2) float (x, y) bounding-box centres, reflecting off the canvas edges."""
        t = np.arange(frames, dtype=np.float64)
        speed = self.size * SPEED_FRACTION
        out = np.empty((frames, 2))
        for axis in range(2):
            half = self.half_extent()[axis]
            unfolded = self.start[axis] + VELOCITY[self.motion][axis] * speed * t
            out[:, axis] = _reflect(unfolded, half, self.size - half)
        return out

    def render(self, frames: int) -> np.ndarray:
        """(F, H, W, 3) uint8 anti-aliased frames."""
        colour = np.array(COLOURS[self.colour], dtype=np.float32)
        video = np.zeros((frames, self.size, self.size, 3), dtype=np.uint8)
        for f, (cx, cy) in enumerate(self.centres(frames)):
            coverage = _coverage(self.shape, cx, cy, self.extent, self.size)
            video[f] = np.round(coverage[..., None] * colour).astype(np.uint8)
        return video


def _reflect(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold unbounded positions into [lo, hi] as a ball bouncing between two walls."""
    span = hi - lo
    if span <= 0:
        return np.full_like(p, lo)
    u = np.mod(p - lo, 2 * span)
    return lo + np.where(u <= span, u, 2 * span - u)


def _coverage(shape: str, cx: float, cy: float, extent: float, size: int) -> np.ndarray:
    """(H, W) float32 share of each pixel inside the shape, by 4x4 supersampling."""
    s = _SUPERSAMPLE
    offsets = (np.arange(size * s, dtype=np.float32) + 0.5) / s  # sample points, pixels
    x = offsets[None, :] - cx
    y = offsets[:, None] - cy
    if shape == "circle":
        inside = x**2 + y**2 <= (extent / 2) ** 2
    elif shape == "square":
        inside = (np.abs(x) <= extent / 2) & (np.abs(y) <= extent / 2)
    elif shape == "triangle":  # upright equilateral: apex up, base down
        height = extent * np.sqrt(3) / 2
        depth = y + height / 2  # distance below the apex
        inside = (depth >= 0) & (depth <= height) & (np.abs(x) <= depth / np.sqrt(3))
    else:
        raise AssertionError(f"unknown shape {shape!r}")
    return inside.reshape(size, s, size, s).mean(axis=(1, 3), dtype=np.float32)


def _check_names(colour: str, shape: str, motion: str) -> None:
    for value, allowed, what in ((colour, COLOURS, "colour"), (shape, SHAPES, "shape"), (motion, MOTIONS, "motion")):
        if value not in allowed:
            raise UsageError(f"unknown {what} {value!r}; use one of: {', '.join(allowed)}")


def sample_clip(colour: str, shape: str, motion: str, *, size: int = 64, rng: np.random.Generator) -> Clip:
    """Draw a clip's size (+-10%) and start (uniform over positions where it fits)."""
    _check_names(colour, shape, motion)
    extent = CANVAS_FRACTION * size * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)
    clip = Clip(colour, shape, motion, size, float(extent), (0.0, 0.0))
    hx, hy = clip.half_extent()
    start = (float(rng.uniform(hx, size - hx)), float(rng.uniform(hy, size - hy)))
    return Clip(colour, shape, motion, size, float(extent), start)


def render_clip(colour: str, shape: str, motion: str, *, frames: int = 33, size: int = 64,
                rng: np.random.Generator) -> np.ndarray:
    """(F, H, W, 3) uint8 frames of one random clip; `sample_clip(...).centres` gives its path."""
    return sample_clip(colour, shape, motion, size=size, rng=rng).render(frames)


# ------------------------------------------------------------------------- captions
def caption(colour: str, shape: str, motion: str, rng: np.random.Generator) -> str:
    """One of the caption surface forms, e.g. 'red circle, moving left'."""
    form = CAPTION_FORMS[int(rng.integers(len(CAPTION_FORMS)))]
    return form.format(colour=colour, shape=shape, motion=motion)


_COLOUR_RE = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")
_SHAPE_RE = re.compile(r"\b(" + "|".join(SHAPES) + r")s?\b")
_MOTION_RE = re.compile(r"\b(moving\s+(?:left|right|up|down)|standing\s+still)\b")


def parse_prompt(text: str) -> tuple[str, str, str] | None:
    """(colour, shape, motion) named in a shapes-world prompt, or None.

    None when any of the three is missing or named twice differently, so that
    'a red circle and a blue square' is not silently scored as a red circle.
    """
    text = text.lower()
    found = []
    for pattern in (_COLOUR_RE, _SHAPE_RE, _MOTION_RE):
        words = {" ".join(m.split()) for m in pattern.findall(text)}
        if len(words) != 1:
            return None
        found.append(words.pop())
    return found[0], found[1], found[2]


def evaluation_prompts() -> list[str]:
    """The fixed prompt list of data/prompts_shapes.txt (69 prompts).

    Every colour-shape pair with three motions, rotating so that each motion appears
    about equally; held-out pairs with all five motions, so their rates are measured
    on more videos.
    """
    prompts = []
    for j, (c, s) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        k = len(MOTIONS) if (c, s) in HELD_OUT else 3
        prompts += [f"a {c} {s} {MOTIONS[(j + i) % len(MOTIONS)]}" for i in range(k)]
    return prompts


# -------------------------------------------------------------------------- dataset
def allowed_pairs(holdout: str = "default") -> list[tuple[str, str]]:
    """Colour-shape pairs that training data may contain."""
    if holdout not in ("default", "none"):
        raise UsageError(f"holdout must be 'default' or 'none', not {holdout!r}")
    return [(c, s) for c in COLOURS for s in SHAPES if holdout == "none" or (c, s) not in HELD_OUT]


def training_captions(holdout: str = "default") -> list[str]:
    """Every caption form of every (colour, shape, motion) that training data may contain:
    the prompts a data-free stage (distillation) trains on."""
    return [form.format(colour=c, shape=s, motion=m)
            for c, s in allowed_pairs(holdout) for m in MOTIONS for form in CAPTION_FORMS]


def _balanced(items, n: int, rng: np.random.Generator) -> list:
    """n items, each used floor(n/k) or ceil(n/k) times, in random order."""
    reps = -(-n // len(items))
    out = [items[i] for _ in range(reps) for i in rng.permutation(len(items))][:n]
    return [out[i] for i in rng.permutation(n)]


def dataset_plan(num: int, *, seed: int = 0, holdout: str = "default") -> list[tuple[str, str, str]]:
    """(colour, shape, motion) of each clip: colours and motions equally often (+-1),
    and each colour's allowed shapes equally often within it.

    Each shape is held out with exactly one colour, so shapes come out equally often too.
    """
    rng = np.random.default_rng([seed, 0])
    pairs = allowed_pairs(holdout)
    colours = _balanced(list(COLOURS), num, rng)
    shapes_by_colour = {}
    for c in COLOURS:
        allowed = [s for cc, s in pairs if cc == c]
        shapes_by_colour[c] = iter(_balanced(allowed, colours.count(c), rng))
    motions = _balanced(list(MOTIONS), num, rng)
    return [(c, next(shapes_by_colour[c]), m) for c, m in zip(colours, motions)]


def write_shapes_dataset(out: str | os.PathLike, *, num: int, frames: int = 33, size: int = 64,
                         seed: int = 0, holdout: str = "default", fps: int = 8) -> Path:
    """Write `num` clips as H.264 MP4 + metadata.csv (video,caption) + spec.json into `out`.

    The same arguments write the same metadata and the same decoded frames. Everything is
    written into a temporary sibling folder (utils/atomic) renamed to `out` only when
    complete, so an interrupted run leaves nothing that looks like a dataset.
    Returns the dataset directory.
    """
    _check_dataset_args(num=num, frames=frames, size=size, fps=fps)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not an empty directory; delete it or choose another --out")
    plan = dataset_plan(num, seed=seed, holdout=holdout)
    with atomic.atomic_path(str(out), directory=True) as tmp:
        rows = _write_clips(Path(tmp), plan, frames=frames, size=size, seed=seed, fps=fps)
        buf = io.StringIO()
        table = csv.writer(buf, lineterminator="\n")
        table.writerow(["video", "caption"])
        table.writerows(rows)
        atomic.write_text(os.path.join(tmp, "metadata.csv"), buf.getvalue())
        spec = {"generator": "videogen.data.shapes.write_shapes_dataset", "num": num, "frames": frames,
                "size": size, "seed": seed, "holdout": holdout, "fps": fps,
                "held_out_pairs": [list(p) for p in HELD_OUT] if holdout == "default" else [],
                "colours": COLOURS, "shapes": list(SHAPES), "motions": list(MOTIONS)}
        atomic.write_json(os.path.join(tmp, "spec.json"), spec, indent=2)
    return out


def _check_dataset_args(**values: int) -> None:
    for name, low in (("num", 1), ("frames", 1), ("size", 16), ("fps", 1)):
        if values[name] < low:
            raise UsageError(f"--{name} must be at least {low}, got {values[name]}")
    if values["size"] % 2:
        raise UsageError(f"--size must be even (H.264 yuv420p needs even sizes), got {values['size']}")


def _write_clips(root: Path, plan: list, *, frames: int, size: int, seed: int, fps: int) -> list:
    """Render and encode each planned clip under root/videos; returns the (video, caption) rows."""
    from tqdm import tqdm

    from videogen.data.video_io import Mp4Writer

    (root / "videos").mkdir()
    rows = []
    width = max(5, len(str(len(plan) - 1)))
    for i, (colour, shape, motion) in enumerate(tqdm(plan, desc="shapes clips", unit="clip")):
        rng = np.random.default_rng([seed, 1, i])  # per clip: independent of num
        video = render_clip(colour, shape, motion, frames=frames, size=size, rng=rng)
        name = f"videos/{i:0{width}d}.mp4"
        with Mp4Writer(str(root / name), fps=fps) as writer:
            for frame in video:
                writer.write(frame)
        rows.append((name, caption(colour, shape, motion, rng)))
    return rows
