"""Encoders by name, so an exported encoder can be rebuilt from its JSON card."""

from __future__ import annotations

from typing import Any

from torch import nn

from skelssl.errors import ConfigError
from skelssl.models.stgcn import STGCN
from skelssl.models.transformer import SkeletonTransformer

ENCODERS: dict[str, type[nn.Module]] = {"stgcn": STGCN, "transformer": SkeletonTransformer}


def encoder_spec(encoder: nn.Module) -> dict[str, Any]:
    """``{"kind": …, "config": {…}}``: what :func:`build_encoder` needs to rebuild ``encoder``."""
    for kind, cls in ENCODERS.items():
        if isinstance(encoder, cls):
            return {"kind": kind, "config": encoder.config()}
    raise ConfigError(f"no encoder kind is registered for {type(encoder).__name__}")


def build_encoder(spec: dict[str, Any]) -> nn.Module:
    """An encoder from :func:`encoder_spec`'s output (weights freshly initialised)."""
    kind = spec.get("kind")
    if kind not in ENCODERS:
        raise ConfigError(f"unknown encoder kind {kind!r}; known: {', '.join(ENCODERS)}")
    return ENCODERS[kind](**spec.get("config", {}))
