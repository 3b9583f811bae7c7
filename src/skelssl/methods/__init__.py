"""Self-supervised methods and their objectives."""

from __future__ import annotations

from skelssl.methods.losses import (
    BarlowTwinsLoss,
    Projector,
    SyncBatchNorm1d,
    barlow_twins_loss,
    barlow_twins_normalize,
)

__all__ = ["BarlowTwinsLoss", "Projector", "SyncBatchNorm1d", "barlow_twins_loss", "barlow_twins_normalize"]
