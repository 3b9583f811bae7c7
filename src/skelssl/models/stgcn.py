"""ST-GCN encoder (Yan et al., 2018) as PSTL uses it, with joint removal for Central Spatial Masking.

Defaults reproduce PSTL's quarter-width encoder on ``ntu25``: ten blocks 3→16→16→16→16→32→32→32→64→64→256,
spatial partition (K = 3), learnable edge importance, dropout 0.5 (none in the first block); 256-d
features pooled over time, joints and persons. Parameter and buffer names follow the reference code
(``data_bn``, ``st_gcn_networks.{i}.gcn.conv``, ``.tcn.{0,2,3}``, ``.residual.{0,1}``, ``edge_importance.{i}``),
so a reference state dict loads after stripping its prefix.

Joint removal (``drop_joints``) follows the reference: the input BatchNorm sees every joint, then the
dropped joints are deleted from the tensor and every layer's ``A ⊙ E`` is cut to the remaining rows and
columns, without renormalising. The set may be shared by the batch or chosen per sample (same count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange, reduce, repeat
from torch import Tensor, nn

from skelssl.errors import ConfigError
from skelssl.skeleton.graph import Strategy, partition
from skelssl.skeleton.layouts import Layout, get_layout

__all__ = ["STGCN", "BlockSpec", "GraphConv", "STGCNBlock", "stgcn_blocks"]


@dataclass(frozen=True)
class BlockSpec:
    """One ST-GCN block: channels, temporal stride, residual kind (``none``/``identity``/``conv``), dropout."""

    in_channels: int
    out_channels: int
    stride: int
    residual: str
    dropout: float


def stgcn_blocks(*, in_channels: int, hidden_channels: int, hidden_dim: int, dropout: float) -> list[BlockSpec]:
    """The ten-block ST-GCN stack (PSTL/AimCLR widths: ``h, h, h, h, 2h, 2h, 2h, 4h, 4h, hidden_dim``)."""
    h = hidden_channels
    plan = [(in_channels, h, 1), (h, h, 1), (h, h, 1), (h, h, 1), (h, 2 * h, 2), (2 * h, 2 * h, 1)]
    plan += [(2 * h, 2 * h, 1), (2 * h, 4 * h, 2), (4 * h, 4 * h, 1), (4 * h, hidden_dim, 1)]
    specs = []
    for i, (cin, cout, stride) in enumerate(plan):
        if i == 0:
            specs.append(BlockSpec(cin, cout, stride, "none", 0.0))
        else:
            kind = "identity" if cin == cout and stride == 1 else "conv"
            specs.append(BlockSpec(cin, cout, stride, kind, dropout))
    return specs


class GraphConv(nn.Module):
    """Spatial graph convolution: 1×1 conv to ``K·out`` channels, then ``y = Σ_k Σ_v x_k[·, v] · A_k[v, w]``.

    ``forward(x, adj)``: ``x`` ``(B, C_in, T, V)`` with ``B = N·M``; ``adj`` ``(K, V, W)`` shared by the
    batch or ``(N, K, V, W)`` per sample (each sample's ``M`` persons share it). Returns ``(B, C_out, T, W)``.
    """

    def __init__(self, *, in_channels: int, out_channels: int, num_subsets: int) -> None:
        super().__init__()
        self.num_subsets = num_subsets
        self.conv = nn.Conv2d(in_channels, out_channels * num_subsets, kernel_size=1)

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        x = rearrange(self.conv(x), "b (k c) t v -> b k c t v", k=self.num_subsets)
        if adj.dim() == 3:
            return torch.einsum("bkctv,kvw->bctw", x, adj)
        # per sample: the persons of a sample share its adjacency, no copy of it per person
        x = rearrange(x, "(n m) k c t v -> n m k c t v", n=adj.shape[0])
        return rearrange(torch.einsum("nmkctv,nkvw->nmctw", x, adj), "n m c t w -> (n m) c t w")


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask comes from ``torch.rand`` (≈ 4× faster than ``bernoulli_`` on CPU).

    Same semantics (zero with probability ``p``, scale the rest by ``1 / (1 − p)``, identity in eval) and the
    same default random stream; on other devices it is ``nn.Dropout`` (fused kernels there).
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p == 1.0:
            return x * 0.0
        mask = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * mask


class STGCNBlock(nn.Module):
    """Graph conv → BN → ReLU → temporal conv (kernel ``(9, 1)``, stride ``(s, 1)``) → BN → Dropout, + residual, ReLU.

    ``forward(x, adj)``: ``x`` ``(B, C_in, T, V)`` → ``(B, C_out, ⌈T/s⌉, W)``; ``adj`` as in :class:`GraphConv`.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        num_subsets: int,
        stride: int = 1,
        dropout: float = 0.0,
        residual: str = "auto",
        temporal_kernel: int = 9,
    ) -> None:
        super().__init__()
        if temporal_kernel % 2 != 1:
            raise ConfigError(f"temporal_kernel must be odd, got {temporal_kernel}")
        if residual == "auto":
            residual = "identity" if in_channels == out_channels and stride == 1 else "conv"
        if residual not in ("none", "identity", "conv"):
            raise ConfigError(f"unknown residual {residual!r}; use none, identity, conv or auto")
        if residual == "identity" and (in_channels != out_channels or stride != 1):
            raise ConfigError("an identity residual needs in_channels == out_channels and stride 1")
        self.gcn = GraphConv(in_channels=in_channels, out_channels=out_channels, num_subsets=num_subsets)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (temporal_kernel, 1), (stride, 1), ((temporal_kernel - 1) // 2, 0)),
            nn.BatchNorm2d(out_channels),
            Dropout(dropout),
        )
        self.residual_kind = residual
        self.residual: nn.Module | None = None
        if residual == "conv":
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        y = self.tcn(self.gcn(x, adj))
        if self.residual_kind == "identity":
            y = y + x
        elif self.residual is not None:
            y = y + self.residual(x)
        return torch.relu(y)


class STGCN(nn.Module):
    """ST-GCN encoder: ``(N, M, T, V, C)`` skeletons → ``(N, D)`` features (``(N, M, D)`` per person).

    ``D = hidden_dim``. Each person goes through the network separately (persons share the weights and
    the input BatchNorm over ``V·C`` channels); features are averaged over ``(T′, V′)``, then over persons
    (zero-padded persons included, as in the reference). Works for any ``T`` and any layout.
    """

    def __init__(
        self,
        *,
        layout: str | Layout = "ntu25",
        in_channels: int = 3,
        hidden_channels: int = 16,
        hidden_dim: int = 256,
        strategy: Strategy = "spatial",
        max_hop: int = 1,
        edge_importance: bool = True,
        dropout: float = 0.5,
        temporal_kernel: int = 9,
    ) -> None:
        super().__init__()
        self.layout = get_layout(layout) if isinstance(layout, str) else layout
        self._config = {
            "layout": self.layout.name,
            "in_channels": in_channels,
            "hidden_channels": hidden_channels,
            "hidden_dim": hidden_dim,
            "strategy": strategy,
            "max_hop": max_hop,
            "edge_importance": edge_importance,
            "dropout": dropout,
            "temporal_kernel": temporal_kernel,
        }
        self.in_channels = in_channels
        self.feature_dim = hidden_dim
        adj = torch.from_numpy(partition(self.layout, strategy, max_hop=max_hop))
        self.register_buffer("A", adj)  # (K, V, V)
        k, v = adj.shape[0], adj.shape[1]
        self.num_joints = v
        self.data_bn = nn.BatchNorm1d(in_channels * v)
        self.specs = stgcn_blocks(
            in_channels=in_channels, hidden_channels=hidden_channels, hidden_dim=hidden_dim, dropout=dropout
        )
        self.st_gcn_networks = nn.ModuleList(
            STGCNBlock(
                in_channels=s.in_channels,
                out_channels=s.out_channels,
                num_subsets=k,
                stride=s.stride,
                dropout=s.dropout,
                residual=s.residual,
                temporal_kernel=temporal_kernel,
            )
            for s in self.specs
        )
        self.edge_importance: nn.ParameterList | None = None
        if edge_importance:
            self.edge_importance = nn.ParameterList(nn.Parameter(torch.ones(k, v, v)) for _ in self.specs)

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable) that rebuild this encoder: ``STGCN(**cfg)``."""
        return dict(self._config)

    def forward(
        self, x: Tensor, drop_joints: Tensor | Sequence[int] | None = None, *, per_person: bool = False
    ) -> Tensor:
        """Encode ``x`` ``(N, M, T, V, C)``; returns ``(N, D)``, or ``(N, M, D)`` with ``per_person=True``.

        ``drop_joints`` removes joints after the input BatchNorm, from the tensor and from every layer's
        adjacency: ``None``; joint indices shared by the batch (a LongTensor ``(k,)`` or a sequence of ints);
        per-sample indices, a LongTensor ``(N, k)`` (the same ``k`` for every sample); or a boolean mask
        ``(V,)`` / ``(N, V)`` with ``True`` marking the joints to drop (the same count per sample; masks
        read their count on the host, so prefer indices under ``torch.compile``). Indices must be distinct.
        """
        m = x.shape[1]
        feats = reduce(self._grid(x, drop_joints), "(n m) d t v -> n m d", "mean", m=m)
        return feats if per_person else feats.mean(dim=1)

    def forward_features(self, x: Tensor, drop_joints: Tensor | Sequence[int] | None = None) -> Tensor:
        """The last block's output before pooling: ``(N, M, T′, V′, D)`` for ``x`` ``(N, M, T, V, C)``
        (``T′ = ⌈T/4⌉``; ``V′`` = the joints kept, see :meth:`forward`). ``forward`` is its mean over
        ``(T′, V′)`` and then persons."""
        grid = self._grid(x, drop_joints)
        return rearrange(grid, "(n m) d t v -> n m t v d", m=x.shape[1])

    def _grid(self, x: Tensor, drop_joints: Tensor | Sequence[int] | None) -> Tensor:
        """``x`` ``(N, M, T, V, C)`` through the input BatchNorm and the blocks → ``(N·M, D, T′, V′)``."""
        n, m, _, v, c = x.shape
        if v != self.num_joints or c != self.in_channels:
            raise ValueError(
                f"STGCN on {self.layout.name} expects (N, M, T, {self.num_joints}, {self.in_channels}) input, "
                f"got {tuple(x.shape)}"
            )
        x = self.data_bn(rearrange(x, "n m t v c -> (n m) (v c) t"))  # BN channel = v·C + c, as the reference
        keep = _keep_index(drop_joints, n, v, x.device)
        if keep is None:
            x = rearrange(x, "b (v c) t -> b c t v", v=v)
        elif keep.dim() == 1:
            x = rearrange(x, "b (v c) t -> b v (c t)", v=v).index_select(1, keep)
            x = rearrange(x, "b v (c t) -> b c t v", c=c)
        else:
            index = repeat(keep, "n w -> (n m) w", m=m)
            x = rearrange(x, "b (v c) t -> b v (c t)", v=v)
            x = x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))
            x = rearrange(x, "b v (c t) -> b c t v", c=c)
        importances = self.edge_importance if self.edge_importance is not None else [None] * len(self.specs)
        for block, importance in zip(self.st_gcn_networks, importances, strict=True):
            adj = self.A if importance is None else self.A * importance
            if keep is not None:
                adj = _slice_adjacency(adj, keep)
            x = block(x, adj)
        return x


def _slice_adjacency(adj: Tensor, keep: Tensor) -> Tensor:
    """Cut ``adj`` ``(K, V, V)`` to the kept joints: ``(K, V′, V′)`` for ``keep`` ``(V′,)``, else ``(N, K, V′, V′)``."""
    if keep.dim() == 1:
        return adj.index_select(1, keep).index_select(2, keep)
    return rearrange(adj[:, keep[:, :, None], keep[:, None, :]], "k n v w -> n k v w")


def _keep_index(drop: Tensor | Sequence[int] | None, n: int, v: int, device: torch.device) -> Tensor | None:
    """Sorted indices of the joints kept: ``(V − k,)`` shared or ``(N, V − k)`` per sample; ``None`` to keep all."""
    if drop is None:
        return None
    if not isinstance(drop, Tensor):
        dropped = [int(j) for j in drop]
        if len(set(dropped)) != len(dropped) or not all(0 <= j < v for j in dropped):
            raise ValueError(f"drop_joints must be distinct joint indices in [0, {v}), got {dropped}")
        if len(dropped) >= v:
            raise ValueError(f"cannot drop {len(dropped)} of {v} joints: at least one must remain")
        return torch.tensor([j for j in range(v) if j not in dropped], dtype=torch.long, device=device)
    drop = drop.to(device)
    if drop.dim() not in (1, 2) or (drop.dim() == 2 and drop.shape[0] != n):
        raise ValueError(f"drop_joints must be (k,), ({n}, k), ({v},) or ({n}, {v}), got {tuple(drop.shape)}")
    if drop.dtype == torch.bool:
        if drop.shape[-1] != v:
            raise ValueError(f"a boolean drop_joints mask must have {v} joints, got {tuple(drop.shape)}")
        counts = drop.sum(dim=-1).reshape(-1)
        k = int(counts[0])
        if not bool((counts == k).all()):
            raise ValueError("a per-sample drop_joints mask must drop the same number of joints in every sample")
        mask = drop
    else:
        if drop.is_floating_point() or drop.is_complex():
            raise ValueError(f"drop_joints must be integer indices or a boolean mask, got {drop.dtype}")
        k = drop.shape[-1]
        drop = drop.long()
        torch._assert_async(((drop >= 0) & (drop < v)).all(), "drop_joints: joint index out of range")
        mask = torch.zeros(*drop.shape[:-1], v, dtype=torch.bool, device=device)
        mask = mask.scatter(-1, drop.clamp(0, v - 1), True)
        torch._assert_async((mask.sum(dim=-1) == k).all(), "drop_joints: repeated joint index")
    if k >= v:
        raise ValueError(f"cannot drop {k} of {v} joints: at least one must remain")
    # a stable sort of the 0/1 mask puts the kept joints first, in increasing order: static shapes, no sync
    return torch.argsort(mask.to(torch.uint8), dim=-1, stable=True)[..., : v - k]
