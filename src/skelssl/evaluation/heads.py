"""Classification heads for fine-tuning, and the encoder + head classifier.

- :class:`LargeHead` — the MAMP / Skeleton2vec fine-tune head ("ClassificationHeadLarge", methods.md §2.9,
  §3.4): Dropout(0.3) on the token features → mean over the ``TP`` segments of each joint → the ``V`` joint
  vectors concatenated (``V·D``) → mean over persons → Linear(``V·D`` → 2048) → BatchNorm1d → ReLU →
  Linear(2048 → ``K``). ``(N, M, TP, V, D)`` → ``(N, K)``; ``V·D·H + H + 2H + H·K + K`` parameters
  (13.2 M for NTU's ``V = 25``, ``D = 256``).
- :class:`LinearHead` — PSTL's classifier: Linear(``D`` → ``K``), Xavier-normal weight, zero bias (§1.9).
- :class:`Classifier` — an encoder and a head: clips ``(N, M, T, V, C)`` → logits ``(N, K)``. A
  :class:`~skelssl.models.transformer.SkeletonTransformer` feeds the head its token grid (``LargeHead``) or
  its pooled feature (``LinearHead``); an ST-GCN feeds its pooled ``(N, D)`` feature.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from skelssl.errors import ConfigError
from skelssl.evaluation.pooling import joint_pool
from skelssl.models.transformer import SkeletonTransformer

__all__ = ["Classifier", "LargeHead", "LinearHead", "large_head_parameters"]

HeadInit = Literal["skeleton2vec", "mamp"]


def large_head_parameters(*, dim: int, num_joints: int, num_classes: int, hidden_dim: int = 2048) -> int:
    """Trainable parameters of :class:`LargeHead`: ``V·D·H + H`` (fc1) ``+ 2H`` (BN) ``+ H·K + K`` (fc2)."""
    vd = num_joints * dim
    return vd * hidden_dim + hidden_dim + 2 * hidden_dim + hidden_dim * num_classes + num_classes


class LargeHead(nn.Module):
    """MAMP / Skeleton2vec fine-tune head: token grid ``(N, M, TP, V, D)`` → logits ``(N, K)``.

    Initialisation (``init``): ``"skeleton2vec"`` — both Linear weights trunc-normal(0.02) scaled by
    ``init_scale`` (1e-3 in the reference), biases 0 (``SkTForClassification._finetune_init_weights``);
    ``"mamp"`` — Xavier-uniform weights, biases 0 (MAMP's ``_init_weights``). BatchNorm: weight 1, bias 0.
    ``generator`` (CPU) makes the initialisation reproducible.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_joints: int,
        num_classes: int,
        hidden_dim: int = 2048,
        dropout: float = 0.3,
        init: HeadInit = "skeleton2vec",
        init_scale: float = 1e-3,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in {"dim": dim, "num_joints": num_joints, "num_classes": num_classes}.items():
            if value < 1:
                raise ConfigError(f"LargeHead: {name} must be positive, got {value}")
        if hidden_dim < 1:
            raise ConfigError(f"LargeHead: hidden_dim must be positive, got {hidden_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"LargeHead: dropout must be in [0, 1), got {dropout}")
        if init not in ("skeleton2vec", "mamp"):
            raise ConfigError(f"LargeHead: unknown init {init!r}; use skeleton2vec or mamp")
        self.dim, self.num_joints, self.num_classes = dim, num_joints, num_classes
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(num_joints * dim, hidden_dim)
        self.bn = nn.BatchNorm1d(hidden_dim)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_dim, num_classes)
        self.init, self.init_scale = init, init_scale
        self.reset_parameters(generator=generator)

    @torch.no_grad()
    def reset_parameters(self, *, generator: torch.Generator | None = None) -> None:
        for fc in (self.fc1, self.fc2):
            if self.init == "skeleton2vec":
                nn.init.trunc_normal_(fc.weight, std=0.02, generator=generator)
                fc.weight.mul_(self.init_scale)
            else:
                nn.init.xavier_uniform_(fc.weight, generator=generator)
            nn.init.zeros_(fc.bias)
        self.bn.reset_parameters()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``(N, M, TP, V, D)`` → logits ``(N, K)``."""
        if tokens.ndim != 5 or tokens.shape[3] != self.num_joints or tokens.shape[4] != self.dim:
            raise ValueError(
                f"LargeHead expects (N, M, TP, V={self.num_joints}, D={self.dim}) tokens, got {tuple(tokens.shape)}"
            )
        z = joint_pool(self.dropout(tokens))  # mean over segments and persons, joints concatenated
        return self.fc2(self.relu(self.bn(self.fc1(z))))


class LinearHead(nn.Module):
    """PSTL's classifier: ``(N, D)`` features → ``(N, K)`` logits; Xavier-normal weight, zero bias."""

    def __init__(self, *, dim: int, num_classes: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if dim < 1 or num_classes < 1:
            raise ConfigError(f"LinearHead: dim and num_classes must be positive, got {dim}, {num_classes}")
        self.fc = nn.Linear(dim, num_classes)
        with torch.no_grad():
            nn.init.xavier_normal_(self.fc.weight, generator=generator)
            nn.init.zeros_(self.fc.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats`` ``(N, D)`` → ``(N, K)``."""
        return self.fc(feats)


class Classifier(nn.Module):
    """``encoder`` + ``head``: clips ``(N, M, T, V, C)`` → logits ``(N, K)``.

    With a :class:`SkeletonTransformer` and a :class:`LargeHead` the head sees the full token grid
    ``(N, M, TP, V, D)`` after the encoder's final LayerNorm; otherwise the head sees ``encoder(x)``
    ``(N, D)``. Parameter names are ``encoder.*`` and ``head.*``.
    """

    def __init__(self, *, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.tokens = isinstance(encoder, SkeletonTransformer) and isinstance(head, LargeHead)
        if isinstance(head, LargeHead) and not self.tokens:
            raise ConfigError("the Large head needs a SkeletonTransformer encoder (it reads the token grid)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            enc: SkeletonTransformer = self.encoder  # type: ignore[assignment]
            return self.head(enc.forward_features(x))
        return self.head(self.encoder(x))
