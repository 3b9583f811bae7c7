"""Skeleton2vec (Xu et al., 2024): data2vec-style masked prediction of an EMA teacher's contextualised targets.

One training step (``spec/methods.md`` §2, §8), for a batch ``x`` ``(N, M, T, V, C)`` (PySKL clips,
``ClipConfig.skeleton2vec()``: 90 frames):

1. ``RandomRot(0.3)``: a uniform ±0.3 rad rotation about x, y and z per sample (``AugmentConfig.skeleton2vec()``);
2. every person is a sequence: ``B = N·M`` sequences (zero-padded persons included, as the reference) of
   ``L = TP·V`` tokens (segments of ``s = 3`` frames, t-major);
3. motion-aware tube masking (:func:`skelssl.masking.tokens.motion_aware_tube_mask`: tubes of α = 5 segments,
   β = 0.1 / 0.2, 2 visible joints per tube for 0.9 on 25 joints — the reference's rounding); ``tube`` (β = 0)
   and MAE-style ``random`` masks as options;
4. the **student** encoder encodes the visible tokens only; the decoder (:class:`MaskedDecoder`: Linear, mask
   tokens put back with ``restore_idx``, decoder position embeddings, 3 blocks, LayerNorm) and the 256-d feature
   head predict every masked token;
5. the **teacher** — an :class:`~skelssl.engine.ema.EMATeacher` copy of the student encoder, always in eval mode,
   run under ``torch.no_grad`` — encodes the same augmented clip **unmasked**; the targets are
   ``y = LN(mean_{l ∈ top-K} IN(h_l))``: each of the last ``K`` block outputs (before the final LayerNorm)
   instance-normalised per channel over the sequence's tokens (eps 1e-5; ``target_norm="layer"``: a per-token
   LayerNorm instead), averaged, then a LayerNorm without affine (``normalize_targets``), all in float32
   (:func:`contextual_targets`);
6. loss = MSE over the masked tokens × channels (+ ``motion_weight`` × MAMP's motion regression with the
   optional ``motion_head``, off by default as in the reference).

After every optimiser step the engine calls :meth:`Skeleton2vec.after_step`, which moves the teacher towards the
student: θ_T ← τ θ_T + (1 − τ) θ_S, τ linear from 0.9999 to 1 over ``ema_anneal_steps`` updates (§2.7).

**DDP.** The teacher is a registered submodule, so it is in ``state_dict()`` (checkpoints and resume carry it),
but its parameters never require grad and are listed in ``_ddp_params_and_buffers_to_ignore``: DDP neither
broadcasts nor reduces them. Every rank builds the same initial weights (``init_generator``) and applies the same
update to identical students, so the teachers stay identical. The diagnostics ``target_var`` / ``pred_var`` are
averaged over ranks, so the collapse check stops every rank at the same step.

**Exported weights.** ``export()`` gives ``{"encoder": teacher, "student": student}``: the teacher is what the
reference evaluates downstream (all configs but NTU-60 x-view linear), and what the kNN monitor measures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from skelssl.data.augment import AugmentConfig, augment
from skelssl.distributed import is_distributed
from skelssl.engine.ema import EMATeacher
from skelssl.errors import ConfigError
from skelssl.masking.tokens import TokenMask, motion_aware_tube_mask, random_mask, tube_mask
from skelssl.methods.base import Method, check_clip, check_mask_ratio, check_segment, check_tube_len, check_visible
from skelssl.methods.losses import _at_least_fp32
from skelssl.methods.mamp import patch_motion_targets, token_variance
from skelssl.models.decoder import MaskedDecoder
from skelssl.models.registry import encoder_spec
from skelssl.models.transformer import SkeletonTransformer, gather_tokens
from skelssl.skeleton.layouts import Layout, get_layout

__all__ = ["Skeleton2vec", "Skeleton2vecConfig", "contextual_targets"]

TargetNorm = Literal["instance", "layer", "none"]
MaskKind = Literal["motion_tube", "tube", "random"]


@dataclass
class Skeleton2vecConfig:
    """Skeleton2vec hyper-parameters; the defaults are the reference's for NTU-60 x-sub (spec §2.3–2.8).

    - encoder: ``dim``, ``depth``, ``heads``, ``mlp_ratio``, ``segment`` (frames per token), ``layer_scale``,
      ``drop_path``, ``reference_init`` (leave the temporal position embedding at zero, the reference's bug);
    - decoder: ``decoder_dim``, ``decoder_depth``, ``decoder_heads``;
    - masking: ``mask`` (``motion_tube`` | ``tube`` | ``random``), ``mask_ratio``, ``tube_len`` (α, segments),
      ``beta`` (β), ``rounding`` (``reference``: ``int(V·(1 − ratio))`` visible joints per tube; ``exact``);
    - targets: ``top_k`` block outputs, ``target_norm`` per layer (``instance`` over tokens | ``layer`` per token |
      ``none``), ``normalize_targets`` (final LayerNorm);
    - teacher: ``ema_decay_start`` τ₀, ``ema_decay_end`` τ_e, ``ema_anneal_steps`` N (800 epochs' steps);
    - ``rotation``: the ±θ rad rotation augmentation (0 turns it off);
    - ``motion_head`` / ``motion_weight``: MAMP's motion regression from the decoder as an extra loss (off);
    - health: stop when ``target_var`` or ``pred_var`` falls under ``collapse_floor`` after
      ``collapse_grace_steps`` steps (``collapse_floor: 0`` disables the check).
    """

    dim: int = 256
    depth: int = 8
    heads: int = 8
    mlp_ratio: float = 4.0
    segment: int = 3
    layer_scale: float | None = 1e-4
    drop_path: float = 0.0
    reference_init: bool = False
    decoder_dim: int = 256
    decoder_depth: int = 3
    decoder_heads: int = 8
    mask: MaskKind = "motion_tube"
    mask_ratio: float = 0.9
    tube_len: int = 5
    beta: float = 0.1
    rounding: Literal["reference", "exact"] = "reference"
    top_k: int = 8
    target_norm: TargetNorm = "instance"
    normalize_targets: bool = True
    ema_decay_start: float = 0.9999
    ema_decay_end: float = 1.0
    ema_anneal_steps: int = 251_200
    rotation: float = 0.3
    motion_head: bool = False
    motion_weight: float = 1.0
    collapse_floor: float = 1e-4
    collapse_grace_steps: int = 1000

    def check(self) -> None:
        """Refuse impossible values (raises :class:`ConfigError`); the layout and clip are checked later."""
        choices = {
            "mask": (self.mask, ("motion_tube", "tube", "random")),
            "rounding": (self.rounding, ("reference", "exact")),
            "target_norm": (self.target_norm, ("instance", "layer", "none")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"skeleton2vec.{key}: {value!r} is not one of {', '.join(map(repr, allowed))}")
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
            (self.tube_len >= 1, f"tube_len must be >= 1, got {self.tube_len}"),
            (self.beta >= 0, f"beta must be >= 0, got {self.beta}"),
            (1 <= self.top_k <= self.depth, f"top_k must be in [1, depth = {self.depth}], got {self.top_k}"),
            (
                0 <= self.ema_decay_start <= self.ema_decay_end <= 1,
                f"need 0 <= ema_decay_start <= ema_decay_end <= 1, got {self.ema_decay_start}, {self.ema_decay_end}",
            ),
            (self.ema_anneal_steps >= 0, f"ema_anneal_steps must be >= 0, got {self.ema_anneal_steps}"),
            (self.rotation >= 0, f"rotation must be >= 0, got {self.rotation}"),
            (self.motion_weight >= 0, f"motion_weight must be >= 0, got {self.motion_weight}"),
            (self.collapse_floor >= 0, f"collapse_floor must be >= 0, got {self.collapse_floor}"),
            (self.collapse_grace_steps >= 0, f"collapse_grace_steps must be >= 0, got {self.collapse_grace_steps}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"skeleton2vec: {message}")


def contextual_targets(
    hidden: list[Tensor],
    *,
    top_k: int,
    target_norm: TargetNorm = "instance",
    normalize_targets: bool = True,
    select_idx: Tensor | None = None,
) -> Tensor:
    """data2vec / Skeleton2vec targets from the teacher's block outputs ``hidden`` (each ``(B, L, D)``).

    ``y = LN(mean_{l in last top_k} norm(h_l))`` in float32, where ``norm`` is an instance norm of every channel
    over the ``L`` tokens of each sequence (biased variance, eps 1e-5), a per-token LayerNorm (eps 1e-5), or
    nothing; the final LayerNorm (no affine, eps 1e-5) only with ``normalize_targets``. ``select_idx`` int64
    ``(B, S)`` returns the targets of those tokens only, ``(B, S, D)`` (statistics still over all ``L`` tokens).
    """
    if not 1 <= top_k <= len(hidden):
        raise ValueError(f"top_k = {top_k} but {len(hidden)} block outputs")
    total: Tensor | None = None
    for h in hidden[-top_k:]:
        h = _at_least_fp32(h)
        if target_norm == "instance":
            var, mean = torch.var_mean(h, dim=1, keepdim=True, correction=0)
            scale = torch.rsqrt(var + 1e-5)
            if select_idx is not None:
                h = gather_tokens(h, select_idx)
            h = (h - mean) * scale
        else:
            if select_idx is not None:
                h = gather_tokens(h, select_idx)
            if target_norm == "layer":
                h = F.layer_norm(h, h.shape[-1:], eps=1e-5)
        total = h if total is None else total + h
    assert total is not None
    y = total / top_k
    if normalize_targets:
        y = F.layer_norm(y, y.shape[-1:], eps=1e-5)
    return y


class Skeleton2vec(Method):
    """Skeleton2vec: ``step(x (N, M, T, V, C), generator=...)`` → ``{"loss", "target_var", "pred_var", …}``.

    Holds the ``student`` (:class:`SkeletonTransformer`), the ``decoder`` (:class:`MaskedDecoder` with the
    feature head), the optional ``motion_head`` and the ``teacher`` (:class:`EMATeacher`, see the module doc).
    ``encoder`` (exported and kNN-monitored) is the teacher's encoder. ``frames`` is the clip length ``T`` (a
    multiple of ``segment``); ``init_generator`` seeds the weights (the same on every rank).
    """

    name = "skeleton2vec"

    def __init__(
        self,
        *,
        layout: Layout | str,
        config: Skeleton2vecConfig | None = None,
        frames: int = 90,
        in_channels: int = 3,
        distributed: bool = False,
        init_generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        config = config if config is not None else Skeleton2vecConfig()
        self.layout = get_layout(layout) if isinstance(layout, str) else layout
        self.check_setup(config, layout=self.layout, frames=frames)  # before building anything
        self.config = dataclasses.replace(config)
        self.distributed = distributed
        self.frames = frames
        self.augmentation = AugmentConfig.skeleton2vec(rotation_theta=config.rotation)
        self.student = SkeletonTransformer.skeleton2vec(
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
            reference_init=config.reference_init,
            generator=init_generator,
        )
        self.decoder = MaskedDecoder.skeleton2vec(
            num_segments=frames // config.segment,
            num_joints=self.layout.num_joints,
            in_dim=config.dim,
            dim=config.decoder_dim,
            depth=config.decoder_depth,
            heads=config.decoder_heads,
            mlp_ratio=config.mlp_ratio,
            layer_scale=config.layer_scale,
            out_dim=config.dim,
            generator=init_generator,
        )
        self.motion_head: nn.Linear | None = None
        if config.motion_head:
            self.motion_head = nn.Linear(config.decoder_dim, config.segment * in_channels)
            with torch.no_grad():
                nn.init.trunc_normal_(self.motion_head.weight, std=0.02, generator=init_generator)
                nn.init.zeros_(self.motion_head.bias)
        self.teacher = EMATeacher(
            self.student,
            decay_start=config.ema_decay_start,
            decay_end=config.ema_decay_end,
            anneal_steps=config.ema_anneal_steps,
        )
        # DDP: leave the teacher alone (no broadcast, no gradient buckets); it is updated identically everywhere
        self._ddp_params_and_buffers_to_ignore = [f"teacher.{key}" for key in self.teacher.state_dict()]
        probe = self._mask(torch.zeros(1, frames, self.layout.num_joints, in_channels), torch.Generator())
        visible = probe.keep_idx.shape[1]
        check_visible(
            "skeleton2vec",
            visible,
            self.student.num_tokens,
            f"mask_ratio = {config.mask_ratio} ({config.mask}, rounding {config.rounding!r}) on {self.layout.name}",
        )

    @staticmethod
    def check_setup(config: Skeleton2vecConfig, *, layout: Layout | None, frames: int | None) -> None:
        """Refuse a config that cannot work on ``frames``-frame clips of ``layout`` (``None``: not known yet),
        without building anything: the segment must divide the clip, ``tube_len`` the segments, and the mask
        must keep at least one token (one joint per tube under the reference rounding) and mask one.
        Raises :class:`ConfigError` naming the key and its allowed values."""
        config.check()
        if frames is None:
            return
        check_segment("skeleton2vec", frames, config.segment)
        segments = frames // config.segment
        if config.mask != "random":
            check_tube_len("skeleton2vec", frames, config.segment, config.tube_len)
        if layout is None:
            return
        v = layout.num_joints
        if config.mask == "random":
            what = f"tokens ({segments} segments x {v} joints of {layout.name})"
            check_mask_ratio("skeleton2vec", config.mask_ratio, segments * v, what=what)
        else:
            what = f"joints per tube on {layout.name} (rounding {config.rounding!r})"
            check_mask_ratio("skeleton2vec", config.mask_ratio, v, rounding=config.rounding, what=what)

    @property
    def encoder(self) -> SkeletonTransformer:  # type: ignore[override]
        """The teacher's encoder: what the reference evaluates downstream and the kNN monitor measures."""
        return self.teacher.module  # type: ignore[return-value]

    def export(self) -> dict[str, nn.Module]:
        return {"encoder": self.teacher.module, "student": self.student}

    def card(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "config": asdict(self.config),
            "encoder": encoder_spec(self.student),
            "exports": {
                "encoder": "EMA teacher encoder (the reference's downstream weights; the kNN monitor's encoder)",
                "student": "student encoder (trained by gradient; the reference's NTU-60 x-view linear probe)",
            },
        }

    # ------------------------------------------------------------------------------------------- step

    def _mask(self, persons: Tensor, generator: torch.Generator) -> TokenMask:
        cfg = self.config
        if cfg.mask == "motion_tube":
            return motion_aware_tube_mask(
                persons,
                segment=cfg.segment,
                tube_len=cfg.tube_len,
                mask_ratio=cfg.mask_ratio,
                beta=cfg.beta,
                rounding=cfg.rounding,
                generator=generator,
            )
        if cfg.mask == "tube":
            return tube_mask(
                persons,
                segment=cfg.segment,
                tube_len=cfg.tube_len,
                mask_ratio=cfg.mask_ratio,
                rounding=cfg.rounding,
                generator=generator,
            )
        b, t, v, _ = persons.shape
        return random_mask(
            b, (t // cfg.segment) * v, mask_ratio=cfg.mask_ratio, generator=generator, device=persons.device
        )

    @torch.no_grad()
    def targets(self, x: Tensor, select_idx: Tensor | None = None) -> Tensor:
        """The teacher's targets for the unmasked clips ``x`` ``(N, M, T, V, C)``: ``(N·M, L or S, D)`` float32."""
        cfg = self.config
        teacher = self.teacher.module
        _, hidden = teacher.encode(teacher.tokenize(x), return_hidden=True)  # type: ignore[operator]
        return contextual_targets(
            hidden,
            top_k=cfg.top_k,
            target_norm=cfg.target_norm,
            normalize_targets=cfg.normalize_targets,
            select_idx=select_idx,
        )

    def step(self, x: Tensor, *, generator: torch.Generator) -> dict[str, Tensor]:
        """One Skeleton2vec forward on ``x`` ``(N, M, T, V, C)`` (module doc).

        Returns ``loss`` (with gradient) and detached scalars: ``loss_feat`` (and ``loss_motion`` with the motion
        head), ``target_var`` and ``pred_var`` (per-channel variance over the masked tokens, averaged over channels
        and, under DDP, over ranks) and ``visible_tokens`` (per sequence).
        """
        cfg = self.config
        self._check_input(x)
        if cfg.rotation > 0:
            x = augment(x, self.augmentation, layout=self.layout, generator=generator)
        persons = rearrange(x, "n m t v c -> (n m) t v c")
        mask = self._mask(persons, generator)
        latent = self.student.encode(self.student.tokenize(x), keep_idx=mask.keep_idx)
        hidden = self.decoder.features(latent, mask.restore_idx, select_idx=mask.mask_idx)  # (B, L_masked, D_dec)
        pred = self.decoder.head(hidden)
        target = self.targets(x, select_idx=mask.mask_idx)
        loss_feat = F.mse_loss(_at_least_fp32(pred), target)
        out: dict[str, Tensor] = {"loss_feat": loss_feat.detach()}
        loss = loss_feat
        if self.motion_head is not None:
            with torch.no_grad():
                motion = patch_motion_targets(_at_least_fp32(persons), segment=cfg.segment)
                motion = gather_tokens(motion, mask.mask_idx)
            loss_motion = F.mse_loss(_at_least_fp32(self.motion_head(hidden)), motion)
            out["loss_motion"] = loss_motion.detach()
            loss = loss + cfg.motion_weight * loss_motion
        variances = torch.stack([token_variance(target), token_variance(pred)])
        if self.distributed and is_distributed():
            dist.all_reduce(variances)
            variances /= dist.get_world_size()
        out["target_var"], out["pred_var"] = variances[0], variances[1]
        out["visible_tokens"] = torch.tensor(float(mask.keep_idx.shape[1]))
        return {"loss": loss, **out}

    def after_step(self, step: int) -> dict[str, float]:
        """EMA update of the teacher after optimiser step ``step`` (1-based); logs τ as ``ema_decay``."""
        return {"ema_decay": self.teacher.update(self.student, step - 1)}

    def check_health(self, out: dict[str, Tensor], step: int) -> str | None:
        """A message when ``target_var`` or ``pred_var`` of step ``step`` (1-based) is under the collapse floor."""
        cfg = self.config
        if cfg.collapse_floor <= 0 or step <= cfg.collapse_grace_steps:
            return None
        for key in ("target_var", "pred_var"):
            value = float(out[key])
            if value < cfg.collapse_floor:
                return (
                    f"representation collapse at step {step}: {key} = {value:.3g} is under "
                    f"skeleton2vec.collapse_floor = {cfg.collapse_floor:g} (checked after "
                    f"collapse_grace_steps = {cfg.collapse_grace_steps}); lower optim.lr, raise "
                    "skeleton2vec.ema_decay_start, or set collapse_floor: 0 to go on"
                )
        return None

    def _check_input(self, x: Tensor) -> None:
        check_clip(
            "Skeleton2vec",
            x,
            frames=self.frames,
            joints=self.layout.num_joints,
            channels=self.student.in_channels,
            layout=self.layout.name,
        )
