"""Training clips from a store: normalise → temporal view → persons, per sample and seeded.

:class:`ClipConfig` names one of the reference pipelines (presets :meth:`ClipConfig.pstl`,
:meth:`ClipConfig.skeleton2vec`, :meth:`ClipConfig.mamp`) or any mix of a normalisation and a view;
:func:`make_clip` applies it to one ``(T, M, V, C)`` sequence; :class:`ClipDataset` serves clips of a
:class:`~skelssl.data.store.SkeletonStore` subset as ``{"x": (M, T, V, C) float32, "label", "index"}``.

Randomness: every random draw for an item is a pure function of ``(seed, epoch, position)`` through
``np.random.default_rng([seed, epoch, position])`` (``position`` = the item's place in the dataset), so
clips do not depend on the number of DataLoader workers or on which worker loads them, differ between
epochs and items, and are reproducible. The epoch reaches the dataset either as part of the key
(``dataset[(epoch, position)]``, what :func:`skelssl.data.loader.make_loader`'s sampler yields — robust
with persistent workers) or through :meth:`ClipDataset.set_epoch` for plain integer keys. Test-time views
(``train=False``) draw nothing: resize and the centred crop are fixed, uniform sampling uses PySKL's
seed-255 test mode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from skelssl.data.normalize import (
    YRotation,
    aimclr_valid_length,
    aimclr_y_rotation,
    center_per_frame,
    mamp_translate,
    nonzero_frame_count,
    pyskl_prenormalize,
)
from skelssl.data.store import SkeletonStore
from skelssl.data.temporal import PYSKL_TEST_SEED, crop_resize, fit_persons, resize_cv2, uniform_indices
from skelssl.errors import ConfigError
from skelssl.skeleton.layouts import Layout

Normalization = Literal["none", "aimclr", "pyskl", "mamp"]
View = Literal["resize", "crop_resize", "uniform"]

_DEFAULT_FRAMES: dict[str, int] = {"resize": 50, "crop_resize": 120, "uniform": 90}
_DEFAULT_P_INTERVAL: dict[str, tuple[float, float]] = {
    "resize": (1.0, 1.0),
    "crop_resize": (0.5, 1.0),
    "uniform": (1.0, 1.0),
}


@dataclass(frozen=True)
class ClipConfig:
    """How one stored sequence becomes a clip.

    - ``normalize``: ``"none"``; ``"aimclr"`` (per-frame ``spine_top`` centring, first valid frames, and a
      per-frame y-rotation after the view, see ``y_rotation``); ``"pyskl"`` (PreNormalize3D, optional
      ``align_spine``); ``"mamp"`` (first-frame ``spine_mid`` translation, first non-zero-sum frames).
    - ``view``: ``"resize"`` (cv2-linear to ``frames``), ``"crop_resize"`` (MAMP: crop ratio in
      ``p_interval``, at least ``min_crop`` frames, torch-bilinear to ``frames``; test: centred
      ``test_crop``), ``"uniform"`` (PySKL uniform sampling; test: seed ``test_seed``).
    - ``frames``: output length (default by view: 50 / 120 / 90); ``persons``: M, zero-padded or truncated.
    - ``p_interval``: ``(low, high)`` crop or window ratio (default by view: ``(0.5, 1)`` for
      ``crop_resize``, ``(1, 1)`` for ``uniform``; unused by ``resize``).
    - ``y_rotation``: AimCLR rotation mode, ``"reference"`` (AimCLR's code: per-person sign), ``"exact"``
      (every frame aligned) or ``"off"``.
    - ``train``: random training view when true, the deterministic test view when false.
    - ``seed``: base of every random draw (with the epoch and the item's position).
    """

    normalize: Normalization = "none"
    view: View = "resize"
    frames: int | None = None
    persons: int = 2
    p_interval: tuple[float, float] | None = None
    test_crop: float = 0.95
    min_crop: int = 64
    align_spine: bool = False
    y_rotation: YRotation = "reference"
    test_seed: int = PYSKL_TEST_SEED
    train: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("normalize", self.normalize, Normalization)
        _choice("view", self.view, View)
        _choice("y_rotation", self.y_rotation, YRotation)
        if self.frames is None:
            object.__setattr__(self, "frames", _DEFAULT_FRAMES[self.view])
        if self.p_interval is None:
            object.__setattr__(self, "p_interval", _DEFAULT_P_INTERVAL[self.view])
        p = tuple(float(v) for v in self.p_interval)  # type: ignore[union-attr]
        if len(p) == 1:
            p = (p[0], p[0])
        object.__setattr__(self, "p_interval", p)
        if not (len(p) == 2 and 0 < p[0] <= p[1] <= 1):
            raise ConfigError(f"p_interval must be (low, high) with 0 < low <= high <= 1, got {self.p_interval}")
        for name in ("frames", "persons", "min_crop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.align_spine and self.normalize != "pyskl":
            raise ConfigError(f"align_spine is part of the pyskl normalisation; normalize is {self.normalize!r}")
        if not 0 < self.test_crop <= 1:
            raise ConfigError(f"test_crop must be in (0, 1], got {self.test_crop}")
        for name in ("seed", "test_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")

    # -- presets ------------------------------------------------------------------------------------
    @classmethod
    def pstl(cls, **overrides: Any) -> ClipConfig:
        """PSTL / AimCLR "frame50": per-frame centring, resize to 50, per-frame y-rotation, M = 2."""
        return cls(**{"normalize": "aimclr", "view": "resize", "frames": 50, "persons": 2, **overrides})

    @classmethod
    def skeleton2vec(cls, **overrides: Any) -> ClipConfig:
        """Skeleton2vec / PySKL: PreNormalize3D (no spine alignment), uniform sampling of 90 frames, M = 2.

        Skeleton2vec's NTU-60 x-view configs use ``align_spine=True``.
        """
        base = {"normalize": "pyskl", "view": "uniform", "frames": 90, "persons": 2, "p_interval": (1.0, 1.0)}
        return cls(**{**base, **overrides})

    @classmethod
    def mamp(cls, **overrides: Any) -> ClipConfig:
        """MAMP: first-frame spine translation, crop-resize to 120 (train ratio 0.5–1, min 64; test 95 %), M = 2."""
        base = {"normalize": "mamp", "view": "crop_resize", "frames": 120, "persons": 2, "p_interval": (0.5, 1.0)}
        return cls(**{**base, "test_crop": 0.95, "min_crop": 64, **overrides})

    def replace(self, **changes: Any) -> ClipConfig:
        """A copy with ``changes`` applied (``config.replace(train=False)`` is the test view)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["p_interval"] = list(self.p_interval)  # type: ignore[arg-type]
        return out

    @property
    def deterministic(self) -> bool:
        """True when clips draw no random numbers (AimCLR resize, or any test view): nothing to seed."""
        return not self.train or self.view == "resize"


CLIP_PRESETS: dict[str, Any] = {
    "pstl": ClipConfig.pstl,
    "skeleton2vec": ClipConfig.skeleton2vec,
    "mamp": ClipConfig.mamp,
}


def clip_config_from(
    clips: str,
    *,
    train: bool,
    seed: int,
    persons: int | None = None,
    frames: int | None = None,
    normalize: str | None = None,
    align_spine: bool | None = None,
) -> ClipConfig:
    """The clip pipeline a pretraining config names: preset ``clips`` with the given overrides (``None`` keeps
    the preset's value). One function for pretraining, its kNN monitor and every evaluation protocol, so an
    encoder is always evaluated on the view it was trained on."""
    if clips not in CLIP_PRESETS:
        raise ConfigError(f"unknown clip preset {clips!r}; known: {', '.join(CLIP_PRESETS)}")
    overrides: dict[str, Any] = {"train": train, "seed": int(seed)}
    given = {"persons": persons, "frames": frames, "normalize": normalize, "align_spine": align_spine}
    overrides.update({name: value for name, value in given.items() if value is not None})
    return CLIP_PRESETS[clips](**overrides)


def _choice(name: str, value: object, options: Any) -> None:
    allowed = get_args(options)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def check_config(config: ClipConfig, layout: Layout, channels: int) -> None:
    """``ConfigError`` if ``config`` cannot run on this layout / coordinate count (rotations need C = 3)."""
    if channels != 3:
        if config.normalize == "aimclr" and config.y_rotation != "off":
            raise ConfigError(
                f"the AimCLR y-rotation needs 3-D coordinates but layout {layout.name!r} data has C = {channels}; "
                "set y_rotation='off'"
            )
        if config.normalize == "pyskl" and config.align_spine:
            raise ConfigError(
                f"align_spine needs 3-D coordinates but layout {layout.name!r} data has C = {channels}; "
                "set align_spine=False"
            )


def make_clip(x: np.ndarray, layout: Layout, config: ClipConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    """One clip from one sequence: ``(T, M_in, V, C)`` → ``(frames, persons, V, C)`` float32 numpy.

    Order as in the reference pipelines: normalisation (which may keep only the valid frames), the
    temporal view, the AimCLR rotation (after the resize, as AimCLR does it), then persons. ``rng`` is
    needed only for training views other than ``resize``.
    """
    x = np.asarray(x, dtype=np.float32)
    if config.normalize == "aimclr":
        valid = aimclr_valid_length(x, layout)
        x = center_per_frame(x, layout)[:valid]
    elif config.normalize == "pyskl":
        x = pyskl_prenormalize(x, layout, align_spine=config.align_spine)
    elif config.normalize == "mamp":
        x = mamp_translate(x, layout)
        x = x[: nonzero_frame_count(x)]
    frames = int(config.frames)  # type: ignore[arg-type]
    if x.shape[0] == 0:  # nothing valid: an all-zero clip
        clip = np.zeros((frames, *x.shape[1:]), dtype=np.float32)
    elif config.view == "resize":
        clip = resize_cv2(x, frames)
    elif config.view == "crop_resize":
        clip = crop_resize(
            x,
            frames,
            train=config.train,
            rng=rng,
            p_interval=config.p_interval,  # type: ignore[arg-type]
            min_crop=config.min_crop,
            test_crop=config.test_crop,
        )
    else:
        idx = uniform_indices(
            x.shape[0],
            frames,
            train=config.train,
            rng=rng,
            p_interval=config.p_interval,  # type: ignore[arg-type]
            test_seed=config.test_seed,
        )
        clip = x[idx]
    if config.normalize == "aimclr" and config.y_rotation != "off":
        clip = aimclr_y_rotation(clip, layout, mode=config.y_rotation)
    return np.ascontiguousarray(fit_persons(clip, config.persons), dtype=np.float32)


class ClipDataset(Dataset):
    """Clips of a store's sequences (one split part, or explicit indices), per :class:`ClipConfig`.

    ``dataset[i]`` or ``dataset[(epoch, i)]`` → ``{"x": float32 tensor (M, T, V, C), "label": int,
    "index": int}`` where ``index`` is the sequence's index in the store; default collation gives
    ``x`` as ``(N, M, T, V, C)``. Random draws come from ``np.random.default_rng([seed, epoch, i])``.
    """

    def __init__(
        self,
        *,
        store: SkeletonStore | str | Path,
        config: ClipConfig | None = None,
        split: str | None = None,
        part: str | None = None,
        indices: Any = None,
        epoch: int = 0,
    ) -> None:
        self.store = store if isinstance(store, SkeletonStore) else SkeletonStore.open(store)
        self.config = config if config is not None else ClipConfig()
        if indices is not None:
            if split is not None or part is not None:
                raise ConfigError("give either indices or split/part, not both")
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
            n = len(self.store)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ConfigError(f"indices must lie in 0..{n - 1} for the store at {self.store.path}")
        elif split is not None or part is not None:
            if split is None or part is None:
                raise ConfigError("a split needs both split (e.g. 'xsub') and part (e.g. 'train')")
            idx = self.store.split_indices(split, part).astype(np.int64)
        else:
            idx = np.arange(len(self.store), dtype=np.int64)
        self.indices = idx
        check_config(self.config, self.layout, self.store.channels)
        self.epoch = int(epoch)

    @property
    def layout(self) -> Layout:
        """The store's joint layout (looked up by name: layouts are not pickled to workers)."""
        return self.store.layout

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        """Labels of the dataset's sequences, in dataset order."""
        return self.store.labels[self.indices].astype(np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain integer keys (the loader's sampler passes it in the key instead)."""
        self.epoch = int(epoch)

    def rng(self, epoch: int, position: int) -> np.random.Generator:
        """The generator of item ``position`` in ``epoch``: ``default_rng([seed, epoch, position])``."""
        return np.random.default_rng([self.config.seed, epoch, position])

    def clip(self, position: int, epoch: int | None = None) -> np.ndarray:
        """Item ``position``'s clip as numpy ``(frames, persons, V, C)`` (time first, as the store)."""
        n = len(self.indices)
        if not -n <= position < n:
            raise IndexError(f"item {position} out of range for a dataset of {n}")
        position %= n
        epoch = self.epoch if epoch is None else int(epoch)
        rng = None if self.config.deterministic else self.rng(epoch, position)
        x = self.store.keypoints(int(self.indices[position]))
        return make_clip(x, self.layout, self.config, rng)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            epoch, position = int(key[0]), int(key[1])
        else:
            epoch, position = self.epoch, int(key)
        clip = self.clip(position, epoch)
        index = int(self.indices[position % len(self.indices)])
        return {
            "x": torch.from_numpy(rearrange(clip, "t m v c -> m t v c").copy()),
            "label": int(self.store.labels[index]),
            "index": index,
        }
