"""Central Spatial Masking (CSM, PSTL §1.5): drop joints with probability weighted by their centrality.

Two samplers, both drawing from an explicit ``torch.Generator`` on the CPU:

``reference``
    PSTL's sampler. Joint ``j`` enters a multiset ``w_j`` times (``w`` = integer centrality; the degree
    on ``ntu25`` gives 48 entries); ``num_joints`` entries are drawn without replacement and the
    *distinct* joints drawn are masked, so the count varies (8 draws on ``ntu25``: 5–8 joints, mean 7.34;
    4 or 3 with probability 2·10⁻⁴).
``exact``
    Exactly ``num_joints`` distinct joints, drawn one after another without replacement with
    probability proportional to the centrality of the joints not yet drawn (the successive-sampling /
    Plackett–Luce scheme, done in one shot with exponential keys ``E_j / w_j``, the smallest win).
    Static shapes: what ``torch.compile`` and per-sample masking want.

What is returned depends only on ``mode`` and ``batch_shared`` (never on the draw):

=============  ==============  ==========================================================
mode           batch_shared    returns
=============  ==============  ==========================================================
reference      True            LongTensor ``(k,)``, the distinct joints, sorted (k varies)
reference      False           BoolTensor ``(N, V)``, ``True`` = masked (count varies)
exact          True            LongTensor ``(k,)``, sorted, ``k = num_joints``
exact          False           LongTensor ``(N, k)``, each row sorted, ``k = num_joints``
=============  ==============  ==========================================================

``reference`` + ``batch_shared=True`` is what the PSTL code does (one ``random.sample`` per iteration).
Every form except the per-sample reference mask goes straight to
``STGCN.forward(x, drop_joints=...)``; the per-sample reference mask drops different numbers of joints
per sample, so split the batch with :func:`group_by_count` (four groups, sometimes five or six, on ``ntu25``) or use
``exact`` mode.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from skelssl.errors import ConfigError
from skelssl.skeleton.graph import Centrality, centrality
from skelssl.skeleton.layouts import Layout, get_layout

CSMMode = Literal["reference", "exact"]


def centrality_weights(layout: Layout | str, measure: Centrality = "degree") -> Tensor:
    """Per-joint sampling weights ``(V,)`` float64 (CPU): the layout's centrality."""
    lay = get_layout(layout) if isinstance(layout, str) else layout
    return torch.from_numpy(np.asarray(centrality(lay, measure), dtype=np.float64))


def central_spatial_mask(
    layout: Layout | str,
    *,
    num_joints: int = 8,
    batch_size: int | None = None,
    generator: torch.Generator,
    mode: CSMMode = "reference",
    centrality: Centrality = "degree",
    batch_shared: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Joints to mask for a batch, drawn with probability rising with centrality (see the module doc).

    ``num_joints`` is the number of multiset draws (``reference``) or of joints (``exact``).
    ``batch_size`` is required unless ``batch_shared``. ``generator`` must be a CPU generator; the result
    is drawn on the CPU and moved to ``device`` (CPU by default), so it is the same on every device.

    Returns ``(k,)`` / ``(N, k)`` sorted LongTensors or a ``(N, V)`` boolean mask (``True`` = masked) for
    per-sample ``reference`` mode.
    """
    weights = centrality_weights(layout, centrality)
    v = weights.numel()
    if mode not in ("reference", "exact"):
        raise ConfigError(f"unknown CSM mode {mode!r}; use 'reference' or 'exact'")
    if num_joints < 0:
        raise ConfigError(f"num_joints must be >= 0, got {num_joints}")
    if not batch_shared and (batch_size is None or batch_size < 1):
        raise ConfigError(f"per-sample CSM needs a batch_size >= 1, got {batch_size}")
    rows = 1 if batch_shared else int(batch_size)  # type: ignore[arg-type]

    if mode == "reference":
        counts = weights.round().long()
        if not torch.equal(counts.double(), weights) or bool((counts < 0).any()):
            raise ConfigError(f"reference CSM needs integer centralities (e.g. degree), not {centrality!r}; use exact")
        entries = torch.from_numpy(np.repeat(np.arange(v), counts.numpy()))  # the multiset: joint j, w_j times
        if num_joints > entries.numel():
            raise ConfigError(f"cannot draw {num_joints} of {entries.numel()} multiset entries")
        # a uniformly random subset of the entries: the k smallest of i.i.d. uniform keys
        keys = torch.rand(rows, entries.numel(), generator=generator, dtype=torch.float64)
        drawn = entries[keys.topk(num_joints, dim=1, largest=False).indices]  # (rows, num_joints)
        mask = torch.zeros(rows, v, dtype=torch.bool).scatter_(1, drawn, True)
        out = mask[0].nonzero().squeeze(1) if batch_shared else mask
        return out.to(device) if device is not None else out

    positive = int((weights > 0).sum())
    if num_joints > positive:
        raise ConfigError(f"cannot mask {num_joints} distinct joints: only {positive} have a positive centrality")
    # successive sampling without replacement ∝ w: the k smallest E_j / w_j with E_j ~ Exp(1)
    keys = torch.empty(rows, v, dtype=torch.float64).exponential_(generator=generator) / weights
    idx = keys.topk(num_joints, dim=1, largest=False).indices.sort(dim=1).values
    out = idx[0] if batch_shared else idx
    return out.to(device) if device is not None else out


def group_by_count(mask: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Split a per-sample boolean mask ``(N, V)`` into groups that mask the same number of joints.

    Returns ``[(rows, joints), ...]`` in increasing count: ``rows`` LongTensor ``(n_g,)`` of sample indices
    and ``joints`` LongTensor ``(n_g, k_g)`` of their masked joints (each row sorted), ready for
    ``STGCN.forward(x[rows], drop_joints=joints)``. Reads the counts on the host (one sync).
    """
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"expected a boolean mask (N, V), got {mask.dtype} {tuple(mask.shape)}")
    counts = mask.sum(dim=1)
    groups = []
    for k in torch.unique(counts).tolist():
        rows = (counts == k).nonzero().squeeze(1)
        joints = mask[rows].nonzero()[:, 1].reshape(rows.numel(), int(k))
        groups.append((rows, joints))
    return groups
