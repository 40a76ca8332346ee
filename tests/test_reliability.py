"""Issue 21, reliability: outputs refused before the work, one-line errors for user mistakes,
byte-identical MP4s, no environment in configs, bad items replaced at random, short warnings."""

import hashlib
import logging
import os
import subprocess

import numpy as np
import pytest

from videogen.cli import main
from videogen.data.datasets import VideoTextDataset
from videogen.data.manifests import read_manifest
from videogen.data.shapes import render_clip
from videogen.data.video_io import Mp4Writer, open_writer
from videogen.errors import UsageError
from videogen.training.config import load_config


def one_line_exit_2(capsys, argv) -> str:
    """Run the CLI; it must exit 2 with one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1] if "usage:" in err else err


def noisy_clip(frames=240, size=64, seed=0):
    """(F, H, W, 3) uint8: a shapes-world circle moving right over noise (x264 makes many
    decisions on it; this content showed differing MP4 bytes before the fix, plain noise did not)."""
    clip = render_clip("red", "circle", "moving right", frames=frames, size=size, rng=np.random.default_rng(seed))
    noise = np.random.default_rng(seed + 1).integers(0, 40, clip.shape, dtype=np.uint8)
    return np.clip(clip.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_frames(path, frames, fps=8):
    with open_writer(str(path), fps=fps) as w:
        for frame in frames:
            w.write(frame)


# ----------------------------------------------------------- 1. outputs that cannot be replaced
@pytest.fixture
def chattr():
    """chattr(flag, path), undone after the test; skips where chattr is unavailable."""
    done = []

    def set_flag(flag, path):
        res = subprocess.run(["chattr", f"+{flag}", str(path)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"chattr +{flag} unavailable here: {res.stderr.decode().strip()}")
        done.append((flag, path))

    yield set_flag
    for flag, path in done:
        subprocess.run(["chattr", f"-{flag}", str(path)], check=True)


@pytest.mark.parametrize("flag", ["i", "a"])
def test_an_output_that_cannot_be_replaced_is_refused_when_the_writer_opens(tmp_path, chattr, flag):
    out = tmp_path / "old.mp4"
    out.write_bytes(b"old video")
    chattr(flag, out)
    for ext in (".mp4", ".gif"):
        target = out.with_suffix(ext)
        if ext == ".gif":
            target.write_bytes(b"old video")
            chattr(flag, target)
        with pytest.raises(UsageError, match="cannot replace") as err:
            open_writer(str(target), fps=8)
        assert len(str(err.value).splitlines()) == 1 and str(target) in str(err.value)
        assert target.read_bytes() == b"old video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.gif", "old.mp4"]  # no temp left


def test_generate_refuses_an_immutable_output_before_loading_the_model(tmp_path, chattr, capsys, monkeypatch):
    import videogen.pipelines.pipeline as pipeline

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded although the output cannot be written")

    monkeypatch.setattr(pipeline, "load_pipeline", must_not_load)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    chattr("i", out)
    err = one_line_exit_2(capsys, ["generate", "a red circle moving right", "--frames", "1", "-o", str(out)])
    assert "cannot replace" in err and "-o" in err
    assert out.read_bytes() == b"keep me"


def test_an_output_whose_parent_is_a_file_is_refused_at_open(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="cannot write"):
        Mp4Writer(str(tmp_path / "file" / "out.mp4"))


def test_another_users_file_in_a_sticky_folder_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "theirs.mp4"
    out.write_bytes(b"theirs")
    os.chmod(tmp_path, 0o1777)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(out).st_uid + 12345)
    with pytest.raises(UsageError, match="another user"):
        Mp4Writer(str(out))
    assert out.read_bytes() == b"theirs"


# ------------------------------------------------------------------ 2. one line, exit 2
@pytest.mark.parametrize("option", [[], ["--prompt-schedule", "0:a red circle \udcff"],
                                    ["--negative-prompt", "a red circle \udcff"]])
def test_a_prompt_that_is_not_utf8_is_one_line(capsys, monkeypatch, option, tmp_path):
    import videogen.pipelines.pipeline as pipeline

    monkeypatch.setattr(pipeline, "generate_to_file", lambda **kw: pytest.fail("generated"))
    prompt = "\udcff\udcfe bad" if not option else "a red circle moving right"
    err = one_line_exit_2(capsys, ["generate", prompt, "-o", str(tmp_path / "o.mp4"), *option])
    assert "UTF-8" in err and (option[0] in err if option else "the prompt" in err)


@pytest.fixture
def latin1_manifests(tmp_path):
    caption = "un cercle rouge à droite"
    (tmp_path / "metadata.csv").write_bytes(f"video,caption\na.mp4,{caption}\n".encode("latin-1"))
    (tmp_path / "m.jsonl").write_bytes(('{"video": "a.mp4"}\n{"video": "a.mp4", "caption": "%s"}\n' % caption).encode("latin-1"))
    pv = tmp_path / "pv"
    pv.mkdir()
    (pv / "prompts.txt").write_bytes(f"ok\n{caption}\n".encode("latin-1"))
    (pv / "videos.txt").write_text("a.mp4\nb.mp4\n")
    return [tmp_path / "metadata.csv", tmp_path / "m.jsonl", pv]


def test_a_manifest_that_is_not_utf8_is_one_line_naming_the_file(latin1_manifests):
    for manifest in latin1_manifests:
        with pytest.raises(UsageError, match="re-save it as UTF-8") as err:
            read_manifest(str(manifest))
        message = str(err.value)
        assert len(message.splitlines()) == 1 and "line 2" in message
        assert (manifest.name if manifest.is_file() else "prompts.txt") in message


def test_a_bom_and_crlf_manifest_reads_fine(tmp_path):
    (tmp_path / "metadata.csv").write_bytes("video,caption\r\na.mp4,a red circle\r\nb.mp4,é blue\r\n"
                                            .encode("utf-8-sig"))
    (tmp_path / "m.jsonl").write_bytes('{"video": "a.mp4", "caption": "red"}\r\n'.encode("utf-8-sig"))
    (tmp_path / "prompts.txt").write_bytes("red\r\nblue\r\n".encode("utf-8-sig"))
    (tmp_path / "videos.txt").write_bytes("a.mp4\r\nb.mp4\r\n".encode("utf-8-sig"))
    entries, bad = read_manifest(str(tmp_path / "metadata.csv"))
    assert [(os.path.basename(e.video), e.caption) for e in entries] == [("a.mp4", "a red circle"), ("b.mp4", "é blue")]
    assert not bad and entries[1].where.endswith(":3")
    entries, _ = read_manifest(str(tmp_path / "m.jsonl"))
    assert entries[0].caption == "red"
    (tmp_path / "metadata.csv").unlink()
    entries, _ = read_manifest(str(tmp_path))  # prompts.txt + videos.txt
    assert [(os.path.basename(e.video), e.caption) for e in entries] == [("a.mp4", "red"), ("b.mp4", "blue")]


@pytest.mark.parametrize("row", ['b.mp4,"a blue square', 'b.mp4,"a blue" square"', 'b.mp4,"blue\nc.mp4,red"'])
def test_an_unbalanced_quote_in_a_csv_names_its_line(tmp_path, row):
    rows = ["video,caption", "a.mp4,red", row, "c.mp4,green", 'd.mp4,"yellow', "e.mp4,white"]
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(UsageError, match="line 3") as err:
        read_manifest(str(tmp_path / "metadata.csv"))
    assert len(str(err.value).splitlines()) == 1 and "quote" in str(err.value)


@pytest.mark.parametrize("override, key, expected", [
    ("train.output_dir=${nope}", "train.output_dir", "nope"),
    ("train.lr=abc", "train.lr", "float"),
    ("data.frames=xx", "data.frames", "int"),
    ("sampling.contrast=[left]", "sampling.contrast", "mapping"),
    ("data.size={a: 1}", "data.size", "[H, W]"),
])
def test_a_bad_override_is_one_line_naming_the_key(override, key, expected):
    with pytest.raises(UsageError) as err:
        load_config("tiny", [override])
    message = str(err.value)
    assert len(message.splitlines()) == 1 and key in message and expected in message


def test_environment_interpolation_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOGEN_TEST_DIR", str(tmp_path))
    with pytest.raises(UsageError, match="environment interpolation is not allowed"):
        load_config("tiny", ["train.output_dir=${oc.env:VIDEOGEN_TEST_DIR}/run"])
    (tmp_path / "c.yaml").write_text("train:\n  output_dir: ${oc.env:VIDEOGEN_TEST_DIR,runs}\n")
    with pytest.raises(UsageError, match="train.output_dir"):
        load_config(str(tmp_path / "c.yaml"))


def test_eval_json_that_is_a_directory_is_refused_before_scoring(tmp_path, capsys, monkeypatch):
    import videogen.evaluation.run as run

    monkeypatch.setattr(run, "score_all", lambda *a, **k: pytest.fail("scored"))
    video = tmp_path / "v.mp4"
    write_frames(video, noisy_clip(frames=3, size=16))
    err = one_line_exit_2(capsys, ["eval", str(video), "--json", str(tmp_path)])
    assert "--json" in err and "directory" in err


def test_eval_prompts_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    video = tmp_path / "v.mp4"
    write_frames(video, noisy_clip(frames=3, size=16))
    (tmp_path / "p.txt").write_bytes("un cercle à droite\n".encode("latin-1"))
    err = one_line_exit_2(capsys, ["eval", str(video), "--prompts", str(tmp_path / "p.txt")])
    assert "p.txt" in err and "UTF-8" in err


@pytest.mark.parametrize("argv, fix", [
    (["generate", "-blue", "--frames", "2"], "-- "),
    (["generate", "-blue"], "-- "),
    (["generate", "--frames", "2", "-o red circle"], "-- "),
    (["eval", "x.mp4", "--prompt", "-red"], "--prompt='-red'"),
])
def test_a_prompt_that_begins_with_a_dash_gets_a_hint(capsys, argv, fix):
    err = one_line_exit_2(capsys, argv)
    assert fix in err


# ------------------------------------------------------------ 3. reproducible and quiet
def test_the_same_frames_give_a_byte_identical_mp4(tmp_path):
    clip = noisy_clip()
    digests = set()
    for i in range(4):
        write_frames(tmp_path / f"{i}.mp4", clip)
        digests.add(hashlib.sha256((tmp_path / f"{i}.mp4").read_bytes()).hexdigest())
    assert len(digests) == 1


@pytest.fixture(scope="module")
def one_bad_among_nine(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_bad")
    clip = noisy_clip(frames=5, size=16)
    rows = ["video,caption"]
    for i in range(9):
        if i == 4:
            (root / "4.mp4").write_bytes(b"not a video")
        else:
            write_frames(root / f"{i}.mp4", clip)
        rows.append(f"{i}.mp4,clip {i}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return str(root / "metadata.csv")


def replacement(manifest, epoch, seed=0):
    ds = VideoTextDataset(manifest, frames=5, size=16, seed=seed)
    ds.set_epoch(epoch)
    indices = [ds[i]["index"] for i in range(len(ds))]
    assert indices[:4] + indices[5:] == [0, 1, 2, 3, 5, 6, 7, 8]
    return indices[4]


def test_a_skipped_item_is_replaced_by_a_random_other_deterministically(one_bad_among_nine):
    picks = [replacement(one_bad_among_nine, epoch) for epoch in range(6)]
    assert 4 not in picks
    assert len(set(picks)) > 1, f"always replaced by {picks[0]}"
    assert picks == [replacement(one_bad_among_nine, epoch) for epoch in range(6)]


def test_a_truncation_warning_does_not_echo_a_long_prompt(caplog):
    from videogen.models.text import _warn_if_truncated

    def tokenizer(prompts):
        return {"input_ids": [p.split() for p in prompts]}

    prompt = " ".join(["word"] * 2000)  # 10,000 characters
    with caplog.at_level(logging.WARNING, logger="videogen"):
        _warn_if_truncated(tokenizer, [prompt], max_length=77)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert len(message) < 200 and "..." in message and "2000 tokens" in message
