"""Frozen-encoder features on real NW-UCLA clips, the feature cache, the kNN monitor, and raw-joint kNN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange
from torch import nn

from skelssl.data.clips import ClipConfig, ClipDataset
from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.data.streams import to_stream
from skelssl.errors import ConfigError
from skelssl.evaluation import cached_features, extract_features, knn_accuracy, knn_monitor, load_cached_features
from skelssl.models import STGCN

SUBSET = np.array([3, 40, 41, 150, 151, 300, 480, 600, 777, 778, 900, 1001, 1100, 1234, 1300, 1483])


@pytest.fixture(scope="module")
def ucla(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    """The whole real NW-UCLA set (1,484 sequences; prepared in about a second)."""
    out = tmp_path_factory.mktemp("eval") / "nw-ucla"
    prepare_store(get_importer_class("nw-ucla")(shared_data / "nw-ucla" / "all_sqe"), out)
    return SkeletonStore.open(out)


@pytest.fixture
def subset(ucla: SkeletonStore) -> ClipDataset:
    return ClipDataset(store=ucla, config=ClipConfig.pstl(train=False), indices=SUBSET)


def small_stgcn(seed: int = 0) -> STGCN:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return STGCN(layout="kinect20", hidden_channels=8)


def trained_stgcn(dataset: ClipDataset) -> STGCN:
    """An encoder whose BatchNorm statistics are not the initial ones, left in train mode."""
    model = small_stgcn()
    x = torch.stack([dataset[i]["x"] for i in range(len(dataset))])
    with torch.no_grad():
        model(x)
        model(x * 2 + 0.1)
    model.train()
    return model


def buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.detach().clone() for name, b in model.named_buffers()}


def manual_features(model: nn.Module, dataset: ClipDataset, stream: str = "joint") -> torch.Tensor:
    x = torch.stack([dataset[i]["x"] for i in range(len(dataset))])
    model.eval()
    with torch.no_grad():
        return model(to_stream(x, stream, "kinect20"))


class CountingEncoder(nn.Module):
    """Wraps an encoder and counts forward calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


class Flatten(nn.Module):
    """Raw coordinates as features: ``(N, M, T, V, C)`` → ``(N, M·T·V·C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "n m t v c -> n (m t v c)")


# -------------------------------------------------------------------------------------------- extraction


def test_features_shape_order_and_equal_to_a_manual_forward(subset: ClipDataset) -> None:
    model = trained_stgcn(subset)
    feats, labels, indices = extract_features(model, subset, batch_size=5)
    assert feats.shape == (len(SUBSET), 256) and feats.dtype == np.float32
    assert labels.dtype == np.int64 and indices.dtype == np.int64
    assert np.array_equal(indices, SUBSET)
    assert np.array_equal(labels, subset.store.labels[SUBSET])
    assert np.isfinite(feats).all() and feats.std() > 0
    np.testing.assert_allclose(feats, manual_features(model, subset).numpy(), rtol=1e-4, atol=1e-5)


def test_features_are_deterministic_and_leave_the_encoder_untouched(subset: ClipDataset) -> None:
    model = trained_stgcn(subset)
    model.st_gcn_networks[3].eval()  # a submodule in another mode: its flag must come back too
    flags = {name: m.training for name, m in model.named_modules()}
    before = buffers(model)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    first = extract_features(model, subset, batch_size=4)
    second = extract_features(model, subset, batch_size=4)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
    np.testing.assert_allclose(extract_features(model, subset, batch_size=64)[0], first[0], rtol=1e-4, atol=1e-5)
    after = buffers(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats and num_batches_tracked
    assert all(torch.equal(params[k], p) for k, p in model.named_parameters())
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert model.training and not model.st_gcn_networks[3].training


def test_train_mode_forward_would_change_the_statistics(subset: ClipDataset) -> None:
    """The control for the test above: the same batch through the model in train mode moves the buffers."""
    model = trained_stgcn(subset)
    before = buffers(model)
    with torch.no_grad():
        model(subset[0]["x"][None].repeat(2, 1, 1, 1, 1))
    assert not all(torch.equal(before[k], v) for k, v in buffers(model).items())


@pytest.mark.parametrize("stream", ["bone", "motion"])
def test_streams_are_converted_before_the_encoder(subset: ClipDataset, stream: str) -> None:
    model = small_stgcn()
    feats, _, _ = extract_features(model, subset, batch_size=8, stream=stream)
    np.testing.assert_allclose(feats, manual_features(model, subset, stream).numpy(), rtol=1e-4, atol=1e-5)
    joint, _, _ = extract_features(model, subset, batch_size=8)
    assert not np.allclose(feats, joint)


def test_any_encoder_and_tuple_items() -> None:
    x = torch.arange(2 * 3 * 1 * 4 * 5 * 2, dtype=torch.float32).reshape(6, 1, 4, 5, 2)
    data = [(x[i], i % 3) for i in range(6)]
    feats, labels, indices = extract_features(Flatten(), data, batch_size=4)  # type: ignore[arg-type]
    assert np.array_equal(feats, x.reshape(6, -1).numpy())
    assert labels.tolist() == [0, 1, 2, 0, 1, 2] and indices.tolist() == list(range(6))
    bf16, _, _ = extract_features(Flatten(), data, amp_dtype=torch.bfloat16)  # type: ignore[arg-type]
    assert bf16.dtype == np.float32 and bf16.shape == feats.shape


def test_extraction_errors(subset: ClipDataset) -> None:
    model = small_stgcn()
    with pytest.raises(ConfigError, match="did you mean 'bone'"):
        extract_features(model, subset, stream="bones")
    with pytest.raises(ConfigError, match="batch_size"):
        extract_features(model, subset, batch_size=0)

    class PerPerson(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))  # (N, M, C): not (N, D)

    with pytest.raises(ValueError, match=r"\(N, D\)"):
        extract_features(PerPerson(), subset)
    data = [(torch.zeros(1, 4, 5, 2), 0)]
    with pytest.raises(ConfigError, match="layout"):
        extract_features(Flatten(), data, stream="bone")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- cache


def test_cache_is_reused_and_invalidated(subset: ClipDataset, tmp_path: Path) -> None:
    model = CountingEncoder(small_stgcn())
    cache = tmp_path / "feats"
    first = cached_features(model, subset, cache, key_parts={"split": "subset"}, batch_size=8)
    assert model.calls == 2
    assert sorted(p.name for p in cache.iterdir()) == ["features.npy", "indices.npy", "labels.npy", "meta.json"]
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["num_items"] == len(SUBSET) and meta["parts"]["extra"] == {"split": "subset"}
    assert meta["parts"]["dataset"]["input_checksum"] == subset.store.meta["input_checksum"]

    again = cached_features(model, subset, cache, key_parts={"split": "subset"}, batch_size=8)
    assert model.calls == 2  # no second forward
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)

    with torch.no_grad():  # other weights → recomputed
        model.inner.st_gcn_networks[0].gcn.conv.weight.mul_(2)
    changed = cached_features(model, subset, cache, key_parts={"split": "subset"}, batch_size=8)
    assert model.calls == 4 and not np.array_equal(changed[0], first[0])
    cached_features(model, subset, cache, key_parts={"split": "subset"}, batch_size=8)
    assert model.calls == 4

    reordered = ClipDataset(store=subset.store, config=subset.config, indices=SUBSET[::-1])  # same size
    feats, _, indices = cached_features(model, reordered, cache, key_parts={"split": "subset"}, batch_size=8)
    assert model.calls == 6 and np.array_equal(indices, SUBSET[::-1])
    np.testing.assert_allclose(feats, changed[0][::-1], rtol=1e-5, atol=1e-6)
    fewer = ClipDataset(store=subset.store, config=subset.config, indices=SUBSET[:-1])  # other indices
    feats, _, indices = cached_features(model, fewer, cache, key_parts={"split": "subset"}, batch_size=8)
    assert model.calls == 8 and np.array_equal(indices, SUBSET[:-1])

    cached_features(model, fewer, cache, key_parts={"split": "subset"}, batch_size=8, stream="motion")
    assert model.calls == 10  # other stream
    other_view = ClipDataset(store=subset.store, config=subset.config.replace(frames=40), indices=SUBSET[:-1])
    cached_features(model, other_view, cache, key_parts={"split": "subset"}, batch_size=8, stream="motion")
    assert model.calls == 12  # other clip config
    cached_features(model, other_view, cache, key_parts={"split": "other"}, batch_size=8, stream="motion")
    assert model.calls == 14  # other key_parts


def test_damaged_cache_is_recomputed(subset: ClipDataset, tmp_path: Path) -> None:
    model = CountingEncoder(small_stgcn())
    first = cached_features(model, subset, tmp_path, key_parts={}, batch_size=16)
    assert model.calls == 1
    path = tmp_path / "features.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert load_cached_features(tmp_path) is None
    again = cached_features(model, subset, tmp_path, key_parts={}, batch_size=16)
    assert model.calls == 2 and np.array_equal(again[0], first[0])
    (tmp_path / "meta.json").unlink()  # an interrupted write leaves no meta.json: not a hit
    cached_features(model, subset, tmp_path, key_parts={}, batch_size=16)
    assert model.calls == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_cache_needs_an_identity_for_other_datasets(tmp_path: Path) -> None:
    data = [(torch.zeros(1, 4, 5, 2), 0)]
    with pytest.raises(ConfigError, match="key_parts"):
        cached_features(Flatten(), data, tmp_path, key_parts={})  # type: ignore[arg-type]
    feats, _, _ = cached_features(Flatten(), data, tmp_path, key_parts={"name": "zeros"})  # type: ignore[arg-type]
    assert feats.shape == (1, 40)


# --------------------------------------------------------------------------------------------- kNN paths


def test_knn_monitor_on_real_clips(ucla: SkeletonStore) -> None:
    config = ClipConfig.pstl(train=False)
    train = ClipDataset(store=ucla, config=config, indices=np.arange(0, 1484, 25))
    test = ClipDataset(store=ucla, config=config, indices=np.arange(7, 1484, 50))
    model = small_stgcn()
    model.train()
    before = buffers(model)
    out = knn_monitor(model, train, test, ks=(1, 5), batch_size=32)
    assert set(out) == {"knn_top1@1", "knn_top1@5"}
    assert all(0.0 <= v <= 1.0 for v in out.values())
    assert model.training and all(torch.equal(before[k], v) for k, v in buffers(model).items())
    assert set(knn_monitor(model, train, test, batch_size=32)) == {"knn_top1@20"}  # the default k


def test_raw_joint_knn_on_nw_ucla_cross_view_is_far_above_chance(ucla: SkeletonStore) -> None:
    """Cosine kNN on flattened test-time clips (views 1+2 → view 3): ≈ 56 % at k = 1 against 10 % chance.

    95 of the 464 view-3 clips duplicate a view-2 training clip in this copy of the data (see the importer
    notes); without them the accuracy is still ≈ 45–50 %.
    """
    config = ClipConfig.pstl(train=False, persons=1)
    train = ClipDataset(store=ucla, config=config, split="xview", part="train")
    test = ClipDataset(store=ucla, config=config, split="xview", part="test")
    assert (len(train), len(test)) == (1020, 464)
    xtr, ytr, _ = extract_features(Flatten(), train, batch_size=256)
    xte, yte, _ = extract_features(Flatten(), test, batch_size=256)
    assert xtr.shape == (1020, 50 * 20 * 3)
    assert np.array_equal(xte[5], test.clip(5).reshape(-1))
    acc = knn_accuracy(xtr, ytr, xte, yte)
    majority = np.bincount(yte).max() / len(yte)
    assert majority < 0.15
    assert acc[1] > 0.45 and min(acc.values()) > 0.35, acc
    duplicate = np.array(
        [any(np.array_equal(x, y) for y in xtr[ytr == label]) for x, label in zip(xte, yte, strict=True)]
    )
    assert duplicate.sum() == 95
    fresh = knn_accuracy(xtr, ytr, xte[~duplicate], yte[~duplicate])
    assert min(fresh.values()) > 0.35, fresh
