"""The masked-token decoder shared by Skeleton2vec and MAMP (methods.md §2.3, §3.3).

The encoder sees only the ``K`` visible tokens of each sequence; the decoder puts the sequence back together::

    z = Linear(visible)                              # (B, K, D_dec)
    full = cat([z, mask_token × (L − K)], 1)         # (B, L, D_dec): visible first, then masked
    full = gather(full, restore_idx)                 # every token back at its (t, v) place (t-major)
    full = full + temporal_pos[t] + spatial_pos[v]   # decoder position embeddings
    full = blocks(full)                              # pre-LN transformer blocks over all L tokens
    out = head(LayerNorm(full))                      # (B, L, out_dim)

``restore_idx`` is :class:`skelssl.masking.tokens.TokenMask`'s: the position of token ``j`` in
``cat([keep_idx, mask_idx], 1)``. ``select_idx`` (e.g. the mask's ``mask_idx``) applies the final LayerNorm
and the head to those tokens only — the loss never looks at the others, and the last block's attention still
sees every token, so the selected outputs are exactly those of the full decoder.

Two presets: :meth:`MaskedDecoder.skeleton2vec` (LayerScale 1e-4, LN eps 1e-6, trunc-normal(0.02) Linear
init, 256-d feature head) and :meth:`MaskedDecoder.mamp` (no LayerScale, LN eps 1e-5, xavier-uniform Linear
init, a ``segment · C`` motion head). In both the mask token and the position embeddings are
trunc-normal(0.02); the mask token is stored ``(1, 1, D)`` as in the references (so weight-decay grouping by
dimension treats it as they do).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from einops import rearrange
from torch import nn

from skelssl.errors import ConfigError
from skelssl.models.blocks import Block, LayerScale
from skelssl.models.transformer import gather_tokens

__all__ = ["MaskedDecoder"]


class MaskedDecoder(nn.Module):
    """Decoder over a ``TP × V`` grid: ``forward(visible (B, K, in_dim), restore_idx (B, L))`` → ``(B, L, out_dim)``.

    ``head=False`` leaves out the head (``forward`` then returns the LayerNorm output, width ``dim``).
    """

    def __init__(
        self,
        *,
        num_segments: int,
        num_joints: int,
        in_dim: int = 256,
        dim: int = 256,
        depth: int = 3,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        layer_scale: float | None = 1e-4,
        norm_eps: float = 1e-6,
        out_dim: int = 256,
        head: bool = True,
        init: Literal["skeleton2vec", "mamp"] = "skeleton2vec",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("num_segments", num_segments), ("num_joints", num_joints), ("in_dim", in_dim)):
            if value < 1:
                raise ConfigError(f"MaskedDecoder: {name} must be >= 1, got {value}")
        if dim < 1 or heads < 1 or dim % heads:
            raise ConfigError(f"MaskedDecoder: dim={dim} must be a positive multiple of heads={heads}")
        if depth < 0:
            raise ConfigError(f"MaskedDecoder: depth must be >= 0, got {depth}")
        if head and out_dim < 1:
            raise ConfigError(f"MaskedDecoder: out_dim must be >= 1, got {out_dim}")
        if init not in ("skeleton2vec", "mamp"):
            raise ConfigError(f"MaskedDecoder: init must be 'skeleton2vec' or 'mamp', got {init!r}")
        self.init_scheme = init
        self.num_segments = num_segments
        self.num_joints = num_joints
        self.dim = dim
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.temporal_pos = nn.Parameter(torch.zeros(num_segments, dim))
        self.spatial_pos = nn.Parameter(torch.zeros(num_joints, dim))
        self.blocks = nn.ModuleList(
            Block(dim=dim, heads=heads, mlp_ratio=mlp_ratio, layer_scale=layer_scale, norm_eps=norm_eps)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head: nn.Module = nn.Linear(dim, out_dim) if head else nn.Identity()
        self.out_dim = out_dim if head else dim
        self.reset_parameters(generator=generator)

    @classmethod
    def skeleton2vec(cls, **kw: Any) -> MaskedDecoder:
        """Skeleton2vec's decoder (§2.3): 3 blocks with LayerScale 1e-4, LN eps 1e-6, a 256-d feature head."""
        return cls(**({"depth": 3, "layer_scale": 1e-4, "norm_eps": 1e-6, "init": "skeleton2vec"} | kw))

    @classmethod
    def mamp(cls, *, segment: int = 4, channels: int = 3, **kw: Any) -> MaskedDecoder:
        """MAMP's decoder (§3.3): 3 blocks, no LayerScale, LN eps 1e-5, a ``segment · channels`` motion head."""
        base = {"depth": 3, "layer_scale": None, "norm_eps": 1e-5, "init": "mamp", "out_dim": segment * channels}
        return cls(**(base | kw))

    @torch.no_grad()
    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        """Initialise as the ``init`` scheme says (module docstring)."""
        for p in (self.mask_token, self.temporal_pos, self.spatial_pos):
            nn.init.trunc_normal_(p, std=0.02, generator=generator)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                if self.init_scheme == "skeleton2vec":
                    nn.init.trunc_normal_(module.weight, std=0.02, generator=generator)
                else:
                    nn.init.xavier_uniform_(module.weight, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, LayerScale):
                nn.init.constant_(module.gamma, module.init_value)

    @property
    def num_tokens(self) -> int:
        return self.num_segments * self.num_joints

    def restore(self, visible: torch.Tensor, restore_idx: torch.Tensor) -> torch.Tensor:
        """Embedded visible tokens and mask tokens in (t, v) order, with position embeddings: ``(B, L, dim)``."""
        b, k, _ = visible.shape
        length = self.num_tokens
        if restore_idx.shape != (b, length):
            raise ValueError(f"restore_idx must be (B={b}, L={length}), got {tuple(restore_idx.shape)}")
        if k > length:
            raise ValueError(f"{k} visible tokens for a sequence of {length}")
        z = self.embed(visible)
        full = torch.cat([z, self.mask_token.to(z.dtype).expand(b, length - k, -1)], dim=1)
        full = gather_tokens(full, restore_idx)
        full = rearrange(full, "b (t v) d -> b t v d", t=self.num_segments)
        full = full + self.temporal_pos[:, None, :] + self.spatial_pos[None, :, :]
        return rearrange(full, "b t v d -> b (t v) d")

    def features(
        self, visible: torch.Tensor, restore_idx: torch.Tensor, *, select_idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The final LayerNorm's output (before the head): ``(B, L, dim)``, or ``(B, S, dim)`` at ``select_idx``."""
        z = self.restore(visible, restore_idx)
        for block in self.blocks:
            z = block(z)
        if select_idx is not None:
            z = gather_tokens(z, select_idx)
        return self.norm(z)

    def forward(
        self, visible: torch.Tensor, restore_idx: torch.Tensor, *, select_idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``visible`` ``(B, K, in_dim)`` (encoder output, visible tokens in ``keep_idx`` order), ``restore_idx``
        int64 ``(B, L)`` → ``(B, L, out_dim)``, or ``(B, S, out_dim)`` at ``select_idx`` int64 ``(B, S)``."""
        return self.head(self.features(visible, restore_idx, select_idx=select_idx))

    def extra_repr(self) -> str:
        return f"tokens={self.num_segments}x{self.num_joints}, dim={self.dim}, out_dim={self.out_dim}"
