"""The bring-your-own ``.npz`` importer, on files built from real NW-UCLA sequences."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skelssl.data.importers import get_importer_class
from skelssl.data.importers.base import MAX_BODIES, TaskResult
from skelssl.data.importers.generic import GenericImporter
from skelssl.errors import BadInputError, ConfigError
from skelssl.skeleton.layouts import get_layout
from tests.data.importers.fuzzing import BINARY_EDITS, CUTS, DEADLINE, bounded, check_outcome, mutate


@pytest.fixture(scope="module")
def real(shared_data: Path) -> dict[str, np.ndarray]:
    """40 real NW-UCLA sequences (every 37th file) as generic-format arrays, parsed here with json."""
    files = sorted((shared_data / "nw-ucla" / "all_sqe").glob("*.json"))[::37][:40]
    seqs = [json.loads(p.read_text()) for p in files]
    arrays = [np.asarray(s["skeletons"], dtype=np.float32)[:, None] for s in seqs]  # (T, 1, 20, 3)
    names = [s["file_name"] for s in seqs]
    return {
        "keypoints": np.concatenate(arrays),
        "lengths": np.array([len(a) for a in arrays]),
        "labels": np.array([s["label"] - 1 for s in seqs]),
        "names": np.array(names),
        "subjects": np.array([int(n[5:7]) for n in names]),
        "views": np.array([f"v{n[-2:]}" for n in names]),
        "split": np.array(["test" if n.endswith("v03") else "train" for n in names]),
        "class_names": np.array([f"action {k}" for k in range(10)]),
        "layout": np.array("kinect20"),
    }


def _write(path: Path, members: dict[str, np.ndarray], *, compressed: bool = False) -> Path:
    (np.savez_compressed if compressed else np.savez)(path, **members)
    return path


def _import(importer: GenericImporter) -> TaskResult:
    total = TaskResult()
    for task in importer.tasks():
        result = importer.run(task)
        total.sequences += result.sequences
        total.rejected += result.rejected
    return total


def _check_round_trip(result: TaskResult, real: dict[str, np.ndarray]) -> None:
    assert result.rejected == []
    assert [s.name for s in result.sequences] == list(real["names"])
    offsets = np.concatenate([[0], np.cumsum(real["lengths"])])
    for i, seq in enumerate(result.sequences):
        np.testing.assert_array_equal(seq.keypoints, real["keypoints"][offsets[i] : offsets[i + 1]])
        assert seq.label == real["labels"][i]
        assert seq.fields == {
            "subjects": int(real["subjects"][i]),
            "views": str(real["views"][i]),
            "split": str(real["split"][i]),
        }


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("chunk", [7, 512])
def test_round_trip(real: dict, tmp_path: Path, compressed: bool, chunk: int) -> None:
    path = _write(tmp_path / "data.npz", real, compressed=compressed)
    importer = GenericImporter(path, chunk=str(chunk))
    assert get_importer_class("generic") is GenericImporter
    assert importer.layout == "kinect20" and importer.num_persons == 1
    assert importer.class_names() == [f"action {k}" for k in range(10)]
    assert importer.splits() == {"default": {"by": "split", "train": ["train"], "test": ["test"]}}
    tasks = importer.tasks()
    assert len(tasks) == (1 if compressed else -(-40 // chunk))
    assert tasks[0][0] == 0 and tasks[-1][1] == 40
    _check_round_trip(_import(importer), real)


def test_stored_keypoints_are_memory_mapped(real: dict, tmp_path: Path) -> None:
    path = _write(tmp_path / "data.npz", real)
    importer = GenericImporter(path)
    seq = importer.run(importer.tasks()[0]).sequences[0]
    base = seq.keypoints
    while base.base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)  # a view of the file, not a second copy


def test_minimal_file_and_layout_option(real: dict, tmp_path: Path) -> None:
    minimal = {k: real[k] for k in ("keypoints", "lengths", "labels")}
    path = _write(tmp_path / "min.npz", minimal)
    with pytest.raises(BadInputError, match="pass layout=NAME"):
        GenericImporter(path).tasks()
    importer = GenericImporter(path, layout="kinect20")
    result = _import(importer)
    assert [s.name for s in result.sequences][:2] == ["seq_000000", "seq_000001"]
    assert all(s.fields == {} for s in result.sequences)
    assert importer.splits() == {}
    assert importer.class_names() == [f"class_{k:03d}" for k in range(int(real["labels"].max()) + 1)]
    assert importer.describe()["layout_from"] == "option"
    with pytest.raises(ConfigError):
        GenericImporter(path, layout="nope")


def test_layout_conflicts_and_mismatch(real: dict, tmp_path: Path) -> None:
    path = _write(tmp_path / "data.npz", real)
    assert GenericImporter(path, layout="kinect20").layout == "kinect20"  # agreeing option is fine
    with pytest.raises(BadInputError, match="the file says layout 'kinect20' but layout='ntu25'"):
        GenericImporter(path, layout="ntu25").tasks()
    path = _write(tmp_path / "other.npz", {**real, "layout": np.array("ntu25")})
    with pytest.raises(BadInputError, match="20 joints but the layout has 25"):
        GenericImporter(path).tasks()
    path = _write(tmp_path / "unknown.npz", {**real, "layout": np.array("kinect21")})
    with pytest.raises(BadInputError, match="unknown layout 'kinect21'"):
        GenericImporter(path).tasks()


def _bad(real: dict, tmp_path: Path, **changes: np.ndarray | None) -> str:
    members = {k: v for k, v in {**real, **changes}.items() if v is not None}
    path = _write(tmp_path / "bad.npz", members)
    with pytest.raises(BadInputError) as info:
        GenericImporter(path).tasks()
    assert info.value.path == str(path)
    return info.value.reason


def test_refuses_inconsistent_files(real: dict, tmp_path: Path) -> None:
    lengths = real["lengths"]
    assert "sum to" in _bad(real, tmp_path, lengths=lengths + 1)
    assert "not positive" in _bad(real, tmp_path, lengths=np.concatenate([[0, lengths[0]], lengths[1:]]))
    assert "not positive" in _bad(real, tmp_path, lengths=np.concatenate([[-3, lengths[0] + 3], lengths[1:]]))
    assert "integer" in _bad(real, tmp_path, lengths=lengths.astype(float))
    assert "negative" in _bad(real, tmp_path, labels=real["labels"] - 1)
    assert "only 10 class_names" in _bad(real, tmp_path, labels=real["labels"] + 5)
    assert "entries, lengths has 40" in _bad(real, tmp_path, labels=real["labels"][:-1])
    assert "repeats" in _bad(real, tmp_path, names=np.array(["same"] * 40))
    assert "entries" in _bad(real, tmp_path, subjects=real["subjects"][:10])
    assert "entries" in _bad(real, tmp_path, views=real["views"][:39])
    assert "'train' or 'test'" in _bad(real, tmp_path, split=np.where(real["split"] == "test", "val", "train"))
    assert "str array" in _bad(real, tmp_path, names=np.arange(40))
    assert "keypoints has 21 joints" in _bad(
        real, tmp_path, keypoints=np.pad(real["keypoints"], ((0, 0),) * 2 + ((0, 1), (0, 0)))
    )
    assert "expected (total_frames, M, V, C)" in _bad(real, tmp_path, keypoints=real["keypoints"][:, 0])
    assert "float32 or float64" in _bad(real, tmp_path, keypoints=real["keypoints"].astype(np.int32))
    assert "4 coordinates" in _bad(real, tmp_path, keypoints=np.pad(real["keypoints"], ((0, 0),) * 3 + ((0, 1),)))
    assert "missing member(s) lengths" in _bad(real, tmp_path, lengths=None)
    assert "did you mean 'subjects'" in _bad(real, tmp_path, subject=real["subjects"])
    assert "holds no sequences" in _bad(
        real,
        tmp_path,
        lengths=np.zeros(0, int),
        labels=np.zeros(0, int),
        keypoints=real["keypoints"][:0],
        names=None,
        subjects=None,
        views=None,
        split=None,
    )


def test_refuses_object_arrays(real: dict, tmp_path: Path) -> None:
    names = np.array(list(real["names"]), dtype=object)  # np.savez pickles object arrays
    reason = _bad(real, tmp_path, names=names)
    assert "object array" in reason and "'names'" in reason


def test_bad_sequences_are_rejected_one_by_one(real: dict, tmp_path: Path) -> None:
    keypoints = real["keypoints"].copy()
    offsets = np.concatenate([[0], np.cumsum(real["lengths"])])
    keypoints[offsets[3] + 1, 0, 4, 2] = np.nan
    keypoints[offsets[5] : offsets[6]] = 0
    path = _write(tmp_path / "data.npz", {**real, "keypoints": keypoints})
    result = _import(GenericImporter(path, chunk="4"))
    assert len(result.sequences) == 38
    reasons = {r.reason.split(":")[0]: r.reason for r in result.rejected}
    assert f"sequence 3 ({real['names'][3]})" in reasons and "NaN" in reasons[f"sequence 3 ({real['names'][3]})"]
    assert "every coordinate is zero" in reasons[f"sequence 5 ({real['names'][5]})"]
    assert all(r.path == str(path) for r in result.rejected)


def test_truncated_and_garbage_files(real: dict, tmp_path: Path) -> None:
    path = _write(tmp_path / "data.npz", real)
    blob = path.read_bytes()
    importer = GenericImporter(path, chunk="8")
    tasks = importer.tasks()
    path.write_bytes(blob[: len(blob) // 2])  # the file shrinks after tasks() was computed
    for task in tasks:
        result = importer.run(task)
        assert result.sequences == [] or all(np.isfinite(s.keypoints).all() for s in result.sequences)
    for data in (blob[: len(blob) // 2], blob[:100], b"not a zip", b""):
        path.write_bytes(data)
        with pytest.raises(BadInputError):
            GenericImporter(path).tasks()
    with pytest.raises(BadInputError, match="no such file"):
        GenericImporter(tmp_path / "missing.npz").tasks()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 100_000), pos=st.integers(0, 100_000), value=st.integers(0, 255))
def test_mangled_files_only_raise_bad_input(real: dict, tmp_path: Path, cut: int, pos: int, value: int) -> None:
    blob = bytearray(_write(tmp_path / "ok.npz", real).read_bytes())
    blob[pos % len(blob)] = value
    path = tmp_path / "mangled.npz"
    path.write_bytes(bytes(blob[: len(blob) - cut % 200]))
    importer = GenericImporter(path)
    try:
        tasks = importer.tasks()
    except BadInputError:
        return
    for task in tasks:
        importer.run(task)


def test_importer_pickles_small_and_prepares_with_workers(real: dict, tmp_path: Path) -> None:
    path = _write(tmp_path / "data.npz", real)
    importer = GenericImporter(path, chunk="10")
    importer.tasks()
    assert len(pickle.dumps(importer)) < 100_000
    prepare = pytest.importorskip("skelssl.data.prepare")
    store_mod = pytest.importorskip("skelssl.data.store")
    summary = prepare.prepare_store(importer, tmp_path / "store", workers=2)
    assert summary.num_sequences == 40
    store = store_mod.SkeletonStore.open(tmp_path / "store")
    assert list(store.names) == list(real["names"])
    assert len(store.split_indices("default", "test")) == int((real["split"] == "test").sum())
    np.testing.assert_array_equal(store[7].keypoints, _import(GenericImporter(path)).sequences[7].keypoints)


def test_absurd_label_is_refused_without_allocating(real: dict, tmp_path: Path) -> None:
    """A label of 10**12 used to make the importer synthesise 10**12 class names (memory exhausted)."""
    labels = real["labels"].copy()
    labels[3] = 10**12
    reason = bounded(lambda: _bad(real, tmp_path, labels=labels, class_names=None))
    assert "labels[3] = 1000000000000 is not a plausible class index" in reason


@settings(max_examples=30, deadline=DEADLINE, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(compressed=st.booleans(), edits=BINARY_EDITS, cut=CUTS)
def test_header_and_count_mutations_only_raise_bad_input(real: dict, tmp_path: Path, compressed, edits, cut) -> None:
    """Claims in the zip and .npy headers (sizes, shapes, dtypes), not only random flips: BadInputError or data."""
    path = _write(tmp_path / "m.npz", real, compressed=compressed)
    path.write_bytes(mutate(path.read_bytes(), edits, cut))
    importer = GenericImporter(path)
    try:
        tasks = importer.tasks()
        layout = importer.layout
    except BadInputError as err:
        assert err.path == str(path)
        return
    for task in tasks:
        check_outcome(importer.run(task), [path], joints=get_layout(layout).num_joints, persons=MAX_BODIES)
