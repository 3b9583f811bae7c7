"""Optimiser parameter groups (weight decay, layer-wise lr decay) and fused/foreach kernels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skelssl.engine.optim import build_optimizer, param_groups, transformer_layer_index


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)
        self.gamma = nn.Parameter(torch.ones(d))  # LayerScale: 1-D, no decay


class Net(nn.Module):
    """Conv + BN stem, position embedding, two transformer-like blocks, final norm and a head."""

    def __init__(self, d: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, d, kernel_size=(3, 1))
        self.bn = nn.BatchNorm2d(d)
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, d))
        self.blocks = nn.ModuleList(Block(d) for _ in range(depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 4, bias=False)
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


DECAYED = {"stem.weight", "pos_embed", "blocks.0.fc.weight", "blocks.1.fc.weight", "head.weight"}
ALL = {n for n, p in Net().named_parameters() if p.requires_grad}


def test_reference_pstl_decays_everything():
    model = Net()
    groups = param_groups(model, weight_decay=1e-5, no_decay_norm_bias=False)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-5 and groups[0]["lr_scale"] == 1.0
    assert _names(model, groups[0]) == ALL  # BN and biases too, and never the frozen parameter


def test_no_decay_on_norms_biases_and_named_embeddings():
    model = Net()
    groups = {g["name"]: g for g in param_groups(model, weight_decay=0.05, no_decay_norm_bias=True)}
    assert _names(model, groups["decay"]) == DECAYED
    assert groups["decay"]["weight_decay"] == 0.05
    no_decay = _names(model, groups["no_decay"])
    assert no_decay == ALL - DECAYED
    assert {"stem.bias", "bn.weight", "bn.bias", "blocks.0.norm.weight", "blocks.1.gamma", "norm.bias"} <= no_decay
    assert groups["no_decay"]["weight_decay"] == 0.0
    groups = {
        g["name"]: g
        for g in param_groups(model, weight_decay=0.05, no_decay_norm_bias=True, no_decay_names=("pos_embed",))
    }
    assert "pos_embed" in _names(model, groups["no_decay"])
    # names match the whole name or its trailing components, so a wrapped model still matches
    wrapped = nn.Sequential(model)
    groups = {g["name"]: g for g in param_groups(wrapped, weight_decay=0.05, no_decay_names=("pos_embed",))}
    assert {n for n in _names(wrapped, groups["no_decay"])} == {"0.pos_embed"}


def test_layer_decay_scales_follow_mae():
    model = Net(depth=2)
    index = transformer_layer_index(2)
    names = ("pos_embed", "stem.weight", "blocks.0.fc.weight", "blocks.1.gamma", "norm.weight", "head.weight")
    assert [index(n) for n in names] == [0, 3, 1, 2, 3, 3]
    index = transformer_layer_index(2, embeddings=("pos_embed", "stem", "bn"))
    groups = param_groups(
        model, weight_decay=0.05, no_decay_norm_bias=True, layer_decay=0.75, layer_index=index, num_layers=3
    )
    by_param = {}
    for g in groups:
        for n in _names(model, g):
            by_param[n] = (g["lr_scale"], g["weight_decay"])
    assert set(by_param) == ALL
    assert by_param["pos_embed"] == (pytest.approx(0.75**3), 0.05)
    assert by_param["stem.bias"] == (pytest.approx(0.75**3), 0.0)
    assert by_param["blocks.0.fc.weight"] == (pytest.approx(0.75**2), 0.05)
    assert by_param["blocks.1.norm.bias"] == (pytest.approx(0.75), 0.0)
    assert by_param["head.weight"] == (1.0, 0.05)
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names))
    with pytest.raises(ValueError, match="layer_index"):
        param_groups(model, weight_decay=0.0, layer_decay=0.5)
    with pytest.raises(ValueError, match="outside"):
        param_groups(model, weight_decay=0.0, layer_decay=0.5, layer_index=lambda n: 7, num_layers=3)


def test_optimizer_kinds_and_hyper_parameters():
    model = Net()
    adam = build_optimizer(model, name="adam", lr=5e-3, weight_decay=1e-5)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["weight_decay"] == 1e-5
    assert adam.param_groups[0]["betas"] == (0.9, 0.999)
    adamw = build_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), no_decay_norm_bias=True)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.9, 0.95)
    assert sorted(g["weight_decay"] for g in adamw.param_groups) == [0.0, 0.05]
    sgd = build_optimizer(model.parameters(), name="sgd", lr=0.1, momentum=0.9)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    scaled = build_optimizer(
        model, name="adamw", lr=1e-3, layer_decay=0.5, layer_index=transformer_layer_index(2), num_layers=3
    )
    assert all(g["lr"] == pytest.approx(1e-3 * g["lr_scale"]) for g in scaled.param_groups)
    assert len({g["lr_scale"] for g in scaled.param_groups}) == 4
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, name="lamb", lr=0.1)  # type: ignore[arg-type]


def _train(name: str, fused, steps: int = 4) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = Net()
    opt = build_optimizer(
        model,
        name=name,
        lr=1e-2,
        weight_decay=0.01,
        no_decay_norm_bias=True,
        no_decay_names=("pos_embed",),
        fused=fused,
    )
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def _has_fused_cpu(name: str) -> bool:
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    try:
        cls([nn.Parameter(torch.zeros(1))], lr=0.1, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fast_kernels_match_the_plain_loop(name):
    plain = _train(name, fused=False)
    auto = _train(name, fused="auto")
    for a, b in zip(plain, auto, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert any((a != p).any() for a, p in zip(plain, [p.detach() for p in Net().parameters()], strict=True))
    opt = build_optimizer(Net(), name=name, lr=0.1, fused="auto")
    assert opt.defaults.get("fused") is (True if _has_fused_cpu(name) else None)
    if _has_fused_cpu(name):
        for a, b in zip(plain, _train(name, fused=True), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_auto_falls_back_when_fused_is_unavailable():
    complex_param = [("x", nn.Parameter(torch.ones(2, dtype=torch.complex64)))]  # fused kernels: real floats only
    opt = build_optimizer(complex_param, name="adam", lr=0.1, fused="auto")
    assert not opt.defaults.get("fused")
    complex_param[0][1].grad = torch.ones(2, dtype=torch.complex64)
    opt.step()
    assert complex_param[0][1].real.lt(1).all()


def test_state_dict_round_trip_and_group_order_is_stable():
    a = build_optimizer(Net(), name="adamw", lr=1e-3, weight_decay=0.05, no_decay_norm_bias=True)
    b = build_optimizer(Net(), name="adamw", lr=1e-3, weight_decay=0.05, no_decay_norm_bias=True)
    assert [g["name"] for g in a.param_groups] == [g["name"] for g in b.param_groups]
    b.load_state_dict(a.state_dict())
    assert [g["lr_scale"] for g in b.param_groups] == [g["lr_scale"] for g in a.param_groups]
