"""What every benchmark script shares: where results go and how they are written."""

from __future__ import annotations

import contextlib
import os
import platform

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def write_report(name: str, report: dict, plot=None, directory: str = RESULTS) -> str:
    """results/NAME.json (atomically, videogen.utils.atomic) with the machine added, and
    results/NAME.png through `plot(path)` when given. Returns the JSON path."""
    from videogen.utils.atomic import write_json

    path = os.path.join(directory, f"{name}.json")
    write_json(path, {"benchmark": name, "machine": machine(), **report}, indent=2)
    if plot is not None:
        plot(os.path.join(directory, f"{name}.png"))
    return path


def add_sampler_arguments(parser) -> None:
    """--steps, --guidance and --context-noise: overrides of the pipeline's sampler settings."""
    parser.add_argument("--steps", type=int, default=None, help="Euler steps per latent frame (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    parser.add_argument("--context-noise", type=float, default=None, help="commit noise level (default: the model's)")


def sampler_overrides(args) -> dict:
    """The sampler settings given on the command line (add_sampler_arguments), by pipeline key."""
    given = (("steps", args.steps), ("guidance", args.guidance), ("context_noise", args.context_noise))
    return {k: v for k, v in given if v is not None}


def sampler_settings(model: str | None, overrides: dict) -> dict:
    """The sampler settings videos are made with: the pipeline's (model_index.json; for
    `default-fast`, the student's fast/sampling.json) with `overrides`, as a stream takes
    them (`pipelines.stream.sampler_settings`: steps given drop the first-frame steps)."""
    import json
    from dataclasses import asdict

    from diffusers.configuration_utils import FrozenDict

    from videogen.pipelines.pipeline import DEFAULT_FAST, DEFAULT_MODEL_DIR, default_fast_settings
    from videogen.pipelines.stream import sampler_settings as stream_settings

    with open(os.path.join(DEFAULT_MODEL_DIR if model in (None, DEFAULT_FAST) else model, "model_index.json")) as f:
        index = json.load(f)
    if model == DEFAULT_FAST:
        index.update(default_fast_settings())
    settings = asdict(stream_settings(FrozenDict(index), overrides.get("steps"), overrides.get("guidance"),
                                      overrides.get("context_noise")))
    if index.get("contrast") and index.get("contrast_frames") and settings["guidance"] != 1.0:
        # the contrast-guided start (StreamSession); unguided, there is no negative to contrast
        settings.update(contrast=index["contrast"], contrast_frames=index["contrast_frames"])
    return settings


@contextlib.contextmanager
def figure(path: str, *subplots, figsize: tuple, dpi: int = 100, **subplots_kw):
    """`with figure(path, 1, 3, figsize=(14, 4)) as (fig, axes):` draws with matplotlib's
    Agg backend (no display needed) and, on leaving, lays out, saves to `path` (atomically)
    and closes. `subplots_kw` go to plt.subplots (e.g. gridspec_kw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from videogen.utils.atomic import atomic_path

    fig, axes = plt.subplots(*subplots, figsize=figsize, **subplots_kw)
    try:
        yield fig, axes
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
