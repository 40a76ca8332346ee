"""Video-text datasets for training: clips from a manifest, or cached latents.

`VideoTextDataset` reads a manifest in one of three layouts, paths relative to it:
- `metadata.csv` with columns `video,caption` (the shapes world writes this);
- a `.jsonl` file, one `{"video": ..., "caption": ...}` object per line;
- a directory with `prompts.txt` + `videos.txt`, line i of each describing clip i
  (the CogVideoX fine-tuning layout). A directory holding `metadata.csv` also works.
Each item is a clip of `frames` frames (1+4k) at `fps`, resized on its short side and
centre-cropped to `size`, as a (3, F, H, W) float tensor in [-1, 1], with its caption.

Bad data never stops a run: a missing file, an empty caption, an unreadable video or a
clip too short is skipped with a warning naming the file, counted by reason, and
replaced by the next good item; `report()` summarises. Only a manifest with no good
item at all is an error (UsageError).

`LatentCacheDataset` reads the safetensors shards that `videogen cache` writes with
`LatentCacheWriter`: VAE latents (z, f, h, w), text embeddings (L, Dt) and masks (L,).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from videogen.errors import UsageError
from videogen.data.video_io import VideoReadError, read_video


@dataclass
class DataConfig:
    """Training data (see videogen/data.py). Paths are relative to the working directory."""

    manifest: Optional[str] = None  # metadata.csv, *.jsonl, or a dir with prompts.txt + videos.txt
    frames: int = 17  # pixel frames per clip, 1+4k
    size: int = 64  # clips are resized on their short side and centre-cropped to size x size
    fps: Optional[float] = None  # resample clips to this fps; None keeps the file's
    random_start: bool = True  # a random window of each longer clip (False: its first frames)
    cache_dir: Optional[str] = None  # latents + text embeddings from `videogen cache`; used when present
    num_workers: int = 0

logger = logging.getLogger("videogen")

SKIP_REASONS = ("bad_entry", "missing", "empty_caption", "unreadable", "too_short")
CACHE_INDEX = "index.json"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Entry:
    """One manifest row: `video` resolved against the manifest's directory."""

    video: str
    caption: str
    where: str  # "file:line", for messages


class _Skip(Exception):
    """Internal: this item cannot be used; `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------------- manifests
def read_manifest(path: str) -> tuple[list[Entry], list[tuple[str, str, str]]]:
    """Entries of a manifest, and the rows that could not be parsed as (where, reason, message)."""
    if not os.path.exists(path):
        raise UsageError(f"dataset manifest '{path}' not found; set data.manifest to a metadata.csv, "
                         "a .jsonl file or a directory with prompts.txt + videos.txt")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "metadata.csv")):
            return _read_csv(os.path.join(path, "metadata.csv"))
        if all(os.path.isfile(os.path.join(path, n)) for n in ("prompts.txt", "videos.txt")):
            return _read_prompts_videos(path)
        raise UsageError(f"dataset directory '{path}' has neither metadata.csv nor prompts.txt + videos.txt")
    if path.endswith(".csv"):
        return _read_csv(path)
    if path.endswith((".jsonl", ".json")):
        return _read_jsonl(path)
    raise UsageError(f"dataset manifest '{path}' must be a .csv, a .jsonl or a directory")


def _resolve(root: str, video: str) -> str:
    return video if os.path.isabs(video) else os.path.normpath(os.path.join(root, video))


def _read_csv(path: str):
    root = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"video", "caption"} <= set(reader.fieldnames):
            raise UsageError(f"'{path}' must have the columns video,caption; it has {reader.fieldnames}")
        rows = [(reader.line_num, row) for row in reader]
    entries = [Entry(_resolve(root, row["video"]), (row["caption"] or "").strip(), f"{path}:{line}")
               for line, row in rows if row["video"]]
    bad = [(f"{path}:{line}", "bad_entry", "no video path") for line, row in rows if not row["video"]]
    return entries, bad


def _read_jsonl(path: str):
    root = os.path.dirname(os.path.abspath(path))
    entries, bad = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                bad.append((where, "bad_entry", f"not JSON ({err.msg})"))
                continue
            if not isinstance(row, dict) or not isinstance(row.get("video"), str):
                bad.append((where, "bad_entry", 'needs {"video": "...", "caption": "..."}'))
                continue
            entries.append(Entry(_resolve(root, row["video"]), str(row.get("caption") or "").strip(), where))
    return entries, bad


def _read_prompts_videos(root: str):
    def lines(name):
        with open(os.path.join(root, name), encoding="utf-8") as f:
            out = [line.rstrip("\n") for line in f]
        while out and not out[-1].strip():  # a trailing blank line is not a clip
            out.pop()
        return out

    prompts, videos = lines("prompts.txt"), lines("videos.txt")
    if len(prompts) != len(videos):
        raise UsageError(f"'{root}': prompts.txt has {len(prompts)} lines but videos.txt has {len(videos)}; "
                         "they must pair up line by line")
    entries = [Entry(_resolve(root, v.strip()), p.strip(), f"{root}/videos.txt:{i}")
               for i, (p, v) in enumerate(zip(prompts, videos), 1) if v.strip()]
    bad = [(f"{root}/videos.txt:{i}", "bad_entry", "empty video path")
           for i, v in enumerate(videos, 1) if not v.strip()]
    return entries, bad


# ------------------------------------------------------------------------- skip log
class SkipLog:
    """Skipped items by file: warned once each, counted by reason.

    Keyed by file so that the same skip seen in several data-loader workers (or again
    in a later epoch) counts once.
    """

    def __init__(self):
        self.items: dict[str, tuple[str, str]] = {}

    def add(self, where: str, reason: str, message: str) -> None:
        if where in self.items:
            return
        self.items[where] = (reason, message)
        logger.warning("skipping %s: %s (%s)", where, message, reason)

    def merge(self, skipped: Iterable) -> None:
        for where, reason, message in skipped:
            self.add(where, reason, message)

    def counts(self) -> dict[str, int]:
        out = {reason: 0 for reason in SKIP_REASONS}
        for reason, _ in self.items.values():
            out[reason] += 1
        return out


# ------------------------------------------------------------------------- clips
def clip_to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (3, F, size, size) float in [-1, 1]: short side to size, centre crop."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (F, 3, H, W)
    h, w = x.shape[-2:]
    if min(h, w) != size:
        scale = size / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
        x = F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)
        h, w = new
    top, left = (h - size) // 2, (w - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    return (x / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


class VideoTextDataset(Dataset):
    """Clips and captions from a manifest; bad items are skipped and replaced.

    Items are dicts: video (3, F, size, size) float in [-1, 1], caption str, index int,
    skipped: list of (where, reason, message) met while finding this item (the training
    loop merges these into `skips`, since workers' own logs die with them).
    """

    def __init__(self, manifest: str, *, frames: int, size: int, fps: Optional[float] = None,
                 random_start: bool = True, seed: int = 0):
        if (frames - 1) % 4:
            raise UsageError(f"data.frames must be 1+4k (e.g. 17, 33), not {frames}")
        self.manifest = manifest
        self.frames, self.size, self.fps = frames, size, fps
        self.random_start, self.seed, self.epoch = random_start, seed, 0
        self.skips = SkipLog()
        entries, bad = read_manifest(manifest)
        for where, reason, message in bad:
            self.skips.add(where, reason, message)
        self.total = len(entries) + len(bad)
        self.entries = [e for e in entries if self._precheck(e)]
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
        skipped = []
        for attempt in range(len(self.entries)):
            j = (index + attempt) % len(self.entries)
            if j in self._bad:
                continue
            try:
                item = self._load(j)
            except _Skip as skip:
                self._bad.add(j)
                record = (self.entries[j].video, skip.reason, str(skip))
                self.skips.add(*record)
                skipped.append(record)
                continue
            item["skipped"] = skipped
            return item
        raise UsageError(self._nothing_usable())

    def try_load(self, index: int) -> Optional[dict]:
        """Item `index` itself, or None (recorded in `skips`) when it is unusable: no replacement."""
        try:
            return self._load(index)
        except _Skip as skip:
            self.skips.add(self.entries[index].video, skip.reason, str(skip))
            return None

    def _load(self, j: int) -> dict:
        entry = self.entries[j]
        try:
            frames = read_video(entry.video, fps=self.fps)
        except VideoReadError as err:
            raise _Skip("unreadable", str(err)) from None
        if len(frames) < self.frames:
            at = f" at {self.fps:g} fps" if self.fps else ""
            raise _Skip("too_short", f"{len(frames)} frames{at}, need {self.frames}")
        start = self._start(j, len(frames))
        clip = frames[start:start + self.frames]
        self._log_resize(clip.shape[1:3])
        return {"video": clip_to_tensor(clip, self.size), "caption": entry.caption, "index": j}

    def _start(self, j: int, available: int) -> int:
        if not self.random_start:
            return 0
        return random.Random(f"{self.seed}-{self.epoch}-{j}").randrange(available - self.frames + 1)

    def _log_resize(self, hw: tuple) -> None:
        if tuple(hw) != (self.size, self.size) and tuple(hw) not in self._sizes_logged:
            self._sizes_logged.add(tuple(hw))
            logger.info("clips of %dx%d are resized (short side) and centre-cropped to %dx%d",
                        hw[1], hw[0], self.size, self.size)

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


# ------------------------------------------------------------------------- latent cache
class LatentCacheWriter:
    """Writes cache shards into `<out>.partial`, renamed to `out` by `close()`.

    So a killed `videogen cache` never leaves a directory that looks like a cache.
    """

    def __init__(self, out: str, *, shard_size: int = 256):
        if os.path.exists(out):
            raise UsageError(f"'{out}' already exists; delete it to rebuild the cache, or set data.cache_dir elsewhere")
        self.out, self.tmp, self.shard_size = out, out.rstrip("/") + ".partial", shard_size
        shutil.rmtree(self.tmp, ignore_errors=True)  # left by a killed run
        os.makedirs(self.tmp)
        self._rows: list[dict] = []
        self.shards: list[dict] = []
        self.captions: list[str] = []

    def add(self, latents: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, captions: list) -> None:
        """latents (B, z, f, h, w), text (B, L, Dt), text_mask (B, L) bool, captions: B strings."""
        for i in range(latents.shape[0]):
            self._rows.append({"latents": latents[i], "text": text[i], "text_mask": text_mask[i]})
        self.captions.extend(captions)
        while len(self._rows) >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n: int) -> None:
        from safetensors.torch import save_file

        rows, self._rows = self._rows[:n], self._rows[n:]
        name = f"shard-{len(self.shards):05d}.safetensors"
        tensors = {key: torch.stack([r[key] for r in rows]).contiguous().cpu() for key in rows[0]}
        save_file(tensors, os.path.join(self.tmp, name))
        self.shards.append({"file": name, "count": len(rows)})

    def close(self, *, uncond_text: torch.Tensor, uncond_mask: torch.Tensor, fingerprint: dict,
              report: Optional[dict] = None) -> None:
        """uncond_text (L, Dt), uncond_mask (L,): the empty caption, for caption dropout."""
        from safetensors.torch import save_file

        if self._rows:
            self._flush(len(self._rows))
        save_file({"text": uncond_text.contiguous().cpu(), "text_mask": uncond_mask.contiguous().cpu()},
                  os.path.join(self.tmp, "uncond.safetensors"))
        index = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "shards": self.shards,
                 "captions": self.captions, "dataset_report": report}
        with open(os.path.join(self.tmp, CACHE_INDEX), "w") as f:
            json.dump(index, f, indent=1)
        os.replace(self.tmp, self.out)


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
    ratio = (have - 1) // max(cached - 1, 1)
    if cached < 2 or (want - 1) % ratio:
        raise UsageError(f"data.frames={want} cannot be cut from the cache's {have}-frame clips in '{cache_dir}' "
                         f"({cached} latent frames): use 1+{ratio}k frames")
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
