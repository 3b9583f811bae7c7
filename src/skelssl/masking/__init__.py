"""Masking for self-supervised pretraining: pure functions of tensors and an explicit ``torch.Generator``.

- :func:`central_spatial_mask` — PSTL's Central Spatial Masking (joints by centrality).
- :func:`motion_attention_temporal_mask` — PSTL's Motion Attention Temporal Masking (frames by motion).
"""

from __future__ import annotations

from skelssl.masking.spatial import central_spatial_mask, centrality_weights, group_by_count
from skelssl.masking.temporal import gather_frames, motion_attention_temporal_mask, motion_energy

__all__ = [
    "central_spatial_mask",
    "centrality_weights",
    "gather_frames",
    "group_by_count",
    "motion_attention_temporal_mask",
    "motion_energy",
]
