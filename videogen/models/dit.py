"""PoMVideoDiT: a DiT over causal-VAE latent frames, with PoM mixers, that streams.

One network, two ways to run it:
- parallel (training): `forward(latents (B,C,F,H,W), t (B,F), text (B,L,Dt), text_mask (B,L))`
  with a block-causal self-mixer, one noise level per frame (diffusion forcing);
- streaming (inference): `encode_text` once per prompt, `init_state`, then per latent frame
  `step` (denoise with the past) and `commit` (fold the finished frame into the state);
  `prefill_then_step` does a commit and the next frame's first step in one pass.
  The state is a fixed size per layer for PoM, so memory does not grow with length.
Streaming frame by frame equals the parallel forward (tested to 1e-5 in float32).

Block:  x += g1 * SelfMixer(mod1(LN x))   block-causal over frames
        x += CrossMixer(LN x, text)        aggregate of the prompt, once per prompt when streaming
        x += g2 * MixFFN(mod2(LN x))       depthwise 3x3 over the frame + causal tap on frame f-1

Shapes: B batch, C latent channels, F frames, H/W latent height/width, T tokens per frame,
L text length, Dt text width, D model width.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from videogen.models.mixers import last_frame, make_mixer


@dataclass
class ModelConfig:
    """PoMVideoDiT arguments (the class below)."""

    patch_size: int = 2
    dim: int = 128
    depth: int = 4
    degree: int = 2
    expand: int = 2
    heads: int = 4  # attention baseline only
    mixer: str = "pom"  # pom | attention
    decay: bool = True
    ffn: str = "mix"  # mix | mlp
    temporal_tap: bool = True
    ffn_mult: int = 4
    # Learned embeddings of the latent frame's index 0..K-1 and one shared by every later
    # frame (K+1 in all), added to the timestep conditioning: the clip start, which the
    # decayed-mean state cannot tell apart from later frames. 0 = none. Fixed-size, so any
    # length streams. With train.init_from, a pipeline without them gains them zeroed.
    frame_positions: int = 0


# ------------------------------------------------------------------------------ helpers
@functools.lru_cache(maxsize=16)
def sincos_2d(dim: int, h: int, w: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding, (h*w, dim), as in MAE/DiT. Cached: a streamed
    frame needs it on every Euler step (do not modify the returned tensor in place)."""
    if dim % 4:
        raise ValueError("model width must be divisible by 4 for the 2D sin-cos embedding")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    out = [f(pos.reshape(-1, 1) * omega) for pos in (ys, xs) for f in (torch.sin, torch.cos)]
    return torch.cat(out, dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Noise level t in [0, 1] -> (..., D) through sinusoidal frequencies and an MLP."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = (t.float() * 1000)[..., None] * freqs
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def _as_maps(h: torch.Tensor, grid: tuple) -> torch.Tensor:
    """Tokens (M, T, hidden) as maps (M, hidden, y, x) in channels-last memory: a view, no
    copy, and the layout the depthwise convs run fastest in on the CPU (oneDNN)."""
    return h.reshape(h.shape[0], grid[0], grid[1], h.shape[2]).permute(0, 3, 1, 2)


class MixFFN(nn.Module):
    """FFN with depthwise 3x3 convs over the frame's token grid and a causal tap on frame f-1.

    PoM gives every token the same aggregate, so it has no sense of neighbours; the convs
    give locality in space, the tap in time (design §4). The tap is zero-initialised.
    Streaming keeps the last committed frame's hidden map (B, T, hidden): constant size.
    """

    def __init__(self, dim: int, mult: int = 4, *, conv: bool = True, temporal_tap: bool = True):
        super().__init__()
        hidden = dim * mult
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.conv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden) if conv else None
        self.conv_prev = None
        if conv and temporal_tap:
            self.conv_prev = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
            nn.init.zeros_(self.conv_prev.weight)

    def _mix(self, h: torch.Tensor, h_prev: Optional[torch.Tensor], grid: tuple) -> torch.Tensor:
        """h, h_prev (M, T, hidden) -> (M, T, hidden): spatial conv + causal tap."""
        if self.conv is None:
            return h
        y = self.conv(_as_maps(h, grid))
        if self.conv_prev is not None and h_prev is not None:
            y = y + self.conv_prev(_as_maps(h_prev, grid))
        return y.permute(0, 2, 3, 1).reshape(h.shape)

    def _frames(self, h: torch.Tensor, h_prev: torch.Tensor, grid: tuple) -> torch.Tensor:
        """Every frame's output from its hidden map and the previous frame's. (B, F, T, hidden)."""
        return self.fc2(F.gelu(self._mix(h.flatten(0, 1), h_prev.flatten(0, 1), grid).view_as(h)))

    @staticmethod
    def _previous(h: torch.Tensor, before: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Each frame's previous frame along dim 1; frame 0 sees `before` (B, T, hidden), or zeros."""
        first = torch.zeros_like(h[:, :1]) if before is None else before.unsqueeze(1)
        return torch.cat([first, h[:, :-1]], dim=1)

    def forward(self, x: torch.Tensor, grid: tuple, h_prev: Optional[torch.Tensor] = None,
                keep: Optional[int] = None) -> tuple:
        """Parallel over frames, after the frame whose hidden map is `h_prev` (None: none).
        x (B, F, T, D) -> (out (B, F, T, D), the hidden map (B, T, hidden) of the last frame,
        or of frame `keep` - 1)."""
        h = self.fc1(x)
        return self._frames(h, self._previous(h, h_prev), grid), last_frame(h, keep)

    def forward_pair(self, ctx: torch.Tensor, cur: torch.Tensor, grid: tuple) -> tuple:
        """Teacher forcing: the cur stream's tap reads the ctx stream's previous frame, as a
        streamed frame reads the last committed one. ctx, cur (B, F, T, D) -> both outputs."""
        h_ctx = self.fc1(ctx)
        h_prev = self._previous(h_ctx)
        return self._frames(h_ctx, h_prev, grid), self._frames(self.fc1(cur), h_prev, grid)


@dataclass
class BlockText:
    """One block's view of a prompt: the projected text and, once the block has read it
    without recording gradients, its cross-mixer aggregate, kept for every later frame."""

    tokens: torch.Tensor  # (B, L, D)
    mask: torch.Tensor  # (B, L) bool
    aggregate: Any = None  # PoM (B, 1, C) or attention (k, v, mask); filled by the block


@dataclass
class TextContext:
    """Everything the network needs of a prompt: the pooled embedding, computed once, and per
    block the text its cross-mixer aggregates on first use (inside the block's forward, so
    that an FSDP unit per block has its weights gathered). A stream computes each aggregate
    once per prompt; swapping the context at a frame boundary changes the prompt."""

    pooled: torch.Tensor  # (B, D)
    layers: list  # per block: BlockText


@dataclass
class BlockState:
    mixer: Any  # PoMState (constant size) or KVState (grows)
    ffn_prev: Optional[torch.Tensor]  # last committed frame's MixFFN hidden map (B, T, hidden)
    frames: int = 0  # frames committed so far (the next frame's index)


class DiTBlock(nn.Module):
    def __init__(self, dim: int, *, mixer: str, degree: int, expand: int, heads: int, decay: bool,
                 ffn: str, temporal_tap: bool, ffn_mult: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.self_mixer = make_mixer(mixer, dim, degree=degree, expand=expand, heads=heads, decay=decay)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross_mixer = make_mixer(mixer, dim, degree=degree, expand=expand, heads=heads, decay=False)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ffn = MixFFN(dim, ffn_mult, conv=(ffn == "mix"), temporal_tap=temporal_tap)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def text_aggregate(self, text: BlockText):
        """The cross-mixer's aggregate of the prompt (B, 1, C), kept in `text` for later
        frames only when no gradient is recorded: under autograd every call needs its own
        graph of it (a backward frees it; checkpointing's recomputation must redo the work)."""
        if torch.is_grad_enabled():
            return _bcast(self.cross_mixer.context(text.tokens, text.mask))
        if text.aggregate is None:
            text.aggregate = _bcast(self.cross_mixer.context(text.tokens, text.mask))
        return text.aggregate

    def forward(self, x: torch.Tensor, cond: torch.Tensor, text: BlockText, grid: tuple,
                state: Optional[BlockState] = None, noisy: Optional[torch.Tensor] = None,
                cond_noisy: Optional[torch.Tensor] = None, keep: Optional[int] = None) -> tuple:
        """Block-causal over frames after `state` (None: nothing before x); training, one
        streamed frame and prefill are all this call. x (B, F, T, D), cond (B, F, D) ->
        (x (B, F, T, D), the BlockState with every frame of x committed, or its first `keep`).

        Teacher forcing, given `noisy` (B, F, T, D) and `cond_noisy` (B, F, D): x are the
        committed frames, `noisy` the frames being denoised -> (x, noisy); see `_pair`.
        Every weight of the block is used inside this call, so that FSDP can shard per block.
        """
        agg = self.text_aggregate(text)
        if noisy is not None:
            return self._pair(x, noisy, cond, cond_noisy, agg, grid)
        B, Fr, T, D = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(cond).unsqueeze(2).chunk(6, dim=-1)
        y = modulate(self.norm1(x), shift1, scale1).reshape(B, Fr * T, D)
        y, mixer_state = self.self_mixer.block_causal(y, Fr, None if state is None else state.mixer, keep)
        x = x + gate1 * y.view(B, Fr, T, D)
        x = x + self.cross_mixer.read(self.norm_cross(x).reshape(B, Fr * T, D), agg).view(B, Fr, T, D)
        y, h_last = self.ffn(modulate(self.norm2(x), shift2, scale2), grid,
                             None if state is None else state.ffn_prev, keep)
        done = 0 if state is None else state.frames
        return x + gate2 * y, BlockState(mixer=mixer_state, ffn_prev=h_last, frames=done + (keep or Fr))

    def _pair(self, xc: torch.Tensor, xn: torch.Tensor, cond_c: torch.Tensor, cond_n: torch.Tensor,
              agg, grid: tuple) -> tuple:
        """Teacher forcing, parallel: xc the committed frames, xn the frames being denoised
        (each sees xc's earlier frames). (B, F, T, D) each, conds (B, F, D) -> (xc, xn)."""
        B, Fr, T, D = xc.shape
        mods = [self.adaln(c).unsqueeze(2).chunk(6, dim=-1) for c in (cond_c, cond_n)]
        ys = [modulate(self.norm1(x), m[0], m[1]).reshape(B, Fr * T, D) for x, m in zip((xc, xn), mods)]
        ys = self.self_mixer.block_causal_pair(ys[0], ys[1], Fr)
        xs = [x + m[2] * y.view(B, Fr, T, D) for x, m, y in zip((xc, xn), mods, ys)]
        xs = [x + self.cross_mixer.read(self.norm_cross(x).reshape(B, Fr * T, D), agg).view(B, Fr, T, D)
              for x in xs]
        ys = self.ffn.forward_pair(*[modulate(self.norm2(x), m[3], m[4]) for x, m in zip(xs, mods)], grid)
        return tuple(x + m[5] * y for x, m, y in zip(xs, mods, ys))


def _bcast(ctx):
    """A PoM aggregate (B, C) reads as (B, 1, C); attention contexts pass through."""
    return ctx.unsqueeze(1) if isinstance(ctx, torch.Tensor) else ctx


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (..., T, D), cond (..., D)."""
        shift, scale = self.adaln(cond).unsqueeze(-2).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


# -------------------------------------------------------------------------------- model
class PoMVideoDiT(ModelMixin, ConfigMixin):
    """Text-to-video DiT over causal-VAE latents with block-causal PoM self-mixing.

    Order lives in the causal state, so any length works. With `frame_positions` K > 0 the
    conditioning also gets a learned embedding of the frame's index, clamped at K: the first
    K frames are told apart from each other and from all later frames, which share one.
    """

    _supports_gradient_checkpointing = True  # diffusers' enable_gradient_checkpointing(): per block

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: Optional[int] = None,
        patch_size: int = 2,
        dim: int = 128,
        depth: int = 4,
        degree: int = 2,
        expand: int = 2,
        heads: int = 4,
        mixer: str = "pom",
        decay: bool = True,
        ffn: str = "mix",
        temporal_tap: bool = True,
        ffn_mult: int = 4,
        text_dim: int = 64,
        frame_positions: int = 0,
    ):
        super().__init__()
        out_channels = out_channels or in_channels
        p = patch_size
        self.patch_embed = nn.Linear(in_channels * p * p, dim)
        self.t_embed = TimestepEmbedder(dim)
        self.frame_embed = nn.Embedding(frame_positions + 1, dim) if frame_positions > 0 else None
        self.text_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.text_pool = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList(
            DiTBlock(dim, mixer=mixer, degree=degree, expand=expand, heads=heads, decay=decay, ffn=ffn,
                     temporal_tap=temporal_tap, ffn_mult=ffn_mult)
            for _ in range(depth)
        )
        self.final = FinalLayer(dim, out_channels * p * p)
        self.gradient_checkpointing = False  # set by diffusers' enable_gradient_checkpointing()
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT init: xavier linears, AdaLN-zero (every residual branch starts closed)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.zeros_(block.adaln[-1].weight)
            nn.init.zeros_(block.adaln[-1].bias)
        nn.init.zeros_(self.final.adaln[-1].weight)
        nn.init.zeros_(self.final.adaln[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)
        if self.frame_embed is not None:
            nn.init.zeros_(self.frame_embed.weight)  # starts as a model without it

    def _positions(self, index: torch.Tensor) -> torch.Tensor:
        """Frame-position conditioning for latent frame indices (any shape) -> (..., D); 0
        without frame_positions."""
        if self.frame_embed is None:
            return torch.zeros((), dtype=self.patch_embed.weight.dtype, device=index.device)
        return self.frame_embed(index.clamp(max=self.config.frame_positions))

    # ----------------------------------------------------------------- patches & text
    def _grid(self, h: int, w: int) -> tuple:
        p = self.config.patch_size
        if h % p or w % p:
            raise ValueError(f"latent size {h}x{w} is not divisible by the patch size {p}")
        return h // p, w // p

    def _embed(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) -> tokens (B, F, T, D) with the 2D position embedding."""
        p = self.config.patch_size
        grid = self._grid(*latents.shape[-2:])
        x = rearrange(latents, "b c f (y p) (x q) -> b f (y x) (p q c)", p=p, q=p)
        pe = sincos_2d(self.config.dim, *grid).to(device=x.device, dtype=self.patch_embed.weight.dtype)
        return self.patch_embed(x.to(self.patch_embed.weight.dtype)) + pe

    def _unembed(self, x: torch.Tensor, grid: tuple) -> torch.Tensor:
        """(B, F, T, p*p*C) -> (B, C, F, H, W)."""
        p = self.config.patch_size
        return rearrange(x, "b f (y x) (p q c) -> b c f (y p) (x q)", y=grid[0], x=grid[1], p=p, q=p)

    def encode_text(self, text: torch.Tensor, text_mask: Optional[torch.Tensor] = None) -> TextContext:
        """Per-prompt work: projected text and pooled embedding, done here once; each block's
        cross aggregate, done by the block on first use (see `TextContext`).

        text (B, L, Dt), text_mask (B, L) bool (None = all valid).
        """
        tokens = self.text_proj(text.to(self.patch_embed.weight.dtype))
        if text_mask is None:
            text_mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        m = text_mask.to(tokens.dtype).unsqueeze(-1)
        pooled = self.text_pool((tokens * m).sum(1) / m.sum(1).clamp(min=1))
        return TextContext(pooled=pooled, layers=[BlockText(tokens, text_mask) for _ in self.blocks])

    # ----------------------------------------------------------------------- parallel
    def forward(self, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                text_mask: Optional[torch.Tensor] = None, context: Optional[torch.Tensor] = None,
                t_context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Velocity for every frame at once. latents (B, C, F, H, W), t (B, F) -> (B, C, F, H, W).

        Each frame sees the frames before it in `latents` (diffusion forcing), or, given
        `context` and `t_context`, the frames before it in `context` (teacher forcing, see
        `forward_teacher`; through `forward` so that DDP's hooks see it).
        """
        if context is not None:
            return self.forward_teacher(context, t_context, latents, t, text, text_mask)
        return self.forward_with_context(latents, t, self.encode_text(text, text_mask))

    def forward_with_context(self, latents: torch.Tensor, t: torch.Tensor, ctx: TextContext) -> torch.Tensor:
        return self._run(latents, t, ctx)[0]

    def _checkpointing(self) -> bool:
        return self.gradient_checkpointing and torch.is_grad_enabled()

    def _run(self, latents: torch.Tensor, t: torch.Tensor, ctx: TextContext, state: Optional[list] = None,
             keep: Optional[int] = None) -> tuple:
        """Every frame of latents, block-causal after `state` (None: from the start).
        latents (B, C, F, H, W), t (B, F) -> (velocity (B, C, F, H, W), state with them committed,
        or only the first `keep` of them)."""
        grid = self._grid(*latents.shape[-2:])
        x = self._embed(latents)
        first = 0 if state is None else state[0].frames
        frames = torch.arange(first, first + latents.shape[2], device=latents.device)
        cond = self.t_embed(t) + ctx.pooled.unsqueeze(1) + self._positions(frames)  # (B, F, D)
        new_state = []
        for i, (block, text) in enumerate(zip(self.blocks, ctx.layers)):
            args = (x, cond, text, grid, None if state is None else state[i])
            if self._checkpointing():  # recompute the block in backward instead of keeping its activations
                assert keep is None, "keep is for streaming, without gradients"
                x, s = self._gradient_checkpointing_func(block, *args)
            else:
                x, s = block(*args, keep=keep)
            new_state.append(s)
        return self._unembed(self.final(x, cond), grid).to(latents.dtype), new_state

    def forward_teacher(self, context: torch.Tensor, t_context: torch.Tensor, latents: torch.Tensor,
                        t: torch.Tensor, text: torch.Tensor, text_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Teacher forcing in one parallel pass: the velocity of every frame of `latents` (at
        noise t) given the frames of `context` before it (at noise t_context), which is
        exactly what streaming computes after committing `context` frame by frame.
        context, latents (B, C, F, H, W); t_context, t (B, F) -> (B, C, F, H, W)."""
        ctx = self.encode_text(text, text_mask)
        grid = self._grid(*latents.shape[-2:])
        xc, xn = self._embed(context), self._embed(latents)
        pos = self._positions(torch.arange(latents.shape[2], device=latents.device))
        cond_c = self.t_embed(t_context) + ctx.pooled.unsqueeze(1) + pos
        cond_n = self.t_embed(t) + ctx.pooled.unsqueeze(1) + pos
        for block, text in zip(self.blocks, ctx.layers):
            args = (xc, cond_c, text, grid, None, xn, cond_n)  # through forward, for FSDP
            if self._checkpointing():
                xc, xn = self._gradient_checkpointing_func(block, *args)
            else:
                xc, xn = block(*args)
        return self._unembed(self.final(xn, cond_n), grid).to(latents.dtype)

    # ---------------------------------------------------------------------- streaming
    def init_state(self, batch_size: int, device=None, dtype=None) -> list:
        """Empty per-layer states: nothing seen yet."""
        device = device or self.device
        dtype = dtype or self.dtype
        return [BlockState(mixer=b.self_mixer.init_state(batch_size, device, dtype), ffn_prev=None)
                for b in self.blocks]

    def step(self, latent: torch.Tensor, t: torch.Tensor, ctx: TextContext, state: list) -> torch.Tensor:
        """Velocity of the next frame given the committed past. latent (B, C, H, W), t (B,)."""
        return self._run(latent.unsqueeze(2), t.unsqueeze(1), ctx, state)[0][:, :, 0]

    def commit(self, latent: torch.Tensor, t: torch.Tensor, ctx: TextContext, state: list) -> list:
        """Fold a finished frame (seen at noise level t) into the state; returns the new state."""
        return self._run(latent.unsqueeze(2), t.unsqueeze(1), ctx, state)[1]

    def prefill(self, latents: torch.Tensor, t: torch.Tensor, ctx: TextContext, state: list) -> list:
        """Commit several frames in one parallel pass: the state that committing them one by
        one reaches (continuation, image-to-video, a prompt switch's re-commit).
        latents (B, C, F, H, W), t (B, F) -> the new state."""
        return self._run(latents, t, ctx, state)[1]

    def prefill_then_step(self, latents: torch.Tensor, t: torch.Tensor, latent: torch.Tensor,
                          t_next: torch.Tensor, ctx: TextContext, state: list) -> tuple:
        """`prefill` and the next frame's `step` after it, in one parallel pass: the frame after
        `latents` reads them as context but stays out of the state (one model call for a commit
        and the first Euler step of the next frame, whose input is noise known in advance).
        latents (B, C, F, H, W), t (B, F), latent (B, C, H, W), t_next (B,) ->
        (velocity of `latent` (B, C, H, W), the state with only `latents` committed)."""
        frames = torch.cat([latents, latent.unsqueeze(2)], dim=2)
        # float32 noise levels: what the timestep embedder reads of each, whatever dtype they came in
        levels = torch.cat([t.float(), t_next.float().to(t.device).unsqueeze(1)], dim=1)
        velocity, new_state = self._run(frames, levels, ctx, state, keep=latents.shape[2])
        return velocity[:, :, -1], new_state


def with_frame_positions(model: PoMVideoDiT, frame_positions: int) -> PoMVideoDiT:
    """`model` with `frame_positions` frame-position embeddings: itself if it has them, else
    a copy that gains them zeroed (so it computes exactly what `model` does until trained).

    Fine-tuning a pipeline trained without them (`train.init_from` with
    model.frame_positions > 0). Any other change of architecture is an error.
    """
    have = model.config.frame_positions
    if have == frame_positions:
        return model
    if have:
        raise ValueError(f"the transformer has frame_positions={have}; it cannot change to {frame_positions}")
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}  # _use_default_values would win
    grown = PoMVideoDiT.from_config({**config, "frame_positions": frame_positions})
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    assert missing == ["frame_embed.weight"] and not unexpected, (missing, unexpected)
    return grown.to(device=model.device, dtype=model.dtype)
