"""Evaluation reports: the printed tables and the per-frame curves as a plot.

Each takes the reports of `metrics.evaluate_video` (one dict per video); plots are written
atomically (utils/atomic), so an interrupted run keeps the previous output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from videogen.evaluation.metrics import DRIFT_WINDOW
from videogen.utils import atomic


# Summary rows of the printed table: key, label, format.
SUMMARY_ROWS = (
    ("shots", "shots (scene cuts + 1)", "{:d}"),
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


def format_shift(shift: dict) -> str:
    """'x-0.46' or 'x+0.01 y-0.02': the signed off-axis shift of the last window, of the width."""
    return " ".join(f"{axis}{_cell(v, '{:+.2f}')}" for axis, v in shift.items()) or "-"


def format_drift_table(reports: list[dict], rates: dict) -> str:
    """Per-video long-video drift (last window vs first) and the shares of videos within the bars."""
    lines = [f"{'video':<20} {'window':>6} {'area':>6} {'sharp':>6} {'wander':>6} {'shift':>13} {'purity':>9} "
             f"{'ghost':>5} {'col+shp':>7} {'moving@end':>10}   (last window vs first; wander: max, of width; "
             "shift: signed, + right / down)"]
    for r in reports:
        d = r["drift"]
        purity = f"{_cell(d['purity_first'], '{:.2f}')}->{_cell(d['purity_last'], '{:.2f}')}"
        moving = "-" if d["moving_at_end"] is None else str(d["moving_at_end"])
        lines.append(f"{Path(r['video']).name[:20]:<20} {d['window']:>6} {_cell(d['area_ratio'], '{:.2f}'):>6} "
                     f"{_cell(d['sharpness_ratio'], '{:.2f}'):>6} {_cell(d['wander'], '{:.3f}'):>6} "
                     f"{format_shift(d['off_axis_shift']):>13} {purity:>9} "
                     f"{'yes' if d['ghost'] else 'no':>5} {'ok' if d['colour_shape_ok'] else 'no':>7} {moving:>10}")
    bars, limits = rates["bars"], rates["limits"]
    names = {"colour_shape": "col+shp", "area_sharpness": "area+sharp", "wander": "wander", "moving": "moving"}
    header = "  ".join(f"{names[k]:>10}" for k in bars)
    lines += ["", f"{'drift':<10} {'videos':>6}  {header}  {'ghost':>5}  bars",
              f"{'bars':<10} {'':>6}  " + "  ".join(f"{'>= ' + format(b, '.2f'):>10}" for b in bars.values())]
    for group in ("all", "held_out", "seen"):
        g = rates[group]
        if g["videos"]:
            cells = "  ".join(f"{_cell(g[k], '{:.2f}'):>10}" for k in bars)
            lines.append(f"{group:<10} {g['videos']:>6}  {cells}  {g['ghost']:>5.2f}  "
                         f"{'pass' if g['passes_bars'] else 'FAIL'}")
    area = limits["area_ratio"]
    lines.append(f"(shares of videos: colour and shape right in every window; area last/first {area[0]}-{area[1]} "
                 f"and sharpness >= {limits['min_sharpness_ratio']}; off-axis wander <= {limits['max_wander']} "
                 "of the width; moving prompts still moving in the last window; ghost in any window)")
    return "\n".join(lines)


def _mark_cuts(axes, cuts: list, colour) -> None:
    """A dotted line at each scene cut (x = the new shot's first frame, where its pair's
    spike is), on every panel; labelled once, in the first panel's legend."""
    for ax in axes:
        for i, cut in enumerate(cuts):
            ax.axvline(cut, color=colour, linestyle=":", alpha=0.7,
                       label="scene cut (left out of the summary)" if ax is axes[0] and i == 0 else None)


def plot_curves(reports: list[dict], out: str) -> None:
    """Per-frame curves of one or more videos into one PNG: frame difference, SSIM,
    flow magnitude and drift, with the scene cuts marked."""
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
        _mark_cuts(axes, r.get("cuts", []), line.get_color())
        axes[3].plot(c["drift_frame"], np.array(c["drift_brightness"]) / 255, marker="s", linestyle="--",
                     color=line.get_color(), label=f"{name}: brightness / 255")
    for ax, (_, _, label) in zip(axes, panels):
        ax.set_ylabel(label)
    axes[3].set_ylabel(f"drift vs first {DRIFT_WINDOW} frames")
    axes[3].set_xlabel("frame")
    axes[3].legend(fontsize="small")
    if len(reports) > 1 or any(r.get("cuts") for r in reports):
        axes[0].legend(fontsize="small")
    for ax in axes:
        ax.grid(alpha=0.3)
    title = Path(reports[0]["video"]).name if len(reports) == 1 else f"{len(reports)} videos"
    fig.suptitle(f"temporal consistency: {title}")
    fig.tight_layout()
    try:
        with atomic.atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)

