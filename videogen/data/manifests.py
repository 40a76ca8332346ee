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
import io
import json
import logging
import os
from dataclasses import dataclass
from typing import Iterable

from videogen.errors import UsageError
from videogen.utils.textfile import read_utf8, utf8_lines

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


def read_csv_rows(path: str) -> list:
    """(line, {column: value}) of each non-blank row of a CSV file (UTF-8, see utils/textfile).

    A row must stay on one line: a quote left open would otherwise swallow the rows after
    it into one caption, silently, so that is a UsageError naming the line.
    """
    reader = csv.reader(io.StringIO(read_utf8(path), newline=""), strict=True)
    header, rows = None, []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return rows
        except csv.Error as err:
            raise UsageError(f"'{path}' line {start}: {err}; check the quotes on that line (a quote inside "
                             "a quoted caption is written twice)") from None
        if reader.line_num > start:
            raise UsageError(f"'{path}' line {start}: a quote opened on this line closes only on line "
                             f"{reader.line_num}; close it, or quote the whole caption on one line")
        if header is None:
            header = [name.strip() for name in row]
            rows.append((start, header))
        elif row:
            rows.append((start, dict(zip(header, row))))


def _read_csv(path: str):
    root = os.path.dirname(os.path.abspath(path))
    rows = read_csv_rows(path)
    fieldnames = rows[0][1] if rows else None
    if not fieldnames or not {"video", "caption"} <= set(fieldnames):
        raise UsageError(f"'{path}' must have the columns video,caption; it has {fieldnames}")
    rows = rows[1:]
    entries = [Entry(_resolve(root, row["video"]), (row.get("caption") or "").strip(), f"{path}:{line}")
               for line, row in rows if row["video"]]
    bad = [(f"{path}:{line}", "bad_entry", "no video path") for line, row in rows if not row["video"]]
    return entries, bad


def _read_jsonl(path: str):
    root = os.path.dirname(os.path.abspath(path))
    entries, bad = [], []
    for line_no, line in enumerate(utf8_lines(path), 1):
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
        out = utf8_lines(os.path.join(root, name))
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
