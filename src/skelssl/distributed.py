"""Autograd-aware collectives for losses computed on the global batch (Barlow Twins, synchronised BN).

Convention: every rank computes the *same* global loss ``L`` from collectives whose backward sums the
gradients of all ranks. Each rank then holds ``W · ∂L/∂x`` for its own rows (``W`` = world size), and
DDP's gradient averaging turns the parameter gradients into exactly those of one process on the global
batch. Without an initialised process group (or with ``W = 1``) the helpers are identities.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

Group = dist.ProcessGroup | None


def is_distributed(group: Group = None) -> bool:
    """True when a process group is initialised and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_size(group: Group = None) -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group: Group) -> Tensor:  # type: ignore[override]
        ctx.group = group
        out = x.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class _AllGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int], group: Group) -> Tensor:  # type: ignore[override]
        rank = dist.get_rank(group)
        ctx.group, ctx.start, ctx.stop = group, sum(sizes[:rank]), sum(sizes[: rank + 1])
        longest = max(sizes)
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous(), group=group)
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.start : ctx.stop], None, None


def all_reduce_sum(x: Tensor, group: Group = None) -> Tensor:
    """Sum of ``x`` over ranks; backward sums the ranks' gradients. Identity when not distributed."""
    return _AllReduceSum.apply(x, group) if is_distributed(group) else x


def gather_sizes(n: int, device: torch.device, group: Group = None) -> list[int]:
    """Every rank's batch size, in rank order (``[n]`` when not distributed)."""
    if not is_distributed(group):
        return [n]
    mine = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, mine, group=group)
    return [int(s) for s in sizes]


def all_gather_rows(x: Tensor, sizes: list[int] | None = None, group: Group = None) -> Tensor:
    """Concatenate every rank's ``x`` ``(n_r, ...)`` in rank order → ``(Σ n_r, ...)``; ranks may differ in ``n_r``.

    Backward sums the ranks' gradients and returns this rank's rows. ``sizes`` (from :func:`gather_sizes`)
    saves one collective when already known. Identity when not distributed.
    """
    if not is_distributed(group):
        return x
    if sizes is None:
        sizes = gather_sizes(x.shape[0], x.device, group)
    return _AllGatherRows.apply(x, sizes, group)
