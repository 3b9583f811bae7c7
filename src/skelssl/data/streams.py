"""Input streams: joint coordinates, bones and motion, for any layout.

All functions take ``(N, M, T, V, C)`` batches or ``(M, T, V, C)`` items (any leading dimensions before
``T, V, C``) and return a new tensor of the same shape; they are pure and work on any device and dtype.

- ``joint``: the coordinates themselves.
- ``bone``: ``x[v] − x[parent(v)]`` with the layout's parents; the centre joint is its own parent, so its
  bone is zero (PSTL's ``(21, 21)`` pair on NTU).
- ``motion``: ``x[t+1] − x[t]``, the last frame zero (PSTL ``get_stream``, MAMP/Skeleton2vec ``ToMotion``).

PSTL computes the stream before augmenting (``get_stream`` then crop/shear/rotate/flip).
"""

from __future__ import annotations

from typing import Literal

import torch

from skelssl.errors import ConfigError
from skelssl.skeleton.layouts import Layout, get_layout
from skelssl.utils import closest

__all__ = ["STREAMS", "Stream", "bone", "motion", "to_stream"]

Stream = Literal["joint", "bone", "motion"]
STREAMS: tuple[str, ...] = ("joint", "bone", "motion")


def _check(x: torch.Tensor) -> None:
    if x.ndim not in (4, 5):
        raise ValueError(f"expected (N, M, T, V, C) or (M, T, V, C), got shape {tuple(x.shape)}")


def bone(x: torch.Tensor, layout: Layout | str) -> torch.Tensor:
    """Bone vectors ``x[..., v, :] − x[..., parent(v), :]``; zero at the layout's centre joint."""
    _check(x)
    layout = get_layout(layout) if isinstance(layout, str) else layout
    if x.shape[-2] != layout.num_joints:
        raise ValueError(f"layout {layout.name!r} has {layout.num_joints} joints, the input has {x.shape[-2]}")
    parents = torch.tensor(layout.parents, dtype=torch.int64, device=x.device)
    return x - x.index_select(-2, parents)


def motion(x: torch.Tensor) -> torch.Tensor:
    """Frame differences ``x[t+1] − x[t]`` along T (the third-last axis); the last frame is zero."""
    _check(x)
    return torch.cat([x[..., 1:, :, :] - x[..., :-1, :, :], torch.zeros_like(x[..., :1, :, :])], dim=-3)


def to_stream(x: torch.Tensor, stream: Stream | str, layout: Layout | str) -> torch.Tensor:
    """``x`` as the ``joint`` (returned as is), ``bone`` or ``motion`` stream; same shape as ``x``."""
    if stream == "joint":
        _check(x)
        return x
    if stream == "bone":
        return bone(x, layout)
    if stream == "motion":
        return motion(x)
    hint = closest(str(stream), STREAMS)
    raise ConfigError(
        f"unknown stream {stream!r}" + (f" (did you mean {hint!r}?)" if hint else "") + f"; known: {', '.join(STREAMS)}"
    )
