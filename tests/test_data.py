"""Datasets: the three manifest layouts, bad items skipped and counted, the latent cache."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from videogen.data.datasets import VideoTextDataset, clip_to_tensor, collate_clips
from videogen.data.latent_cache import LatentCacheDataset, LatentCacheWriter
from videogen.data.manifests import read_manifest
from videogen.errors import UsageError
from videogen.data.video_io import Mp4Writer


def write_clip(path, frames=9, size=32, colour=(220, 40, 40), fps=8):
    """A square sliding right; the frame index is readable from its position."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with Mp4Writer(str(path), fps=fps) as w:
        for i in range(frames):
            f = np.zeros((size, size + 8, 3), np.uint8)  # not square: exercises resize + crop
            f[8:16, i:i + 8] = colour
            w.write(f)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for name, frames in (("a", 9), ("b", 13), ("c", 9), ("short", 3)):
        write_clip(str(root / "videos" / f"{name}.mp4"), frames=frames)
    good = (root / "videos" / "a.mp4").read_bytes()
    (root / "videos" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (root / "videos" / "truncated.mp4").write_bytes(good[: len(good) // 3])
    return root


def write_csv(root, rows, name="metadata.csv"):
    import csv

    with open(root / name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "caption"])
        w.writerows(rows)
    return str(root / name)


GOOD = [("videos/a.mp4", "a red square moving right"), ("videos/b.mp4", "a red square"),
        ("videos/c.mp4", "red square, moving right")]


def test_item_shape_range_and_fixed_start(clips):
    ds = VideoTextDataset(write_csv(clips, GOOD, "good.csv"), frames=9, size=32, random_start=False)
    item = ds[1]
    assert item["video"].shape == (3, 9, 32, 32) and item["video"].dtype == torch.float32
    assert -1 <= item["video"].min() < -0.9 and 0.5 < item["video"].max() <= 1
    assert item["caption"] == "a red square" and item["skipped"] == []
    # fixed start: frame 0 has the square at the left (columns 4..11 after the 4-pixel crop)
    red = item["video"][0, 0]  # channel R of frame 0
    assert red[12, :4].mean() > 0.5 and red[12, 14:].mean() < -0.9


def test_random_start_depends_on_seed_epoch_index_only(clips):
    man = write_csv(clips, GOOD, "good.csv")
    ds = VideoTextDataset(man, frames=9, size=32, seed=3)
    starts = {ds._start(1, 13) for _ in range(3)}
    assert len(starts) == 1  # same (seed, epoch, index): same start
    other = {VideoTextDataset(man, frames=9, size=32, seed=s)._start(1, 13) for s in range(20)}
    assert len(other) > 1 and other <= set(range(5))


def test_bad_items_are_skipped_counted_and_replaced(clips, caplog):
    rows = GOOD + [("videos/corrupt.mp4", "corrupt"), ("videos/truncated.mp4", "truncated"),
                   ("videos/nope.mp4", "missing"), ("videos/c.mp4", "  "), ("videos/short.mp4", "short")]
    ds = VideoTextDataset(write_csv(clips, rows, "mixed.csv"), frames=9, size=32)
    # missing + empty caption are known up front
    assert len(ds) == 6
    items = [ds[i] for i in range(len(ds))]
    captions = [it["caption"] for it in items]
    assert set(captions) <= {c for _, c in GOOD}  # every item returned is a good one
    assert all(it["video"].shape == (3, 9, 32, 32) for it in items)
    counts = ds.report()["skipped"]
    assert counts["missing"] == 1 and counts["empty_caption"] == 1 and counts["too_short"] == 1
    assert counts["unreadable"] + counts["too_short"] == 3  # truncated: unreadable or short, by decoder
    assert ds.report()["usable"] == 3
    files = ds.report()["files"]
    assert any(f.endswith("corrupt.mp4") for f in files["unreadable"])
    assert any(f.endswith("short.mp4") for f in files["too_short"])
    assert "3 of 8 clips usable" in ds.summary()
    assert "nope.mp4" in caplog.text and "corrupt.mp4" in caplog.text
    # the skips reported with the items (for workers) cover the ones found while reading
    seen = {s[0] for it in items for s in it["skipped"]}
    assert {os.path.basename(s) for s in seen} >= {"corrupt.mp4", "short.mp4"}


def test_no_good_item_is_a_usage_error(clips):
    man = write_csv(clips, [("videos/corrupt.mp4", "x"), ("videos/short.mp4", "y")], "bad.csv")
    ds = VideoTextDataset(man, frames=9, size=32)
    with pytest.raises(UsageError, match="no usable clip.*1 unreadable, 1 too_short"):
        ds[0]
    with pytest.raises(UsageError, match="no usable clip"):
        VideoTextDataset(write_csv(clips, [("videos/nope.mp4", "x")], "bad2.csv"), frames=9, size=32)


def test_three_manifest_layouts(clips):
    csv_path = write_csv(clips, GOOD, "layout.csv")
    with open(clips / "layout.jsonl", "w") as f:
        for video, caption in GOOD:
            f.write(json.dumps({"video": video, "caption": caption}) + "\n")
        f.write("{not json\n")
    cog = clips / "cog"
    cog.mkdir(exist_ok=True)
    (cog / "prompts.txt").write_text("".join(c + "\n" for _, c in GOOD))
    (cog / "videos.txt").write_text("".join("../" + v + "\n" for v, _ in GOOD) + "\n")
    for manifest in (csv_path, str(clips / "layout.jsonl"), str(cog)):
        ds = VideoTextDataset(manifest, frames=9, size=32)
        assert len(ds) == 3, manifest
        assert [ds[i]["caption"] for i in range(3)] == [c for _, c in GOOD]
    assert VideoTextDataset(str(clips / "layout.jsonl"), frames=9, size=32).report()["skipped"]["bad_entry"] == 1


def test_manifest_errors_name_the_fix(clips, tmp_path):
    with pytest.raises(UsageError, match="manifest '.*nowhere.csv' not found"):
        read_manifest(str(tmp_path / "nowhere.csv"))
    (tmp_path / "x.csv").write_text("path,text\na.mp4,hi\n")
    with pytest.raises(UsageError, match="columns video,caption"):
        read_manifest(str(tmp_path / "x.csv"))
    (tmp_path / "prompts.txt").write_text("a\nb\n")
    (tmp_path / "videos.txt").write_text("a.mp4\n")
    with pytest.raises(UsageError, match="prompts.txt has 2 lines but videos.txt has 1"):
        read_manifest(str(tmp_path))


def test_clip_to_tensor_resizes_short_side_and_centre_crops():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 38:42] = 255  # a white vertical bar in the middle
    x = clip_to_tensor(frames, 20)
    assert x.shape == (3, 2, 20, 20)
    assert x[:, :, :, 9:11].mean() > 0.5 and x[:, :, :, :5].max() == -1


def test_clip_to_tensor_covers_h_x_w_keeping_the_aspect_ratio():
    """A 16:9 frame to 32x64 (1:2): resized to cover (36x64) and centre-cropped on its height."""
    frames = np.zeros((1, 72, 128, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(72, dtype=np.uint8)[:, None] * 3  # red ramps down the rows
    frames[:, :, 60:68, 1] = 255  # a green bar in the middle columns
    x = clip_to_tensor(frames, [32, 64])
    assert x.shape == (3, 1, 32, 64)
    resized = torch.nn.functional.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(36, 64),
                                              mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(x.permute(1, 0, 2, 3), (resized[:, :, 2:34] / 127.5 - 1).clamp(-1, 1))
    assert x[1, 0, :, 31:33].mean() > 0.9 and x[1, 0, :, :20].max() == -1  # the bar stays centred


def short_side_crop(frames, size):
    """clip_to_tensor before H x W sizes: short side to size, centre crop to a square."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if min(h, w) != size:
        scale = size / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
        x = torch.nn.functional.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)
        h, w = new
    x = x[:, :, (h - size) // 2:(h - size) // 2 + size, (w - size) // 2:(w - size) // 2 + size]
    return (x / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


def test_square_sizes_give_the_same_tensors_as_before():
    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 80, 3), dtype=np.uint8)
    for clip in (frames, np.ascontiguousarray(frames.transpose(0, 2, 1, 3))):  # wide and tall
        for size in (20, 33, 40, 64):
            assert torch.equal(clip_to_tensor(clip, size), short_side_crop(clip, size))
            assert torch.equal(clip_to_tensor(clip, [size, size]), short_side_crop(clip, size))


@pytest.mark.parametrize("size, hw", [(32, (32, 32)), ([32, 64], (32, 64)), ([16, 16], (16, 16))])
def test_data_size_takes_an_int_or_h_w(size, hw):
    from videogen.data.datasets import DataConfig, size_hw

    cfg = DataConfig(size=size)
    assert size_hw(cfg.size) == hw and cfg.size == (hw[0] if hw[0] == hw[1] else list(hw))
    for bad in (0, [32], [32, 0], [32, 64, 3], 32.0, "32"):
        with pytest.raises(UsageError, match=r"data.size must be a positive int \(square\) or \[H, W\]"):
            DataConfig(size=bad)


def test_collate_and_latent_cache_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    lat, text = torch.randn(5, 4, 3, 8, 8, generator=g), torch.randn(5, 6, 16, generator=g)
    mask = torch.arange(6)[None].expand(5, 6) < torch.tensor([[2], [3], [6], [1], [4]])
    writer = LatentCacheWriter(str(tmp_path / "cache"), shard_size=2)
    writer.add(lat[:3], text[:3], mask[:3], ["a", "b", "c"])
    writer.add(lat[3:], text[3:], mask[3:], ["d", "e"])
    writer.close(uncond_text=torch.zeros(6, 16), uncond_mask=torch.zeros(6, dtype=torch.bool),
                 fingerprint={"data.size": 32})
    assert sorted(os.listdir(tmp_path)) == ["cache"]  # the temporary sibling was renamed
    assert len([n for n in os.listdir(tmp_path / "cache") if n.startswith("shard-")]) == 3
    ds = LatentCacheDataset(str(tmp_path / "cache"), fingerprint={"data.size": 32})
    assert len(ds) == 5
    batch = collate_clips([ds[i] for i in (4, 0)])
    assert torch.equal(batch["latents"], lat[[4, 0]]) and torch.equal(batch["text"], text[[4, 0]])
    assert torch.equal(batch["text_mask"], mask[[4, 0]]) and batch["caption"] == ["e", "a"]
    assert ds.uncond()[0].shape == (6, 16)
    with pytest.raises(UsageError, match="built with data.size=32.*has 64"):
        LatentCacheDataset(str(tmp_path / "cache"), fingerprint={"data.size": 64})
    with pytest.raises(UsageError, match="already exists"):
        LatentCacheWriter(str(tmp_path / "cache"))
    shutil.rmtree(tmp_path / "cache")


def test_latent_cache_fingerprint_compares_local_paths_as_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("vae")
    writer = LatentCacheWriter("cache", shard_size=2)
    writer.add(torch.zeros(1, 4, 1, 2, 2), torch.zeros(1, 3, 8), torch.ones(1, 3, dtype=torch.bool), ["a"])
    writer.close(uncond_text=torch.zeros(3, 8), uncond_mask=torch.zeros(3, dtype=torch.bool),
                 fingerprint={"vae": {"pretrained": "vae"}})
    # the same directory named from elsewhere, e.g. a benchmark passing absolute paths
    assert len(LatentCacheDataset("cache", fingerprint={"vae": {"pretrained": str(tmp_path / "vae")}})) == 1
    with pytest.raises(UsageError, match="built with vae="):
        LatentCacheDataset("cache", fingerprint={"vae": {"pretrained": "other"}})


def test_frame_rule_follows_the_vaes_temporal_factor(clips):
    man = write_csv(clips, GOOD, "good.csv")
    with pytest.raises(UsageError, match="data.frames needs 1\\+4k frames, not 7; use 5 or 9"):
        VideoTextDataset(man, frames=7, size=32)
    ds = VideoTextDataset(man, frames=7, size=32, temporal=2, random_start=False)  # a 2x-time VAE
    assert ds[0]["video"].shape == (3, 7, 32, 32)


def write_tiny_cache(out, frames=9):
    writer = LatentCacheWriter(str(out), shard_size=2)
    writer.add(torch.zeros(2, 4, 3, 2, 2), torch.zeros(2, 3, 8), torch.ones(2, 3, dtype=torch.bool), ["a", "b"])
    writer.close(uncond_text=torch.zeros(3, 8), uncond_mask=torch.zeros(3, dtype=torch.bool),
                 fingerprint={"data.frames": frames})


def test_latent_cache_cut_uses_the_frame_rule(tmp_path):
    write_tiny_cache(tmp_path / "cache")  # 9 pixel frames -> 3 latent frames: factor 4
    assert LatentCacheDataset(str(tmp_path / "cache"), fingerprint={"data.frames": 5})[0]["latents"].shape[1] == 2
    with pytest.raises(UsageError, match="needs 1\\+4k frames, not 7; use 5 or 9"):
        LatentCacheDataset(str(tmp_path / "cache"), fingerprint={"data.frames": 7})


def test_latent_cache_writer_interrupted_or_concurrent(tmp_path, caplog):
    with pytest.raises(KeyboardInterrupt):
        with LatentCacheWriter(str(tmp_path / "cache"), shard_size=1) as writer:
            writer.add(torch.zeros(2, 4, 3, 2, 2), torch.zeros(2, 3, 8), torch.ones(2, 3, dtype=torch.bool), ["a", "b"])
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []  # no cache, no temporary shards
    first = LatentCacheWriter(str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger="videogen"):
        second = LatentCacheWriter(str(tmp_path / "cache"))  # its own temporary sibling
    assert first.tmp != second.tmp and "left by an interrupted" in caplog.text
    assert os.path.basename(first.tmp).startswith(".cache.tmp-")
    first.abort()
    second.abort()
    assert os.listdir(tmp_path) == []


def test_a_random_window_is_read_alone_and_equals_the_slice(clips):
    """Only the window is decoded (data/video_io.read_video start=, num_frames=): the same
    frames as decoding the whole clip and slicing it."""
    from videogen.data.video_io import read_video

    ds = VideoTextDataset(write_csv(clips, GOOD, "good.csv"), frames=9, size=32, seed=5)
    for epoch in range(3):
        ds.set_epoch(epoch)
        start = ds._start(1, 13)
        whole = read_video(ds.entries[1].video)
        assert torch.equal(ds[1]["video"], clip_to_tensor(whole[start:start + 9], 32))
