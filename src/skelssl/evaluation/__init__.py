"""Downstream evaluation of frozen encoders: feature extraction (with an on-disk cache) and cosine kNN."""

from __future__ import annotations

from skelssl.evaluation.features import (
    cache_key,
    cached_features,
    dataset_identity,
    extract_features,
    load_cached_features,
    state_dict_digest,
)
from skelssl.evaluation.knn import knn_accuracy, knn_classify, knn_monitor, nearest_neighbors

__all__ = [
    "cache_key",
    "cached_features",
    "dataset_identity",
    "extract_features",
    "knn_accuracy",
    "knn_classify",
    "knn_monitor",
    "load_cached_features",
    "nearest_neighbors",
    "state_dict_digest",
]
