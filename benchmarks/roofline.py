"""Where the time of a streamed video goes, per latent frame, against what the CPU can do.

Two configs: the embedded default model (64x64, its own weights) and a 480p-class one
(480x832 frames, random weights; configs/large.yaml's VAE layout and patch size, with the
DiT and the VAE narrowed so that a 2-core CPU finishes; the JSON says by how much).
For each, per latent frame: the DiT steps (Euler steps x CFG rows), the commit pass, the
sampler's own work around them, the VAE decode, the uint8 conversion and the MP4 encode,
timed over a run of latent frames after a warm-up. FLOPs are counted by a dispatch mode
that sees every matmul and convolution (also oneDNN's, which torch.utils.flop_counter
does not count), and the same mode records their shapes: a *matmul probe* replays exactly
those ops, alone, in this process, and a square matmul gives the machine's peak.
Achieved GFLOP/s / probe GFLOP/s is the utilisation of the shapes we run; / peak is the
roofline.

With `--baseline REV`, the start-up side runs too: `REV` (a git revision) is exported next
to the working tree, and the two trees take turns (import of videogen.pipelines.pipeline,
`videogen generate --frames 1`, `--frames 240`, and a 240-frame library run that records
the time to the first frame and keeps the pixels, compared as max abs difference).

    python benchmarks/roofline.py --baseline HEAD    # writes results/roofline.{json,png}
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from _common import figure, write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a red circle moving right"
aten = torch.ops.aten
MATMULS = (aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default)
CONVS = (aten.convolution.default, aten.mkldnn_convolution.default)


# ------------------------------------------------------------------------ FLOPs and probe
def _op_flops(func, args, out) -> int:
    if func in (aten.mm.default, aten.bmm.default):
        a, b = args[0], args[1]
        return 2 * a.numel() * b.shape[-1]
    if func in (aten.addmm.default, aten.baddbmm.default):
        a, b = args[1], args[2]
        return 2 * a.numel() * b.shape[-1]
    weight = args[1]  # convolution and mkldnn_convolution: (input, weight, bias, ...)
    transposed = func is aten.convolution.default and args[6]
    per_out = weight[0].numel() if not transposed else weight.shape[0] // args[8] * weight[0, 0].numel()
    return 2 * out.numel() * per_out


class OpRecorder(TorchDispatchMode):
    """Counts every aten op, the FLOPs of matmuls and convolutions, and keeps their calls
    (tensors as shapes) so that `replay` can time them alone."""

    def __init__(self):
        super().__init__()
        self.flops, self.ops, self.calls = 0, 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        if func in MATMULS or func in CONVS:
            flops = _op_flops(func, args, out)
            self.flops += flops
            spec = [(tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a for a in args]
            self.calls.append((func, spec, flops))
        return out


def _materialise(spec):
    return [torch.randn(a[0], dtype=a[1]) if isinstance(a, tuple) and len(a) == 2
            and isinstance(a[1], torch.dtype) else a for a in spec]


def replay(calls: list, min_s: float = 0.3) -> float:
    """Seconds per pass of `calls` (matmuls and convolutions alone, random inputs)."""
    ready = [(func, _materialise(spec)) for func, spec, _ in calls]
    for func, args in ready:
        func(*args)
    passes, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_s:
        for func, args in ready:
            func(*args)
        passes += 1
    return (time.perf_counter() - start) / passes


def peak_gflops(n: int = 1024, min_s: float = 0.5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    passes, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_s:
        a @ b
        passes += 1
    return 2 * n ** 3 * passes / (time.perf_counter() - start) / 1e9


def recorded(fn) -> OpRecorder:
    with torch.no_grad(), OpRecorder() as rec:
        fn()
    return rec


# ------------------------------------------------------------------------ configs
def default_parts() -> tuple:
    from videogen.pipelines.pipeline import load_pipeline

    pipe = load_pipeline()
    settings_cfg = pipe.config
    ctx = pipe.encode(PROMPT, settings_cfg.guidance != 1.0)
    return dict(model=pipe.transformer, vae=pipe.vae, ctx=ctx, scheduler=pipe.scheduler,
                height=settings_cfg.height, width=settings_cfg.width, steps=settings_cfg.steps,
                guidance=settings_cfg.guidance, context_noise=settings_cfg.context_noise), {}


def large_parts(dim: int, depth: int, vae_base: int):
    """480x832 frames, large.yaml's VAE layout and patch size, random weights, narrowed."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from videogen.training.config import load_config
    from videogen.models.dit import PoMVideoDiT
    from videogen.models.vae import VAEConfig, build_vae

    cfg = load_config(os.path.join(REPO, "videogen", "configs", "large.yaml"))
    torch.manual_seed(0)
    vae = build_vae(VAEConfig(base_dim=vae_base, z_dim=cfg.vae.z_dim, dim_mult=list(cfg.vae.dim_mult),
                              num_res_blocks=cfg.vae.num_res_blocks,
                              temperal_downsample=list(cfg.vae.temperal_downsample)))
    model_cfg = {**vars(cfg.model), "dim": dim, "depth": depth, "heads": max(1, dim // 128)}
    model = PoMVideoDiT(in_channels=cfg.vae.z_dim, text_dim=64, **model_cfg).eval()
    for p in model.parameters():  # random, not AdaLN-zero: every branch does its real work
        torch.nn.init.normal_(p, std=0.02)
    with torch.no_grad():
        ctx = model.encode_text(torch.randn(2, 16, 64))
    parts = dict(model=model, vae=vae, ctx=ctx, scheduler=FlowMatchEulerDiscreteScheduler(shift=cfg.sampling.shift),
                 height=480, width=832, steps=8, guidance=3.0, context_noise=0.05)
    narrowed = {"large.yaml": {"dim": cfg.model.dim, "depth": cfg.model.depth, "vae.base_dim": cfg.vae.base_dim},
                "timed": {"dim": dim, "depth": depth, "vae.base_dim": vae_base},
                "why": "large.yaml's sizes take minutes per latent frame on 2 CPU cores"}
    return parts, narrowed


# ------------------------------------------------------------------------ per-frame split
class Timed:
    """Wraps a bound method on its instance and sums the seconds spent in it."""

    def __init__(self, owner, name: str):
        self.owner, self.name, self.inner, self.seconds = owner, name, getattr(owner, name), 0.0
        setattr(owner, name, self)

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def remove(self):
        delattr(self.owner, self.name)


def profile(parts: dict, latents: int, warmup: int) -> dict:
    from videogen.data.video_io import open_writer
    from videogen.diffusion.sampler import SamplerSettings, StreamingSampler
    from videogen.models.vae import StreamingDecoder, frames_to_uint8, vae_factors

    model, vae, ctx = parts["model"], parts["vae"], parts["ctx"]
    _, spatial = vae_factors(vae)
    shape = (model.config.in_channels, parts["height"] // spatial, parts["width"] // spatial)
    settings = SamplerSettings(steps=parts["steps"], guidance=parts["guidance"], context_noise=parts["context_noise"])
    sampler = StreamingSampler(model, ctx, shape, settings, parts["scheduler"], torch.Generator().manual_seed(0))
    decoder = StreamingDecoder(vae)
    rows = 2 if settings.guidance != 1.0 else 1
    step, commit = Timed(model, "step"), Timed(model, "prefill")
    totals = dict.fromkeys(["dit_steps", "commit", "sampler_other", "vae_decode", "to_uint8", "mp4_encode"], 0.0)
    with tempfile.TemporaryDirectory() as tmp, open_writer(os.path.join(tmp, "out.mp4"), fps=8) as writer:
        for i in range(warmup + latents):
            if i == warmup:
                step.seconds = commit.seconds = 0.0
                totals = dict.fromkeys(totals, 0.0)
                pixel_frames = 0
            t0 = time.perf_counter()
            # step and commit timed apart: generate takes each frame's first step inside the
            # previous commit pass (sampler lookahead, prefill_then_step), one call fewer
            latent = sampler.next(lookahead=False)
            t1 = time.perf_counter()
            pixels = decoder.push(latent)
            t2 = time.perf_counter()
            frames = frames_to_uint8(pixels)[0]
            t3 = time.perf_counter()
            for frame in frames:
                writer.write(frame)
            t4 = time.perf_counter()
            totals["sampler_other"] += t1 - t0
            totals["vae_decode"] += t2 - t1
            totals["to_uint8"] += t3 - t2
            totals["mp4_encode"] += t4 - t3
            if i >= warmup:
                pixel_frames += len(frames)
        totals["dit_steps"], totals["commit"] = step.seconds, commit.seconds
        totals["sampler_other"] -= step.seconds + commit.seconds
    step.remove()
    commit.remove()
    per_latent = {k: v / latents * 1000 for k, v in totals.items()}

    # FLOPs and op counts of one call of each part, on the state as it stands now.
    x = torch.randn(rows, *shape)
    sigma = torch.full((rows,), 0.5)
    rec_step = recorded(lambda: model.step(x, sigma, sampler.ctx, sampler.state))
    rec_commit = recorded(lambda: model.prefill(x[:, :, None], sigma[:, None], sampler.ctx, sampler.state))
    probe_decoder = copy.deepcopy(decoder)
    rec_decode = recorded(lambda: probe_decoder.push(latent))
    parts_rec = {"dit_steps": (rec_step, settings.steps), "commit": (rec_commit, 1), "vae_decode": (rec_decode, 1)}
    compute = {}
    for name, (rec, calls) in parts_rec.items():
        gflop = rec.flops * calls / 1e9
        probe_s = replay(rec.calls) * calls
        achieved = gflop / (per_latent[name] / 1000)
        by_kind = {}
        for kind, funcs in (("matmul", MATMULS), ("conv", CONVS)):
            subset = [c for c in rec.calls if c[0] in funcs]
            if subset:
                kind_s = replay(subset, min_s=0.2)
                by_kind[kind] = {"ops_per_call": len(subset), "gflop_per_call": sum(c[2] for c in subset) / 1e9,
                                 "probe_ms_per_call": kind_s * 1000,
                                 "probe_gflops": sum(c[2] for c in subset) / 1e9 / kind_s}
        compute[name] = {"probe_by_kind": by_kind,
                         "gflop_per_latent": gflop, "aten_ops_per_call": rec.ops, "calls_per_latent": calls,
                         "achieved_gflops": achieved, "probe_ms_per_latent": probe_s * 1000,
                         "probe_gflops": gflop / probe_s, "utilisation_vs_probe": achieved / (gflop / probe_s)}
    return {"latent_shape": list(shape), "tokens_per_frame": (shape[1] // model.config.patch_size) *
            (shape[2] // model.config.patch_size), "cfg_rows": rows, "steps": settings.steps,
            "latents_timed": latents, "pixel_frames_per_latent": pixel_frames / latents,
            "ms_per_latent": per_latent, "ms_per_latent_total": sum(per_latent.values()),
            "frames_per_s": pixel_frames / sum(totals.values()), "compute": compute}


# ------------------------------------------------------------------------ start-up, A/B
FRAMES_WORKER = r"""
import sys, time, json
import numpy as np
start = float(sys.argv[1])
from videogen.pipelines.pipeline import load_pipeline
imported = time.time()
pipe = load_pipeline()
loaded = time.time()
frames, first = [], None
for frame in pipe("%s", int(sys.argv[2])):
    if first is None:
        first = time.time()
    frames.append(frame)
done = time.time()
np.save(sys.argv[3], np.stack(frames))
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported, "first_frame_s": first - start,
                  "total_s": done - start}))
""" % PROMPT


def export_tree(rev: str, into: str) -> str:
    """`rev` of this repository as files under `into` (git archive: no worktree, no checkout)."""
    archive = subprocess.run(["git", "-C", REPO, "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def run_in(tree: str, argv: list) -> tuple:
    env = {**os.environ, "PYTHONPATH": tree, "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.time()
    out = subprocess.run(argv, cwd=tree, env=env, check=True, capture_output=True, text=True)
    return time.time() - start, out.stdout


def library_ab(trees: dict, tmp: str, repeats: int) -> dict:
    """240 frames through the library in each tree, taking turns: import, load, time to
    the first frame and total (from process start), and the max abs pixel difference."""
    import numpy as np

    runs = {}
    for rep in range(repeats):
        for key in (("before", "after") if rep % 2 == 0 else ("after", "before")):
            _, out = run_in(trees[key], [sys.executable, "-c", FRAMES_WORKER, repr(time.time()), "240",
                                         os.path.join(tmp, f"{key}.npy")])
            runs.setdefault(key, []).append(json.loads(out.strip().splitlines()[-1]))
    before, after = (np.load(os.path.join(tmp, f"{k}.npy")).astype(np.int16) for k in ("before", "after"))
    median = {key: {m: float(np.median([r[m] for r in rs])) for m in rs[0]} for key, rs in runs.items()}
    # Each repeat's after/before pair ran back to back: the pair ratios are what the VM's
    # drift (+-20% within 30 s, and more while neighbours run) disturbs least.
    pairs = {m: [a[m] / b[m] for a, b in zip(runs["after"], runs["before"])] for m in runs["after"][0]}
    return {"runs": runs, "median": median, "pair_ratios": pairs,
            "median_pair_ratio": {m: float(np.median(r)) for m, r in pairs.items()},
            "after_over_before": {m: median["after"][m] / median["before"][m] for m in median["after"]},
            "max_abs_pixel_diff_240_frames": int(np.abs(before - after).max()) if before.shape == after.shape else None}


def e2e_ab(baseline: str, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        before_tree = os.path.join(tmp, "before")
        os.makedirs(before_tree)
        trees = {"before": export_tree(baseline, before_tree), "after": REPO}
        return {"baseline": baseline, "repeats": repeats, "library_240_frames": library_ab(trees, tmp, repeats)}


def startup_ab(baseline: str, repeats: int) -> dict:
    import numpy as np

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        before_tree = os.path.join(tmp, "before")
        os.makedirs(before_tree)
        trees = {"before": export_tree(baseline, before_tree), "after": REPO}
        tasks = {
            "import_pipeline_s": lambda tree, k: run_in(tree, [sys.executable, "-c", "import videogen.pipelines.pipeline"])[0],
            "cli_1_frame_s": lambda tree, k: run_in(tree, [sys.executable, "-m", "videogen", "generate", PROMPT,
                                                           "--frames", "1", "-o", os.path.join(tmp, f"{k}1.mp4")])[0],
            "cli_240_frames_s": lambda tree, k: run_in(tree, [sys.executable, "-m", "videogen", "generate", PROMPT,
                                                              "--frames", "240", "-o", os.path.join(tmp, f"{k}.mp4")])[0],
        }
        for task, fn in tasks.items():
            for rep in range(repeats):
                for key in (("before", "after") if rep % 2 == 0 else ("after", "before")):
                    results.setdefault(task, {}).setdefault(key, []).append(fn(trees[key], key))
        split = {}  # the per-latent split of the default model, each tree in its own process
        for rep in range(repeats):
            for key in (("before", "after") if rep % 2 == 0 else ("after", "before")):
                _, out = run_in(trees[key], [sys.executable, os.path.abspath(__file__), "--profile-only"])
                split.setdefault(key, []).append(json.loads(out)["ms_per_latent"])
        library = library_ab(trees, tmp, repeats)
    summary = {task: {"before_s": sorted(v["before"]), "after_s": sorted(v["after"]),
                      "after_over_before": float(np.median(v["after"]) / np.median(v["before"]))}
               for task, v in results.items()}
    split_median = {key: {part: float(np.median([r[part] for r in runs])) for part in runs[0]}
                    for key, runs in split.items()}
    split_median["after_over_before"] = {part: split_median["after"][part] / split_median["before"][part]
                                         for part in split_median["after"]}
    return {"baseline": baseline, "repeats": repeats, "order": "alternating, before/after swapped each repeat",
            "subprocess_wall": summary, "default_ms_per_latent_median": split_median, "library_240_frames": library}


def import_breakdown(top: int = 15) -> dict:
    """`python -X importtime -c "import videogen.pipelines.pipeline"` in this tree: the
    biggest modules in the first three levels of the import tree, cumulative seconds."""
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_WAIT_POLICY": "PASSIVE"}
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import videogen.pipelines.pipeline"],
                         env=env, check=True, capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 3:
            rows.append({"module": name.strip(), "depth": depth, "cumulative_s": int(cumulative) / 1e6})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return {"command": "python -X importtime -c 'import videogen.pipelines.pipeline'", "biggest": rows[:top]}


# ------------------------------------------------------------------------ report
def plot(report: dict):
    def draw(path):
        configs = report["configs"]
        with figure(path, 1, 2, figsize=(13, 4.5)) as (fig, axes):
            for ax, (name, res) in zip(axes, configs.items()):
                bottom = 0.0
                for part, ms in res["ms_per_latent"].items():
                    ax.bar([0], [ms], bottom=bottom, label=part)
                    bottom += ms
                probe = sum(c["probe_ms_per_latent"] for c in res["compute"].values())
                ax.bar([1], [probe], color="grey", label="matmul/conv probe (same shapes)")
                ax.set_xticks([0, 1], ["measured", "probe"])
                ax.set_ylabel("ms per latent frame")
                ax.set_title(f"{name}: {res['frames_per_s']:.1f} frames/s")
                ax.legend(fontsize=7)
    return draw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=12, help="latent frames timed, default model")
    parser.add_argument("--large-latents", type=int, default=2, help="latent frames timed, 480p-class")
    parser.add_argument("--large-dim", type=int, default=256)
    parser.add_argument("--large-depth", type=int, default=4)
    parser.add_argument("--large-vae-base", type=int, default=16)
    parser.add_argument("--baseline", default=None, help="git revision for the start-up before/after")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--name", default="roofline")
    parser.add_argument("--e2e-only", action="store_true", help="write results/NAME_e2e.json and exit")
    parser.add_argument("--imports-only", action="store_true", help="write results/NAME_imports.json and exit")
    parser.add_argument("--profile-only", action="store_true", help="print the default model's split and exit")
    args = parser.parse_args()
    if args.imports_only:
        imports = import_breakdown()
        print(json.dumps(imports, indent=1))
        write_report(f"{args.name}_imports", imports)
        return
    if args.e2e_only:  # the 240-frame library run alone, more repeats: it drifts most
        write_report(f"{args.name}_e2e", e2e_ab(args.baseline or "HEAD", args.repeats))
        return
    if args.profile_only:  # a worker of --baseline: the tree it runs in comes from PYTHONPATH
        print(json.dumps(profile(default_parts()[0], args.latents, warmup=2)))
        return

    report = {"threads": torch.get_num_threads(), "peak_gflops_1024_matmul": peak_gflops(), "configs": {}}
    parts, _ = default_parts()
    report["configs"]["default"] = profile(parts, args.latents, warmup=2)
    if not args.skip_large:
        parts, narrowed = large_parts(args.large_dim, args.large_depth, args.large_vae_base)
        report["configs"]["480x832"] = {"narrowed": narrowed, **profile(parts, args.large_latents, warmup=1)}
    report["peak_gflops_1024_matmul_after"] = peak_gflops()
    for res in report["configs"].values():
        for c in res["compute"].values():
            c["utilisation_vs_peak"] = c["achieved_gflops"] / report["peak_gflops_1024_matmul"]
    if args.baseline:
        report["startup"] = startup_ab(args.baseline, args.repeats)
        report["imports"] = import_breakdown()
    print(json.dumps(report, indent=1))
    write_report(args.name, report, plot=plot(report))


if __name__ == "__main__":
    main()
