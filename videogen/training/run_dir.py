"""A run's folder holds only what the run wrote: checked at start-up, before any work.

A new run starts in an absent or empty folder, and leaves a marker there
(`.videogen-run.json`: what runs there, since when). A folder holding anything else (an
earlier run's log.jsonl, a user's files) is refused with one line, unless `--resume`
names it: then the user says it is the run's, and the run goes on there. Outputs that a
run replaces at its end (the DiT's pipeline/, the VAE's export) are checked now too, not
after hours of training.
"""

from __future__ import annotations

import os
import time
from typing import Optional

from videogen.errors import UsageError
from videogen.training.checkpoint import CheckpointManager, list_checkpoints
from videogen.utils.atomic import write_json

MARKER = ".videogen-run.json"


def check_new_run_dir(out: str) -> None:
    """Refuse a folder that is not absent or empty (a new run writes nothing beside others' files)."""
    if not os.path.exists(out):
        return
    if not os.path.isdir(out):
        raise UsageError(f"train.output_dir '{out}' is a file; choose a folder for the run")
    names = sorted(os.listdir(out))
    if names in ([], [MARKER]):  # a run that stopped before writing anything
        return
    done = list_checkpoints(out)
    if done:
        raise UsageError(f"train.output_dir '{out}' already holds checkpoints (up to step {done[-1][0]}); "
                         "pass --resume latest to continue, or choose another train.output_dir")
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    raise UsageError(f"train.output_dir '{out}' is not empty ({shown}); a new run starts in an empty or new "
                     "folder: choose another train.output_dir, or pass --resume latest to continue the run there")


def check_output_folder(path: str, marker: str, what: str) -> None:
    """`path` is absent, empty, or a `what` (it holds `marker`): the run may replace it at its end."""
    if not os.path.exists(path):
        return
    if os.path.isdir(path) and (os.path.isfile(os.path.join(path, marker)) or not os.listdir(path)):
        return
    raise UsageError(f"'{path}' exists and is not a {what}, and the run writes its {what} there at the end; "
                     "move it away or choose another path")


def prepare_run_dir(accelerator, checkpoints: CheckpointManager, resume: Optional[str], kind: str,
                    outputs: list) -> Optional[str]:
    """Check the run's folder and outputs, mark the folder as this run's, tidy the
    temporary checkpoints of a killed run; returns the checkpoint to resume from, or None.

    outputs: (path, marker file, what) of each folder the run replaces at its end.
    """
    out = checkpoints.output_dir
    if resume is None:
        check_new_run_dir(out)
    strays = checkpoints.incomplete()
    if strays:
        raise UsageError(f"'{os.path.join(out, strays[0])}' is not a checkpoint (no trainer_state.json), and a "
                         "checkpoint of that step would replace it; move it out of train.output_dir")
    for path, marker, what in outputs:
        check_output_folder(path, marker, what)
    accelerator.wait_for_everyone()  # every rank has checked before the main one writes
    if accelerator.is_main_process:
        os.makedirs(out, exist_ok=True)
        write_json(os.path.join(out, MARKER), {"kind": kind, "started": time.time(), "resume": resume})
        checkpoints.remove_stale_temps()
    accelerator.wait_for_everyone()
    return checkpoints.find(resume)
