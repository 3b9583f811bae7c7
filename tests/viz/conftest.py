"""A small real NW-UCLA store for the picture tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore


@pytest.fixture(scope="session")
def viz_store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    """12 real NW-UCLA sequences (actions 1–2, subject 1, episodes 0–1, views 1–3)."""
    root = tmp_path_factory.mktemp("viz-store")
    src = root / "all_sqe"
    src.mkdir()
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a0[1-2]_s01_e0[0-1]_v0[1-3].json")):
        shutil.copy(f, src / f.name)
    summary = prepare_store(get_importer_class("nw-ucla")(src), root / "store")
    return SkeletonStore.open(summary.path)
