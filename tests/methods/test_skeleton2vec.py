"""Skeleton2vec: EMA teacher, targets against the formula re-derived by hand, masked-only loss, DDP, learning."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import default_collate

from skelssl.config import load_config
from skelssl.data.augment import AugmentConfig, augment
from skelssl.data.clips import ClipConfig, ClipDataset
from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.engine.optim import build_optimizer
from skelssl.errors import ConfigError
from skelssl.masking.tokens import motion_aware_tube_mask
from skelssl.methods.skeleton2vec import Skeleton2vec, Skeleton2vecConfig, contextual_targets

# a tiny encoder keeps every test fast; the step's logic does not depend on the widths
TINY = {"dim": 32, "depth": 3, "heads": 4, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 4, "top_k": 2}


def make(seed: int = 0, frames: int = 30, layout: str = "ntu25", dtype=torch.float32, **changes) -> Skeleton2vec:
    cfg = Skeleton2vecConfig(**{**TINY, **changes})
    method = Skeleton2vec(layout=layout, config=cfg, frames=frames, init_generator=torch.Generator().manual_seed(seed))
    return method.to(dtype).train()


def clips(n: int = 4, m: int = 2, t: int = 30, v: int = 25, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m, t, v, 3, generator=g, dtype=dtype).cumsum(dim=2) * 0.05  # smooth trajectories
    if n > 1 and m > 1:
        x[1, 1] = 0  # a zero-padded second person, as in real data
    return x


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small ops: one thread is faster, and on a loaded machine far faster, than several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ucla_batch(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    """20 real NW-UCLA clips (10 actions × 2 subjects, view 1), PySKL pipeline, 30 frames, 1 person."""
    src = tmp_path_factory.mktemp("s2v-ucla-src")
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a*_s0[12]_e00_v01.json")):
        shutil.copy(f, src)
    out = tmp_path_factory.mktemp("s2v") / "ucla"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    dataset = ClipDataset(store=SkeletonStore.open(out), config=ClipConfig.skeleton2vec(frames=30, persons=1))
    x = default_collate([dataset[i] for i in range(len(dataset))])["x"]
    assert x.shape == (20, 1, 30, 20, 3)
    return x


# -- configuration ---------------------------------------------------------------------------------------


def test_defaults_are_the_reference():
    cfg = Skeleton2vecConfig()
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.segment, cfg.layer_scale) == (256, 8, 8, 3, 1e-4)
    assert (cfg.decoder_dim, cfg.decoder_depth, cfg.top_k, cfg.target_norm, cfg.normalize_targets) == (
        256, 3, 8, "instance", True,
    )  # fmt: skip
    assert (cfg.mask, cfg.mask_ratio, cfg.tube_len, cfg.beta, cfg.rounding) == ("motion_tube", 0.9, 5, 0.1, "reference")
    assert (cfg.ema_decay_start, cfg.ema_decay_end, cfg.ema_anneal_steps) == (0.9999, 1.0, 251_200)
    assert cfg.rotation == 0.3 and not cfg.motion_head
    method = Skeleton2vec(layout="ntu25")
    assert sum(p.numel() for p in method.student.parameters()) == 6_339_328
    assert method.augmentation == AugmentConfig.skeleton2vec()
    x = clips(n=1, t=90)
    mask = method._mask(rearrange(x, "n m t v c -> (n m) t v c"), torch.Generator().manual_seed(0))
    assert mask.keep_idx.shape == (2, 60)  # 2 visible joints per tube x 30 segments: 92 % masked


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mask": "gumbel"}, "mask"),
        ({"target_norm": "batch"}, "target_norm"),
        ({"top_k": 9}, "top_k"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"ema_decay_start": 0.9, "ema_decay_end": 0.8}, "ema_decay"),
        ({"dim": 30, "heads": 4}, "multiple of heads"),
        ({"collapse_floor": -1.0}, "collapse_floor"),
    ],
)
def test_check_refuses_impossible_values(changes, message):
    with pytest.raises(ConfigError, match=message):
        Skeleton2vecConfig(**changes).check()


def test_layout_and_clip_limits():
    with pytest.raises(ConfigError, match="not divisible by segment"):
        make(frames=31)
    with pytest.raises(ConfigError, match="visible"):  # int(25 x 0.02) = 0 joints per tube
        make(mask_ratio=0.98)
    with pytest.raises(ConfigError, match="tube_len"):  # 10 segments, tubes of 3
        make(tube_len=3)
    method = make()
    with pytest.raises(ValueError, match="expects"):
        method(clips(t=33), generator=torch.Generator())


def test_config_loads_from_yaml_overrides():
    from skelssl.configs import resolve
    from skelssl.engine.pretrain import PretrainConfig

    cfg = load_config(PretrainConfig, resolve("skeleton2vec/ntu120-xsub"), ["skeleton2vec.top_k=4"])
    assert cfg.method == "skeleton2vec" and cfg.skeleton2vec.beta == 0.2 and cfg.skeleton2vec.top_k == 4
    assert cfg.skeleton2vec.ema_anneal_steps == 395_200 and cfg.optim.grad_clip == 4.0


# -- teacher ---------------------------------------------------------------------------------------------


def _train_student_one_step(method: Skeleton2vec, x: torch.Tensor) -> None:
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    out = method(x, generator=torch.Generator().manual_seed(1))
    out["loss"].backward()
    opt.step()


def test_decay_zero_copies_the_student_and_decay_one_freezes_the_teacher():
    x = clips()
    copy = make(ema_decay_start=0.0, ema_decay_end=0.0)
    frozen = make(ema_decay_start=1.0, ema_decay_end=1.0)
    before = {k: v.clone() for k, v in frozen.teacher.module.state_dict().items()}  # the same init in both
    for method in (copy, frozen):
        _train_student_one_step(method, x)
    assert copy.after_step(1) == {"ema_decay": 0.0}
    assert frozen.after_step(1) == {"ema_decay": 1.0}
    student = copy.student.state_dict()
    changed = 0
    for key, value in copy.teacher.module.state_dict().items():
        assert torch.equal(value, student[key]), key
        changed += not torch.equal(value, before[key])
    assert changed > 0  # the student did move
    for key, value in frozen.teacher.module.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not all(
        torch.equal(a, b) for a, b in zip(frozen.student.parameters(), frozen.teacher.parameters(), strict=True)
    )


def test_intermediate_decay_is_the_ema_formula():
    method = make(ema_decay_start=0.7, ema_decay_end=0.9, ema_anneal_steps=4)
    before = {k: v.clone() for k, v in method.teacher.module.state_dict().items()}
    _train_student_one_step(method, clips())
    assert method.after_step(3)["ema_decay"] == pytest.approx(0.9 - 0.2 * (1 - 2 / 4))  # 0-based update 2
    tau = 0.8
    for key, value in method.teacher.module.state_dict().items():
        torch.testing.assert_close(value, tau * before[key] + (1 - tau) * method.student.state_dict()[key])


def test_teacher_builds_no_graph_and_is_not_optimised():
    method = make()
    x = clips()
    targets = method.targets(x)
    assert not targets.requires_grad and targets.grad_fn is None
    assert all(not p.requires_grad for p in method.teacher.parameters())
    assert not method.teacher.module.training  # eval mode inside a method in train mode
    optimizer = build_optimizer(method, name="adamw", lr=1e-3)
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in method.teacher.parameters()}
    assert optimised == {id(p) for p in method.student.parameters()} | {id(p) for p in method.decoder.parameters()}
    ignored = set(method._ddp_params_and_buffers_to_ignore)
    assert ignored == {f"teacher.{k}" for k in method.teacher.state_dict()} and ignored
    assert all(k.startswith("teacher.") for k in method.state_dict() if k in ignored)
    # the teacher is saved with the method (checkpoints, resume)
    assert any(k.startswith("teacher.module.blocks.0.") for k in method.state_dict())
    out = method(x, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert method.encoder is method.teacher.module
    assert set(method.export()) == {"encoder", "student"} and method.export()["student"] is method.student


# -- targets and loss --------------------------------------------------------------------------------------


def reference_targets(hidden: list[torch.Tensor], top_k: int, per_layer: str, final_ln: bool) -> torch.Tensor:
    """data2vec's recipe as written in the reference: F.instance_norm on (B, C, L), or F.layer_norm per token."""
    layers = []
    for h in hidden[-top_k:]:
        h = h.float()
        if per_layer == "instance":
            h = F.instance_norm(h.transpose(1, 2)).transpose(1, 2)
        elif per_layer == "layer":
            h = F.layer_norm(h, h.shape[-1:])
        layers.append(h)
    y = sum(layers) / len(layers)
    return F.layer_norm(y, y.shape[-1:]) if final_ln else y


@pytest.mark.parametrize(
    ("per_layer", "final_ln", "top_k"), [("instance", True, 2), ("layer", True, 3), ("none", False, 1)]
)
def test_targets_are_the_reference_formula(per_layer, final_ln, top_k):
    method = make(target_norm=per_layer, normalize_targets=final_ln, top_k=top_k)
    with torch.no_grad():  # a teacher that differs from its init, so that every layer matters
        for p in method.teacher.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x = clips()
    teacher = method.teacher.module
    z = teacher.tokenize(x)
    hidden = []
    for block in teacher.blocks:  # the block outputs before the final LayerNorm, by hand
        z = block(z)
        hidden.append(z.detach())
    expected = reference_targets(hidden, top_k, per_layer, final_ln)
    torch.testing.assert_close(method.targets(x), expected, rtol=1e-5, atol=1e-5)
    idx = torch.stack([torch.randperm(z.shape[1], generator=torch.Generator().manual_seed(i))[:7] for i in range(8)])
    picked = torch.stack([expected[i, idx[i]] for i in range(8)])
    torch.testing.assert_close(method.targets(x, select_idx=idx), picked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        contextual_targets(hidden, top_k=top_k, target_norm=per_layer, normalize_targets=final_ln), expected
    )


def replay(method: Skeleton2vec, x: torch.Tensor, seed: int):
    """The step redrawn from ``seed`` with the public functions: augmentation, then the mask of every person."""
    g = torch.Generator().manual_seed(seed)
    x = augment(x, AugmentConfig.skeleton2vec(), layout=method.layout, generator=g)
    persons = rearrange(x, "n m t v c -> (n m) t v c")
    cfg = method.config
    mask = motion_aware_tube_mask(
        persons, segment=cfg.segment, tube_len=cfg.tube_len, mask_ratio=cfg.mask_ratio, beta=cfg.beta, generator=g
    )
    return x, mask


def test_loss_is_the_mse_on_masked_tokens_only():
    method = make()
    x = clips()
    out = method(x, generator=torch.Generator().manual_seed(5))
    xa, mask = replay(method, x, 5)
    # the full decode (every token), the reference way: predictions and targets at all L tokens, loss on the mask
    latent = method.student.encode(method.student.tokenize(xa), keep_idx=mask.keep_idx)
    pred = method.decoder(latent, mask.restore_idx)  # (B, L, D)
    target = method.targets(xa)
    sq = ((pred - target) ** 2).mean(dim=-1)  # (B, L)
    expected = (sq * mask.mask).sum() / mask.mask.sum()
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-6)
    # changing the prediction at visible tokens changes nothing: the loss' gradient there is exactly zero
    captured = {}

    def keep(module, args, output):
        output.retain_grad()
        captured["z"] = output

    handle = method.decoder.blocks[-1].register_forward_hook(keep)
    method.zero_grad()
    method(x, generator=torch.Generator().manual_seed(5))["loss"].backward()
    handle.remove()
    grad = captured["z"].grad.abs().sum(dim=-1)  # (B, L)
    assert torch.all(grad[~mask.mask] == 0)
    assert torch.all(grad[mask.mask] > 0)
    assert out["visible_tokens"] == mask.keep_idx.shape[1]


def test_motion_head_adds_the_mamp_motion_loss():
    method = make(motion_head=True, motion_weight=0.5)
    out = method(clips(), generator=torch.Generator().manual_seed(2))
    assert {"loss_feat", "loss_motion"} <= out.keys()
    torch.testing.assert_close(out["loss"].detach(), out["loss_feat"] + 0.5 * out["loss_motion"])
    out["loss"].backward()
    assert method.motion_head is not None and method.motion_head.weight.grad is not None


def test_determinism_and_health_scalars():
    x = clips()
    a = make()(x, generator=torch.Generator().manual_seed(3))
    b = make()(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a["loss"], b["loss"])
    assert 0.5 < float(a["target_var"]) <= 1.0  # LayerNorm targets: unit variance per token
    assert float(a["pred_var"]) > 0
    method = make(collapse_floor=0.5, collapse_grace_steps=10)
    assert method.check_health({"target_var": torch.tensor(0.1), "pred_var": torch.tensor(1.0)}, 10) is None
    message = method.check_health({"target_var": torch.tensor(0.1), "pred_var": torch.tensor(1.0)}, 11)
    assert message is not None and "step 11" in message and "target_var" in message and "0.5" in message
    assert (
        make(collapse_floor=0.0).check_health({"target_var": torch.tensor(0.0), "pred_var": torch.tensor(0.0)}, 99)
        is None
    )


def test_loss_decreases_on_real_data(ucla_batch):
    """A few dozen AdamW steps on 20 real NW-UCLA clips (fixed evaluation draws) lower the loss clearly."""
    torch.manual_seed(0)
    ucla_batch = ucla_batch[:, :, ::2].contiguous()  # 15 frames: 5 segments x 20 joints, one tube
    method = make(layout="kinect20", frames=15, mask_ratio=0.8, ema_decay_start=0.99, ema_anneal_steps=1000)
    optimizer = build_optimizer(method, name="adamw", lr=2e-3, betas=(0.9, 0.95), weight_decay=0.05)

    def evaluate() -> float:
        with torch.no_grad():
            return float(method(ucla_batch, generator=torch.Generator().manual_seed(123))["loss"])

    before = evaluate()
    g = torch.Generator().manual_seed(0)
    for step in range(1, 31):
        out = method(ucla_batch, generator=g)
        optimizer.zero_grad()
        out["loss"].backward()
        nn.utils.clip_grad_norm_(method.parameters(), 4.0)
        optimizer.step()
        method.after_step(step)
    after = evaluate()
    assert after < 0.7 * before, (before, after)


# -- DDP --------------------------------------------------------------------------------------------------

DDP_ROWS = 3  # per rank; global batch 6
DDP_CFG = {**TINY, "rotation": 0.3, "ema_decay_start": 0.5, "ema_decay_end": 0.5}


def _rank_generator(rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(100 + rank)


def _ddp_worker(rank: int, world: int, out_dir: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(rank)  # a different global RNG on every rank: the weights come from init_generator
    method = Skeleton2vec(
        layout="ntu25",
        config=Skeleton2vecConfig(**DDP_CFG),
        frames=30,
        distributed=True,
        init_generator=torch.Generator().manual_seed(0),
    ).double()
    model = nn.parallel.DistributedDataParallel(method)
    x = clips(n=world * DDP_ROWS, dtype=torch.float64)[rank * DDP_ROWS : (rank + 1) * DDP_ROWS]
    out = model(x, generator=_rank_generator(rank))
    out["loss"].backward()
    result = {k: v.detach() for k, v in out.items()}
    result.update({f"grad.{name}": p.grad for name, p in method.named_parameters() if p.requires_grad})
    torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1).step()
    method.after_step(1)
    result.update({f"teacher.{k}": v for k, v in method.teacher.state_dict().items()})
    result["ignored"] = torch.tensor(len(model.parameters_to_ignore))
    return result


def test_ddp_gives_the_single_process_loss_and_gradients(spawn_gloo):
    """2 gloo ranks × 3 clips = one process on the 6 clips with the same per-rank draws; identical teachers."""
    results = spawn_gloo(_ddp_worker, 2)

    method = Skeleton2vec(
        layout="ntu25", config=Skeleton2vecConfig(**DDP_CFG), frames=30, init_generator=torch.Generator().manual_seed(0)
    ).double()
    x = clips(n=2 * DDP_ROWS, dtype=torch.float64)
    # one process, the global batch: each rank's rows get that rank's draws (augmentation then masks)
    gens = [_rank_generator(r) for r in range(2)]
    augmented = torch.cat(
        [
            augment(x[r * 3 : (r + 1) * 3], method.augmentation, layout=method.layout, generator=gens[r])
            for r in range(2)
        ]
    )
    masks = []
    for r in range(2):
        part = rearrange(augmented[r * 3 : (r + 1) * 3], "n m t v c -> (n m) t v c")
        masks.append(method._mask(part, gens[r]))
    keep = torch.cat([m.keep_idx for m in masks])
    restore = torch.cat([m.restore_idx for m in masks])
    masked = torch.cat([m.mask_idx for m in masks])
    latent = method.student.encode(method.student.tokenize(augmented), keep_idx=keep)
    pred = method.decoder(latent, restore, select_idx=masked)
    loss = F.mse_loss(pred, method.targets(augmented, select_idx=masked))
    loss.backward()
    mean_loss = (results[0]["loss"] + results[1]["loss"]) / 2
    torch.testing.assert_close(mean_loss, loss.detach(), rtol=1e-10, atol=1e-12)
    for r in range(2):
        assert int(results[r]["ignored"]) == len(method._ddp_params_and_buffers_to_ignore)
        torch.testing.assert_close(results[r]["target_var"], results[0]["target_var"])  # averaged over ranks
        for name, p in method.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(results[r][f"grad.{name}"], p.grad, rtol=1e-8, atol=1e-10, msg=name)
    for key in method.teacher.state_dict():
        assert torch.equal(results[0][f"teacher.{key}"], results[1][f"teacher.{key}"]), key
