"""Florence 3D Actions importer on the real ``.mat`` files and on edited copies of them."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from hypothesis import given, settings

from skelssl.data.importers import get_importer_class
from skelssl.data.importers.base import TaskResult
from skelssl.data.importers.florence import FLORENCE_CLASSES, Florence3DImporter, load_mat
from skelssl.data.importers.matv5 import check_mat_v5
from skelssl.errors import BadInputError
from skelssl.skeleton.layouts import get_layout
from tests.data.importers.fuzzing import BINARY_EDITS, CUTS, FUZZ, bounded, check_outcome, mutate

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


# --------------------------------------------------------------------------------------- fuzzing (hypothesis)
# The importer reads only the .mat packaging (there is no Florence text format to decode).
@pytest.fixture(scope="module")
def fuzz_mats(tmp_path_factory: pytest.TempPathFactory, florence: Path, raw: np.ndarray) -> tuple[Path, bytes, bytes]:
    """(folder, the real compressed skeletal_data.mat bytes, an uncompressed 6-record copy whose tags are visible)."""
    folder = tmp_path_factory.mktemp("florence_fuzz")
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"skeletal_data": raw[:6].reshape(6, 1)}, do_compression=False)
    return folder, (florence / DATA).read_bytes(), buffer.getvalue()


def _run_bytes(folder: Path, data: bytes) -> TaskResult:
    path = folder / DATA
    path.write_bytes(data)
    result = Florence3DImporter(folder).run(str(path))
    check_outcome(result, [path], joints=15, persons=1)
    return result


@FUZZ
@given(edits=BINARY_EDITS, cut=CUTS)
def test_mutated_uncompressed_mat_is_rejected_not_raised(fuzz_mats, edits, cut) -> None:
    folder, _, small = fuzz_mats
    result = _run_bytes(folder, mutate(small, edits, cut))
    assert len(result.sequences) <= 6 and len(result.sequences) + len(result.rejected) >= 1


@settings(parent=FUZZ, max_examples=15)
@given(edits=BINARY_EDITS, cut=CUTS)
def test_mutated_real_mat_is_rejected_not_raised(fuzz_mats, edits, cut) -> None:
    folder, real, _ = fuzz_mats
    result = _run_bytes(folder, mutate(real, edits, cut))
    assert len(result.sequences) <= 215 and len(result.sequences) + len(result.rejected) >= 1


def test_absurd_claims_in_mat_are_rejected_without_allocating(fuzz_mats, raw: np.ndarray) -> None:
    """Array dimensions and element byte counts claiming gigabytes: refused at once, nothing allocated from them."""
    folder, _, small = fuzz_mats
    frames = raw[0]["original_skeletal_data"][0, 0].shape[2]
    dims = struct.pack("<II", 5, 12) + struct.pack("<iii", 3, 15, frames)  # miINT32 dims tag of record 1's coords
    at = small.index(dims)
    data_tag = at + len(dims) + 4  # (dims padded to 8 bytes) then the data element's tag: type, byte count
    cases = {
        "frames 2**31-1": small[: at + 16] + struct.pack("<i", 2**31 - 1) + small[at + 20 :],
        "joints 10**9": small[: at + 12] + struct.pack("<i", 10**9) + small[at + 16 :],
        "data bytes 2**31-8": small[: data_tag + 4] + struct.pack("<I", 2**31 - 8) + small[data_tag + 8 :],
        "data bytes 2**32-8": small[: data_tag + 4] + struct.pack("<I", 2**32 - 8) + small[data_tag + 8 :],
    }
    for name, data in cases.items():
        result = bounded(_run_bytes, folder, data)
        assert result.rejected, name
        assert not any(s.name.startswith("v001") for s in result.sequences), name
    # a negative frame count: scipy reads the element's own byte count, so the data (3, 15, T) comes back intact
    negative = small[: at + 16] + struct.pack("<i", -5) + small[at + 20 :]
    first = _run_bytes(folder, negative).sequences[0]
    assert first.name.startswith("v001") and first.keypoints.shape == (frames, 1, 15, 3)


# --------------------------------------------------------------------------------------- v5 structure check
def _mat(variables: dict, compress: bool) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, do_compression=compress)
    return buffer.getvalue()


def _recompress(data: bytes, edit) -> bytes:
    """``data`` (one compressed variable) with ``edit`` applied to the variable's inflated bytes."""
    mdtype, size = struct.unpack("<II", data[128:136])
    assert mdtype == 15
    inner = edit(zlib.decompress(data[136 : 136 + size]))
    packed = zlib.compress(inner)
    return data[:128] + struct.pack("<II", 15, len(packed)) + packed + data[136 + size :]


def test_real_and_saved_files_pass_the_check(florence: Path) -> None:
    for path in sorted(florence.glob("*.mat")):
        check_mat_v5(path, path.read_bytes())
    every_class = {
        "num": np.arange(12.0).reshape(3, 4), "cplx": np.arange(3) + 1j, "text": "hi", "chars": np.array(["ab", "cd"]),
        "cell": np.array([[np.arange(3), "x"]], dtype=object), "st": {"a": 1, "b": np.zeros((2, 2))},
        "structs": np.array([{"x": 1}, {"x": 2}]), "empty": np.zeros((0, 3)), "i8": np.arange(5, dtype=np.int8),
        "u64": np.arange(5, dtype=np.uint64), "logical": np.array([True, False]), "blank": "",
        "sparse": scipy.sparse.csc_matrix(np.eye(4)), "sparse_c": scipy.sparse.csc_matrix(np.eye(4) * 1j),
    }  # fmt: skip
    for compress in (False, True):
        check_mat_v5("x.mat", _mat(every_class, compress))


def _struct_dims(small: bytes, rows: int) -> bytes:
    """An uncompressed file with its (6, 1) array's dimensions claiming (rows, 1)."""
    dims = struct.pack("<IIii", 5, 8, 6, 1)
    at = small.index(dims)
    return small[:at] + struct.pack("<IIii", 5, 8, rows, 1) + small[at + 16 :]


def test_absurd_claims_in_compressed_and_structured_mats(fuzz_mats, raw: np.ndarray) -> None:
    """Claims scipy would allocate before reading: inside a compressed variable, struct and cell dimensions, empty
    char data with huge dimensions. Each refused by the v5 walk, under the allocation bound, naming the file."""
    folder, _, small = fuzz_mats
    packed = _mat({"skeletal_data": raw[:6].reshape(6, 1)}, True)
    frames = raw[0]["original_skeletal_data"][0, 0].shape[2]
    coords = struct.pack("<iii", 3, 15, frames)

    def data_bytes(inner: bytes) -> bytes:  # record 1's coordinate data element claims 2**31 - 8 bytes
        tag = inner.index(coords) + len(coords) + 4
        return inner[: tag + 4] + struct.pack("<I", 2**31 - 8) + inner[tag + 8 :]

    cells = _mat({"c": np.array([[np.arange(3.0), np.arange(2.0)]], dtype=object)}, False)
    cell_dims = struct.pack("<IIii", 5, 8, 1, 2)
    char = _mat({"t": np.zeros((0, 0), dtype="U1")}, False)
    char_dims = struct.pack("<IIii", 5, 8, 0, 0)
    table = np.zeros((6, 1), dtype=[(field, object) for field in "abcde"])
    for field in "abcde":
        for i in range(6):
            table[field][i, 0] = np.arange(3.0)
    structs = _mat({"s": table}, False)
    cases = {
        "compressed data bytes": (_recompress(packed, data_bytes), "claims 2147483640 bytes"),
        "compressed variable": (packed[:132] + struct.pack("<I", 2**31) + packed[136:], "claims 2147483648 bytes"),
        "cell rows 10**9": (_struct_dims(small, 10**9), "cell array at byte 136 claims 1000000000 elements"),
        "cell rows -(2**31)": (_struct_dims(small, -(2**31)), "claims 2147483648 elements"),
        "struct 10**9 x 5": (_struct_dims(structs, 10**9), "claims 1000000000 elements (x 5 fields)"),
        "cell 10**8 x 10": (cells.replace(cell_dims, struct.pack("<IIii", 5, 8, 10**8, 10)), "claims 1000000000"),
        "blank chars": (char.replace(char_dims, struct.pack("<IIii", 5, 8, 2**30, 4)), "holds none"),
    }
    for name, (data, words) in cases.items():
        result = bounded(_run_bytes, folder, data)
        assert not result.sequences and words in _one(result).reason, (name, result.rejected)
        assert _one(result).path == str(folder / DATA)


def test_unknown_data_type_is_refused_before_scipy() -> None:
    """scipy 1.x dereferences a null dtype for numeric data of an unknown element type (the process dies): the
    walk refuses it first."""
    data = _mat({"a": np.arange(3.0)}, False)
    at = data.index(struct.pack("<II", 9, 24))  # miDOUBLE, 24 bytes
    for mdtype in (8, 10, 11, 14, 200):
        bad = data[:at] + struct.pack("<I", mdtype) + data[at + 4 :]
        with pytest.raises(BadInputError, match=f"data type {mdtype}"):
            check_mat_v5("a.mat", bad)
        with pytest.raises(BadInputError, match="not a readable MATLAB"):
            load_mat("a.mat", bad)


def test_deep_nesting_and_v73_are_refused() -> None:
    nested: object = np.arange(2.0)
    for _ in range(70):
        cell = np.empty((1, 1), dtype=object)
        cell[0, 0] = nested
        nested = cell
    data = _mat({"n": nested}, False)
    with pytest.raises(BadInputError, match="nest more than 64 deep"):
        load_mat("n.mat", data)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: HDF5 schema 1.00 .".ljust(116) + bytes(8)
    hdf5 = header + b"\x00\x02IM" + b"\x89HDF\r\n\x1a\n" + bytes(64)
    with pytest.raises(BadInputError, match=r"v7\.3 \(HDF5\).*'-v7'"):
        load_mat("h.mat", hdf5)


def test_v4_claims_stay_bounded(fuzz_mats) -> None:
    """MATLAB v4 files bypass the v5 walk: scipy's v4 reader, given bytes, reads at most what is there."""
    folder, _, _ = fuzz_mats
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"skeletal_data": np.arange(6.0)}, format="4")
    data = buffer.getvalue()
    claimed = data[:4] + struct.pack("<ii", 10**9, 100) + data[12:]  # mrows, ncols
    result = bounded(_run_bytes, folder, claimed)
    assert not result.sequences and "not a readable MATLAB" in _one(result).reason
