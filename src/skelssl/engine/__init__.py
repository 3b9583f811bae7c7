"""The training engine's building blocks: schedules, optimisers, checkpoints and the EMA teacher."""

from __future__ import annotations

from skelssl.engine.checkpoint import (
    atomic_write,
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    load_encoder,
    load_latest_checkpoint,
    restore_rng,
    save_checkpoint,
    save_encoder,
    unwrap_module,
)
from skelssl.engine.ema import EMATeacher, ema_decay
from skelssl.engine.optim import build_optimizer, param_groups, transformer_layer_index
from skelssl.engine.schedule import LRSchedule, constant_lr, pstl_epoch_lr, warmup_cosine

__all__ = [
    "EMATeacher",
    "LRSchedule",
    "atomic_write",
    "build_optimizer",
    "capture_rng",
    "constant_lr",
    "ema_decay",
    "latest_checkpoint",
    "load_checkpoint",
    "load_encoder",
    "load_latest_checkpoint",
    "param_groups",
    "pstl_epoch_lr",
    "restore_rng",
    "save_checkpoint",
    "save_encoder",
    "transformer_layer_index",
    "unwrap_module",
    "warmup_cosine",
]
