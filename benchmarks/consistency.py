"""Temporal consistency of 240-frame videos: the PoM model vs the attention baseline.

Both pipelines have the same size and config (configs/tiny.yaml at 64x64), differing only
in `model.mixer`. Where trained pipelines exist, pass them with --pom/--attention; otherwise
the same small random pipelines are made (seed 0), which measures the machinery, not quality.
Each generates the same prompts with the same seeds; `videogen.evaluate` scores them side by
side, and the drift curves go into one PNG.

    python benchmarks/consistency.py [--pom DIR --attention DIR] [--frames 240]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
PROMPTS = ["a red circle moving right", "a blue square moving up"]
SUMMARY_KEYS = ("flicker", "warping_error", "motion_smoothness", "dynamic_degree", "ssim", "psnr",
                "drift_hist_slope", "drift_brightness_slope")


def make_pipeline(directory: str, mixer: str) -> str:
    from videogen.pipeline import init_pipeline

    init_pipeline(directory, config=os.path.join(REPO, "configs", "tiny.yaml"),
                  overrides=["data.size=64", f"model.mixer={mixer}"], seed=0)
    return directory


def plot(reports: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_h, ax_b) = plt.subplots(1, 2, figsize=(11, 4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pom", default=None, help="a trained PoM pipeline directory")
    parser.add_argument("--attention", default=None, help="a trained attention pipeline of the same size")
    parser.add_argument("--frames", type=int, default=240)
    args = parser.parse_args()

    from tqdm import tqdm

    from videogen.evaluate import evaluate_video
    from videogen.pipeline import generate_to_file

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
    report = {"benchmark": "consistency", "frames": args.frames, "trained": bool(args.pom and args.attention),
              "models": {"pom": args.pom or "random tiny (configs/tiny.yaml, 64x64, seed 0)",
                         "attention": args.attention or "random tiny (configs/tiny.yaml, 64x64, seed 0)"},
              "mean": means, "rows": rows}
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "consistency.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(path + ".tmp", path)
    plot(reports, os.path.join(RESULTS, "consistency.png"))
    print(json.dumps(means, indent=2))


if __name__ == "__main__":
    main()
