"""Scene cuts: where one shot ends and the next begins, so that temporal metrics leave them out.

A cut between two shots is not flicker, a warping failure or a jerk; scored as one, every
cut of real footage reads as a spike (VBench-Long detects shots first for this reason).
The rule is PySceneDetect's AdaptiveDetector on its ContentDetector score, with one
addition, and needs nothing beyond OpenCV:

- score of frame t: mean |HSV(t) - HSV(t-1)| over pixels and the three channels, 0..255
  (OpenCV's hue runs 0..179), on frames shrunk to about SCORE_WIDTH pixels wide;
- frame t starts a new shot when its score is at least MIN_CONTENT and at least
  ADAPTIVE_RATIO times the mean score of the WINDOW frames on each side of it;
- ours: frame t must differ by MIN_CONTENT from frame t-2 too, and frame t+1 from frame
  t-1: a single odd frame that the video comes back from (a flash, a generator's
  glitch) makes two jumps that each fail one of these, and is flicker to measure, not a
  cut to hide;
- a cut comes at least MIN_SHOT frames after the previous one (or the first frame).

The defaults are PySceneDetect's (0.6): adaptive_threshold 3, min_content_val 15,
window_width 2, min_scene_len 15.
"""

from __future__ import annotations

import cv2
import numpy as np

SCORE_WIDTH = 256  # PySceneDetect's effective width for its downscaling
MIN_CONTENT = 15.0
ADAPTIVE_RATIO = 3.0
WINDOW = 2
MIN_SHOT = 15


def _hsv_frames(video: np.ndarray) -> np.ndarray:
    """(F, h, w, 3) int16 HSV of (F, H, W, 3) uint8 RGB frames, shrunk by an integer factor."""
    factor = max(1, video.shape[2] // SCORE_WIDTH)
    out = []
    for frame in video:
        if factor > 1:
            size = (round(frame.shape[1] / factor), round(frame.shape[0] / factor))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        out.append(cv2.cvtColor(frame, cv2.COLOR_RGB2HSV))
    return np.stack(out).astype(np.int16)


def content_scores(video: np.ndarray, gap: int = 1) -> np.ndarray:
    """(F,) ContentDetector score of frame t against frame t-gap (0 for the first `gap` frames)."""
    hsv = _hsv_frames(video)
    scores = np.zeros(len(video))
    if len(video) > gap:
        scores[gap:] = np.abs(hsv[gap:] - hsv[:-gap]).mean(axis=(1, 2, 3))
    return scores


def detect_cuts(video: np.ndarray, *, min_content: float = MIN_CONTENT, ratio: float = ADAPTIVE_RATIO,
                window: int = WINDOW, min_shot: int = MIN_SHOT) -> list[int]:
    """First frames of every shot but the first, ascending: frame c starts a shot when the
    pair (c-1, c) is a cut. A (F, H, W, 3) uint8 video; see the module docstring."""
    if len(video) < 2:
        return []
    scores, skip_one = content_scores(video), content_scores(video, gap=2)
    cuts, last = [], 0
    for t in range(1, len(video)):
        around = np.concatenate([scores[max(1, t - window):t], scores[t + 1:t + 1 + window]])
        base = around.mean() if len(around) else 0.0
        adaptive = scores[t] / base if base > 0 else np.inf
        lasting = (t < 2 or skip_one[t] >= min_content) and (t + 1 >= len(video) or skip_one[t + 1] >= min_content)
        if scores[t] >= min_content and adaptive >= ratio and lasting and t - last >= min_shot:
            cuts.append(t)
            last = t
    return cuts


def shot_bounds(cuts: list[int], num_frames: int) -> list[tuple[int, int]]:
    """[(start, end), ...] of each shot, end exclusive, covering 0..num_frames."""
    edges = [0, *cuts, num_frames]
    return list(zip(edges[:-1], edges[1:]))
