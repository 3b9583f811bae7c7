"""Shared test fixtures: the real datasets in ``../shared/data`` beside the project root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
