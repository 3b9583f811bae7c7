"""Self-supervised methods and their objectives."""

from __future__ import annotations

from skelssl.methods.losses import (
    BarlowTwinsLoss,
    Projector,
    SyncBatchNorm1d,
    barlow_twins_loss,
    barlow_twins_normalize,
)
from skelssl.methods.mamp import MAMP, MAMPConfig, patch_motion_targets
from skelssl.methods.skeleton2vec import Skeleton2vec, Skeleton2vecConfig, contextual_targets

__all__ = [
    "MAMP",
    "BarlowTwinsLoss",
    "MAMPConfig",
    "Projector",
    "Skeleton2vec",
    "Skeleton2vecConfig",
    "SyncBatchNorm1d",
    "barlow_twins_loss",
    "barlow_twins_normalize",
    "contextual_targets",
    "patch_motion_targets",
]
