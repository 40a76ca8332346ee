"""Optional scores from local model directories (nothing is downloaded).

- CLIP text-frame similarity: cosine of the prompt's text feature and each frame's.
- DINO-style subject consistency: cosine of each frame's CLS feature to the first and
  the previous frame's.

Both read frames the same way: (F, H, W, 3) uint8 in batches through the model's image
processor, features L2-normalised; they differ in which model and which feature.
"""

from __future__ import annotations

import os

import numpy as np

from videogen.errors import UsageError


def _pooled(output):
    """transformers 4 returns feature tensors, transformers 5 a model output."""
    import torch

    return output if isinstance(output, torch.Tensor) else output.pooler_output


class FrameFeatureScorer:
    """A model and its processor from a local directory, and normalised per-frame features.

    Subclasses set `kind` (the CLI option, for messages) and implement `_load(model_dir)`
    -> (model, processor) and `_image_features(pixel_values)` -> (B, D).
    """

    kind = ""

    def __init__(self, model_dir: str, batch: int = 32):
        if not os.path.isdir(model_dir):
            raise UsageError(f"--{self.kind} {model_dir}: no such directory; pass a local model directory")
        try:
            self.model, self.processor = self._load(model_dir)
        except (OSError, ValueError, KeyError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UsageError(f"--{self.kind} {model_dir}: cannot load a model from it ({reason}); "
                             "pass a directory written by save_pretrained") from None
        self.model.eval()
        self.batch = batch

    def _load(self, model_dir: str):
        raise NotImplementedError

    def _image_features(self, pixel_values):
        raise NotImplementedError

    def frame_features(self, video: np.ndarray):
        """(F, D) L2-normalised features of a (F, H, W, 3) uint8 video, `batch` frames at a time."""
        import torch

        with torch.no_grad():
            feats = []
            for i in range(0, len(video), self.batch):
                pixels = self.processor(images=list(video[i:i + self.batch]), return_tensors="pt")
                feats.append(self._image_features(pixels["pixel_values"]))
            f = torch.cat(feats)
        return f / f.norm(dim=-1, keepdim=True)


class ClipScorer(FrameFeatureScorer):
    """Cosine similarity of a prompt and each frame, with a local CLIPModel directory."""

    kind = "clip"

    def _load(self, model_dir: str):
        from transformers import CLIPModel, CLIPProcessor

        return CLIPModel.from_pretrained(model_dir), CLIPProcessor.from_pretrained(model_dir)

    def _image_features(self, pixel_values):
        return _pooled(self.model.get_image_features(pixel_values=pixel_values))

    def __call__(self, video: np.ndarray, prompt: str) -> np.ndarray:
        """(F,) cosine similarity of the prompt to each frame."""
        import torch

        with torch.no_grad():
            text = self.processor(text=[prompt], return_tensors="pt", padding=True, truncation=True)
            t = _pooled(self.model.get_text_features(**text))
            t = t / t.norm(dim=-1, keepdim=True)
        return (self.frame_features(video) @ t[0]).numpy()


class DinoScorer(FrameFeatureScorer):
    """Subject consistency: cosine of each frame's CLS feature to the first and previous frame's."""

    kind = "dino"

    def _load(self, model_dir: str):
        from transformers import AutoImageProcessor, AutoModel

        return AutoModel.from_pretrained(model_dir), AutoImageProcessor.from_pretrained(model_dir)

    def _image_features(self, pixel_values):
        return self.model(pixel_values=pixel_values).last_hidden_state[:, 0]

    def __call__(self, video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((F-1,) cosine to the first frame, (F-1,) cosine to the previous frame), frames 1.."""
        f = self.frame_features(video)
        return (f[1:] @ f[0]).numpy(), (f[1:] * f[:-1]).sum(-1).numpy()
