from __future__ import annotations

import numpy as np
import pytest

from skelssl.errors import ConfigError
from skelssl.skeleton import graph
from skelssl.skeleton.layouts import LAYOUTS, get_layout

NTU_DEGREE = [3, 2, 2, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 1, 4, 1, 2, 1, 2]  # spec §1.5


def _reference_spatial(edges: list[tuple[int, int]], v: int, center: int, max_hop: int = 1) -> np.ndarray:
    """ST-GCN's spatial partition written as its paper-code loops (independent of graph.partition)."""
    a = np.eye(v)
    for i, j in edges:
        a[i, j] = a[j, i] = 1
    hop = np.full((v, v), np.inf)
    arrive = [np.linalg.matrix_power(a, d) > 0 for d in range(max_hop + 1)]
    for d in range(max_hop, -1, -1):
        hop[arrive[d]] = d
    adj = np.zeros((v, v))
    for d in range(max_hop + 1):
        adj[hop == d] = 1
    dl = adj.sum(0)
    norm = adj @ np.diag([1 / x if x > 0 else 0 for x in dl])
    out = []
    for d in range(max_hop + 1):
        root, close, far = np.zeros((v, v)), np.zeros((v, v)), np.zeros((v, v))
        for i in range(v):
            for j in range(v):
                if hop[j, i] == d:
                    if hop[j, center] == hop[i, center]:
                        root[j, i] = norm[j, i]
                    elif hop[j, center] > hop[i, center]:
                        close[j, i] = norm[j, i]
                    else:
                        far[j, i] = norm[j, i]
        out += [root] if d == 0 else [root + close, far]
    return np.stack(out)


def test_ntu_degree_centrality_matches_spec() -> None:
    deg = graph.centrality("ntu25", "degree")
    assert deg.tolist() == NTU_DEGREE
    assert deg.sum() == 48


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_spatial_partition_equals_reference(name: str) -> None:
    lay = LAYOUTS[name]
    a = graph.partition(lay, "spatial")
    ref = _reference_spatial(list(lay.edges), lay.num_joints, lay.center)
    assert a.shape == (3, lay.num_joints, lay.num_joints)
    np.testing.assert_allclose(a, ref, rtol=0, atol=1e-7)


def test_ntu_spatial_partition_facts() -> None:
    a = graph.partition("ntu25", "spatial")
    # column-normalised: every column of the summed partitions adds up to 1
    np.testing.assert_allclose(a.sum(axis=(0, 1)), np.ones(25), atol=1e-6)
    np.testing.assert_allclose(np.diag(a[0]), 1 / (np.array(NTU_DEGREE) + 1), atol=1e-6)
    # the reference truncates centre distances at max_hop: a bone between two joints that are both
    # two or more hops from the centre lands in the root group, e.g. elbow(5)-wrist(6)
    assert a[1, 5, 6] > 0 and a[2, 5, 6] == 0 and a[1, 6, 5] > 0
    # centre neighbours: left shoulder (4) -> centre (20) is centripetal, centre -> shoulder centrifugal
    assert a[1, 4, 20] > 0 and a[2, 20, 4] > 0 and a[1, 20, 4] == 0
    assert (a > 0).sum(axis=(1, 2)).tolist() == [25, 40, 8]


def test_geodesic_partition_follows_true_distances() -> None:
    a = graph.partition("ntu25", "spatial", geodesic_centre=True)
    assert a[2, 5, 6] > 0 and a[1, 5, 6] == 0  # elbow -> wrist goes away from the centre
    assert a[1, 6, 5] > 0  # wrist -> elbow towards it
    np.testing.assert_allclose(a.sum(axis=(0, 1)), np.ones(25), atol=1e-6)


def test_uniform_and_distance_partitions() -> None:
    u = graph.partition("kinect20", "uniform")
    d = graph.partition("kinect20", "distance")
    assert u.shape == (1, 20, 20) and d.shape == (2, 20, 20)
    np.testing.assert_allclose(d.sum(0), u[0], atol=1e-7)
    np.testing.assert_allclose(graph.partition("kinect20", "spatial").sum(0), u[0], atol=1e-7)
    with pytest.raises(ConfigError):
        graph.partition("kinect20", "spectral")  # type: ignore[arg-type]


def test_closeness_and_betweenness_on_ntu() -> None:
    close = graph.centrality("ntu25", "closeness")
    betw = graph.centrality("ntu25", "betweenness")
    assert int(np.argmax(close)) == 20 and int(np.argmax(betw)) == 20
    # on a tree, betweenness of v = pairs separated by removing v; spine_shoulder splits 24 joints into
    # components of 10 (spine/legs), 2 (neck/head), 6 and 6 (arms)
    assert betw[20] == (24**2 - (10**2 + 2**2 + 6**2 + 6**2)) / 2
    leaves = [3, 15, 19, 21, 23]
    assert (betw[leaves] == 0).all()
    # closeness of the head: distances 1 (neck), 2 (spine_shoulder) … summed by BFS by hand
    ntu = get_layout("ntu25")
    assert close[3] == pytest.approx(24 / _sum_dist(ntu, 3))


def _sum_dist(lay, s: int) -> int:
    adj = {i: set() for i in range(lay.num_joints)}
    for a, b in lay.edges:
        adj[a].add(b)
        adj[b].add(a)
    dist, frontier, d = {s: 0}, [s], 0
    while frontier:
        d += 1
        frontier = [w for u in frontier for w in adj[u] if w not in dist]
        for w in frontier:
            dist[w] = d
    return sum(dist.values())


def test_path_graph_centralities() -> None:
    # kinect20's left leg from the hip centre: hip(12) has degree 2, foot(15) degree 1
    deg = graph.centrality("kinect20", "degree")
    assert deg[12] == 2 and deg[15] == 1 and deg[2] == 4
