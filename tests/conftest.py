"""Shared test fixtures: the real datasets in ``../shared/data`` beside the project root."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("SKELSSL_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real datasets (NTU samples, NW-UCLA, SBU, Florence3D, UTKinect)."""
    path = _shared_data()
    if not path.is_dir():
        pytest.fail(f"real test data not found at {path}; set SKELSSL_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def small_ucla_store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real NW-UCLA store (actions 1–4 of subjects 1–2, all views: kinect20, split ``xview``), built once
    per session. Read-only: tests that change a store build their own."""
    from skelssl.data.importers import get_importer_class
    from skelssl.data.prepare import prepare_store

    src = tmp_path_factory.mktemp("small_ucla") / "all_sqe"
    src.mkdir()
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a0[1-4]_s0[1-2]_*.json")):
        shutil.copy(f, src / f.name)
    out = src.parent / "store"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    return out


@pytest.fixture
def restore_torch_globals() -> Iterator[None]:
    """In-process runs set torch's thread count and deterministic mode: give the other tests theirs back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
