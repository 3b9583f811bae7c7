"""Shared pieces of the importers' property-based tests: byte mutations, re-encodings and the outcome check.

Every importer must turn a damaged input into one of two documented outcomes: a ``Rejected`` record naming the
file (``Importer.run``), or a :class:`~skelssl.errors.BadInputError` naming the file (``Importer.tasks`` and the
file-level loaders). Nothing else may escape, nothing may hang (each example runs under ``DEADLINE``), and a
claimed count must never drive an allocation (tested per format with absurd claims under :func:`bounded`).
"""

from __future__ import annotations

import codecs
import struct
import tracemalloc
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from skelssl.data.importers.base import TaskResult
from skelssl.errors import BadInputError

#: Generous per-example bound: the examples take milliseconds; this only catches hangs on a loaded machine.
DEADLINE = timedelta(seconds=30)
#: What reading one small damaged file may allocate at its peak (traced Python and numpy memory): far below
#: any absurd claim (gigabytes), far above a real parse of the files used here.
ALLOCATION_LIMIT = 256 * 2**20
FUZZ = settings(max_examples=30, deadline=DEADLINE, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Byte blobs worth inserting into numeric text: digits, signs, separators, non-finite and absurd numbers,
#: non-UTF-8 and NUL bytes.
TEXT_BLOBS = st.sampled_from(
    [b"0", b"9", b" ", b"\n", b"\r\n", b"-", b".", b"e", b",", b"nan", b"inf", b"-inf", b"1e999", b"1e308",
     b"99999999999999999999", b"-99999999", b"\x00", b"\xff", b"\xe9", b"\t", b"#", b"x"]
) | st.binary(min_size=1, max_size=4)  # fmt: skip

#: One edit: (where, as a fraction of the length; what; the bytes it uses).
EDITS = st.lists(
    st.tuples(st.floats(0, 1), st.sampled_from(["delete", "replace", "insert", "dup_line", "drop_line"]), TEXT_BLOBS),
    min_size=1,
    max_size=3,
)
#: Edits of a binary file: random bytes, or a count/size field overwritten with an absurd or negative claim,
#: anywhere (a fraction) or in the first ``HEADER_BYTES`` (an offset: where headers, shapes and counts live).
HEADER_BYTES = 256
CLAIMS = st.sampled_from(
    [struct.pack(fmt, v) for fmt, v in (("<I", 0xFFFFFFFF), ("<I", 0x7FFFFFFF), ("<I", 10**9), ("<I", 0x80000000),
                                        ("<Q", 2**40), ("<Q", 2**63 - 1))]
    + [b"(1000000000000, ", b"-1, ", b"99999999999", b"'<f8'", b"'|O'"]
)  # fmt: skip
BINARY_EDITS = st.lists(
    st.tuples(
        st.floats(0, 1) | st.integers(0, HEADER_BYTES),
        st.sampled_from(["replace", "insert", "delete"]),
        st.binary(min_size=1, max_size=4) | CLAIMS,
    ),
    min_size=1,
    max_size=3,
)
#: Where to cut the mutated bytes (``None``: keep them whole).
CUTS = st.none() | st.floats(0, 1)


def mutate(data: bytes, edits: Iterable[tuple[float | int, str, bytes]], cut: float | None = None) -> bytes:
    """``data`` with ``edits`` applied in order, then truncated at ``cut`` (a fraction of the length).

    An edit's place is a fraction of the current length (float) or a byte offset (int).
    """
    out = bytearray(data)
    for where, kind, blob in edits:
        pos = where if isinstance(where, int) else round(where * len(out))
        pos = min(pos, max(len(out) - 1, 0))
        if kind == "delete":
            del out[pos : pos + len(blob)]
        elif kind == "replace":
            out[pos : pos + len(blob)] = blob
        elif kind == "insert":
            out[pos:pos] = blob
        else:
            start = out.rfind(b"\n", 0, pos) + 1
            end = out.find(b"\n", pos) + 1 or len(out)
            if kind == "dup_line":
                out[start:start] = out[start:end]
            else:
                del out[start:end]
    if cut is not None:
        out = out[: round(cut * len(out))]
    return bytes(out)


def _latin1_accent(data: bytes) -> bytes:
    """A latin-1 encoded 'é' (byte 0xE9, not UTF-8) in the middle of the file, as a latin-1 editor saves it."""
    mid = data.find(b"\n", len(data) // 2) + 1
    return data[:mid] + "é ".encode("latin-1") + data[mid:]


#: Re-encodings of a UTF-8/ASCII text file that a user's editor or export tool may produce, all refused.
WRONG_ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "utf-16 (BOM)": lambda data: data.decode("utf-8").encode("utf-16"),
    "utf-16-le (no BOM)": lambda data: data.decode("utf-8").encode("utf-16-le"),
    "utf-16-be (BOM)": lambda data: codecs.BOM_UTF16_BE + data.decode("utf-8").encode("utf-16-be"),
    "utf-32": lambda data: data.decode("utf-8").encode("utf-32"),
    "latin-1 byte": _latin1_accent,
}


def utf8_bom(data: bytes) -> bytes:
    """The file as Windows editors save UTF-8: with a byte-order mark, which the text importers accept."""
    return codecs.BOM_UTF8 + data


class Files(dict):
    """``{name: bytes}`` of fixture files, with a short repr (hypothesis prints test arguments on failure)."""

    def __repr__(self) -> str:
        return f"<{len(self)} files: {', '.join(map(str, self))}>"


def check_outcome(result: TaskResult, paths: Iterable[Path | str], *, joints: int, persons: int) -> None:
    """A ``run`` result is well formed: rejections name one of ``paths`` and say why; sequences are valid."""
    allowed = {str(p) for p in paths}
    for bad in result.rejected:
        assert bad.path in allowed, bad
        assert bad.reason and (bad.line is None or bad.line >= 1), bad
    for seq in result.sequences:
        kp = seq.keypoints
        assert kp.dtype == np.float32 and kp.ndim == 4, (kp.dtype, kp.shape)
        assert kp.shape[0] >= 1 and 1 <= kp.shape[1] <= persons and kp.shape[2] == joints and kp.shape[3] in (2, 3)
        assert np.isfinite(kp).all() and kp.any()
        assert seq.label >= 0


def bounded(call: Callable[..., object], *args: object, limit: int = ALLOCATION_LIMIT) -> object:
    """``call(*args)``'s result, or the :class:`BadInputError` it raised, asserting that the memory it allocated (traced
    Python and numpy allocations) peaked under ``limit``: an absurd claim in a file must not drive an allocation."""
    tracemalloc.start()
    try:
        try:
            out: object = call(*args)
        except BadInputError as err:
            out = err
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"{peak / 2**20:.0f} MiB allocated"
    return out
