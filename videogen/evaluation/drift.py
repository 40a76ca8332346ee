"""Long-video drift of a shapes-world video: does the object stay itself for thousands of frames?

The video is cut into windows of WINDOW frames (a video shorter than ten windows gets
windows of frames // 10, at least MIN_WINDOW frames, so that its curves still have ten
points; the last window also takes the frames left over), and every window is compared
with the first. Per frame, on the object found by the shapes scorer's rule
(`shapes_scorer.find_object`):

- area: the object's estimated coverage in pixels (`shapes_scorer.coverage`), averaged
  per window; reported as the ratio to the first window.
- off-axis wander: a vertical mover's centroid x must not change, nor a horizontal
  mover's y, nor either for an object standing still (the axes are the prompt's). A
  window's wander is its largest |mean off-axis coordinate - that of the first window|,
  as a share of the canvas width; a video's wander is the largest over its windows, so
  drift that comes back still counts. Its sign (`off_axis_shift`, the last window
  against the first) tells a bias, the same way in every video, from a random walk.
- colour purity: the share of the object's interior pixels (its blob less a 1-pixel rim)
  within PURITY_RADIUS (RGB distance) of the prompt's palette colour.
- edge sharpness: on a band of +-3 pixels around the object's outline, the
  gradient-weighted mean gradient sum |g|^2 / sum |g| (Sobel, on the brightest channel)
  over the object's contrast: the steeper the edges the higher, whatever the outline's
  length. Reported as the ratio to the first window. A Gaussian blur of 0.7 pixels
  brings a pixel-sharp edge to ~0.7, one of 0.5 to ~0.8. On pixel-sharp edges (the
  generator's) the value also depends on where an edge falls within its pixel, by up to
  ~20%; averaging a window's frames evens this out along the motion, and edges that do
  not move keep their value. Edges softened by a Gaussian of 0.5 pixels or more before
  sampling (as a decoder's are) vary by < 1%.
- ghost: a region of at least the scorer's smallest object area, above the background by
  GHOST_CONTRAST of the object's contrast and more than GHOST_MARGIN pixels from the main
  blob: a second object or a faint copy (a smear touching the object is not one). A
  window has a ghost when at least GHOST_FRAMES of its frames do.

Per window also, by the shapes scorer's rules: colour right and shape right (the
majority over the window's frames) and, for a moving prompt, still moving (not classified
standing still). `drift_checks` holds a video to the bars' limits; `aggregate_drift`
gives the share of videos that pass each check, against DRIFT_BARS. `DriftAccumulator`
scores a video window by window as it is generated, to the same numbers, holding only the
current window's frames (`score_drift` runs on it).
"""

from __future__ import annotations

import cv2
import numpy as np

from videogen.data.shapes import COLOURS, HELD_OUT, SHAPES, VELOCITY, parse_prompt
from videogen.evaluation.shapes_scorer import (
    MIN_AREA_FRACTION, Detections, classify_motion, coverage, detect, find_object, nearest_colour, shape_of,
)

WINDOW = 240  # frames
MIN_WINDOW = 8  # frames: the shortest window of a short video
PURITY_RADIUS = 40.0  # RGB distance to the palette colour (named colours are >= 120 apart)
GHOST_CONTRAST = 0.2  # of the object's contrast over the background
GHOST_MARGIN = 4  # pixels around the main blob where a blur halo is not a ghost
GHOST_FRAMES = 0.25  # share of a window's frames with a ghost for the window to have one
# Limits per video, and the share of videos that must keep within them (issue 22).
AREA_RANGE = (0.85, 1.15)  # area, last window / first
MIN_SHARPNESS = 0.85  # edge sharpness, last window / first
MAX_WANDER = 0.10  # off-axis wander, share of the canvas width
DRIFT_BARS = {"colour_shape": 0.95, "area_sharpness": 0.90, "wander": 0.90, "moving": 0.95}
_BAND = np.ones((7, 7), np.uint8)  # the edge band: the blob grown and shrunk by 3 pixels


def drift_window(frames: int, window: int = WINDOW) -> int:
    """The window length used for a video of `frames` frames: `window`, shrunk for short videos."""
    if window < 1:
        raise ValueError(f"the drift window must be at least 1 frame, got {window}")
    return max(1, min(window, frames, max(MIN_WINDOW, frames // 10)))


def window_bounds(frames: int, window: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive windows of `window` frames; the last takes the rest."""
    n = max(1, frames // window)
    return [(i * window, frames if i == n - 1 else (i + 1) * window) for i in range(n)]


def frame_measures(video: np.ndarray, rgb: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Per-frame area, purity (vs palette colour `rgb`), sharpness, ghost and ghost_mass of a
    (F, H, W, 3) uint8 video: (F,) arrays, NaN (ghost False) where no object is found.

    ghost_mass is the coverage of the ghost regions over that of the object.
    """
    frames, height, width = video.shape[:3]
    out = {k: np.full(frames, np.nan) for k in ("area", "purity", "sharpness", "ghost_mass")}
    out["ghost"] = np.zeros(frames, bool)
    target = np.asarray(rgb, np.float32)
    for f, frame in enumerate(video):
        found = _measure_frame(frame, target, MIN_AREA_FRACTION * height * width)
        if found is not None:
            out["area"][f], out["purity"][f], out["sharpness"][f], out["ghost_mass"][f] = found
            out["ghost"][f] = found[3] > 0
    return out


def _measure_frame(frame: np.ndarray, target: np.ndarray, min_area: float):
    """(area, purity, sharpness, ghost mass) of one frame's object, or None without one."""
    level, bg, peak, blob = find_object(frame, min_area)
    if blob is None:
        return None
    contrast = peak - bg
    weight, _ = coverage(level, bg, peak, blob)
    area = float(weight.sum())
    grown = cv2.dilate(blob.astype(np.uint8), _BAND).astype(bool)
    shrunk = cv2.erode(blob.astype(np.uint8), _BAND).astype(bool)
    interior = cv2.erode(blob.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    pixels = frame[interior if interior.any() else blob].astype(np.float32)
    purity = float(np.mean(np.linalg.norm(pixels - target, axis=1) <= PURITY_RADIUS))
    # Sobel's 3x3 kernels sum 8 neighbour steps: /8 gives level units per pixel.
    gx = cv2.Sobel(level, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(level, cv2.CV_32F, 0, 1, ksize=3) / 8
    g = np.hypot(gx, gy)[grown & ~shrunk]
    sharpness = float((g**2).sum() / max(g.sum(), 1e-6) / contrast)
    return area, purity, sharpness, _ghost_mass(level, bg, contrast, blob, min_area) / max(area, 1e-6)


def _ghost_mass(level: np.ndarray, bg: float, contrast: float, blob: np.ndarray, min_area: float) -> float:
    """Coverage of the regions clearly above the background away from the main blob."""
    size = 2 * GHOST_MARGIN + 1
    away = ~cv2.dilate(blob.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)
    bright = ((level > bg + GHOST_CONTRAST * contrast) & away).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    big = [k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= min_area]
    if not big:
        return 0.0
    share = np.clip((level - bg) / contrast, 0, 1)
    return float(share[np.isin(labels, big)].sum())


def off_axes(motion: str) -> list[int]:
    """The centroid coordinates (0: x, 1: y) a motion must not change: those off its axis."""
    return [axis for axis in (0, 1) if VELOCITY[motion][axis] == 0]


def _window_values(det: Detections, m: dict, parsed: tuple[str, str, str]) -> dict:
    """One window's values from the detections `det` and `frame_measures` `m` of its frames only."""
    colour, shape, motion = parsed
    axes = off_axes(motion)
    present = det.present
    out = {key: _nanmean(m[key]) for key in ("area", "purity", "sharpness", "ghost_mass")}
    out["presence"] = float(present.mean())
    out["ghost"] = float(m["ghost"][present].mean()) if present.any() else 0.0
    out["off_axis"] = [_nanmean(det.centre[:, axis]) for axis in axes]
    colours = [nearest_colour(c) for c in det.rgb[present]]
    shapes = [shape_of(f, k) for f, k in zip(det.fill[present], det.skew[present])]
    out["colour_ok"] = bool(colours) and max(COLOURS, key=colours.count) == colour
    out["shape_ok"] = bool(shapes) and max(SHAPES, key=shapes.count) == shape
    moved, _ = classify_motion(det)
    out["moving"] = None if motion == "standing still" else moved not in (None, "standing still")
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def _ratio(values: list[float]) -> list[float | None]:
    first = values[0]
    return [None if np.isnan(v) or np.isnan(first) or first <= 0 else v / first for v in values]


def _clean(values: list) -> list:
    return [None if isinstance(v, float) and np.isnan(v) else v for v in values]


def score_drift(video: np.ndarray, prompt: str, window: int = WINDOW, det: Detections | None = None) -> dict:
    """Drift of a (F, H, W, 3) uint8 shapes-world video against its prompt, window by window.

    Returns the window used and each window's start frame; `curves`: per window area_ratio,
    sharpness_ratio, wander (vs the first window), purity, ghost (share of frames),
    ghost_mass (mean coverage of ghosts over the object's), presence, colour_ok,
    shape_ok, moving (None for standing still); and the video's
    area_ratio and sharpness_ratio (last window / first), wander (largest over the
    windows) and wander_last, off_axis_shift (the last window's signed off-axis change
    against the first, share of the width: {'x': + right} for a vertical mover, {'y': +
    down} for a horizontal one, both for one standing still), purity_first/purity_last,
    ghost (any window has one), colour_shape_ok (right in every window), moving_at_end
    (last window), and `checks`
    (drift_checks). `det` saves detecting the object again when the caller has it.
    Raises ValueError if the prompt is not in the shapes vocabulary.
    `DriftAccumulator` gives the same without holding the whole video.
    """
    acc = DriftAccumulator(prompt, len(video), window)
    det = detect(video) if det is None else det
    for a, b in acc.bounds:
        acc.add(video[a:b], det.frames(a, b))
    return acc.result()


class DriftAccumulator:
    """`score_drift` window by window, for a video too long to hold: `add` each window's
    frames in turn (`next_window` says which), then `result` gives score_drift's row.

    Only per-window values are kept, so memory does not grow with the video beyond a few
    numbers per window. The window length depends on the whole video's (`drift_window`),
    hence `frames` up front. Raises ValueError if the prompt is not in the shapes vocabulary.
    """

    def __init__(self, prompt: str, frames: int, window: int = WINDOW):
        parsed = parse_prompt(prompt) if prompt else None
        if parsed is None:
            raise ValueError(f"prompt {prompt!r} is not a shapes-world prompt")
        if frames < 1:
            raise ValueError(f"a video to score needs at least 1 frame, got {frames}")
        self.prompt, self.parsed, self.frames = prompt, parsed, frames
        self.window = drift_window(frames, window)
        self.bounds = window_bounds(frames, self.window)
        self.values: list[dict] = []  # per window, as _window_values gives them
        self.width: int | None = None

    def next_window(self) -> tuple[int, int] | None:
        """(start, end) frames of the window `add` takes next; None once all are in."""
        return self.bounds[len(self.values)] if len(self.values) < len(self.bounds) else None

    def add(self, video: np.ndarray, det: Detections | None = None) -> dict:
        """Score the next window, a (F, H, W, 3) uint8 array of its F = end - start frames
        (`det`: their detections, if the caller has them). Returns that window's values:
        area, purity, sharpness, ghost, ghost_mass, presence, off_axis (mean centroid
        coordinate off the motion's axis, pixels), colour_ok, shape_ok, moving."""
        bounds = self.next_window()
        if bounds is None:
            raise ValueError(f"all {len(self.bounds)} windows of this {self.frames}-frame video are in already")
        if len(video) != bounds[1] - bounds[0]:
            raise ValueError(f"window {len(self.values)} is frames {bounds[0]}-{bounds[1] - 1}: "
                             f"{bounds[1] - bounds[0]} frames, got {len(video)}")
        self.width = video.shape[2]
        det = detect(video) if det is None else det
        values = _window_values(det, frame_measures(video, COLOURS[self.parsed[0]]), self.parsed)
        self.values.append(values)
        return values

    def result(self) -> dict:
        """score_drift's row of the whole video; every window must be in."""
        if self.next_window() is not None:
            raise ValueError(f"{len(self.bounds) - len(self.values)} of {len(self.bounds)} windows not added yet")
        c = {key: [v[key] for v in self.values] for key in self.values[0]}
        off = np.array(c["off_axis"], dtype=np.float64)  # (windows, axes)
        wander = np.abs(off - off[0]).max(axis=1) / self.width
        colour, shape, motion = self.parsed
        names = ["xy"[axis] for axis in off_axes(motion)]  # the columns of `off`
        shift = dict(zip(names, _clean([float(d) for d in (off[-1] - off[0]) / self.width])))
        curves = {"area_ratio": _ratio(c["area"]), "sharpness_ratio": _ratio(c["sharpness"]),
                  "wander": _clean(wander.tolist()), "purity": _clean(c["purity"]), "ghost": c["ghost"],
                  "ghost_mass": _clean(c["ghost_mass"]),
                  "presence": c["presence"], "colour_ok": c["colour_ok"], "shape_ok": c["shape_ok"],
                  "moving": c["moving"]}
        ghost_windows = [g >= GHOST_FRAMES for g in c["ghost"]]
        row = {
            "prompt": self.prompt, "held_out": (colour, shape) in HELD_OUT, "moving_prompt": motion != "standing still",
            "frames": self.frames, "window": self.window, "window_starts": [a for a, _ in self.bounds],
            "curves": curves,
            "area_ratio": curves["area_ratio"][-1], "sharpness_ratio": curves["sharpness_ratio"][-1],
            "wander": None if np.isnan(wander).any() else float(wander.max()), "wander_last": curves["wander"][-1],
            "off_axis_shift": shift,
            "purity_first": curves["purity"][0], "purity_last": curves["purity"][-1],
            "ghost": any(ghost_windows), "ghost_windows": int(sum(ghost_windows)),
            "colour_shape_ok": all(c["colour_ok"]) and all(c["shape_ok"]), "moving_at_end": c["moving"][-1],
        }
        row["checks"] = drift_checks(row)
        return row


def drift_checks(row: dict) -> dict:
    """Whether one video keeps within each bar's limits; moving is None for standing still.

    A measure that could not be taken (no object in a window) fails its check.
    """
    area, sharp, wander = row["area_ratio"], row["sharpness_ratio"], row["wander"]
    return {
        "colour_shape": row["colour_shape_ok"],
        "area_sharpness": (area is not None and AREA_RANGE[0] <= area <= AREA_RANGE[1]
                           and sharp is not None and sharp >= MIN_SHARPNESS),
        "wander": wander is not None and wander <= MAX_WANDER,
        "moving": None if not row["moving_prompt"] else bool(row["moving_at_end"]),
    }


def aggregate_drift(rows: list[dict]) -> dict:
    """Share of videos passing each check (moving: of the moving prompts) and with a
    ghost, the medians of the measures, overall, on held-out pairs and on seen pairs,
    and whether DRIFT_BARS pass."""
    def rates(group: list[dict]) -> dict:
        if not group:
            return {"videos": 0}
        out = {"videos": len(group)}
        for key in DRIFT_BARS:
            passed = [r["checks"][key] for r in group if r["checks"][key] is not None]
            out[key] = float(np.mean(passed)) if passed else None
        out["ghost"] = float(np.mean([r["ghost"] for r in group]))
        for key in ("area_ratio", "sharpness_ratio", "wander", "purity_last"):
            values = [r[key] for r in group if r[key] is not None]
            out[f"median_{key}"] = float(np.median(values)) if values else None
        out["passes_bars"] = all(out[k] is None or out[k] >= bar for k, bar in DRIFT_BARS.items())
        return out

    return {
        "all": rates(rows),
        "held_out": rates([r for r in rows if r["held_out"]]),
        "seen": rates([r for r in rows if not r["held_out"]]),
        "bars": DRIFT_BARS,
        "limits": {"area_ratio": list(AREA_RANGE), "min_sharpness_ratio": MIN_SHARPNESS, "max_wander": MAX_WANDER},
    }
