"""`videogen generate` end to end: a real MP4, determinism, and one-line errors for bad input."""

import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest

from videogen.cli import main
from videogen.data.video_io import read_video
from videogen.pipelines.pipeline import load_pipeline
from videogen.training.components import init_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.yaml")


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "videogen", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_cli_writes_17_frame_mp4_readable_by_decord_and_pyav(tiny_model, tmp_path):
    out = tmp_path / "out.mp4"
    res = run_cli("generate", "a red circle moving right", "--frames", "17", "-o", str(out),
                  "--model", tiny_model, "--steps", "2")
    assert res.returncode == 0, res.stderr
    decord = pytest.importorskip("decord")
    assert len(decord.VideoReader(str(out))) == 17
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 17 and frames[0].shape == (32, 32, 3)
    assert not [p for p in os.listdir(tmp_path) if p != "out.mp4"]  # no temp files left


def test_cli_writes_h_x_w_frames_of_a_non_square_model(wide_model, tmp_path):
    out = tmp_path / "wide.mp4"
    res = run_cli("generate", "a red circle moving right", "--frames", "5", "-o", str(out),
                  "--model", wide_model, "--steps", "1")
    assert res.returncode == 0, res.stderr
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (32, 64, 3)


def test_cli_height_width_override_the_model_size(tiny_model, tmp_path, capsys):
    out = tmp_path / "hw.gif"
    main(["generate", "a red circle moving right", "--frames", "2", "-o", str(out), "--model", tiny_model,
          "--steps", "1", "--height", "24", "--width", "48"])
    assert read_video(str(out)).shape == (2, 24, 48, 3)
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "x", "--frames", "2", "-o", str(tmp_path / "bad.gif"), "--model", tiny_model,
              "--height", "30"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "video size 30x32 (HxW) must be a multiple of 8" in err[-1]
    with pytest.raises(SystemExit):
        main(["generate", "x", "-o", str(tmp_path / "bad.gif"), "--model", tiny_model, "--width", "0"])
    assert "--width must be at least 1, not 0" in capsys.readouterr().err
    assert not (tmp_path / "bad.gif").exists()


def test_same_seed_same_frames(tiny_model):
    pipe = load_pipeline(tiny_model)
    a = np.stack(list(pipe("a blue square moving up", 9, steps=2, seed=3)))
    b = np.stack(list(pipe("a blue square moving up", 9, steps=2, seed=3)))
    c = np.stack(list(pipe("a blue square moving up", 9, steps=2, seed=4)))
    assert a.shape == (9, 32, 32, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_prompt_schedule_runs(tiny_model):
    pipe = load_pipeline(tiny_model)
    frames = list(pipe("x", 13, steps=1, prompt_schedule="0:a red circle moving right;6:a blue square moving left"))
    assert len(frames) == 13


@pytest.mark.parametrize("args,message", [
    (["", "--frames", "5"], "prompt is empty"),
    (["a red circle", "--frames", "0"], "--frames must be at least 1"),
    (["a red circle", "--model", "/nonexistent/model"], "not found"),
    (["a red circle", "--dtype", "float8"], "unknown --dtype"),
    (["a red circle", "--device", "cuda:0"] if not __import__("torch").cuda.is_available()
     else ["a red circle", "--device", "tpu"], "--device"),
    (["a red circle", "-o", "/nonexistent-dir/out.mp4"], "cannot write"),
    (["a red circle", "-o", "out.avi"], "must end in"),
    (["a red circle", "--steps", "0"], "--steps must be at least 1"),
    (["a red circle", "--context-noise", "1.5"], "--context-noise must be in [0, 1)"),
    (["x", "--prompt-schedule", "5:a;1:b"], "prompt-schedule"),
])
def test_bad_input_exits_2_with_one_line(tiny_model, tmp_path, capsys, args, message):
    argv = ["generate", *args]
    if "--model" not in argv:
        argv += ["--model", tiny_model]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "out.mp4")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "out.mp4")


def test_incomplete_model_dir(tiny_model, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(open(os.path.join(tiny_model, "model_index.json")).read())
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "a red circle", "--model", str(broken), "-o", str(tmp_path / "o.mp4")])
    assert exit_info.value.code == 2
    assert "incomplete" in capsys.readouterr().err


def test_subprocess_error_has_no_traceback(tmp_path):
    res = run_cli("generate", "a red circle", "--model", str(tmp_path / "missing"), "-o", str(tmp_path / "o.mp4"))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_ctrl_c_mid_generation_leaves_no_file(tiny_model, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an older video the user keeps")
    proc = subprocess.Popen([sys.executable, "-m", "videogen", "generate", "a red circle moving right",
                             "--frames", "100000", "-o", str(out), "--model", tiny_model, "--steps", "1"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until frames are being written (a temp file appears beside the output)
    deadline = time.time() + 240
    while time.time() < deadline and not [p for p in os.listdir(tmp_path) if ".tmp-" in p]:
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert out.read_bytes() == b"an older video the user keeps"  # nothing already written is lost
    assert os.listdir(tmp_path) == ["out.mp4"]


def test_outputs_get_the_mode_a_plain_write_gives(tiny_model, tmp_path):
    """Written under a temporary name (mkstemp/mkdtemp: 0600/0700) and renamed: still 0666/0777 less the umask."""
    from videogen.pipelines.pipeline import generate_to_file

    old = os.umask(0o022)
    try:
        out = generate_to_file("a red circle moving right", str(tmp_path / "o.mp4"), frames=5, model=tiny_model,
                               steps=1, progress=False)
        init_pipeline(str(tmp_path / "pipe"), config=TINY, seed=0)
    finally:
        os.umask(old)
    assert os.stat(out).st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "pipe").st_mode & 0o777 == 0o755


def test_context_noise_override_reaches_the_sampler(tiny_model, monkeypatch):
    import videogen.pipelines.stream as stream_module

    seen = []
    real = stream_module.StreamingSampler

    def recording(*args, **kwargs):
        seen.append(args[3].context_noise)  # (model, ctx, latent shape, settings, ...)
        return real(*args, **kwargs)

    monkeypatch.setattr(stream_module, "StreamingSampler", recording)
    pipe = load_pipeline(tiny_model)
    list(pipe("a red circle moving right", 5, steps=1, seed=0))
    list(pipe("a red circle moving right", 5, steps=1, seed=0, context_noise=0.6))
    assert seen == [pipe.config.context_noise, 0.6]


def test_first_ctrl_c_waits_for_the_frame_boundary_second_stops_at_once():
    from videogen.pipelines.pipeline import interrupt_between_frames

    with interrupt_between_frames() as check:
        check()  # nothing pressed: no-op
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler has run: the frame in progress goes on
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second press raises in place
            time.sleep(1)
        with pytest.raises(KeyboardInterrupt):
            check()  # and the boundary raises too
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
