"""Joint, bone and motion streams: PSTL's bone list on real NTU samples, motion's zero last frame, any layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.data.importers import get_importer_class
from skelssl.data.streams import STREAMS, bone, motion, to_stream
from skelssl.errors import ConfigError
from skelssl.skeleton.layouts import LAYOUTS, get_layout

# ST-GCN / PSTL get_stream NTU bone pairs (1-based (joint, parent)), as data; (21, 21) gives a zero bone.
PSTL_BONES = [
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10), (12, 11),
    (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (21, 21), (22, 23), (23, 8),
    (24, 25), (25, 12),
]  # fmt: skip


@pytest.fixture(scope="module")
def ntu_items(shared_data: Path) -> list[torch.Tensor]:
    """Every real NTU sample as ``(M, T, V, C)`` float32 (one has two bodies)."""
    folder = shared_data / "ntu60-samples" / "skeletons"
    importer = get_importer_class("ntu60")(folder)
    items = []
    for path in sorted(folder.glob("*.skeleton")):
        kp = importer.run(str(path)).sequences[0].keypoints  # (T, M, V, C)
        items.append(torch.from_numpy(np.ascontiguousarray(kp.transpose(1, 0, 2, 3))))
    return items


def test_bone_on_real_ntu_equals_pstl_bone_loop(ntu_items: list[torch.Tensor]) -> None:
    assert len(ntu_items) == 5 and any(item.shape[0] == 2 for item in ntu_items)
    for item in ntu_items:
        ref = torch.zeros_like(item)
        for v1, v2 in PSTL_BONES:
            ref[..., v1 - 1, :] = item[..., v1 - 1, :] - item[..., v2 - 1, :]
        out = to_stream(item, "bone", "ntu25")
        assert out.equal(ref)
        assert not out[..., 20, :].any()  # spine-shoulder, the centre: zero bone
        assert out[..., :20, :].abs().sum() > 0
        batch = torch.stack([item, item * 2])
        assert to_stream(batch, "bone", get_layout("ntu25")).equal(torch.stack([ref, bone(item * 2, "ntu25")]))


def test_motion_on_real_ntu(ntu_items: list[torch.Tensor]) -> None:
    for item in ntu_items:
        out = to_stream(item, "motion", "ntu25")
        t = item.shape[1]
        assert out.shape == item.shape
        assert not out[:, -1].any()
        for f in (0, t // 2, t - 2):
            assert out[:, f].equal(item[:, f + 1] - item[:, f])
        assert motion(torch.stack([item, -item])).equal(torch.stack([out, -out]))


def test_joint_stream_and_unknown_stream(ntu_items: list[torch.Tensor]) -> None:
    item = ntu_items[0]
    assert to_stream(item, "joint", "ntu25") is item
    assert STREAMS == ("joint", "bone", "motion")
    with pytest.raises(ConfigError, match="did you mean 'bone'"):
        to_stream(item, "bones", "ntu25")
    with pytest.raises(ValueError, match="joints"):
        to_stream(item[..., :20, :], "bone", "ntu25")
    with pytest.raises(ValueError, match="shape"):
        to_stream(item[0, 0], "motion", "ntu25")


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(LAYOUTS)),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(1, 12), st.sampled_from([2, 3])),
    batched=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_layout(name: str, shape: tuple[int, int, int, int], batched: bool, seed: int) -> None:
    layout = get_layout(name)
    n, m, t, c = shape
    full = (n, m, t, layout.num_joints, c) if batched else (m, t, layout.num_joints, c)
    x = torch.randn(full, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    b = to_stream(x, "bone", layout)
    for v, p in enumerate(layout.parents):  # reference loop over the layout's parents
        assert b[..., v, :].equal(x[..., v, :] - x[..., p, :])
    assert not b[..., layout.center, :].any()
    # the bones rebuild the joints from the centre: x[v] = x[centre] + sum of bones on the path to it
    for v in range(layout.num_joints):
        total, k = x[..., layout.center, :].clone(), v
        while k != layout.center:
            total = total + b[..., k, :]
            k = layout.parents[k]
        torch.testing.assert_close(total, x[..., v, :])
    mo = to_stream(x, "motion", layout)
    assert mo.shape == x.shape and not mo[..., -1, :, :].any()
    torch.testing.assert_close(torch.cumsum(mo, dim=-3)[..., :-1, :, :], x[..., 1:, :, :] - x[..., :1, :, :])
