"""The streaming sampler equals a non-streaming reference that reruns the parallel model."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from videogen.errors import UsageError
from videogen.models.dit import PoMVideoDiT
from videogen.models.vae import vae_factors
from videogen.diffusion.sampler import SamplerSettings, StreamingSampler, euler_sigmas, parse_prompt_schedule

C, H, W, TEXT_DIM = 4, 8, 8, 16


def make_model(mixer):
    model = PoMVideoDiT(in_channels=C, patch_size=2, dim=32, depth=2, mixer=mixer, text_dim=TEXT_DIM).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def stream_latents(model, contexts, frames, shape, settings, scheduler, generator, switch="swap"):
    """The sampler over `frames` latent frames; contexts [(first latent frame, TextContext)]."""
    schedule = list(contexts)
    sampler = StreamingSampler(model, schedule.pop(0)[1], shape, settings, scheduler, generator)
    out = []
    for f in range(frames):
        while schedule and schedule[0][0] <= f:
            sampler.set_context(schedule.pop(0)[1], switch)
        out.append(sampler.next())
    return out


def reference_sample(model, text, mask, frames, settings, scheduler, seed, shape=(C, H, W)):
    """Non-streaming: for every Euler step, run the *parallel* model over all frames so
    far (committed frames as context at the context-noise level) and read the last one."""
    gen = torch.Generator().manual_seed(seed)
    sigmas = euler_sigmas(scheduler, settings.steps)
    c = settings.context_noise
    context, clean = [], []
    for _ in range(frames):
        x = torch.randn(1, *shape, generator=gen)
        for i in range(settings.steps):
            def velocity(prompt_rows):
                seq = torch.stack(context + [x], dim=2)  # (1, C, f+1, H, W)
                t = torch.tensor([[c] * len(context) + [sigmas[i].item()]])
                return model(seq, t, text[prompt_rows], mask[prompt_rows])[:, :, -1]
            v_c, v_u = velocity([0]), velocity([1])
            v = v_u + settings.guidance * (v_c - v_u)
            x = x + (sigmas[i + 1] - sigmas[i]).item() * v
        noise = torch.randn(1, *shape, generator=gen)
        context.append((1 - c) * x + c * noise)
        clean.append(x)
    return torch.stack(clean, dim=2)


def assert_streaming_equals_reference(model, shape, text_dim):
    """4 latent frames of `shape` (C, H, W) streamed equal the parallel reference."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    settings = SamplerSettings(steps=3, guidance=2.5, context_noise=0.1)
    text = torch.randn(2, 5, text_dim)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)  # cond rows, uncond rows
    with torch.no_grad():
        ctx = model.encode_text(text, mask)
        streamed = torch.stack(list(stream_latents(model, [(0, ctx)], 4, shape, settings, scheduler,
                                                   torch.Generator().manual_seed(7))), dim=2)
        reference = reference_sample(model, text, mask, 4, settings, scheduler, seed=7, shape=shape)
    assert streamed.shape[-2:] == shape[-2:]
    assert (streamed - reference).abs().max().item() <= 1e-4


@pytest.mark.parametrize("mixer", ["pom", "attention"])
def test_streaming_sampler_equals_parallel_reference(mixer):
    assert_streaming_equals_reference(make_model(mixer), (C, H, W), TEXT_DIM)


def test_streaming_equals_parallel_on_the_non_square_grid_of_a_h_x_w_pipeline(wide_model):
    """The tiny pipeline at data.size=[32,64]: its transformer on its own 8x16 latent grid."""
    from videogen.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(wide_model)
    model = pipe.transformer.eval()
    with torch.no_grad():  # off the zero-initialised AdaLN gates, so every path is exercised
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    _, spatial = vae_factors(pipe.vae)
    shape = (model.config.in_channels, pipe.config.height // spatial, pipe.config.width // spatial)
    assert shape[1:] == (8, 16)
    assert_streaming_equals_reference(model, shape, model.config.text_dim)


def test_seed_fixes_output_and_schedule_swaps_context():
    model = make_model("pom")
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    settings = SamplerSettings(steps=2, guidance=1.0)
    with torch.no_grad():
        ctx_a = model.encode_text(torch.randn(1, 3, TEXT_DIM))
        ctx_b = model.encode_text(torch.randn(1, 3, TEXT_DIM))

        def run(contexts, seed):
            return torch.stack(list(stream_latents(model, contexts, 4, (C, H, W), settings, scheduler,
                                                   torch.Generator().manual_seed(seed))), dim=2)

        a1, a2 = run([(0, ctx_a)], 1), run([(0, ctx_a)], 1)
        swapped = run([(0, ctx_a), (2, ctx_b)], 1)
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, run([(0, ctx_a)], 2))
    assert torch.equal(swapped[:, :, :2], a1[:, :, :2])  # before the boundary: unchanged
    assert not torch.allclose(swapped[:, :, 2:], a1[:, :, 2:])  # after it: the new prompt


def test_prompt_schedule_parsing():
    assert parse_prompt_schedule("0:a red circle;120: a blue square ") == [(0, "a red circle"), (120, "a blue square")]
    for bad in ("a red circle", "5:a;1:b", "10:a red circle", ";"):
        with pytest.raises(UsageError):
            parse_prompt_schedule(bad)


def flat_state(state):
    return [x for s in state for x in list(vars(s.mixer).values()) + [s.ffn_prev]]


def assert_states_close(a, b, tol=1e-5):
    assert [s.frames for s in a] == [s.frames for s in b]
    for x, y in zip(flat_state(a), flat_state(b)):
        assert x.shape == y.shape and (x - y).abs().max().item() <= tol


@pytest.mark.parametrize("mixer", ["pom", "attention"])
def test_priming_reaches_the_state_the_sampler_reaches(mixer):
    """Committing z_0..z_k through the init path == the sampler's state after producing them,
    with the same commit noise (design §10), to 1e-5."""
    model = make_model(mixer)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    settings = SamplerSettings(steps=2, guidance=2.0, context_noise=0.3)
    with torch.no_grad():
        ctx = model.encode_text(torch.randn(2, 4, TEXT_DIM))
    sampler = StreamingSampler(model, ctx, (C, H, W), settings, scheduler, torch.Generator().manual_seed(5))
    produced = torch.stack([sampler.next() for _ in range(4)], dim=2)
    replay = torch.Generator().manual_seed(5)  # the sampler draws start noise, then commit noise, per frame
    commit_noise = []
    for _ in range(4):
        torch.randn(1, C, H, W, generator=replay)
        commit_noise.append(torch.randn(1, C, H, W, generator=replay))
    primed = StreamingSampler(model, ctx, (C, H, W), settings, scheduler, torch.Generator().manual_seed(0))
    primed.prime(produced, noise=torch.stack(commit_noise, dim=2))
    assert_states_close(primed.state, sampler.state)
    assert primed.frames == sampler.frames == 4
    assert all(torch.allclose(a[0], b[0], atol=1e-6) and torch.equal(a[1], b[1]) for a, b in zip(primed.ring, sampler.ring))


@pytest.mark.parametrize("mixer", ["pom", "attention"])
def test_recommit_switch_is_bounded_and_keeps_the_ring_constant(mixer):
    model = make_model(mixer)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    settings = SamplerSettings(steps=1, guidance=1.0)
    with torch.no_grad():
        ctx_a, ctx_b = (model.encode_text(torch.randn(1, 3, TEXT_DIM)) for _ in range(2))
    sampler = StreamingSampler(model, ctx_a, (C, H, W), settings, scheduler, torch.Generator().manual_seed(1), ring=3)
    for _ in range(2):
        sampler.next()
    before = sampler.state
    sampler.set_context(ctx_a, "recommit")  # the ring holds every frame: re-committing changes nothing
    assert_states_close(sampler.state, before)
    for _ in range(4):
        sampler.next()
    assert len(sampler.ring) == 3  # constant size
    sampler.set_context(ctx_b, "recommit")
    # the state now depends on the last 3 frames only, committed under the new prompt
    fresh = StreamingSampler(model, ctx_b, (C, H, W), settings, scheduler, torch.Generator())
    fresh.state = model.init_state(1)
    for s in fresh.state:
        s.frames = 3
    c = settings.context_noise
    committed = torch.stack([(1 - c) * z + c * n for z, n in sampler.ring], dim=2)
    fresh.state = model.prefill(committed, torch.full((1, 3), c), ctx_b, fresh.state)
    assert_states_close(sampler.state, fresh.state)
    assert sampler.state[0].frames == 6
    with pytest.raises(UsageError):
        sampler.set_context(ctx_b, "blend")


@pytest.mark.parametrize("mixer,guidance", [("pom", 2.0), ("attention", 1.0)])
def test_lookahead_equals_one_call_per_commit_and_step(mixer, guidance):
    """The next frame's first step riding in the commit pass gives the frames of a step after
    the commit (across a swap and a re-commit of the prompt), from the same noise, with one
    model call fewer per frame."""
    model = make_model(mixer)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    settings = SamplerSettings(steps=2, guidance=guidance, context_noise=0.2)
    rows = 2 if guidance != 1.0 else 1
    with torch.no_grad():
        ctx_a, ctx_b = (model.encode_text(torch.randn(rows, 3, TEXT_DIM)) for _ in range(2))
    calls = []
    for name in ("step", "prefill", "prefill_then_step"):
        original = getattr(model, name)
        setattr(model, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))

    def run(lookahead):
        calls.clear()
        sampler = StreamingSampler(model, ctx_a, (C, H, W), settings, scheduler, torch.Generator().manual_seed(3))
        out = []
        for f in range(6):
            if f in (2, 4):
                sampler.set_context(ctx_b if f == 2 else ctx_a, "swap" if f == 2 else "recommit")
            out.append(sampler.next(lookahead=lookahead and f < 5))
        return torch.stack(out, dim=2), list(calls)

    (ahead, ahead_calls), (plain, plain_calls) = run(True), run(False)
    assert (ahead - plain).abs().max().item() <= 1e-5 and ahead.abs().mean() > 1e-2
    assert len(plain_calls) == 6 * (settings.steps + 1) + 1  # + the re-commit
    # frame 0's first step has no commit before it; a switch makes the velocity taken ahead
    # stale, so it is taken again at frames 2 and 4
    assert ahead_calls.count("prefill_then_step") == 5 and len(ahead_calls) == 6 * settings.steps + 1 + 2 + 1
