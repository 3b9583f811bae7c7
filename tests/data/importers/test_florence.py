"""Florence 3D Actions importer on the real ``.mat`` files and on edited copies of them."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from skelssl.data.importers import get_importer_class
from skelssl.data.importers.base import TaskResult
from skelssl.data.importers.florence import FLORENCE_CLASSES, Florence3DImporter
from skelssl.errors import BadInputError
from skelssl.skeleton.layouts import get_layout

DATA = "skeletal_data.mat"


@pytest.fixture(scope="module")
def florence(shared_data: Path) -> Path:
    return shared_data / "florence3d"


@pytest.fixture(scope="module")
def raw(florence: Path) -> np.ndarray:
    """The struct cells as scipy reads them (independent of the importer)."""
    return scipy.io.loadmat(florence / DATA)["skeletal_data"].reshape(-1)


@pytest.fixture(scope="module")
def imported(florence: Path) -> TaskResult:
    importer = Florence3DImporter(florence)
    (task,) = importer.tasks()
    return importer.run(task)


@pytest.fixture
def copy(tmp_path: Path, florence: Path) -> Path:
    return Path(shutil.copytree(florence, tmp_path / "florence3d"))


def _run(folder: Path) -> TaskResult:
    importer = Florence3DImporter(folder)
    return importer.run(importer.tasks()[0])


def _one(result: TaskResult):
    assert len(result.rejected) == 1, result.rejected
    return result.rejected[0]


def _edit(copy: Path, edit) -> None:
    """Load the real skeletal_data.mat, apply ``edit`` to its (215,) cells, write it back."""
    table = scipy.io.loadmat(copy / DATA)["skeletal_data"]
    edit(table.reshape(-1))
    scipy.io.savemat(copy / DATA, {"skeletal_data": table})


# --------------------------------------------------------------------------------------- real data
def test_registry() -> None:
    assert get_importer_class("florence3d") is Florence3DImporter


def test_counts(imported: TaskResult) -> None:
    seqs = imported.sequences
    assert len(seqs) == 215 and not imported.rejected  # SOURCE.txt: 215 sequences
    lengths = [s.keypoints.shape[0] for s in seqs]
    assert (min(lengths), max(lengths)) == (8, 35)  # SOURCE.txt: T = 8..35
    assert {s.fields["subjects"] for s in seqs} == set(range(1, 11))
    assert set(Counter(s.label for s in seqs)) == set(range(9))
    assert len({s.name for s in seqs}) == 215
    assert all(s.keypoints.shape[1:] == (1, 15, 3) and s.keypoints.dtype == np.float32 for s in seqs)


def test_values_equal_raw_mat(imported: TaskResult, raw: np.ndarray) -> None:
    for i in (0, 17, 214):
        cell = raw[i]
        coords = cell["original_skeletal_data"][0, 0]  # (3, 15, T): rows x, depth, height
        seq = imported.sequences[i]
        assert seq.label == int(cell["action"][0, 0][0, 0]) - 1
        assert seq.fields == {"subjects": int(cell["subject"][0, 0][0, 0])}
        np.testing.assert_allclose(seq.keypoints[:, 0, :, 0], coords[0].T, rtol=1e-6)  # x
        np.testing.assert_allclose(seq.keypoints[:, 0, :, 1], coords[2].T, rtol=1e-6)  # y = height
        np.testing.assert_allclose(seq.keypoints[:, 0, :, 2], coords[1].T, rtol=1e-6)  # z = depth
    assert imported.sequences[0].name == "v001_s01_a01"
    assert imported.sequences[0].keypoints[0, 0, 0, 1] == pytest.approx(0.541, abs=1e-3)  # head height


def test_raw_axes_option(florence: Path, raw: np.ndarray) -> None:
    importer = Florence3DImporter(florence, raw_axes=True)
    seq = importer.run(importer.tasks()[0]).sequences[5]
    np.testing.assert_allclose(
        seq.keypoints[:, 0], raw[5]["original_skeletal_data"][0, 0].transpose(2, 1, 0), rtol=1e-6
    )


def test_class_names_match_action_names_mat(florence: Path) -> None:
    names = scipy.io.loadmat(florence / "action_names.mat")["action_names"].reshape(-1)
    assert list(FLORENCE_CLASSES) == [str(n[0]) for n in names]
    assert Florence3DImporter(florence).class_names() == list(FLORENCE_CLASSES)


def test_splits_equal_mat(florence: Path) -> None:
    splits = Florence3DImporter(florence).splits()
    mat = scipy.io.loadmat(florence / "tr_te_splits.mat")
    assert sorted(splits, key=lambda k: int(k[5:])) == [f"split{k}" for k in range(1, 11)]
    for k in range(10):
        assert splits[f"split{k + 1}"] == {
            "by": "subjects",
            "train": sorted(mat["tr_subjects"][k].tolist()),
            "test": sorted(mat["te_subjects"][k].tolist()),
        }
    assert splits["split1"]["train"] == [3, 4, 5, 6, 10]


def test_joint_order_matches_body_model(florence: Path, imported: TaskResult) -> None:
    """florence15's bones are body_model.mat's bones, and the data agree: head above neck above torso,
    knees above ankles, left/right bones of equal length, subject's left at smaller x (Kinect camera space)."""
    layout = get_layout("florence15")
    bones = scipy.io.loadmat(florence / "body_model.mat")["body_model"][0, 0]["bones"] - 1  # 1-based (a, b)
    assert {frozenset(map(int, b)) for b in bones} == {frozenset(e) for e in layout.edges}
    assert (
        int(scipy.io.loadmat(florence / "body_model.mat")["body_model"][0, 0]["left_hip_index"][0, 0]) - 1
        == layout.left_hip
    )
    x = np.concatenate([s.keypoints[:, 0] for s in imported.sequences])
    y = x[..., 1]
    for upper, lower in [
        ("head", "neck"),
        ("neck", "torso"),
        ("left_knee", "left_ankle"),
        ("right_knee", "right_ankle"),
    ]:
        assert (y[:, layout.index(upper)] > y[:, layout.index(lower)]).mean() > 0.95
    length = {e: np.linalg.norm(x[:, e[0]] - x[:, e[1]], axis=-1).mean() for e in layout.edges}
    for a, b in layout.pairs:
        assert 0.9 < length[a, layout.parents[a]] / length[b, layout.parents[b]] < 1.1
    assert (x[:, layout.left_shoulder, 0] < x[:, layout.right_shoulder, 0]).mean() > 0.9


# --------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "not a readable MATLAB"),  # truncated real file
        (b"\x00\x01garbage\xff" * 100, "not a readable MATLAB"),
        (b"", "empty"),
    ],
)
def test_unreadable_mat(copy: Path, content: bytes | None, words: str) -> None:
    path = copy / DATA
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content is None else content)
    result = _run(copy)
    assert not result.sequences and words in _one(result).reason and _one(result).path == str(path)


def test_missing_variable(copy: Path) -> None:
    scipy.io.savemat(copy / DATA, {"something_else": np.zeros((3, 3))})
    assert "no variable 'skeletal_data'" in _one(_run(copy)).reason
    scipy.io.savemat(copy / DATA, {"skeletal_data": np.zeros((3, 3))})
    assert "struct array" in _one(_run(copy)).reason


def _set(field: str, i: int, value) -> callable:
    def edit(cells: np.ndarray) -> None:
        cells[i][field][0, 0] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda c: _set("original_skeletal_data", 3, c[3]["original_skeletal_data"][0, 0][:, :14])(c), "(3, 15, T)"),
        (lambda c: _set("original_skeletal_data", 3, np.zeros((3, 15, 0)))(c), "no frames"),
        (lambda c: _set("action", 3, np.array([[10]], dtype=np.uint8))(c), "unknown action 10"),
        (lambda c: _set("action", 3, np.array([[0]], dtype=np.uint8))(c), "positive integer"),
        (lambda c: _set("subject", 3, np.array([[1.5]]))(c), "positive integer"),
        (lambda c: _set("subject", 3, np.array(["x"]))(c), "expected one number"),
        (lambda c: _set("original_skeletal_data", 3, np.zeros((3, 15, 9)))(c), "every coordinate is zero"),
    ],
)
def test_bad_record_rejected_alone(copy: Path, edit, words: str) -> None:
    _edit(copy, edit)
    result = _run(copy)
    bad = _one(result)
    assert "skeletal_data(4)" in bad.reason and words in bad.reason
    assert len(result.sequences) == 214 and not any(s.name.startswith("v004") for s in result.sequences)


def test_nan_record_rejected(copy: Path) -> None:
    def edit(cells: np.ndarray) -> None:
        coords = cells[100]["original_skeletal_data"][0, 0]
        coords[1, 4, 2] = np.nan

    _edit(copy, edit)
    result = _run(copy)
    assert "skeletal_data(101)" in _one(result).reason and "NaN" in _one(result).reason
    assert len(result.sequences) == 214


def test_missing_field_rejected(copy: Path) -> None:
    table = scipy.io.loadmat(copy / DATA)["skeletal_data"]
    cell = table[7, 0]
    dtype = [("original_skeletal_data", object), ("action", object)]
    table[7, 0] = np.array([[(cell["original_skeletal_data"][0, 0], cell["action"][0, 0])]], dtype=dtype)
    scipy.io.savemat(copy / DATA, {"skeletal_data": table})
    result = _run(copy)
    assert "skeletal_data(8): has no field 'subject'" in _one(result).reason


def test_unusable_inputs_raise(copy: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        Florence3DImporter(tmp_path / "nowhere").tasks()
    scipy.io.savemat(copy / "tr_te_splits.mat", {"tr_subjects": np.array([[1, 2]]), "te_subjects": np.array([[2, 3]])})
    with pytest.raises(BadInputError, match="both in tr_subjects and te_subjects"):
        Florence3DImporter(copy).tasks()
    scipy.io.savemat(
        copy / "tr_te_splits.mat", {"tr_subjects": np.array([[1, 2]]), "te_subjects": np.array([[0.5, 3]])}
    )
    with pytest.raises(BadInputError, match="positive integers"):
        Florence3DImporter(copy).tasks()
    (copy / "tr_te_splits.mat").unlink()
    assert Florence3DImporter(copy).splits() == {}
    assert len(Florence3DImporter(copy / DATA).tasks()) == 1  # the .mat itself as --input


def test_prepare_store_end_to_end(florence: Path, tmp_path: Path, raw: np.ndarray) -> None:
    from skelssl.data.prepare import prepare_store
    from skelssl.data.store import SkeletonStore

    summary = prepare_store(Florence3DImporter(florence), tmp_path / "store")
    assert summary.num_sequences == 215 and not summary.rejected
    store = SkeletonStore.open(tmp_path / "store")
    assert store.layout.name == "florence15" and store.num_persons == 1
    test = store.split_indices("split1", "test")
    assert set(store.field("subjects")[test].tolist()) == {1, 2, 7, 8, 9}
    coords = raw[214]["original_skeletal_data"][0, 0]
    np.testing.assert_allclose(store[214].keypoints[:, 0, :, 1], coords[2].T, rtol=1e-6)
