"""utils/atomic: outputs appear complete or not at all, with a plain file's mode."""

import contextlib
import json
import os

import numpy as np
import pytest

from videogen.data.video_io import Mp4Writer
from videogen.errors import UsageError
from videogen.utils import atomic


@contextlib.contextmanager
def umask(value):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "report.json"
    atomic.write_json(str(path), {"run": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(str(path)) as tmp:
            with open(tmp, "w") as f:
                f.write('{"run": 2, "half')
            raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"run": 1}
    assert os.listdir(tmp_path) == ["report.json"]


def test_temp_is_a_hidden_sibling_with_the_extension_last(tmp_path):
    with atomic.atomic_path(str(tmp_path / "curves.png")) as tmp:
        name = os.path.basename(tmp)
        assert os.path.dirname(tmp) == str(tmp_path)
        assert name.startswith(".curves.png.tmp-") and name.endswith(".png")
        assert atomic.is_temp_of(name, "curves.png") and not atomic.is_temp_of(name, "curves")
        open(tmp, "w").close()
    assert os.listdir(tmp_path) == ["curves.png"]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_get_the_mode_of_a_plain_open_or_mkdir(tmp_path, mask):
    with umask(mask):
        atomic.write_text(str(tmp_path / "a.txt"), "x")
        with atomic.atomic_path(str(tmp_path / "folder"), directory=True) as tmp:
            open(os.path.join(tmp, "inside"), "w").close()
        with Mp4Writer(str(tmp_path / "v.mp4"), fps=8) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o666 & ~mask
    assert os.stat(tmp_path / "v.mp4").st_mode & 0o777 == 0o666 & ~mask
    assert os.stat(tmp_path / "folder").st_mode & 0o777 == 0o777 & ~mask


def test_a_second_writer_never_corrupts_the_first(tmp_path):
    path = tmp_path / "out.txt"
    with atomic.atomic_path(str(path)) as first:
        with open(first, "w") as f:
            f.write("first, ")
        with atomic.atomic_path(str(path)) as second:  # starts and ends inside the first
            assert second != first
            with open(second, "w") as f:
                f.write("second")
        assert path.read_text() == "second"
        with open(first, "a") as f:
            f.write("complete")
    assert path.read_text() == "first, complete"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_a_folder_is_replaced_whole(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "old.csv").write_text("old")
    with atomic.atomic_path(str(tmp_path / "ds"), directory=True) as tmp:
        atomic.write_text(os.path.join(tmp, "new.csv"), "new")
    assert os.listdir(tmp_path / "ds") == ["new.csv"] and os.listdir(tmp_path) == ["ds"]


def test_remove_stale_temps_removes_only_the_targets_temps(tmp_path):
    keep = tmp_path / ".other.json.tmp-abc.json"
    keep.write_text("")
    stale = atomic.temp_sibling(str(tmp_path / "r.json"))
    stale_dir = atomic.temp_sibling(str(tmp_path / "cache"), directory=True)
    removed = atomic.remove_stale_temps(str(tmp_path), ["r.json", "cache"])
    assert sorted(removed) == sorted([os.path.basename(stale), os.path.basename(stale_dir)])
    assert os.listdir(tmp_path) == [keep.name]


def test_unwritable_targets_are_one_line_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="missing.*; choose another -o path"):
        atomic.temp_sibling(str(tmp_path / "missing" / "x.mp4"), make_parents=False, fix="choose another -o path")
    assert os.listdir(tmp_path) == []
    with pytest.raises(UsageError, match="it is a directory; choose another path"):
        atomic.write_text(str(tmp_path), "x")
    atomic.write_text(str(tmp_path / "made" / "x.txt"), "x")  # parents are made by default
    assert (tmp_path / "made" / "x.txt").read_text() == "x"


def test_stale_temp_removal_leaves_a_live_writers_file_alone(tmp_path):
    """Two runs into one output: the second's clean-up of killed runs' temps must not
    delete the temporary file the first is still writing."""
    from videogen.data.video_io import Mp4Writer
    from videogen.utils.atomic import remove_stale_temps

    out = tmp_path / "out.mp4"
    dead = tmp_path / ".out.mp4.tmp-dead.mp4"
    dead.write_bytes(b"left by a killed run")
    live = Mp4Writer(str(out), fps=8)
    live.write(np.zeros((16, 16, 3), np.uint8))
    removed = remove_stale_temps(str(tmp_path), ["out.mp4"])
    assert removed == [dead.name]
    assert os.path.exists(live._tmp_path)
    live.close()
    assert out.exists() and remove_stale_temps(str(tmp_path), ["out.mp4"]) == []
