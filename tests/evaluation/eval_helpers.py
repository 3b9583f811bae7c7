"""Shared helpers of the evaluation-protocol tests: a small real NW-UCLA store and tiny saved encoders."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.engine.checkpoint import save_encoder
from skelssl.evaluation.protocols import EvalContext, load_eval_encoder
from skelssl.models.registry import encoder_spec
from skelssl.models.stgcn import STGCN

#: ~6 sequences per class, 10 classes, views 1-3 (xview: train = v1+v2, test = v3)
PATTERN = "a*_s0[1-2]_e00_v0[1-3].json"


def make_small_store(shared_data: Path, root: Path) -> Path:
    src = root / "all_sqe"
    src.mkdir(parents=True)
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob(PATTERN)):
        shutil.copy(f, src / f.name)
    out = root / "store"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    return out


def tiny_card(
    layout: str = "kinect20", *, method: str = "pstl", clips: str = "pstl", store: str = ""
) -> dict[str, Any]:
    return {
        "method": method,
        "pretrain": {
            "method": method,
            "data": {"store": store, "split": "xview", "part": "train", "clips": clips, "frames": None, "persons": 1},
            method: {"stream": "joint"},
        },
        "data": {"store": store, "source": "nw-ucla", "layout": layout, "channels": 3, "clips": clips},
    }


def save_tiny_encoder(run_dir: Path, *, layout: str = "kinect20", seed: int = 0, method: str = "pstl") -> Path:
    """A small ST-GCN with non-trivial BatchNorm statistics, saved as ``run_dir/encoder.safetensors``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = STGCN(layout=layout, in_channels=3, hidden_channels=4, hidden_dim=16, dropout=0.0)
        enc.train()
        with torch.no_grad():  # move the running statistics away from their defaults
            for _ in range(2):
                enc(torch.randn(4, 1, 20, enc.num_joints, 3) * 2 + 1)
    card = tiny_card(layout, method=method)
    card["encoder"] = encoder_spec(enc)
    run_dir.mkdir(parents=True, exist_ok=True)
    weights, _ = save_encoder(run_dir / "encoder", enc, card)
    return weights


def small_ctx_factory(shared_data: Path, root: Path, *, epochs: int) -> Callable[..., EvalContext]:
    """``make(out, **options)`` → an :class:`EvalContext` of a tiny saved ST-GCN on a small NW-UCLA store
    (split ``xview``), ``epochs`` classifier epochs, outputs under ``root/evals/out``."""
    store = SkeletonStore.open(make_small_store(shared_data, root))
    save_tiny_encoder(root / "run")
    enc = load_eval_encoder(root / "run")

    def make(out: str, **options: str) -> EvalContext:
        return EvalContext(encoders=[enc], store=store, split="xview", out_dir=root / "evals" / out,
                           epochs=epochs, options=dict(options))  # fmt: skip

    return make
