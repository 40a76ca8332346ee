"""`videogen worker`: pipelines kept loaded between `videogen generate` runs.

From a fresh process, `videogen generate` spends ~5 s importing torch, diffusers and
transformers before its first frame (benchmarks/results/cli_speed.json): diffusers'
autoencoders package imports every autoencoder it has, and its utils import torch._dynamo.
With a worker listening on the socket (utils/worker_protocol), `generate` is a thin client
that imports no torch: it sends its arguments and draws the worker's progress. The worker
runs the same `generate_to_file`, so the same file for the same arguments, the same
one-line errors, the same temporary name renamed into place; a cancelled or failed run
leaves nothing at the output path. One request at a time, in arrival order: on a small
machine two at once would only share its cores.
"""

from __future__ import annotations

import inspect
import logging
import os
import select
import signal
import socket
import tempfile
import time
from collections import OrderedDict
from typing import Optional

import torch

from videogen.errors import UsageError
from videogen.pipelines.pipeline import (DEFAULT_FAST, DEFAULT_FAST_DIR, DEFAULT_MODEL_DIR, generate_to_file,
                                         load_pipeline)
from videogen.utils import worker_protocol as protocol

logger = logging.getLogger("videogen")

# What a request may set: generate_to_file's arguments, less those the worker owns.
ARGUMENTS = frozenset(inspect.signature(generate_to_file).parameters) - {"progress", "loader", "on_frame"}
CODE = protocol.code_stamp()  # as imported: the code this worker runs


class Cancelled(Exception):
    """The client asked to stop (Ctrl-C) or went away."""


class PipelineCache:
    """The last `size` pipelines loaded, by (model, device, dtype); one is loaded again when
    a file of its model directory changed on disk (a model trained on into the same folder)."""

    def __init__(self, size: int = 2):
        self.size = size
        self._pipes: OrderedDict = OrderedDict()

    def __call__(self, model: Optional[str], device: str, dtype: str):
        key, stamp = (model, device, dtype), files_stamp(model)
        hit = self._pipes.get(key)
        if hit is not None and hit[0] == stamp:
            self._pipes.move_to_end(key)
            return hit[1]
        pipe = load_pipeline(model, device, dtype)
        self._pipes[key] = (stamp, pipe)
        self._pipes.move_to_end(key)
        while len(self._pipes) > self.size:
            self._pipes.popitem(last=False)
        return pipe


def files_stamp(model: Optional[str]) -> tuple:
    """(path, mtime, size) of every file the pipeline `model` loads from."""
    folders = [model] if model not in (None, DEFAULT_FAST) else [DEFAULT_MODEL_DIR]
    stamp = []
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                stamp.append((path, info.st_mtime_ns, info.st_size))
    return tuple(sorted(stamp))  # DEFAULT_FAST_DIR lies inside DEFAULT_MODEL_DIR


class _Forward(logging.Handler):
    """The run's warnings, also to the client (its stderr)."""

    def __init__(self, channel: protocol.Channel):
        super().__init__(logging.WARNING)
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.channel.send({"log": record.getMessage()})
        except OSError:
            pass  # the client is gone; the next frame notices


def serve_worker(model: Optional[str] = None, device: str = "cpu", dtype: str = "float32",
                 threads: Optional[int] = None, idle_exit: float = 0, warm_up: bool = True,
                 path: Optional[str] = None) -> None:
    """Listen on the worker socket until Ctrl-C, SIGTERM or `idle_exit` minutes without a
    request (0: never). `model` (with `device`, `dtype`) is loaded, and with `warm_up` run
    for one frame, before the socket opens, so the first request finds it warm; any other
    model a request names is loaded on its first request and kept (the last two)."""
    if not protocol.supported():
        raise UsageError("videogen worker needs Unix sockets (Linux, macOS); run videogen generate without it")
    if idle_exit < 0:
        raise UsageError(f"--idle-exit must be 0 (never) or a number of minutes, not {idle_exit}")
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)
    path = path or protocol.socket_path()
    protocol.private_folder(path)
    if os.path.exists(path):
        if _listening(path):
            raise UsageError(f"a worker already listens on {path}; stop it (Ctrl-C where it runs), or set "
                             f"{protocol.ENV} to another path for a second one")
        os.unlink(path)  # a killed worker's
    cache = PipelineCache()
    started = time.perf_counter()
    if warm_up:
        _warm_up(cache, model, device, dtype)
    else:
        cache(model, device, dtype)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous_umask = os.umask(0o177)  # the socket: this user only, from its first instant
    try:
        server.bind(path)
    except OSError as err:
        server.close()
        raise UsageError(f"cannot listen on {path} ({err.strerror}); is another worker starting?") from None
    finally:
        os.umask(previous_umask)
    inode = os.stat(path).st_ino
    server.listen(16)
    previous_term = signal.signal(signal.SIGTERM, _stop)
    print(f"videogen worker: listening on {path} (ready in {time.perf_counter() - started:.1f} s); "
          "`videogen generate` runs here now. Ctrl-C stops it", flush=True)
    try:
        while True:
            ready = select.select([server], [], [], idle_exit * 60 if idle_exit else None)[0]
            if not ready:
                print(f"videogen worker: no request for {idle_exit:g} min; stopping", flush=True)
                return
            connection, _ = server.accept()
            _handle(connection, cache)
    except KeyboardInterrupt:
        print("videogen worker: stopped", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        server.close()
        try:
            if os.stat(path).st_ino == inode:  # ours, not a newer worker's
                os.unlink(path)
        except OSError:
            pass


def _stop(signum, frame):
    raise KeyboardInterrupt


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _warm_up(cache: PipelineCache, model, device, dtype) -> None:
    """One frame of one prompt into a file that is then deleted: the model loads and each
    kernel runs once (the first call of a torch op is the slow one)."""
    with tempfile.TemporaryDirectory(prefix="videogen-worker-") as folder:
        generate_to_file("a red circle moving right", os.path.join(folder, "warm.mp4"), frames=1, model=model,
                         device=device, dtype=dtype, progress=False, loader=cache)


def _handle(connection: socket.socket, cache: PipelineCache) -> None:
    channel = protocol.Channel(connection)
    connection.settimeout(10)  # a client that connects and says nothing does not hold the queue
    try:
        request = channel.receive()
        connection.settimeout(None)
        kwargs = _checked(request)
        if isinstance(kwargs, str):
            channel.send({"stale": kwargs})
            return
        channel.send({"started": True})
        _run(channel, connection, cache, kwargs)
    except (OSError, ValueError) as err:  # the client went away or spoke nonsense: its run only
        logger.warning("a request ended early: %s", err)
    finally:
        channel.close()


def _checked(request) -> dict | str:
    """The request's generate arguments, or why this worker cannot take it."""
    if not isinstance(request, dict):
        return "the request was not understood"
    if request.get("protocol") != protocol.PROTOCOL or request.get("code") != CODE:
        return (f"the worker runs the videogen code of {CODE.split('@')[0]} as it was when the worker "
                "started, and that code has changed since (or the client's is another); restart the worker")
    kwargs = request.get("generate")
    if not isinstance(kwargs, dict) or set(kwargs) - ARGUMENTS:
        return "the request's arguments are not this worker's generate arguments; restart the worker"
    return kwargs


def _run(channel: protocol.Channel, connection: socket.socket, cache: PipelineCache, kwargs: dict) -> None:
    def loader(model, device, dtype):
        pipe = cache(model, device, dtype)
        channel.send({"loaded": True})
        return pipe

    def on_frame(written: int, total: Optional[int]) -> None:
        channel.send({"frames": written, "total": total})
        if select.select([connection], [], [], 0)[0]:  # a cancel, or the client closed
            raise Cancelled

    forward, threads, started = _Forward(channel), torch.get_num_threads(), time.perf_counter()
    logger.addHandler(forward)
    try:
        output = generate_to_file(**kwargs, progress=False, loader=loader, on_frame=on_frame)
        channel.send({"done": output})
        print(f"videogen worker: {kwargs.get('prompt')!r} -> {output} in {time.perf_counter() - started:.1f} s",
              flush=True)
    except UsageError as err:
        channel.send({"usage_error": str(err)})
    except Cancelled:
        print(f"videogen worker: {kwargs.get('output')} cancelled; nothing was written there", flush=True)
        _try_send(channel, {"cancelled": True})
    except KeyboardInterrupt:
        _try_send(channel, {"error": "the worker was stopped; nothing was written"})
        raise
    except OSError as err:
        if not isinstance(err, (BrokenPipeError, ConnectionResetError)):
            _try_send(channel, {"error": f"{type(err).__name__}: {err}"})
            raise
        print(f"videogen worker: the client of {kwargs.get('output')} went away; nothing was written there",
              flush=True)
    except Exception as err:  # a bug: loud here, one line there
        logger.exception("the request failed")
        _try_send(channel, {"error": f"{type(err).__name__}: {err}"})
    finally:
        logger.removeHandler(forward)
        torch.set_num_threads(threads)  # a request's --threads is its own


def _try_send(channel: protocol.Channel, message: dict) -> None:
    try:
        channel.send(message)
    except OSError:
        pass
