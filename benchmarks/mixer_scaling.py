"""Block-causal self-mixer scaling: PoM vs SDPA attention, forward + backward.

Width 256, 256 tokens per frame, N = 1,024 .. 16,384 tokens (4 .. 64 frames). Each
(mixer, N) runs in its own process (so peak RSS is its own), interleaved PoM/attention at
every N so both see the same machine load; time is the median of a few repeats.

    python benchmarks/mixer_scaling.py            # writes results/mixer_scaling.{json,png}

Bars (issue 3): time(PoM)/time(attention) <= 0.125 at N = 16,384 and
time(PoM, 16,384)/time(PoM, 4,096) <= 4.5 (linear).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from _common import figure, write_report

DIM, TOKENS_PER_FRAME = 256, 256
# Steady state is what a training loop sees; the first runs of a process also pay for
# page faults while glibc grows its heap (measured: 10-30% of a step at N >= 8k).
WARMUP = 2


def worker(mixer: str, n_tokens: int, repeats: int) -> dict:
    import torch

    from videogen.models.mixers import make_mixer

    torch.manual_seed(0)
    layer = make_mixer(mixer, DIM, degree=2, expand=2, heads=4)
    frames = n_tokens // TOKENS_PER_FRAME
    x = torch.randn(1, n_tokens, DIM, requires_grad=True)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(WARMUP + repeats):  # warm-up runs let the heap reach its steady size
        start = time.perf_counter()
        layer.block_causal(x, frames)[0].square().mean().backward()
        elapsed = time.perf_counter() - start
        if i >= WARMUP:
            times.append(elapsed)
        x.grad = None
        layer.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times.sort()
    return {"mixer": mixer, "tokens": n_tokens, "frames": frames, "times_s": times,
            "median_s": times[len(times) // 2], "peak_rss_mb": peak / 1024,
            "peak_rss_added_mb": (peak - base_rss) / 1024}


def run_one(mixer: str, n_tokens: int, repeats: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", mixer, str(n_tokens), str(repeats)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(rows: list, path: str) -> None:
    with figure(path, 1, 2, figsize=(10, 4), dpi=110) as (fig, (ax_t, ax_m)):
        for mixer, style in (("pom", "o-"), ("attention", "s--")):
            sel = [r for r in rows if r["mixer"] == mixer]
            ns = [r["tokens"] for r in sel]
            ax_t.loglog(ns, [r["median_s"] for r in sel], style, label=mixer, base=2)
            ax_m.loglog(ns, [r["peak_rss_added_mb"] for r in sel], style, label=mixer, base=2)
        ax_t.set(xlabel="tokens N", ylabel="forward+backward time (s)", title="block-causal self-mixer, D=256")
        ax_m.set(xlabel="tokens N", ylabel="peak memory added (MB)", title="peak RSS over the idle process")
        for ax in (ax_t, ax_m):
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=3, metavar=("MIXER", "N", "REPEATS"), help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        mixer, n, reps = args.worker
        print(json.dumps(worker(mixer, int(n), int(reps))))
        return
    rows = []
    for n in args.tokens:
        for mixer in ("pom", "attention"):
            row = run_one(mixer, n, args.repeats)
            rows.append(row)
            print(f"{mixer:9s} N={n:6d}  {row['median_s']:.3f}s  +{row['peak_rss_added_mb']:.0f} MB", flush=True)
    by = {(r["mixer"], r["tokens"]): r for r in rows}
    ratios = {n: by[("pom", n)]["median_s"] / by[("attention", n)]["median_s"] for n in args.tokens}
    top = max(args.tokens)
    summary = {
        "time_ratio_pom_over_attention": {str(n): round(v, 4) for n, v in ratios.items()},
        "pom_time_ratio_16384_over_4096": (by[("pom", 16384)]["median_s"] / by[("pom", 4096)]["median_s"]
                                           if ("pom", 16384) in by and ("pom", 4096) in by else None),
        "memory_ratio_pom_over_attention_at_max_N": by[("pom", top)]["peak_rss_added_mb"]
        / max(by[("attention", top)]["peak_rss_added_mb"], 1e-9),
    }
    summary["bars"] = {
        "pom_over_attention_at_16384_le_0.125": ratios.get(16384, float("inf")) <= 0.125,
        "pom_16384_over_4096_le_4.5": (summary["pom_time_ratio_16384_over_4096"] or float("inf")) <= 4.5,
    }
    report = {"dim": DIM, "tokens_per_frame": TOKENS_PER_FRAME, "degree": 2, "expand": 2, "heads": 4,
              "warmup_runs": WARMUP, "repeats": args.repeats, "statistic": "median of the repeats", "summary": summary, "rows": rows}
    write_report("mixer_scaling", report, lambda png: plot(rows, png))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
