"""What a run reports: log.jsonl (one JSON object per logged step), the console logger,
and the optional trackers (tensorboard, wandb)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from dataclasses import asdict
from typing import Optional

logger = logging.getLogger("videogen")

TRACKERS = ("tensorboard", "wandb")
LOG_FILE = "log.jsonl"


class JsonlLog:
    """log.jsonl in output_dir, one JSON object per logged step (main process only).

    On resume, records past the resumed step (written after that checkpoint by the run
    that died) are dropped, so the file reads as one run.
    """

    def __init__(self, path: str, resume_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        keep = []
        if resume_step > 0 and os.path.isfile(path):
            with open(path) as f:
                keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= resume_step]
        with open(path, "w") as f:
            f.writelines(keep)

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_log(path: str) -> list:
    """The records of a log.jsonl, for plots and tests."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def setup_logging(is_main_process: bool) -> None:
    """INFO from the main process, warnings from all; a handler only where nobody set one up."""
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[videogen] %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if is_main_process else logging.WARNING)


def tracker(name: Optional[str]) -> Optional[str]:
    """train.log_with if its package is installed; else None, said once in the log."""
    if name is None:
        return None
    if importlib.util.find_spec(name) is None:
        logger.warning("train.log_with=%s but the '%s' package is not installed; logging to log.jsonl "
                       "only (pip install %s)", name, name, name)
        return None
    return name


def hparams(cfg) -> dict:
    """A config of dataclass sections flattened to scalars, as trackers (tensorboard hparams) want it."""
    out = {}
    for section, values in asdict(cfg).items():
        for key, value in values.items():
            ok = isinstance(value, (int, float, str, bool))
            out[f"{section}.{key}"] = value if ok else str(value)
    return out
