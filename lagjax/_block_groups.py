"""Block groups: cyclic blocks that run the same code, solved as one (NumPy, once per program).

A cyclic block (a strongly connected component with a cycle, `_components`) is solved on its own
variables u, flattened class after class, each class's variables by constraint group, then index. Two blocks have
the same *structure* when, in that order, their variables have the same classes, are defined by
constraints of the same groups, and read each argument from the same position of u, or from outside
the block, alike. Then one function of u and of the member's tables evaluates either (`_blocks`),
and one root finder, vmapped over the members, solves them all: the compiled program holds one
solver per structure, however many blocks share it. A block group is the blocks of one structure;
its tables stack what differs between members: the rows of their variables, the ranks of their
constraints among their groups' members (which data they capture), and the rows of the arguments
they read from outside.

Blocks of one group at one level are independent (the levels of the condensation): they are solved
together, in *block steps* of `width` members; the last step of a level is padded with its first
member, whose writes are dropped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

# A block step's cost in lanes: a step over W members costs about (_STEP_OVERHEAD + W) lanes' work
# (the loop, the switch and the solver's control flow are paid once per step, the arithmetic per lane).
_STEP_OVERHEAD = 32
# At most this many numbers of dense Jacobians per block step (width · size²): memory, not time.
_DENSE_NUMBERS_MAX = 2**22


@dataclasses.dataclass(frozen=True, eq=False)
class Block:
    """A cyclic block: the variables `variables` (sorted; their names `names`) of one strongly
    connected component with a cycle, defined by the constraints `constraints` (positions), solved
    as one; member `member` of block group `group`."""

    index: int
    variables: np.ndarray
    names: tuple
    constraints: np.ndarray
    group: int
    member: int


@dataclasses.dataclass(frozen=True, eq=False)
class BlockGroup:
    """Cyclic blocks of one structure (see the module docstring); B members, each of `size` numbers.

    Shared by the members: `classes` (of their variables, in the order of u), `counts[c]` (variables
    of class c), `offsets[c]` (where they start in u), `groups` (the constraint groups defining them),
    and per group g: `out[g]` `(n_g,)` the positions of its constraints' variables among the block's
    variables of its class, `inside[g]` `(n_g, k_g)` whether each argument is a variable of the block,
    `inner[g]` `(n_g, k_g)` its position among the block's variables of its class there (0 elsewhere).

    Per member (a leading axis of B): `blocks` `(B,)` their indices; `order` `(B, variables)` their
    variables in the order of u; `rows[c]` `(B, counts[c])` those variables' rows in class c;
    `members[g]` `(B, n_g)` their constraints' ranks among group g's members; `at[g]` `(B, n_g, k_g)`
    per argument its position among the block's variables of its class (inside) or its row (outside).

    `steps` `(T, width)`: the members solved in each block step (-1: padding); `step_level` `(T,)`.
    """

    index: int
    blocks: np.ndarray
    classes: tuple
    counts: dict
    offsets: dict
    size: int
    groups: tuple
    out: dict
    inside: dict
    inner: dict
    order: np.ndarray
    rows: dict
    members: dict
    at: dict
    width: int
    steps: np.ndarray
    step_level: np.ndarray

    def tables(self) -> dict:
        """What the traced solves read of the group, stacked per member (arguments, not constants)."""
        i32 = lambda a: np.asarray(a, np.int32)  # noqa: E731
        return dict(
            blocks=i32(self.blocks),
            rows={c: i32(r) for c, r in self.rows.items()},
            members={g: i32(m) for g, m in self.members.items()},
            at={g: i32(a) for g, a in self.at.items()},
            steps=i32(self.steps),
        )


def build(blocks: Sequence[np.ndarray], d: int, table, class_shapes, var_class, var_row, member_rank, level, names):
    """The `Block`s and `BlockGroup`s of `blocks` (each an array of variables, dependencies first).

    `table`: the constraints' `_records.Table`; `class_shapes`, `var_class`, `var_row`: the storage
    (`_schedule`); `member_rank` (n,): each constraint variable's rank among its group's members;
    `level` (n,): the condensation's levels; `names`: every variable's name.
    """
    n = var_class.size
    block_of = np.full(n + 1, -1, np.int64)  # n: the padding argument (-1) reads here
    position = np.zeros(n + 1, np.int64)  # of a block's variable: among the block's variables of its class
    keys, parts = {}, []
    for b, variables in enumerate(blocks):
        variables = np.sort(np.asarray(variables, np.int64))
        block_of[variables] = b
        # u's order: by class, then by constraint group, then by index (so that blocks built in
        # another order of definition still have one structure)
        order = variables[np.lexsort((variables, table.group[variables - d], var_class[variables]))]
        ordered = var_class[order]
        first = np.searchsorted(ordered, ordered)  # where each variable's class starts in `order`
        position[order] = np.arange(order.size) - first
        cons = order - d
        group = table.group[cons]
        k = int(table.arity[cons].max())
        args = table.args[cons, :k]
        inside = block_of[args] == b
        inner = np.where(inside, position[args], -1)
        key = (ordered.tobytes(), group.tobytes(), inner.shape, inner.tobytes())
        keys.setdefault(key, []).append(b)
        at = np.where(inside, position[args], var_row[np.maximum(args, 0)])
        parts.append((variables, order, ordered, group, inside, at, table.arity[cons]))
    records = [None] * len(blocks)
    groups = []
    block_level = np.asarray([int(level[p[0][0]]) for p in parts], np.int64)
    for index, members in enumerate(keys.values()):
        groups.append(_group(index, members, parts, class_shapes, var_row, member_rank, block_level))
        for rank, b in enumerate(members):
            variables = parts[b][0]
            records[b] = Block(b, variables, tuple(names[v] for v in variables.tolist()), variables - d, index, rank)
    return tuple(records), tuple(groups)


def _group(index, members, parts, class_shapes, var_row, member_rank, block_level) -> BlockGroup:
    """The block group of `members` (blocks of one structure): its shared and stacked tables, its steps."""
    _, _, ordered, group, inside, _, arity = parts[members[0]]
    classes = tuple(dict.fromkeys(ordered.tolist()))
    counts = {c: int(np.sum(ordered == c)) for c in classes}
    offsets, size = {}, 0
    for c in classes:
        offsets[c] = size
        size += counts[c] * math.prod(class_shapes[c])
    constraint_groups = tuple(sorted(set(group.tolist())))
    masks = {g: group == g for g in constraint_groups}
    out, shared_inside = {}, {}
    for g, mask in masks.items():
        k_g = int(arity[mask].max())
        positions = np.flatnonzero(mask)
        first_of_class = np.searchsorted(ordered, ordered[positions])
        out[g] = (positions - first_of_class).astype(np.int32)
        shared_inside[g] = inside[mask][:, :k_g]
    order = np.stack([parts[b][1] for b in members])
    rows = {c: var_row[order[:, ordered == c]] for c in classes}
    ranks = {g: member_rank[order[:, mask]] for g, mask in masks.items()}
    at = {g: np.stack([parts[b][5][mask] for b in members])[:, :, : shared_inside[g].shape[1]] for g, mask in masks.items()}
    inner = {g: np.where(shared_inside[g], at[g][0], 0) for g in masks}
    width, steps, step_level = _steps(block_level[np.asarray(members)], size)
    return BlockGroup(
        index=index,
        blocks=np.asarray(members, np.int64),
        classes=classes,
        counts=counts,
        offsets=offsets,
        size=size,
        groups=constraint_groups,
        out=out,
        inside=shared_inside,
        inner=inner,
        order=order,
        rows=rows,
        members=ranks,
        at=at,
        width=width,
        steps=steps,
        step_level=step_level,
    )


def _steps(levels: np.ndarray, size: int):
    """`(width, steps, step_level)`: the members, by level, cut into block steps of `width`."""
    by_level = np.argsort(levels, kind="stable")
    unique, counts = np.unique(levels, return_counts=True)
    cap = max(1, _DENSE_NUMBERS_MAX // max(size * size, 1))
    best, best_cost, width = 1, None, 1
    while True:
        cost = float(np.sum(-(-counts // width))) * (_STEP_OVERHEAD + width)
        if best_cost is None or cost < best_cost:
            best, best_cost = width, cost
        if width >= counts.max() or 2 * width > cap:
            break
        width *= 2
    width = best
    steps, step_level = [], []
    start = 0
    for level, count in zip(unique.tolist(), counts.tolist()):
        mine = by_level[start : start + count]
        start += count
        for s in range(0, count, width):
            chunk = np.full(width, -1, np.int64)
            chunk[: min(width, count - s)] = mine[s : s + width]
            steps.append(chunk)
            step_level.append(level)
    return width, np.stack(steps), np.asarray(step_level, np.int64)
