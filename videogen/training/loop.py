"""One training loop for every model we train (torchtitan's shape): a Trainer composed of
an accelerator, a CheckpointManager and a log, driving a task object.

The Trainer owns what every run shares: the accelerator (one CPU process, N CPU processes
with gloo, N GPUs: the same code), the run folder, resume, the progress bar, gradient
accumulation, clipping, the logging window, the log and checkpoint cadence and
`train.stop_at_step`. The task (training/dit_task.py, training/vae_task.py) supplies the
model and data, the loss of a micro-batch, eval and samples, and the export.

Resume is exact: every random draw of a step comes from a generator seeded by (seed,
step, micro-batch, rank) (training/seeding.py), and the checkpoint restores the model,
optimizer, scheduler and RNG states.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from typing import Optional

import torch

from videogen.errors import UsageError
from videogen.training.checkpoint import CheckpointManager, check_same_config, checkpoint_step
from videogen.training.logs import LOG_FILE, JsonlLog, hparams, setup_logging, tracker
from videogen.training.run_dir import check_output_folder, prepare_run_dir

logger = logging.getLogger("videogen")


class Task:
    """What a model's training supplies to the Trainer; hooks run on every rank."""

    name = "train"  # the command: progress bar and run marker

    def check(self) -> None:
        """Start-up checks of what the config names (paths), before anything is written."""

    def outputs(self) -> list:
        """(path, marker file, what) of each folder the run replaces at its end."""
        return []

    def build(self, accelerator, start_step: int) -> tuple:
        """(model, optimizer, scheduler), prepared by the accelerator; `start_step` is the
        step the run resumes at (0 when new)."""
        raise NotImplementedError

    def architecture(self) -> dict:
        """The config keys that fix the trained weights ({"model.dim": 128, ...}): a resume
        whose checkpoint set them otherwise is refused before any weight is read."""
        return {}

    def save_extra(self, directory: str) -> None:
        """Write the task's own files into a checkpoint being written (main process)."""

    def load_extra(self, directory: str) -> None:
        """Read them back on resume, after the model, optimizer and scheduler."""

    def begin(self, step: int, log: JsonlLog) -> None:
        """Start (or resume) at `step`, just before the first optimizer step."""

    def before_step(self, step: int) -> bool:
        """True: end the run here, with a checkpoint."""
        return False

    def forward_backward(self, step: int, micro: int) -> dict:
        """Forward and accelerator.backward of one micro-batch; returns its scalar metrics
        (detached tensors), 'loss' among them, averaged over the logging window."""
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        """After each optimizer step (the EMA update)."""

    def log_fields(self) -> dict:
        return {}

    def after_step(self, step: int, last: bool) -> None:
        """Eval or samples at their cadence; `last`: the run's last step."""

    def result(self) -> dict:
        """What a run that stopped before max_steps returns beside step, loss, output_dir."""
        return {}

    def export(self, step: int, out_dir: Optional[str], final: bool) -> dict:
        """Write the trained model (to out_dir, or the task's default place): the end of a run
        (final) or `--export` of a checkpoint."""
        raise NotImplementedError


def make_accelerator(t):
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    # sync_with_dataloader=False: the batch stream runs across epoch boundaries, and an
    # accumulation window must always be exactly grad_accum micro-batches (exact resume).
    plugin = GradientAccumulationPlugin(num_steps=t.grad_accum, sync_with_dataloader=False)
    check_fsdp_device(use_cpu(t.cpu))
    accelerator = Accelerator(
        mixed_precision=t.mixed_precision, gradient_accumulation_plugin=plugin, log_with=tracker(t.log_with),
        project_config=ProjectConfiguration(project_dir=t.output_dir, logging_dir=os.path.join(t.output_dir, "logs")),
        cpu=use_cpu(t.cpu))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != world:
        raise RuntimeError(f"launched {world} processes but accelerate joined {accelerator.num_processes}")
    return accelerator


def check_fsdp_device(cpu: bool) -> None:
    """Refuse an FSDP launch (ACCELERATE_USE_FSDP, set by an FSDP accelerate config) on CPU.

    PyTorch's FSDP itself runs on CPU with gloo (tests/test_fsdp.py), but accelerate (1.15)
    only applies FSDP over GPU-like devices: on CPU it either fails building the plugin
    (fsdp_sync_module_states: "no available devices found") or, without that option, joins
    the processes with DDP and trains unsharded, silently. Neither is what was asked for.
    """
    if cpu and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise UsageError("FSDP needs GPUs: accelerate applies FSDP only on CUDA/XPU/NPU-like devices, and on "
                         "CPU would train unsharded with DDP; on CPU launch with "
                         "configs/accelerate/cpu_2proc.yaml instead")


def use_cpu(cpu: bool) -> bool:
    """train.cpu, or a multi-process launch (torchrun/accelerate) on a machine without CUDA:
    accelerate only joins CPU processes with gloo when told cpu=True; otherwise each would
    train alone, unaware of the others."""
    return cpu or (int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())


def adamw_cosine(t, params, num_processes: int) -> tuple:
    """AdamW + linear warmup and cosine decay to 0 at train.max_steps."""
    from diffusers.optimization import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.adam_betas), weight_decay=t.weight_decay)
    # The prepared scheduler steps once per process per optimizer step (accelerate's
    # convention), so its horizon is counted in process-steps.
    scheduler = get_cosine_schedule_with_warmup(optimizer, t.warmup_steps * num_processes,
                                                t.max_steps * num_processes)
    return optimizer, scheduler


class Window:
    """Metric sums since the last log line, averaged over micro-batches and ranks."""

    def __init__(self, device):
        self.device, self.sums, self.count, self.steps = device, {}, 0, 0
        self.tick = time.time()

    def add(self, metrics: list) -> None:
        for m in metrics:
            for key, value in m.items():
                self.sums[key] = self.sums.get(key, 0) + value.detach().float()
        self.count += len(metrics)
        self.steps += 1

    def means(self, accelerator) -> dict:
        keys = list(self.sums)
        local = torch.stack([self.sums[k] for k in keys] + [torch.tensor(float(self.count), device=self.device)])
        total = accelerator.reduce(local, reduction="sum")
        return {k: (total[i] / total[-1]).item() for i, k in enumerate(keys)}

    def reset(self) -> None:
        self.sums, self.count, self.steps = {}, 0, 0
        self.tick = time.time()


class Trainer:
    """The loop; `train(resume)` or `export(resume, out_dir)`, then `close()`."""

    def __init__(self, cfg, task: Task):
        self.cfg, self.task, self.t = cfg, task, cfg.train
        self.accelerator = make_accelerator(self.t)
        setup_logging(self.accelerator.is_main_process)
        self.checkpoints = CheckpointManager(self.accelerator, self.t.output_dir, self.t.keep_checkpoints)
        self.step = 0

    def close(self) -> None:
        self.accelerator.end_training()

    def train(self, resume: Optional[str]) -> dict:
        """Train from step 0 or a checkpoint (resume: None, 'latest' or a folder) to
        train.max_steps (or train.stop_at_step); returns {"step", "loss", "output_dir", ...}."""
        acc, t = self.accelerator, self.t
        self.task.check()
        resume_dir = prepare_run_dir(acc, self.checkpoints, resume, self.task.name, self.task.outputs())
        models = self._build(resume_dir)
        acc.init_trackers("videogen", config=hparams(self.cfg))  # a no-op off the main process
        log = JsonlLog(os.path.join(t.output_dir, LOG_FILE), self.step, acc.is_main_process)
        self.task.begin(self.step, log)
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm(loggers=[logger]):  # log lines above the progress bar, not through it
            loss = self._loop(*models, log)
        result = {"step": self.step, "loss": loss, "output_dir": t.output_dir}
        if self.step < t.max_steps:
            logger.info("stopped at step %d of %d (train.stop_at_step); continue with --resume latest",
                        self.step, t.max_steps)
            return {**result, **self.task.result()}
        return {**result, **self.task.export(self.step, None, final=True)}

    def export(self, resume: str, out_dir: str) -> dict:
        """Train nothing: the task's export of a checkpoint (resume: 'latest' or a folder)."""
        self.task.check()
        resume_dir = self.checkpoints.find(resume)
        if resume_dir is None:
            raise UsageError(f"no checkpoint in train.output_dir '{self.t.output_dir}' to export; train first, "
                             "or pass --resume CHECKPOINT_DIR")
        for _, marker, what in self.task.outputs():
            check_output_folder(out_dir, marker, what)
        self._build(resume_dir)
        result = {"step": self.step, "loss": None, "output_dir": self.t.output_dir}
        return {**result, **self.task.export(self.step, out_dir, final=False)}

    def _build(self, resume_dir: Optional[str]) -> tuple:
        from accelerate.utils import set_seed

        self.step = checkpoint_step(resume_dir) if resume_dir else 0
        if resume_dir:
            check_same_config(resume_dir, self.task.architecture())
        set_seed(self.t.seed)  # the same initial weights on every rank
        model, optimizer, scheduler = self.task.build(self.accelerator, self.step)
        if resume_dir:
            self.checkpoints.load(resume_dir, model, optimizer, scheduler)
            self.task.load_extra(resume_dir)
            logger.info("resumed from %s at step %d", resume_dir, self.step)
        return model, optimizer, scheduler

    def _loop(self, model, optimizer, scheduler, log: JsonlLog) -> Optional[float]:
        from tqdm.auto import tqdm

        acc, t = self.accelerator, self.t
        bar = tqdm(total=t.max_steps, initial=self.step, desc=self.task.name, unit="step",
                   disable=not acc.is_local_main_process, dynamic_ncols=True)
        window, loss, started = Window(acc.device), None, time.time()
        end = min(t.max_steps, t.stop_at_step or t.max_steps)
        try:  # closed on the way out of an error too: its message then starts a line of its own
            while self.step < end:
                if self.task.before_step(self.step):
                    self._checkpoint()
                    break
                metrics, grad_norm = self._optimizer_step(model, optimizer, scheduler)
                window.add(metrics)
                self.task.after_optimizer_step()
                self.step += 1
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == end:
                    loss = self._log(window, scheduler, grad_norm, log, bar, started)
                paused = time.time()
                self.task.after_step(self.step, last=self.step == end)
                if t.checkpoint_every and (self.step % t.checkpoint_every == 0 or self.step == end):
                    self._checkpoint()
                window.tick += time.time() - paused  # s_per_step counts training, not eval or checkpoints
        finally:
            bar.close()
        return loss

    def _optimizer_step(self, model, optimizer, scheduler) -> tuple:
        """train.grad_accum micro-batches, then one optimizer step: (their metrics, grad norm)."""
        acc, t = self.accelerator, self.t
        metrics, grad_norm = [], None
        for micro in range(t.grad_accum):
            with acc.accumulate(model):
                metrics.append(self.task.forward_backward(self.step, micro))
                if acc.sync_gradients:
                    self._stop_if_not_finite(metrics)
                if acc.sync_gradients and t.grad_clip > 0:
                    grad_norm = acc.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()  # accelerate skips these until the last micro-batch
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        assert acc.sync_gradients, "an optimizer step must end every grad_accum micro-batches"
        return metrics, grad_norm

    def _stop_if_not_finite(self, metrics: list) -> None:
        """Before the optimizer step: a nan or inf loss on any rank ends the run here, so no
        NaN weights reach a checkpoint or the export. One reduce (and sync) per step."""
        local = torch.stack([m["loss"].detach().float().sum() for m in metrics]).sum()
        bad = self.accelerator.reduce((~torch.isfinite(local)).float().reshape(1), reduction="sum")
        if bad.item() == 0:
            return
        done = self.checkpoints.list()
        kept = (f"the last good checkpoint is {done[-1][1]} (step {done[-1][0]})" if done
                else "no checkpoint was written yet")
        raise UsageError(f"the loss is not finite at step {self.step + 1} (nan or inf); training stopped there and "
                         f"wrote nothing more: {kept}. Lower train.lr, keep train.grad_clip on, or check the data, "
                         "then --resume latest")

    def _log(self, window: Window, scheduler, grad_norm, log: JsonlLog, bar, started: float) -> float:
        means = window.means(self.accelerator)
        record = {"step": self.step, **means, "lr": scheduler.get_last_lr()[0], **self.task.log_fields(),
                  "grad_norm": None if grad_norm is None else float(grad_norm),
                  "s_per_step": round((time.time() - window.tick) / max(window.steps, 1), 3),
                  "wall_s": round(time.time() - started, 3)}
        log.write(record)
        self.accelerator.log({k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))},
                             step=self.step)
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
        window.reset()
        return record["loss"]

    def _checkpoint(self) -> None:
        self.checkpoints.save(self.step, asdict(self.cfg), self.task.save_extra)


def run(cfg, task: Task, resume: Optional[str] = None, export: Optional[str] = None) -> dict:
    """Train `task` under `cfg` (resume: None, 'latest' or a checkpoint folder), or with
    `export`, write the export of a checkpoint (resume, default the latest) to that folder."""
    trainer = Trainer(cfg, task)
    try:
        if export is not None:
            return trainer.export(resume or "latest", export)
        return trainer.train(resume)
    finally:
        trainer.close()
