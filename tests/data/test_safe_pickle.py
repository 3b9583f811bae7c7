"""The restricted unpickler: legitimate numpy/plain-data pickles load; anything that could run code never does."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import pickletools
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skelssl.data import safe_pickle
from skelssl.data.safe_pickle import safe_load
from skelssl.errors import BadInputError
from tests.data.importers.fuzzing import bounded

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


def _pyskl_like() -> dict:
    """A PySKL-style annotation dict as numpy 2 writes it: arrays, numpy scalars, plain containers."""
    rng = np.random.default_rng(0)
    return {
        "split": {"xsub_train": ["S001C001P001R001A001"], "xsub_val": ["S001C001P002R001A002"]},
        "annotations": [
            {
                "frame_dir": f"S001C001P00{k + 1}R001A00{k + 1}",
                "label": np.int64(k),
                "keypoint": rng.normal(size=(2, 7, 25, 3)).astype(np.float32),
                "keypoint_score": rng.random(size=(2, 7, 25)).astype(np.float16),
                "total_frames": 7,
                "img_shape": (1080, 1920),
                "names": np.array(["ab", "c"]),
                "raw": b"\x00\xff",
                "extra": {1.5, 2.5},
                "z": 1 + 2j,
                "od": collections.OrderedDict(a=1),
                "fs": frozenset({"x"}),
                "ba": bytearray(b"xy"),
                "none": None,
                "big_endian": np.arange(4, dtype=">i4"),
                "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            }
            for k in range(2)
        ],
    }


def _assert_same(got: object, want: object) -> None:
    """Deep equality; arrays must be plain ``np.ndarray`` with equal values and dtype kind/size."""
    if isinstance(want, np.ndarray):
        assert type(got) is np.ndarray
        assert got.dtype.kind == want.dtype.kind and got.dtype.itemsize == want.dtype.itemsize
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, dict):
        assert type(got) is type(want) and list(got) == list(want)
        for key in want:
            _assert_same(got[key], want[key])
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            _assert_same(a, b)
    else:
        assert type(got) is type(want) and got == want


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_loads_numpy2_pickles_all_protocols(tmp_path: Path, protocol: int) -> None:
    data = _pyskl_like()
    path = tmp_path / "anno.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    _assert_same(safe_load(path), data)
    with path.open("rb") as handle:  # a file object works too
        _assert_same(safe_load(handle), data)


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_loads_numpy1_module_paths(protocol: int) -> None:
    """numpy 1.x pickles name ``numpy.core.multiarray``; numpy 2 writes ``numpy._core``: both load."""
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int64(5)}
    blob = pickle.dumps(data, protocol=protocol)
    assert b"numpy._core.multiarray" in blob
    legacy = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    _assert_same(safe_load(io.BytesIO(legacy)), data)


def test_loads_aimclr_label_pickle(tmp_path: Path) -> None:
    """ST-GCN/AimCLR ``train_label.pkl``: a (names, labels) tuple of plain lists."""
    names = [f"S001C001P001R001A{a:03d}.skeleton" for a in range(1, 4)]
    path = tmp_path / "train_label.pkl"
    with path.open("wb") as handle:
        pickle.dump((names, [0, 1, 2]), handle)
    assert safe_load(path) == (names, [0, 1, 2])


class _Exploit:
    """Pickles as a call to ``func(*args)``: the classic code-execution gadget."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def _gadgets(marker: Path) -> list[tuple[str, _Exploit]]:
    touch = f"touch {marker}"
    return [
        ("posix.system" if os.name == "posix" else "nt.system", _Exploit(os.system, touch)),
        ("builtins.eval", _Exploit(builtins.eval, f"open({str(marker)!r}, 'w')")),
        ("builtins.exec", _Exploit(builtins.exec, f"open({str(marker)!r}, 'w')")),
        ("subprocess.Popen", _Exploit(subprocess.Popen, ["touch", str(marker)])),
        ("io.open", _Exploit(builtins.open, str(marker), "w")),
        ("builtins.getattr", _Exploit(builtins.getattr, "text", "upper")),
        (f"{np.load.__module__}.load", _Exploit(np.load, str(marker))),
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("index", range(7))
def test_refuses_code_execution(tmp_path: Path, protocol: int, index: int) -> None:
    marker = tmp_path / "pwned"
    expected, gadget = _gadgets(marker)[index]
    # hidden inside an otherwise legitimate PySKL-style annotation file
    payload = _pyskl_like()
    payload["annotations"][1]["label"] = gadget
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(BadInputError) as info:
        safe_load(path)
    assert f"'{expected}'" in str(info.value)  # named as Python 3 would load it, whatever the protocol
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_refused_pickle_really_would_run(tmp_path: Path) -> None:
    """Control: the same gadget under the stock unpickler does create the file (so the test above can fail)."""
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Exploit(builtins.eval, f"open({str(marker)!r}, 'w').close()"))
    pickle.loads(blob)
    assert marker.exists()


class _Custom:
    pass


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        (_Custom(), "_Custom"),  # any user class (copyreg / __main__ / module globals)
        (np.array([1, "a"], dtype=object), "not allowed"),  # object arrays could smuggle objects
        (np.zeros(2, dtype=[("a", "f4")]), "not allowed"),  # structured
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "not allowed"),
        (np.ma.array([1.0, 2.0]), "numpy.ma.core"),
        (collections.deque([1]), "collections.deque"),
        (range(3), "builtins.range"),
    ],
)
@pytest.mark.parametrize("protocol", [2, 5])
def test_refuses_other_globals_and_dtypes(obj: object, needle: str, protocol: int) -> None:
    with pytest.raises(BadInputError, match=needle):
        safe_load(io.BytesIO(pickle.dumps(obj, protocol=protocol)))


class _Raw:
    """Pickles as an arbitrary ``(callable, args, state)`` reduce tuple, for crafted numpy states."""

    def __init__(self, *reduce: object) -> None:
        self.reduce = reduce

    def __reduce__(self) -> tuple:
        return self.reduce


_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]


@pytest.mark.parametrize(
    "crafted",
    [
        # an object array whose element list is shorter than its shape: segfaults numpy's own __setstate__
        _Raw(_reconstruct, (np.ndarray, (0,), b"b"), (1, (3,), np.dtype("O"), False, [1, 2])),
        # data shorter than the shape claims
        _Raw(_reconstruct, (np.ndarray, (0,), b"b"), (1, (10**9,), np.dtype("f4"), False, b"\0" * 8)),
        # a numpy.ndarray(<huge shape>) call: allocation from a claim
        _Raw(np.ndarray, ((10**12,),)),
        _Raw(bytes, (10**12,)),
        _Raw(bytearray, (10**12,)),
        _Raw(np.dtype("f8").type, (b"\0" * 3,)),
    ],
)
def test_refuses_crafted_numpy_states(crafted: _Raw) -> None:
    for protocol in (2, 4):
        try:
            blob = pickle.dumps(crafted, protocol=protocol)
        except (pickle.PicklingError, TypeError):
            continue
        with pytest.raises(BadInputError):
            safe_load(io.BytesIO(blob))


def test_refuses_truncated_empty_and_trailing(tmp_path: Path) -> None:
    blob = pickle.dumps(_pyskl_like(), protocol=4)
    path = tmp_path / "a.pkl"
    for cut in (0, 1, 2, 20, len(blob) // 2, len(blob) - 1):
        path.write_bytes(blob[:cut])
        with pytest.raises(BadInputError, match=r"truncated|empty"):
            safe_load(path)
    path.write_bytes(blob + b"garbage")
    with pytest.raises(BadInputError, match="extra bytes"):
        safe_load(path)
    path.write_bytes(b"\x89PNG not a pickle at all")
    with pytest.raises(BadInputError):
        safe_load(path)
    with pytest.raises(BadInputError, match="cannot read"):
        safe_load(tmp_path / "missing.pkl")


def test_refuses_deep_nesting() -> None:
    with pytest.raises(BadInputError, match="deep"):
        safe_load(io.BytesIO(_nested_blob(sys.getrecursionlimit() * 2)))


def _nested_blob(depth: int) -> bytes:
    """A protocol-2 pickle of ``depth`` nested lists, written opcode by opcode (pickle.dumps would recurse)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    protocol=st.integers(0, pickle.HIGHEST_PROTOCOL),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_corrupted_pickles_only_raise_bad_input(protocol: int, flips: list, cut: int | None) -> None:
    """Random byte edits and truncations: the loader returns or raises BadInputError, nothing else."""
    blob = bytearray(
        pickle.dumps({"a": [np.arange(6, dtype=np.float32).reshape(2, 3), np.int64(3)], "b": ("x", b"y")}, protocol)
    )
    for pos, value in flips:
        blob[pos % len(blob)] = value
    if cut is not None:
        blob = blob[: cut % len(blob)]
    try:
        safe_load(io.BytesIO(bytes(blob)))
    except BadInputError:
        pass


# --------------------------------------------------------------------------------------- counts claimed by opcodes
# Every opcode that carries a byte count, with its count field claiming far more than the file holds. CPython's
# C unpickler would allocate (BINBYTES, BINBYTES8, BYTEARRAY8) or ask a buffered file for (the others) that many
# bytes before finding the data short; safe_load's pre-scan refuses them first.
_HUGE4, _HUGE8 = 2**32 - 1, 2**40
COUNTED = {
    "SHORT_BINSTRING": b"U\xff",
    "SHORT_BINBYTES": b"C\xff",
    "SHORT_BINUNICODE": b"\x8c\xff",
    "LONG1": b"\x8a\xff",
    "BINSTRING": b"T" + struct.pack("<i", 2**31 - 1),
    "LONG4": b"\x8b" + struct.pack("<i", 2**31 - 1),
    "BINBYTES": b"B" + struct.pack("<I", _HUGE4),
    "BINUNICODE": b"X" + struct.pack("<I", _HUGE4),
    "BINBYTES8": b"\x8e" + struct.pack("<Q", _HUGE8),
    "BINUNICODE8": b"\x8d" + struct.pack("<Q", _HUGE8),
    "BYTEARRAY8": b"\x96" + struct.pack("<Q", _HUGE8),
    "FRAME": b"\x95" + struct.pack("<Q", _HUGE8),
}


def test_counted_opcodes_are_all_covered() -> None:
    """COUNTED names every opcode whose argument is a byte count (as pickletools describes them), and FRAME."""
    counts = {
        pickletools.TAKEN_FROM_ARGUMENT1,
        pickletools.TAKEN_FROM_ARGUMENT4,
        pickletools.TAKEN_FROM_ARGUMENT4U,
        pickletools.TAKEN_FROM_ARGUMENT8U,
    }
    names = {op.name for op in pickletools.opcodes if op.arg is not None and op.arg.n in counts}
    assert names | {"FRAME"} == set(COUNTED)
    for name, blob in COUNTED.items():
        assert pickletools.code2op[chr(blob[0])].name == name


class _Pipe(io.RawIOBase):
    """A non-seekable binary stream (a pipe, a socket) over ``data``."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def _sources(tmp_path: Path, blob: bytes) -> dict:
    """``blob`` as safe_load may get it: a path, a seekable stream, a non-seekable one, an open file at an offset."""
    path = tmp_path / "claim.pkl"
    path.write_bytes(blob)
    offset = tmp_path / "offset.pkl"
    offset.write_bytes(pickle.dumps([1, 2], protocol=2) + blob)
    return {
        "path": lambda: safe_load(path),
        "BytesIO": lambda: safe_load(io.BytesIO(blob)),
        "pipe": lambda: safe_load(io.BufferedReader(_Pipe(blob))),
        "file at offset": lambda: _second(offset),
    }


def _second(path: Path) -> object:
    with path.open("rb") as handle:
        assert safe_load(handle) == [1, 2]
        return safe_load(handle)


@pytest.mark.parametrize("name", COUNTED)
@pytest.mark.parametrize("where", ["first", "after a real pickle"])
def test_absurd_counts_are_refused_without_allocating(tmp_path: Path, name: str, where: str) -> None:
    prefix = b"\x80\x04" if where == "first" else pickle.dumps(_pyskl_like(), protocol=4)[:-1]  # all but STOP
    blob = prefix + COUNTED[name] + b"xyz."
    for source, load in _sources(tmp_path, blob).items():
        err = bounded(load)
        assert isinstance(err, BadInputError), (source, err)
        assert f"pickle opcode {name} at byte {len(prefix)} claims" in err.reason, (source, err.reason)
        assert "bytes but only" in err.reason and "truncated or corrupt" in err.reason
    assert str(tmp_path / "claim.pkl") in str(bounded(_sources(tmp_path, blob)["path"]))


def test_absurd_count_would_allocate_without_the_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: with the pre-scan disabled, the C unpickler allocates a BINBYTES claim before reading it (so the
    test above can fail)."""
    monkeypatch.setattr(safe_pickle, "_check_claims", lambda handle, where: None)
    blob = b"\x80\x04B" + struct.pack("<I", 300 * 2**20) + b"xyz."
    with pytest.raises(AssertionError, match="MiB allocated"):
        bounded(lambda: safe_load(io.BytesIO(blob)))


@pytest.mark.parametrize(
    "blob",
    [
        b"\x80\x02Nr" + struct.pack("<I", 2**26) + b".",  # LONG_BINPUT: the memo would be resized to 2**27 slots
        b"\x80\x02Np99999999\n.",  # PUT (text)
        b"(Np0\nNp1\nNp123456789\nl.",  # PUT after two legitimate ones
    ],
)
def test_absurd_memo_indices_are_refused(blob: bytes) -> None:
    err = bounded(lambda: safe_load(io.BytesIO(blob)))
    assert isinstance(err, BadInputError) and "stores memo entry" in err.reason, err


def test_memo_indices_a_little_ahead_load() -> None:
    """Python 2's pickle.py could skip a memo index; an index a few ahead of the stores is no claim."""
    assert safe_load(io.BytesIO(b"\x80\x02Nr" + struct.pack("<I", 3) + b"0Nh\x03.")) is None
    assert safe_load(io.BytesIO(b"(Np2\nh\x02l.")) == [None, None]


def _big_payload() -> dict:
    """Arrays small and large (inside frames, outside frames, larger than the 1 MiB scan window), text, longs."""
    rng = np.random.default_rng(1)
    return {
        "small": [rng.normal(size=(2, 5, 25, 3)).astype(np.float32) for _ in range(20)],
        "outside_frame": rng.normal(size=(2, 300, 25, 3)),  # 360 kB
        "past_window": rng.integers(0, 255, size=3 * 2**20, dtype=np.uint8),
        "text": "x" * 70_000 + "é",
        "bytes": bytes(range(256)) * 300,
        "long": 7**400,
        "keys": {f"k{i}": i for i in range(300)},  # > 256 memo entries: LONG_BINPUT below protocol 4
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("chunk", [None, 16, 1000])
def test_big_pickles_load_identically_whatever_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: int, chunk: int | None
) -> None:
    """Every protocol, every kind of source, and scan windows small enough that opcodes, counts and text lines
    straddle their edges: the pre-scan passes every valid pickle and the result is unchanged."""
    if chunk is not None:
        monkeypatch.setattr(safe_pickle, "_CHUNK", chunk)
    data = _big_payload()
    blob = pickle.dumps(data, protocol=protocol)
    for source, load in _sources(tmp_path, blob).items():
        got = load()
        assert list(got) == list(data), source
        for key in ("small", "keys", "text", "bytes", "long"):
            _assert_same(got[key], data[key])
        np.testing.assert_array_equal(got["outside_frame"], data["outside_frame"])
        np.testing.assert_array_equal(got["past_window"], data["past_window"])


def _reference_overclaim(blob: bytes) -> bool | None:
    """Independently of safe_pickle: is the first defect pickletools finds in ``blob`` a count (or a FRAME length)
    larger than the bytes after it? ``None`` when pickletools stops at something the unpickler only judges later
    (text it cannot decode, a malformed number), so the answer is unknown."""
    try:
        for op, arg, pos in pickletools.genops(blob):
            if op.name == "FRAME" and arg > len(blob) - pos - 9:
                return True
    except UnicodeDecodeError:
        return None
    except ValueError as err:
        structural = ("but only", "unknown", "not enough data", "no newline", "byte count < 0")
        return "but only" in str(err) if any(word in str(err) for word in structural) else None
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    protocol=st.integers(0, pickle.HIGHEST_PROTOCOL),
    edits=st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.sampled_from([b"\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", struct.pack("<Q", 2**40), b"B", b"X"]),
        ),
        min_size=1,
        max_size=3,
    ),
    chunk=st.sampled_from([None, 12, 64]),
)
def test_refused_counts_match_pickletools(protocol: int, edits: list, chunk: int | None) -> None:
    """Count fields overwritten with large values anywhere: safe_load refuses exactly the pickles whose first
    defect (per pickletools) is an over-long count, allocates little either way, and raises nothing else."""
    blob = bytearray(pickle.dumps({"a": [np.arange(40, dtype=np.float32), "text" * 20, b"xy" * 30]}, protocol))
    for pos, value in edits:
        at = pos % len(blob)
        blob[at : at + len(value)] = value
    blob = bytes(blob)
    saved = safe_pickle._CHUNK
    safe_pickle._CHUNK = chunk or saved
    try:
        out = bounded(lambda: safe_load(io.BytesIO(blob)), limit=32 * 2**20)
    finally:
        safe_pickle._CHUNK = saved
    claimed = isinstance(out, BadInputError) and "bytes but only" in out.reason
    assert "only -" not in str(out)
    reference = _reference_overclaim(blob)
    if reference:
        assert claimed or "stores memo entry" in str(out), out
    elif reference is False:
        assert not claimed, out
