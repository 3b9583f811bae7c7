"""Missing-joint robustness: the missing sets, the three ways of losing joints, and the protocol on real data."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.engine.checkpoint import save_encoder
from skelssl.errors import ConfigError
from skelssl.evaluation import robustness as rb
from skelssl.evaluation.linear import run_linear
from skelssl.evaluation.protocols import EvalContext, load_eval_encoder, make_eval_dataset
from skelssl.evaluation.report import write_report
from skelssl.models.registry import encoder_spec
from skelssl.models.stgcn import STGCN
from skelssl.models.transformer import SkeletonTransformer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ missing sets


def test_missing_sets_reproducible_per_sample_and_nested() -> None:
    idx = np.arange(200, 264)
    a = rb.missing_joint_sets(idx, 20, 5, seed=3)
    assert a.shape == (64, 5) and a.dtype == np.int64
    np.testing.assert_array_equal(a, rb.missing_joint_sets(idx, 20, 5, seed=3))  # reproducible
    assert len({tuple(r) for r in a}) > 50  # differ across samples
    assert all(len(set(r)) == 5 and list(r) == sorted(r) and 0 <= r.min() and r.max() < 20 for r in a)
    # a row depends on the sample's store index only: not on its position or the batch it comes in
    perm = np.random.default_rng(0).permutation(64)
    np.testing.assert_array_equal(rb.missing_joint_sets(idx[perm], 20, 5, seed=3), a[perm])
    np.testing.assert_array_equal(rb.missing_joint_sets(idx[:7], 20, 5, seed=3), a[:7])
    # another seed, other sets; smaller k, a subset of the same draw
    assert not np.array_equal(rb.missing_joint_sets(idx, 20, 5, seed=4), a)
    small = rb.missing_joint_sets(idx, 20, 3, seed=3)
    assert all(set(s) <= set(r) for s, r in zip(small, a, strict=True))
    assert rb.missing_joint_sets(idx, 20, 0, seed=3).shape == (64, 0)
    with pytest.raises(ConfigError):
        rb.missing_joint_sets(idx, 20, 20, seed=3)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    v=st.integers(2, 9),
    tp=st.integers(1, 5),
    m=st.integers(1, 3),
    data=st.data(),
)
def test_token_keep_index_matches_loop_reference(n: int, v: int, tp: int, m: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, v - 1))
    dropped = torch.tensor([sorted(data.draw(st.permutations(range(v)))[:k]) for _ in range(n)], dtype=torch.int64)
    dropped = dropped.reshape(n, k)
    keep = rb.token_keep_index(dropped, num_joints=v, num_segments=tp, persons=m)
    expected = []
    for i in range(n):
        row = [t * v + j for t in range(tp) for j in range(v) if j not in dropped[i].tolist()]
        expected += [row] * m
    assert keep.tolist() == expected


# ------------------------------------------------------------------------------------------------ modes


def _small_stgcn() -> STGCN:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return STGCN(layout="kinect20", hidden_channels=4, hidden_dim=16).eval()


def test_graph_mode_removes_joints_from_the_graph() -> None:
    model = _small_stgcn()
    x = torch.randn(3, 2, 16, 20, 3)
    dropped = torch.from_numpy(rb.missing_joint_sets([5, 9, 12], 20, 4, seed=0))
    seen: list[int] = []
    hook = model.st_gcn_networks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[-1]))
    with torch.no_grad():
        out = rb.encode_missing(model, x, dropped, "graph")
        full = rb.encode_missing(model, x, None, "graph")
    hook.remove()
    assert seen == [16, 20]  # V − k joints reach the first block
    with torch.no_grad():
        torch.testing.assert_close(out, model(x, drop_joints=dropped))
        # per sample: each row is the model with that sample's own joints removed
        for i in range(3):
            torch.testing.assert_close(out[i : i + 1], model(x[i : i + 1], drop_joints=dropped[i].tolist()))
        torch.testing.assert_close(full, model(x))
        part = torch.tensor([4, 5, 6, 7])  # a body part, shared by the batch
        torch.testing.assert_close(rb.encode_missing(model, x, part, "graph"), model(x, drop_joints=[4, 5, 6, 7]))


def test_zero_mode_zeroes_exactly_the_missing_joints() -> None:
    model = _small_stgcn()
    x = torch.randn(3, 2, 16, 20, 3) + 1.0
    dropped = torch.from_numpy(rb.missing_joint_sets([1, 2, 3], 20, 5, seed=0))
    seen: list[torch.Tensor] = []
    hook = model.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    with torch.no_grad():
        rb.encode_missing(model, x, dropped, "zero")
    hook.remove()
    (inp,) = seen
    for i in range(3):
        lost = dropped[i].tolist()
        kept = [j for j in range(20) if j not in lost]
        assert float(inp[i][:, :, lost].abs().max()) == 0.0
        torch.testing.assert_close(inp[i][:, :, kept], x[i][:, :, kept])


def test_token_mode_drops_the_missing_joints_tokens(monkeypatch) -> None:
    model = SkeletonTransformer(layout="kinect20", frames=12, segment=3, dim=16, depth=2, heads=2).eval()
    x = torch.randn(2, 2, 12, 20, 3)
    dropped = torch.from_numpy(rb.missing_joint_sets([7, 8], 20, 3, seed=1))
    captured: list[torch.Tensor] = []
    encode = model.encode

    def spy(tokens, *, keep_idx=None, **kw):
        captured.append(keep_idx)
        return encode(tokens, keep_idx=keep_idx, **kw)

    monkeypatch.setattr(model, "encode", spy)
    with torch.no_grad():
        out = rb.encode_missing(model, x, dropped, "token")
        full = rb.encode_missing(model, x, None, "token")
    keep = captured[0]
    assert keep.shape == (4, 4 * 17)  # (N·M, TP·(V − k))
    for row in range(4):
        joints = set((keep[row] % 20).tolist())
        assert joints.isdisjoint(dropped[row // 2].tolist()) and len(joints) == 17
    assert out.shape == (2, 16)
    with torch.no_grad():
        torch.testing.assert_close(full, model(x))  # k = 0: the plain pooled feature
    with pytest.raises(ConfigError, match="graph"):
        rb.encode_missing(model, x, dropped, "graph")
    with pytest.raises(ConfigError, match="token"):
        rb.encode_missing(_small_stgcn(), torch.randn(1, 1, 16, 20, 3), dropped[:1], "token")


# ------------------------------------------------------------------------------------------------ protocol


@pytest.fixture(scope="module")
def store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    src = tmp_path_factory.mktemp("rb") / "all_sqe"
    src.mkdir()
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a*_s0[12]_e00_*.json")):
        shutil.copy(f, src / f.name)
    out = src.parent / "store"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    return SkeletonStore.open(out)


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    module = _small_stgcn()
    card = {
        "method": "pstl",
        "encoder": encoder_spec(module),
        "pretrain": {"method": "pstl", "data": {"clips": "pstl", "persons": 1}, "pstl": {"stream": "joint"}},
        "data": {"layout": "kinect20", "clips": "pstl"},
    }
    return save_encoder(tmp_path_factory.mktemp("enc") / "stgcn", module, card)[0]


def _ctx(store: SkeletonStore, weights: Path, out: Path, **options: Any) -> EvalContext:
    return EvalContext(
        encoders=[load_eval_encoder(weights)],
        store=store,
        split="xview",
        epochs=20,
        seed=0,
        out_dir=out,
        options={"cache": str(out.parent / "cache"), **{k: str(v) for k, v in options.items()}},
    )


def test_robustness_rows_and_k0_equal_the_linear_probe(store, encoder_file, tmp_path) -> None:
    linear = run_linear(_ctx(store, encoder_file, tmp_path / "linear"))
    report = rb.run_robustness(_ctx(store, encoder_file, tmp_path / "rb", ks="0,3,8", parts="left_arm,trunk"))
    assert report["protocol"] == "robustness"
    assert report["top1"] == linear["top1"] and report["top5"] == linear["top5"]
    np.testing.assert_array_equal(np.load(tmp_path / "rb" / "logits.npy"), np.load(tmp_path / "linear" / "logits.npy"))
    rows = report["rows"]
    keys = [(r["mode"], r["setting"], r["missing"]) for r in rows]
    expected = [
        (mode, setting, missing)
        for mode in ("graph", "zero")
        for setting in ("test", "train_test")
        for missing in (0, 3, 8, "left_arm", "trunk")
    ]
    assert keys == expected
    for r in rows:
        assert 0.0 <= r["top1"] <= r["top5"] <= 1.0
        if r["missing"] == 0:
            assert (r["top1"], r["top5"]) == (linear["top1"], linear["top5"])
    layout = store.layout
    assert {r["missing"]: r["joints_missing"] for r in rows} == {
        0: 0,
        3: 3,
        8: 8,
        "left_arm": len(layout.parts["left_arm"]),
        "trunk": len(layout.parts["trunk"]),
    }
    # reproducible: the missing sets come from the seed
    again = rb.run_robustness(_ctx(store, encoder_file, tmp_path / "rb2", ks="0,3,8", parts="left_arm,trunk"))
    assert [r["top1"] for r in again["rows"]] == [r["top1"] for r in rows]
    path = rb.plot_robustness(rows, tmp_path / "plot.png")
    assert path is not None and path.stat().st_size > 0
    assert all(r.get("part") == r["missing"] for r in rows if isinstance(r["missing"], str))
    assert write_report(tmp_path / "rb", report).is_file()  # the report fits the shared writer
    assert (tmp_path / "rb" / "missing_joints.png").is_file()


def test_missing_features_are_reproducible_and_mode_dependent(store, encoder_file, tmp_path) -> None:
    ctx = _ctx(store, encoder_file, tmp_path)
    ds = make_eval_dataset(ctx, "test")
    enc = ctx.encoder
    a = rb.missing_features(enc, ds, mode="graph", k=5, seed=0, batch_size=7)
    b = rb.missing_features(enc, ds, mode="graph", k=5, seed=0, batch_size=64)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)  # batch size does not change the draws
    np.testing.assert_array_equal(a[2], ds.indices)
    z = rb.missing_features(enc, ds, mode="zero", k=5, seed=0)
    other = rb.missing_features(enc, ds, mode="graph", k=5, seed=1)
    assert not np.allclose(a[0], z[0]) and not np.allclose(a[0], other[0])


def test_bad_options(store, encoder_file, tmp_path) -> None:
    with pytest.raises(ConfigError, match="token"):
        rb.run_robustness(_ctx(store, encoder_file, tmp_path, modes="token"))
    with pytest.raises(ConfigError, match="20"):
        rb.run_robustness(_ctx(store, encoder_file, tmp_path, ks="0,20"))
    with pytest.raises(ConfigError, match="unknown option"):
        rb.run_robustness(_ctx(store, encoder_file, tmp_path, k="3"))
