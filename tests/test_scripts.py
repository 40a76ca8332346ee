"""scripts/training_state.sh: a run's newest checkpoint goes into git and back onto a fresh
machine, packed by scripts/pack_checkpoint.py (safetensors, bfloat16 Adam moments)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    for name in ("training_state.sh", "pack_checkpoint.py"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "scripts")
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


def test_a_finished_run_travels_as_its_export(repo):
    vae = repo / "runs" / "shapes_vae"
    _checkpoint(vae, 250)
    assert _state(repo, "save").returncode == 0
    _checkpoint(vae, 500)
    (vae / "log.jsonl").write_text('{"step": 500}\n')
    (vae / "export").mkdir()
    (vae / "export" / "config.json").write_text("{}")
    r = _state(repo, "save")
    assert r.returncode == 0, r.stderr
    saved = sorted(p.name for p in (repo / "training_state" / "shapes_vae").iterdir())
    assert saved == ["export", "log.jsonl"]  # no checkpoint: nothing is left to train

    shutil.rmtree(repo / "runs")
    assert _state(repo, "restore").returncode == 0
    assert (vae / "export" / "config.json").is_file() and (vae / "log.jsonl").is_file()
    assert not list(vae.glob("checkpoint-*"))


def test_usage_error(repo):
    r = _state(repo, "push")
    assert r.returncode == 2 and "usage" in r.stderr


class _Step:
    """The step counter as older checkpoints held it: accelerate's custom object 0."""

    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = int(state["step"])


class _Shadow:
    """An accelerate custom object that holds tensors, as the EMA was registered before it
    moved to ema.safetensors (older checkpoints in training_state/ carry it so)."""

    def __init__(self, model):
        self.updates, self.shadow = 0, [p.detach().clone() for p in model.parameters()]

    def update(self, model):
        self.updates += 1
        for s, p in zip(self.shadow, model.parameters()):
            s.lerp_(p.detach(), 0.1)

    def state_dict(self):
        return {"decay": 0.9, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state):
        self.updates = state["updates"]
        for s, t in zip(self.shadow, state["shadow"]):
            s.copy_(t)


def _trained(tmp_path: Path, steps: int):
    """A tiny model, AdamW and a shadow copy after `steps` steps, saved as accelerate saves a run."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99))
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    state, ema = _Step(), _Shadow(model)
    accelerator.register_for_checkpointing(state, ema)
    x = torch.randn(16, 6)
    for _ in range(steps):
        model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.update(model)
        state.step += 1
    return accelerator, model, optimizer, state, ema, x


def test_packed_checkpoint_resumes_where_the_original_does(tmp_path):
    ckpt = tmp_path / "checkpoint-000005"
    accelerator, model, optimizer, state, ema, x = _trained(tmp_path, 5)
    accelerator.save_state(str(ckpt))
    original = {p.name: p.read_bytes() for p in ckpt.iterdir()}

    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "pack_checkpoint.py"), "pack", str(ckpt)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    packed = sorted(p.name for p in ckpt.iterdir())
    assert not [n for n in packed if n.startswith(("optimizer", "custom_checkpoint")) and not n.endswith(".safetensors")]
    packed_size = sum(p.stat().st_size for p in ckpt.glob("optimizer*"))
    assert packed_size < 0.75 * len(original["optimizer.bin"])  # the moments halved
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "pack_checkpoint.py"), "unpack", str(ckpt)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(original)
    assert (ckpt / "model.safetensors").read_bytes() == original["model.safetensors"]

    # a fresh process's objects, resumed from the unpacked checkpoint, step on as the original
    accelerator2, model2, optimizer2, state2, ema2, _ = _trained(tmp_path, 0)
    accelerator2.load_state(str(ckpt))
    assert state2.step == 5 and ema2.updates == 5
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow, ema2.shadow))  # held weights exact
    for m, o in ((model, optimizer), (model2, optimizer2)):
        m(x).square().mean().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-2 * 1e-2)  # within 1% of one lr-sized step


def test_pack_refuses_a_missing_directory(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "pack_checkpoint.py"), "pack", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no checkpoint directory" in r.stderr and "Traceback" not in r.stderr


def test_committed_training_state_resumes(tmp_path):
    """training_state/default_whole as `restore` unpacks it on a fresh machine (an older
    layout: the step also in custom_checkpoint_0.pkl, which a resume never opens) loads
    into the config's model, optimizer and schedule, at step 600, every tensor as stored."""
    from dataclasses import asdict

    from accelerate import Accelerator
    from safetensors.torch import load_file

    from videogen.models.dit import PoMVideoDiT
    from videogen.training.checkpoint import CheckpointManager
    from videogen.training.config import load_config
    from videogen.training.dit_task import make_optimizer
    from videogen.training.ema import EMA

    src = ROOT / "training_state" / "default_whole" / "checkpoint-000600"
    ckpt = tmp_path / src.name
    shutil.copytree(src, ckpt)
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "pack_checkpoint.py"), "unpack", str(ckpt)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert {"custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl"} <= {p.name for p in ckpt.iterdir()}

    cfg = load_config(str(ROOT / "configs" / "shapes_whole.yaml"))
    model = PoMVideoDiT(in_channels=cfg.vae.z_dim, text_dim=cfg.text.d_model, **asdict(cfg.model))
    accelerator = Accelerator(cpu=True)
    model, optimizer, scheduler = accelerator.prepare(model, *make_optimizer(cfg, model, 1))
    assert CheckpointManager(accelerator, str(tmp_path), 3).load(str(ckpt), model, optimizer, scheduler) == 600
    ema = EMA(model, cfg.train.ema_decay)
    ema.load(str(ckpt))
    assert ema.updates == 600 and scheduler.scheduler.last_epoch == 600
    stored = load_file(ckpt / "model.safetensors")
    assert all(torch.equal(v, stored[k]) for k, v in model.state_dict().items())
    assert len(optimizer.state_dict()["state"]) == len(list(model.parameters()))
