"""Strongly connected components against a brute-force reachability closure, and at scale (10⁵ nodes)."""

import numpy as np
import pytest

from lagjax._components import is_cyclic, strongly_connected


def csr(num_nodes, edges):
    """CSR arrays of a list of edges (v, w), v depends on w."""
    edges = sorted(edges)
    counts = np.bincount([v for v, _ in edges], minlength=num_nodes) if edges else np.zeros(num_nodes, int)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, np.array([w for _, w in edges], dtype=np.int64)


def reachability(num_nodes, edges):
    """R[v, w]: w is reachable from v (reflexive), by repeated squaring of the adjacency matrix."""
    R = np.eye(num_nodes, dtype=bool)
    for v, w in edges:
        R[v, w] = True
    for _ in range(max(1, int(np.ceil(np.log2(num_nodes + 1))))):
        R = R | ((R.astype(np.int64) @ R.astype(np.int64)) > 0)
    return R


def check_against_closure(num_nodes, edges):
    indptr, indices = csr(num_nodes, edges)
    component_of, components = strongly_connected(num_nodes, indptr, indices)
    R = reachability(num_nodes, edges)
    same = R & R.T
    # the partition: two nodes share a component iff each reaches the other
    np.testing.assert_array_equal(component_of[:, None] == component_of[None, :], same)
    assert sorted(np.concatenate(components).tolist()) == list(range(num_nodes)) if num_nodes else components == []
    for k, nodes in enumerate(components):
        assert np.all(np.diff(nodes) > 0), "nodes of a component sorted ascending"
        assert np.all(component_of[nodes] == k)
        self_loop = any(v == w and v == nodes[0] for v, w in edges)
        assert is_cyclic(nodes, indptr, indices) == (len(nodes) > 1 or self_loop)
    # dependencies first: an edge v -> w never points to a later component
    for v, w in edges:
        assert component_of[w] <= component_of[v]


def test_random_graphs_against_closure(rng):
    for _ in range(60):
        n = int(rng.integers(0, 14))
        density = rng.choice([0.05, 0.15, 0.3])
        edges = [(v, w) for v in range(n) for w in range(n) if rng.random() < density]
        check_against_closure(n, edges)


@pytest.mark.parametrize(
    "name, edges",
    [
        ("two cycles joined", [(0, 1), (1, 0), (2, 3), (3, 2), (2, 0)]),
        ("self loop", [(0, 0), (1, 0)]),
        ("diamond into a cycle", [(3, 1), (3, 2), (1, 0), (2, 0), (0, 4), (4, 0)]),
    ],
)
def test_small_named_graphs(name, edges):
    check_against_closure(1 + max(max(e) for e in edges), edges)


def test_dependencies_first_order_is_evaluation_order():
    # 2 depends on 1 depends on 0, 0 and 3 form a cycle: {0, 3} first, then 1, then 2
    indptr, indices = csr(4, [(2, 1), (1, 0), (0, 3), (3, 0)])
    component_of, components = strongly_connected(4, indptr, indices)
    assert [c.tolist() for c in components] == [[0, 3], [1], [2]]
    np.testing.assert_array_equal(component_of, [0, 1, 2, 0])
    assert component_of.dtype == np.int64


N = 10**5


def test_long_chain():
    # v depends on v - 1: 10⁵ singletons in index order, none cyclic
    indptr = np.concatenate([[0, 0], np.arange(1, N)])
    indices = np.arange(N - 1)
    component_of, components = strongly_connected(N, indptr, indices)
    np.testing.assert_array_equal(component_of, np.arange(N))
    assert len(components) == N and not is_cyclic(components[-1], indptr, indices)


def test_long_chain_deep_search():
    # v depends on v + 1: the depth-first search from node 0 goes 10⁵ deep (no recursion limit)
    indptr = np.concatenate([np.arange(N), [N - 1]])
    indices = np.arange(1, N)
    component_of, components = strongly_connected(N, indptr, indices)
    np.testing.assert_array_equal(component_of, np.arange(N)[::-1])
    assert components[0].tolist() == [N - 1] and components[-1].tolist() == [0]


def test_long_cycle():
    indptr = np.arange(N + 1)
    indices = (np.arange(N) + 1) % N
    component_of, components = strongly_connected(N, indptr, indices)
    assert len(components) == 1 and is_cyclic(components[0], indptr, indices)
    np.testing.assert_array_equal(components[0], np.arange(N))
    assert np.all(component_of == 0)


def test_chain_of_two_cycles():
    # pairs {2k, 2k+1} are cycles, and pair k depends on pair k - 1
    pairs = N // 2
    edges = [(2 * k, 2 * k + 1) for k in range(pairs)] + [(2 * k + 1, 2 * k) for k in range(pairs)]
    edges += [(2 * k, 2 * k - 1) for k in range(1, pairs)]
    indptr, indices = csr(2 * pairs, edges)
    component_of, components = strongly_connected(2 * pairs, indptr, indices)
    np.testing.assert_array_equal(component_of, np.arange(2 * pairs) // 2)
    assert all(len(c) == 2 for c in components)


def test_empty_graph():
    component_of, components = strongly_connected(0, np.zeros(1, np.int64), np.zeros(0, np.int64))
    assert component_of.shape == (0,) and components == []


@pytest.mark.parametrize(
    "args, match",
    [
        ((3, [0, 1, 2], [0, 1]), "indptr"),
        ((2, [0, 1, 3], [0, 1]), "indptr"),
        ((2, [0, 2, 1], [0, 1]), "non-decreasing"),
        ((2, [0, 1, 2], [0, 2]), "indices"),
        ((-1, [0], []), "num_nodes"),
        ((2, [0, 1, 2], [0.0, 1.0]), "indices"),
    ],
)
def test_bad_csr_names_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        strongly_connected(*(np.asarray(a) if isinstance(a, list) else a for a in args))
