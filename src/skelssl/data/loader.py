"""DataLoaders whose batches are a function of ``(seed, epoch)`` only, for 0, 1 or N workers and N ranks.

The AimCLR-family code reseeds its workers identically every epoch, so every epoch sees the same
"random" augmentations. Here:

- the shuffle order is drawn from ``(seed, epoch)``: a seeded permutation on one process, PyTorch's
  ``DistributedSampler(seed=seed)`` with ``set_epoch(epoch)`` across ranks;
- the sampler yields ``(epoch, position)`` keys, so a :class:`~skelssl.data.clips.ClipDataset` draws each
  item's random view from ``(seed, epoch, position)`` whichever worker loads it. The epoch travels with
  every key through the index queue, so it is right with ``persistent_workers=True`` too, where the
  workers keep the dataset copy of the first epoch (a shared-memory epoch counter would race with the
  workers' prefetching of the next epoch; keys cannot);
- ``worker_init_fn`` seeds torch's and numpy's global generators in every worker from
  ``(seed, epoch, worker_id)``, for third-party code that uses them (skelssl itself does not), and the
  loader's generator (PyTorch's own per-worker base seed) is reseeded from ``(seed, epoch)``. With
  persistent workers this worker seeding happens once, when the workers start.

:class:`EpochLoader` is a ``DataLoader`` with ``set_epoch(epoch)``; call it before each epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from skelssl.errors import ConfigError

_MASK63 = (1 << 63) - 1


def _seed_from(*values: int) -> int:
    """A 63-bit seed derived from integers (stable across processes and Python runs)."""
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 32 | int(state[1])) & _MASK63


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, position)`` keys over ``len(dataset)`` items, shuffled from ``(seed, epoch)``.

    With ``base`` (e.g. a ``DistributedSampler``), positions come from it and its ``set_epoch`` is kept
    in step; otherwise ``shuffle`` permutes all positions with ``np.random.default_rng([seed, epoch])``.
    """

    def __init__(
        self, *, size: int, shuffle: bool, seed: int, epoch: int = 0, base: Sampler[int] | None = None
    ) -> None:
        self.size = int(size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.base = base
        self.epoch = 0
        self.skip = 0
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int, *, skip: int = 0) -> None:
        """Select ``epoch``; ``skip`` leaves out its first items (resuming part-way through an epoch)."""
        self.epoch = int(epoch)
        self.skip = int(skip)
        if self.base is not None and hasattr(self.base, "set_epoch"):
            self.base.set_epoch(self.epoch)

    def positions(self) -> np.ndarray:
        """This epoch's positions, in order."""
        if self.base is not None:
            return np.fromiter(iter(self.base), dtype=np.int64)
        if self.shuffle:
            return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        return np.arange(self.size, dtype=np.int64)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for position in self.positions()[self.skip :].tolist():
            yield (epoch, position)

    def __len__(self) -> int:
        full = len(self.base) if self.base is not None and isinstance(self.base, Sized) else self.size
        return max(full - self.skip, 0)


class WorkerSeeder:
    """``worker_init_fn``: seeds torch and numpy's global generators from ``(seed, epoch, worker_id)``.

    The epoch is read from the sampler when the worker starts (the worker's copy of the main process).
    """

    def __init__(self, *, seed: int, sampler: EpochSampler) -> None:
        self.seed = int(seed)
        self.sampler = sampler

    def __call__(self, worker_id: int) -> None:
        value = _seed_from(self.seed, self.sampler.epoch, worker_id)
        torch.manual_seed(value)
        np.random.seed(value & 0xFFFFFFFF)  # legacy global state, for third-party code only


class EpochLoader(DataLoader):
    """A ``DataLoader`` over an :class:`EpochSampler`; :meth:`set_epoch` selects the epoch's order and views."""

    def set_epoch(self, epoch: int, *, skip_batches: int = 0) -> None:
        """Select ``epoch`` (order and views); ``skip_batches`` resumes after that many of its batches."""
        sampler = self.epoch_sampler
        sampler.set_epoch(epoch, skip=skip_batches * int(self.batch_size or 1))
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        if self.generator is not None:
            self.generator.manual_seed(_seed_from(sampler.seed, epoch, 1))

    @property
    def epoch_sampler(self) -> EpochSampler:
        sampler = self.batch_sampler.sampler if self.batch_sampler is not None else self.sampler
        assert isinstance(sampler, EpochSampler)
        return sampler

    @property
    def epoch(self) -> int:
        return self.epoch_sampler.epoch


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    distributed: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> EpochLoader:
    """A DataLoader whose batches depend only on ``(seed, epoch)`` (and the dataset's own seed).

    ``dataset`` must accept ``(epoch, position)`` keys (as :class:`~skelssl.data.clips.ClipDataset`).
    ``distributed`` shards with ``DistributedSampler(seed=seed, shuffle=shuffle, drop_last=drop_last)``
    over ``world_size`` ranks (default: the initialised process group's). Call ``loader.set_epoch(e)``
    before each epoch; ``epoch`` is the first one.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be at least 0, got {num_workers}")
    size = len(dataset)  # type: ignore[arg-type]
    base: Sampler[int] | None = None
    if distributed:
        if world_size is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ConfigError("distributed loading needs rank and world_size, or an initialised process group")
            world_size = dist.get_world_size() if world_size is None else world_size
            rank = dist.get_rank() if rank is None else rank
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside 0..{world_size - 1}")
        base = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
    sampler = EpochSampler(size=size, shuffle=shuffle, seed=seed, epoch=epoch, base=base)
    generator = torch.Generator()
    generator.manual_seed(_seed_from(seed, epoch, 1))
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["worker_init_fn"] = WorkerSeeder(seed=seed, sampler=sampler)
        kwargs["persistent_workers"] = persistent_workers
    loader = EpochLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=generator,
        **kwargs,
    )
    return loader
