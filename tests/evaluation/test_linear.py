"""Linear probe: recipes as specified, learns what is learnable and nothing else, seeded, end to end."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from skelssl.errors import ConfigError
from skelssl.evaluation.linear import LinearRecipe, build_linear_head, fit_linear, recipe_for_method, run_linear
from skelssl.evaluation.protocols import SELECTION_BEST, SELECTION_FINAL

from .eval_helpers import small_ctx_factory


def test_recipes_as_specified() -> None:
    mae = LinearRecipe.mae()
    assert (mae.head, mae.optimizer, mae.lr, mae.momentum, mae.weight_decay) == ("bn_linear", "sgd", 0.1, 0.9, 0.0)
    assert (mae.schedule, mae.epochs, mae.batch_size, mae.init, mae.init_std, mae.bn_eps) == (
        "cosine_step",
        100,
        256,
        "trunc_normal",
        0.01,
        1e-6,
    )
    pstl = LinearRecipe.pstl()
    assert (pstl.head, pstl.optimizer, pstl.lr, pstl.weight_decay) == ("linear", "adam", 0.01, 0.0)
    assert (pstl.schedule, pstl.epochs, pstl.batch_size, pstl.init) == ("cosine_epoch", 150, 128, "xavier_normal")
    assert recipe_for_method("pstl") == "pstl"
    assert recipe_for_method("skeleton2vec") == recipe_for_method("mamp") == "mae"


def test_heads_and_init() -> None:
    g = torch.Generator().manual_seed(0)
    head = build_linear_head(512, 400, LinearRecipe.mae(), g)
    bn, lin = head[0], head[1]
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6
    assert lin.weight.std().item() == pytest.approx(0.01, rel=0.02) and not lin.bias.any()
    head = build_linear_head(512, 400, LinearRecipe.pstl(), g)
    assert isinstance(head, nn.Linear) and not head.bias.any()
    assert head.weight.std().item() == pytest.approx(math.sqrt(2 / (512 + 400)), rel=0.02)


def test_schedules() -> None:
    mae = LinearRecipe.mae(epochs=4)
    lrs = [mae.lr_at(e, s, 5) for e in range(4) for s in range(5)]
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.05)
    assert all(a > b for a, b in itertools.pairwise(lrs))  # per step, decreasing toward 0
    pstl = LinearRecipe.pstl(epochs=6)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6)
    for epoch in range(6):
        for step in range(3):  # constant within an epoch
            assert pstl.lr_at(epoch, step, 3) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()


def _blobs(rng: np.random.Generator, n: int, k: int, d: int = 32) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(k, d)) * 4
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


@pytest.mark.parametrize("recipe", ["mae", "pstl"])
def test_separable_features_are_learnt(recipe: str) -> None:
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, 600, 5)
    r = {"mae": LinearRecipe.mae, "pstl": LinearRecipe.pstl}[recipe](epochs=20)
    res = fit_linear(x[:400], y[:400], x[400:], y[400:], num_classes=5, recipe=r, seed=0)
    assert res.history[-1] >= 0.98 and (res.logits.argmax(1) == y[400:]).mean() >= 0.98


@pytest.mark.parametrize("recipe", ["mae", "pstl"])
def test_random_labels_give_chance(recipe: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    y = rng.integers(0, 10, 2000)
    r = {"mae": LinearRecipe.mae, "pstl": LinearRecipe.pstl}[recipe](epochs=10)
    res = fit_linear(x[:1000], y[:1000], x[1000:], y[1000:], num_classes=10, recipe=r, seed=0)
    assert 0.05 <= res.history[-1] <= 0.16  # chance is 0.10; 1000 test samples


def test_seeded_reruns_are_identical() -> None:
    rng = np.random.default_rng(2)
    x, y = _blobs(rng, 300, 4)
    x = x + rng.normal(size=x.shape).astype(np.float32) * 6  # not trivially separable
    kw = {"num_classes": 4, "recipe": LinearRecipe.mae(epochs=5)}
    a = fit_linear(x[:200], y[:200], x[200:], y[200:], seed=3, **kw)
    b = fit_linear(x[:200], y[:200], x[200:], y[200:], seed=3, **kw)
    c = fit_linear(x[:200], y[:200], x[200:], y[200:], seed=4, **kw)
    assert np.array_equal(a.logits, b.logits) and a.history == b.history
    assert not np.array_equal(a.logits, c.logits)
    assert max(a.history) == a.history[a.best_epoch - 1]


def test_single_sample_last_batch_is_merged() -> None:
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    res = fit_linear(x, np.array([0, 1, 0, 1, 0]), x, np.array([0, 1, 0, 1, 0]), num_classes=2,
                     recipe=LinearRecipe.mae(epochs=2, batch_size=2), seed=0)  # fmt: skip
    assert res.logits.shape == (5, 2)


@pytest.fixture(scope="module")
def ctx_factory(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return small_ctx_factory(shared_data, tmp_path_factory.mktemp("lin"), epochs=30)


def test_run_linear_end_to_end(ctx_factory) -> None:  # type: ignore[no-untyped-def]
    ctx = ctx_factory("a")
    report = run_linear(ctx)
    assert report["selection"] == SELECTION_FINAL and report["settings"]["recipe"] == "pstl"
    assert report["settings"]["epochs"] == 30 and report["top1"] == pytest.approx(report["history"]["test_top1"][-1])
    logits = np.load(ctx.out_dir / "logits.npy")
    labels = np.load(ctx.out_dir / "labels.npy")
    assert logits.shape == (20, 10) and np.mean(logits.argmax(1) == labels) == pytest.approx(report["top1"])
    again = run_linear(ctx_factory("b"))
    assert again["top1"] == report["top1"] and again["per_class"] == report["per_class"]
    best = run_linear(ctx_factory("c", selection="best", recipe="mae"))
    assert best["selection"] == SELECTION_BEST and best["top1"] == pytest.approx(max(best["history"]["test_top1"]))
    assert best["settings"]["recipe"] == "mae" and best["settings"]["optimizer"] == "sgd"


def test_run_linear_on_a_subset_and_errors(ctx_factory) -> None:  # type: ignore[no-untyped-def]
    ctx = ctx_factory("d")
    train = ctx.store.split_indices("xview", "train")
    report = run_linear(ctx, train_indices=train[::4])
    assert report["settings"]["train_samples"] == len(train[::4])
    test = ctx.store.split_indices("xview", "test")
    with pytest.raises(ConfigError, match="not in xview/train"):
        run_linear(ctx, train_indices=test[:3])
    with pytest.raises(ConfigError, match="recipe='sgd'"):
        run_linear(ctx_factory("e", recipe="sgd"))
    with pytest.raises(ConfigError, match="unknown option 'recipie'"):
        run_linear(ctx_factory("f", recipie="mae"))


def test_views_are_trained_on_one_per_epoch_in_turn() -> None:
    rng = np.random.default_rng(3)
    x, y = _blobs(rng, 300, 4)
    other = x + rng.normal(size=x.shape).astype(np.float32) * 3
    test_x, test_y = x[200:], y[200:]
    kw = {"num_classes": 4, "seed": 5}

    def fit(train: np.ndarray, epochs: int) -> np.ndarray:
        return fit_linear(train, y[:200], test_x, test_y, recipe=LinearRecipe.mae(epochs=epochs), **kw).logits

    plain = fit(x[:200], 3)
    assert np.array_equal(fit(x[None, :200], 3), plain)  # one view = the (N, D) form
    assert np.array_equal(fit(np.stack([x[:200]] * 2), 3), plain)  # identical views: nothing changes
    # epoch 0 sees view 0, epoch 1 view 1: with the same schedule, one epoch of (A, B) is one epoch of A
    two = np.stack([x[:200], other[:200]])
    assert np.array_equal(fit(two, 1), fit(x[:200], 1))
    assert not np.array_equal(fit(two, 2), fit(x[:200], 2))
    with pytest.raises(ConfigError, match="train_y"):
        fit_linear(two[:, :150], y[:200], test_x, test_y, recipe=LinearRecipe.mae(epochs=1), **kw)
    with pytest.raises(ConfigError, match=r"\(K, N, D\)"):
        fit_linear(two[None], y[:200], test_x, test_y, recipe=LinearRecipe.mae(epochs=1), **kw)


def test_run_linear_per_joint_features(ctx_factory) -> None:  # type: ignore[no-untyped-def]
    mean = run_linear(ctx_factory("pool-mean", recipe="mae"))
    joint = run_linear(ctx_factory("pool-joint", recipe="mae", pool="joint"))
    assert mean["settings"]["feature_dim"] == 16 and mean["settings"]["pool"].startswith("mean")
    assert joint["settings"]["feature_dim"] == 20 * 16 and joint["settings"]["pool"].startswith("joint")
    assert joint["top1"] != mean["top1"] or joint["history"] != mean["history"]
    with pytest.raises(ConfigError, match="pool='max'"):
        run_linear(ctx_factory("pool-max", pool="max"))
