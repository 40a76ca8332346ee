"""Atomic outputs: every file or folder videogen writes appears complete, or not at all.

One scheme everywhere: the temporary sibling `.NAME.tmp-XXXXXX[.ext]` (hidden, in the same
folder, so the rename is atomic and never crosses a file system; the real extension stays
last because muxers and plotters pick the format from it), given the mode a plain open()
or mkdir() would give, then renamed onto NAME. A run that dies leaves only such a name,
which `remove_stale_temps` recognises as its own.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile

try:
    import fcntl
except ImportError:  # not on Windows: there a live run's temp is not told from a dead one's
    fcntl = None
from typing import Any, Iterator

from videogen.errors import UsageError

TEMP_MARK = ".tmp-"


def default_mode(directory: bool = False) -> int:
    """The mode a plain open() or mkdir() gives: 0o666 / 0o777 less the umask.

    mkstemp and mkdtemp make 0o600 / 0o700; without a chmod an output renamed from one
    would be private to its writer.
    """
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def temp_sibling(path: str, *, directory: bool = False, make_parents: bool = True,
                 fix: str = "choose another path") -> str:
    """Create the temporary sibling of `path` (a file, or a folder) and return its path.

    This is also the check that the folder is writable: a user mistake there is one line
    ending in `fix`. With make_parents=False a missing parent folder is such a mistake
    (a mistyped -o path should not grow folders).
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if os.path.isdir(path) and not directory:
        raise UsageError(f"cannot write to '{path}': it is a directory; {fix}")
    check_replaceable(path, fix)
    try:
        if make_parents:
            os.makedirs(parent, exist_ok=True)
        if directory:
            tmp = tempfile.mkdtemp(prefix=f".{name}{TEMP_MARK}", dir=parent)
        else:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}{TEMP_MARK}", suffix=os.path.splitext(name)[1], dir=parent)
            os.close(fd)
    except OSError as err:
        raise UsageError(f"cannot write to '{path}': {err.strerror} ({parent}); {fix}") from None
    os.chmod(tmp, default_mode(directory))
    return tmp


def check_replaceable(path: str, fix: str = "choose another path") -> None:
    """Refuse now, before any work, an existing file at `path` that the final rename could
    not replace. Creating the temporary sibling proves that the folder takes new names; a
    rename onto a file also deletes it, which the kernel refuses for a file that is
    immutable or append-only (chattr +i / +a), or another user's in a sticky folder (/tmp).
    Opening the file for writing (which changes nothing) asks the kernel about the first:
    only those flags answer EPERM there, file modes answer EACCES, which renames ignore.
    """
    try:
        info = os.lstat(path)
    except OSError:
        return  # nothing there (or a parent that is no folder: creating the sibling says so)
    if not stat.S_ISREG(info.st_mode):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW))
    except PermissionError as err:
        if err.errno == errno.EPERM:
            raise UsageError(f"cannot replace '{path}': it is immutable or append-only "
                             f"(lsattr shows i or a); {fix}") from None
    except OSError:
        pass  # busy, read-only file system, ...: creating the sibling or the rename reports it
    folder = os.stat(os.path.dirname(path))
    if folder.st_mode & stat.S_ISVTX and os.geteuid() not in (0, info.st_uid, folder.st_uid):
        raise UsageError(f"cannot replace '{path}': it belongs to another user in a sticky folder; {fix}")


def check_output(path: str, fix: str = "choose another path") -> None:
    """Before long work that ends in writing `path` (through atomic_path): the checks that
    writing will make, now. A missing folder is fine (it is made then) if its nearest
    existing ancestor is a folder."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise UsageError(f"cannot write to '{path}': it is a directory; {fix}")
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write to '{path}': '{parent}' is a file, not a folder; {fix}")
    if parent == os.path.dirname(path):
        discard(temp_sibling(path, make_parents=False, fix=fix))


def is_temp_of(name: str, target: str) -> bool:
    """Whether the file name `name` is a temporary sibling made for the file name `target`."""
    return name.startswith(f".{target}{TEMP_MARK}")


def replace_into(tmp: str, path: str) -> None:
    """Rename the finished `tmp` onto `path`; a folder already there is replaced whole."""
    if os.path.isdir(tmp) and os.path.isdir(path):
        old = temp_sibling(path, directory=True)
        os.replace(path, os.path.join(old, "old"))
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def discard(tmp: str) -> None:
    """Remove a temporary sibling, file or folder, whatever state it is in."""
    if os.path.isdir(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.lexists(tmp):
        os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str, *, directory: bool = False, make_parents: bool = True,
                fix: str = "choose another path") -> Iterator[str]:
    """Yield a temporary sibling to write; on success it is renamed onto `path`, on any
    error (KeyboardInterrupt included) it is removed and `path` is left as it was.
    make_parents and fix: as in temp_sibling."""
    tmp = temp_sibling(path, directory=directory, make_parents=make_parents, fix=fix)
    try:
        yield tmp
        replace_into(tmp, os.path.abspath(path))
    finally:
        discard(tmp)


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path: str, obj: Any, indent: int = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent) + "\n")


def hold(tmp: str) -> int:
    """Mark a temporary sibling as in use by this process until `release`: a lock on it that
    the kernel drops when the process ends, however it ends. `remove_stale_temps` leaves a
    held one alone, so two runs writing the same output never delete each other's file."""
    fd = os.open(tmp, os.O_RDONLY)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def release(fd: int) -> None:
    os.close(fd)  # closing drops the lock


def in_use(path: str) -> bool:
    """Whether a live process holds `path` (see `hold`)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def remove_stale_temps(directory: str, targets: list) -> list:
    """Remove the temporary siblings that a killed run left for the names in `targets`
    (and nothing else: not another output's, not one a live run holds); returns what it
    removed."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if any(is_temp_of(name, target) for target in targets) and not in_use(path):
            discard(path)
            removed.append(name)
    return removed
