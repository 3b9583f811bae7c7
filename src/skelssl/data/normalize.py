"""Sequence normalisations of the three reference pipelines, for any joint layout.

Every function takes one sequence ``x`` of shape ``(T, M, V, C)`` (frames, persons, joints, coordinates;
float32 numpy) and returns a new float32 array; the input is never modified. The joints come from the
layout (``spine_base``, ``spine_mid``, ``spine_top`` are means of joint tuples; the shoulders are single
joints), so that on ``ntu25`` every function equals its reference formula:

- **AimCLR "frame50"** (PSTL's input; AimCLR ``feeder/NTUDatasets.py``): the valid length counts the frames
  whose person-0 ``spine_base`` (joint 0) is non-zero (:func:`aimclr_valid_length`); every joint is centred
  on the same frame's and person's ``spine_top`` (joint 20, :func:`center_per_frame`); after the temporal
  resize, each frame of each person is turned about the vertical y axis so that right − left shoulder
  (joints 8 − 4), projected on x–z, points along +x (:func:`aimclr_y_rotation`).
- **PySKL PreNormalize3D** (Skeleton2vec's input; :func:`pyskl_prenormalize`): frames where the main
  person is all zero are dropped (the person with the most non-zero frames becomes person 0), non-zero
  joints are centred on person 0's first-frame ``spine_mid`` (joint 1), and optionally the first-frame
  spine (``spine_base`` → ``spine_mid``) is turned onto +z and the shoulders onto +x.
- **MAMP / CTR-GCN ``seq_translation``** (:func:`mamp_translate`): every frame and person is shifted by
  person 0's ``spine_mid`` (joint 1) in its first non-zero frame; frames where a person was absent
  (coordinate sum 0) stay zero. The MAMP feeder then keeps the first :func:`nonzero_frame_count` frames.

Rotations are 3-D only: they raise ``ValueError`` for 2-D (``C == 2``) input.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from skelssl.skeleton.layouts import Layout

YRotation = Literal["reference", "exact", "off"]

_AIMCLR_EPS = 1e-4  # added to the shoulder-vector norm by AimCLR's ``parallel_skeleton``
_PYSKL_ZERO = 1e-8  # ``np.isclose(v, 0)`` with its default atol: |v| <= 1e-8
_PYSKL_TINY = 1e-6  # PreNormalize3D treats vectors with L1 norm (and angles) below this as zero


def joint_point(x: np.ndarray, joints: tuple[int, ...]) -> np.ndarray:
    """The point defined by ``joints`` (their mean): ``(..., V, C)`` → ``(..., C)``.

    A single joint is returned exactly (no arithmetic), as the reference code indexes it.
    """
    if len(joints) == 1:
        return x[..., joints[0], :]
    return x[..., list(joints), :].mean(axis=-2)


def nonzero_joints(x: np.ndarray) -> np.ndarray:
    """``(..., C)`` → ``(...)`` bool: the joint has a non-zero coordinate (a fast ``(x != 0).any(-1)``)."""
    ne = x != 0
    out = ne[..., 0].copy()
    for c in range(1, ne.shape[-1]):
        out |= ne[..., c]
    return out


def _shift(x: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """``x - origin`` for one ``(C,)`` point, as float32 (tiled: numpy is slow on 3-long inner loops)."""
    t, m, v, c = x.shape
    flat = x.reshape(t * m, v * c) - np.tile(np.asarray(origin, dtype=np.float32), v)
    return flat.reshape(t, m, v, c).astype(np.float32, copy=False)


def _require_3d(x: np.ndarray, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{what}: expected one sequence (T, M, V, C), got shape {x.shape}")
    if x.shape[-1] != 3:
        raise ValueError(f"{what} needs 3-D coordinates (C = 3), got C = {x.shape[-1]}; disable it for 2-D layouts")


# -- AimCLR ----------------------------------------------------------------------------------------------


def aimclr_valid_length(x: np.ndarray, layout: Layout) -> int:
    """Number of frames where person 0's ``spine_base`` is non-zero (AimCLR ``get_length``).

    AimCLR then keeps the *first* that many frames (its arrays are zero-padded at the end).
    """
    base = x[:, 0, list(layout.spine_base), :]  # (T, k, C)
    return int(np.count_nonzero(np.abs(base).sum(axis=(1, 2)) != 0))


def center_per_frame(x: np.ndarray, layout: Layout) -> np.ndarray:
    """Subtract each frame's and person's ``spine_top`` from all its joints (AimCLR ``data_type='relative'``).

    ``(T, M, V, C)`` → ``(T, M, V, C)``; absent persons (all zero) stay zero.
    """
    center = joint_point(x, layout.spine_top)  # (T, M, C)
    return (x - center[:, :, None, :]).astype(np.float32, copy=False)


def aimclr_y_rotation(x: np.ndarray, layout: Layout, *, mode: YRotation = "reference") -> np.ndarray:
    """Turn every frame of every person about y so the shoulder vector (right − left, on x–z) points along +x.

    ``mode="reference"`` is AimCLR's ``parallel_skeleton`` exactly: the angle magnitude per frame is
    ``arccos(v_x / (|v| + 1e-4))`` and its sign is chosen **once per person** from the sum of ``v_z`` over
    all frames, so frames whose ``v_z`` has the other sign are turned the wrong way. ``mode="exact"`` aligns
    every frame exactly (angle ``atan2``, per-frame sign; zero vectors are left alone). ``"off"`` copies.
    ``(T, M, V, 3)`` → ``(T, M, V, 3)``.
    """
    if mode == "off":
        return x.astype(np.float32, copy=True)
    _require_3d(x, "the AimCLR y-rotation")
    v = x[:, :, layout.right_shoulder, :] - x[:, :, layout.left_shoulder, :]  # (T, M, 3) float32
    vx, vz = v[..., 0], v[..., 2]
    if mode == "reference":
        norm = np.sqrt(vx * vx + vz * vz)
        theta = np.arccos(vx / (norm + np.float32(_AIMCLR_EPS))).astype(np.float64)  # (T, M)
        sign = np.where(vz.sum(axis=0) >= 0, -1.0, 1.0)  # (M,)
        theta = theta * sign
        cos, sin = np.cos(theta), np.sin(theta)
    elif mode == "exact":
        vx64, vz64 = vx.astype(np.float64), vz.astype(np.float64)
        norm = np.hypot(vx64, vz64)
        safe = np.where(norm > 0, norm, 1.0)
        cos = np.where(norm > 0, vx64 / safe, 1.0)
        sin = np.where(norm > 0, -vz64 / safe, 0.0)
    else:
        raise ValueError(f"unknown y-rotation mode {mode!r}; use 'reference', 'exact' or 'off'")
    # R(θ) = [[cos, 0, -sin], [0, 1, 0], [sin, 0, cos]], applied as x' = R x (angles in float64, products float32).
    c = cos.astype(np.float32)[..., None]  # (T, M, 1)
    s = sin.astype(np.float32)[..., None]
    px, pz = x[..., 0], x[..., 2]  # (T, M, V)
    out = np.empty(x.shape, dtype=np.float32)
    out[..., 0] = c * px - s * pz
    out[..., 1] = x[..., 1]
    out[..., 2] = s * px + c * pz
    return out


# -- PySKL PreNormalize3D ---------------------------------------------------------------------------------


def _angle_between(v1: np.ndarray, v2: np.ndarray) -> float:
    if np.abs(v1).sum() < _PYSKL_TINY or np.abs(v2).sum() < _PYSKL_TINY:
        return 0.0
    u1, u2 = v1 / np.linalg.norm(v1), v2 / np.linalg.norm(v2)
    return float(np.arccos(np.clip(np.dot(u1, u2), -1.0, 1.0)))


def axis_angle_matrix(axis: np.ndarray, theta: float) -> np.ndarray:
    """Counter-clockwise rotation by ``theta`` radians about ``axis`` (Rodrigues), float64 ``(3, 3)``.

    The identity when the axis (L1 norm) or the angle is below 1e-6, as PySKL's ``rotation_matrix``.
    """
    axis = np.asarray(axis, dtype=np.float64)
    if np.abs(axis).sum() < _PYSKL_TINY or abs(theta) < _PYSKL_TINY:
        return np.eye(3)
    k = axis / np.linalg.norm(axis)
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.cos(theta) * np.eye(3) + np.sin(theta) * cross + (1.0 - np.cos(theta)) * np.outer(k, k)


def align_matrix(v: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The rotation PreNormalize3D uses to turn ``v`` onto ``target``: about ``v × target`` by their angle."""
    v = np.asarray(v, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    return axis_angle_matrix(np.cross(v, target), _angle_between(v, target))


def pyskl_prenormalize(x: np.ndarray, layout: Layout, *, align_spine: bool = False) -> np.ndarray:
    """PySKL ``PreNormalize3D``: drop the main person's empty frames, centre, optionally align the spine.

    ``(T, M, V, C)`` → ``(T', M, V, C)`` with ``T'`` the number of frames where the main person has a
    coordinate with ``|v| > 1e-8``. The main person is the one with the most such frames (the first on a
    tie); it moves to index 0, the others keep their order (for M = 2: PySKL's swap). Joints with any
    non-zero coordinate are shifted by person 0's first-frame ``spine_mid``; zero joints stay zero.
    ``align_spine`` (3-D only) then rotates everything so the first-frame ``spine_base`` → ``spine_mid``
    vector points along +z, then so the first-frame left → right shoulder vector points along +x.
    An all-zero sequence (or one with no such frame) is returned unchanged.
    """
    if align_spine:
        _require_3d(x, "PreNormalize3D align_spine")
    if x.sum() == 0:
        return x.astype(np.float32, copy=True)
    valid = (np.abs(x) > _PYSKL_ZERO).any(axis=(2, 3))  # (T, M)
    counts = valid.sum(axis=0)
    main = int(np.argmax(counts))
    if counts[main] == 0:
        return x.astype(np.float32, copy=True)
    keep = valid[:, main]
    if not keep.all():
        x = x[keep]
    if main != 0:
        x = x[:, [main, *(m for m in range(x.shape[1]) if m != main)]]
    center = joint_point(x[0, 0], layout.spine_mid)  # (C,)
    mask = nonzero_joints(x)  # (T', M, V)
    x = _shift(x, center)
    x *= np.repeat(mask, x.shape[-1], axis=-1).reshape(x.shape)
    if not align_spine:
        return x
    first = x[0, 0].astype(np.float64)  # (V, 3)
    spine = joint_point(first, layout.spine_mid) - joint_point(first, layout.spine_base)
    rz = align_matrix(spine, np.array([0.0, 0.0, 1.0]))
    first = first @ rz.T
    shoulders = first[layout.right_shoulder] - first[layout.left_shoulder]
    rx = align_matrix(shoulders, np.array([1.0, 0.0, 0.0]))
    return (x.astype(np.float64) @ (rx @ rz).T).astype(np.float32)


# -- MAMP -------------------------------------------------------------------------------------------------


def mamp_translate(x: np.ndarray, layout: Layout) -> np.ndarray:
    """CTR-GCN/MAMP ``seq_translation``: shift by person 0's ``spine_mid`` in its first non-zero frame.

    Every frame of every person is shifted; frames where a person's coordinate sum is 0 (absent) are
    zero again afterwards. ``(T, M, V, C)`` → ``(T, M, V, C)``; unchanged if person 0 is never present.
    """
    present = (x[:, 0] != 0).any(axis=(1, 2))  # (T,)
    if not present.any():
        return x.astype(np.float32, copy=True)
    absent = x.sum(axis=(2, 3)) == 0  # (T, M), before the shift
    origin = joint_point(x[int(np.argmax(present)), 0], layout.spine_mid)  # (C,)
    out = _shift(x, origin)
    out[absent] = 0
    return out


def nonzero_frame_count(x: np.ndarray) -> int:
    """Frames whose coordinate sum over persons, joints and coordinates is non-zero (MAMP's ``valid_frame_num``).

    The MAMP feeder keeps the *first* that many frames.
    """
    return int(np.count_nonzero(x.sum(axis=(1, 2, 3)) != 0))
