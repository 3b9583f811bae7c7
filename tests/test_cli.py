"""End-to-end: the `skelssl` command on the real datasets, as the README shows it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skelssl.cli import main
from skelssl.data.store import SkeletonStore


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skelssl.cli", *args], capture_output=True, text=True, check=False)


def test_prepare_and_info_ntu_samples(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ntu"
    res = _run("prepare", "ntu60", "--input", str(shared_data / "ntu60-samples" / "skeletons"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("prepared 5 sequences") and "0 rejected" in last
    store = SkeletonStore.open(out)
    assert len(store) == 5 and store.num_persons == 2 and store.layout.name == "ntu25"
    info = _run("info", str(out))
    assert info.returncode == 0, info.stderr
    assert "sequences  5" in info.stdout and "xsub" in info.stdout and "xview" in info.stdout
    assert "reading" in info.stdout  # class names are shown
    assert info.stdout.strip().splitlines()[-1].startswith("ntu: 5 sequences, 60 classes")


def test_prepare_nwucla_with_workers_and_strict(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "all_sqe"
    src.mkdir()
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a0[1-3]_s0[1-3]_*.json")):
        shutil.copy(f, src / f.name)
    (src / "a01_s01_e09_v01.json").write_text('{"file_name": "a01_s01_e09_v01", "skeletons": [[[0, 0')
    out = tmp_path / "ucla"
    code = main(["prepare", "nw-ucla", "--input", str(src), "--out", str(out), "--workers", "2"])
    assert code == 0
    rejected = json.loads((out / "rejected.json").read_text())["rejected"]
    assert [Path(r["path"]).name for r in rejected] == ["a01_s01_e09_v01.json"]
    # --strict: same input, non-zero exit, the reason printed
    res = _run("prepare", "nw-ucla", "--input", str(src), "--out", str(tmp_path / "u2"), "--strict")
    assert res.returncode == 1
    assert "a01_s01_e09_v01.json" in res.stdout and "--strict" in res.stderr


def test_errors_are_one_line_and_name_the_problem(tmp_path: Path) -> None:
    res = _run("prepare", "ntu60", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "s"))
    assert res.returncode == 2 and "missing" in res.stderr and "Traceback" not in res.stderr
    res = _run("prepare", "ntu60", "--input", str(tmp_path), "--out", str(tmp_path / "s"), "bodys=denoise")
    assert res.returncode == 2 and "did you mean 'bodies'" in res.stderr
    res = _run("info", str(tmp_path / "nothing"))
    assert res.returncode == 2 and "skelssl prepare" in res.stderr
    res = _run("prepare", "ntu61", "--input", ".", "--out", "x")
    assert res.returncode == 2 and "ntu60" in res.stderr


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_console_script(flag: str) -> None:
    exe = shutil.which("skelssl")
    assert exe is not None, "the skelssl console script is not installed"
    res = subprocess.run([exe, flag], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and "skelssl" in res.stdout


class _RunsCode:
    """Pickles as a call to ``os.system``: what a malicious annotation file would hold."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        import os

        return os.system, (self.command,)


@pytest.mark.parametrize("importer", ["pyskl", "aimclr"])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], importer: str
) -> None:
    import pickle

    import numpy as np

    marker = tmp_path / "pwned"
    gadget = _RunsCode(f"touch {marker}")
    if importer == "pyskl":
        ann = {"frame_dir": "S001C001P001R001A001", "label": 0, "total_frames": 2}
        ann["keypoint"] = np.zeros((1, 2, 25, 3), np.float32)
        split = {"xsub_train": ["S001C001P001R001A001", "x"]}
        evil = {"split": split, "annotations": [ann, {"frame_dir": "x", "label": gadget}]}
        source = tmp_path / "evil.pkl"
        source.write_bytes(pickle.dumps(evil))
    else:
        source = tmp_path / "aimclr"
        source.mkdir()
        np.save(source / "train_data_joint.npy", np.zeros((2, 3, 4, 25, 2), np.float32))
        (source / "train_label.pkl").write_bytes(pickle.dumps((["a", "b"], [0, gadget])))
    out = tmp_path / "store"
    assert main(["prepare", importer, "--input", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "Traceback" not in err, err
    assert not marker.exists()  # the code never ran
    assert not out.exists() and not list(tmp_path.glob(".store*"))  # and nothing of the input was written
