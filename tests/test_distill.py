"""`videogen distill`: the student's rollout is the streaming sampler's, the teacher's
parallel targets are its streaming samples, and a run trains, resumes and exports."""

import json
import os
import subprocess
import sys

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file

from videogen.diffusion.sampler import SamplerSettings, StreamingSampler, euler_sigmas, even_sigmas
from videogen.models.dit import PoMVideoDiT
from videogen.training.distill_task import parallel_sample, student_rollout, teacher_targets

C, H, W, TEXT_DIM, FRAMES = 4, 8, 8, 16, 4


def make_model(mixer="pom", seed=0):
    torch.manual_seed(seed)
    model = PoMVideoDiT(in_channels=C, patch_size=2, dim=32, depth=2, mixer=mixer, text_dim=TEXT_DIM,
                        frame_positions=2).eval()
    with torch.no_grad():  # off the zero-initialised AdaLN gates, so every path is exercised
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def sampler_draws(frames, seed):
    """The noises a StreamingSampler seeded `seed` draws: (denoise, commit) per frame, (1, C, F, H, W) each."""
    g = torch.Generator().manual_seed(seed)
    draws = [torch.randn(1, C, H, W, generator=g) for _ in range(2 * frames)]
    return torch.stack(draws[0::2], dim=2), torch.stack(draws[1::2], dim=2)


def streamed(model, text, mask, settings, seed):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    with torch.no_grad():
        ctx = model.encode_text(text, mask)
        sampler = StreamingSampler(model, ctx, (C, H, W), settings, scheduler, torch.Generator().manual_seed(seed))
        return torch.stack([sampler.next() for _ in range(FRAMES)], dim=2)


@pytest.mark.parametrize("mixer", ["pom", "attention"])
@pytest.mark.parametrize("steps", [1, 2])
def test_student_rollout_and_its_parallel_pass_equal_the_streaming_sampler(mixer, steps):
    """The rollout the student trains on is what `videogen generate` streams, and the
    parallel pass the loss differentiates (context = its own rollout) computes it again."""
    model = make_model(mixer)
    text, mask = torch.randn(1, 5, TEXT_DIM), torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    settings = SamplerSettings(steps=steps, guidance=1.0, context_noise=0.3)
    expected = streamed(model, text, mask, settings, seed=3)
    noise, commit = sampler_draws(FRAMES, seed=3)
    sigmas = euler_sigmas(FlowMatchEulerDiscreteScheduler(shift=3.0), steps)
    rollout = student_rollout(model, noise, commit, text, mask, sigmas, 0.3)
    assert (rollout - expected).abs().max().item() <= 1e-5
    with torch.no_grad():
        again = parallel_sample(model, noise, 0.7 * rollout + 0.3 * commit, text, mask, sigmas, 0.3)
    assert (again - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("mixer", ["pom", "attention"])
def test_first_frame_steps_roll_out_as_the_sampler_streams_them(mixer):
    """A student whose first latent frame takes 2 steps on evenly spaced sigmas (1, 0.75, 0)
    and every later frame 1: the rollout is the sampler's (`first_steps`), and the loss's
    passes (all frames, then frame 0 alone on its own steps) compute it again."""
    model = make_model(mixer, seed=2)
    text, mask = torch.randn(1, 5, TEXT_DIM), torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    settings = SamplerSettings(steps=1, guidance=1.0, context_noise=0.3, first_steps=2)
    expected = streamed(model, text, mask, settings, seed=4)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    first = even_sigmas(scheduler, 2)
    assert torch.allclose(first, torch.tensor([1.0, 0.75, 0.0]))
    noise, commit = sampler_draws(FRAMES, seed=4)
    sigmas = euler_sigmas(scheduler, 1)
    rollout = student_rollout(model, noise, commit, text, mask, sigmas, 0.3, first)
    assert (rollout - expected).abs().max().item() <= 1e-5
    with torch.no_grad():
        context = 0.7 * rollout + 0.3 * commit
        rest = parallel_sample(model, noise, context, text, mask, sigmas, 0.3)
        head = parallel_sample(model, noise[:, :, :1], context[:, :, :1], text, mask, first, 0.3)
    assert (torch.cat([head, rest[:, :, 1:]], dim=2) - expected).abs().max().item() <= 1e-5
    plain = streamed(model, text, mask, SamplerSettings(steps=1, guidance=1.0, context_noise=0.3), seed=4)
    assert (plain[:, :, 0] - expected[:, :, 0]).abs().max().item() > 1e-3  # the first frame's steps matter


@pytest.mark.parametrize("mixer", ["pom", "attention"])
def test_teacher_targets_on_its_own_context_equal_its_guided_streaming_samples(mixer):
    """With CFG: the teacher's parallel targets, given its own streamed frames as context,
    are those frames (so on the student's context they are what the teacher would stream)."""
    model = make_model(mixer, seed=1)
    text = torch.randn(2, 5, TEXT_DIM)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)  # the prompt, then ""
    settings = SamplerSettings(steps=3, guidance=2.5, context_noise=0.2)
    expected = streamed(model, text, mask, settings, seed=5)
    noise, commit = sampler_draws(FRAMES, seed=5)
    sigmas = euler_sigmas(FlowMatchEulerDiscreteScheduler(shift=3.0), 3)
    with torch.no_grad():
        target = parallel_sample(model, noise, 0.8 * expected + 0.2 * commit, text[:1], mask[:1], sigmas, 0.2,
                                 guidance=2.5, empty=(text[1:, :1], mask[1:, :1]))
    assert (target - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("mixer", ["pom", "attention"])
def test_teacher_targets_with_the_contrast_start_equal_its_contrast_guided_stream(mixer):
    """The teacher as `videogen generate` streams it by default: latent frame 1 guided
    against the prompt with its motion reversed (the ring re-committed under that negative,
    then back under the empty prompt), every other frame against the empty prompt. Its
    parallel targets on its own context are those frames, and frame 1 is not plain CFG's."""
    model = make_model(mixer, seed=6)
    text = torch.randn(3, 5, TEXT_DIM)  # the prompt, its reversed-motion prompt, ""
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    settings = SamplerSettings(steps=2, guidance=3.0, context_noise=0.2)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    with torch.no_grad():
        plain, contrasted = model.encode_text(text[[0, 2]], mask[[0, 2]]), model.encode_text(text[:2], mask[:2])
        sampler = StreamingSampler(model, plain, (C, H, W), settings, scheduler, torch.Generator().manual_seed(7))
        frames = [sampler.next()]
        sampler.set_context(contrasted, "recommit")
        frames.append(sampler.next())
        sampler.set_context(plain, "recommit")
        frames += [sampler.next() for _ in range(FRAMES - 2)]
        expected = torch.stack(frames, dim=2)
        noise, commit = sampler_draws(FRAMES, seed=7)
        context, sigmas = 0.8 * expected + 0.2 * commit, euler_sigmas(scheduler, 2)
        target = teacher_targets(model, noise, context, text[:1], mask[:1], sigmas, 0.2, 3.0,
                                 (text[2:], mask[2:]), (text[1:2], mask[1:2]), until=2)
        cfg = teacher_targets(model, noise, context, text[:1], mask[:1], sigmas, 0.2, 3.0, (text[2:], mask[2:]))
    assert (target - expected).abs().max().item() <= 1e-5
    assert (cfg[:, :, 1] - expected[:, :, 1]).abs().max().item() > 1e-3
    assert (cfg[:, :, 2:] - expected[:, :, 2:]).abs().max().item() <= 1e-5


@pytest.fixture(scope="module")
def teacher(tiny_model, tmp_path_factory):
    """The tiny pipeline with its transformer off its zero init (which outputs 0 for every
    input: a student of it would have nothing to learn)."""
    from videogen.pipelines.pipeline import load_pipeline, save_pipeline

    pipe = load_pipeline(tiny_model)
    with torch.no_grad():
        for p in pipe.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = str(tmp_path_factory.mktemp("models") / "teacher")
    save_pipeline(pipe, path)
    return path


def run_distill(tiny_model, out, *extra):
    cmd = [sys.executable, "-m", "videogen", "distill", "shapes_distill", f"distill.teacher={tiny_model}",
           "distill.rollout_frames=3", "train.batch_size=2", "train.max_steps=4", "train.checkpoint_every=2",
           "train.warmup_steps=1", "train.log_every=1", f"train.output_dir={out}", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_distill_trains_resumes_exactly_and_exports_a_one_step_student(teacher, tmp_path):
    straight = run_distill(teacher, tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-2000:]
    first = run_distill(teacher, tmp_path / "b", "train.stop_at_step=2")
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = run_distill(teacher, tmp_path / "b", "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    weights = "pipeline/transformer/diffusion_pytorch_model.safetensors"
    a, b = load_file(tmp_path / "a" / weights), load_file(tmp_path / "b" / weights)
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(os.path.join(teacher, "transformer", "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it trained
    index = json.loads((tmp_path / "a" / "pipeline" / "model_index.json").read_text())
    assert index["steps"] == 1 and index["guidance"] == 1.0 and index["first_steps"] is None
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and log[-1]["loss"] > 0
    assert all(r["rollout_gap"] <= 1e-5 for r in log)  # the loss's pass is the rollout


def test_distill_errors_are_one_line(tiny_model, tmp_path):
    missing = run_distill(str(tmp_path / "nothing"), tmp_path / "c")
    assert missing.returncode == 2 and "distill.teacher" in missing.stderr and "Traceback" not in missing.stderr
    prompts = tmp_path / "empty.txt"
    prompts.write_text("\n\n")
    empty = run_distill(tiny_model, tmp_path / "d", f"distill.prompts={prompts}")
    assert empty.returncode == 2 and "no prompts" in empty.stderr and "Traceback" not in empty.stderr
    bad = run_distill(tiny_model, tmp_path / "e", "distill.student_steps=0")
    assert bad.returncode == 2 and "student_steps" in bad.stderr


def test_distill_goes_on_from_a_given_student_of_the_teachers_architecture(teacher, tmp_path):
    from videogen.pipelines.pipeline import load_pipeline, save_pipeline
    from videogen.training.components import init_pipeline

    pipe = load_pipeline(teacher)
    with torch.no_grad():  # a student: the teacher moved elsewhere
        for p in pipe.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student = str(tmp_path / "student")
    save_pipeline(pipe, student)
    ran = run_distill(teacher, tmp_path / "a", f"distill.student={student}", "train.max_steps=1",
                      "train.lr=1e-12", "train.ema_decay=0")
    assert ran.returncode == 0, ran.stderr[-2000:]
    weights = "transformer/diffusion_pytorch_model.safetensors"
    out = load_file(tmp_path / "a" / "pipeline" / weights)
    start, taught = load_file(os.path.join(student, weights)), load_file(os.path.join(teacher, weights))
    assert all(torch.allclose(out[k], start[k], atol=1e-6) for k in out)  # from the student, not the teacher
    assert any(not torch.allclose(out[k], taught[k], atol=1e-3) for k in out)

    other = str(tmp_path / "other")
    init_pipeline(other, config="tiny", overrides=["model.depth=1"], seed=0)
    wrong = run_distill(teacher, tmp_path / "b", f"distill.student={other}")
    assert wrong.returncode == 2 and "depth" in wrong.stderr and "Traceback" not in wrong.stderr
    missing = run_distill(teacher, tmp_path / "c", f"distill.student={tmp_path / 'nowhere'}")
    assert missing.returncode == 2 and "distill.student" in missing.stderr and "Traceback" not in missing.stderr
