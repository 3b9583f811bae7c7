from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore, StoreWriter, _npy_header
from skelssl.errors import StoreError

from ._toy import ToyImporter


@pytest.fixture(scope="module")
def ucla_files(shared_data: Path) -> list[Path]:
    root = shared_data / "nw-ucla" / "all_sqe"
    names = ["a01_s01_e00_v01", "a01_s01_e00_v02", "a02_s03_e01_v03", "a12_s10_e04_v03", "a06_s05_e02_v01"]
    return [root / f"{n}.json" for n in names]


@pytest.fixture(scope="module")
def toy_store(ucla_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "toy"
    prepare_store(ToyImporter(ucla_files), out)
    return out


def test_store_round_trips_real_values(toy_store: Path, ucla_files: list[Path]) -> None:
    store = SkeletonStore.open(toy_store)
    assert len(store) == len(ucla_files)
    for i, path in enumerate(ucla_files):
        raw = json.loads(path.read_text())
        seq = store[i]
        assert seq.name == raw["file_name"]
        assert seq.label == raw["label"] - 1
        assert seq.keypoints.shape == (len(raw["skeletons"]), 2, 20, 3)
        np.testing.assert_array_equal(seq.keypoints[:, 0], np.asarray(raw["skeletons"], dtype=np.float32))
        assert not seq.keypoints[:, 1].any()  # the absent second person is zero
        assert seq.fields["views"] == int(raw["file_name"][-2:])
    assert store.field("tag").dtype.kind == "U"
    assert store.field("views").dtype == np.int64
    assert store.lengths.sum() == store.meta["total_frames"]


def test_store_is_memory_mapped_and_reads_are_private(toy_store: Path) -> None:
    store = SkeletonStore.open(toy_store)
    assert isinstance(store.memmap, np.memmap)
    with pytest.raises(ValueError):
        store.memmap[0, 0, 0, 0] = 1.0
    kp = store.keypoints(1)
    np.testing.assert_array_equal(kp, store.memmap[store.offsets[1] : store.offsets[1] + store.lengths[1]])
    kp[:] = 7.0  # the caller's copy: the store is untouched
    assert not (store.keypoints(1) == 7.0).all()


def test_store_pickles_as_a_reference(toy_store: Path) -> None:
    import pickle

    store = SkeletonStore.open(toy_store)
    blob = pickle.dumps(store)
    assert len(blob) < 20_000  # path + index, never the keypoints
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.keypoints(2), store.keypoints(2))
    clone.close()
    np.testing.assert_array_equal(clone.keypoints(2), store.keypoints(2))  # reopens after close


def test_splits(toy_store: Path) -> None:
    store = SkeletonStore.open(toy_store)
    views = store.field("views")
    train, test = store.split_indices("xview", "train"), store.split_indices("xview", "test")
    assert set(views[train]) <= {1, 2} and set(views[test]) == {3}
    assert sorted([*train, *test]) == list(range(len(store)))
    assert set(views[store.split_indices("explicit", "test")]) == {3}
    assert store.split_parts("xview") == ["train", "test"]
    with pytest.raises(StoreError, match="did you mean 'xview'"):
        store.split_indices("xveiw", "train")
    with pytest.raises(StoreError, match="no part 'val'"):
        store.split_indices("xview", "val")


def test_iteration_and_indexing(toy_store: Path) -> None:
    store = SkeletonStore.open(toy_store)
    names = [s.name for s in store]
    assert names == list(store.names)
    assert store[-1].name == names[-1]
    with pytest.raises(IndexError):
        store[len(store)]


@pytest.mark.parametrize("victim", ["meta.json", "index.npz", "keypoints.npy"])
def test_missing_files_are_named(toy_store: Path, tmp_path: Path, victim: str) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(toy_store, copy)
    (copy / victim).unlink()
    with pytest.raises(StoreError, match=victim.replace(".", r"\.")):
        SkeletonStore.open(copy)


def test_truncated_keypoints_detected(toy_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(toy_store, copy)
    kp = copy / "keypoints.npy"
    data = kp.read_bytes()
    kp.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match=r"keypoints\.npy"):
        SkeletonStore.open(copy)


def test_newer_format_refused(toy_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(toy_store, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["version"] = 99
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="upgrade skelssl"):
        SkeletonStore.open(copy)


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="skelssl prepare"):
        SkeletonStore.open(tmp_path / "nothing")
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable"):
        SkeletonStore.open(tmp_path)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 9), st.integers(1, 2), st.integers(0, 3)), min_size=1, max_size=8),
)
def test_writer_reader_round_trip(tmp_path_factory: pytest.TempPathFactory, seqs: list[tuple[int, int, int]]) -> None:
    d = tmp_path_factory.mktemp("w")
    rng = np.random.default_rng(len(seqs))
    w = StoreWriter(d, num_persons=2, num_joints=4, channels=3)
    arrays = []
    for i, (t, m, label) in enumerate(seqs):
        kp = rng.normal(size=(t, m, 4, 3)).astype(np.float32)
        arrays.append(kp)
        w.add(f"s{i}", kp, label, {"subjects": i % 3})
    w.finish(
        {
            "format": "skelssl-store",
            "version": 1,
            "layout": "ntu25",
            "num_persons": 2,
            "num_joints": 4,
            "channels": 3,
            "class_names": ["a", "b", "c", "d"],
            "source": "test",
        }
    )
    store = SkeletonStore(
        d,
        json.loads((d / "meta.json").read_text()),
        dict(np.load(d / "index.npz")),
        np.load(d / "keypoints.npy", mmap_mode="r"),
    )
    store._check()
    for i, kp in enumerate(arrays):
        got = store.keypoints(i)
        np.testing.assert_array_equal(got[:, : kp.shape[1]], kp)
        assert not got[:, kp.shape[1] :].any()
        assert store.labels[i] == seqs[i][2]


def test_npy_header_is_valid_and_fixed_size() -> None:
    for shape in [(0, 2, 25, 3), (10**12, 2, 25, 3)]:
        header = _npy_header(shape)
        assert len(header) == 256 and len(header) % 64 == 0


def test_writer_refuses_misfit_sequences(tmp_path: Path) -> None:
    w = StoreWriter(tmp_path, num_persons=2, num_joints=4, channels=3)
    with pytest.raises(StoreError, match="does not fit"):
        w.add("x", np.zeros((3, 3, 4, 3), np.float32), 0, {})
    with pytest.raises(StoreError, match="does not fit"):
        w.add("x", np.zeros((3, 1, 5, 3), np.float32), 0, {})
    w.add("ok", np.ones((3, 1, 4, 3), np.float32), 0, {"a": 1})
    with pytest.raises(StoreError, match="fields"):
        w.add("y", np.ones((3, 1, 4, 3), np.float32), 0, {"b": 1})
    w.abort()
