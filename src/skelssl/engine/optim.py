"""Optimisers with weight-decay groups, layer-wise lr decay and fused/foreach kernels.

:func:`build_optimizer` makes Adam, AdamW or SGD over a model (or named parameters) with:

- **weight-decay groups** (``no_decay_norm_bias=True``): parameters with ``ndim <= 1`` (biases, norm
  scales/shifts, LayerScale gammas) and names ending in ``bias`` get no weight decay, as timm's
  ``param_groups_weight_decay`` does; so do parameters named in ``no_decay_names`` (e.g. position
  embeddings), matched as the whole name or its trailing dotted components. With
  ``no_decay_norm_bias=False`` every parameter is decayed — PSTL's reference (Adam ``weight_decay``,
  i.e. L2, on everything including BN).
- **layer-wise lr decay** (``layer_decay``): every group carries ``lr_scale =
  layer_decay ** (num_layers − layer_index(name))`` (MAE/BEiT ``param_groups_lrd``; with
  :func:`transformer_layer_index`, embeddings are layer 0, block ``i`` is layer ``i + 1`` and everything
  else — final norm, head — is layer ``num_layers = depth + 1``). :class:`~skelssl.engine.schedule.LRSchedule`
  multiplies the scheduled lr by it.
- **fast kernels**: ``fused="auto"`` uses the fused implementation when torch has one for the
  parameters' device (CUDA, and CPU for Adam/AdamW/SGD in recent torch — several times faster than the
  per-tensor loop), else the foreach one where it exists, else the plain loop.

Groups are created in the order their first parameter appears in ``named_parameters()``, so the same
model always gives the same optimiser state layout (needed for resuming).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["build_optimizer", "param_groups", "transformer_layer_index"]

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def _named(params_or_model: nn.Module | Iterable[Any]) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs of trainable parameters, shared parameters once."""
    if isinstance(params_or_model, nn.Module):
        items = list(params_or_model.named_parameters())
    else:
        items = []
        for i, item in enumerate(params_or_model):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                items.append(item)
            elif isinstance(item, torch.Tensor):
                items.append((f"param{i}", item))
            else:
                raise TypeError(f"expected a module, parameters or (name, parameter) pairs; got {type(item).__name__}")
    seen: set[int] = set()
    out = []
    for name, p in items:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        out.append((name, p))
    return out


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == pat or name.endswith("." + pat) for pat in patterns)


def param_groups(
    params_or_model: nn.Module | Iterable[Any],
    *,
    weight_decay: float,
    no_decay_norm_bias: bool = False,
    no_decay_names: Sequence[str] = (),
    layer_decay: float | None = None,
    layer_index: Callable[[str], int] | None = None,
    num_layers: int | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups: ``{"params", "weight_decay", "lr_scale", "name"}`` dicts (see module docstring).

    ``no_decay_names`` entries match a parameter whose name equals the entry or ends with ``"." + entry``
    (``"pos_embed"`` matches ``"encoder.pos_embed"``).
    """
    if layer_decay is not None:
        if layer_index is None or num_layers is None:
            raise ValueError("layer_decay needs layer_index (name -> layer id) and num_layers")
        if not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    groups: dict[str, dict[str, Any]] = {}
    for name, p in _named(params_or_model):
        no_decay = _matches(name, no_decay_names) or (
            no_decay_norm_bias and (p.ndim <= 1 or name == "bias" or name.endswith(".bias"))
        )
        layer = None
        if layer_decay is not None:
            layer = layer_index(name)  # type: ignore[misc]
            if not 0 <= layer <= num_layers:  # type: ignore[operator]
                raise ValueError(f"layer_index({name!r}) = {layer} is outside [0, {num_layers}]")
        key = ("no_decay" if no_decay else "decay") + ("" if layer is None else f"_layer{layer}")
        if key not in groups:
            scale = 1.0 if layer is None else float(layer_decay ** (num_layers - layer))  # type: ignore[operator]
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else float(weight_decay),
                "lr_scale": scale,
                "name": key,
            }
        groups[key]["params"].append(p)
    if not groups:
        raise ValueError("no trainable parameters to optimise")
    return list(groups.values())


def transformer_layer_index(
    num_blocks: int,
    *,
    blocks: str = "blocks",
    embeddings: Sequence[str] = ("pos_embed", "temp_embed", "joint_embed", "patch_embed", "cls_token", "embed"),
) -> Callable[[str], int]:
    """MAE-style layer ids for a transformer with ``num_blocks`` blocks (use ``num_layers=num_blocks + 1``).

    A name with the components ``<blocks>.<i>`` is layer ``i + 1``; one with a component in
    ``embeddings`` (or starting with one of them followed by ``.``) is layer 0; anything else (final norm,
    head) is layer ``num_blocks + 1``.
    """
    block_rx = re.compile(rf"(?:^|\.){re.escape(blocks)}\.(\d+)(?:\.|$)")
    embeds = tuple(embeddings)

    def index(name: str) -> int:
        m = block_rx.search(name)
        if m:
            i = int(m.group(1))
            if i >= num_blocks:
                raise ValueError(f"{name!r}: block {i} but the model has {num_blocks} blocks")
            return i + 1
        if any(part in embeds for part in name.split(".")):
            return 0
        return num_blocks + 1

    return index


def _fused_supported(params: list[torch.Tensor]) -> bool:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - very old torch
        return False
    devices = set(_get_fused_kernels_supported_devices())
    return all(p.device.type in devices and p.is_floating_point() for p in params)


def build_optimizer(
    params_or_model: nn.Module | Iterable[Any],
    *,
    name: Literal["adam", "adamw", "sgd"] = "adam",
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.9,
    nesterov: bool = False,
    no_decay_norm_bias: bool = False,
    no_decay_names: Sequence[str] = (),
    layer_decay: float | None = None,
    layer_index: Callable[[str], int] | None = None,
    num_layers: int | None = None,
    fused: bool | Literal["auto"] = "auto",
) -> torch.optim.Optimizer:
    """An optimiser over ``params_or_model`` (see the module docstring).

    ``lr`` is the base lr; each group starts at ``lr · lr_scale`` (a schedule rewrites it every step).
    ``fused``: ``"auto"`` picks fused > foreach > plain by availability; ``True`` demands the fused
    kernel (``RuntimeError`` if torch has none for these parameters); ``False`` uses the plain loop.
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(_OPTIMIZERS)}")
    if lr < 0 or weight_decay < 0:
        raise ValueError(f"lr and weight_decay must be >= 0, got {lr}, {weight_decay}")
    groups = param_groups(
        params_or_model,
        weight_decay=weight_decay,
        no_decay_norm_bias=no_decay_norm_bias,
        no_decay_names=no_decay_names,
        layer_decay=layer_decay,
        layer_index=layer_index,
        num_layers=num_layers,
    )
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    cls = _OPTIMIZERS[name]
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
    if name == "sgd":
        kwargs.update(momentum=momentum, nesterov=nesterov)
    else:
        kwargs.update(betas=tuple(betas), eps=eps)
    all_params = [p for g in groups for p in g["params"]]

    def make(**impl: Any) -> torch.optim.Optimizer:
        # the constructor writes its defaults into the group dicts, so every attempt gets fresh copies
        return cls([{**g, "params": list(g["params"])} for g in groups], **kwargs, **impl)

    if fused is True:
        return make(fused=True)
    if fused is False:
        return make(foreach=False)
    if fused != "auto":
        raise ValueError(f"fused must be True, False or 'auto', got {fused!r}")
    if _fused_supported(all_params):
        try:
            return make(fused=True)
        except (RuntimeError, ValueError, TypeError):
            pass
    if all(p.device.type != "cpu" for p in all_params):
        try:
            return make(foreach=True)
        except (RuntimeError, ValueError, TypeError):
            pass
    return make()
