"""SBU Kinect Interaction importer on the real files, and on edited copies of them."""

from __future__ import annotations

import collections
import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skelssl.data.importers import get_importer_class
from skelssl.data.importers.base import Importer
from skelssl.data.importers.sbu import CLASS_NAMES, PAIRS, SBUImporter
from skelssl.errors import BadInputError
from skelssl.skeleton.layouts import get_layout
from tests.data.importers.fuzzing import WRONG_ENCODINGS, utf8_bom

FIRST = Path("s01s02") / "01" / "001" / "skeleton_pos.txt"


@pytest.fixture(scope="module")
def sbu(shared_data: Path) -> Path:
    return shared_data / "sbu-interaction" / "SBU"


@pytest.fixture(scope="module")
def imported(sbu: Path) -> tuple[Importer, list, list]:
    importer = SBUImporter(sbu)
    sequences, rejected = [], []
    for task in importer.tasks():
        result = importer.run(task)
        sequences += result.sequences
        rejected += result.rejected
    return importer, sequences, rejected


def _raw_rows(path: Path) -> np.ndarray:
    """The file parsed with the csv module: (T, 91) floats."""
    with path.open(newline="") as handle:
        return np.array([[float(v) for v in row] for row in csv.reader(handle) if row])


def test_registry_layout_and_classes() -> None:
    assert get_importer_class("sbu") is SBUImporter
    importer = SBUImporter("unused")
    assert importer.layout == "sbu15" and importer.num_persons == 2
    assert importer.class_names() == [
        "approaching", "departing", "kicking", "punching", "pushing", "hugging", "shaking hands", "exchanging",
    ]  # fmt: skip
    # README joint order 1..15: head, neck, torso, l shoulder, l elbow, l hand, r shoulder, r elbow, r hand,
    # l hip, l knee, l foot, r hip, r knee, r foot
    joints = get_layout("sbu15").joints
    assert joints[:3] == ("head", "neck", "torso")
    assert joints[3:9] == ("left_shoulder", "left_elbow", "left_hand", "right_shoulder", "right_elbow", "right_hand")
    assert joints[9:] == ("left_hip", "left_knee", "left_foot", "right_hip", "right_knee", "right_foot")


def test_whole_dataset(sbu: Path, imported: tuple[Importer, list, list]) -> None:
    _, sequences, rejected = imported
    assert rejected == []
    assert len(sequences) == 282  # SOURCE.txt
    assert len({s.name for s in sequences}) == 282
    assert {s.fields["pairs"] for s in sequences} == set(PAIRS)
    assert sum(s.keypoints.shape[0] for s in sequences) == 6822  # frames reported for SBU
    assert min(s.keypoints.shape[0] for s in sequences) == 10
    assert max(s.keypoints.shape[0] for s in sequences) == 46
    files = sorted(sbu.glob("*/*/*/skeleton_pos.txt"))
    per_class = collections.Counter(int(p.parts[-3]) - 1 for p in files)
    assert collections.Counter(s.label for s in sequences) == per_class
    for s in sequences:
        assert s.keypoints.shape[1:] == (2, 15, 3) and s.keypoints.dtype == np.float32
        assert set(s.fields) == {"pairs", "takes"}


def test_values_equal_the_raw_numbers(sbu: Path, imported: tuple[Importer, list, list]) -> None:
    by_name = {s.name: s for s in imported[1]}
    for rel in (FIRST, Path("s07s03") / "08" / "001" / "skeleton_pos.txt"):
        rows = _raw_rows(sbu / rel)
        seq = by_name[f"{rel.parts[0]}_{rel.parts[1]}_{rel.parts[2]}"]
        assert seq.keypoints.shape[0] == len(rows)
        for t in (0, len(rows) // 2, len(rows) - 1):
            for person in (0, 1):
                for joint in (0, 7, 14):
                    col = 1 + person * 45 + joint * 3
                    np.testing.assert_array_equal(
                        seq.keypoints[t, person, joint], rows[t, col : col + 3].astype(np.float32)
                    )
        assert seq.fields == {"pairs": rel.parts[0], "takes": int(rel.parts[2])}
        assert seq.label == int(rel.parts[1]) - 1
    first = by_name["s01s02_01_001"]
    np.testing.assert_array_equal(first.keypoints[0, 0, 0], np.float32([0.21496, 0.32665, 1.7849]))


def test_denormalize_option(sbu: Path) -> None:
    importer = SBUImporter(sbu, denormalize="true")
    seq = importer.run(str(sbu / FIRST)).sequences[0]
    raw = _raw_rows(sbu / FIRST)[:, 1:].reshape(-1, 2, 15, 3)
    expected = np.stack([1280 - 2560 * raw[..., 0], 960 - 1920 * raw[..., 1], raw[..., 2] * 10000 / 7.8125], axis=-1)
    np.testing.assert_allclose(seq.keypoints, expected.astype(np.float32), rtol=1e-6)
    assert "denormalised" in importer.describe()["coordinates"]
    assert "normalised values" in SBUImporter(sbu).describe()["coordinates"]


def test_folds_are_the_readme_folds(sbu: Path) -> None:
    splits = SBUImporter(sbu).splits()
    assert list(splits) == [f"fold{k}" for k in range(1, 6)]
    assert splits["fold1"]["test"] == ["s01s02", "s03s04", "s05s02", "s06s04"]
    assert splits["fold2"]["test"] == ["s02s03", "s02s07", "s03s05", "s05s03"]
    assert splits["fold3"]["test"] == ["s01s03", "s01s07", "s07s01", "s07s03"]
    assert splits["fold4"]["test"] == ["s02s01", "s02s06", "s03s02", "s03s06"]
    assert splits["fold5"]["test"] == ["s04s02", "s04s03", "s04s06", "s06s02", "s06s03"]
    tests = [p for spec in splits.values() for p in spec["test"]]
    on_disk = sorted(p.name for p in sbu.iterdir() if p.is_dir())
    assert sorted(tests) == on_disk and len(set(tests)) == 21  # a partition of the 21 sets on disk
    for spec in splits.values():
        assert spec["by"] == "pairs"
        assert sorted(spec["train"] + spec["test"]) == on_disk and not set(spec["train"]) & set(spec["test"])


def test_tasks(sbu: Path, tmp_path: Path) -> None:
    tasks = SBUImporter(sbu.parent).tasks()
    assert tasks == SBUImporter(sbu).tasks() == sorted(tasks) and len(tasks) == 282
    with pytest.raises(BadInputError, match="not a folder"):
        SBUImporter(tmp_path / "missing").tasks()
    with pytest.raises(BadInputError, match="no sXXsYY"):
        SBUImporter(tmp_path).tasks()


def _copy(sbu: Path, tmp_path: Path, rel: Path = FIRST) -> Path:
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((sbu / FIRST).read_bytes())
    return path


def _rejected(path: Path) -> tuple[str, int | None]:
    result = SBUImporter(path.parents[3]).run(str(path))
    assert not result.sequences and len(result.rejected) == 1
    assert result.rejected[0].path == str(path)
    return result.rejected[0].reason, result.rejected[0].line


def test_rejects_edited_copies(sbu: Path, tmp_path: Path) -> None:
    path = _copy(sbu, tmp_path)
    lines = path.read_text().splitlines()

    def write(new_lines: list[str]) -> tuple[str, int | None]:
        path.write_text("\r\n".join(new_lines) + "\r\n")
        return _rejected(path)

    reason, line = write([*lines[:3], ",".join(lines[3].split(",")[:60]), *lines[4:]])
    assert "60 comma-separated values, expected 91" in reason and line == 4
    reason, line = write([*lines[:5], lines[5] + ",0.1,0.2,0.3", *lines[6:]])  # a 16th joint
    assert "94 comma-separated" in reason and line == 6
    reason, line = write([*lines[:2], lines[2].replace(",", ",x", 1), *lines[3:]])
    assert "not a number" in reason and line == 3
    fields = lines[7].split(",")
    fields[5] = "NaN"
    reason, _ = write([*lines[:7], ",".join(fields), *lines[8:]])
    assert "NaN or inf coordinate in frame 7" in reason
    reason, line = write([lines[1], lines[0], *lines[2:]])
    assert "do not increase" in reason and line == 2
    reason, line = write([*lines[:4], "", *lines[4:]])
    assert "expected 91" in reason and line == 5
    reason, _ = write([",".join([lines[0].split(",")[0]] + ["0"] * 90)])
    assert "every coordinate is zero" in reason
    reason, line = write([lines[0].replace(lines[0].split(",")[0], "1.5", 1)])
    assert "not integers" in reason and line == 1
    path.write_bytes(b"")
    assert "empty" in _rejected(path)[0]
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert "UTF-8" in _rejected(path)[0]
    path.write_text("\n\n")
    assert "no rows" in _rejected(path)[0]


@pytest.mark.parametrize(
    ("rel", "needle"),
    [
        (Path("s01s02") / "09" / "001" / "skeleton_pos.txt", "class folder '09'"),
        (Path("s01s02") / "00" / "001" / "skeleton_pos.txt", "class folder '00'"),
        (Path("s01s02") / "1" / "001" / "skeleton_pos.txt", "class folder '1'"),
        (Path("s01s02") / "01" / "first" / "skeleton_pos.txt", "take folder 'first'"),
    ],
)
def test_rejects_unknown_class_or_take_folder(sbu: Path, tmp_path: Path, rel: Path, needle: str) -> None:
    path = _copy(sbu, tmp_path, rel)
    assert SBUImporter(tmp_path).tasks() == [str(path)]
    assert needle in _rejected(path)[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 30_000), junk=st.binary(max_size=20), at=st.integers(0, 30_000))
def test_run_never_raises_on_mangled_files(sbu: Path, tmp_path: Path, cut: int, junk: bytes, at: int) -> None:
    raw = (sbu / FIRST).read_bytes()
    raw = raw[: cut % (len(raw) + 1)]
    at = at % (len(raw) + 1)
    path = _copy(sbu, tmp_path)
    path.write_bytes(raw[:at] + junk + raw[at:])
    result = SBUImporter(tmp_path).run(str(path))
    assert len(result.sequences) + len(result.rejected) == 1


def test_prepare_store_end_to_end(sbu: Path, tmp_path: Path) -> None:
    prepare = pytest.importorskip("skelssl.data.prepare")
    store_mod = pytest.importorskip("skelssl.data.store")
    summary = prepare.prepare_store(SBUImporter(sbu), tmp_path / "store", workers=1)
    assert summary.num_sequences == 282 and summary.rejected == []
    store = store_mod.SkeletonStore.open(tmp_path / "store")
    assert store.layout.name == "sbu15" and store.class_names == list(CLASS_NAMES)
    pairs = store.field("pairs")
    for k in range(1, 6):
        test = store.split_indices(f"fold{k}", "test")
        train = store.split_indices(f"fold{k}", "train")
        assert len(test) + len(train) == 282 and not set(test) & set(train)
        assert set(pairs[test]) == set(store.splits[f"fold{k}"]["test"])


@pytest.mark.parametrize("encoding", sorted(WRONG_ENCODINGS))
def test_wrong_text_encoding_is_rejected(sbu: Path, tmp_path: Path, encoding: str) -> None:
    path = _copy(sbu, tmp_path)
    path.write_bytes(WRONG_ENCODINGS[encoding](path.read_bytes()))
    assert "UTF-8" in _rejected(path)[0]


def test_utf8_byte_order_mark_is_accepted(sbu: Path, tmp_path: Path) -> None:
    path = _copy(sbu, tmp_path)
    path.write_bytes(utf8_bom(path.read_bytes()))
    marked = SBUImporter(path.parents[3]).run(str(path))
    plain = SBUImporter(sbu).run(str(sbu / FIRST))
    assert not marked.rejected
    np.testing.assert_array_equal(marked.sequences[0].keypoints, plain.sequences[0].keypoints)
