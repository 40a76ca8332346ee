"""Dataset manifests: which clips a dataset has, and which rows had to be skipped.

`read_manifest` reads one of three layouts, video paths relative to the manifest:
- `metadata.csv` with columns `video,caption` (the shapes world writes this);
- a `.jsonl` file, one `{"video": ..., "caption": ...}` object per line;
- a directory with `prompts.txt` + `videos.txt`, line i of each describing clip i
  (the CogVideoX fine-tuning layout). A directory holding `metadata.csv` also works.

`SkipLog` counts the items a dataset skips, by reason (one of SKIP_REASONS).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from typing import Iterable

from videogen.errors import UsageError

logger = logging.getLogger("videogen")

SKIP_REASONS = ("bad_entry", "missing", "empty_caption", "unreadable", "too_short")


@dataclass(frozen=True)
class Entry:
    """One manifest row: `video` resolved against the manifest's directory."""

    video: str
    caption: str
    where: str  # "file:line", for messages


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
