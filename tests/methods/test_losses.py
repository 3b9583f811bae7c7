"""Barlow Twins loss, projector and synchronised BN: against the naive formula, in float64, and on 2 processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from skelssl.methods import BarlowTwinsLoss, Projector, SyncBatchNorm1d, barlow_twins_loss, barlow_twins_normalize

IMPLS = ["matrix", "gram", "auto"]


def _naive(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 2e-4) -> torch.Tensor:
    """PSTL's BTwins head after the projector: BatchNorm1d(affine=False) in training mode per view, C, masks."""
    bn = nn.BatchNorm1d(z1.shape[1], affine=False).to(z1.dtype).train()
    a, b = bn(z1), bn(z2)
    c = a.T @ b / z1.shape[0]
    eye = torch.eye(c.shape[0], dtype=torch.bool)
    return ((c[eye] - 1) ** 2).sum() + lambd * (c[~eye] ** 2).sum()


def _pair(n: int, d: int, seed: int, dtype=torch.float64, noise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=dtype) * 3 + 1
    z2 = z1 + noise * torch.randn(n, d, generator=g, dtype=dtype)
    return z1, z2


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("n", "d"), [(8, 40), (20, 12), (2, 5), (33, 64)])
def test_loss_and_gradients_match_the_naive_formula(impl, n, d):
    z1, z2 = _pair(n, d, seed=n * d)
    lambd = 0.05  # large enough for the off-diagonal term to matter
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = barlow_twins_loss(a, b, lambd=lambd, impl=impl)
    loss.backward()
    ra, rb = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    ref = _naive(ra, rb, lambd)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a.grad, ra.grad, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(b.grad, rb.grad, rtol=1e-9, atol=1e-10)


@pytest.fixture(scope="module")
def pstl_scale() -> list[tuple[torch.Tensor, ...]]:
    """D/N = 48 as in PSTL (128 × 6144), loosely and tightly coupled views, with float64 naive references."""
    cases = []
    for noise in (1.0, 0.01):
        z1, z2 = _pair(64, 3072, seed=1, noise=noise)
        ra, rb = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        ref = _naive(ra, rb)
        ref.backward()
        cases.append((z1, z2, ref.detach(), ra.grad, rb.grad))
    return cases


@pytest.mark.parametrize("impl", ["matrix", "gram"])
def test_float32_at_pstl_scale_matches_float64(impl, pstl_scale):
    """The Gram identity's cancellation (about D/N) stays harmless in fp32."""
    for z1, z2, ref, g1, g2 in pstl_scale:
        a, b = z1.float().requires_grad_(), z2.float().requires_grad_()
        loss = barlow_twins_loss(a, b, impl=impl)
        loss.backward()
        assert loss.dtype == torch.float32
        assert abs(loss.item() - ref.item()) < 1e-5 * ref.item() + 1e-4
        for got, want in ((a.grad, g1), (b.grad, g2)):
            assert ((got.double() - want).norm() / want.norm()).item() < 1e-4


def test_pre_normalized_views_and_module():
    z1, z2 = _pair(16, 32, seed=3)
    n1, n2 = barlow_twins_normalize(z1), barlow_twins_normalize(z2)
    torch.testing.assert_close(n1.mean(0), torch.zeros(32, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(n1.var(0, unbiased=False), torch.ones(32, dtype=torch.float64), atol=1e-4, rtol=0)
    full = barlow_twins_loss(z1, z2)
    torch.testing.assert_close(barlow_twins_loss(n1, n2, normalize=False), full)
    torch.testing.assert_close(BarlowTwinsLoss()(z1, z2), full)
    torch.testing.assert_close(BarlowTwinsLoss(lambd=0.1, impl="matrix")(z1, z2), _naive(z1, z2, 0.1))
    # distributed=True without a process group is the single-process loss
    torch.testing.assert_close(barlow_twins_loss(z1, z2, distributed=True), full)
    # identical, decorrelated views: C = I up to eps, so the loss vanishes
    eye = torch.cat([torch.eye(4), -torch.eye(4)]).double()
    assert 0 <= barlow_twins_loss(eye, eye).item() < 1e-6


def test_autocast_computes_in_float32():
    z1, z2 = _pair(16, 64, seed=4, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = barlow_twins_loss(z1.bfloat16(), z2.bfloat16())
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, barlow_twins_loss(z1.bfloat16().float(), z2.bfloat16().float()))


def test_shape_errors():
    with pytest.raises(ValueError):
        barlow_twins_loss(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError):
        barlow_twins_loss(torch.randn(4), torch.randn(4))


def test_projector_defaults_and_structure():
    proj = Projector()
    expected = 256 * 6144 + 6144 * 6144 + 6144 * 6144 + 2 * (2 * 6144)  # three linears, two affine BNs
    assert sum(p.numel() for p in proj.parameters()) == expected == 77_094_912
    kinds = [type(m).__name__ for m in proj.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert all(m.bias is None for m in proj.net if isinstance(m, nn.Linear))
    small = Projector(in_dim=5, hidden_dim=7, out_dim=3, layers=1)
    assert [type(m).__name__ for m in small.net] == ["Linear"] and small(torch.randn(2, 5)).shape == (2, 3)


def test_sync_projector_equals_plain_on_one_process():
    torch.manual_seed(0)
    plain = Projector(in_dim=6, hidden_dim=10, out_dim=12, sync_bn=False)
    sync = Projector(in_dim=6, hidden_dim=10, out_dim=12, sync_bn=True)
    assert isinstance(sync.net[1], SyncBatchNorm1d)
    sync.load_state_dict(plain.state_dict())  # identical state-dict keys
    x = torch.randn(9, 6)
    torch.testing.assert_close(sync(x), plain(x))
    torch.testing.assert_close(sync.state_dict(), plain.state_dict())
    sync.eval(), plain.eval()
    torch.testing.assert_close(sync(x), plain(x))


# ----------------------------------------------------------------------------------------------------------
# two processes (gloo, CPU): each rank holds part of a global batch

SIZES = (5, 7)  # unequal per-rank batches (the last batch of an epoch)
IN_DIM, HIDDEN, OUT = 6, 10, 32  # 2N = 24 < D = 32: `auto` takes the Gram path


def _global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    n = sum(SIZES)
    z1, z2 = torch.randn(n, OUT, generator=g) * 2, torch.randn(n, OUT, generator=g)
    z2 = z2 + z1
    u1, u2 = torch.randn(n, IN_DIM, generator=g), torch.randn(n, IN_DIM, generator=g)
    return z1, z2, u1, u2


def _projector() -> Projector:
    torch.manual_seed(5)
    return Projector(in_dim=IN_DIM, hidden_dim=HIDDEN, out_dim=OUT, sync_bn=True)


def _bt_terms(proj: Projector, z1, z2, u1, u2, distributed: bool) -> dict[str, torch.Tensor]:
    """Losses of both impls on z, then a projector + loss step on u; returns values and gradients."""
    out: dict[str, torch.Tensor] = {}
    for impl in ("matrix", "gram"):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        loss = barlow_twins_loss(a, b, lambd=0.05, impl=impl, distributed=distributed)
        loss.backward()
        out[f"{impl}_loss"], out[f"{impl}_g1"], out[f"{impl}_g2"] = loss.detach(), a.grad, b.grad
    proj.train()
    p1, p2 = proj(u1), proj(u2)
    loss = barlow_twins_loss(p1, p2, lambd=0.05, distributed=distributed)
    loss.backward()
    out["proj_loss"] = loss.detach()
    for name, p in proj.named_parameters():
        out[f"grad.{name}"] = p.grad
    for name, buf in proj.named_buffers():
        out[f"buf.{name}"] = buf.clone()
    return out


def _worker(rank: int, world: int, out_dir: Path) -> dict[str, torch.Tensor]:
    z1, z2, u1, u2 = _global_batch()
    rows = slice(sum(SIZES[:rank]), sum(SIZES[: rank + 1]))
    proj = _projector()
    out = _bt_terms(proj, z1[rows], z2[rows], u1[rows], u2[rows], distributed=True)
    for key in [k for k in out if k.startswith("grad.")]:  # what DDP does: average over ranks
        dist.all_reduce(out[key])
        out[key] /= world
    return out


def test_two_processes_equal_one_process_on_the_global_batch(spawn_gloo):
    results = spawn_gloo(_worker, 2)
    z1, z2, u1, u2 = _global_batch()
    single = _bt_terms(_projector(), z1, z2, u1, u2, distributed=False)
    for rank in range(2):
        got = results[rank]
        rows = slice(sum(SIZES[:rank]), sum(SIZES[: rank + 1]))
        for key, want in single.items():
            value = got[key]
            if key.endswith(("_g1", "_g2")):  # each rank holds W × the single-process gradient of its rows
                value, want = value / 2, want[rows]
            torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-5, msg=f"rank {rank}: {key}")
