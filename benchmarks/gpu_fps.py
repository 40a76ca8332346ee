"""Streaming frames/s end to end and time to the first frame: fp32, bf16, torch.compile, CUDA graphs.

Two configs: the embedded default model (64x64) and a 480p-class one (480x832 frames, random
weights, configs/large.yaml's sizes on a GPU; on a CPU the DiT and VAE are narrowed, as in
roofline.py, and the JSON says so). Each variant streams `frames` video frames the way
StreamSession does (sampler.next, the VAE's StreamingDecoder, uint8 frames on the host):

    fp32                    eager, float32 everywhere
    bf16                    the DiT in bfloat16 (the VAE stays float32, as load_pipeline keeps it)
    bf16+compile            each DiT block through torch.compile (inductor)
    bf16+compile+cudagraphs torch.compile mode="reduce-overhead": CUDA graphs per block

Time to the first frame counts from a built model (load time reported apart), so it holds
the compile. A variant that cannot run here is reported as skipped, with the reason.

    python benchmarks/gpu_fps.py            # results/gpu_fps.json (on a CPU: reduced frames)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from _common import write_report
from roofline import PROMPT, large_parts

VARIANTS = {"fp32": (torch.float32, None), "bf16": (torch.bfloat16, None),
            "bf16+compile": (torch.bfloat16, "default"), "bf16+compile+cudagraphs": (torch.bfloat16, "reduce-overhead")}


def skip_reason(device: str, mode, cpu_compile: bool):
    if mode is None:
        return None
    if mode == "reduce-overhead" and device != "cuda":
        return "CUDA graphs need a CUDA device"
    if device == "cpu" and not cpu_compile:
        return "CPU run: inductor compiles every block for minutes on 2 cores; pass --cpu-compile to run it"
    return None


def build(config: str, device: str, dtype, cpu_sizes: dict) -> tuple:
    """(parts as roofline builds them, load seconds, notes), the DiT moved to device/dtype."""
    start = time.perf_counter()
    notes = {}
    if config == "default":
        from videogen.pipelines.pipeline import load_pipeline

        pipe = load_pipeline(device=device, dtype="bfloat16" if dtype == torch.bfloat16 else "float32")
        c = pipe.config
        parts = dict(model=pipe.transformer, vae=pipe.vae, ctx=pipe.encode(PROMPT, c.guidance != 1.0),
                     scheduler=pipe.scheduler, height=c.height, width=c.width, steps=c.steps,
                     guidance=c.guidance, context_noise=c.context_noise)
    else:
        sizes = dict(dim=1536, depth=16, vae_base=96) if device == "cuda" else cpu_sizes
        parts, notes = large_parts(**sizes)
        parts["model"].to(device, dtype)
        parts["vae"].to(device)
        with torch.no_grad():
            parts["ctx"] = parts["model"].encode_text(torch.randn(2, 16, 64, device=device, dtype=dtype))
    return parts, time.perf_counter() - start, notes


def compiled(model, mode: str) -> None:
    """Compile each DiT block in place. With CUDA graphs, a graph's outputs are overwritten
    by its next replay, and step and commit replay the same per-block graphs (one frame each),
    so the committed state is cloned out of them."""
    for block in model.blocks:
        block.compile(mode=mode)
    if mode != "reduce-overhead":
        return
    step, prefill = model.step, model.prefill

    def step_marked(*args):
        torch.compiler.cudagraph_mark_step_begin()
        return step(*args).clone()

    def prefill_cloned(*args):
        torch.compiler.cudagraph_mark_step_begin()
        state = prefill(*args)
        for s in state:
            s.mixer.sums, s.mixer.counts = s.mixer.sums.clone(), s.mixer.counts.clone()
            s.ffn_prev = None if s.ffn_prev is None else s.ffn_prev.clone()
        return state

    model.step, model.prefill = step_marked, prefill_cloned


def stream(parts: dict, frames: int) -> dict:
    from videogen.diffusion.sampler import SamplerSettings, StreamingSampler
    from videogen.models.vae import StreamingDecoder, frames_to_uint8, vae_factors

    model, vae = parts["model"], parts["vae"]
    _, spatial = vae_factors(vae)
    shape = (model.config.in_channels, parts["height"] // spatial, parts["width"] // spatial)
    settings = SamplerSettings(steps=parts["steps"], guidance=parts["guidance"], context_noise=parts["context_noise"])
    start = time.perf_counter()
    sampler = StreamingSampler(model, parts["ctx"], shape, settings, parts["scheduler"], torch.Generator().manual_seed(0))
    decoder = StreamingDecoder(vae)
    done, first = 0, None
    while done < frames:
        latent = sampler.next()
        pixels = frames_to_uint8(decoder.push(latent.to(vae.dtype)))[0]  # on the host: synchronised
        done += len(pixels)
        first = first or time.perf_counter() - start
    total = time.perf_counter() - start
    return {"frames": done, "first_frame_s": first, "total_s": total, "frames_per_s": done / total,
            "frames_per_s_after_first": (done - 1) / (total - first) if done > 1 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=None, help="default model (GPU 240, CPU 33)")
    parser.add_argument("--large-frames", type=int, default=None, help="480p-class (GPU 81, CPU 5)")
    parser.add_argument("--cpu-compile", action="store_true")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--configs", default="default,480x832")
    parser.add_argument("--name", default=None, help="results/NAME.json (default gpu_fps, or gpu_fps_cpu on a CPU)")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    frames = {"default": args.frames or (240 if gpu else 33), "480x832": args.large_frames or (81 if gpu else 5)}
    cpu_sizes = dict(dim=256, depth=4, vae_base=16)
    report = {"device": args.device, "gpu": torch.cuda.get_device_name() if gpu else None,
              "note": None if gpu else ("no GPU was lent to this session: this is the CPU run of the same "
                                        "script at reduced frame counts; the bf16/compile/CUDA-graph rows "
                                        "that cannot run here say why"),
              "frames": frames, "results": {}}
    for config in args.configs.split(","):
        for name in args.variants.split(","):
            dtype, mode = VARIANTS[name]
            reason = skip_reason(args.device, mode, args.cpu_compile)
            key = f"{config} {name}"
            if reason:
                report["results"][key] = {"skipped": reason}
                continue
            torch.manual_seed(0)
            parts, load_s, notes = build(config, args.device, dtype, cpu_sizes)
            try:
                if mode:
                    compiled(parts["model"], mode)
                with torch.no_grad():
                    res = stream(parts, frames[config])
            except Exception as err:  # reported, not hidden: the other variants still run
                res = {"failed": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
            report["results"][key] = {"load_s": load_s, **res, **({"narrowed": notes} if notes else {})}
            print(key, json.dumps(report["results"][key]), flush=True)
    write_report(args.name or ("gpu_fps" if gpu else "gpu_fps_cpu"), report)


if __name__ == "__main__":
    main()
