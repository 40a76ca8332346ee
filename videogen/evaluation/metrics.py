"""Temporal-consistency metrics for generated videos, needing no downloaded weights.

Every metric takes a video as (F, H, W, 3) uint8 RGB and returns summary numbers and
per-frame curves. Pair curves have F-1 entries (pair t -> t+1), triple curves F-2
(frame t from t-1 and t+1), drift curves one entry per window of frames. A metric that
needs more frames than the video has is None.

- flicker (VBench): 1 - mean |frame t+1 - frame t| / 255; 1.0 is perfectly still.
- warping error (Lai et al. 2018): dense flow t -> t+1, warp frame t+1 back onto t,
  mean squared error on [0, 1] RGB over pixels that pass the forward-backward
  consistency check (Sundaram et al. 2010).
- motion smoothness: frame t predicted from t-1 and t+1 by flow-based midpoint
  interpolation; the error is mean |prediction - frame| (0..255), the score
  1 - error / 255, like VBench's (which interpolates with a learned model instead).
- dynamic degree: share of frame pairs whose flow is large (the mean of the top 5%
  flow magnitudes, as in VBench, above 1% of the shorter side), and the mean magnitude.
- drift: per window of frames, the colour-histogram distance (Hellinger, 0..1) and the
  mean-brightness change vs the first window, with fitted slopes per 100 frames.
- SSIM (Gaussian 11x11, sigma 1.5) and PSNR (capped at 100 dB for identical frames)
  between consecutive frames.
- optional, from local model directories: CLIP text-frame similarity, and DINO-style
  subject consistency (CLS-feature cosine to the first and the previous frame).
- optional: the shapes-world check of a video against its prompt (`shapes_scorer`), and
  the object's long-video drift window by window (`drift`).

Scene cuts (evaluation/cuts.py) are detected first: the pair and triple metrics of a
video's summary leave out the pairs across a cut, and each shot is also scored alone.

The model scores live in evaluation/model_scores.py, tables and plots in evaluation/report.py,
`videogen eval` in evaluation/run.py.
"""

from __future__ import annotations

import cv2
import numpy as np

from videogen.data.video_io import read_video
from videogen.evaluation.cuts import detect_cuts, shot_bounds
from videogen.evaluation.model_scores import ClipScorer, DinoScorer
from videogen.evaluation.drift import WINDOW, score_drift
from videogen.evaluation.shapes_scorer import detect, score_video

FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
FB_ALPHA, FB_BETA = 0.01, 0.5  # forward-backward consistency (Sundaram et al. 2010)
DYNAMIC_TOP_SHARE = 0.05  # per pair, the mean of the largest 5% flow magnitudes ...
DYNAMIC_THRESHOLD = 0.01  # ... must exceed this share of the shorter side, in pixels
DRIFT_WINDOW = 8
PSNR_CAP = 100.0


def frame_mad(video: np.ndarray) -> np.ndarray:
    """(F-1,) mean absolute difference of consecutive frames, 0..255."""
    v = video.astype(np.int16)
    return np.abs(v[1:] - v[:-1]).mean(axis=(1, 2, 3))


def flicker_score(video: np.ndarray) -> float | None:
    """VBench temporal flickering: (255 - mean MAD) / 255; 1.0 for a still video."""
    if len(video) < 2:
        return None
    return float((255.0 - frame_mad(video).mean()) / 255.0)


def optical_flow(a: np.ndarray, b: np.ndarray, engine=None) -> np.ndarray:
    """(H, W, 2) dense flow (dx, dy) from RGB frame a to RGB frame b, in pixels.

    DIS (Kroeger et al. 2016): several times faster than Farneback at equal accuracy
    here; pass `engine` to reuse one across calls.
    """
    engine = engine or cv2.DISOpticalFlow_create(FLOW_PRESET)
    grey_a, grey_b = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (a, b))
    return engine.calc(grey_a, grey_b, None)


def compute_flows(video: np.ndarray, gap: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Forward flows t -> t+gap and backward flows t+gap -> t, each (F-gap, H, W, 2)."""
    engine = cv2.DISOpticalFlow_create(FLOW_PRESET)
    pairs = range(len(video) - gap)
    empty = np.zeros((0, *video.shape[1:3], 2), np.float32)
    forward = [optical_flow(video[t], video[t + gap], engine) for t in pairs]
    backward = [optical_flow(video[t + gap], video[t], engine) for t in pairs]
    return (np.stack(forward), np.stack(backward)) if pairs else (empty, empty)


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample `image` at x + flow(x) (bilinear): the warped image and the in-bounds mask."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = gx + flow[..., 0], gy + flow[..., 1]
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return warped, inside


def consistent(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose forward flow comes back by the backward flow, in bounds."""
    back, inside = warp(backward, forward)
    err = ((forward + back) ** 2).sum(-1)
    bound = FB_ALPHA * ((forward**2).sum(-1) + (back**2).sum(-1)) + FB_BETA
    return inside & (err <= bound)


def warping_error(video: np.ndarray, flows=None) -> tuple[float | None, np.ndarray, np.ndarray]:
    """(mean error, (F-1,) error per pair, (F-1,) occluded share per pair).

    Error: mean squared difference on [0, 1] RGB between frame t and frame t+1 warped
    back by the flow, over consistent pixels. A pair where under 1% of pixels are
    consistent (the flow explains nothing) is scored over all pixels instead.
    """
    forward, backward = flows if flows is not None else compute_flows(video)
    frames = video.astype(np.float32) / 255.0
    errors, occluded = [], []
    for t in range(len(forward)):
        warped, _ = warp(frames[t + 1], forward[t])
        valid = consistent(forward[t], backward[t])
        sq = ((frames[t] - warped) ** 2).mean(-1)
        errors.append(sq[valid].mean() if valid.mean() >= 0.01 else sq.mean())
        occluded.append(1.0 - valid.mean())
    errors, occluded = np.array(errors), np.array(occluded)
    return (float(errors.mean()) if len(errors) else None), errors, occluded


def motion_smoothness(video: np.ndarray) -> tuple[float | None, float | None, np.ndarray]:
    """(error, score, (F-2,) error per middle frame): frame t from t-1 and t+1.

    Midpoint interpolation: the pixel at x in frame t sits at x - v in frame t-1 and at
    x + v in frame t+1, with 2v the flow t-1 -> t+1 (read at x; flows are smooth).
    """
    if len(video) < 3:
        return None, None, np.zeros(0)
    forward, backward = compute_flows(video, gap=2)  # t-1 -> t+1 and t+1 -> t-1
    frames = video.astype(np.float32)
    errors = []
    for t in range(1, len(video) - 1):
        from_prev, _ = warp(frames[t - 1], 0.5 * backward[t - 1])
        from_next, _ = warp(frames[t + 1], 0.5 * forward[t - 1])
        errors.append(np.abs(0.5 * (from_prev + from_next) - frames[t]).mean())
    errors = np.array(errors)
    error = float(errors.mean())
    return error, (255.0 - error) / 255.0, errors


def dynamic_degree(video: np.ndarray, flows=None) -> tuple[float | None, float | None, np.ndarray]:
    """(share of dynamic pairs, mean flow magnitude in pixels, (F-1,) top-5% magnitude per pair)."""
    forward, _ = flows if flows is not None else compute_flows(video)
    if not len(forward):
        return None, None, np.zeros(0)
    mean, top = flow_magnitudes(forward)
    return float((top > dynamic_threshold(video)).mean()), float(mean.mean()), top


def flow_magnitudes(forward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, mean of the top 5%) flow magnitude of each pair, each (F-1,)."""
    magnitude = np.linalg.norm(forward, axis=-1).reshape(len(forward), -1)
    k = max(1, int(DYNAMIC_TOP_SHARE * magnitude.shape[1]))
    return magnitude.mean(axis=1), -np.sort(-magnitude, axis=1)[:, :k].mean(axis=1)


def dynamic_threshold(video: np.ndarray) -> float:
    """Top-5% flow magnitude (pixels) above which a pair counts as dynamic."""
    return DYNAMIC_THRESHOLD * min(video.shape[1:3])


def _colour_histogram(frames: np.ndarray) -> np.ndarray:
    """Normalised joint 8x8x8 RGB histogram of a stack of frames."""
    pixels = np.ascontiguousarray(frames.reshape(-1, 1, 3))
    hist = cv2.calcHist([pixels], [0, 1, 2], None, [8, 8, 8], [0, 256, 0, 256, 0, 256])
    return hist / hist.sum()


def drift(video: np.ndarray, window: int = DRIFT_WINDOW) -> dict:
    """Colour-histogram distance and brightness change of each window vs the first.

    Windows are consecutive, `window` frames each (a shorter video is one window; a
    last partial window is dropped). Slopes are least-squares fits per 100 frames,
    None with fewer than two windows.
    """
    count = max(1, len(video) // window)
    size = min(window, len(video))
    starts = [i * size for i in range(count)]
    chunks = [video[s:s + size] for s in starts]
    first_hist = _colour_histogram(chunks[0])
    hist = np.array([cv2.compareHist(first_hist, _colour_histogram(c), cv2.HISTCMP_BHATTACHARYYA)
                     for c in chunks])
    brightness = np.array([c.mean() for c in chunks])
    brightness -= brightness[0]
    centres = np.array(starts) + (size - 1) / 2

    def slope(y):
        return float(100 * np.polyfit(centres, y, 1)[0]) if count > 1 else None

    return {"frames": centres, "hist": hist, "brightness": brightness,
            "hist_slope": slope(hist), "brightness_slope": slope(brightness)}


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W, 3) uint8 images (Wang et al. 2004), averaged over channels."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a, b = a.astype(np.float64), b.astype(np.float64)

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images, capped at 100 dB (identical images)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, float(10 * np.log10(255.0**2 / mse)))


# ---------------------------------------------------------------------------- whole videos
def evaluate_frames(video: np.ndarray, prompt: str | None = None, *, shapes: bool = False,
                    clip: ClipScorer | None = None, dino: DinoScorer | None = None,
                    cuts: bool | list = True, drift_window: int = WINDOW) -> dict:
    """Every metric of a (F, H, W, 3) uint8 video: {"summary", "curves", "cuts", "shots", ...}.

    cuts: True detects scene cuts (evaluation/cuts.py), False assumes one shot, a list
    gives them (first frames of the shots after the first). The pair and triple metrics
    (flicker, warping, smoothness, dynamic degree, SSIM, PSNR) of the summary leave out
    the frame pairs across a cut, as VBench-Long scores shot by shot: they are the
    means over the pairs within shots (each shot weighted by its pairs), and "shots"
    lists each shot's own. The curves keep every pair (the plot marks the cuts); drift
    is over the whole video. `shapes` adds the shapes-world check against `prompt`
    under "shapes" and the object's long-video drift (evaluation/drift.py, windows of
    `drift_window` frames) under "drift"; `clip` and `dino` add model scores (CLIP
    needs `prompt`).
    """
    cut_frames = detect_cuts(video) if cuts is True else sorted(int(c) for c in (cuts or []))
    flows = compute_flows(video)
    _, warp_curve, occluded = warping_error(video, flows)
    flow_mean, flow_top = flow_magnitudes(flows[0]) if len(video) > 1 else (np.zeros(0), np.zeros(0))
    dr = drift(video)
    curves = {
        "pair_frame": np.arange(1, len(video)), "mad": frame_mad(video),
        "ssim": np.array([ssim(video[t], video[t + 1]) for t in range(len(video) - 1)]),
        "psnr": np.array([psnr(video[t], video[t + 1]) for t in range(len(video) - 1)]),
        "flow_top": flow_top, "flow_mean": flow_mean, "warping_error": warp_curve, "occluded": occluded,
        "smoothness_frame": np.arange(1, len(video) - 1), "smoothness_error": motion_smoothness(video)[2],
        "drift_frame": dr["frames"], "drift_hist": dr["hist"], "drift_brightness": dr["brightness"],
    }
    threshold = dynamic_threshold(video)
    bounds = shot_bounds(cut_frames, len(video))
    summary = {**shot_summary(curves, 0, len(video), cut_frames, threshold), "shots": len(bounds),
               "drift_hist_slope": dr["hist_slope"], "drift_brightness_slope": dr["brightness_slope"],
               "drift_hist_end": float(dr["hist"][-1]), "drift_brightness_end": float(dr["brightness"][-1])}
    shots = [{"start": a, "end": b, **shot_summary(curves, a, b, [], threshold)} for a, b in bounds]
    _add_model_scores(summary, curves, video, prompt, clip, dino)
    report = {"frames": len(video), "height": video.shape[1], "width": video.shape[2], "prompt": prompt,
              "summary": summary, "cuts": cut_frames, "shots": shots,
              "curves": {k: np.asarray(v).tolist() for k, v in curves.items()}}
    if shapes:
        det = detect(video)
        report["shapes"] = score_video(video, prompt, det)
        report["drift"] = score_drift(video, prompt, drift_window, det)
    return report


def _mean(x) -> float | None:
    return float(np.mean(x)) if len(x) else None


def shot_summary(curves: dict, start: int, end: int, cuts: list, threshold: float) -> dict:
    """Pair and triple metrics over frames start..end-1, leaving out pairs across `cuts`.

    Pair t joins frames t and t+1 (curves index t); a smoothness triple is centred on
    frame t (index t-1) and needs both its pairs.
    """
    pair = np.zeros(len(curves["mad"]), bool)
    pair[start:max(start, end - 1)] = True
    pair[[c - 1 for c in cuts if 0 < c <= len(pair)]] = False
    triple = pair[:-1] & pair[1:] if len(pair) > 1 else np.zeros(0, bool)
    mad, smooth = _mean(curves["mad"][pair]), _mean(curves["smoothness_error"][triple])
    return {
        "frames": end - start,
        "flicker": None if mad is None else (255.0 - mad) / 255.0, "mad": mad,
        "warping_error": _mean(curves["warping_error"][pair]), "occluded": _mean(curves["occluded"][pair]),
        "motion_smoothness": None if smooth is None else (255.0 - smooth) / 255.0, "smoothness_error": smooth,
        "dynamic_degree": _mean(curves["flow_top"][pair] > threshold), "flow_magnitude": _mean(curves["flow_mean"][pair]),
        "ssim": _mean(curves["ssim"][pair]), "psnr": _mean(curves["psnr"][pair]),
    }


def _add_model_scores(summary: dict, curves: dict, video: np.ndarray, prompt, clip, dino) -> None:
    if clip is not None:
        if not prompt:
            raise ValueError("a CLIP score needs the video's prompt")
        curves["clip"] = clip(video, prompt)
        summary["clip_score"] = _mean(curves["clip"])
    if dino is not None:
        curves["dino_first"], curves["dino_prev"] = dino(video)
        summary["dino_first"], summary["dino_prev"] = _mean(curves["dino_first"]), _mean(curves["dino_prev"])


def evaluate_video(path: str, prompt: str | None = None, *, shapes: bool = False,
                   clip: ClipScorer | None = None, dino: DinoScorer | None = None, cuts: bool | list = True,
                   drift_window: int = WINDOW) -> dict:
    """`evaluate_frames` of a video file, GIF or frame directory, with "video": path.

    Raises VideoReadError (a UsageError) naming the file if it cannot be read.
    """
    video = read_video(str(path))
    return {"video": str(path), **evaluate_frames(video, prompt, shapes=shapes, clip=clip, dino=dino, cuts=cuts,
                                                  drift_window=drift_window)}
