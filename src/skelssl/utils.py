"""Small shared helpers."""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from skelssl.errors import SkelsslError


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


def _umask() -> int:
    """The process umask (read by setting and restoring it: Python has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_replace(path: Path, produce: Callable[[Path], None]) -> Path:
    """Run ``produce(tmp)`` to write a temp file beside ``path`` (durably), then rename it over ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the usual permissions
    except OSError as exc:
        raise SkelsslError(f"{path}: cannot write here ({exc}); check the directory and its permissions") from exc
    tmp = Path(tmp_name)
    try:
        produce(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "write" in str(exc).lower()):
            raise SkelsslError(
                f"{path}: could not write ({exc}); the previous file, if any, is intact. "
                "Check free disk space and permissions."
            ) from exc
        raise
    fsync_dir(path.parent)
    return path


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically: ``write(fh)`` into a temp file in the same directory, fsync, rename.

    On any error the temp file is removed and the previous ``path`` (if any) is untouched. Write errors
    (``OSError`` such as a full disk or a read-only directory) are raised as
    :class:`~skelssl.errors.SkelsslError` naming the file; anything else propagates unchanged.
    """

    def produce(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_replace(Path(path), produce)
