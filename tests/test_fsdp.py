"""FSDP beyond one process, on CPU: PyTorch's FSDP runs the DiT over 2 gloo processes
(FULL_SHARD, sharded checkpoint, exact resume); accelerate does not apply FSDP on CPU, so
videogen refuses such a launch instead of training unsharded; configs/accelerate/fsdp.yaml
is checked by a dry run through accelerate's own config parsing and FSDP plugin."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FSDP_YAML = os.path.join(ROOT, "configs", "accelerate", "fsdp.yaml")
WORKER = os.path.join(ROOT, "tests", "fixtures", "fsdp_worker.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def torchrun(out, wrap: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER, str(out), wrap]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=180)


def test_the_dit_trains_sharded_and_resumes_under_fsdp_on_two_cpu_processes(tmp_path):
    proc = torchrun(tmp_path, "linear")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    # FULL_SHARD: each rank holds half of every unit's flat parameter (padded to even)
    assert all(abs(n - result["total_params"] / 2) <= 64 for n in result["local_params"]), result
    assert {"__0_0.distcp", "__1_0.distcp"} <= set(result["checkpoint_files"])  # each rank its shard
    assert result["first"] == result["straight"][:2]
    assert result["resumed"] == pytest.approx(result["straight"][2:], abs=1e-6)  # exact resume
    assert result["straight"][2] < result["straight"][0]


def test_one_fsdp_unit_per_dit_block_as_fsdp_yaml_wraps(tmp_path):
    """Every weight of a DiTBlock is used inside its forward (the cross aggregate too, and
    teacher forcing goes through it), where FSDP gathers the unit's flat parameter."""
    proc = torchrun(tmp_path, "block")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["resumed"] == pytest.approx(result["straight"][2:], abs=1e-6)


def test_an_fsdp_launch_on_cpu_is_refused_not_run_unsharded(tmp_path):
    """accelerate 1.x sets DistributedType.FSDP only over GPU-like devices: on CPU, fsdp.yaml
    (fsdp_sync_module_states) fails building the plugin ('There are currently no available
    devices found'), and without that option the processes join with DDP, unsharded."""
    from videogen.data.shapes import write_shapes_dataset

    shapes = write_shapes_dataset(tmp_path / "shapes", num=2, frames=9, size=32, seed=0)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", FSDP_YAML, "--num_processes", "2",
           "--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false",
           "-m", "videogen", "train", os.path.join(ROOT, "configs", "tiny.yaml"),
           f"data.manifest={shapes / 'metadata.csv'}", f"train.output_dir={tmp_path / 'run'}",
           "train.max_steps=2", "train.ema_decay=0", "train.cpu=true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=180)
    assert proc.returncode != 0
    assert "FSDP needs GPUs" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoint-000002").exists()


def test_fsdp_yaml_dry_run(monkeypatch):
    """fsdp.yaml as `accelerate launch` reads it (config file -> launcher env), then the FSDP
    plugin the Accelerator would build from that env, and its wrap policy on the real DiT."""
    import torch
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    from videogen.models.dit import DiTBlock, PoMVideoDiT

    args = launch_command_parser().parse_args(["--config_file", FSDP_YAML, "train.py"])
    args, *_ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    assert args.num_processes == 8 and env["ACCELERATE_USE_FSDP"] == "true"
    assert {k: env[k] for k in ("FSDP_SHARDING_STRATEGY", "FSDP_TRANSFORMER_CLS_TO_WRAP", "FSDP_STATE_DICT_TYPE",
                                "FSDP_AUTO_WRAP_POLICY", "FSDP_USE_ORIG_PARAMS", "FSDP_VERSION")} == {
        "FSDP_SHARDING_STRATEGY": "FULL_SHARD", "FSDP_TRANSFORMER_CLS_TO_WRAP": "DiTBlock",
        "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
        "FSDP_USE_ORIG_PARAMS": "true", "FSDP_VERSION": "1"}
    assert env["FSDP_SYNC_MODULE_STATES"] == "true" and env["FSDP_OFFLOAD_PARAMS"] == "false"
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("FSDP_SYNC_MODULE_STATES", "false")  # needs a GPU to build (see above)
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    plugin = FullyShardedDataParallelPlugin()
    assert str(plugin.sharding_strategy) == "ShardingStrategy.FULL_SHARD"
    with torch.device("meta"):
        dit = PoMVideoDiT(in_channels=4, dim=32, depth=2, text_dim=16)
    plugin.set_auto_wrap_policy(dit)  # raises if no module of the model is named DiTBlock
    assert plugin.auto_wrap_policy is not None and DiTBlock.__name__ in plugin.transformer_cls_names_to_wrap


def test_check_fsdp_device(monkeypatch):
    from videogen.errors import UsageError
    from videogen.training.loop import check_fsdp_device

    check_fsdp_device(cpu=True)  # no FSDP launch: nothing to refuse
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    check_fsdp_device(cpu=False)
    with pytest.raises(UsageError, match="cpu_2proc.yaml"):
        check_fsdp_device(cpu=True)
