"""Exponential moving average of a model's weights, stored as a safetensors file."""

from __future__ import annotations

import os

import torch

from videogen.errors import UsageError


class EMA:
    """Exponential moving average of a model's parameters, kept in float32.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so the
    average is not dominated by the random initial weights (as diffusers' EMAModel).
    Checkpoints hold it as `ema.safetensors`, keyed by parameter name: a weights file of
    the model like any other.
    """

    FILE = "ema.safetensors"

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.names = [name for name, _ in model.named_parameters()]
        self.shadow = [p.detach().clone().float() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for s, p in zip(self.shadow, model.parameters()):
            s.lerp_(p.detach().float(), 1 - decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters()):
            p.copy_(s.to(p.dtype))

    def save(self, directory: str) -> None:
        from safetensors.torch import save_file

        save_file({n: s.cpu().contiguous() for n, s in zip(self.names, self.shadow)},
                  os.path.join(directory, self.FILE), metadata={"updates": str(self.updates)})

    @torch.no_grad()
    def load(self, directory: str) -> None:
        from safetensors import safe_open

        path = os.path.join(directory, self.FILE)
        if not os.path.exists(path):
            raise UsageError(f"checkpoint '{directory}' has no {self.FILE}; resume it with train.ema_decay=0")
        with safe_open(path, "pt") as f:
            self.updates = int(f.metadata()["updates"])
            for name, s in zip(self.names, self.shadow):
                s.copy_(f.get_tensor(name))


class EMAHooks:
    """The task hooks (training/loop.py `Task`) of a task that keeps `self.ema` (an EMA of
    `self.model`, or None without one): updated after each optimizer step, saved in every
    checkpoint, read back on resume. Mixed in before `Task`."""

    ema: "EMA | None" = None

    def after_optimizer_step(self) -> None:
        if self.ema is not None:
            self.ema.update(self.acc.unwrap_model(self.model))

    def save_extra(self, directory: str) -> None:
        if self.ema is not None:
            self.ema.save(directory)

    def load_extra(self, directory: str) -> None:
        if self.ema is not None:
            self.ema.load(directory)
