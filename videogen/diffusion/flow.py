"""Rectified-flow schedule: noising, targets and training timesteps (sampling sigmas come
from the diffusers scheduler, see diffusion/sampler.py).

Convention: t = 0 is clean data, t = 1 is pure noise.
    x_t = (1 - t) * x_0 + t * eps        v = eps - x_0        x_0 = x_t - t * v
"""

from __future__ import annotations

import torch


def shift_sigma(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 / Wan timestep shift: spends more steps at high noise when shift > 1."""
    return shift * t / (1 + (shift - 1) * t)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0, noise (B, C, F, H, W); t (B, F) -> x_t."""
    t = t[:, None, :, None, None].to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def sample_train_t(
    batch: int,
    frames: int,
    *,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Diffusion forcing: an independent logit-normal (shifted) t per latent frame, (B, F)."""
    u = torch.randn(batch, frames, generator=generator, device=device) * logit_std + logit_mean
    return shift_sigma(torch.sigmoid(u), shift)

