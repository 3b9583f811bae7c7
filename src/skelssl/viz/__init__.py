"""Pictures (``skelssl viz``): skeleton sequences, the masks of each method on a real clip, training curves.

Embeddings and confusion matrices are drawn by :mod:`skelssl.evaluation.plots`. matplotlib is imported
lazily, on the headless Agg backend.
"""

from __future__ import annotations

from skelssl.viz.curves import CurvesPicture, plot_curves
from skelssl.viz.masks import (
    MASK_METHODS,
    CSMPicture,
    MATMPicture,
    TokenPicture,
    method_clip,
    plot_csm,
    plot_mamp_mask,
    plot_mask_figures,
    plot_matm,
    plot_tube_mask,
)
from skelssl.viz.skeleton import SequencePicture, animate_sequence, draw_sequence, from_store, plot_strip, project

__all__ = [
    "MASK_METHODS",
    "CSMPicture",
    "CurvesPicture",
    "MATMPicture",
    "SequencePicture",
    "TokenPicture",
    "animate_sequence",
    "draw_sequence",
    "from_store",
    "method_clip",
    "plot_csm",
    "plot_curves",
    "plot_mamp_mask",
    "plot_mask_figures",
    "plot_matm",
    "plot_strip",
    "plot_tube_mask",
    "project",
]
