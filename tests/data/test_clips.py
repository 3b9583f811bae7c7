"""ClipConfig and ClipDataset: presets, the three reference pipelines end to end, seeding, persons, shapes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import default_collate

from skelssl.data.clips import ClipConfig, ClipDataset, check_config, make_clip
from skelssl.data.importers import get_importer_class
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.errors import ConfigError
from skelssl.skeleton.layouts import get_layout

from .test_normalize import pad_ctvm, ref_aimclr_frame50, ref_prenormalize3d, ref_seq_translation
from .test_temporal import mamp_interpolate, pyskl_test_clips

TWO_PERSON = "S001C003P008R002A058"
ONE_FRAME = "a02_s09_e04_v02"
UCLA_FILES = (ONE_FRAME, "a03_s09_e01_v01", "a12_s05_e01_v01", "a08_s06_e02_v01", "a04_s01_e04_v01")
UCLA_FILES += ("a09_s09_e03_v01", "a01_s08_e02_v01", "a09_s09_e02_v01", "a04_s05_e04_v02", "a06_s03_e04_v01")


@pytest.fixture(scope="module")
def ntu_store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    out = tmp_path_factory.mktemp("clips") / "ntu60"
    prepare_store(get_importer_class("ntu60")(shared_data / "ntu60-samples" / "skeletons"), out)
    return SkeletonStore.open(out)


@pytest.fixture(scope="module")
def ucla_store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    src = tmp_path_factory.mktemp("ucla-clips-src")
    for name in UCLA_FILES:
        shutil.copy(shared_data / "nw-ucla" / "all_sqe" / f"{name}.json", src)
    out = tmp_path_factory.mktemp("clips") / "ucla"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    return SkeletonStore.open(out)


def position_of(store: SkeletonStore, name: str) -> int:
    return int(np.flatnonzero(store.names == name)[0])


# -- config -----------------------------------------------------------------------------------------------


def test_presets() -> None:
    pstl = ClipConfig.pstl()
    assert (pstl.normalize, pstl.view, pstl.frames, pstl.persons, pstl.y_rotation) == (
        "aimclr",
        "resize",
        50,
        2,
        "reference",
    )
    s2v = ClipConfig.skeleton2vec()
    assert (s2v.normalize, s2v.view, s2v.frames, s2v.persons, s2v.p_interval, s2v.align_spine) == (
        "pyskl",
        "uniform",
        90,
        2,
        (1.0, 1.0),
        False,
    )
    mamp = ClipConfig.mamp()
    assert (mamp.normalize, mamp.view, mamp.frames, mamp.p_interval, mamp.min_crop, mamp.test_crop) == (
        "mamp",
        "crop_resize",
        120,
        (0.5, 1.0),
        64,
        0.95,
    )
    assert ClipConfig.skeleton2vec(align_spine=True).align_spine
    assert pstl.deterministic and mamp.replace(train=False).deterministic and not mamp.deterministic
    assert ClipConfig(view="uniform").frames == 90 and ClipConfig(view="crop_resize").p_interval == (0.5, 1.0)
    assert ClipConfig(p_interval=(0.7,)).p_interval == (0.7, 0.7)
    assert ClipConfig.mamp().to_dict()["p_interval"] == [0.5, 1.0]


@pytest.mark.parametrize(
    "bad",
    [
        {"normalize": "aimclrr"},
        {"view": "crop"},
        {"frames": 0},
        {"persons": 0},
        {"p_interval": (0.0, 1.0)},
        {"p_interval": (0.9, 0.5)},
        {"test_crop": 1.5},
        {"y_rotation": "sometimes"},
        {"seed": -1},
        {"frames": True},
    ],
)
def test_bad_config_is_a_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        ClipConfig(**bad)


def test_rotations_refused_on_2d_layouts() -> None:
    coco = get_layout("coco17")
    with pytest.raises(ConfigError, match="y_rotation='off'"):
        check_config(ClipConfig.pstl(), coco, 2)
    with pytest.raises(ConfigError, match="align_spine"):
        check_config(ClipConfig.skeleton2vec(align_spine=True), coco, 2)
    check_config(ClipConfig.pstl(y_rotation="off"), coco, 2)
    check_config(ClipConfig.skeleton2vec(), coco, 2)
    check_config(ClipConfig.mamp(), coco, 2)
    x = np.random.default_rng(0).standard_normal((30, 1, 17, 2)).astype(np.float32)
    for config in (ClipConfig.pstl(y_rotation="off"), ClipConfig.skeleton2vec(), ClipConfig.mamp(train=False)):
        rng = np.random.default_rng(0)
        assert make_clip(x, coco, config, rng).shape == (config.frames, 2, 17, 2)


# -- the reference pipelines end to end on real data ------------------------------------------------------


def test_pstl_items_equal_aimclr_frame50(ntu_store: SkeletonStore) -> None:
    ds = ClipDataset(store=ntu_store, config=ClipConfig.pstl())
    assert len(ds) == 5
    for i in range(len(ds)):
        item = ds[i]
        ref = ref_aimclr_frame50(pad_ctvm(ntu_store.keypoints(i)))  # (C, 50, V, M)
        assert item["x"].dtype == torch.float32 and item["x"].shape == (2, 50, 25, 3)
        np.testing.assert_allclose(item["x"].numpy(), ref.transpose(3, 1, 2, 0), rtol=0, atol=2e-5)
        assert item["label"] == ntu_store.labels[i] and item["index"] == i
    two = ds[position_of(ntu_store, TWO_PERSON)]["x"]
    assert two[1].abs().sum() > 0  # the second person is there


def test_skeleton2vec_test_items_equal_pyskl(ntu_store: SkeletonStore) -> None:
    ds = ClipDataset(store=ntu_store, config=ClipConfig.skeleton2vec(train=False))
    for i in range(len(ds)):
        kp = ntu_store.keypoints(i).transpose(1, 0, 2, 3)  # PySKL's (M, T, V, C)
        normed = ref_prenormalize3d(kp, align_spine=False).astype(np.float32)
        inds = pyskl_test_clips(normed.shape[1], 90)
        ref = normed[:, inds]  # FormatGCNInput: already 2 persons
        np.testing.assert_allclose(ds[i]["x"].numpy(), ref, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(ds[i]["x"].numpy(), ds[(7, i)]["x"].numpy())  # no epoch dependence


def test_mamp_test_items_equal_mamp_feeder(ntu_store: SkeletonStore) -> None:
    ds = ClipDataset(store=ntu_store, config=ClipConfig.mamp(train=False))
    for i in range(len(ds)):
        x = ntu_store.keypoints(i)
        t = len(x)
        moved = ref_seq_translation(x.reshape(t, 150)).reshape(x.shape)
        padded = np.zeros((300, *x.shape[1:]), dtype=np.float32)  # the .npz holds 300 frames
        padded[:t] = moved
        valid = int(np.sum(padded.transpose(3, 0, 2, 1).sum(0).sum(-1).sum(-1) != 0))
        bias = int((1 - 0.95) * valid / 2)
        ref = mamp_interpolate(padded[bias : valid - bias], 120)
        np.testing.assert_allclose(ds[i]["x"].numpy(), ref.transpose(1, 0, 2, 3), rtol=0, atol=2e-5)


def test_one_frame_sequence_in_every_pipeline(ucla_store: SkeletonStore) -> None:
    i = position_of(ucla_store, ONE_FRAME)
    assert ucla_store.lengths[i] == 1
    frame = ucla_store.keypoints(i)[0]  # (1, 20, 3)
    for config in (ClipConfig.pstl(), ClipConfig.skeleton2vec(), ClipConfig.mamp()):
        for train in (True, False):
            ds = ClipDataset(store=ucla_store, config=config.replace(train=train))
            x = ds[i]["x"].numpy()  # (2, T, 20, 3)
            assert x.shape == (2, config.frames, 20, 3) and np.isfinite(x).all()
            assert not x[1].any()  # the padded person
            np.testing.assert_allclose(x[0], np.broadcast_to(x[0, :1], x[0].shape), atol=1e-6)  # one pose repeated
    mamp = ClipDataset(store=ucla_store, config=ClipConfig.mamp())[i]["x"].numpy()
    np.testing.assert_allclose(mamp[0, 0], frame[0] - frame[0, 1], atol=1e-6)


def test_all_zero_sequence_gives_a_zero_clip() -> None:
    ntu25 = get_layout("ntu25")
    zero = np.zeros((40, 2, 25, 3), dtype=np.float32)
    for config in (ClipConfig.pstl(), ClipConfig.skeleton2vec(), ClipConfig.mamp()):
        clip = make_clip(zero, ntu25, config, np.random.default_rng(0))
        assert clip.shape == (config.frames, 2, 25, 3) and not clip.any()


# -- dataset mechanics ------------------------------------------------------------------------------------


def test_split_and_indices(ucla_store: SkeletonStore, ntu_store: SkeletonStore) -> None:
    train = ClipDataset(store=ucla_store, config=ClipConfig.mamp(), split="xview", part="train")
    test = ClipDataset(store=ucla_store.path, config=ClipConfig.mamp(), split="xview", part="test")
    assert sorted([*train.indices, *test.indices]) == list(range(len(ucla_store)))
    assert all(ucla_store.field("views")[i] == 3 for i in test.indices)
    assert [test[k]["index"] for k in range(len(test))] == list(test.indices)
    np.testing.assert_array_equal(test.labels, ucla_store.labels[test.indices])
    picked = ClipDataset(store=ntu_store, indices=[4, 1])
    assert [picked[0]["index"], picked[1]["index"]] == [4, 1] and len(picked) == 2
    with pytest.raises(ConfigError):
        ClipDataset(store=ntu_store, indices=[5])
    with pytest.raises(ConfigError):
        ClipDataset(store=ntu_store, indices=[0], split="xsub", part="train")
    with pytest.raises(ConfigError):
        ClipDataset(store=ntu_store, split="xsub")
    with pytest.raises(IndexError):
        picked[2]


def test_collate_gives_n_m_t_v_c(ntu_store: SkeletonStore) -> None:
    ds = ClipDataset(store=ntu_store, config=ClipConfig.skeleton2vec())
    batch = default_collate([ds[i] for i in range(4)])
    assert batch["x"].shape == (4, 2, 90, 25, 3) and batch["x"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["index"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("persons", [1, 2, 3])
def test_persons_padded_or_truncated(ntu_store: SkeletonStore, persons: int) -> None:
    i = position_of(ntu_store, TWO_PERSON)
    full = ClipDataset(store=ntu_store, config=ClipConfig.pstl())[i]["x"]
    x = ClipDataset(store=ntu_store, config=ClipConfig.pstl(persons=persons))[i]["x"]
    assert x.shape == (persons, 50, 25, 3)
    k = min(persons, 2)
    torch.testing.assert_close(x[:k], full[:k], rtol=0, atol=0)
    assert not x[k:].any()


def test_random_views_are_a_function_of_seed_epoch_position(ntu_store: SkeletonStore) -> None:
    for config in (ClipConfig.mamp(), ClipConfig.skeleton2vec()):
        ds = ClipDataset(store=ntu_store, config=config)
        a = ds[(3, 2)]["x"]
        ds.set_epoch(3)
        torch.testing.assert_close(ds[2]["x"], a, rtol=0, atol=0)  # set_epoch == the epoch in the key
        for _ in range(3):  # whatever was drawn before, and in whichever order
            ds[(1, 0)]
        torch.testing.assert_close(ds[(3, 2)]["x"], a, rtol=0, atol=0)
        fresh = ClipDataset(store=ntu_store, config=config)
        torch.testing.assert_close(fresh[(3, 2)]["x"], a, rtol=0, atol=0)
        assert not torch.equal(ds[(4, 2)]["x"], a)  # another epoch
        other_seed = ClipDataset(store=ntu_store, config=config.replace(seed=1))
        assert not torch.equal(other_seed[(3, 2)]["x"], a)


def test_same_sequence_twice_gets_different_views(ntu_store: SkeletonStore) -> None:
    ds = ClipDataset(store=ntu_store, config=ClipConfig.mamp(), indices=[4, 4, 4, 4])
    views = [ds[(0, k)]["x"] for k in range(4)]
    assert all(not torch.equal(views[a], views[b]) for a in range(4) for b in range(a + 1, 4))
    test = ClipDataset(store=ntu_store, config=ClipConfig.mamp(train=False), indices=[4, 4])
    torch.testing.assert_close(test[(0, 0)]["x"], test[(5, 1)]["x"], rtol=0, atol=0)  # the test view is fixed


def test_pstl_items_are_deterministic(ntu_store: SkeletonStore) -> None:
    ds = ClipDataset(store=ntu_store, config=ClipConfig.pstl())
    torch.testing.assert_close(ds[(0, 1)]["x"], ds[(9, 1)]["x"], rtol=0, atol=0)


def test_dataset_pickles_by_reference(ntu_store: SkeletonStore) -> None:
    import pickle

    ds = ClipDataset(store=ntu_store, config=ClipConfig.mamp(), indices=[0, 3])
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000
    copy = pickle.loads(blob)
    torch.testing.assert_close(copy[(2, 1)]["x"], ds[(2, 1)]["x"], rtol=0, atol=0)


# -- any length, any number of persons --------------------------------------------------------------------

CONFIGS = [
    ClipConfig.pstl(),
    ClipConfig.pstl(y_rotation="exact", persons=1),
    ClipConfig.skeleton2vec(),
    ClipConfig.skeleton2vec(train=False, align_spine=True, persons=3),
    ClipConfig.mamp(),
    ClipConfig.mamp(train=False, persons=4),
    ClipConfig(view="crop_resize", p_interval=(0.1, 0.3), min_crop=1, frames=17),
    ClipConfig(view="uniform", p_interval=(0.2, 0.9)),
]


@given(
    length=st.integers(1, 400),
    persons=st.integers(1, 4),
    which=st.integers(0, len(CONFIGS) - 1),
    seed=st.integers(0, 2**31),
    holes=st.booleans(),
)
@settings(max_examples=120, deadline=None)
def test_any_length_and_persons(length: int, persons: int, which: int, seed: int, holes: bool) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((length, persons, 25, 3)).astype(np.float32)
    if holes:  # absent persons in some frames
        x[rng.random((length, persons)) < 0.3] = 0
    config = CONFIGS[which]
    original = x.copy()
    clip = make_clip(x, get_layout("ntu25"), config, np.random.default_rng(seed))
    np.testing.assert_array_equal(x, original)  # the input is never modified
    assert clip.shape == (config.frames, config.persons, 25, 3)
    assert clip.dtype == np.float32 and np.isfinite(clip).all()
    again = make_clip(x, get_layout("ntu25"), config, np.random.default_rng(seed))
    np.testing.assert_array_equal(clip, again)


def test_clip_config_from_applies_only_the_given_overrides() -> None:
    from skelssl.data.clips import clip_config_from

    base = clip_config_from("pstl", train=True, seed=3)
    assert base == ClipConfig.pstl(seed=3)
    cfg = clip_config_from("pstl", train=False, seed=3, persons=1, frames=40, normalize="pyskl", align_spine=True)
    assert (cfg.normalize, cfg.align_spine, cfg.view, cfg.frames, cfg.persons, cfg.train) == (
        "pyskl",
        True,
        "resize",
        40,
        1,
        False,
    )
    with pytest.raises(ConfigError, match="unknown clip preset"):
        clip_config_from("pstll", train=True, seed=0)
    with pytest.raises(ConfigError, match="align_spine"):
        ClipConfig.pstl(align_spine=True)  # alignment belongs to the pyskl normalisation
