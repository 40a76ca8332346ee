"""A few-step student from a teacher pipeline, trained on its own rollouts (`videogen distill`).

    videogen distill configs/shapes_distill.yaml [key=value ...] [--resume latest|DIR] [--export DIR]

Method: on-policy trajectory distillation in the streaming setting, the student's context
being its own committed output, as at inference (Self-Forcing's setting; CausVid's ODE
regression as the objective). Each step:

1. **Roll out** the student (no gradient), frame by frame exactly as the streaming sampler
   does: from noise z_k, `distill.student_steps` Euler steps without guidance, then the
   commit of the result, re-noised to the context level with noise n_k.
2. **Teacher targets** on that context, in one teacher-forced parallel pass per teacher step
   (the block-causal mask makes every frame k see the student's frames before it): the
   teacher's own sampler from the *same* noise z_k (its steps, with CFG), the sample y_k
   that the teacher would have produced at that point of the student's video.
3. **Regress**: the student's parallel pass over the same context and noise (which equals
   its rollout, streaming == parallel) gives x_k; the loss is MSE(x_k, y_k).

Why this and not DMD: the teacher's sampler is a deterministic map from noise to sample
(Euler, no stochastic steps), so regressing onto it has one answer per noise and does not
blur; it needs no second "fake score" network beside the student and no adversarial
balance, which on a 2-core CPU matters. Because the context is the student's own, the
student learns what the teacher does *after the student's mistakes*, so its errors do not
compound the way a teacher-forced student's do.

The student pipeline keeps the teacher's VAE, text encoder and tokenizer; its sampler
settings are `steps: distill.student_steps, guidance: 1` (a model call per step and the
commit pass per latent frame). Outputs in train.output_dir as for `videogen train`.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Optional

import torch
import torch.nn.functional as F

from videogen.diffusion.sampler import euler_sigmas, even_sigmas
from videogen.errors import UsageError
from videogen.training.components import freeze
from videogen.training.config import DistillRunConfig, load_distill_config
from videogen.training.ema import EMA, EMAHooks
from videogen.training.loop import Task, adamw_cosine, run
from videogen.training.seeding import step_generator
from videogen.utils.textfile import utf8_lines

logger = logging.getLogger("videogen")


def distill(config_path: Optional[str], overrides: Optional[list] = None, resume: Optional[str] = None,
            export: Optional[str] = None) -> dict:
    """Distil from a YAML config + key=value overrides (as `train`); returns the run's result."""
    cfg = load_distill_config(config_path, overrides)
    return run(cfg, DistillTask(cfg), resume, export)


# ----------------------------------------------------------------------- the three passes
def padded_text(emb: torch.Tensor, mask: torch.Tensor, length: int) -> tuple:
    """Text embeddings (B, L, D) and mask (B, L) padded with zeros / False to `length`."""
    pad = length - emb.shape[1]
    return F.pad(emb, (0, 0, 0, pad)), F.pad(mask, (0, pad), value=False)


@torch.no_grad()
def student_rollout(model, noise: torch.Tensor, commit_noise: torch.Tensor, text: torch.Tensor,
                    mask: torch.Tensor, sigmas: torch.Tensor, level: float,
                    first_sigmas: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The student's streaming video: latent frame by frame, Euler steps on `sigmas` (the
    first frame on `first_sigmas` when given) without guidance, each frame committed
    re-noised to `level` with its commit noise (exactly the streaming sampler's loop).
    noise, commit_noise (B, C, F, H, W) -> clean latents, same shape."""
    ctx = model.encode_text(text, mask)
    state = model.init_state(noise.shape[0], noise.device, noise.dtype)
    frames = []
    for k in range(noise.shape[2]):
        x = noise[:, :, k]
        steps = first_sigmas if k == 0 and first_sigmas is not None else sigmas
        for i, dt in enumerate((steps[1:] - steps[:-1]).tolist()):
            x = x + dt * model.step(x, steps[i].expand(x.shape[0]).to(x), ctx, state)
        committed = ((1 - level) * x + level * commit_noise[:, :, k]).unsqueeze(2)
        state = model.prefill(committed, torch.full(committed.shape[:1] + committed.shape[2:3], level).to(x),
                              ctx, state)
        frames.append(x)
    return torch.stack(frames, dim=2)


def parallel_sample(model, noise: torch.Tensor, context: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
                    sigmas: torch.Tensor, level: float, guidance: float = 1.0,
                    empty: Optional[tuple] = None) -> torch.Tensor:
    """Every frame's sample at once, each on the frames of `context` before it (re-noised
    context, at `level`): Euler from `noise` on `sigmas`, with CFG against the `empty`
    prompt's (emb, mask) when guidance != 1. Differentiable (wrap in no_grad for targets).
    noise, context (B, C, F, H, W) -> (B, C, F, H, W)."""
    b, f = noise.shape[0], noise.shape[2]
    guided = guidance != 1.0
    if guided:
        e, m = padded_text(*empty, text.shape[1])
        text, mask = torch.cat([text, e.expand(b, -1, -1)]), torch.cat([mask, m.expand(b, -1)])
        context = torch.cat([context, context])
    rows = text.shape[0]
    t_context = torch.full((rows, f), level, device=noise.device, dtype=noise.dtype)
    x = noise
    for i in range(len(sigmas) - 1):
        t = torch.full((rows, f), float(sigmas[i]), device=noise.device, dtype=noise.dtype)
        v = model(torch.cat([x, x]) if guided else x, t, text, mask, context=context, t_context=t_context)
        if guided:
            v_c, v_u = v.chunk(2)
            v = v_u + guidance * (v_c - v_u)
        x = x + float(sigmas[i + 1] - sigmas[i]) * v
    return x


def teacher_targets(teacher, noise: torch.Tensor, context: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
                    sigmas: torch.Tensor, level: float, guidance: float, empty: tuple,
                    contrast: Optional[tuple] = None, until: int = 0) -> torch.Tensor:
    """The teacher's samples on `context`, as it streams them by default: CFG against the
    `empty` prompt, except on latent frames 1 .. `until` - 1 (where the motion begins), which
    are guided against `contrast` (emb, mask per row: the prompt with its motion reversed;
    `StreamSession`'s contrast window). Frame k sees only frames before it, so the window's
    frames come from a pass over the first `until` frames alone."""
    target = parallel_sample(teacher, noise, context, text, mask, sigmas, level, guidance, empty)
    if contrast is None or until < 2 or guidance == 1.0:
        return target
    head = parallel_sample(teacher, noise[:, :, :until], context[:, :, :until], text, mask, sigmas, level, guidance,
                           contrast)
    return torch.cat([target[:, :, :1], head[:, :, 1:until], target[:, :, until:]], dim=2)


def training_prompts(path: Optional[str]) -> list:
    """The prompts of `distill.prompts` (one per line), or the shapes-world training captions."""
    if path is None:
        from videogen.data.shapes import training_captions

        return training_captions()
    if not os.path.isfile(path):
        raise UsageError(f"distill.prompts file '{path}' not found; give a text file with one prompt per line")
    prompts = [line.strip() for line in utf8_lines(path) if line.strip()]
    if not prompts:
        raise UsageError(f"distill.prompts file '{path}' has no prompts; write one prompt per line")
    return prompts


# ------------------------------------------------------------------------------- the task
class DistillTask(EMAHooks, Task):
    """The student's rollouts, the teacher's targets on them, the regression, EMA, export."""

    name = "distill"

    def __init__(self, cfg: DistillRunConfig):
        self.cfg, self.d, self.t = cfg, cfg.distill, cfg.train
        self.ema: Optional[EMA] = None

    def check(self) -> None:
        if not os.path.isfile(os.path.join(self.d.teacher, "model_index.json")):
            raise UsageError(f"distill.teacher '{self.d.teacher}' is not a pipeline directory (no model_index.json); "
                             "name one, e.g. distill.teacher=videogen/default_model")
        from videogen.pipelines.pipeline import DEFAULT_FAST

        student = self.d.student
        if student is not None and student != DEFAULT_FAST and not os.path.isfile(os.path.join(student, "model_index.json")):
            raise UsageError(f"distill.student '{student}' is not a pipeline directory (no model_index.json); name one, "
                             f"or {DEFAULT_FAST} for the embedded student, or leave it out to start from the teacher")
        self.prompts = training_prompts(self.d.prompts)

    def outputs(self) -> list:
        return [(os.path.join(self.t.output_dir, "pipeline"), "model_index.json", "pipeline")]

    def architecture(self) -> dict:
        return {"distill.student_steps": self.d.student_steps}  # first_frame_steps may change on resume

    def build(self, accelerator, start_step: int) -> tuple:
        from videogen.models.text import encode_prompts
        from videogen.models.vae import vae_factors
        from videogen.pipelines.pipeline import load_pipeline
        from videogen.pipelines.stream import contrast_prompt, sampler_settings

        acc, d = accelerator, self.d
        self.acc = acc
        self.pipe = pipe = load_pipeline(d.teacher)
        self.teacher = freeze(pipe.transformer, acc.device, torch.float32)
        student = copy.deepcopy(pipe.transformer) if d.student is None else self._student_start(pipe.transformer)
        student = student.float().to(acc.device).train().requires_grad_(True)
        settings = sampler_settings(pipe.config, d.teacher_steps, d.teacher_guidance, None)
        self.level, self.guidance = settings.context_noise, settings.guidance
        self.teacher_sigmas = euler_sigmas(pipe.scheduler, settings.steps)
        self.student_sigmas = euler_sigmas(pipe.scheduler, d.student_steps)
        self.first_sigmas = even_sigmas(pipe.scheduler, d.first_frame_steps) if d.first_frame_steps else None
        _, spatial = vae_factors(pipe.vae)
        self.latent_shape = (pipe.transformer.config.in_channels, pipe.config.height // spatial,
                             pipe.config.width // spatial)
        text_encoder = freeze(pipe.text_encoder, acc.device, torch.float32)
        contrast, until = pipe.config.get("contrast") or {}, pipe.config.get("contrast_frames") or 0
        self.contrast_until = until if (d.contrast_start and contrast and self.guidance != 1.0) else 0
        opposite = [contrast_prompt(p, contrast) for p in self.prompts] if self.contrast_until else []
        # one call, so the prompts and their opposites are padded to one length
        emb, mask = encode_prompts(pipe.tokenizer, text_encoder, self.prompts + opposite,
                                   pipe.config.max_text_length, device=acc.device)
        n = len(self.prompts)
        self.text = emb[:n], mask[:n]
        self.contrast = (emb[n:], mask[n:]) if self.contrast_until else None
        self.empty = encode_prompts(pipe.tokenizer, text_encoder, [""], pipe.config.max_text_length, device=acc.device)
        optimizer, scheduler = adamw_cosine(self.t, student.parameters(), acc.num_processes)
        model, optimizer, scheduler = acc.prepare(student, optimizer, scheduler)
        self.model = model
        self.ema = EMA(acc.unwrap_model(model), self.t.ema_decay) if self.t.ema_decay > 0 else None
        return model, optimizer, scheduler

    def _student_start(self, teacher) -> torch.nn.Module:
        """`distill.student`'s transformer (only: the teacher's pipeline has every other part),
        checked against the teacher's architecture."""
        from videogen.pipelines.pipeline import DEFAULT_FAST, DEFAULT_FAST_DIR, load_transformer

        student = self.d.student
        start = load_transformer(DEFAULT_FAST_DIR if student == DEFAULT_FAST else os.path.join(student, "transformer"))
        ours, theirs = dict(start.config), dict(teacher.config)
        differ = sorted(k for k in set(ours) | set(theirs) if not k.startswith("_") and ours.get(k) != theirs.get(k))
        if differ:
            raise UsageError(f"distill.student '{self.d.student}' is not the teacher's architecture ({differ[0]}: "
                             f"{ours.get(differ[0])!r} against {theirs.get(differ[0])!r}); name a student of this teacher")
        return start

    def begin(self, step: int, log) -> None:
        logger.info("distilling %s: %d-step student, teacher %d steps at guidance %g, rollouts of %d latent "
                    "frames, %d prompts, batch %d x %d%s", self.d.teacher, self.d.student_steps,
                    len(self.teacher_sigmas) - 1, self.guidance, self.d.rollout_frames, len(self.prompts),
                    self.t.batch_size, self.acc.num_processes,
                    f"; latent frames 1..{self.contrast_until - 1} guided against the reversed motion"
                    if self.contrast_until else "")

    def forward_backward(self, step: int, micro: int) -> dict:
        acc, b = self.acc, self.t.batch_size
        g = step_generator(acc.device, self.t.seed, step, micro, acc.process_index)
        pick = torch.randint(len(self.prompts), (b,), generator=g, device=acc.device)
        text, mask = self.text[0][pick], self.text[1][pick]
        shape = (b, self.latent_shape[0], self.d.rollout_frames) + self.latent_shape[1:]
        noise = torch.randn(shape, generator=g, device=acc.device)
        commit_noise = torch.randn(shape, generator=g, device=acc.device)
        student = acc.unwrap_model(self.model)
        rollout = student_rollout(student, noise, commit_noise, text, mask, self.student_sigmas, self.level,
                                  self.first_sigmas)
        context = (1 - self.level) * rollout + self.level * commit_noise
        with torch.no_grad():
            contrast = None if self.contrast is None else (self.contrast[0][pick], self.contrast[1][pick])
            target = teacher_targets(self.teacher, noise, context, text, mask, self.teacher_sigmas, self.level,
                                     self.guidance, self.empty, contrast, self.contrast_until)
        pred = parallel_sample(self.model, noise, context, text, mask, self.student_sigmas, self.level)
        if self.first_sigmas is not None:  # frame 0 sees no context: its own steps, on it alone
            first = parallel_sample(self.model, noise[:, :, :1], context[:, :, :1], text, mask, self.first_sigmas,
                                    self.level)
            pred = torch.cat([first, pred[:, :, 1:]], dim=2)
        loss = F.mse_loss(pred, target)
        acc.backward(loss)
        per_frame = (pred.detach() - target).pow(2).mean(dim=(0, 1, 3, 4))
        return {"loss": loss.detach(), "loss_first": per_frame[0], "loss_last": per_frame[-1],
                "rollout_gap": (pred.detach() - rollout).abs().max()}

    def export(self, step: int, out_dir: Optional[str], final: bool) -> dict:
        """The student pipeline (EMA weights where kept): the teacher's parts with the
        student transformer and the student's sampler settings."""
        from videogen.pipelines.pipeline import VideoGenPipeline, save_pipeline

        acc = self.acc
        pipeline_dir = out_dir or os.path.join(self.t.output_dir, "pipeline")
        if acc.is_main_process:
            net = copy.deepcopy(acc.unwrap_model(self.model)).float().eval().cpu()
            if self.ema is not None:
                self.ema.copy_to(net)
            pipe, c = self.pipe, self.pipe.config
            parts = {name: getattr(pipe, name) for name in ("vae", "text_encoder", "tokenizer", "scheduler")}
            student = VideoGenPipeline(transformer=net, **parts, height=c.height, width=c.width, fps=c.fps,
                                       steps=self.d.student_steps, guidance=1.0, context_noise=self.level,
                                       max_text_length=c.max_text_length,
                                       first_steps=self.d.first_frame_steps or None)
            save_pipeline(student, pipeline_dir)
            logger.info("wrote the student pipeline (%s weights, step %d) to %s", "EMA" if self.ema else "raw",
                        step, pipeline_dir)
        acc.wait_for_everyone()
        return {"pipeline": pipeline_dir}
