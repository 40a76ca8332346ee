"""Checkpoints: the layout `checkpoint-NNNNNN/` in a run's folder, written whole or not at
all, the last K kept, found again on resume, and read back without running any code.

A checkpoint holds what `accelerator.save_state` writes (model.safetensors, optimizer.bin,
scheduler.bin, random_states_R.pkl; under FSDP its sharded layout), the task's own files
(the DiT's ema.safetensors), config.json, and trainer_state.json ({"step", "time",
"files": the size of every other file}), written last: a folder without it is not a
checkpoint, and one whose files are missing or cut short (`damage`) is not resumed:
`--resume latest` takes the newest intact one and says which it skipped. A resume whose
config sets the model otherwise than the checkpoint's config.json is refused by key. It is written into a temporary
sibling (`videogen.utils.atomic`) and renamed into place, so a run killed mid-write leaves
the previous checkpoint intact.

Resume reads only the files it knows, each as data: safetensors, or torch.load with
weights_only=True (tensors, numbers, strings and numpy's RNG arrays; a pickle that names
anything else is refused). The step comes from trainer_state.json. accelerate's own
load_state would unpickle registered custom objects (custom_checkpoint_N.pkl, where
checkpoints before this layout kept the step) with weights_only=False: none is
registered, and those files are never read.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import pickle
import random
import re
import struct
import sys
import time
import zipfile
from typing import Callable, Optional

import numpy as np
import torch

from videogen.errors import UsageError
from videogen.utils.atomic import discard, replace_into, temp_sibling

logger = logging.getLogger("videogen")

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"  # written last into a checkpoint: marks it complete
CONFIG_FILE = "config.json"
WEIGHT_FILES = {"model": "model.safetensors", "ema": "ema.safetensors"}
# Test hook: at this step, hang inside the checkpoint write (after the state is saved to
# the temporary folder, before the rename), so a test can SIGKILL the run mid-write.
HANG_ENV = "VIDEOGEN_TEST_HANG_IN_CHECKPOINT"
_TEMP = re.compile(rf"^\.{PREFIX}(\d{{6}})\.tmp-")


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def _step_of_name(name: str) -> Optional[int]:
    tail = name[len(PREFIX):] if name.startswith(PREFIX) else ""
    return int(tail) if tail.isdigit() else None


def is_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, STATE_FILE))


def list_checkpoints(output_dir: str) -> list:
    """Complete checkpoints in output_dir as (step, path), oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        step, path = _step_of_name(name), os.path.join(output_dir, name)
        if step is not None and is_checkpoint(path):
            found.append((step, path))
    return sorted(found)


def checkpoint_step(path: str) -> int:
    """The step of a complete checkpoint, from its trainer_state.json."""
    try:
        with open(os.path.join(path, STATE_FILE)) as f:
            return int(json.load(f)["step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"checkpoint '{path}' has no readable {STATE_FILE} ({err}); pass another checkpoint") from None


def check_same_config(path: str, keys: dict) -> None:
    """Refuse to resume `path` when its config.json sets any of `keys` ({"model.dim": 32, ...},
    what fixes the trained weights) otherwise: one line naming each, before any weight is read.
    Keys its config.json lacks (older layouts) are left to the weights' shapes."""
    try:
        with open(os.path.join(path, CONFIG_FILE)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return
    differ = []
    for key, value in keys.items():
        section, name = key.split(".", 1)
        there = saved.get(section) if isinstance(saved, dict) else None
        if isinstance(there, dict) and name in there and there[name] != value:
            differ.append(f"{key}={there[name]!r} there, {value!r} here")
    if differ:
        raise UsageError(f"cannot resume '{path}': it was trained with another model config ({'; '.join(differ)}); "
                         f"resume with the config it was trained with (its {CONFIG_FILE}), or start a new run in "
                         "another train.output_dir")


def file_sizes(folder: str) -> dict:
    """{relative path: bytes} of every file under `folder`: trainer_state.json records them."""
    sizes = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            sizes[os.path.relpath(path, folder)] = os.path.getsize(path)
    return sizes


def damage(path: str) -> Optional[str]:
    """Why the checkpoint folder `path` cannot be resumed (a file missing, cut short or not
    whole), or None when it is intact: the sizes trainer_state.json recorded, then the
    structure of each safetensors and torch pickle (checkpoints before the sizes were kept)."""
    try:
        with open(os.path.join(path, STATE_FILE)) as f:
            state = json.load(f)
        int(state["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {STATE_FILE} is unreadable"
    for name, size in (state.get("files") or {}).items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            return f"{name} is missing"
        if os.path.getsize(file) != size:
            return f"{name} is {os.path.getsize(file)} bytes, not the {size} written: cut short or changed"
    for name in sorted(os.listdir(path)):
        problem = _file_damage(os.path.join(path, name))
        if problem:
            return f"{name} {problem}"
    return None


def _file_damage(file: str) -> Optional[str]:
    """A safetensors file must end where its header says; a torch.save file is a zip archive,
    whose directory sits at its end (a cut-short one has none)."""
    if file.endswith(".safetensors"):
        size = os.path.getsize(file)
        try:
            with open(file, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length)) if 8 + length <= size else None
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error):
            return "has no readable safetensors header"
        if 8 + length + end != size:
            return f"is {size} bytes, but its header describes {8 + length + end}: cut short"
    elif file.endswith((".bin", ".pkl", ".pt")) and os.path.isfile(file):
        try:
            zipfile.ZipFile(file).close()
        except (OSError, zipfile.BadZipFile):
            return "is not a whole torch.save archive: cut short"
    return None


def last_intact(output_dir: str) -> Optional[str]:
    for _, path in reversed(list_checkpoints(output_dir)):
        if damage(path) is None:
            return path
    return None


def load_weights(path: str, which: str = "ema") -> dict:
    """The weights of a checkpoint folder: which="ema" (ema.safetensors, the DiT's average)
    or "model" (model.safetensors, the raw weights; a VAE run's `Reconstruction`, keys `vae.*`)."""
    from safetensors.torch import load_file

    if which not in WEIGHT_FILES:
        raise UsageError(f"which must be one of {', '.join(WEIGHT_FILES)}, not '{which}'")
    file = os.path.join(path, WEIGHT_FILES[which])
    if not os.path.isfile(file):
        hint = " (a run with train.ema_decay=0 keeps none: use which='model')" if which == "ema" else ""
        raise UsageError(f"'{path}' holds no {WEIGHT_FILES[which]}{hint}; pass a checkpoint-NNNNNN folder of a run")
    try:
        return load_file(file)
    except Exception as err:  # safetensors' own error type, across versions
        if isinstance(err, (MemoryError, KeyboardInterrupt)):
            raise
        raise UsageError(f"'{file}' is corrupt ({str(err).splitlines()[0][:120]}); use another checkpoint") from None


def safe_load(path: str, map_location="cpu"):
    """torch.load of a checkpoint pickle as data only: tensors, numbers, strings, containers
    and numpy arrays (the RNG states). A pickle that names anything else is refused."""
    allowed = [np.ndarray, np.dtype, codecs.encode, _numpy_reconstruct()]
    allowed += [np.dtypes.UInt32DType] if hasattr(np, "dtypes") else []
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UsageError(f"refused '{path}': it holds more than tensors and numbers, and unpickling it could run "
                         f"code ({str(err).splitlines()[-1][:120]}); resume from a checkpoint you trust") from None
    except (EOFError, RuntimeError) as err:
        raise UsageError(f"'{path}' is corrupt ({err}); resume from another checkpoint") from None


def _numpy_reconstruct():
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


class CheckpointManager:
    """The checkpoints of one run folder; every method is called on every rank."""

    def __init__(self, accelerator, output_dir: str, keep: int):
        self.accelerator, self.output_dir, self.keep = accelerator, output_dir, keep

    def list(self) -> list:
        return list_checkpoints(self.output_dir)

    def find(self, resume: Optional[str]) -> Optional[str]:
        """The folder to resume from: None (no resume), 'latest' (None if there is none yet)
        or a checkpoint folder, which must be complete."""
        if resume is None:
            return None
        if resume == "latest":
            return self._latest_intact()
        if not is_checkpoint(resume):
            raise UsageError(f"--resume '{resume}' is not a complete checkpoint directory (no {STATE_FILE}); "
                             f"pass one of {self.output_dir}/{PREFIX}* or 'latest'")
        problem = damage(resume)
        if problem:
            intact = last_intact(os.path.dirname(os.path.abspath(resume)))
            hint = (f"the last intact checkpoint is {intact}: pass --resume {intact}" if intact
                    else "no checkpoint beside it is intact: start a new run in another train.output_dir")
            raise UsageError(f"checkpoint '{resume}' is damaged ({problem}); {hint}")
        return resume

    def _latest_intact(self) -> Optional[str]:
        """The newest checkpoint that is intact; the damaged ones after it are named in one log line."""
        found = self.list()
        if not found:
            logger.info("--resume latest: no complete checkpoint in %s yet; starting from step 0", self.output_dir)
            return None
        skipped = []
        for _, path in reversed(found):
            problem = damage(path)
            if problem is None:
                if skipped:
                    logger.warning("--resume latest: skipped %s; resuming from %s", "; ".join(skipped),
                                   os.path.basename(path))
                return path
            skipped.append(f"{os.path.basename(path)} (damaged: {problem})")
        raise UsageError(f"no intact checkpoint in {self.output_dir}: {'; '.join(skipped)}; start a new run in "
                         "another train.output_dir")

    def remove_stale_temps(self) -> None:
        """Tidy up after a killed run (main process): finish a checkpoint that was complete
        but not yet renamed (its state file is written last), delete one cut short."""
        if not os.path.isdir(self.output_dir):
            return
        for name in sorted(os.listdir(self.output_dir)):
            match = _TEMP.match(name)
            if not match:
                continue
            tmp, final = os.path.join(self.output_dir, name), os.path.join(self.output_dir, f"{PREFIX}{match[1]}")
            if is_checkpoint(tmp) and not os.path.exists(final):
                logger.warning("completing %s: it was written in full before the run stopped", os.path.basename(final))
                os.rename(tmp, final)
            else:
                logger.warning("removing %s: a checkpoint whose writing was interrupted", name)
                discard(tmp)

    def save(self, step: int, config: dict, extra: Optional[Callable[[str], None]] = None) -> str:
        """accelerator.save_state, `extra(folder)` (main process) and config.json into a
        temporary sibling of checkpoint-NNNNNN, then trainer_state.json, the rename, and
        the oldest beyond the last K deleted."""
        from accelerate.utils import broadcast_object_list

        acc = self.accelerator
        final = os.path.join(self.output_dir, checkpoint_name(step))
        tmp = [temp_sibling(final, directory=True) if acc.is_main_process else None]
        broadcast_object_list(tmp)  # every rank writes its RNG state into the same folder
        tmp = tmp[0]
        acc.save_state(tmp)
        acc.wait_for_everyone()  # every rank's files are in before their sizes are recorded
        if acc.is_main_process:
            if extra is not None:
                extra(tmp)
            with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
                json.dump(config, f, indent=1)
            _maybe_hang(step, tmp)
            state = {"step": step, "time": time.time(), "files": file_sizes(tmp)}
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump(state, f)
        acc.wait_for_everyone()
        if acc.is_main_process:
            replace_into(tmp, final)  # over a checkpoint of this step that an earlier try of the run wrote
            self._keep_last()
            logger.info("saved %s", final)
        acc.wait_for_everyone()
        return final

    def _keep_last(self) -> None:
        for _, old in self.list()[:-self.keep]:
            # Moved into a temporary sibling first: a kill mid-delete leaves that, which the
            # next start removes, never a checkpoint-NNNNNN folder that is not whole.
            doomed = temp_sibling(old, directory=True)
            os.replace(old, os.path.join(doomed, "old"))
            discard(doomed)

    def incomplete(self) -> list:
        """checkpoint-NNNNNN folders without trainer_state.json: not written by this scheme."""
        if not os.path.isdir(self.output_dir):
            return []
        return sorted(name for name in os.listdir(self.output_dir)
                      if _step_of_name(name) is not None and not is_checkpoint(os.path.join(self.output_dir, name)))

    def load(self, directory: str, model, optimizer, scheduler) -> int:
        """Restore model, optimizer, scheduler, GradScaler and this rank's RNG states from a
        checkpoint folder; returns its step."""
        from accelerate.utils import DistributedType

        step = checkpoint_step(directory)
        acc = self.accelerator
        if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            acc.load_state(directory)  # sharded layouts are accelerate's (weights_only loads; no custom objects)
            return step
        state = load_weights(directory, "model")
        try:
            acc.unwrap_model(model).load_state_dict(state)
        except RuntimeError as err:
            raise UsageError(f"the model in '{directory}' does not fit this config's model "
                             f"({str(err).splitlines()[0]}); resume with the config it was trained with") from None
        optimizer.load_state_dict(safe_load(self._file(directory, "optimizer.bin")))
        scheduler.load_state_dict(safe_load(self._file(directory, "scheduler.bin")))
        if acc.scaler is not None and os.path.isfile(os.path.join(directory, "scaler.pt")):
            acc.scaler.load_state_dict(safe_load(os.path.join(directory, "scaler.pt")))
        self._load_rng(directory)
        return step

    @staticmethod
    def _file(directory: str, name: str) -> str:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise UsageError(f"checkpoint '{directory}' has no {name}; it is incomplete, resume from another one")
        return path

    def _load_rng(self, directory: str) -> None:
        path = os.path.join(directory, f"random_states_{self.accelerator.process_index}.pkl")
        if not os.path.isfile(path):  # written by another number of processes
            logger.info("%s has no RNG state for rank %d: the global RNGs are not restored (the training draws "
                        "from per-step generators)", directory, self.accelerator.process_index)
            return
        states = safe_load(path)
        random.setstate(states["random_state"])
        np.random.set_state(states["numpy_random_seed"])
        torch.set_rng_state(states["torch_manual_seed"])
        if torch.cuda.is_available() and "torch_cuda_manual_seed" in states:
            torch.cuda.set_rng_state_all(states["torch_cuda_manual_seed"])


def _maybe_hang(step: int, tmp: str) -> None:
    if os.environ.get(HANG_ENV) == str(step):
        print(f"videogen test hook: hanging inside {tmp}", file=sys.stderr, flush=True)
        time.sleep(600)
