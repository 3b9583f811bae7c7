"""Impossible config values are refused before any work: a ConfigError naming the key and its allowed values,
raised while the config is loaded (before the run directory exists and before any model is built)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.cli import main
from skelssl.config import load_config
from skelssl.data.store import SkeletonStore
from skelssl.engine.pretrain import PretrainConfig, build_method
from skelssl.errors import ConfigError
from skelssl.masking.tokens import tube_mask
from skelssl.methods.mamp import MAMP, MAMPConfig
from skelssl.methods.skeleton2vec import Skeleton2vec, Skeleton2vecConfig
from skelssl.models.stgcn import STGCN
from skelssl.models.transformer import SkeletonTransformer
from skelssl.skeleton.layouts import get_layout


@pytest.fixture(scope="module")
def store(small_ucla_store: Path) -> Path:
    return small_ucla_store


#: (preset, overrides, words the error must hold: the key and the allowed values).
CASES = {
    # masks that keep no token, or remove everything
    "pstl csm every joint": ("pstl/nw-ucla", ["pstl.csm_joints=20"], ["pstl.csm_joints = 20", "<= 19"]),
    "pstl matm every frame": ("pstl/nw-ucla", ["pstl.matm_frames=25"], ["pstl.matm_frames = 25", "<= 24"]),
    "pstl matm longer clip": ("pstl/nw-ucla", ["data.frames=20", "pstl.matm_frames=10"], ["matm_frames <= 9"]),
    "s2v tube keeps no joint": (
        "skeleton2vec/nw-ucla",
        ["skeleton2vec.mask_ratio=0.96"],
        ["skeleton2vec.mask_ratio = 0.96", "20 joints per tube on kinect20", "mask_ratio <= 0.95"],
    ),
    "s2v ratio 1": ("skeleton2vec/nw-ucla", ["skeleton2vec.mask_ratio=1.0"], ["mask_ratio must be in (0, 1)"]),
    "s2v ratio negative": ("skeleton2vec/nw-ucla", ["skeleton2vec.mask_ratio=-0.5"], ["mask_ratio must be in (0, 1)"]),
    "s2v random keeps none": (
        "skeleton2vec/nw-ucla",
        ["skeleton2vec.mask=random", "skeleton2vec.mask_ratio=0.999"],
        ["skeleton2vec.mask_ratio = 0.999", "200 tokens", "allowed here"],
    ),
    "mamp keeps none": ("mamp/nw-ucla", ["mamp.mask_ratio=0.9999"], ["mamp.mask_ratio = 0.9999", "160 tokens"]),
    # segment / tube lengths that do not divide the clip
    "s2v segment": ("skeleton2vec/nw-ucla", ["skeleton2vec.segment=4"], ["skeleton2vec.segment", "divisor of 30"]),
    "s2v tube_len": ("skeleton2vec/nw-ucla", ["skeleton2vec.tube_len=3"], ["skeleton2vec.tube_len = 3", "1, 2, 5, 10"]),
    "s2v frames": ("skeleton2vec/nw-ucla", ["data.frames=32"], ["not divisible by segment = 3", "data.frames = 30"]),
    "mamp segment": ("mamp/nw-ucla", ["mamp.segment=5"], ["mamp.segment", "divisor of 32"]),
    "mamp one patch": ("mamp/nw-ucla", ["mamp.segment=32"], ["mamp.segment = 32", "segment <= 16"]),
    # the store: split, part, batch size
    "split typo": ("pstl/nw-ucla", ["data.split=xveiw"], ["data.split = 'xveiw'", "did you mean 'xview'", "xview"]),
    "split absent": ("pstl/nw-ucla", ["data.split=xsub"], ["data.split = 'xsub'", "its splits: xview"]),
    "part absent": ("pstl/nw-ucla", ["data.part=val"], ["data.part = 'val'", "allowed: train, test"]),
    "batch > dataset": ("pstl/nw-ucla", ["train.batch_size=4096"], ["train.batch_size = 4096", "allowed: 1.."]),
    # wrong types
    "epochs abc": ("pstl/nw-ucla", ["train.epochs=abc"], ["train.epochs", "expected int"]),
    "list for scalar": ("pstl/nw-ucla", ["train.batch_size=[8,8]"], ["train.batch_size", "list"]),
    "str for float": ("skeleton2vec/nw-ucla", ["skeleton2vec.mask_ratio=high"], ["skeleton2vec.mask_ratio"]),
    "zero epochs": ("pstl/nw-ucla", ["train.epochs=0"], ["train", "epochs must be at least 1"]),
    "warm-up longer than training": ("pstl/nw-ucla", ["--epochs", "1"], ["schedule.warmup_epochs = 2", "0..1"]),
    "unknown key": ("pstl/nw-ucla", ["pstl.csm_joint=3"], ["did you mean 'pstl.csm_joints'"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_refuses_before_the_run_directory(store: Path, tmp_path: Path, capsys, case: str) -> None:
    preset, overrides, words = CASES[case]
    run = tmp_path / "run"
    code = main(["pretrain", preset, "--data", str(store), "--out", str(run), *overrides])
    err = capsys.readouterr().err
    assert code == 2 and "ConfigError" not in err, err
    for word in words:
        assert word in err, (word, err)
    assert not run.exists()


def test_presets_load_against_the_store(store: Path) -> None:
    for preset in ("pstl/nw-ucla", "skeleton2vec/nw-ucla", "mamp/nw-ucla"):
        from skelssl.configs import resolve

        cfg = load_config(PretrainConfig, resolve(preset), [f"data.store={store}"])
        assert cfg.data.store == str(store)


def test_missing_store_is_left_to_pretrain(tmp_path: Path) -> None:
    """The config can be loaded before its store is prepared; only store-free checks run then."""
    cfg = load_config(PretrainConfig, None, [f"data.store={tmp_path / 'not-yet'}", "train.batch_size=100000"])
    assert cfg.train.batch_size == 100000
    with pytest.raises(ConfigError, match=r"pstl\.matm_frames"):
        load_config(PretrainConfig, None, [f"data.store={tmp_path / 'not-yet'}", "pstl.matm_frames=30"])


@pytest.mark.parametrize(
    ("method", "overrides", "words"),
    [
        ("skeleton2vec", {"mask_ratio": 0.97}, "skeleton2vec.mask_ratio = 0.97"),
        ("mamp", {"segment": 7}, "mamp.segment"),
        ("pstl", {"csm_joints": 21}, "pstl.csm_joints = 21"),
    ],
)
def test_build_method_refuses_before_building(
    store: Path, method: str, overrides: dict, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configs made in code (no load_config) are refused by build_method, before any weight is allocated."""
    cfg = PretrainConfig(method=method)  # type: ignore[arg-type]
    cfg.data.clips = "pstl" if method == "pstl" else "skeleton2vec"  # type: ignore[assignment]
    cfg.data.frames = None if method == "pstl" else 30
    for key, value in overrides.items():
        setattr(getattr(cfg, method), key, value)
    opened = SkeletonStore.open(store)

    def built(*args: object, **kwargs: object) -> None:
        raise AssertionError("an encoder was built before the config was refused")

    monkeypatch.setattr(STGCN, "__init__", built)
    monkeypatch.setattr(SkeletonTransformer, "__init__", built)
    with pytest.raises(ConfigError, match=words):
        build_method(cfg, opened, distributed=False)


@settings(max_examples=40, deadline=None)
@given(
    ratio=st.floats(0.0, 1.0, exclude_min=True, exclude_max=True),
    joints=st.sampled_from([15, 17, 20, 25]),
    rounding=st.sampled_from(["reference", "exact"]),
)
def test_mask_ratio_check_agrees_with_the_mask(ratio: float, joints: int, rounding: str) -> None:
    """check_setup accepts a mask_ratio exactly when the real tube mask keeps >= 1 joint per tube and masks >= 1."""
    layout = next(
        get_layout(n) for n in ("florence15", "coco17", "kinect20", "ntu25") if get_layout(n).num_joints == joints
    )
    cfg = Skeleton2vecConfig(mask="tube", mask_ratio=ratio, rounding=rounding, segment=2, tube_len=2)  # type: ignore[arg-type]
    try:
        Skeleton2vec.check_setup(cfg, layout=layout, frames=8)
        accepted = True
    except ConfigError as err:
        assert "skeleton2vec.mask_ratio" in str(err) and "allowed here" in str(err)
        accepted = False
    try:
        mask = tube_mask(
            torch.zeros(1, 8, joints, 3), segment=2, tube_len=2, mask_ratio=ratio, rounding=rounding,  # type: ignore[arg-type]
            generator=torch.Generator(),
        )  # fmt: skip
        works = 0 < mask.keep_idx.shape[1] < 4 * joints
    except ConfigError:
        works = False
    assert accepted == works, (ratio, joints, rounding)


def test_mamp_check_agrees_with_construction() -> None:
    layout = get_layout("kinect20")
    for ratio in (0.5, 0.99, 0.995, 0.999):
        cfg = MAMPConfig(dim=16, depth=1, heads=2, decoder_dim=16, decoder_depth=1, decoder_heads=2, mask_ratio=ratio)
        try:
            MAMP.check_setup(cfg, layout=layout, frames=32)
        except ConfigError:
            with pytest.raises(ConfigError):
                MAMP(layout=layout, config=cfg, frames=32)
        else:
            MAMP(layout=layout, config=cfg, frames=32)


def test_pretrain_refuses_a_code_built_config_before_the_run_directory(store: Path, tmp_path: Path) -> None:
    """``pretrain()`` validates a config made or edited in code, and checks the data before writing anything."""
    from skelssl.engine.pretrain import pretrain

    cfg = load_config(PretrainConfig, None, [f"data.store={store}", "data.split=xview", "train.batch_size=8"])
    cfg.train.batch_size = 4096  # edited after loading: only pretrain() can refuse it
    with pytest.raises(ConfigError, match=r"train\.batch_size = 4096"):
        pretrain(cfg, run_dir=tmp_path / "run", echo=lambda s: None)
    cfg.train.batch_size = 8
    cfg.schedule.warmup_epochs = cfg.train.epochs + 1
    with pytest.raises(ConfigError, match=r"schedule\.warmup_epochs"):
        pretrain(cfg, run_dir=tmp_path / "run", echo=lambda s: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("batch", "size", "world", "error"),
    [
        (8, 40, 1, None),
        (40, 40, 1, None),
        (41, 40, 1, r"larger than the 40 training sequences"),
        (8, 40, 2, None),
        (9, 40, 2, r"not divisible by the 2 processes"),
        (42, 41, 2, r"larger than the 41 training sequences .* over 2 processes; allowed: a multiple of 2 up to 40"),
        (40, 41, 2, None),
    ],
)
def test_check_batch_size_per_process(batch: int, size: int, world: int, error: str | None) -> None:
    from skelssl.engine.pretrain import check_batch_size

    cfg = PretrainConfig()
    cfg.train.batch_size = batch
    if error is None:
        check_batch_size(cfg, size, world=world)
    else:
        with pytest.raises(ConfigError, match=error):
            check_batch_size(cfg, size, world=world)
