"""Transformer building blocks: multi-head self-attention, MLP, LayerScale, DropPath and the pre-LN block.

Shapes: token sequences are ``(B, L, D)`` (batch, tokens, width) throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``p``, scale the rest by 1/(1−p).

    ``x``: ``(B, ...)``; one Bernoulli draw per sample (first dimension). Identity when ``p == 0`` or not training.
    The draw uses the default random stream of ``x``'s device (seed it with ``torch.manual_seed``), as every
    dropout layer does: a generator argument would break ``torch.compile`` graphs.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = torch.rand(shape, dtype=x.dtype, device=x.device).add_(keep).floor_()
    return x * (mask / keep)


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (per-sample stochastic depth)."""

    def __init__(self, *, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class LayerScale(nn.Module):
    """Per-channel learned scale ``γ ⊙ x`` (CaiT), ``γ ∈ ℝ^D`` initialised to ``init``. ``x``: ``(..., D)``."""

    def __init__(self, *, dim: int, init: float = 1e-4) -> None:
        super().__init__()
        self.init_value = float(init)
        self.gamma = nn.Parameter(torch.full((dim,), self.init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"dim={self.gamma.numel()}, init={self.init_value:g}"


class Attention(nn.Module):
    """Multi-head self-attention with ``F.scaled_dot_product_attention``; ``(B, L, D) → (B, L, D)``.

    One fused ``qkv`` Linear(D → 3D, bias) whose output rows are ``[q; k; v]``, each split into heads as
    ``(h d)``: the same parameters (and count) as three separate q/k/v Linears stacked, and the layout of
    MAMP's ``qkv``. Scale ``head_dim ** -0.5``. Then an output projection Linear(D → D).
    """

    def __init__(self, *, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class MLP(nn.Module):
    """Linear(D → H) → GELU (exact) → Linear(H → D); ``(..., D) → (..., D)``."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block; ``(B, L, D) → (B, L, D)``::

        x = x + DropPath(γ₁ ⊙ Attn(LN₁(x)))
        x = x + DropPath(γ₂ ⊙ MLP(LN₂(x)))

    ``layer_scale=None`` (or 0) leaves out γ (MAMP); ``1e-4`` is Skeleton2vec's.
    """

    def __init__(
        self,
        *,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        layer_scale: float | None = None,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim=dim, heads=heads)
        self.ls1: nn.Module = LayerScale(dim=dim, init=layer_scale) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim=dim, hidden=int(dim * mlp_ratio))
        self.ls2: nn.Module = LayerScale(dim=dim, init=layer_scale) if layer_scale else nn.Identity()
        self.drop_path: nn.Module = DropPath(p=drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
