"""videogen: streaming text-to-video generation with Polynomial Mixers (PoM).

The heavy classes import lazily, so `videogen --help` starts instantly, and diffusers can
find `videogen.PoMVideoDiT` / `videogen.VideoGenPipeline` when it loads a model_index.json.
"""

__version__ = "0.1.0"

_LAZY = {"PoMVideoDiT": "videogen.models.dit", "VideoGenPipeline": "videogen.pipelines.pipeline", "PoM": "videogen.models.mixers"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'videogen' has no attribute {name!r}")
