"""Small shared helpers."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` (for "did you mean" hints), or ``None``."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flush a directory entry (after a rename) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(Path(directory), os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
