"""Loaders: batches depend on (seed, epoch) only — not on workers, persistence or ranks — and change per epoch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, DistributedSampler

from skelssl.data.clips import ClipConfig, ClipDataset
from skelssl.data.importers import get_importer_class
from skelssl.data.loader import EpochSampler, make_loader
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.errors import ConfigError

UCLA_FILES = (
    "a02_s09_e04_v02",
    "a03_s09_e01_v01",
    "a12_s05_e01_v01",
    "a08_s06_e02_v01",
    "a04_s01_e04_v01",
    "a09_s09_e03_v01",
    "a01_s08_e02_v01",
    "a09_s09_e02_v01",
    "a04_s05_e04_v02",
    "a06_s03_e04_v01",
    "a01_s01_e00_v01",
    "a01_s01_e00_v02",
)


@pytest.fixture(scope="module")
def store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    src = tmp_path_factory.mktemp("ucla-loader-src")
    for name in UCLA_FILES:
        shutil.copy(shared_data / "nw-ucla" / "all_sqe" / f"{name}.json", src)
    out = tmp_path_factory.mktemp("loader") / "ucla"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    return SkeletonStore.open(out)


def epoch_batches(loader, epoch: int) -> list[dict[str, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def assert_same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            torch.testing.assert_close(x[key], y[key], rtol=0, atol=0)


def order(batches: list[dict[str, torch.Tensor]]) -> list[int]:
    return [i for b in batches for i in b["index"].tolist()]


@pytest.mark.parametrize("config", [ClipConfig.mamp(), ClipConfig.skeleton2vec()], ids=["mamp", "s2v"])
def test_same_seed_and_epoch_same_batches_for_0_1_2_workers(store: SkeletonStore, config: ClipConfig) -> None:
    ds = ClipDataset(store=store, config=config)
    runs = []
    for workers in (0, 1, 2):
        loader = make_loader(ds, batch_size=5, shuffle=True, seed=3, epoch=2, num_workers=workers, drop_last=False)
        runs.append(list(loader))
    assert_same(runs[0], runs[1])
    assert_same(runs[0], runs[2])
    first = runs[0]
    assert [b["x"].shape[0] for b in first] == [5, 5, 2]
    assert first[0]["x"].shape[1:] == (2, config.frames, 20, 3)
    assert sorted(order(first)) == list(range(len(store)))


def test_epochs_change_order_and_views(store: SkeletonStore) -> None:
    ds = ClipDataset(store=store, config=ClipConfig.mamp())
    loader = make_loader(ds, batch_size=4, shuffle=True, seed=0, num_workers=0)
    e0, e1 = epoch_batches(loader, 0), epoch_batches(loader, 1)
    assert order(e0) != order(e1)
    views0 = {i: x for b in e0 for i, x in zip(b["index"].tolist(), b["x"], strict=True)}
    views1 = {i: x for b in e1 for i, x in zip(b["index"].tolist(), b["x"], strict=True)}
    long_enough = [i for i in views0 if store.lengths[i] > 64]  # shorter ones are never cropped
    assert long_enough and all(not torch.equal(views0[i], views1[i]) for i in long_enough)
    assert_same(e0, epoch_batches(loader, 0))  # going back to epoch 0 repeats it exactly
    other = make_loader(ds, batch_size=4, shuffle=True, seed=1, num_workers=0)
    assert order(epoch_batches(other, 0)) != order(e0)


def test_persistent_workers_follow_set_epoch(store: SkeletonStore) -> None:
    ds = ClipDataset(store=store, config=ClipConfig.skeleton2vec())
    persistent = make_loader(ds, batch_size=4, shuffle=True, seed=5, num_workers=2, persistent_workers=True)
    got = [epoch_batches(persistent, e) for e in (0, 1, 2)]
    for e in (0, 1, 2):
        fresh = make_loader(ds, batch_size=4, shuffle=True, seed=5, epoch=e, num_workers=0)
        assert_same(got[e], list(fresh))
    assert order(got[0]) != order(got[1])


def test_items_differ_within_a_batch(store: SkeletonStore) -> None:
    longest = int(np.argmax(store.lengths))
    ds = ClipDataset(store=store, config=ClipConfig.skeleton2vec(), indices=[longest] * 6)
    batch = next(iter(make_loader(ds, batch_size=6, shuffle=False, seed=0, num_workers=2)))
    x = batch["x"]
    assert all(not torch.equal(x[a], x[b]) for a in range(6) for b in range(a + 1, 6))


def test_distributed_shards(store: SkeletonStore) -> None:
    ds = ClipDataset(store=store, config=ClipConfig.mamp())
    per_rank = []
    for rank in (0, 1):
        loader = make_loader(
            ds, batch_size=3, shuffle=True, seed=7, epoch=4, num_workers=0, distributed=True, rank=rank, world_size=2
        )
        ref = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=7)
        ref.set_epoch(4)
        batches = list(loader)
        assert order(batches) == [int(ds.indices[i]) for i in ref]
        per_rank.append(order(batches))
        loader.set_epoch(5)
        assert order(list(loader)) != per_rank[-1]
    assert sorted(per_rank[0] + per_rank[1]) == list(range(len(store)))  # 12 items: an exact split
    with pytest.raises(ConfigError):
        make_loader(ds, batch_size=3, shuffle=True, seed=0, distributed=True)  # no process group, no rank


def test_unshuffled_order_and_bad_arguments(store: SkeletonStore) -> None:
    ds = ClipDataset(store=store, config=ClipConfig.pstl(), indices=[3, 1, 2])
    loader = make_loader(ds, batch_size=2, shuffle=False, seed=0, drop_last=True)
    assert order(list(loader)) == [3, 1]
    with pytest.raises(ConfigError):
        make_loader(ds, batch_size=0, shuffle=False, seed=0)
    sampler = EpochSampler(size=4, shuffle=True, seed=1, epoch=2)
    assert len(sampler) == 4 and [e for e, _ in sampler] == [2] * 4
    assert sorted(p for _, p in sampler) == [0, 1, 2, 3]


class GlobalRandom(Dataset):
    """Reports what third-party code using the global generators would draw in the worker."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, key):
        info = torch.utils.data.get_worker_info()
        return {
            "numpy": torch.tensor(np.random.random()),
            "torch": torch.rand(()),
            "worker": torch.tensor(-1 if info is None else info.id),
        }


def test_worker_global_generators_are_seeded(store: SkeletonStore) -> None:
    def run(epoch: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
        loader = make_loader(GlobalRandom(), batch_size=2, shuffle=False, seed=seed, epoch=epoch, num_workers=2)
        return list(loader)

    a, b = run(0), run(0)
    assert_same(a, b)
    assert not torch.equal(torch.cat([x["numpy"] for x in a]), torch.cat([x["numpy"] for x in run(1)]))
    assert not torch.equal(torch.cat([x["torch"] for x in a]), torch.cat([x["torch"] for x in run(0, seed=2)]))
    by_worker = {int(x["worker"][0]): x["numpy"] for x in a[:2]}
    assert set(by_worker) == {0, 1} and not torch.equal(by_worker[0], by_worker[1])


def test_worker_seeder_derives_from_seed_epoch_worker() -> None:
    from skelssl.data.loader import WorkerSeeder

    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    try:

        def draw(seed: int, epoch: int, worker: int) -> tuple[float, float]:
            WorkerSeeder(seed=seed, sampler=EpochSampler(size=1, shuffle=False, seed=seed, epoch=epoch))(worker)
            return float(np.random.random()), float(torch.rand(()))

        base = draw(0, 0, 0)
        assert draw(0, 0, 0) == base
        assert all(draw(*key)[0] != base[0] and draw(*key)[1] != base[1] for key in [(1, 0, 0), (0, 1, 0), (0, 0, 1)])
    finally:
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def test_skip_batches_resumes_the_same_epoch_order() -> None:
    from skelssl.data.loader import EpochSampler

    full = EpochSampler(size=23, shuffle=True, seed=5)
    full.set_epoch(3)
    order = list(full)
    part = EpochSampler(size=23, shuffle=True, seed=5)
    part.set_epoch(3, skip=8)
    assert list(part) == order[8:] and len(part) == 15
    part.set_epoch(4)
    assert len(part) == 23  # the skip applies to one epoch only
