"""MAMP — Masked Motion Prediction (Mao et al., ICCV 2023), the baseline Skeleton2vec is measured against.

One training step (``spec/methods.md`` §3), for a batch ``x`` ``(N, M, T, V, C)`` (MAMP's crop-resize clips,
``ClipConfig.mamp()``: 120 frames):

1. ``RandomRot(0.3)``: a uniform ±0.3 rad rotation about x, y and z per sample (``AugmentConfig.mamp()``);
2. every person is a sequence: ``B = N·M`` sequences of ``L = TP·V`` tokens (segments of ``s = 4`` frames);
3. motion-aware masking (:func:`skelssl.masking.tokens.motion_aware_mask`, τ = 0.8 / 0.75; ``tau = 0`` gives
   MAE's uniform random masking, as the reference): ``int(L·0.1)`` visible tokens per sequence;
4. the encoder (:meth:`SkeletonTransformer.mamp`) encodes the visible tokens only; the decoder
   (:meth:`MaskedDecoder.mamp`) restores all ``L`` tokens and predicts a ``s·C``-vector per token;
5. target = the motion of the input, ``x_{t+1} − x_t`` (last frame 0), cut into the same ``s``-frame patches
   (frame-major ``(s, C)`` vectors) and normalised per patch (mean / unbiased variance over its ``s·C``
   values, eps 1e-6): :func:`patch_motion_targets`;
6. loss = MSE averaged over the masked tokens.

All random draws (rotation, masks) come from the step's CPU ``generator`` in that order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from skelssl.data.augment import AugmentConfig, augment
from skelssl.errors import ConfigError
from skelssl.masking.tokens import TokenMask, motion_aware_mask, random_mask
from skelssl.methods.base import Method, check_clip, check_mask_ratio, check_segment, check_visible
from skelssl.methods.losses import _at_least_fp32
from skelssl.models.decoder import MaskedDecoder
from skelssl.models.registry import encoder_spec
from skelssl.models.transformer import SkeletonTransformer, gather_tokens
from skelssl.skeleton.layouts import Layout, get_layout

__all__ = ["MAMP", "MAMPConfig", "patch_motion_targets", "token_variance"]


@dataclass
class MAMPConfig:
    """MAMP hyper-parameters; the defaults are the reference's for NTU-60 (spec §3.2–3.4).

    - encoder: ``dim``, ``depth``, ``heads``, ``mlp_ratio``, ``segment`` (frames per token), ``drop_path``,
      ``layer_scale`` (``None``: MAMP has none), ``norm_eps``;
    - decoder: ``decoder_dim``, ``decoder_depth`` (3 for NTU-60, 5 for NTU-120 / PKU), ``decoder_heads``;
    - masking: ``mask_ratio``, ``tau`` (motion-aware temperature; 0 = uniform random masking);
    - ``rotation``: the ±θ rad rotation augmentation (0 turns it off);
    - ``normalize_target``: normalise each motion patch (the reference's ``norm_skes_loss``).
    """

    dim: int = 256
    depth: int = 8
    heads: int = 8
    mlp_ratio: float = 4.0
    segment: int = 4
    drop_path: float = 0.0
    layer_scale: float | None = None
    norm_eps: float = 1e-5
    decoder_dim: int = 256
    decoder_depth: int = 3
    decoder_heads: int = 8
    mask_ratio: float = 0.9
    tau: float = 0.8
    rotation: float = 0.3
    normalize_target: bool = True

    def check(self) -> None:
        """Refuse impossible values (raises :class:`ConfigError`); clip-length checks happen in :class:`MAMP`."""
        checks = [
            (self.dim >= 1 and self.heads >= 1 and self.dim % self.heads == 0, "dim must be a multiple of heads"),
            (self.depth >= 1, f"depth must be >= 1, got {self.depth}"),
            (self.segment >= 1, f"segment must be >= 1, got {self.segment}"),
            (self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio}"),
            (0 <= self.drop_path < 1, f"drop_path must be in [0, 1), got {self.drop_path}"),
            (
                self.decoder_dim >= 1 and self.decoder_heads >= 1 and self.decoder_dim % self.decoder_heads == 0,
                "decoder_dim must be a multiple of decoder_heads",
            ),
            (self.decoder_depth >= 0, f"decoder_depth must be >= 0, got {self.decoder_depth}"),
            (0 < self.mask_ratio < 1, f"mask_ratio must be in (0, 1), got {self.mask_ratio}"),
            (self.tau >= 0, f"tau must be >= 0 (0 = random masking), got {self.tau}"),
            (self.rotation >= 0, f"rotation must be >= 0, got {self.rotation}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"mamp: {message}")


def patch_motion_targets(x: Tensor, *, segment: int, normalize: bool = True, eps: float = 1e-6) -> Tensor:
    """MAMP's regression target: ``x`` ``(B, T, V, C)`` → motion patches ``(B, TP·V, segment·C)``, t-major.

    Motion ``x_{t+1} − x_t`` with the last frame 0; token ``t·V + v`` holds frames ``t·s … t·s + s − 1`` of joint
    ``v`` as ``(frame, coordinate)`` (frame-major). ``normalize``: per patch, ``(p − mean) / sqrt(var + eps)``
    with the unbiased variance over its ``s·C`` values (the reference's ``target.var``).
    """
    motion = torch.cat([x[:, 1:] - x[:, :-1], torch.zeros_like(x[:, :1])], dim=1)
    patches = rearrange(motion, "b (tp s) v c -> b (tp v) (s c)", s=segment)
    if normalize:
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        patches = (patches - mean) / (var + eps).sqrt()
    return patches


def token_variance(values: Tensor) -> Tensor:
    """Mean over channels of the (biased) variance over tokens: ``(…, D)`` → scalar (detached, float32).

    Near 0 means every token looks alike — the collapse the data2vec family watches for.
    """
    flat = values.detach().float().reshape(-1, values.shape[-1])
    return flat.var(dim=0, unbiased=False).mean()


class MAMP(Method):
    """MAMP: ``step(x (N, M, T, V, C), generator=...)`` → ``{"loss", "pred_var", "target_var"}``.

    ``encoder``: the exported :class:`SkeletonTransformer`; ``decoder``: the :class:`MaskedDecoder` with the
    ``segment·C`` motion head. ``frames`` is the clip length (``T``, a multiple of ``segment``).
    ``init_generator`` seeds the weights (the same on every rank).
    """

    name = "mamp"

    def __init__(
        self,
        *,
        layout: Layout | str,
        config: MAMPConfig | None = None,
        frames: int = 120,
        in_channels: int = 3,
        distributed: bool = False,
        init_generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        config = config if config is not None else MAMPConfig()
        self.layout = get_layout(layout) if isinstance(layout, str) else layout
        self.check_setup(config, layout=self.layout, frames=frames)  # before building anything
        self.config = dataclasses.replace(config)
        self.distributed = distributed
        self.frames = frames
        self.augmentation = AugmentConfig.mamp(rotation_theta=config.rotation)
        self.add_module(
            "encoder",
            SkeletonTransformer.mamp(
                layout=self.layout,
                in_channels=in_channels,
                frames=frames,
                segment=config.segment,
                dim=config.dim,
                depth=config.depth,
                heads=config.heads,
                mlp_ratio=config.mlp_ratio,
                layer_scale=config.layer_scale,
                drop_path=config.drop_path,
                norm_eps=config.norm_eps,
                generator=init_generator,
            ),
        )
        self.decoder = MaskedDecoder.mamp(
            segment=config.segment,
            channels=in_channels,
            num_segments=frames // config.segment,
            num_joints=self.layout.num_joints,
            in_dim=config.dim,
            dim=config.decoder_dim,
            depth=config.decoder_depth,
            heads=config.decoder_heads,
            mlp_ratio=config.mlp_ratio,
            norm_eps=config.norm_eps,
            generator=init_generator,
        )
        probe = self._mask(torch.zeros(1, frames, self.layout.num_joints, in_channels), torch.Generator())
        visible = probe.keep_idx.shape[1]
        check_visible("mamp", visible, self.encoder.num_tokens, f"mask_ratio = {config.mask_ratio}")

    @staticmethod
    def check_setup(config: MAMPConfig, *, layout: Layout | None, frames: int | None) -> None:
        """Refuse a config that cannot work on ``frames``-frame clips of ``layout`` (``None``: not known yet),
        without building anything: the segment must divide the clip into at least 2 temporal patches (motion is a
        difference of patches) and the mask must keep at least one token and mask one. Raises
        :class:`ConfigError` naming the key and its allowed values."""
        config.check()
        if frames is None:
            return
        check_segment("mamp", frames, config.segment)
        segments = frames // config.segment
        if segments < 2:
            raise ConfigError(
                f"mamp.segment = {config.segment} leaves {segments} temporal patch of the {frames}-frame clip; the "
                f"motion target needs at least 2: allowed segment <= {frames // 2} (dividing {frames})"
            )
        if layout is not None:
            what = f"tokens ({segments} patches x {layout.num_joints} joints of {layout.name})"
            check_mask_ratio("mamp", config.mask_ratio, segments * layout.num_joints, what=what)

    @property
    def encoder(self) -> SkeletonTransformer:  # type: ignore[override]
        try:
            return self._modules["encoder"]  # type: ignore[return-value]
        except KeyError:  # before registration (nn.Module.add_module asks hasattr first)
            raise AttributeError("encoder") from None

    def card(self) -> dict[str, Any]:
        return {"method": self.name, "config": asdict(self.config), "encoder": encoder_spec(self.encoder)}

    def _mask(self, persons: Tensor, generator: torch.Generator) -> TokenMask:
        cfg = self.config
        if cfg.tau > 0:
            return motion_aware_mask(
                persons, segment=cfg.segment, mask_ratio=cfg.mask_ratio, tau=cfg.tau, generator=generator
            )
        b, t, v, _ = persons.shape
        return random_mask(
            b, (t // cfg.segment) * v, mask_ratio=cfg.mask_ratio, generator=generator, device=persons.device
        )

    def step(self, x: Tensor, *, generator: torch.Generator) -> dict[str, Tensor]:
        """One MAMP forward on ``x`` ``(N, M, T, V, C)`` (module doc): ``loss`` and detached diagnostics
        (``pred_var``, ``target_var``: per-channel variance over the masked tokens, averaged)."""
        cfg = self.config
        self._check_input(x)
        if cfg.rotation > 0:
            x = augment(x, self.augmentation, layout=self.layout, generator=generator)
        persons = rearrange(x, "n m t v c -> (n m) t v c")
        mask = self._mask(persons, generator)
        latent = self.encoder.encode(self.encoder.tokenize(x), keep_idx=mask.keep_idx)
        pred = self.decoder(latent, mask.restore_idx, select_idx=mask.mask_idx)  # (B, L_masked, s·C)
        with torch.no_grad():
            target = patch_motion_targets(_at_least_fp32(persons), segment=cfg.segment, normalize=cfg.normalize_target)
            target = gather_tokens(target, mask.mask_idx)
        loss = F.mse_loss(_at_least_fp32(pred), target)
        return {"loss": loss, "pred_var": token_variance(pred), "target_var": token_variance(target)}

    def _check_input(self, x: Tensor) -> None:
        check_clip(
            "MAMP",
            x,
            frames=self.frames,
            joints=self.layout.num_joints,
            channels=self.encoder.in_channels,
            layout=self.layout.name,
        )
