"""Pretraining presets, shipped with the package: ``<method>/<dataset>.yaml``."""

from __future__ import annotations

from pathlib import Path

from skelssl.errors import ConfigError
from skelssl.utils import closest

ROOT = Path(__file__).resolve().parent


def presets() -> list[str]:
    """Names of the shipped presets, e.g. ``pstl/nw-ucla``."""
    return sorted(str(p.relative_to(ROOT).with_suffix("")) for p in ROOT.glob("*/*.yaml"))


def resolve(name_or_path: str) -> Path:
    """A YAML file path, or the shipped preset of that name (``pstl/ntu60-xsub``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = ROOT / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if preset.is_file():
        return preset
    hint = closest(name_or_path, presets())
    raise ConfigError(
        f"{name_or_path}: no such config file or preset"
        + (f" (did you mean {hint!r}?)" if hint else "")
        + f"; presets: {', '.join(presets())}"
    )
