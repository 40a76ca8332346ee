"""The long-video drift scorer, on ground-truth shapes videos and corruptions of them."""

import json

import cv2
import numpy as np
import pytest

from videogen.data import shapes as S
from videogen.evaluation import drift as D

PROMPT = "a red square moving down"
FRAMES, WINDOW = 120, 12  # ten windows, as at 2,400 frames with the default window
LAST = slice(FRAMES - WINDOW, FRAMES)


def square_down(extent=20.0) -> S.Clip:
    return S.Clip("red", "square", "moving down", 64, extent, (20.0, 30.0))


@pytest.fixture(scope="module")
def truth():
    return square_down().render(FRAMES)


@pytest.fixture(scope="module")
def truth_row(truth):
    return score(truth)


def score(video, prompt=PROMPT):
    return D.score_drift(video, prompt, window=WINDOW)


def untouched(row, *keep):
    """The checks other than `keep` pass and the other measures look like ground truth."""
    if "area" not in keep:
        assert row["area_ratio"] == pytest.approx(1, abs=0.03)
    if "sharpness" not in keep:
        assert row["sharpness_ratio"] == pytest.approx(1, abs=0.05)
    if "wander" not in keep:
        assert row["wander"] < 0.01
    if "ghost" not in keep:
        assert not row["ghost"]
    if "colour" not in keep:
        assert row["colour_shape_ok"] and row["purity_last"] > 0.95


def test_windows_scale_down_for_short_videos():
    assert D.drift_window(2400) == 240 and D.drift_window(4800) == 240
    assert D.drift_window(480) == 48 and D.drift_window(240, 24) == 24
    assert D.drift_window(17) == 8 and D.drift_window(5) == 5
    assert D.window_bounds(17, 8) == [(0, 8), (8, 17)]
    assert D.window_bounds(2400, 240)[-1] == (2160, 2400) and len(D.window_bounds(2400, 240)) == 10
    with pytest.raises(ValueError, match="at least 1"):
        D.drift_window(100, 0)


def test_a_long_ground_truth_video_passes_every_bar():
    video = S.render_clip("red", "square", "moving down", frames=2400, rng=np.random.default_rng(0))
    row = D.score_drift(video, PROMPT)
    assert row["window"] == 240 and len(row["curves"]["wander"]) == 10
    untouched(row)
    assert row["checks"] == {"colour_shape": True, "area_sharpness": True, "wander": True, "moving": True}
    assert D.aggregate_drift([row])["all"]["passes_bars"]


@pytest.mark.parametrize("motion", ["moving left", "moving up", "standing still"])
def test_ground_truth_of_other_shapes_and_motions_passes(motion):
    video = S.render_clip("white", "triangle", motion, frames=FRAMES, rng=np.random.default_rng(1))
    row = score(video, f"a white triangle {motion}")
    untouched(row)
    assert row["moving_at_end"] is (None if motion == "standing still" else True)
    assert all(v for v in row["checks"].values() if v is not None)


def test_blurring_the_last_window_fails_sharpness(truth):
    video = truth.copy()
    video[LAST] = [cv2.GaussianBlur(f, (0, 0), 1.0) for f in video[LAST]]
    row = score(video)
    assert row["sharpness_ratio"] < 0.7 and not row["checks"]["area_sharpness"]
    assert min(row["curves"]["sharpness_ratio"][:-1]) > 0.95  # only the last window is blurred
    untouched(row, "sharpness")


def drifting(video, pixels=12):
    """The video with its object drifting right by `pixels` over its length."""
    shift = np.round(np.linspace(0, pixels, len(video))).astype(int)
    return np.stack([np.roll(f, s, axis=1) for f, s in zip(video, shift)])


def test_a_vertical_mover_drifting_sideways_fails_wander(truth):
    video = drifting(truth, 12)  # x drifts by 12 px, 0.19 of the width
    row = score(video)
    assert 0.15 < row["wander"] < 0.2 and not row["checks"]["wander"]
    assert row["curves"]["wander"] == sorted(row["curves"]["wander"])  # a growing drift
    assert row["off_axis_shift"]["x"] == pytest.approx(row["wander_last"]) and list(row["off_axis_shift"]) == ["x"]
    untouched(row, "wander")
    left = score(drifting(truth, -12))
    assert left["wander"] == pytest.approx(row["wander"], abs=0.02) and left["off_axis_shift"]["x"] < -0.15


def test_a_standing_object_may_move_along_neither_axis():
    video = S.Clip("blue", "circle", "standing still", 64, 19.2, (30.0, 30.0)).render(FRAMES)
    video[LAST] = np.roll(video[LAST], 8, axis=1)  # down by 8 px
    row = score(video, "a blue circle standing still")
    assert row["wander"] == pytest.approx(8 / 64, abs=0.005) and not row["checks"]["wander"]
    assert row["off_axis_shift"]["y"] == pytest.approx(8 / 64, abs=0.005)
    assert abs(row["off_axis_shift"]["x"]) < 0.005


@pytest.mark.parametrize("extent", [18.0, 22.0])
def test_a_resized_object_fails_area(truth, extent):
    # +-2 px keeps every edge where it falls within its pixel, so the sharpness holds
    video = truth.copy()
    video[LAST] = square_down(extent).render(FRAMES)[LAST]
    row = score(video)
    assert row["area_ratio"] == pytest.approx((extent / 20) ** 2, rel=0.02) and not row["checks"]["area_sharpness"]
    untouched(row, "area")


def test_a_faint_second_copy_is_a_ghost(truth, truth_row):
    video = truth.copy()
    copy = (np.roll(truth[LAST], 30, axis=2) * 0.35).astype(np.uint8)  # 30 px to the right, 35% bright
    video[LAST] = np.maximum(video[LAST], copy)
    row = score(video)
    assert row["ghost"] and row["ghost_windows"] == 1 and row["curves"]["ghost"][-1] == 1.0
    assert 0.25 < row["curves"]["ghost_mass"][-1] < 0.4 and max(row["curves"]["ghost_mass"][:-1]) == 0
    untouched(row, "ghost")
    assert D.aggregate_drift([row, truth_row])["all"]["ghost"] == 0.5


def hue_shift(video, degrees):
    hsv = cv2.cvtColor(video.reshape(-1, video.shape[2], 3), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + degrees // 2) % 180  # OpenCV hue is 0..179
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).reshape(video.shape)


def test_a_hue_shift_lowers_purity_then_changes_the_colour(truth):
    video = truth.copy()
    video[LAST] = hue_shift(truth[LAST], 20)  # still nearest to red, no longer red
    row = score(video)
    assert row["purity_first"] > 0.99 and row["purity_last"] < 0.1 and row["colour_shape_ok"]
    video[LAST] = hue_shift(truth[LAST], 60)  # yellow
    row = score(video)
    assert row["curves"]["colour_ok"] == [True] * 9 + [False] and not row["checks"]["colour_shape"]
    untouched(row, "colour")


def test_an_object_that_stops_or_vanishes_fails(truth):
    stopped = truth.copy()
    stopped[LAST] = truth[LAST.start]
    row = score(stopped)
    assert row["moving_at_end"] is False and row["checks"]["moving"] is False
    untouched(row)
    gone = truth.copy()
    gone[LAST] = 0
    row = score(gone)
    assert row["curves"]["presence"][-1] == 0 and row["area_ratio"] is None
    assert not any(row["checks"].values())
    json.dumps(row, allow_nan=False)  # absent measures are None, not NaN


def test_aggregate_counts_the_videos_within_each_bar(truth, truth_row):
    blurred = truth.copy()
    blurred[LAST] = [cv2.GaussianBlur(f, (0, 0), 1.0) for f in blurred[LAST]]
    still = S.render_clip("yellow", "triangle", "standing still", frames=FRAMES, rng=np.random.default_rng(2))
    rows = [truth_row, score(blurred), score(drifting(truth)), score(still, "a yellow triangle standing still")]
    agg = D.aggregate_drift(rows)
    assert agg["all"]["videos"] == 4 and agg["all"]["colour_shape"] == 1.0 and agg["all"]["moving"] == 1.0
    assert agg["all"]["area_sharpness"] == 0.75 and agg["all"]["wander"] == 0.75 and agg["all"]["ghost"] == 0
    assert not agg["all"]["passes_bars"]
    assert agg["held_out"]["videos"] == 1 and agg["held_out"]["passes_bars"] and agg["held_out"]["moving"] is None
    assert agg["seen"]["videos"] == 3 and agg["seen"]["median_wander"] < 0.01


def assert_close(a, b, path="row"):
    """Nested dicts/lists equal, floats to 1e-9."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


def test_streaming_window_by_window_gives_score_drifts_row(truth):
    video = drifting(truth, 12)[:115]  # windows of 11, the last takes 16: a remainder
    video[100:] = [cv2.GaussianBlur(f, (0, 0), 1.0) for f in video[100:]]
    acc = D.DriftAccumulator(PROMPT, len(video), WINDOW)
    buffer = []
    for frame in video:  # as a generator yields them; only the current window is held
        buffer.append(frame)
        if len(buffer) == acc.next_window()[1] - acc.next_window()[0]:
            values = acc.add(np.stack(buffer))
            buffer = []
    assert acc.next_window() is None and acc.bounds[-1] == (99, 115) and len(acc.bounds) == 10
    assert values["area"] > 0 and len(values["off_axis"]) == 1
    streamed, whole = acc.result(), score(video)
    assert_close(streamed, whole)
    assert not whole["checks"]["wander"] and not whole["checks"]["area_sharpness"]  # numbers worth comparing


def test_the_accumulator_takes_each_window_whole_and_in_turn(truth):
    acc = D.DriftAccumulator(PROMPT, FRAMES, WINDOW)
    with pytest.raises(ValueError, match="12 frames, got 11"):
        acc.add(truth[:11])
    with pytest.raises(ValueError, match="10 of 10 windows not added"):
        acc.result()
    for a, b in acc.bounds:
        acc.add(truth[a:b])
    with pytest.raises(ValueError, match="in already"):
        acc.add(truth[:12])
    with pytest.raises(ValueError, match="not a shapes-world prompt"):
        D.DriftAccumulator("a cat", FRAMES)
