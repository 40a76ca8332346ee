"""PoMVideoDiT: streaming == parallel (the central invariant), causality, save/load, grads."""

import pytest
import torch

from videogen.models.dit import PoMVideoDiT, with_frame_positions

B, C, H, W, TEXT_DIM = 2, 4, 8, 8, 16


def make_model(mixer="pom", decay=True, **kw):
    model = PoMVideoDiT(in_channels=C, patch_size=2, dim=32, depth=2, degree=2, expand=2, heads=4,
                        mixer=mixer, decay=decay, text_dim=TEXT_DIM, **kw).eval()
    # AdaLN-zero and the zero-init temporal tap make a fresh model nearly trivial (every
    # residual branch closed): open them so the tests exercise every path.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for block in model.blocks:
            if getattr(block.self_mixer, "decay_rate", None) is not None:
                block.self_mixer.decay_rate.copy_(torch.rand_like(block.self_mixer.decay_rate))
                block.self_mixer.decay_rate[::3] = 0.0
    return model


def make_inputs(frames):
    latents = torch.randn(B, C, frames, H, W)
    t = torch.rand(B, frames)
    text = torch.randn(B, 6, TEXT_DIM)
    # different text lengths, one of them empty (fully padded)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    return latents, t, text, mask


def stream(model, latents, t, text, mask):
    ctx = model.encode_text(text, mask)
    state = model.init_state(latents.shape[0])
    outs = []
    for f in range(latents.shape[2]):
        outs.append(model.step(latents[:, :, f], t[:, f], ctx, state))
        state = model.commit(latents[:, :, f], t[:, f], ctx, state)
    return torch.stack(outs, dim=2)


@pytest.mark.parametrize("mixer,decay,positions", [("pom", True, 0), ("pom", False, 0), ("attention", True, 0),
                                                    ("pom", True, 2)])
@pytest.mark.parametrize("frames", [1, 3, 7])
def test_streaming_equals_parallel(mixer, decay, positions, frames):
    """positions=2 with 7 frames: frames 2..6 share the clamped embedding in both paths."""
    model = make_model(mixer, decay, frame_positions=positions)
    inputs = make_inputs(frames)
    with torch.no_grad():
        parallel = model(*inputs)
        streamed = stream(model, *inputs)
    assert parallel.shape == inputs[0].shape
    assert parallel.abs().mean() > 1e-2  # not trivially zero
    assert (parallel - streamed).abs().max().item() <= 1e-5


@pytest.mark.parametrize("mixer,decay,positions", [("pom", True, 0), ("pom", False, 0), ("attention", True, 0),
                                                    ("pom", True, 2)])
@pytest.mark.parametrize("committed", [1, 3])
def test_prefill_then_step_equals_prefill_and_step(mixer, decay, positions, committed):
    """One pass for a commit and the next frame's first step: the velocity of `step` after
    `prefill`, and the state of `prefill` alone (the next frame stays out of it), to 1e-5;
    streaming on from that state gives the same frames too."""
    model = make_model(mixer, decay, frame_positions=positions)
    latents, t, text, mask = make_inputs(committed + 2)
    with torch.no_grad():
        ctx = model.encode_text(text, mask)
        start = model.commit(latents[:, :, 0], t[:, 0], ctx, model.init_state(B))  # a state with a past
        done, nxt = latents[:, :, 1:committed + 1], latents[:, :, committed + 1]
        state = model.prefill(done, t[:, 1:committed + 1], ctx, start)
        expected = model.step(nxt, t[:, committed + 1], ctx, state)
        velocity, fused = model.prefill_then_step(done, t[:, 1:committed + 1], nxt, t[:, committed + 1], ctx, start)
        assert expected.abs().mean() > 1e-2
        assert (velocity - expected).abs().max().item() <= 1e-5
        assert [s.frames for s in fused] == [s.frames for s in state] == [committed + 1] * len(state)
        again, again_fused = (model.step(nxt, t[:, 0], ctx, st) for st in (state, fused))
        assert (again - again_fused).abs().max().item() <= 1e-5


def stream_teacher(model, context, t_context, latents, t, text, mask):
    """What the sampler does: step each frame on the committed context frames before it."""
    ctx = model.encode_text(text, mask)
    state = model.init_state(latents.shape[0])
    outs = []
    for f in range(latents.shape[2]):
        outs.append(model.step(latents[:, :, f], t[:, f], ctx, state))
        state = model.commit(context[:, :, f], t_context[:, f], ctx, state)
    return torch.stack(outs, dim=2)


@pytest.mark.parametrize("mixer,decay,positions", [("pom", True, 0), ("pom", False, 0), ("attention", True, 0),
                                                    ("pom", True, 2)])
@pytest.mark.parametrize("frames", [1, 4])
def test_teacher_forcing_equals_streaming(mixer, decay, positions, frames):
    """forward_teacher (training with committed context) == stream, step on commit, to 1e-5."""
    model = make_model(mixer, decay, frame_positions=positions)
    latents, t, text, mask = make_inputs(frames)
    context, t_context = torch.randn_like(latents), torch.full_like(t, 0.05)
    with torch.no_grad():
        parallel = model.forward_teacher(context, t_context, latents, t, text, mask)
        streamed = stream_teacher(model, context, t_context, latents, t, text, mask)
        plain = model(latents, t, text, mask)
    assert parallel.shape == latents.shape and parallel.abs().mean() > 1e-2
    assert (parallel - streamed).abs().max().item() <= 1e-5
    # frame 0 has no context; later frames read the context, not the other noisy frames
    assert (parallel[:, :, 0] - plain[:, :, 0]).abs().max().item() <= 1e-5
    if frames > 1:
        assert (parallel[:, :, 1:] - plain[:, :, 1:]).abs().max().item() > 1e-3


@pytest.mark.parametrize("mixer", ["pom", "attention"])
def test_causality_bit_identical(mixer):
    model = make_model(mixer)
    latents, t, text, mask = make_inputs(5)
    changed = latents.clone()
    changed[:, :, 3:] = torch.randn_like(changed[:, :, 3:])
    t2 = t.clone()
    t2[:, 3:] = torch.rand_like(t2[:, 3:])
    with torch.no_grad():
        a = model(latents, t, text, mask)
        b = model(changed, t2, text, mask)
    assert torch.equal(a[:, :, :3], b[:, :, :3])
    assert not torch.equal(a[:, :, 3], b[:, :, 3])


def test_frame_positions_tell_the_start_apart():
    """The same frame after the same (empty-ish) past: index 0, 1 and >= K read differently
    with frame positions, and only through them (K=0 has no index at all)."""
    latents, t, text, mask = make_inputs(1)
    for positions in (0, 2):
        model = make_model(frame_positions=positions)
        ctx = model.encode_text(text, mask)
        outs = []
        with torch.no_grad():
            for index in (0, 1, 2, 5):
                state = [type(s)(mixer=s.mixer, ffn_prev=s.ffn_prev, frames=index) for s in model.init_state(B)]
                outs.append(model.step(latents[:, :, 0], t[:, 0], ctx, state))
        same = [torch.equal(outs[0], o) for o in outs[1:]]
        assert same == ([True, True, True] if positions == 0 else [False, False, False])
        if positions:
            assert torch.equal(outs[2], outs[3])  # clamped: 2 and 5 share the last embedding


def test_with_frame_positions_grows_a_trained_model_exactly():
    """init_from a pipeline without frame positions: the grown copy (zeroed embeddings)
    computes exactly what the model did; a different K on a model that has them is refused."""
    model = make_model()
    inputs = make_inputs(5)
    grown = with_frame_positions(model, 3)
    assert grown.config.frame_positions == 3 and grown.frame_embed.weight.abs().sum() == 0
    with torch.no_grad():
        assert torch.equal(model(*inputs), grown(*inputs))
    assert with_frame_positions(grown, 3) is grown
    with pytest.raises(ValueError, match="frame_positions=3"):
        with_frame_positions(grown, 4)


def test_pom_state_is_constant_size_attention_grows():
    for mixer, grows in (("pom", False), ("attention", True)):
        model = make_model(mixer)
        latents, t, text, mask = make_inputs(4)
        ctx = model.encode_text(text, mask)
        state = model.init_state(B)
        sizes = []
        with torch.no_grad():
            for f in range(4):
                state = model.commit(latents[:, :, f], t[:, f], ctx, state)
                sizes.append(sum(x.numel() for s in state for x in vars(s.mixer).values()))
        assert (sizes[-1] > sizes[0]) == grows


def test_save_load_roundtrip(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = PoMVideoDiT.from_pretrained(tmp_path).eval()
    inputs = make_inputs(3)
    with torch.no_grad():
        assert torch.equal(model(*inputs), loaded(*inputs))


@pytest.mark.parametrize("mixer", ["pom", "attention"])
def test_every_parameter_gets_a_gradient(mixer):
    model = make_model(mixer).train()
    latents, t, text, mask = make_inputs(3)
    mask[1, :2] = True  # some text in both prompts so cross paths carry gradient
    model(latents, t, text, mask).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not missing, missing


def test_any_length_and_size():
    model = make_model()
    with torch.no_grad():
        out = model(torch.randn(1, C, 2, 4, 12), torch.rand(1, 2), torch.randn(1, 3, TEXT_DIM))
    assert out.shape == (1, C, 2, 4, 12)


def flat_state(state):
    """Every tensor of a DiT state, in a fixed order."""
    return [x for s in state for x in list(vars(s.mixer).values()) + [s.ffn_prev]]


@pytest.mark.parametrize("mixer,positions", [("pom", 0), ("attention", 0), ("pom", 2)])
def test_prefill_equals_commit_by_commit(mixer, positions):
    """prefill of k frames in one pass == k commits; the next frame's velocity agrees too."""
    model = make_model(mixer, frame_positions=positions)
    latents, t, text, mask = make_inputs(4)
    ctx = model.encode_text(text, mask)
    with torch.no_grad():
        stepped = model.init_state(B)
        for f in range(3):
            stepped = model.commit(latents[:, :, f], t[:, f], ctx, stepped)
        prefilled = model.prefill(latents[:, :, :3], t[:, :3], ctx, model.init_state(B))
        v_step = model.step(latents[:, :, 3], t[:, 3], ctx, stepped)
        v_pre = model.step(latents[:, :, 3], t[:, 3], ctx, prefilled)
    assert prefilled[0].frames == stepped[0].frames == 3
    for a, b in zip(flat_state(prefilled), flat_state(stepped)):
        assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-5
    assert (v_step - v_pre).abs().max().item() <= 1e-5 and v_step.abs().mean() > 1e-2


@pytest.mark.parametrize("rows", [B, 1])  # one row: x[:, -1] of a (1, F, ...) tensor is contiguous, yet a view
@pytest.mark.parametrize("decay", [True, False])
def test_prefill_keeps_no_more_storage_than_commit_by_commit(decay, rows):
    """The state after prefilling k frames holds the last frame only, as after k commits: no
    tensor of it is a view into a k-frame intermediate (the MixFFN map, the PoM sums)."""
    model = make_model("pom", decay)
    latents, t, text, mask = (x[:rows] for x in make_inputs(4))
    ctx = model.encode_text(text, mask)
    with torch.no_grad():
        stepped = model.init_state(rows)
        for f in range(4):
            stepped = model.commit(latents[:, :, f], t[:, f], ctx, stepped)
        prefilled = model.prefill(latents, t, ctx, model.init_state(rows))
    storage = lambda state: [x.untyped_storage().nbytes() for x in flat_state(state)]  # noqa: E731
    assert storage(prefilled) == storage(stepped)
    assert storage(stepped) == [x.numel() * x.element_size() for x in flat_state(stepped)]


def grads(model, loss_fn):
    model.zero_grad()
    loss_fn(model).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mixer", ["pom", "attention"])
def test_gradient_checkpointing_gives_the_same_gradients(mixer):
    model = make_model(mixer).train()
    latents, t, text, mask = make_inputs(3)
    mask[1, :2] = True
    context, t_context = torch.randn_like(latents), torch.full_like(t, 0.05)
    losses = {
        "diffusion forcing": lambda m: m(latents, t, text, mask).pow(2).mean(),
        "teacher forcing": lambda m: m(latents, t, text, mask, context=context, t_context=t_context).pow(2).mean(),
    }
    for name, loss_fn in losses.items():
        plain = grads(model, loss_fn)
        model.enable_gradient_checkpointing()
        assert model.is_gradient_checkpointing
        checkpointed = grads(model, loss_fn)
        model.disable_gradient_checkpointing()
        assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
        worst = max((plain[n] - checkpointed[n]).abs().max().item() for n in plain)
        assert worst <= 1e-6, (name, worst)


def test_mixffn_maps_are_the_token_grid():
    """The channels-last view the depthwise convs read is the (y x) token grid, row-major:
    MixFFN equals the same convs run on maps built by an explicit NCHW rearrange."""
    from einops import rearrange

    from videogen.models.dit import MixFFN

    torch.manual_seed(0)
    ffn = MixFFN(8, 2).eval()
    with torch.no_grad():
        ffn.conv_prev.weight.normal_()
        x, before, grid = torch.randn(2, 3, 12, 8), torch.randn(2, 12, 16), (3, 4)
        out, last = ffn(x, grid, before)
        h = ffn.fc1(x)
        prev = torch.cat([before[:, None], h[:, :-1]], dim=1)
        maps = lambda t: rearrange(t.flatten(0, 1), "m (y x) c -> m c y x", y=3, x=4)  # noqa: E731
        mixed = rearrange(ffn.conv(maps(h)) + ffn.conv_prev(maps(prev)), "m c y x -> m (y x) c").view_as(h)
        reference = ffn.fc2(torch.nn.functional.gelu(mixed))
    assert torch.allclose(out, reference, atol=1e-6) and torch.equal(last, h[:, -1])
