"""A restricted unpickler for the pickles other skeleton toolkits write (PySKL annotations, ST-GCN labels).

:func:`safe_load` admits numpy arrays and scalars (as numpy 1.x and 2.x pickle them, protocols 0-5) and plain
Python data (dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, complex, bool, None and
``collections.OrderedDict``). Any other global the pickle names — ``os.system``, ``builtins.eval``,
``subprocess.Popen``, a user class — is refused *before* it is looked up, so nothing in the file runs.

Numpy reconstruction is checked too: arrays and scalars must have a plain dtype (bool, integer, float,
complex, ``str_`` or ``bytes_``; no object, structured or sub-array dtypes) and their data must be exactly as
long as their shape says, so a crafted pickle can neither smuggle Python objects through an object array nor
make numpy read past a buffer. Every failure — refused global, truncated or corrupt stream, inconsistent
array — is a :class:`~skelssl.errors.BadInputError` naming the file.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import io
import math
import mmap
import os
import pickle
import pickletools
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from skelssl.errors import BadInputError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric

#: dtype kinds an unpickled array or scalar may have.
PLAIN_KINDS = frozenset("biufcUS")
#: A plain numpy type code as numpy pickles it ('f4', 'U3', 'b1' …): no parsing of shapes or field lists.
_TYPE_CODE = re.compile(r"[<>|=]?[A-Za-z]\d{0,10}")


class _NDArrayToken:
    """Stands for ``numpy.ndarray`` inside a pickle: it may only be passed to ``_reconstruct``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _NDArrayToken:
        raise pickle.UnpicklingError("numpy.ndarray may only be rebuilt through numpy's own _reconstruct")


class _DtypeSpec:
    """Stands for a ``numpy.dtype`` inside a pickle.

    numpy's own ``dtype.__setstate__`` trusts its input (fields, sizes, flags); a crafted state could make numpy
    read out of bounds. So the REDUCE ``numpy.dtype(code, align, copy)`` only records the type code, BUILD only
    records the state, and :meth:`resolve` makes a fresh dtype from the code, the byte order and (for str/bytes)
    the item size, refusing everything else.
    """

    __slots__ = ("code", "state")

    def __init__(self, code: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(code, str) or not _TYPE_CODE.fullmatch(code):
            raise pickle.UnpicklingError(f"numpy dtype {str(code)[:40]!r} is not a plain type code")
        self.code = code
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def resolve(self) -> np.dtype:
        try:
            dtype = np.dtype(self.code)
        except (TypeError, ValueError) as err:
            raise pickle.UnpicklingError(f"invalid numpy type code {self.code!r}") from err
        _check_dtype(dtype)
        state = self.state
        if state is None:
            return dtype
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise pickle.UnpicklingError("malformed numpy dtype state")
        order, sub, names, fields, elsize = state[1:6]
        if sub is not None or names is not None or fields is not None or (len(state) == 9 and state[8] is not None):
            raise pickle.UnpicklingError("structured, sub-array and datetime numpy dtypes are not allowed")
        if dtype.kind in "US":
            unit = 4 if dtype.kind == "U" else 1
            if not isinstance(elsize, int) or not 0 <= elsize <= 1 << 30 or elsize % unit:
                raise pickle.UnpicklingError(f"invalid item size {elsize!r} for numpy {dtype.kind} dtype")
            dtype = np.dtype(f"{dtype.kind}{elsize // unit}")
        if order in ("<", ">"):
            dtype = dtype.newbyteorder(order)
        elif order not in ("|", "="):
            raise pickle.UnpicklingError(f"invalid numpy byte order {order!r}")
        return _check_dtype(dtype)


def _dtype(value: Any) -> np.dtype:
    if not isinstance(value, _DtypeSpec):
        raise pickle.UnpicklingError(f"expected a numpy dtype, found {type(value).__name__}")
    return value.resolve()


class _CheckedArray(np.ndarray):
    """An ndarray whose ``__setstate__`` (the pickle BUILD step) validates its state first."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("malformed numpy array state")
        shape, spec, fortran, data = state[-4:]
        dtype = _dtype(spec)
        size = _shape_size(shape)
        if not isinstance(data, (bytes, bytearray)):
            raise pickle.UnpicklingError("numpy array data is not raw bytes")
        if len(data) != size * dtype.itemsize:
            raise pickle.UnpicklingError(
                f"numpy array data is {len(data)} bytes, its shape {tuple(shape)} needs {size * dtype.itemsize}"
            )
        np.ndarray.__setstate__(self, (1, shape, dtype, bool(fortran), data))


def _check_dtype(dtype: np.dtype) -> np.dtype:
    """Refuse object, structured, sub-array, datetime and void dtypes."""
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in PLAIN_KINDS:
        raise pickle.UnpicklingError(f"numpy dtype {dtype!r} is not allowed (only plain numeric/string dtypes)")
    return dtype


def _shape_size(shape: Any) -> int:
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape) or len(shape) > 32:
        raise pickle.UnpicklingError(f"malformed numpy shape {shape!r}")
    return math.prod(shape)


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _CheckedArray:
    """Replacement for ``numpy.core.multiarray._reconstruct``: an empty array to be filled by BUILD."""
    if subtype is not _NDArrayToken:
        raise pickle.UnpicklingError("only plain numpy.ndarray may be reconstructed")
    return np.ndarray.__new__(_CheckedArray, (0,), np.uint8)


def _scalar(dtype: Any, data: Any = None) -> Any:
    """Replacement for ``numpy.core.multiarray.scalar``."""
    dtype = _dtype(dtype)
    if isinstance(data, str):  # protocol 0-2 pickles from Python 2 carry latin-1 strings
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar of {dtype.str!r} needs {dtype.itemsize} bytes of data")
    return _multiarray.scalar(dtype, data)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Replacement for ``numpy.core.numeric._frombuffer`` (protocol 5 arrays)."""
    dtype = _dtype(dtype)
    size = _shape_size(shape)
    if not isinstance(buf, (bytes, bytearray)):  # in-band buffers only: out-of-band ones were never supplied
        raise pickle.UnpicklingError("numpy buffer is not raw bytes")
    if order not in ("C", "F") or len(buf) != size * dtype.itemsize:
        raise pickle.UnpicklingError(f"numpy buffer does not hold an array of shape {shape} and {dtype.str!r}")
    return _numeric._frombuffer(buf, dtype, shape, order)


def _codecs_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol 0-2 pickles use it for ``bytes``: latin-1 text only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only to rebuild bytes from latin-1 text")
    return codecs.encode(text, "latin1", errors)


def _no_count(kind: type) -> Callable[..., Any]:
    """``bytes``/``bytearray`` without the ``kind(n)`` form, which would allocate n bytes from a claim."""

    def build(*args: Any) -> Any:
        if args and isinstance(args[0], int):
            raise pickle.UnpicklingError(f"{kind.__name__}(<count>) is not allowed in a pickle")
        return kind(*args)

    return build


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {}
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        table[(f"{core}.multiarray", "scalar")] = _scalar
        table[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    table[("numpy", "ndarray")] = _NDArrayToken
    table[("numpy", "dtype")] = _DtypeSpec
    table[("builtins", "set")] = set
    table[("builtins", "frozenset")] = frozenset
    table[("builtins", "complex")] = complex
    table[("builtins", "bytes")] = _no_count(bytes)
    table[("builtins", "bytearray")] = _no_count(bytearray)
    table[("_codecs", "encode")] = _codecs_encode
    table[("collections", "OrderedDict")] = collections.OrderedDict
    return table


_ALLOWED = _allowed()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], where: str) -> None:
        super().__init__(file)
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        # protocols 0-2 write Python 2 names (__builtin__.eval, commands.Popen …): judge what they would load
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise BadInputError(
                self._where,
                f"refused to unpickle global '{module}.{name}': this pickle would create or call something other "
                "than numpy arrays and plain Python data, so it was not loaded (nothing in it ran). "
                "Re-export the data with plain arrays, lists and dicts only",
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _plain(obj: Any, memo: dict[int, tuple[Any, Any]]) -> Any:
    """``obj`` with every ``_CheckedArray`` turned into a plain ndarray view (lists and dicts fixed in place).

    ``memo`` maps ``id`` of a visited container to ``(original, result)`` (the original is kept alive so that
    its id cannot be reused). Nesting deeper than the recursion limit raises ``RecursionError``.
    """
    if isinstance(obj, _CheckedArray):
        return obj.view(np.ndarray)
    if isinstance(obj, _DtypeSpec):
        return obj.resolve()
    if not isinstance(obj, (list, dict, tuple)):
        return obj
    if id(obj) in memo:
        return memo[id(obj)][1]
    if isinstance(obj, list):
        memo[id(obj)] = (obj, obj)
        for i, value in enumerate(obj):
            obj[i] = _plain(value, memo)
        return obj
    if isinstance(obj, dict):
        memo[id(obj)] = (obj, obj)
        for key in obj:
            obj[key] = _plain(obj[key], memo)
        return obj
    result = tuple(_plain(value, memo) for value in obj)
    memo[id(obj)] = (obj, result)
    return result


# --------------------------------------------------------------------------------------- claim pre-scan
# CPython's C unpickler trusts the counts in a pickle: BINBYTES, BINBYTES8 and BYTEARRAY8 allocate the claimed
# size before reading a byte of it; BINUNICODE(8), BINSTRING, LONG4 and FRAME ask the file for that many bytes
# (a buffered file allocates them first); a memo store (PUT, LONG_BINPUT) resizes the memo to twice its index and
# zeroes it. So before unpickling, :func:`_check_claims` walks the opcodes once — skipping counted data by seeking,
# never reading it — and refuses any count larger than what remains of the input, and any memo index larger than
# the number of memo entries the opcodes before it could have made (plus ``_MEMO_SLACK``). Runs of opcodes with
# fixed-size arguments (most of a pickle) are skipped by one regular-expression match each, in C. Argument
# formats come from :mod:`pickletools`.

_CHUNK = 1 << 20  # bytes read per window while scanning
_PAD = 9  # an opcode and its longest fixed-size argument (8 bytes)
#: How far a memo index may run ahead of the memo entries made before it. Picklers number them 0, 1, 2 …
#: (Python 2's pickle.py may skip one); a larger index is a claim that would size the memo.
_MEMO_SLACK = 4096
_MEMOIZE_BYTE = b"\x94"

# opcode kinds; a kind >= 0 is a fixed-size argument of that many bytes
_LINE, _LINE2, _PUTLINE, _COUNT1, _COUNT4, _COUNT4U, _COUNT8U, _FRAME, _STOP, _MEMO1, _MEMO4, _BAD = range(-1, -13, -1)


def _opcode_table() -> tuple[list[int], list[str]]:
    """Per opcode byte: its kind (see above) and its name."""
    kinds, names = [_BAD] * 256, ["?"] * 256
    counted = {
        pickletools.TAKEN_FROM_ARGUMENT1: _COUNT1,
        pickletools.TAKEN_FROM_ARGUMENT4: _COUNT4,  # signed: BINSTRING, LONG4
        pickletools.TAKEN_FROM_ARGUMENT4U: _COUNT4U,
        pickletools.TAKEN_FROM_ARGUMENT8U: _COUNT8U,
    }
    special = {"STOP": _STOP, "FRAME": _FRAME, "BINPUT": _MEMO1, "LONG_BINPUT": _MEMO4, "PUT": _PUTLINE}
    for op in pickletools.opcodes:
        code, arg = ord(op.code), op.arg
        names[code] = op.name
        if op.name in special:
            kinds[code] = special[op.name]
        elif arg is None:
            kinds[code] = 0  # MEMOIZE too: its memo index is the memo's size, no claim
        elif arg.n == pickletools.UP_TO_NEWLINE:
            kinds[code] = _LINE2 if arg.name == "stringnl_noescape_pair" else _LINE  # GLOBAL, INST: two lines
        else:
            kinds[code] = counted.get(arg.n, arg.n)
    return kinds, names


_KINDS, _NAMES = _opcode_table()


def _run_pattern() -> re.Pattern[bytes]:
    """Matches a run of opcodes with fixed-size arguments (none, 1, 2, 4 or 8 bytes)."""
    groups: dict[int, list[int]] = {}
    for code, kind in enumerate(_KINDS):
        if kind >= 0:
            groups.setdefault(kind, []).append(code)
    alternatives = [
        b"[" + b"".join(re.escape(bytes([c])) for c in codes) + b"]" + (b".{%d}" % size if size else b"")
        for size, codes in sorted(groups.items())
    ]
    return re.compile(b"(?:" + b"|".join(alternatives) + b")*+", re.DOTALL)


_RUN = _run_pattern().match
_U4, _I4, _U8 = struct.Struct("<I"), struct.Struct("<i"), struct.Struct("<Q")


class _Window:
    """A window of at most ``_CHUNK`` bytes sliding over a seekable stream, for :func:`_scan`.

    ``buf`` holds the stream from ``base`` (an offset from the pickle's start, which is the stream's ``start``);
    at the end of the stream ``_PAD`` zero bytes follow it (0x00 is no opcode), so an opcode whose argument runs
    past the end is caught at the next one. ``limit``: the last position where an opcode and any fixed-size
    argument lie inside ``buf``. ``memoized``: the MEMOIZE bytes (0x94) in the stream's first ``counted`` bytes.
    """

    __slots__ = ("base", "buf", "counted", "handle", "limit", "memoized", "start", "total", "where")

    def __init__(self, handle: IO[bytes], start: int, total: int, where: str) -> None:
        self.handle, self.start, self.total, self.where = handle, start, total, where
        self.buf, self.base, self.limit, self.memoized, self.counted = b"", 0, -1, 0, 0

    def refill(self, pos: int) -> None:
        """Move the window to start at ``buf[pos]`` (``pos`` may lie past ``buf``) and fill it."""
        base = self.base + pos
        if base >= self.total:
            raise _truncated(self.where)
        rest = self.buf[pos : self.total - self.base]  # never the padding
        self.handle.seek(self.start + base + len(rest))
        self.buf = rest + self._read(min(_CHUNK, self.total - base - len(rest)))
        self.base = base
        if base + len(self.buf) >= self.total:
            self.limit = len(self.buf)
            self.buf += b"\0" * _PAD
        else:
            self.limit = len(self.buf) - _PAD

    def skip(self, pos: int, size: int, op: int, header: int) -> int:
        """Skip ``size`` counted bytes at ``buf[pos]`` (refused if fewer remain); the position after them."""
        remain = self.total - self.base - pos
        if size > remain:
            if remain < 0:  # the count itself runs past the end
                raise _truncated(self.where)
            self.refuse(pos - header, size, remain, op)
        if pos + size <= self.limit:
            return pos + size
        self.handle.seek(self.start + self.base + pos + size)  # the window is emptied, refilled from there
        self.buf, self.base, self.limit = b"", self.base + pos + size, -1
        return 0

    def skip_line(self, pos: int) -> int:
        """The position just after the next newline at or after ``buf[pos]``, moving the window as needed."""
        end = self.buf.find(b"\n", pos)
        while end < 0:
            if self.base + len(self.buf) >= self.total:
                raise _truncated(self.where)
            self.refill(len(self.buf))  # no newline in the window: move past all of it
            end = self.buf.find(b"\n")
        return end + 1

    def check_memo(self, at: int, index: int, stores: int) -> None:
        """Refuse memo ``index`` stored by the opcode at ``buf[at]`` after ``stores`` PUT/BINPUT/LONG_BINPUTs."""
        if index <= stores + _MEMO_SLACK:
            return
        made = stores + self._memoize_bytes(self.base + at)  # MEMOIZEs: at most as many as their bytes
        if index > made + _MEMO_SLACK:
            raise BadInputError(
                self.where,
                f"pickle opcode {_NAMES[self.buf[at]]} at byte {self.base + at} stores memo entry {index} when at "
                f"most {made} came before it (the unpickler would size its memo by it); the file is corrupt",
            )

    def _memoize_bytes(self, offset: int) -> int:
        """How many 0x94 (MEMOIZE) bytes the stream holds before ``offset``; read again only when a memo index
        outruns the PUTs (never for a pickle that Python wrote), with the stream's position restored."""
        here = self.handle.tell()
        self.handle.seek(self.start + self.counted)
        while self.counted < offset:
            piece = self.handle.read(min(_CHUNK, offset - self.counted))
            if not piece:
                break
            self.memoized += piece.count(_MEMOIZE_BYTE)
            self.counted += len(piece)
        self.handle.seek(here)
        return self.memoized

    def refuse(self, at: int, size: int, remain: int, op: int) -> None:
        raise BadInputError(
            self.where,
            f"pickle opcode {_NAMES[op]} at byte {self.base + at} claims {size} bytes but only {remain} remain; "
            "the file is truncated or corrupt",
        )

    def _read(self, size: int) -> bytes:
        parts, got = [], 0
        while got < size:
            part = self.handle.read(size - got)
            if not part:  # the stream ended before the size it had when the scan began
                raise _truncated(self.where)
            parts.append(part)
            got += len(part)
        return b"".join(parts)


def _truncated(where: str) -> BadInputError:
    return BadInputError(where, "pickle is truncated (ends before its STOP opcode); re-copy the file")


def _check_claims(handle: IO[bytes], where: str) -> None:
    """Refuse (:class:`BadInputError`) a pickle any of whose counts claims more than ``handle`` still holds.

    ``handle`` must be seekable; it is left where it was. Counted data (strings, bytes, longs) is skipped by
    seeking, so the scan reads opcodes and short arguments only, at most ``_CHUNK`` bytes at a time, and stops
    at the first STOP, as the unpickler does.
    """
    start = handle.tell()
    total = handle.seek(0, os.SEEK_END) - start
    handle.seek(start)
    win = _Window(handle, start, total, where)
    mapped = _map(handle) if total > 0 else None
    if mapped is not None:  # a file on disk: scan it in place, the whole of it one window (no copy)
        win.buf, win.base, win.limit = mapped, -start, min(len(mapped), start + total) - _PAD
    try:
        _scan(win, start if mapped is not None else 0)
    finally:
        win.buf = b""
        if mapped is not None:
            mapped.close()
        handle.seek(start)


def _map(handle: IO[bytes]) -> mmap.mmap | None:
    """A read-only map of the file behind ``handle`` when it is a plain file object, else ``None``."""
    if type(handle) not in (io.BufferedReader, io.FileIO):  # e.g. a GzipFile's fileno() is the compressed file's
        return None
    try:
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


def _scan(win: _Window, pos: int) -> None:
    """Walk the opcodes of ``win``'s pickle from ``buf[pos]`` to its STOP, checking every count and memo index."""
    kinds, where, run = _KINDS, win.where, _RUN
    buf, limit, stores = win.buf, win.limit, 0  # stores: PUT, BINPUT and LONG_BINPUT so far
    while True:
        if pos > limit:
            win.refill(pos)
            buf, pos, limit = win.buf, 0, win.limit
        pos = run(buf, pos).end()  # opcodes with fixed-size arguments
        if pos > limit:  # the window ends inside the next opcode's argument
            continue
        op = buf[pos]
        kind = kinds[op]
        pos += 1
        if kind == _COUNT1:
            size = buf[pos]
            pos += 1
            if pos + size <= limit:
                pos += size
            else:
                pos = win.skip(pos, size, op, 2)
                buf, limit = win.buf, win.limit
        elif kind == _MEMO4:
            index = _U4.unpack_from(buf, pos)[0]
            if index > stores + _MEMO_SLACK:
                win.check_memo(pos - 1, index, stores)
            pos += 4
            stores += 1
        elif kind == _COUNT4U:
            pos = win.skip(pos + 4, _U4.unpack_from(buf, pos)[0], op, 5)
            buf, limit = win.buf, win.limit
        elif kind == _COUNT8U:
            pos = win.skip(pos + 8, _U8.unpack_from(buf, pos)[0], op, 9)
            buf, limit = win.buf, win.limit
        elif kind == _MEMO1:  # BINPUT: an index < 256 is no claim
            pos += 1
            stores += 1
        elif kind == _FRAME:  # the frame's opcodes follow: only its length is checked
            size, pos = _U8.unpack_from(buf, pos)[0], pos + 8
            if size > win.total - win.base - pos:
                if win.total - win.base - pos < 0:
                    raise _truncated(where)
                win.refuse(pos - 9, size, win.total - win.base - pos, op)
        elif kind == _COUNT4:
            size = _I4.unpack_from(buf, pos)[0]
            if size < 0:
                raise BadInputError(
                    where, f"pickle opcode {_NAMES[op]} at byte {win.base + pos - 1} has a negative count {size}"
                )
            pos = win.skip(pos + 4, size, op, 5)
            buf, limit = win.buf, win.limit
        elif kind == _STOP:
            return
        elif kind == _LINE or kind == _LINE2:
            pos = win.skip_line(pos)
            if kind == _LINE2:
                pos = win.skip_line(pos)
            buf, limit = win.buf, win.limit
        elif kind == _PUTLINE:
            end = buf.find(b"\n", pos, pos + 32)
            if end < 0:  # the line may cross the window's end
                win.refill(pos - 1)
                buf, pos, limit = win.buf, 1, win.limit
                end = buf.find(b"\n", pos, pos + 32)
                if end < 0:
                    raise BadInputError(where, f"pickle opcode PUT at byte {win.base} has no short memo index")
            try:
                index = int(buf[pos:end])
            except ValueError:
                index = 0  # not a number: the unpickler refuses it with its own message
            win.check_memo(pos - 1, index, stores)
            stores += 1
            pos = end + 1
        elif win.base + pos - 1 >= win.total:
            raise _truncated(where)
        else:
            raise BadInputError(where, f"not a valid pickle: unknown opcode 0x{op:02x} at byte {win.base + pos - 1}")


def safe_load(source: str | os.PathLike[str] | IO[bytes], *, allow_trailing: bool = False) -> Any:
    """Unpickle ``source`` (a path or a binary file object), admitting only numpy arrays and plain data.

    Raises :class:`BadInputError` (naming the file) for a refused global, a truncated or corrupt pickle,
    inconsistent numpy data, or a count (of bytes, characters, a frame's length, a memo index) larger than the
    input could hold — checked by a scan of the opcodes before anything is unpickled, so no allocation is
    sized by a claim. When ``source`` is a path, bytes after the pickle's end are refused unless
    ``allow_trailing``. A file object is read from its current position; one that cannot seek (a pipe) is
    first read whole into memory (its actual bytes, however many that is) and checked there; a seekable one is
    left just after the pickle.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            handle = path.open("rb")
        except OSError as err:
            raise BadInputError(path, f"cannot read: {err.strerror}") from err
        with handle:
            if path.stat().st_size == 0:
                raise BadInputError(path, "file is empty; re-copy it")
            _check_claims(handle, str(path))
            obj = _load(handle, str(path))
            if not allow_trailing and handle.read(1):
                raise BadInputError(
                    path, "extra bytes after the end of the pickle; the file is corrupt or not one pickle"
                )
        return obj
    where = str(getattr(source, "name", "<pickle stream>"))
    try:
        seekable = bool(source.seekable())
    except (AttributeError, OSError, ValueError):
        seekable = False
    if not seekable:
        source = io.BytesIO(_read_all(source, where))
    try:
        _check_claims(source, where)
    except OSError as err:
        raise BadInputError(where, f"cannot read: {err}") from err
    return _load(source, where)


def _read_all(stream: IO[bytes], where: str) -> bytes:
    """Everything ``stream`` still holds, read in bounded pieces (never a size the data claims)."""
    parts = []
    try:
        while part := stream.read(_CHUNK):
            parts.append(part)
    except (OSError, ValueError) as err:
        raise BadInputError(where, f"cannot read: {err}") from err
    return b"".join(parts)


def _load(handle: IO[bytes], where: str) -> Any:
    try:
        obj = _RestrictedUnpickler(handle, where).load()
    except BadInputError:
        raise
    except EOFError as err:
        raise BadInputError(where, "pickle is truncated (ends before its STOP opcode); re-copy the file") from err
    except RecursionError as err:
        raise BadInputError(where, "pickle nests too deeply to load") from err
    except MemoryError as err:
        raise BadInputError(where, "pickle claims more memory than is available; the file is corrupt") from err
    except pickle.UnpicklingError as err:
        if "truncated" in str(err):
            raise BadInputError(where, "pickle is truncated (its data ends early); re-copy the file") from err
        raise BadInputError(where, f"not a valid pickle of arrays and plain data: {err}") from err
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError, UnicodeError, OSError) as err:
        raise BadInputError(where, f"not a valid pickle of arrays and plain data: {err}") from err
    try:
        return _plain(obj, {})
    except RecursionError as err:
        raise BadInputError(where, "pickle nests too deeply to load") from err
    except pickle.UnpicklingError as err:
        raise BadInputError(where, f"not a valid pickle of arrays and plain data: {err}") from err
