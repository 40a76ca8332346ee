"""Training reliability (issue 21): non-finite optimizer keys refused at load, a run stopped at
its first non-finite loss with the last good checkpoint kept, a resume with another model
config or a cut-short checkpoint refused in one line (`--resume latest` falls back)."""

import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file

from videogen import cli
from videogen.errors import UsageError
from videogen.training import checkpoint
from videogen.training.checkpoint import damage, list_checkpoints
from videogen.training.config import load_config, load_vae_train_config
from videogen.training.dit_task import DiTTask, train
from videogen.training.loop import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.yaml")


@pytest.fixture(scope="module")
def two_checkpoints(data):
    """A finished 6-step run: checkpoints at steps 3 and 6."""
    out = data["root"] / "two"
    train(TINY, data["overrides"] + [f"train.output_dir={out}"])
    return out


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr().err


# ------------------------------------------------------------------ 1. config load
@pytest.mark.parametrize("override", ["train.lr=inf", "train.lr=nan", "train.weight_decay=nan",
                                      "train.weight_decay=-0.1", "train.weight_decay=inf", "train.grad_clip=inf",
                                      "train.grad_clip=nan", "train.adam_betas=[0.9,.nan]",
                                      "train.adam_betas=[0.9,nan]", "train.ema_decay=nan", "train.ema_decay=inf"])
def test_non_finite_or_negative_optimizer_keys_are_refused_at_load(override):
    key = override.split("=")[0]
    with pytest.raises(UsageError, match=key.replace(".", r"\.")):
        load_config(TINY, [override])
    if not key.endswith("ema_decay"):  # the loop's keys, shared by the VAE's training
        with pytest.raises(UsageError, match=key.replace(".", r"\.")):
            load_vae_train_config(None, [override])


def test_non_finite_lr_exits_2_before_any_work(data, capsys, tmp_path):
    out = tmp_path / "run"
    code, err = run_cli(["train", TINY, *data["overrides"], f"train.output_dir={out}", "train.lr=inf"], capsys)
    assert code == 2 and "train.lr must be a finite number, not inf" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


# ------------------------------------------------------------ 2. non-finite loss
class PoisonedAt(DiTTask):
    """The DiT task whose weights turn NaN during optimizer step `step` (1-based, as logged)."""

    def __init__(self, cfg, step):
        super().__init__(cfg)
        self.poison_step = step

    def forward_backward(self, step, micro):
        if step + 1 == self.poison_step and micro == 0:
            with torch.no_grad():
                next(self.model.parameters()).fill_(math.nan)
        return super().forward_backward(step, micro)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(TINY, data["overrides"] + [f"train.output_dir={out}"])
    with pytest.raises(UsageError) as err:
        run(cfg, PoisonedAt(cfg, step=5))
    message = str(err.value)
    assert "not finite at step 5" in message and "checkpoint-000003 (step 3)" in message
    assert len(message.splitlines()) == 1
    assert [step for step, _ in list_checkpoints(str(out))] == [3]  # no checkpoint-000006 of NaN weights
    assert not (out / "pipeline").exists()
    for name in ("model.safetensors", "ema.safetensors"):
        weights = load_file(out / "checkpoint-000003" / name)
        assert all(torch.isfinite(w).all() for w in weights.values())
    assert not [n for n in os.listdir(out) if ".tmp-" in n]
    # the run goes on from there: the kept checkpoint is the one --resume latest picks
    assert checkpoint.CheckpointManager(None, str(out), 3).find("latest").endswith("checkpoint-000003")


def test_a_diverging_run_exits_2_with_one_line(data, capsys, tmp_path):
    out = tmp_path / "run"
    code, err = run_cli(["train", TINY, *data["overrides"], f"train.output_dir={out}", "train.lr=1e30",
                         "train.grad_clip=0", "train.checkpoint_every=1", "train.ema_decay=0"], capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith("videogen train: error")]
    assert code == 2 and len(lines) == 1 and "the loss is not finite at step" in lines[0], err
    assert "Traceback" not in err
    bad = int(lines[0].split("at step ")[1].split(" ")[0])
    assert [step for step, _ in list_checkpoints(str(out))][-1] == bad - 1
    assert not (out / "pipeline").exists()


# ------------------------------------------------------- 3. resume, another model
def test_resume_with_another_model_config_names_the_keys_before_reading_weights(data, two_checkpoints,
                                                                                monkeypatch, tmp_path):
    def no_read(*args, **kwargs):
        raise AssertionError("weights were read before the configs were compared")

    monkeypatch.setattr(checkpoint, "load_weights", no_read)
    with pytest.raises(UsageError) as err:
        train(TINY, data["overrides"] + [f"train.output_dir={two_checkpoints}", "model.dim=48",
                                          "model.decay=false", "train.max_steps=9"], resume="latest")
    message = str(err.value)
    assert "model.dim=32 there, 48 here" in message and "model.decay=True there, False here" in message
    assert "model.depth" not in message and len(message.splitlines()) == 1
    assert [step for step, _ in list_checkpoints(str(two_checkpoints))] == [3, 6]


# ------------------------------------------------------- 4. a cut-short checkpoint
def cut_in_half(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def test_a_cut_short_checkpoint_is_named_and_latest_falls_back(data, two_checkpoints, tmp_path, caplog):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    cut_in_half(out / "checkpoint-000006" / "model.safetensors")
    overrides = data["overrides"] + [f"train.output_dir={out}"]
    with pytest.raises(UsageError) as err:
        train(TINY, overrides, resume=str(out / "checkpoint-000006"))
    message = str(err.value)
    assert "model.safetensors" in message and f"the last intact checkpoint is {out / 'checkpoint-000003'}" in message
    assert len(message.splitlines()) == 1
    with caplog.at_level("INFO", logger="videogen"):
        result = train(TINY, overrides, resume="latest")
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "checkpoint-000006 (damaged: model.safetensors" in skipped[0]
    assert skipped[0].endswith("resuming from checkpoint-000003")
    assert f"resumed from {out / 'checkpoint-000003'} at step 3" in caplog.text
    assert result["step"] == 6 and damage(str(out / "checkpoint-000006")) is None  # written again, whole


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.bin", "random_states_0.pkl"])
@pytest.mark.parametrize("sizes", ["recorded", "older layout"])
def test_damage_finds_a_file_cut_short(two_checkpoints, tmp_path, name, sizes):
    import shutil

    ckpt = tmp_path / "checkpoint-000003"
    shutil.copytree(two_checkpoints / "checkpoint-000003", ckpt)
    assert damage(str(ckpt)) is None
    if sizes == "older layout":  # before trainer_state.json recorded the file sizes
        state = json.loads((ckpt / "trainer_state.json").read_text())
        del state["files"]
        (ckpt / "trainer_state.json").write_text(json.dumps(state))
        assert damage(str(ckpt)) is None
    cut_in_half(ckpt / name)
    assert damage(str(ckpt)).startswith(name)


def test_a_packed_then_unpacked_checkpoint_stays_intact(two_checkpoints, tmp_path):
    """scripts/pack_checkpoint.py rewrites the optimizer's file: the recorded sizes follow it."""
    import shutil
    import subprocess
    import sys

    ckpt = tmp_path / "checkpoint-000003"
    shutil.copytree(two_checkpoints / "checkpoint-000003", ckpt)
    for action, name in (("pack", "optimizer.safetensors"), ("unpack", "optimizer.bin")):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "pack_checkpoint.py"), action, str(ckpt)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        files = json.loads((ckpt / "trainer_state.json").read_text())["files"]
        assert files[name] == os.path.getsize(ckpt / name) and damage(str(ckpt)) is None
