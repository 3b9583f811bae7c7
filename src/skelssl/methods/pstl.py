"""PSTL — Partial Spatio-Temporal Learning (Zhou et al., AAAI 2023) — and its SkeletonBT baseline.

One training step (``spec/methods.md`` §1.4–1.8, §8), for a batch ``x`` ``(N, M, T, V, C)``:

1. ``x`` becomes the configured stream (joint / bone / motion) **before** augmentation, as the
   reference's ``get_stream``;
2. the CSM joint set ``J`` is drawn (degree-weighted, :func:`csm_drop_joints`);
3. three independent draws of the PSTL augmentation chain (crop → shear → rotate → flip) give the
   anchor ``x₁``, the MATM view ``x₂`` and the CSM view ``x₃``; MATM removes ``2k`` frames of ``x₂``
   (``T`` 50 → 30);
4. one ST-GCN encodes ``f₁ = E(x₁)``, ``f₂ = E(x₂)``, ``f₃ = E(x₃ without J)`` (three calls, so every
   BatchNorm sees each view on its own, as in the reference);
5. the projector maps the three features — the anchor **once**, reused by both terms — and each view is
   standardised per dimension once;
6. ``L = w_matm · BT(z₁, z₂) + w_csm · BT(z₁, z₃)`` (Barlow Twins, ``λ = 2·10⁻⁴``, Gram path when
   ``2N < D``), over the global batch under DDP.

The random draws are made in the reference's order (CSM set, anchor chain, MATM view chain, MATM, CSM
view chain), all from the step's CPU ``generator``.

**Projector batching.** The projector's three Linear layers are applied to the three views stacked
``(3N, ·)`` — one GEMM per layer instead of three (about 1.7× faster on CPU at N = 32) — while every
BatchNorm runs on each view separately. This is exactly three separate projector calls (same outputs,
gradients and running-statistics updates per view); the reference projects the anchor twice (once per
term), which changes nothing but the projector's unused running statistics.

**Per-sample CSM in reference mode.** The reference sampler (8 draws from the degree multiset, the
distinct joints masked) yields 5–8 joints, while one encoder call needs one count for the whole batch
(``STGCN`` removes joints from the tensor). With ``batch_shared=False`` and ``csm_mode="reference"`` the
count ``K`` is drawn once per batch (the count of one reference draw), then every sample's joint set is
drawn from the reference sampler *conditioned on* ``|J| = K`` (vectorised rejection). Each sample's set
then has exactly the reference distribution (``Σ_k P(K = k) P(J | |J| = k) = P(J)``), the encoder runs
once on the whole batch, and BatchNorm statistics stay those of the full batch. (Splitting the batch into
count groups would also keep the distribution but gives each group its own BatchNorm statistics and extra
running-statistics updates.) ``csm_mode="exact"`` masks exactly ``csm_joints`` joints per sample.

**SkeletonBT** (``baseline=True``): two augmented views, one Barlow Twins term, no masking.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from skelssl.data.augment import AugmentConfig, augment
from skelssl.data.streams import STREAMS, to_stream
from skelssl.distributed import gather_sizes, is_distributed
from skelssl.errors import ConfigError
from skelssl.masking import central_spatial_mask, centrality_weights, motion_attention_temporal_mask
from skelssl.methods.base import Method
from skelssl.methods.losses import Projector, _at_least_fp32, barlow_twins_loss, barlow_twins_normalize
from skelssl.models.registry import encoder_spec
from skelssl.models.stgcn import STGCN
from skelssl.skeleton.graph import Centrality
from skelssl.skeleton.layouts import Layout, get_layout

__all__ = ["PSTL", "PSTLConfig", "csm_drop_joints"]

_CENTRALITIES = ("degree", "closeness", "betweenness")
_MAX_CANDIDATE_ROWS = 1 << 16  # per-sample reference CSM: rejection draws per round


@dataclass
class PSTLConfig:
    """PSTL / SkeletonBT hyper-parameters; the defaults are the reference's (spec §1.3–1.8).

    - ``stream``: input stream, computed before augmentation.
    - ``baseline``: SkeletonBT — two augmented views, one Barlow Twins term, no masks.
    - ``csm_joints``: CSM draws (``reference``: multiset draws, 5–8 distinct joints for 8 on ``ntu25``)
      or joints (``exact``); ``csm_centrality`` weights them (``reference`` needs integer ``degree``).
    - ``matm_frames``: ``k``; MATM removes ``2k`` frames (``reference``: the ``k`` highest-motion frames,
      then ``k`` random ones; ``stochastic``: softmax of the motion energy at ``matm_temperature``).
    - ``batch_shared``: one augmentation and mask draw per batch (the reference); ``False`` draws them per
      sample — the better-founded variant (the reference's batch-wide draws make every sample of a batch
      lose the same joints and frames).
    - encoder: ``hidden_channels``, ``hidden_dim``, ``dropout`` (quarter-width ST-GCN); projector:
      ``projector_layers`` × ``projector_dim`` (BN + ReLU between layers), ``sync_bn`` for global-batch BN
      statistics under DDP; loss: ``lambd``, ``weight_matm``, ``weight_csm`` (a zero weight drops that term
      and its view).
    """

    stream: Literal["joint", "bone", "motion"] = "joint"
    baseline: bool = False
    csm_joints: int = 8
    csm_mode: Literal["reference", "exact"] = "reference"
    csm_centrality: Centrality = "degree"
    matm_frames: int = 10
    matm_mode: Literal["reference", "stochastic"] = "reference"
    matm_temperature: float = 1.0
    batch_shared: bool = True
    hidden_channels: int = 16
    hidden_dim: int = 256
    dropout: float = 0.5
    projector_dim: int = 6144
    projector_layers: int = 3
    lambd: float = 2e-4
    weight_matm: float = 1.0
    weight_csm: float = 1.0
    sync_bn: bool = False

    def check(self) -> None:
        """Refuse impossible values (raises :class:`ConfigError`). Layout- and clip-length checks happen in
        :class:`PSTL` (``csm_joints`` against the joints) and at each step (``2·matm_frames < T``)."""
        choices = {
            "stream": (self.stream, STREAMS),
            "csm_mode": (self.csm_mode, ("reference", "exact")),
            "csm_centrality": (self.csm_centrality, _CENTRALITIES),
            "matm_mode": (self.matm_mode, ("reference", "stochastic")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"pstl.{key}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        checks = [
            (self.csm_joints >= 0, f"csm_joints must be >= 0, got {self.csm_joints}"),
            (self.matm_frames >= 0, f"matm_frames must be >= 0, got {self.matm_frames}"),
            (self.matm_temperature > 0, f"matm_temperature must be > 0, got {self.matm_temperature}"),
            (
                self.csm_mode == "exact" or self.csm_centrality == "degree",
                f"csm_mode 'reference' draws from the integer degree multiset; csm_centrality "
                f"{self.csm_centrality!r} needs csm_mode 'exact'",
            ),
            (self.hidden_channels >= 1, f"hidden_channels must be >= 1, got {self.hidden_channels}"),
            (self.hidden_dim >= 1, f"hidden_dim must be >= 1, got {self.hidden_dim}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.projector_dim >= 1, f"projector_dim must be >= 1, got {self.projector_dim}"),
            (self.projector_layers >= 1, f"projector_layers must be >= 1, got {self.projector_layers}"),
            (self.lambd >= 0, f"lambd must be >= 0, got {self.lambd}"),
            (self.weight_matm >= 0, f"weight_matm must be >= 0, got {self.weight_matm}"),
            (self.weight_csm >= 0, f"weight_csm must be >= 0, got {self.weight_csm}"),
            (
                self.baseline or self.weight_matm > 0 or self.weight_csm > 0,
                "weight_matm and weight_csm are both 0: the loss would be constant (use baseline: true for SkeletonBT)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"pstl: {message}")


def csm_drop_joints(
    layout: Layout | str,
    *,
    num_joints: int,
    batch_size: int,
    generator: torch.Generator,
    mode: Literal["reference", "exact"] = "reference",
    centrality: Centrality = "degree",
    batch_shared: bool = True,
) -> Tensor:
    """CSM joints to drop, in a form ``STGCN(x, drop_joints=...)`` takes in one call (CPU LongTensor).

    ``batch_shared=True``: ``(k,)`` sorted, one set for the batch (``reference``: the reference sampler
    exactly, 5–8 joints for 8 draws on ``ntu25``). ``batch_shared=False``: ``(N, k)``, each row sorted;
    ``exact`` draws ``k = num_joints`` joints per sample, ``reference`` draws the count ``k`` once (from
    the reference count distribution) and each sample's set from the reference sampler conditioned on
    that count, so every row has exactly the reference distribution (module doc).
    """
    if batch_shared or mode == "exact":
        return central_spatial_mask(
            layout,
            num_joints=num_joints,
            batch_size=batch_size,
            generator=generator,
            mode=mode,
            centrality=centrality,
            batch_shared=batch_shared,
        )
    count = central_spatial_mask(
        layout, num_joints=num_joints, generator=generator, mode="reference", centrality=centrality, batch_shared=True
    ).numel()
    out = torch.empty(batch_size, count, dtype=torch.long)
    todo = torch.arange(batch_size)
    candidates = 8
    while todo.numel():
        # reference draws for every unfilled sample (`per` each, at most ~2^16 rows a round); each sample keeps
        # its first draw of the right count
        per = max(1, min(candidates, _MAX_CANDIDATE_ROWS // todo.numel()))
        masks = central_spatial_mask(
            layout,
            num_joints=num_joints,
            batch_size=todo.numel() * per,
            generator=generator,
            mode="reference",
            centrality=centrality,
        ).view(todo.numel(), per, -1)
        hit = masks.sum(dim=2) == count  # (n_todo, per)
        found = hit.any(dim=1)
        first = hit.to(torch.uint8).argmax(dim=1)  # first matching draw
        chosen = masks[found, first[found]]  # (n_found, V) bool, `count` joints each
        out[todo[found]] = chosen.nonzero()[:, 1].view(-1, count)
        todo = todo[~found]
        candidates *= 4
    return out


class PSTL(Method):
    """PSTL (or SkeletonBT with ``config.baseline``): ``step(x (N, M, T, V, C), generator=...)`` → losses.

    Holds the ST-GCN ``encoder`` (exported) and the ``projector``. ``distributed=True`` makes the loss use
    the global batch under DDP (BN statistics, ``N``, the cross-correlation); set ``config.sync_bn`` for
    global-batch statistics in the projector's BatchNorms too. The encoder's BatchNorms stay per rank.
    """

    name = "pstl"

    def __init__(
        self,
        *,
        layout: Layout | str,
        config: PSTLConfig | None = None,
        in_channels: int = 3,
        distributed: bool = False,
    ) -> None:
        super().__init__()
        config = config if config is not None else PSTLConfig()
        self.layout = get_layout(layout) if isinstance(layout, str) else layout
        self.check_setup(config, layout=self.layout, frames=None)
        self.config = dataclasses.replace(config)
        self.name = "skeletonbt" if config.baseline else "pstl"
        self.distributed = distributed
        self.augmentation = AugmentConfig.pstl(batch_shared=config.batch_shared)
        self.add_module(
            "encoder",
            STGCN(
                layout=self.layout,
                in_channels=in_channels,
                hidden_channels=config.hidden_channels,
                hidden_dim=config.hidden_dim,
                dropout=config.dropout,
            ),
        )
        self.projector = Projector(
            in_dim=config.hidden_dim,
            hidden_dim=config.projector_dim,
            out_dim=config.projector_dim,
            layers=config.projector_layers,
            sync_bn=config.sync_bn,
        )

    @property
    def encoder(self) -> STGCN:  # type: ignore[override]
        try:
            return self._modules["encoder"]  # type: ignore[return-value]
        except KeyError:  # before registration (nn.Module.add_module asks hasattr first)
            raise AttributeError("encoder") from None

    def card(self) -> dict[str, Any]:
        return {"method": self.name, "config": asdict(self.config), "encoder": encoder_spec(self.encoder)}

    # ---------------------------------------------------------------------------------------------- step

    def step(self, x: Tensor, *, generator: torch.Generator) -> dict[str, Tensor]:
        """One PSTL (or SkeletonBT) forward on ``x`` ``(N, M, T, V, C)`` (module doc).

        Returns ``loss`` (scalar with gradient) and detached scalars: ``loss_matm``, ``loss_csm`` (PSTL, the
        unweighted terms present) or ``loss_bt`` (SkeletonBT), ``csm_dropped`` (mean joints dropped per
        sample), ``matm_frames_kept`` (frames left in the MATM view) and ``feature_std`` (mean per-dimension
        standard deviation of the anchor features: near 0 means collapse).
        """
        cfg = self.config
        self._check_input(x)
        n = x.shape[0]
        x = to_stream(x, cfg.stream, self.layout)
        use_matm = not cfg.baseline and cfg.weight_matm > 0
        use_csm = not cfg.baseline and cfg.weight_csm > 0
        drop = None
        if use_csm and cfg.csm_joints > 0:
            drop = csm_drop_joints(
                self.layout,
                num_joints=cfg.csm_joints,
                batch_size=n,
                generator=generator,
                mode=cfg.csm_mode,
                centrality=cfg.csm_centrality,
                batch_shared=cfg.batch_shared,
            )
            drop = drop.to(x.device) if drop.numel() else None
        anchor = augment(x, self.augmentation, layout=self.layout, generator=generator)
        feats = [self.encoder(anchor)]
        del anchor
        out: dict[str, Tensor] = {}
        if cfg.baseline or use_matm:
            second = augment(x, self.augmentation, layout=self.layout, generator=generator)
            if use_matm:
                second, _ = motion_attention_temporal_mask(
                    second,
                    num_frames=cfg.matm_frames,
                    generator=generator,
                    mode=cfg.matm_mode,
                    temperature=cfg.matm_temperature,
                    batch_shared=cfg.batch_shared,
                )
                out["matm_frames_kept"] = torch.tensor(float(second.shape[2]))
            feats.append(self.encoder(second))
            del second
        if use_csm:
            third = augment(x, self.augmentation, layout=self.layout, generator=generator)
            feats.append(self.encoder(third, drop))
            del third
            dropped = 0 if drop is None else drop.shape[-1]
            out["csm_dropped"] = torch.tensor(float(dropped))

        z = self._project(feats)
        terms = []
        if cfg.baseline:
            terms.append(("loss_bt", 1.0, z[1]))
        else:
            rest = iter(z[1:])
            if use_matm:
                terms.append(("loss_matm", cfg.weight_matm, next(rest)))
            if use_csm:
                terms.append(("loss_csm", cfg.weight_csm, next(rest)))
        loss: Tensor | None = None
        for key, weight, other in terms:
            term = barlow_twins_loss(z[0], other, lambd=cfg.lambd, normalize=False, distributed=self.distributed)
            out[key] = term.detach()
            loss = weight * term if loss is None else loss + weight * term
        assert loss is not None  # check() guarantees at least one term
        out["feature_std"] = feats[0].detach().float().std(dim=0).mean()
        return {"loss": loss, **out}

    def _check_input(self, x: Tensor) -> None:
        cfg = self.config
        if x.dim() != 5:
            raise ValueError(f"PSTL expects a batch (N, M, T, V, C), got shape {tuple(x.shape)}")
        n, _, t, v, c = x.shape
        if v != self.layout.num_joints or c != self.encoder.in_channels:
            raise ValueError(
                f"PSTL on {self.layout.name} expects (N, M, T, {self.layout.num_joints}, {self.encoder.in_channels}) "
                f"input, got {tuple(x.shape)}"
            )
        if n < 2 and self.training and not (self.distributed and is_distributed()):
            raise ValueError("a PSTL step needs at least 2 samples (Barlow Twins standardises over the batch)")
        if not cfg.baseline and cfg.weight_matm > 0 and t - 2 * cfg.matm_frames < 1:
            raise ConfigError(
                f"pstl.matm_frames = {cfg.matm_frames} removes {2 * cfg.matm_frames} frames from a {t}-frame clip; "
                f"use matm_frames < {(t + 1) // 2}"
            )

    @staticmethod
    def check_setup(config: PSTLConfig, *, layout: Layout | None, frames: int | None) -> None:
        """Refuse a config that cannot work on ``frames``-frame clips of ``layout`` (either ``None``: not known
        yet): CSM must leave a joint (``csm_joints`` below the layout's joints, within what its sampler can draw)
        and MATM a frame (``2·matm_frames < frames``). Raises :class:`ConfigError` naming the key and its range."""
        config.check()
        if (
            frames is not None
            and not config.baseline
            and config.weight_matm > 0
            and frames - 2 * config.matm_frames < 1
        ):
            raise ConfigError(
                f"pstl.matm_frames = {config.matm_frames} removes {2 * config.matm_frames} frames from a "
                f"{frames}-frame clip; allowed: 0 <= matm_frames <= {(frames - 1) // 2} (or a longer data.frames)"
            )
        if layout is None or config.baseline or config.weight_csm <= 0:
            return
        v = layout.num_joints
        if config.csm_joints >= v:
            raise ConfigError(
                f"pstl.csm_joints = {config.csm_joints} would mask every joint of {v} ({layout.name}); "
                f"allowed: 0 <= csm_joints <= {v - 1}"
            )
        weights = centrality_weights(layout, config.csm_centrality)
        limit = int(weights.sum()) if config.csm_mode == "reference" else int((weights > 0).sum())
        if config.csm_joints > limit:
            what = "multiset entries" if config.csm_mode == "reference" else "joints with positive centrality"
            raise ConfigError(
                f"pstl.csm_joints = {config.csm_joints}: {layout.name} has only {limit} {what}; "
                f"allowed: 0 <= csm_joints <= {min(limit, v - 1)}"
            )

    def _project(self, feats: list[Tensor]) -> list[Tensor]:
        """Project and standardise each view's features ``(N, hidden_dim)`` → ``(N, projector_dim)``.

        The Linear layers run once on the views stacked ``(V·N, ·)``; every BatchNorm (and the final
        per-dimension standardisation) runs on each view separately — the same as one projector call per
        view, with bigger GEMMs.
        """
        n = feats[0].shape[0]
        h = torch.cat(feats)
        for layer in self.projector.net:
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                h = torch.cat([layer(part) for part in h.split(n)])
            else:
                h = layer(h)
        n_global = None
        if self.distributed and is_distributed():
            n_global = sum(gather_sizes(n, h.device))
        # the standardisation in float32 at least, whatever the caller's autocast (as barlow_twins_loss does)
        return [
            barlow_twins_normalize(_at_least_fp32(part), distributed=self.distributed, n_global=n_global)
            for part in h.split(n)
        ]
