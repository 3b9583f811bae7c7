"""PySKL, AimCLR and CTR-GCN importers, on files made from the five genuine NTU ``.skeleton`` samples."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skelssl.data.importers import get_importer_class
from skelssl.data.importers.base import MAX_CLASSES, Importer, Rejected, TaskResult
from skelssl.data.importers.interop import AimCLRImporter, CTRGCNImporter, PySKLImporter
from skelssl.errors import BadInputError, ConfigError
from skelssl.skeleton.layouts import get_layout
from tests.data.importers.fuzzing import (
    ALLOCATION_LIMIT,
    BINARY_EDITS,
    CUTS,
    FUZZ,
    Files,
    bounded,
    check_outcome,
    mutate,
)
from tests.data.test_safe_pickle import _Raw

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]

XSUB_TRAIN = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}


def read_ntu(path: Path) -> np.ndarray:
    """A tiny NTU ``.skeleton`` reader: ``(M, T, 25, 12)`` joint rows, bodies in file order, zeros if absent."""
    tokens = path.read_text().split()
    pos = 0

    def take(n: int) -> list[str]:
        nonlocal pos
        pos += n
        return tokens[pos - n : pos]

    frames = []
    for _ in range(int(take(1)[0])):
        bodies = []
        for _ in range(int(take(1)[0])):
            take(10)  # body info line
            joints = int(take(1)[0])
            bodies.append(np.array(take(12 * joints), dtype=np.float64).reshape(joints, 12))
        frames.append(bodies)
    out = np.zeros((max(len(b) for b in frames), len(frames), 25, 12))
    for t, bodies in enumerate(frames):
        for m, joints in enumerate(bodies):
            out[m, t] = joints
    return out


@pytest.fixture(scope="module")
def ntu(shared_data: Path) -> dict[str, np.ndarray]:
    """name -> (M, T, 25, 12) for the five real samples."""
    folder = shared_data / "ntu60-samples" / "skeletons"
    return {p.stem: read_ntu(p) for p in sorted(folder.glob("*.skeleton"))}


def _label(name: str) -> int:
    return int(name[-3:]) - 1


def _field(name: str, key: str) -> int:
    return int(name[name.index(key) + 1 : name.index(key) + 4])


def _run_all(importer: Importer) -> TaskResult:
    total = TaskResult()
    for task in importer.tasks():
        result = importer.run(task)
        assert result.digest
        total.sequences += result.sequences
        total.rejected += result.rejected
    return total


def test_registry() -> None:
    assert get_importer_class("pyskl") is PySKLImporter
    assert get_importer_class("aimclr") is AimCLRImporter
    assert get_importer_class("ctrgcn") is CTRGCNImporter


def test_tiny_reader_matches_the_file_text(shared_data: Path, ntu: dict) -> None:
    lines = (shared_data / "ntu60-samples" / "skeletons" / "S001C001P001R001A011.skeleton").read_text().splitlines()
    assert ntu["S001C001P001R001A011"].shape == (1, 82, 25, 12)
    np.testing.assert_array_equal(ntu["S001C001P001R001A011"][0, 0, 0], np.array(lines[4].split(), dtype=float))
    assert ntu["S001C003P008R002A058"].shape[0] == 2  # the two-person sample


# ---------------------------------------------------------------------------------------------------- pyskl


def _pyskl(ntu: dict, *, two_d: bool = False) -> dict:
    annotations = []
    for name, raw in ntu.items():
        ann = {"frame_dir": name, "label": _label(name), "total_frames": raw.shape[1], "img_shape": (1080, 1920)}
        if two_d:  # the colour-image pixel coordinates, with the tracking state as a confidence
            ann["keypoint"] = raw[..., 5:7].astype(np.float32)
            ann["keypoint_score"] = (raw[..., 11] / 2).astype(np.float32)
        else:
            ann["keypoint"] = raw[..., :3].astype(np.float32)
        annotations.append(ann)
    names = list(ntu)
    return {
        "split": {
            "xsub_train": [n for n in names if _field(n, "P") in XSUB_TRAIN],
            "xsub_val": [n for n in names if _field(n, "P") not in XSUB_TRAIN],
            "xview_train": [n for n in names if _field(n, "C") in (2, 3)],
            "xview_val": [n for n in names if _field(n, "C") == 1],
            "xset_train": names[:2],  # no partner: reported, not stored
        },
        "annotations": annotations,
    }


def _dump(path: Path, obj: object, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pyskl_round_trip(ntu: dict, tmp_path: Path, protocol: int) -> None:
    data = _pyskl(ntu)
    importer = PySKLImporter(_dump(tmp_path / "ntu.pkl", data, protocol))
    assert importer.tasks() == [str(tmp_path / "ntu.pkl")]
    assert importer.layout == "ntu25" and importer.num_persons == 2
    result = _run_all(importer)
    assert result.rejected == []
    assert [s.name for s in result.sequences] == list(ntu)
    for seq in result.sequences:
        raw = ntu[seq.name]
        np.testing.assert_array_equal(seq.keypoints, raw[..., :3].transpose(1, 0, 2, 3).astype(np.float32))
        assert seq.label == _label(seq.name)
        xsub = "train" if seq.name in data["split"]["xsub_train"] else "test"
        xview = "train" if seq.name in data["split"]["xview_train"] else "test"
        assert seq.fields == {"split_xsub": xsub, "split_xview": xview}
    assert importer.splits() == {
        "xsub": {"by": "split_xsub", "train": ["train"], "test": ["test"]},
        "xview": {"by": "split_xview", "train": ["train"], "test": ["test"]},
    }
    assert importer.class_names() == [f"class_{k:03d}" for k in range(58)]  # labels up to A058
    assert any("xset_train" in note for note in importer.describe()["notes"])


def test_pyskl_class_names_file_and_store(shared_data: Path, ntu: dict, tmp_path: Path) -> None:
    names_file = shared_data / "ntu60-samples" / "metadata" / "label_map_ntu60_mmaction2.txt"
    importer = PySKLImporter(_dump(tmp_path / "ntu.pkl", _pyskl(ntu)), class_names=str(names_file))
    assert len(importer.class_names()) == 60 and importer.class_names()[10] == "reading"
    prepare = pytest.importorskip("skelssl.data.prepare")
    store_mod = pytest.importorskip("skelssl.data.store")
    prepare.prepare_store(importer, tmp_path / "store", workers=1)
    store = store_mod.SkeletonStore.open(tmp_path / "store")
    train = set(store.names[store.split_indices("xsub", "train")])
    assert train == {n for n in ntu if _field(n, "P") in XSUB_TRAIN}
    assert set(store.names[store.split_indices("xview", "test")]) == {n for n in ntu if _field(n, "C") == 1}


def test_pyskl_plain_list_and_train_val_pairs(ntu: dict, tmp_path: Path) -> None:
    data = _pyskl(ntu)
    importer = PySKLImporter(_dump(tmp_path / "list.pkl", data["annotations"]))
    seqs = _run_all(importer).sequences
    assert len(seqs) == 5 and all(s.fields == {} for s in seqs) and importer.splits() == {}
    data["split"] = {"train": list(ntu)[:3], "test": list(ntu)[3:], "val": list(ntu)[4:]}
    importer = PySKLImporter(_dump(tmp_path / "tv.pkl", data))
    assert importer.splits() == {"default": {"by": "split_default", "train": ["train"], "test": ["test"]}}
    assert [s.fields["split_default"] for s in _run_all(importer).sequences] == ["train"] * 3 + ["test"] * 2
    data["split"] = {"xsub_train": list(ntu)[:2], "xsub_val": list(ntu)[2:3]}
    seqs = _run_all(PySKLImporter(_dump(tmp_path / "part.pkl", data))).sequences
    assert [s.fields["split_xsub"] for s in seqs] == ["train", "train", "test", "none", "none"]


def test_pyskl_persons_scores_and_layouts(ntu: dict, tmp_path: Path) -> None:
    path = _dump(tmp_path / "ntu.pkl", _pyskl(ntu))
    one = PySKLImporter(path, persons="1")
    assert one.num_persons == 1
    two_person = next(s for s in _run_all(one).sequences if s.name == "S001C003P008R002A058")
    np.testing.assert_array_equal(two_person.keypoints[:, 0], ntu[two_person.name][0, ..., :3].astype(np.float32))
    assert two_person.keypoints.shape[1] == 1
    with pytest.raises(BadInputError, match="25 joints but layout=kinect20 has 20"):
        PySKLImporter(path, layout="kinect20").tasks()
    with pytest.raises(ConfigError):
        PySKLImporter(path, persons="0")

    path2d = _dump(tmp_path / "ntu2d.pkl", _pyskl(ntu, two_d=True))
    seq = _run_all(PySKLImporter(path2d)).sequences[0]
    assert seq.keypoints.shape[-1] == 2
    scored = PySKLImporter(path2d, scores="true")
    seq = _run_all(scored).sequences[0]
    raw = ntu[seq.name].transpose(1, 0, 2, 3)
    np.testing.assert_array_equal(seq.keypoints[..., :2], raw[..., 5:7].astype(np.float32))
    np.testing.assert_array_equal(seq.keypoints[..., 2], (raw[..., 11] / 2).astype(np.float32))
    result = _run_all(PySKLImporter(path, scores="true"))  # 3D keypoints cannot take scores
    assert result.sequences == [] and "needs 2D keypoints" in result.rejected[0].reason

    coco = _pyskl(ntu, two_d=True)
    for ann in coco["annotations"]:
        ann["keypoint"] = ann["keypoint"][:, :, :17]
    assert PySKLImporter(_dump(tmp_path / "coco.pkl", coco)).layout == "coco17"
    for ann in coco["annotations"]:
        ann["keypoint"] = ann["keypoint"][:, :, :15]
    with pytest.raises(BadInputError, match="pass layout=NAME"):
        PySKLImporter(_dump(tmp_path / "v15.pkl", coco)).tasks()


def test_pyskl_rejects_bad_annotations(ntu: dict, tmp_path: Path) -> None:
    data = _pyskl(ntu)
    anns = data["annotations"]
    anns[1]["label"] = -1
    anns[2]["total_frames"] = 5
    anns[3]["keypoint"] = anns[3]["keypoint"].copy()
    anns[3]["keypoint"][0, 9, 4, 1] = np.nan
    anns[4]["keypoint"] = np.zeros_like(anns[4]["keypoint"])
    anns += [
        "not a dict",
        {"label": 0, "keypoint": anns[0]["keypoint"]},
        {"frame_dir": "x1", "label": 0, "keypoint": anns[0]["keypoint"][0]},
        {"frame_dir": "x2", "label": "drink", "keypoint": anns[0]["keypoint"]},
        {"frame_dir": "x3", "label": 0, "keypoint": anns[0]["keypoint"][:0]},
        {"frame_dir": "x4", "label": 0, "keypoint": anns[0]["keypoint"][..., :2]},
        {"frame_dir": "x5", "label": 0, "keypoint": anns[0]["keypoint"][:, :, :20]},
    ]
    path = _dump(tmp_path / "bad.pkl", data)
    result = _run_all(PySKLImporter(path))
    assert [s.name for s in result.sequences] == ["S001C001P001R001A011"]
    reasons = [r.reason for r in result.rejected]
    assert all(r.path == str(path) for r in result.rejected)
    expected = [
        "label -1 is not a class index",
        "total_frames 5 but keypoint has",
        "NaN or inf coordinate in frame 9",
        "every coordinate is zero",
        "annotation 5: not a dict",
        "'frame_dir'",
        "(M, T, V, C) array",
        "label 'drink'",
        "has no person",
        "2 channels, the first annotation has 3",
        "has 20 joints",
    ]
    assert len(reasons) == len(expected)
    for reason, needle in zip(reasons, expected, strict=True):
        assert needle in reason, (needle, reason)


def test_pyskl_refuses_unusable_files(ntu: dict, tmp_path: Path) -> None:
    data = _pyskl(ntu)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return os.system, (f"touch {marker}",)

    evil = {**data, "annotations": [*data["annotations"][:2], {"frame_dir": "e", "label": Evil()}]}
    with pytest.raises(BadInputError, match=r"refused to unpickle global 'posix\.system'"):
        PySKLImporter(_dump(tmp_path / "evil.pkl", evil)).tasks()
    assert not marker.exists()
    blob = pickle.dumps(data)
    (tmp_path / "cut.pkl").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BadInputError, match="truncated"):
        PySKLImporter(tmp_path / "cut.pkl").tasks()
    with pytest.raises(BadInputError, match="no such file"):
        PySKLImporter(tmp_path / "missing.pkl").tasks()
    both = {**data, "split": {"xsub_train": list(ntu), "xsub_val": list(ntu)[:1]}}
    with pytest.raises(BadInputError, match="in both xsub_train and xsub_val"):
        PySKLImporter(_dump(tmp_path / "both.pkl", both)).tasks()
    for wrong in ({"annotations": []}, {"split": {}}, 42, {"annotations": data["annotations"], "split": [1]}):
        with pytest.raises(BadInputError):
            PySKLImporter(_dump(tmp_path / "wrong.pkl", wrong)).tasks()


def test_pyskl_importer_ships_without_the_data(ntu: dict, tmp_path: Path) -> None:
    path = _dump(tmp_path / "ntu.pkl", _pyskl(ntu))
    importer = PySKLImporter(path)
    task = importer.tasks()[0]
    blob = pickle.dumps(importer)
    assert len(blob) < path.stat().st_size // 10  # the loaded annotations are not pickled along
    clone = pickle.loads(blob)
    assert [s.name for s in clone.run(task).sequences] == list(ntu)
    path.write_bytes(b"garbage")  # the file breaks between tasks() and run(): run reports, never raises
    result = pickle.loads(blob).run(task)
    assert result.sequences == [] and result.rejected[0].path == str(path)


# ---------------------------------------------------------------------------------------------------- aimclr


def _aimclr(ntu: dict, folder: Path, *, stream: str = "data_joint", frames: int = 300) -> Path:
    """ST-GCN gendata layout: (N, 3, 300, 25, 2) zero-padded, (names with .skeleton, labels) pickles."""
    folder.mkdir(exist_ok=True)
    parts = {"train": [n for n in ntu if _field(n, "P") in XSUB_TRAIN]}
    parts["val"] = [n for n in ntu if n not in parts["train"]]
    for part, names in parts.items():
        data = np.zeros((len(names), 3, frames, 25, 2), dtype=np.float32)
        for i, name in enumerate(names):
            raw = ntu[name][..., :3]  # (M, T, 25, 3)
            data[i, :, : raw.shape[1], :, : raw.shape[0]] = raw.transpose(3, 1, 2, 0)
        np.save(folder / f"{part}_{stream}.npy", data)
        _dump(folder / f"{part}_label.pkl", ([f"{n}.skeleton" for n in names], [_label(n) for n in names]), 2)
    return folder


def test_aimclr_round_trip(ntu: dict, tmp_path: Path) -> None:
    folder = _aimclr(ntu, tmp_path / "xsub")
    importer = AimCLRImporter(folder, chunk="1")
    assert importer.layout == "ntu25" and importer.num_persons == 2
    assert len(importer.tasks()) == 5
    result = _run_all(importer)
    assert result.rejected == []
    by_name = {s.name: s for s in result.sequences}  # the ".skeleton" suffix of the label file is dropped
    assert set(by_name) == set(ntu)
    for name, seq in by_name.items():
        raw = ntu[name][..., :3]
        assert seq.keypoints.shape == (raw.shape[1], 2, 25, 3)  # trailing zero padding removed
        np.testing.assert_array_equal(seq.keypoints[:, : raw.shape[0]], raw.transpose(1, 0, 2, 3).astype(np.float32))
        assert not seq.keypoints[:, raw.shape[0] :].any()
        assert seq.label == _label(name)
        assert seq.fields == {"split": "train" if _field(name, "P") in XSUB_TRAIN else "test"}
    assert importer.splits() == {"default": {"by": "split", "train": ["train"], "test": ["test"]}}
    assert importer.class_names() == [f"class_{k:03d}" for k in range(58)]


def test_aimclr_stream_option_and_inner_zero_frames(ntu: dict, tmp_path: Path) -> None:
    folder = _aimclr(ntu, tmp_path / "frame50", stream="position")
    with pytest.raises(BadInputError, match="missing"):
        AimCLRImporter(folder).tasks()
    data = np.load(folder / "train_position.npy")
    data[0, :, 10] = 0  # an all-zero frame inside the sequence stays
    np.save(folder / "train_position.npy", data)
    seqs = _run_all(AimCLRImporter(folder, stream="position")).sequences
    first = next(s for s in seqs if s.name.startswith("S001C001P001R001A011"))
    assert first.keypoints.shape[0] == 82 and not first.keypoints[10].any()


def test_aimclr_rejects_bad_samples(ntu: dict, tmp_path: Path) -> None:
    folder = _aimclr(ntu, tmp_path / "bad")
    data = np.load(folder / "train_data_joint.npy")
    names, labels = pickle.loads((folder / "train_label.pkl").read_bytes())
    data[0, 1, 3, 7, 0] = np.inf
    data[1] = 0
    labels[2] = -4
    np.save(folder / "train_data_joint.npy", data)
    _dump(folder / "train_label.pkl", (names, labels))
    result = _run_all(AimCLRImporter(folder))
    reasons = sorted(r.reason for r in result.rejected)
    names = [n.removesuffix(".skeleton") for n in names]
    assert len(result.sequences) == 2 and len(reasons) == 3
    assert "NaN or inf coordinate in frame 3" in reasons[0] and names[0] in reasons[0]
    assert "every coordinate is zero" in reasons[1] and names[1] in reasons[1]
    assert "label is not a class index" in reasons[2] and names[2] in reasons[2]
    assert {r.path for r in result.rejected} == {str(folder / "train_data_joint.npy")}


def test_aimclr_refuses_unusable_folders(ntu: dict, tmp_path: Path) -> None:
    def fresh(name: str) -> Path:
        return _aimclr(ntu, tmp_path / name)

    folder = fresh("missing")
    (folder / "val_label.pkl").unlink()
    with pytest.raises(BadInputError, match=r"val_label\.pkl"):
        AimCLRImporter(folder).tasks()
    folder = fresh("object")
    np.save(folder / "train_data_joint.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadInputError, match="object array"):
        AimCLRImporter(folder).tasks()
    folder = fresh("truncated")
    blob = (folder / "train_data_joint.npy").read_bytes()
    (folder / "train_data_joint.npy").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(BadInputError, match=r"not a readable \.npy"):
        AimCLRImporter(folder).tasks()
    folder = fresh("count")
    names, labels = pickle.loads((folder / "train_label.pkl").read_bytes())
    _dump(folder / "train_label.pkl", (names[:-1], labels[:-1]))
    with pytest.raises(BadInputError, match="for 3 samples"):
        AimCLRImporter(folder).tasks()
    folder = fresh("dup")
    _dump(folder / "train_label.pkl", ([names[0]] * len(names), labels))
    with pytest.raises(BadInputError, match="repeat"):
        AimCLRImporter(folder).tasks()
    folder = fresh("evil")
    _dump(
        folder / "train_label.pkl", (names, [type("X", (), {"__reduce__": lambda self: (os.system, ("true",))})()] * 3)
    )
    with pytest.raises(BadInputError, match="refused"):
        AimCLRImporter(folder).tasks()
    with pytest.raises(BadInputError, match=r"25 joints but layout=kinect20 has 20"):
        AimCLRImporter(fresh("layout"), layout="kinect20").tasks()
    with pytest.raises(BadInputError, match="not a folder"):
        AimCLRImporter(tmp_path / "nowhere").tasks()


# ---------------------------------------------------------------------------------------------------- ctrgcn


def _ctrgcn(ntu: dict, path: Path, *, one_hot: bool = True, compressed: bool = False, frames: int = 300) -> Path:
    """MAMP/CTR-GCN layout: x (N, 300, 150) person-major, y one-hot (N, 60)."""
    parts: dict[str, list[str]] = {"train": [n for n in ntu if _field(n, "P") in XSUB_TRAIN]}
    parts["test"] = [n for n in ntu if n not in parts["train"]]
    members = {}
    for part, names in parts.items():
        x = np.zeros((len(names), frames, 2, 25, 3), dtype=np.float32)
        for i, name in enumerate(names):
            raw = ntu[name][..., :3]
            x[i, : raw.shape[1], : raw.shape[0]] = raw.transpose(1, 0, 2, 3)
        members[f"x_{part}"] = x.reshape(len(names), frames, 150)
        labels = np.array([_label(n) for n in names])
        members[f"y_{part}"] = np.eye(60, dtype=np.float32)[labels] if one_hot else labels
    (np.savez_compressed if compressed else np.savez)(path, **members)
    return path


@pytest.mark.parametrize(("one_hot", "compressed"), [(True, False), (False, True)])
def test_ctrgcn_round_trip(ntu: dict, tmp_path: Path, one_hot: bool, compressed: bool) -> None:
    path = _ctrgcn(ntu, tmp_path / "NTU60_XSub.npz", one_hot=one_hot, compressed=compressed)
    importer = CTRGCNImporter(path, chunk="1")
    assert importer.layout == "ntu25" and importer.num_persons == 2
    assert len(importer.tasks()) == (5 if not compressed else 2)
    result = _run_all(importer)
    assert result.rejected == []
    train = [n for n in ntu if _field(n, "P") in XSUB_TRAIN]
    test = [n for n in ntu if n not in train]
    assert (len(train), len(test)) == (3, 2)
    assert [s.name for s in result.sequences] == [f"train_{i:06d}" for i in range(len(train))] + [
        f"test_{i:06d}" for i in range(len(test))
    ]
    for seq, name in zip(result.sequences, train + test, strict=True):
        raw = ntu[name][..., :3]
        assert seq.keypoints.shape == (raw.shape[1], 2, 25, 3)
        np.testing.assert_array_equal(seq.keypoints[:, : raw.shape[0]], raw.transpose(1, 0, 2, 3).astype(np.float32))
        assert seq.label == _label(name)
        assert seq.fields == {"split": seq.name.split("_")[0]}
    expected = 60 if one_hot else 58
    assert importer.class_names() == [f"class_{k:03d}" for k in range(expected)]


def test_ctrgcn_rejects_bad_samples_and_files(ntu: dict, tmp_path: Path) -> None:
    path = _ctrgcn(ntu, tmp_path / "a.npz")
    members = dict(np.load(path))
    members["y_test"][0] = 0  # no class
    members["y_test"][1, 3] = 1  # two classes
    members["x_train"][1] = 0
    members["x_train"][0, 7, 100] = np.nan
    np.savez(path, **members)
    result = _run_all(CTRGCNImporter(path))
    reasons = sorted(r.reason for r in result.rejected)
    assert len(result.sequences) == 1 and len(reasons) == 4
    assert "test_000000: y_test[0] is not a valid class label" in reasons[0]
    assert "test_000001: y_test[1]" in reasons[1]
    assert "train_000000" in reasons[2] and "NaN or inf coordinate in frame 7" in reasons[2]
    assert "train_000001: every coordinate is zero" in reasons[3]

    good = dict(np.load(_ctrgcn(ntu, tmp_path / "good.npz")))

    def refused(name: str, **changes: object) -> str:
        bad = {k: v for k, v in {**good, **changes}.items() if v is not None}
        np.savez(tmp_path / name, **bad)
        with pytest.raises(BadInputError) as info:
            CTRGCNImporter(tmp_path / name).tasks()
        return info.value.reason

    assert "missing member(s) y_test" in refused("m.npz", y_test=None)
    assert "149 features" in refused("f.npz", x_train=good["x_train"][..., :149], x_test=good["x_test"][..., :149])
    assert "x_train has 150 features per frame, x_test 75" in refused("w.npz", x_test=good["x_test"][..., :75])
    assert "y_train has shape (1, 60)" in refused("n.npz", y_train=good["y_train"][:1])
    assert "y_train has 60 classes, y_test 59" in refused("k.npz", y_test=good["y_test"][:, :59])
    assert "object array" in refused("o.npz", y_train=np.array([None, None], dtype=object))
    with pytest.raises(BadInputError, match="not a whole number"):
        CTRGCNImporter(tmp_path / "good.npz", layout="kinect20").tasks()
    blob = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BadInputError):
        CTRGCNImporter(tmp_path / "cut.npz").tasks()


# ---------------------------------------------------------------------------------------------------- fuzzing


def _import_or_refuse(importer: Importer, paths: list[Path]) -> TaskResult:
    """Everything ``prepare_store`` asks of an importer; a ``BadInputError`` must name one of ``paths``."""
    allowed = {str(p) for p in paths}
    try:
        tasks = importer.tasks()
        layout, persons = importer.layout, importer.num_persons
        importer.class_names(), importer.splits(), importer.describe()
    except BadInputError as err:
        assert err.path in allowed and err.reason, err
        return TaskResult(rejected=[Rejected.from_error(err)])
    assert len(importer.class_names()) <= MAX_CLASSES
    out = TaskResult()
    for task in tasks:
        result = importer.run(task)
        check_outcome(result, allowed, joints=get_layout(layout).num_joints, persons=persons)
        out.sequences += result.sequences
        out.rejected += result.rejected
    return out


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("interop_fuzz")


@pytest.fixture(scope="module")
def pyskl_blobs(ntu: dict) -> dict[int, bytes]:
    return Files({protocol: pickle.dumps(_pyskl(ntu), protocol=protocol) for protocol in (2, 4, 5)})


@FUZZ
@given(protocol=st.sampled_from([2, 4, 5]), edits=BINARY_EDITS, cut=CUTS)
def test_mutated_pyskl_pickle_is_refused_not_raised(fuzz_dir: Path, pyskl_blobs, protocol, edits, cut) -> None:
    path = fuzz_dir / "pyskl.pkl"
    path.write_bytes(mutate(pyskl_blobs[protocol], edits, cut))
    result = _import_or_refuse(PySKLImporter(path), [path])
    assert len(result.sequences) <= 5


#: Ways to damage one PySKL annotation (the first one stays intact: it sets the layout and channels).
_DAMAGES = {
    "label huge": lambda a: a.update(label=10**12),
    "label negative": lambda a: a.update(label=-3),
    "label float": lambda a: a.update(label=1.0),
    "label str": lambda a: a.update(label="1"),
    "label bool": lambda a: a.update(label=True),
    "no frame_dir": lambda a: a.pop("frame_dir"),
    "frame_dir int": lambda a: a.update(frame_dir=7),
    "total_frames huge": lambda a: a.update(total_frames=10**15),
    "total_frames negative": lambda a: a.update(total_frames=-1),
    "nan": lambda a: a["keypoint"].__setitem__((0, 1, 2, 0), np.nan),
    "inf": lambda a: a["keypoint"].__setitem__((0, -1, 24, 2), -np.inf),
    "beyond float32": lambda a: a.update(keypoint=a["keypoint"].astype(np.float64) * 1e300),
    "24 joints": lambda a: a.update(keypoint=a["keypoint"][:, :, :24]),
    "26 joints": lambda a: a.update(keypoint=np.concatenate([a["keypoint"], a["keypoint"][:, :, :1]], axis=2)),
    "no person": lambda a: a.update(keypoint=a["keypoint"][:0]),
    "no frame": lambda a: a.update(keypoint=a["keypoint"][:, :0]),
    "3-D keypoint": lambda a: a.update(keypoint=a["keypoint"][0]),
    "str keypoint": lambda a: a.update(keypoint=a["keypoint"].astype(str)),
    "list keypoint": lambda a: a.update(keypoint=a["keypoint"].tolist()),
    "all zero": lambda a: a.update(keypoint=np.zeros_like(a["keypoint"])),
    "not a dict": lambda a: a.clear(),
}


@FUZZ
@given(damages=st.lists(st.sampled_from(sorted(_DAMAGES)), min_size=4, max_size=4))
def test_damaged_pyskl_annotations_are_rejected_one_by_one(fuzz_dir: Path, ntu: dict, damages: list[str]) -> None:
    data = _pyskl(ntu)
    for ann, damage in zip(data["annotations"][1:], damages, strict=True):
        ann["keypoint"] = ann["keypoint"].copy()
        ann["total_frames"] = ann["keypoint"].shape[1]
        _DAMAGES[damage](ann)
    path = _dump(fuzz_dir / "damaged.pkl", data)
    result = _import_or_refuse(PySKLImporter(path), [path])
    assert [s.name for s in result.sequences] == [data["annotations"][0]["frame_dir"]]
    assert len(result.rejected) == 4
    for bad, damage in zip(result.rejected, damages, strict=True):
        assert f"annotation {1 + result.rejected.index(bad)}" in bad.reason, (damage, bad)


@pytest.fixture(scope="module")
def aimclr_files(ntu: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = _aimclr(ntu, tmp_path_factory.mktemp("aimclr_src") / "xsub")
    return Files({p.name: p.read_bytes() for p in folder.iterdir()})


@FUZZ
@given(
    target=st.sampled_from(["train_data_joint.npy", "val_data_joint.npy", "train_label.pkl", "val_label.pkl"]),
    edits=BINARY_EDITS,
    cut=CUTS,
)
def test_mutated_aimclr_files_are_refused_not_raised(fuzz_dir: Path, aimclr_files, target, edits, cut) -> None:
    folder = fuzz_dir / "aimclr"
    folder.mkdir(exist_ok=True)
    for name, data in aimclr_files.items():
        (folder / name).write_bytes(mutate(data, edits, cut) if name == target else data)
    result = _import_or_refuse(AimCLRImporter(folder, chunk="2"), [folder, *(folder / n for n in aimclr_files)])
    assert len(result.sequences) <= 5


@pytest.fixture(scope="module")
def ctrgcn_blobs(ntu: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, bytes]:
    folder = tmp_path_factory.mktemp("ctrgcn_src")
    return Files(
        {c: _ctrgcn(ntu, folder / f"{c}.npz", one_hot=not c, compressed=c).read_bytes() for c in (False, True)}
    )


@FUZZ
@given(compressed=st.booleans(), edits=BINARY_EDITS, cut=CUTS)
def test_mutated_ctrgcn_npz_is_refused_not_raised(fuzz_dir: Path, ctrgcn_blobs, compressed, edits, cut) -> None:
    path = fuzz_dir / "ctrgcn.npz"
    path.write_bytes(mutate(ctrgcn_blobs[compressed], edits, cut))
    result = _import_or_refuse(CTRGCNImporter(path, chunk="2"), [path])
    assert len(result.sequences) <= 5


def _fast(call, *, limit: int = ALLOCATION_LIMIT) -> TaskResult | BadInputError:
    """``call()``'s result or the ``BadInputError`` it raised, asserting it allocated little (:func:`bounded`)."""
    return bounded(call, limit=limit)


def test_absurd_claims_are_refused_without_allocating(ntu: dict, tmp_path: Path) -> None:
    """Labels, counts and shapes claiming billions: refused at once, nothing allocated from the claim."""
    data = _pyskl(ntu)
    data["annotations"][1]["label"] = 10**12  # used to make the importer synthesise 10**12 class names
    data["annotations"][2]["total_frames"] = 10**15
    # an array whose pickled state claims a (10**9, 300, 25, 3) shape for 12 bytes of data
    kept = data["annotations"][3]["keypoint"]
    state = (1, (10**9, 300, 25, 3), np.dtype("f4"), False, b"\0" * 12)
    data["annotations"][3]["keypoint"] = _Raw(_RECONSTRUCT, (np.ndarray, (0,), b"b"), state)
    err = _fast(lambda: PySKLImporter(_dump(tmp_path / "claim.pkl", data)).tasks())
    assert isinstance(err, BadInputError) and "data is 12 bytes" in err.reason, err
    data["annotations"][3]["keypoint"] = kept
    path = _dump(tmp_path / "labels.pkl", data)
    result = _fast(lambda: _import_or_refuse(PySKLImporter(path), [path]))
    assert len(result.sequences) == 3 and len(PySKLImporter(path).class_names()) <= 58
    assert [r.reason.split(": ", 1)[1][:22] for r in result.rejected] == [
        "label 1000000000000 is",
        "total_frames 100000000",
    ]
    for claim in (
        b"B\xff\xff\xff\xff",
        b"\x8e" + (2**40).to_bytes(8, "little"),
        b"\x8d" + (2**62).to_bytes(8, "little"),
    ):
        (tmp_path / "bytes.pkl").write_bytes(b"\x80\x04" + claim + b"xyz.")  # BINBYTES / BINBYTES8 / BINUNICODE8
        # refused by safe_load's opcode pre-scan before CPython's unpickler could reserve the claimed size
        err = _fast(lambda: PySKLImporter(tmp_path / "bytes.pkl").tasks())
        assert isinstance(err, BadInputError) and err.path == str(tmp_path / "bytes.pkl"), err
        assert "bytes but only 4 remain" in err.reason, err

    folder = _aimclr(ntu, tmp_path / "aimclr")
    names, labels = pickle.loads((folder / "train_label.pkl").read_bytes())
    _dump(folder / "train_label.pkl", (names, [10**12, *labels[1:]]))
    result = _fast(lambda: _import_or_refuse(AimCLRImporter(folder), [folder / "train_data_joint.npy"]))
    assert len(result.sequences) == 4 and "label is not a class index" in result.rejected[0].reason
    blob = (folder / "val_data_joint.npy").read_bytes()
    header = blob[: blob.index(b"\n") + 1]
    for shape in ("(1000000000000, 3, 300, 25, 2)", "(2, 3, 1000000000, 25, 2)", "(2, 3, 300, 25, 1000000)"):
        claimed = header.replace(b"(2, 3, 300, 25, 2)", shape.encode())
        claimed = claimed.replace(b" " * (len(claimed) - len(header)) + b"\n", b"\n")  # same header length
        assert len(claimed) == len(header)
        (folder / "val_data_joint.npy").write_bytes(claimed + blob[len(header) :])
        err = _fast(lambda: AimCLRImporter(folder).tasks())
        assert isinstance(err, BadInputError) and err.path == str(folder / "val_data_joint.npy"), shape
        assert "greater than file size" in err.reason or "is not (N >= 1" in err.reason, err

    path = _ctrgcn(ntu, tmp_path / "ints.npz", one_hot=False)
    members = dict(np.load(path))
    members["y_train"][0] = 10**12
    members["y_test"][1] = -5
    np.savez(path, **members)
    result = _fast(lambda: _import_or_refuse(CTRGCNImporter(path), [path]))
    assert [r.reason for r in result.rejected] == [
        "train_000000: y_train[0] is not a valid class label",
        "test_000001: y_test[1] is not a valid class label",
    ]
