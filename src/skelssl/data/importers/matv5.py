"""A structural check of MATLAB v5 ``.mat`` bytes, run before :func:`scipy.io.loadmat` reads them.

scipy trusts the counts in a v5 file: it allocates each data element's claimed byte count before reading it
(``2**31 - 8`` claimed in a 1 kB file makes a 2 GiB allocation), sizes cell and struct arrays by their claimed
dimensions before reading one element, and reads numeric data of an unknown element type through a null
pointer (the process dies). :func:`check_mat_v5` walks the element tree the way scipy's reader will — the
128-byte header; per variable a tag ``(type u32, nbytes u32)``; inside ``miMATRIX`` (14) the array flags, the
dimensions, the name and the class's own elements, recursing into sub-matrices; ``miCOMPRESSED`` (15) inflated
piece by piece — and refuses, naming the file:

* an element whose byte count exceeds what remains of its parent (or of the inflated data),
* a cell or struct array with more elements (times fields) than the bytes left could describe (each needs an
  8-byte tag at least), or, with no per-element data (zero fields, empty char data), more than ``MAX_EMPTY``,
* numeric or char data of an element type scipy has no dtype for, a malformed tag, an unknown array class,
  more than 32 dimensions, more than ``MAX_FIELDS`` struct fields, nesting deeper than ``MAX_DEPTH``,
* a v7.3 (HDF5) file, with a message saying how to re-save it.

It allocates nothing sized by a claim: the file's bytes are walked in place and compressed data is inflated
at most ``_PIECE`` bytes at a time. MATLAB v4 files are left to scipy (whose v4 reader, given a ``BytesIO``,
reads at most what is there).
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

from skelssl.errors import BadInputError

MI_INT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED, MI_UTF8 = 1, 5, 6, 14, 15, 16
#: Element types scipy can turn into an array (``mio5_params.MDTYPES``): any other type as numeric or char
#: data makes scipy 1.x dereference a null dtype pointer.
DATA_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18})
CELL, STRUCT, OBJECT, CHAR, SPARSE, FUNCTION, OPAQUE = 1, 2, 3, 4, 5, 16, 17
NUMERIC = frozenset(range(6, 16))  # double, single, int8 … uint64
MAX_DEPTH = 64
MAX_FIELDS = 4096  # scipy compares every field name with every other (quadratic)
MAX_EMPTY = 1 << 16  # elements of an array with no per-element data (scipy still makes one object each)
MAX_DIMS_BYTES = 128  # 32 dimensions
HEADER_BYTES = 128
_PIECE = 1 << 20  # inflated bytes produced per step
_IN = 1 << 16  # compressed bytes fed per step


class _Short(Exception):
    """The source ended ``available`` bytes into a read."""

    def __init__(self, available: int) -> None:
        self.available = available


class _Span:
    """Bytes ``data[pos:end]`` of the file, read forwards."""

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def where(self, pos: int | None = None) -> str:
        return f"at byte {self.pos if pos is None else pos}"

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise _Short(self.end - self.pos)
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def skip(self, n: int) -> None:
        if n > self.end - self.pos:
            raise _Short(self.end - self.pos)
        self.pos += n

    def has(self, n: int) -> bool:
        return n <= self.end - self.pos

    def peek(self, n: int) -> bytes:
        return self.data[self.pos : min(self.pos + n, self.end)]


class _Inflated:
    """The inflated contents of one ``miCOMPRESSED`` element, read forwards at most ``_PIECE`` bytes at a time."""

    def __init__(self, check: _Checker, data: bytes, start: int, end: int) -> None:
        self.check, self.start = check, start
        self.data, self.next, self.stop = memoryview(data), start, end
        self.z = zlib.decompressobj()
        self.buf, self.off, self.pos = b"", 0, 0  # pos: inflated bytes consumed

    def where(self, pos: int | None = None) -> str:
        return f"at byte {self.pos if pos is None else pos} of the variable compressed at byte {self.start - 8}"

    def _inflate(self, z: zlib._Decompress, nxt: int) -> tuple[bytes, int]:
        """The next piece from decompressor ``z`` fed from ``data[nxt:]`` (b"" at the end), and the new ``nxt``."""
        while not z.eof:
            if z.unconsumed_tail:
                src = z.unconsumed_tail
            elif nxt < self.stop:
                src = self.data[nxt : min(self.stop, nxt + _IN)]
                nxt += len(src)
            else:
                src = b""
            try:
                out = z.decompress(src, _PIECE)
            except zlib.error as err:
                raise self.check.fail(f"the variable compressed at byte {self.start - 8} is corrupt ({err})") from err
            if out or not src:
                return out, nxt
        return b"", nxt

    def _more(self) -> bool:
        out, self.next = self._inflate(self.z, self.next)
        if not out:
            return False
        self.buf, self.off = self.buf[self.off :] + out, 0
        return True

    def take(self, n: int) -> bytes:
        while len(self.buf) - self.off < n:
            if not self._more():
                raise _Short(len(self.buf) - self.off)
        self.off += n
        self.pos += n
        return self.buf[self.off - n : self.off]

    def skip(self, n: int) -> None:
        done = 0
        while done < n:
            if self.off == len(self.buf) and not self._more():
                raise _Short(done)
            step = min(n - done, len(self.buf) - self.off)
            self.off += step
            done += step
        self.pos += n

    def peek(self, n: int) -> bytes:
        while len(self.buf) - self.off < n and self._more():
            pass
        return self.buf[self.off : self.off + n]

    def has(self, n: int) -> bool:
        """Whether ``n`` more inflated bytes exist; inflates a copy of the stream, keeping nothing."""
        have = len(self.buf) - self.off
        z, nxt = self.z.copy(), self.next
        while have < n:
            out, nxt = self._inflate(z, nxt)
            if not out:
                return False
            have += len(out)
        return True


_Source = _Span | _Inflated


class _Checker:
    def __init__(self, path: str | Path, little: bool) -> None:
        self.path, self.order = path, "<" if little else ">"
        self.pair, self.u4 = struct.Struct(self.order + "II"), struct.Struct(self.order + "I")

    def fail(self, reason: str) -> BadInputError:
        return BadInputError(self.path, f"not a readable MATLAB .mat file: {reason}")

    def claim(self, at: str, n: int, left: int, what: str) -> BadInputError:
        return self.fail(
            f"{what} {at} claims {n} bytes but only {max(left, 0)} remain; the file is truncated or corrupt"
        )

    # ------------------------------------------------------------------------------------------- file level
    def file(self, data: bytes) -> None:
        top = _Span(data, HEADER_BYTES, len(data))
        while top.end - top.pos >= 8:  # scipy reads variables while bytes remain (a stray tail fails in scipy)
            at = top.where()
            mdtype, n = self.pair.unpack(top.take(8))
            if n > top.end - top.pos:
                raise self.claim(at, n, top.end - top.pos, "the variable")
            if n == 0:
                raise self.fail(f"the variable {at} is empty (a zero byte count)")
            if mdtype == MI_COMPRESSED:
                self.compressed(_Inflated(self, data, top.pos, top.pos + n))
            elif mdtype == MI_MATRIX:
                self.matrix(_Span(data, top.pos, top.pos + n), n, 1)
            else:
                raise self.fail(f"the element {at} has type {mdtype}, not a variable (miMATRIX or miCOMPRESSED)")
            top.skip(n)

    def compressed(self, src: _Inflated) -> None:
        at = src.where()
        try:
            mdtype, n = self.pair.unpack(src.take(8))
        except _Short as short:
            raise self.fail(f"the compressed variable {at} inflates to only {short.available} bytes") from None
        if mdtype != MI_MATRIX:
            raise self.fail(f"the compressed variable {at} holds an element of type {mdtype}, not a matrix")
        self.matrix(src, n, 1)

    # ------------------------------------------------------------------------------------------- matrices
    def matrix(self, src: _Source, n: int, depth: int) -> None:
        """The contents (``n`` bytes claimed) of a miMATRIX whose tag was just read, as scipy reads them."""
        if n == 0:
            return  # an empty matrix: scipy reads nothing more
        if depth > MAX_DEPTH:
            raise self.fail(f"arrays nest more than {MAX_DEPTH} deep {src.where()}")
        try:
            self._matrix(src, n, depth)
        except _Short as short:
            raise self.fail(f"the data ends {src.where()}, {short.available} bytes into an element") from None

    def _matrix(self, src: _Source, left: int, depth: int) -> None:
        at = src.pos
        if left < 16:
            raise self.claim(src.where(at), 16, left, "the array flags")
        flags = self.u4.unpack(src.take(16)[8:12])[0]  # scipy skips the flags' own tag
        left -= 16
        mclass, is_complex = flags & 0xFF, flags >> 11 & 1
        if mclass == OPAQUE:  # name, type system, class name, then a matrix
            for _ in range(3):
                left, _n, _ = self.element(src, left)
            self.child(src, left, depth)
            return
        left, size, dims = self.element(src, left, keep=MAX_DIMS_BYTES, what="the dimensions")
        left, _n, _ = self.element(src, left)  # the name
        count = math.prod(abs(d) for d in struct.unpack(f"{self.order}{size // 4}i", dims[: size // 4 * 4]))
        if mclass in NUMERIC or mclass == CHAR:
            if mclass == CHAR and count > MAX_EMPTY and self.next_is_empty(src, left):
                # scipy would make one blank per claimed character
                raise self.fail(f"the char array {src.where(at)} claims {count} characters and holds none")
            for _ in range(2 if is_complex and mclass != CHAR else 1):
                left, _n, _ = self.element(src, left, data=True)
        elif mclass == SPARSE:
            for _ in range(4 if is_complex else 3):
                left, _n, _ = self.element(src, left, data=True)
        elif mclass == CELL:
            self.room(src, at, count, 1, left, "cell")
            for _ in range(count):
                left = self.child(src, left, depth)
        elif mclass in (STRUCT, OBJECT):
            if mclass == OBJECT:
                left, _n, _ = self.element(src, left)  # the class name
            left, size, length = self.element(src, left, keep=4, what="the field name length")
            width = struct.unpack(self.order + "i", length)[0] if size == 4 else 0
            if width <= 0:
                raise self.fail(f"the struct array {src.where(at)} has no valid field name length")
            names_at = src.pos
            left, size, _ = self.element(src, left)  # the field names, ``width`` bytes each
            fields = size // width
            if fields > MAX_FIELDS:
                raise self.fail(f"the struct array {src.where(names_at)} has {fields} fields (at most {MAX_FIELDS})")
            self.room(src, at, count, fields, left, "struct")
            for _ in range(count * fields):
                left = self.child(src, left, depth)
        elif mclass == FUNCTION:
            self.child(src, left, depth)
        else:
            raise self.fail(f"the array {src.where(at)} has unknown class {mclass}")

    def room(self, src: _Source, at: str, count: int, fields: int, left: int, kind: str) -> None:
        """Refuse a cell/struct array whose element count scipy would allocate before the data proves it."""
        if fields == 0:
            if count > MAX_EMPTY:
                raise self.fail(f"the {kind} array {src.where(at)} claims {count} elements with no fields")
            return
        need = count * fields * 8  # each element (of each field) is a matrix with an 8-byte tag at least
        if need > left or not src.has(need):
            raise self.fail(
                f"the {kind} array {src.where(at)} claims {count} elements"
                + (f" (x {fields} fields)" if kind == "struct" else "")
                + f" but only {left} bytes remain for them; the file is truncated or corrupt"
            )

    def child(self, src: _Source, left: int, depth: int) -> int:
        """A sub-matrix (full tag, then contents) inside ``left`` bytes; the bytes left after it."""
        at = src.pos
        if left < 8:
            raise self.claim(src.where(at), 8, left, "the sub-matrix tag")
        mdtype, n = self.pair.unpack(src.take(8))
        if mdtype != MI_MATRIX:
            raise self.fail(f"expected a matrix element {src.where(at)}, found type {mdtype}")
        if n > left - 8:
            raise self.claim(src.where(at), n, left - 8, "the matrix element")
        self.matrix(src, n, depth + 1)
        return left - 8 - n

    def element(
        self, src: _Source, left: int, *, keep: int = 0, data: bool = False, what: str = "the element"
    ) -> tuple[int, int, bytes]:
        """A data element (small or full tag) inside ``left`` bytes: (bytes left after it, its byte count, its
        contents if ``keep`` — refused when longer — else b""). ``data``: numeric or char data, whose type
        scipy must know."""
        at = src.pos
        if left < 8:
            raise self.claim(src.where(at), 8, left, what)
        tag = src.take(8)
        mdtype, n = self.pair.unpack(tag)
        if mdtype >> 16:  # small data element: type and count in the first 4 bytes, data in the next 4
            n, mdtype = mdtype >> 16, mdtype & 0xFFFF
            if n > 4:
                raise self.fail(f"{what} {src.where(at)} is a small element claiming {n} bytes (at most 4)")
            content, used = tag[4 : 4 + n], 8
        else:
            if n > left - 8:
                raise self.claim(src.where(at), n, left - 8, what)
            if keep and n > keep:
                raise self.fail(f"{what} {src.where(at)} is {n} bytes long (at most {keep})")
            content = src.take(n) if keep else b""
            if not keep:
                src.skip(n)
            pad = min(-n % 8, left - 8 - n)  # scipy seeks to the next multiple of 8
            src.skip(pad)
            used = 8 + n + pad
        if data and mdtype not in DATA_TYPES:
            raise self.fail(f"{what} {src.where(at)} has data type {mdtype}, for which scipy has no reader")
        return left - used, n, content if keep else b""

    def next_is_empty(self, src: _Source, left: int) -> bool:
        """Whether the next element is a full tag with a zero byte count."""
        tag = src.peek(8) if left >= 8 else b""
        if len(tag) < 8:
            return False
        mdtype, n = self.pair.unpack(tag)
        return not mdtype >> 16 and n == 0


def check_mat_v5(path: str | Path, data: bytes) -> None:
    """Refuse (:class:`BadInputError` naming ``path``) v5 ``.mat`` bytes whose counts claim more than they hold.

    See the module docstring for what is checked. Files that are not v5 pass through, except v7.3 (HDF5), which
    is refused with a message; bytes too short for a header are left for scipy to refuse.
    """
    if len(data) < HEADER_BYTES or 0 in data[:4]:
        return  # too short (scipy refuses) or MATLAB v4 (a zero in the first 4 bytes)
    little = data[126:128] == b"IM"
    major = data[125] if data[126] == ord("I") else data[124]  # as scipy reads the version
    if major == 2:
        raise BadInputError(
            path,
            "is a MATLAB v7.3 (HDF5) .mat file, which skelssl does not read; re-save it in MATLAB with "
            "save(filename, '-v7') (or '-v6')",
        )
    if major != 1:
        return  # scipy refuses an unknown version
    _Checker(path, little).file(data)
