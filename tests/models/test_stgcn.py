"""ST-GCN encoder: parameter counts, shapes, joint removal against a hand-written reference forward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.models import STGCN
from skelssl.skeleton.graph import partition
from skelssl.skeleton.layouts import get_layout

# PSTL's stack (methods.md §1.3), written out independently of the module: (in, out, stride, residual)
PSTL_TABLE = [
    ("in", "h", 1, "none"),
    ("h", "h", 1, "identity"),
    ("h", "h", 1, "identity"),
    ("h", "h", 1, "identity"),
    ("h", "2h", 2, "conv"),
    ("2h", "2h", 1, "identity"),
    ("2h", "2h", 1, "identity"),
    ("2h", "4h", 2, "conv"),
    ("4h", "4h", 1, "identity"),
    ("4h", "d", 1, "conv"),
]


def _table(cin: int, h: int, d: int) -> list[tuple[int, int, int, str]]:
    width = {"in": cin, "h": h, "2h": 2 * h, "4h": 4 * h, "d": d}
    rows = []
    for a, b, s, r in PSTL_TABLE:
        i, o = width[a], width[b]
        if r == "conv" and i == o and s == 1:
            r = "identity"  # full width: 4h == d
        rows.append((i, o, s, r))
    return rows


def _expected_params(v: int, k: int, cin: int, h: int, d: int, edge_importance: bool = True) -> int:
    total = 2 * v * cin  # input BatchNorm1d(V·C)
    for i, o, _, r in _table(cin, h, d):
        total += i * o * k + o * k  # 1×1 graph conv to K·out channels, with bias
        total += 2 * o + (o * o * 9 + o) + 2 * o  # BN, temporal conv (9, 1), BN
        if r == "conv":
            total += i * o + o + 2 * o  # 1×1 strided conv + BN
        if edge_importance:
            total += k * v * v
    return total


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_pstl_default() -> None:
    model = STGCN()
    assert _expected_params(25, 3, 3, 16, 256) == 821_380  # ≈ 0.80 M + 18,750 edge-importance values
    assert _count(model) == 821_380
    assert sum(p.numel() for p in model.edge_importance.parameters()) == 10 * 3 * 25 * 25 == 18_750
    assert _count(STGCN(edge_importance=False)) == 821_380 - 18_750


@pytest.mark.parametrize(
    ("layout", "cin", "h", "d", "strategy", "k", "edge"),
    [
        ("ntu25", 3, 64, 256, "spatial", 3, True),  # full-width ST-GCN
        ("kinect20", 3, 16, 256, "spatial", 3, True),
        ("coco17", 2, 16, 128, "uniform", 1, False),
        ("sbu15", 3, 8, 64, "distance", 2, True),
    ],
)
def test_parameter_count_variants(layout: str, cin: int, h: int, d: int, strategy: str, k: int, edge: bool) -> None:
    model = STGCN(
        layout=layout, in_channels=cin, hidden_channels=h, hidden_dim=d, strategy=strategy, edge_importance=edge
    )
    v = get_layout(layout).num_joints
    assert model.A.shape == (k, v, v)
    assert _count(model) == _expected_params(v, k, cin, h, d, edge)


def test_full_width_stgcn_is_about_3_1m() -> None:
    assert _count(STGCN(hidden_channels=64, hidden_dim=256)) == 3_083_412


def test_architecture_matches_table() -> None:
    model = STGCN()
    rows = _table(3, 16, 256)
    assert len(model.st_gcn_networks) == len(rows)
    for block, (i, o, s, r) in zip(model.st_gcn_networks, rows, strict=True):
        assert block.gcn.conv.weight.shape == (3 * o, i, 1, 1)
        conv = block.tcn[2]
        assert conv.weight.shape == (o, o, 9, 1) and conv.stride == (s, 1) and conv.padding == (4, 0)
        assert block.residual_kind == r
    assert model.st_gcn_networks[0].tcn[4].p == 0.0
    assert all(b.tcn[4].p == 0.5 for b in model.st_gcn_networks[1:])
    assert torch.equal(model.A, torch.from_numpy(partition("ntu25", "spatial")))
    assert all(torch.equal(e, torch.ones(3, 25, 25)) for e in model.edge_importance)
    assert model.feature_dim == 256


@pytest.mark.parametrize(("layout", "c"), [("ntu25", 3), ("kinect20", 3), ("sbu15", 3), ("coco17", 2)])
@pytest.mark.parametrize("m", [1, 2])
def test_output_shapes(layout: str, c: int, m: int) -> None:
    torch.manual_seed(0)
    model = STGCN(layout=layout, in_channels=c)
    v = get_layout(layout).num_joints
    for t in (50, 30):  # PSTL feeds both lengths to the same network
        x = torch.randn(2, m, t, v, c)
        y = model(x)
        yp = model.eval()(x, per_person=True)
        model.train()
        assert y.shape == (2, 256) and yp.shape == (2, m, 256)
        assert torch.isfinite(y).all()
    dropped = model(x, torch.tensor([0, v - 1]))
    assert dropped.shape == (2, 256)


def _randomise(model: STGCN, seed: int) -> STGCN:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=g) - 0.5)
        for e in model.edge_importance or []:
            e.add_(1.0)  # around 1, non-uniform
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.weight.add_(1.0)
                mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=g) - 0.5)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
    return model


def _bn(x: torch.Tensor, mod: torch.nn.Module, dims: tuple[int, ...], training: bool) -> torch.Tensor:
    """BatchNorm written out: channel axis 1, statistics over ``dims``."""
    shape = [1] * x.dim()
    shape[1] = -1
    if training:
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    else:
        mean, var = mod.running_mean.reshape(shape), mod.running_var.reshape(shape)
    return (x - mean) / torch.sqrt(var + mod.eps) * mod.weight.reshape(shape) + mod.bias.reshape(shape)


def _reference_forward(model: STGCN, x: torch.Tensor, keeps: list[list[int]], training: bool) -> torch.Tensor:
    """The reference ST-GCN forward with explicit per-sample joint deletion and adjacency slicing.

    ``keeps[n]``: sorted joints kept for sample ``n`` (all of the same length). Dropout must be 0 if training.
    Returns per-person features ``(N, M, D)``.
    """
    n, m, t, v, c = x.shape
    # input BN on all joints: channel index v·C + c
    h = x.permute(0, 1, 3, 4, 2).reshape(n * m, v * c, t)
    h = _bn(h, model.data_bn, (0, 2), training).reshape(n, m, v, c, t)
    h = torch.stack([h[i][:, keeps[i]] for i in range(n)])  # delete joints: (N, M, V', C, T)
    h = h.permute(0, 1, 3, 4, 2).reshape(n * m, c, t, -1)  # (NM, C, T, V')
    a_full = model.A
    for layer, block in enumerate(model.st_gcn_networks):
        imp = model.edge_importance[layer] if model.edge_importance is not None else torch.ones_like(a_full)
        k = a_full.shape[0]
        w = block.gcn.conv.weight[:, :, 0, 0]
        y = torch.einsum("oc,bctv->botv", w, h) + block.gcn.conv.bias[None, :, None, None]
        cout = y.shape[1] // k
        outs = []
        for i in range(n):
            sub = np.ix_(keeps[i], keeps[i])
            for j in range(m):
                b = i * m + j
                acc = 0
                for kk in range(k):
                    a = (a_full[kk] * imp[kk])[sub]
                    acc = acc + y[b, kk * cout : (kk + 1) * cout] @ a
                outs.append(acc)
        g = torch.stack(outs)
        g = torch.relu(_bn(g, block.tcn[0], (0, 2, 3), training))
        conv = block.tcn[2]
        g = F.conv2d(g, conv.weight, conv.bias, stride=conv.stride, padding=conv.padding)
        g = _bn(g, block.tcn[3], (0, 2, 3), training)
        if block.residual_kind == "identity":
            g = g + h
        elif block.residual_kind == "conv":
            rc = block.residual[0]
            g = g + _bn(F.conv2d(h, rc.weight, rc.bias, stride=rc.stride), block.residual[1], (0, 2, 3), training)
        h = torch.relu(g)
    return h.mean(dim=(2, 3)).reshape(n, m, -1)


def _small(**kwargs) -> STGCN:
    args = {"layout": "sbu15", "hidden_channels": 4, "hidden_dim": 12, **kwargs}
    return _randomise(STGCN(**args), seed=1).double()


def _keep(v: int, drop: list[int]) -> list[int]:
    return [j for j in range(v) if j not in drop]


@pytest.mark.parametrize("strategy", ["spatial", "uniform"])
def test_per_sample_drop_matches_reference_eval(strategy: str) -> None:
    model = _small(strategy=strategy).eval()
    x = torch.randn(3, 2, 11, 15, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    drops = [[0, 7, 14], [3, 4, 5], [12, 1, 9]]
    expected = _reference_forward(model, x, [_keep(15, d) for d in drops], training=False)
    got = model(x, torch.tensor(drops), per_person=True)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model(x, torch.tensor(drops)), expected.mean(1), rtol=1e-10, atol=1e-10)
    # the same sets as boolean masks
    mask = torch.zeros(3, 15, dtype=torch.bool)
    for i, d in enumerate(drops):
        mask[i, d] = True
    torch.testing.assert_close(model(x, mask, per_person=True), expected, rtol=1e-10, atol=1e-10)


def test_drop_matches_reference_training_mode() -> None:
    """Batch statistics are taken over the remaining joints only, as in the reference."""
    model = _small(dropout=0.0).train()
    x = torch.randn(4, 2, 9, 15, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    drops = [[2, 6], [0, 14], [6, 2], [7, 8]]
    expected = _reference_forward(model, x, [_keep(15, sorted(d)) for d in drops], training=True)
    torch.testing.assert_close(model(x, torch.tensor(drops), per_person=True), expected, rtol=1e-9, atol=1e-10)
    shared = _reference_forward(model, x, [_keep(15, [5, 9])] * 4, training=True)
    torch.testing.assert_close(model(x, [9, 5], per_person=True), shared, rtol=1e-9, atol=1e-10)
    plain = _reference_forward(model, x, [list(range(15))] * 4, training=True)
    torch.testing.assert_close(model(x, per_person=True), plain, rtol=1e-9, atol=1e-10)


def test_plain_forward_matches_reference_with_ntu_graph() -> None:
    model = _randomise(STGCN(hidden_channels=4, hidden_dim=8), seed=2).double().eval()
    x = torch.randn(2, 2, 13, 25, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = _reference_forward(model, x, [list(range(25))] * 2, training=False)
    torch.testing.assert_close(model(x, per_person=True), expected, rtol=1e-10, atol=1e-10)


_MODEL_EVAL = _small().eval()


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 3),
    m=st.integers(1, 2),
    t=st.integers(1, 12),
    k=st.integers(0, 14),
    seed=st.integers(0, 2**16),
)
def test_random_per_sample_drops_match_reference(n: int, m: int, t: int, k: int, seed: int) -> None:
    model = _MODEL_EVAL
    g = torch.Generator().manual_seed(seed)
    drops = torch.stack([torch.randperm(15, generator=g)[:k] for _ in range(n)])
    x = torch.randn(n, m, t, 15, 3, dtype=torch.float64, generator=g)
    expected = _reference_forward(model, x, [_keep(15, d.tolist()) for d in drops], training=False)
    torch.testing.assert_close(model(x, drops, per_person=True), expected, rtol=1e-9, atol=1e-10)
    # each sample's features depend only on that sample in eval mode
    torch.testing.assert_close(model(x[:1], drops[0]), model(x, drops)[:1], rtol=1e-9, atol=1e-10)


def test_shared_and_per_sample_forms_agree() -> None:
    torch.manual_seed(0)
    model = STGCN(dropout=0.0)
    x = torch.randn(4, 2, 20, 25, 3)
    drop = [20, 0, 3, 11, 24]
    mask = torch.zeros(25, dtype=torch.bool)
    mask[drop] = True
    for mode in ("train", "eval"):
        getattr(model, mode)()
        ref = model(x, torch.tensor(drop))
        for form in (drop, tuple(drop), torch.tensor(drop).repeat(4, 1), mask, mask.repeat(4, 1)):
            torch.testing.assert_close(model(x, form), ref, rtol=1e-5, atol=1e-5)


def test_dropping_no_joints_is_the_plain_forward() -> None:
    torch.manual_seed(0)
    model = STGCN().eval()
    x = torch.randn(3, 2, 16, 25, 3)
    ref = model(x)
    for empty in ([], torch.zeros(0, dtype=torch.long), torch.zeros(3, 0, dtype=torch.long)):
        torch.testing.assert_close(model(x, empty), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(x, torch.zeros(25, dtype=torch.bool)), ref, rtol=1e-5, atol=1e-6)


def test_person_mean_and_determinism() -> None:
    torch.manual_seed(0)
    model = STGCN().eval()
    x = torch.randn(2, 2, 30, 25, 3)
    x[1, 1] = 0  # zero-padded second person still counts in the mean, as in the reference
    y, yp = model(x), model(x, per_person=True)
    assert torch.equal(y, model(x))
    torch.testing.assert_close(y, yp.mean(1))
    model.train()
    assert not torch.allclose(model(x), model(x))  # dropout 0.5 is on in training


def test_bn_statistics_untouched_in_eval_and_updated_in_train() -> None:
    torch.manual_seed(0)
    model = STGCN()
    x = torch.randn(2, 2, 20, 25, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        model(x)
        model(x, torch.tensor([[1, 2], [3, 4]]))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train()
    with torch.no_grad():
        model(x, [4, 5])
    assert not torch.equal(before["data_bn.running_mean"], model.data_bn.running_mean)
    assert not torch.equal(before["st_gcn_networks.9.tcn.3.running_var"], model.st_gcn_networks[9].tcn[3].running_var)


def test_gradient_reaches_edge_importance() -> None:
    torch.manual_seed(0)
    model = STGCN()
    x = torch.randn(2, 2, 20, 25, 3)
    drop = [3, 7, 21]
    model(x, torch.tensor(drop)).pow(2).sum().backward()
    keep = _keep(25, drop)
    for e in model.edge_importance:
        assert e.grad is not None and e.grad[:, keep][:, :, keep].abs().sum() > 0
        assert torch.all(e.grad[:, drop] == 0) and torch.all(e.grad[:, :, drop] == 0)
    assert model.data_bn.weight.grad is not None


def test_invalid_inputs() -> None:
    model = STGCN(layout="sbu15")
    x = torch.randn(2, 1, 10, 15, 3)
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(2, 1, 10, 25, 3))
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(2, 1, 10, 15, 2))
    with pytest.raises(ValueError, match="distinct"):
        model(x, [1, 1])
    with pytest.raises(ValueError, match="distinct"):
        model(x, [15])
    with pytest.raises(ValueError, match="at least one"):
        model(x, list(range(15)))
    with pytest.raises(RuntimeError, match="repeated"):
        model(x, torch.tensor([[1, 2], [3, 3]]))
    with pytest.raises(RuntimeError):
        model(x, torch.tensor([[1, 2], [3, 15]]))
    with pytest.raises(ValueError, match="same number"):
        model(x, torch.tensor([[True] + [False] * 14, [False] * 15]))
    with pytest.raises(ValueError):
        model(x, torch.tensor([[1, 2]] * 3))  # batch of 2
    with pytest.raises(ValueError):
        model(x, torch.tensor([1.0]))


def _compile_check(drops: tuple, train: bool) -> None:
    torch._dynamo.reset()
    model = _randomise(STGCN(layout="sbu15", hidden_channels=4, hidden_dim=8), seed=3).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # raises on any graph break
    x = torch.randn(2, 2, 12, 15, 3)
    for drop in drops:
        torch.testing.assert_close(compiled(x, drop), model(x, drop))
    if train:
        model.train()
        compiled(x, drops[-1]).sum().backward()
        assert model.edge_importance[0].grad is not None
    torch._dynamo.reset()


def test_compile_fullgraph_without_graph_breaks() -> None:
    _compile_check((None, torch.tensor([[0, 5, 9], [14, 2, 3]])), train=False)


@pytest.mark.slow
def test_compile_fullgraph_shared_drop_and_training() -> None:
    _compile_check(([1, 4], torch.tensor([0, 5, 9])), train=True)


def test_bf16_autocast_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = STGCN().eval()
    x = torch.randn(2, 2, 30, 25, 3)
    drop = torch.tensor([[1, 2, 3], [20, 0, 8]])
    for d in (None, drop):
        ref = model(x, d)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x, d)
        assert y.dtype == torch.bfloat16
        assert ((y.float() - ref).norm() / ref.norm()).item() < 3e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    model = STGCN().eval()
    x = torch.randn(3, 2, 50, 25, 3)
    drop = torch.stack([torch.randperm(25)[:6] for _ in range(3)])
    ref = model(x, drop)
    got = model.cuda()(x.cuda(), drop.cuda()).cpu()
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4)


def test_strides_shorten_time() -> None:
    model = STGCN(hidden_channels=4, hidden_dim=8).eval()
    seen = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[2])) for b in model.st_gcn_networks]
    model(torch.randn(1, 1, 50, 25, 3))
    for hk in hooks:
        hk.remove()
    assert seen == [50] * 4 + [25] * 3 + [13] * 3
    assert seen[-1] == math.ceil(math.ceil(50 / 2) / 2)


def test_encoders_rebuild_from_their_spec() -> None:
    from skelssl.models import SkeletonTransformer
    from skelssl.models.registry import build_encoder, encoder_spec

    for enc in (STGCN(layout="kinect20", hidden_channels=8), SkeletonTransformer.mamp(layout="sbu15", depth=2)):
        spec = encoder_spec(enc)
        clone = build_encoder(spec)
        assert type(clone) is type(enc) and encoder_spec(clone) == spec
        assert [p.shape for p in clone.parameters()] == [p.shape for p in enc.parameters()]


def test_cpu_dropout_matches_dropout_semantics() -> None:
    from skelssl.models.stgcn import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.5)
    x = torch.ones(200, 500)
    y = drop(x)
    zeros = (y == 0).float().mean().item()
    assert abs(zeros - 0.5) < 0.01  # each element dropped with probability p
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}  # survivors scaled by 1 / (1 - p)
    assert abs(y.mean().item() - 1.0) < 0.02
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the default random stream: seeded runs repeat
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert not Dropout(1.0).train()(x).any()


@pytest.mark.parametrize("drop", [None, [0, 7]])
def test_forward_features_is_the_grid_forward_pools(drop: list[int] | None) -> None:
    torch.manual_seed(0)
    model = STGCN(layout="kinect20", hidden_channels=4, hidden_dim=8).eval()
    x = torch.randn(3, 2, 30, 20, 3)
    grid = model.forward_features(x, drop)
    assert grid.shape == (3, 2, math.ceil(math.ceil(30 / 2) / 2), 20 - len(drop or []), 8)
    torch.testing.assert_close(model(x, drop, per_person=True), grid.mean(dim=(2, 3)))
    torch.testing.assert_close(model(x, drop), grid.mean(dim=(1, 2, 3)))
