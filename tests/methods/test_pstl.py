"""PSTL / SkeletonBT: the step against the formula recomputed by hand, views and masks, modes, DDP, learning."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from skelssl.config import load_config
from skelssl.data.augment import AugmentConfig, augment
from skelssl.data.clips import ClipConfig, ClipDataset
from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.data.streams import to_stream
from skelssl.engine.optim import build_optimizer
from skelssl.errors import ConfigError
from skelssl.masking import central_spatial_mask, motion_attention_temporal_mask
from skelssl.methods.pstl import PSTL, PSTLConfig, csm_drop_joints
from skelssl.models.registry import build_encoder
from skelssl.models.stgcn import STGCN
from skelssl.skeleton.layouts import get_layout

# small widths keep every test fast; the step's logic does not depend on them
SMALL = {"hidden_channels": 4, "hidden_dim": 32, "projector_dim": 96, "dropout": 0.0}


@pytest.fixture(scope="module")
def ucla_batch(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, SkeletonStore]:
    """20 real NW-UCLA clips (10 actions × 2 subjects, view 1) through the PSTL frame50 pipeline: (20, 2, 50, 20, 3)."""
    src = tmp_path_factory.mktemp("pstl-ucla-src")
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a*_s0[12]_e00_v01.json")):
        shutil.copy(f, src)
    out = tmp_path_factory.mktemp("pstl") / "ucla"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    store = SkeletonStore.open(out)
    dataset = ClipDataset(store=store, config=ClipConfig.pstl())
    x = default_collate([dataset[i] for i in range(len(dataset))])["x"]
    assert x.shape == (20, 2, 50, 20, 3)
    return x, store


def ntu_batch(n: int = 6, t: int = 50, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, t, 25, 3, generator=g, dtype=dtype).cumsum(dim=2) * 0.05  # smooth trajectories
    if n > 1:
        x[1, 1] = 0  # a zero-padded second person, as in real data
    return x


def naive_bt(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """Barlow Twins as the reference writes it: BatchNorm1d(affine=False) per view, C, masked sums."""
    bn = nn.BatchNorm1d(z1.shape[1], affine=False).to(z1.dtype).train()
    a, b = bn(z1), bn(z2)
    c = a.T @ b / z1.shape[0]
    eye = torch.eye(c.shape[0], dtype=torch.bool)
    return ((c[eye] - 1) ** 2).sum() + lambd * (c[~eye] ** 2).sum()


def make(layout: str = "ntu25", seed: int = 0, dtype: torch.dtype = torch.float32, **changes) -> PSTL:
    torch.manual_seed(seed)
    method = PSTL(layout=layout, config=PSTLConfig(**{**SMALL, **changes}))
    return method.to(dtype).train()


class Recorder:
    """Forward pre-hook on the encoder: records each call's input and ``drop_joints``."""

    def __init__(self, module: nn.Module) -> None:
        self.calls: list[tuple[torch.Tensor, object]] = []
        self.handle = module.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        drop = args[1] if len(args) > 1 else kwargs.get("drop_joints")
        self.calls.append((args[0].detach().clone(), drop))


def replay_views(method: PSTL, x: torch.Tensor, seed: int) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The step's three views and CSM set, redrawn from ``seed`` in the documented order with the public functions."""
    cfg = method.config
    g = torch.Generator().manual_seed(seed)
    aug = AugmentConfig.pstl(batch_shared=cfg.batch_shared)
    layout = method.layout
    x = to_stream(x, cfg.stream, layout)
    drop = csm_drop_joints(
        layout,
        num_joints=cfg.csm_joints,
        batch_size=x.shape[0],
        generator=g,
        mode=cfg.csm_mode,
        batch_shared=cfg.batch_shared,
    )
    anchor = augment(x, aug, layout=layout, generator=g)
    second = augment(x, aug, layout=layout, generator=g)
    second, keep = motion_attention_temporal_mask(
        second, num_frames=cfg.matm_frames, generator=g, mode=cfg.matm_mode, batch_shared=cfg.batch_shared
    )
    assert keep.shape == (x.shape[0], x.shape[2] - 2 * cfg.matm_frames)
    third = augment(x, aug, layout=layout, generator=g)
    return [anchor, second, third], drop


# -- configuration ---------------------------------------------------------------------------------------


def test_defaults_are_the_reference():
    cfg = PSTLConfig()
    assert (cfg.stream, cfg.baseline, cfg.csm_joints, cfg.csm_mode, cfg.csm_centrality) == (
        "joint",
        False,
        8,
        "reference",
        "degree",
    )
    assert (cfg.matm_frames, cfg.matm_mode, cfg.batch_shared) == (10, "reference", True)
    assert (cfg.hidden_channels, cfg.hidden_dim, cfg.dropout) == (16, 256, 0.5)
    assert (cfg.projector_dim, cfg.projector_layers, cfg.lambd, cfg.weight_matm, cfg.weight_csm) == (
        6144,
        3,
        2e-4,
        1.0,
        1.0,
    )
    method = PSTL(layout="ntu25")
    assert method.name == "pstl"
    assert sum(p.numel() for p in method.projector.parameters()) == 77_094_912  # incl. the BN affines
    assert isinstance(method.encoder, STGCN) and method.encoder.feature_dim == 256


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"csm_joints": -1}, "csm_joints"),
        ({"matm_frames": -2}, "matm_frames"),
        ({"weight_csm": -0.5}, "weight_csm"),
        ({"weight_matm": -1.0}, "weight_matm"),
        ({"weight_matm": 0.0, "weight_csm": 0.0}, "both 0"),
        ({"matm_temperature": 0.0}, "matm_temperature"),
        ({"csm_centrality": "closeness"}, "needs csm_mode 'exact'"),
        ({"stream": "bones"}, "stream"),
        ({"csm_mode": "random"}, "csm_mode"),
        ({"dropout": 1.0}, "dropout"),
        ({"projector_layers": 0}, "projector_layers"),
        ({"lambd": -1e-4}, "lambd"),
    ],
)
def test_check_refuses_impossible_values(changes, message):
    with pytest.raises(ConfigError, match=message):
        PSTLConfig(**changes).check()
    with pytest.raises(ConfigError, match=message):  # before building anything
        PSTL(layout="ntu25", config=PSTLConfig(**changes))


def test_config_loads_with_overrides_and_checks():
    cfg = load_config(PSTLConfig, None, ["csm_mode=exact", "csm_centrality=closeness", "batch_shared=false"])
    assert (cfg.csm_mode, cfg.csm_centrality, cfg.batch_shared) == ("exact", "closeness", False)
    with pytest.raises(ConfigError, match="weight_csm"):
        load_config(PSTLConfig, None, ["weight_csm=-1"])
    with pytest.raises(ConfigError, match="stream"):
        load_config(PSTLConfig, None, ["stream=bones"])


def test_layout_and_clip_length_limits():
    with pytest.raises(ConfigError, match="every joint"):
        PSTL(layout="kinect20", config=PSTLConfig(csm_joints=20))
    PSTL(layout="kinect20", config=PSTLConfig(**SMALL, csm_joints=19, csm_mode="exact"))  # one joint left: allowed
    method = make(matm_frames=10)
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    with pytest.raises(ConfigError, match="matm_frames = 10 removes 20 frames from a 20-frame clip"):
        method(ntu_batch(t=20), generator=g)
    assert torch.equal(g.get_state(), state)  # refused before any draw
    out = method(ntu_batch(t=21), generator=g)  # 21 − 20 = 1 frame left: runs
    assert out["matm_frames_kept"] == 1
    with pytest.raises(ValueError, match="expects"):
        method(torch.zeros(4, 2, 50, 20, 3), generator=g)


# -- the step --------------------------------------------------------------------------------------------


def test_step_on_real_nw_ucla(ucla_batch):
    x, store = ucla_batch
    torch.manual_seed(0)
    method = PSTL(layout=store.layout, config=PSTLConfig(projector_dim=128)).train()
    out = method(x, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "loss_matm", "loss_csm", "csm_dropped", "matm_frames_kept", "feature_std"}
    assert out["loss"].requires_grad and out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    assert not out["loss_matm"].requires_grad and not out["loss_csm"].requires_grad
    torch.testing.assert_close(out["loss"].detach(), out["loss_matm"] + out["loss_csm"])
    assert 1 <= out["csm_dropped"] <= 8 and out["matm_frames_kept"] == 30 and out["feature_std"] > 0
    out["loss"].backward()
    grads = [p.grad for p in method.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    ("stream", "batch_shared", "csm_mode"),
    [("joint", True, "reference"), ("joint", False, "reference"), ("bone", False, "exact"), ("motion", True, "exact")],
)
def test_loss_is_the_formula_on_the_three_encoder_outputs(stream, batch_shared, csm_mode):
    """Float64: the step's loss equals w_m·BT(g(f₁), g(f₂)) + w_c·BT(g(f₁), g(f₃)) with views redrawn by hand."""
    method = make(dtype=torch.float64, stream=stream, batch_shared=batch_shared, csm_mode=csm_mode)
    method.config.weight_matm, method.config.weight_csm = 0.7, 1.3
    x = ntu_batch(dtype=torch.float64)
    rec = Recorder(method.encoder)
    out = method(x, generator=torch.Generator().manual_seed(42))

    views, drop = replay_views(method, x, seed=42)
    assert len(rec.calls) == 3
    for (seen, seen_drop), view, want_drop in zip(rec.calls, views, [None, None, drop], strict=True):
        torch.testing.assert_close(seen, view, rtol=0, atol=0)  # the same views, bit for bit
        if want_drop is None:
            assert seen_drop is None
        else:
            assert torch.equal(seen_drop, want_drop)
    assert views[1].shape[2] == 30 and views[0].shape[2] == views[2].shape[2] == 50
    rec.handle.remove()

    with torch.no_grad():
        f1, f2, f3 = method.encoder(views[0]), method.encoder(views[1]), method.encoder(views[2], drop)
        z1, z2, z3 = method.projector(f1), method.projector(f2), method.projector(f3)  # one call per view
        lambd = method.config.lambd
        want_m, want_c = naive_bt(z1, z2, lambd), naive_bt(z1, z3, lambd)
    torch.testing.assert_close(out["loss_matm"], want_m, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["loss_csm"], want_c, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["loss"].detach(), 0.7 * want_m + 1.3 * want_c, rtol=1e-9, atol=1e-9)
    assert out["csm_dropped"] == drop.shape[-1]


def test_gradients_equal_separate_projector_calls():
    """Stacking the views through the projector's Linears changes nothing in the parameter gradients."""
    method = make(dtype=torch.float64)
    x = ntu_batch(dtype=torch.float64)
    out = method(x, generator=torch.Generator().manual_seed(5))
    out["loss"].backward()
    got = {name: p.grad.clone() for name, p in method.named_parameters()}
    method.zero_grad()
    views, drop = replay_views(method, x, seed=5)
    f1, f2, f3 = method.encoder(views[0]), method.encoder(views[1]), method.encoder(views[2], drop)
    z1, z2, z3 = method.projector(f1), method.projector(f2), method.projector(f3)
    (naive_bt(z1, z2, method.config.lambd) + naive_bt(z1, z3, method.config.lambd)).backward()
    for name, p in method.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-8, atol=1e-10, msg=name)


def test_anchor_projected_once():
    method = make()
    n = 6
    rows: Counter[str] = Counter()
    calls: Counter[str] = Counter()

    def count(name):
        def hook(module, args, output):
            calls[name] += 1
            rows[name] += args[0].shape[0]

        return hook

    for name, module in method.projector.named_modules():
        if isinstance(module, (nn.Linear, nn.BatchNorm1d)):
            module.register_forward_hook(count(name))
    method(ntu_batch(n=n), generator=torch.Generator().manual_seed(0))
    linears = [name for name, m in method.projector.named_modules() if isinstance(m, nn.Linear)]
    norms = [name for name, m in method.projector.named_modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(linears) == 3 and len(norms) == 2
    for name in linears:  # one GEMM over anchor + MATM + CSM rows: 3N rows, not 4N
        assert (calls[name], rows[name]) == (1, 3 * n)
    for name in norms:  # BatchNorm per view
        assert (calls[name], rows[name]) == (3, 3 * n)
        assert int(method.projector.net[int(name.split(".")[-1])].num_batches_tracked) == 3


def test_skeletonbt_baseline_uses_two_plain_views():
    method = make(baseline=True)
    assert method.name == "skeletonbt" and method.card()["method"] == "skeletonbt"
    x = ntu_batch()
    rec = Recorder(method.encoder)
    out = method(x, generator=torch.Generator().manual_seed(9))
    assert set(out) == {"loss", "loss_bt", "feature_std"}
    assert [call[0].shape for call in rec.calls] == [x.shape, x.shape]
    assert [call[1] for call in rec.calls] == [None, None]
    g = torch.Generator().manual_seed(9)  # the baseline draws no masks: just two augmentation chains
    aug = AugmentConfig.pstl(batch_shared=True)
    views = [augment(x, aug, layout="ntu25", generator=g) for _ in range(2)]
    for (seen, _), view in zip(rec.calls, views, strict=True):
        assert torch.equal(seen, view)
    with torch.no_grad():
        want = naive_bt(method.projector(method.encoder(views[0])), method.projector(method.encoder(views[1])), 2e-4)
    torch.testing.assert_close(out["loss"].detach(), want, rtol=1e-4, atol=1e-3)


def test_zero_weight_drops_the_term_and_its_view():
    method = make(weight_csm=0.0)
    rec = Recorder(method.encoder)
    out = method(ntu_batch(), generator=torch.Generator().manual_seed(0))
    assert "loss_csm" not in out and "csm_dropped" not in out
    assert [call[0].shape[2] for call in rec.calls] == [50, 30]
    torch.testing.assert_close(out["loss"].detach(), out["loss_matm"])


def test_batch_shared_and_per_sample_draws():
    """One clip repeated: batch-shared views are identical across the batch, per-sample views differ."""
    x = ntu_batch(n=1).expand(8, -1, -1, -1, -1).contiguous()
    for shared in (True, False):
        method = make(batch_shared=shared)
        rec = Recorder(method.encoder)
        method(x, generator=torch.Generator().manual_seed(1))
        (anchor, _), (matm, _), (csm, drop) = rec.calls
        same = [bool((view == view[:1]).all()) for view in (anchor, matm, csm)]
        assert same == [shared] * 3
        if shared:
            assert drop.dim() == 1
        else:
            assert drop.dim() == 2 and drop.shape[0] == 8 and len({tuple(r) for r in drop.tolist()}) > 1


def test_determinism_from_a_seed():
    x = ntu_batch()
    results = []
    for seed in (7, 7, 8):
        method = make(seed=0, dropout=0.5)
        torch.manual_seed(123)  # dropout draws from torch's default stream, which the engine seeds
        out = method(x, generator=torch.Generator().manual_seed(seed))
        out["loss"].backward()
        results.append((out["loss"].detach(), [p.grad.clone() for p in method.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))
    assert not torch.equal(results[0][0], results[2][0])


@pytest.mark.parametrize("stream", ["bone", "motion"])
def test_streams_run_on_real_data(ucla_batch, stream):
    x, store = ucla_batch
    method = make(layout=store.layout, stream=stream)
    rec = Recorder(method.encoder)
    out = method(x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    g = torch.Generator().manual_seed(0)
    csm_drop_joints(store.layout, num_joints=8, batch_size=len(x), generator=g)
    anchor = augment(
        to_stream(x, stream, store.layout), AugmentConfig.pstl(batch_shared=True), layout=store.layout, generator=g
    )
    assert torch.equal(rec.calls[0][0], anchor)  # the stream is taken before augmentation


def test_bf16_autocast_keeps_the_loss_in_float32():
    method = make()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(ntu_batch(), generator=torch.Generator().manual_seed(0))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in method.parameters())


def test_card_and_export():
    method = make(stream="bone")
    card = method.card()
    assert card["method"] == "pstl" and card["config"]["stream"] == "bone" and card["config"]["projector_dim"] == 96
    assert card["encoder"]["kind"] == "stgcn"
    rebuilt = build_encoder(card["encoder"])
    rebuilt.load_state_dict(method.export()["encoder"].state_dict())
    assert method.export() == {"encoder": method.encoder}
    assert all(k.startswith(("encoder.", "projector.")) for k in method.state_dict())


# -- per-sample CSM in reference mode ---------------------------------------------------------------------


def test_per_sample_reference_csm_keeps_the_reference_distribution():
    layout = get_layout("ntu25")
    # the count: one reference draw per batch, so its distribution is the reference's (5–8, mean 7.34)
    g = torch.Generator().manual_seed(0)
    counts = Counter(
        csm_drop_joints(layout, num_joints=8, batch_size=2, generator=g, batch_shared=False).shape[1]
        for _ in range(1500)
    )
    freq = {k: counts[k] / 1500 for k in (5, 6, 7, 8)}
    for k, p in {8: 0.468, 7: 0.418, 6: 0.106}.items():
        assert abs(freq[k] - p) < 0.04, (k, freq)
    # the sets, given the count: each row distinct sorted joints, distributed as reference draws of that count
    drop = csm_drop_joints(layout, num_joints=8, batch_size=12000, generator=g, batch_shared=False)
    k = drop.shape[1]
    assert torch.equal(drop, drop.sort(dim=1).values) and bool((drop[:, 1:] > drop[:, :-1]).all())
    ref = central_spatial_mask(layout, num_joints=8, batch_size=200_000, generator=g, batch_shared=False)
    ref = ref[ref.sum(dim=1) == k].double().mean(dim=0)  # P(joint masked | count = k), Monte-Carlo
    got = torch.zeros(drop.shape[0], 25).scatter_(1, drop, 1.0).double().mean(dim=0)
    torch.testing.assert_close(got, ref, atol=0.025, rtol=0)
    assert got[20] > got[0] > got[1] > got[3]  # degree 4 > 3 > 2 > 1: centrality still matters


def test_exact_per_sample_csm_drops_num_joints_everywhere():
    g = torch.Generator().manual_seed(0)
    drop = csm_drop_joints("ntu25", num_joints=8, batch_size=50, generator=g, mode="exact", batch_shared=False)
    assert drop.shape == (50, 8) and bool((drop[:, 1:] > drop[:, :-1]).all())
    assert len({tuple(row) for row in drop.tolist()}) > 40


# -- learning ---------------------------------------------------------------------------------------------


def _eval_loss(method: PSTL, x: torch.Tensor) -> float:
    """The loss on fixed views (generator and dropout seeds fixed), BatchNorm in training mode as in a step."""
    total = 0.0
    with torch.no_grad():
        for seed in (100, 101):
            torch.manual_seed(seed)
            total += float(method(x, generator=torch.Generator().manual_seed(seed))["loss"])
    return total / 2


def _train(x: torch.Tensor, layout, steps: int, **changes) -> tuple[float, float]:
    torch.manual_seed(0)
    method = PSTL(layout=layout, config=PSTLConfig(**changes)).train()
    optimizer = build_optimizer(method, lr=1e-3, fused="auto")
    before = _eval_loss(method, x)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = method(x, generator=g)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return before, _eval_loss(method, x)


def test_loss_decreases_on_real_data(ucla_batch):
    x, store = ucla_batch
    before, after = _train(x, store.layout, 25, hidden_channels=4, hidden_dim=64, projector_dim=512)
    assert after < 0.6 * before, (before, after)


@pytest.mark.slow
def test_loss_decreases_on_real_data_reference_model(ucla_batch):
    x, store = ucla_batch
    before, after = _train(x, store.layout, 40, projector_dim=1024)
    assert after < 0.5 * before, (before, after)


# -- DDP --------------------------------------------------------------------------------------------------

DDP_SIZES = (3, 4)  # unequal per-rank batches; global N = 7
DDP_CFG = {"hidden_channels": 4, "hidden_dim": 16, "projector_dim": 64, "dropout": 0.0, "sync_bn": True}


def _ddp_worker(rank: int, world: int, out_dir: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    method = PSTL(layout="ntu25", config=PSTLConfig(**DDP_CFG), distributed=True).double().train()
    model = nn.parallel.DistributedDataParallel(method)
    x = ntu_batch(n=sum(DDP_SIZES), dtype=torch.float64)
    rows = slice(sum(DDP_SIZES[:rank]), sum(DDP_SIZES[: rank + 1]))
    out = model(x[rows], generator=torch.Generator().manual_seed(4))  # batch-shared draws: same on both ranks
    out["loss"].backward()
    result = {"loss": out["loss"].detach()}
    result.update({f"grad.{name}": p.grad for name, p in method.named_parameters()})
    return result


def test_ddp_uses_the_global_batch(spawn_gloo):
    """2 gloo ranks = one process whose encoder sees each rank's rows apart (its BN is per rank) on the global batch."""
    results = spawn_gloo(_ddp_worker, 2)

    torch.manual_seed(0)
    method = PSTL(layout="ntu25", config=PSTLConfig(**DDP_CFG)).double().train()
    encode = method.encoder.forward
    cut = DDP_SIZES[0]
    method.encoder.forward = lambda v, drop=None: torch.cat([encode(v[:cut], drop), encode(v[cut:], drop)])
    out = method(ntu_batch(n=sum(DDP_SIZES), dtype=torch.float64), generator=torch.Generator().manual_seed(4))
    out["loss"].backward()
    for rank in range(2):  # float64: BatchNorm over 3–4 samples amplifies float32 rounding in early-layer gradients
        got = results[rank]
        torch.testing.assert_close(got["loss"], out["loss"].detach(), rtol=1e-10, atol=1e-10)
        for name, p in method.named_parameters():
            torch.testing.assert_close(got[f"grad.{name}"], p.grad, rtol=1e-8, atol=1e-9, msg=f"rank {rank}: {name}")
