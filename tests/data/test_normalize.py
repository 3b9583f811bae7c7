"""Normalisations against the reference code, transcribed in the test, on real NTU RGB+D and NW-UCLA samples."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from skelssl.data.importers import get_importer_class
from skelssl.data.normalize import (
    aimclr_valid_length,
    aimclr_y_rotation,
    axis_angle_matrix,
    center_per_frame,
    mamp_translate,
    nonzero_frame_count,
    nonzero_joints,
    pyskl_prenormalize,
)
from skelssl.data.prepare import prepare_store
from skelssl.data.store import SkeletonStore
from skelssl.skeleton.layouts import get_layout

from .test_temporal import cv2_linear_rows

NTU25 = get_layout("ntu25")
KINECT20 = get_layout("kinect20")
TWO_PERSON = "S001C003P008R002A058"
UCLA_FILES = ("a02_s09_e04_v02", "a03_s09_e01_v01", "a12_s05_e01_v01", "a04_s01_e04_v01", "a01_s08_e02_v01")


@pytest.fixture(scope="module")
def ntu(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("norm") / "ntu60"
    prepare_store(get_importer_class("ntu60")(shared_data / "ntu60-samples" / "skeletons"), out)
    store = SkeletonStore.open(out)
    return {seq.name: seq.keypoints for seq in store}


@pytest.fixture(scope="module")
def ucla(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    src = tmp_path_factory.mktemp("ucla-src")
    for name in UCLA_FILES:
        shutil.copy(shared_data / "nw-ucla" / "all_sqe" / f"{name}.json", src)
    out = tmp_path_factory.mktemp("norm") / "ucla"
    prepare_store(get_importer_class("nw-ucla")(src), out)
    store = SkeletonStore.open(out)
    return {seq.name: seq.keypoints for seq in store}


def edited(x: np.ndarray) -> dict[str, np.ndarray]:
    """Copies of a real two-person sequence with absent bodies, as raw files with missing bodies give."""
    gap = x.copy()
    gap[10:15, 0] = 0  # person 0 missing in the middle
    late = x.copy()
    late[:30, 0] = 0  # person 0 appears late: person 1 has more frames
    one = x.copy()
    one[:, 1] = 0
    one[-5:, 0] = 0  # trailing empty frames
    return {"gap": gap, "late": late, "one": one}


# -- reference transcriptions (AimCLR, PySKL, CTR-GCN/MAMP), in their own array layouts ------------------


def ref_aimclr_frame50(data: np.ndarray, center: int = 20, rs: int = 8, ls: int = 4) -> np.ndarray:
    """AimCLR ``NTUMotionProcessor`` (relative, resize to 50, y-rotation) on a padded (C, 300, V, M) array."""
    data = data.astype(np.float32)
    length = (abs(data[:, :, 0, 0]).sum(axis=0) != 0).sum()
    c, t, v, m = data.shape
    data = data - data[:, :, center, :].reshape([c, t, 1, m])
    resized = np.zeros([c, 50, v, m])
    for i in range(m):
        resized[:, :, :, i] = cv2_linear_rows(data[:, :length, :, i].transpose([1, 2, 0]), 50).transpose([2, 0, 1])
    data = resized.astype(np.float32)
    for n in range(m):
        ins = data[:, :, :, n]
        vec = ins[:, :, rs] - ins[:, :, ls]
        vec[1, :] = 0
        l2 = np.sqrt(np.sum(np.square(vec), axis=0))
        thetas = np.arccos(vec[0, :] / (l2 + 0.0001)) * (180 / np.pi)
        if np.sum(vec[2, :]) >= 0:
            thetas = -thetas
        for f in range(50):
            th = thetas[f] * np.pi / 180
            tm = np.array([[np.cos(th), 0, -np.sin(th)], [0, 1, 0], [np.sin(th), 0, np.cos(th)]])
            data[:, f, :, n] = np.dot(tm, ins[:, f, :])
    return data


def pad_ctvm(x: np.ndarray, frames: int = 300) -> np.ndarray:
    """Store order (T, M, V, C) → ST-GCN gendata's zero-padded (C, 300, V, M)."""
    out = np.zeros((x.shape[3], frames, x.shape[2], x.shape[1]), dtype=np.float32)
    out[:, : x.shape[0]] = x.transpose(3, 0, 2, 1)
    return out


def ref_rotation_matrix(axis, theta):
    """2s-AGCN / PySKL ``rotation_matrix`` (Euler–Rodrigues, with its zero thresholds)."""
    if np.abs(axis).sum() < 1e-6 or np.abs(theta) < 1e-6:
        return np.eye(3)
    axis = np.asarray(axis)
    axis = axis / np.sqrt(np.dot(axis, axis))
    a = np.cos(theta / 2.0)
    b, c, d = -axis * np.sin(theta / 2.0)
    aa, bb, cc, dd = a * a, b * b, c * c, d * d
    bc, ad, ac, ab, bd, cd = b * c, a * d, a * c, a * b, b * d, c * d
    return np.array(
        [
            [aa + bb - cc - dd, 2 * (bc + ad), 2 * (bd - ac)],
            [2 * (bc - ad), aa + cc - bb - dd, 2 * (cd + ab)],
            [2 * (bd + ac), 2 * (cd - ab), aa + dd - bb - cc],
        ]
    )


def ref_angle_between(v1, v2):
    if np.abs(v1).sum() < 1e-6 or np.abs(v2).sum() < 1e-6:
        return 0
    v1_u, v2_u = v1 / np.linalg.norm(v1), v2 / np.linalg.norm(v2)
    return np.arccos(np.clip(np.dot(v1_u, v2_u), -1.0, 1.0))


def ref_prenormalize3d(skeleton: np.ndarray, align_spine: bool, center: int = 1) -> np.ndarray:
    """PySKL ``PreNormalize3D.__call__`` on (M, T, V, C) with M in {1, 2}, zaxis [0, 1], xaxis [8, 4]."""
    m, t = skeleton.shape[:2]
    if skeleton.sum() == 0:
        return skeleton
    index0 = [i for i in range(t) if not np.all(np.isclose(skeleton[0, i], 0))]
    if m == 2:
        index1 = [i for i in range(t) if not np.all(np.isclose(skeleton[1, i], 0))]
        if len(index0) < len(index1):
            skeleton = skeleton[:, np.array(index1)]
            skeleton = skeleton[[1, 0]]
        else:
            skeleton = skeleton[:, np.array(index0)]
    else:
        skeleton = skeleton[:, np.array(index0)]
    main_body_center = skeleton[0, 0, center].copy()
    mask = ((skeleton != 0).sum(-1) > 0)[..., None]
    skeleton = (skeleton - main_body_center) * mask
    if align_spine:
        bottom, top = skeleton[0, 0, 0], skeleton[0, 0, 1]
        axis = np.cross(top - bottom, [0, 0, 1])
        matrix_z = ref_rotation_matrix(axis, ref_angle_between(top - bottom, [0, 0, 1]))
        skeleton = np.einsum("abcd,kd->abck", skeleton, matrix_z)
        rshoulder, lshoulder = skeleton[0, 0, 8], skeleton[0, 0, 4]
        axis = np.cross(rshoulder - lshoulder, [1, 0, 0])
        matrix_x = ref_rotation_matrix(axis, ref_angle_between(rshoulder - lshoulder, [1, 0, 0]))
        skeleton = np.einsum("abcd,kd->abck", skeleton, matrix_x)
    return skeleton


def ref_seq_translation(ske_joints: np.ndarray) -> np.ndarray:
    """CTR-GCN ``seq_translation`` on one (T, 150) two-actor array (MAMP's preprocessing)."""
    ske_joints = ske_joints.copy()
    num_frames = ske_joints.shape[0]
    missing_frames_1 = np.where(ske_joints[:, :75].sum(axis=1) == 0)[0]
    missing_frames_2 = np.where(ske_joints[:, 75:].sum(axis=1) == 0)[0]
    i = 0
    while i < num_frames:
        if np.any(ske_joints[i, :75] != 0):
            break
        i += 1
    origin = np.copy(ske_joints[i, 3:6])
    for f in range(num_frames):
        ske_joints[f] -= np.tile(origin, 50)
    if len(missing_frames_1) > 0:
        ske_joints[missing_frames_1, :75] = np.zeros((len(missing_frames_1), 75), dtype=np.float32)
    if len(missing_frames_2) > 0:
        ske_joints[missing_frames_2, 75:] = np.zeros((len(missing_frames_2), 75), dtype=np.float32)
    return ske_joints


# -- AimCLR -----------------------------------------------------------------------------------------------


def aimclr_pipeline(x: np.ndarray, layout, mode: str = "reference") -> np.ndarray:
    from skelssl.data.temporal import resize_cv2

    valid = aimclr_valid_length(x, layout)
    return aimclr_y_rotation(resize_cv2(center_per_frame(x, layout)[:valid], 50), layout, mode=mode)


def test_aimclr_equals_reference_on_ntu(ntu: dict[str, np.ndarray]) -> None:
    cases = dict(ntu)
    cases.update({f"{TWO_PERSON}-{k}": v for k, v in edited(ntu[TWO_PERSON]).items()})
    for name, x in cases.items():
        ours = aimclr_pipeline(x, NTU25)  # (50, M, V, C)
        ref = ref_aimclr_frame50(pad_ctvm(x))  # (C, 50, V, M)
        np.testing.assert_allclose(ours, ref.transpose(1, 3, 2, 0), rtol=0, atol=2e-5, err_msg=name)


def test_aimclr_valid_length_counts_and_keeps_first_frames(ntu: dict[str, np.ndarray]) -> None:
    x = edited(ntu[TWO_PERSON])["gap"]
    assert aimclr_valid_length(x, NTU25) == len(x) - 5  # AimCLR then keeps frames 0..T-6 (the gap included)
    assert aimclr_valid_length(edited(ntu[TWO_PERSON])["one"], NTU25) == len(x) - 5


def test_aimclr_on_nw_ucla_uses_layout_joints(ucla: dict[str, np.ndarray]) -> None:
    # Kinect v1: shoulder centre is joint 2, shoulders 4 / 8 (as on NTU).
    for name, x in ucla.items():
        ours = aimclr_pipeline(x, KINECT20)
        ref = ref_aimclr_frame50(pad_ctvm(x), center=2)
        np.testing.assert_allclose(ours, ref.transpose(1, 3, 2, 0), rtol=0, atol=2e-5, err_msg=name)


def test_centring_puts_spine_top_at_origin(ntu: dict[str, np.ndarray], ucla: dict[str, np.ndarray]) -> None:
    for x, layout in [*((v, NTU25) for v in ntu.values()), *((v, KINECT20) for v in ucla.values())]:
        out = center_per_frame(x, layout)
        assert out.dtype == np.float32 and out.shape == x.shape
        assert not out[:, :, layout.spine_top[0]].any()
        np.testing.assert_allclose(out[:, :, 3] + x[:, :, layout.spine_top[0]], x[:, :, 3], atol=1e-6)


def shoulder_vectors(y: np.ndarray, layout) -> tuple[np.ndarray, np.ndarray]:
    v = y[:, :, layout.right_shoulder] - y[:, :, layout.left_shoulder]  # (T, M, 3)
    present = np.abs(v).sum(-1) > 0
    return v, present


def test_exact_rotation_aligns_every_frame(ntu: dict[str, np.ndarray], ucla: dict[str, np.ndarray]) -> None:
    for x, layout in [*((v, NTU25) for v in ntu.values()), *((v, KINECT20) for v in ucla.values())]:
        y = aimclr_pipeline(x, layout, mode="exact")
        v, present = shoulder_vectors(y, layout)
        assert present[:, 0].all()
        assert np.all(np.abs(v[..., 2][present]) < 1e-5)
        assert np.all(v[..., 0][present] > 0)
        # a rotation about y: heights and per-joint distances to the y axis are kept
        before = resize_then_center(x, layout)
        np.testing.assert_allclose(y[..., 1], before[..., 1], atol=1e-6)
        np.testing.assert_allclose(np.hypot(y[..., 0], y[..., 2]), np.hypot(before[..., 0], before[..., 2]), atol=2e-5)


def resize_then_center(x: np.ndarray, layout) -> np.ndarray:
    from skelssl.data.temporal import resize_cv2

    return resize_cv2(center_per_frame(x, layout)[: aimclr_valid_length(x, layout)], 50)


def test_reference_rotation_aligns_frames_of_the_majority_sign(ntu: dict[str, np.ndarray]) -> None:
    for x in ntu.values():
        before = resize_then_center(x, NTU25)
        bv, present = shoulder_vectors(before, NTU25)
        y = aimclr_pipeline(x, NTU25)
        v, _ = shoulder_vectors(y, NTU25)
        for m in range(v.shape[1]):
            if not present[:, m].any():
                continue
            sign = np.sign(bv[:, m, 2].sum()) or 1.0
            agree = present[:, m] & (np.sign(bv[:, m, 2]) != -sign)
            norm = np.hypot(bv[agree, m, 0], bv[agree, m, 2])
            assert np.all(v[agree, m, 0] > 0)
            # the 1e-4 added to the norm leaves a small residual angle (up to ~sqrt(2e-4 / |v|) rad)
            assert np.all(np.abs(v[agree, m, 2]) <= norm * np.sqrt(2.5e-4 / norm) + 1e-6)


def test_rotation_refuses_2d() -> None:
    coco = get_layout("coco17")
    x = np.ones((5, 1, 17, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="3-D"):
        aimclr_y_rotation(x, coco)
    with pytest.raises(ValueError, match="3-D"):
        pyskl_prenormalize(x, coco, align_spine=True)
    assert aimclr_y_rotation(x, coco, mode="off").shape == x.shape
    out = center_per_frame(x * np.arange(17, dtype=np.float32)[:, None], coco)  # centre = shoulders' midpoint
    np.testing.assert_allclose(out[0, 0, :, 0], np.arange(17) - 5.5)
    assert pyskl_prenormalize(x, coco).shape == x.shape


# -- PySKL PreNormalize3D ---------------------------------------------------------------------------------


@pytest.mark.parametrize("align_spine", [False, True])
def test_prenormalize_equals_reference_on_ntu(ntu: dict[str, np.ndarray], align_spine: bool) -> None:
    cases = dict(ntu)
    cases.update({f"{TWO_PERSON}-{k}": v for k, v in edited(ntu[TWO_PERSON]).items()})
    for name, x in cases.items():
        ours = pyskl_prenormalize(x, NTU25, align_spine=align_spine)
        ref = ref_prenormalize3d(x.transpose(1, 0, 2, 3), align_spine).transpose(1, 0, 2, 3)
        assert ours.shape == ref.shape, name
        np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6, err_msg=name)


def test_prenormalize_drops_frames_and_swaps(ntu: dict[str, np.ndarray]) -> None:
    cases = edited(ntu[TWO_PERSON])
    x = ntu[TWO_PERSON]
    one = pyskl_prenormalize(cases["one"], NTU25)
    assert len(one) == len(x) - 5  # the main person's empty frames are gone
    np.testing.assert_allclose(one[:, 0] + x[0, 0, 1], x[:-5, 0], atol=1e-6)
    gap = pyskl_prenormalize(cases["gap"], NTU25)
    assert len(gap) == len(x)  # person 1 has more frames: it is the main person now, and is in every frame
    assert not gap[10:15, 1].any() and gap[:10, 1].all()
    late = pyskl_prenormalize(cases["late"], NTU25)
    assert len(late) == len(x)  # person 1 is in every frame: it becomes the main person
    np.testing.assert_allclose(late[:, 0] + x[0, 1, 1], x[:, 1], atol=1e-6)  # swapped, centred on its joint 1
    assert not late[:30, 1].any()  # the old person 0 is absent there, and stays zero


@pytest.mark.parametrize("align_spine", [False, True])
def test_prenormalize_invariants(ntu: dict[str, np.ndarray], ucla, align_spine: bool) -> None:
    for x, layout in [*((v, NTU25) for v in ntu.values()), *((v, KINECT20) for v in ucla.values())]:
        out = pyskl_prenormalize(x, layout, align_spine=align_spine)
        np.testing.assert_allclose(out[0, 0, layout.spine_mid[0]], 0, atol=1e-6)
        assert not out[~nonzero_joints(x[: len(out)])].any()  # zero joints stay zero
        if align_spine:
            # the spine is turned onto +z first; the shoulder turn that follows (about shoulders × x, as in
            # 2s-AGCN/PySKL) may tilt it again, so only the shoulders end exactly on +x
            first = out[0, 0]
            shoulders = first[layout.right_shoulder] - first[layout.left_shoulder]
            np.testing.assert_allclose(shoulders[1:], 0, atol=1e-5)
            assert shoulders[0] > 0
            # a rotation: bone lengths are kept
            for j, p in layout.edges:
                np.testing.assert_allclose(
                    np.linalg.norm(out[:, 0, j] - out[:, 0, p], axis=-1),
                    np.linalg.norm(x[: len(out), 0, j] - x[: len(out), 0, p], axis=-1),
                    atol=1e-5,
                )


def test_prenormalize_on_nw_ucla_matches_reference_with_layout_centre(ucla) -> None:
    for name, x in ucla.items():
        ours = pyskl_prenormalize(x, KINECT20, align_spine=True)
        ref = ref_prenormalize3d(x.transpose(1, 0, 2, 3), True, center=1).transpose(1, 0, 2, 3)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6, err_msg=name)


def test_rotation_matrix_matches_euler_rodrigues() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        axis, theta = rng.standard_normal(3), rng.uniform(-np.pi, np.pi)
        np.testing.assert_allclose(axis_angle_matrix(axis, theta), ref_rotation_matrix(axis, theta), atol=1e-12)
    np.testing.assert_array_equal(axis_angle_matrix(np.zeros(3), 1.0), np.eye(3))
    np.testing.assert_array_equal(axis_angle_matrix(np.ones(3), 1e-7), np.eye(3))


def test_prenormalize_leaves_empty_sequences() -> None:
    zero = np.zeros((4, 2, 25, 3), dtype=np.float32)
    np.testing.assert_array_equal(pyskl_prenormalize(zero, NTU25), zero)


# -- MAMP -------------------------------------------------------------------------------------------------


def test_mamp_translation_equals_ctrgcn(ntu: dict[str, np.ndarray]) -> None:
    cases = dict(ntu)
    cases.update({f"{TWO_PERSON}-{k}": v for k, v in edited(ntu[TWO_PERSON]).items()})
    for name, x in cases.items():
        t = x.shape[0]
        ref = ref_seq_translation(x.reshape(t, 150)).reshape(x.shape)
        np.testing.assert_array_equal(mamp_translate(x, NTU25), ref, err_msg=name)


def test_mamp_translation_invariants(ntu: dict[str, np.ndarray], ucla) -> None:
    late = edited(ntu[TWO_PERSON])["late"]
    out = mamp_translate(late, NTU25)
    np.testing.assert_array_equal(out[30, 0, 1], 0)  # person 0's first present frame's joint 1 is the origin
    assert not out[:30, 0].any()  # its absent frames stay zero
    np.testing.assert_allclose(out[:, 1] - out[:, 1, :1], late[:, 1] - late[:, 1, :1], atol=1e-6)  # a shift
    for x in ucla.values():
        out = mamp_translate(x, KINECT20)
        np.testing.assert_array_equal(out[0, 0, 1], 0)
    assert nonzero_frame_count(edited(ntu[TWO_PERSON])["one"]) == len(late) - 5
    assert nonzero_frame_count(edited(ntu[TWO_PERSON])["gap"]) == len(late)  # person 1 is there
