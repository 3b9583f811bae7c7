"""The masked decoder: token order restored, mask tokens in place, selection = full decode, presets' sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skelssl.errors import ConfigError
from skelssl.models.decoder import MaskedDecoder


def hand_mask(b: int, tp: int, v: int, keep: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random (keep_idx, mask_idx, restore_idx) built with python loops from the TokenMask definition."""
    g = torch.Generator().manual_seed(seed)
    length = tp * v
    keeps, masks, restores = [], [], []
    for _ in range(b):
        chosen = sorted(torch.randperm(length, generator=g)[:keep].tolist())
        rest = [j for j in range(length) if j not in chosen]
        order = chosen + rest  # cat([keep_idx, mask_idx])
        restore = [order.index(j) for j in range(length)]
        keeps.append(chosen)
        masks.append(rest)
        restores.append(restore)
    return torch.tensor(keeps), torch.tensor(masks), torch.tensor(restores)


def test_restore_puts_every_token_back_in_place():
    tp, v, d, keep = 4, 5, 8, 6
    dec = MaskedDecoder(num_segments=tp, num_joints=v, in_dim=d, dim=d, depth=1, heads=2)
    with torch.no_grad():
        dec.embed.weight.copy_(torch.eye(d))
        dec.embed.bias.zero_()
        dec.temporal_pos.zero_()
        dec.spatial_pos.zero_()
    keep_idx, _, restore_idx = hand_mask(3, tp, v, keep)
    tokens = torch.randn(3, tp * v, d)
    visible = torch.stack([tokens[i, keep_idx[i]] for i in range(3)])
    full = dec.restore(visible, restore_idx)
    assert full.shape == (3, tp * v, d)
    for i in range(3):
        for j in range(tp * v):
            if j in keep_idx[i].tolist():
                torch.testing.assert_close(full[i, j], tokens[i, j])
            else:
                torch.testing.assert_close(full[i, j], dec.mask_token[0, 0])


def test_position_embeddings_are_added_t_major():
    tp, v, d = 3, 4, 8
    dec = MaskedDecoder(num_segments=tp, num_joints=v, in_dim=d, dim=d, depth=0, heads=2)
    with torch.no_grad():
        dec.embed.weight.zero_()
        dec.embed.bias.zero_()
        dec.mask_token.zero_()
    _, _, restore_idx = hand_mask(1, tp, v, 2)
    full = dec.restore(torch.randn(1, 2, d), restore_idx)
    for t in range(tp):
        for j in range(v):
            torch.testing.assert_close(full[0, t * v + j], dec.temporal_pos[t] + dec.spatial_pos[j])


def test_selected_tokens_equal_the_full_decode():
    tp, v, d = 5, 4, 16
    torch.manual_seed(0)
    dec = MaskedDecoder(num_segments=tp, num_joints=v, in_dim=12, dim=d, depth=2, heads=4, out_dim=7)
    _, mask_idx, restore_idx = hand_mask(2, tp, v, 5, seed=3)
    visible = torch.randn(2, 5, 12)
    full = dec(visible, restore_idx)
    assert full.shape == (2, tp * v, 7)
    part = dec(visible, restore_idx, select_idx=mask_idx)
    torch.testing.assert_close(part, torch.stack([full[i, mask_idx[i]] for i in range(2)]))


def test_a_visible_token_moves_with_its_index():
    """Swapping which tokens are visible moves the decoder output: order comes from restore_idx, not position."""
    tp, v, d = 2, 3, 8
    torch.manual_seed(1)
    dec = MaskedDecoder(num_segments=tp, num_joints=v, in_dim=d, dim=d, depth=1, heads=2, layer_scale=None)
    a, _, ra = hand_mask(1, tp, v, 2, seed=0)
    b, _, rb = hand_mask(1, tp, v, 2, seed=5)
    assert not torch.equal(a, b)
    visible = torch.randn(1, 2, d)
    assert not torch.allclose(dec(visible, ra), dec(visible, rb))


def test_reference_sizes():
    s2v = MaskedDecoder.skeleton2vec(num_segments=30, num_joints=25)
    # Linear 256->256, mask token, 55 position rows, 3 LayerScale blocks (790,272 each), LN, 256-d head
    assert sum(p.numel() for p in s2v.parameters()) == 65_792 + 256 + 55 * 256 + 3 * 790_272 + 512 + 65_792
    mamp = MaskedDecoder.mamp(num_segments=30, num_joints=25, segment=4, channels=3)
    assert mamp.out_dim == 12
    assert sum(p.numel() for p in mamp.parameters()) == 65_792 + 256 + 55 * 256 + 3 * 789_760 + 512 + 256 * 12 + 12
    assert isinstance(mamp.blocks[0].ls1, nn.Identity) and mamp.norm.eps == 1e-5
    assert s2v.mask_token.shape == (1, 1, 256)


def test_init_is_seeded_and_schemes_differ():
    a = MaskedDecoder.skeleton2vec(num_segments=3, num_joints=4, dim=16, in_dim=16, heads=2, out_dim=16,
                                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    b = MaskedDecoder.skeleton2vec(num_segments=3, num_joints=4, dim=16, in_dim=16, heads=2, out_dim=16,
                                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert float(a.embed.weight.detach().std()) == pytest.approx(0.02, rel=0.3)  # trunc-normal(0.02)
    m = MaskedDecoder.mamp(num_segments=3, num_joints=4, dim=64, in_dim=64, heads=2)
    bound = (6 / (64 + 64)) ** 0.5  # xavier-uniform
    largest = float(m.embed.weight.detach().abs().max())
    assert 0.8 * bound < largest <= bound


def test_bad_arguments():
    with pytest.raises(ConfigError, match="multiple of heads"):
        MaskedDecoder(num_segments=2, num_joints=3, dim=10, heads=4)
    dec = MaskedDecoder(num_segments=2, num_joints=3, in_dim=8, dim=8, heads=2)
    with pytest.raises(ValueError, match="restore_idx"):
        dec(torch.randn(1, 2, 8), torch.zeros(1, 5, dtype=torch.long))
