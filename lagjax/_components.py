"""Strongly connected components of the dependency graph (NumPy and plain Python, no JAX).

A program whose variables depend on each other in cycles has a constraint Jacobian D that is no longer
triangular. Grouping the variables into strongly connected components (SCCs) and ordering the components
so that every component comes after the components it depends on makes D block triangular: the forward
pass solves one diagonal block at a time (a root finder on a cyclic block, plain substitution on a
singleton), and the multiplier and tangent passes substitute between blocks.

The graph is given in CSR form: the successors of node v (the arguments v depends on, edges v -> w) are
`indices[indptr[v]:indptr[v + 1]]`.

Tarjan's algorithm emits a component only after every component reachable from it, that is, after
all of its dependencies: its emission order is already an evaluation order. It is written here with
an explicit call stack, so a chain or a cycle of 10⁶ nodes does not meet Python's recursion limit.
"""

from __future__ import annotations

import numpy as np

from lagjax import _records


def strongly_connected(num_nodes: int, indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The strongly connected components of a graph, dependencies first.

    Args:
      num_nodes: n, the number of nodes.
      indptr: (n + 1,) integer CSR row pointers, `indptr[0] == 0`, non-decreasing.
      indices: (indptr[n],) integer successors (the nodes each node depends on), in [0, n).

    Returns:
      `(component_of, components)`: `component_of` (n,) int64 is the position of each node's component
      in `components`; `components` is a list of int64 arrays, each the nodes of one component sorted
      ascending, ordered so that a component comes after every component it has an edge to (a
      topological order for evaluation). The arrays are non-overlapping views of one buffer.
    """
    indptr, indices = _check_csr(num_nodes, indptr, indices)
    ptr = indptr.tolist()  # Python ints: indexing lists is ~10x faster than indexing arrays
    succ = indices.tolist()

    # index[v]: -1 while unvisited, the discovery number while v is on Tarjan's stack, and FINISHED
    # once v's component has been emitted (so `min(low, index[w])` ignores finished nodes: an edge
    # into an emitted component is a cross edge, not a cycle).
    FINISHED = num_nodes
    index = [-1] * num_nodes
    low = [0] * num_nodes
    stack_position = [0] * num_nodes
    next_edge = ptr[:-1]  # the next successor of each node to look at
    stack: list[int] = []  # Tarjan's stack: visited nodes whose component is not yet emitted
    emitted: list[int] = []  # nodes in the order their components are emitted
    sizes: list[int] = []
    counter = 0

    for root in range(num_nodes):
        if index[root] >= 0:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack_position[root] = len(stack)
        stack.append(root)
        call = [root]  # the depth-first path, in place of the recursion
        while call:
            v = call[-1]
            p, end = next_edge[v], ptr[v + 1]
            low_v = low[v]
            while p < end:
                w = succ[p]
                p += 1
                iw = index[w]
                if iw < 0:  # unvisited: descend into w, come back to v's next edge later
                    break
                if iw < low_v:  # w is on the stack: v reaches an ancestor on the path
                    low_v = iw
            else:
                w = -1
            next_edge[v] = p
            low[v] = low_v
            if w >= 0:
                index[w] = low[w] = counter
                counter += 1
                stack_position[w] = len(stack)
                stack.append(w)
                call.append(w)
                continue
            # all successors of v are done: return from v
            call.pop()
            if call and low_v < low[call[-1]]:
                low[call[-1]] = low_v
            if low_v == index[v]:  # v is the root of a component: everything above it on the stack
                start = stack_position[v]
                members = stack[start:]
                del stack[start:]
                for w in members:
                    index[w] = FINISHED
                emitted.extend(members)
                sizes.append(len(members))

    sizes_array = np.asarray(sizes, dtype=np.int64)
    component_of = np.empty(num_nodes, dtype=np.int64)
    component_of[np.asarray(emitted, dtype=np.int64)] = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes_array)
    # Nodes grouped by component, ascending within each (a stable sort keeps node order within a key).
    nodes = np.argsort(component_of, kind="stable").astype(np.int64, copy=False)
    ends = np.cumsum(sizes_array).tolist()
    starts = [0] + ends[:-1]
    components = [nodes[a:b] for a, b in zip(starts, ends)]
    return component_of, components


def is_cyclic(component: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> bool:
    """Whether a component is a cycle: more than one node, or one node that depends on itself.

    Args:
      component: the nodes of one strongly connected component (as returned by `strongly_connected`).
      indptr, indices: the graph in CSR form, as given to `strongly_connected`.
    """
    if len(component) > 1:
        return True
    if len(component) == 0:
        raise ValueError("`component` is empty: a strongly connected component has at least one node.")
    v = int(component[0])
    return bool(np.any(np.asarray(indices[indptr[v] : indptr[v + 1]]) == v))


def _check_csr(num_nodes, indptr, indices) -> tuple[np.ndarray, np.ndarray]:
    """Validate the CSR arrays; errors name the argument and say what was received."""
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)) or num_nodes < 0:
        raise ValueError(f"`num_nodes` must be a non-negative int, got {num_nodes!r}.")
    num_nodes = int(num_nodes)
    indptr = np.asarray(indptr)
    indices = np.asarray(indices)
    for name, array in (("indptr", indptr), ("indices", indices)):
        if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
            raise ValueError(f"`{name}` must be a 1-D integer array, got shape {array.shape} and dtype {array.dtype}.")
    if indptr.shape != (num_nodes + 1,):
        raise ValueError(f"`indptr` must have shape (num_nodes + 1,) = ({num_nodes + 1},), got {indptr.shape}.")
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError("`indptr` must start at 0 and be non-decreasing (CSR row pointers).")
    if indptr[-1] != indices.size:
        raise ValueError(f"`indptr[-1]` must equal len(indices) = {indices.size} (the edges), got {indptr[-1]}.")
    if indices.size and (indices.min() < 0 or indices.max() >= num_nodes):
        low, high = indices.min(), indices.max()
        raise ValueError(f"`indices` must lie in [0, num_nodes) = [0, {num_nodes}), got values in [{low}, {high}].")
    return indptr.astype(np.int64, copy=False), indices.astype(np.int64, copy=False)


def levels(d: int, constraints) -> np.ndarray:
    """The level of every variable, `(d + len(constraints),)` int64: 0 for the d inputs,
    `1 + max(level of its arguments)` for a constraint, -1 for a variable on a cycle or downstream
    of one (it has no level of the acyclic sweep).

    `constraints` are records with `args` (resolved argument indices) and `group`, variable
    i = d + position, in any order, or their `_records.Records`. Kahn's algorithm by rounds: round r
    levels every variable whose last argument got level r - 1, a few NumPy operations over the edges
    out of round r - 1 (`_level_rounds`); once a round has few edges (a chain), plain Python lists
    take over, one variable at a time (`_level_one_by_one`).
    """
    t = _records.table(constraints)
    n = d + t.arity.size
    rows, positions = np.nonzero(t.args >= 0)
    flat = t.args[rows, positions]
    order = np.argsort(flat, kind="stable")  # the consumers of each variable, CSR
    ptr = np.searchsorted(flat[order], np.arange(n + 1))
    consumers = d + rows[order]
    waiting = np.concatenate([np.zeros(d, np.int64), t.arity])  # arguments not yet levelled (with multiplicity)
    level = np.full(n, -1, np.int64)
    frontier = np.concatenate([np.arange(d), d + np.flatnonzero(t.arity == 0)])
    level[frontier] = 0
    frontier = _level_rounds(frontier, level, waiting, ptr, consumers)
    if frontier.size:
        _level_one_by_one(frontier, level, waiting, ptr, consumers)
    return level


# Below this many edges out of a round, a round of NumPy operations (some 50 µs) costs more than
# levelling its variables one by one in Python (some 0.3 µs an edge).
_ROUND_MIN_EDGES = 256


def _level_rounds(frontier, level, waiting, ptr, consumers) -> np.ndarray:
    """Kahn's algorithm a round at a time from `frontier` (variables of one level whose consumers are
    not yet visited), in place; returns the frontier at which a round would have too few edges."""
    while frontier.size:
        starts, counts = ptr[frontier], ptr[frontier + 1] - ptr[frontier]
        total = int(counts.sum())
        if total < _ROUND_MIN_EDGES:
            return frontier
        edge = np.arange(total) + np.repeat(starts - (np.cumsum(counts) - counts), counts)
        hit, times = np.unique(consumers[edge], return_counts=True)
        waiting[hit] -= times
        ready = hit[waiting[hit] == 0]
        level[ready] = level[frontier[0]] + 1
        frontier = ready
    return frontier


def _level_one_by_one(frontier, level, waiting, ptr, consumers) -> None:
    """Kahn's algorithm one variable at a time (Python lists), from `frontier`, in place; variables
    left unlevelled keep -1 (on a cycle or after one)."""
    ptr, consumers = ptr.tolist(), consumers.tolist()
    done = level >= 0
    levels, wait = np.maximum(level, 0).tolist(), waiting.tolist()
    ready = frontier.tolist()
    first_new = len(ready)
    for v in ready:  # `ready` grows as variables are levelled
        next_level = levels[v] + 1
        for c in consumers[ptr[v] : ptr[v + 1]]:
            if levels[c] < next_level:
                levels[c] = next_level
            wait[c] -= 1
            if wait[c] == 0:
                ready.append(c)
    result = np.asarray(levels, np.int64)
    done[np.asarray(ready[first_new:], np.int64)] = True
    result[~done] = -1
    level[:] = result


def condensation(d: int, constraints) -> tuple[np.ndarray, list[np.ndarray]]:
    """The condensation of a program's dependency graph, as levels: `(level, blocks)`.

    `level` (n,) int64: 0 for the d inputs; for an acyclic constraint `1 + max(level of its
    arguments)`; the variables of a cyclic block all get the block's level, `1 + max(level of its
    arguments outside the block)`. So every node (constraint or block) comes after what it reads,
    and the nodes of one level are independent of each other. `blocks`: the cyclic blocks, each
    the sorted variable indices of one strongly connected component with a cycle, dependencies first.

    The acyclic part is levelled by Kahn's algorithm (`levels`); Tarjan's algorithm runs only on
    what remains (the cycles and what depends on them). `constraints`: as for `levels`.
    """
    level = levels(d, constraints)
    rest = np.flatnonzero(level < 0)
    if rest.size == 0:
        return level, []
    t = _records.table(constraints)
    local = np.full(level.size, -1, np.int64)
    local[rest] = np.arange(rest.size)
    args = t.args[rest - d]
    inside = np.where(args >= 0, local[np.maximum(args, 0)], -1)
    indptr = np.concatenate([[0], np.cumsum(np.sum(inside >= 0, axis=1))])
    indices = inside[inside >= 0]  # row-major: each node's successors in order
    _, components = strongly_connected(rest.size, indptr, indices)
    blocks = []
    values = level.tolist()
    rows = args.tolist()
    for component in components:
        nodes = rest[component]
        members = set(nodes.tolist())
        external = [values[a] for j in component.tolist() for a in rows[j] if a >= 0 and a not in members]
        node_level = 1 + max(external, default=0)
        for v in nodes.tolist():
            values[v] = node_level
        if is_cyclic(component, indptr, indices):
            blocks.append(np.sort(nodes))
    return np.asarray(values, np.int64), blocks
