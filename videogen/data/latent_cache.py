"""The latent cache: VAE latents and text embeddings precomputed by `videogen cache`.

`LatentCacheWriter` writes safetensors shards of latents (z, f, h, w), text embeddings
(L, Dt) and masks (L,), plus the empty caption's embedding and an index.json holding the
fingerprint of the settings they were built with; `LatentCacheDataset` reads them back
and refuses a cache built for other settings.

With aspect-ratio buckets (data.buckets) each clip is cached at its bucket's size: a
shard holds latents of one size, and `bucket_ids` reads each item's bucket back from
its latent grid (which has its bucket's aspect ratio exactly).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional

import torch
from torch.utils.data import Dataset

from videogen.data.datasets import nearest_bucket
from videogen.errors import UsageError
from videogen.utils import atomic
from videogen.utils.frames import check_frame_count

logger = logging.getLogger("videogen")

CACHE_INDEX = "index.json"
CACHE_FORMAT = 1


class LatentCacheWriter:
    """Writes cache shards into a temporary sibling of `out` (utils/atomic), renamed to
    `out` by `close()`; `abort()` (or leaving a `with` block by an error) removes it.

    So a killed `videogen cache` never leaves a folder that looks like a cache, and two
    writers to one `out` never mix their shards.
    """

    def __init__(self, out: str, *, shard_size: int = 256):
        if os.path.exists(out):
            raise UsageError(f"'{out}' already exists; delete it to rebuild the cache, or set data.cache_dir elsewhere")
        self.out, self.shard_size = out, shard_size
        self._warn_stale()
        self.tmp = atomic.temp_sibling(out, directory=True)
        self._rows: dict = {}  # latent shape -> rows not yet written: a shard holds one size
        self.shards: list[dict] = []
        self.captions: list[str] = []  # in shard order: row r of the cache is captions[r]
        self.count = 0

    def _warn_stale(self) -> None:
        """Name what killed runs left; not removed, as it may be another writer's, still running."""
        parent, name = os.path.split(os.path.abspath(self.out))
        stale = [n for n in os.listdir(parent) if atomic.is_temp_of(n, name)] if os.path.isdir(parent) else []
        if stale:
            logger.warning("'%s' holds %s, left by an interrupted `videogen cache` (or one still running); "
                           "delete it when no cache is being built", parent, ", ".join(stale))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def abort(self) -> None:
        """Drop the shards written so far; nothing appears at `out`."""
        atomic.discard(self.tmp)

    def add(self, latents: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, captions: list) -> None:
        """latents (B, z, f, h, w), text (B, L, Dt), text_mask (B, L) bool, captions: B strings."""
        for i in range(latents.shape[0]):
            rows = self._rows.setdefault(tuple(latents[i].shape), [])
            rows.append({"latents": latents[i], "text": text[i], "text_mask": text_mask[i], "caption": captions[i]})
            if len(rows) == self.shard_size:
                self._flush(tuple(latents[i].shape))
        self.count += latents.shape[0]

    def _flush(self, shape: tuple) -> None:
        from safetensors.torch import save_file

        rows = self._rows.pop(shape)
        name = f"shard-{len(self.shards):05d}.safetensors"
        tensors = {key: torch.stack([r[key] for r in rows]).contiguous().cpu() for key in ("latents", "text",
                                                                                          "text_mask")}
        save_file(tensors, os.path.join(self.tmp, name))
        self.shards.append({"file": name, "count": len(rows)})
        self.captions.extend(r["caption"] for r in rows)

    def close(self, *, uncond_text: torch.Tensor, uncond_mask: torch.Tensor, fingerprint: dict,
              report: Optional[dict] = None) -> None:
        """uncond_text (L, Dt), uncond_mask (L,): the empty caption, for caption dropout."""
        from safetensors.torch import save_file

        try:
            for shape in list(self._rows):
                self._flush(shape)
            save_file({"text": uncond_text.contiguous().cpu(), "text_mask": uncond_mask.contiguous().cpu()},
                      os.path.join(self.tmp, "uncond.safetensors"))
            index = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "shards": self.shards,
                     "captions": self.captions, "dataset_report": report}
            with open(os.path.join(self.tmp, CACHE_INDEX), "w") as f:
                json.dump(index, f, indent=1)
            atomic.replace_into(self.tmp, os.path.abspath(self.out))
        except BaseException:
            self.abort()
            raise


def has_latent_cache(cache_dir: Optional[str]) -> bool:
    return bool(cache_dir) and os.path.isfile(os.path.join(cache_dir, CACHE_INDEX))


class LatentCacheDataset(Dataset):
    """Items from cache shards: latents (z, f, h, w), text (L, Dt), text_mask (L,), caption, index.

    Shards are opened lazily (memory-mapped by safetensors), one row read per item.
    """

    def __init__(self, cache_dir: str, *, fingerprint: Optional[dict] = None):
        """With a `fingerprint` whose data.frames is fewer than the cache's, items are the
        clips' first data.frames frames (their latent frames cut to match)."""
        if not has_latent_cache(cache_dir):
            raise UsageError(f"'{cache_dir}' holds no latent cache; build it with `videogen cache CONFIG`")
        self.cache_dir = cache_dir
        with open(os.path.join(cache_dir, CACHE_INDEX)) as f:
            self.index = json.load(f)
        if self.index.get("format") != CACHE_FORMAT:
            raise UsageError(f"latent cache '{cache_dir}' has format {self.index.get('format')}, "
                             f"expected {CACHE_FORMAT}; delete it and rerun `videogen cache`")
        self.latent_frames = None  # all
        if fingerprint is not None:
            stored = self.index["fingerprint"]
            have, want = stored.get("data.frames"), fingerprint.get("data.frames")
            if isinstance(have, int) and isinstance(want, int) and want < have:
                self.latent_frames = _cut_latent_frames(cache_dir, self.index, have, want)
                fingerprint = {**fingerprint, "data.frames": have}
            _check_fingerprint(cache_dir, stored, fingerprint)
        self.rows = [(s["file"], r) for s in self.index["shards"] for r in range(s["count"])]
        self.captions = self.index["captions"]
        self._open: dict = {}

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Cached clips are fixed; nothing depends on the epoch."""

    def _shard(self, name: str):
        from safetensors import safe_open

        if name not in self._open:
            self._open[name] = safe_open(os.path.join(self.cache_dir, name), framework="pt")
        return self._open[name]

    def __getitem__(self, index: int) -> dict:
        name, row = self.rows[index]
        shard = self._shard(name)
        item = {key: shard.get_slice(key)[row:row + 1][0] for key in ("latents", "text", "text_mask")}
        if self.latent_frames is not None:
            item["latents"] = item["latents"][:, :self.latent_frames].contiguous()
        item.update(caption=self.captions[index], index=index, skipped=[])
        return item

    def bucket_ids(self, buckets: list) -> list:
        """Each item's bucket in `buckets` (data.buckets, [H, W] each), from its latent grid."""
        ids = []
        for s in self.index["shards"]:
            height, width = self._shard(s["file"]).get_slice("latents").get_shape()[-2:]
            ids += [nearest_bucket(height, width, buckets)] * s["count"]
        return ids

    def uncond(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty caption's embedding (L, Dt) and mask (L,)."""
        from safetensors.torch import load_file

        t = load_file(os.path.join(self.cache_dir, "uncond.safetensors"))
        return t["text"], t["text_mask"]

    def __getstate__(self):  # open shard handles do not pickle into workers
        state = self.__dict__.copy()
        state["_open"] = {}
        return state


def _cut_latent_frames(cache_dir: str, index: dict, have: int, want: int) -> int:
    """Latent frames of the first `want` of `have` cached pixel frames (causal VAE: 1 + k*r)."""
    from safetensors import safe_open

    with safe_open(os.path.join(cache_dir, index["shards"][0]["file"]), framework="pt") as f:
        cached = f.get_slice("latents").get_shape()[2]
    if cached < 2:
        raise UsageError(f"data.frames={want} cannot be cut from the cache's {have}-frame clips in '{cache_dir}': "
                         "they are one latent frame each; rebuild the cache for these frames")
    ratio = (have - 1) // (cached - 1)
    check_frame_count(want, ratio, f"data.frames={want}, cut from the {have}-frame clips cached in '{cache_dir}',")
    return 1 + (want - 1) // ratio


def _same_paths(value):
    """Local paths compared as absolute paths: `runs/x` from the repo root is `/repo/runs/x`."""
    if isinstance(value, dict):
        return {k: _same_paths(v) for k, v in value.items()}
    if isinstance(value, str) and os.path.exists(value):
        return os.path.abspath(value)
    return value


def _check_fingerprint(cache_dir: str, stored: dict, expected: dict) -> None:
    stored, expected = _same_paths(stored), _same_paths(expected)
    diff = [k for k in sorted(set(stored) | set(expected)) if stored.get(k) != expected.get(k)]
    if diff:
        k = diff[0]
        raise UsageError(f"latent cache '{cache_dir}' was built with {k}={stored.get(k)!r}, but the config "
                         f"has {expected.get(k)!r}; delete the cache and rerun `videogen cache`")
