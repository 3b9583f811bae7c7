"""SkeletonTransformer: parameter counts, token order, masked encoding, attention, init, AMP, compile, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.errors import ConfigError
from skelssl.models.blocks import DropPath, LayerScale, drop_path
from skelssl.models.transformer import SkeletonTransformer, gather_tokens, layer_index
from skelssl.skeleton.layouts import get_layout


def tiny(**kw) -> SkeletonTransformer:
    """A small encoder for fast tests: 12 frames, s = 3 → 4 segments, width 16, 2 blocks, 4 heads."""
    args = {
        "frames": 12,
        "segment": 3,
        "dim": 16,
        "depth": 2,
        "heads": 4,
        "generator": torch.Generator().manual_seed(0),
    }
    return SkeletonTransformer(**(args | kw))


def clips(n: int, m: int, t: int, v: int, c: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, m, t, v, c, generator=torch.Generator().manual_seed(seed))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def block_params(d: int, hidden: int, layer_scale: bool) -> int:
    norms = 2 * 2 * d
    qkv = 3 * (d * d + d)  # three D→D linears with bias (fused or not: same count)
    proj = d * d + d
    mlp = d * hidden + hidden + hidden * d + d
    return norms + qkv + proj + mlp + (2 * d if layer_scale else 0)


def encoder_params(*, c: int, s: int, tp: int, v: int, d: int, depth: int, hidden: int, layer_scale: bool) -> int:
    embed = c * s * d + d + tp * d + v * d
    return embed + depth * block_params(d, hidden, layer_scale) + 2 * d


# ---------------------------------------------------------------- parameter counts


def test_parameter_count_skeleton2vec():
    model = SkeletonTransformer.skeleton2vec()
    assert block_params(256, 1024, True) == 790_272
    assert n_params(model.blocks[0]) == 790_272
    expected = encoder_params(c=3, s=3, tp=30, v=25, d=256, depth=8, hidden=1024, layer_scale=True)
    assert expected == 6_339_328
    assert n_params(model) == expected
    assert n_params(SkeletonTransformer()) == expected  # the defaults are Skeleton2vec's
    assert model.num_tokens == 750


def test_parameter_count_mamp():
    model = SkeletonTransformer.mamp()
    assert n_params(model.blocks[0]) == block_params(256, 1024, False) == 789_760
    expected = encoder_params(c=3, s=4, tp=30, v=25, d=256, depth=8, hidden=1024, layer_scale=False)
    assert expected == 6_336_000
    assert n_params(model) == expected
    assert model.frames == 120 and model.segment == 4 and model.num_tokens == 750
    assert model.norm.eps == 1e-5 and model.blocks[0].norm1.eps == 1e-5


@pytest.mark.parametrize(("layout", "c"), [("kinect20", 3), ("sbu15", 3), ("coco17", 2)])
def test_parameter_count_other_layouts(layout, c):
    v = get_layout(layout).num_joints
    model = SkeletonTransformer(layout=layout, in_channels=c, frames=60, segment=4, dim=64, depth=2, heads=4)
    assert n_params(model) == encoder_params(c=c, s=4, tp=15, v=v, d=64, depth=2, hidden=256, layer_scale=True)


# ---------------------------------------------------------------- shapes and token order


@pytest.mark.parametrize(("layout", "c", "m"), [("ntu25", 3, 2), ("kinect20", 3, 1), ("sbu15", 3, 2), ("coco17", 2, 1)])
def test_shapes(layout, c, m):
    model = tiny(layout=layout, in_channels=c).eval()
    v = get_layout(layout).num_joints
    x = clips(3, m, 12, v, c)
    tokens = model.tokenize(x)
    assert tokens.shape == (3 * m, 4 * v, 16)
    assert model.encode(tokens).shape == (3 * m, 4 * v, 16)
    assert model.forward_features(x).shape == (3, m, 4, v, 16)
    assert model(x).shape == (3, 16)


def test_num_joints_without_layout():
    model = tiny(layout=None, num_joints=7, in_channels=2).eval()
    assert model(clips(2, 1, 12, 7, 2)).shape == (2, 16)
    with pytest.raises(ConfigError):
        SkeletonTransformer(layout=None)


def test_tokenize_matches_reference_formula():
    """Each token = Σ conv weight · the s frames of its joint + bias + temporal[t] + spatial[v], t-major."""
    model = tiny(layout="sbu15").eval()
    x = clips(2, 2, 12, 15, 3)
    tokens = model.tokenize(x).detach().numpy().astype(np.float64)
    w = model.patch_embed.weight.detach().numpy().astype(np.float64)[..., 0]  # (D, C, s)
    b = model.patch_embed.bias.detach().numpy()
    tpos = model.temporal_pos.detach().numpy()
    spos = model.spatial_pos.detach().numpy()
    xn = x.numpy().astype(np.float64)
    for n in range(2):
        for m in range(2):
            for t in range(4):
                for v in range(15):
                    seg = xn[n, m, 3 * t : 3 * t + 3, v, :]  # (s, C)
                    ref = np.einsum("dcs,sc->d", w, seg) + b + tpos[t] + spos[v]
                    np.testing.assert_allclose(tokens[n * 2 + m, t * 15 + v], ref, rtol=1e-5, atol=1e-5)


def test_unflatten_inverts_token_order():
    model = tiny().eval()
    x = clips(2, 2, 12, 25, 3)
    grid = model.unflatten(model.tokenize(x), persons=2)  # (N, M, TP, V, D)
    tokens = model.tokenize(x)
    assert torch.equal(grid[1, 0, 3, 7], tokens[2, 3 * 25 + 7])
    assert torch.equal(grid[0, 1, 2, 24], tokens[1, 2 * 25 + 24])


def test_forward_pools_tokens_then_persons():
    model = tiny().eval()
    x = clips(3, 2, 12, 25, 3)
    feats = model.forward_features(x)
    pooled = feats.mean(dim=(2, 3)).mean(dim=1)
    torch.testing.assert_close(model(x), pooled)


def test_zero_padded_person_is_encoded_and_pooled():
    """Reference behaviour: a zero-padded second person still contributes its (non-zero) features to the mean."""
    model = tiny().eval()
    x = torch.zeros(2, 2, 12, 25, 3)
    x[:, 0] = clips(2, 1, 12, 25, 3)[:, 0]
    single = model(x[:, :1])
    padded_person = model(x[:, 1:])  # features of an all-zero sequence: bias + position embeddings, encoded
    assert padded_person.abs().sum() > 0
    torch.testing.assert_close(model(x), (single + padded_person) / 2)


# ---------------------------------------------------------------- masked encoding and hidden states


def random_keep(b: int, length: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(length, generator=g)[:k] for _ in range(b)])


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 100), seed=st.integers(0, 2**16))
def test_encode_keep_idx_attends_only_to_visible_tokens(k, seed):
    model = tiny().eval()
    tokens = model.tokenize(clips(2, 2, 12, 25, 3, seed=seed))
    keep = random_keep(4, 100, k, seed)
    with torch.no_grad():
        out = model.encode(tokens, keep_idx=keep)
        assert out.shape == (4, k, 16)
        # each sequence on its own, from its visible tokens picked by hand
        for b in range(4):
            alone = model.encode(tokens[b, keep[b]][None])
            torch.testing.assert_close(out[b], alone[0], rtol=1e-5, atol=1e-5)
        # the masked tokens do not matter
        noisy = tokens + 100.0 * torch.ones_like(tokens).scatter_(1, keep[..., None].expand(-1, -1, 16), 0.0)
        torch.testing.assert_close(model.encode(noisy, keep_idx=keep), out, rtol=1e-5, atol=1e-5)


def test_encode_keep_all_tokens_equals_full_encode():
    model = tiny().eval()
    tokens = model.tokenize(clips(2, 2, 12, 25, 3))
    with torch.no_grad():
        full, full_hidden = model.encode(tokens, return_hidden=True)
        everything = torch.arange(100).expand(4, -1)
        kept, kept_hidden = model.encode(tokens, keep_idx=everything, return_hidden=True)
        torch.testing.assert_close(kept, full)
        for a, b in zip(kept_hidden, full_hidden, strict=True):
            torch.testing.assert_close(a, b)
        # a permutation of all tokens permutes the output (no position information inside the blocks)
        perm = random_keep(4, 100, 100, seed=3)
        torch.testing.assert_close(model.encode(tokens, keep_idx=perm), gather_tokens(full, perm), rtol=1e-5, atol=1e-5)


def test_hidden_states_are_block_outputs_before_final_norm():
    model = tiny(depth=3).eval()
    tokens = model.tokenize(clips(2, 1, 12, 25, 3))
    with torch.no_grad():
        out, hidden = model.encode(tokens, return_hidden=True)
        assert len(hidden) == 3
        assert all(h.shape == out.shape for h in hidden)
        assert not torch.allclose(hidden[-1], out)
        torch.testing.assert_close(model.norm(hidden[-1]), out)
        z = tokens
        for block, h in zip(model.blocks, hidden, strict=True):
            z = block(z)
            torch.testing.assert_close(h, z)
        keep = random_keep(2, 100, 10, seed=1)
        _, hidden_k = model.encode(tokens, keep_idx=keep, return_hidden=True)
        assert len(hidden_k) == 3 and all(h.shape == (2, 10, 16) for h in hidden_k)
    assert torch.equal(model.encode(tokens), out)


def test_gather_tokens():
    tokens = torch.arange(2 * 5 * 3).reshape(2, 5, 3)
    idx = torch.tensor([[4, 0], [1, 1]])
    expected = torch.stack([tokens[0, [4, 0]], tokens[1, [1, 1]]])
    assert torch.equal(gather_tokens(tokens, idx), expected)


def test_keep_idx_shape_is_checked():
    model = tiny().eval()
    tokens = model.tokenize(clips(1, 2, 12, 25, 3))
    with pytest.raises(ValueError, match="keep_idx"):
        model.encode(tokens, keep_idx=torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="keep_idx"):
        model.encode(tokens, keep_idx=torch.zeros(2, dtype=torch.long))


# ---------------------------------------------------------------- attention and the whole encoder by hand


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _reference_encoder(model: SkeletonTransformer, tokens: np.ndarray, heads: int) -> np.ndarray:
    """softmax(QKᵀ/√d)V per head with explicit loops, pre-LN residual blocks, LayerScale, final LN (float64)."""

    def p(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy().astype(np.float64)

    d = tokens.shape[-1]
    hd = d // heads
    out = np.empty_like(tokens)
    for b in range(tokens.shape[0]):
        x = tokens[b]
        for blk in model.blocks:
            eps = blk.norm1.eps
            h = _layer_norm(x, p(blk.norm1.weight), p(blk.norm1.bias), eps)
            w, bias = p(blk.attn.qkv.weight), p(blk.attn.qkv.bias)
            q = h @ w[:d].T + bias[:d]
            k = h @ w[d : 2 * d].T + bias[d : 2 * d]
            v = h @ w[2 * d :].T + bias[2 * d :]
            heads_out = []
            for i in range(heads):
                sl = slice(i * hd, (i + 1) * hd)
                scores = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
                scores = np.exp(scores - scores.max(-1, keepdims=True))
                attn = scores / scores.sum(-1, keepdims=True)
                heads_out.append(attn @ v[:, sl])
            a = np.concatenate(heads_out, axis=-1) @ p(blk.attn.proj.weight).T + p(blk.attn.proj.bias)
            g1 = p(blk.ls1.gamma) if isinstance(blk.ls1, LayerScale) else 1.0
            x = x + g1 * a
            h = _layer_norm(x, p(blk.norm2.weight), p(blk.norm2.bias), eps)
            mlp = _gelu(h @ p(blk.mlp.fc1.weight).T + p(blk.mlp.fc1.bias)) @ p(blk.mlp.fc2.weight).T
            g2 = p(blk.ls2.gamma) if isinstance(blk.ls2, LayerScale) else 1.0
            x = x + g2 * (mlp + p(blk.mlp.fc2.bias))
        out[b] = _layer_norm(x, p(model.norm.weight), p(model.norm.bias), model.norm.eps)
    return out


@pytest.mark.parametrize("preset", ["skeleton2vec", "mamp"])
def test_encoder_matches_handwritten_attention(preset):
    kw = {"frames": 6, "segment": 2, "layout": None, "num_joints": 4, "dim": 16, "depth": 2, "heads": 4}
    model = getattr(SkeletonTransformer, preset)(**kw).eval()
    with torch.no_grad():  # make LayerScale and the norms matter
        for name, param in model.named_parameters():
            if name.endswith("gamma") or "norm" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))))
    tokens = torch.randn(3, 12, 16, generator=torch.Generator().manual_seed(1))
    ref = _reference_encoder(model, tokens.numpy().astype(np.float64), heads=4)
    np.testing.assert_allclose(model.encode(tokens).detach().numpy(), ref, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- initialisation


def test_layer_scale_init():
    model = SkeletonTransformer.skeleton2vec()
    gammas = [p for n, p in model.named_parameters() if n.endswith("gamma")]
    assert len(gammas) == 2 * 8
    assert all(torch.equal(g, torch.full((256,), 1e-4)) for g in gammas)
    assert not any(n.endswith("gamma") for n, _ in SkeletonTransformer.mamp().named_parameters())
    assert not any(n.endswith("gamma") for n, _ in tiny(layer_scale=0.0).named_parameters())
    assert all(torch.all(p == 0.1) for n, p in tiny(layer_scale=0.1).named_parameters() if n.endswith("gamma"))


def test_temporal_position_embedding_initialised_unless_reference_init():
    model = SkeletonTransformer.skeleton2vec()
    for pos in (model.temporal_pos, model.spatial_pos):
        assert pos.abs().min() > 0
        assert 0.015 < pos.std().item() < 0.025
    ref = SkeletonTransformer.skeleton2vec(reference_init=True)
    assert torch.count_nonzero(ref.temporal_pos) == 0
    assert 0.015 < ref.spatial_pos.std().item() < 0.025
    mamp = SkeletonTransformer.mamp()
    assert 0.015 < mamp.temporal_pos.std().item() < 0.025


def test_skeleton2vec_init_statistics():
    model = SkeletonTransformer.skeleton2vec(generator=torch.Generator().manual_seed(0))
    for module in [model.patch_embed, *(m for m in model.blocks.modules() if isinstance(m, torch.nn.Linear))]:
        assert 0.018 < module.weight.std().item() < 0.022
        assert torch.count_nonzero(module.bias) == 0
    for module in (m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)):
        assert torch.all(module.weight == 1) and torch.all(module.bias == 0)


def test_mamp_init_statistics():
    model = SkeletonTransformer.mamp(generator=torch.Generator().manual_seed(0))
    qkv = model.blocks[0].attn.qkv.weight  # xavier over the fused (3D, D) matrix, as MAMP's qkv
    bound = math.sqrt(6.0 / (256 + 768))
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.95 * bound
    fc1 = model.blocks[0].mlp.fc1.weight
    assert fc1.abs().max() <= math.sqrt(6.0 / (256 + 1024))
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.blocks.modules() if isinstance(m, torch.nn.Linear))
    conv_bound = 1.0 / math.sqrt(3 * 4)  # PyTorch's default Conv2d init, kept by MAMP
    assert model.patch_embed.weight.abs().max() <= conv_bound
    assert model.patch_embed.bias.abs().max() <= conv_bound and torch.count_nonzero(model.patch_embed.bias) > 0


def test_generator_makes_init_reproducible():
    a = tiny(generator=torch.Generator().manual_seed(5))
    b = tiny(generator=torch.Generator().manual_seed(5))
    c = tiny(generator=torch.Generator().manual_seed(6))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        if pa.std() > 0:  # every random tensor (not the zero biases, unit norms, constant γ)
            assert not torch.equal(pa, pc), name


def test_config_rebuilds_the_same_architecture():
    model = SkeletonTransformer.mamp(layout="kinect20", depth=2)
    clone = SkeletonTransformer(**model.config())
    assert [(n, p.shape) for n, p in model.named_parameters()] == [(n, p.shape) for n, p in clone.named_parameters()]
    assert clone.config() == model.config()


# ---------------------------------------------------------------- regularisation, determinism


def test_drop_path_function():
    x = torch.ones(2000, 3, 4)
    torch.manual_seed(0)
    y = drop_path(x, 0.25, training=True)
    per_sample = y.reshape(2000, -1)
    kept = per_sample[:, 0] > 0
    assert torch.all(per_sample[kept] == 1 / 0.75) and torch.all(per_sample[~kept] == 0)
    assert abs(kept.float().mean().item() - 0.75) < 0.05
    assert torch.equal(drop_path(x, 0.25, training=False), x)
    assert torch.equal(DropPath(p=0.25).eval()(x), x)


def test_drop_path_schedule_and_eval_determinism():
    model = tiny(depth=3, drop_path=0.3)
    rates = [blk.drop_path.p if isinstance(blk.drop_path, DropPath) else 0.0 for blk in model.blocks]
    assert rates == pytest.approx([0.0, 0.15, 0.3])
    x = clips(8, 2, 12, 25, 3)
    plain = tiny(depth=3, drop_path=0.0)
    plain.load_state_dict(model.state_dict())
    model.eval()
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(model(x), plain(x))
        model.train()
        torch.manual_seed(0)
        first = model(x)
        torch.manual_seed(0)
        again = model(x)
        torch.manual_seed(1)
        other = model(x)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


# ---------------------------------------------------------------- AMP, compile, devices, gradients


def test_bf16_autocast_close_to_fp32():
    model = tiny(dim=32, heads=4, depth=2).eval()
    x = clips(2, 2, 12, 25, 3)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
            _, hidden = model.encode(model.tokenize(x), return_hidden=True)
    assert torch.isfinite(low).all() and all(torch.isfinite(h).all() for h in hidden)
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)


def test_compile_fullgraph_without_graph_breaks():
    torch._dynamo.reset()
    model = tiny(drop_path=0.1).eval()
    x = clips(2, 2, 12, 25, 3)
    keep = random_keep(4, 100, 10, seed=0)

    def masked(x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return model.encode(model.tokenize(x), keep_idx=keep, return_hidden=True)

    compiled_model = torch.compile(model, backend="eager", fullgraph=True)
    compiled_masked = torch.compile(masked, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled_model(x), model(x))
        out, hidden = compiled_masked(x, keep)
        ref_out, ref_hidden = masked(x, keep)
    torch.testing.assert_close(out, ref_out)
    assert len(hidden) == len(ref_hidden) == 2
    model.train()  # the drop-path branch compiles too
    compiled_model(x).sum().backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = tiny().eval()
    x = clips(2, 2, 12, 25, 3)
    keep = random_keep(4, 100, 10, seed=0)
    with torch.no_grad():
        ref = model.encode(model.tokenize(x), keep_idx=keep)
        cuda = model.cuda()
        out = cuda.encode(cuda.tokenize(x.cuda()), keep_idx=keep.cuda())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = cuda(x.cuda())
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(low).all()


def test_gradients_reach_every_parameter():
    model = SkeletonTransformer.skeleton2vec(depth=2).train()
    x = clips(2, 2, 90, 25, 3)
    keep = random_keep(4, 750, 60, seed=0)
    out, hidden = model.encode(model.tokenize(x), keep_idx=keep, return_hidden=True)
    (out.square().mean() + sum(h.square().mean() for h in hidden)).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.count_nonzero(param.grad) > 0, name


# ---------------------------------------------------------------- errors and lr-decay layer ids


def test_config_errors():
    with pytest.raises(ConfigError, match="divisible by segment"):
        SkeletonTransformer(frames=100, segment=3)
    with pytest.raises(ConfigError, match="heads"):
        SkeletonTransformer(dim=30, heads=8)
    with pytest.raises(ConfigError, match="init"):
        SkeletonTransformer(init="xavier")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="layout"):
        SkeletonTransformer(layout="ntu26")


def test_input_shape_errors():
    model = tiny()
    with pytest.raises(ValueError, match=r"T=12"):
        model(clips(1, 2, 15, 25, 3))
    with pytest.raises(ValueError, match=r"V=25"):
        model(clips(1, 2, 12, 20, 3))
    with pytest.raises(ValueError, match=r"C=3"):
        model(clips(1, 2, 12, 25, 2))
    with pytest.raises(ValueError):
        model(torch.zeros(2, 12, 25, 3))


def test_layer_index():
    model = SkeletonTransformer.skeleton2vec()
    ids = {name: layer_index(name, 8) for name, _ in model.named_parameters()}
    assert ids["patch_embed.weight"] == ids["temporal_pos"] == ids["spatial_pos"] == 0
    for k in range(8):
        block_ids = {i for n, i in ids.items() if n.startswith(f"blocks.{k}.")}
        assert block_ids == {k + 1}
    assert ids["norm.weight"] == ids["norm.bias"] == 8
    assert layer_index("norm.weight", 8, norm_as_head=True) == 9
    assert layer_index("blocks.11.attn.qkv.weight", 12) == 12
    with pytest.raises(ValueError):
        layer_index("head.weight", 8)
