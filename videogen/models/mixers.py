"""The Polynomial Mixer (PoM, arXiv 2411.12663), and the attention baseline with the same API.

PoM replaces attention with one explicit state: every context token x_j is lifted to
polynomial features h(x_j) of width C = k*E*D, the features are averaged over the
context, and each query reads the average through a sigmoid gate:

    PoM(q, X) = W_o( sigmoid(W_s q) * mean_{j in ctx(q)} h(x_j) )

Block-causal over frames (video), with a learned per-channel decay lambda in (0, 1]:

    A_f = sum_{g<=f} lambda^(f-g) S_g      N_f = sum_{g<=f} lambda^(f-g) c_g      agg_f = A_f / N_f

where S_g and c_g are frame g's feature sum and token count. Parallel form: per-frame
sums, then a scan over frames (A_f = lambda A_(f-1) + S_f), never an N x N mask, so
training is O(N). Streaming form: the state is (A, N), two (B, C) tensors per layer, whatever the
video length. Every mode has one signature, `block_causal(x, frames, initial_state) -> (out,
final_state)`: training from no state, `step` (one frame), prefill (several frames into a state).

Shapes: B batch, F frames, T tokens per frame, N = F*T tokens, L text length,
D width, C = degree * expand * D state width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PoMState:
    """Streaming state of one block-causal PoM: decayed feature sums and token counts."""

    sums: torch.Tensor  # (B, C)
    counts: torch.Tensor  # (B, C); per channel because the decay is per channel


@dataclass
class KVState:
    """Streaming state of the attention baseline: the KV cache (grows with length)."""

    k: Optional[torch.Tensor]  # (B, heads, N_past, D/heads)
    v: Optional[torch.Tensor]


def last_frame(x: torch.Tensor, keep: Optional[int] = None) -> torch.Tensor:
    """x[:, keep - 1] (keep None: the last frame) as a tensor of its own for a streaming state:
    a view of a prefilled (B, F, ...) tensor would keep all F frames' storage alive as long as
    the state."""
    index = x.shape[1] - 1 if keep is None else keep - 1
    return x[:, index] if x.shape[1] == 1 else x[:, index].clone()


CHUNK_TOKENS = 2048  # tokens per chunk of the parallel block-causal pass


def _init_decay_rates(channels: int) -> torch.Tensor:
    """Rates r with lambda = exp(-r): a quarter of the channels at exactly lambda = 1
    (the paper's plain running mean), the rest with half-lives log-spaced over 1..64 frames."""
    half_lives = torch.logspace(0, math.log10(64), channels)
    rates = math.log(2) / half_lives
    rates[::4] = 0.0
    return rates


class PoM(nn.Module):
    """Polynomial Mixer of degree k and expansion E.

    Self-mixing: `block_causal(x, frames, initial_state) -> (out, final_state)` for training,
    streaming (`step`: one frame) and prefill alike; `block_causal_reference` is its readable loop.
    Cross-mixing (queries attend to another sequence, e.g. text): `context(x, mask)`
    once per prompt, then `read(q, ctx)`; `forward(q, x, mask)` does both.
    """

    def __init__(self, dim: int, degree: int = 2, expand: int = 2, *, context_dim: Optional[int] = None,
                 decay: bool = True):
        super().__init__()
        if degree < 1 or expand < 1:
            raise ValueError("degree and expand must be >= 1")
        self.dim, self.degree, self.expand = dim, degree, expand
        self.state_dim = degree * expand * dim
        self.po_proj = nn.Linear(context_dim or dim, self.state_dim)  # the k fused W_m
        self.se_proj = nn.Linear(dim, self.state_dim)  # gate W_s
        self.ag_proj = nn.Linear(self.state_dim, dim)  # output W_o
        self.decay_rate = nn.Parameter(_init_decay_rates(self.state_dim)) if decay else None

    # --------------------------------------------------------------------- building blocks
    def _powers(self, x: torch.Tensor) -> list:
        """[p_1..p_k], p_m = p_(m-1) * gelu(W_m x), each (..., E*D)."""
        chunks = F.gelu(self.po_proj(x)).chunk(self.degree, dim=-1)
        powers = [chunks[0]]
        for chunk in chunks[1:]:
            powers.append(powers[-1] * chunk)
        return powers

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h(x) = concat(p_1..p_k). (..., D) -> (..., C)."""
        return torch.cat(self._powers(x), dim=-1)

    def feature_sum(self, x: torch.Tensor, dim: int, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """sum over `dim` of h(x) (times `weight`, broadcast), without materialising h:
        concatenating the small sums instead of the (..., C) features saves a full pass."""
        return torch.cat([(p if weight is None else p * weight).sum(dim=dim) for p in self._powers(x)], dim=-1)

    def read(self, q: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        """Gate the aggregate with the queries. q (B, N, D), agg broadcastable to (B, N, C)."""
        return self.ag_proj(torch.sigmoid(self.se_proj(q)) * agg)

    def decays(self) -> Optional[torch.Tensor]:
        """lambda per channel, (C,), or None when decay is off (lambda = 1)."""
        if self.decay_rate is None:
            return None
        return torch.exp(-self.decay_rate.clamp(min=0))

    # ------------------------------------------------------------- full / padding masks
    def context(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Masked mean of h over the context. x (B, L, Dx), mask (B, L) bool -> (B, C).

        An all-empty context (e.g. a fully padded prompt) gives exactly 0, never NaN.
        """
        if mask is None:
            return self.feature_sum(x, dim=1) / x.shape[1]
        m = mask.to(x.dtype).unsqueeze(-1)
        return self.feature_sum(x, dim=1, weight=m) / m.sum(dim=1).clamp(min=1)

    def forward(self, q: torch.Tensor, x: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Full (mask None) or key-padding PoM. q (B, N, D), x (B, L, Dx) -> (B, N, D)."""
        agg = self.context(q if x is None else x, mask)
        return self.read(q, agg.unsqueeze(1))

    # ------------------------------------------------------------------ block-causal
    def block_causal(self, x: torch.Tensor, frames: int, initial_state: Optional[PoMState] = None,
                     keep: Optional[int] = None) -> tuple:
        """Self-PoM where each frame sees its own and earlier frames, in O(N), after the
        frames already folded into `initial_state` (None: nothing before x).

        x (B, N, D) with N = frames * T, tokens frame-major -> (out (B, N, D), final_state),
        the state with every frame of x folded in (or only the first `keep`: the frames after
        them read the state but stay out of it, as a streamed frame's `step` does). One
        signature for every mode (as FLA's layers): training is one call from None, streaming
        one frame per call, prefill (continuation) several frames into a state in one call.
        """
        B, N, _ = x.shape
        T = N // frames
        # Work in chunks of whole frames: each chunk's (tokens, C) intermediates stay in
        # cache through projection, gate and reduction, which keeps large N linear in time.
        per_chunk = max(1, CHUNK_TOKENS // T)
        x_chunks = x.view(B, frames, T, self.dim).split(per_chunk, dim=1)
        sums = torch.cat([self.feature_sum(xc, dim=2) for xc in x_chunks], dim=1)  # (B, F, C)
        acc_sums, acc_counts = self._running_sums(sums, T, initial_state)
        agg = acc_sums / acc_counts
        out = [self.read(xc, ac.unsqueeze(2)) for xc, ac in zip(x_chunks, agg.split(per_chunk, dim=1))]
        final = PoMState(sums=last_frame(acc_sums, keep),
                         counts=last_frame(acc_counts, keep).expand(B, self.state_dim).contiguous())
        out = out[0] if len(out) == 1 else torch.cat(out, dim=1)  # one chunk (a streamed frame): no copy
        return out.reshape(B, N, self.dim), final

    def block_causal_reference(self, x: torch.Tensor, frames: int,
                               initial_state: Optional[PoMState] = None) -> tuple:
        """The readable recurrence `block_causal` computes, frame by frame, h materialised:
        A <- lambda A + S_f, N <- lambda N + c_f, frame f reads A / N. Same in and out."""
        B, N, _ = x.shape
        T = N // frames
        state = initial_state or self.init_state(B, x.device, x.dtype)
        lam = self.decays()
        lam = torch.ones((), dtype=x.dtype, device=x.device) if lam is None else lam.to(x.dtype)
        sums, counts, outs = state.sums, state.counts, []
        for xf in x.view(B, frames, T, self.dim).unbind(dim=1):
            sums = lam * sums + self.features(xf).sum(dim=1)
            counts = lam * counts + T
            outs.append(self.read(xf, (sums / counts).unsqueeze(1)))
        return torch.cat(outs, dim=1), PoMState(sums=sums, counts=counts)

    def block_causal_pair(self, ctx: torch.Tensor, cur: torch.Tensor, frames: int) -> tuple:
        """Teacher forcing in one parallel pass: the `ctx` stream (the frames as they are
        committed) is block-causal as in `block_causal`; each frame of the `cur` stream (the
        frames being denoised) sees the committed ctx frames before it and its own tokens,
        which is what `step` sees while streaming. ctx, cur (B, N, D) -> both outputs.
        """
        B, N, _ = ctx.shape
        T = N // frames
        s_ctx = self.feature_sum(ctx.view(B, frames, T, self.dim), dim=2)  # (B, F, C)
        s_cur = self.feature_sum(cur.view(B, frames, T, self.dim), dim=2)
        acc_sums, acc_counts = self._running_sums(s_ctx, T)  # the committed state after each frame
        past_sums = torch.cat([torch.zeros_like(acc_sums[:, :1]), acc_sums[:, :-1]], dim=1)
        past_counts = torch.cat([torch.zeros_like(acc_counts[:, :1]), acc_counts[:, :-1]], dim=1)
        lam = self.decays()
        if lam is not None:  # as `step`: the past decays once more before the frame joins it
            lam = lam.to(s_ctx.dtype)
            past_sums, past_counts = lam * past_sums, lam * past_counts
        agg_ctx, agg_cur = acc_sums / acc_counts, (past_sums + s_cur) / (past_counts + T)
        out_ctx = self.read(ctx.view(B, frames, T, self.dim), agg_ctx.unsqueeze(2))
        out_cur = self.read(cur.view(B, frames, T, self.dim), agg_cur.unsqueeze(2))
        return out_ctx.view(B, N, self.dim), out_cur.view(B, N, self.dim)

    def _running_sums(self, sums: torch.Tensor, tokens: int, initial_state: Optional[PoMState] = None) -> tuple:
        """The state (A_f, N_f) after each frame, from `initial_state` (None: empty): decayed
        feature sums (B, F, C) and token counts broadcastable to them ((1 or B), F, (1 or C)),
        by a scan over frames (a cumsum without decay).

        A scan is O(F C); the (F, F, C) lower-triangular weight tensor it replaces cost
        O(F^2 C) and took 14% of a forward+backward at 64 frames (141 of ~1000 ms).
        """
        frames = sums.shape[1]
        if self.decay_rate is None:
            counts = tokens * torch.arange(1, frames + 1, device=sums.device, dtype=sums.dtype)[None, :, None]
            if initial_state is None:
                return sums.cumsum(dim=1), counts
            return initial_state.sums[:, None] + sums.cumsum(dim=1), initial_state.counts[:, None] + counts
        lam = self.decays().to(sums.dtype)
        if initial_state is None:
            acc_sums, acc_counts = torch.zeros_like(sums[:, 0]), torch.zeros_like(lam)[None]
        else:
            acc_sums, acc_counts = initial_state.sums, initial_state.counts
        all_sums, all_counts = [], []
        for f in range(frames):
            acc_sums = lam * acc_sums + sums[:, f]
            acc_counts = lam * acc_counts + tokens
            all_sums.append(acc_sums)
            all_counts.append(acc_counts)
        return torch.stack(all_sums, dim=1), torch.stack(all_counts, dim=1)

    # --------------------------------------------------------------------- streaming
    def init_state(self, batch: int, device=None, dtype=None) -> PoMState:
        zeros = torch.zeros(batch, self.state_dim, device=device, dtype=dtype)
        return PoMState(sums=zeros, counts=zeros.clone())

    def step(self, x: torch.Tensor, state: PoMState) -> tuple:
        """One frame with the past: `block_causal` of a single frame from `state`.
        x (B, T, D) -> (out (B, T, D), the state with this frame folded in)."""
        return self.block_causal(x, 1, state)


class Attention(nn.Module):
    """Multi-head SDPA attention with the PoM API: the baseline every benchmark compares against.

    Same roles as `PoM`: `block_causal(x, frames, initial_state) -> (out, final_state)` (dense
    block-causal mask; the state is the KV cache, which grows with the video), `init_state/step`,
    `context/read/forward` (cross-attention).
    """

    def __init__(self, dim: int, heads: int = 4, *, context_dim: Optional[int] = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.dim, self.heads = dim, heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.heads, self.dim // self.heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        B, _, N, _ = x.shape
        return self.out(x.transpose(1, 2).reshape(B, N, self.dim))

    def _kv(self, x: torch.Tensor):
        k, v = self.kv(x).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def context(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
        k, v = self._kv(x)
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return k, v, mask

    def read(self, q: torch.Tensor, ctx) -> torch.Tensor:
        k, v, mask = ctx
        has_key = mask.any(dim=1)  # an all-empty context gives 0, as PoM does
        allowed = (mask | ~has_key[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(self._split(self.q(q)), k, v, attn_mask=allowed)
        return self._merge(out) * has_key[:, None, None].to(q.dtype)

    def forward(self, q, x=None, mask=None):
        return self.read(q, self.context(q if x is None else x, mask))

    def block_causal(self, x: torch.Tensor, frames: int, initial_state: Optional[KVState] = None,
                     keep: Optional[int] = None) -> tuple:
        """Block-causal attention after the keys cached in `initial_state` (None: none).
        x (B, N, D) -> (out (B, N, D), the KV cache with x's keys appended: those of its first
        `keep` frames only, when given)."""
        N = x.shape[1]
        frame_of = torch.arange(N, device=x.device) // (N // frames)
        mask = frame_of[:, None] >= frame_of[None, :]  # (N, N): the dense mask PoM avoids
        k, v = self._kv(x)
        if initial_state is not None and initial_state.k is not None:
            k, v = torch.cat([initial_state.k, k], dim=2), torch.cat([initial_state.v, v], dim=2)
            past = initial_state.k.shape[2]
            mask = torch.cat([mask.new_ones(N, past), mask], dim=1)  # the cached past is all visible
        out = F.scaled_dot_product_attention(self._split(self.q(x)), k, v, attn_mask=mask)
        if keep is not None:
            kept = k.shape[2] - (frames - keep) * (N // frames)
            k, v = k[:, :, :kept], v[:, :, :kept]
        return self._merge(out), KVState(k=k, v=v)

    def block_causal_pair(self, ctx: torch.Tensor, cur: torch.Tensor, frames: int) -> tuple:
        """Teacher forcing (see `PoM.block_causal_pair`): one pass over [ctx; cur] with a
        (2N, 2N) mask: ctx frame f sees ctx frames <= f; cur frame f sees ctx frames < f
        and cur frame f."""
        N = ctx.shape[1]
        frame_of = torch.arange(N, device=ctx.device) // (N // frames)
        f_q, f_k = frame_of[:, None], frame_of[None, :]
        seen = f_q >= f_k
        mask = torch.cat([torch.cat([seen, torch.zeros_like(seen)], 1),
                          torch.cat([f_q > f_k, f_q == f_k], 1)], 0)
        x = torch.cat([ctx, cur], dim=1)
        k, v = self._kv(x)
        out = self._merge(F.scaled_dot_product_attention(self._split(self.q(x)), k, v, attn_mask=mask))
        return out[:, :N], out[:, N:]

    def init_state(self, batch: int, device=None, dtype=None) -> KVState:
        return KVState(k=None, v=None)

    def step(self, x: torch.Tensor, state: KVState) -> tuple:
        """One frame: `block_causal` of a single frame from `state`."""
        return self.block_causal(x, 1, state)


def make_mixer(kind: str, dim: int, *, degree: int = 2, expand: int = 2, heads: int = 4,
               context_dim: Optional[int] = None, decay: bool = True) -> nn.Module:
    """`pom` or `attention`, with the same methods."""
    if kind == "pom":
        return PoM(dim, degree, expand, context_dim=context_dim, decay=decay)
    if kind == "attention":
        return Attention(dim, heads, context_dim=context_dim)
    raise ValueError(f"unknown mixer '{kind}': use 'pom' or 'attention'")
