"""How a frozen encoder's token grid becomes the feature the frozen-encoder probes see (option ``pool=``).

- ``mean`` (default, the references' linear and kNN protocols): the encoder's own ``forward`` — the mean
  over every token (transformer) or over ``(T′, V)`` (ST-GCN), then over persons: ``(N, D)``.
- ``joint``: the mean over time and persons **per joint**, the ``V`` joint vectors concatenated:
  ``(N, V·D)``. It is the pooling of MAMP's fine-tune head (``LargeHead`` before its MLP), kept linear: the
  probe still is a linear classifier on a frozen encoder, but it sees where in the body a feature occurs.
  Not the references' linear protocol; reports name the pooling, and baselines must use the same.

Both poolings average zero-padded persons in, as the references' ``forward`` does.
"""

from __future__ import annotations

from typing import Literal, get_args

from einops import rearrange, reduce
from torch import Tensor, nn

from skelssl.errors import ConfigError

__all__ = ["POOLS", "JointPooled", "Pool", "joint_pool", "pooled_encoder"]

Pool = Literal["mean", "joint"]
POOLS: tuple[str, ...] = get_args(Pool)


def joint_pool(grid: Tensor) -> Tensor:
    """Token grid ``(N, M, T, V, D)`` → per-joint features ``(N, V·D)``: mean over ``T`` and ``M``, joint-major."""
    if grid.ndim != 5:
        raise ValueError(f"joint_pool expects a token grid (N, M, T, V, D), got {tuple(grid.shape)}")
    return rearrange(reduce(grid, "n m t v d -> n v d", "mean"), "n v d -> n (v d)")


class JointPooled(nn.Module):
    """``encoder`` (with ``forward_features(x) -> (N, M, T, V, D)``) seen through :func:`joint_pool`:
    clips ``(N, M, T, V, C)`` → ``(N, V·D)``. Holds the encoder as ``encoder`` (its state dict keys are
    ``encoder.*``); nothing of its own to learn."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(encoder, "forward_features", None)):
            raise ConfigError(
                f"pool=joint needs an encoder with a token grid (forward_features); {type(encoder).__name__} has none"
            )
        self.encoder = encoder
        dim = getattr(encoder, "feature_dim", None)
        joints = getattr(encoder, "num_joints", None)
        if dim is not None and joints is not None:
            self.feature_dim = int(dim) * int(joints)

    def forward(self, x: Tensor) -> Tensor:
        return joint_pool(self.encoder.forward_features(x))


def pooled_encoder(encoder: nn.Module, pool: str) -> nn.Module:
    """``encoder`` itself for ``pool="mean"``, :class:`JointPooled` around it for ``"joint"``."""
    if pool not in POOLS:
        raise ConfigError(f"pool={pool!r}: expected one of {', '.join(POOLS)}")
    return encoder if pool == "mean" else JointPooled(encoder)
