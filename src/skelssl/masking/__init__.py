"""Masking for self-supervised pretraining: pure functions of tensors and an explicit ``torch.Generator``.

- :func:`central_spatial_mask` — PSTL's Central Spatial Masking (joints by centrality).
- :func:`motion_attention_temporal_mask` — PSTL's Motion Attention Temporal Masking (frames by motion).
- :func:`motion_aware_tube_mask`, :func:`tube_mask` — Skeleton2vec's token masks (joints per tube, by motion).
- :func:`motion_aware_mask`, :func:`random_mask` — MAMP's Gumbel motion-aware token mask and MAE's random one.
"""

from __future__ import annotations

from skelssl.masking.spatial import central_spatial_mask, centrality_weights, group_by_count
from skelssl.masking.temporal import gather_frames, motion_attention_temporal_mask, motion_energy
from skelssl.masking.tokens import (
    TokenMask,
    mamp_motion,
    motion_aware_mask,
    motion_aware_tube_mask,
    random_mask,
    token_mask_from_bool,
    token_motion,
    tube_intensity,
    tube_mask,
    visible_count,
)

__all__ = [
    "TokenMask",
    "central_spatial_mask",
    "centrality_weights",
    "gather_frames",
    "group_by_count",
    "mamp_motion",
    "motion_attention_temporal_mask",
    "motion_aware_mask",
    "motion_aware_tube_mask",
    "motion_energy",
    "random_mask",
    "token_mask_from_bool",
    "token_motion",
    "tube_intensity",
    "tube_mask",
    "visible_count",
]
