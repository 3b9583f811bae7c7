"""Downstream evaluation of frozen encoders: feature extraction (with an on-disk cache), cosine kNN, the
protocols of ``skelssl eval`` (knn, linear, semi, finetune, robustness, ensemble), reports and plots, and
``skelssl embed``.

Every protocol is ``run_<name>(ctx: EvalContext, **kw) -> dict`` (see :mod:`skelssl.evaluation.protocols`);
``run_finetune``, ``run_robustness`` and ``run_ensemble`` are imported on first use.
"""

from __future__ import annotations

from typing import Any

from skelssl.evaluation.embed import Embeddings, embed, write_embeddings
from skelssl.evaluation.features import (
    cache_key,
    cached_features,
    dataset_identity,
    extract_features,
    load_cached_features,
    state_dict_digest,
)
from skelssl.evaluation.knn import knn_accuracy, knn_classify, knn_monitor, nearest_neighbors
from skelssl.evaluation.linear import LinearRecipe, LinearResult, fit_linear, run_linear
from skelssl.evaluation.protocols import (
    EvalContext,
    LoadedEncoder,
    accuracy_report,
    base_report,
    clip_config_for,
    encoder_features,
    load_eval_encoder,
    make_eval_dataset,
    run_knn,
)
from skelssl.evaluation.report import summary_line, write_report
from skelssl.evaluation.semi import balanced_subset, run_semi

_LAZY = {
    "run_finetune": "skelssl.evaluation.finetune",
    "run_robustness": "skelssl.evaluation.robustness",
    "run_ensemble": "skelssl.evaluation.ensemble",
}

__all__ = [
    "Embeddings",
    "EvalContext",
    "LinearRecipe",
    "LinearResult",
    "LoadedEncoder",
    "accuracy_report",
    "balanced_subset",
    "base_report",
    "cache_key",
    "cached_features",
    "clip_config_for",
    "dataset_identity",
    "embed",
    "encoder_features",
    "extract_features",
    "fit_linear",
    "knn_accuracy",
    "knn_classify",
    "knn_monitor",
    "load_cached_features",
    "load_eval_encoder",
    "make_eval_dataset",
    "nearest_neighbors",
    "run_ensemble",
    "run_finetune",
    "run_knn",
    "run_linear",
    "run_robustness",
    "run_semi",
    "state_dict_digest",
    "summary_line",
    "write_embeddings",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skelssl.evaluation' has no attribute {name!r}")
