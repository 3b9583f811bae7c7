"""Fine-tuning: the whole network (encoder + a classification head) trained with labels.

Two recipes, chosen by the encoder kind (methods.md §1.9, §2.9, §3.4):

- **transformer** (MAMP / Skeleton2vec): the Large head (:class:`~skelssl.evaluation.heads.LargeHead`);
  AdamW (0.9, 0.999), lr 3e-4, weight decay 0.05 except 1-D parameters and the position embeddings;
  layer-wise lr decay 0.8 (embedding layer 0, block ``k`` layer ``k + 1``, final norm layer ``depth``, head
  ``depth + 1``: scale ``0.8 ** (depth + 1 − layer)``); per-step linear warm-up over 5 epochs then cosine to
  1e-5; 100 epochs; drop-path 0.3; label smoothing 0.1; batch 24; training clips = the encoder preset's
  training view + its augmentation (random rotation θ = 0.3), test clips = its test view.
- **stgcn** (PSTL): a Linear head (Xavier-normal, bias 0) on the pooled 256-d feature; Adam lr 5e-3, no
  weight decay; per-epoch cosine (``CosineAnnealingLR(T_max = epochs)``); 150 epochs; batch 128; no
  augmentation; the encoder in train mode (its dropout 0.5 on).

Options (``ctx.options``, all optional): ``lr``, ``batch_size``, ``weight_decay``, ``layer_decay`` (``1`` = off),
``drop_path``, ``label_smoothing``, ``warmup_epochs``, ``min_lr``, ``head`` (``large`` | ``linear``), ``augment``
(``true``/``false``), ``selection`` (``final`` | ``best``), ``eval_every`` (test accuracy every N epochs in the
history; ``selection=best`` evaluates every epoch), ``workers``; ``ctx.epochs`` overrides the epoch count.
When ``batch_size`` is not given and the recipe's batch leaves fewer than ``MIN_STEPS_PER_EPOCH`` optimizer
steps per epoch (PSTL's 128 on NW-UCLA), a :class:`FewStepsWarning` suggests a smaller batch.

Reported accuracy is the final epoch's (``selection=best``: the best epoch on the test set, labelled so in the
report). Runs are seeded by ``ctx.seed`` (head init, data order, augmentation, dropout / drop-path — the latter
inside ``torch.random.fork_rng`` so the caller's global generator is untouched) and deterministic on the CPU
for a fixed thread count.

CPU cost (one thread of a shared, heavily loaded 2-core machine; NW-UCLA x-view, 1,020 training clips): the
PSTL ST-GCN recipe took about 90 s per epoch (8 steps of 128 clips plus the test pass), i.e. hours for the
150-epoch recipe; the Skeleton2vec transformer (8 × 256, 600 tokens per person, 2 persons) took about 160 s
per step of 24 clips, i.e. hours per epoch. Use a GPU (``--device cuda``) for the reference recipes, and
``--epochs`` for a short check on the CPU.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from skelssl.data.augment import AugmentConfig, augment
from skelssl.data.loader import make_loader
from skelssl.data.streams import to_stream
from skelssl.engine.optim import build_optimizer
from skelssl.engine.schedule import LRSchedule
from skelssl.errors import ConfigError
from skelssl.evaluation.heads import Classifier, LargeHead, LinearHead
from skelssl.evaluation.protocols import (
    SELECTION_BEST,
    SELECTION_FINAL,
    EvalContext,
    LoadedEncoder,
    accuracy_report,
    base_report,
    check_options,
    make_eval_dataset,
    option,
    refuse_raw_input,
)
from skelssl.models.registry import build_encoder, encoder_spec
from skelssl.models.transformer import SkeletonTransformer, layer_index

__all__ = [
    "FINETUNE_OPTIONS",
    "FinetuneRecipe",
    "build_classifier",
    "build_finetune_optimizer",
    "default_recipe",
    "finetune_layer_index",
    "finetune_schedule",
    "recipe_from_context",
    "run_finetune",
]

FINETUNE_OPTIONS = frozenset(
    {
        "lr",
        "batch_size",
        "weight_decay",
        "layer_decay",
        "drop_path",
        "label_smoothing",
        "warmup_epochs",
        "min_lr",
        "head",
        "augment",
        "selection",
        "eval_every",
        "workers",
        "cache",
    }
)

_AUGMENT_PRESETS = {"skeleton2vec": AugmentConfig.skeleton2vec, "mamp": AugmentConfig.mamp}
_POS_EMBEDDINGS = ("temporal_pos", "spatial_pos")


@dataclass(frozen=True)
class FinetuneRecipe:
    """Every setting of a fine-tuning run (recorded in the report)."""

    kind: Literal["transformer", "stgcn"]
    head: Literal["large", "linear"]
    optimizer: Literal["adamw", "adam"]
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    layer_decay: float | None  # None: every parameter at the base lr
    schedule: Literal["warmup-cosine-step", "cosine-epoch"]
    warmup_epochs: int
    min_lr: float
    epochs: int
    batch_size: int
    drop_path: float | None  # None: the encoder's own (ST-GCN has none)
    label_smoothing: float
    augment: str | None  # augmentation preset on the training clips, or None
    selection: Literal["final", "best"] = "final"
    eval_every: int = 0

    def check(self) -> None:
        if self.lr <= 0 or self.min_lr < 0 or self.weight_decay < 0:
            raise ConfigError("fine-tune: lr must be > 0, min_lr and weight_decay >= 0")
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(
                f"fine-tune: epochs must be >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}"
            )
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ConfigError(f"fine-tune: layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.drop_path is not None and not 0 <= self.drop_path < 1:
            raise ConfigError(f"fine-tune: drop_path must be in [0, 1), got {self.drop_path}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"fine-tune: label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs < 0 or self.eval_every < 0:
            raise ConfigError("fine-tune: warmup_epochs and eval_every must be >= 0")
        if self.selection not in ("final", "best"):
            raise ConfigError(f"fine-tune: selection must be final or best, got {self.selection!r}")
        if self.head not in ("large", "linear"):
            raise ConfigError(f"fine-tune: head must be large or linear, got {self.head!r}")
        if self.head == "large" and self.kind != "transformer":
            raise ConfigError("fine-tune: the large head needs a transformer encoder; use head=linear")


def _encoder_kind(encoder: LoadedEncoder) -> str:
    kind = (encoder.card.get("encoder") or {}).get("kind")
    if kind is None:
        kind = "transformer" if isinstance(encoder.module, SkeletonTransformer) else "stgcn"
    if kind not in ("transformer", "stgcn"):
        raise ConfigError(f"fine-tune: no recipe for a {kind!r} encoder")
    return str(kind)


def _clip_preset(encoder: LoadedEncoder) -> str:
    pre = (encoder.card.get("pretrain") or {}).get("data") or {}
    return str(pre.get("clips") or (encoder.card.get("data") or {}).get("clips") or "pstl")


def default_recipe(encoder: LoadedEncoder) -> FinetuneRecipe:
    """The reference recipe for ``encoder``'s kind (see the module docstring)."""
    if _encoder_kind(encoder) == "transformer":
        preset = _clip_preset(encoder)
        return FinetuneRecipe(
            kind="transformer",
            head="large",
            optimizer="adamw",
            lr=3e-4,
            weight_decay=0.05,
            betas=(0.9, 0.999),
            layer_decay=0.8,
            schedule="warmup-cosine-step",
            warmup_epochs=5,
            min_lr=1e-5,
            epochs=100,
            batch_size=24,
            drop_path=0.3,
            label_smoothing=0.1,
            augment=preset if preset in _AUGMENT_PRESETS else "skeleton2vec",
        )
    return FinetuneRecipe(
        kind="stgcn",
        head="linear",
        optimizer="adam",
        lr=5e-3,
        weight_decay=0.0,
        betas=(0.9, 0.999),
        layer_decay=None,
        schedule="cosine-epoch",
        warmup_epochs=0,
        min_lr=0.0,
        epochs=150,
        batch_size=128,
        drop_path=None,
        label_smoothing=0.0,
        augment=None,
    )


def recipe_from_context(ctx: EvalContext) -> FinetuneRecipe:
    """:func:`default_recipe` with ``ctx.epochs`` and the ``ctx.options`` overrides applied (and checked)."""
    check_options(ctx, FINETUNE_OPTIONS, "finetune")
    base = default_recipe(ctx.encoder)
    changes: dict[str, Any] = {}
    if ctx.epochs is not None:
        changes["epochs"] = int(ctx.epochs)
    for key, cast in (
        ("lr", float),
        ("batch_size", int),
        ("weight_decay", float),
        ("label_smoothing", float),
        ("warmup_epochs", int),
        ("min_lr", float),
        ("eval_every", int),
        ("head", str),
        ("selection", str),
    ):
        if key in ctx.options:
            changes[key] = option(ctx, key, None, cast)
    if "layer_decay" in ctx.options:
        decay = option(ctx, "layer_decay", None, float)
        changes["layer_decay"] = None if decay == 1.0 else decay
    if "drop_path" in ctx.options:
        if base.kind != "transformer":
            raise ConfigError("fine-tune: drop_path applies to transformer encoders only")
        changes["drop_path"] = option(ctx, "drop_path", None, float)
    if "augment" in ctx.options:
        on = option(ctx, "augment", None, bool)
        preset = _clip_preset(ctx.encoder)
        changes["augment"] = (preset if preset in _AUGMENT_PRESETS else "skeleton2vec") if on else None
    recipe = replace(base, **changes)
    recipe.check()
    return recipe


# -------------------------------------------------------------------------------------------- model


def _trainable_encoder(encoder: LoadedEncoder, recipe: FinetuneRecipe) -> nn.Module:
    """A trainable copy of the frozen encoder (the context's module is left untouched); transformers are
    rebuilt with the recipe's drop-path rate and the same weights."""
    source = encoder.module
    if isinstance(source, SkeletonTransformer) and recipe.drop_path is not None:
        spec = encoder_spec(source)
        spec["config"]["drop_path"] = recipe.drop_path
        model = build_encoder(spec)
        model.load_state_dict(source.state_dict())
    else:
        model = copy.deepcopy(source)
    model = model.to("cpu").train()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def build_classifier(
    encoder: LoadedEncoder, num_classes: int, recipe: FinetuneRecipe, *, generator: torch.Generator
) -> Classifier:
    """Encoder copy + the recipe's head (initialised from ``generator``), on the CPU, in train mode."""
    enc = _trainable_encoder(encoder, recipe)
    dim = int(enc.feature_dim)
    head: nn.Module
    if recipe.head == "large":
        assert isinstance(enc, SkeletonTransformer)
        init = "mamp" if enc.config().get("init") == "mamp" else "skeleton2vec"
        head = LargeHead(dim=dim, num_joints=enc.num_joints, num_classes=num_classes, init=init, generator=generator)
    else:
        head = LinearHead(dim=dim, num_classes=num_classes, generator=generator)
    return Classifier(encoder=enc, head=head).train()


def finetune_layer_index(name: str, depth: int) -> int:
    """Layer id of a :class:`Classifier` parameter for layer-wise decay: ``encoder.*`` as
    :func:`~skelssl.models.transformer.layer_index` (embedding 0, block ``k`` → ``k + 1``, final norm →
    ``depth``), ``head.*`` → ``depth + 1`` (scale 1)."""
    if name.startswith("encoder."):
        return layer_index(name[len("encoder.") :], depth)
    if name.startswith("head."):
        return depth + 1
    raise ValueError(f"{name!r} is not a Classifier parameter name")


def build_finetune_optimizer(model: Classifier, recipe: FinetuneRecipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over every parameter of ``model``.

    Transformer: AdamW, no weight decay on 1-D parameters (biases, norms, LayerScale) and the position
    embeddings, and — with ``layer_decay`` — ``lr_scale = layer_decay ** (depth + 1 − layer)`` per group.
    ST-GCN: Adam without weight decay (PSTL).
    """
    kw: dict[str, Any] = {"name": recipe.optimizer, "lr": recipe.lr, "betas": recipe.betas}
    if recipe.kind == "transformer":
        kw.update(
            weight_decay=recipe.weight_decay,
            no_decay_norm_bias=True,
            no_decay_names=_POS_EMBEDDINGS,
        )
        if recipe.layer_decay is not None:
            enc = model.encoder
            if not isinstance(enc, SkeletonTransformer):
                raise ConfigError("layer-wise lr decay needs a transformer encoder")
            depth = enc.depth
            kw.update(
                layer_decay=recipe.layer_decay,
                layer_index=lambda name: finetune_layer_index(name, depth),
                num_layers=depth + 1,
            )
    else:
        kw["weight_decay"] = recipe.weight_decay
    return build_optimizer(model, **kw)


def finetune_schedule(recipe: FinetuneRecipe, steps_per_epoch: int) -> LRSchedule:
    """Transformer: per-step warm-up over ``min(warmup_epochs, epochs)`` epochs, then cosine to ``min_lr``.
    ST-GCN: PSTL's ``CosineAnnealingLR(T_max = epochs)`` stepped per epoch (constant within an epoch)."""
    if recipe.schedule == "warmup-cosine-step":
        warm = min(recipe.warmup_epochs, recipe.epochs)
        return LRSchedule.cosine(
            base_lr=recipe.lr,
            min_lr=recipe.min_lr,
            warmup_steps=warm * steps_per_epoch,
            total_steps=recipe.epochs * steps_per_epoch,
        )
    return LRSchedule.pstl(
        base_lr=recipe.lr,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=min(recipe.warmup_epochs, recipe.epochs),
        epochs=recipe.epochs,
        min_lr=recipe.min_lr,
        zero_first_epoch=False,
    )


def make_criterion(recipe: FinetuneRecipe) -> nn.CrossEntropyLoss:
    """Cross-entropy with the recipe's label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)


# -------------------------------------------------------------------------------------------- loop


@torch.no_grad()
def predict(model: Classifier, dataset: Any, *, stream: str, device: str, batch_size: int = 64) -> np.ndarray:
    """Logits ``(N, K)`` float32 of every item of ``dataset`` (in order), the model in eval mode
    (training flags restored afterwards)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    out: list[np.ndarray] = []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator()):
            x = to_stream(batch["x"].to(device), stream, dataset.layout)
            out.append(model(x).float().cpu().numpy())
    finally:
        for m, training in flags:
            m.training = training
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    """``fine-tune epoch 3/30: loss 1.234, train 56.1 %, test 48.2 %, 41 s`` (test only where evaluated)."""
    test = f", test {100 * row['test_top1']:.1f} %" if "test_top1" in row else ""
    return (
        f"fine-tune epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}, train {100 * row['train_top1']:.1f} %"
        f"{test}, {row['seconds']:.0f} s"
    )


MIN_STEPS_PER_EPOCH = 10  # fewer optimizer steps per epoch than this draw a warning (small datasets)


class FewStepsWarning(UserWarning):
    """The recipe's batch size leaves a small training set only a handful of optimizer steps per epoch."""


def few_steps_message(*, n_train: int, batch_size: int, steps_per_epoch: int, epochs: int) -> str | None:
    """The warning for a recipe batch that gives fewer than :data:`MIN_STEPS_PER_EPOCH` steps per epoch, or
    ``None``. PSTL's batch of 128 was chosen for NTU's 40k clips: on NW-UCLA (1,020 clips) it leaves 7 steps
    per epoch (47.0 % top-1 vs 61.9 % in batches of 16) and on 10 % of the labels 1 step (chance level)."""
    if steps_per_epoch >= MIN_STEPS_PER_EPOCH:
        return None
    smaller = max(2, min(16, n_train // MIN_STEPS_PER_EPOCH))
    return (
        f"fine-tune: {n_train} training sequences in batches of {batch_size} give {steps_per_epoch} optimizer "
        f"step(s) per epoch ({steps_per_epoch * epochs} in all); the recipe's batch size suits NTU-sized sets "
        f"and under-trains a small one. Pass a smaller batch: the option batch_size={smaller} "
        f"(skelssl eval finetune|semi ... batch_size={smaller})."
    )


def run_finetune(ctx: EvalContext, *, train_indices: np.ndarray | None = None) -> dict[str, Any]:
    """Fine-tune ``ctx.encoder`` with a new head on ``ctx.split``/``ctx.train_part`` (or the store indices
    ``train_indices`` of that part: the labelled subset of semi-supervised runs) and report test accuracy.

    Returns the report dict (``protocol = "finetune"``, ``settings`` = the recipe and the training-set size,
    ``top1``/``top5``/``per_class``/``confusion``, ``history`` = per-epoch loss / lr / train accuracy (and test
    accuracy where evaluated), ``seconds``, ``selection``) and writes ``ctx.out_dir/logits.npy`` (test logits
    ``(N_test, K)`` of the selected epoch, in test-part order) and ``labels.npy``. See the module docstring for
    the recipes, options and CPU cost.
    """
    start = time.perf_counter()
    refuse_raw_input(ctx.encoder, "fine-tune")
    recipe = recipe_from_context(ctx)
    enc = ctx.encoder
    device = ctx.device
    num_classes = ctx.store.num_classes
    train_ds = make_eval_dataset(ctx, ctx.train_part, train=True, indices=train_indices)
    test_ds = make_eval_dataset(ctx, ctx.test_part, train=False)
    n_train = len(train_ds)
    if n_train < 2:
        raise ConfigError(f"fine-tune needs at least 2 labelled training sequences, got {n_train}")
    layout = train_ds.layout
    aug = _AUGMENT_PRESETS[recipe.augment]() if recipe.augment else None
    batch_size = min(recipe.batch_size, n_train)
    # drop the last partial batch (BatchNorm needs > 1 sample); a set smaller than a batch is one batch
    loader = make_loader(
        train_ds,
        batch_size=batch_size,
        shuffle=True,
        seed=ctx.seed,
        drop_last=True,
        num_workers=option(ctx, "workers", 0, int),
    )
    steps_per_epoch = len(loader)
    if "batch_size" not in ctx.options:
        message = few_steps_message(
            n_train=n_train, batch_size=batch_size, steps_per_epoch=steps_per_epoch, epochs=recipe.epochs
        )
        if message is not None:
            warnings.warn(message, FewStepsWarning, stacklevel=2)
    schedule = finetune_schedule(recipe, steps_per_epoch)
    criterion = make_criterion(recipe)
    aug_gen = torch.Generator().manual_seed(ctx.seed * 1000 + 11)
    history: list[dict[str, Any]] = []
    best: tuple[float, int, np.ndarray] | None = None
    logits = np.zeros((0, num_classes), dtype=np.float32)
    step = 0
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(ctx.seed)  # dropout / drop-path draws (seeds every device's default generator)
        head_gen = torch.Generator().manual_seed(ctx.seed * 1000 + 7)
        model = build_classifier(enc, num_classes, recipe, generator=head_gen).to(device)
        optimizer = build_finetune_optimizer(model, recipe)
        for epoch in range(recipe.epochs):
            t0 = time.perf_counter()
            model.train()
            loader.set_epoch(epoch)
            loss_sum, correct, seen = 0.0, 0, 0
            lr = 0.0
            for batch in loader:
                x = batch["x"].to(device)
                y = torch.as_tensor(batch["label"]).to(device)
                if aug is not None:
                    x = augment(x, aug, layout=layout, generator=aug_gen)
                x = to_stream(x, enc.stream, layout)
                lr = schedule.apply(optimizer, step)
                out = model(x)
                loss = criterion(out, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += float(loss.detach()) * y.shape[0]
                correct += int((out.detach().argmax(dim=1) == y).sum())
                seen += y.shape[0]
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(seen, 1),
                "train_top1": correct / max(seen, 1),
                "lr": lr,
            }
            last = epoch + 1 == recipe.epochs
            evaluate = (
                last or recipe.selection == "best" or (recipe.eval_every and (epoch + 1) % recipe.eval_every == 0)
            )
            if evaluate:
                epoch_logits = predict(model, test_ds, stream=enc.stream, device=device)
                top1 = float(np.mean(epoch_logits.argmax(axis=1) == test_ds.labels))
                row["test_top1"] = top1
                if best is None or top1 > best[0]:
                    best = (top1, epoch + 1, epoch_logits)
                if last:
                    logits = epoch_logits
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            if ctx.progress is not None:
                ctx.progress(_epoch_line(row, recipe.epochs))
    selected_epoch = recipe.epochs
    if recipe.selection == "best" and best is not None:
        _, selected_epoch, logits = best
    labels = test_ds.labels
    settings = {
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(recipe).items()},
        "batch_size_used": batch_size,
        "train_sequences": n_train,
        "test_sequences": len(test_ds),
        "train_subset": train_indices is not None,
        "steps_per_epoch": steps_per_epoch,
        "stream": enc.stream,
        "clips": train_ds.config.to_dict(),
        "threads": torch.get_num_threads(),
    }
    report = base_report(ctx, "finetune", settings)
    report.update(accuracy_report(logits, labels, class_names=ctx.store.class_names))
    report["rows"] = []
    report["history"] = history
    report["selected_epoch"] = selected_epoch
    report["selection"] = SELECTION_BEST if recipe.selection == "best" else SELECTION_FINAL
    out_dir = Path(ctx.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "logits.npy", logits.astype(np.float32), allow_pickle=False)
    np.save(out_dir / "labels.npy", labels.astype(np.int64), allow_pickle=False)
    report["artefacts"] = ["logits.npy", "labels.npy"]
    report["seconds"] = time.perf_counter() - start
    return report
