"""Linear evaluation on frozen, cached features (``skelssl eval linear``).

Two recipes, chosen by the encoder's method (``recipe=mae|pstl`` overrides):

- ``mae`` (MAE / MAMP / Skeleton2vec, spec §2.9, §3.4): ``BatchNorm1d(D, affine=False, eps=1e-6)`` →
  ``Linear(D, K)`` with trunc-normal(std 0.01) weight and zero bias; SGD lr 0.1, momentum 0.9, wd 0; cosine
  to 0 per step, no warm-up; 100 epochs; batch 256 (128/GPU × 2 in the references).
- ``pstl`` (PSTL / AimCLR family, spec §1.9): ``Linear(D, K)`` Xavier-normal weight, zero bias; Adam lr 0.01,
  no weight decay; ``CosineAnnealingLR(T_max=epochs)`` stepped per epoch; 150 epochs; batch 128.

Deviation from the references, on purpose, by default: the features are those of the deterministic test
view, computed once and cached (no training-time augmentation of the probe's inputs, as MAMP/Skeleton2vec
use), which makes the probe take seconds. ``augment=K`` trains on K cached augmented draws instead, one per
epoch in turn (:mod:`skelssl.evaluation.augmented`). ``pool=joint`` probes per-joint features
(:mod:`skelssl.evaluation.pooling`; not the references' pooling). Every batch is shuffled from a CPU
``torch.Generator`` seeded by the run's seed, which also initialises the head: the same seed gives the same
result. A final batch of a single sample is merged
into the previous one (BatchNorm needs two). The reported accuracy is the final epoch's;
``selection=best`` reports the best epoch on the test set instead, labelled as such.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import nn

from skelssl.errors import ConfigError
from skelssl.evaluation.augmented import AUGMENT_OPTIONS, augment_settings, augmented_features
from skelssl.evaluation.protocols import (
    SELECTION_BEST,
    SELECTION_FINAL,
    EvalContext,
    accuracy_report,
    base_report,
    check_options,
    encoder_features,
    feature_cache_dir,
    option,
    pool_setting,
)

__all__ = [
    "LINEAR_OPTIONS",
    "LinearRecipe",
    "LinearResult",
    "build_linear_head",
    "fit_linear",
    "recipe_for_method",
    "run_linear",
]

#: ``key=value`` options ``run_linear`` understands.
LINEAR_OPTIONS = frozenset({"recipe", "selection", "lr", "batch_size", "cache", "pool"} | AUGMENT_OPTIONS)


@dataclass(frozen=True)
class LinearRecipe:
    """One linear-probe recipe (see the module docstring)."""

    name: str
    head: str  # "bn_linear" | "linear"
    optimizer: str  # "sgd" | "adam"
    lr: float
    momentum: float
    weight_decay: float
    schedule: str  # "cosine_step" (per step, to 0) | "cosine_epoch" (CosineAnnealingLR stepped per epoch)
    epochs: int
    batch_size: int
    init: str  # "trunc_normal" | "xavier_normal"
    init_std: float = 0.01
    bn_eps: float = 1e-6

    @classmethod
    def mae(cls, **changes: Any) -> LinearRecipe:
        """MAE / MAMP / Skeleton2vec linear probe."""
        base = cls(
            name="mae",
            head="bn_linear",
            optimizer="sgd",
            lr=0.1,
            momentum=0.9,
            weight_decay=0.0,
            schedule="cosine_step",
            epochs=100,
            batch_size=256,
            init="trunc_normal",
        )
        return replace(base, **changes)

    @classmethod
    def pstl(cls, **changes: Any) -> LinearRecipe:
        """PSTL / AimCLR linear evaluation."""
        base = cls(
            name="pstl",
            head="linear",
            optimizer="adam",
            lr=0.01,
            momentum=0.0,
            weight_decay=0.0,
            schedule="cosine_epoch",
            epochs=150,
            batch_size=128,
            init="xavier_normal",
        )
        return replace(base, **changes)

    def check(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be at least 2, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """Learning rate of ``step`` (0-based) within ``epoch`` (0-based)."""
        if self.schedule == "cosine_step":
            progress = (epoch * steps_per_epoch + step) / (self.epochs * steps_per_epoch)
        else:
            progress = epoch / self.epochs
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


RECIPES = {"mae": LinearRecipe.mae, "pstl": LinearRecipe.pstl}


def recipe_for_method(method: str) -> str:
    """``pstl`` for PSTL (and its SkeletonBT baseline); ``mae`` for MAMP, Skeleton2vec and anything else."""
    return "pstl" if method.lower() in ("pstl", "skeletonbt", "aimclr") else "mae"


def build_linear_head(in_dim: int, num_classes: int, recipe: LinearRecipe, generator: torch.Generator) -> nn.Module:
    """The probe: ``Linear`` (``pstl``) or ``BatchNorm1d(affine=False) → Linear`` (``mae``), initialised from
    ``generator`` (CPU)."""
    linear = nn.Linear(in_dim, num_classes)
    with torch.no_grad():
        if recipe.init == "trunc_normal":
            nn.init.trunc_normal_(linear.weight, std=recipe.init_std, generator=generator)
        else:
            nn.init.xavier_normal_(linear.weight, generator=generator)
        linear.bias.zero_()
    if recipe.head == "bn_linear":
        return nn.Sequential(nn.BatchNorm1d(in_dim, affine=False, eps=recipe.bn_eps), linear)
    return linear


def _optimizer(head: nn.Module, recipe: LinearRecipe) -> torch.optim.Optimizer:
    params = [p for p in head.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2] = torch.cat(chunks[-2:])
        chunks.pop()
    return chunks


@dataclass
class LinearResult:
    """What :func:`fit_linear` returns: test logits of the final and the best epoch, per-epoch test top-1."""

    logits: np.ndarray  # (N_test, K) final epoch
    best_logits: np.ndarray  # (N_test, K) best epoch on test
    best_epoch: int  # 1-based
    history: list[float] = field(default_factory=list)  # test top-1 after every epoch
    train_loss: list[float] = field(default_factory=list)  # mean training loss per epoch


def fit_linear(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    recipe: LinearRecipe,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LinearResult:
    """Train a linear probe on ``train_x`` ``(N, D)`` / ``train_y`` ``(N,)`` and evaluate on the test set after
    every epoch. Deterministic for a given ``seed`` (on one device).

    ``train_x`` may also be ``(K, N, D)``: K views of the same N training clips (augmented draws); epoch ``e``
    trains on view ``e mod K``, so every epoch has the same steps and sees each clip once, as the references'
    on-the-fly augmentation.

    On the CPU it runs with one intra-op thread (restored afterwards): the probe's operations are tiny, and
    several threads only add synchronisation (20x slower on a busy 2-core machine)."""
    recipe.check()
    if torch.device(device).type != "cpu":
        return _fit(train_x, train_y, test_x, test_y, num_classes=num_classes, recipe=recipe, seed=seed, device=device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(train_x, train_y, test_x, test_y, num_classes=num_classes, recipe=recipe, seed=seed, device=device)
    finally:
        torch.set_num_threads(threads)


def _fit(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    recipe: LinearRecipe,
    seed: int,
    device: str | torch.device,
) -> LinearResult:
    dev = torch.device(device)
    xtr = torch.as_tensor(np.asarray(train_x, dtype=np.float32), device=dev)
    if xtr.ndim == 2:
        xtr = rearrange(xtr, "n d -> 1 n d")
    if xtr.ndim != 3 or xtr.shape[0] < 1:
        raise ConfigError(f"train_x must be (N, D) or (K, N, D), got shape {tuple(np.shape(train_x))}")
    if xtr.shape[1] < 2:
        raise ConfigError(f"a linear probe needs at least 2 training samples, got {xtr.shape[1]}")
    if xtr.shape[1] != len(train_y):
        raise ConfigError(f"train_x has {xtr.shape[1]} samples but train_y {len(train_y)}")
    ytr = torch.as_tensor(np.asarray(train_y, dtype=np.int64), device=dev)
    xte = torch.as_tensor(np.asarray(test_x, dtype=np.float32), device=dev)
    yte = torch.as_tensor(np.asarray(test_y, dtype=np.int64), device=dev)
    if int(ytr.max()) >= num_classes or int(ytr.min()) < 0:
        raise ConfigError(f"training labels must lie in 0..{num_classes - 1}")
    generator = torch.Generator().manual_seed(int(seed))
    views, n = xtr.shape[0], xtr.shape[1]
    head = build_linear_head(xtr.shape[2], num_classes, recipe, generator).to(dev)
    opt = _optimizer(head, recipe)
    loss_fn = nn.CrossEntropyLoss()
    batch = min(recipe.batch_size, n)
    steps = len(_batches(n, batch, torch.Generator().manual_seed(0)))
    history: list[float] = []
    losses: list[float] = []
    best = (-1.0, 0, None)
    logits = None
    for epoch in range(recipe.epochs):
        head.train()
        total, count = 0.0, 0
        view = xtr[epoch % views]
        for step, idx in enumerate(_batches(n, batch, generator)):
            lr = recipe.lr_at(epoch, step, steps)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = idx.to(dev)
            loss = loss_fn(head(view[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        losses.append(total / count)
        head.eval()
        with torch.no_grad():
            logits = head(xte).float()
        acc = float((logits.argmax(1) == yte).float().mean()) if len(yte) else 0.0
        history.append(acc)
        if acc > best[0]:
            best = (acc, epoch + 1, logits)
    assert logits is not None and best[2] is not None
    return LinearResult(
        logits=logits.cpu().numpy(),
        best_logits=best[2].cpu().numpy(),
        best_epoch=best[1],
        history=history,
        train_loss=losses,
    )


def linear_recipe(ctx: EvalContext, *, batch_size_key: str = "batch_size") -> LinearRecipe:
    """The probe recipe of this context: the encoder method's (``recipe=`` to choose), with ``--epochs``, ``lr=``
    and ``<batch_size_key>=`` applied."""
    name = option(ctx, "recipe", recipe_for_method(ctx.encoder.method))
    if name not in RECIPES:
        raise ConfigError(f"recipe={name!r}: expected one of {', '.join(RECIPES)}")
    changes: dict[str, Any] = {}
    if ctx.epochs is not None:
        changes["epochs"] = int(ctx.epochs)
    if "lr" in ctx.options:
        changes["lr"] = option(ctx, "lr", 0.0, float)
    if batch_size_key in ctx.options:
        changes["batch_size"] = option(ctx, batch_size_key, 0, int)
    recipe = RECIPES[name](**changes)
    recipe.check()
    return recipe


def run_linear(
    ctx: EvalContext,
    *,
    train_indices: np.ndarray | None = None,
    save_logits: bool = True,
    known_options: frozenset[str] | set[str] | None = None,
) -> dict[str, Any]:
    """Linear probe of ``ctx.encoder`` on frozen features: ``ctx.split``/``train_part`` (or the store indices
    ``train_indices`` ⊂ the train part, for ``semi``) → ``test_part``. Returns the report dict (module
    docstring of :mod:`skelssl.evaluation.protocols`) and writes ``logits.npy`` (final — or with
    ``selection=best`` the selected — test logits, ``(N_test, K)``) and ``labels.npy`` to ``ctx.out_dir``.

    Options: ``recipe=mae|pstl``, ``selection=final|best``, ``lr=``, ``batch_size=``, ``cache=DIR``,
    ``pool=mean|joint`` (:mod:`skelssl.evaluation.pooling`), ``augment=K`` and ``augment_rotation=θ``
    (:mod:`skelssl.evaluation.augmented`)."""
    check_options(ctx, known_options if known_options is not None else LINEAR_OPTIONS, "linear")
    start = time.perf_counter()
    selection = option(ctx, "selection", "final")
    if selection not in ("final", "best"):
        raise ConfigError(f"selection={selection!r}: expected final or best")
    recipe = linear_recipe(ctx)
    draws, theta = augment_settings(ctx)
    if draws:
        train_f, train_y, train_idx = augmented_features(ctx, ctx.train_part, draws=draws, theta=theta)
    else:
        train_f, train_y, train_idx = encoder_features(ctx, ctx.train_part)
    test_f, test_y, _ = encoder_features(ctx, ctx.test_part)
    if train_indices is not None:
        wanted = np.asarray(train_indices, dtype=np.int64)
        missing = np.setdiff1d(wanted, train_idx)
        if missing.size:
            raise ConfigError(f"{missing.size} train_indices are not in {ctx.split}/{ctx.train_part}")
        keep = np.isin(train_idx, wanted)
        train_f, train_y = train_f[..., keep, :], train_y[keep]
    num_classes = ctx.store.num_classes
    result = fit_linear(
        train_f, train_y, test_f, test_y, num_classes=num_classes, recipe=recipe, seed=ctx.seed, device=ctx.device
    )
    logits = result.best_logits if selection == "best" else result.logits
    settings = {
        "recipe": recipe.name,
        "head": recipe.head,
        "optimizer": recipe.optimizer,
        "lr": recipe.lr,
        "momentum": recipe.momentum,
        "weight_decay": recipe.weight_decay,
        "schedule": recipe.schedule,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "init": recipe.init,
        "train_samples": len(train_y),
        "test_samples": len(test_y),
        "features": (
            f"frozen encoder, cached; training: {draws} augmented draws (training view + rotation "
            f"U(-{theta:g}, {theta:g}) rad), one per epoch in turn; test: test-time view"
            if draws
            else "frozen encoder, test-time view, cached"
        ),
        "augment": draws,
        "augment_rotation": theta if draws else None,
        "pool": pool_setting(ctx),
        "feature_cache": str(feature_cache_dir(ctx)),
        "feature_dim": int(train_f.shape[-1]),
    }
    report = base_report(ctx, "linear", settings)
    report.update(accuracy_report(logits, test_y, class_names=ctx.store.class_names))
    report["selection"] = SELECTION_BEST if selection == "best" else SELECTION_FINAL
    report["final_top1"] = result.history[-1]
    report["best_top1"] = max(result.history)
    report["best_epoch"] = result.best_epoch
    report["history"] = {"test_top1": result.history, "train_loss": result.train_loss}
    report["rows"] = []
    if save_logits:
        out = Path(ctx.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "logits.npy", logits.astype(np.float32))
        np.save(out / "labels.npy", test_y.astype(np.int64))
        report["artefacts"] = ["logits.npy", "labels.npy"]
    report["seconds"] = time.perf_counter() - start
    return report
