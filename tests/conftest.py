import os
import tempfile

import pytest
import torch

# `videogen generate` runs in the tests' own processes, never on a `videogen worker` the
# developer may have running (tests/test_worker.py starts its own, on sockets of its own).
os.environ["VIDEOGEN_WORKER_SOCKET"] = os.path.join(tempfile.mkdtemp(prefix="videogen-tests-"), "none.sock")

# Test models are tiny: one thread is faster than two (no sync overhead), and leaves
# the second core to subprocesses the tests start.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A randomly initialised pipeline of the shipped tiny config, one per test module."""
    from videogen.training.components import init_pipeline

    path = str(tmp_path_factory.mktemp("models") / "tiny")
    init_pipeline(path, config="tiny", seed=0)
    return path


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A randomly initialised tiny pipeline at data.size=[32,64] (H x W), one per test module."""
    from videogen.training.components import init_pipeline

    path = str(tmp_path_factory.mktemp("models") / "wide")
    init_pipeline(path, config="tiny", overrides=["data.size=[32,64]"], seed=0)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 shapes clips (9 frames, 32 px) and their latent cache, with the overrides of a
    6-step tiny DiT run on them (grad_accum 2, a checkpoint every 3 steps)."""
    from videogen.data.shapes import write_shapes_dataset
    from videogen.training.cache import cache_dataset

    root = tmp_path_factory.mktemp("train")
    shapes = write_shapes_dataset(root / "shapes", num=8, frames=9, size=32, seed=0)
    overrides = [f"data.manifest={shapes / 'metadata.csv'}", f"data.cache_dir={root / 'cache'}",
                 "train.log_every=1", "train.grad_accum=2", "train.checkpoint_every=3",
                 "train.max_steps=6", "train.warmup_steps=2"]
    cache_dataset("tiny", overrides)
    return {"root": root, "shapes": shapes, "overrides": overrides}


@pytest.fixture(scope="module")
def pipe(tiny_model):
    """The tiny pipeline, its DiT off its zero init: a fresh DiT's AdaLN-zero branches are
    closed (its output ignores the prompt), so open them."""
    from videogen.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(tiny_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in pipe.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return pipe
