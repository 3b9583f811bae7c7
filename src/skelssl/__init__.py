"""skelssl: self-supervised learning on skeleton sequences (PSTL, Skeleton2vec, MAMP)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
