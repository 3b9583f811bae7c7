"""Cosine kNN against a brute-force numpy reference, ties included; errors; chunking; devices of inputs.

The hypothesis data are built so that every similarity is exact in float32 and float64 alike: vectors
with 1, 4 or 16 entries of ±1 (the rest 0) times a power of two normalise to entries ±1, ±1/2 or ±1/4,
so their dot products are short sums of powers of two. Equal similarities are then exactly equal in the
implementation and in the reference, and the tie rules are tested as written, not up to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.errors import ConfigError
from skelssl.evaluation import knn_accuracy, knn_classify, nearest_neighbors

# ------------------------------------------------------------------------------------------- reference


def ref_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    for i, row in enumerate(x):
        norm = np.sqrt(np.sum(row * row))
        if norm > 0:
            out[i] = row / norm
    return out


def ref_neighbours(train: np.ndarray, test: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each test row the k training indices of highest cosine similarity, ties by index (stable argsort)."""
    sims = ref_normalize(test) @ ref_normalize(train).T
    idx = np.stack([np.argsort(-row, kind="stable")[:k] for row in sims]) if len(test) else np.empty((0, k), int)
    return np.take_along_axis(sims, idx, axis=1), idx


def ref_vote(sims: np.ndarray, labels: np.ndarray, temperature: float | None, tie_break: str) -> list[int]:
    """Candidate winners for one test row (one label, or several where the reference is at a rounding tie)."""
    if temperature is not None:
        score: dict[int, float] = {}
        for s, y in zip(sims, labels, strict=True):
            score[int(y)] = score.get(int(y), 0.0) + float(np.exp(s / temperature))
        best = max(score.values())
        near = sorted(y for y, v in score.items() if v >= best * (1 - 1e-9))
        return near
    count: dict[int, int] = {}
    summed: dict[int, float] = {}
    for s, y in zip(sims, labels, strict=True):
        count[int(y)] = count.get(int(y), 0) + 1
        summed[int(y)] = summed.get(int(y), 0.0) + float(s)
    top = max(count.values())
    tied = sorted(y for y, c in count.items() if c == top)
    if tie_break == "similarity":
        best_sum = max(summed[y] for y in tied)
        tied = [y for y in tied if summed[y] == best_sum]
    return [min(tied)]


def ref_knn(train, labels, test, k, temperature=None, tie_break="similarity") -> list[list[int]]:
    sims, idx = ref_neighbours(train, test, k)
    return [ref_vote(s, labels[i], temperature, tie_break) for s, i in zip(sims, idx, strict=True)]


# ------------------------------------------------------------------------------------------ strategies


@st.composite
def dyadic_vectors(draw: st.DrawFn, n: int, dim: int) -> np.ndarray:
    sizes = [s for s in (1, 4, 16) if s <= dim]
    out = np.zeros((n, dim), dtype=np.float32)
    for i in range(n):
        if draw(st.integers(0, 19)) == 0:
            continue  # an all-zero vector now and then: similarity 0 to everything
        nnz = draw(st.sampled_from(sizes))
        where = draw(st.permutations(range(dim)))[:nnz]
        signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=nnz, max_size=nnz))
        scale = 2.0 ** draw(st.integers(-3, 3))
        out[i, where] = np.asarray(signs, dtype=np.float32) * scale
    return out


@st.composite
def knn_problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    dim = draw(st.sampled_from([1, 2, 3, 4, 6, 16]))
    n_train = draw(st.integers(1, 24))
    n_test = draw(st.integers(1, 8))
    train = draw(dyadic_vectors(n_train, dim))
    test = draw(dyadic_vectors(n_test, dim))
    labels = np.asarray(draw(st.lists(st.integers(-2, 3), min_size=n_train, max_size=n_train)), dtype=np.int64)
    ks = draw(st.lists(st.integers(1, n_train), min_size=1, max_size=4))
    return train, labels, test, ks


# -------------------------------------------------------------------------------------- against the ref


def test_dyadic_similarities_are_exact() -> None:
    """The premise of the hypothesis tests: float32 torch similarities equal the float64 reference exactly."""
    rng = np.random.default_rng(0)
    x = np.zeros((200, 16), dtype=np.float32)
    for row in x:
        nnz = rng.choice([1, 4, 16])
        row[rng.permutation(16)[:nnz]] = rng.choice([-1.0, 1.0], size=nnz) * 2.0 ** rng.integers(-3, 4)
    sims, _ = nearest_neighbors(x, x, 200)
    ref, _ = ref_neighbours(x, x, 200)
    assert np.array_equal(sims.astype(np.float64), ref)


@settings(max_examples=150, deadline=None)
@given(problem=knn_problems(), tie_break=st.sampled_from(["similarity", "label"]))
def test_majority_vote_matches_reference(problem, tie_break: str) -> None:
    train, labels, test, ks = problem
    preds = knn_classify(train, labels, test, ks=ks, tie_break=tie_break)
    assert sorted(preds) == sorted(set(ks))
    for k in set(ks):
        expected = [c[0] for c in ref_knn(train, labels, test, k, tie_break=tie_break)]
        assert preds[k].dtype == labels.dtype
        assert preds[k].tolist() == expected, f"k={k}"


@settings(max_examples=100, deadline=None)
@given(problem=knn_problems())
def test_neighbours_match_stable_argsort(problem) -> None:
    train, _, test, ks = problem
    k = max(ks)
    sims, idx = nearest_neighbors(train, test, k, chunk=3)
    ref_sims, ref_idx = ref_neighbours(train, test, k)
    assert np.array_equal(idx, ref_idx)
    assert np.array_equal(sims.astype(np.float64), ref_sims)


@settings(max_examples=100, deadline=None)
@given(problem=knn_problems(), temperature=st.sampled_from([0.07, 0.1, 0.5, 1.0]))
def test_temperature_vote_matches_reference(problem, temperature: float) -> None:
    train, labels, test, ks = problem
    preds = knn_classify(train, labels, test, ks=ks, temperature=temperature)
    for k in set(ks):
        for got, allowed in zip(preds[k].tolist(), ref_knn(train, labels, test, k, temperature), strict=True):
            assert got in allowed, f"k={k}: {got} not in {allowed}"


def test_gaussian_features_match_reference() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(size=(400, 32)).astype(np.float32)
    labels = rng.integers(0, 6, size=400)
    test = rng.normal(size=(150, 32)).astype(np.float32)
    preds = knn_classify(train, labels, test, ks=(1, 5, 10, 20), chunk=64)
    for k, p in preds.items():
        assert p.tolist() == [c[0] for c in ref_knn(train, labels, test, k)]
    weighted = knn_classify(train, labels, test, ks=20, temperature=0.07)[20]
    assert [[w] for w in weighted.tolist()] == ref_knn(train, labels, test, 20, 0.07)


# ------------------------------------------------------------------------------------ documented ties


def test_ties_at_the_kth_place_go_to_the_smaller_index() -> None:
    train = np.ones((50, 3), dtype=np.float32)  # all at the same similarity to any test point
    labels = np.arange(50)[::-1].copy()  # index i has label 49 − i
    preds = knn_classify(train, labels, np.ones((2, 3), np.float32), ks=(1, 3))
    assert preds[1].tolist() == [49, 49]  # the nearest is index 0
    assert preds[3].tolist() == [47, 47]  # indices 0, 1, 2: one vote each, equal sums → smallest label
    _, idx = nearest_neighbors(train, np.ones((1, 3), np.float32), 5)
    assert idx.tolist() == [[0, 1, 2, 3, 4]]


def test_vote_tie_broken_by_summed_similarity_then_label() -> None:
    test = np.array([[1.0, 0.0]], np.float32)
    # neighbours by similarity: label 7 (1.0), label 2 (0.8), label 2 (0.6), label 7 (0.0), label 5 (-1)
    train = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1], [-1, 0]], np.float32)
    labels = np.array([7, 2, 2, 7, 5])
    preds = knn_classify(train, labels, test, ks=(1, 2, 3, 4, 5))
    assert preds[1].item() == 7
    assert preds[2].item() == 7  # 1 vote each; sums 1.0 vs 0.8
    assert preds[3].item() == 2  # 2 votes vs 1
    assert preds[4].item() == 2  # 2 votes each; sums 1.4 (label 2) vs 1.0 (label 7)
    assert preds[5].item() == 2
    assert knn_classify(train, labels, test, ks=4, tie_break="label")[4].item() == 2  # smallest of {2, 7}
    assert knn_classify(train, labels, test, ks=2, tie_break="label")[2].item() == 2  # sklearn: smallest label
    # equal counts and equal sums: the smallest label
    sym = np.array([[1, 1], [1, -1]], np.float32)
    assert knn_classify(sym, np.array([9, 4]), test, ks=2)[2].item() == 4


def test_weighted_vote_uses_exp_similarity_over_temperature() -> None:
    test = np.array([[1.0, 0.0]], np.float32)
    train = np.array([[1, 0], [0.6, 0.8], [0.6, 0.8]], np.float32)  # sims 1.0, 0.6, 0.6
    labels = np.array([1, 0, 0])
    # e^(1/T) vs 2·e^(0.6/T): label 1 wins for small T, label 0 for large T (the majority)
    assert knn_classify(train, labels, test, ks=3, temperature=0.1)[3].item() == 1
    assert knn_classify(train, labels, test, ks=3, temperature=10.0)[3].item() == 0
    tie = np.array([[0.6, 0.8], [0.6, 0.8]], np.float32)
    assert knn_classify(tie, np.array([3, 1]), test, ks=2, temperature=0.07)[2].item() == 1


# -------------------------------------------------------------------------------------------- behaviour


def test_chunking_and_tensor_inputs_do_not_change_predictions() -> None:
    rng = np.random.default_rng(2)
    train = rng.normal(size=(300, 8)).astype(np.float32)
    labels = rng.integers(0, 4, size=300)
    test = rng.normal(size=(97, 8)).astype(np.float32)
    base = knn_classify(train, labels, test)
    for chunk in (1, 7, 96, 97, 10_000):
        other = knn_classify(train, labels, test, chunk=chunk)
        assert all(np.array_equal(base[k], other[k]) for k in base)
    tensors = knn_classify(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(test).double())
    assert all(np.array_equal(base[k], tensors[k]) for k in base)
    # cosine: the scale of a feature does not matter
    scaled = knn_classify(train * rng.uniform(0.1, 10, size=(300, 1)).astype(np.float32), labels, test * 3)
    assert all(np.array_equal(base[k], scaled[k]) for k in base)


def test_accuracy_per_k() -> None:
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    labels = np.array([0, 0, 1, 1])
    test = np.array([[1, 0.05], [0.05, 1], [0.6, 0.4]], np.float32)
    acc = knn_accuracy(train, labels, test, np.array([0, 1, 1]), ks=(1, 2))
    assert acc == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3)}
    assert knn_accuracy(train, labels, test[:2], np.array([0, 1]), ks=(1, 4))[1] == 1.0


def test_errors() -> None:
    train = np.ones((5, 3), np.float32)
    labels = np.zeros(5, np.int64)
    test = np.ones((2, 3), np.float32)
    with pytest.raises(ConfigError, match=r"k = 20 is larger than the training set \(5 samples\)"):
        knn_classify(train, labels, test)  # default ks go up to 20
    with pytest.raises(ConfigError, match="k = 6"):
        nearest_neighbors(train, test, 6)
    with pytest.raises(ConfigError, match="positive integer"):
        knn_classify(train, labels, test, ks=(0, 1))
    with pytest.raises(ValueError, match="differ in dimension"):
        knn_classify(train, labels, np.ones((2, 4), np.float32), ks=1)
    with pytest.raises(ValueError, match="must be \\(5,\\)"):
        knn_classify(train, labels[:4], test, ks=1)
    with pytest.raises(ValueError, match="integers"):
        knn_classify(train, labels.astype(np.float32), test, ks=1)
    with pytest.raises(ValueError, match="NaN"):
        knn_classify(train, labels, np.full((2, 3), np.nan, np.float32), ks=1)
    with pytest.raises(ConfigError, match="temperature"):
        knn_classify(train, labels, test, ks=1, temperature=0.0)
    with pytest.raises(ConfigError, match="tie_break"):
        knn_classify(train, labels, test, ks=1, tie_break="random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no test samples"):
        knn_accuracy(train, labels, np.ones((0, 3), np.float32), np.zeros(0, np.int64), ks=1)
