"""The EMA teacher: schedule, update rule over parameters and buffers, no autograd, DDP-wrapped students."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from skelssl.engine.ema import EMATeacher, ema_decay


def _student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3))


def _perturb(student: nn.Module, seed: int) -> None:
    """One 'training step': new weights and BN statistics (num_batches_tracked goes up)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
    student.train()
    student(torch.randn(8, 4, generator=gen))


def test_schedule_values():
    kw = dict(decay_start=0.9999, decay_end=1.0, anneal_steps=1000)
    assert ema_decay(0, **kw) == pytest.approx(0.9999, abs=1e-15)
    assert ema_decay(500, **kw) == pytest.approx(0.99995, abs=1e-15)
    assert ema_decay(1000, **kw) == 1.0
    assert ema_decay(2000, **kw) == 1.0
    teacher = EMATeacher(_student(), decay_start=0.5, decay_end=0.9, anneal_steps=4)
    assert [teacher.decay(n) for n in (0, 2, 4, 8)] == pytest.approx([0.5, 0.7, 0.9, 0.9])
    # the reference's form, tau_e - (tau_e - tau_0) * (1 - n / N), at every step
    for n in range(4):
        assert teacher.decay(n) == pytest.approx(0.9 - (0.9 - 0.5) * (1 - n / 4))
    assert EMATeacher(_student(), decay_start=0.3, decay_end=0.6, anneal_steps=0).decay(0) == 0.6
    with pytest.raises(ValueError):
        ema_decay(-1, **kw)
    with pytest.raises(ValueError):
        EMATeacher(_student(), decay_start=1.5, anneal_steps=1)


def test_copy_is_frozen_and_in_eval_mode():
    student = _student()
    teacher = EMATeacher(student, anneal_steps=10)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert not teacher.module.training
    holder = nn.ModuleDict({"teacher": teacher})
    holder.train()
    assert not teacher.module.training  # stays in eval inside a module put in train mode
    with torch.no_grad():
        student[0].weight.add_(1.0)
    assert not torch.equal(teacher.module[0].weight, student[0].weight)  # a deep copy


def test_decay_zero_copies_the_student_exactly():
    student = _student()
    teacher = EMATeacher(student, decay_start=0.0, decay_end=0.0, anneal_steps=10)
    _perturb(student, 1)
    assert teacher.update(student, 0) == 0.0
    for (k, t), (_, s) in zip(teacher.module.state_dict().items(), student.state_dict().items(), strict=True):
        assert torch.equal(t, s), k
    assert int(teacher.module[1].num_batches_tracked) == 1


def test_decay_one_freezes_the_teacher():
    student = _student()
    teacher = EMATeacher(student, decay_start=0.5, decay_end=1.0, anneal_steps=3)
    frozen = copy.deepcopy(teacher.module.state_dict())
    _perturb(student, 2)
    assert teacher.update(student, 3) == 1.0
    assert teacher.update(student, 100) == 1.0
    for k, t in teacher.module.state_dict().items():
        assert torch.equal(t, frozen[k]), k


def test_update_rule_on_parameters_and_buffers():
    student = _student()
    teacher = EMATeacher(student, decay_start=0.9, decay_end=1.0, anneal_steps=10)
    before = copy.deepcopy(teacher.module.state_dict())
    for step in range(3):
        _perturb(student, 10 + step)
        tau = teacher.update(student, step)
        assert tau == pytest.approx(1.0 - 0.1 * (1 - step / 10))
        src = student.state_dict()
        for k, t in teacher.module.state_dict().items():
            if t.is_floating_point():
                expected = before[k] * tau + src[k] * (1 - tau)  # the reference's mul_ then add_
                assert torch.allclose(t, expected, rtol=0, atol=1e-6), k
            else:
                assert torch.equal(t, src[k]), k  # integer buffers are copied
        before = copy.deepcopy(teacher.module.state_dict())
    # BN running statistics (buffers) moved, and differ from the student's
    assert not torch.equal(teacher.module[1].running_mean, torch.zeros(6))
    assert not torch.equal(teacher.module[1].running_mean, student[1].running_mean)


def test_teacher_forward_builds_no_graph():
    student = _student()
    teacher = EMATeacher(student, anneal_steps=10)
    x = torch.randn(5, 4, requires_grad=True)
    out = teacher(x)
    assert out.requires_grad is False and out.grad_fn is None
    assert torch.equal(teacher(x), out)  # eval mode: no dropout, running BN statistics
    y = student(x)
    (y.sum() + out.sum()).backward()  # gradients reach the student only
    assert all(p.grad is None for p in teacher.parameters())


def test_state_dict_round_trip():
    student = _student()
    teacher = EMATeacher(student, decay_start=0.5, anneal_steps=10)
    _perturb(student, 3)
    teacher.update(student, 0)
    other = EMATeacher(_student(), decay_start=0.5, anneal_steps=10)
    other.load_state_dict(teacher.state_dict())
    for k, t in teacher.state_dict().items():
        assert torch.equal(t, other.state_dict()[k]), k
    assert all(k.startswith("module.") for k in teacher.state_dict())


def _ddp_wrapped_student(rank: int, world: int, out_dir: Path) -> dict[str, torch.Tensor]:
    student = _student()
    ddp = nn.parallel.DistributedDataParallel(student)
    teacher = EMATeacher(ddp, decay_start=0.0, decay_end=0.0, anneal_steps=1)
    assert not isinstance(teacher.module, nn.parallel.DistributedDataParallel)
    assert list(teacher.module.state_dict()) == list(student.state_dict())  # no "module." prefix
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ddp(torch.randn(8, 4)).square().mean().backward()
    opt.step()
    teacher.update(ddp, 0)
    for k, t in teacher.module.state_dict().items():
        assert torch.equal(t, student.state_dict()[k]), k
    return {"updated": torch.tensor(True)}


def test_ddp_wrapped_student(spawn_gloo):
    """In a spawned one-rank gloo group (not this process: a hung collective must not stall the suite)."""
    assert spawn_gloo(_ddp_wrapped_student, 1) == [{"updated": torch.tensor(True)}]
