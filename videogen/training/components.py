"""The pipeline parts a training run starts from: built from a config, or loaded from a
pipeline directory (`train.init_from`); and `videogen init-model`."""

from __future__ import annotations

import logging
from typing import Optional

import torch

from videogen.errors import UsageError
from videogen.training.config import Config, load_config

logger = logging.getLogger("videogen")

def load_components(cfg: Config) -> dict:
    """transformer, vae, text_encoder, tokenizer, scheduler: from `train.init_from` if set
    (a pipeline directory), else built from the config (seeded by train.seed)."""
    from videogen.pipelines.pipeline import build_components

    if cfg.train.init_from:
        return components_from_pipeline(cfg.train.init_from, cfg.model.frame_positions)
    return build_components(cfg, seed=cfg.train.seed)

def components_from_pipeline(path: str, frame_positions: int = 0) -> dict:
    from videogen.models.dit import with_frame_positions
    from videogen.pipelines.pipeline import COMPONENTS, load_pipeline

    pipe = load_pipeline(path)
    logger.info("starting from the pipeline in %s (its transformer, VAE and text encoder; "
                "the config's model/vae/text sections are not used but for model.frame_positions)", path)
    components = {name: getattr(pipe, name) for name in COMPONENTS}
    transformer = components["transformer"]
    try:
        components["transformer"] = with_frame_positions(transformer, frame_positions)
    except ValueError:
        have = transformer.config.frame_positions
        raise UsageError(f"model.frame_positions={frame_positions}, but the transformer in {path} was "
                         f"trained with {have}: set model.frame_positions={have}") from None
    if components["transformer"] is not transformer:
        logger.info("the transformer gains %d+1 frame-position embeddings, zero-initialised", frame_positions)
    return components

def freeze(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    # Cast only when needed: diffusers warns on any .to(dtype) of the Wan VAE.
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype=dtype)
    return module.to(device).eval().requires_grad_(False)


def init_pipeline(directory: str, *, config: str, overrides: Optional[list] = None, seed: int = 0) -> None:
    """`videogen init-model`: write a randomly initialised pipeline built from a config."""
    from videogen.pipelines.pipeline import build_components, pipeline_from_components, save_pipeline

    cfg = load_config(config, overrides)
    save_pipeline(pipeline_from_components(cfg, build_components(cfg, seed)), directory)
    print(f"wrote a randomly initialised pipeline to {directory}")
