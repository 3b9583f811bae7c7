"""The bundled NW-UCLA demo data, the script that makes it, and ``skelssl demo``."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from skelssl.cli import main
from skelssl.data.importers import get_importer_class
from skelssl.data.importers.nwucla import ACTION_IDS, CLASS_NAMES
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.demo import DEMO_DATA, DEMO_SPLIT, _check_out, demo_metadata, run_demo
from skelssl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _make_script():
    spec = importlib.util.spec_from_file_location("make_demo_data", ROOT / "scripts" / "make_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    """The bundled file imported with the generic importer, as ``skelssl demo`` does."""
    out = tmp_path_factory.mktemp("demo") / "store"
    prepare_store(get_importer_class("generic")(DEMO_DATA), out)
    return SkeletonStore.open(out)


@pytest.fixture(scope="module")
def ucla_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every 25th NW-UCLA json file (60 files, all views and actions) with the dataset's SOURCE.txt."""
    src = shared_data / "nw-ucla"
    out = tmp_path_factory.mktemp("ucla") / "nw-ucla"
    (out / "all_sqe").mkdir(parents=True)
    shutil.copy(src / "SOURCE.txt", out / "SOURCE.txt")
    for path in sorted((src / "all_sqe").glob("*.json"))[::25]:
        shutil.copy(path, out / "all_sqe" / path.name)
    return out


# ------------------------------------------------------------------------------------------ the bundled file


def test_bundled_file_is_small_and_float16():
    assert DEMO_DATA.is_file()
    assert DEMO_DATA.stat().st_size <= 8 * 1024 * 1024
    with np.load(DEMO_DATA, allow_pickle=False) as data:
        assert data["keypoints"].dtype == np.float16
        assert data["keypoints"].shape[1:] == (1, 20, 3)
    assert (DEMO_DATA.parent / "NW-UCLA-DEMO.md").is_file()


def test_bundled_file_metadata_carries_attribution_terms_and_error():
    meta = demo_metadata()
    assert "CC BY-NC 4.0" in meta["source"]["terms"]
    assert "CVPR 2014" in meta["citation"]
    assert meta["sequences"] == 1484 and meta["frames"] == 58534
    # float16 rounding of coordinates up to ~5 m moves them by at most half of the spacing 2**-8 m
    assert 0 < meta["float16_max_abs_error"] <= 2.0**-9
    assert meta["split"]["train"] == 1020 and meta["split"]["test"] == 464


def test_bundled_file_imports_into_the_full_cross_view_store(demo_store: SkeletonStore):
    assert len(demo_store) == 1484
    assert demo_store.layout.name == "kinect20"
    assert demo_store.class_names == list(CLASS_NAMES)
    train = demo_store.split_indices(DEMO_SPLIT, "train")
    test = demo_store.split_indices(DEMO_SPLIT, "test")
    assert (len(train), len(test)) == (1020, 464)
    views = demo_store.field("views")
    assert set(views[train].tolist()) == {1, 2} and set(views[test].tolist()) == {3}


def test_bundled_names_and_labels_match_every_source_file(demo_store: SkeletonStore, shared_data: Path):
    files = sorted(p.stem for p in (shared_data / "nw-ucla" / "all_sqe").glob("*.json"))
    assert list(demo_store.names) == files
    pattern = re.compile(r"a(\d\d)_s(\d\d)_e\d\d_v(\d\d)")
    parsed = [tuple(int(g) for g in pattern.fullmatch(name).groups()) for name in files]
    assert demo_store.labels.tolist() == [ACTION_IDS.index(a) for a, _, _ in parsed]
    assert demo_store.field("subjects").tolist() == [s for _, s, _ in parsed]
    assert demo_store.field("views").tolist() == [v for _, _, v in parsed]


def test_bundled_coordinates_equal_the_nwucla_importer_to_float16(
    demo_store: SkeletonStore, ucla_subset: Path, tmp_path: Path
):
    ref = SkeletonStore.open(prepare_store(get_importer_class("nw-ucla")(ucla_subset / "all_sqe"), tmp_path / "s").path)
    where = {name: i for i, name in enumerate(demo_store.names)}
    worst = 0.0
    for i in range(len(ref)):
        expect = ref[i].keypoints  # (T, M, V, C) float32, the importer's values
        got = demo_store[where[ref.names[i]]]
        assert got.label == ref[i].label
        assert got.keypoints.dtype == np.float32 and got.keypoints.shape == expect.shape
        np.testing.assert_array_equal(got.keypoints, expect.astype(np.float16).astype(np.float32))
        worst = max(worst, float(np.abs(got.keypoints - expect).max()))
    assert 0 < worst <= demo_metadata()["float16_max_abs_error"]


# ------------------------------------------------------------------------------------------ the make script


def test_make_script_is_deterministic_and_readable(ucla_subset: Path, tmp_path: Path):
    make = _make_script()
    first = make.make_demo_data(ucla_subset, tmp_path / "a.npz", echo=lambda s: None)
    make.make_demo_data(ucla_subset, tmp_path / "b.npz", echo=lambda s: None)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert first["sequences"] == 60 and first["split"]["train"] + first["split"]["test"] == 60
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert json.loads(archive.comment)["source"]["terms"].startswith("NW-UCLA")
    store = SkeletonStore.open(prepare_store(get_importer_class("generic")(tmp_path / "a.npz"), tmp_path / "s").path)
    assert len(store) == 60
    ref = SkeletonStore.open(prepare_store(get_importer_class("nw-ucla")(ucla_subset), tmp_path / "r").path)
    assert list(store.names) == list(ref.names)
    assert np.array_equal(store.split_indices(DEMO_SPLIT, "test"), ref.split_indices("xview", "test"))
    error = max(float(np.abs(store[i].keypoints - ref[i].keypoints).max()) for i in range(len(ref)))
    assert error == pytest.approx(first["float16_max_abs_error"])


# ------------------------------------------------------------------------------------------ skelssl demo


def test_demo_smoke_run_writes_both_rows(tmp_path: Path):
    lines: list[str] = []
    out = tmp_path / "demo"
    report = run_demo(out, epochs=1, limit=64, threads=1, echo=lines.append)
    saved = json.loads((out / "report.json").read_text())
    assert saved["method"] == "mamp" and saved["epochs"] == 1 and saved["shortened"] is True
    for row in ("pretrained", "random_init"):
        for key in ("top1", "knn_top1"):
            assert 0.0 <= saved[row][key] <= 1.0
        assert Path(saved[row]["linear_report"]).is_file() and Path(saved[row]["knn_report"]).is_file()
    assert saved["data"]["sequences"] == 64 and saved["data"]["train"] + saved["data"]["test"] == 64
    assert saved["seconds"] >= saved["pretrain_seconds"] > 0
    assert report["pretrained"]["top1"] == saved["pretrained"]["top1"]
    assert (out / "run" / "encoder.safetensors").is_file()
    assert (out / "eval" / "random-init" / "linear" / "confusion.png").is_file()
    knn = [json.loads(Path(saved[r]["knn_report"]).read_text()) for r in ("pretrained", "random_init")]
    assert [k["encoder"]["random_init"] for k in knn] == [False, True]
    text = "\n".join(lines)
    assert "SHORTENED to 1 epochs" in text and "random init" in text


def test_demo_refuses_a_non_empty_folder_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        run_demo(tmp_path, epochs=1)
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown method"):
        run_demo(tmp_path / "new", method="simclr")
    with pytest.raises(ConfigError, match="epochs"):
        run_demo(tmp_path / "new", epochs=0)
    assert not (tmp_path / "new").exists()


def test_overwrite_removes_only_the_demos_outputs(tmp_path: Path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "keypoints.npy").write_bytes(b"x")
    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "mine.txt").write_text("keep me")
    _check_out(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@pytest.mark.slow
def test_full_demo_pretrained_beats_random_init(tmp_path: Path):
    report = run_demo(tmp_path / "demo", threads=2)
    assert report["data"]["sequences"] == 1484
    assert report["pretrained"]["top1"] > report["random_init"]["top1"]
