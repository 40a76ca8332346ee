"""Gradient checkpointing in the DiT: activation memory saved, and what it costs in time.

The default model's transformer architecture (random weights), a training step (forward +
backward) over batch 2 x 9 latent frames of 16 x 16 latents (a 33-frame 64 x 64 clip), both
mixers, with and without `enable_gradient_checkpointing()`, side by side in one process.
Peak activation memory is the peak of the CPU allocator's live bytes during the step
(torch.profiler memory events), less what was live before it (weights, inputs).

    python benchmarks/grad_checkpointing.py     # writes results/grad_checkpointing.json
"""

from __future__ import annotations

import json
import os
import time

import torch

from _common import write_report

DEFAULT_TRANSFORMER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   "videogen", "default_model", "transformer", "config.json")
BATCH, FRAMES, SIZE = 2, 9, 16


def peak_step_bytes(step) -> int:
    """Peak of the allocator's live bytes while `step()` runs, relative to its start."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # the raw "[memory]" records: every allocation (+bytes) and free (-bytes), in time order
    records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events = [e.nbytes() for e in sorted(records, key=lambda e: e.start_ns())]
    live = peak = 0
    for event in events:
        live += event
        peak = max(peak, live)
    return peak


def measure(mixer: str) -> dict:
    from videogen.models.dit import PoMVideoDiT

    with open(DEFAULT_TRANSFORMER) as f:
        config = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    torch.manual_seed(0)
    model = PoMVideoDiT(**{**config, "mixer": mixer}).train()
    latents = torch.randn(BATCH, model.config.in_channels, FRAMES, SIZE, SIZE)
    t, text = torch.rand(BATCH, FRAMES), torch.randn(BATCH, 8, model.config.text_dim)

    def step():
        model.zero_grad(set_to_none=True)
        model(latents, t, text).square().mean().backward()

    row = {}
    for name, enable in (("plain", False), ("checkpointed", True)):
        model.enable_gradient_checkpointing() if enable else model.disable_gradient_checkpointing()
        step()  # warm-up
        start = time.perf_counter()
        step()
        seconds = time.perf_counter() - start
        row[name] = {"peak_activation_mb": peak_step_bytes(step) / 2**20, "step_s": seconds}
    row["memory_ratio"] = row["checkpointed"]["peak_activation_mb"] / row["plain"]["peak_activation_mb"]
    row["time_ratio"] = row["checkpointed"]["step_s"] / row["plain"]["step_s"]
    return row


def main() -> None:
    torch.set_num_threads(1)
    rows = {mixer: measure(mixer) for mixer in ("pom", "attention")}
    for mixer, row in rows.items():
        print(f"{mixer}: peak activations {row['plain']['peak_activation_mb']:.1f} MB -> "
              f"{row['checkpointed']['peak_activation_mb']:.1f} MB (x{row['memory_ratio']:.2f}), "
              f"step time x{row['time_ratio']:.2f}")
    write_report("grad_checkpointing", {"batch": BATCH, "latent_frames": FRAMES, "latent_size": SIZE,
                                        "rows": rows})


if __name__ == "__main__":
    main()
