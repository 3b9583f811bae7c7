"""The restricted unpickler: legitimate numpy/plain-data pickles load; anything that could run code never does."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skelssl.data.safe_pickle import safe_load
from skelssl.errors import BadInputError

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
