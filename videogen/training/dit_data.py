"""The DiT's data: clips from a manifest (encoded on the fly) or the latent cache, a batch
stream that resumes at any micro-batch, and the conditioner that turns a batch into the
model's inputs with the frozen VAE and text encoder."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict

import torch
from torch.utils.data import DataLoader

from videogen.data.datasets import VideoTextDataset, collate_clips, size_hw
from videogen.data.latent_cache import LatentCacheDataset, has_latent_cache
from videogen.errors import UsageError
from videogen.training.components import freeze
from videogen.training.config import Config
from videogen.training.seeding import BucketBatchSampler, EpochSampler

logger = logging.getLogger("videogen")


def check_data_source(cfg: Config) -> None:
    """Without a latent cache, the manifest must exist (checked when a run starts, not when
    a config loads: a config is read on machines without its data too)."""
    d = cfg.data
    if has_latent_cache(d.cache_dir):
        return
    if not d.manifest:
        raise UsageError("data.manifest is not set; point it at a metadata.csv, a .jsonl or a directory "
                         "with prompts.txt + videos.txt (e.g. data.manifest=data/shapes/metadata.csv)")
    if not os.path.exists(d.manifest):
        raise UsageError(f"dataset manifest '{d.manifest}' (data.manifest) not found; make one with "
                         "`videogen data shapes --out data/shapes --num 2000` or fix the path")


def cache_fingerprint(cfg: Config) -> dict:
    """What the cached latents and embeddings depend on; a cache built otherwise is stale."""
    d = cfg.data
    # text keys added after caches were first written count only when set: a cache built
    # before them holds what their defaults give
    later = {"tokenizer": None, "model_type": "t5", "vocab_size": None}
    text = {k: v for k, v in asdict(cfg.text).items() if k not in later or v != later[k]}
    fingerprint = {"data.manifest": d.manifest, "data.frames": d.frames, "data.size": d.size, "data.fps": d.fps,
                   "data.buckets": d.buckets, "vae": asdict(cfg.vae), "text": text,
                   "train.seed": cfg.train.seed, "train.init_from": cfg.train.init_from}
    if d.hflip:  # added later, so counted only when set: a cache built before it holds no mirrors
        fingerprint["data.hflip"] = True
    return fingerprint


def make_dataset(cfg: Config):
    d = cfg.data
    if has_latent_cache(d.cache_dir):
        logger.info("reading latents and text embeddings from the cache in %s", d.cache_dir)
        if d.random_start:
            logger.info("cached clips are fixed windows (their first frames): data.random_start does not apply")
        return LatentCacheDataset(d.cache_dir, fingerprint=cache_fingerprint(cfg))
    if d.cache_dir:
        logger.info("data.cache_dir '%s' holds no cache yet: encoding clips on the fly "
                    "(build it with `videogen cache CONFIG` to train faster)", d.cache_dir)
    return VideoTextDataset(d.manifest, frames=d.frames, size=d.size, fps=d.fps,
                            random_start=d.random_start, seed=cfg.train.seed, buckets=d.buckets, hflip=d.hflip)


def make_loader(cfg: Config, dataset) -> DataLoader:
    """Batches of train.batch_size from a permutation per epoch; with data.buckets, every
    batch from one bucket (seeding.BucketBatchSampler)."""
    d, t = cfg.data, cfg.train
    sampler = EpochSampler(len(dataset), t.seed)
    if not d.buckets:
        return DataLoader(dataset, batch_size=t.batch_size, sampler=sampler, drop_last=True,
                          num_workers=d.num_workers, collate_fn=collate_clips, persistent_workers=False)
    # a cache knows its items' latent grids, not the buckets they were resized to
    ids = dataset.bucket_ids(d.buckets) if isinstance(dataset, LatentCacheDataset) else dataset.bucket_ids()
    check_buckets_fill(d.buckets, ids, t.batch_size)
    batches = BucketBatchSampler(sampler, ids, t.batch_size)
    return DataLoader(dataset, batch_sampler=batches, num_workers=d.num_workers, collate_fn=collate_clips,
                      persistent_workers=False)


def check_buckets_fill(buckets: list, bucket_ids: list, batch_size: int) -> None:
    """Log each bucket's clips; warn of a bucket too small for one batch (never drawn), and
    refuse buckets of which none is large enough."""
    counts = [bucket_ids.count(b) for b in range(len(buckets))]
    logger.info("batches from one bucket each: %s", ", ".join(
        f"{h}x{w} (HxW) {n} clips" for (h, w), n in zip(buckets, counts)))
    small = [f"{h}x{w}" for (h, w), n in zip(buckets, counts) if 0 < n < batch_size]
    if small:
        logger.warning("bucket(s) %s hold fewer clips than train.batch_size (%d): their clips are never drawn",
                       ", ".join(small), batch_size)
    if all(n < batch_size for n in counts):
        raise UsageError(f"no bucket of data.buckets holds train.batch_size ({batch_size}) clips (they hold "
                         f"{', '.join(map(str, counts))}); lower train.batch_size, add clips or use fewer buckets")


def check_sizes(cfg: Config, components: dict, dataset) -> None:
    """Clip size and frame count against the VAE that is built (a pretrained one included)."""
    if isinstance(dataset, LatentCacheDataset):
        return
    from videogen.models.vae import check_frame_count, check_video_size, vae_factors

    vae, patch = components["vae"], components["transformer"].config.patch_size
    check_video_size(vae, *size_hw(cfg.data.size), patch_size=patch)
    for i, (height, width) in enumerate(cfg.data.buckets or []):
        try:
            check_video_size(vae, height, width, patch_size=patch)
        except UsageError as err:
            raise UsageError(f"data.buckets[{i}]: {err}") from None
    check_frame_count(cfg.data.frames, vae_factors(vae)[0], "data.frames (for this VAE)")


class Conditioner:
    """Turns a batch into model inputs: latents (B, C, F, H, W), text (B, L, Dt), mask (B, L).

    Clips are encoded with the frozen VAE and captions with the frozen text encoder, or
    both come from the cache. Dropped captions (for guidance) become "".
    """

    def __init__(self, cfg: Config, components: dict, dataset, device, dtype):
        self.max_length = cfg.text.max_length
        self.device, self.dtype = device, dtype
        self.cached = isinstance(dataset, LatentCacheDataset)
        # With a cache the encoders only serve sample videos: keep them in host memory.
        where = "cpu" if self.cached else device
        self.vae = freeze(components["vae"], where, dtype)
        self.text_encoder = freeze(components["text_encoder"], where, dtype)
        self.tokenizer = components["tokenizer"]
        if self.cached:
            text, mask = dataset.uncond()
            self.uncond = (text.to(device), mask.to(device))

    @torch.no_grad()
    def empty(self) -> tuple:
        """The empty prompt's text (1, L, Dt) and mask (1, L): what guidance steers away from."""
        if self.cached:
            return self.uncond[0][None].float(), self.uncond[1][None]
        from videogen.models.text import encode_prompts

        text, mask = encode_prompts(self.tokenizer, self.text_encoder, [""], self.max_length, self.device)
        return text.float(), mask

    @torch.no_grad()
    def __call__(self, batch: dict, drop: torch.Tensor) -> tuple:
        if self.cached:
            latents = batch["latents"].float()
            text = torch.where(drop[:, None, None], self.uncond[0], batch["text"]).float()
            mask = torch.where(drop[:, None], self.uncond[1], batch["text_mask"])
            return latents, text, mask
        from videogen.models.text import encode_prompts
        from videogen.models.vae import encode_video

        latents = encode_video(self.vae, batch["video"].to(self.device, self.dtype)).float()
        prompts = ["" if d else c for c, d in zip(batch["caption"], drop.tolist())]
        text, mask = encode_prompts(self.tokenizer, self.text_encoder, prompts, self.max_length, self.device)
        return latents, text.float(), mask


class BatchStream:
    """Micro-batches forever, epoch after epoch, starting at any micro-batch position."""

    def __init__(self, accelerator, loader, dataset, start: int):
        self.accelerator, self.loader, self.dataset = accelerator, loader, dataset
        self.sampler = epoch_sampler(loader)
        self.per_epoch = len(loader)
        self.epoch, skip = divmod(start, self.per_epoch)
        self._it = self._open(skip)

    def _open(self, skip: int):
        source = self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
        # accelerate's loader sets its sampler's epoch from its own counter at every
        # iter(); a resumed (skipping) loader starts that counter at 0, so set it here.
        source.set_epoch(self.epoch)
        # On 2+ processes that misses the sampler of a skipping loader (accelerate 1.15 looks
        # one wrapper deep, and the shard and the skip make two): set it on the sampler itself.
        self.sampler.set_epoch(self.epoch)
        self.dataset.set_epoch(self.epoch)
        return iter(source)

    def __next__(self) -> dict:
        try:
            return next(self._it)
        except StopIteration:
            self.epoch += 1
            self._it = self._open(0)
            return next(self._it)


def epoch_sampler(loader) -> EpochSampler:
    """The EpochSampler under a (prepared) loader's batch sampler and its wrappers."""
    node = loader.batch_sampler
    while not isinstance(node, EpochSampler):
        node = node.sampler if hasattr(node, "sampler") else node.batch_sampler
    return node
