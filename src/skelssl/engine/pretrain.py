"""Pretraining: one code path from a CPU to many GPUs (``torchrun`` + DDP), resumable bit for bit.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``checkpoints/`` and, at
the end, ``encoder.safetensors`` + ``encoder.json``. Everything random is seeded from ``train.seed``:
the data order and views from ``(seed, epoch, position)``, each rank's augmentation/mask generator and
its global torch RNG (dropout) from ``(seed, rank)``; checkpoints hold every rank's RNG states and the
position in the epoch, so a run stopped at any checkpoint and resumed ends with the same weights as one
that never stopped (deterministic CPU mode).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from skelssl import __version__
from skelssl.config import config_to_dict, dump_config, validate_config
from skelssl.data.clips import ClipConfig, ClipDataset, clip_config_from
from skelssl.data.loader import make_loader
from skelssl.data.store import SkeletonStore
from skelssl.engine.checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    save_encoder,
)
from skelssl.engine.metrics import MetricsLog
from skelssl.engine.optim import build_optimizer
from skelssl.engine.schedule import LRSchedule
from skelssl.errors import ConfigError, SkelsslError
from skelssl.methods.base import Method
from skelssl.methods.mamp import MAMP, MAMPConfig
from skelssl.methods.pstl import PSTL, PSTLConfig
from skelssl.methods.skeleton2vec import Skeleton2vec, Skeleton2vecConfig


class TrainingError(SkelsslError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


@dataclass
class DataConfig:
    """Which store, split and clip pipeline to pretrain on."""

    store: str = ""
    split: str = "xsub"
    part: str = "train"
    clips: Literal["pstl", "skeleton2vec", "mamp"] = "pstl"
    frames: int | None = None
    persons: int = 2
    normalize: Literal["none", "aimclr", "pyskl", "mamp"] | None = None  # None = the clip preset's normalisation
    align_spine: bool | None = None  # PySKL PreNormalize3D spine alignment (Skeleton2vec NTU-60 x-view); None = preset
    workers: int = 0
    monitor_part: str = "test"

    def check(self) -> None:
        if self.persons < 1:
            raise ValueError("persons must be at least 1")
        if self.workers < 0:
            raise ValueError("workers must be at least 0")
        if self.frames is not None and self.frames < 2:
            raise ValueError("frames must be at least 2")


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 5e-3
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    no_decay_norm_bias: bool = False
    no_decay_names: tuple[str, ...] = ()  # also no weight decay on these (e.g. position embeddings)
    grad_clip: float | None = None

    def check(self) -> None:
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be >= 0")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError("grad_clip must be positive (or null for none)")


@dataclass
class ScheduleConfig:
    kind: Literal["pstl", "cosine", "constant"] = "pstl"
    warmup_epochs: int = 10
    min_lr: float = 0.0
    zero_first_epoch: bool = True

    def check(self) -> None:
        if self.warmup_epochs < 0:
            raise ValueError("warmup_epochs must be >= 0")


@dataclass
class TrainConfig:
    epochs: int = 150
    batch_size: int = 128
    seed: int = 1
    drop_last: bool = False
    amp: Literal["none", "bf16", "fp16"] = "none"
    compile: bool = False
    deterministic: bool = False
    threads: int = 0
    checkpoint_every_epochs: int = 10
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 2
    log_every_steps: int = 10
    knn_every_epochs: int = 0
    knn_ks: tuple[int, ...] = (1, 20)
    knn_at_start: bool = True

    def check(self) -> None:
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be at least 1")
        for name in ("checkpoint_every_epochs", "checkpoint_every_steps", "knn_every_epochs", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not self.knn_ks or min(self.knn_ks) < 1:
            raise ValueError("knn_ks must list neighbour counts >= 1")


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs. Presets live in ``skelssl/configs/<method>/<dataset>.yaml``."""

    method: Literal["pstl", "skeleton2vec", "mamp"] = "pstl"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pstl: PSTLConfig = field(default_factory=PSTLConfig)
    skeleton2vec: Skeleton2vecConfig = field(default_factory=Skeleton2vecConfig)
    mamp: MAMPConfig = field(default_factory=MAMPConfig)

    def check(self) -> None:
        """Refuse settings that cannot work together, before any work (``load_config`` runs this last).

        Against the clip length (the ``data.clips`` preset's or ``data.frames``): the method's segment, tube and
        MATM lengths. When ``data.store`` names a readable store, also against it: the split and part, the batch
        size (at most the part's sequences), and the layout (CSM joints, visible tokens per mask). An unreadable
        or missing store is left to :func:`pretrain` to report.
        """
        if self.schedule.warmup_epochs > self.train.epochs:
            raise ConfigError(
                f"schedule.warmup_epochs = {self.schedule.warmup_epochs} is longer than train.epochs = "
                f"{self.train.epochs}; allowed: 0..{self.train.epochs}"
            )
        frames = pretrain_clip_config(self, train=True).frames
        store = _try_open(self.data.store)
        layout = store.layout if store is not None else None
        checker = {"pstl": PSTL, "skeleton2vec": Skeleton2vec, "mamp": MAMP}.get(self.method)
        if checker is not None:
            checker.check_setup(getattr(self, self.method), layout=layout, frames=frames)
        if store is None:
            return
        from skelssl.utils import closest

        d = self.data
        splits = sorted(store.splits)
        if d.split not in splits:
            hint = closest(d.split, splits)
            raise ConfigError(
                f"data.split = {d.split!r} is not a split of {d.store}"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; its splits: {', '.join(splits) or 'none'}"
            )
        parts = store.split_parts(d.split)
        for key, part in (("data.part", d.part), ("data.monitor_part", d.monitor_part)):
            if part not in parts and (key == "data.part" or self.train.knn_every_epochs):
                raise ConfigError(f"{key} = {part!r} is not a part of split {d.split!r}; allowed: {', '.join(parts)}")
        check_batch_size(self, len(store.split_indices(d.split, d.part)))


def check_batch_size(cfg: PretrainConfig, size: int, *, world: int = 1) -> None:
    """``ConfigError`` unless ``train.batch_size`` splits evenly over ``world`` processes and each process's
    share fits in its share of the ``size`` training sequences (:meth:`PretrainConfig.check` with one process,
    :func:`pretrain` with the real count)."""
    batch, d = cfg.train.batch_size, cfg.data
    if batch % world:
        raise ConfigError(f"train.batch_size = {batch} is not divisible by the {world} processes")
    if batch // world > size // world:
        allowed = f"1..{size}" if world == 1 else f"a multiple of {world} up to {world * (size // world)}"
        raise ConfigError(
            f"train.batch_size = {batch} is larger than the {size} training sequences of {d.store} "
            f"({d.split}/{d.part}){f' over {world} processes' if world > 1 else ''}; allowed: {allowed}"
        )


@dataclass
class RunResult:
    """What :func:`pretrain` did."""

    run_dir: Path
    step: int
    epoch: int
    finished: bool
    seconds: float
    last_loss: float
    knn: dict[str, float] = field(default_factory=dict)
    knn_at_start: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ setup
@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> _Dist:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), or run as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(0, 1, 0)
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pretrain_clip_config(cfg: PretrainConfig, *, train: bool) -> ClipConfig:
    """The clips ``cfg`` pretrains on (``train=True``, seeded by ``train.seed``) or its test-time view."""
    d = cfg.data
    return clip_config_from(
        d.clips,
        train=train,
        seed=cfg.train.seed,
        persons=d.persons,
        frames=d.frames,
        normalize=d.normalize,
        align_spine=d.align_spine,
    )


def _try_open(path: str) -> SkeletonStore | None:
    """The store at ``path`` for config checks, or ``None`` when there is none (yet) or it cannot be read."""
    if not path or not Path(path).is_dir():
        return None
    try:
        return SkeletonStore.open(path)
    except SkelsslError:
        return None


def build_method(cfg: PretrainConfig, store: SkeletonStore, *, distributed: bool) -> Method:
    """The method named by ``cfg.method`` for this store's layout and channels.

    The transformer methods take the clip length from the data config, and their weights from a generator seeded
    by ``train.seed`` (the same on every rank, whatever the global RNG: Skeleton2vec's teacher is a copy made at
    construction, outside DDP's initial broadcast).
    """
    if cfg.method == "pstl":
        return PSTL(layout=store.layout, config=cfg.pstl, in_channels=store.channels, distributed=distributed)
    if cfg.method in ("skeleton2vec", "mamp"):
        frames = int(pretrain_clip_config(cfg, train=True).frames)  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {
            "layout": store.layout,
            "frames": frames,
            "in_channels": store.channels,
            "distributed": distributed,
            "init_generator": torch.Generator().manual_seed(cfg.train.seed),
        }
        if cfg.method == "skeleton2vec":
            return Skeleton2vec(config=cfg.skeleton2vec, **kwargs)
        return MAMP(config=cfg.mamp, **kwargs)
    raise ConfigError(f"unknown method {cfg.method!r}")


def _schedule(cfg: PretrainConfig, steps_per_epoch: int) -> LRSchedule:
    s, o, t = cfg.schedule, cfg.optim, cfg.train
    if s.kind == "pstl":
        return LRSchedule.pstl(
            base_lr=o.lr,
            steps_per_epoch=steps_per_epoch,
            warmup_epochs=s.warmup_epochs,
            epochs=t.epochs,
            min_lr=s.min_lr,
            zero_first_epoch=s.zero_first_epoch,
        )
    if s.kind == "cosine":
        return LRSchedule.cosine(
            base_lr=o.lr,
            min_lr=s.min_lr,
            warmup_steps=s.warmup_epochs * steps_per_epoch,
            total_steps=t.epochs * steps_per_epoch,
        )
    return LRSchedule.constant(base_lr=o.lr)


def _autocast(device: str, amp: str) -> Any:
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


# -------------------------------------------------------------------------------------------- run
def pretrain(
    cfg: PretrainConfig,
    *,
    run_dir: str | Path,
    device: str = "cpu",
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
) -> RunResult:
    """Pretrain ``cfg.method`` on ``cfg.data.store`` into ``run_dir`` (see the module docstring).

    ``max_steps`` stops after that global step without changing the schedule (the config's epochs define
    it); the run can be continued with ``resume=True``.
    """
    start_time = time.perf_counter()
    cfg = validate_config(cfg)  # a config built or edited in code gets the checks load_config runs
    ctx = _init_distributed(device)
    if device.startswith("cuda") and ctx.world > 1:
        device = f"cuda:{ctx.local_rank}"
        torch.cuda.set_device(device)
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
    run = Path(run_dir)
    ckpt_dir = run / "checkpoints"
    resume_from = latest_checkpoint(ckpt_dir) if resume else None
    # every check that can fail on the data comes before the run directory is written
    store = SkeletonStore.open(cfg.data.store)
    dataset = ClipDataset(
        store=store, config=pretrain_clip_config(cfg, train=True), split=cfg.data.split, part=cfg.data.part
    )
    check_batch_size(cfg, len(dataset), world=ctx.world)
    per_rank = t.batch_size // ctx.world
    if ctx.main:
        _prepare_run_dir(run, cfg, resume=resume, has_checkpoint=resume_from is not None)
    if ctx.world > 1:
        dist.barrier()

    loader = make_loader(
        dataset,
        batch_size=per_rank,
        shuffle=True,
        seed=t.seed,
        num_workers=cfg.data.workers,
        drop_last=t.drop_last,
        distributed=ctx.world > 1,
        rank=ctx.rank,
        world_size=ctx.world,
        persistent_workers=cfg.data.workers > 0,
    )
    steps_per_epoch = len(loader)

    torch.manual_seed(t.seed * 1000 + ctx.rank)  # weights: identical on every rank (DDP broadcasts rank 0's)
    method = build_method(cfg, store, distributed=ctx.world > 1).to(device)
    model: nn.Module = method
    if ctx.world > 1:
        model = nn.parallel.DistributedDataParallel(method, device_ids=[ctx.local_rank] if "cuda" in device else None)
    if t.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    optimizer = build_optimizer(
        method,
        name=cfg.optim.name,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=cfg.optim.betas,
        momentum=cfg.optim.momentum,
        no_decay_norm_bias=cfg.optim.no_decay_norm_bias,
        no_decay_names=tuple(cfg.optim.no_decay_names),
    )
    schedule = _schedule(cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(enabled=t.amp == "fp16" and device.startswith("cuda"))
    generator = torch.Generator().manual_seed(t.seed * 1000 + 17 + ctx.rank)

    step, epoch, position = 0, 0, 0
    epoch_sums = (0.0, 0)  # running loss of the current epoch (carried through mid-epoch checkpoints)
    log = MetricsLog(run) if ctx.main else None
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        if state.get("world_size", 1) != ctx.world:
            raise ConfigError(
                f"{resume_from}: written by {state.get('world_size')} processes; resume with the same number"
            )
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"][ctx.rank], {"step": generator})
        step, epoch, position = int(state["step"]), int(state["epoch"]), int(state["position"])
        epoch_sums = (float(state.get("epoch_loss", 0.0)), int(state.get("epoch_batches", 0)))
        if log is not None:
            if "metrics_lines" in state:  # the records written up to this checkpoint; later ones are logged again
                log.truncate(int(state["metrics_lines"]))
            else:
                log.truncate_after(step)
        echo(f"resumed from {resume_from} at step {step} (epoch {epoch}, batch {position})")
    elif log is not None:
        log.truncate(0)  # --resume of a run stopped before its first checkpoint: it starts again from scratch
    elif ctx.main:
        echo(
            f"pretrain {cfg.method} on {cfg.data.store} ({cfg.data.split}/{cfg.data.part}: {len(dataset)} sequences), "
            f"{t.epochs} epochs x {steps_per_epoch} steps, batch {t.batch_size}, {ctx.world} process(es) on {device}"
        )

    knn_start: dict[str, float] = dict(state.get("knn_at_start", {})) if resume_from is not None else {}
    knn_last: dict[str, float] = dict(state.get("knn", {})) if resume_from is not None else {}
    last_saved: Path | None = resume_from
    if t.knn_every_epochs and t.knn_at_start and step == 0:
        knn_start = _knn(cfg, store, method, device, ctx, initial=True)
        if log is not None:
            log.log("knn", 0, epoch=0, **knn_start)
            echo(f"kNN at initialisation: {_fmt(knn_start)}")

    def save(where: tuple[int, int, int], sums: tuple[float, int]) -> None:
        nonlocal last_saved
        last_saved = _checkpoint(
            ckpt_dir,
            cfg,
            method,
            optimizer,
            scaler,
            generator,
            where,
            ctx,
            epoch_sums=sums,
            extra={
                "last_loss": last_loss,
                "knn_at_start": knn_start,
                "knn": knn_last,
                "metrics_lines": log.lines if log is not None else 0,
            },
            previous=last_saved,
        )

    show = progress if progress is not None else (ctx.main and sys.stderr.isatty())
    # a method may watch its own scalars (Skeleton2vec: representation collapse) and name the problem
    health: Callable[[dict[str, Any], int], str | None] | None = getattr(method, "check_health", None)
    last_loss = float(state.get("last_loss", math.nan)) if resume_from is not None else math.nan
    clock = time.perf_counter()
    clips_since = 0
    finished = False
    stop = False
    try:
        while epoch < t.epochs and not stop:
            loader.set_epoch(epoch, skip_batches=position)
            bar = _bar(show, len(loader), f"epoch {epoch + 1}/{t.epochs}")
            model.train()
            epoch_loss, epoch_batches = epoch_sums
            epoch_sums = (0.0, 0)
            for batch in loader:
                lr = schedule.apply(optimizer, step)
                x = batch["x"].to(device, non_blocking=True)
                with _autocast(device, t.amp):
                    out = model(x, generator=generator)
                loss = out["loss"]
                if not torch.isfinite(loss.detach()):
                    raise TrainingError(
                        f"non-finite loss ({loss.item()}) at step {step + 1} (epoch {epoch}); {_kept(last_saved)}. "
                        "Start a new run (another --out) with a lower optim.lr or with optim.grad_clip set; "
                        "--resume with the same settings would meet the same loss again"
                    )
                problem = health(out, step + 1) if health is not None else None
                if problem:
                    raise TrainingError(f"{problem} (epoch {epoch}); {_kept(last_saved)}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                grad_norm = None
                if cfg.optim.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    grad_norm = float(nn.utils.clip_grad_norm_(method.parameters(), cfg.optim.grad_clip))
                scaler.step(optimizer)
                scaler.update()
                step += 1
                position += 1
                extra = method.after_step(step)
                last_loss = float(loss.detach())
                epoch_loss += last_loss
                epoch_batches += 1
                clips_since += x.shape[0] * ctx.world
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4g}", lr=f"{lr:.3g}")
                if log is not None and (step % max(t.log_every_steps, 1) == 0 or step == 1):
                    now = time.perf_counter()
                    scalars = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
                    scalars.update(extra)
                    if grad_norm is not None:
                        scalars["grad_norm"] = grad_norm
                    log.log("train", step, epoch=epoch, lr=lr, clips_per_s=clips_since / (now - clock), **scalars)
                    clock, clips_since = now, 0
                if t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0:
                    save((step, epoch, position), (epoch_loss, epoch_batches))
                if max_steps is not None and step >= max_steps:
                    stop = True
                    break
            if bar is not None:
                bar.close()
            if stop and position < steps_per_epoch:
                save((step, epoch, position), (epoch_loss, epoch_batches))
                break
            epoch += 1
            position = 0
            if log is not None and epoch_batches:
                log.log("epoch", step, epoch=epoch, loss=epoch_loss / epoch_batches, lr=lr)
                echo(f"epoch {epoch}/{t.epochs}: loss {epoch_loss / epoch_batches:.4f} (step {step})")
            if t.knn_every_epochs and (epoch % t.knn_every_epochs == 0 or epoch == t.epochs):
                knn_last = _knn(cfg, store, method, device, ctx)
                if log is not None:
                    log.log("knn", step, epoch=epoch, **knn_last)
                    echo(f"kNN after epoch {epoch}: {_fmt(knn_last)}")
            due = t.checkpoint_every_epochs and epoch % t.checkpoint_every_epochs == 0
            if due or epoch == t.epochs or stop:
                save((step, epoch, 0), (0.0, 0))
        finished = epoch >= t.epochs
        if finished and ctx.main:
            try:
                _export(run, cfg, method, store, step, last_loss, knn_start, knn_last)
            except SkelsslError as err:
                raise TrainingError(
                    f"{err} — the final checkpoint {last_saved} is kept: free disk space (or copy the run "
                    "directory elsewhere) and run again with --resume to export the encoder"
                ) from err
    finally:
        if log is not None:
            log.close()
    if ctx.world > 1:
        dist.barrier()
    return RunResult(
        run_dir=run,
        step=step,
        epoch=epoch,
        finished=finished,
        seconds=time.perf_counter() - start_time,
        last_loss=last_loss,
        knn=knn_last,
        knn_at_start=knn_start,
    )


def _prepare_run_dir(run: Path, cfg: PretrainConfig, *, resume: bool, has_checkpoint: bool) -> None:
    ckpts = run / "checkpoints"
    if resume and ckpts.is_dir():
        for tmp in ckpts.glob(".*.tmp"):  # left by a write that was interrupted (kill, power loss): never valid
            tmp.unlink(missing_ok=True)
    if resume and not has_checkpoint and ckpts.is_dir() and any(ckpts.iterdir()):
        raise ConfigError(
            f"{ckpts} holds no valid checkpoint to resume from (every file there is corrupt or incomplete); "
            "move them away to start again, or choose another --out"
        )
    if not resume and run.exists() and any(run.iterdir()):
        raise ConfigError(f"{run} already holds a run; pass --resume to continue it, or choose another --out")
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / f".skelssl-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SkelsslError(
            f"{run}: cannot write the run directory here ({exc.strerror or exc}); "
            "choose another --out (a writable place with free space)"
        ) from exc
    if resume and (run / "config.yaml").exists():
        from skelssl.config import read_yaml

        saved = read_yaml(run / "config.yaml")
        now = config_to_dict(cfg)
        if _schedule_keys(saved) != _schedule_keys(now):
            raise ConfigError(
                f"{run / 'config.yaml'}: the run was started with other training settings; "
                "resume with the same config (only data.workers and train.threads may change)"
            )
    dump_config(cfg, run / "config.yaml")


def _schedule_keys(d: dict[str, Any]) -> dict[str, Any]:
    """The parts of a config that must not change across a resume."""
    out = {k: v for k, v in d.items() if k not in ("data", "train")}
    out["data"] = {k: v for k, v in d.get("data", {}).items() if k not in ("workers", "store")}
    out["train"] = {k: v for k, v in d.get("train", {}).items() if k not in ("threads", "log_every_steps")}
    return out


def _checkpoint(
    ckpt_dir: Path,
    cfg: PretrainConfig,
    method: Method,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
    where: tuple[int, int, int],
    ctx: _Dist,
    *,
    epoch_sums: tuple[float, int] = (0.0, 0),
    extra: dict[str, Any] | None = None,
    previous: Path | None = None,
) -> Path:
    """Save the full training state at ``where`` = (global step, epoch, batches done in the epoch); its path.

    ``extra``: more plain values to store (last loss, kNN results, the metrics log's record count). Weights
    that are not finite are never saved (so the newest checkpoint is always a good one to resume from), and
    a failed write (full disk, …) raises :class:`TrainingError` naming ``previous``, the checkpoint kept.
    """
    step, epoch, position = where
    path = ckpt_dir / f"step-{step:08d}.pt"
    bad = next((k for k, v in method.state_dict().items() if v.is_floating_point() and not v.isfinite().all()), None)
    if bad is not None:
        raise TrainingError(f"non-finite weights ({bad}) after step {step} (epoch {epoch}); {_kept(previous)}")
    rng = capture_rng({"step": generator})
    if ctx.world > 1:
        states: list[Any] = [None] * ctx.world
        dist.all_gather_object(states, rng)
    else:
        states = [rng]
    if ctx.main:
        state = {
            "model": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": states,
            "step": step,
            "epoch": epoch,
            "position": position,
            "epoch_loss": epoch_sums[0],
            "epoch_batches": epoch_sums[1],
            "world_size": ctx.world,
            "config": config_to_dict(cfg),
            "version": __version__,
            **(extra or {}),
        }
        try:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, state)
        except (OSError, SkelsslError) as exc:
            detail = str(exc) if isinstance(exc, SkelsslError) else f"{ckpt_dir}: {exc}"
            raise TrainingError(
                f"could not save the checkpoint of step {step}: {detail} — {_kept(previous)}; free disk space "
                "(or copy the run directory elsewhere) and continue with --resume"
            ) from exc
        old = sorted(ckpt_dir.glob("step-*.pt"))[: -cfg.train.keep_checkpoints]
        for stale in old:
            stale.unlink(missing_ok=True)
    if ctx.world > 1:
        dist.barrier()
    return path


def _kept(checkpoint: Path | None) -> str:
    if checkpoint is None:
        return "no checkpoint was written yet"
    return f"the last good checkpoint {checkpoint} is kept"


def _export(
    run: Path,
    cfg: PretrainConfig,
    method: Method,
    store: SkeletonStore,
    step: int,
    loss: float,
    knn_start: dict[str, float],
    knn_last: dict[str, float],
) -> None:
    card = {
        **method.card(),
        "pretrain": config_to_dict(cfg),
        "data": {
            "store": str(store.path.resolve()),
            "source": store.meta.get("source"),
            "layout": store.layout.name,
            "channels": store.channels,
            "input_checksum": store.meta.get("input_checksum"),
            "split": cfg.data.split,
            "part": cfg.data.part,
            "clips": cfg.data.clips,
        },
        "metrics": {"final_loss": loss, "steps": step, "knn": knn_last, "knn_at_start": knn_start},
        "skelssl": __version__,
    }
    for name, module in method.export().items():
        save_encoder(run / name, module, {**card, "exported_as": name})


def _knn(
    cfg: PretrainConfig, store: SkeletonStore, method: Method, device: str, ctx: _Dist, *, initial: bool = False
) -> dict[str, float]:
    """kNN top-1 of the current encoder: train part → ``data.monitor_part`` (rank 0; others wait).

    ``initial``: the value at initialisation is measured on a copy of the encoder whose BatchNorm statistics
    are estimated on the training part first (the untouched initial statistics, mean 0 and variance 1, make a
    random ST-GCN map every clip to nearly the same feature — a baseline weaker than the network really is).
    The training state is not changed.
    """
    result: dict[str, float] = {}
    if ctx.main:
        import copy

        from skelssl.evaluation.features import calibrate_batchnorm
        from skelssl.evaluation.knn import knn_monitor

        clip = pretrain_clip_config(cfg, train=False)
        train = ClipDataset(store=store, config=clip, split=cfg.data.split, part=cfg.data.part)
        test = ClipDataset(store=store, config=clip, split=cfg.data.split, part=cfg.data.monitor_part)
        stream = getattr(getattr(method, "config", None), "stream", "joint")
        encoder = method.encoder
        if initial:
            encoder = copy.deepcopy(encoder)
            calibrate_batchnorm(encoder, train, device=device, stream=stream, layout=store.layout)
        result = knn_monitor(
            encoder, train, test, ks=tuple(cfg.train.knn_ks), device=device, stream=stream, layout=store.layout
        )
    if ctx.world > 1:
        dist.barrier()
    return result


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2%}" if v <= 1 else f"{k} {v:.2f}" for k, v in values.items())


def _bar(show: bool, total: int, desc: str) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)
