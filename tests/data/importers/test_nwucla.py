"""NW-UCLA importer on the real ``all_sqe`` json files, and on edited copies of them."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skelssl.data.importers import get_importer_class
from skelssl.data.importers.base import Importer, TaskResult
from skelssl.data.importers.nwucla import ACTION_IDS, CLASS_NAMES, NWUCLAImporter
from skelssl.errors import BadInputError
from tests.data.importers.fuzzing import WRONG_ENCODINGS, utf8_bom

FIRST = "a01_s01_e00_v01"
SHORT = ("a02_s09_e04_v02", "a02_s09_e04_v03")  # the single-frame files


@pytest.fixture(scope="module")
def ucla(shared_data: Path) -> Path:
    return shared_data / "nw-ucla" / "all_sqe"


@pytest.fixture(scope="module")
def imported(ucla: Path) -> tuple[Importer, list, list]:
    importer = NWUCLAImporter(ucla)
    sequences, rejected = [], []
    for task in importer.tasks():
        result = importer.run(task)
        sequences += result.sequences
        rejected += result.rejected
    return importer, sequences, rejected


def test_registry_and_layout() -> None:
    assert get_importer_class("nw-ucla") is NWUCLAImporter
    importer = NWUCLAImporter("unused")
    assert importer.layout == "kinect20" and importer.num_persons == 1
    assert importer.class_names() == list(CLASS_NAMES)
    assert importer.class_names()[0] == "pick up with one hand" and importer.class_names()[9] == "carry"


def test_whole_dataset(imported: tuple[Importer, list, list]) -> None:
    importer, sequences, rejected = imported
    assert rejected == []
    assert len(sequences) == 1484
    assert len({s.name for s in sequences}) == 1484
    views = collections.Counter(s.fields["views"] for s in sequences)
    assert views == {1: 516, 2: 504, 3: 464}  # SOURCE.txt
    assert {s.fields["subjects"] for s in sequences} == set(range(1, 11))
    assert {s.label for s in sequences} == set(range(10))
    for s in sequences:
        assert set(s.fields) == {"subjects", "views", "takes"}
        assert ACTION_IDS[s.label] == int(s.name[1:3])
        assert s.keypoints.dtype == np.float32 and s.keypoints.shape[1:] == (1, 20, 3)
    lengths = [s.keypoints.shape[0] for s in sequences]
    assert min(lengths) == 1 and max(lengths) == 201
    assert sorted(s.name for s in sequences if s.keypoints.shape[0] == 1) == list(SHORT)
    split = importer.splits()["xview"]
    assert split["by"] == "views"
    train = [s for s in sequences if s.fields["views"] in split["train"]]
    test = [s for s in sequences if s.fields["views"] in split["test"]]
    assert (len(train), len(test)) == (1020, 464)


def test_values_equal_the_raw_numbers(ucla: Path, imported: tuple[Importer, list, list]) -> None:
    """Numbers read from the file text with a regex (not json) equal the imported keypoints."""
    by_name = {s.name: s for s in imported[1]}
    for name in (FIRST, "a12_s10_e04_v03", SHORT[0]):
        text = (ucla / f"{name}.json").read_text()
        body = text[text.index('"skeletons"') : text.index('"label"')]
        numbers = np.array(re.findall(r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", body), dtype=np.float64)
        keypoints = by_name[name].keypoints
        assert keypoints.size == numbers.size
        np.testing.assert_allclose(keypoints.reshape(-1), numbers.astype(np.float32), rtol=0, atol=0)
        label = int(re.search(r'"label":\s*(\d+)', text).group(1))
        assert by_name[name].label == label - 1
    first = by_name[FIRST]
    assert first.fields == {"subjects": 1, "views": 1, "takes": 0}
    np.testing.assert_array_equal(first.keypoints[0, 0, 0], np.float32([-0.619699, 0.328046, 3.18186]))


def test_known_view2_view3_duplicates(imported: tuple[Importer, list, list]) -> None:
    """The data issue describe() reports: 95 view-3 files repeat the view-2 skeletons (actions a02/a03)."""
    by_name = {s.name: s for s in imported[1]}
    same = [
        n
        for n, s in by_name.items()
        if n.endswith("_v03")
        and n[:-1] + "2" in by_name
        and np.array_equal(s.keypoints, by_name[n[:-1] + "2"].keypoints)
    ]
    assert len(same) == 95 and {n[:3] for n in same} == {"a02", "a03"}
    assert any("95 view-3 files" in note for note in imported[0].describe()["notes"])


def test_tasks_accept_parent_folder_and_are_sorted(ucla: Path) -> None:
    tasks = NWUCLAImporter(ucla.parent).tasks()
    assert tasks == NWUCLAImporter(ucla).tasks() == sorted(tasks)
    assert len(tasks) == 1484


def test_tasks_refuse_unusable_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not a folder"):
        NWUCLAImporter(tmp_path / "missing").tasks()
    with pytest.raises(BadInputError, match=r"no \*\.json"):
        NWUCLAImporter(tmp_path).tasks()


def _edited(ucla: Path, tmp_path: Path, name: str = FIRST) -> tuple[dict, Path]:
    """A parsed copy of a real file, and the path its edited version should be written to."""
    return json.loads((ucla / f"{name}.json").read_text()), tmp_path / f"{name}.json"


def _run_one(path: Path) -> TaskResult:
    result = NWUCLAImporter(path.parent).run(str(path))
    assert len(result.sequences) + len(result.rejected) == 1
    return result


def _rejected(path: Path) -> str:
    result = _run_one(path)
    assert not result.sequences, "the edited file should have been rejected"
    assert result.rejected[0].path == str(path)
    return result.rejected[0].reason


def test_rejects_edited_copies(ucla: Path, tmp_path: Path) -> None:
    obj, path = _edited(ucla, tmp_path)

    def write(change: dict) -> str:
        path.write_text(json.dumps({**obj, **change}))
        return _rejected(path)

    frames = obj["skeletons"]
    assert "19 joints" in write({"skeletons": [frame[:19] for frame in frames]})
    assert "no frames" in write({"skeletons": []})
    assert "unequal shape" in write({"skeletons": [frames[0], frames[1][:19]]})
    assert "not numbers" in write({"skeletons": [[["x", 0, 0]] * 20]})
    assert "shape" in write({"skeletons": [[[0.1, 0.2]] * 20]})
    assert "a03, but the file name says a01" in write({"label": 3})
    assert "outside 1..10" in write({"label": 11})
    assert "outside 1..10" in write({"label": 0})
    assert "not an integer" in write({"label": True})
    assert "not an integer" in write({"label": "1"})
    assert "does not match" in write({"file_name": "a01_s01_e00_v02"})
    assert "form aAA_sSS_eEE_vVV" in write({"file_name": "sample1"})
    nan = [[list(j) for j in frame] for frame in frames]
    nan[3][5][1] = float("nan")
    assert "NaN or inf" in write({"skeletons": nan}) and "frame 3" in _rejected(path)
    assert "every coordinate is zero" in write({"skeletons": [[[0, 0, 0]] * 20] * 4})
    for key in ("label", "skeletons", "file_name"):
        path.write_text(json.dumps({k: v for k, v in obj.items() if k != key}))
        assert f"missing key(s) {key}" in _rejected(path)
    path.write_text(json.dumps([obj]))
    assert "json object" in _rejected(path)


def test_rejects_view_and_action_outside_the_dataset(ucla: Path, tmp_path: Path) -> None:
    obj, _ = _edited(ucla, tmp_path)
    path = tmp_path / "a01_s01_e00_v04.json"
    path.write_text(json.dumps({**obj, "file_name": path.stem}))
    assert "view 4" in _rejected(path)
    path = tmp_path / "a07_s01_e00_v01.json"
    path.write_text(json.dumps({**obj, "file_name": path.stem, "label": 7}))
    assert "a07 is not an NW-UCLA action" in _rejected(path)


def test_rejects_broken_bytes(ucla: Path, tmp_path: Path) -> None:
    raw = (ucla / f"{FIRST}.json").read_bytes()
    path = tmp_path / f"{FIRST}.json"
    path.write_bytes(raw[: len(raw) // 2])
    assert "invalid json" in _rejected(path)
    assert _run_one(path).rejected[0].line == 1
    path.write_bytes(b"")
    assert "empty" in _rejected(path)
    path.write_bytes(raw[:100] + b"\xff\xfe" + raw[100:])
    assert "UTF-8" in _rejected(path)
    path.write_bytes(raw.replace(b'"label": 1', b'"label": 1,,'))
    assert "invalid json" in _rejected(path)
    path.write_text('{"skeletons": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert _rejected(path)


def test_keeps_the_single_frame_file(ucla: Path) -> None:
    result = _run_one(ucla / f"{SHORT[0]}.json")
    assert result.sequences[0].keypoints.shape == (1, 1, 20, 3)
    assert result.digest


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 5000), junk=st.binary(max_size=20), at=st.integers(0, 5000))
def test_run_never_raises_on_mangled_files(ucla: Path, tmp_path: Path, cut: int, junk: bytes, at: int) -> None:
    raw = (ucla / f"{FIRST}.json").read_bytes()[: 5000 + cut]
    at = at % (len(raw) + 1)
    path = tmp_path / f"{FIRST}.json"
    path.write_bytes(raw[:at] + junk + raw[at:])
    _run_one(path)


def test_prepare_store_end_to_end(ucla: Path, tmp_path: Path) -> None:
    prepare = pytest.importorskip("skelssl.data.prepare")
    store_mod = pytest.importorskip("skelssl.data.store")
    summary = prepare.prepare_store(NWUCLAImporter(ucla), tmp_path / "store", workers=1)
    assert summary.num_sequences == 1484 and summary.rejected == []
    store = store_mod.SkeletonStore.open(tmp_path / "store")
    assert len(store) == 1484 and store.layout.name == "kinect20"
    assert len(store.split_indices("xview", "train")) == 1020
    assert len(store.split_indices("xview", "test")) == 464
    assert store.class_names == list(CLASS_NAMES)
    i = int(np.flatnonzero(store.names == FIRST)[0])
    assert store[i].fields == {"subjects": 1, "views": 1, "takes": 0}
    np.testing.assert_array_equal(store[i].keypoints[0, 0, 0], np.float32([-0.619699, 0.328046, 3.18186]))


@pytest.mark.parametrize("encoding", sorted(WRONG_ENCODINGS))
def test_wrong_text_encoding_is_rejected(ucla: Path, tmp_path: Path, encoding: str) -> None:
    path = tmp_path / f"{FIRST}.json"
    path.write_bytes(WRONG_ENCODINGS[encoding]((ucla / f"{FIRST}.json").read_bytes()))
    assert "UTF-8" in _rejected(path)


def test_utf8_byte_order_mark_is_accepted(ucla: Path, tmp_path: Path) -> None:
    path = tmp_path / f"{FIRST}.json"
    path.write_bytes(utf8_bom((ucla / f"{FIRST}.json").read_bytes()))
    marked = _run_one(path).sequences[0]
    plain = _run_one(ucla / f"{FIRST}.json").sequences[0]
    np.testing.assert_array_equal(marked.keypoints, plain.keypoints)
