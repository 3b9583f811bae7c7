"""NTU RGB+D 60/120 importers, on the 5 genuine raw ``.skeleton`` files and edited copies of them.

Expected values come from an independent line-by-line reading of the raw files written here, from numbers
copied by hand from the files, and from the per-sample statistics tables of CTR-GCN/SGN.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skelssl.data.importers import get_importer_class
from skelssl.data.importers.base import TaskResult, digest_bytes
from skelssl.data.importers.ntu import (
    NOISE_LENGTH,
    NTU60_XSUB_TRAIN_SUBJECTS,
    NTU120_XSUB_TRAIN_SUBJECTS,
    NTU60Importer,
    NTU120Importer,
    TrackedBody,
    assign_actors,
    filter_by_length,
    filter_by_spread,
    parse_name,
    spread_noise,
)
from skelssl.errors import BadInputError
from tests.data.importers.fuzzing import WRONG_ENCODINGS, bounded, mutate, utf8_bom

FRAMES = {  # from SOURCE.txt
    "S001C001P001R001A011": 82,
    "S001C003P008R002A058": 70,
    "S002C001P003R001A003": 100,
    "S003C001P015R001A034": 71,
    "S004C002P003R001A017": 124,
}
TWO = "S001C003P008R002A058"  # handshaking: two bodies in every frame
ONE = "S003C001P015R001A034"  # one body, the smallest file


# --------------------------------------------------------------------------------------------------
# An independent reader/writer of the format, used to build expectations and edited copies.

Body = list[str]  # 27 lines: body info, joint count, 25 joint lines
Frames = list[list[Body]]


def split_file(text: str) -> Frames:
    """Frames → bodies → their 27 text lines, reading the counts line by line."""
    lines = text.splitlines()
    pos = 1
    frames: Frames = []
    for _ in range(int(lines[0])):
        count = int(lines[pos])
        pos += 1
        bodies = []
        for _ in range(count):
            joints = int(lines[pos + 1])
            bodies.append(lines[pos : pos + 2 + joints])
            pos += 2 + joints
        frames.append(bodies)
    assert pos == len(lines)
    return frames


def join_file(frames: Frames) -> bytes:
    """Serialise frames back to the file format (CRLF line ends, as the real files)."""
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for body in bodies:
            out.extend(body)
    return ("\r\n".join(out) + "\r\n").encode("ascii")


def body_xyz(body: Body) -> np.ndarray:
    """(25, 3) float32 x y z of one body, with float() per field."""
    return np.array([[float(v) for v in line.split()[:3]] for line in body[2:]], dtype=np.float32)


def body_id(body: Body) -> str:
    return body[0].split()[0]


def with_body(body: Body, *, new_id: str | None = None, xyz: np.ndarray | None = None) -> Body:
    """A copy of a body with another bodyID and/or other x y z values."""
    info = body[0].split()
    if new_id is not None:
        info[0] = new_id
    joints = []
    for j, line in enumerate(body[2:]):
        fields = line.split()
        if xyz is not None:
            fields[:3] = [f"{v:.7g}" for v in xyz[j]]
        joints.append(" ".join(fields))
    return [" ".join(info), body[1], *joints]


def motion(xyz: np.ndarray) -> float:
    return float(np.var(xyz.reshape(-1, 3), axis=0).sum())


def body_info_line(frames: Frames, frame: int, body: int) -> int:
    """1-based line number of a body-info line (line 1: frame count, line 2: body count of frame 1)."""
    line = 3
    for f in range(frame):
        line += 1 + 27 * len(frames[f])
    return line + 27 * body


@pytest.fixture(scope="module")
def skeletons(shared_data: Path) -> Path:
    return shared_data / "ntu60-samples" / "skeletons"


@pytest.fixture(scope="module")
def texts(skeletons: Path) -> dict[str, str]:
    return {name: (skeletons / f"{name}.skeleton").read_bytes().decode("ascii") for name in FRAMES}  # keep CRLF


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / f"{name}.skeleton"
    path.write_bytes(data)
    return path


def run60(path: Path, **options: object) -> TaskResult:
    return NTU60Importer(path.parent, **options).run(str(path))


def only_sequence(result: TaskResult):
    assert not result.rejected, result.rejected
    assert not result.skipped
    assert len(result.sequences) == 1
    return result.sequences[0]


def rejected(result: TaskResult):
    assert not result.sequences
    assert len(result.rejected) == 1, result
    return result.rejected[0]


# --------------------------------------------------------------------------------------------------
# Registry, names, resources


def test_registry_names_the_classes() -> None:
    assert get_importer_class("ntu60") is NTU60Importer
    assert get_importer_class("ntu120") is NTU120Importer
    assert NTU60Importer.layout == NTU120Importer.layout == "ntu25"
    assert NTU60Importer.num_persons == 2


def test_parse_name() -> None:
    ids = parse_name("S018C002P045R001A061")
    assert (ids.setup, ids.camera, ids.subject, ids.replication, ids.action) == (18, 2, 45, 1, 61)
    for bad in ("S01C002P045R001A061", "S018C002P045R001A061x", "s018c002p045r001a061", "S018C002P045R001"):
        assert parse_name(bad) is None


def test_class_names(shared_data: Path) -> None:
    meta = shared_data / "ntu60-samples" / "metadata"
    mmaction = (meta / "label_map_ntu60_mmaction2.txt").read_text().splitlines()
    names60 = NTU60Importer(".").class_names()
    names120 = NTU120Importer(".").class_names()
    assert names60 == mmaction
    assert len(names120) == 120 and names120[:60] == names60
    assert names120[-1] == "finger-guessing game (playing rock-paper-scissors)"
    assert names60[10] == "reading"  # A011, the label of S001C001P001R001A011


def _names(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if re.fullmatch(r"S\d{3}C\d{3}P\d{3}R\d{3}A\d{3}", line.strip())
    ]


def test_shipped_missing_lists_are_the_official_ones(shared_data: Path) -> None:
    from skelssl.data.importers.ntu import missing_skeletons

    meta = shared_data / "ntu60-samples" / "metadata"
    miss60 = missing_skeletons(NTU60Importer.missing_list)
    miss120 = missing_skeletons(NTU120Importer.missing_list)
    assert len(miss60) == 302 and len(miss120) == 535 and miss60 <= miss120
    assert miss60 == set(_names(meta / "ntu60_statistics" / "samples_with_missing_skeletons.txt"))
    assert miss120 == set(_names(meta / "ntu120_statistics" / "NTU_RGBD120_samples_with_missing_skeletons.txt"))
    avail60 = set(_names(meta / "ntu60_statistics" / "skes_available_name.txt"))
    avail120 = set(_names(meta / "ntu120_statistics" / "skes_available_name.txt"))
    assert not avail60 & miss60 and not avail120 & miss120
    assert len(avail60 | miss60) == 56_880 and len(avail120 | miss120) == 114_480


# --------------------------------------------------------------------------------------------------
# Splits against the per-sample statistics tables


def _split_counts(importer, names: list[str]) -> dict[str, tuple[int, int]]:
    fields = {"subjects": [], "cameras": [], "setups": []}
    for name in names:
        ids = parse_name(name)
        fields["subjects"].append(ids.subject)
        fields["cameras"].append(ids.camera)
        fields["setups"].append(ids.setup)
    counts = {}
    for split, spec in importer.splits().items():
        values = np.asarray(fields[spec["by"]])
        train = np.isin(values, spec["train"])
        test = np.isin(values, spec["test"])
        assert not (train & test).any() and (train | test).all(), split
        counts[split] = (int(train.sum()), int(test.sum()))
    return counts


@pytest.mark.parametrize(
    ("cls", "folder", "available", "everything"),
    [
        (
            NTU60Importer,
            "ntu60_statistics",
            {"xsub": (40_091, 16_487), "xview": (37_646, 18_932)},
            {"xsub": (40_320, 16_560), "xview": (37_920, 18_960)},
        ),
        (
            NTU120Importer,
            "ntu120_statistics",
            # xset: the tables give 54,468 / 59,477 (the often quoted 54,471 does not add up to 113,945)
            {"xsub": (63_026, 50_919), "xset": (54_468, 59_477)},
            {"xsub": (63_360, 51_120), "xset": (54_720, 59_760)},
        ),
    ],
)
def test_split_counts_match_statistics_tables(shared_data, cls, folder, available, everything) -> None:
    stats = shared_data / "ntu60-samples" / "metadata" / folder
    names = (stats / "skes_available_name.txt").read_text().split()
    # the tables' columns are what the names encode
    for column, attr in [("setup", "setup"), ("camera", "camera"), ("performer", "subject"),
                         ("replication", "replication"), ("label", "action")]:  # fmt: skip
        table = np.array((stats / f"{column}.txt").read_text().split(), dtype=int)
        assert (table == [getattr(parse_name(n), attr) for n in names]).all(), column
    importer = cls(".")
    assert _split_counts(importer, names) == available
    missing = sorted(importer._missing)
    assert _split_counts(importer, names + missing) == everything


def test_split_constants() -> None:
    assert len(NTU60_XSUB_TRAIN_SUBJECTS) == 20 and len(NTU120_XSUB_TRAIN_SUBJECTS) == 53
    assert set(NTU60_XSUB_TRAIN_SUBJECTS) <= set(NTU120_XSUB_TRAIN_SUBJECTS)
    spec = NTU120Importer(".").splits()
    assert spec["xset"]["train"] == list(range(2, 33, 2)) and spec["xset"]["test"] == list(range(1, 33, 2))
    assert len(spec["xsub"]["test"]) == 53
    assert NTU60Importer(".").splits()["xview"] == {"by": "cameras", "train": [2, 3], "test": [1]}


# --------------------------------------------------------------------------------------------------
# Tasks


def test_tasks_find_nested_files_sorted(tmp_path: Path, skeletons: Path) -> None:
    nested = tmp_path / "nturgb+d_skeletons"
    nested.mkdir()
    names = sorted(FRAMES)
    for name in names[:3]:
        shutil.copy(skeletons / f"{name}.skeleton", nested)
    for name in names[3:]:
        shutil.copy(skeletons / f"{name}.skeleton", tmp_path)
    (tmp_path / "README.txt").write_text("not a sample")
    tasks = NTU60Importer(tmp_path).tasks()
    assert [Path(t).stem for t in tasks] == names
    assert tasks == NTU60Importer(tmp_path).tasks()


def test_tasks_reject_unusable_input(tmp_path: Path, skeletons: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        NTU60Importer(tmp_path / "nope").tasks()
    with pytest.raises(BadInputError, match=r"no \.skeleton files"):
        NTU60Importer(tmp_path).tasks()
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(skeletons / f"{ONE}.skeleton", tmp_path / sub)
    with pytest.raises(BadInputError, match="also at"):
        NTU60Importer(tmp_path).tasks()


def test_unknown_option_is_a_config_error() -> None:
    from skelssl.errors import ConfigError

    with pytest.raises(ConfigError, match="bodies"):
        NTU60Importer(".", bodies="largest")
    with pytest.raises(ConfigError, match="did you mean"):
        NTU60Importer(".", bodys="first2")


# --------------------------------------------------------------------------------------------------
# Real files: values, shapes, fields


def test_first_joint_values_by_hand(skeletons: Path) -> None:
    seq = only_sequence(run60(skeletons / "S001C001P001R001A011.skeleton"))
    # line 4 of the file: "0.2058097 0.1920515 3.810989 276.0976 ..."; line 28: joint 25 of frame 1
    np.testing.assert_array_equal(seq.keypoints[0, 0, 0], np.float32([0.2058097, 0.1920515, 3.810989]))
    np.testing.assert_array_equal(seq.keypoints[0, 0, 24], np.float32([0.1113064, 0.3412982, 3.562444]))
    assert seq.keypoints.dtype == np.float32


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_real_files_first2_match_line_by_line_reading(skeletons: Path, texts: dict[str, str], name: str) -> None:
    result = run60(skeletons / f"{name}.skeleton")
    seq = only_sequence(result)
    frames = split_file(texts[name])
    persons = max(len(b) for b in frames)
    assert seq.keypoints.shape == (FRAMES[name], min(persons, 2), 25, 3)
    for t, bodies in enumerate(frames):
        for m, body in enumerate(bodies[:2]):
            np.testing.assert_array_equal(seq.keypoints[t, m], body_xyz(body))
    ids = parse_name(name)
    assert seq.name == name and seq.label == ids.action - 1
    assert dict(seq.fields) == {
        "setups": ids.setup,
        "cameras": ids.camera,
        "subjects": ids.subject,
        "replications": ids.replication,
    }
    assert result.digest == digest_bytes((skeletons / f"{name}.skeleton").read_bytes())


@pytest.mark.parametrize("name", sorted(set(FRAMES) - {TWO}))
def test_denoise_on_one_body_files_equals_first2(skeletons: Path, name: str) -> None:
    first2 = only_sequence(run60(skeletons / f"{name}.skeleton"))
    denoised = only_sequence(run60(skeletons / f"{name}.skeleton", bodies="denoise"))
    np.testing.assert_array_equal(first2.keypoints, denoised.keypoints)


def test_two_body_file(skeletons: Path, texts: dict[str, str]) -> None:
    frames = split_file(texts[TWO])
    assert all(len(b) == 2 for b in frames) and len({body_id(b) for f in frames for b in f}) == 2
    first2 = only_sequence(run60(skeletons / f"{TWO}.skeleton")).keypoints
    assert first2.shape == (70, 2, 25, 3) and first2.any(axis=(2, 3)).all()
    denoised = only_sequence(run60(skeletons / f"{TWO}.skeleton", bodies="denoise")).keypoints
    # actor 1 is the body with the larger motion (variance of all its joint positions)
    tracks = [np.stack([body_xyz(f[k]) for f in frames]) for k in (0, 1)]
    ids = [body_id(b) for b in frames[0]]
    assert all([body_id(b) for b in f] == ids for f in frames)  # same file order in every frame
    order = sorted((0, 1), key=lambda k: -motion(tracks[k]))
    assert denoised.shape == (70, 2, 25, 3)
    np.testing.assert_array_equal(denoised[:, 0], tracks[order[0]])
    np.testing.assert_array_equal(denoised[:, 1], tracks[order[1]])


# --------------------------------------------------------------------------------------------------
# Missing-skeleton list, labels out of range, bad names


def test_missing_sample_is_skipped_not_rejected(tmp_path: Path, texts: dict[str, str]) -> None:
    path = write(tmp_path, "S001C002P005R002A008", texts[ONE].encode())  # first name on the official list
    result = run60(path)
    assert not result.sequences and not result.rejected
    assert [s.name for s in result.skipped] == ["S001C002P005R002A008"]
    assert "missing-skeleton" in result.skipped[0].reason
    kept = only_sequence(run60(path, skip_missing=False))
    assert kept.label == 7
    assert run60(write(tmp_path, "S001C002P005R002A008", b"garbage")).skipped  # not even read
    # an NTU-120-only missing sample is skipped by ntu120
    path = write(tmp_path, "S032C003P067R002A077", texts[ONE].encode())
    assert NTU120Importer(tmp_path).run(str(path)).skipped


def test_ntu120_sample(tmp_path: Path, texts: dict[str, str]) -> None:
    path = write(tmp_path, "S018C002P045R001A061", texts[ONE].encode())
    bad = rejected(run60(path))
    assert "unknown label" in bad.reason and "ntu120" in bad.reason and bad.path == str(path)
    seq = only_sequence(NTU120Importer(tmp_path).run(str(path)))
    assert seq.label == 60 and dict(seq.fields)["setups"] == 18
    assert 18 in NTU120Importer(".").splits()["xset"]["train"]
    assert 45 in NTU120Importer(".").splits()["xsub"]["train"]
    bad = rejected(run60(write(tmp_path, "S018C002P001R001A001", texts[ONE].encode())))
    assert "S018" in bad.reason and "ntu120" in bad.reason
    bad = rejected(NTU120Importer(tmp_path).run(str(write(tmp_path, "S001C001P001R001A121", texts[ONE].encode()))))
    assert "unknown label" in bad.reason


@pytest.mark.parametrize(
    "name",
    [
        "foo",
        "S001C001P001R001A011_copy",
        "S001C001P001R001A11",
        "S001C004P001R001A011",  # camera 4
        "S001C001P001R003A011",  # replication 3
        "S000C001P001R001A011",  # setup 0
        "S001C001P000R001A011",  # performer 0
        "S001C001P041R001A011",  # performer 41 is not in NTU-60
        "S001C001P001R001A000",  # action 0
    ],
)
def test_bad_names_are_rejected(tmp_path: Path, texts: dict[str, str], name: str) -> None:
    path = write(tmp_path, name, texts[ONE].encode())
    bad = rejected(run60(path))
    assert bad.path == str(path) and bad.reason


# --------------------------------------------------------------------------------------------------
# Bad content: every case on an edited copy of a real file, with the line at fault


def _edit_line(text: str, line: int, new: str | None) -> bytes:
    """Replace (or delete, ``new=None``) the 1-based ``line``."""
    lines = text.splitlines()
    if new is None:
        del lines[line - 1]
    else:
        lines[line - 1] = new
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _joint_line(frames: Frames, frame: int, body: int, joint: int) -> int:
    return body_info_line(frames, frame, body) + 2 + joint


def _cases(text: str) -> dict[str, tuple[bytes, int | None, str]]:
    """Case name → (edited bytes, expected 1-based line, expected words in the reason)."""
    frames = split_file(text)
    lines = text.splitlines()
    j = _joint_line(frames, 3, 0, 4)  # frame 4, body 1, joint 5
    info = body_info_line(frames, 5, 0)
    joint_fields = lines[j - 1].split()
    cases = [
        ("empty", b"", None, "empty"),
        ("whitespace", b" \r\n\r\n  ", None, "whitespace"),
        ("not utf-8", _edit_line(text, j, lines[j - 1] + " @@").replace(b"@@", b"\xff\xfe"), j, "UTF-8"),
        ("non-ascii", _edit_line(text, j, lines[j - 1] + " @@").replace(b"@@", "é".encode()), j, "ASCII"),
        ("control byte", _edit_line(text, j, lines[j - 1].replace(" ", " \x01", 1)), j, "control byte 0x01"),
        ("stray CR", _edit_line(text, j, lines[j - 1].replace(" ", "\r", 1)), j, "carriage return"),
        ("garbage token", _edit_line(text, j, lines[j - 1].replace(" ", " abc ", 1)), j, "not a number"),
        ("nan", _edit_line(text, j, " ".join(["nan", *joint_fields[1:]])), j, "NaN"),
        ("inf", _edit_line(text, j, " ".join([joint_fields[0], "-inf", *joint_fields[2:]])), j, "inf"),
        ("overflow", _edit_line(text, j, " ".join([joint_fields[0], "1e400", *joint_fields[2:]])), j, "inf"),
        ("huge coordinate", _edit_line(text, j, " ".join([*joint_fields[:2], "1e39", *joint_fields[3:]])), j,
         "not a Kinect position"),
        ("joint count 24", _edit_line(text, info + 1, "24"), info + 1, "24 joints"),
        ("joint count 24, 24 lines", _edit_line(_edit_line(text, info + 1, "24").decode(), info + 2, None), info + 1,
         "24 joints"),
        ("joint count -25", _edit_line(text, info + 1, "-25"), info + 1, "joint count"),
        ("frames 1e9", _edit_line(text, 1, "1000000000"), 1, "more than"),
        ("frames negative", _edit_line(text, 1, "-5"), 1, "negative"),
        ("frames fraction", _edit_line(text, 1, "2.5"), 1, "integer"),
        ("frames two fields", _edit_line(text, 1, "71 1"), 1, "expected 1 field,"),
        ("frames one too many", _edit_line(text, 1, str(len(frames) + 1)), len(lines) + 1, "ends early"),
        ("frames one too few", _edit_line(text, 1, str(len(frames) - 1)), len(lines) - 27, "after the last"),
        ("bodies 1e6", _edit_line(text, info - 1, "1000000"), info - 1, "more than"),
        ("bodies negative", _edit_line(text, info - 1, "-1"), info - 1, "negative"),
        ("bodies 3 of 1", _edit_line(text, info - 1, "3"), info + 27, "body 2 of frame 6"),
        ("joint line 11 fields", _edit_line(text, j, " ".join(joint_fields[:-1])), j, "expected 12 fields"),
        ("joint line 13 fields", _edit_line(text, j, " ".join([*joint_fields, "2"])), j, "expected 12 fields"),
        ("shifted field", _edit_line(_edit_line(text, j, " ".join(joint_fields[:-1])).decode(), j + 1,
                                     joint_fields[-1] + " " + lines[j]), j, "expected 12 fields"),
        ("tracking state 7", _edit_line(text, j, " ".join([*joint_fields[:-1], "7"])), j, "trackingState"),
        ("tracking state 1.5", _edit_line(text, j, " ".join([*joint_fields[:-1], "1.5"])), j, "trackingState"),
        ("body info 9 fields", _edit_line(text, info, " ".join(lines[info - 1].split()[:9])), info, "10 fields"),
        ("bodyID fraction", _edit_line(text, info, "1.5 " + " ".join(lines[info - 1].split()[1:])), info, "bodyID"),
        ("bodyID exponent", _edit_line(text, info, "7e16 " + " ".join(lines[info - 1].split()[1:])), info, "bodyID"),
        ("handState -1", _edit_line(text, info, " ".join([*lines[info - 1].split()[:3], "-1",
                                                           *lines[info - 1].split()[4:]])), info, "handLeftState"),
        ("blank line", _edit_line(text, j, ""), j, "expected 12 fields"),
        ("trailing number", (text + "1\r\n").encode(), len(lines) + 1, "after the last"),
        ("trailing garbage", (text + "garbage\r\n").encode(), len(lines) + 1, "after the last"),
        ("trailing frame", (text + "\r\n".join(lines[-28:]) + "\r\n").encode(), len(lines) + 1, "after the last"),
        ("zero frames", b"0\r\n", 1, "0 frames"),
        ("no bodies", b"3\r\n0\r\n0\r\n0\r\n", 1, "none of its 3 frames has a body"),
        ("all zero", join_file([[with_body(b, xyz=np.zeros((25, 3))) for b in f] for f in frames]), None, "zero"),
    ]  # fmt: skip
    return {case: rest for case, *rest in cases}


BAD_CONTENT = [
    "empty",
    "whitespace",
    "not utf-8",
    "non-ascii",
    "control byte",
    "stray CR",
    "garbage token",
    "nan",
    "inf",
    "overflow",
    "huge coordinate",
    "joint count 24",
    "joint count 24, 24 lines",
    "joint count -25",
    "frames 1e9",
    "frames negative",
    "frames fraction",
    "frames two fields",
    "frames one too many",
    "frames one too few",
    "bodies 1e6",
    "bodies negative",
    "bodies 3 of 1",
    "joint line 11 fields",
    "joint line 13 fields",
    "shifted field",
    "tracking state 7",
    "tracking state 1.5",
    "body info 9 fields",
    "bodyID fraction",
    "bodyID exponent",
    "handState -1",
    "blank line",
    "trailing number",
    "trailing garbage",
    "trailing frame",
    "zero frames",
    "no bodies",
    "all zero",
]


def test_bad_content_cases_cover_the_list(texts: dict[str, str]) -> None:
    assert list(_cases(texts[ONE])) == BAD_CONTENT


@pytest.mark.parametrize("case", BAD_CONTENT)
def test_bad_content_is_rejected_with_line(tmp_path: Path, texts: dict[str, str], case: str) -> None:
    data, line, words = _cases(texts[ONE])[case]
    path = write(tmp_path, ONE, data)
    for bodies in ("first2", "denoise"):
        bad = rejected(run60(path, bodies=bodies))
        assert bad.path == str(path)
        assert bad.line == line, (case, bad)
        assert words in bad.reason, (case, bad.reason)


def test_absurd_counts_are_rejected_without_allocating(tmp_path: Path, texts: dict[str, str]) -> None:
    frames = split_file(texts[ONE])
    info = body_info_line(frames, 0, 0)
    for claim in (_edit_line(texts[ONE], 1, "1000000000"), _edit_line(texts[ONE], info - 1, "1000000"),
                  b"99999\r\n1\r\n"):  # fmt: skip
        path = write(tmp_path, ONE, claim)
        rejected(bounded(run60, path, limit=16 * 2**20))


def test_zero_body_frames_first2_keeps_denoise_drops(tmp_path: Path, texts: dict[str, str]) -> None:
    frames = split_file(texts[TWO])
    edited = [[] if 10 <= t < 13 else bodies for t, bodies in enumerate(frames)]
    path = write(tmp_path, TWO, join_file(edited))
    first2 = only_sequence(run60(path)).keypoints
    (tmp_path / "orig").mkdir()
    original_path = write(tmp_path / "orig", TWO, texts[TWO].encode())
    original = only_sequence(run60(original_path)).keypoints
    assert first2.shape == (70, 2, 25, 3)
    assert not first2[10:13].any()
    np.testing.assert_array_equal(first2[:10], original[:10])
    np.testing.assert_array_equal(first2[13:], original[13:])
    denoised = only_sequence(run60(path, bodies="denoise")).keypoints
    full = only_sequence(run60(original_path, bodies="denoise")).keypoints
    assert denoised.shape == (67, 2, 25, 3)
    # dropping three frames changes each body's motion a little; the actor order must not flip here
    np.testing.assert_array_equal(denoised, np.concatenate([full[:10], full[13:]]))


# --------------------------------------------------------------------------------------------------
# Random truncation, insertion and mutation (hypothesis)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ntu_fuzz")


_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(fraction=st.floats(0, 1))
def test_truncation_anywhere_is_rejected(scratch: Path, texts: dict[str, str], fraction: float) -> None:
    data = texts[ONE].encode()
    cut = round(fraction * len(data))
    path = write(scratch, ONE, data[:cut])
    result = run60(path)
    if cut >= len(data) - 2:  # only the final CR/LF is lost: the file is still complete
        assert only_sequence(result).keypoints.shape == (71, 1, 25, 3)
        return
    bad = rejected(result)
    if cut == 0:
        assert "empty" in bad.reason
    else:
        assert bad.line is not None and 1 <= bad.line <= data[:cut].count(b"\n") + 2, bad


@pytest.mark.parametrize("lost", [0, 1, 2, 3])
def test_truncation_at_the_end(tmp_path: Path, texts: dict[str, str], lost: int) -> None:
    data = texts[ONE].encode()
    assert data.endswith(b" 2\r\n")
    result = run60(write(tmp_path, ONE, data[: len(data) - lost]))
    if lost < 3:
        assert only_sequence(result).keypoints.shape == (71, 1, 25, 3)
    else:  # the last trackingState is gone
        assert rejected(result).line == data.count(b"\n") and "expected 12 fields, found 11" in rejected(result).reason


@_FUZZ
@given(fraction=st.floats(0, 1), junk=st.sampled_from(["g", "#", "@", "x1", "--", "0x1", "1_0", ",", "\x00", "\x07"]))
def test_inserted_junk_is_rejected_at_its_line(
    scratch: Path, texts: dict[str, str], fraction: float, junk: str
) -> None:
    data = texts[ONE].encode()
    pos = round(fraction * len(data))
    path = write(scratch, ONE, data[:pos] + junk.encode() + data[pos:])
    bad = rejected(run60(path))
    assert bad.line == data[:pos].count(b"\n") + 1, (pos, junk, bad)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(st.floats(0, 1), st.sampled_from(["delete", "replace", "insert", "dup_line", "drop_line"]),
                  st.binary(min_size=1, max_size=3) | st.sampled_from([b"0", b"9", b" ", b"\r\n", b"-", b".", b"e"])),
        min_size=1,
        max_size=3,
    ),
    bodies=st.sampled_from(["first2", "denoise"]),
)  # fmt: skip
def test_random_mutations_never_raise(scratch: Path, texts: dict[str, str], edits, bodies: str) -> None:
    path = write(scratch, TWO, mutate(texts[TWO].encode(), edits))
    result = run60(path, bodies=bodies)
    assert len(result.sequences) + len(result.rejected) == 1
    for seq in result.sequences:
        kp = seq.keypoints
        assert kp.dtype == np.float32 and kp.ndim == 4 and kp.shape[1:] in ((1, 25, 3), (2, 25, 3))
        assert np.isfinite(kp).all() and kp.any()
    for bad in result.rejected:
        assert bad.path == str(path) and bad.reason


# --------------------------------------------------------------------------------------------------
# Denoising heuristics (CTR-GCN / SGN) on edited copies of the two-body file


def _denoised(folder: Path, frames: Frames) -> np.ndarray:
    return only_sequence(run60(write(folder, TWO, join_file(frames)), bodies="denoise")).keypoints


def test_short_extra_body_is_removed(tmp_path: Path, texts: dict[str, str]) -> None:
    frames = split_file(texts[TWO])
    reference = _denoised(tmp_path, frames)
    edited = [list(bodies) for bodies in frames]
    for t in range(10, 15):  # a third body seen in 5 frames
        ghost = body_xyz(frames[t][0]) + np.float32([0.4, 0.0, 0.3])
        edited[t].append(with_body(frames[t][0], new_id="72057594037999999", xyz=ghost))
    np.testing.assert_array_equal(_denoised(tmp_path, edited), reference)
    # first2 ignores a third body listed last
    first2 = only_sequence(run60(write(tmp_path, TWO, join_file(edited)))).keypoints
    np.testing.assert_array_equal(first2, only_sequence(run60(write(tmp_path, TWO, join_file(frames)))).keypoints)


def test_body_id_listed_twice_in_a_frame_keeps_the_first(tmp_path: Path, texts: dict[str, str]) -> None:
    frames = split_file(texts[TWO])
    reference = _denoised(tmp_path, frames)
    edited = [list(bodies) for bodies in frames]
    edited[10].append(with_body(frames[10][0], xyz=body_xyz(frames[10][0]) + 0.25))  # same bodyID again
    np.testing.assert_array_equal(_denoised(tmp_path, edited), reference)


def test_wide_extra_body_is_removed(tmp_path: Path, texts: dict[str, str]) -> None:
    frames = split_file(texts[TWO])
    reference = _denoised(tmp_path, frames)
    edited = [list(bodies) for bodies in frames]
    for t, bodies in enumerate(frames):  # a long third body lying flat: x and y swapped
        xyz = body_xyz(bodies[0])[:, [1, 0, 2]] + np.float32([0.0, 0.0, 0.5])
        edited[t].insert(0, with_body(bodies[0], new_id="72057594037999999", xyz=xyz))
    assert spread_noise(np.stack([body_xyz(f[0]) for f in edited])).all()
    np.testing.assert_array_equal(_denoised(tmp_path, edited), reference)


def test_actor_order_follows_motion_not_file_order(tmp_path: Path, texts: dict[str, str]) -> None:
    frames = split_file(texts[TWO])
    swapped = [bodies[::-1] for bodies in frames]
    np.testing.assert_array_equal(_denoised(tmp_path, swapped), _denoised(tmp_path, frames))
    first2 = only_sequence(run60(write(tmp_path, TWO, join_file(swapped)))).keypoints
    np.testing.assert_array_equal(
        first2[:, ::-1], only_sequence(run60(write(tmp_path, TWO, join_file(frames)))).keypoints
    )


def test_frames_left_without_actor_are_dropped(tmp_path: Path, texts: dict[str, str]) -> None:
    frames = split_file(texts[TWO])
    edited = [list(bodies) for bodies in frames]
    for t in range(5):  # frames 1-5 hold only a short ghost body
        edited[t] = [with_body(frames[t][0], new_id="72057594037999999")]
    out = _denoised(tmp_path, edited)
    assert out.shape == (65, 2, 25, 3)
    tracks = [np.stack([body_xyz(f[k]) for f in frames[5:]]) for k in (0, 1)]
    order = sorted((0, 1), key=lambda k: -motion(tracks[k]))
    np.testing.assert_array_equal(out[:, 0], tracks[order[0]])
    np.testing.assert_array_equal(out[:, 1], tracks[order[1]])


def _track(body_id: str, frames: range | np.ndarray, xyz: np.ndarray) -> TrackedBody:
    frames = np.asarray(frames)
    return TrackedBody(body_id, frames, xyz, motion(xyz))


def test_length_rule_threshold(texts: dict[str, str]) -> None:
    xyz = np.stack([body_xyz(f[0]) for f in split_file(texts[TWO])])
    short = _track("1", range(NOISE_LENGTH), xyz[:NOISE_LENGTH])
    long = _track("2", range(NOISE_LENGTH + 1), xyz[: NOISE_LENGTH + 1])
    assert [b.body_id for b in filter_by_length([short, long])] == ["2"]
    # when every body is short the reference crashes; here nothing is removed
    assert [b.body_id for b in filter_by_length([short, short])] == ["1", "1"]


def test_spread_rule_threshold(texts: dict[str, str]) -> None:
    xyz = np.stack([body_xyz(f[0]) for f in split_file(texts[TWO])])[:50]
    flat = xyz[:, :, [1, 0, 2]]  # spread-noisy in every frame
    assert not spread_noise(xyz).any() and spread_noise(flat).all()
    steady = _track("steady", range(50), xyz)
    for noisy_frames, removed in ((34, False), (35, True)):  # 34/50 = 0.68 < 0.69754 <= 35/50
        mixed = np.concatenate([flat[:noisy_frames], xyz[noisy_frames:]])
        body = _track("mixed", range(50), mixed)
        kept = filter_by_spread([steady, body])
        assert [b.body_id for b in kept] == (["steady"] if removed else ["steady", "mixed"])
        if not removed:  # motion is lowered to that of its clean frames
            assert kept[1].motion == pytest.approx(min(body.motion, motion(xyz[noisy_frames:])))
    # the pass stops when one body is left: a lone noisy body stays
    assert [b.body_id for b in filter_by_spread([_track("a", range(50), flat), _track("b", range(50), flat)])] == ["b"]


def test_assign_actors_intervals(texts: dict[str, str]) -> None:
    xyz = np.stack([body_xyz(f[0]) for f in split_file(texts[TWO])])
    a = _track("a", range(0, 40), xyz[0:40])  # largest motion first: actor 1
    b = _track("b", range(40, 70), xyz[40:70])  # after a: joins actor 1
    c = _track("c", range(0, 70), xyz[0:70] + 1)  # overlaps actor 1: actor 2
    d = _track("d", range(20, 30), xyz[20:30] + 2)  # overlaps both: dropped
    out = assign_actors([a, b, c, d], 70)
    np.testing.assert_array_equal(out[:, 0], xyz)
    np.testing.assert_array_equal(out[:, 1], xyz + 1)
    # touching at one frame counts as no overlap, the later body overwriting the shared frame
    e = _track("e", range(39, 70), xyz[39:70] + 3)
    out = assign_actors([a, e], 70)
    np.testing.assert_array_equal(out[39:, 0], xyz[39:70] + 3)
    assert not out[:, 1].any()


# --------------------------------------------------------------------------------------------------
# End to end through the store driver


def test_prepare_store_end_to_end(tmp_path: Path, skeletons: Path, texts: dict[str, str]) -> None:
    prepare = pytest.importorskip("skelssl.data.prepare")
    from skelssl.data.store import SkeletonStore

    raw = tmp_path / "raw" / "nturgb+d_skeletons"
    raw.mkdir(parents=True)
    for name in FRAMES:
        shutil.copy(skeletons / f"{name}.skeleton", raw)
    write(raw, "S001C002P005R002A008", texts[ONE].encode())  # on the missing list
    write(raw, "S001C001P002R001A001", texts[ONE][:5000].encode())  # truncated
    importer = NTU60Importer(tmp_path / "raw")
    summary = prepare.prepare_store(importer, tmp_path / "store", workers=1)
    assert summary.num_sequences == 5 and len(summary.skipped) == 1 and len(summary.rejected) == 1
    assert summary.rejected[0].line is not None
    store = SkeletonStore.open(tmp_path / "store")
    assert len(store) == 5 and store.layout.name == "ntu25" and len(store.class_names) == 60
    assert sorted(store.field("subjects").tolist()) == [1, 3, 3, 8, 15]
    train = {str(store[i].name) for i in store.split_indices("xsub", "train")}
    assert train == {"S001C001P001R001A011", "S001C003P008R002A058", "S003C001P015R001A034"}  # P1, P8, P15
    view_train = {str(store[i].name) for i in store.split_indices("xview", "train")}
    assert view_train == {"S001C003P008R002A058", "S004C002P003R001A017"}
    for i in range(len(store)):
        item = store[i]
        seq = only_sequence(importer.run(str(raw / f"{item.name}.skeleton")))
        assert item.label == seq.label
        kp = np.asarray(item.keypoints)
        assert kp.shape == (FRAMES[str(item.name)], 2, 25, 3)
        np.testing.assert_array_equal(kp[:, : seq.keypoints.shape[1]], seq.keypoints)
        assert not kp[:, seq.keypoints.shape[1] :].any()


@pytest.mark.parametrize("encoding", sorted(WRONG_ENCODINGS))
def test_wrong_text_encoding_is_rejected(tmp_path: Path, texts: dict[str, str], encoding: str) -> None:
    path = write(tmp_path, ONE, WRONG_ENCODINGS[encoding](texts[ONE].encode()))
    bad = rejected(run60(path))
    assert bad.path == str(path) and bad.line is not None and ("ASCII" in bad.reason or "UTF-8" in bad.reason), bad


def test_byte_order_mark_is_rejected_as_non_ascii(tmp_path: Path, texts: dict[str, str]) -> None:
    bad = rejected(run60(write(tmp_path, ONE, utf8_bom(texts[ONE].encode()))))
    assert bad.line == 1 and "non-ASCII" in bad.reason  # .skeleton files are ASCII: no editor has touched them
