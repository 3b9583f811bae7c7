"""Learning-rate schedules against the reference formulas (PSTL per epoch, MAE/Skeleton2vec per step)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from skelssl.engine.optim import build_optimizer
from skelssl.engine.schedule import LRSchedule, pstl_epoch_lr, warmup_cosine


def _pstl_reference(epoch: int, lr_max: float, max_epoch: int = 150, warmup: int = 10) -> float:
    # PSTL procedure.py adjust_learning_rate, rewritten: linear e/warmup, then cosine to lr_min = 0
    if epoch < warmup:
        return lr_max * epoch / warmup
    return (lr_max - 0.0) * (1 + math.cos(math.pi * (epoch - warmup) / (max_epoch - warmup))) / 2


def test_pstl_key_points():
    base = 5e-3
    assert pstl_epoch_lr(0, base_lr=base) == 0.0  # the reference's first epoch makes no update
    assert pstl_epoch_lr(1, base_lr=base) == pytest.approx(5e-4)
    assert pstl_epoch_lr(9, base_lr=base) == pytest.approx(4.5e-3)
    assert pstl_epoch_lr(10, base_lr=base) == pytest.approx(5e-3)
    assert pstl_epoch_lr(80, base_lr=base) == pytest.approx(2.5e-3)
    assert pstl_epoch_lr(149, base_lr=base) == pytest.approx(0.5 * base * (1 + math.cos(math.pi * 139 / 140)))
    assert 0 < pstl_epoch_lr(149, base_lr=base) < 1e-6
    for e in range(150):
        assert pstl_epoch_lr(e, base_lr=base) == pytest.approx(_pstl_reference(e, base), abs=1e-15)


def test_pstl_first_epoch_option():
    base = 5e-3
    assert pstl_epoch_lr(0, base_lr=base, zero_first_epoch=False) == pytest.approx(5e-4)
    assert pstl_epoch_lr(9, base_lr=base, zero_first_epoch=False) == pytest.approx(5e-3)
    assert pstl_epoch_lr(10, base_lr=base, zero_first_epoch=False) == pytest.approx(5e-3)
    assert pstl_epoch_lr(150, base_lr=base) == 0.0
    assert pstl_epoch_lr(5, base_lr=1.0, warmup_epochs=0, epochs=10) == pytest.approx(0.5)


def _mae_reference(epoch: float, lr: float, min_lr: float, warmup_epochs: int, epochs: int) -> float:
    # MAE util/lr_sched.adjust_learning_rate at a fractional epoch, rewritten
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))


def test_warmup_cosine_key_points():
    kw = dict(base_lr=1e-3, min_lr=1e-5, warmup_steps=200, total_steps=1000)
    assert warmup_cosine(0, **kw) == 0.0
    assert warmup_cosine(100, **kw) == pytest.approx(5e-4)
    assert warmup_cosine(200, **kw) == pytest.approx(1e-3)  # end of warm-up: the peak
    assert warmup_cosine(600, **kw) == pytest.approx((1e-3 + 1e-5) / 2)
    assert warmup_cosine(1000, **kw) == pytest.approx(1e-5)
    assert warmup_cosine(5000, **kw) == pytest.approx(1e-5)
    assert warmup_cosine(999, **kw) > 1e-5
    steps_per_epoch = 10
    for step in range(0, 1000, 7):
        ref = _mae_reference(step / steps_per_epoch, 1e-3, 1e-5, 20, 100)
        assert warmup_cosine(step, **kw) == pytest.approx(ref, rel=1e-12, abs=1e-18)


def test_no_warmup_and_validation():
    assert warmup_cosine(0, base_lr=0.1, warmup_steps=0, total_steps=10) == pytest.approx(0.1)
    assert warmup_cosine(10, base_lr=0.1, warmup_steps=0, total_steps=10) == 0.0
    with pytest.raises(ValueError):
        warmup_cosine(-1, base_lr=0.1, warmup_steps=0, total_steps=10)
    with pytest.raises(ValueError):
        warmup_cosine(0, base_lr=0.1, warmup_steps=11, total_steps=10)
    with pytest.raises(ValueError):
        LRSchedule.pstl(base_lr=0.1, steps_per_epoch=0)


@given(
    step=st.integers(0, 10**6),
    warmup=st.integers(0, 1000),
    extra=st.integers(1, 10**5),
    base=st.floats(1e-6, 1.0),
    frac=st.floats(0.0, 1.0),
)
def test_warmup_cosine_bounds(step, warmup, extra, base, frac):
    min_lr = base * frac
    lr = warmup_cosine(step, base_lr=base, min_lr=min_lr, warmup_steps=warmup, total_steps=warmup + extra)
    if step < warmup:
        assert 0.0 <= lr <= base
    else:
        assert min_lr - 1e-15 <= lr <= base + 1e-15
    later = warmup_cosine(step + 1, base_lr=base, min_lr=min_lr, warmup_steps=warmup, total_steps=warmup + extra)
    assert (later >= lr - 1e-15) if step < warmup else (later <= lr + 1e-15)


def test_schedule_object_sets_scaled_group_lrs():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    opt = build_optimizer(
        model,
        name="adamw",
        lr=1.0,
        weight_decay=0.05,
        layer_decay=0.5,
        layer_index=lambda name: int(name.split(".")[0]) + 1,
        num_layers=2,
    )
    sched = LRSchedule.cosine(base_lr=1e-3, min_lr=0.0, warmup_steps=10, total_steps=100)
    lr = sched.apply(opt, 5)
    assert lr == pytest.approx(5e-4) and sched(5) == lr
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert scales == [0.5, 1.0]
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(lr * g["lr_scale"])


def test_pstl_schedule_is_per_epoch_function_of_step():
    sched = LRSchedule.pstl(base_lr=5e-3, steps_per_epoch=4, warmup_epochs=10, epochs=150)
    assert [sched(s) for s in range(4)] == [0.0] * 4
    assert sched(4) == pytest.approx(5e-4) and sched(7) == sched(4)
    assert sched(40) == pytest.approx(5e-3)
    assert sched(149 * 4 + 3) == pytest.approx(pstl_epoch_lr(149, base_lr=5e-3))
    assert LRSchedule.constant(base_lr=0.3)(123) == 0.3
