"""Skeleton graphs: adjacency, ST-GCN partitions, and joint centrality.

The partitions follow ST-GCN (Yan et al., 2018) exactly: hop distances up to ``max_hop``, an adjacency
normalised by column degree (``A · D⁻¹``, self-loops included), then

- ``uniform``: one matrix, the normalised adjacency;
- ``distance``: one matrix per hop distance 0..max_hop;
- ``spatial``: the self-loops, then per hop ``root + centripetal`` and ``centrifugal`` relative to the
  layout's centre joint — ``(3, V, V)`` for ``max_hop=1`` (see :func:`partition` for the reference
  code's truncated centre distances, reproduced by default).

Centralities (used by PSTL's Central Spatial Masking) are computed on the bone graph without self-loops.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import numpy as np

from skelssl.errors import ConfigError
from skelssl.skeleton.layouts import Layout, get_layout

Strategy = Literal["uniform", "distance", "spatial"]
Centrality = Literal["degree", "closeness", "betweenness"]


def _layout(layout: Layout | str) -> Layout:
    return get_layout(layout) if isinstance(layout, str) else layout


def adjacency(layout: Layout | str, *, self_loops: bool = False) -> np.ndarray:
    """Symmetric 0/1 bone adjacency ``(V, V)`` as float64."""
    lay = _layout(layout)
    a = np.zeros((lay.num_joints, lay.num_joints))
    for child, parent in lay.edges:
        a[child, parent] = a[parent, child] = 1.0
    if self_loops:
        a += np.eye(lay.num_joints)
    return a


def hop_distance(layout: Layout | str, max_hop: int = 1) -> np.ndarray:
    """``(V, V)`` hop distances, ``inf`` beyond ``max_hop``."""
    a = adjacency(layout)
    v = a.shape[0]
    dist = np.full((v, v), np.inf)
    reach = [np.linalg.matrix_power(a + np.eye(v), d) > 0 for d in range(max_hop + 1)]
    for d in range(max_hop, -1, -1):
        dist[reach[d]] = d
    return dist


def normalize_columns(a: np.ndarray) -> np.ndarray:
    """``A · D⁻¹`` with ``D`` the column sums (columns summing to zero are left zero)."""
    deg = a.sum(axis=0)
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    return a * inv[None, :]


def partition(
    layout: Layout | str, strategy: Strategy = "spatial", *, max_hop: int = 1, geodesic_centre: bool = False
) -> np.ndarray:
    """ST-GCN adjacency partitions ``(K, V, V)`` as float32. ``A[k, v, w]`` weights joint ``v`` → ``w``.

    The reference ST-GCN code (and PSTL, which copies it) compares joints' distances to the centre using
    hop distances *truncated at* ``max_hop``: every joint further than ``max_hop`` from the centre is
    "at infinity", so most bones fall in the root group. That is the default, for fidelity.
    ``geodesic_centre=True`` uses true graph distances, the partition the ST-GCN paper describes.
    """
    lay = _layout(layout)
    hop = hop_distance(lay, max_hop)
    within = (hop <= max_hop).astype(np.float64)
    norm = normalize_columns(within)
    if strategy == "uniform":
        return norm[None].astype(np.float32)
    if strategy == "distance":
        return np.stack([norm * (hop == d) for d in range(max_hop + 1)]).astype(np.float32)
    if strategy != "spatial":
        raise ConfigError(f"unknown partition strategy {strategy!r}; use uniform, distance or spatial")
    to_centre = hop_distance(lay, lay.num_joints if geodesic_centre else max_hop)[:, lay.center]
    # entry [j, i]: j's distance to the centre compared with i's
    closer = to_centre[:, None] == to_centre[None, :]
    further = to_centre[:, None] > to_centre[None, :]
    parts = []
    for d in range(max_hop + 1):
        at_d = hop == d
        root = norm * (at_d & closer)
        if d == 0:
            parts.append(root)
            continue
        centripetal = norm * (at_d & further)
        centrifugal = norm * (at_d & ~closer & ~further)
        parts.extend([root + centripetal, centrifugal])
    return np.stack(parts).astype(np.float32)


def centrality(layout: Layout | str, measure: Centrality = "degree") -> np.ndarray:
    """Per-joint centrality ``(V,)`` on the bone graph (no self-loops).

    ``degree``: number of bones at the joint (PSTL's measure). ``closeness``: ``(V-1) / Σ distances``.
    ``betweenness``: fraction of shortest paths between other joint pairs through the joint
    (unnormalised pair counts over unordered pairs, as in Freeman 1977; on a tree each pair has one path).
    """
    a = adjacency(layout)
    v = a.shape[0]
    if measure == "degree":
        return a.sum(axis=1)
    neighbours = [np.flatnonzero(a[i]) for i in range(v)]
    dist, sigma = _all_pairs_bfs(neighbours)
    if measure == "closeness":
        return (v - 1) / dist.sum(axis=1)
    if measure == "betweenness":
        out = np.zeros(v)
        joints = np.arange(v)
        for s in range(v):
            for t in range(s + 1, v):
                through = (dist[s] + dist[:, t] == dist[s, t]) & (joints != s) & (joints != t)
                out += np.where(through, sigma[s] * sigma[:, t] / sigma[s, t], 0.0)
        return out
    raise ConfigError(f"unknown centrality {measure!r}; use degree, closeness or betweenness")


def _all_pairs_bfs(neighbours: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Shortest-path distances and shortest-path counts between every pair of joints."""
    v = len(neighbours)
    dist = np.full((v, v), np.inf)
    sigma = np.zeros((v, v))
    for s in range(v):
        dist[s, s], sigma[s, s] = 0, 1
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for w in neighbours[u]:
                if dist[s, w] == np.inf:
                    dist[s, w] = dist[s, u] + 1
                    queue.append(w)
                if dist[s, w] == dist[s, u] + 1:
                    sigma[s, w] += sigma[s, u]
    if np.isinf(dist).any():
        raise ConfigError("the skeleton graph is not connected")
    return dist, sigma
