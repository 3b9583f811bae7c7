"""Bring-your-own data: one ``.npz`` in the store's own shape.

Members (``np.savez`` / ``np.savez_compressed``):

- ``keypoints`` float ``(total_frames, M, V, C)``: every sequence's frames, concatenated;
- ``lengths`` int ``(N,)`` (frames per sequence, > 0, summing to ``total_frames``) and ``labels`` int ``(N,)``
  (0-based);
- optional ``names`` str ``(N,)`` (unique), ``subjects`` and ``views`` (int or str ``(N,)``), ``split`` str ``(N,)``
  (``"train"``/``"test"``), ``class_names`` str ``(K,)`` and ``layout`` (a layout name, 0-d str).

The layout comes from the file's ``layout`` member or the ``layout=`` option (when both are given they must
agree). Nothing is unpickled: object arrays are refused. ``keypoints`` stored uncompressed is memory-mapped
and imported in chunks of ``chunk`` sequences; compressed, it is decompressed once, in a single task.
"""

from __future__ import annotations

import hashlib
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from skelssl.data.importers.base import (
    MAX_BODIES,
    MAX_CLASSES,
    MAX_FRAMES,
    Importer,
    Option,
    Rejected,
    Sequence,
    TaskResult,
    check_keypoints,
)
from skelssl.errors import BadInputError, ConfigError
from skelssl.skeleton.layouts import LAYOUTS, get_layout
from skelssl.utils import closest

#: Largest plausible deflate ratio; a member claiming more uncompressed bytes than this is refused.
MAX_DEFLATE_RATIO = 1100
#: What numpy and zipfile raise on corrupt bytes: a bad header (numpy's header parser tokenizes and evaluates it:
#: ``TokenError``/``SyntaxError`` escape it for NUL bytes or unbalanced brackets), bad deflate data, short reads.
READ_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, ValueError, SyntaxError,
    tokenize.TokenError, struct.error, MemoryError,
)  # fmt: skip

REQUIRED = ("keypoints", "lengths", "labels")
OPTIONAL = ("names", "subjects", "views", "split", "class_names", "layout")


# --------------------------------------------------------------------------------------------------------
# .npz members without np.load's full reads: headers first, then a memory map (stored) or one decompression.


@dataclass(frozen=True)
class NpyMember:
    """One ``.npy`` member of an ``.npz``: its header, and where its data starts when stored uncompressed."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    compressed: bool
    data_offset: int  # absolute file offset of the array data (stored members only; -1 when compressed)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def npz_members(path: Path) -> dict[str, NpyMember]:
    """Read the headers of every ``.npy`` member of ``path``; refuses object arrays and inconsistent sizes."""
    try:
        with zipfile.ZipFile(path) as archive, path.open("rb") as raw:
            members = {}
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise BadInputError(path, f"member {info.filename!r} is not a .npy array")
                members[info.filename[:-4]] = _member(path, archive, raw, info)
            return members
    except BadInputError:
        raise
    except READ_ERRORS as err:
        raise BadInputError(path, f"not a readable .npz (zip) file: {type(err).__name__}: {err}") from err


def _member(path: Path, archive: zipfile.ZipFile, raw: Any, info: zipfile.ZipInfo) -> NpyMember:
    key = info.filename[:-4]
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BadInputError(path, f"member {key!r} uses an unsupported compression; save with np.savez")
    with archive.open(info) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"npy format version {version} is not supported")
        except (ValueError, SyntaxError, tokenize.TokenError) as err:
            raise BadInputError(path, f"member {key!r} is not a valid .npy array: {err}") from err
        header_len = handle.tell()
    if dtype.hasobject:
        raise BadInputError(
            path,
            f"member {key!r} is an object array (pickled Python objects), which is refused: "
            "save plain numeric or str arrays (np.array(names, dtype=str))",
        )
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if header_len + nbytes != info.file_size:
        raise BadInputError(
            path, f"member {key!r} claims {nbytes} data bytes but holds {info.file_size - header_len}; truncated?"
        )
    if info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 4096:
            raise BadInputError(path, f"member {key!r} claims an implausible compression ratio; corrupt file")
        return NpyMember(key, tuple(shape), dtype, bool(fortran), True, -1)
    raw.seek(info.header_offset)
    local = raw.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise BadInputError(path, f"member {key!r}: broken zip local header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    offset = info.header_offset + 30 + name_len + extra_len + header_len
    if offset + nbytes > path.stat().st_size:
        raise BadInputError(path, f"member {key!r} runs past the end of the file; the file is truncated")
    return NpyMember(key, tuple(shape), dtype, bool(fortran), False, offset)


def npz_array(path: Path, member: NpyMember) -> np.ndarray:
    """The member's array: a read-only memory map when stored, else decompressed into memory once."""
    order = "F" if member.fortran else "C"
    try:
        if member.nbytes == 0:
            return np.zeros(member.shape, dtype=member.dtype, order=order)
        if not member.compressed:
            return np.memmap(
                path, dtype=member.dtype, mode="r", offset=member.data_offset, shape=member.shape, order=order
            )
        with zipfile.ZipFile(path) as archive, archive.open(member.key + ".npy") as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    except READ_ERRORS as err:
        raise BadInputError(path, f"cannot read member {member.key!r}: {type(err).__name__}: {err}") from err


def digest_arrays(*arrays: np.ndarray) -> str:
    """A content hash (blake2b-128, as ``digest_bytes``) over the raw bytes of ``arrays``, without copies
    for contiguous ones."""
    digest = hashlib.blake2b(digest_size=16)
    for arr in arrays:
        digest.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return digest.hexdigest()


def layout_for(path: Path, name: str) -> str:
    """Check a layout name, as a ``BadInputError`` on ``path`` when unknown."""
    try:
        return get_layout(name).name
    except ConfigError as err:
        raise BadInputError(path, str(err)) from None


# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Index:
    """The validated small members of a generic file (everything except ``keypoints``)."""

    keypoints: NpyMember
    layout: str
    layout_from: str
    lengths: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    class_names: tuple[str, ...]
    fields: dict[str, np.ndarray]
    digest: str


class GenericImporter(Importer):
    """A bring-your-own ``.npz`` (see the module docstring) → sequences, fields and a ``default`` split."""

    source: ClassVar[str] = "generic"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "layout": Option(str, "", "layout name when the file has no 'layout' member", tuple(["", *LAYOUTS])),
        "chunk": Option(int, 512, "sequences per task when keypoints are stored uncompressed", minimum=1),
    }

    def __init__(self, input: str | Path, **options: Any) -> None:
        super().__init__(input, **options)
        self._cached: _Index | None = None

    @property
    def layout(self) -> str:  # type: ignore[override]
        return self._index().layout

    @property
    def num_persons(self) -> int:  # type: ignore[override]
        return self._index().keypoints.shape[1]

    def tasks(self) -> list[tuple[int, int]]:
        """``(first, stop)`` sequence ranges: chunks when memory-mappable, else one range."""
        index = self._index()
        n = len(index.lengths)
        step = n if index.keypoints.compressed else self.options["chunk"]
        return [(start, min(start + step, n)) for start in range(0, n, step)]

    def run(self, task: tuple[int, int]) -> TaskResult:
        start, stop = task
        try:
            index = self._index()
            keypoints = npz_array(self.input, index.keypoints)
        except BadInputError as err:
            return TaskResult(rejected=[Rejected.from_error(err)])
        lo, hi = int(index.offsets[start]), int(index.offsets[stop - 1] + index.lengths[stop - 1])
        # the index members (lengths, labels, names, fields) count once, in the first task
        digest = digest_arrays(keypoints[lo:hi])
        result = TaskResult(digest=digest + index.digest if start == 0 else digest)
        v = get_layout(index.layout).num_joints
        for i in range(start, stop):
            first = int(index.offsets[i])
            try:
                kp = check_keypoints(
                    self.input,
                    keypoints[first : first + int(index.lengths[i])],
                    num_joints=v,
                    max_persons=index.keypoints.shape[1],
                    what=f"sequence {i} ({index.names[i]})",
                )
            except BadInputError as err:
                result.rejected.append(Rejected.from_error(err))
                continue
            fields = {key: _scalar(values[i]) for key, values in index.fields.items()}
            result.sequences.append(Sequence(index.names[i], kp, int(index.labels[i]), fields))
        return result

    def class_names(self) -> list[str]:
        return list(self._index().class_names)

    def splits(self) -> dict[str, dict[str, Any]]:
        if "split" not in self._index().fields:
            return {}
        return {"default": {"by": "split", "train": ["train"], "test": ["test"]}}

    def describe(self) -> dict[str, Any]:
        index = self._index()
        return {
            "file": self.input.name,
            "layout_from": index.layout_from,
            "keypoints": "memory-mapped (stored)" if not index.keypoints.compressed else "decompressed (compressed)",
            "fields": sorted(index.fields),
        }

    def _index(self) -> _Index:
        if self._cached is None:
            self._cached = read_generic_index(self.input, self.options["layout"])
        return self._cached


def _scalar(value: Any) -> int | str:
    return str(value) if isinstance(value, np.str_) else int(value)


def read_generic_index(path: Path, layout_option: str = "") -> _Index:
    """Load and validate everything but the keypoints; ``BadInputError`` naming the first problem."""
    if not path.is_file():
        raise BadInputError(path, "no such file; pass the .npz with keypoints, lengths and labels")
    members = npz_members(path)
    for key in members:
        if key not in REQUIRED + OPTIONAL:
            hint = closest(key, REQUIRED + OPTIONAL)
            raise BadInputError(
                path,
                f"unknown member {key!r}"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; allowed: {', '.join(REQUIRED + OPTIONAL)}",
            )
    missing = [key for key in REQUIRED if key not in members]
    if missing:
        raise BadInputError(path, f"missing member(s) {', '.join(missing)}; found {', '.join(sorted(members))}")
    kp = members["keypoints"]
    layout, layout_from = _layout(path, members, layout_option)
    _check_keypoints_header(path, kp, get_layout(layout).num_joints)

    def small(key: str) -> np.ndarray:
        arr = npz_array(path, members[key])
        return np.array(arr)  # small members: a plain in-memory copy, detached from any memory map

    lengths = _int_vector(path, "lengths", small("lengths"))
    n = len(lengths)
    if n == 0:
        raise BadInputError(path, "lengths is empty: the file holds no sequences")
    if (lengths <= 0).any():
        raise BadInputError(path, f"lengths[{int(np.argmax(lengths <= 0))}] is not positive")
    if (lengths > MAX_FRAMES).any():
        raise BadInputError(path, f"lengths[{int(np.argmax(lengths > MAX_FRAMES))}] exceeds {MAX_FRAMES} frames")
    if int(lengths.sum()) != kp.shape[0]:
        raise BadInputError(path, f"lengths sum to {int(lengths.sum())} frames but keypoints has {kp.shape[0]}")
    labels = _int_vector(path, "labels", small("labels"), n)
    if (labels < 0).any():
        raise BadInputError(path, f"labels[{int(np.argmax(labels < 0))}] is negative; labels are 0-based")
    if (labels >= MAX_CLASSES).any():
        i = int(np.argmax(labels >= MAX_CLASSES))
        raise BadInputError(path, f"labels[{i}] = {labels[i]} is not a plausible class index (limit {MAX_CLASSES})")
    if "class_names" in members:
        class_names = tuple(_str_vector(path, "class_names", small("class_names")))
        if not class_names:
            raise BadInputError(path, "class_names is empty")
        if (labels >= len(class_names)).any():
            i = int(np.argmax(labels >= len(class_names)))
            raise BadInputError(path, f"labels[{i}] = {labels[i]} but there are only {len(class_names)} class_names")
    else:
        class_names = tuple(f"class_{k:03d}" for k in range(int(labels.max()) + 1))
    if "names" in members:
        names = tuple(_str_vector(path, "names", small("names"), n))
        _check_unique(path, names)
    else:
        width = max(6, len(str(n - 1)))
        names = tuple(f"seq_{i:0{width}d}" for i in range(n))
    fields: dict[str, np.ndarray] = {}
    for key in ("subjects", "views"):
        if key in members:
            fields[key] = _field_vector(path, key, small(key), n)
    if "split" in members:
        split = np.asarray(_str_vector(path, "split", small("split"), n))
        bad = ~np.isin(split, ["train", "test"])
        if bad.any():
            i = int(np.argmax(bad))
            raise BadInputError(path, f"split[{i}] = {split[i]!r}; split values must be 'train' or 'test'")
        fields["split"] = split
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    digest = digest_arrays(lengths, labels, np.asarray(names), *fields.values())
    return _Index(kp, layout, layout_from, lengths, offsets, labels, names, class_names, fields, digest)


def _layout(path: Path, members: dict[str, NpyMember], option: str) -> tuple[str, str]:
    if "layout" not in members:
        if not option:
            raise BadInputError(
                path, f"the file has no 'layout' member; pass layout=NAME (one of {', '.join(LAYOUTS)})"
            )
        return option, "option"
    arr = npz_array(path, members["layout"])
    if arr.dtype.kind != "U" or arr.size != 1:
        raise BadInputError(path, "member 'layout' must be a single string such as np.array('ntu25')")
    name = layout_for(path, str(arr.reshape(()).item()))
    if option and option != name:
        raise BadInputError(path, f"the file says layout {name!r} but layout={option!r} was given; drop one")
    return name, "file"


def _check_keypoints_header(path: Path, member: NpyMember, num_joints: int) -> None:
    if len(member.shape) != 4:
        raise BadInputError(path, f"keypoints has shape {member.shape}, expected (total_frames, M, V, C)")
    if member.dtype.kind != "f":
        raise BadInputError(path, f"keypoints has dtype {member.dtype}, expected float32 or float64")
    _, m, v, c = member.shape
    if v != num_joints:
        raise BadInputError(path, f"keypoints has {v} joints but the layout has {num_joints}")
    if c not in (2, 3):
        raise BadInputError(path, f"keypoints has {c} coordinates per joint, expected 2 or 3")
    if not 1 <= m <= MAX_BODIES:
        raise BadInputError(path, f"keypoints has {m} persons, expected 1..{MAX_BODIES}")


def _int_vector(path: Path, key: str, arr: np.ndarray, n: int | None = None) -> np.ndarray:
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise BadInputError(path, f"{key} must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    if n is not None and len(arr) != n:
        raise BadInputError(path, f"{key} has {len(arr)} entries, lengths has {n}")
    return arr.astype(np.int64)


def _str_vector(path: Path, key: str, arr: np.ndarray, n: int | None = None) -> list[str]:
    if arr.ndim != 1 or arr.dtype.kind != "U":
        raise BadInputError(path, f"{key} must be a 1-D str array, got {arr.dtype} {arr.shape}")
    if n is not None and len(arr) != n:
        raise BadInputError(path, f"{key} has {len(arr)} entries, lengths has {n}")
    return [str(s) for s in arr]


def _field_vector(path: Path, key: str, arr: np.ndarray, n: int) -> np.ndarray:
    if arr.ndim != 1 or arr.dtype.kind not in "iuU":
        raise BadInputError(path, f"{key} must be a 1-D int or str array, got {arr.dtype} {arr.shape}")
    if len(arr) != n:
        raise BadInputError(path, f"{key} has {len(arr)} entries, lengths has {n}")
    return arr.astype(np.int64) if arr.dtype.kind in "iu" else arr


def _check_unique(path: Path, names: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name:
            raise BadInputError(path, f"names[{i}] is empty")
        if name in seen:
            raise BadInputError(path, f"names[{i}] = {name!r} repeats an earlier name; names must be unique")
        seen.add(name)
