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
- optional: the shapes-world check of a video against its prompt (`shapes_scorer`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from videogen.errors import UsageError
from videogen.evaluation.shapes_scorer import aggregate, score_video
from videogen.data.shapes import parse_prompt
from videogen.data.video_io import VideoReadError, default_mode, read_video

FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
FB_ALPHA, FB_BETA = 0.01, 0.5  # forward-backward consistency (Sundaram et al. 2010)
DYNAMIC_TOP_SHARE = 0.05  # per pair, the mean of the largest 5% flow magnitudes ...
DYNAMIC_THRESHOLD = 0.01  # ... must exceed this share of the shorter side, in pixels
DRIFT_WINDOW = 8
PSNR_CAP = 100.0
VIDEO_EXTENSIONS = (".mp4", ".gif", ".mov", ".mkv", ".avi", ".webm")


# ---------------------------------------------------------------------------- metrics
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
    magnitude = np.linalg.norm(forward, axis=-1).reshape(len(forward), -1)
    k = max(1, int(DYNAMIC_TOP_SHARE * magnitude.shape[1]))
    top = -np.sort(-magnitude, axis=1)[:, :k].mean(axis=1)
    threshold = DYNAMIC_THRESHOLD * min(video.shape[1:3])
    return float((top > threshold).mean()), float(magnitude.mean()), top


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


# ------------------------------------------------------------ optional model scores
def _load_pretrained(kind: str, model_dir: str, load):
    if not os.path.isdir(model_dir):
        raise UsageError(f"--{kind} {model_dir}: no such directory; pass a local model directory")
    try:
        return load()
    except (OSError, ValueError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"--{kind} {model_dir}: cannot load a model from it ({reason}); "
                         "pass a directory written by save_pretrained") from None


def _pooled(output):
    """transformers 4 returns feature tensors, transformers 5 a model output."""
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    """Cosine similarity of a prompt and each frame, with a local CLIPModel directory."""

    def __init__(self, model_dir: str, batch: int = 32):
        from transformers import CLIPModel, CLIPProcessor

        def load():
            return CLIPModel.from_pretrained(model_dir).eval(), CLIPProcessor.from_pretrained(model_dir)

        self.model, self.processor = _load_pretrained("clip", model_dir, load)
        self.batch = batch

    def __call__(self, video: np.ndarray, prompt: str) -> np.ndarray:
        """(F,) cosine similarity of the prompt to each frame."""
        import torch

        with torch.no_grad():
            text = self.processor(text=[prompt], return_tensors="pt", padding=True, truncation=True)
            t = _pooled(self.model.get_text_features(**text))
            t = t / t.norm(dim=-1, keepdim=True)
            sims = []
            for i in range(0, len(video), self.batch):
                pixels = self.processor(images=list(video[i:i + self.batch]), return_tensors="pt")
                f = _pooled(self.model.get_image_features(pixel_values=pixels["pixel_values"]))
                sims.append((f / f.norm(dim=-1, keepdim=True)) @ t[0])
        return torch.cat(sims).numpy()


class DinoScorer:
    """Subject consistency: cosine of each frame's CLS feature to the first and previous frame's."""

    def __init__(self, model_dir: str, batch: int = 32):
        from transformers import AutoImageProcessor, AutoModel

        def load():
            return AutoModel.from_pretrained(model_dir).eval(), AutoImageProcessor.from_pretrained(model_dir)

        self.model, self.processor = _load_pretrained("dino", model_dir, load)
        self.batch = batch

    def __call__(self, video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((F-1,) cosine to the first frame, (F-1,) cosine to the previous frame), frames 1.."""
        import torch

        with torch.no_grad():
            feats = []
            for i in range(0, len(video), self.batch):
                pixels = self.processor(images=list(video[i:i + self.batch]), return_tensors="pt")
                feats.append(self.model(pixel_values=pixels["pixel_values"]).last_hidden_state[:, 0])
            f = torch.cat(feats)
            f = f / f.norm(dim=-1, keepdim=True)
        return (f[1:] @ f[0]).numpy(), (f[1:] * f[:-1]).sum(-1).numpy()


# ---------------------------------------------------------------------------- reports
def evaluate_frames(video: np.ndarray, prompt: str | None = None, *, shapes: bool = False,
                    clip: ClipScorer | None = None, dino: DinoScorer | None = None) -> dict:
    """Every metric of a (F, H, W, 3) uint8 video: {"summary": {...}, "curves": {...}}.

    `shapes` adds the shapes-world check against `prompt` under "shapes"; `clip` and
    `dino` add model scores (CLIP needs `prompt`).
    """
    flows = compute_flows(video)
    mad = frame_mad(video)
    warp_err, warp_curve, occluded = warping_error(video, flows)
    smooth_err, smooth_score, smooth_curve = motion_smoothness(video)
    dyn, flow_mag, flow_curve = dynamic_degree(video, flows)
    ssims = np.array([ssim(video[t], video[t + 1]) for t in range(len(video) - 1)])
    psnrs = np.array([psnr(video[t], video[t + 1]) for t in range(len(video) - 1)])
    dr = drift(video)

    def mean(x):
        return float(np.mean(x)) if len(x) else None

    summary = {
        "flicker": flicker_score(video), "mad": mean(mad),
        "warping_error": warp_err, "occluded": mean(occluded),
        "motion_smoothness": smooth_score, "smoothness_error": smooth_err,
        "dynamic_degree": dyn, "flow_magnitude": flow_mag,
        "ssim": mean(ssims), "psnr": mean(psnrs),
        "drift_hist_slope": dr["hist_slope"], "drift_brightness_slope": dr["brightness_slope"],
        "drift_hist_end": float(dr["hist"][-1]), "drift_brightness_end": float(dr["brightness"][-1]),
    }
    curves = {
        "pair_frame": np.arange(1, len(video)), "mad": mad, "ssim": ssims, "psnr": psnrs,
        "flow_top": flow_curve, "warping_error": warp_curve,
        "smoothness_frame": np.arange(1, len(video) - 1), "smoothness_error": smooth_curve,
        "drift_frame": dr["frames"], "drift_hist": dr["hist"], "drift_brightness": dr["brightness"],
    }
    if clip is not None:
        if not prompt:
            raise ValueError("a CLIP score needs the video's prompt")
        curves["clip"] = clip(video, prompt)
        summary["clip_score"] = mean(curves["clip"])
    if dino is not None:
        curves["dino_first"], curves["dino_prev"] = dino(video)
        summary["dino_first"], summary["dino_prev"] = mean(curves["dino_first"]), mean(curves["dino_prev"])
    report = {"frames": len(video), "height": video.shape[1], "width": video.shape[2], "prompt": prompt,
              "summary": summary, "curves": {k: np.asarray(v).tolist() for k, v in curves.items()}}
    if shapes:
        report["shapes"] = score_video(video, prompt)
    return report


def evaluate_video(path: str, prompt: str | None = None, *, shapes: bool = False,
                   clip: ClipScorer | None = None, dino: DinoScorer | None = None) -> dict:
    """`evaluate_frames` of a video file, GIF or frame directory, with "video": path.

    Raises VideoReadError (a UsageError) naming the file if it cannot be read.
    """
    video = read_video(str(path))
    return {"video": str(path), **evaluate_frames(video, prompt, shapes=shapes, clip=clip, dino=dino)}


# Summary rows of the printed table: key, label, format.
SUMMARY_ROWS = (
    ("flicker", "flicker score (1 = still)", "{:.4f}"),
    ("mad", "mean |frame diff| (0-255)", "{:.2f}"),
    ("warping_error", "warping error (MSE, 0-1)", "{:.5f}"),
    ("occluded", "occluded share", "{:.3f}"),
    ("motion_smoothness", "motion smoothness (1 = ideal)", "{:.4f}"),
    ("dynamic_degree", "dynamic degree", "{:.2f}"),
    ("flow_magnitude", "mean flow magnitude (px)", "{:.3f}"),
    ("ssim", "SSIM consecutive", "{:.4f}"),
    ("psnr", "PSNR consecutive (dB)", "{:.2f}"),
    ("drift_hist_slope", "histogram drift /100 frames", "{:+.4f}"),
    ("drift_brightness_slope", "brightness drift /100 frames", "{:+.2f}"),
    ("clip_score", "CLIP text-frame similarity", "{:.4f}"),
    ("dino_first", "DINO similarity to first", "{:.4f}"),
    ("dino_prev", "DINO similarity to previous", "{:.4f}"),
)


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def format_table(reports: list[dict]) -> str:
    """Summary metrics as a table: one row per metric, one column per video."""
    names = [Path(r["video"]).name[:24] for r in reports]
    widths = [max(10, len(n)) for n in names]
    rows = [k for k in SUMMARY_ROWS if any(k[0] in r["summary"] for r in reports)]
    lines = ["metric".ljust(30) + "  ".join(n.rjust(w) for n, w in zip(names, widths))]
    for key, label, fmt in rows:
        cells = [_cell(r["summary"].get(key), fmt).rjust(w) for r, w in zip(reports, widths)]
        lines.append(label.ljust(30) + "  ".join(cells))
    return "\n".join(lines)


def format_shapes_table(reports: list[dict], rates: dict) -> str:
    """Per-video shapes check (detected value, or 'ok') and aggregate rates vs the bars."""
    def mark(row, key, field):
        return "ok" if row[f"{key}_ok"] else f"{row['detected'][field] or 'none'}!"

    lines = [f"{'video':<20} {'prompt':<42} {'colour':>8} {'shape':>9} {'motion':>15} "
             f"{'present':>7} {'moving@end':>10} {'colour drift':>12} {'background':>10}"]
    for r in reports:
        s = r["shapes"]
        drift_cell = _cell(s["colour_drift"], "{:.1f}")
        background = f"{s['background_start']:.0f}->{s['background_end']:.0f}"
        lines.append(f"{Path(r['video']).name[:20]:<20} {s['prompt'][:42]:<42} {mark(s, 'colour', 'colour'):>8} "
                     f"{mark(s, 'shape', 'shape'):>9} {mark(s, 'direction', 'motion'):>15} "
                     f"{s['presence']:>7.2f} {str(s['moving_at_end']):>10} {drift_cell:>12} {background:>10}")
    bars = rates["bars"]
    lines.append("")
    lines.append(f"{'rates':<10} {'videos':>6} " + " ".join(f"{k + ' >=' + format(b, '.2f'):>17}"
                                                          for k, b in bars.items()) + "  bars")
    for group in ("all", "held_out", "seen"):
        g = rates[group]
        if not g["videos"]:
            continue
        cells = " ".join(f"{g[k]:>17.2f}" for k in bars)
        lines.append(f"{group:<10} {g['videos']:>6} {cells}  {'pass' if g['passes_bars'] else 'FAIL'}")
    return "\n".join(lines)


def plot_curves(reports: list[dict], out: str) -> None:
    """Per-frame curves of one or more videos into one PNG: frame difference, SSIM,
    flow magnitude and drift."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    panels = (("pair_frame", "mad", "mean |frame t - frame t-1|\n(flicker; 0-255)"),
              ("pair_frame", "ssim", "SSIM(frame t-1, frame t)"),
              ("pair_frame", "flow_top", "flow magnitude, top 5%\n(px per frame)"))
    for r in reports:
        name, c = Path(r["video"]).name, r["curves"]
        for ax, (x, y, _) in zip(axes, panels):
            ax.plot(c[x], c[y], marker=".", label=name)
        line, = axes[3].plot(c["drift_frame"], c["drift_hist"], marker="o", label=f"{name}: colour histogram")
        axes[3].plot(c["drift_frame"], np.array(c["drift_brightness"]) / 255, marker="s", linestyle="--",
                     color=line.get_color(), label=f"{name}: brightness / 255")
    for ax, (_, _, label) in zip(axes, panels):
        ax.set_ylabel(label)
    axes[3].set_ylabel(f"drift vs first {DRIFT_WINDOW} frames")
    axes[3].set_xlabel("frame")
    axes[3].legend(fontsize="small")
    if len(reports) > 1:
        axes[0].legend(fontsize="small")
    for ax in axes:
        ax.grid(alpha=0.3)
    title = Path(reports[0]["video"]).name if len(reports) == 1 else f"{len(reports)} videos"
    fig.suptitle(f"temporal consistency: {title}")
    fig.tight_layout()
    _write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def _write_atomic(path: str, write) -> None:
    """Call write(tmp_path) for a temporary file beside `path`, then rename it to `path`."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-",
                                   suffix=os.path.splitext(path)[1], dir=directory)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror}; choose another path") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# -------------------------------------------------------------------------------- CLI
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
            with open(meta, newline="") as fh:
                items += [(os.path.join(p, row["video"]), row["caption"]) for row in csv.DictReader(fh)]
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
        with open(file) as fh:
            lines = [line.rstrip("\n") for line in fh if line.strip() and not line.startswith("#")]
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


def _resolve(args) -> list[tuple[str, str | None]]:
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


def evaluate_cli(args) -> None:
    """`videogen eval`: score every video, write the table/JSON/plots, then report failures.

    Unreadable videos are reported one line each and skipped; the others are scored
    and written, then a UsageError (exit status 2) names the failures.
    """
    from tqdm import tqdm

    items = _resolve(args)
    if args.plot and not args.plot.lower().endswith((".png", ".pdf", ".svg")):
        raise UsageError(f"--plot {args.plot}: the plot must end in .png, .pdf or .svg")
    clip = ClipScorer(args.clip) if args.clip else None
    dino = DinoScorer(args.dino) if args.dino else None
    reports, failed = [], []
    for video, prompt in tqdm(items, desc="eval", unit="video", disable=None):
        try:
            reports.append(evaluate_video(video, prompt, shapes=args.shapes, clip=clip, dino=dino))
        except VideoReadError as err:
            failed.append({"video": video, "error": str(err)})
            tqdm.write(f"videogen eval: {err}", file=sys.stderr)
    result = {"videos": reports, "failed": failed}
    if args.shapes:
        result["shapes"] = aggregate([r["shapes"] for r in reports])

    if args.json:
        _write_atomic(args.json, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
        print(f"wrote {args.json}")
    elif reports:
        groups = [reports] if args.compare else [[r] for r in reports]
        print("\n\n".join(format_table(g) for g in groups))
        if args.shapes:
            print("\n" + format_shapes_table(reports, result["shapes"]))
    if args.plot and reports:
        if args.compare or len(reports) == 1:
            plot_curves(reports, args.plot)
        else:  # one file per video: curves-000-name.png, ...
            stem, suffix = os.path.splitext(args.plot)
            for i, r in enumerate(reports):
                plot_curves([r], f"{stem}-{i:03d}-{Path(r['video']).stem}{suffix}")
    if failed:
        names = ", ".join(f["video"] for f in failed)
        raise UsageError(f"{len(failed)} of {len(items)} videos could not be read ({names}); "
                         "the others were scored")
