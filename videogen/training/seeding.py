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
