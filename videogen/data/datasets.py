"""Video-text datasets for training: clips and captions from a manifest (data/manifests.py).

Each item is a clip of `frames` pixel frames at `fps`, resized to cover `size` (an int,
square, or [H, W]) keeping its aspect ratio and centre-cropped to it, as a (3, F, H, W)
float tensor in [-1, 1], with its caption.
`frames` must fit the VAE: 1 + temporal*k (utils/frames.py).

Aspect-ratio buckets (`data.buckets`, off by default) take clips of mixed shapes: each
clip goes to the bucket nearest its aspect ratio (`nearest_bucket`) and is resized to
cover that bucket's size and centre-cropped to it; `bucket_ids()` says which, for a batch
sampler that keeps every batch within one bucket (training/seeding.py).

Bad data never stops a run: a missing file, an empty caption, an unreadable video or a
clip too short is skipped with a warning naming the file, counted by reason, and
replaced by a good item drawn at random (seeded: the same in every worker);
`report()` summarises. Only a manifest with no good item at all is an error (UsageError).

Cached latents (`videogen cache`) are read by data/latent_cache.py instead.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from videogen.data.manifests import SKIP_REASONS, Entry, SkipLog, read_manifest
from videogen.data.video_io import VideoReadError, frame_count, read_video, video_info
from videogen.errors import UsageError
from videogen.utils.frames import check_frame_count

logger = logging.getLogger("videogen")


@dataclass
class DataConfig:
    """Training data (see data/datasets.py). Paths are relative to the working directory."""

    manifest: Optional[str] = None  # metadata.csv, *.jsonl, or a dir with prompts.txt + videos.txt
    frames: int = 17  # pixel frames per clip, 1 + temporal*k for the VAE's temporal factor (4: 17, 33)
    # int (square) or [H, W], e.g. [480, 832]: clips are resized to cover it, keeping
    # their aspect ratio, and centre-cropped to it; stored as an int when square
    size: Any = 64
    fps: Optional[float] = None  # resample clips to this fps; None keeps the file's
    random_start: bool = True  # a random window of each longer clip (False: its first frames)
    cache_dir: Optional[str] = None  # latents + text embeddings from `videogen cache`; used when present
    num_workers: int = 0
    # Aspect-ratio buckets for clips of mixed shapes: null (off: every clip to data.size), or
    # a list of sizes, e.g. [[480, 832], [832, 480], [624, 624]]. A clip goes to the bucket
    # nearest its aspect ratio and every batch comes from one bucket; data.size stays the
    # pipeline's generation size. Stored as [H, W] lists.
    buckets: Any = None
    # Mirrored clips too: each clip flipped left to right, its caption's 'left' and 'right'
    # swapped (`mirror_item`), so the data holds no left-right bias a model could learn. The
    # VAE latent is not mirror-equivariant, so the mirror is flipped in pixels and encoded:
    # `videogen cache` caches both (twice the clips); read on the fly, each item is mirrored
    # with probability 1/2, drawn from (seed, epoch, index).
    hflip: bool = False

    def __post_init__(self):
        height, width = size_hw(self.size)
        self.size = height if height == width else [height, width]
        if self.buckets is not None:
            self.buckets = check_buckets(self.buckets)


def size_hw(size: Union[int, list, tuple], name: str = "data.size") -> Tuple[int, int]:
    """(H, W) of a size given as an int (square) or [H, W]; UsageError unless positive ints."""
    sides = list(size) if hasattr(size, "__len__") else [size, size]
    if len(sides) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sides):
        raise UsageError(f"{name} must be a positive int (square) or [H, W] of positive ints, "
                         f"e.g. {name}=64 or {name}=[480,832], not {size}")
    return sides[0], sides[1]


def check_buckets(buckets) -> list:
    """data.buckets as a list of [H, W]; UsageError for an empty list, a bad size, or two
    buckets of one aspect ratio (a clip could go to either)."""
    example = "e.g. data.buckets=[[480,832],[832,480]], or null for the one size data.size"
    if not isinstance(buckets, (list, tuple)) or not buckets:
        raise UsageError(f"data.buckets must be a non-empty list of sizes ([H, W] or an int), not {buckets!r}; "
                         f"{example}")
    sizes = []
    for i, bucket in enumerate(buckets):
        try:
            sizes.append(list(size_hw(bucket)))
        except UsageError:
            raise UsageError(f"data.buckets[{i}] must be [H, W] of positive ints or an int (square), "
                             f"not {bucket!r}; {example}") from None
    for i, (h, w) in enumerate(sizes):
        for h2, w2 in sizes[:i]:
            if h * w2 == h2 * w:
                raise UsageError(f"data.buckets {[h2, w2]} and {[h, w]} have the same aspect ratio, so a clip "
                                 f"could go to either; keep one of them ({example})")
    return sizes


def nearest_bucket(height: int, width: int, buckets: list) -> int:
    """Index of the bucket (H, W) whose aspect ratio W/H is nearest width/height, measured
    as |log| of their ratio (so 2:1 is as far from 1:1 as 1:2 is); ties go to the first."""
    ratio = math.log(width / height)
    return min(range(len(buckets)), key=lambda i: abs(math.log(buckets[i][1] / buckets[i][0]) - ratio))


class _Skip(Exception):
    """Internal: this item cannot be used; `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def clip_to_tensor(frames: np.ndarray, size: Union[int, list, tuple]) -> torch.Tensor:
    """(F, h, w, 3) uint8 -> (3, F, H, W) float in [-1, 1], `size` an int (square) or (H, W):
    resized to cover H x W keeping the aspect ratio, then centre-cropped to it."""
    height, width = size_hw(size, "size")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (F, 3, h, w)
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    new = (max(height, round(h * scale)), max(width, round(w * scale)))
    if new != (h, w):
        x = F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)
        h, w = new
    top, left = (h - height) // 2, (w - width) // 2
    x = x[:, :, top:top + height, left:left + width]
    return (x / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


MIRROR_WORDS = {"left": "right", "right": "left"}
_MIRROR_WORD = re.compile(r"\b(?:left|right)\b", re.IGNORECASE)


def mirror_caption(caption: str) -> str:
    """The caption of the clip mirrored left to right: whole words 'left' and 'right'
    swapped ('leftwards' is left alone), in the case they had (left, Left, LEFT)."""
    def swap(match: re.Match) -> str:
        found = match.group(0)
        word = MIRROR_WORDS[found.lower()]
        return word.upper() if found.isupper() else word.capitalize() if found[0].isupper() else word

    return _MIRROR_WORD.sub(swap, caption)


def mirror_item(item: dict) -> dict:
    """A dataset item mirrored left to right (`data.hflip`): its video (3, F, H, W) flipped
    along the width, its caption by `mirror_caption`."""
    return {**item, "video": item["video"].flip(-1), "caption": mirror_caption(item["caption"])}


class VideoTextDataset(Dataset):
    """Clips and captions from a manifest; bad items are skipped and replaced.

    Items are dicts: video (3, F, H, W) float in [-1, 1], caption str, index int,
    skipped: list of (where, reason, message) met while finding this item (the training
    loop merges these into `skips`, since workers' own logs die with them).
    """

    def __init__(self, manifest: str, *, frames: int, size: int, fps: Optional[float] = None,
                 random_start: bool = True, seed: int = 0, temporal: int = 4, buckets: Optional[list] = None,
                 hflip: bool = False):
        """temporal: the VAE's temporal factor, models.vae.temporal_factor(cfg.vae); clips
        must hold 1 + temporal*k frames. buckets: sizes (data.buckets) or None (all `size`).
        hflip: each item mirrored (`mirror_item`) with probability 1/2, drawn from (seed,
        epoch, index), as the window start is."""
        check_frame_count(frames, temporal, "data.frames")
        self.manifest = manifest
        self.frames, self.size, self.fps = frames, size_hw(size), fps  # size: (H, W)
        self.random_start, self.seed, self.epoch, self.hflip = random_start, seed, 0, hflip
        self.buckets = [size_hw(b, "buckets") for b in buckets] if buckets else None
        self.skips = SkipLog()
        entries, bad = read_manifest(manifest)
        for where, reason, message in bad:
            self.skips.add(where, reason, message)
        self.total = len(entries) + len(bad)
        self.entries = [e for e in entries if self._precheck(e)]
        self._bucket_of = self._assign_buckets()
        self._members: dict = {}  # bucket -> its items, where replacements are drawn first
        for j, b in enumerate(self._bucket_of):
            self._members.setdefault(b, []).append(j)
        self._bad: set[int] = set()  # indices found unusable in this process
        self._sizes_logged: set = set()
        if not self.entries:
            raise UsageError(self._nothing_usable())

    def _precheck(self, entry: Entry) -> bool:
        """Cheap checks done once up front, so len() already excludes these."""
        if not entry.caption:
            self.skips.add(entry.video, "empty_caption", f"empty caption at {entry.where}")
            return False
        if not os.path.exists(entry.video):
            self.skips.add(entry.video, "missing", f"no such file (listed at {entry.where})")
            return False
        return True

    def _assign_buckets(self) -> list:
        """Each entry's bucket (all 0 without buckets), from its stored size: the header of a
        video file (the first frame of a GIF or frame folder), read once per clip when the
        dataset is made. Unreadable ones are dropped."""
        if not self.buckets:
            return [0] * len(self.entries)
        kept, ids = [], []
        for entry in self.entries:
            try:
                _, _, height, width = video_info(entry.video)
            except VideoReadError as err:
                self.skips.add(entry.video, "unreadable", str(err))
                continue
            kept.append(entry)
            ids.append(nearest_bucket(height, width, self.buckets))
        self.entries = kept
        return ids

    def bucket_ids(self) -> list:
        """The bucket of each item (data.buckets' order; all 0 without buckets): the items of
        one bucket come out at one size."""
        return list(self._bucket_of)

    def item_size(self, index: int) -> tuple:
        """(H, W) of item `index`: its bucket's size, or `size`."""
        return self.buckets[self._bucket_of[index]] if self.buckets else self.size

    def _nothing_usable(self) -> str:
        counts = ", ".join(f"{n} {r}" for r, n in self.skips.counts().items() if n)
        return (f"no usable clip in '{self.manifest}' ({self.total} listed: {counts or 'none'}); "
                "fix the manifest or the files it names")

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Clip starts depend on (seed, epoch, index) only: the same on resume and in any worker."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        skipped, size = [], self.item_size(index)
        for j in self._candidates(index):
            if j in self._bad:
                continue
            try:
                item = self._load(j, size)
            except _Skip as skip:
                self._bad.add(j)
                record = (self.entries[j].video, skip.reason, str(skip))
                self.skips.add(*record)
                skipped.append(record)
                continue
            item["skipped"] = skipped
            return item
        raise UsageError(self._nothing_usable())

    def _candidates(self, index: int):
        """`index`, then random others of its bucket drawn from (seed, epoch, index), then
        all of its bucket in turn, then all items (fitted to this bucket's size).

        Random, so that a bad item's slots go to many items rather than always to its
        neighbour (which would then be seen twice as often); seeded, so that every worker
        and a resumed run make the same picks; all in turn last, so that a good item is
        found whenever one exists. Without buckets, the one bucket is every item.
        """
        yield index
        rng = random.Random(f"replace-{self.seed}-{self.epoch}-{index}")
        pool = self._members[self._bucket_of[index]]
        n = len(pool)
        for _ in range(min(n, 16)):
            yield pool[rng.randrange(n)]
        start = rng.randrange(n)
        for k in range(n):
            yield pool[(start + k) % n]
        if n < len(self.entries):
            yield from range(len(self.entries))

    def try_load(self, index: int) -> Optional[dict]:
        """Item `index` itself, or None (recorded in `skips`) when it is unusable: no replacement."""
        try:
            return self._load(index, self.item_size(index))
        except _Skip as skip:
            self.skips.add(self.entries[index].video, skip.reason, str(skip))
            return None

    def _load(self, j: int, size: tuple) -> dict:
        entry = self.entries[j]
        try:
            clip = self._read_window(entry.video, j)
        except VideoReadError as err:
            raise _Skip("unreadable", str(err)) from None
        self._log_resize(clip.shape[1:3], size)
        item = {"video": clip_to_tensor(clip, size), "caption": entry.caption, "index": j}
        if self.hflip and random.Random(f"hflip-{self.seed}-{self.epoch}-{j}").random() < 0.5:
            return mirror_item(item)
        return item

    def _read_window(self, path: str, j: int) -> np.ndarray:
        """The clip's window of `frames` frames, and only that decoded (a 9-frame clip of a
        long 720p file costs 9 frames of memory, not the file's)."""
        at = f" at {self.fps:g} fps" if self.fps else ""
        available = frame_count(path, fps=self.fps)
        if available < self.frames:
            raise _Skip("too_short", f"{available} frames{at}, need {self.frames}")
        start = self._start(j, available)
        clip = read_video(path, fps=self.fps, start=start, num_frames=self.frames)
        if len(clip) < self.frames and start > 0:
            # The header promised more frames than the file holds: the window that ends
            # where the file does (the same in every run).
            start = max(0, start + len(clip) - self.frames)
            clip = read_video(path, fps=self.fps, start=start, num_frames=self.frames)
        if len(clip) < self.frames:
            raise _Skip("too_short", f"{len(clip)} frames{at} (the header said {available}), need {self.frames}")
        return clip

    def _start(self, j: int, available: int) -> int:
        if not self.random_start:
            return 0
        return random.Random(f"{self.seed}-{self.epoch}-{j}").randrange(available - self.frames + 1)

    def _log_resize(self, hw: tuple, size: tuple) -> None:
        key = (tuple(hw), tuple(size))
        if key[0] != key[1] and key not in self._sizes_logged:
            self._sizes_logged.add(key)
            logger.info("clips of %dx%d (WxH) are resized to cover %dx%d, keeping their aspect ratio, "
                        "and centre-cropped to it", hw[1], hw[0], size[1], size[0])

    def report(self) -> dict:
        """{'listed', 'usable', 'skipped': {reason: count}, 'files': {reason: [file, ...]}}."""
        files: dict[str, list] = {reason: [] for reason in SKIP_REASONS}
        for where, (reason, _) in self.skips.items.items():
            files[reason].append(where)
        counts = self.skips.counts()
        return {"listed": self.total, "usable": self.total - sum(counts.values()),
                "skipped": counts, "files": files}

    def summary(self) -> str:
        r = self.report()
        parts = ", ".join(f"{n} {reason}" for reason, n in r["skipped"].items() if n)
        return f"dataset '{self.manifest}': {r['usable']} of {r['listed']} clips usable" + (
            f"; skipped {parts}" if parts else "")


def collate_clips(items: list[dict]) -> dict:
    """Stack a list of items: tensors along a new batch axis, other fields as lists."""
    out = {"caption": [it["caption"] for it in items], "index": [it["index"] for it in items],
           "skipped": [s for it in items for s in it.get("skipped", [])]}
    for key in items[0]:
        if isinstance(items[0][key], torch.Tensor):
            out[key] = torch.stack([it[key] for it in items])
    return out
