"""Training record of the embedded default model: logs, loss curves, checkpoint scores.

Reads the run directories of scripts/train_default.sh (runs/shapes_vae, runs/default and
its clip-start fine-tune runs/default_start), copies their log.jsonl files into
results/logs/ (runs/ is not committed), and writes results/default_training.json and .png:
the VAE's train/eval PSNR, the DiT's flow-matching loss (the fine-tune's steps counted on
from the base run's last), and the shapes-scorer rates of the DiT checkpoints scored along
the way (runs/<run>/quick/step-*.json, written by `--score`).

    python benchmarks/default_training.py                   # report from the logs so far
    python benchmarks/default_training.py --score [--every 6 --frames 120] [--run start]
        # also export the newest DiT checkpoint and score it on every 6th prompt first
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

from _common import RESULTS, figure, write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAE_RUN = os.path.join(REPO, "runs", "shapes_vae")
DIT_RUN = os.path.join(REPO, "runs", "default")
FT_RUN = os.path.join(REPO, "runs", "default_start")
WHOLE_RUN = os.path.join(REPO, "runs", "default_whole")  # the fine-tune's second stage (shipped)
# how `videogen train` is told each DiT run's config (the fine-tune's names its own data and VAE)
RUN_ARGS = {"base": (DIT_RUN, ["configs/shapes.yaml", f"vae.pretrained={os.path.join(VAE_RUN, 'export-latents')}",
                               f"train.output_dir={DIT_RUN}"]),
            "start": (FT_RUN, ["configs/shapes_start.yaml"])}
LOGS = os.path.join(RESULTS, "logs")


def mean_last_loss(log: list[dict], n: int = 100):
    """Mean loss over a log's last n loss records, or None before the first."""
    losses = [r["loss"] for r in log if "loss" in r][-n:]
    return sum(losses) / len(losses) if losses else None


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def score_newest(every: int, frames: int, workers: int, run: str = "base") -> None:
    """Export the newest DiT checkpoint's EMA pipeline and score it (quick subset), with the
    final VAE decoder once it is done (same encoder and latent space), as ship_default.sh."""
    sys.path.insert(0, REPO)
    from videogen.training.checkpoint import list_checkpoints

    run_dir, train_args = RUN_ARGS[run]
    quick = os.path.join(run_dir, "quick")
    done = list_checkpoints(run_dir)
    if not done:
        print("no DiT checkpoint yet")
        return
    step = done[-1][0]
    name = f"step-{step:06d}"
    if os.path.exists(os.path.join(quick, f"{name}.json")):
        print(f"{name} already scored")
        return
    export = os.path.join(run_dir, "export-now")
    subprocess.run([sys.executable, "-m", "videogen", "train", *train_args, "--export", export,
                    "--resume", done[-1][1]], check=True, cwd=REPO)
    final_vae = os.path.join(VAE_RUN, "export")
    if os.path.exists(os.path.join(final_vae, "config.json")):  # the finished decoder, as shipped
        shutil.rmtree(os.path.join(export, "vae"))
        shutil.copytree(final_vae, os.path.join(export, "vae"), ignore=shutil.ignore_patterns("eval.json"))
    subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "default_quality.py"), "--model", export,
                    "--every", str(every), "--frames", str(frames), "--workers", str(workers),
                    "--name", name, "--out", quick], check=True, cwd=REPO)


def checkpoint_scores(run_dir: str, offset: int = 0) -> list[dict]:
    """Quick scores of a run's checkpoints (not sampler sweeps: step-NNNNNN.json only), at
    step + offset."""
    rows = []
    for path in sorted(glob.glob(os.path.join(run_dir, "quick", "step-" + "[0-9]" * 6 + ".json"))):
        with open(path) as f:
            report = json.load(f)
        rates = report["rates"]
        rows.append({"step": int(os.path.basename(path)[5:11]) + offset, "videos": report["videos"],
                     "frames": report["frames"],
                     **{k: rates["all"][k] for k in ("colour", "shape", "direction", "presence", "moving_at_end")}})
    return rows


def plot(path: str, vae_log: list, dit_log: list, scores: list, ft_log: list, ft_scores: list, offset: int) -> None:
    import numpy as np

    with figure(path, 1, 3, figsize=(15, 4)) as (fig, axes):
        ax = axes[0]
        train = [(r["step"], r["psnr"]) for r in vae_log if "psnr" in r]
        evals = [(r["step"], r["eval_psnr"]) for r in vae_log if "eval_psnr" in r]
        if train:
            ax.plot(*zip(*train), lw=0.6, alpha=0.5, label="train batch")
        if evals:
            ax.plot(*zip(*evals), "o-", label="eval: 64 clips x 33 frames")
        long = [(r["step"], r["eval_psnr_long"]) for r in vae_log if "eval_psnr_long" in r]
        if long:
            ax.plot(*zip(*long), "s-", label="eval: 16 clips x 129 frames")
        ax.axhline(30, color="grey", ls="--", lw=0.8, label="30 dB bar")
        ax.set(xlabel="step", ylabel="PSNR (dB)", title="VAE reconstruction")
        ax.legend(fontsize=7)
        ax = axes[1]
        loss = [(r["step"], r["loss"]) for r in dit_log if "loss" in r]
        if loss:
            steps, values = map(np.asarray, zip(*loss))
            ax.plot(steps, values, lw=0.5, alpha=0.4, label="per log step")
            k = max(1, len(values) // 40)
            smooth = np.convolve(values, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, lw=1.5, label=f"mean of {k}")
            ax.set_yscale("log")
        ft = [(r["step"] + offset, r["loss"]) for r in ft_log if "loss" in r]
        if len(ft) > 1:
            steps, values = map(np.asarray, zip(*ft))
            k = max(1, len(values) // 20)
            ax.plot(steps[k - 1:], np.convolve(values, np.ones(k) / k, mode="valid"), lw=1.5,
                    label=f"clip-start fine-tune from {offset} (latent frames 0-1 only), mean of {k}")
        ax.set(xlabel="step", ylabel="flow-matching MSE", title="PoM DiT training loss")
        if loss:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not started", ha="center", va="center", transform=ax.transAxes)
        ax = axes[2]
        if scores:
            steps = [s["step"] for s in scores]
            for i, key in enumerate(("colour", "shape", "direction", "presence", "moving_at_end")):
                ax.plot(steps, [s[key] if s[key] is not None else np.nan for s in scores], "o-", label=key,
                        color=f"C{i}")
                if ft_scores:
                    ax.plot([s["step"] for s in ft_scores],
                            [s[key] if s[key] is not None else np.nan for s in ft_scores], "s--", color=f"C{i}")
            if ft_scores:
                ax.axvline(offset, color="grey", lw=0.8, ls=":")
                ax.text(offset, 0.02, " fine-tune (squares)", fontsize=7)
        ax.set(xlabel="step", ylabel="share", ylim=(0, 1.05), title="checkpoints, shapes scorer (quick subset)")
        if scores:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no checkpoint scored yet", ha="center", va="center", transform=ax.transAxes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--score", action="store_true", help="score the newest DiT checkpoint first")
    parser.add_argument("--every", type=int, default=6)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--run", choices=sorted(RUN_ARGS), default="base", help="the DiT run --score scores")
    args = parser.parse_args()
    if args.score:
        score_newest(args.every, args.frames, args.workers, args.run)

    vae_log = read_jsonl(os.path.join(VAE_RUN, "log.jsonl"))
    dit_log = read_jsonl(os.path.join(DIT_RUN, "log.jsonl"))
    ft_log = read_jsonl(os.path.join(FT_RUN, "log.jsonl"))
    whole_log = read_jsonl(os.path.join(WHOLE_RUN, "log.jsonl"))
    offset = max((r["step"] for r in dit_log), default=0)
    scores = checkpoint_scores(DIT_RUN)
    ft_scores = checkpoint_scores(FT_RUN, offset)
    os.makedirs(LOGS, exist_ok=True)
    for src, dst in ((os.path.join(VAE_RUN, "log.jsonl"), "vae_log.jsonl"),
                     (os.path.join(DIT_RUN, "log.jsonl"), "dit_log.jsonl"),
                     (os.path.join(FT_RUN, "log.jsonl"), "dit_start_log.jsonl"),
                     (os.path.join(WHOLE_RUN, "log.jsonl"), "dit_whole_log.jsonl"),
                     (os.path.join(VAE_RUN, "eval.json"), "vae_eval.json")):
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(LOGS, dst))
    evals = [r for r in vae_log if "eval_psnr" in r]
    report = {
        "vae": {"steps": max((r["step"] for r in vae_log), default=0),
                "eval_psnr": [(r["step"], round(r["eval_psnr"], 2)) for r in evals],
                "eval_psnr_foreground": [(r["step"], round(r["eval_psnr_foreground"], 2)) for r in evals
                                         if "eval_psnr_foreground" in r],
                "eval_psnr_129_frames": [(r["step"], round(r["eval_psnr_long"], 2)) for r in evals
                                         if "eval_psnr_long" in r],
                "bar_db": 30.0},
        "dit": {"steps": max((r["step"] for r in dit_log), default=0),
                "loss_last_100_logs": mean_last_loss(dit_log),
                "checkpoint_scores": scores},
        "dit_start": {"steps": max((r["step"] for r in ft_log), default=0), "from_base_step": offset,
                      "loss_last_100_logs": mean_last_loss(ft_log), "checkpoint_scores": ft_scores},
        "dit_whole": {"steps": max((r["step"] for r in whole_log), default=0),
                      "loss_last_100_logs": mean_last_loss(whole_log)},
        "logs": "results/logs/ (copies of runs/*/log.jsonl)",
    }
    print(write_report("default_training", report,
                       lambda p: plot(p, vae_log, dit_log, scores, ft_log, ft_scores, offset)))


if __name__ == "__main__":
    main()
