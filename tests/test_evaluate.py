"""Temporal-consistency metrics, the shapes scorer, `videogen eval`, optional CLIP/DINO."""

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import cv2
import numpy as np
import pytest

from videogen.evaluation import metrics as E
from videogen.evaluation import model_scores as M
from videogen.evaluation import run as R
from videogen.data import shapes as S
from videogen.errors import UsageError
from videogen.evaluation.shapes_scorer import aggregate, score_video
from videogen.data.video_io import Mp4Writer, read_video


def moving_texture(frames=16, size=64, step=2, seed=0):
    """(F, H, W, 3) uint8: a smooth random texture sliding right by `step` px per frame."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((size + 16, size + frames * step + 16, 3)), (0, 0), 2.0)
    big = (255 * (big - big.min()) / (big.max() - big.min())).astype(np.uint8)
    return np.stack([big[8:8 + size, 8 + t * step:8 + t * step + size] for t in range(frames)])


def write_mp4(path, video, fps=8):
    with Mp4Writer(str(path), fps=fps) as writer:
        for frame in video:
            writer.write(frame)
    return path


def shapes_clip(colour="red", shape="circle", motion="moving right", frames=17, seed=0):
    return S.render_clip(colour, shape, motion, frames=frames, size=64, rng=np.random.default_rng(seed))


# ---------------------------------------------------------------------------- metrics
def test_a_still_video_is_perfectly_consistent():
    video = np.repeat(moving_texture(frames=1), 16, axis=0)
    r = E.evaluate_frames(video)["summary"]
    assert r["flicker"] == 1.0 and r["mad"] == 0.0
    assert r["dynamic_degree"] == 0.0 and r["flow_magnitude"] < 0.01
    assert r["warping_error"] < 1e-6 and r["smoothness_error"] < 0.05
    assert r["ssim"] == pytest.approx(1.0) and r["psnr"] == E.PSNR_CAP
    assert r["drift_hist_end"] == pytest.approx(0.0, abs=1e-6) and r["drift_brightness_slope"] == 0.0


def test_bright_frames_lower_the_flicker_score():
    video = shapes_clip(frames=24)
    flickering = video.copy()
    flickering[::4] = np.maximum(flickering[::4], 200)
    assert E.flicker_score(flickering) < E.flicker_score(video) - 0.1
    assert E.flicker_score(video) > 0.98


def test_shuffled_frames_raise_the_warping_error():
    video = moving_texture(frames=16)
    shuffled = video[np.random.default_rng(0).permutation(len(video))]
    ordered_error = E.warping_error(video)[0]
    assert ordered_error < 0.002
    assert E.warping_error(shuffled)[0] > 5 * ordered_error


def test_a_moving_video_is_dynamic_and_jumps_are_not_smooth():
    video = moving_texture(frames=12, step=2)
    share, magnitude, top = E.dynamic_degree(video)
    assert share == 1.0 and magnitude == pytest.approx(2.0, rel=0.2) and top.shape == (11,)
    order = np.arange(12)
    order[5], order[6] = 6, 5  # one pair of frames swapped: a jump back and forth
    smooth, jumpy = E.motion_smoothness(video)[1], E.motion_smoothness(video[order])[1]
    assert smooth > 0.99 and jumpy < smooth - 0.01


def test_fading_to_grey_gives_a_rising_drift_curve():
    video = shapes_clip("blue", "square", "moving down", frames=48).astype(np.float32)
    alpha = np.linspace(0, 0.8, len(video))[:, None, None, None]
    faded = np.round((1 - alpha) * video + alpha * 128).astype(np.uint8)
    d = E.drift(faded, window=8)
    assert len(d["hist"]) == 6 and d["hist"][0] == 0.0
    assert d["hist_slope"] > 0 and d["brightness_slope"] > 0
    assert (np.diff(d["brightness"]) > 0).all() and d["hist"][-1] > 0.5
    steady = E.drift(video.astype(np.uint8), window=8)
    assert abs(steady["brightness_slope"]) < 0.1 * d["brightness_slope"]


def test_ssim_and_psnr_on_known_images():
    a = moving_texture(frames=1)[0]
    noise = np.random.default_rng(0).integers(0, 256, a.shape, dtype=np.uint8)
    assert E.ssim(a, a) == pytest.approx(1.0)
    assert E.ssim(a, noise) < 0.2 < E.ssim(a, np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8))
    b = a.astype(np.int16)
    b[0, 0, 0] += 16 if b[0, 0, 0] < 128 else -16
    assert E.psnr(a, b.astype(np.uint8)) == pytest.approx(10 * np.log10(255**2 / (256 / a.size)))


def test_short_videos_give_none_for_metrics_they_cannot_measure():
    r = E.evaluate_frames(shapes_clip(frames=1))
    assert r["summary"]["flicker"] is None and r["summary"]["warping_error"] is None
    assert r["summary"]["motion_smoothness"] is None and r["summary"]["drift_hist_slope"] is None
    json.dumps(r)  # still a valid report


# ---------------------------------------------------------------------- shapes scorer
def test_generated_clips_are_recognised_through_the_codec(tmp_path):
    rng = np.random.default_rng(2024)
    right = 0
    for i in range(40):
        colour, shape, motion = (list(S.COLOURS)[rng.integers(7)], S.SHAPES[rng.integers(3)],
                                 S.MOTIONS[rng.integers(5)])
        video = S.render_clip(colour, shape, motion, frames=33, size=64, rng=rng)
        decoded = read_video(str(write_mp4(tmp_path / f"{i}.mp4", video)))
        r = score_video(decoded, S.caption(colour, shape, motion, rng))
        right += r["colour_ok"] and r["shape_ok"] and r["direction_ok"] and r["presence"] == 1.0
    assert right >= 38


def test_the_scorer_notices_wrong_videos():
    video = shapes_clip("red", "circle", "moving right", frames=33, seed=1)
    r = score_video(video, "a blue square moving left")
    assert not (r["colour_ok"] or r["shape_ok"] or r["direction_ok"])
    assert r["detected"] == {"colour": "red", "shape": "circle", "motion": "moving right"}
    assert score_video(video, "a red circle standing still")["direction_ok"] is False
    blank = np.zeros_like(video)
    b = score_video(blank, "a red circle moving right")
    assert b["presence"] == 0.0 and b["detected"]["colour"] is None and not b["colour_ok"]
    # an object that stops half way is not moving at the end
    stopped = np.concatenate([video[:16], np.repeat(video[16:17], 17, axis=0)])
    assert score_video(video, "a red circle moving right")["moving_at_end"] is True
    assert score_video(stopped, "a red circle moving right")["moving_at_end"] is False
    # a background that brightens shows as background drift
    grey = np.clip(video.astype(int) + np.linspace(0, 60, 33).astype(int)[:, None, None, None], 0, 255)
    g = score_video(grey.astype(np.uint8), "a red circle moving right")
    assert g["background_end"] - g["background_start"] > 40 and g["colour_ok"]
    with pytest.raises(ValueError):
        score_video(video, "a dog")


def test_aggregate_rates_split_held_out_pairs():
    rows = [score_video(shapes_clip(c, s, m, seed=i), f"a {c} {s} {m}")
            for i, (c, s, m) in enumerate([("red", "circle", "moving left"), ("blue", "circle", "moving up"),
                                           ("green", "triangle", "standing still")])]
    rows.append(score_video(shapes_clip("red", "square", "moving up"), "a yellow triangle moving up"))
    agg = aggregate(rows)
    assert agg["all"]["videos"] == 4 and agg["all"]["colour"] == 0.75 and agg["all"]["direction"] == 1.0
    assert agg["held_out"]["videos"] == 2 and agg["held_out"]["shape"] == 0.5
    assert agg["seen"]["passes_bars"] and not agg["held_out"]["passes_bars"]


def test_prompt_files_map_lines_or_names_to_videos(tmp_path):
    videos = ["v/000.mp4", "v/001.mp4"]
    by_line = tmp_path / "p.txt"
    by_line.write_text("a red circle moving left\n\n# comment\na blue square moving up\n")
    assert R.read_prompts(str(by_line), videos) == ["a red circle moving left", "a blue square moving up"]
    by_name = tmp_path / "n.txt"
    by_name.write_text("001.mp4\ta blue square moving up\n000\ta red circle moving left\n")
    assert R.read_prompts(str(by_name), videos) == ["a red circle moving left", "a blue square moving up"]
    with pytest.raises(UsageError, match="1 prompts for 2 videos"):
        by_line.write_text("a red circle moving left\n")
        R.read_prompts(str(by_line), videos)
    with pytest.raises(UsageError, match="no line for v/002.mp4"):
        R.read_prompts(str(by_name), videos + ["v/002.mp4"])


# ------------------------------------------------------------------------------- CLI
def eval_args(videos, **kw):
    base = dict(videos=videos, prompt=None, prompts=None, json=None, plot=None, compare=False,
                shapes=False, window=None, clip=None, dino=None)
    return Namespace(**{**base, **kw})


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "videogen", "eval", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_json_and_plot(tmp_path):
    video = write_mp4(tmp_path / "x.mp4", shapes_clip(frames=17))
    result = run_cli(str(video), "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "p.png"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["failed"] == [] and report["videos"][0]["frames"] == 17
    assert len(report["videos"][0]["curves"]["ssim"]) == 16
    assert cv2.imread(str(tmp_path / "p.png")).shape[0] > 400
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_cli_reports_an_unreadable_file_and_scores_the_others(tmp_path):
    good = [write_mp4(tmp_path / f"good{i}.mp4", shapes_clip(frames=9, seed=i)) for i in range(2)]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    result = run_cli(str(good[0]), str(bad), str(good[1]), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("videogen eval:")]
    assert len(ours) == 2 and all(str(bad) in line for line in ours)  # the skip, then the summary
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["video"] for r in report["videos"]] == [str(g) for g in good]
    assert [f["video"] for f in report["failed"]] == [str(bad)]


def test_cli_shapes_on_a_dataset_and_a_compare_table(tmp_path, capsys):
    data = S.write_shapes_dataset(tmp_path / "ds", num=4, frames=17, size=64, seed=3)
    R.evaluate_cli(eval_args([str(data)], shapes=True, json=str(tmp_path / "s.json")))
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["shapes"]["all"]["videos"] == 4 and report["shapes"]["all"]["passes_bars"]
    assert report["drift"]["all"]["videos"] == 4 and report["drift"]["all"]["passes_bars"]
    drift = report["videos"][0]["drift"]
    assert drift["window"] == 8 and len(drift["curves"]["area_ratio"]) == 2  # 17 frames: two windows of 8+
    assert all(abs(v) < 0.05 for r in report["videos"] for v in r["drift"]["off_axis_shift"].values())
    # the same videos with a prompts file, one line per video in sorted order
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(r["shapes"]["prompt"] + "\n" for r in report["videos"]))
    R.evaluate_cli(eval_args([str(data / "videos")], shapes=True, prompts=str(prompts), compare=True,
                             plot=str(tmp_path / "c.png")))
    out = capsys.readouterr().out
    assert "flicker score" in out and "00003.mp4" in out and "held_out" not in out and "all" in out
    assert "col+shp" in out and "area+sharp" in out  # the drift summary
    assert "shift" in out and ("x+0.0" in out or "x-0.0" in out or "y+0.0" in out or "y-0.0" in out)
    assert (tmp_path / "c.png").exists()
    with pytest.raises(UsageError, match="not a shapes-world prompt"):
        R.evaluate_cli(eval_args([str(data / "videos")], shapes=True, prompt="a dog"))
    with pytest.raises(UsageError, match="needs a prompt"):
        R.evaluate_cli(eval_args([str(data / "videos")], shapes=True))
    with pytest.raises(UsageError, match="add --shapes"):
        R.evaluate_cli(eval_args([str(data)], window=24))
    with pytest.raises(UsageError, match="at least 1 frame"):
        R.evaluate_cli(eval_args([str(data)], shapes=True, window=0))


# ------------------------------------------------------------------ optional models
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A random tiny CLIP and a random tiny ViT, saved like downloaded models."""
    transformers = pytest.importorskip("transformers")
    import torch

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    clip_dir, vit_dir = root / "clip", root / "vit"
    clip_dir.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch], vocab[ch + "</w>"] = len(vocab), len(vocab) + 1
    (clip_dir / "vocab.json").write_text(json.dumps(vocab))
    (clip_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(clip_dir))
    tiny = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1, **tiny),
        vision_config=dict(image_size=32, patch_size=8, **tiny), projection_dim=8)
    transformers.CLIPModel(config).save_pretrained(str(clip_dir))
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                                      crop_size={"height": 32, "width": 32})
    transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(clip_dir))
    transformers.ViTModel(transformers.ViTConfig(image_size=32, patch_size=8, **tiny)).save_pretrained(str(vit_dir))
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(vit_dir))
    return str(clip_dir), str(vit_dir)


def test_clip_and_dino_scores_with_tiny_local_models(tiny_models):
    clip_dir, vit_dir = tiny_models
    clip, dino = M.ClipScorer(clip_dir, batch=4), M.DinoScorer(vit_dir, batch=4)
    video = shapes_clip(frames=9)
    r = E.evaluate_frames(video, "a red circle moving right", clip=clip, dino=dino)
    assert len(r["curves"]["clip"]) == 9 and -1 <= r["summary"]["clip_score"] <= 1
    assert r["curves"]["clip"] != E.evaluate_frames(video, "zzz", clip=clip)["curves"]["clip"]
    assert len(r["curves"]["dino_first"]) == 8 and r["summary"]["dino_prev"] <= 1 + 1e-6
    still = E.evaluate_frames(np.repeat(video[:1], 5, axis=0), dino=dino)["summary"]
    assert still["dino_first"] == pytest.approx(1.0, abs=1e-5) and still["dino_prev"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(UsageError, match="no such directory"):
        M.ClipScorer(clip_dir + "-missing")
    with pytest.raises(UsageError, match="cannot load"):
        M.DinoScorer(str(Path(clip_dir).parent))
