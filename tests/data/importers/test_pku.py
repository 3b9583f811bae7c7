"""PKU-MMD Phase I/II importers on fixtures built from real NTU RGB+D joints.

No PKU-MMD sample exists here. PKU-MMD's skeleton files hold, per frame, the same Kinect-v2 camera-space
joints as NTU's ``.skeleton`` files (25 joints × xyz of up to two bodies), so fixtures re-arrange real NTU
frames into PKU's documented text format: one line of 150 numbers per frame (second body zero when
absent), written as in a real Phase II file (``%f`` numbers, lines after the first starting with a
space); label files hold ``action,start,end,confidence`` lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

from skelssl.data.importers import get_importer_class
from skelssl.data.importers.base import TaskResult
from skelssl.data.importers.pku import PKU_CLASSES, PKUMMDv1Importer, PKUMMDv2Importer, parse_label_rows
from skelssl.errors import BadInputError
from tests.data.importers.fuzzing import CUTS, EDITS, FUZZ, WRONG_ENCODINGS, bounded, check_outcome, mutate, utf8_bom

NTU = "ntu60-samples/skeletons"


# --------------------------------------------------------------------------------------- NTU → PKU fixtures
def read_ntu(path: Path) -> np.ndarray:
    """Independent reader of a raw NTU ``.skeleton`` file: ``(T, 2, 25, 3)`` xyz of the first two bodies."""
    lines = path.read_text().split("\n")
    i = 0
    frames = int(lines[i])
    i += 1
    out = np.zeros((frames, 2, 25, 3))
    for t in range(frames):
        bodies = int(lines[i])
        i += 1
        for b in range(bodies):
            i += 1  # body info line
            joints = int(lines[i])
            i += 1
            for j in range(joints):
                if b < 2:
                    out[t, b, j] = [float(v) for v in lines[i + j].split()[:3]]
            i += joints
    return out


@pytest.fixture(scope="module")
def ntu(shared_data: Path) -> dict[str, np.ndarray]:
    """Real joints of the five NTU samples, rounded as PKU's ``%f`` files store them."""
    return {p.stem[-4:]: np.round(read_ntu(p), 6) for p in sorted((shared_data / NTU).glob("*.skeleton"))}


@dataclass
class Piece:
    """A stretch of a fixture recording: NTU frames, and the PKU action id labelling it (None: unlabelled)."""

    frames: np.ndarray
    action: int | None = None


def pku_line_text(frames: np.ndarray) -> str:
    """PKU skeleton-file text for ``(T, 2, 25, 3)`` frames, formatted like a real release file."""
    rows = [" ".join(f"{v:f}" for v in frame.reshape(-1)) for frame in frames]
    return "\n ".join(rows) + "\n"


def write_recording(skeleton_dir: Path, label_dir: Path, video: str, pieces: list[Piece]) -> list[tuple[int, int, int]]:
    """Write one recording and its label file; returns the ``(action, start, end)`` rows written."""
    frames = np.concatenate([p.frames for p in pieces])
    (skeleton_dir / f"{video}.txt").write_text(pku_line_text(frames))
    rows, start = [], 0
    for p in pieces:
        if p.action is not None:
            rows.append((p.action, start, start + len(p.frames)))
        start += len(p.frames)
    label_text = "".join(f"{a},{s},{e},{1 + k % 2}\n" for k, (a, s, e) in enumerate(rows))
    (label_dir / f"{video}.txt").write_text(label_text)
    return rows


def v1_recordings(ntu: dict[str, np.ndarray]) -> dict[str, list[Piece]]:
    """Two Phase I videos: a cross-subject test video (0291) and a training one (0002)."""
    return {
        "0291-L": [
            Piece(ntu["A017"][:20]),  # unlabelled lead-in
            Piece(ntu["A011"], 30),  # NTU reading -> PKU 30 "reading"
            Piece(ntu["A017"][20:40]),
            Piece(ntu["A058"], 14),  # NTU handshaking (2 bodies) -> PKU 14 "handshaking"
            Piece(ntu["A003"], 3),  # NTU brushing teeth -> PKU 3; shares its first frame index with the end above
        ],
        "0002-M": [Piece(ntu["A034"], 31), Piece(ntu["A011"][:50], 30)],  # rub two hands; reading
    }


def build_release(root: Path, recordings: dict[str, list[Piece]], *, mamp: bool = False) -> dict[str, list]:
    """Lay out a release (official ``Data/PKU_Skeleton_Renew`` + ``Label/Train_Label_PKU_final``, or MAMP's)."""
    skeleton_dir = root / ("skeleton" if mamp else "Data/PKU_Skeleton_Renew")
    label_dir = root / ("label" if mamp else "Label/Train_Label_PKU_final")
    skeleton_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    return {v: write_recording(skeleton_dir, label_dir, v, pieces) for v, pieces in recordings.items()}


def run_all(importer) -> TaskResult:
    out = TaskResult()
    for task in importer.tasks():
        result = importer.run(task)
        out.sequences += result.sequences
        out.rejected += result.rejected
    return out


def rows_of(path: Path) -> np.ndarray:
    """Independent parse of a PKU skeleton file: one list of floats per non-blank line."""
    return np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()])


@pytest.fixture
def v1_release(tmp_path: Path, ntu: dict[str, np.ndarray]) -> tuple[Path, dict[str, list]]:
    root = tmp_path / "PKUMMD"
    return root, build_release(root, v1_recordings(ntu))


# --------------------------------------------------------------------------------------- real-format import
def test_registry_names() -> None:
    assert get_importer_class("pku-mmd-v1") is PKUMMDv1Importer
    assert get_importer_class("pku-mmd-v2") is PKUMMDv2Importer
    assert len(PKU_CLASSES) == 51 and PKU_CLASSES[29] == "reading" and PKU_CLASSES[13] == "handshaking"


def test_v1_clips_equal_raw_rows(v1_release, ntu) -> None:
    root, labels = v1_release
    importer = PKUMMDv1Importer(root)
    assert [t.video for t in importer.tasks()] == ["0002-M", "0291-L"]
    result = run_all(importer)
    assert not result.rejected
    assert [s.name for s in result.sequences] == ["0002-M_00", "0002-M_01", "0291-L_00", "0291-L_01", "0291-L_02"]
    by_name = {s.name: s for s in result.sequences}
    for video, rows in labels.items():
        raw = rows_of(root / "Data/PKU_Skeleton_Renew" / f"{video}.txt")
        for k, (action, start, end) in enumerate(rows):
            seq = by_name[f"{video}_{k:02d}"]
            assert seq.label == action - 1
            assert seq.keypoints.dtype == np.float32
            assert seq.keypoints.shape[0] == end - start  # rows start .. end-1
            m = seq.keypoints.shape[1]
            expected = raw[start:end].reshape(end - start, 2, 25, 3)[:, :m]
            np.testing.assert_allclose(seq.keypoints, expected, atol=1e-6)
            assert seq.fields == {"videos": video, "views": video[-1]}
    # the real NTU coordinates came through: the handshake clip is NTU's two-body file, frame for frame
    handshake = by_name["0291-L_01"]
    assert handshake.keypoints.shape == (70, 2, 25, 3)
    np.testing.assert_allclose(handshake.keypoints, ntu["A058"], atol=1e-6)
    assert by_name["0291-L_00"].keypoints.shape[1] == 1  # one body: the zero second person is dropped


def test_v1_first_row_matches_the_text(v1_release) -> None:
    root, _ = v1_release
    text = (root / "Data/PKU_Skeleton_Renew/0002-M.txt").read_text()
    first = [float(v) for v in text.split("\n")[0].split()]
    seq = run_all(PKUMMDv1Importer(root)).sequences[0]
    np.testing.assert_allclose(seq.keypoints[0, 0].reshape(-1), first[:75], atol=1e-6)


def test_mamp_layout_and_options(tmp_path: Path, ntu) -> None:
    root = tmp_path / "pku_raw" / "v1"
    build_release(root, v1_recordings(ntu), mamp=True)
    assert len(run_all(PKUMMDv1Importer(root)).sequences) == 5
    # explicit folders, relative to --input
    importer = PKUMMDv1Importer(root, skeleton_dir="skeleton", label_dir="label")
    assert len(run_all(importer).sequences) == 5


def test_v2_naming_fields_and_rule_split(tmp_path: Path, ntu) -> None:
    recs = {"A01N02-L": [Piece(ntu["A011"], 30)], "A03N05-R": [Piece(ntu["A003"], 3), Piece(ntu["A034"], 31)]}
    build_release(tmp_path, recs, mamp=True)
    importer = PKUMMDv2Importer(tmp_path)
    result = run_all(importer)
    assert not result.rejected
    assert [s.fields for s in result.sequences] == [
        {"videos": "A01N02-L", "views": "L", "subjects": 2},
        {"videos": "A03N05-R", "views": "R", "subjects": 5},
        {"videos": "A03N05-R", "views": "R", "subjects": 5},
    ]
    splits = importer.splits()
    assert splits == {"xsub": {"by": "subjects", "train": [1, 4, 5, 6, 8, 9, 10, 11, 12, 13], "test": [2, 3, 7]}}
    with pytest.raises(BadInputError, match="pku-mmd-v2"):
        PKUMMDv1Importer(tmp_path).tasks()
    assert "41 of the 51" in importer.describe()["labels"]


def test_v1_rule_splits(v1_release) -> None:
    splits = PKUMMDv1Importer(v1_release[0]).splits()
    assert splits["xview"] == {"by": "views", "train": ["M", "R"], "test": ["L"]}
    xsub = splits["xsub"]
    assert xsub["by"] == "videos" and len(xsub["test"]) == 132
    assert {"0291-L", "0334-R"} <= set(xsub["test"]) and "0290-L" not in xsub["test"]
    assert "0002-M" in xsub["train"] and not set(xsub["train"]) & set(xsub["test"])


def test_official_split_files_are_used(v1_release) -> None:
    root, _ = v1_release
    split = root / "Split"
    split.mkdir()
    (split / "cross-subject.txt").write_text(
        "Training videos: \n0002-L, 0002-M, 0002-R, \nValidataion videos: \n0291-L, 0291-M\n"
    )
    (split / "cross-view.txt").write_text("Training videos: \n0002-M, 0291-M\nValidataion videos: \n0002-L, 0291-L\n")
    importer = PKUMMDv1Importer(root)
    splits = importer.splits()
    assert splits["xsub"] == {"by": "videos", "train": ["0002-L", "0002-M", "0002-R"], "test": ["0291-L", "0291-M"]}
    assert splits["xview"]["test"] == ["0002-L", "0291-L"]
    assert importer.describe()["split_sources"]["xsub"].endswith("cross-subject.txt")
    (split / "cross-subject.txt").write_text("Training videos: \n0002-L, bogus\nValidataion videos: \n0291-L\n")
    with pytest.raises(BadInputError, match="bogus") as err:
        importer.tasks()  # checked before any work is done
    assert err.value.line == 2
    (split / "cross-subject.txt").write_text("Training videos: \n0002-L\n")
    with pytest.raises(BadInputError, match="Validataion videos"):
        importer.splits()


# --------------------------------------------------------------------------------------- bad input
def _one(result: TaskResult):
    assert len(result.rejected) == 1, result.rejected
    return result.rejected[0]


def _task(importer, video: str):
    return next(t for t in importer.tasks() if t.video == video)


def _skeleton(root: Path, video: str = "0291-L") -> Path:
    return root / "Data/PKU_Skeleton_Renew" / f"{video}.txt"


def _label(root: Path, video: str = "0291-L") -> Path:
    return root / "Label/Train_Label_PKU_final" / f"{video}.txt"


def test_truncated_skeleton_file(v1_release) -> None:
    root, _ = v1_release
    data = _skeleton(root).read_bytes()
    _skeleton(root).write_bytes(data[: len(data) // 2])
    importer = PKUMMDv1Importer(root)
    result = importer.run(_task(importer, "0291-L"))
    bad = _one(result)
    assert not result.sequences and bad.path == str(_skeleton(root))
    assert bad.line == data[: len(data) // 2].count(b"\n") + 1 and "expected 150" in bad.reason
    assert result.digest  # what was read is still hashed


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b"\x00\xff\xfe garbage \x80" * 50, "UTF-8"),
        (b"0.1 0.2 hello" + b" 0.0" * 147 + b"\n", "not a number"),
    ],
)
def test_unreadable_skeleton_file(v1_release, content: bytes, words: str) -> None:
    root, _ = v1_release
    _skeleton(root).write_bytes(content)
    importer = PKUMMDv1Importer(root)
    result = importer.run(_task(importer, "0291-L"))
    assert not result.sequences and words in _one(result).reason
    assert len(importer.run(_task(importer, "0002-M")).sequences) == 2  # the other video is unaffected


def test_wrong_joint_count(v1_release, ntu) -> None:
    root, _ = v1_release
    frames = ntu["A011"][:, :1]  # only one person: 75 numbers per line
    _skeleton(root).write_text("\n".join(" ".join(f"{v:f}" for v in f.reshape(-1)) for f in frames))
    importer = PKUMMDv1Importer(root)
    bad = _one(importer.run(_task(importer, "0291-L")))
    assert bad.line == 1 and "has 75 values" in bad.reason


def test_nan_inside_a_clip_rejects_that_clip_only(v1_release) -> None:
    root, labels = v1_release
    lines = _skeleton(root).read_text().split("\n")
    _, start, _ = labels["0291-L"][1]  # the handshake clip
    tokens = lines[start + 5].split()
    tokens[7] = "nan"
    lines[start + 5] = " " + " ".join(tokens)
    tokens = lines[3].split()  # an unlabelled lead-in frame: harmless
    tokens[0] = "inf"
    lines[3] = " ".join(tokens)
    _skeleton(root).write_text("\n".join(lines))
    importer = PKUMMDv1Importer(root)
    result = importer.run(_task(importer, "0291-L"))
    bad = _one(result)
    assert bad.path == str(_skeleton(root)) and bad.line == start + 6 and "NaN" in bad.reason
    assert "label line 2" in bad.reason
    assert [s.name for s in result.sequences] == ["0291-L_00", "0291-L_02"]


def test_all_zero_clip_rejected(v1_release) -> None:
    root, labels = v1_release
    lines = _skeleton(root).read_text().split("\n")
    _, start, end = labels["0291-L"][0]
    for i in range(start, end):
        lines[i] = " ".join(["0.000000"] * 150)
    _skeleton(root).write_text("\n".join(lines))
    importer = PKUMMDv1Importer(root)
    bad = _one(importer.run(_task(importer, "0291-L")))
    assert "every coordinate is zero" in bad.reason and "label line 1" in bad.reason


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("52,10,20,1", "unknown action id 52"),
        ("0,10,20,1", "unknown action id 0"),
        ("30,400,500,1", "outside the recording"),  # the recording has 292 frames
        ("30,290,293,1", "outside the recording"),  # one past the end
        ("30,-3,10,1", "outside the recording"),
        ("30,60,50,1", "starts after it ends"),
        ("30,60,60,1", "is empty"),
        ("30,2.5,10,1", "expected an integer"),
        ("30;10;20;1", "expected 'action,start,end,confidence'"),
        ("30,10", "expected 'action,start,end,confidence'"),
        ("30,nan,20,1", "expected an integer"),
        ("30,1e30,20,1", "starts after it ends"),
    ],
)
def test_bad_label_row_rejected_with_line(v1_release, row: str, words: str) -> None:
    root, _ = v1_release
    lines = _label(root).read_text().splitlines()
    lines.insert(1, row)  # becomes line 2; the three real rows move to lines 1, 3, 4
    _label(root).write_text("\n".join(lines) + "\n")
    importer = PKUMMDv1Importer(root)
    result = importer.run(_task(importer, "0291-L"))
    bad = _one(result)
    assert bad.path == str(_label(root)) and bad.line == 2 and words in bad.reason
    assert len(result.sequences) == 3


def test_end_at_last_row_is_accepted(v1_release) -> None:
    root, _ = v1_release
    total = len(rows_of(_skeleton(root)))
    _label(root).write_text(f"30,{total - 10},{total},1\n")
    importer = PKUMMDv1Importer(root)
    seq = importer.run(_task(importer, "0291-L")).sequences
    assert len(seq) == 1 and seq[0].keypoints.shape[0] == 10


def test_overlapping_segments_rejected_or_allowed(v1_release) -> None:
    root, _ = v1_release
    with _label(root).open("a") as fh:
        fh.write("13,100,130,1\n")  # inside the reading clip (20..102) and the handshake (122..192)
    importer = PKUMMDv1Importer(root)
    result = importer.run(_task(importer, "0291-L"))
    assert [r.line for r in result.rejected] == [1, 2, 4]
    assert all("overlaps" in r.reason for r in result.rejected)
    assert [s.name for s in result.sequences] == ["0291-L_00"]  # the brushing-teeth clip
    assert result.sequences[0].label == 2
    allowed = PKUMMDv1Importer(root, overlap="allow")
    assert len(allowed.run(_task(allowed, "0291-L")).sequences) == 4


def test_missing_label_or_skeleton_file_names_the_video(v1_release) -> None:
    root, _ = v1_release
    _label(root).unlink()
    _skeleton(root, "0002-M").unlink()
    importer = PKUMMDv1Importer(root)
    by_video = {t.video: importer.run(t) for t in importer.tasks()}
    no_label = _one(by_video["0291-L"])
    assert no_label.path == str(_skeleton(root)) and "0291-L has no label file" in no_label.reason
    no_skeleton = _one(by_video["0002-M"])
    assert no_skeleton.path == str(_label(root, "0002-M")) and "no skeleton file" in no_skeleton.reason


def test_empty_or_binary_label_file(v1_release) -> None:
    root, _ = v1_release
    importer = PKUMMDv1Importer(root)
    _label(root).write_bytes(b"")
    assert "empty" in _one(importer.run(_task(importer, "0291-L"))).reason
    _label(root).write_bytes(b"\n \n")
    assert "lists no action" in _one(importer.run(_task(importer, "0291-L"))).reason
    _label(root).write_bytes(b"\xff\xfe\x00\x01")
    assert "UTF-8" in _one(importer.run(_task(importer, "0291-L"))).reason


def test_badly_named_file_rejected(v1_release) -> None:
    root, _ = v1_release
    _skeleton(root).rename(_skeleton(root, "291-L"))
    _label(root).rename(_label(root, "291-L"))
    importer = PKUMMDv1Importer(root)
    bad = _one(importer.run(_task(importer, "291-L")))
    assert "does not follow the PKU-MMD Phase I naming" in bad.reason


def test_unusable_input_raises(tmp_path: Path, v1_release) -> None:
    with pytest.raises(BadInputError, match="not a folder"):
        PKUMMDv1Importer(tmp_path / "missing").tasks()
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no skeleton folder"):
        PKUMMDv1Importer(tmp_path / "empty").tasks()
    root, _ = v1_release
    extra = root / "Data" / "skeleton_copy"
    extra.mkdir()
    (extra / "0002-M.txt").write_text("0 " * 150)
    with pytest.raises(BadInputError, match="several skeleton folders"):
        PKUMMDv1Importer(root).tasks()
    assert len(PKUMMDv1Importer(root, skeleton_dir="Data/PKU_Skeleton_Renew").tasks()) == 2
    with pytest.raises(BadInputError, match="is not a folder"):
        PKUMMDv1Importer(root, skeleton_dir="Data/PKU_Skeleton_Renew", label_dir="nowhere").tasks()


def test_parse_label_rows_tolerates_spaces_and_trailing_comma() -> None:
    segments, rejected = parse_label_rows("l.txt", b" 8, 10 ,20,2,\r\n\n51,0,5\n", 51)
    assert not rejected
    assert [(s.label, s.start, s.end, s.line) for s in segments] == [(7, 10, 20, 1), (50, 0, 5, 3)]


def test_prepare_store_end_to_end(v1_release, tmp_path: Path, ntu) -> None:
    from skelssl.data.prepare import prepare_store
    from skelssl.data.store import SkeletonStore

    root, _ = v1_release
    summary = prepare_store(PKUMMDv1Importer(root), tmp_path / "store")
    assert summary.num_sequences == 5 and not summary.rejected
    store = SkeletonStore.open(tmp_path / "store")
    assert store.layout.name == "ntu25" and store.num_persons == 2 and len(store.class_names) == 51
    test = store.split_indices("xsub", "test")
    assert [str(store[i].name) for i in test] == ["0291-L_00", "0291-L_01", "0291-L_02"]
    assert list(store.split_indices("xview", "train")) == [0, 1]  # the M video
    handshake = store[int(test[1])]
    np.testing.assert_allclose(handshake.keypoints, ntu["A058"], atol=1e-6)
    solo = store[int(test[0])].keypoints
    assert solo.shape[1] == 2 and not solo[:, 1].any()  # the store pads the absent second person with zeros


# --------------------------------------------------------------------------------------- fuzzing (hypothesis)
@pytest.fixture(scope="module")
def fuzz_release(tmp_path_factory: pytest.TempPathFactory, ntu) -> tuple[Path, bytes, bytes]:
    """A Phase I release whose 0291-L files the fuzz tests overwrite; returns (root, skeleton bytes, label bytes)."""
    root = tmp_path_factory.mktemp("pku_fuzz") / "PKUMMD"
    build_release(root, v1_recordings(ntu))
    return root, _skeleton(root).read_bytes(), _label(root).read_bytes()


def _run_video(root: Path, skeleton: bytes, label: bytes, video: str = "0291-L") -> TaskResult:
    _skeleton(root, video).write_bytes(skeleton)
    _label(root, video).write_bytes(label)
    importer = PKUMMDv1Importer(root)
    result = importer.run(_task(importer, video))
    check_outcome(result, [_skeleton(root, video), _label(root, video)], joints=25, persons=2)
    return result


@FUZZ
@given(edits=EDITS, cut=CUTS)
def test_mutated_skeleton_file_is_rejected_not_raised(fuzz_release, edits, cut) -> None:
    root, skeleton, label = fuzz_release
    result = _run_video(root, mutate(skeleton, edits, cut), label)
    assert len(result.sequences) + len(result.rejected) >= 1


@FUZZ
@given(edits=EDITS, cut=CUTS)
def test_mutated_label_file_is_rejected_not_raised(fuzz_release, edits, cut) -> None:
    root, skeleton, label = fuzz_release
    data = mutate(label, edits, cut)
    result = _run_video(root, skeleton, data)
    assert len(result.sequences) <= 3 + data.count(b"\n")


@pytest.mark.parametrize("which", ["skeleton", "label"])
@pytest.mark.parametrize("encoding", sorted(WRONG_ENCODINGS))
def test_wrong_text_encoding_is_rejected(fuzz_release, which: str, encoding: str) -> None:
    root, skeleton, label = fuzz_release
    files = {"skeleton": skeleton, "label": label}
    files[which] = WRONG_ENCODINGS[encoding](files[which])
    result = _run_video(root, files["skeleton"], files["label"])
    bad = _one(result)
    assert not result.sequences and bad.path == str((_skeleton if which == "skeleton" else _label)(root))
    assert "UTF-8" in bad.reason, bad


def test_utf8_byte_order_mark_is_accepted(fuzz_release) -> None:
    root, skeleton, label = fuzz_release
    plain = _run_video(root, skeleton, label)
    marked = _run_video(root, utf8_bom(skeleton), utf8_bom(label))
    assert not marked.rejected and len(marked.sequences) == len(plain.sequences) == 3
    for a, b in zip(plain.sequences, marked.sequences, strict=True):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)


def test_absurd_numbers_are_rejected_without_allocating(fuzz_release) -> None:
    root, skeleton, _ = fuzz_release
    lines = skeleton.split(b"\n")
    huge = b" ".join([b"1e999", *lines[30].split()[1:]])  # inf inside the reading clip (rows 20..102)
    cases = [
        (skeleton, b"30,0,99999999999999999999999999,1\n", "outside the recording"),
        (skeleton, b"30,-99999999999999999999,5,1\n", "outside the recording"),
        (skeleton, b"30,0,1e308,1\n", "outside the recording"),
        (skeleton, b"30,0,1e999,1\n", "expected an integer"),
        (skeleton, b"99999999999999999999,0,5,1\n", "unknown action id"),
        (b"\n".join([*lines[:30], huge, *lines[31:]]), b"30,20,102,1\n", "NaN or inf"),
        (b"0.5 " * 10**6 + b"\n", b"30,0,1,1\n", "has 1000000 values"),  # one absurdly long row
    ]
    for skel, lab, words in cases:
        result = bounded(_run_video, root, skel, lab)
        assert not result.sequences and words in _one(result).reason, (lab, _one(result))
