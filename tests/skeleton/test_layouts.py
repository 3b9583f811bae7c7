from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skelssl.errors import ConfigError
from skelssl.skeleton.layouts import LAYOUTS, PART_NAMES, Layout, get_layout, layout_mapping

# PSTL's left/right flip order for NTU (spec §1.4), 0-based.
PSTL_FLIP = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22]
# ST-GCN's NTU bone list (spec §1.3), 1-based.
STGCN_NTU_BONES = [
    (1, 2),
    (2, 21),
    (3, 21),
    (4, 3),
    (5, 21),
    (6, 5),
    (7, 6),
    (8, 7),
    (9, 21),
    (10, 9),
    (11, 10),
    (12, 11),
    (13, 1),
    (14, 13),
    (15, 14),
    (16, 15),
    (17, 1),
    (18, 17),
    (19, 18),
    (20, 19),
    (22, 23),
    (23, 8),
    (24, 25),
    (25, 12),
]


def test_ntu25_matches_stgcn_bones_and_pstl_flip() -> None:
    ntu = get_layout("ntu25")
    assert ntu.num_joints == 25
    assert sorted(ntu.edges) == sorted((a - 1, b - 1) for a, b in STGCN_NTU_BONES)
    assert ntu.center == 20
    assert list(ntu.flip_permutation) == PSTL_FLIP
    assert (ntu.left_shoulder, ntu.right_shoulder) == (4, 8)
    assert ntu.spine_mid == (1,) and ntu.spine_top == (20,)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_invariants(name: str) -> None:
    lay = LAYOUTS[name]
    v = lay.num_joints
    assert len(set(lay.joints)) == v
    assert len(lay.edges) == v - 1  # a tree
    perm = np.asarray(lay.flip_permutation)
    assert sorted(perm) == list(range(v))
    assert (perm[perm] == np.arange(v)).all()  # flipping twice is the identity
    for a, b in lay.pairs:  # pairs really are left/right counterparts
        assert lay.joints[a].startswith("left_") and lay.joints[b] == "right_" + lay.joints[a][5:]
    parts = [j for p in PART_NAMES for j in lay.parts[p]]
    assert sorted(parts) == list(range(v))  # parts cover each joint exactly once
    for p in ("left_arm", "left_leg"):
        mirrored = sorted(perm[list(lay.parts[p])])
        assert mirrored == sorted(lay.parts[p.replace("left", "right")])
    assert lay.joints[lay.left_shoulder] == "left_shoulder" and lay.joints[lay.right_hip] == "right_hip"


def test_bad_layouts_are_refused() -> None:
    ntu = get_layout("ntu25")
    fields = {k: getattr(ntu, k) for k in Layout.__dataclass_fields__}
    cyclic = list(ntu.parents)
    cyclic[0], cyclic[1] = 1, 0
    with pytest.raises(ValueError, match="does not reach the centre"):
        Layout(**{**fields, "parents": tuple(cyclic), "parts": dict(ntu.parts)})
    with pytest.raises(ValueError, match="parents"):
        Layout(**{**fields, "parents": ntu.parents[:-1], "parts": dict(ntu.parts)})


def test_unknown_layout_suggests_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'ntu25'"):
        get_layout("ntu52")
    with pytest.raises(ConfigError, match="did you mean 'left_elbow'"):
        get_layout("ntu25").index("left_elbw")


def test_ntu25_to_kinect20_mapping() -> None:
    idx = layout_mapping("ntu25", "kinect20")
    ntu, k20 = get_layout("ntu25"), get_layout("kinect20")
    # Kinect v1 is Kinect v2 without neck, hand tips and thumbs; shoulder centre = spine_shoulder (20).
    assert idx == (0, 1, 20, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19)
    # bones map onto bones, except head-shoulder centre, which runs through NTU's neck (2)
    for child, parent in k20.edges:
        a, b = idx[child], idx[parent]
        direct = (a, b) in ntu.edges or (b, a) in ntu.edges
        assert direct or (ntu.parents[a] == 2 and ntu.parents[2] == b), (child, parent)


def test_mapping_to_fifteen_joint_layouts_and_refusals() -> None:
    sbu = layout_mapping("ntu25", "sbu15")
    assert [get_layout("ntu25").joints[i] for i in sbu[:3]] == ["head", "neck", "spine_mid"]
    assert layout_mapping("kinect20", "sbu15")[1] == 2  # neck ≈ shoulder centre
    assert layout_mapping("florence15", "sbu15") == tuple(range(15))
    with pytest.raises(ConfigError, match="no counterpart for nose"):
        layout_mapping("ntu25", "coco17")
    with pytest.raises(ConfigError, match="spine_base"):
        layout_mapping("coco17", "kinect20")


@given(st.sampled_from(sorted(LAYOUTS)), st.integers(1, 5), st.integers(1, 3))
def test_flip_is_an_involution_on_arrays(name: str, t: int, m: int) -> None:
    lay = LAYOUTS[name]
    x = np.random.default_rng(t * 7 + m).normal(size=(t, m, lay.num_joints, 3))
    perm = list(lay.flip_permutation)
    np.testing.assert_array_equal(x[..., perm, :][..., perm, :], x)


def test_layouts_pickle() -> None:
    import pickle

    ntu = get_layout("ntu25")
    assert pickle.loads(pickle.dumps(ntu)) is ntu
    fields = {k: getattr(ntu, k) for k in Layout.__dataclass_fields__}
    custom = Layout(**{**fields, "name": "mine", "parts": dict(ntu.parts)})
    clone = pickle.loads(pickle.dumps(custom))
    assert clone == custom and clone is not custom
