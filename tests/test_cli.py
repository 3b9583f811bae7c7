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
