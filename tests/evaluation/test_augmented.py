"""Augmented training views of the linear probe (``augment=K``): rotated training clips, cached per draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skelssl.errors import ConfigError
from skelssl.evaluation.augmented import RotatedClips, augmented_features
from skelssl.evaluation.linear import run_linear
from skelssl.evaluation.protocols import make_eval_dataset

from .eval_helpers import small_ctx_factory


@pytest.fixture(scope="module")
def ctx_factory(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return small_ctx_factory(shared_data, tmp_path_factory.mktemp("aug"), epochs=20)


def _pairwise(x: torch.Tensor) -> torch.Tensor:
    """Distances between every two joints of every frame: ``(M, T, V, C)`` → ``(M, T, V, V)``."""
    return torch.cdist(x.double(), x.double())


def test_rotated_clips_rotate_rigidly_per_draw_and_position(ctx_factory) -> None:  # type: ignore[no-untyped-def]
    base = make_eval_dataset(ctx_factory("r"), "train", train=True)
    a = RotatedClips(base, theta=0.3, seed=1, draw=0)
    b = RotatedClips(base, theta=0.3, seed=1, draw=1)
    assert len(a) == len(base)
    x0, xa, xb = base[(0, 0)]["x"], a[0]["x"], b[0]["x"]
    assert xa.dtype == x0.dtype and xa.shape == x0.shape
    torch.testing.assert_close(_pairwise(xa), _pairwise(x0), rtol=1e-4, atol=1e-4)  # a rotation: shapes kept
    assert not torch.allclose(xa, x0)
    torch.testing.assert_close(a[0]["x"], xa)  # the same draw and position: the same clip
    assert not torch.allclose(a[1]["x"], RotatedClips(base, theta=0.3, seed=2, draw=0)[1]["x"])  # seeded
    assert not torch.allclose(xb, xa)  # another draw: another view (and angle)
    assert torch.equal(RotatedClips(base, theta=0.0, seed=1, draw=3)[2]["x"], base[(3, 2)]["x"])
    assert a[0]["label"] == base[(0, 0)]["label"]


def test_augmented_features_are_cached_per_draw(ctx_factory) -> None:  # type: ignore[no-untyped-def]
    ctx = ctx_factory("f")
    feats, labels, idx = augmented_features(ctx, "train", draws=3, theta=0.3)
    n = len(ctx.store.split_indices("xview", "train"))
    assert feats.shape == (3, n, 16) and labels.shape == idx.shape == (n,)
    assert not np.allclose(feats[0], feats[1]) and not np.allclose(feats[1], feats[2])
    again, _, _ = augmented_features(ctx, "train", draws=2, theta=0.3)
    assert np.array_equal(again, feats[:2])  # draws are what they are, whatever K
    other, _, _ = augmented_features(ctx, "train", draws=1, theta=0.1)
    assert not np.allclose(other[0], feats[0])


def test_run_linear_with_augmented_draws(ctx_factory) -> None:  # type: ignore[no-untyped-def]
    plain = run_linear(ctx_factory("p", recipe="mae"))
    aug = run_linear(ctx_factory("a", recipe="mae", augment="3"))
    again = run_linear(ctx_factory("a2", recipe="mae", augment="3"))
    assert aug["settings"]["augment"] == 3 and aug["settings"]["augment_rotation"] == 0.3
    assert "3 augmented draws" in aug["settings"]["features"]
    assert aug["settings"]["train_samples"] == plain["settings"]["train_samples"]
    assert aug["history"] == again["history"] and aug["history"] != plain["history"]
    assert plain["settings"]["augment"] == 0 and plain["settings"]["augment_rotation"] is None
    train = ctx_factory("s").store.split_indices("xview", "train")
    sub = run_linear(ctx_factory("s", recipe="mae", augment="2"), train_indices=train[::3])
    assert sub["settings"]["train_samples"] == len(train[::3])
    for bad, match in (({"augment": "-1"}, "augment=-1"), ({"augment_rotation": "0.2"}, "needs augment=K"),
                       ({"augment": "2", "augment_rotation": "-0.1"}, "augment_rotation=-0.1")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            run_linear(ctx_factory("bad", **bad))
