"""`videogen generate` as a client of a listening `videogen worker` (pipelines/worker.py).

Nothing here imports torch: with a worker listening, a `generate` starts, sends its
arguments and draws the worker's progress bar, and its first frame comes in well under a
second instead of after ~5 s of imports. Without one (no socket, or a socket nobody
answers), `generate_on_worker` says so and the command runs in its own process as always.
"""

from __future__ import annotations

import os
import select
import socket
import sys

from videogen.errors import UsageError
from videogen.utils import worker_protocol as protocol
from videogen.utils.events import event

PATH_ARGUMENTS = ("output", "init_video", "init_image")  # the worker has its own working folder
QUEUED_NOTE_S = 1.0  # no "started" by then: say the worker is busy


class WorkerFailed(Exception):
    """The worker hit a bug or stopped mid-run (its own log has the traceback)."""


def generate_on_worker(kwargs: dict) -> bool:
    """Run `generate_to_file(**kwargs)` on the listening worker and return True, or return
    False when none listens (or it runs other videogen code: said once)."""
    if not protocol.supported():
        return False
    path = protocol.socket_path()
    if not protocol.trusted(path):
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:  # a killed worker's socket file
        sock.close()
        return False
    event("imported")
    channel = protocol.Channel(sock)
    try:
        channel.send({"protocol": protocol.PROTOCOL, "code": protocol.code_stamp(), "generate": _absolute(kwargs)})
        return _follow(channel, sock, path)
    except KeyboardInterrupt:
        _cancel(channel)
        raise
    finally:
        channel.close()


def _absolute(kwargs: dict) -> dict:
    out = dict(kwargs)
    for key in PATH_ARGUMENTS:
        if out.get(key):
            out[key] = os.path.abspath(out[key])
    model = out.get("model")
    if model and os.path.exists(model):  # a folder, not the name `default-fast`
        out["model"] = os.path.abspath(model)
    return out


def _follow(channel: protocol.Channel, sock: socket.socket, path: str) -> bool:
    from tqdm import tqdm

    if not select.select([sock], [], [], QUEUED_NOTE_S)[0]:
        print(f"videogen generate: the worker ({path}) is busy with another video; waiting for it",
              file=sys.stderr, flush=True)
    bar = None
    try:
        while True:
            message = channel.receive()
            if message is None:
                raise WorkerFailed("the worker stopped before the video was done (its log says why); run "
                                   "again, or with --no-worker")
            if "stale" in message:
                print(f"videogen generate: not using the worker on {path}: {message['stale']}", file=sys.stderr)
                return False
            if "loaded" in message:
                event("loaded")
            elif "log" in message:
                (bar.write if bar is not None else print)(str(message["log"]), file=sys.stderr)
            elif "frames" in message:
                if bar is None:
                    bar = tqdm(total=message.get("total"), unit="frame", desc="generating (worker)")
                bar.update(message["frames"] - bar.n)
                if message["frames"] == 1:
                    event("first_frame")
            elif "done" in message:
                if bar is not None:
                    bar.close()
                event("done", frames=bar.n if bar is not None else 0)
                return True
            elif "usage_error" in message:
                raise UsageError(message["usage_error"])
            elif "cancelled" in message:
                raise KeyboardInterrupt
            elif "error" in message:
                raise WorkerFailed(f"the worker failed: {message['error']} (its log has the traceback)")
    finally:
        if bar is not None:
            bar.close()


def _cancel(channel: protocol.Channel) -> None:
    """Ctrl-C: ask the worker to stop and wait (a few seconds at most) until it has dropped
    the file, so that "no partial output was left" is true when the command says it."""
    try:
        channel.send({"cancel": True})
        channel.sock.settimeout(10)
        while True:
            message = channel.receive()
            if message is None or "cancelled" in message or "done" in message or "error" in message:
                return
    except (OSError, ValueError):
        return
