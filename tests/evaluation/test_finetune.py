"""Fine-tuning: recipes (layer decay, weight decay, label smoothing, schedules) and short runs on real NW-UCLA."""

from __future__ import annotations

import dataclasses
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.engine.checkpoint import save_encoder
from skelssl.errors import ConfigError
from skelssl.evaluation import finetune as ft
from skelssl.evaluation.protocols import SELECTION_BEST, SELECTION_FINAL, EvalContext, load_eval_encoder
from skelssl.evaluation.report import check_report
from skelssl.models.registry import encoder_spec
from skelssl.models.stgcn import STGCN
from skelssl.models.transformer import SkeletonTransformer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: several threads only add contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    """60 real NW-UCLA sequences (all 10 classes; x-view: 40 train, 20 test)."""
    src = tmp_path_factory.mktemp("ft") / "all_sqe"
    src.mkdir()
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a*_s0[12]_e00_*.json")):
        shutil.copy(f, src / f.name)
    out = src.parent / "store"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    return SkeletonStore.open(out)


def _export(module: torch.nn.Module, path: Path, *, method: str, clips: str, stream: str = "joint") -> Path:
    card = {
        "method": method,
        "encoder": encoder_spec(module),
        "pretrain": {"method": method, "data": {"clips": clips, "persons": 1}, method: {"stream": stream}},
        "data": {"layout": "kinect20", "clips": clips},
    }
    weights, _ = save_encoder(path, module, card)
    return weights


@pytest.fixture(scope="module")
def stgcn_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = STGCN(layout="kinect20", hidden_channels=4, hidden_dim=16)
    return _export(module, tmp_path_factory.mktemp("enc") / "stgcn", method="pstl", clips="pstl")


def tiny_transformer() -> SkeletonTransformer:
    return SkeletonTransformer.skeleton2vec(
        layout="kinect20", frames=12, segment=3, dim=16, depth=3, heads=2, generator=torch.Generator().manual_seed(0)
    )


@pytest.fixture(scope="module")
def transformer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    module = tiny_transformer()
    path = tmp_path_factory.mktemp("enc") / "s2v"
    card = {
        "method": "skeleton2vec",
        "encoder": encoder_spec(module),
        "pretrain": {"method": "skeleton2vec", "data": {"clips": "skeleton2vec", "persons": 1, "frames": 12}},
        "data": {"layout": "kinect20", "clips": "skeleton2vec"},
    }
    return save_encoder(path, module, card)[0]


def _ctx(
    store: SkeletonStore, weights: Path, out: Path, *, epochs: int = 2, seed: int = 0, **options: Any
) -> EvalContext:
    return EvalContext(
        encoders=[load_eval_encoder(weights)],
        store=store,
        split="xview",
        epochs=epochs,
        seed=seed,
        out_dir=out,
        options={k: str(v) for k, v in options.items()},
    )


# ------------------------------------------------------------------------------------------------ recipes


def _expected_layer(name: str, depth: int) -> int:
    if name.startswith("head."):
        return depth + 1
    rest = name.removeprefix("encoder.")
    if rest.split(".")[0] in ("patch_embed", "temporal_pos", "spatial_pos"):
        return 0
    if rest.startswith("blocks."):
        return int(rest.split(".")[1]) + 1
    assert rest.startswith("norm."), name
    return depth


def test_transformer_recipe_layer_decay_and_weight_decay_per_parameter(store, transformer_file, tmp_path) -> None:
    ctx = _ctx(store, transformer_file, tmp_path)
    recipe = ft.recipe_from_context(ctx)
    assert (recipe.lr, recipe.layer_decay, recipe.weight_decay, recipe.min_lr) == (3e-4, 0.8, 0.05, 1e-5)
    assert (recipe.drop_path, recipe.label_smoothing, recipe.batch_size, recipe.warmup_epochs) == (0.3, 0.1, 24, 5)
    assert recipe.head == "large" and recipe.optimizer == "adamw" and recipe.epochs == 2
    model = ft.build_classifier(ctx.encoder, 10, recipe, generator=torch.Generator().manual_seed(0))
    opt = ft.build_finetune_optimizer(model, recipe)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    depth = 3
    named = list(model.named_parameters())
    assert len(group_of) == len(named)
    layers = set()
    for name, p in named:
        g = group_of[id(p)]
        i = _expected_layer(name, depth)
        layers.add(i)
        assert g["lr_scale"] == pytest.approx(0.8 ** (depth + 1 - i)), name
        assert g["lr"] == pytest.approx(3e-4 * 0.8 ** (depth + 1 - i)), name
        no_decay = p.ndim == 1 or name.endswith(("temporal_pos", "spatial_pos"))
        assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert layers == set(range(depth + 2))
    # the drop-path rate of the recipe reaches the last block; the context's encoder is untouched
    assert model.encoder.blocks[-1].drop_path.p == pytest.approx(0.3)
    assert ctx.encoder.module.config()["drop_path"] == 0.0


def test_options_override_the_recipe(store, transformer_file, stgcn_file, tmp_path) -> None:
    ctx = _ctx(store, transformer_file, tmp_path, lr=1e-3, layer_decay=1, drop_path=0.1, label_smoothing=0)
    recipe = ft.recipe_from_context(ctx)
    assert (recipe.lr, recipe.layer_decay, recipe.drop_path, recipe.label_smoothing) == (1e-3, None, 0.1, 0.0)
    model = ft.build_classifier(ctx.encoder, 10, recipe, generator=torch.Generator().manual_seed(0))
    assert {g["lr_scale"] for g in ft.build_finetune_optimizer(model, recipe).param_groups} == {1.0}
    with pytest.raises(ConfigError, match="unknown option"):
        ft.recipe_from_context(_ctx(store, stgcn_file, tmp_path, layerdecay=0.5))
    with pytest.raises(ConfigError, match="drop_path"):
        ft.recipe_from_context(_ctx(store, stgcn_file, tmp_path, drop_path=0.1))
    with pytest.raises(ConfigError, match="large head"):
        ft.recipe_from_context(_ctx(store, stgcn_file, tmp_path, head="large"))


def test_stgcn_recipe_is_pstl(store, stgcn_file, tmp_path) -> None:
    recipe = ft.recipe_from_context(_ctx(store, stgcn_file, tmp_path, epochs=150))
    assert (recipe.head, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.batch_size) == (
        "linear",
        "adam",
        5e-3,
        0.0,
        128,
    )
    assert recipe.augment is None and recipe.label_smoothing == 0.0 and recipe.layer_decay is None
    # CosineAnnealingLR(T_max = epochs) stepped per epoch: constant within an epoch
    sched = ft.finetune_schedule(recipe, steps_per_epoch=8)
    for epoch in (0, 1, 75, 149):
        expected = 5e-3 * 0.5 * (1 + math.cos(math.pi * epoch / 150))
        assert sched(epoch * 8) == pytest.approx(expected) and sched(epoch * 8 + 7) == pytest.approx(expected)


def test_transformer_schedule_warmup_then_cosine_to_min_lr(store, transformer_file, tmp_path) -> None:
    recipe = ft.recipe_from_context(_ctx(store, transformer_file, tmp_path, epochs=100))
    sched = ft.finetune_schedule(recipe, steps_per_epoch=10)
    assert sched(0) == 0.0 and sched(25) == pytest.approx(3e-4 * 25 / 50)
    assert sched(50) == pytest.approx(3e-4)
    mid = 50 + (1000 - 50) // 2
    assert sched(mid) == pytest.approx(1e-5 + (3e-4 - 1e-5) * 0.5 * (1 + math.cos(math.pi * (mid - 50) / 950)))
    assert sched(1000) == pytest.approx(1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_smoothing_value_in_the_loss(smoothing: float) -> None:
    recipe = ft.FinetuneRecipe(
        kind="stgcn", head="linear", optimizer="adam", lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999),
        layer_decay=None, schedule="cosine-epoch", warmup_epochs=0, min_lr=0.0, epochs=1, batch_size=4,
        drop_path=None, label_smoothing=smoothing, augment=None,
    )  # fmt: skip
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    loss = ft.make_criterion(recipe)(logits, labels)
    logp = logits.log_softmax(dim=1).numpy()
    expected = np.mean(
        [-(1 - smoothing) * logp[i, y] - smoothing * logp[i].mean() for i, y in enumerate(labels.tolist())]
    )
    assert float(loss) == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------ runs


def test_stgcn_finetune_lowers_training_loss_on_real_data(store, stgcn_file, tmp_path, monkeypatch) -> None:
    used: list[float] = []
    make = ft.make_criterion
    monkeypatch.setattr(ft, "make_criterion", lambda r: used.append(r.label_smoothing) or make(r))
    before = {k: v.clone() for k, v in load_eval_encoder(stgcn_file).module.state_dict().items()}
    ctx = _ctx(store, stgcn_file, tmp_path / "a", epochs=6, batch_size=8, lr=0.01)
    report = ft.run_finetune(ctx)
    assert used == [0.0]
    losses = [h["loss"] for h in report["history"]]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert report["protocol"] == "finetune" and report["selection"] == SELECTION_FINAL
    check_report(report)
    assert report["settings"]["train_sequences"] == 40 and report["settings"]["steps_per_epoch"] == 5
    logits = np.load(tmp_path / "a" / "logits.npy")
    labels = np.load(tmp_path / "a" / "labels.npy")
    assert logits.shape == (20, 10) and labels.shape == (20,)
    assert report["top1"] == pytest.approx(float(np.mean(logits.argmax(1) == labels)))
    # the frozen encoder in the context was not trained
    for k, v in ctx.encoder.module.state_dict().items():
        torch.testing.assert_close(v, before[k])
    # seeded and deterministic: same seed → identical logits; another seed → different ones
    ft.run_finetune(_ctx(store, stgcn_file, tmp_path / "b", epochs=6, batch_size=8, lr=0.01))
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "logits.npy"), logits)
    ft.run_finetune(_ctx(store, stgcn_file, tmp_path / "c", epochs=6, batch_size=8, lr=0.01, seed=1))
    assert not np.array_equal(np.load(tmp_path / "c" / "logits.npy"), logits)


def test_transformer_finetune_lowers_training_loss_on_real_data(store, transformer_file, tmp_path, monkeypatch):
    used: list[float] = []
    make = ft.make_criterion
    monkeypatch.setattr(ft, "make_criterion", lambda r: used.append(r.label_smoothing) or make(r))
    ctx = _ctx(store, transformer_file, tmp_path, epochs=6, batch_size=8, lr=3e-3, warmup_epochs=1)
    report = ft.run_finetune(ctx)
    assert used == [0.1]
    losses = [h["loss"] for h in report["history"]]
    assert losses[-1] < losses[0]
    assert report["settings"]["augment"] == "skeleton2vec" and report["settings"]["clips"]["view"] == "uniform"


@pytest.mark.filterwarnings("ignore::skelssl.evaluation.finetune.FewStepsWarning")
def test_train_indices_restrict_the_data_seen(store, stgcn_file, tmp_path, monkeypatch) -> None:
    seen: list[int] = []
    make = ft.make_loader

    def spy(dataset, **kw):
        seen.extend(int(i) for i in dataset.indices)
        return make(dataset, **kw)

    monkeypatch.setattr(ft, "make_loader", spy)
    train = store.split_indices("xview", "train")
    subset = np.sort(train[[0, 5, 11, 17, 23, 31]])
    report = ft.run_finetune(_ctx(store, stgcn_file, tmp_path, epochs=1), train_indices=subset)
    assert sorted(seen) == subset.tolist()
    assert report["settings"]["train_sequences"] == 6 and report["settings"]["train_subset"] is True
    assert report["settings"]["batch_size_used"] == 6 and report["settings"]["steps_per_epoch"] == 1
    test = store.split_indices("xview", "test")
    with pytest.raises(ConfigError, match="indices"):
        ft.run_finetune(_ctx(store, stgcn_file, tmp_path, epochs=1), train_indices=test[:4])


def test_few_steps_per_epoch_warn_unless_the_batch_is_given(store, stgcn_file, tmp_path) -> None:
    # PSTL's recipe batch (128) on 40 clips: one batch of 40, one step per epoch -> warned, with a remedy
    with pytest.warns(ft.FewStepsWarning, match=r"40 training sequences in batches of 40 give 1 optimizer") as got:
        report = ft.run_finetune(_ctx(store, stgcn_file, tmp_path / "a", epochs=1))
    assert len(got) == 1 and "batch_size=4" in str(got[0].message)
    assert report["settings"]["steps_per_epoch"] == 1
    # the user chose the batch: no warning, even with few steps
    with warnings.catch_warnings():
        warnings.simplefilter("error", ft.FewStepsWarning)
        ft.run_finetune(_ctx(store, stgcn_file, tmp_path / "b", epochs=1, batch_size=20))


@pytest.mark.parametrize(
    ("n_train", "batch", "steps", "warned"),
    [(1020, 128, 7, True), (102, 102, 1, True), (1020, 16, 63, False), (40000, 128, 312, False), (20, 20, 1, True)],
)
def test_few_steps_message_threshold(n_train: int, batch: int, steps: int, warned: bool) -> None:
    message = ft.few_steps_message(n_train=n_train, batch_size=batch, steps_per_epoch=steps, epochs=150)
    assert (message is not None) == warned
    if message is not None:
        suggested = int(message.split("batch_size=", 1)[1].split()[0])
        assert 2 <= suggested <= 16 and n_train // suggested >= min(ft.MIN_STEPS_PER_EPOCH, n_train // 2)
        assert f"{steps * 150} in all" in message


def test_best_epoch_selection_is_labelled(store, stgcn_file, tmp_path) -> None:
    lines: list[str] = []
    ctx = _ctx(store, stgcn_file, tmp_path, epochs=3, batch_size=8, selection="best")
    report = ft.run_finetune(dataclasses.replace(ctx, progress=lines.append))
    assert report["selection"] == SELECTION_BEST
    tops = [h["test_top1"] for h in report["history"]]
    assert len(tops) == 3 and report["top1"] == pytest.approx(max(tops))
    assert report["selected_epoch"] == 1 + int(np.argmax(tops))
    # one progress line per epoch, with the numbers of the history
    assert [line.split(":")[0] for line in lines] == [f"fine-tune epoch {e}/3" for e in (1, 2, 3)]
    for line, h in zip(lines, report["history"], strict=True):
        assert f"loss {h['loss']:.4f}" in line and f"test {100 * h['test_top1']:.1f} %" in line
