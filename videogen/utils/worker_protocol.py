"""The warm worker's socket and messages (`videogen worker`; the server is
pipelines/worker.py, the client cli/worker.py).

A Unix stream socket in a folder only this user may enter; one JSON object per line
each way. This module imports nothing heavy: the client side of `videogen generate` runs
without torch.

    client -> worker   {"protocol": 1, "code": code_stamp(), "generate": {generate_to_file's arguments}}
                       {"cancel": true}              (Ctrl-C: stop at the next frame, drop the file)
    worker -> client   {"started": true}             (the worker took the request; until then it is queued)
                       {"loaded": true}              (the pipeline is in memory)
                       {"log": "unknown words: ..."} (a warning of the run, for the client's stderr)
                       {"frames": 12, "total": 240}  (after each frame written; total null if unknown)
                       {"done": "/abs/out.mp4"}
                       {"usage_error": "..."}        (a mistake the user can fix: one line, exit 2)
                       {"cancelled": true}
                       {"error": "..."}              (a bug, whose traceback is in the worker's log)
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from typing import Optional

from videogen.errors import UsageError

PROTOCOL = 1
ENV = "VIDEOGEN_WORKER_SOCKET"  # another socket path (tests, or two workers side by side)


def supported() -> bool:
    return hasattr(socket, "AF_UNIX") and hasattr(os, "getuid")


def code_stamp() -> str:
    """Which videogen code runs: its folder and the newest change to any of its modules. A
    worker started before the code changed (an upgrade, an edit in a checkout) would not
    write what a run of its own writes now, so it turns such a client away."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    newest = 0
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                try:
                    newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
                except OSError:
                    pass
    return f"{root}@{newest}"


def socket_path() -> str:
    """$VIDEOGEN_WORKER_SOCKET, else videogen-<uid>/worker.sock under $XDG_RUNTIME_DIR or the
    temporary folder."""
    given = os.environ.get(ENV)
    if given:
        return os.path.abspath(given)
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"videogen-{os.getuid()}", "worker.sock")


def private_folder(path: str) -> None:
    """Make the socket's folder, readable by this user only; refuse one that another user
    owns or others may write to (anyone who can reach the socket can have files written
    in this user's name)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    info = os.stat(folder)
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(f"the worker socket's folder '{folder}' belongs to another user or others may write "
                         f"to it; remove it, or set {ENV} to a path in a folder of your own")


def trusted(path: str) -> bool:
    """The client talks only to a socket of this user's, in a folder of this user's."""
    try:
        sock, folder = os.stat(path), os.stat(os.path.dirname(path))
    except OSError:
        return False
    own = os.getuid()
    return (stat.S_ISSOCK(sock.st_mode) and sock.st_uid == own and folder.st_uid == own
            and not folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


class Channel:
    """JSON lines over a connected socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._reader = sock.makefile("r", encoding="utf-8", newline="\n")

    def send(self, message: dict) -> None:
        self.sock.sendall((json.dumps(message) + "\n").encode("utf-8"))

    def receive(self) -> Optional[dict]:
        """The next message, or None once the other side has closed."""
        line = self._reader.readline()
        if not line:
            return None
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"worker message is not an object: {line[:80]!r}")
        return message

    def close(self) -> None:
        self._reader.close()
        self.sock.close()
