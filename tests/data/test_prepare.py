from __future__ import annotations

import json
from pathlib import Path

import pytest

from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.errors import StoreError

from ._toy import ToyImporter


@pytest.fixture(scope="module")
def files(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "nw-ucla" / "all_sqe").glob("a0[12]_s0[12]_*.json"))


def _store_bytes(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in ("keypoints.npy", "index.npz", "rejected.json")}


def test_workers_give_identical_stores(files: list[Path], tmp_path: Path) -> None:
    one = prepare_store(ToyImporter(files), tmp_path / "one", workers=1)
    two = prepare_store(ToyImporter(files), tmp_path / "two", workers=2)
    assert one.num_sequences == two.num_sequences == len(files)
    assert _store_bytes(tmp_path / "one") == _store_bytes(tmp_path / "two")
    m1 = json.loads((tmp_path / "one" / "meta.json").read_text())
    m2 = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert m1["input_checksum"] == m2["input_checksum"]


def test_bad_files_are_rejected_and_the_rest_kept(files: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    trunc = bad / "a01_s09_e00_v01.json"
    trunc.write_bytes(files[0].read_bytes()[:500])
    nan = bad / "a01_s09_e01_v01.json"
    obj = json.loads(files[1].read_text())
    obj["skeletons"][3][4][1] = float("nan")
    nan.write_text(json.dumps(obj))
    empty = bad / "a01_s09_e02_v01.json"
    empty.write_bytes(b"")
    label = bad / "a01_s09_e03_v01.json"
    obj = json.loads(files[2].read_text())
    obj["label"], obj["file_name"] = 42, "a99_s09_e03_v01"
    label.write_text(json.dumps(obj))
    inputs = [*files[:3], trunc, nan, empty, label, files[0]]  # the last one is a duplicate name
    summary = prepare_store(ToyImporter(inputs), tmp_path / "store")
    assert summary.num_sequences == 3
    reasons = {Path(r.path).name: r.reason for r in summary.rejected}
    assert "invalid json" in reasons[trunc.name]
    assert "NaN" in reasons[nan.name] and "frame 3" in reasons[nan.name]
    assert "empty" in reasons[empty.name]
    assert "outside the 10 classes" in reasons["a99_s09_e03_v01"]
    assert "duplicate" in reasons[files[0].stem]
    on_disk = json.loads((tmp_path / "store" / "rejected.json").read_text())["rejected"]
    assert len(on_disk) == len(summary.rejected) == 5
    assert SkeletonStore.open(tmp_path / "store").meta["num_rejected"] == 5


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_prepare_leaves_no_store(files: list[Path], tmp_path: Path, workers: int) -> None:
    out = tmp_path / "store"
    exc = KeyboardInterrupt if workers == 1 else RuntimeError
    with pytest.raises(exc):
        prepare_store(ToyImporter(files, fail_on=3, exc=exc), out, workers=workers)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial directory left behind


def test_existing_store_is_kept_unless_overwrite(files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "store"
    prepare_store(ToyImporter(files[:2]), out)
    with pytest.raises(StoreError, match="already exists"):
        prepare_store(ToyImporter(files), out)
    assert len(SkeletonStore.open(out)) == 2
    with pytest.raises(KeyboardInterrupt):  # a failed overwrite keeps the old store
        prepare_store(ToyImporter(files, fail_on=1), out, overwrite=True)
    assert len(SkeletonStore.open(out)) == 2
    prepare_store(ToyImporter(files), out, overwrite=True)
    assert len(SkeletonStore.open(out)) == len(files)


def test_overwrite_refuses_a_non_store(files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(StoreError, match="not a skelssl store"):
        prepare_store(ToyImporter(files[:2]), out, overwrite=True)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_nothing_valid_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "a.json"
    bad.write_text("[]")
    with pytest.raises(StoreError, match="no valid sequence"):
        prepare_store(ToyImporter([bad]), tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_stale_partial_directories_are_cleaned(files: list[Path], tmp_path: Path) -> None:
    stale = tmp_path / ".store.partial-999999999"
    stale.mkdir()
    (stale / "keypoints.npy").write_bytes(b"half")
    prepare_store(ToyImporter(files[:2]), tmp_path / "store")
    assert not stale.exists()
