"""Stateless randomness: every draw of a run is a pure function of (seed, step, ...), so a
resumed run draws exactly what the uninterrupted one would, on any number of ranks."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def step_generator(device, *parts: int) -> torch.Generator:
    """A generator on `device` seeded by mix_seed(*parts), e.g. (seed, step, micro, rank)."""
    return torch.Generator(device=device).manual_seed(mix_seed(*parts))


class EpochSampler(Sampler):
    """A permutation per epoch drawn from (seed, epoch) alone: the same on every rank
    (accelerate shards the batches) and the same again on resume."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.size))
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 0xDA7A))
        return iter(torch.randperm(self.size, generator=g).tolist())


class BucketBatchSampler(Sampler):
    """Batches of `batch_size` items of one bucket each (data.buckets), from `sampler`'s
    permutation of the epoch: each bucket's items in that order, cut into batches (a
    bucket's remainder, fewer than batch_size, is dropped for the epoch, as drop_last does),
    and the batches shuffled from (seed, epoch) so that buckets interleave.

    Shaped like torch's BatchSampler (`sampler`, `batch_size`, `drop_last`), so accelerate
    shards its batches over ranks, skips them on resume and sets the epoch on `sampler`
    exactly as it does for the default loader's.
    """

    def __init__(self, sampler: EpochSampler, bucket_ids: list, batch_size: int):
        if len(bucket_ids) != len(sampler):
            raise ValueError(f"{len(bucket_ids)} bucket ids for a sampler of {len(sampler)} items")
        self.sampler, self.bucket_ids, self.batch_size, self.drop_last = sampler, list(bucket_ids), batch_size, True

    def __len__(self) -> int:
        counts: dict = {}
        for b in self.bucket_ids:
            counts[b] = counts.get(b, 0) + 1
        return sum(n // self.batch_size for n in counts.values())

    def __iter__(self):
        members: dict = {}
        for i in self.sampler:
            members.setdefault(self.bucket_ids[i], []).append(i)
        size = self.batch_size
        batches = [m[k:k + size] for _, m in sorted(members.items()) for k in range(0, len(m) - size + 1, size)]
        g = torch.Generator().manual_seed(mix_seed(self.sampler.seed, self.sampler.epoch, 0xB0C7))
        return iter([batches[j] for j in torch.randperm(len(batches), generator=g).tolist()])
