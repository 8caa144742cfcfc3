"""The schedule: everything static about a program, built once with NumPy.

**Storage.** Variables of one shape form a *class*; a class is stored as one buffer `(rows, *shape)`,
its inputs first, then the rows its steps write, then `width` spare rows (where steps that do not
write the class write, unread). Scalars are the class of shape `()`: a plain vector.

**Nodes.** The condensation of the dependency graph (`_components.condensation`) gives every
variable a level; the nodes of a level are independent. A node is an acyclic constraint or a cyclic
block (a strongly connected component with a cycle).

**Steps.** Constraints that run the same code on arguments of the same shapes form a *group*
(`_grouping`). A step is up to `width` lanes of one group at one level, evaluated with one `vmap`;
the sweeps loop over steps (`lax.scan`), switching on the step's group. So the compiled sweep holds
one branch per group: compile time grows with the number of groups, not with the program.
Constraints of a cyclic block are lanes too (their rows of the substitutions), in steps of their own;
in the forward pass they are skipped, and the block is solved as one at the end of its level.

**Segments.** Cyclic blocks of one structure form a *block group* (`_block_groups`), solved by one
vmapped solver; the blocks of a group at one level are solved together, in block steps. The steps
are cut after each level holding cyclic blocks: a segment is a run of steps and then at most one
block step (forward: root finding; backward: linear solves on the diagonal blocks), between two runs
of steps. Without cycles there is one segment.

Each class's steps have their own width (`_choose_width`, a cost model of a scan step): deep narrow
programs pay no padding, wide levels are swept lane-parallel. A padding lane (a step not full) writes
a row nothing reads and reads the arguments of its step's first lane, so functions are only ever
evaluated where the program evaluates them; a padding argument position (arity below `kmax`) points
at a spare row, with a zero partial, masked.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from lagjax import _block_groups, _records
from lagjax._block_groups import Block, BlockGroup
from lagjax._grouping import Group

# The cost model of one scan step, in nanoseconds, measured on CPU (XLA, 2 cores), for the forward
# sweep of scalars. Steps of at most `DYNAMIC_READS_MAX_WIDTH` lanes read their arguments with one
# `dynamic_slice` each; wider steps gather, and a gather from the carried vector in the same step
# as its in-place update costs time growing with the vector's length. (At 4 lanes, 16 slices per
# step hit a slow path of their own: 6x slower than 2 lanes on a 2·10⁴-constraint program.)
DYNAMIC_READS_MAX_WIDTH = 2
_DYNAMIC_STEP_NS, _DYNAMIC_READ_NS = 10.0, 22.0
_GATHER_STEP_NS, _GATHER_STEP_NS_PER_VARIABLE = 1000.0, 0.006
_LANE_NS = 30.0


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """Static tables of a program (see the module docstring); S steps of at most `width` lanes.

    Attributes:
      d, n: numbers of inputs and of variables.
      shapes: the classes' shapes; `rows[c]` the rows of class c's buffer (spare rows included).
      widths: per class, the lanes of its steps; `width` the largest.
      kmax: the largest arity.
      depth: the largest level.
      groups: the `Group`s; `group_class[g]` the class of group g's values, `arg_class[g]` its arguments'.
      var_class, var_row: (n,) each variable's class and row.
      class_vars: per class, its variables in index order (their rows: `var_row[class_vars[c]]`).
      blocks: the cyclic `Block`s, dependencies first; `block_groups` the `BlockGroup`s they form.
      segments: (begin, end, group, step) per segment: steps begin..end-1, then block step `step` of
        block group `group` (-1: none).
      step_group: (S,) each step's group; `step_member` (S,) whether its lanes are a block's constraints.
      out: (S, width) the variable of each lane; n for padding lanes.
      start: (S, C) where each step writes in each class (a spare row for classes it does not write).
      member: (S, width) each lane's rank among its group's members.
      arg_rows: (S, width, kmax) the row of each argument in its class (a spare row at padding).
      real: (S, width, kmax) whether an argument position pushes to its argument in the sweeps: a real
        argument of a real lane, outside the lane's own cyclic block.
      scatter: per class c, (S, lanes_c, kmax_c) rows where the step's contributions to class c's
        multipliers go: the positions of its group reading class c, compacted (`positions[g][c]`).
      group_vars, group_rows, group_args: per group, its members' variables (m_g,), their rows, and
        their arguments' variables (m_g, k).
      group_data, group_shared: per group, its members' captured data stacked (a leaf all share kept once).
      lane_source: (S * width,) each lane's row among the scalar groups' members concatenated (group
        after group); the last row (zeros) for other lanes. `scalar_groups` those groups.
      active: per group, per argument position, whether the sweeps differentiate w.r.t. it (all True
        but in a program's active part, `_activity`): the local maps are taken w.r.t. the active
        positions only, and the others are not `real`.
    """

    d: int
    n: int
    shapes: tuple
    rows: tuple
    widths: tuple
    width: int
    kmax: int
    depth: int
    groups: tuple[Group, ...]
    group_class: tuple
    arg_class: tuple
    positions: tuple
    var_class: np.ndarray
    var_row: np.ndarray
    class_vars: tuple
    blocks: tuple[Block, ...]
    block_groups: tuple[BlockGroup, ...]
    segments: tuple
    step_group: np.ndarray
    step_member: np.ndarray
    out: np.ndarray
    start: np.ndarray
    member: np.ndarray
    arg_rows: np.ndarray
    real: np.ndarray
    scatter: tuple
    scatter_lanes: tuple
    scatter_kmax: tuple
    scalar_class: int
    lane_args: np.ndarray
    forward_branch: np.ndarray
    substitution_branch: np.ndarray
    group_vars: tuple
    group_rows: tuple
    group_args: tuple
    group_data: tuple
    group_shared: tuple
    scalar_groups: tuple
    lane_source: np.ndarray
    active: tuple

    @property
    def num_steps(self) -> int:
        return self.out.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.shapes)

    @property
    def written(self) -> tuple[int, ...]:
        """The classes some constraint defines (the forward sweeps write only these)."""
        return tuple(sorted(set(self.group_class)))

    def dynamic_reads(self, c: int) -> bool:
        """Whether steps of class c read their arguments with one `dynamic_slice` each, not a gather."""
        return self.widths[c] <= DYNAMIC_READS_MAX_WIDTH

    def tables(self) -> dict:
        """The arrays the traced sweeps read, as a pytree (passed as arguments, not constants)."""
        segments = np.asarray(self.segments, np.int32).reshape(-1, 4)
        return dict(
            forward_branch=self.forward_branch,
            substitution_branch=self.substitution_branch,
            lane_args=self.lane_args,
            segments=tuple(segments.T),
            block_groups=[group.tables() for group in self.block_groups],
            group_vars=[np.asarray(v, np.int32) for v in self.group_vars],
            group_args=[np.asarray(a, np.int32) for a in self.group_args],
            out=self.out,
            start=self.start,
            member=self.member,
            arg_rows=self.arg_rows,
            real=self.real,
            scatter=list(self.scatter),
            group_rows=list(self.group_rows),
            group_arg_rows=[self.var_row[a] for a in self.group_args],
            group_data=[list(data) for data in self.group_data],
            lane_source=self.lane_source,
            var_row=self.var_row,
            class_rows=[self.var_row[v] for v in self.class_vars],
        )


def build(
    d: int,
    shapes: Sequence[tuple],
    constraints: Sequence,
    groups: Sequence[Group],
    level: np.ndarray,
    blocks: Sequence[np.ndarray],
    names: Sequence,
    active: Sequence[tuple] | None = None,
) -> Schedule:
    """Build the schedule of `d` inputs and `constraints` (records with `args`, `group`, `data`).

    `shapes`: every variable's shape; `groups`: the constraints' groups; `level`: every variable's
    level and `blocks` the cyclic blocks' variables (`_components.condensation`); `active`: per
    group, which argument positions are differentiated (default all).
    """
    n_c = len(constraints)
    n = d + n_c
    G = len(groups)
    active = tuple(tuple(a) for a in active) if active is not None else tuple((True,) * g.k for g in groups)
    # --- classes -------------------------------------------------------------------------
    scalars = list(shapes).count(()) == n  # an identity test each (`()` is one object)
    class_shapes = ((),) if scalars and n else tuple(dict.fromkeys(map(tuple, shapes)))  # in order of first appearance
    class_of_shape = {shape: c for c, shape in enumerate(class_shapes)}
    if len(class_shapes) == 1:
        var_class = np.zeros(n, np.int64)
    else:
        var_class = np.fromiter(map(class_of_shape.__getitem__, map(tuple, shapes)), np.int64, n)
    C = len(class_shapes)
    group_class = tuple(class_of_shape[tuple(g.out_shape)] for g in groups)
    arg_class = tuple(tuple(class_of_shape.get(tuple(s), -1) for s in g.arg_shapes) for g in groups)
    positions = tuple(tuple(tuple(p for p, a in enumerate(arg_class[g]) if a == c) for c in range(C)) for g in range(G))
    table = _records.table(constraints)
    arity, gid, args_c = table.arity, table.group, table.args
    kmax = int(arity.max(initial=1))
    args_c = args_c[:, :kmax] if args_c.shape[1] >= kmax else np.pad(args_c, ((0, 0), (0, kmax - args_c.shape[1])), constant_values=-1)

    # --- blocks: which constraints are members ---------------------------------------------
    block_of = np.full(n, -1, np.int64)
    if len(blocks):
        block_of[np.concatenate(blocks)] = np.repeat(np.arange(len(blocks)), [len(v) for v in blocks])
    member_c = block_of[d:] >= 0
    level_c = np.asarray(level[d:n], np.int64)

    # --- steps: runs of (level, member, group), cut into steps of their class's width --------
    key = (level_c * 2 + member_c) * max(G, 1) + gid  # sorted by level, then member, then group
    order = np.argsort(key, kind="stable")
    key = key[order]
    run_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if n_c else np.zeros(0, np.int64)
    run_count = np.diff(np.r_[run_start, n_c]).astype(np.int64)
    run_group = gid[order][run_start] if n_c else np.zeros(0, np.int64)
    run_class = np.asarray(group_class, np.int64)[run_group] if n_c else np.zeros(0, np.int64)
    class_rows = np.bincount(var_class, minlength=C)
    widths = tuple(_choose_width(run_count[run_class == c], int(class_rows[c]), kmax, math.prod(class_shapes[c])) for c in range(C))
    width = max(widths, default=1)
    run_width = np.asarray(widths, np.int64)[run_class] if n_c else np.zeros(0, np.int64)
    run_steps = -(-run_count // np.maximum(run_width, 1))
    run_first_step = np.r_[0, np.cumsum(run_steps)[:-1]].astype(np.int64)
    S = int(run_steps.sum())
    run_of = np.repeat(np.arange(len(run_count)), run_count)
    rank = np.arange(n_c) - run_start[run_of]
    lane_w = run_width[run_of]
    step_of = run_first_step[run_of] + rank // lane_w  # per sorted constraint
    lane_of = rank % lane_w

    out = np.full((S, width), n, np.int32)
    out[step_of, lane_of] = d + order
    valid = out < n
    step_group = np.zeros(S, np.int64)
    step_group[step_of] = gid[order]
    step_member = np.zeros(S, bool)
    step_member[step_of] = member_c[order]
    step_level = np.zeros(S, np.int64)
    step_level[step_of] = level_c[order]
    step_class = np.asarray(group_class, np.int64)[step_group] if G else np.zeros(S, np.int64)

    # --- rows: per class, inputs first, then the steps' lanes in step order, then spare rows ----
    var_row = np.zeros(n, np.int64)
    inputs_per_class = np.bincount(var_class[:d], minlength=C)
    for c in range(C):
        mine = np.flatnonzero(var_class[:d] == c)
        var_row[mine] = np.arange(mine.size)
    steps_per_class = np.bincount(step_class, minlength=C)
    start = np.zeros((S, C), np.int64)
    rows = []
    for c in range(C):
        mine = np.flatnonzero(step_class == c)
        first = inputs_per_class[c] + widths[c] * np.arange(mine.size)
        spare = inputs_per_class[c] + widths[c] * steps_per_class[c]
        start[:, c] = spare
        start[mine, c] = first
        rows.append(int(spare + widths[c]))
    var_row[d + order] = start[step_of, step_class[step_of]] + lane_of
    spare_row = np.asarray([r - w for r, w in zip(rows, widths)], np.int64)

    # --- lanes' arguments -----------------------------------------------------------------
    member = np.zeros((S, width), np.int32)
    group_vars, group_rows, group_args, group_data, group_shared = [], [], [], [], []
    sorted_group = gid[order]
    for g, group in enumerate(groups):
        mine = sorted_group == g
        variables = (d + order[mine]).astype(np.int64)
        group_vars.append(variables)
        group_rows.append(var_row[variables])
        group_args.append(args_c[order[mine], : group.k])
        member[step_of[mine], lane_of[mine]] = np.arange(variables.size)
        data, shared = _records.group_data(constraints, g, group.num_leaves, variables - d)
        group_data.append(data)
        group_shared.append(shared)
    member = np.where(valid, member, member[:, :1])  # padding lanes copy lane 0
    # each lane's constraint: its own, or for a padding lane its step's first lane's (whose arguments it reads)
    lane_constraint = np.where(valid, out, out[:, :1]) - d
    clipped = args_c[lane_constraint]  # (S, width, kmax), -1 at padding positions
    present = clipped >= 0
    np.maximum(clipped, 0, out=clipped)
    # a padding position points at a spare row of the class its position has in the step's group
    pos_class = np.full((S, kmax), 0, np.int64)
    for g in range(G):
        for p, c in enumerate(arg_class[g]):
            pos_class[step_group == g, p] = c
    arg_rows = var_row.astype(np.int32)[clipped]
    np.copyto(arg_rows, spare_row.astype(np.int32)[pos_class][:, None, :], where=~present)
    position_active = np.ones((max(G, 1), kmax), bool)
    for g in range(G):
        position_active[g, : groups[g].k] = active[g]
    real = valid[..., None] & present
    if len(blocks):  # not an argument of the lane's own cyclic block
        own_block = block_of[np.minimum(out, n - 1)]
        real &= ~((own_block[..., None] >= 0) & (block_of[clipped] == own_block[..., None]))
    real &= position_active[step_group][:, None, :]

    # --- where each step's contributions to the multipliers of each class go ------------------
    scatter, scatter_lanes, scatter_kmax = [], [], []
    for c in range(C):
        readers = [g for g in range(G) if positions[g][c]]
        kc = max((len(positions[g][c]) for g in readers), default=0)
        lanes = max((widths[group_class[g]] for g in readers), default=0)
        rows_c = np.full((S, lanes, kc), spare_row[c], np.int32)
        for g in readers:
            steps = step_group == g
            wg = widths[group_class[g]]
            for j, p in enumerate(positions[g][c]):
                target = arg_rows[steps, :wg, p]
                rows_c[steps, :wg, j] = np.where(real[steps, :wg, p], target, spare_row[c])
        scatter.append(rows_c)
        scatter_lanes.append(lanes)
        scatter_kmax.append(kc)

    # --- the scalar groups' partials, put in step layout by one gather -------------------------
    scalar_groups = tuple(g for g, group in enumerate(groups) if group.scalar)
    lane_source = np.full(S * width, 0, np.int32)
    offset = 0
    for g in scalar_groups:
        m = len(group_vars[g])
        mine = sorted_group == g
        lane_source[step_of[mine] * width + lane_of[mine]] = offset + np.arange(m)
        offset += m
    lane_source = np.where(valid.reshape(-1) & np.isin(step_group, scalar_groups).repeat(width), lane_source, offset)

    # --- blocks and segments ----------------------------------------------------------------
    member_rank = np.zeros(n, np.int64)
    for variables in group_vars:
        member_rank[variables] = np.arange(variables.size)
    block_records, block_groups = _block_groups.build(blocks, d, table, class_shapes, var_class, var_row, member_rank, level, names)
    # a segment per block step, in level order: the steps up to its level, then the block step
    block_steps = sorted((int(lv), bg.index, t) for bg in block_groups for t, lv in enumerate(bg.step_level.tolist()))
    segments = []
    begin = 0
    for lv, bg, t in block_steps:
        end = int(np.searchsorted(step_level, lv, side="right"))
        segments.append((begin, end, bg, t))
        begin = end
    if begin < S or not segments:
        segments.append((begin, S, -1, 0))

    forward_branch = np.where(step_member, G, step_group)  # a block's constraints: the "skip" branch
    vector_groups = [g for g in range(G) if not groups[g].scalar]
    branch_of = np.zeros(max(G, 1), np.int64)
    first = 1 if scalar_groups else 0
    branch_of[vector_groups] = first + np.arange(len(vector_groups))
    substitution_branch = branch_of[step_group] if G else np.zeros(S, np.int64)
    i32 = lambda a: np.asarray(a, np.int32)  # noqa: E731
    return Schedule(
        d=d,
        n=n,
        shapes=class_shapes,
        rows=tuple(rows),
        widths=widths,
        width=width,
        kmax=kmax,
        depth=int(level.max(initial=0)),
        groups=tuple(groups),
        group_class=group_class,
        arg_class=arg_class,
        positions=positions,
        var_class=var_class,
        var_row=i32(var_row),
        class_vars=tuple(np.flatnonzero(var_class == c) for c in range(C)),
        blocks=block_records,
        block_groups=block_groups,
        segments=tuple(segments),
        step_group=i32(step_group),
        step_member=step_member,
        out=i32(out),
        start=i32(start),
        member=i32(member),
        arg_rows=i32(arg_rows),
        real=real,
        scatter=tuple(i32(s) for s in scatter),
        scatter_lanes=tuple(scatter_lanes),
        scatter_kmax=tuple(scatter_kmax),
        scalar_class=class_of_shape.get((), -1),
        lane_args=clipped,
        forward_branch=i32(forward_branch),
        substitution_branch=i32(substitution_branch),
        group_vars=tuple(group_vars),
        group_rows=tuple(i32(r) for r in group_rows),
        group_args=tuple(group_args),
        group_data=tuple(group_data),
        group_shared=tuple(group_shared),
        scalar_groups=scalar_groups,
        lane_source=i32(lane_source),
        active=active,
    )


def step_ns(width: int, n: int, kmax: int, size: int = 1) -> float:
    """The modelled time of one forward-sweep step over `width` lanes of values of `size` numbers."""
    if width <= DYNAMIC_READS_MAX_WIDTH:
        return _DYNAMIC_STEP_NS + width * (kmax * _DYNAMIC_READ_NS + _LANE_NS * size)
    return _GATHER_STEP_NS + n * size * _GATHER_STEP_NS_PER_VARIABLE + width * _LANE_NS * size


def _choose_width(run_count: np.ndarray, n: int, kmax: int, size: int = 1) -> int:
    """The power-of-two width minimising the modelled sweep time, `Σ_runs steps(run) * step_ns(width)`."""
    if run_count.size == 0:
        return 1
    best, best_cost = 1, None
    width = 1
    while True:
        cost = float(np.sum(-(-run_count // width))) * step_ns(width, n, kmax, size)
        if best_cost is None or cost < best_cost:
            best, best_cost = width, cost
        if width >= run_count.max():
            return best
        width *= 2
