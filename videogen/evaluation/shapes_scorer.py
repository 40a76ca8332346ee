"""Check a shapes-world video against its prompt: colour, shape, direction, presence, drift.

Per frame the object is the largest blob clearly brighter than the background (half
way between the background level and the brightest pixels, which also makes its area
right for anti-aliased or codec-blurred edges). Its core colour gives the nearest
named colour. Its shape comes from the fill ratio of its bounding box (circle ~ pi/4,
square ~ 1, triangle ~ 1/2) and, for triangles, also from the skew of its mass
towards the base. Its centroid gives the trajectory.

Direction must survive bounces: a clip "moving left" goes left, bounces off the left
wall and then goes right. The trajectory along the main axis is cut into runs between
reversals (ignoring wobbles smaller than a hysteresis); every run votes for a start
direction, its own sign flipped once per wall bounce before it, weighted by its
length. Reversals away from the walls are not bounces, so a video that wanders back
and forth gets split votes. A bounce inside the very first step (an object starting
next to the wall it heads for) shows as a short first step leading away from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from videogen.data.shapes import COLOURS, HELD_OUT, SHAPES, SPEED_FRACTION, parse_prompt

# Quality bars of the embedded default model (share of videos / of frames).
SHAPES_BARS = {"colour": 0.90, "shape": 0.80, "direction": 0.80, "presence": 0.95}
MIN_CONTRAST = 50  # object vs background, 0..255 on the brightest channel
MIN_AREA_FRACTION = 0.003  # of the canvas; the smallest triangle covers ~3%
FILL_TRIANGLE_MAX = 0.65  # fill ratio below: triangle (ideal 0.5)
SKEW_TRIANGLE_MIN = 0.2  # |vertical skewness| above: triangle (ideal 0.57; circle, square 0)
FILL_CIRCLE_MAX = 0.89  # fill ratio below: circle (ideal 0.785); above: square (ideal 1)
STILL_SPEED = 0.25  # of the generator's speed: slower than this is "standing still"
WALL_MARGIN = 0.05  # of the canvas (+1 px): a reversal this close to an edge is a bounce
HYSTERESIS = 0.5  # of the generator's per-frame step: smaller reversals are wobble
_COLOUR_NAMES = list(COLOURS)
_COLOUR_TABLE = np.array([COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float64)


@dataclass
class Detections:
    """Per-frame object measurements of a (F, H, W, 3) video; rows of absent frames are NaN."""

    present: np.ndarray  # (F,) bool
    centre: np.ndarray  # (F, 2) centroid (x, y), pixels
    bbox: np.ndarray  # (F, 4) x0, y0, x1, y1 (x1, y1 exclusive), pixels
    rgb: np.ndarray  # (F, 3) mean colour of the object's core
    fill: np.ndarray  # (F,) area / bounding-box area
    skew: np.ndarray  # (F,) vertical skewness of the object's mass (upright triangle ~ -0.57)
    background: np.ndarray  # (F,) mean brightness outside the object, 0..255
    size: int  # canvas width, pixels

    def frames(self, start: int, end: int) -> Detections:
        """The measurements of frames start..end-1 only, as `detect` gives them for those frames."""
        return replace(self, present=self.present[start:end], centre=self.centre[start:end],
                       bbox=self.bbox[start:end], rgb=self.rgb[start:end], fill=self.fill[start:end],
                       skew=self.skew[start:end], background=self.background[start:end])


def detect(video: np.ndarray) -> Detections:
    """Find the object in every frame of a (F, H, W, 3) uint8 video."""
    frames, height, width = video.shape[:3]
    det = Detections(
        present=np.zeros(frames, dtype=bool), centre=np.full((frames, 2), np.nan),
        bbox=np.full((frames, 4), np.nan), rgb=np.full((frames, 3), np.nan), fill=np.full(frames, np.nan),
        skew=np.full(frames, np.nan), background=np.zeros(frames), size=width,
    )
    for f, frame in enumerate(video):
        det.background[f], found = _measure(frame, MIN_AREA_FRACTION * height * width)
        if found is not None:
            det.present[f] = True
            det.centre[f], det.bbox[f], det.rgb[f], det.fill[f], det.skew[f] = found
    return det


def find_object(frame: np.ndarray, min_area: float) -> tuple[np.ndarray, float, float, np.ndarray | None]:
    """(level, background level, peak level, main blob or None) of one (H, W, 3) uint8 frame.

    level: (H, W) float32 brightest channel; the main blob: (H, W) bool, the largest
    connected region above half way from the background to the peak, if the object
    stands out (MIN_CONTRAST) and covers at least `min_area` pixels.
    """
    # channel by channel: ~15x faster than frame.max(axis=2) on small frames
    level = np.maximum(np.maximum(frame[..., 0], frame[..., 1]), frame[..., 2]).astype(np.float32)
    bg, peak = (float(q) for q in np.percentile(level, [50, 99.5]))
    if peak - bg < MIN_CONTRAST:
        return level, bg, peak, None
    mask = (level > bg + 0.5 * (peak - bg)).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # the peak pixels make one at least
    if stats[k, cv2.CC_STAT_AREA] < min_area:
        return level, bg, peak, None
    return level, bg, peak, labels == k


def coverage(level: np.ndarray, bg: float, peak: float, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weight, near) of `find_object`'s results: near is the blob grown by 2 pixels, weight
    the (H, W) estimated share of each near pixel the object covers (0 elsewhere)."""
    near = cv2.dilate(blob.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    # Estimated coverage of each pixel: sub-pixel centroid and extents, so the
    # measures hold for small objects (a binary mask's centroid jumps as edge rows flip).
    return np.clip((level - bg) / (peak - bg), 0, 1) * near, near


def _measure(frame: np.ndarray, min_area: float):
    """(background brightness, (centre, bbox, rgb, fill, skew) or None) of one (H, W, 3) frame."""
    grey = (frame[..., 0].astype(np.float64) + frame[..., 1] + frame[..., 2]) / 3  # = mean(axis=2), faster
    level, bg, peak, blob = find_object(frame, min_area)
    if blob is None:
        return grey.mean(), None
    ys_in, xs_in = np.nonzero(blob)
    x0, y0, x1, y1 = xs_in.min(), ys_in.min(), xs_in.max() + 1, ys_in.max() + 1
    weight, near = coverage(level, bg, peak, blob)
    ys, xs = np.indices(weight.shape) + 0.5  # pixel centres
    mass = weight.sum()
    cx, cy = (xs * weight).sum() / mass, (ys * weight).sum() / mass
    var_y = (weight * (ys - cy) ** 2).sum() / mass
    skew = (weight * (ys - cy) ** 3).sum() / mass / var_y**1.5
    fill = mass / (weight.max(axis=0).sum() * weight.max(axis=1).sum())
    core = blob & (weight >= 0.8)  # away from edges blurred into the background
    rgb = frame[core if core.any() else blob].mean(axis=0)
    background = grey[~near].mean() if (~near).any() else grey.mean()
    return background, ((cx, cy), (x0, y0, x1, y1), rgb, fill, skew)


def nearest_colour(rgb: np.ndarray) -> str:
    """The named colour nearest to an RGB triple (Euclidean in RGB)."""
    return _COLOUR_NAMES[int(np.argmin(np.linalg.norm(_COLOUR_TABLE - rgb, axis=1)))]


def shape_of(fill: float, skew: float) -> str:
    """Shape from the fill ratio of the bounding box and the vertical skewness."""
    if fill < FILL_TRIANGLE_MAX or abs(skew) > SKEW_TRIANGLE_MIN:
        return "triangle"
    return "circle" if fill < FILL_CIRCLE_MAX else "square"


def _majority(labels: list[str], choices) -> str | None:
    if not labels:
        return None
    counts = [labels.count(c) for c in choices]
    return choices[int(np.argmax(counts))]


def _turning_points(p: np.ndarray, hysteresis: float) -> list[int]:
    """Indices where a 1-D path reverses by more than `hysteresis`: its runs' ends.

    Starts with the first index and ends with the last; sub-hysteresis wobble before
    the first real move is skipped by starting at that stretch's extreme.
    """
    lo = hi = 0  # extremes seen while the direction is still unknown
    direction, ext = 0, 0
    points = [0]
    for i in range(1, len(p)):
        if direction == 0:
            lo = i if p[i] < p[lo] else lo
            hi = i if p[i] > p[hi] else hi
            if p[i] - p[lo] > hysteresis:
                direction, ext, points[0] = 1, i, lo
            elif p[hi] - p[i] > hysteresis:
                direction, ext, points[0] = -1, i, hi
        elif direction * (p[i] - p[ext]) > 0:
            ext = i
        elif direction * (p[ext] - p[i]) > hysteresis:
            points.append(ext)
            direction, ext = -direction, i
    if direction:
        points.append(ext)
    return points


def _path_length(p: np.ndarray, hysteresis: float) -> float:
    """Distance travelled along a 1-D path, ignoring sub-hysteresis wobble."""
    return float(np.abs(np.diff(p[_turning_points(p, hysteresis)])).sum())


def classify_motion(det: Detections, frames: slice = slice(None)) -> tuple[str | None, float]:
    """(motion name, speed in pixels per frame) of the object over `frames`.

    Absent frames are skipped, so a path with gaps counts its steps across them.
    """
    idx = np.flatnonzero(det.present[frames])
    if len(idx) < 2:
        return None, 0.0
    centre, bbox = det.centre[frames][idx], det.bbox[frames][idx]
    step = det.size * SPEED_FRACTION
    hyst = HYSTERESIS * step
    speeds = [_path_length(centre[:, a], hyst) / (idx[-1] - idx[0]) for a in range(2)]
    axis = int(np.argmax(speeds))
    if speeds[axis] < STILL_SPEED * step:
        return "standing still", speeds[axis]
    p = centre[:, axis]
    margin = WALL_MARGIN * det.size + 1

    def at_wall(i: int, toward: float) -> bool:  # toward > 0: the right or bottom wall
        return bbox[i, axis + 2] >= det.size - margin if toward > 0 else bbox[i, axis] <= margin

    points = _turning_points(p, hyst)
    # A bounce can hide inside the first step: an object that starts next to the wall it
    # heads for reaches it and comes back within one frame, so that step is short and
    # the first run leads away from that wall.
    steps = np.abs(np.diff(p)) / np.diff(idx)
    first = p[points[1]] - p[points[0]]
    bounces = int(at_wall(0, -first) and steps[0] < 0.75 * np.median(steps))
    vote = 0.0
    for start, end in zip(points[:-1], points[1:]):
        d = p[end] - p[start]
        vote += d * (-1) ** bounces
        bounces += at_wall(end, d)
    names = (("moving left", "moving right"), ("moving up", "moving down"))
    return names[axis][int(vote > 0)], speeds[axis]


def score_video(video: np.ndarray, prompt: str, det: Detections | None = None) -> dict:
    """Check a (F, H, W, 3) uint8 shapes-world video against its prompt.

    Returns expected and detected (colour, shape, motion), whether each is right,
    `presence` (share of frames with the object), `colour_drift` (RGB distance of the
    object's colour, last vs first stretch), `background_start`/`background_end`
    (mean brightness outside the object) and `moving_at_end` (still moving over the
    last 60 frames, or the last quarter of shorter videos).
    `det` (`detect(video)`) saves detecting the object again when the caller has it.
    Raises ValueError if the prompt is not in the shapes vocabulary.
    """
    parsed = parse_prompt(prompt) if prompt else None
    if parsed is None:
        raise ValueError(f"prompt {prompt!r} is not a shapes-world prompt")
    colour, shape, motion = parsed
    det = detect(video) if det is None else det
    frames = len(video)
    tail = min(60, max(2, frames // 4))
    rgb = det.rgb[det.present]
    detected_colour = _majority([nearest_colour(c) for c in rgb], _COLOUR_NAMES)
    shapes = [shape_of(f, k) for f, k in zip(det.fill[det.present], det.skew[det.present])]
    detected_shape = _majority(shapes, list(SHAPES))
    detected_motion, speed = classify_motion(det)
    end_motion, _ = classify_motion(det, slice(frames - tail, None))
    k = min(len(rgb), tail)
    return {
        "prompt": prompt,
        "expected": {"colour": colour, "shape": shape, "motion": motion},
        "detected": {"colour": detected_colour, "shape": detected_shape, "motion": detected_motion},
        "held_out": (colour, shape) in HELD_OUT,
        "colour_ok": detected_colour == colour,
        "shape_ok": detected_shape == shape,
        "direction_ok": detected_motion == motion,
        "presence": float(det.present.mean()),
        "speed": float(speed),
        "moving_at_end": end_motion not in (None, "standing still"),
        "colour_drift": float(np.linalg.norm(rgb[-k:].mean(0) - rgb[:k].mean(0))) if k else None,
        "background_start": float(det.background[:tail].mean()),
        "background_end": float(det.background[-tail:].mean()),
    }


def aggregate(rows: list[dict]) -> dict:
    """Rates over all videos, held-out pairs and seen pairs, and whether the bars pass.

    colour/shape/direction: share of videos right; presence: mean share of frames;
    moving_at_end: share of videos with a moving prompt still moving at the end.
    """
    def rates(group: list[dict]) -> dict:
        if not group:
            return {"videos": 0}
        moving = [r for r in group if r["expected"]["motion"] != "standing still"]
        out = {"videos": len(group)}
        for key in ("colour", "shape", "direction"):
            out[key] = float(np.mean([r[f"{key}_ok"] for r in group]))
        out["presence"] = float(np.mean([r["presence"] for r in group]))
        out["moving_at_end"] = float(np.mean([r["moving_at_end"] for r in moving])) if moving else None
        out["passes_bars"] = all(out[k] >= bar for k, bar in SHAPES_BARS.items())
        return out

    return {
        "all": rates(rows),
        "held_out": rates([r for r in rows if r["held_out"]]),
        "seen": rates([r for r in rows if not r["held_out"]]),
        "bars": SHAPES_BARS,
    }
