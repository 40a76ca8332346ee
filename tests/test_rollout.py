"""Training on the model's own streams (train.rollout): the context is what the streaming
sampler commits after the primed clip start, and the loss's parallel pass reads it as
streaming does; a run trains on it."""

import os

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from videogen.diffusion.sampler import SamplerSettings, StreamingSampler
from videogen.errors import UsageError
from videogen.training.config import load_config
from videogen.training.dit_task import _denoise_loss, flow_loss, rollout_context, rollout_weights, train
from videogen.training.logs import read_log

from test_distill import make_model  # the same small DiT, off its zero-initialised gates

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.yaml")
C, H, W, TEXT_DIM, FRAMES = 4, 8, 8, 16, 5
LEVEL = 0.3


def rollout_cfg(prime):
    return load_config(TINY, ["sampling.steps=3", "sampling.guidance=2.5", f"sampling.context_noise={LEVEL}",
                              f"train.rollout_prime={prime}"])


@pytest.mark.parametrize("mixer", ["pom", "attention"])
@pytest.mark.parametrize("prime", [1, 2])
def test_the_rollout_is_the_guided_stream_and_the_loss_reads_it_as_streaming_does(mixer, prime):
    """Per row: the primed frames are the clip's, re-noised with the sampler's first draws;
    the later frames are what a StreamingSampler primed with them streams (with CFG against
    the empty prompt); and the teacher-forced pass on that context gives, for every frame,
    the velocity that streaming gives after committing the context frames before it."""
    model = make_model(mixer)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    latents = torch.randn(1, C, FRAMES, H, W)
    text, mask = torch.randn(1, 5, TEXT_DIM), torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    empty = (torch.randn(1, 2, TEXT_DIM), torch.tensor([[1, 0]], dtype=torch.bool))
    context, stream = rollout_context(model, latents, text, mask, empty, rollout_cfg(prime), scheduler, seed=7)
    assert context.shape == stream.shape == latents.shape
    assert torch.equal(stream[:, :, :prime], latents[:, :, :prime])

    g = torch.Generator().manual_seed(7)
    first_draws = torch.stack([torch.randn(1, C, H, W, generator=g) for _ in range(prime)], dim=2)
    expected_prime = (1 - LEVEL) * latents[:, :, :prime] + LEVEL * first_draws
    assert (context[:, :, :prime] - expected_prime).abs().max().item() <= 1e-6

    pad = torch.zeros(1, 3, TEXT_DIM), torch.zeros(1, 3, dtype=torch.bool)
    rows_text = torch.cat([text, torch.cat([empty[0], pad[0]], dim=1)])
    rows_mask = torch.cat([mask, torch.cat([empty[1], pad[1]], dim=1)])
    with torch.no_grad():
        ctx = model.encode_text(rows_text, rows_mask)
        sampler = StreamingSampler(model, ctx, (C, H, W), SamplerSettings(steps=3, guidance=2.5, context_noise=LEVEL),
                                   scheduler, torch.Generator().manual_seed(7), batch=1, ring=FRAMES)
        sampler.prime(latents[:, :, :prime])
        streamed = [sampler.next() for _ in range(prime, FRAMES)]
    noises = torch.stack([n for _, n in sampler.ring], dim=2)
    assert (stream[:, :, prime:] - torch.stack(streamed, dim=2)).abs().max().item() <= 1e-5
    assert (context - ((1 - LEVEL) * stream + LEVEL * noises)).abs().max().item() <= 1e-5
    assert (stream[:, :, prime:] - latents[:, :, prime:]).abs().max().item() > 0.1  # the model's frames, not the clip's

    noisy, t = torch.randn(1, C, FRAMES, H, W), torch.rand(1, FRAMES)
    with torch.no_grad():
        parallel = model(noisy, t, text, mask, context=context, t_context=torch.full_like(t, LEVEL))
        c1 = model.encode_text(text, mask)
        state = model.init_state(1)
        for k in range(FRAMES):
            v = model.step(noisy[:, :, k], t[:, k], c1, state)
            assert (v - parallel[:, :, k]).abs().max().item() <= 1e-5
            state = model.commit(context[:, :, k], torch.full((1,), LEVEL), c1, state)


def test_the_rollout_loss_denoises_the_clip_on_the_given_context():
    """flow_loss with a context: the clip's frames denoised on it (not on their own past)."""
    model = make_model("pom", seed=1)
    cfg = rollout_cfg(1)
    latents, text = torch.randn(2, C, FRAMES, H, W), torch.randn(2, 5, TEXT_DIM)
    mask = torch.ones(2, 5, dtype=torch.bool)
    context = torch.randn_like(latents)
    with torch.no_grad():
        own = flow_loss(model, latents, text, mask, cfg, torch.Generator().manual_seed(3), context)
        again = flow_loss(model, latents, text, mask, cfg, torch.Generator().manual_seed(3), context.clone())
        other = flow_loss(model, latents, text, mask, cfg, torch.Generator().manual_seed(3), context + 1)
    assert torch.equal(own, again) and abs(own.item() - other.item()) > 1e-4


def test_a_stream_is_trained_up_to_where_it_leaves_its_clip():
    """rollout_weights: 1 for the frames before the stream's first departure beyond the
    tolerance (relative to the clip's object energy), 0 from there on, even where it comes
    back; the weighted loss is the mean MSE of the kept frames."""
    latents = torch.zeros(2, C, 6, H, W)
    latents[:, :, :, 2:4, 2:4] = 1.0  # an object of energy 4/64 on a flat background
    energy = 4 / 64
    stream = latents.clone()
    stream[0, :, 2] += (0.1 * energy) ** 0.5  # 0.1 of the energy at frame 2: kept at tolerance 0.25
    stream[0, :, 3] += (0.5 * energy) ** 0.5  # 0.5 at frame 3: left the clip there
    stream[1, :, 1] += (0.3 * energy) ** 0.5
    weights = rollout_weights(stream, latents, 0.25)
    assert weights.tolist() == [[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]]
    assert torch.equal(rollout_weights(stream, latents, None), torch.ones(2, 6))
    model = make_model("pom", seed=2)
    cfg = rollout_cfg(1)
    text, mask = torch.randn(2, 5, TEXT_DIM), torch.ones(2, 5, dtype=torch.bool)
    context = torch.randn_like(latents)
    with torch.no_grad():
        kept = _denoise_loss(model, latents, text, mask, cfg, torch.Generator().manual_seed(1), True, context, weights)
        ones = _denoise_loss(model, latents, text, mask, cfg, torch.Generator().manual_seed(1), True, context,
                             torch.ones(2, 6))
        plain = _denoise_loss(model, latents, text, mask, cfg, torch.Generator().manual_seed(1), True, context)
    assert torch.allclose(ones, plain) and not torch.allclose(kept, plain)
    with pytest.raises(UsageError, match="train.rollout_tolerance must be > 0"):
        load_config(TINY, ["train.rollout_tolerance=0"])


def test_training_on_rollouts_runs_and_mistakes_are_one_line(data):
    """A tiny run with every step on its own stream (clips of 3 latent frames, 1 primed)
    learns; a prime as long as the clip, or a share outside [0, 1], is refused with the fix."""
    out = data["root"] / "rollout"
    overrides = data["overrides"] + [f"train.output_dir={out}", "train.max_steps=12", "train.grad_accum=1",
                                     "train.checkpoint_every=0", "train.rollout=1", "train.rollout_prime=1",
                                     "sampling.steps=2", "train.rollout_tolerance=1.0"]
    result = train(TINY, overrides)
    log = read_log(out / "log.jsonl")
    losses = [r["loss"] for r in log]
    assert result["step"] == 12 and len(losses) == 12 and all(np.isfinite(losses))
    assert all(0 < r["rollout_kept"] <= 1 for r in log)
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses
    with pytest.raises(UsageError, match="rollout_prime .* leaves nothing to roll out"):
        train(TINY, data["overrides"] + [f"train.output_dir={data['root'] / 'rollout-bad'}", "train.rollout=1",
                                         "train.rollout_prime=3", "train.max_steps=1"])
    with pytest.raises(UsageError, match=r"train.rollout must be in \[0, 1\]"):
        load_config(TINY, ["train.rollout=2"])
