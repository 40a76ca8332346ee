"""Configs: a shipped config by name from any folder, a path as given, one-line errors."""

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from videogen.cli import main
from videogen.errors import UsageError
from videogen.utils.config import SHIPPED_DIR, load_structured, resolve_config, shipped_configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Small:
    steps: int = 1


def test_shipped_names_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = os.path.join(SHIPPED_DIR, "tiny.yaml")
    assert {"tiny", "shapes", "shapes_vae", "large"} <= set(shipped_configs())
    assert resolve_config("tiny") == resolve_config("tiny.yaml") == resolve_config("configs/tiny.yaml") == tiny


def test_a_path_is_used_as_given_even_when_it_shares_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text("steps: 7\n")
    assert resolve_config("tiny.yaml") == "tiny.yaml"
    assert load_structured(Small, "tiny.yaml", ["steps=9"], example="x.yaml").steps == 9
    assert load_structured(Small, str(tmp_path / "tiny.yaml"), None, example="x.yaml").steps == 7
    with pytest.raises(UsageError, match="config 'sub/tiny.yaml' not found"):
        resolve_config("sub/tiny.yaml")  # a folder other than configs/ is a path, not a name


def test_unknown_name_is_one_line_listing_the_shipped_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["init-model", str(tmp_path / "m"), "--config", "tinny"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'tiny'?" in err
    assert all(name in err for name in shipped_configs())
    assert not (tmp_path / "m").exists()


def test_cli_init_model_with_a_shipped_name_from_a_temp_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "videogen", "init-model", "model", "--config", "tiny"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "model" / "model_index.json").is_file()


def test_a_config_gives_only_what_differs_from_its_base(tmp_path, monkeypatch):
    from dataclasses import asdict

    from videogen.training.config import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "child.yaml").write_text("base: tiny\ntrain:\n  lr: 1.0e-3\nsampling:\n  contrast: {left: right}\n")
    (tmp_path / "grandchild.yaml").write_text("base: child.yaml\ntrain:\n  max_steps: 7\n")  # beside it
    tiny, child, grand = (asdict(load_config(p)) for p in ("tiny", "child.yaml", "grandchild.yaml"))
    assert child["train"]["lr"] == 1e-3 and grand["train"]["lr"] == 1e-3 and grand["train"]["max_steps"] == 7
    assert child["sampling"]["contrast"] == {"left": "right"}
    tiny["train"]["lr"], tiny["sampling"]["contrast"] = 1e-3, {"left": "right"}
    assert child == tiny  # the rest is the base's
    assert asdict(load_config("grandchild.yaml", ["train.lr=2e-3"]))["train"]["lr"] == 2e-3  # overrides last
    for stage in ("shapes_start", "shapes_whole", "shapes_joint"):  # the shipped stages build on shapes
        assert asdict(load_config(stage))["model"]["dim"] == asdict(load_config("shapes"))["model"]["dim"]


@pytest.mark.parametrize("text, message", [
    ("base: loop.yaml\n", "its own base"),
    ("base: 3\n", "must name a config"),
    ("base: nowhere\n", "not found"),
    ("base: tiny\ntrain:\n  lrr: 1\n", "did you mean 'train.lr'"),
])
def test_a_bad_base_is_one_line(tmp_path, monkeypatch, text, message):
    from videogen.training.config import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop.yaml").write_text(text)
    with pytest.raises(UsageError, match=message) as err:
        load_config("loop.yaml")
    assert len(str(err.value).splitlines()) == 1
