"""Scene cuts: found on real footage, none in one-shot clips, left out of the temporal
metrics and scored shot by shot, listed in `videogen eval`'s JSON and marked in its plot."""

import json
from argparse import Namespace

import cv2
import numpy as np
import pytest
from real_clips import clip_path

from videogen.data import shapes as S
from videogen.data.video_io import Mp4Writer, read_video
from videogen.evaluation import metrics as E
from videogen.evaluation import run as R
from videogen.evaluation.cuts import content_scores, detect_cuts, shot_bounds

# bikes.mp4 (640x272, 25 fps, 250 frames) is a montage of 6 shots. Its cuts, checked frame
# by frame around each (frames c-2, c-1 show one scene, c, c+1 another) and the same as
# PySceneDetect 0.7.2 finds with ContentDetector and with AdaptiveDetector at their defaults.
BIKES_CUTS = [30, 76, 137, 187, 242]


@pytest.fixture(scope="module")
def bikes():
    return read_video(clip_path("bikes.mp4"))


def small(video, width=320):
    h, w = video.shape[1:3]
    return np.stack([cv2.resize(f, (width, round(h * width / w)), interpolation=cv2.INTER_AREA) for f in video])


def test_the_cuts_of_a_real_montage(bikes):
    assert detect_cuts(bikes) == BIKES_CUTS
    scores = content_scores(bikes)
    # frames 99-105: a car crossing close to the camera, the biggest change that is no cut
    assert scores[99:106].min() > 15 and not set(range(99, 106)) & set(BIKES_CUTS)
    assert shot_bounds(BIKES_CUTS, 250) == [(0, 30), (30, 76), (76, 137), (137, 187), (187, 242), (242, 250)]


def test_one_shot_clips_have_no_cut():
    for name in ("carphone_pristine.mp4", "bigbuckbunny.mp4"):
        assert detect_cuts(read_video(clip_path(name))) == [], name
    rng = np.random.default_rng(0)
    for colour, shape, motion in [("red", "circle", "moving right"), ("blue", "square", "moving up"),
                                  ("green", "triangle", "standing still")]:
        video = S.render_clip(colour, shape, motion, frames=48, size=64, rng=rng)
        assert detect_cuts(video) == []


def test_a_flash_is_flicker_not_a_cut():
    video = S.render_clip("red", "circle", "moving right", frames=40, size=64, rng=np.random.default_rng(1))
    flashed = video.copy()
    flashed[20] = 255 - flashed[20]  # one frame, and back: a generator's glitch
    assert content_scores(flashed)[20] > 50 and detect_cuts(flashed) == []
    r = E.evaluate_frames(flashed)
    assert r["cuts"] == [] and r["summary"]["flicker"] < E.evaluate_frames(video)["summary"]["flicker"] - 0.01
    spliced = np.concatenate([video[:20], 255 - video[20:]])  # the same change, lasting: a cut
    assert detect_cuts(spliced) == [20]


def test_metrics_leave_the_cut_out_and_score_each_shot(bikes):
    segment = small(bikes[10:50])  # shots 10..29 and 30..49: the cut at frame 20 of 40
    r = E.evaluate_frames(segment)
    assert r["cuts"] == [20] and [(s["start"], s["end"]) for s in r["shots"]] == [(0, 20), (20, 40)]
    whole = E.evaluate_frames(segment, cuts=False)
    assert whole["cuts"] == [] and whole["summary"]["shots"] == 1 and r["summary"]["shots"] == 2
    s, w = r["summary"], whole["summary"]
    assert s["flicker"] > w["flicker"] and s["warping_error"] < w["warping_error"] / 2
    assert s["motion_smoothness"] > w["motion_smoothness"] and s["ssim"] > w["ssim"]
    mad = np.array(r["curves"]["mad"])
    assert mad[19] > 4 * np.delete(mad, 19).max()  # the curves keep the cut's pair (the plot marks it)
    # the summary is the pairs within shots: 19 + 19 of the 39
    assert s["mad"] == pytest.approx(np.delete(mad, 19).mean())
    first, second = r["shots"]
    assert first["frames"] == second["frames"] == 20
    assert s["flicker"] == pytest.approx((19 * first["flicker"] + 19 * second["flicker"]) / 38)
    assert E.evaluate_frames(segment, cuts=[20])["summary"] == s  # cuts given instead of detected


def test_a_cut_free_video_scores_as_before():
    video = S.render_clip("blue", "square", "moving left", frames=24, size=64, rng=np.random.default_rng(2))
    r = E.evaluate_frames(video)
    assert r["cuts"] == [] and len(r["shots"]) == 1 and r["shots"][0]["frames"] == 24
    assert r["summary"]["flicker"] == E.flicker_score(video)
    assert r["summary"]["warping_error"] == pytest.approx(E.warping_error(video)[0])
    assert r["summary"]["motion_smoothness"] == pytest.approx(E.motion_smoothness(video)[1])
    assert r["summary"]["dynamic_degree"] == E.dynamic_degree(video)[0]


def test_eval_lists_the_cuts_in_json_and_marks_them_in_the_plot(bikes, tmp_path, capsys):
    path = tmp_path / "montage.mp4"
    with Mp4Writer(str(path), fps=25) as writer:
        for frame in small(bikes[10:50]):
            writer.write(frame)
    args = Namespace(videos=[str(path)], prompt=None, prompts=None, json=str(tmp_path / "r.json"),
                     plot=str(tmp_path / "p.png"), compare=False, shapes=False, clip=None, dino=None)
    R.evaluate_cli(args)
    report = json.loads((tmp_path / "r.json").read_text())["videos"][0]
    assert report["cuts"] == [20] and report["summary"]["shots"] == 2
    assert [s["start"] for s in report["shots"]] == [0, 20] and report["shots"][1]["flicker"] is not None
    plot = cv2.imread(str(tmp_path / "p.png"))
    assert plot.shape[0] > 400
    args.json = None
    R.evaluate_cli(args)
    assert "shots (scene cuts + 1)" in capsys.readouterr().out
