"""Memory of configs/large.yaml at its real sizes: training per GPU, and streaming inference.

The large DiT (width 1536, depth 16) on 480x832 clips of 81 frames: Wan2.1 VAE latents of
60x104 (spatial x8), 21 latent frames (temporal x4), patch 2, so 30x52 = 1,560 tokens per
latent frame and 32,760 per clip. Nothing here holds the large model's weights: parameter
counts come from the meta device, activations from reduced models on the CPU, scaled.

Training. Peak activation memory of a forward+backward (torch.profiler's allocator events,
as benchmarks/grad_checkpointing.py; the weight gradients are allocated before the step so
they do not count) at widths 256/384, depths 2/4 and 3/5 latent frames on a non-square 8x13
token grid, plain and with `enable_gradient_checkpointing()`, in float32 and in bfloat16.
Fitted per mode and dtype:  bytes = a * depth * N * D + b * N * D  (N tokens, D width), so a
is bytes per block per token per unit of width; one point at the real 30x52 grid checks the
scaling in tokens per frame. Extrapolated to depth 16, width 1536, 32,760 tokens, batch 1,
plus weights, gradients and AdamW state: unsharded, and FSDP FULL_SHARD over 8 GPUs.

Streaming inference. The PoM per-layer state read from a real `init_state`/`commit` at width
256 on the real 30x52 grid, scaled analytically to width 1536 and depth 16; the Wan2.1
decoder's causal-conv feature cache per frame at 480x832, measured with the real decoder
architecture at base_dim 16 and 32 (it is linear in base_dim) and fitted to 96; against an
attention KV cache (2 x depth x tokens x width x bytes) at 240 and 2,400 pixel frames.

    python benchmarks/memory_at_scale.py     # writes results/memory_at_scale.{json,png}
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import torch

from _common import figure, write_report
from grad_checkpointing import peak_step_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LARGE = os.path.join(ROOT, "videogen", "configs", "large.yaml")
HEIGHT, WIDTH, PIXEL_FRAMES = 480, 832, 81
GPUS = 8
BF16 = 2
GB = 1e9
# Wan2.1's text encoder, configs/large.yaml's since issue 23; flan-T5-XL was its text encoder
# before (the results' "dit" and training figures were measured at its 2048-wide text).
UMT5_XXL = dict(vocab_size=256384, d_model=4096, num_layers=24, num_heads=64, d_ff=10240, d_kv=64,
                feed_forward_proj="gated-gelu")
FLAN_T5_XL = dict(vocab_size=32128, d_model=2048, num_layers=24, num_heads=32, d_ff=5120, d_kv=64,
                  feed_forward_proj="gated-gelu")
PROBE_GRID = (8, 13)  # tokens per frame in the fits: non-square, about the real 30x52's aspect
PROBE_TEXT_TOKENS = 8  # the text path is O(L D) per block: < 0.5% of the activations at 32,760 tokens


# ----------------------------------------------------------------------------- models
def large_config():
    from videogen.training.config import load_config

    return load_config(LARGE)


def build_dit(model_cfg, text_dim: int, **sizes):
    from videogen.models.dit import PoMVideoDiT

    return PoMVideoDiT(**{**dataclasses.asdict(model_cfg), **sizes}, in_channels=16, text_dim=text_dim)


def parameter_counts(cfg) -> dict:
    """Parameters of every component at full size, on the meta device (no memory)."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    from videogen.models.vae import build_vae

    with torch.device("meta"):
        vae = build_vae(dataclasses.replace(cfg.vae, pretrained=None))
        t5 = T5EncoderModel(T5Config(**FLAN_T5_XL, is_encoder_decoder=False, use_cache=False))
        umt5 = UMT5EncoderModel(UMT5Config(**UMT5_XXL, is_encoder_decoder=False, use_cache=False))
        dit = build_dit(cfg.model, text_dim=cfg.text.d_model)
        dit_umt5 = build_dit(cfg.model, text_dim=UMT5_XXL["d_model"])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    block = count(dit.blocks[0])
    return {"dit": count(dit), "dit_block": block, "dit_outside_blocks": count(dit) - cfg.model.depth * block,
            "dit_with_umt5_text_dim": count(dit_umt5), "vae": count(vae), "vae_decoder": count(vae.decoder),
            "text_flan_t5_xl": count(t5), "text_umt5_xxl": count(umt5)}


def non_square_check(cfg) -> dict:
    """The large DiT's forward at the real 60x104 latent grid on the meta device: shapes only."""
    with torch.device("meta"):
        dit = build_dit(cfg.model, text_dim=cfg.text.d_model)
        latents = torch.empty(1, 16, 21, HEIGHT // 8, WIDTH // 8)
        out = dit(latents, torch.empty(1, 21), torch.empty(1, 8, cfg.text.d_model))
    return {"latents": list(latents.shape), "velocity": list(out.shape), "ok": out.shape == latents.shape}


# ------------------------------------------------------------------------ activations
def activation_peak(model_cfg, dim: int, depth: int, frames: int, grid: tuple, checkpointed: bool,
                    dtype: torch.dtype) -> int:
    """Peak activation bytes of one forward+backward, weight gradients preallocated."""
    torch.manual_seed(0)
    model = build_dit(model_cfg, text_dim=64, dim=dim, depth=depth).to(dtype).train()
    if checkpointed:
        model.enable_gradient_checkpointing()
    gh, gw = grid
    latents = torch.randn(1, 16, frames, 2 * gh, 2 * gw, dtype=dtype)
    t, text = torch.rand(1, frames), torch.randn(1, PROBE_TEXT_TOKENS, 64, dtype=dtype)

    def step():
        model(latents, t, text).float().square().mean().backward()

    step()  # allocates every .grad; later steps accumulate into them in place
    return peak_step_bytes(step)


def fit_activations(model_cfg, dtype: torch.dtype, checkpointed: bool) -> dict:
    rows, tokens_per_frame = [], PROBE_GRID[0] * PROBE_GRID[1]
    for dim in (256, 384):
        for depth in (2, 4):
            for frames in (3, 5):
                peak = activation_peak(model_cfg, dim, depth, frames, PROBE_GRID, checkpointed, dtype)
                rows.append({"dim": dim, "depth": depth, "frames": frames, "tokens": frames * tokens_per_frame,
                             "peak_bytes": peak})
    X = np.array([[r["depth"] * r["tokens"] * r["dim"], r["tokens"] * r["dim"]] for r in rows], dtype=np.float64)
    y = np.array([r["peak_bytes"] for r in rows], dtype=np.float64)
    (a, b), *_ = np.linalg.lstsq(X, y, rcond=None)
    for row, predicted in zip(rows, X @ np.array([a, b])):
        row["fit_rel_error"] = float(predicted / row["peak_bytes"] - 1)
    return {"bytes_per_block_token_width": float(a), "bytes_per_token_width_outside_blocks": float(b),
            "points": rows}


def predict(fit: dict, depth: int, tokens: int, dim: int) -> float:
    return (fit["bytes_per_block_token_width"] * depth + fit["bytes_per_token_width_outside_blocks"]) * tokens * dim


def check_real_grid(model_cfg, fits: dict) -> dict:
    """The fits (on an 8x13 grid) against a measurement at the real 30x52 grid."""
    grid, dim, depth, frames = (30, 52), 256, 2, 2
    out = {}
    for mode, checkpointed in (("plain", False), ("checkpointed", True)):
        measured = activation_peak(model_cfg, dim, depth, frames, grid, checkpointed, torch.float32)
        predicted = predict(fits["float32"][mode], depth, frames * grid[0] * grid[1], dim)
        out[mode] = {"measured_bytes": measured, "predicted_bytes": predicted, "rel_error": predicted / measured - 1}
    return {"dim": dim, "depth": depth, "frames": frames, "grid": list(grid), **out}


def training_per_gpu(params: dict, fits: dict, cfg) -> dict:
    """GB per GPU at depth 16, width 1536, 21 x 30 x 52 tokens, batch 1, bf16 autocast."""
    depth, dim = cfg.model.depth, cfg.model.dim
    tokens = 21 * (HEIGHT // 16) * (WIDTH // 16)
    P, block = params["dit"], params["dit_block"]
    # fp32 master weights + fp32 grads + AdamW's two fp32 moments; autocast's bf16 weight copies
    states = 16 * P
    casts = 2 * P
    # FULL_SHARD: a 1/8 shard of all of that; gathered in bf16 (FSDP's param_dtype under
    # mixed precision): the unit running and the one prefetched, with their full grads
    # until reduce-scatter; the root unit (embeddings, text projection, final layer) whole.
    fsdp_states = states / GPUS
    fsdp_gathered = 2 * block * (BF16 + 4) + params["dit_outside_blocks"] * (BF16 + 4)
    out = {"tokens": tokens, "depth": depth, "dim": dim, "batch": 1}
    for mode in ("plain", "checkpointed"):
        act_bf16 = predict(fits["bfloat16"][mode], depth, tokens, dim)
        act_fp32 = predict(fits["float32"][mode], depth, tokens, dim)
        out[mode] = {
            "activations_gb": act_bf16 / GB,
            "activations_gb_if_fp32": act_fp32 / GB,
            "activations_per_block_per_token_kb": fits["bfloat16"][mode]["bytes_per_block_token_width"] * dim / 1e3,
            "unsharded_gb": (states + casts + act_bf16) / GB,
            f"fsdp_x{GPUS}_gb": (fsdp_states + fsdp_gathered + act_bf16) / GB,
        }
    out["weights_grads_adam_gb"] = states / GB
    out["autocast_weight_copies_gb"] = casts / GB
    out[f"fsdp_x{GPUS}_shard_gb"] = fsdp_states / GB
    out[f"fsdp_x{GPUS}_gathered_units_gb"] = fsdp_gathered / GB
    return out


# -------------------------------------------------------------------------- streaming
def tensor_bytes(x) -> tuple:
    """(bytes of the tensors, bytes of the storage they keep alive) in a nested state."""
    if isinstance(x, torch.Tensor):
        return x.nelement() * x.element_size(), x.untyped_storage().nbytes()
    if dataclasses.is_dataclass(x):
        x = [getattr(x, f.name) for f in dataclasses.fields(x)]
    if isinstance(x, (list, tuple)):
        sizes = [tensor_bytes(v) for v in x]
        return sum(s[0] for s in sizes), sum(s[1] for s in sizes)
    return 0, 0


def pom_state(cfg) -> dict:
    """A real state at width 256 / depth 2 on the 30x52 grid, scaled to the large model."""
    dim, depth, grid = 256, 2, (HEIGHT // 16, WIDTH // 16)
    torch.manual_seed(0)
    model = build_dit(cfg.model, text_dim=64, dim=dim, depth=depth).eval()
    latent = torch.randn(1, 16, 2 * grid[0], 2 * grid[1])
    with torch.no_grad():
        ctx = model.encode_text(torch.randn(1, 8, 64))
        state = model.init_state(1)
        for _ in range(2):
            state = model.commit(latent, torch.zeros(1), ctx, state)
        prefilled = model.prefill(torch.randn(1, 16, 4, 2 * grid[0], 2 * grid[1]), torch.zeros(1, 4), ctx,
                                  model.init_state(1))
    m = cfg.model
    T, C, hidden = grid[0] * grid[1], m.degree * m.expand * dim, m.ffn_mult * dim
    per_layer = tensor_bytes(state[0])[0] / 4  # float32 elements
    assert per_layer == 2 * C + T * hidden, (per_layer, C, T, hidden)  # sums + counts + the MixFFN's last map
    text_ctx = tensor_bytes(ctx)[0] / 4
    assert text_ctx == dim + depth * C, text_ctx  # pooled + one cross aggregate per layer
    C_l, hidden_l = m.degree * m.expand * m.dim, m.ffn_mult * m.dim
    layer_bytes = (2 * C_l + T * hidden_l) * BF16
    return {
        "measured_at": {"dim": dim, "depth": depth, "grid": list(grid),
                        "state_bytes_fp32": tensor_bytes(state)[0], "state_storage_bytes_fp32": tensor_bytes(state)[1],
                        "after_prefill_of_4_frames_bytes": tensor_bytes(prefilled)[0],
                        "after_prefill_of_4_frames_storage_bytes": tensor_bytes(prefilled)[1]},
        "per_layer_elements": {"pom_sums_and_counts": 2 * C_l, "mixffn_last_frame_map": T * hidden_l},
        "per_layer_mb_bf16": layer_bytes / 1e6,
        "state_gb_bf16": m.depth * layer_bytes / GB,
        "text_context_mb_bf16": (m.dim + m.depth * C_l) * BF16 / 1e6,
    }


def vae_decoder_cache(cfg) -> dict:
    """The decoder's causal-conv cache after each of 3 streamed latent frames, at 480x832,
    at base_dim 16 and 32; linear in base_dim, so fitted and evaluated at 96."""
    from videogen.models.vae import StreamingDecoder, build_vae

    rows = []
    for base_dim in (16, 32):
        torch.manual_seed(0)
        vae = build_vae(dataclasses.replace(cfg.vae, pretrained=None, base_dim=base_dim)).eval()
        decoder = StreamingDecoder(vae)
        latent = torch.randn(1, 16, HEIGHT // 8, WIDTH // 8)
        cache, seconds = [], []
        for i in range(3):
            start = time.perf_counter()
            if i < 2:
                decoder.push(latent)
            else:
                peak = peak_step_bytes(lambda: decoder.push(latent))
            seconds.append(time.perf_counter() - start)
            cache.append(tensor_bytes(decoder._cache)[0])
        rows.append({"base_dim": base_dim, "cache_bytes_after_frame": cache, "push_peak_bytes": peak,
                     "push_s": seconds})
        del vae, decoder
    lo, hi = rows

    def at_full_size(low: float, high: float) -> float:
        return low + (high - low) * (cfg.vae.base_dim - lo["base_dim"]) / (hi["base_dim"] - lo["base_dim"])

    cache_96 = at_full_size(lo["cache_bytes_after_frame"][-1], hi["cache_bytes_after_frame"][-1])
    peak_96 = at_full_size(lo["push_peak_bytes"], hi["push_peak_bytes"])
    return {"points": rows, "base_dim": cfg.vae.base_dim,
            "cache_gb_fp32": cache_96 / GB, "cache_gb_bf16": cache_96 / 2 / GB,
            "decode_peak_per_frame_gb_fp32": peak_96 / GB, "decode_peak_per_frame_gb_bf16": peak_96 / 2 / GB}


def kv_cache(cfg, pixel_frames: int) -> dict:
    from videogen.models.vae import latent_frames_for

    latent_frames = latent_frames_for(pixel_frames, 4)
    tokens = latent_frames * (HEIGHT // 16) * (WIDTH // 16)
    return {"pixel_frames": pixel_frames, "latent_frames": latent_frames, "tokens": tokens,
            "kv_cache_gb_bf16": 2 * cfg.model.depth * tokens * cfg.model.dim * BF16 / GB}


# ------------------------------------------------------------------------------- main
def plot(report: dict):
    def draw(path):
        with figure(path, 1, 2, figsize=(13, 4.5)) as (fig, (left, right)):
            tr = report["training_per_gpu"]
            names = ["plain", "checkpointed", f"plain\nFSDP x{GPUS}", f"checkpointed\nFSDP x{GPUS}"]
            state = [tr["weights_grads_adam_gb"] + tr["autocast_weight_copies_gb"]] * 2 + \
                    [tr[f"fsdp_x{GPUS}_shard_gb"] + tr[f"fsdp_x{GPUS}_gathered_units_gb"]] * 2
            act = [tr[m]["activations_gb"] for m in ("plain", "checkpointed")] * 2
            left.bar(names, state, label="weights, grads, AdamW (+ bf16 copies / gathered units)")
            left.bar(names, act, bottom=state, label="activations (bf16)")
            for i, (s, a) in enumerate(zip(state, act)):
                left.text(i, s + a, f"{s + a:.0f} GB", ha="center", va="bottom")
            left.set_ylabel("GB per GPU")
            left.set_title(f"training, width 1536 x depth 16, {tr['tokens']:,} tokens, batch 1")
            left.legend(fontsize=8)
            st = report["streaming"]
            frames = np.array([81, 240, 600, 1200, 2400])
            vae = st["vae_decoder"]["cache_gb_bf16"]
            kv = [kv_cache_gb(report, f) + vae for f in frames]
            pom = st["pom_state"]["state_gb_bf16"] + vae
            right.plot(frames, kv, "o-", label="attention KV cache + VAE decoder cache")
            right.plot(frames, [pom] * len(frames), "o-", label="PoM state + VAE decoder cache")
            right.set_xscale("log")
            right.set_yscale("log")
            right.set_xlabel("pixel frames streamed (480x832)")
            right.set_ylabel("GB (bf16, one stream)")
            right.set_title("streaming inference memory")
            right.legend()
    return draw


def kv_cache_gb(report: dict, pixel_frames: int) -> float:
    per_token = report["streaming"]["kv_bytes_per_token"]
    latent = 1 + -(-(pixel_frames - 1) // 4)
    return latent * report["streaming"]["tokens_per_latent_frame"] * per_token / GB


def main() -> None:
    torch.set_num_threads(1)
    cfg = large_config()
    params = parameter_counts(cfg)
    print("parameters:", params)
    fits = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        fits[name] = {mode: fit_activations(cfg.model, dtype, mode == "checkpointed")
                      for mode in ("plain", "checkpointed")}
        for mode, fit in fits[name].items():
            print(f"{name} {mode}: {fit['bytes_per_block_token_width']:.1f} B/(block token width), "
                  f"{fit['bytes_per_token_width_outside_blocks']:.1f} B/(token width) outside blocks")
    training = training_per_gpu(params, fits, cfg)
    print("training per GPU:", training)
    pom, vae = pom_state(cfg), vae_decoder_cache(cfg)
    kv = [kv_cache(cfg, f) for f in (240, 2400)]
    for row in kv:  # the VAE cache is the same for both; guidance doubles the per-layer state of either
        row["attention_total_gb_bf16"] = row["kv_cache_gb_bf16"] + vae["cache_gb_bf16"]
        row["attention_total_with_guidance_gb_bf16"] = 2 * row["kv_cache_gb_bf16"] + vae["cache_gb_bf16"]
    streaming = {"pom_state": pom, "vae_decoder": vae, "kv_cache": kv,
                 "pom_total_with_guidance_gb_bf16": 2 * pom["state_gb_bf16"] + vae["cache_gb_bf16"],
                 "tokens_per_latent_frame": (HEIGHT // 16) * (WIDTH // 16),
                 "kv_bytes_per_token": 2 * cfg.model.depth * cfg.model.dim * BF16,
                 "pom_plus_vae_gb_bf16": pom["state_gb_bf16"] + vae["cache_gb_bf16"]}
    print("streaming:", {k: v for k, v in streaming.items() if k != "vae_decoder"})
    report = {
        "config": "configs/large.yaml", "video": {"height": HEIGHT, "width": WIDTH, "frames": PIXEL_FRAMES,
                                                  "latent": [21, HEIGHT // 8, WIDTH // 8],
                                                  "tokens_per_latent_frame": (HEIGHT // 16) * (WIDTH // 16)},
        "non_square_grid": non_square_check(cfg),
        "parameters": params,
        "activation_fits": fits,
        "real_grid_check": check_real_grid(cfg.model, fits),
        "training_per_gpu": training,
        "streaming": streaming,
        "assumptions": [
            "Activations: measured on CPU (torch.profiler allocator events), weight grads preallocated; "
            "fitted as a*depth*N*D + b*N*D over widths 256/384, depths 2/4, 312/520 tokens; linear in width "
            "because every block tensor is a fixed multiple of D wide (PoM C = 4D, FFN hidden = 4D).",
            "bf16 activations are measured with the model cast to bfloat16; accelerate's bf16 autocast keeps "
            "some ops in float32 on CUDA (norms, reductions), so the truth lies between activations_gb and "
            "activations_gb_if_fp32, nearer the first.",
            "Training state: fp32 master weights, fp32 grads, AdamW's 2 fp32 moments (16 bytes/param), plus "
            "autocast's cached bf16 weight copies (2 bytes/param) unsharded.",
            f"FSDP FULL_SHARD over {GPUS}: 16 bytes/param / {GPUS}, plus two gathered DiT blocks (running + "
            "prefetched) in bf16 with their fp32 grads until reduce-scatter, plus the root unit whole; "
            "activations are not sharded (batch 1 per GPU). Assumes one FSDP unit per DiTBlock, which the "
            "DiT does not support yet (tests/test_fsdp.py, xfail).",
            "Batch 1, plain diffusion forcing (train.teacher_forcing=0; teacher forcing runs 2 streams: "
            "about 2x the activations). Text path (128 tokens) and the frozen VAE/text encoder excluded: "
            "training reads the latent cache and keeps the encoders in host memory.",
            "No allocator fragmentation, CUDA context (~0.5-1 GB) or NCCL buffers included.",
            "Streaming: one stream at bf16; classifier-free guidance keeps a conditional and an "
            "unconditional state, doubling the PoM state and a KV cache alike (not the VAE cache). "
            "The MixFFN's last committed hidden map (T x 4D per layer) dominates the PoM state: constant "
            "in video length, proportional to frame area.",
            "VAE decoder cache: Wan2.1 decoder architecture at base_dim 16 and 32 at 480x832, fitted "
            "linearly in base_dim to 96 (every cached tensor is a multiple of base_dim wide except the "
            "16-channel input); bf16 is half the fp32 measurement.",
            "KV cache: 2 x depth x tokens x width x 2 bytes; latent frames = 1 + ceil((F - 1) / 4).",
        ],
    }
    write_report("memory_at_scale", report, plot=plot(report))


if __name__ == "__main__":
    main()
