"""Semi-supervised subsets: class-balanced, seeded, byte-identical on reruns; the protocol end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.data.store import SkeletonStore
from skelssl.errors import ConfigError
from skelssl.evaluation.protocols import EvalContext, load_eval_encoder
from skelssl.evaluation.semi import balanced_subset, run_semi, subset_record, write_subset

from .eval_helpers import make_small_store, save_tiny_encoder


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    fraction=st.sampled_from([0.01, 0.1, 0.25, 0.5, 1.0]),
    seed=st.integers(0, 2**31),
)
def test_balanced_subset_counts_and_membership(counts: list[int], fraction: float, seed: int) -> None:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    perm = np.random.default_rng(0).permutation(len(labels))
    labels = labels[perm]
    indices = np.arange(len(labels)) * 3 + 5  # store indices need not be 0..N-1
    subset = balanced_subset(labels, indices, fraction, seed)
    assert np.all(np.diff(subset) > 0) and np.isin(subset, indices).all()
    chosen = labels[np.searchsorted(indices, subset)]
    for c, n in enumerate(counts):
        want = max(1, int(np.floor(fraction * n + 0.5)))  # round half up, at least one per class
        assert np.sum(chosen == c) == min(n, want)
    assert np.array_equal(subset, balanced_subset(labels, indices, fraction, seed))


def test_seeds_differ_and_fraction_checked() -> None:
    labels = np.repeat(np.arange(5), 50)
    subsets = {tuple(balanced_subset(labels, np.arange(250), 0.1, s)) for s in range(5)}
    assert len(subsets) == 5
    with pytest.raises(ConfigError, match="fraction"):
        balanced_subset(labels, np.arange(250), 0.0, 1)
    with pytest.raises(ConfigError, match="fraction"):
        balanced_subset(labels, np.arange(250), 1.5, 1)


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("semi")
    store = make_small_store(shared_data, root)
    save_tiny_encoder(root / "run")
    return store, root / "run"


def test_subset_json_is_byte_identical_across_processes(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """Two fresh interpreters (as two DDP ranks or two reruns) write the same bytes."""
    store_path, _ = setup
    code = (
        "import sys, numpy as np; from skelssl.data.store import SkeletonStore;"
        "from skelssl.evaluation.semi import balanced_subset, subset_record, write_subset;"
        "s = SkeletonStore.open(sys.argv[1]); pool = s.split_indices('xview', 'train');"
        "sub = balanced_subset(s.labels[pool], pool, 0.2, 7);"
        "write_subset(sys.argv[2], subset_record(s, sub, fraction=0.2, seed=7, split='xview', part='train'))"
    )
    for name in ("a.json", "b.json"):
        subprocess.run([sys.executable, "-c", code, str(store_path), str(tmp_path / name)], check=True)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    store = SkeletonStore.open(store_path)
    pool = store.split_indices("xview", "train")
    sub = balanced_subset(store.labels[pool], pool, 0.2, 8)
    write_subset(tmp_path / "c.json", subset_record(store, sub, fraction=0.2, seed=8, split="xview", part="train"))
    assert (tmp_path / "c.json").read_bytes() != (tmp_path / "a.json").read_bytes()
    rec = json.loads((tmp_path / "a.json").read_text())
    assert rec["names"] == sorted(rec["names"]) and rec["seed"] == 7 and rec["fraction"] == 0.2
    assert set(rec["counts"].values()) == {1}  # 4 training sequences per class: round(0.8) = 1
    train_names = {str(store.names[i]) for i in pool}
    assert set(rec["names"]) <= train_names


def test_run_semi_one_and_several_seeds(setup: tuple[Path, Path], tmp_path: Path) -> None:
    store_path, run = setup
    store = SkeletonStore.open(store_path)
    enc = load_eval_encoder(run)
    ctx = EvalContext(encoders=[enc], store=store, split="xview", out_dir=tmp_path / "one", epochs=5, seed=3,
                      options={"fraction": "0.5"})  # fmt: skip
    report = run_semi(ctx)
    rec = json.loads((tmp_path / "one" / "subset.json").read_text())
    assert rec["seed"] == 3 and rec["size"] == 20 and report["settings"]["labelled"] == [20]
    assert report["rows"][0]["top1"] == report["top1"] and report["top1_std"] == 0.0
    assert (tmp_path / "one" / "logits.npy").is_file()
    ctx = EvalContext(encoders=[enc], store=store, split="xview", out_dir=tmp_path / "many", epochs=5,
                      options={"fraction": "0.5", "seeds": "1,2,3", "recipe": "mae"})  # fmt: skip
    report = run_semi(ctx)
    tops = [r["top1"] for r in report["rows"]]
    assert [r["seed"] for r in report["rows"]] == [1, 2, 3]
    assert report["top1"] == pytest.approx(np.mean(tops)) and report["top1_std"] == pytest.approx(np.std(tops))
    names = [json.loads((tmp_path / "many" / f"subset-seed{s}.json").read_text())["names"] for s in (1, 2, 3)]
    assert len({tuple(n) for n in names}) == 3
    assert report["settings"]["head_settings"]["recipe"] == "mae"
    with pytest.raises(ConfigError, match="unknown option"):
        run_semi(EvalContext(encoders=[enc], store=store, split="xview", out_dir=tmp_path / "x",
                             options={"fractoin": "0.1"}))  # fmt: skip
