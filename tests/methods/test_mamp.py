"""MAMP: motion targets against a loop re-derivation, masked-only loss, reference sizes, DDP, learning."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import default_collate

from skelssl.data.augment import AugmentConfig, augment
from skelssl.data.clips import ClipConfig, ClipDataset
from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.engine.optim import build_optimizer
from skelssl.errors import ConfigError
from skelssl.masking.tokens import motion_aware_mask
from skelssl.methods.mamp import MAMP, MAMPConfig, patch_motion_targets

TINY = {"dim": 32, "depth": 2, "heads": 4, "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 4}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(seed: int = 0, frames: int = 32, layout: str = "ntu25", **changes) -> MAMP:
    cfg = MAMPConfig(**{**TINY, **changes})
    return MAMP(layout=layout, config=cfg, frames=frames, init_generator=torch.Generator().manual_seed(seed)).train()


def clips(n: int = 4, t: int = 32, v: int = 25, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, t, v, 3, generator=g, dtype=dtype).cumsum(dim=2) * 0.05
    if n > 1:
        x[1, 1] = 0
    return x


def test_defaults_are_the_reference():
    cfg = MAMPConfig()
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.segment, cfg.layer_scale, cfg.norm_eps) == (256, 8, 8, 4, None, 1e-5)
    assert (cfg.decoder_depth, cfg.mask_ratio, cfg.tau, cfg.rotation, cfg.normalize_target) == (3, 0.9, 0.8, 0.3, True)
    method = MAMP(layout="ntu25")
    assert sum(p.numel() for p in method.encoder.parameters()) == 6_336_000
    assert method.decoder.out_dim == 12 and method.augmentation == AugmentConfig.mamp()
    with pytest.raises(ConfigError, match="not divisible by segment"):
        make(frames=30)
    with pytest.raises(ConfigError, match="mask_ratio"):
        MAMPConfig(mask_ratio=0.0).check()
    with pytest.raises(ConfigError, match="tau"):
        MAMPConfig(tau=-1.0).check()


def test_motion_targets_by_hand():
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    got = patch_motion_targets(x, segment=4, normalize=False)
    got_norm = patch_motion_targets(x, segment=4)
    assert got.shape == (2, 2 * 3, 12)
    for b in range(2):
        for t in range(2):
            for v in range(3):
                vec = []
                for f in range(4):
                    frame = t * 4 + f
                    nxt = x[b, frame + 1, v] if frame + 1 < 8 else x[b, frame, v]  # last frame's motion is 0
                    vec.extend((nxt - x[b, frame, v]).tolist())
                vec_t = torch.tensor(vec, dtype=torch.float64)
                torch.testing.assert_close(got[b, t * 3 + v], vec_t)
                mean, var = vec_t.mean(), vec_t.var()  # unbiased, as the reference's target.var
                torch.testing.assert_close(got_norm[b, t * 3 + v], (vec_t - mean) / (var + 1e-6).sqrt())


def replay(method: MAMP, x: torch.Tensor, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = augment(x, AugmentConfig.mamp(), layout=method.layout, generator=g)
    persons = rearrange(x, "n m t v c -> (n m) t v c")
    mask = motion_aware_mask(persons, segment=4, mask_ratio=method.config.mask_ratio, tau=0.8, generator=g)
    return x, persons, mask


def test_loss_is_the_reference_masked_mse():
    method = make()
    x = clips()
    out = method(x, generator=torch.Generator().manual_seed(7))
    xa, persons, mask = replay(method, x, 7)
    latent = method.encoder.encode(method.encoder.tokenize(xa), keep_idx=mask.keep_idx)
    pred = method.decoder(latent, mask.restore_idx)  # every token, as the reference decodes
    target = patch_motion_targets(persons, segment=4)
    per_token = ((pred - target) ** 2).mean(dim=-1)
    expected = (per_token * mask.mask).sum() / mask.mask.sum()  # the reference's forward_loss
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-6)
    assert mask.keep_idx.shape[1] == int(8 * 25 * (1 - 0.9))
    # the prediction at visible tokens does not enter the loss: zero gradient there
    captured = {}

    def keep(module, args, output):
        output.retain_grad()
        captured["z"] = output

    handle = method.decoder.blocks[-1].register_forward_hook(keep)
    method(x, generator=torch.Generator().manual_seed(7))["loss"].backward()
    handle.remove()
    grad = captured["z"].grad.abs().sum(dim=-1)
    assert torch.all(grad[~mask.mask] == 0) and torch.all(grad[mask.mask] > 0)


def test_tau_zero_is_random_masking_and_draws_are_seeded():
    x = clips()
    a = make(tau=0.0)(x, generator=torch.Generator().manual_seed(1))
    b = make(tau=0.0)(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a["loss"], b["loss"])
    assert float(a["target_var"]) > 0.5 and float(a["pred_var"]) > 0


@pytest.fixture(scope="module")
def ucla_batch(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    src = tmp_path_factory.mktemp("mamp-ucla-src")
    for f in sorted((shared_data / "nw-ucla" / "all_sqe").glob("a*_s0[12]_e00_v01.json")):
        shutil.copy(f, src)
    out = tmp_path_factory.mktemp("mamp") / "ucla"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    dataset = ClipDataset(store=SkeletonStore.open(out), config=ClipConfig.mamp(frames=16, persons=1))
    return default_collate([dataset[i] for i in range(len(dataset))])["x"]


def test_loss_decreases_on_real_data(ucla_batch):
    assert ucla_batch.shape == (20, 1, 16, 20, 3)
    method = make(layout="kinect20", frames=16, mask_ratio=0.8)
    optimizer = build_optimizer(method, name="adamw", lr=2e-3, betas=(0.9, 0.95), weight_decay=0.05)

    def evaluate() -> float:
        with torch.no_grad():
            return float(method(ucla_batch, generator=torch.Generator().manual_seed(99))["loss"])

    before = evaluate()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        loss = method(ucla_batch, generator=g)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate()
    assert after < 0.7 * before, (before, after)


# -- DDP --------------------------------------------------------------------------------------------------

DDP_ROWS = 3


def _ddp_worker(rank: int, world: int, out_dir: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(rank)
    method = MAMP(
        layout="ntu25",
        config=MAMPConfig(**TINY),
        frames=32,
        distributed=True,
        init_generator=torch.Generator().manual_seed(0),
    ).double()
    model = nn.parallel.DistributedDataParallel(method)
    x = clips(n=world * DDP_ROWS, dtype=torch.float64)[rank * DDP_ROWS : (rank + 1) * DDP_ROWS]
    out = model(x, generator=torch.Generator().manual_seed(50 + rank))
    out["loss"].backward()
    result = {"loss": out["loss"].detach()}
    result.update({f"grad.{name}": p.grad for name, p in method.named_parameters()})
    return result


def test_ddp_gives_the_single_process_loss_and_gradients(spawn_gloo):
    results = spawn_gloo(_ddp_worker, 2)

    method = MAMP(
        layout="ntu25", config=MAMPConfig(**TINY), frames=32, init_generator=torch.Generator().manual_seed(0)
    ).double()
    x = clips(n=2 * DDP_ROWS, dtype=torch.float64)
    parts, masks = [], []
    for r in range(2):  # each rank's rows with that rank's draws
        g = torch.Generator().manual_seed(50 + r)
        xa = augment(x[r * DDP_ROWS : (r + 1) * DDP_ROWS], method.augmentation, layout=method.layout, generator=g)
        parts.append(xa)
        masks.append(method._mask(rearrange(xa, "n m t v c -> (n m) t v c"), g))
    xa = torch.cat(parts)
    keep, restore, masked = (torch.cat([getattr(m, k) for m in masks]) for k in ("keep_idx", "restore_idx", "mask_idx"))
    latent = method.encoder.encode(method.encoder.tokenize(xa), keep_idx=keep)
    pred = method.decoder(latent, restore, select_idx=masked)
    target = patch_motion_targets(rearrange(xa, "n m t v c -> (n m) t v c"), segment=4)
    target = torch.stack([target[i, masked[i]] for i in range(target.shape[0])])
    loss = F.mse_loss(pred, target)
    loss.backward()
    torch.testing.assert_close((results[0]["loss"] + results[1]["loss"]) / 2, loss.detach(), rtol=1e-10, atol=1e-12)
    for r in range(2):
        for name, p in method.named_parameters():
            torch.testing.assert_close(results[r][f"grad.{name}"], p.grad, rtol=1e-8, atol=1e-10, msg=name)
