"""scripts/training_state.sh: a run's newest checkpoint goes into git and back onto a fresh machine."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(run: Path, step: int, complete: bool = True) -> Path:
    d = run / f"checkpoint-{step:06d}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(os.urandom(64))
    if complete:
        (d / "trainer_state.json").write_text(json.dumps({"step": step}))
    return d


def _state(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "scripts" / "training_state.sh"), *args],
                          capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "training_state.sh", tmp_path / "scripts")
    return tmp_path


def test_save_then_restore_on_a_fresh_machine(repo):
    vae = repo / "runs" / "shapes_vae"
    _checkpoint(vae, 250)
    newest = _checkpoint(vae, 500)
    _checkpoint(vae, 750, complete=False)  # cut short: never carried
    (vae / "log.jsonl").write_text('{"step": 500}\n')
    (vae / "export-latents").mkdir()
    (vae / "export-latents" / "config.json").write_text("{}")
    _checkpoint(repo / "runs" / "default", 1000)

    r = _state(repo, "save")
    assert r.returncode == 0, r.stderr
    saved = sorted(p.name for p in (repo / "training_state" / "shapes_vae").iterdir())
    assert saved == ["checkpoint-000500", "export-latents", "log.jsonl"]

    shutil.rmtree(repo / "runs")  # a fresh clone
    r = _state(repo, "restore")
    assert r.returncode == 0, r.stderr
    got = vae / "checkpoint-000500" / "model.safetensors"
    assert got.read_bytes() == (repo / "training_state/shapes_vae/checkpoint-000500/model.safetensors").read_bytes()
    assert (vae / "log.jsonl").read_text() == '{"step": 500}\n'
    assert (vae / "export-latents" / "config.json").is_file()
    assert (repo / "runs" / "default" / "checkpoint-001000" / "trainer_state.json").is_file()
    assert not newest.with_name("checkpoint-000250").exists()


def test_restore_keeps_a_newer_run_and_save_replaces_the_old_state(repo):
    vae = repo / "runs" / "shapes_vae"
    _checkpoint(vae, 250)
    assert _state(repo, "save").returncode == 0
    _checkpoint(vae, 500)
    assert _state(repo, "restore").returncode == 0
    assert sorted(p.name for p in vae.iterdir()) == ["checkpoint-000250", "checkpoint-000500"]
    assert _state(repo, "save").returncode == 0
    assert sorted(p.name for p in (repo / "training_state" / "shapes_vae").iterdir()) == ["checkpoint-000500"]


def test_usage_error(repo):
    r = _state(repo, "push")
    assert r.returncode == 2 and "usage" in r.stderr
