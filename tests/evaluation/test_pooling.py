"""Per-joint pooling of a frozen encoder's token grid (``pool=joint``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.errors import ConfigError
from skelssl.evaluation.heads import LargeHead
from skelssl.evaluation.pooling import JointPooled, joint_pool, pooled_encoder
from skelssl.evaluation.protocols import RawInput
from skelssl.models.stgcn import STGCN
from skelssl.models.transformer import SkeletonTransformer


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), m=st.integers(1, 2), t=st.integers(1, 5), v=st.integers(1, 6), d=st.integers(1, 4))
def test_joint_pool_is_the_per_joint_mean_joint_major(n: int, m: int, t: int, v: int, d: int) -> None:
    grid = torch.randn(n, m, t, v, d, dtype=torch.float64)
    out = joint_pool(grid)
    assert out.shape == (n, v * d)
    for j in range(v):  # block j holds joint j's mean over time and persons
        torch.testing.assert_close(out[:, j * d : (j + 1) * d], grid[:, :, :, j].mean(dim=(1, 2)))
    # time and person order do not matter; a joint permutation permutes the blocks
    torch.testing.assert_close(joint_pool(grid.flip(1).flip(2)), out)
    perm = torch.randperm(v)
    blocks = out.reshape(n, v, d)[:, perm].reshape(n, v * d)
    torch.testing.assert_close(joint_pool(grid[:, :, :, perm]), blocks)


def test_joint_pool_rejects_pooled_features() -> None:
    with pytest.raises(ValueError, match="token grid"):
        joint_pool(torch.randn(4, 16))


def _transformer() -> SkeletonTransformer:
    torch.manual_seed(0)
    return SkeletonTransformer(layout="kinect20", frames=12, segment=3, dim=16, depth=2, heads=2).eval()


@pytest.mark.parametrize("kind", ["transformer", "stgcn"])
def test_joint_pooled_encoders(kind: str) -> None:
    enc = _transformer() if kind == "transformer" else STGCN(layout="kinect20", hidden_channels=4, hidden_dim=8).eval()
    x = torch.randn(2, 2, 12, 20, 3)
    pooled = pooled_encoder(enc, "joint")
    assert isinstance(pooled, JointPooled) and pooled.feature_dim == 20 * enc.feature_dim
    with torch.no_grad():
        feats = pooled(x)
        assert feats.shape == (2, 20 * enc.feature_dim)
        torch.testing.assert_close(feats, joint_pool(enc.forward_features(x)))
        # the mean over the joint blocks is the encoder's own (mean-pooled) feature
        torch.testing.assert_close(feats.reshape(2, 20, -1).mean(1), enc(x))
    assert pooled_encoder(enc, "mean") is enc
    assert set(pooled.state_dict()) == {f"encoder.{k}" for k in enc.state_dict()}


def test_large_head_pools_as_joint_pool() -> None:
    enc = _transformer()
    head = LargeHead(dim=16, num_joints=20, num_classes=5, hidden_dim=8).eval()
    tokens = enc.forward_features(torch.randn(3, 2, 12, 20, 3)).detach()
    expected = head.fc2(head.relu(head.bn(head.fc1(joint_pool(tokens)))))
    torch.testing.assert_close(head(tokens), expected)


def test_pooling_errors() -> None:
    with pytest.raises(ConfigError, match="token grid"):
        pooled_encoder(RawInput(), "joint")
    with pytest.raises(ConfigError, match="pool='max'"):
        pooled_encoder(_transformer(), "max")
