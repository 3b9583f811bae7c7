"""Encoders: ST-GCN (PSTL) and the skeleton transformer (Skeleton2vec, MAMP)."""

from __future__ import annotations

from skelssl.models.stgcn import STGCN, STGCNBlock
from skelssl.models.transformer import SkeletonTransformer, gather_tokens, layer_index

__all__ = ["STGCN", "STGCNBlock", "SkeletonTransformer", "gather_tokens", "layer_index"]
