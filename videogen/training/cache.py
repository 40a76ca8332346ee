"""`videogen cache`: VAE latents + text embeddings of every clip of a training config,
into safetensors shards in data.cache_dir, which `videogen train` then reads instead of
encoding clips on the fly."""

from __future__ import annotations

import collections
import logging
from typing import Optional

import torch
import torch.nn.functional as F

from videogen.data.datasets import VideoTextDataset, mirror_item
from videogen.data.latent_cache import LatentCacheDataset, LatentCacheWriter, has_latent_cache
from videogen.errors import UsageError
from videogen.training.components import freeze, load_components
from videogen.training.config import load_config
from videogen.training.dit_data import cache_fingerprint, check_data_source, check_sizes

logger = logging.getLogger("videogen")


def cache_dataset(config_path: Optional[str], overrides: Optional[list] = None, workers: int = 1) -> str:
    """Encode the config's clips into data.cache_dir; returns it. Clips are their first
    data.frames frames (no random window); with data.buckets, each at its bucket's size;
    with data.hflip, each clip is followed by its mirror (encoded from the flipped pixels).

    With workers > 1 the clips are read here and encoded by that many processes of one
    thread each; the shards are the same as with one. The VAE encoder is the cost (~0.4 s
    a 33-frame 64x64 clip on one CPU thread) and it scales with processes far better than
    with threads: 1.58x for 2 processes, 1.19x for 2 threads (benchmarks/cache_workers.py).
    """
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    cfg = load_config(config_path, overrides)
    d = cfg.data
    if not d.cache_dir:
        raise UsageError("data.cache_dir is not set; say where the cache goes, e.g. data.cache_dir=cache/shapes")
    fingerprint = cache_fingerprint(cfg)
    if has_latent_cache(d.cache_dir):
        LatentCacheDataset(d.cache_dir, fingerprint=fingerprint)  # raises if built for another config
        logger.warning("the cache in %s is up to date with this config; nothing to do", d.cache_dir)
        return d.cache_dir
    check_data_source(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() and not cfg.train.cpu else "cpu")
    dataset = VideoTextDataset(d.manifest, frames=d.frames, size=d.size, fps=d.fps, random_start=False,
                               buckets=d.buckets)
    components = load_components(cfg)
    check_sizes(cfg, components, dataset)
    encoder = CacheEncoder(components, device, cfg.text.max_length)
    jobs = (_inputs(batch) for batch in _batches(dataset, cfg.train.batch_size, d.hflip))
    if workers == 1 or device.type != "cpu":
        encoded = (encoder(*job) for job in jobs)
    else:
        encoded = _encode_in_processes(encoder, jobs, workers)
    writer = LatentCacheWriter(d.cache_dir)
    for latents, text, mask, captions in encoded:
        writer.add(latents, text, mask, captions)
    if not writer.count:
        raise UsageError(dataset.summary() + "; nothing to cache")
    _, text, mask, _ = encoder(None, [""])
    writer.close(uncond_text=text[0], uncond_mask=mask[0], fingerprint=fingerprint, report=dataset.report())
    logger.warning("cached %d clips in %s%s; %s", writer.count, d.cache_dir,
                   " (each clip and its mirror: data.hflip)" if d.hflip else "", dataset.summary())
    return d.cache_dir


def _batches(dataset: VideoTextDataset, size: int, hflip: bool = False):
    """Lists of up to `size` readable items of one size (data.buckets), in order
    (unreadable clips are skipped and reported); with `hflip` each item is followed by its
    mirror (`mirror_item`), so the cache holds both."""
    from tqdm.auto import tqdm

    pending: dict = {}  # clip size -> its batch being filled
    for index in tqdm(range(len(dataset)), desc="caching", unit="clip"):
        item = dataset.try_load(index)
        if item is None:
            continue
        key = tuple(item["video"].shape)
        for version in (item, mirror_item(item)) if hflip else (item,):
            pending.setdefault(key, []).append(version)
            if len(pending[key]) == size:
                yield pending.pop(key)
    yield from pending.values()


def _inputs(batch: list) -> tuple:
    return torch.stack([item["video"] for item in batch]), [item["caption"] for item in batch]


class CacheEncoder:
    """(videos (B, 3, F, H, W) or None, captions) -> (latents, text, mask, captions), the
    text padded to the cache's length. Picklable: worker processes get a copy."""

    def __init__(self, components: dict, device, max_length: int):
        self.vae = freeze(components["vae"], device, torch.float32)
        self.text_encoder = freeze(components["text_encoder"], device, torch.float32)
        self.tokenizer, self.max_length, self.device = components["tokenizer"], max_length, device

    @torch.no_grad()
    def __call__(self, videos: Optional[torch.Tensor], captions: list) -> tuple:
        from videogen.models.text import encode_prompts
        from videogen.models.vae import encode_video

        latents = None if videos is None else encode_video(self.vae, videos.to(self.device)).float()
        text, mask = encode_prompts(self.tokenizer, self.text_encoder, captions, self.max_length, self.device)
        return (latents, *pad_text(text, mask, self.max_length), captions)


def pad_text(text: torch.Tensor, mask: torch.Tensor, length: int) -> tuple:
    """Pad (B, L', Dt) / (B, L') to L = length with zeros / False, so shards stack."""
    pad = length - text.shape[1]
    return F.pad(text.float(), (0, 0, 0, pad)), F.pad(mask, (0, pad), value=False)


# A worker process's own encoder, set once by its initializer (a process pool's way to
# give each worker a large object without sending it with every job).
_worker_encoder: Optional[CacheEncoder] = None


def _cache_worker_init(encoder: CacheEncoder) -> None:
    global _worker_encoder
    torch.set_num_threads(1)
    _worker_encoder = encoder


def _cache_worker_encode(job: tuple) -> tuple:
    return _worker_encoder(*job)


def _encode_in_processes(encoder: CacheEncoder, jobs, workers: int):
    """encoder(*job) for each job in `workers` spawned processes, in order, with at most
    2 x workers batches in flight (the clips are read lazily, not all at once)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child of a process whose OpenMP threads have run can hang
    context = multiprocessing.get_context("spawn")
    pending: collections.deque = collections.deque()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_cache_worker_init,
                             initargs=(encoder,)) as pool:
        for job in jobs:
            pending.append(pool.submit(_cache_worker_encode, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
