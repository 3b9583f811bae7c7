"""The on-disk skeleton store: memory-mapped keypoints, a small index, and JSON metadata.

A store is a directory:

- ``keypoints.npy``: float32 ``(total_frames, M, V, C)``, every sequence's frames concatenated;
  opened with ``mmap_mode="r"`` (for bulk access) and never read whole. Single sequences are read with
  ``os.pread`` into a private array: touching a memory map pulls whole page-cache folios (up to 2 MB)
  into the reader's resident set, a pread reads just the sequence.
- ``index.npz``: per sequence ``offsets``, ``lengths``, ``labels`` (0-based), ``names`` and the
  source's metadata fields (``subjects``, ``cameras``, ``views`` …).
- ``meta.json``: layout, persons, class names, source, format version, split definitions, a checksum
  of the inputs, and the importer's options.
- ``rejected.json``: inputs that could not be imported, and samples skipped on purpose, with reasons.

:class:`StoreWriter` builds one in a temporary directory and moves it into place atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from skelssl.errors import StoreError
from skelssl.skeleton.layouts import Layout, get_layout
from skelssl.utils import fsync_dir

FORMAT = "skelssl-store"
FORMAT_VERSION = 1
_CORE_FIELDS = ("offsets", "lengths", "labels", "names")
_HEADER_BYTES = 256  # fixed .npy header size, so the shape can be rewritten after streaming the data


@dataclass(frozen=True)
class StoredSequence:
    """One sequence read from a store. ``keypoints`` is the caller's own ``(T, M, V, C)`` array."""

    index: int
    name: str
    keypoints: np.ndarray
    label: int
    fields: Mapping[str, Any]


class SkeletonStore:
    """Read access to a prepared store. Opening reads only the index and metadata."""

    def __init__(self, path: Path, meta: dict[str, Any], index: dict[str, np.ndarray], keypoints: np.memmap):
        self.path = path
        self.meta = meta
        self._index = index
        self._keypoints = keypoints
        self._fd: int | None = None
        self._fd_pid = -1

    def __getstate__(self) -> dict[str, Any]:
        # Pickled (e.g. to DataLoader workers) as its path and index only; the map and fd reopen on arrival.
        return {"path": self.path, "meta": self.meta, "index": self._index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        keypoints = np.load(state["path"] / "keypoints.npy", mmap_mode="r", allow_pickle=False)
        self.__init__(state["path"], state["meta"], state["index"], keypoints)  # type: ignore[misc]

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the file descriptor used for reads (reopened on the next read)."""
        if getattr(self, "_fd", None) is not None and self._fd_pid == os.getpid():
            os.close(self._fd)  # type: ignore[arg-type]
        self._fd = None

    @classmethod
    def open(cls, path: str | Path) -> SkeletonStore:
        """Open the store at ``path``; ``StoreError`` naming the missing or inconsistent file otherwise."""
        root = Path(path)
        if not root.is_dir():
            raise StoreError(f"{root}: no such store directory; create one with `skelssl prepare`")
        meta_path = root / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"{meta_path}: missing; {root} is not a skelssl store") from None
        except (OSError, ValueError) as err:
            raise StoreError(f"{meta_path}: unreadable ({err}); prepare the store again") from None
        if meta.get("format") != FORMAT:
            raise StoreError(f"{meta_path}: not a skelssl store (format {meta.get('format')!r})")
        if meta.get("version", 0) > FORMAT_VERSION:
            raise StoreError(
                f"{meta_path}: store format version {meta['version']} is newer than this skelssl "
                f"understands ({FORMAT_VERSION}); upgrade skelssl"
            )
        index_path = root / "index.npz"
        try:
            with np.load(index_path, allow_pickle=False) as npz:
                index = {key: npz[key] for key in npz.files}
        except FileNotFoundError:
            raise StoreError(f"{index_path}: missing; prepare the store again") from None
        except (OSError, ValueError) as err:
            raise StoreError(f"{index_path}: unreadable ({err}); prepare the store again") from None
        kp_path = root / "keypoints.npy"
        try:
            keypoints = np.load(kp_path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise StoreError(f"{kp_path}: missing; prepare the store again") from None
        except (OSError, ValueError) as err:
            raise StoreError(f"{kp_path}: unreadable ({err}); prepare the store again") from None
        store = cls(root, meta, index, keypoints)
        store._check()
        return store

    def _check(self) -> None:
        missing = [k for k in _CORE_FIELDS if k not in self._index]
        if missing:
            raise StoreError(f"{self.path / 'index.npz'}: missing arrays {missing}")
        n = len(self._index["offsets"])
        bad = [k for k, v in self._index.items() if len(v) != n]
        if bad:
            raise StoreError(f"{self.path / 'index.npz'}: arrays {bad} do not have one entry per sequence ({n})")
        kp = self._keypoints
        expected = (self.meta["num_persons"], self.meta["num_joints"], self.meta["channels"])
        if kp.ndim != 4 or kp.shape[1:] != expected or kp.dtype != np.float32:
            raise StoreError(
                f"{self.path / 'keypoints.npy'}: shape {kp.shape} {kp.dtype} does not match meta.json "
                f"(total_frames, *{expected}) float32"
            )
        ends = self._index["offsets"].astype(np.int64) + self._index["lengths"]
        if n and (ends.max() > kp.shape[0] or self._index["offsets"].min() < 0 or self._index["lengths"].min() < 1):
            raise StoreError(f"{self.path / 'index.npz'}: offsets/lengths point outside keypoints.npy (truncated?)")

    # -- metadata -----------------------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        return get_layout(self.meta["layout"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    @property
    def num_persons(self) -> int:
        return int(self.meta["num_persons"])

    @property
    def num_joints(self) -> int:
        return int(self.meta["num_joints"])

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    @property
    def offsets(self) -> np.ndarray:
        return self._index["offsets"]

    @property
    def lengths(self) -> np.ndarray:
        return self._index["lengths"]

    @property
    def labels(self) -> np.ndarray:
        return self._index["labels"]

    @property
    def names(self) -> np.ndarray:
        return self._index["names"]

    @property
    def field_names(self) -> list[str]:
        """Metadata fields beyond the core index (``subjects``, ``views`` …)."""
        return [k for k in self._index if k not in _CORE_FIELDS]

    def field(self, name: str) -> np.ndarray:
        """Per-sequence values of a metadata field."""
        if name not in self._index:
            raise StoreError(f"{self.path}: no field {name!r}; fields: {', '.join(self.field_names) or 'none'}")
        return self._index[name]

    # -- sequences ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index["offsets"])

    @property
    def memmap(self) -> np.memmap:
        """The whole read-only ``(total_frames, M, V, C)`` keypoints array, memory-mapped."""
        return self._keypoints

    def keypoints(self, i: int) -> np.ndarray:
        """Sequence ``i`` as a new float32 ``(T, M, V, C)`` array (one ``pread``; the file is never read whole)."""
        if self._fd is None or self._fd_pid != os.getpid():  # one descriptor per process (forked workers)
            self._fd = os.open(self.path / "keypoints.npy", os.O_RDONLY)
            self._fd_pid = os.getpid()
        start, length = int(self._index["offsets"][i]), int(self._index["lengths"][i])
        frame = self._keypoints.strides[0]
        nbytes = length * frame
        data = os.pread(self._fd, nbytes, self._keypoints.offset + start * frame)
        if len(data) != nbytes:
            raise StoreError(f"{self.path / 'keypoints.npy'}: sequence {i} is cut short (file truncated?)")
        out = np.frombuffer(bytearray(data), dtype="<f4").reshape(length, *self._keypoints.shape[1:])
        return out.astype(np.float32, copy=False)

    def __getitem__(self, i: int) -> StoredSequence:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sequence {i} out of range for a store of {n}")
        i = i % n
        fields = {k: self._index[k][i].item() for k in self.field_names}
        return StoredSequence(
            index=i,
            name=str(self._index["names"][i]),
            keypoints=self.keypoints(i),
            label=int(self._index["labels"][i]),
            fields=fields,
        )

    def __iter__(self) -> Iterator[StoredSequence]:
        for i in range(len(self)):
            yield self[i]

    # -- splits -------------------------------------------------------------------------------------
    @property
    def splits(self) -> dict[str, dict[str, Any]]:
        return dict(self.meta.get("splits", {}))

    def split_parts(self, name: str) -> list[str]:
        spec = self._split_spec(name)
        parts = [k for k in spec if k != "by"]
        return parts if "test" in parts else [*parts, "test"]

    def split_indices(self, name: str, part: str) -> np.ndarray:
        """Sorted indices of the sequences in ``part`` (``train``, ``test`` …) of split ``name``."""
        spec = self._split_spec(name)
        values = self.field(spec["by"])
        if part in spec and part != "by":
            mask = np.isin(values, np.asarray(spec[part], dtype=values.dtype))
        elif part == "test":
            mask = ~np.isin(values, np.asarray(spec["train"], dtype=values.dtype))
        else:
            raise StoreError(f"split {name!r} has no part {part!r}; parts: {', '.join(self.split_parts(name))}")
        return np.flatnonzero(mask)

    def _split_spec(self, name: str) -> dict[str, Any]:
        splits = self.meta.get("splits", {})
        if name not in splits:
            from skelssl.utils import closest

            hint = closest(name, splits)
            raise StoreError(
                f"{self.path}: no split {name!r}"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; splits: {', '.join(splits) or 'none'}"
            )
        return splits[name]


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version-1.0 ``.npy`` header for float32 C-order data, padded to exactly ``_HEADER_BYTES``."""
    body = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode("latin1")
    pad = _HEADER_BYTES - 10 - len(body) - 1
    if pad < 0:
        raise StoreError(f"shape {shape} does not fit the reserved .npy header")
    header = body + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


class StoreWriter:
    """Streams sequences into a new store directory (normally a temporary one; see :func:`commit_store`).

    Keypoints go straight to disk; only the per-sequence index lives in memory.
    """

    def __init__(self, directory: Path, *, num_persons: int, num_joints: int, channels: int) -> None:
        self.directory = directory
        self.num_persons = num_persons
        self.num_joints = num_joints
        self.channels = channels
        self._file: BinaryIO = open(directory / "keypoints.npy", "wb")
        self._file.write(_npy_header((0, num_persons, num_joints, channels)))
        self._frames = 0
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._labels: list[int] = []
        self._names: list[str] = []
        self._fields: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self._names)

    @property
    def num_frames(self) -> int:
        return self._frames

    def add(self, name: str, keypoints: np.ndarray, label: int, fields: Mapping[str, Any]) -> None:
        """Append one ``(T, m, V, C)`` sequence (``m <= num_persons``; missing persons are zero)."""
        t, m, v, c = keypoints.shape
        if m > self.num_persons or v != self.num_joints or c != self.channels:
            raise StoreError(
                f"sequence {name}: shape {keypoints.shape} does not fit the store "
                f"(T, <= {self.num_persons}, {self.num_joints}, {self.channels})"
            )
        if self._names and set(fields) != set(self._fields):
            raise StoreError(f"sequence {name}: fields {sorted(fields)} differ from {sorted(self._fields)}")
        block = np.zeros((t, self.num_persons, v, c), dtype="<f4")
        block[:, :m] = keypoints
        self._file.write(block.tobytes())
        self._offsets.append(self._frames)
        self._lengths.append(t)
        self._frames += t
        self._labels.append(int(label))
        self._names.append(name)
        for key, value in fields.items():
            self._fields.setdefault(key, []).append(value)

    def finish(self, meta: Mapping[str, Any]) -> None:
        """Write the final header, ``index.npz`` and ``meta.json``, and flush everything to disk."""
        self._file.seek(0)
        self._file.write(_npy_header((self._frames, self.num_persons, self.num_joints, self.channels)))
        _close_synced(self._file)
        index: dict[str, np.ndarray] = {
            "offsets": np.asarray(self._offsets, dtype=np.int64),
            "lengths": np.asarray(self._lengths, dtype=np.int32),
            "labels": np.asarray(self._labels, dtype=np.int32),
            "names": np.asarray(self._names, dtype=str),
        }
        for key, values in self._fields.items():
            index[key] = _column(values)
        with open(self.directory / "index.npz", "wb") as fh:
            np.savez(fh, **index)
            _close_synced(fh, close=False)
        full = {**meta, "num_sequences": len(self._names), "total_frames": self._frames}
        write_json(self.directory / "meta.json", full)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()


def _column(values: list[Any]) -> np.ndarray:
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray([str(v) for v in values], dtype=str)


def _close_synced(fh: BinaryIO, *, close: bool = True) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    if close:
        fh.close()


def write_json(path: Path, data: Any) -> None:
    """Write JSON and fsync it (inside a temporary directory that is renamed afterwards)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def new_store_dir(out: Path) -> Path:
    """A fresh temporary directory beside ``out`` (same filesystem, so the final rename is atomic).

    Leftovers of killed runs (``.NAME.partial-PID`` whose process is gone) are removed first.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    tmp.mkdir()
    return tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def commit_store(tmp: Path, out: Path, *, overwrite: bool) -> None:
    """Atomically move a finished store from ``tmp`` to ``out`` (replacing it if ``overwrite``)."""
    old: Path | None = None
    if out.exists():
        if not overwrite:
            raise StoreError(f"{out} already exists; remove it or pass --overwrite")
        if not (out / "meta.json").is_file():
            raise StoreError(f"{out} exists and is not a skelssl store; refusing to replace it")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
