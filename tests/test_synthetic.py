"""The shapes world: rendering, motion, captions, prompt list, dataset files."""

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from videogen.data import shapes as S
from videogen.cli import main
from videogen.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def test_constants_follow_the_spec():
    assert S.COLOURS == {
        "red": (220, 40, 40), "yellow": (230, 210, 40), "green": (40, 190, 70), "cyan": (40, 200, 210),
        "blue": (50, 80, 230), "purple": (170, 70, 220), "white": (235, 235, 235),
    }
    assert set(S.SHAPES) == {"circle", "square", "triangle"}
    assert set(S.MOTIONS) == {"moving left", "moving right", "moving up", "moving down", "standing still"}
    assert set(S.HELD_OUT) == {("yellow", "triangle"), ("blue", "circle"), ("green", "square")}


@pytest.mark.parametrize("shape, area_per_extent2", [("circle", np.pi / 4), ("square", 1.0),
                                                      ("triangle", np.sqrt(3) / 4)])
def test_render_draws_the_shape_antialiased_in_its_colour(shape, area_per_extent2):
    clip = S.sample_clip("purple", shape, "standing still", size=64, rng=np.random.default_rng(1))
    video = clip.render(3)
    assert video.shape == (3, 64, 64, 3) and video.dtype == np.uint8
    coverage = video[0, :, :, 0] / S.COLOURS["purple"][0]
    # the covered area matches the geometry, and edges are partly covered (anti-aliased)
    assert coverage.sum() == pytest.approx(area_per_extent2 * clip.extent**2, rel=0.02)
    assert ((coverage > 0.05) & (coverage < 0.95)).sum() > 10
    cx, cy = clip.centres(1)[0]
    assert tuple(video[0, int(cy), int(cx)]) == S.COLOURS["purple"]
    assert (video[0] == video[2]).all()


def test_size_and_start_are_random_within_the_spec():
    rng = np.random.default_rng(0)
    clips = [S.sample_clip("red", "square", "moving left", size=80, rng=rng) for _ in range(300)]
    extents = np.array([c.extent for c in clips]) / (S.CANVAS_FRACTION * 80)
    assert extents.min() >= 0.9 and extents.max() <= 1.1 and extents.std() > 0.04
    starts = np.array([c.start for c in clips])
    half = np.array([c.half_extent()[0] for c in clips])
    assert (starts[:, 0] >= half).all() and (starts[:, 0] <= 80 - half).all()
    assert starts[:, 0].min() < 20 and starts[:, 0].max() > 60  # uniform over where it fits


@pytest.mark.parametrize("motion", S.MOTIONS)
def test_objects_move_at_the_spec_speed_and_bounce_inside_the_canvas(motion):
    size, frames = 64, 200
    clip = S.sample_clip("white", "triangle", motion, size=size, rng=np.random.default_rng(3))
    centres = clip.centres(frames)
    steps = np.diff(centres, axis=0)
    speed = np.abs(steps).sum(axis=1)
    dx, dy = S.VELOCITY[motion]
    if motion == "standing still":
        assert (speed == 0).all()
        return
    axis = 0 if dx else 1
    assert np.median(speed) == pytest.approx(size / 40)
    assert (steps[:, 1 - axis] == 0).all()
    # the first step goes the named way unless the object starts at that wall
    wall_gap = centres[0, axis] - clip.half_extent()[axis] if dx + dy < 0 else \
        size - clip.half_extent()[axis] - centres[0, axis]
    if wall_gap > size / 40:
        assert np.sign(steps[0, axis]) == dx + dy
    assert (np.sign(steps[:, axis]) != np.sign(steps[0, axis])).any()  # it bounced
    video = clip.render(frames)
    area = video.astype(float).sum(axis=(1, 2, 3))
    assert area.std() / area.mean() < 0.01  # never clipped by the canvas edge


def test_captions_have_several_forms_and_parse_back():
    rng = np.random.default_rng(0)
    forms = set()
    for colour in S.COLOURS:
        for shape in S.SHAPES:
            for motion in S.MOTIONS:
                text = S.caption(colour, shape, motion, rng)
                forms.add(text.replace(colour, "C").replace(shape, "S").replace(motion, "M"))
                assert S.parse_prompt(text) == (colour, shape, motion)
    assert {"a C S M", "a C S M on a black background", "C S, M"} <= forms
    assert S.parse_prompt("A Red CIRCLE,  moving   LEFT!") == ("red", "circle", "moving left")
    assert S.parse_prompt("a red circle") is None
    assert S.parse_prompt("a red circle and a blue circle moving left") is None
    assert S.parse_prompt("a dog running") is None


def test_prompt_file_covers_everything_and_matches_the_generator():
    lines = (REPO / "data" / "prompts_shapes.txt").read_text().splitlines()
    assert lines == S.evaluation_prompts()
    assert len(lines) >= 60
    parsed = [S.parse_prompt(line) for line in lines]
    assert None not in parsed
    assert {p[0] for p in parsed} == set(S.COLOURS)
    assert {p[1] for p in parsed} == set(S.SHAPES)
    assert {p[2] for p in parsed} == set(S.MOTIONS)
    for pair in S.HELD_OUT:
        assert {p[2] for p in parsed if p[:2] == pair} == set(S.MOTIONS)


def test_dataset_plan_is_balanced_and_respects_the_holdout():
    plan = S.dataset_plan(400, seed=5)
    for i, names in enumerate((S.COLOURS, S.SHAPES, S.MOTIONS)):
        counts = Counter(p[i] for p in plan)
        assert set(counts) == set(names)
        assert max(counts.values()) - min(counts.values()) <= (1 if i != 1 else 3)
    assert not {(c, s) for c, s, _ in plan} & set(S.HELD_OUT)
    assert len({(c, s) for c, s, _ in plan}) == 18
    free = S.dataset_plan(30, seed=5, holdout="none")
    assert set(S.HELD_OUT) <= {(c, s) for c, s, _ in free}
    assert S.dataset_plan(50, seed=5) == S.dataset_plan(50, seed=5) != S.dataset_plan(50, seed=6)


def _write(out, **kw):
    return S.write_shapes_dataset(out, **{"num": 6, "frames": 5, "size": 32, "seed": 7, **kw})


def test_dataset_files_are_reproducible_from_the_seed(tmp_path):
    from videogen.data.video_io import read_video

    a, b = _write(tmp_path / "a"), _write(tmp_path / "b")
    assert (a / "metadata.csv").read_bytes() == (b / "metadata.csv").read_bytes()
    assert (a / "spec.json").read_bytes() == (b / "spec.json").read_bytes()
    spec = json.loads((a / "spec.json").read_text())
    assert (spec["num"], spec["frames"], spec["size"], spec["seed"], spec["holdout"]) == (6, 5, 32, 7, "default")
    with open(a / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    for row in rows:
        assert S.parse_prompt(row["caption"]) is not None
        frames_a, frames_b = read_video(str(a / row["video"])), read_video(str(b / row["video"]))
        assert frames_a.shape == (5, 32, 32, 3)
        assert (frames_a == frames_b).all()
    c = _write(tmp_path / "c", seed=8)
    assert (c / "metadata.csv").read_bytes() != (a / "metadata.csv").read_bytes()


def test_dataset_never_writes_held_out_pairs_unless_asked(tmp_path):
    def pairs(out):
        with open(out / "metadata.csv", newline="") as fh:
            return {S.parse_prompt(r["caption"])[:2] for r in csv.DictReader(fh)}

    assert not pairs(_write(tmp_path / "d", num=30, frames=1)) & set(S.HELD_OUT)
    assert set(S.HELD_OUT) <= pairs(_write(tmp_path / "n", num=30, frames=1, holdout="none"))


@pytest.mark.parametrize("bad", [{"num": 0}, {"frames": 0}, {"size": 8}, {"size": 33}, {"holdout": "some"}])
def test_bad_arguments_are_usage_errors(tmp_path, bad):
    with pytest.raises(UsageError):
        _write(tmp_path / "x", **bad)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_run_leaves_nothing_and_existing_data_is_kept(tmp_path, monkeypatch):
    calls = []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    real_render = S.render_clip
    monkeypatch.setattr(S, "render_clip", failing_render)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(S, "render_clip", real_render)
    _write(tmp_path / "ds")
    with pytest.raises(UsageError, match="already exists"):
        _write(tmp_path / "ds")


def test_cli_data_shapes(tmp_path, capsys):
    main(["data", "shapes", "--out", str(tmp_path / "ds"), "--num", "3", "--frames", "2", "--size", "32"])
    assert len(list((tmp_path / "ds" / "videos").glob("*.mp4"))) == 3
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "shapes", "--out", str(tmp_path / "bad"), "--num", "0"])
    assert exit_info.value.code == 2
    assert "--num must be at least 1" in capsys.readouterr().err
