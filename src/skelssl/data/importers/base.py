"""The importer interface: raw dataset files → :class:`Sequence` records for the store writer.

An importer lists its units of work (:meth:`Importer.tasks`, usually one input file each) and turns one
unit into sequences (:meth:`Importer.run`). ``run`` is a pure function of the task and the importer's
options, so the driver (:mod:`skelssl.data.prepare`) may call it in worker processes. Bad input never
raises out of ``run``: it becomes a :class:`Rejected` record naming the file (and line) and the reason,
and no part of a rejected sequence is returned.
"""

from __future__ import annotations

import codecs
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from skelssl.errors import BadInputError, ConfigError

#: Upper bound on the frames of one sequence. Longer claims are rejected before any allocation.
MAX_FRAMES = 100_000
#: Upper bound on bodies claimed in one frame of a raw file.
MAX_BODIES = 64
#: Upper bound on a class label (0-based) read from a file. Without it a corrupt label such as 10**12 would make
#: an importer synthesise that many class names.
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class Sequence:
    """One labelled skeleton sequence.

    ``keypoints`` is float32 ``(T, M, V, C)`` with ``1 <= M <= importer.num_persons``; absent persons
    are zero. ``label`` is the 0-based class index. ``fields`` holds per-sequence metadata columns of
    the store index (``subjects``, ``cameras``, ``views``, ``setups``, ``replications``, ``pairs`` …);
    every sequence of one importer has the same field names.
    """

    name: str
    keypoints: np.ndarray
    label: int
    fields: Mapping[str, int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    """An input (file, or a segment of one) that could not be imported, and why."""

    path: str
    reason: str
    line: int | None = None

    @classmethod
    def from_error(cls, err: BadInputError) -> Rejected:
        return cls(path=err.path, reason=err.reason, line=err.line)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "reason": self.reason}


@dataclass(frozen=True)
class Skipped:
    """A sample left out on purpose by a documented rule (e.g. the official missing-skeleton list)."""

    name: str
    reason: str


@dataclass
class TaskResult:
    """What one unit of work produced. ``digest`` is a hash of the bytes the task read."""

    sequences: list[Sequence] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    digest: str = ""


@dataclass(frozen=True)
class Option:
    """A ``key=value`` option an importer accepts on the command line."""

    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None


class Importer(ABC):
    """Base class of every dataset importer.

    Subclasses set ``source`` (the ``skelssl prepare`` name), ``layout`` (a name from
    :mod:`skelssl.skeleton.layouts`), ``num_persons`` (M of the store) and ``OPTIONS``.
    """

    source: ClassVar[str]
    layout: str
    num_persons: int
    OPTIONS: ClassVar[dict[str, Option]] = {}

    def __init__(self, input: str | Path, **options: Any) -> None:
        self.input = Path(input)
        self.options = self.resolve_options(options)

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``given`` against ``OPTIONS``, convert strings, fill defaults."""
        from skelssl.utils import closest

        resolved: dict[str, Any] = {}
        for key, value in given.items():
            if key not in cls.OPTIONS:
                hint = closest(key, cls.OPTIONS)
                valid = ", ".join(sorted(cls.OPTIONS)) or "none"
                raise ConfigError(
                    f"unknown option {key!r} for source {cls.source!r}"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + f"; valid options: {valid}"
                )
            opt = cls.OPTIONS[key]
            if isinstance(value, str) and opt.type is not str:
                try:
                    value = _parse_bool(value) if opt.type is bool else opt.type(value)
                except ValueError as err:
                    raise ConfigError(f"option {key}={value!r}: expected {opt.type.__name__}") from err
            if opt.choices is not None and value not in opt.choices:
                raise ConfigError(f"option {key}={value!r}: choose one of {list(opt.choices)}")
            if opt.minimum is not None and value < opt.minimum:
                raise ConfigError(f"option {key}={value!r}: must be at least {opt.minimum:g}")
            resolved[key] = value
        for key, opt in cls.OPTIONS.items():
            resolved.setdefault(key, opt.default)
        return resolved

    @abstractmethod
    def tasks(self) -> list[Any]:
        """Units of work (picklable, deterministic order). Raise ``BadInputError`` if ``input`` is unusable."""

    @abstractmethod
    def run(self, task: Any) -> TaskResult:
        """Parse one unit of work. Never raises for bad input: returns it as ``Rejected``."""

    @abstractmethod
    def class_names(self) -> list[str]:
        """Names of the classes, indexed by the 0-based label."""

    @abstractmethod
    def splits(self) -> dict[str, dict[str, Any]]:
        """Split definitions stored in ``meta.json``: ``{name: {"by": field, "train": [...], "test": [...]}}``.

        ``by`` names an index field; ``train``/``test`` list its values. A missing ``test`` means
        "every value not in ``train``".
        """

    def describe(self) -> dict[str, Any]:
        """Extra facts recorded in ``meta.json`` (source version, body selection, …)."""
        return {}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(text)


def digest_bytes(data: bytes) -> str:
    """Content hash used for the store's input checksum."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def digest_file(path: Path, *, chunk_bytes: int = 1 << 24) -> str:
    """:func:`digest_bytes` of a file's content, read in chunks (for inputs too large to hold twice)."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with path.open("rb") as handle:
            while block := handle.read(chunk_bytes):
                digest.update(block)
    except OSError as err:
        raise BadInputError(path, f"cannot read: {err.strerror}") from err
    return digest.hexdigest()


def run_one_file(path: Path, parse: Callable[[Path, bytes], Sequence], *, max_bytes: int) -> TaskResult:
    """Read one input file and parse it into one sequence; bad input becomes a ``Rejected`` record."""
    try:
        data = read_bytes(path, max_bytes=max_bytes)
    except BadInputError as err:
        return TaskResult(rejected=[Rejected.from_error(err)])
    digest = digest_bytes(data)
    try:
        sequence = parse(path, data)
    except BadInputError as err:
        return TaskResult(rejected=[Rejected.from_error(err)], digest=digest)
    return TaskResult(sequences=[sequence], digest=digest)


def read_bytes(path: Path, *, max_bytes: int = 1 << 31) -> bytes:
    """Read a whole input file, refusing empty or absurdly large ones with a named error."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise BadInputError(path, f"cannot read: {err.strerror}") from err
    if size == 0:
        raise BadInputError(path, "file is empty; re-copy it from the dataset")
    if size > max_bytes:
        raise BadInputError(path, f"file is {size} bytes, larger than any valid input of this kind")
    try:
        return path.read_bytes()
    except OSError as err:
        raise BadInputError(path, f"cannot read: {err.strerror}") from err


def decode_text(path: str | Path, data: bytes) -> str:
    """Decode an ASCII/UTF-8 text file, naming the file (and line) when it is not such text.

    A leading UTF-8 byte-order mark (as Windows editors write it) is dropped. UTF-16/32 text (a UTF-16
    byte-order mark, or NUL bytes) and bytes that are not UTF-8 (latin-1, binary) are refused with a
    :class:`BadInputError` that says how to fix the file.
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise BadInputError(
            path, "is UTF-16 text (it starts with a byte-order mark); re-save it as UTF-8/ASCII", line=1
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise BadInputError(path, f"not a UTF-8/ASCII text file (byte {err.start})", line=line) from err
    nul = text.find("\x00")
    if nul >= 0:
        raise BadInputError(
            path,
            "holds a NUL byte: not a plain UTF-8/ASCII text file (UTF-16 text? re-save it as UTF-8)",
            line=text.count("\n", 0, nul) + 1,
        )
    return text


def check_keypoints(
    path: str | Path,
    keypoints: np.ndarray,
    *,
    num_joints: int,
    channels: SequenceABC[int] = (2, 3),
    max_persons: int | None = None,
    what: str = "sequence",
) -> np.ndarray:
    """Validate one sequence's ``(T, M, V, C)`` array and return it as float32.

    Rejects (``BadInputError``) zero frames, a wrong joint count, an unexpected channel count, NaN/inf,
    more persons than ``max_persons`` and sequences whose every coordinate is zero.
    """
    arr = np.asarray(keypoints)
    if arr.ndim != 4:
        raise BadInputError(path, f"{what}: expected a (T, M, V, C) array, got shape {arr.shape}")
    t, m, v, c = arr.shape
    if t == 0:
        raise BadInputError(path, f"{what}: has no frames")
    if t > MAX_FRAMES:
        raise BadInputError(path, f"{what}: {t} frames is more than the limit {MAX_FRAMES}")
    if v != num_joints:
        raise BadInputError(path, f"{what}: has {v} joints, the layout expects {num_joints}")
    if c not in channels:
        raise BadInputError(path, f"{what}: has {c} coordinates per joint, expected one of {list(channels)}")
    if m == 0 or (max_persons is not None and m > max_persons):
        raise BadInputError(path, f"{what}: has {m} persons, expected 1..{max_persons}")
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32's range become inf: refused below
        out = arr.astype(np.float32, copy=False)
    finite = np.isfinite(out)
    if not finite.all():
        bad_t = int(np.argwhere(~finite)[0][0])
        if np.isfinite(arr[bad_t]).all():
            raise BadInputError(path, f"{what}: a coordinate in frame {bad_t} exceeds the float32 range (3.4e38)")
        raise BadInputError(path, f"{what}: NaN or inf coordinate in frame {bad_t}")
    if not out.any():
        raise BadInputError(path, f"{what}: every coordinate is zero (no valid frame)")
    return out


def as_int(path: str | Path, token: str, what: str, line: int | None = None) -> int:
    """Parse an integer token or raise a named error."""
    try:
        value = float(token) if "." in token or "e" in token.lower() else int(token)
    except ValueError as err:
        raise BadInputError(path, f"{what}: expected an integer, found {token[:40]!r}", line=line) from err
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise BadInputError(path, f"{what}: expected an integer, found {token[:40]!r}", line=line)
        value = int(value)
    return value
