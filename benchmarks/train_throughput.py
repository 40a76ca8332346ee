"""Training throughput and memory: PoM vs the attention baseline at equal width and depth.

One training step is what `videogen train` does per micro-batch: the diffusion-forcing
flow loss (`videogen.training.dit_task.flow_loss`), backward, gradient clipping, AdamW. The two
models differ only in `model.mixer` (pom | attention); latents are random (the VAE and
text encoder are frozen in training, so they are not part of the step).

    python benchmarks/train_throughput.py        # ~3 minutes on 2 CPU cores
    python benchmarks/train_throughput.py --device cuda --dim 512 --depth 8 --frames 9 17 33 65

Time: one process times every (mixer, frames) pair once per round, rounds interleaved,
so a slow spell of a shared machine hits all pairs alike; steps/s is from the fastest
round (the least disturbed; other processes only ever add time), the median is kept too. Memory: each pair runs in its own process: peak RSS over one step, and its
growth over the resting RSS (model + optimizer state); on CUDA, max_memory_allocated.
On any device also the activations saved for backward (exact, saved_tensors_hooks).
Writes results/train_throughput.json and results/train_throughput.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

from _common import figure

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
MIXERS = ("pom", "attention")


def build(args, mixer: str):
    """(model, optimizer, step function) for one mixer, seeded."""
    import torch

    from videogen.training.config import load_config
    from videogen.models.dit import PoMVideoDiT
    from videogen.training.dit_task import flow_loss

    cfg = load_config(None, [f"model.dim={args.dim}", f"model.depth={args.depth}", f"model.mixer={mixer}",
                             f"model.heads={args.heads}"])
    torch.manual_seed(0)
    model = PoMVideoDiT(in_channels=args.channels, text_dim=args.text_dim, mixer=mixer, dim=args.dim,
                        depth=args.depth, heads=args.heads).to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def inputs(frames: int):
        g = torch.Generator(device=args.device).manual_seed(frames)
        kw = dict(generator=g, device=args.device)
        latents = torch.randn(args.batch, args.channels, frames, args.latent_size, args.latent_size, **kw)
        text = torch.randn(args.batch, args.text_len, args.text_dim, **kw)
        return latents, text, torch.ones(args.batch, args.text_len, dtype=torch.bool, device=args.device), g

    def step(frames: int):
        latents, text, mask, g = inputs(frames)
        loss = flow_loss(model, latents, text, mask, cfg, g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def saved_bytes(frames: int) -> int:
        """Bytes of activations autograd keeps for backward (parameters excluded)."""
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return t

        latents, text, mask, g = inputs(frames)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = flow_loss(model, latents, text, mask, cfg, g)
        loss.backward()
        optimizer.zero_grad(set_to_none=True)
        return sum(seen.values())

    return model, step, saved_bytes


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------ time
def time_all(args) -> list:
    import torch

    torch.set_num_threads(args.threads)
    runs = {mixer: build(args, mixer) for mixer in MIXERS}
    for mixer, (_, step, _) in runs.items():  # warm-up: allocator, kernels, optimizer state
        for frames in args.frames:
            step(frames)
    times = {(m, f): [] for m in MIXERS for f in args.frames}
    for r in range(args.rounds):
        for frames in args.frames:
            for mixer in (MIXERS if r % 2 == 0 else MIXERS[::-1]):  # alternate who goes first
                step = runs[mixer][1]
                sync(args.device)
                start = time.perf_counter()
                for _ in range(args.steps):
                    step(frames)
                sync(args.device)
                times[(mixer, frames)].append((time.perf_counter() - start) / args.steps)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{m}@{f}={times[(m, f)][-1]:.3f}s" for f in args.frames for m in MIXERS), flush=True)
    params = {m: sum(p.numel() for p in runs[m][0].parameters()) for m in MIXERS}
    return [{"mixer": m, "latent_frames": f, "tokens": f * (args.latent_size // 2) ** 2, "params": params[m],
             "step_s_min": min(times[(m, f)]), "step_s_median": statistics.median(times[(m, f)]),
             "step_s_all": times[(m, f)], "steps_per_s": 1.0 / min(times[(m, f)])}
            for f in args.frames for m in MIXERS]


# ---------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def memory_worker(args) -> dict:
    """Run in a child process: memory of one (mixer, frames) training step."""
    import torch

    torch.set_num_threads(args.threads)
    mixer, frames = args.worker_mixer, args.worker_frames
    _, step, saved_bytes = build(args, mixer)
    step(frames)  # optimizer state and allocator pools exist from here on
    out = {"mixer": mixer, "latent_frames": frames, "saved_activations_mib": saved_bytes(frames) / 2**20}
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        resting = torch.cuda.memory_allocated()
        step(frames)
        peak = torch.cuda.max_memory_allocated()
        out.update(peak_mib=peak / 2**20, step_growth_mib=(peak - resting) / 2**20, kind="cuda max_memory_allocated")
    else:
        resting = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:  # reset the peak-RSS counter (VmHWM)
            f.write("5")
        step(frames)
        peak = _status_kib("VmHWM")
        out.update(peak_mib=peak / 1024, step_growth_mib=(peak - resting) / 1024, kind="peak RSS (VmHWM)")
    return out


def memory_all(args) -> list:
    rows = []
    for frames in args.frames:
        for mixer in MIXERS:
            cmd = [sys.executable, os.path.abspath(__file__), *passthrough(args),
                   "--worker-mixer", mixer, "--worker-frames", str(frames)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"memory {mixer}@{frames}: peak {rows[-1]['peak_mib']:.0f} MiB, "
                  f"saved activations {rows[-1]['saved_activations_mib']:.1f} MiB", flush=True)
    return rows


def passthrough(args) -> list:
    return ["--dim", str(args.dim), "--depth", str(args.depth), "--heads", str(args.heads),
            "--batch", str(args.batch), "--latent-size", str(args.latent_size), "--device", args.device,
            "--threads", str(args.threads)]


# ------------------------------------------------------------------------------ report
def plot(result: dict, path: str) -> None:
    with figure(path, 1, 3, figsize=(14, 4), dpi=110) as (fig, axes):
        panels = (("steps_per_s", "training steps / s", result["time"]),
                  ("saved_activations_mib", "activations saved for backward (MiB)", result["memory"]),
                  ("peak_mib", f"peak memory (MiB, {result['memory'][0]['kind']})", result["memory"]))
        for ax, (key, label, rows) in zip(axes, panels):
            for mixer, style in zip(MIXERS, ("o-", "s--")):
                pts = sorted((r["latent_frames"], r[key]) for r in rows if r["mixer"] == mixer)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=mixer)
            ax.set_xlabel("latent frames per clip")
            ax.set_ylabel(label)
            ax.set_xticks(sorted({r["latent_frames"] for r in rows}))
            ax.grid(alpha=0.3)
            ax.legend()
        s = result["settings"]
        fig.suptitle(f"training step, PoM vs attention: dim {s['dim']}, depth {s['depth']}, batch {s['batch']}, "
                     f"{(s['latent_size'] // 2) ** 2} tokens/frame, {s['device']} ({s['threads']} threads)")


def summarise(rows_time: list, rows_mem: list, frames: list) -> dict:
    def pick(rows, mixer, f, key):
        return next(r[key] for r in rows if r["mixer"] == mixer and r["latent_frames"] == f)

    return {f"{f}_frames": {
        "speedup_pom_over_attention": pick(rows_time, "pom", f, "steps_per_s") / pick(rows_time, "attention", f, "steps_per_s"),
        "saved_activations_ratio_pom_over_attention":
            pick(rows_mem, "pom", f, "saved_activations_mib") / pick(rows_mem, "attention", f, "saved_activations_mib"),
    } for f in frames}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--latent-size", type=int, default=16, help="latent side (64x64 px with the 4x VAE)")
    p.add_argument("--frames", type=int, nargs="+", default=[9, 17, 33], help="latent frames per clip")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=1, help="training steps per timing")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(RESULTS, "train_throughput.json"))
    p.add_argument("--worker-mixer", help=argparse.SUPPRESS)
    p.add_argument("--worker-frames", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.channels, args.text_dim, args.text_len = 4, 64, 16
    if args.worker_mixer:
        print(json.dumps(memory_worker(args)))
        return
    started = time.time()
    rows_time = time_all(args)
    rows_mem = memory_all(args)
    settings = {k: getattr(args, k) for k in ("dim", "depth", "heads", "batch", "latent_size", "frames",
                                              "rounds", "steps", "device", "threads")}
    result = {"benchmark": "train_throughput", "settings": settings,
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count()},
              "summary": summarise(rows_time, rows_mem, args.frames), "time": rows_time, "memory": rows_mem,
              "wall_s": round(time.time() - started, 1)}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    plot(result, os.path.splitext(args.out)[0] + ".png")
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {args.out} and its PNG in {result['wall_s']} s")


if __name__ == "__main__":
    main()
