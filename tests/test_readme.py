"""The README's Python examples run as written (in order, in one namespace), so the docs stay true."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(_python_blocks()) >= 5


def test_readme_python_examples_run(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a small NW-UCLA store at the path the README uses (three subjects, all views)
    src = tmp_path / "all_sqe"
    src.mkdir()
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a0*_s0[1-3]_*.json")):
        shutil.copy(f, src / f.name)
    prepare_store(get_importer_class("nw-ucla")(src), tmp_path / "stores" / "nw-ucla")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for i, block in enumerate(_python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message is the point
            pytest.fail(f"README python block {i + 1} failed: {type(err).__name__}: {err}\n{block}")
    assert (tmp_path / "mine.npz").is_file()
