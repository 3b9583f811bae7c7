"""The shared contract of the evaluation protocols (``skelssl eval PROTOCOL``).

- :class:`LoadedEncoder`: a frozen encoder with its card (method, pretraining config, data) and stream.
- :class:`EvalContext`: what every protocol ``run_<name>(ctx, **kw) -> dict`` receives: the encoder(s), the
  evaluation store, split and parts, device, seed, epochs, output folder and the ``key=value`` options.
- :func:`load_eval_encoder`: a run directory or ``.safetensors`` file → :class:`LoadedEncoder` (or the same
  architecture freshly initialised from a seed: the random-init baseline; or :class:`RawInput`, the encoder's
  input clips flattened: the raw-input baseline).
- :func:`clip_config_for` / :func:`make_eval_dataset`: the encoder's preset view of the evaluation store
  (test view for features), with a layout mapping when the store's layout differs from the encoder's.
- :func:`encoder_features`: frozen features of a part, cached on disk
  (:func:`~skelssl.evaluation.features.cached_features`), pooled as option ``pool=mean|joint`` says
  (:mod:`skelssl.evaluation.pooling`).
- :func:`accuracy_report` and :func:`base_report`: the pieces of every report dict.

Report dict (every protocol returns one; :func:`skelssl.evaluation.report.write_report` writes it)::

    {"protocol", "encoder", "data", "settings", "seed", "skelssl", "top1", "top5", "per_class",
     "confusion", "rows": [...], "seconds", "selection": "final-epoch" | "best-epoch (on test; labelled)"}

Accuracies are fractions in [0, 1]. ``rows`` are per-setting results: ``{"k", "top1"}`` for kNN,
``{"seed", "top1", "top5", …}`` for semi, and for robustness ``{"mode", "setting", "missing": k or a body-part
name, "joints_missing", "top1", "top5"}`` (what :func:`skelssl.evaluation.plots.plot_accuracy_vs_missing` draws).
:func:`run_knn` (the ``knn`` protocol) lives here, beside the helpers it uses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.data import Dataset

from skelssl import __version__
from skelssl.data.clips import CLIP_PRESETS, ClipConfig, ClipDataset, clip_config_from, make_clip
from skelssl.data.store import SkeletonStore
from skelssl.errors import BadInputError, ConfigError
from skelssl.evaluation.pooling import POOLS, pooled_encoder
from skelssl.skeleton.layouts import Layout, get_layout, layout_mapping

__all__ = [
    "KNN_OPTIONS",
    "SELECTION_BEST",
    "SELECTION_FINAL",
    "EvalContext",
    "LoadedEncoder",
    "MappedClipDataset",
    "RawInput",
    "accuracy_report",
    "base_report",
    "check_options",
    "clip_config_for",
    "dataset_for",
    "encoder_features",
    "encoder_layout",
    "feature_cache_dir",
    "feature_pool",
    "load_eval_encoder",
    "make_eval_dataset",
    "option",
    "pool_setting",
    "refuse_raw_input",
    "run_knn",
]

SELECTION_FINAL = "final-epoch"
SELECTION_BEST = "best-epoch (on test; labelled)"


@dataclass(frozen=True)
class LoadedEncoder:
    """A frozen encoder for evaluation.

    ``module``: eval mode, on the context's device, ``forward(x (N, M, T, V, C)) -> (N, D)``. ``card``: the
    ``encoder.json`` card (``card["method"]``, ``card["pretrain"]`` = the resolved PretrainConfig dict,
    ``card["data"]["clips"]`` = clip preset name, ``card["data"]["layout"]``, ``card["encoder"]`` = spec).
    ``path``: the ``.safetensors`` file. ``stream``: ``joint`` | ``bone`` | ``motion``. ``random_init``: same
    architecture, re-initialised (the baseline rows). ``raw_input``: ``module`` is :class:`RawInput`, the
    encoder's input clips themselves (no network: what the probes get without any encoder).
    """

    module: nn.Module
    card: dict[str, Any]
    path: Path
    stream: str
    random_init: bool = False
    raw_input: bool = False

    @property
    def baseline(self) -> str | None:
        """``"random init"``, ``"raw input"`` or ``None`` (the encoder itself): how reports label it."""
        return "raw input" if self.raw_input else "random init" if self.random_init else None

    @property
    def method(self) -> str:
        return str(self.card.get("method", "unknown"))

    @property
    def layout(self) -> Layout:
        return encoder_layout(self.card)


@dataclass
class EvalContext:
    """What a protocol ``run_<name>(ctx, **kw)`` works on (see the module docstring)."""

    encoders: list[LoadedEncoder]
    store: SkeletonStore
    split: str
    train_part: str = "train"
    test_part: str = "test"
    device: str = "cpu"
    seed: int = 0
    epochs: int | None = None
    out_dir: Path = Path("eval")
    options: dict[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None  # one line per training epoch of long protocols (fine-tune)

    @property
    def encoder(self) -> LoadedEncoder:
        if not self.encoders:
            raise ConfigError("no encoder given")
        return self.encoders[0]


# -------------------------------------------------------------------------------------------- options


def option(ctx: EvalContext, key: str, default: Any, cast: type | Any = str) -> Any:
    """``ctx.options[key]`` converted by ``cast`` (``bool`` accepts 1/0/true/false/yes/no), else ``default``."""
    if key not in ctx.options:
        return default
    raw = ctx.options[key]
    try:
        if cast is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return cast(raw)
    except (TypeError, ValueError):
        name = getattr(cast, "__name__", str(cast))
        raise ConfigError(f"option {key}={raw!r}: expected {name}") from None


def check_options(ctx: EvalContext, known: set[str] | frozenset[str], protocol: str) -> None:
    """``ConfigError`` naming any option key the protocol does not know (with a close match)."""
    from skelssl.utils import closest

    for key in ctx.options:
        if key not in known:
            hint = closest(key, sorted(known))
            raise ConfigError(
                f"unknown option {key!r} for {protocol}"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + (f"; known: {', '.join(sorted(known))}" if known else "; it takes none")
            )


# -------------------------------------------------------------------------------------------- encoders


def encoder_layout(card: dict[str, Any]) -> Layout:
    """The joint layout the encoder was trained on (card data, else the encoder spec)."""
    name = (card.get("data") or {}).get("layout") or ((card.get("encoder") or {}).get("config") or {}).get("layout")
    if not name:
        raise ConfigError("the encoder card names no layout (data.layout)")
    return get_layout(str(name))


def _card_stream(card: dict[str, Any]) -> str:
    method = card.get("method")
    pre = card.get("pretrain") or {}
    for section in (pre.get(method) if isinstance(method, str) else None, card.get("config")):
        if isinstance(section, dict) and isinstance(section.get("stream"), str):
            return str(section["stream"])
    return "joint"


def _resolve_weights(path: str | Path, which: str) -> Path:
    p = Path(path)
    if p.is_dir():
        f = p / f"{which}.safetensors"
        if not f.is_file():
            others = sorted(q.stem for q in p.glob("*.safetensors"))
            extra = f" (it holds: {', '.join(others)}; choose with encoder=NAME)" if others else ""
            raise BadInputError(f, f"no {which}.safetensors in the run directory{extra}")
        return f
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if p.suffix != ".safetensors":
        raise BadInputError(p, "expected a run directory or an .safetensors encoder file")
    if not p.is_file():
        raise BadInputError(p, "encoder weights not found")
    return p


class RawInput(nn.Module):
    """The raw-input baseline's "encoder": a clip ``(N, M, T, V, C)`` → its coordinates ``(N, M·T·V·C)``.

    Evaluated on the encoder's own clip pipeline (and stream), it says what the linear and kNN probes reach
    with no network at all — the floor a learned representation has to clear."""

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(x, "n m t v c -> n (m t v c)")


def refuse_raw_input(encoder: LoadedEncoder, protocol: str) -> None:
    """``ConfigError`` for protocols that need a network (fine-tune, robustness) given the raw-input baseline."""
    if encoder.raw_input:
        raise ConfigError(
            f"{protocol} needs an encoder network; --raw-input is a baseline for linear, knn, semi (head=linear), "
            "ensemble and embed"
        )


def load_eval_encoder(
    path: str | Path,
    *,
    device: str = "cpu",
    random_init: bool = False,
    raw_input: bool = False,
    seed: int = 0,
    which: str = "encoder",
) -> LoadedEncoder:
    """Load a frozen encoder: ``path`` is a run directory (``path/<which>.safetensors``; ``which="student"``
    for Skeleton2vec's student) or an ``.safetensors`` file with its ``.json`` card beside it.

    ``random_init``: the card's architecture freshly initialised from ``seed`` (drawn inside
    ``torch.random.fork_rng`` so the global generator is left as it was); the weights file is still read
    and checked so a baseline names the encoder it stands for. ``raw_input``: :class:`RawInput` in place of
    the network, fed the card's clips and stream (not with ``random_init``).
    """
    from skelssl.engine.checkpoint import load_encoder
    from skelssl.models.registry import build_encoder

    if random_init and raw_input:
        raise ConfigError("random_init and raw_input are two different baselines: choose one")
    weights = _resolve_weights(path, which)
    state, card = load_encoder(weights)
    spec = card.get("encoder")
    if not isinstance(spec, dict):
        raise BadInputError(weights.with_suffix(".json"), "the encoder card has no 'encoder' spec to rebuild it")
    if raw_input:
        module: nn.Module = RawInput()
    elif random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            module = build_encoder(spec)
    else:
        module = build_encoder(spec)
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise BadInputError(
                weights,
                f"weights do not fit the card's {spec.get('kind')} encoder "
                f"(missing {list(missing)[:4]}, unexpected {list(unexpected)[:4]})",
            )
    module = module.to(device).eval()
    return LoadedEncoder(
        module=module,
        card=card,
        path=weights.resolve(),
        stream=_card_stream(card),
        random_init=random_init,
        raw_input=raw_input,
    )


# -------------------------------------------------------------------------------------------- datasets


def clip_config_for(encoder: LoadedEncoder, *, train: bool, seed: int) -> ClipConfig:
    """The clip pipeline the encoder was pretrained with (preset, persons, frames from the card), as the
    training view (``train=True``, seeded) or the deterministic test view."""
    pre_data = (encoder.card.get("pretrain") or {}).get("data") or {}
    preset = pre_data.get("clips") or (encoder.card.get("data") or {}).get("clips") or "pstl"
    if preset not in CLIP_PRESETS:
        raise ConfigError(f"the encoder card names an unknown clip preset {preset!r}; known: {', '.join(CLIP_PRESETS)}")
    persons, frames = pre_data.get("persons"), pre_data.get("frames")
    return clip_config_from(
        preset,
        train=train,
        seed=int(seed),
        persons=None if persons is None else int(persons),
        frames=None if frames is None else int(frames),
        normalize=pre_data.get("normalize"),
        align_spine=pre_data.get("align_spine"),
    )


class MappedClipDataset(ClipDataset):
    """A :class:`ClipDataset` of a store whose layout differs from the encoder's: every stored sequence's
    joints are re-indexed to ``target`` (``x[..., mapping, :]``) before the clip pipeline runs, so
    normalisation uses the target layout's joints. Items as ``ClipDataset``'s, with ``V`` = target joints."""

    def __init__(self, *, target: Layout, mapping: tuple[int, ...], **kwargs: Any) -> None:
        self._target = target
        self.mapping = tuple(int(i) for i in mapping)
        super().__init__(**kwargs)

    @property
    def layout(self) -> Layout:
        return self._target

    def clip(self, position: int, epoch: int | None = None) -> np.ndarray:
        n = len(self.indices)
        if not -n <= position < n:
            raise IndexError(f"item {position} out of range for a dataset of {n}")
        position %= n
        epoch = self.epoch if epoch is None else int(epoch)
        rng = None if self.config.deterministic else self.rng(epoch, position)
        x = self.store.keypoints(int(self.indices[position]))[:, :, list(self.mapping), :]
        return make_clip(x, self._target, self.config, rng)

    def cache_identity(self) -> dict[str, Any]:
        return {"target_layout": self._target.name, "mapping": list(self.mapping)}


def _mapping(store: SkeletonStore, encoder: LoadedEncoder) -> tuple[int, ...] | None:
    src, dst = store.layout, encoder.layout
    if src.name == dst.name:
        return None
    try:
        return layout_mapping(src, dst)
    except ConfigError as err:
        raise ConfigError(
            f"the store {store.path} has layout {src.name!r} but the encoder was trained on {dst.name!r}, "
            f"and the joints do not correspond: {err}"
        ) from None


def dataset_for(
    encoder: LoadedEncoder,
    store: SkeletonStore,
    *,
    train: bool = False,
    seed: int = 0,
    split: str | None = None,
    part: str | None = None,
    indices: np.ndarray | None = None,
) -> ClipDataset:
    """The encoder's preset view of ``store`` (one ``split``/``part``, explicit store ``indices``, or every
    sequence), mapped onto the encoder's layout when the store's differs (``ConfigError`` when joints do not
    correspond or the coordinate counts differ). ``train=False`` is the deterministic test view (seed 0)."""
    in_ch = ((encoder.card.get("encoder") or {}).get("config") or {}).get("in_channels")
    if in_ch is not None and int(in_ch) != store.channels:
        raise ConfigError(
            f"the encoder takes {in_ch}-D coordinates but the store {store.path} holds {store.channels}-D"
        )
    # the test view draws nothing: its seed is fixed at 0 so cached features do not depend on the seed
    config = clip_config_for(encoder, train=train, seed=seed if train else 0)
    where: dict[str, Any] = {}
    if indices is not None:
        where["indices"] = np.asarray(indices, dtype=np.int64)
    elif split is not None or part is not None:
        where.update(split=split, part=part)
    mapping = _mapping(store, encoder)
    if mapping is None:
        return ClipDataset(store=store, config=config, **where)
    return MappedClipDataset(store=store, config=config, target=encoder.layout, mapping=mapping, **where)


def make_eval_dataset(
    ctx: EvalContext,
    part: str,
    *,
    train: bool = False,
    indices: np.ndarray | None = None,
    encoder: LoadedEncoder | None = None,
) -> ClipDataset:
    """The encoder's preset view of ``ctx.store``'s ``ctx.split``/``part`` (or of explicit store ``indices``
    inside that part).

    ``train=False``: the deterministic test view (features); ``train=True``: the random training view
    (fine-tuning), seeded by ``ctx.seed``. A store of another layout is mapped onto the encoder's with
    :func:`~skelssl.skeleton.layouts.layout_mapping` (``ConfigError`` when joints do not correspond); the
    store's channel count must match the encoder's input.
    """
    enc = encoder if encoder is not None else ctx.encoder
    if ctx.split not in ctx.store.splits:
        known = ", ".join(ctx.store.splits) or "none"
        raise ConfigError(f"the store {ctx.store.path} has no split {ctx.split!r} (it has: {known}); pass --split")
    parts = ctx.store.split_parts(ctx.split)
    if part not in parts:
        raise ConfigError(f"split {ctx.split!r} of {ctx.store.path} has no part {part!r} (it has: {', '.join(parts)})")
    if indices is not None:
        allowed = ctx.store.split_indices(ctx.split, part)
        if not np.isin(np.asarray(indices, dtype=np.int64), allowed).all():
            raise ConfigError(f"indices outside {ctx.split}/{part} were given")
        return dataset_for(enc, ctx.store, train=train, seed=ctx.seed, indices=indices)
    return dataset_for(enc, ctx.store, train=train, seed=ctx.seed, split=ctx.split, part=part)


def feature_cache_dir(ctx: EvalContext) -> Path:
    """Where frozen features are cached: option ``cache=DIR``, else ``<out_dir>/../.feature-cache``
    (shared by the sibling output folders of one evaluation campaign)."""
    if "cache" in ctx.options:
        return Path(ctx.options["cache"])
    return Path(ctx.out_dir).resolve().parent / ".feature-cache"


def calibrate_random_init(ctx: EvalContext, encoder: LoadedEncoder, *, batch_size: int = 64) -> None:
    """A random-init baseline's BatchNorm statistics, estimated once on the (unlabelled) training part.

    Pretrained encoders bring the statistics they accumulated in pretraining; a random-init encoder of the
    same architecture gets them from the data too (:func:`~skelssl.evaluation.features.calibrate_batchnorm`),
    so the baseline compares weights, not uncalibrated normalisation. Recorded as ``bn_calibrated`` in the
    report's encoder entry. Encoders without BatchNorm (the transformers) are untouched.
    """
    from skelssl.evaluation.features import calibrate_batchnorm

    if not encoder.random_init or getattr(encoder.module, "bn_calibrated", None):
        return
    dataset = make_eval_dataset(ctx, ctx.train_part, train=False, encoder=encoder)
    layers = calibrate_batchnorm(
        encoder.module, dataset, batch_size=batch_size, device=ctx.device, stream=encoder.stream, layout=dataset.layout
    )
    if layers:
        encoder.module.bn_calibrated = f"{ctx.split}/{ctx.train_part}"


def feature_pool(ctx: EvalContext, encoder: LoadedEncoder | None = None) -> str:
    """The context's ``pool=`` option (``mean`` by default; ``ConfigError`` for an unknown one). The raw-input
    baseline has no token grid to pool: its feature is the whole clip flattened, whatever ``pool`` says."""
    pool = option(ctx, "pool", "mean")
    if pool not in POOLS:
        raise ConfigError(f"pool={pool!r}: expected one of {', '.join(POOLS)}")
    enc = encoder if encoder is not None else ctx.encoder
    return "mean" if enc.raw_input else pool


def pool_setting(ctx: EvalContext) -> str:
    """How a report names the features' pooling (``settings["pool"]``)."""
    if ctx.encoder.raw_input:
        return "none (raw input: the whole clip flattened)"
    pool = feature_pool(ctx)
    return "joint (per-joint mean over time and persons, V·D)" if pool == "joint" else "mean (over all tokens)"


def encoder_features(
    ctx: EvalContext,
    part: str,
    *,
    encoder: LoadedEncoder | None = None,
    batch_size: int = 64,
    train_view: Callable[[ClipDataset], Dataset] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frozen features of ``ctx.split``/``part`` (test view): ``(features float32 (N, D), labels (N,),
    store indices (N,))``, cached under :func:`feature_cache_dir` (one entry per encoder digest × store
    × part × stream × pooling; reused while the key matches). Option ``pool=mean|joint``
    (:mod:`skelssl.evaluation.pooling`): ``D`` is the encoder's feature width, or ``V·D`` per joint.

    ``train_view``: encode ``train_view(the part's training clip view)`` instead of the test view (the
    augmented draws of :mod:`skelssl.evaluation.augmented`; the wrapper's ``cache_identity()`` keys the cache).
    """
    from skelssl.evaluation.features import cached_features, state_dict_digest

    enc = encoder if encoder is not None else ctx.encoder
    pool = feature_pool(ctx, enc)
    calibrate_random_init(ctx, enc, batch_size=batch_size)
    dataset = make_eval_dataset(ctx, part, train=train_view is not None, encoder=enc)
    items: Dataset = dataset if train_view is None else train_view(dataset)
    view = dataset.config if train_view is None else json.dumps(items.cache_identity(), sort_keys=True)  # type: ignore[attr-defined]
    digest = state_dict_digest(enc.module)
    name = hashlib.sha256(
        f"{digest}|{Path(ctx.store.path).resolve()}|{ctx.split}|{part}|{enc.stream}|{view}|{pool}".encode()
    ).hexdigest()[:20]
    return cached_features(
        pooled_encoder(enc.module, pool),
        items,
        feature_cache_dir(ctx) / name,
        key_parts={"mapping": list(getattr(dataset, "mapping", ()) or ()), "pool": pool},
        batch_size=batch_size,
        device=ctx.device,
        stream=enc.stream,
        layout=dataset.layout,
    )


# -------------------------------------------------------------------------------------------- reports


def top_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """``(top-1, top-5)`` of ``logits`` ``(N, K)`` against ``labels`` ``(N,)`` (top-K when K < 5; ties to the
    smaller class index)."""
    order = np.argsort(-np.asarray(logits), axis=1, kind="stable")
    labels = np.asarray(labels).reshape(-1)
    top5 = float(np.mean((order[:, : min(5, order.shape[1])] == labels[:, None]).any(axis=1)))
    return float(np.mean(order[:, 0] == labels)), top5


def accuracy_report(logits: np.ndarray, labels: np.ndarray, *, class_names: list[str] | None = None) -> dict[str, Any]:
    """Top-1 / top-5 (fractions), per-class accuracy and the confusion matrix of ``logits`` ``(N, K)``
    against integer ``labels`` ``(N,)``.

    Returns ``{"top1", "top5", "per_class": {name: acc or None when the class has no sample},
    "confusion": K × K nested list (rows: true class, columns: predicted)}``. Top-5 with K < 5 is top-K
    (always 1.0). Ties in a row's scores go to the smaller class index.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must be (N, K) with N = {labels.shape[0]}, got {logits.shape}")
    n, k = logits.shape
    if n == 0:
        raise ConfigError("no test samples: accuracy is undefined")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}")
    top1, top5 = top_accuracy(logits, labels)
    pred = np.argsort(-logits, axis=1, kind="stable")[:, 0]
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    totals = confusion.sum(axis=1)
    per_class = {names[i]: (float(confusion[i, i] / totals[i]) if totals[i] else None) for i in range(k)}
    return {
        "top1": top1,
        "top5": top5,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def _encoder_entry(enc: LoadedEncoder) -> dict[str, Any]:
    from skelssl.evaluation.features import state_dict_digest

    pre_data = (enc.card.get("pretrain") or {}).get("data") or {}
    return {
        "path": str(enc.path),
        "method": enc.method,
        "kind": (enc.card.get("encoder") or {}).get("kind"),
        "stream": enc.stream,
        "sha256": enc.card.get("sha256"),
        "random_init": enc.random_init,
        "raw_input": enc.raw_input,
        "bn_calibrated": getattr(enc.module, "bn_calibrated", None),
        "digest": state_dict_digest(enc.module),
        "clips": pre_data.get("clips") or (enc.card.get("data") or {}).get("clips"),
        "layout": enc.layout.name,
        "pretrain_store": (enc.card.get("data") or {}).get("store"),
        "pretrain_source": (enc.card.get("data") or {}).get("source"),
    }


def base_report(ctx: EvalContext, protocol: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The common head of a report: protocol, encoder(s) (path, method, sha256 of the weights file, digest of
    the weights actually used, random_init), data (store path, source, layout, split, parts, counts,
    transfer flag), settings, seed and the skelssl version. ``encoder`` is one dict (the first encoder);
    ``encoders`` lists all of them."""
    store = ctx.store
    encoders = [_encoder_entry(e) for e in ctx.encoders]
    pre_store = encoders[0].get("pretrain_store") if encoders else None
    counts = {}
    for part in (ctx.train_part, ctx.test_part):
        try:
            counts[part] = len(store.split_indices(ctx.split, part))
        except Exception:  # the report head never fails on a bad part; the protocol will
            counts[part] = None
    pre_checksum = (ctx.encoders[0].card.get("data") or {}).get("input_checksum") if ctx.encoders else None
    same = pre_checksum is not None and pre_checksum == store.meta.get("input_checksum")
    data = {
        "store": str(Path(store.path).resolve()),
        "source": store.meta.get("source"),
        "layout": store.layout.name,
        "split": ctx.split,
        "train_part": ctx.train_part,
        "test_part": ctx.test_part,
        "counts": counts,
        "num_classes": store.num_classes,
        "transfer": bool(pre_store is not None and not same and str(Path(store.path).resolve()) != pre_store),
    }
    return {
        "protocol": protocol,
        "encoder": encoders[0] if encoders else None,
        "encoders": encoders,
        "data": data,
        "settings": dict(settings),
        "seed": ctx.seed,
        "device": ctx.device,
        "skelssl": __version__,
    }


# -------------------------------------------------------------------------------------------- kNN

#: ``key=value`` options ``run_knn`` understands.
KNN_OPTIONS = frozenset({"ks", "k", "tie_break", "cache", "pool"})


def run_knn(ctx: EvalContext) -> dict[str, Any]:
    """Cosine kNN (:func:`skelssl.evaluation.knn.knn_classify`) of frozen test-view features, train part →
    test part, for every k in ``ks`` (default 1, 5, 10, 20; k larger than the training set is skipped).

    ``rows``: one per k with its top-1. The report's ``top1``, ``per_class`` and ``confusion`` are those of
    ``k`` (option ``k=``, default 1 — the nearest neighbour, no vote); ``top5`` is ``None`` (a kNN vote gives
    no ranking beyond the winner). Options: ``ks=1,5,10,20``, ``k=1``, ``tie_break=similarity|label``,
    ``pool=mean|joint``."""
    import time

    from skelssl.evaluation.knn import knn_classify

    check_options(ctx, KNN_OPTIONS, "knn")
    start = time.perf_counter()
    try:
        ks = sorted({int(v) for v in option(ctx, "ks", "1,5,10,20").split(",") if v.strip()})
    except ValueError:
        raise ConfigError(f"ks={ctx.options['ks']!r}: expected comma-separated integers such as 1,5,10,20") from None
    chosen = option(ctx, "k", 1, int)
    tie_break = option(ctx, "tie_break", "similarity")
    train_f, train_y, _ = encoder_features(ctx, ctx.train_part)
    test_f, test_y, _ = encoder_features(ctx, ctx.test_part)
    usable = [k for k in ks if 1 <= k <= len(train_y)]
    if chosen not in usable:
        usable = sorted({*usable, chosen}) if 1 <= chosen <= len(train_y) else usable
    if chosen not in usable:
        raise ConfigError(f"k={chosen} is not usable with {len(train_y)} training samples")
    preds = knn_classify(train_f, train_y, test_f, ks=usable, tie_break=tie_break, device=ctx.device)
    k = ctx.store.num_classes
    rows = [{"k": kk, "top1": float(np.mean(preds[kk] == test_y))} for kk in usable]
    settings = {
        "metric": "cosine",
        "ks": usable,
        "reported_k": chosen,
        "vote": "majority",
        "tie_break": tie_break,
        "train_samples": len(train_y),
        "test_samples": len(test_y),
        "features": "frozen encoder, test-time view, cached",
        "pool": pool_setting(ctx),
        "feature_cache": str(feature_cache_dir(ctx)),
        "feature_dim": int(train_f.shape[1]),
    }
    report = base_report(ctx, "knn", settings)
    onehot = np.zeros((len(test_y), k), dtype=np.float32)
    onehot[np.arange(len(test_y)), preds[chosen]] = 1.0
    report.update(accuracy_report(onehot, test_y, class_names=ctx.store.class_names))
    report["top5"] = None
    report["rows"] = rows
    report["selection"] = "none (no training)"
    report["seconds"] = time.perf_counter() - start
    return report
