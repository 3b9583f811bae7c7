"""Classification heads: the Large fine-tune head against a loop reference, its parameter count, inits."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.errors import ConfigError
from skelssl.evaluation.heads import Classifier, LargeHead, LinearHead, large_head_parameters
from skelssl.models.stgcn import STGCN
from skelssl.models.transformer import SkeletonTransformer


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_large_head_parameter_count_on_ntu_matches_the_papers_13_2_m() -> None:
    head = LargeHead(dim=256, num_joints=25, num_classes=60)
    # fc1 6400·2048 + 2048, BN 2·2048, fc2 2048·60 + 60 (written out independently of the formula helper)
    expected = 6400 * 2048 + 2048 + 2 * 2048 + 2048 * 60 + 60
    assert _count(head) == expected == large_head_parameters(dim=256, num_joints=25, num_classes=60)
    assert 13.2e6 <= expected < 13.25e6


@settings(max_examples=15, deadline=None)
@given(
    dim=st.integers(1, 12),
    joints=st.integers(1, 9),
    classes=st.integers(1, 7),
    hidden=st.integers(1, 16),
)
def test_large_head_parameter_formula(dim: int, joints: int, classes: int, hidden: int) -> None:
    head = LargeHead(dim=dim, num_joints=joints, num_classes=classes, hidden_dim=hidden)
    assert _count(head) == large_head_parameters(dim=dim, num_joints=joints, num_classes=classes, hidden_dim=hidden)


def _reference(head: LargeHead, tokens: torch.Tensor) -> torch.Tensor:
    """Loops: per sample, per person, mean over segments of each joint, joints concatenated; mean over persons;
    fc1 → BN (eval: running statistics) → ReLU → fc2."""
    n, m, tp, v, _ = tokens.shape
    rows = []
    for i in range(n):
        persons = []
        for j in range(m):
            persons.append(torch.cat([tokens[i, j, :, joint, :].sum(0) / tp for joint in range(v)]))
        rows.append(sum(persons) / m)
    z = torch.stack(rows) @ head.fc1.weight.T + head.fc1.bias
    bn = head.bn
    z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    return torch.clamp(z, min=0) @ head.fc2.weight.T + head.fc2.bias


def test_large_head_matches_loop_reference_in_eval() -> None:
    g = torch.Generator().manual_seed(0)
    head = LargeHead(dim=6, num_joints=5, num_classes=4, hidden_dim=8, init="mamp", generator=g).double()
    with torch.no_grad():  # non-trivial BN statistics and affine
        head.bn.running_mean.normal_(generator=g)
        head.bn.running_var.uniform_(0.5, 2.0, generator=g)
        head.bn.weight.normal_(generator=g)
        head.bn.bias.normal_(generator=g)
    tokens = torch.randn(3, 2, 4, 5, 6, generator=g, dtype=torch.float64)
    head.eval()
    out = head(tokens)
    assert out.shape == (3, 4)
    torch.testing.assert_close(out, _reference(head, tokens))


def test_large_head_dropout_acts_on_tokens_in_training_only() -> None:
    head = LargeHead(dim=4, num_joints=3, num_classes=2, hidden_dim=5, dropout=0.3)
    seen: list[tuple[int, ...]] = []
    head.dropout.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    tokens = torch.randn(4, 2, 6, 3, 4)
    head.train()
    assert head(tokens).shape == (4, 2)
    assert seen == [(4, 2, 6, 3, 4)]  # the (N, M, TP, V, D) grid, before any pooling
    head.eval()
    a, b = head(tokens), head(tokens)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="tokens"):
        head(torch.randn(4, 2, 6, 4, 4))


def test_large_head_inits() -> None:
    g = torch.Generator().manual_seed(1)
    s2v = LargeHead(dim=64, num_joints=25, num_classes=60, generator=g)
    # trunc-normal(0.02) scaled by 1e-3: std 2e-5, |w| ≤ 2 (absolute cut) · 1e-3
    assert s2v.fc1.weight.std().item() == pytest.approx(2e-5, rel=0.05)
    assert float(s2v.fc1.bias.detach().abs().max()) == 0.0 and float(s2v.fc2.bias.detach().abs().max()) == 0.0
    mamp = LargeHead(dim=64, num_joints=25, num_classes=60, init="mamp", generator=g)
    bound = math.sqrt(6.0 / (1600 + 2048))
    assert float(mamp.fc1.weight.detach().abs().max()) <= bound
    assert mamp.fc1.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    with pytest.raises(ConfigError):
        LargeHead(dim=4, num_joints=3, num_classes=2, init="xavier")  # type: ignore[arg-type]


def test_linear_head_is_xavier_normal_with_zero_bias() -> None:
    head = LinearHead(dim=256, num_classes=60, generator=torch.Generator().manual_seed(0))
    assert head(torch.randn(3, 256)).shape == (3, 60)
    assert head.fc.weight.std().item() == pytest.approx(math.sqrt(2.0 / (256 + 60)), rel=0.05)
    assert float(head.fc.bias.detach().abs().max()) == 0.0


def test_classifier_feeds_the_token_grid_to_the_large_head() -> None:
    torch.manual_seed(0)
    enc = SkeletonTransformer(layout="kinect20", frames=12, segment=3, dim=16, depth=2, heads=2)
    head = LargeHead(dim=16, num_joints=20, num_classes=5, hidden_dim=8)
    model = Classifier(encoder=enc, head=head).eval()
    x = torch.randn(2, 2, 12, 20, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), head(enc.forward_features(x)))
    stgcn = STGCN(layout="kinect20", hidden_channels=4, hidden_dim=8)
    linear = Classifier(encoder=stgcn, head=LinearHead(dim=8, num_classes=5)).eval()
    with torch.no_grad():
        torch.testing.assert_close(linear(torch.randn(2, 1, 16, 20, 3)).shape, torch.Size([2, 5]))
    with pytest.raises(ConfigError, match="SkeletonTransformer"):
        Classifier(encoder=stgcn, head=LargeHead(dim=8, num_joints=20, num_classes=5))
