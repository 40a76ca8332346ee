"""The PoM mixer: O(N) block-causal == dense reference, streaming == parallel, masks."""

import pytest
import torch

from videogen.models.mixers import Attention, PoM, PoMState


def dense_block_causal_reference(pom: PoM, x: torch.Tensor, frames: int) -> torch.Tensor:
    """Naive O(N^2) PoM: an explicit N x N weight matrix, frame f's tokens weigh token j of
    frame g <= f by lambda^(f-g). Written independently of PoM.block_causal."""
    B, N, D = x.shape
    T = N // frames
    h = pom.features(x)  # (B, N, C)
    frame_of = torch.arange(N) // T
    lag = (frame_of[:, None] - frame_of[None, :]).double()  # (N, N)
    lam = pom.decays()
    lam = torch.ones(pom.state_dim, dtype=torch.float64) if lam is None else lam.double()
    w = torch.where(lag[..., None] >= 0, lam ** lag.clamp(min=0)[..., None], torch.zeros(()))  # (N, N, C)
    agg = torch.einsum("ijc,bjc->bic", w, h.double()) / w.sum(dim=1)
    return pom.ag_proj(torch.sigmoid(pom.se_proj(x)) * agg.float())


@pytest.mark.parametrize("decay", [True, False])
@pytest.mark.parametrize("frames", [1, 3, 6])
def test_block_causal_matches_dense_reference(decay, frames):
    pom = PoM(16, degree=3, expand=2, decay=decay)
    if decay:  # make the decays non-trivial and varied
        pom.decay_rate.data = torch.rand(pom.state_dim) * 2
    x = torch.randn(2, frames * 5, 16)
    fast, _ = pom.block_causal(x, frames)
    ref = dense_block_causal_reference(pom, x, frames)
    assert (fast - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("decay", [True, False])
def test_streaming_step_matches_block_causal(decay):
    pom = PoM(16, degree=2, expand=2, decay=decay)
    frames, T = 5, 4
    x = torch.randn(2, frames * T, 16)
    par, _ = pom.block_causal(x, frames)
    state = pom.init_state(2)
    for f in range(frames):
        xf = x[:, f * T:(f + 1) * T]
        out, state = pom.step(xf, state)
        assert (out - par[:, f * T:(f + 1) * T]).abs().max().item() <= 1e-5
    assert state.sums.shape == (2, pom.state_dim)  # constant-size state


def test_decay_off_is_plain_running_mean():
    pom = PoM(8, degree=2, expand=1, decay=False)
    x = torch.randn(1, 3 * 2, 8)
    h = pom.features(x)
    mean_to_frame1 = h[:, :4].mean(dim=1, keepdim=True)  # frames 0 and 1
    expected = pom.ag_proj(torch.sigmoid(pom.se_proj(x[:, 2:4])) * mean_to_frame1)
    assert torch.allclose(pom.block_causal(x, 3)[0][:, 2:4], expected, atol=1e-6)


def test_decay_init_has_exact_ones_and_spread():
    lam = PoM(32, decay=True).decays()
    assert (lam == 1).sum() >= lam.numel() // 4
    assert lam.min() < 0.6  # short memories exist too


def test_padding_mask_and_empty_context():
    pom = PoM(8, context_dim=6, decay=False)
    q = torch.randn(3, 4, 8)
    text = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out = pom(q, text, mask)
    assert torch.isfinite(out).all()
    # padding: batch 0 equals running on its valid tokens alone
    assert torch.allclose(out[0], pom(q[:1], text[:1, :3])[0], atol=1e-6)
    # all-empty: the aggregate is exactly 0, so the output is the output bias only
    assert torch.equal(pom.context(text, mask)[2], torch.zeros(pom.state_dim))
    assert torch.allclose(out[2], pom.ag_proj.bias.expand(4, 8))


def test_degree_features_are_products():
    pom = PoM(4, degree=3, expand=1, decay=False)
    x = torch.randn(2, 4)
    g = torch.nn.functional.gelu(pom.po_proj(x)).chunk(3, dim=-1)
    h = pom.features(x)
    assert torch.allclose(h, torch.cat([g[0], g[0] * g[1], g[0] * g[1] * g[2]], dim=-1))


# ------------------------------------------------ one signature: (out, final_state) from an initial state
def make_mixer_for(kind, decay):
    torch.manual_seed(0)
    if kind == "attention":
        return Attention(16, heads=4)
    pom = PoM(16, degree=2, expand=2, decay=decay)
    if decay:
        pom.decay_rate.data = torch.rand(pom.state_dim) * 2
    return pom


def state_tensors(state):
    return [state.sums, state.counts] if isinstance(state, PoMState) else [state.k, state.v]


def assert_states_close(a, b, tol=1e-5):
    for x, y in zip(state_tensors(a), state_tensors(b)):
        assert x.shape == y.shape and (x - y).abs().max().item() <= tol


def warm_state(mixer, T):
    """A non-trivial state S: two frames already folded in."""
    return mixer.block_causal(torch.randn(2, 2 * T, 16), 2)[1]


@pytest.mark.parametrize("kind,decay", [("pom", True), ("pom", False), ("attention", False)])
def test_block_causal_from_state_equals_frame_by_frame_steps(kind, decay):
    mixer, frames, T = make_mixer_for(kind, decay), 4, 3
    start = warm_state(mixer, T)
    x = torch.randn(2, frames * T, 16)
    out, final = mixer.block_causal(x, frames, start)
    state = start
    for f in range(frames):
        step_out, state = mixer.step(x[:, f * T:(f + 1) * T], state)
        assert (step_out - out[:, f * T:(f + 1) * T]).abs().max().item() <= 1e-5
    assert_states_close(final, state)
    assert out.abs().mean() > 1e-3


@pytest.mark.parametrize("kind,decay", [("pom", True), ("pom", False), ("attention", False)])
def test_prefill_then_continue_equals_one_pass(kind, decay):
    mixer, T = make_mixer_for(kind, decay), 3
    x = torch.randn(2, 6 * T, 16)
    whole, whole_state = mixer.block_causal(x, 6)
    head, state = mixer.block_causal(x[:, :2 * T], 2)  # prefill k = 2 frames
    tail, state = mixer.block_causal(x[:, 2 * T:], 4, state)
    assert (torch.cat([head, tail], dim=1) - whole).abs().max().item() <= 1e-5
    assert_states_close(state, whole_state)


@pytest.mark.parametrize("decay", [True, False])
def test_fast_block_causal_equals_readable_reference(decay):
    pom, T = make_mixer_for("pom", decay), 5
    start = warm_state(pom, T)
    x = torch.randn(2, 3 * T, 16)
    fast, fast_state = pom.block_causal(x, 3, start)
    ref, ref_state = pom.block_causal_reference(x, 3, start)
    assert (fast - ref).abs().max().item() <= 1e-5
    assert_states_close(fast_state, ref_state)
    assert fast_state.sums.shape == (2, pom.state_dim)  # constant size, whatever the length
