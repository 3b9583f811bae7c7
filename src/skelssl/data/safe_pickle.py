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
import math
import os
import pickle
import re
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


def safe_load(source: str | os.PathLike[str] | IO[bytes], *, allow_trailing: bool = False) -> Any:
    """Unpickle ``source`` (a path or a binary file object), admitting only numpy arrays and plain data.

    Raises :class:`BadInputError` (naming the file) for a refused global, a truncated or corrupt pickle,
    or inconsistent numpy data. When ``source`` is a path, bytes after the pickle's end are refused unless
    ``allow_trailing``.
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
            obj = _load(handle, str(path))
            if not allow_trailing and handle.read(1):
                raise BadInputError(
                    path, "extra bytes after the end of the pickle; the file is corrupt or not one pickle"
                )
        return obj
    return _load(source, str(getattr(source, "name", "<pickle stream>")))


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
