"""Skeleton transformer encoder: Skeleton2vec's (and, by arguments, MAMP's) segment-token ViT.

Input clips are ``(N, M, T, V, C)`` (batch, persons, frames, joints, coordinates). Each person is encoded on
its own: ``B = N·M`` sequences of ``L = TP·V`` tokens, ``TP = T / s`` temporal segments of ``s`` frames per
joint, flattened **t-major** (token ``t·V + v`` is segment ``t`` of joint ``v``), width ``D``.

The steps are separate so that masked pretraining can run them one by one at static shapes::

    tokens = enc.tokenize(x)                       # (B, L, D), position embeddings added
    z = enc.encode(tokens, keep_idx=keep)          # (B, L_keep, D): the visible tokens only
    z, hidden = enc.encode(tokens, return_hidden=True)  # teacher: every block's output before the final LN
    feats = enc.unflatten(z, persons=M)            # (N, M, TP, V, D)

Spec: methods.md §2.3 (Skeleton2vec) and §3.2 (MAMP).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, overload

import torch
from einops import rearrange, reduce
from torch import nn

from skelssl.errors import ConfigError
from skelssl.models.blocks import Block, LayerScale
from skelssl.skeleton.layouts import Layout, get_layout

InitScheme = Literal["skeleton2vec", "mamp"]

__all__ = ["SkeletonTransformer", "gather_tokens", "layer_index"]


def gather_tokens(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pick tokens per sequence: ``tokens`` ``(B, L, D)``, ``idx`` int64 ``(B, K)`` → ``(B, K, D)``."""
    return torch.gather(tokens, 1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class SkeletonTransformer(nn.Module):
    """Segment-token transformer encoder over ``(N, M, T, V, C)`` clips.

    - Token embedding: Conv2d(C → D, kernel (s, 1), stride (s, 1), bias) over (T, V): ``TP·V`` tokens, t-major.
    - Learned temporal ``(TP, D)`` and spatial ``(V, D)`` position embeddings, added to every token.
    - ``depth`` pre-LN blocks (``heads`` heads, MLP ``mlp_ratio·D`` with GELU, LayerScale ``layer_scale`` on both
      branches or none, DropPath spaced linearly from 0 to ``drop_path`` over depth), then a final LayerNorm.

    Defaults reproduce Skeleton2vec's encoder on ``ntu25`` (90 frames, s = 3: 30 × 25 = 750 tokens, 8 × 256,
    8 heads, LayerScale 1e-4, LN eps 1e-6; 6,339,328 parameters); :meth:`mamp` gives MAMP's (120 frames, s = 4,
    no LayerScale, LN eps 1e-5, xavier-uniform Linear init; 6,336,000 parameters).

    Initialisation (``init``):
    - ``"skeleton2vec"``: every Linear and the Conv2d trunc-normal(0.02) with zero bias; both position embeddings
      trunc-normal(0.02). ``reference_init=True`` reproduces the reference code's bug of leaving the temporal
      embedding at zero.
    - ``"mamp"``: every Linear xavier-uniform (the fused q/k/v weight as one ``(3D, D)`` matrix, as MAMP's
      ``qkv``) with zero bias; the Conv2d keeps PyTorch's default init (MAMP never re-initialises it);
      position embeddings trunc-normal(0.02).
    - LayerNorm weight 1, bias 0; LayerScale ``γ = layer_scale``.

    ``generator`` (CPU ``torch.Generator``) makes the initialisation reproducible; ``None`` uses torch's default
    stream. ``V`` comes from ``layout`` (a name or a :class:`Layout`) unless ``num_joints`` is given (then
    ``layout`` may be ``None``).
    """

    def __init__(
        self,
        *,
        layout: str | Layout | None = "ntu25",
        num_joints: int | None = None,
        in_channels: int = 3,
        frames: int = 90,
        segment: int = 3,
        dim: int = 256,
        depth: int = 8,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        layer_scale: float | None = 1e-4,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        init: InitScheme = "skeleton2vec",
        reference_init: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        layout_obj = get_layout(layout) if isinstance(layout, str) else layout
        if num_joints is not None:
            joints = int(num_joints)
        elif layout_obj is not None:
            joints = layout_obj.num_joints
        else:
            raise ConfigError("SkeletonTransformer: give a layout or num_joints")
        _check_config(
            joints=joints,
            in_channels=in_channels,
            frames=frames,
            segment=segment,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp_ratio=mlp_ratio,
            drop_path=drop_path,
            init=init,
        )
        self._config: dict[str, Any] = {
            "layout": None if layout_obj is None else layout_obj.name,
            "num_joints": joints,
            "in_channels": in_channels,
            "frames": frames,
            "segment": segment,
            "dim": dim,
            "depth": depth,
            "heads": heads,
            "mlp_ratio": mlp_ratio,
            "layer_scale": layer_scale,
            "drop_path": drop_path,
            "norm_eps": norm_eps,
            "init": init,
            "reference_init": reference_init,
        }
        self.num_joints = joints
        self.in_channels = in_channels
        self.frames = frames
        self.segment = segment
        self.num_segments = frames // segment
        self.dim = dim
        self.feature_dim = dim  # the pooled feature width, as STGCN.feature_dim
        self.depth = depth

        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=(segment, 1), stride=(segment, 1))
        self.temporal_pos = nn.Parameter(torch.zeros(self.num_segments, dim))
        self.spatial_pos = nn.Parameter(torch.zeros(joints, dim))
        rates = torch.linspace(0.0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(dim=dim, heads=heads, mlp_ratio=mlp_ratio, layer_scale=layer_scale, drop_path=p, norm_eps=norm_eps)
            for p in rates
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.reset_parameters(generator=generator)

    # ------------------------------------------------------------------ presets

    @classmethod
    def skeleton2vec(cls, **overrides: Any) -> SkeletonTransformer:
        """Skeleton2vec's encoder (§2.3): 90 frames, s = 3, LayerScale 1e-4, LN eps 1e-6, trunc-normal init."""
        kw: dict[str, Any] = {
            "frames": 90,
            "segment": 3,
            "layer_scale": 1e-4,
            "norm_eps": 1e-6,
            "init": "skeleton2vec",
        }
        return cls(**(kw | overrides))

    @classmethod
    def mamp(cls, **overrides: Any) -> SkeletonTransformer:
        """MAMP's encoder (§3.2): 120 frames, s = 4, no LayerScale, LN eps 1e-5, xavier-uniform Linear init."""
        kw: dict[str, Any] = {"frames": 120, "segment": 4, "layer_scale": None, "norm_eps": 1e-5, "init": "mamp"}
        return cls(**(kw | overrides))

    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable) that rebuild this encoder: ``SkeletonTransformer(**cfg)``."""
        return dict(self._config)

    # ------------------------------------------------------------------ init

    @torch.no_grad()
    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """(Re-)initialise every parameter as the ``init`` scheme says (see the class docstring)."""
        scheme = self._config["init"]
        if scheme == "skeleton2vec":
            _trunc_normal(self.patch_embed.weight, generator)
            nn.init.zeros_(self.patch_embed.bias)
        else:  # PyTorch's Conv2d default, which MAMP keeps
            nn.init.kaiming_uniform_(self.patch_embed.weight, a=math.sqrt(5), generator=generator)
            fan_in = self.patch_embed.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.patch_embed.bias, -bound, bound, generator=generator)
        _trunc_normal(self.spatial_pos, generator)
        if scheme == "skeleton2vec" and self._config["reference_init"]:
            nn.init.zeros_(self.temporal_pos)
        else:
            _trunc_normal(self.temporal_pos, generator)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                if scheme == "skeleton2vec":
                    _trunc_normal(module.weight, generator)
                else:
                    nn.init.xavier_uniform_(module.weight, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, LayerScale):
                nn.init.constant_(module.gamma, module.init_value)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    # ------------------------------------------------------------------ steps

    @property
    def num_tokens(self) -> int:
        """Tokens per person-sequence, ``L = TP·V``."""
        return self.num_segments * self.num_joints

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(N, M, T, V, C)`` → tokens with position embeddings ``(N·M, TP·V, D)``, t-major."""
        self._check_input(x)
        z = self.patch_embed(rearrange(x, "n m t v c -> (n m) c t v"))  # (NM, D, TP, V)
        z = rearrange(z, "b d t v -> b t v d")
        z = z + self.temporal_pos[:, None, :] + self.spatial_pos[None, :, :]
        return rearrange(z, "b t v d -> b (t v) d")

    def unflatten(self, tokens: torch.Tensor, *, persons: int) -> torch.Tensor:
        """Full token sequences ``(N·M, TP·V, D)`` → ``(N, M, TP, V, D)``."""
        return rearrange(tokens, "(n m) (t v) d -> n m t v d", m=persons, t=self.num_segments, v=self.num_joints)

    @overload
    def encode(
        self, tokens: torch.Tensor, *, keep_idx: torch.Tensor | None = ..., return_hidden: Literal[False] = ...
    ) -> torch.Tensor: ...

    @overload
    def encode(
        self, tokens: torch.Tensor, *, keep_idx: torch.Tensor | None = ..., return_hidden: Literal[True]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def encode(
        self, tokens: torch.Tensor, *, keep_idx: torch.Tensor | None = None, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the blocks and the final LayerNorm on ``tokens`` ``(B, L, D)``.

        ``keep_idx`` int64 ``(B, K)``: encode only those tokens of each sequence (gathered in the given order;
        attention runs among them alone) → ``(B, K, D)``. With ``return_hidden=True`` also returns the list of
        the ``depth`` block outputs **before** the final LayerNorm (each ``(B, K or L, D)``).
        """
        if keep_idx is not None:
            if keep_idx.ndim != 2 or keep_idx.shape[0] != tokens.shape[0]:
                raise ValueError(
                    f"keep_idx must be (B, K) with B = {tokens.shape[0]} sequences, got {tuple(keep_idx.shape)}"
                )
            tokens = gather_tokens(tokens, keep_idx)
        hidden: list[torch.Tensor] = []
        z = tokens
        for block in self.blocks:
            z = block(z)
            hidden.append(z)
        out = self.norm(z)
        return (out, hidden) if return_hidden else out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(N, M, T, V, C)`` → token features after the final LayerNorm ``(N, M, TP, V, D)``."""
        return self.unflatten(self.encode(self.tokenize(x)), persons=x.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(N, M, T, V, C)`` → pooled features ``(N, D)``: mean over tokens, then over persons.

        Zero-padded persons are encoded and averaged in, as in the reference code.
        """
        z = self.encode(self.tokenize(x))
        return reduce(z, "(n m) l d -> n d", "mean", m=x.shape[1])

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.frames, self.num_joints, self.in_channels)
        if x.ndim != 5 or tuple(x.shape[2:]) != expected:
            raise ValueError(
                f"SkeletonTransformer expects clips (N, M, T={self.frames}, V={self.num_joints}, "
                f"C={self.in_channels}), got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"joints={self.num_joints}, frames={self.frames}, segment={self.segment}, "
            f"tokens={self.num_segments}x{self.num_joints}, dim={self.dim}, depth={self.depth}"
        )


_BLOCK_PARAM = re.compile(r"^blocks\.(\d+)\.")
_EMBED_PARAMS = ("patch_embed.", "temporal_pos", "spatial_pos")


def layer_index(param_name: str, depth: int, *, norm_as_head: bool = False) -> int:
    """Layer id of an encoder parameter for layer-wise lr decay (scale ``decay ** (depth + 1 - id)``).

    ``param_name`` is relative to the :class:`SkeletonTransformer` (as from its ``named_parameters()``).
    Embedding (conv, position embeddings) → 0; block ``k`` → ``k + 1``; the final LayerNorm → ``depth`` (Skeleton2vec's
    ``lr_decay.py``) or, with ``norm_as_head=True``, ``depth + 1`` like a head (MAMP's). A head outside the encoder
    takes ``depth + 1`` (scale 1); unknown names raise ``ValueError``.
    """
    if param_name.startswith(_EMBED_PARAMS):
        return 0
    match = _BLOCK_PARAM.match(param_name)
    if match:
        return int(match.group(1)) + 1
    if param_name.startswith("norm."):
        return depth + 1 if norm_as_head else depth
    raise ValueError(f"{param_name!r} is not a SkeletonTransformer parameter name")


def _trunc_normal(t: torch.Tensor, generator: torch.Generator | None) -> None:
    nn.init.trunc_normal_(t, std=0.02, generator=generator)


def _check_config(
    *,
    joints: int,
    in_channels: int,
    frames: int,
    segment: int,
    dim: int,
    depth: int,
    heads: int,
    mlp_ratio: float,
    drop_path: float,
    init: str,
) -> None:
    positive = {"num_joints": joints, "in_channels": in_channels, "frames": frames, "segment": segment}
    positive |= {"dim": dim, "depth": depth, "heads": heads}
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"SkeletonTransformer: {name} must be a positive integer, got {value}")
    if frames % segment:
        raise ConfigError(
            f"SkeletonTransformer: frames={frames} is not divisible by segment={segment}; "
            f"use a clip length that is a multiple of the segment (e.g. {frames - frames % segment or segment})"
        )
    if dim % heads:
        raise ConfigError(f"SkeletonTransformer: dim={dim} is not divisible by heads={heads}")
    if int(dim * mlp_ratio) < 1:
        raise ConfigError(f"SkeletonTransformer: mlp_ratio={mlp_ratio} gives an empty MLP")
    if not 0.0 <= drop_path < 1.0:
        raise ConfigError(f"SkeletonTransformer: drop_path must be in [0, 1), got {drop_path}")
    if init not in ("skeleton2vec", "mamp"):
        raise ConfigError(f"SkeletonTransformer: init must be 'skeleton2vec' or 'mamp', got {init!r}")
