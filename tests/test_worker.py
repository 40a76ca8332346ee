"""`videogen worker`: a `generate` through it writes the very file a `generate` of its own
writes, with the same one-line errors and warnings; Ctrl-C leaves nothing behind and the
worker serves on; without a listening worker, `generate` runs in its own process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from videogen.utils import worker_protocol as protocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not protocol.supported(), reason="the worker needs Unix sockets")


def env_for(sock: str) -> dict:
    return dict(os.environ, VIDEOGEN_WORKER_SOCKET=sock, OMP_NUM_THREADS="1")


def run_cli(sock, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "videogen", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env_for(sock))


def start_worker(sock: str, model: str, *extra) -> subprocess.Popen:
    worker = subprocess.Popen([sys.executable, "-m", "videogen", "worker", "--model", model, *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_for(sock))
    line = worker.stdout.readline()  # "listening on ..." once warm
    assert "listening on" in line, line + worker.stdout.read()
    return worker


def stop(worker: subprocess.Popen) -> str:
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=60)
    return out


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """A worker over the tiny model on a socket of this module's own."""
    folder = tmp_path_factory.mktemp("worker")
    os.chmod(folder, 0o700)
    sock = str(folder / "w.sock")
    worker = start_worker(sock, tiny_model)
    yield {"sock": sock, "model": tiny_model, "worker": worker}
    if worker.poll() is None:
        stop(worker)


def test_a_generate_through_the_worker_writes_the_same_bytes_as_one_without(served, tmp_path):
    events = tmp_path / "events.jsonl"
    args = ["generate", "a red circle moving right", "--frames", "17", "--model", served["model"], "--steps", "2"]
    env = dict(env_for(served["sock"]), VIDEOGEN_EVENTS=str(events))
    there = subprocess.run([sys.executable, "-m", "videogen", *args, "-o", "there.mp4"], capture_output=True,
                           text=True, timeout=300, cwd=tmp_path, env=env)  # a relative -o: the client's folder
    assert there.returncode == 0, there.stderr
    assert "generating (worker)" in there.stderr
    here = run_cli(served["sock"], *args, "-o", str(tmp_path / "here.mp4"), "--no-worker")
    assert here.returncode == 0, here.stderr
    assert "(worker)" not in here.stderr
    assert (tmp_path / "there.mp4").read_bytes() == (tmp_path / "here.mp4").read_bytes()
    names = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert names == ["imported", "loaded", "first_frame", "done"]
    assert sorted(os.listdir(tmp_path)) == ["events.jsonl", "here.mp4", "there.mp4"]  # no temporary files


def test_mistakes_through_the_worker_are_one_line_with_status_2(served, tmp_path):
    for args, words in ((["--frames", "0"], "--frames must be at least 1"),
                        (["-o", str(tmp_path / "no" / "such" / "out.mp4")], "choose another -o path"),
                        (["--model", str(tmp_path / "nothing")], "not found")):
        res = run_cli(served["sock"], "generate", "a red circle", "-o", str(tmp_path / "out.mp4"), *args)
        assert res.returncode == 2, res.stderr
        assert words in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not os.listdir(tmp_path)
    warned = run_cli(served["sock"], "generate", "a crimson ball", "--frames", "1", "--model", served["model"],
                     "-o", str(tmp_path / "w.mp4"))
    assert warned.returncode == 0, warned.stderr
    assert "unknown words: 'crimson', 'ball'" in warned.stderr
    assert served["worker"].poll() is None  # mistakes end the request, not the worker


def test_ctrl_c_in_the_client_stops_the_run_on_the_worker_and_leaves_nothing(served, tmp_path):
    out = tmp_path / "long.mp4"
    client = subprocess.Popen([sys.executable, "-m", "videogen", "generate", "a red circle", "--frames", "100000",
                               "--model", served["model"], "--steps", "1", "-o", str(out)],
                              stderr=subprocess.PIPE, text=True, env=env_for(served["sock"]))
    deadline = time.time() + 120
    while not any(name.startswith(".long.mp4") or "long.mp4" in name for name in os.listdir(tmp_path)):
        assert time.time() < deadline and client.poll() is None, "the run never started"
        time.sleep(0.1)
    time.sleep(1.0)  # frames are being written
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 130, err
    assert "no partial output was left" in err
    assert not os.listdir(tmp_path)  # the worker dropped its temporary file before the client said so
    again = run_cli(served["sock"], "generate", "a red circle", "--frames", "1", "--model", served["model"],
                    "-o", str(out))
    assert again.returncode == 0 and out.is_file(), again.stderr  # and it serves on


def test_a_second_worker_on_the_socket_and_a_client_of_other_code_are_refused(served, tmp_path):
    second = run_cli(served["sock"], "worker", "--model", served["model"])
    assert second.returncode == 2 and "already listens" in second.stderr, second.stderr
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(served["sock"])
    channel = protocol.Channel(conn)
    channel.send({"protocol": protocol.PROTOCOL, "code": protocol.code_stamp() + "0", "generate": {}})
    reply = channel.receive()
    channel.close()
    assert "has changed since" in reply["stale"] and "restart the worker" in reply["stale"]


def test_without_a_listening_worker_generate_runs_in_its_own_process(tiny_model, tmp_path):
    os.chmod(tmp_path, 0o700)
    sock = str(tmp_path / "w.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock)  # a socket file nobody listens on, as a killed worker leaves
    dead.close()
    res = run_cli(sock, "generate", "a red circle", "--frames", "1", "--model", tiny_model, "-o",
                  str(tmp_path / "out.mp4"))
    assert res.returncode == 0, res.stderr
    assert "(worker)" not in res.stderr and (tmp_path / "out.mp4").is_file()
    worker = start_worker(sock, tiny_model, "--idle-exit", "0.02")  # replaces the stale socket; stops when idle
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0 and "no request for" in out, out
    assert not os.path.exists(sock)  # it removes its socket


def test_the_pipeline_cache_loads_a_model_again_when_its_files_change(tiny_model, tmp_path):
    import shutil

    from videogen.pipelines.worker import PipelineCache

    model = str(tmp_path / "m")
    shutil.copytree(tiny_model, model)
    cache = PipelineCache(size=1)
    first = cache(model, "cpu", "float32")
    assert cache(model, "cpu", "float32") is first
    index = os.path.join(model, "model_index.json")
    os.utime(index, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache(model, "cpu", "float32") is not first
