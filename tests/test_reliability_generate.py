"""`videogen generate` reliability (issue 21): non-finite settings refused before the model
loads, a model's bad fps or pickled weights refused at load, a schedule past --frames
refused, SIGTERM/SIGHUP keep the old output, and a run after a SIGKILL tidies its own
temporary files (and nothing else)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from videogen.cli import main
from videogen.errors import UsageError
from videogen.pipelines import pipeline
from videogen.pipelines.pipeline import generate_to_file, load_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def copy_model(tiny_model, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(tiny_model, path)
    return path


def generate_exit(argv, capsys):
    """Exit status and stderr of `videogen generate ARGV` run in this process."""
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", *argv])
    return exit_info.value.code, capsys.readouterr().err.strip()


# ------------------------------------------------------ 5. non-finite settings
@pytest.mark.parametrize("args,message", [
    (["--guidance", "nan"], "--guidance must be a finite number >= 0, not nan"),
    (["--guidance", "inf"], "--guidance must be a finite number >= 0, not inf"),
    (["--context-noise", "nan"], "--context-noise must be in [0, 1), not nan"),
    (["--context-noise=-inf"], "--context-noise must be in [0, 1), not -inf"),
])
def test_non_finite_guidance_or_context_noise_is_refused_before_the_model_loads(tiny_model, tmp_path, capsys,
                                                                              monkeypatch, args, message):
    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pipeline, "load_pipeline", no_load)
    out = tmp_path / "out.mp4"
    code, err = generate_exit(["a red circle", *args, "--model", tiny_model, "-o", str(out)], capsys)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------- 6. the model's fps
@pytest.mark.parametrize("fps", [0, -8, float("nan"), float("inf"), "8"])
def test_a_bad_fps_in_model_index_is_refused_at_load(tiny_model, tmp_path, capsys, fps):
    model = copy_model(tiny_model, tmp_path)
    index = model / "model_index.json"
    index.write_text(json.dumps(dict(json.loads(index.read_text()), fps=fps)))
    with pytest.raises(UsageError, match="set \"fps\" there"):
        load_pipeline(str(model))
    code, err = generate_exit(["a red circle", "--model", str(model), "-o", str(tmp_path / "o.mp4")], capsys)
    assert code == 2 and str(index) in err and "fps" in err and len(err.splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "o.mp4")


# ------------------------------------------------------- 7. a late schedule entry
def test_a_prompt_schedule_entry_past_frames_is_refused(tiny_model, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    code, err = generate_exit(["x", "--frames", "9", "--prompt-schedule", "0:a red circle;9:a blue square",
                               "--model", tiny_model, "-o", str(out)], capsys)
    assert code == 2 and "'9:a blue square'" in err and "counts new frames" in err, err
    assert len(err.splitlines()) == 1 and not out.exists()


# ------------------------------------------------- 8. SIGTERM and SIGHUP, 9. SIGKILL
def start_generating(model, out):
    """A `videogen generate` into `out` that runs for long; returns once frames are written."""
    proc = subprocess.Popen([sys.executable, "-m", "videogen", "generate", "a red circle moving right",
                             "--frames", "100000", "-o", str(out), "--model", str(model), "--steps", "1"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        temps = [p for p in os.listdir(out.parent) if p.startswith(f".{out.name}.tmp-")]
        if temps and os.path.getsize(out.parent / temps[0]) > 0:  # the muxer has written: frames flow
            return proc, temps[0]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no frames written: {proc.communicate()[1]}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_keep_the_old_output_and_remove_the_temp(tiny_model, tmp_path, signum):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an older video the user keeps")
    proc, _ = start_generating(tiny_model, out)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert out.read_bytes() == b"an older video the user keeps"
    assert os.listdir(tmp_path) == ["out.mp4"]  # no .out.mp4.tmp-* sibling


def test_a_run_after_sigkill_removes_only_its_own_stale_temps(tiny_model, tmp_path, caplog):
    out = tmp_path / "out.mp4"
    proc, stale = start_generating(tiny_model, out)
    proc.kill()
    proc.communicate(timeout=60)
    assert (tmp_path / stale).exists()  # a SIGKILL leaves it
    others = [".other.mp4.tmp-abc123.mp4", ".out.mp4.old", "out.mp4.tmp-abc123.mp4", ".out.mp4x.tmp-abc.mp4",
              "notes.txt"]
    for name in others:
        (tmp_path / name).write_bytes(b"not ours")
    with caplog.at_level("WARNING", logger="videogen"):
        generate_to_file("a red circle moving right", str(out), frames=1, model=tiny_model, steps=1,
                         progress=False)
    assert sorted(os.listdir(tmp_path)) == sorted(others + ["out.mp4"])
    assert all((tmp_path / name).read_bytes() == b"not ours" for name in others)
    assert stale in caplog.text and "a killed run left" in caplog.text


# ---------------------------------------------------------- 10. pickled weights
@pytest.mark.parametrize("part,weights,pickled", [
    ("transformer", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ("vae", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ("text_encoder", "model.safetensors", "pytorch_model.bin"),
])
def test_pickled_weights_are_refused_with_the_fix(tiny_model, tmp_path, capsys, part, weights, pickled):
    model = copy_model(tiny_model, tmp_path)
    torch.save(load_file(model / part / weights), model / part / pickled)
    os.remove(model / part / weights)
    with pytest.raises(UsageError, match="safe_serialization=True") as err:
        load_pipeline(str(model))
    assert str(model / part) in str(err.value) and pickled in str(err.value)
    code, err = generate_exit(["a red circle", "--model", str(model), "-o", str(tmp_path / "o.mp4")], capsys)
    assert code == 2 and "safe_serialization=True" in err and len(err.splitlines()) == 1, err


class _Plant:
    """A pickle that creates `marker` when it is unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_beside_the_safetensors_is_never_opened(tiny_model, tmp_path, monkeypatch):
    model = copy_model(tiny_model, tmp_path)
    marker = tmp_path / "unpickled"
    torch.save({"x": _Plant(str(marker))}, model / "transformer" / "diffusion_pytorch_model.bin")
    calls = []
    real = pipeline.VideoGenPipeline.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(pipeline.VideoGenPipeline, "from_pretrained", classmethod(spy))
    load_pipeline(str(model))
    assert not marker.exists() and calls[0].get("use_safetensors") is True
