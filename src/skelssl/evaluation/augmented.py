"""Augmented training views for the linear probe (option ``augment=K``).

The references train their linear probes on augmented clips (MAMP, Skeleton2vec: the pretraining pipeline
without motion — a random crop / temporal view and a uniform ±0.3 rad rotation about x, y and z, drawn per
sample every epoch). skelssl's probe by default trains on the deterministic test view, cached once. With
``augment=K`` it trains on K augmented draws of every training clip instead: draw ``k`` is the encoder's
*training* clip view at epoch ``k`` (seeded by the run's seed), rotated by angles U(−θ, θ) (``θ`` =
``augment_rotation``, default 0.3) drawn from ``(seed, k, position)``; epoch ``e`` of the probe trains on draw
``e mod K``. Each draw's features are cached like the test view's. The test part keeps the test view.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from skelssl.data.augment import random_rotate
from skelssl.data.clips import ClipDataset
from skelssl.errors import ConfigError
from skelssl.evaluation.protocols import EvalContext, LoadedEncoder, encoder_features, option

__all__ = ["AUGMENT_OPTIONS", "RotatedClips", "augment_settings", "augmented_features"]

#: the options this module reads (the linear probe's, and semi's with the linear head)
AUGMENT_OPTIONS = frozenset({"augment", "augment_rotation"})
#: MAMP's and Skeleton2vec's ``RandomRot`` range (rad)
DEFAULT_ROTATION = 0.3


class RotatedClips(Dataset):
    """Items of ``base`` (``{"x": (M, T, V, C), …}``) with every clip rotated by U(−θ, θ) about x, y, z
    (:func:`~skelssl.data.augment.random_rotate`; in-plane only for 2-D), the angles drawn from
    ``(seed, draw, position)`` alone. ``theta = 0`` returns ``base``'s items unchanged."""

    def __init__(self, base: ClipDataset, *, theta: float, seed: int, draw: int) -> None:
        if not theta >= 0:
            raise ConfigError(f"augment_rotation must be >= 0 (radians), got {theta}")
        self.base, self.theta, self.seed, self.draw = base, float(theta), int(seed), int(draw)

    @property
    def layout(self) -> Any:
        return self.base.layout

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = self.base[(self.draw, int(position))]
        if self.theta == 0:
            return item
        state = np.random.SeedSequence([self.seed, self.draw, int(position)]).generate_state(1, dtype=np.uint64)
        generator = torch.Generator().manual_seed(int(state[0]) & (2**63 - 1))
        x = random_rotate(item["x"][None].double(), generator=generator, theta=self.theta)[0]
        return {**item, "x": x.to(item["x"].dtype)}

    def cache_identity(self) -> dict[str, Any]:
        from skelssl.evaluation.features import dataset_identity

        base = dataset_identity(self.base)
        base["epoch"] = self.draw
        return {"base": base, "rotation": self.theta, "seed": self.seed, "draw": self.draw}


def augment_settings(ctx: EvalContext) -> tuple[int, float]:
    """``(K, θ)`` from the options ``augment=K`` (default 0: the test view) and ``augment_rotation=θ``."""
    draws = option(ctx, "augment", 0, int)
    theta = option(ctx, "augment_rotation", DEFAULT_ROTATION, float)
    if draws < 0:
        raise ConfigError(f"augment={draws}: expected the number of augmented draws, 0 or more")
    if not theta >= 0:
        raise ConfigError(f"augment_rotation={theta}: expected an angle in radians, 0 or more")
    if "augment_rotation" in ctx.options and draws == 0:
        raise ConfigError("augment_rotation= needs augment=K (K augmented draws of the training clips)")
    return draws, theta


def augmented_features(
    ctx: EvalContext,
    part: str,
    *,
    draws: int,
    theta: float,
    encoder: LoadedEncoder | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frozen features of ``draws`` augmented views of ``ctx.split``/``part``: ``(features float32 (K, N, D),
    labels (N,), store indices (N,))``, each draw pooled and cached as :func:`encoder_features` does."""
    if draws < 1:
        raise ConfigError(f"augmented_features needs at least one draw, got {draws}")
    feats, labels, indices = [], None, None
    for draw in range(draws):

        def view(base: ClipDataset, draw: int = draw) -> Dataset:
            return RotatedClips(base, theta=theta, seed=ctx.seed, draw=draw)

        f, y, idx = encoder_features(ctx, part, encoder=encoder, batch_size=batch_size, train_view=view)
        if labels is None:
            labels, indices = y, idx
        elif not (np.array_equal(y, labels) and np.array_equal(idx, indices)):
            raise RuntimeError(f"augmented draw {draw} of {part!r} lists other clips than draw 0")
        feats.append(f)
    assert labels is not None and indices is not None
    return np.stack(feats), labels, indices
