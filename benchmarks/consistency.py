"""Temporal consistency of 240-frame videos: the PoM model vs the attention baseline.

Both pipelines have the same size and config (configs/tiny.yaml at 64x64), differing only
in `model.mixer`. Where trained pipelines exist, pass them with --pom/--attention; otherwise
small random pipelines are made (seed 0, zero-initialised branches opened by noise), which
measures how each mixer's untrained dynamics hold up over 240 frames, not quality.
Each generates the same prompts with the same seeds; `videogen.evaluation.metrics` scores them side by
side, and the drift curves go into one PNG.

    python benchmarks/consistency.py [--pom DIR --attention DIR] [--frames 240]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from _common import figure, write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["a red circle moving right", "a blue square moving up"]
OPEN_STD = 0.05
SUMMARY_KEYS = ("flicker", "warping_error", "motion_smoothness", "dynamic_degree", "ssim", "psnr",
                "drift_hist_slope", "drift_brightness_slope")


def make_pipeline(directory: str, mixer: str) -> str:
    """A random pipeline whose DiT actually acts: a fresh DiT is AdaLN-zero initialised and
    predicts zero velocity, so every video would be the same decoded noise. Every parameter
    gets N(0, OPEN_STD) added (seeded), which opens the residual branches."""
    import torch

    from videogen.models.dit import PoMVideoDiT
    from videogen.training.components import init_pipeline

    init_pipeline(directory, config=os.path.join(REPO, "configs", "tiny.yaml"),
                  overrides=["data.size=64", f"model.mixer={mixer}"], seed=0)
    path = os.path.join(directory, "transformer")
    model = PoMVideoDiT.from_pretrained(path)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(OPEN_STD * torch.randn(p.shape, generator=gen))
    model.save_pretrained(path)
    return directory


def plot(reports: dict, path: str) -> None:
    with figure(path, 1, 2, figsize=(11, 4), dpi=110) as (fig, (ax_h, ax_b)):
        for (mixer, prompt), rep in reports.items():
            c = rep["curves"]
            style = "-" if mixer == "pom" else "--"
            ax_h.plot(c["drift_frame"], c["drift_hist"], style, marker=".", label=f"{mixer}: {prompt}")
            ax_b.plot(c["drift_frame"], c["drift_brightness"], style, marker=".", label=f"{mixer}: {prompt}")
        ax_h.set(xlabel="frame (window start)", ylabel="colour-histogram distance to first window", title="colour drift")
        ax_b.set(xlabel="frame (window start)", ylabel="mean brightness change (0-255)", title="brightness drift")
        for ax in (ax_h, ax_b):
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pom", default=None, help="a trained PoM pipeline directory")
    parser.add_argument("--attention", default=None, help="a trained attention pipeline of the same size")
    parser.add_argument("--frames", type=int, default=240)
    args = parser.parse_args()

    from tqdm import tqdm

    from videogen.evaluation.metrics import evaluate_video
    from videogen.pipelines.pipeline import generate_to_file

    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"pom": args.pom or make_pipeline(os.path.join(tmp, "pom"), "pom"),
                  "attention": args.attention or make_pipeline(os.path.join(tmp, "attention"), "attention")}
        jobs = [(mixer, prompt) for prompt in PROMPTS for mixer in ("pom", "attention")]
        for mixer, prompt in tqdm(jobs, desc="videos"):
            video = os.path.join(tmp, f"{mixer}-{len(reports)}.mp4")
            generate_to_file(prompt, video, args.frames, model=models[mixer], seed=0, threads=1, progress=False)
            reports[(mixer, prompt)] = evaluate_video(video, prompt)
    rows = [{"mixer": m, "prompt": p, **{k: r["summary"].get(k) for k in SUMMARY_KEYS}, "curves": r["curves"]}
            for (m, p), r in reports.items()]
    means = {m: {k: sum(r[k] for r in rows if r["mixer"] == m) / len(PROMPTS) for k in SUMMARY_KEYS
                 if all(r[k] is not None for r in rows if r["mixer"] == m)} for m in ("pom", "attention")}
    report = {"frames": args.frames, "trained": bool(args.pom and args.attention),
              "models": {m: getattr(args, m) or f"random tiny (configs/tiny.yaml, 64x64, seed 0, "
                         f"every parameter + N(0, {OPEN_STD}))" for m in ("pom", "attention")},
              "mean": means, "rows": rows}
    write_report("consistency", report, lambda png: plot(reports, png))
    print(json.dumps(means, indent=2))


if __name__ == "__main__":
    main()
