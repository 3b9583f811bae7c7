"""Barlow Twins loss and projector (PSTL §1.7), correct on one process and under DDP.

For projector outputs ``z1``, ``z2`` ``(N, D)`` of two views:

- each view is standardised per dimension with its batch statistics (BatchNorm1d without affine, in
  training mode: biased variance, ``eps`` inside the square root);
- ``C = z1ᵀ z2 / N`` (``D × D``);
- ``L = Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²`` (no scaling by ``D``), computed as
  ``Σ_i (1 − C_ii)² + λ (‖C‖²_F − Σ_i C_ii²)``: no off-diagonal copy.

When ``2N < D`` (PSTL: N = 128, D = 6144) ``‖C‖²_F`` is computed from the ``N × N`` Gram matrices,
``‖z1ᵀz2‖²_F = Σ (z1 z1ᵀ) ⊙ (z2 z2ᵀ)``, and ``C_ii`` from ``Σ_n z1_ni z2_ni``, so the ``D × D`` matrix is
never built: ``O(N²D)`` instead of ``O(ND²)`` FLOPs and memory ``O(N² + ND)``. The identity suffers a
cancellation of about ``D/N`` in the sum, harmless in full fp32 (tested against float64), so ``auto``
takes it only when float32 matmuls run at full precision (not under TF32/bf16 matmul settings).

The loss is computed in float32 (or float64) with autocast disabled, whatever the caller's AMP setting.

Distributed (``distributed=True`` and an initialised process group with more than one rank): BN
statistics are those of the global batch, ``N`` is the global batch size, and ``C`` (or the Gram
matrices) covers the global batch through autograd-aware collectives (:mod:`skelssl.distributed`).
Every rank returns the same global loss; each rank's gradient for its own rows is ``W ×`` the
single-process one, which DDP's averaging turns into exactly the single-process parameter gradient.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skelssl.distributed import Group, all_gather_rows, all_reduce_sum, gather_sizes, is_distributed
from skelssl.errors import ConfigError

BTImpl = Literal["auto", "matrix", "gram"]


def _at_least_fp32(z: Tensor) -> Tensor:
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def _full_precision_matmul(device: torch.device) -> bool:
    if torch.get_float32_matmul_precision() != "highest":
        return False
    return not (device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)


def _standardize_global(z: Tensor, n_global: int, eps: float, group: Group) -> Tensor:
    mean = all_reduce_sum(z.sum(dim=0), group) / n_global
    centred = z - mean
    var = all_reduce_sum(centred.square().sum(dim=0), group) / n_global
    return centred * torch.rsqrt(var + eps)


def barlow_twins_normalize(
    z: Tensor, *, eps: float = 1e-5, distributed: bool = False, group: Group = None, n_global: int | None = None
) -> Tensor:
    """Standardise ``z`` ``(N, D)`` per dimension with batch statistics (global ones when distributed).

    Equals ``F.batch_norm(z, None, None, training=True, eps=eps)`` on the (global) batch. Lets a caller
    normalise a view once and reuse it in several :func:`barlow_twins_loss` calls (``normalize=False``).
    """
    if distributed and is_distributed(group):
        if n_global is None:
            n_global = sum(gather_sizes(z.shape[0], z.device, group))
        return _standardize_global(z, n_global, eps, group)
    return F.batch_norm(z, None, None, training=True, eps=eps)


def barlow_twins_loss(
    z1: Tensor,
    z2: Tensor,
    *,
    lambd: float = 2e-4,
    normalize: bool = True,
    distributed: bool = False,
    eps: float = 1e-5,
    impl: BTImpl = "auto",
    group: Group = None,
) -> Tensor:
    """Barlow Twins loss (scalar) of two views' projector outputs ``z1``, ``z2`` ``(N, D)`` (module doc).

    ``normalize=False`` takes already standardised inputs (:func:`barlow_twins_normalize`).
    ``impl``: ``matrix`` builds ``C``; ``gram`` uses ``N × N`` Gram matrices; ``auto`` picks ``gram`` when
    ``2N < D`` and float32 matmuls are full precision. ``distributed=True`` uses the global batch of
    ``group`` when a process group is initialised (no effect otherwise).
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"expected two (N, D) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if impl not in ("auto", "matrix", "gram"):
        raise ConfigError(f"unknown Barlow Twins impl {impl!r}; use auto, matrix or gram")
    active = distributed and is_distributed(group)
    n, d = z1.shape
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1, z2 = _at_least_fp32(z1), _at_least_fp32(z2)
        sizes = gather_sizes(n, z1.device, group) if active else [n]
        n_global = sum(sizes)
        if normalize:
            if active:
                z1 = _standardize_global(z1, n_global, eps, group)
                z2 = _standardize_global(z2, n_global, eps, group)
            else:
                z1 = F.batch_norm(z1, None, None, training=True, eps=eps)
                z2 = F.batch_norm(z2, None, None, training=True, eps=eps)
        gram = impl == "gram" or (impl == "auto" and 2 * n_global < d and _full_precision_matmul(z1.device))
        if gram:
            if active:
                z1, z2 = all_gather_rows(z1, sizes, group), all_gather_rows(z2, sizes, group)
            diag = (z1 * z2).sum(dim=0) / n_global
            frob = ((z1 @ z1.T) * (z2 @ z2.T)).sum() / (n_global * n_global)
        else:
            c = z1.T @ z2 / n_global
            if active:
                c = all_reduce_sum(c, group)
            diag = c.diagonal()
            frob = torch.linalg.vecdot(c, c).sum()  # accurate float32 sum (vector_norm/dot are not, on CPU)
        return (1.0 - diag).square().sum() + lambd * (frob - diag.square().sum())


class BarlowTwinsLoss(nn.Module):
    """Module form of :func:`barlow_twins_loss`: ``loss(z1, z2)`` → scalar. No parameters or buffers."""

    def __init__(
        self,
        *,
        lambd: float = 2e-4,
        distributed: bool = False,
        normalize: bool = True,
        eps: float = 1e-5,
        impl: BTImpl = "auto",
    ) -> None:
        super().__init__()
        self.lambd, self.distributed, self.normalize, self.eps, self.impl = lambd, distributed, normalize, eps, impl

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins_loss(
            z1,
            z2,
            lambd=self.lambd,
            normalize=self.normalize,
            distributed=self.distributed,
            eps=self.eps,
            impl=self.impl,
        )

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}, distributed={self.distributed}, normalize={self.normalize}, impl={self.impl!r}"


class SyncBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over ``(N, D)`` whose training statistics are those of the global batch under DDP.

    Unlike ``nn.SyncBatchNorm`` it works on every backend (gloo/CPU included) and for unequal per-rank
    batch sizes; gradients flow through the statistics with autograd-aware all-reduces. On one process,
    in eval mode, or without a process group it is exactly ``nn.BatchNorm1d`` (same state-dict keys).
    """

    def __init__(
        self, num_features: int, *, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        if x.dim() != 2:
            raise ValueError(f"SyncBatchNorm1d expects (N, D), got {tuple(x.shape)}")
        xf = _at_least_fp32(x)  # statistics in float32 under AMP, as the fused BatchNorm kernels do
        count = torch.full((1,), float(x.shape[0]), dtype=xf.dtype, device=x.device)
        stats = all_reduce_sum(torch.cat([xf.sum(dim=0), count]))
        n_global = stats[-1].detach()
        mean = stats[:-1] / n_global
        centred = xf - mean
        var = all_reduce_sum(centred.square().sum(dim=0)) / n_global
        out = centred * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        out = out.to(x.dtype)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * n_global / (n_global - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return out


class Projector(nn.Module):
    """PSTL / Barlow Twins projector: ``(Linear(no bias) → BN → ReLU) × (layers − 1) → Linear(no bias)``.

    ``(N, in_dim)`` → ``(N, out_dim)``. Defaults are PSTL's 256 → 6144 → 6144 → 6144 (77,094,912
    parameters). ``sync_bn=True`` uses :class:`SyncBatchNorm1d` (global-batch statistics under DDP).
    Initialisation is PyTorch's default, as in the reference.
    """

    def __init__(
        self, *, in_dim: int = 256, hidden_dim: int = 6144, out_dim: int = 6144, layers: int = 3, sync_bn: bool = False
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ConfigError(f"the projector needs at least one layer, got {layers}")
        norm = SyncBatchNorm1d if sync_bn else nn.BatchNorm1d
        modules: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            modules += [nn.Linear(dim, hidden_dim, bias=False), norm(hidden_dim), nn.ReLU(inplace=True)]
            dim = hidden_dim
        modules.append(nn.Linear(dim, out_dim, bias=False))
        self.net = nn.Sequential(*modules)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
