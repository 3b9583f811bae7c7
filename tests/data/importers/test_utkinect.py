"""UTKinect-Action3D importer on the real dataset and on edited copies of its files."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hypothesis import given

from skelssl.data.importers import get_importer_class
from skelssl.data.importers.base import Rejected, TaskResult
from skelssl.data.importers.utkinect import UTKINECT_CLASSES, UTKinectImporter
from skelssl.errors import BadInputError
from skelssl.skeleton.layouts import get_layout
from tests.data.importers.fuzzing import CUTS, EDITS, FUZZ, WRONG_ENCODINGS, bounded, check_outcome, mutate, utf8_bom

LABEL_FILE = "joints/actionLabel.txt"
OVERLAP_LINES = [51, 52, 184, 185, 217, 218]  # s03_e01 push/throw, s09_e01 push/pull, s10_e02 push/pull
NAN_LINE = 215  # s10_e02 "carry:  NaN NaN"


def run_all(importer: UTKinectImporter) -> TaskResult:
    out = TaskResult()
    for task in importer.tasks():
        result = importer.run(task)
        out.sequences += result.sequences
        out.rejected += result.rejected
    return out


@pytest.fixture(scope="module")
def utk(shared_data: Path) -> Path:
    return shared_data / "utkinect"


@pytest.fixture(scope="module")
def official(utk: Path) -> TaskResult:
    return run_all(UTKinectImporter(utk, labels="official"))


@pytest.fixture
def copy(tmp_path: Path, utk: Path) -> Path:
    """An editable copy of the dataset folder."""
    return Path(shutil.copytree(utk, tmp_path / "utkinect"))


def raw_rows(path: Path) -> np.ndarray:
    """Independent parse of a joints file."""
    return np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()])


# --------------------------------------------------------------------------------------- real data
def test_registry_and_layout() -> None:
    assert get_importer_class("utkinect") is UTKinectImporter
    assert UTKinectImporter.layout == "kinect20" and get_layout("kinect20").num_joints == 20


def test_official_counts_and_rejections(official: TaskResult, utk: Path) -> None:
    assert len(official.sequences) == 193
    assert sorted(r.line for r in official.rejected) == sorted([*OVERLAP_LINES, NAN_LINE])
    assert {r.path for r in official.rejected} == {str(utk / LABEL_FILE)}
    nan = next(r for r in official.rejected if r.line == NAN_LINE)
    assert "NaN" in nan.reason
    assert all("overlaps" in r.reason for r in official.rejected if r.line != NAN_LINE)
    assert len({s.name for s in official.sequences}) == 193


@pytest.mark.parametrize("options", [{}, {"labels": "corrected"}, {"labels": "official", "overlap": "allow"}])
def test_199_segments_without_overlap_rejection(utk: Path, options: dict) -> None:
    result = run_all(UTKinectImporter(utk, **options))
    assert len(result.sequences) == 199  # SOURCE.txt: 199 segments
    assert [r.line for r in result.rejected] == [NAN_LINE]
    counts = Counter(s.label for s in result.sequences)
    assert counts == {k: 19 if UTKINECT_CLASSES[k] == "carry" else 20 for k in range(10)}
    lengths = [s.keypoints.shape[0] for s in result.sequences]
    if options.get("overlap") == "allow":
        assert (min(lengths), max(lengths)) == (5, 174)  # SOURCE.txt: segment length 5..174 frames


def test_clip_values_equal_raw_rows(official: TaskResult, utk: Path) -> None:
    rows = raw_rows(utk / "joints/joints_s01_e01.txt")
    ids = rows[:, 0]
    by_name = {s.name: s for s in official.sequences}
    # actionLabel.txt, s01_e01: "walk: 252 390", "standUp: 704 752 " (trailing space in the file)
    for name, label, (start, end) in [("s01_e01_walk", 0, (252, 390)), ("s01_e01_stand_up", 2, (704, 752))]:
        seq = by_name[name]
        keep = (ids >= start) & (ids <= end)  # frame ids, end inclusive, repeated ids kept
        assert seq.label == label
        assert seq.keypoints.shape == (keep.sum(), 1, 20, 3) and seq.keypoints.dtype == np.float32
        np.testing.assert_allclose(seq.keypoints.reshape(-1, 60), rows[keep, 1:], atol=1e-6)
        assert seq.fields == {"subjects": 1, "takes": 1}
    assert by_name["s01_e01_walk"].keypoints.shape[0] == 46
    # first row of the walk clip is the row with frame id 252 (the file's own text)
    line = next(t for t in (utk / "joints/joints_s01_e01.txt").read_text().splitlines() if t.split()[0] == "252")
    values = [float(v) for v in line.split()[1:]]
    np.testing.assert_allclose(by_name["s01_e01_walk"].keypoints[0].reshape(-1), values, atol=1e-6)


def test_class_names_match_action_names_mat(utk: Path) -> None:
    names = scipy.io.loadmat(utk / "action_names.mat")["action_names"].reshape(-1)
    assert UTKinectImporter(utk).class_names() == [str(n[0]) for n in names]


def test_fields_cover_subjects_and_takes(official: TaskResult) -> None:
    assert {s.fields["subjects"] for s in official.sequences} == set(range(1, 11))
    assert {s.fields["takes"] for s in official.sequences} == {1, 2}


def test_splits(utk: Path) -> None:
    splits = UTKinectImporter(utk).splits()
    assert splits["half"] == {"by": "subjects", "train": [1, 2, 3, 4, 5], "test": [6, 7, 8, 9, 10]}
    mat = scipy.io.loadmat(utk / "tr_te_splits.mat")
    assert sorted(splits) == sorted(["half", *(f"split{k}" for k in range(1, 11))])
    for k in range(10):
        split = splits[f"split{k + 1}"]
        assert split["by"] == "subjects"
        assert split["train"] == sorted(mat["tr_subjects"][k].tolist())
        assert split["test"] == sorted(mat["te_subjects"][k].tolist())
    assert splits["split1"] == {"by": "subjects", "train": [2, 5, 7, 8, 9], "test": [1, 3, 4, 6, 10]}


def test_joint_order_is_kinect_v1(official: TaskResult) -> None:
    """The kinect20 layout fits the data: head above shoulder centre above spine above hip centre, left/right
    bones of equal length, and bone lengths nearly constant over time (a wrong order breaks all three)."""
    layout = get_layout("kinect20")
    x = np.concatenate([s.keypoints[:, 0] for s in official.sequences])  # (N, 20, 3)
    y = x[..., 1]
    for upper, lower in [("head", "spine_shoulder"), ("spine_shoulder", "spine_mid"), ("spine_mid", "spine_base")]:
        assert (y[:, layout.index(upper)] > y[:, layout.index(lower)]).mean() > 0.95
    length = {(j, p): np.linalg.norm(x[:, j] - x[:, p], axis=-1) for j, p in layout.edges}
    for j, p in layout.edges:
        assert length[j, p].std() < 0.4 * length[j, p].mean()  # hand-wrist is the noisiest (0.37)
    for a, b in layout.pairs:
        pa, pb = layout.parents[a], layout.parents[b]
        ratio = length[a, pa].mean() / length[b, pb].mean()
        assert 0.9 < ratio < 1.1, (layout.joints[a], layout.joints[b], ratio)
    left, right = layout.left_shoulder, layout.right_shoulder
    assert (x[:, left, 0] < x[:, right, 0]).mean() > 0.95  # camera space as NTU: subject's left at smaller x


# --------------------------------------------------------------------------------------- bad input
def _task(importer: UTKinectImporter, recording: str):
    return next(t for t in importer.tasks() if t.recording == recording)


def _one(result: TaskResult):
    assert len(result.rejected) == 1, result.rejected
    return result.rejected[0]


def _edit_lines(path: Path, edit) -> None:
    lines = path.read_text().split("\n")
    edit(lines)
    path.write_text("\n".join(lines))


def test_truncated_joints_file(copy: Path) -> None:
    path = copy / "joints/joints_s01_e01.txt"
    data = path.read_bytes()
    cut = data[: len(data) // 3]
    path.write_bytes(cut)
    importer = UTKinectImporter(copy, labels="official")
    result = importer.run(_task(importer, "s01_e01"))
    bad = _one(result)
    assert not result.sequences and bad.path == str(path) and bad.line == cut.count(b"\n") + 1
    assert "expected 61" in bad.reason


@pytest.mark.parametrize(("content", "words"), [(b"", "empty"), (b"\x89PNG\r\n\x1a\n\x00\x00\xff" * 40, "UTF-8")])
def test_empty_or_binary_joints_file(copy: Path, content: bytes, words: str) -> None:
    (copy / "joints/joints_s02_e01.txt").write_bytes(content)
    importer = UTKinectImporter(copy, labels="official")
    assert words in _one(importer.run(_task(importer, "s02_e01"))).reason
    assert len(importer.run(_task(importer, "s02_e02")).sequences) == 10


def test_wrong_joint_count(copy: Path) -> None:
    path = copy / "joints/joints_s01_e01.txt"
    _edit_lines(path, lambda ls: ls.__setitem__(4, " ".join(ls[4].split()[:-3])))  # 19 joints on line 5
    importer = UTKinectImporter(copy, labels="official")
    bad = _one(importer.run(_task(importer, "s01_e01")))
    assert bad.line == 5 and "has 58 values" in bad.reason


def test_nan_coordinate_rejects_only_its_clip(copy: Path) -> None:
    path = copy / "joints/joints_s01_e01.txt"
    lines = path.read_text().split("\n")
    k = next(i for i, t in enumerate(lines) if t.split() and t.split()[0] == "300")  # inside walk 252..390

    def edit(ls: list[str]) -> None:
        tokens = ls[k].split()
        tokens[5] = "NaN"
        ls[k] = " ".join(tokens)

    _edit_lines(path, edit)
    importer = UTKinectImporter(copy, labels="official")
    result = importer.run(_task(importer, "s01_e01"))
    bad = _one(result)
    assert bad.path == str(path) and bad.line == k + 1 and "s01_e01_walk" in bad.reason
    assert len(result.sequences) == 9 and "s01_e01_walk" not in {s.name for s in result.sequences}


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("nan", "not a non-negative integer"),
        ("12.5", "not a non-negative integer"),
        ("-4", "not a non-negative integer"),
        ("1", "smaller than the previous"),
    ],
)
def test_bad_frame_ids(copy: Path, token: str, words: str) -> None:
    path = copy / "joints/joints_s01_e01.txt"

    def edit(ls: list[str]) -> None:
        tokens = ls[9].split()
        tokens[0] = token
        ls[9] = " ".join(tokens)

    _edit_lines(path, edit)
    importer = UTKinectImporter(copy, labels="official")
    bad = _one(importer.run(_task(importer, "s01_e01")))
    assert bad.line == 10 and words in bad.reason


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("jump: 252 390", "unknown action 'jump'"),
        ("walk: 100 390", "outside the recording"),  # s01_e01 frame ids run 190..2290
        ("walk: 2000 2500", "outside the recording"),
        ("walk: 390 252", "starts after it ends"),
        ("walk: 252", "expected 'action: start end'"),
        ("walk 252 390", "expected 'action: start end'"),
        ("walk: 25x 390", "expected an integer"),
        ("walk: 191 193", "no recorded frame"),  # between ids 190 and 194
    ],
)
def test_bad_segment_line(copy: Path, line: str, words: str) -> None:
    _edit_lines(copy / LABEL_FILE, lambda ls: ls.__setitem__(1, line))  # replaces s01_e01's walk (line 2)
    importer = UTKinectImporter(copy, labels="official")
    result = importer.run(_task(importer, "s01_e01"))
    bad = _one(result)
    assert bad.path == str(copy / LABEL_FILE) and bad.line == 2 and words in bad.reason
    assert len(result.sequences) == 9


def test_missing_label_block_and_missing_joints(copy: Path) -> None:
    # drop s01_e02's block (lines 12..22) and s02_e01's joints file
    _edit_lines(copy / LABEL_FILE, lambda ls: ls.__delitem__(slice(11, 22)))
    (copy / "joints/joints_s02_e01.txt").unlink()
    importer = UTKinectImporter(copy, labels="official")
    no_block = _one(importer.run(_task(importer, "s01_e02")))
    assert no_block.path == str(copy / "joints/joints_s01_e02.txt") and "no block" in no_block.reason
    no_joints = _one(importer.run(_task(importer, "s02_e01")))
    assert no_joints.path == str(copy / LABEL_FILE) and no_joints.line == 12  # its header, after the deletion
    assert "joints_s02_e01.txt is missing" in no_joints.reason


def test_duplicate_block(copy: Path) -> None:
    header_line = len((copy / LABEL_FILE).read_text().split("\n")) + 1
    _edit_lines(copy / LABEL_FILE, lambda ls: ls.extend(["s01_e01", "walk: 252 390"]))
    importer = UTKinectImporter(copy, labels="official")
    bad = _one(importer.run(_task(importer, "s01_e01")))
    assert bad.line == header_line and "second block" in bad.reason


def test_unusable_inputs_raise(copy: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not a folder"):
        UTKinectImporter(tmp_path / "nowhere").tasks()
    _edit_lines(copy / LABEL_FILE, lambda ls: ls.insert(0, "walk: 1 2"))
    with pytest.raises(BadInputError) as err:
        UTKinectImporter(copy, labels="official").tasks()
    assert err.value.line == 1
    (copy / LABEL_FILE).unlink()
    with pytest.raises(BadInputError, match="label file not found"):
        UTKinectImporter(copy, labels="official").tasks()
    assert len(UTKinectImporter(copy, labels="corrected").tasks()) == 20


def test_malformed_split_file_raises(copy: Path) -> None:
    scipy.io.savemat(copy / "tr_te_splits.mat", {"tr_subjects": np.array([[1, 2], [3, 4]])})
    with pytest.raises(BadInputError, match="te_subjects"):
        UTKinectImporter(copy, labels="official").tasks()
    (copy / "tr_te_splits.mat").write_bytes(b"MATLAB 5.0 MAT-file truncated")
    with pytest.raises(BadInputError, match="not a readable MATLAB"):
        UTKinectImporter(copy, labels="official").tasks()
    (copy / "tr_te_splits.mat").unlink()
    assert sorted(UTKinectImporter(copy, labels="official").splits()) == ["half"]


def test_joints_folder_as_input(utk: Path) -> None:
    importer = UTKinectImporter(utk / "joints")
    assert len(importer.tasks()) == 20 and "split10" in importer.splits()


def test_prepare_store_end_to_end(utk: Path, tmp_path: Path) -> None:
    from skelssl.data.prepare import prepare_store
    from skelssl.data.store import SkeletonStore

    summary = prepare_store(UTKinectImporter(utk), tmp_path / "store", workers=2)  # auto: the corrected file
    assert summary.num_sequences == 199 and [r.line for r in summary.rejected] == [NAN_LINE]
    store = SkeletonStore.open(tmp_path / "store")
    assert len(store) == 199 and store.layout.name == "kinect20" and store.class_names == list(UTKINECT_CLASSES)
    half_test = store.split_indices("half", "test")
    assert set(store.field("subjects")[half_test].tolist()) == {6, 7, 8, 9, 10}
    assert len(store.split_indices("split3", "train")) + len(store.split_indices("split3", "test")) == 199
    first = store[0]
    assert first.name == "s01_e01_walk" and first.keypoints.shape == (46, 1, 20, 3)
    rows = raw_rows(utk / "joints/joints_s01_e01.txt")
    keep = (rows[:, 0] >= 252) & (rows[:, 0] <= 390)
    np.testing.assert_allclose(first.keypoints.reshape(-1, 60), rows[keep, 1:], atol=1e-6)


# --------------------------------------------------------------------------------------- fuzzing (hypothesis)
@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory: pytest.TempPathFactory, utk: Path) -> tuple[Path, bytes, bytes]:
    """A folder with s01_e01's joints file and its label block only; returns (folder, joints, label bytes)."""
    folder = tmp_path_factory.mktemp("utk_fuzz")
    joints = (utk / "joints/joints_s01_e01.txt").read_bytes()
    label = (utk / LABEL_FILE).read_bytes()
    block = label[: label.index(b"s01_e02")]  # header line + its ten segments
    return folder, joints, block


def _run_fuzz(folder: Path, joints: bytes, label: bytes) -> TaskResult:
    """Write the two files and import every task; a ``BadInputError`` may only come from the label file."""
    joints_path, label_path = folder / "joints_s01_e01.txt", folder / "actionLabel.txt"
    joints_path.write_bytes(joints)
    label_path.write_bytes(label)
    importer = UTKinectImporter(folder, labels="official")
    try:
        tasks = importer.tasks()
    except BadInputError as err:  # the label file is read (and split into blocks) up front
        assert err.path == str(label_path) and err.reason
        return TaskResult(rejected=[Rejected.from_error(err)])
    out = TaskResult()
    for task in tasks:
        result = importer.run(task)
        check_outcome(result, [joints_path, label_path], joints=20, persons=1)
        out.sequences += result.sequences
        out.rejected += result.rejected
    return out


@FUZZ
@given(edits=EDITS, cut=CUTS)
def test_mutated_joints_file_is_rejected_not_raised(fuzz_folder, edits, cut) -> None:
    folder, joints, label = fuzz_folder
    result = _run_fuzz(folder, mutate(joints, edits, cut), label)
    assert 1 <= len(result.sequences) + len(result.rejected)
    assert len(result.sequences) <= 10


@FUZZ
@given(edits=EDITS, cut=CUTS)
def test_mutated_label_file_is_rejected_not_raised(fuzz_folder, edits, cut) -> None:
    folder, joints, label = fuzz_folder
    data = mutate(label, edits, cut)
    result = _run_fuzz(folder, joints, data)
    assert len(result.sequences) <= data.count(b":")


@pytest.mark.parametrize("which", ["joints", "label"])
@pytest.mark.parametrize("encoding", sorted(WRONG_ENCODINGS))
def test_wrong_text_encoding_is_rejected(fuzz_folder, which: str, encoding: str) -> None:
    folder, joints, label = fuzz_folder
    files = {"joints": joints, "label": label}
    files[which] = WRONG_ENCODINGS[encoding](files[which])
    result = _run_fuzz(folder, files["joints"], files["label"])
    bad = _one(result)
    assert not result.sequences and "UTF-8" in bad.reason, bad
    assert bad.path == str(folder / ("joints_s01_e01.txt" if which == "joints" else "actionLabel.txt"))


def test_utf8_byte_order_mark_is_accepted(fuzz_folder) -> None:
    folder, joints, label = fuzz_folder
    plain = _run_fuzz(folder, joints, label)
    marked = _run_fuzz(folder, utf8_bom(joints), utf8_bom(label))
    assert not plain.rejected and not marked.rejected and len(marked.sequences) == 10
    for a, b in zip(plain.sequences, marked.sequences, strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.keypoints, b.keypoints)


def test_absurd_numbers_are_rejected_without_allocating(fuzz_folder) -> None:
    folder, joints, label = fuzz_folder
    lines = joints.split(b"\n")
    first = lines[0].split()
    cases = [
        (joints, b"s01_e01\nwalk: 252 99999999999999999999999\n", "outside the recording"),
        (joints, b"s01_e01\nwalk: -99999999999999999999 390\n", "outside the recording"),
        (joints, b"s01_e01\nwalk: 252 1e308\n", "outside the recording"),
        (joints, b"s01_e01\nwalk: 1e999 390\n", "expected an integer"),
        (b"\n".join([b" ".join([b"99999999999999999999999", *first[1:]]), *lines[1:]]), label, "not a non-negative"),
        (b"\n".join([b" ".join([b"1e999", *first[1:]]), *lines[1:]]), label, "not a non-negative"),
        (b"0.5 " * 10**6 + b"\n", label, "has 1000000 values"),
    ]
    for joint_bytes, label_bytes, words in cases:
        result = bounded(_run_fuzz, folder, joint_bytes, label_bytes)
        assert words in _one(result).reason, (label_bytes, _one(result))
