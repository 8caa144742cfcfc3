"""The schedule: everything static about a program, built once with NumPy.

Constraints that run the same code at the same arity form a *group* (`_grouping`); a group is evaluated with one
`jax.vmap`. The *level* of a variable is 0 for inputs and `1 + max(level of its arguments)` for a
constraint, so constraints of one level are independent of each other.

The sweeps run over *blocks*: `width` lanes of constraints that share a level and a group, blocks
ordered by level. One scan step handles one block, vectorised across its lanes. Width 1 is the plain
topological order (deep, narrow programs pay no padding); a large width is a level-by-level sweep
(wide programs). `_choose_width` picks it from the program's shape, by a cost model of a scan step.

The sweeps carry their vectors in *slot order*: the inputs, then the blocks' lanes one after
another (slot `d + b * width + lane`), so each block writes one contiguous slice
(`dynamic_update_slice`, in place) instead of scattering. `slot_of` maps variables to slots.
A padding lane (a block not full) owns a slot nothing reads, and reads the arguments of its block's
first lane, so the functions are only ever evaluated where the program evaluates them; a padding
argument position (arity below `kmax`) repeats the lane's first argument, with a zero partial.

The tables in variable numbering (`out`, `args`), for the Jacobian views, use n (one past the
last variable) for the output of padding lanes and at padding positions.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import numpy as np

from lagjax import _grouping
from lagjax._grouping import Group

# The cost model of one scan step, in nanoseconds, measured on CPU (XLA, 2 cores), for the forward
# sweep. Blocks of at most `DYNAMIC_READS_MAX_WIDTH` lanes read their arguments with one
# `dynamic_slice` each; wider blocks gather, and a gather from the carried vector in the same step
# as its in-place update costs time growing with the vector's length. (At 4 lanes, 16 slices per
# step hit a slow path of their own: 6x slower than 2 lanes on a 2·10⁴-constraint program.)
DYNAMIC_READS_MAX_WIDTH = 2
_DYNAMIC_STEP_NS, _DYNAMIC_READ_NS = 10.0, 22.0
_GATHER_STEP_NS, _GATHER_STEP_NS_PER_VARIABLE = 1000.0, 0.006
_LANE_NS = 30.0


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """Static tables of a program (NumPy int32/bool arrays; S blocks of `width` lanes).

    Attributes:
      d, n: numbers of inputs and of variables.
      width: lanes per block.
      kmax: the largest arity.
      depth: the largest level.
      groups: the `Group`s, indexed by group id.
      out: (S, width) index defined by each lane; n for padding lanes.
      args: (S, width, kmax) argument indices of each lane; n for padding positions.
      slots: (S, width, kmax) the arguments' slots (see the module docstring).
      start: (S,) the first slot of each block, `d + b * width`.
      slot_of: (n,) the slot of each variable.
      valid: (S, width) whether a lane holds a constraint.
      block_group: (S,) the group id of each block.
      group_slots: per group, (m_g,) flat lane indices (into S * width) of its constraints.
      group_constraints: per group, (m_g,) their constraint numbers (variable d + c).
      group_args: per group, (m_g, k_g) their argument indices.
      member: (S, width) each lane's rank among its group's constraints.
      group_data: per group, a tuple of arrays (m_g, ...): what its members' functions capture;
        a leaf all members share is kept once, unstacked (see `group_shared`).
      group_shared: per group, per leaf, whether it is shared (static).
      lane_source: (S * width,) each lane's row among all groups' members concatenated (group after
        group, in member order); n - d (one past the last) for padding lanes.
      constraint_source: (n - d,) the same row for each constraint.
      first_use: (S, width, kmax) whether an argument position is the first occurrence of its
        variable in its lane (used to read the dense D, where repeated arguments are summed).
      real: (S, width, kmax) whether an argument position holds a real argument (not padding):
        the sweeps mask the others, so that an infinite value times a zero partial adds nothing.
    """

    d: int
    n: int
    width: int
    kmax: int
    depth: int
    groups: tuple[Group, ...]
    out: np.ndarray
    args: np.ndarray
    slots: np.ndarray
    start: np.ndarray
    slot_of: np.ndarray
    valid: np.ndarray
    block_group: np.ndarray
    group_slots: tuple[np.ndarray, ...]
    group_constraints: tuple[np.ndarray, ...]
    group_args: tuple[np.ndarray, ...]
    member: np.ndarray
    group_data: tuple[tuple[np.ndarray, ...], ...]
    group_shared: tuple[tuple[bool, ...], ...]
    lane_source: np.ndarray
    constraint_source: np.ndarray
    first_use: np.ndarray
    real: np.ndarray

    @property
    def num_blocks(self) -> int:
        return self.out.shape[0]

    @property
    def num_slots(self) -> int:
        """The length of the vectors the sweeps carry: `d + S * width`."""
        return self.d + self.num_blocks * self.width

    @property
    def dynamic_reads(self) -> bool:
        """Whether the sweeps read arguments with one `dynamic_slice` each, rather than a gather."""
        return self.width <= DYNAMIC_READS_MAX_WIDTH

    def tables(self) -> dict:
        """The arrays the traced sweeps read, as a pytree (passed as arguments, not constants)."""
        return dict(
            out=self.out,
            args=self.args,
            slots=self.slots,
            start=self.start,
            slot_of=self.slot_of,
            valid=self.valid,
            block_group=self.block_group,
            group_args=list(self.group_args),
            member=self.member,
            group_data=list(self.group_data),
            lane_source=self.lane_source,
            constraint_source=self.constraint_source,
            first_use=self.first_use,
            real=self.real,
        )


def build(d: int, constraints: Sequence, groups: Sequence[Group], levels: np.ndarray) -> Schedule:
    """Build the schedule of `d` inputs and `constraints` (records with `i`, `args`, `group`, `data`).

    `groups` are the constraints' groups (`Constraints.groups`), `levels` the variables' levels.
    """
    n_c = len(constraints)
    n = d + n_c
    arity = np.array([len(c.args) for c in constraints], np.int64)
    kmax = int(arity.max(initial=1))
    gid = np.array([c.group for c in constraints], np.int64)
    flat = np.fromiter(itertools.chain.from_iterable([c.args for c in constraints]), np.int32, int(arity.sum()))
    args_c = np.full((n_c, kmax), n, np.int32)
    args_c[np.repeat(np.arange(n_c), arity), np.arange(flat.size) - np.repeat(np.cumsum(arity) - arity, arity)] = flat
    level_c = np.asarray(levels[d:n], np.int64)

    # Sort constraints by (level, group); a run is one (level, group) pair.
    order = np.lexsort((gid, level_c))
    run_key = level_c[order] * max(len(groups), 1) + gid[order]
    run_start = np.flatnonzero(np.r_[True, run_key[1:] != run_key[:-1]]) if n_c else np.zeros(0, int)
    run_count = np.diff(np.r_[run_start, n_c])
    width = _choose_width(run_count, n, kmax)

    # Cut each run into blocks of `width` lanes.
    run_blocks = -(-run_count // width)
    run_first_block = np.r_[0, np.cumsum(run_blocks)[:-1]].astype(np.int64)
    num_blocks = int(run_blocks.sum())
    run_of = np.repeat(np.arange(len(run_count)), run_count)
    rank = np.arange(n_c) - run_start[run_of]
    slot = (run_first_block[run_of] + rank // width) * width + rank % width

    out = np.full(num_blocks * width, n, np.int32)
    out[slot] = d + order
    args = np.full((num_blocks * width, kmax), n, np.int32)
    args[slot] = args_c[order]
    valid = np.zeros(num_blocks * width, bool)
    valid[slot] = True
    out = out.reshape(num_blocks, width)
    valid = valid.reshape(num_blocks, width)
    args = args.reshape(num_blocks, width, kmax)
    args = np.where(valid[..., None], args, args[:, :1, :])  # padding lanes copy lane 0
    slot_of = np.arange(n, dtype=np.int32)
    slot_of[d + order] = d + slot
    slots = slot_of[np.where(args == n, args[..., :1], args)]  # padding positions repeat the first
    block_group = np.zeros(num_blocks, np.int32)
    block_group[run_first_block[run_of] + rank // width] = gid[order]

    group_of_sorted = gid[order]
    group_slots, group_constraints, group_args, group_data, group_shared = [], [], [], [], []
    member = np.zeros(num_blocks * width, np.int32)  # each lane's rank in its group's member list
    for g, group in enumerate(groups):
        members = group_of_sorted == g
        group_slots.append(slot[members].astype(np.int32))
        group_constraints.append(order[members].astype(np.int32))
        group_args.append(args_c[order[members], : group.k])
        member[slot[members]] = np.arange(members.sum())
        leaves = [[constraints[c].data[j] for c in group_constraints[-1]] for j in range(group.num_leaves)]
        shared = tuple(all(_grouping.same(leaf, column[0]) for leaf in column) for column in leaves)
        group_shared.append(shared)
        group_data.append(
            tuple(
                _grouping.resolve(column[0]) if one else np.stack([_grouping.resolve(leaf) for leaf in column])
                for column, one in zip(leaves, shared)
            )
        )
    member = member.reshape(num_blocks, width)
    member = np.where(valid, member, member[:, :1])  # padding lanes copy lane 0
    # Where each lane's and each constraint's row is among all groups' members, concatenated
    # group after group (one gather puts per-group results in place; padding lanes read a zero row).
    offsets = np.r_[0, np.cumsum([len(c) for c in group_constraints])]
    lane_source = np.full(num_blocks * width, n_c, np.int32)
    constraint_source = np.zeros(n_c, np.int32)
    for g in range(len(groups)):
        lane_source[group_slots[g]] = offsets[g] + np.arange(len(group_slots[g]))
        constraint_source[group_constraints[g]] = offsets[g] + np.arange(len(group_constraints[g]))

    real = valid[..., None] & (args != n)  # argument positions that hold a real argument
    first_use = real.copy()
    for a in range(1, kmax):
        first_use[..., a] &= np.all(args[..., :a] != args[..., a : a + 1], axis=-1)

    return Schedule(
        d=d,
        n=n,
        width=width,
        kmax=kmax,
        depth=int(level_c.max(initial=0)),
        groups=tuple(groups),
        member=member,
        group_data=tuple(group_data),
        group_shared=tuple(group_shared),
        lane_source=lane_source,
        constraint_source=constraint_source,
        out=out,
        args=args,
        slots=slots.astype(np.int32),
        start=(d + width * np.arange(num_blocks)).astype(np.int32),
        slot_of=slot_of,
        valid=valid,
        block_group=block_group,
        group_slots=tuple(group_slots),
        group_constraints=tuple(group_constraints),
        group_args=tuple(group_args),
        first_use=first_use,
        real=real,
    )


def step_ns(width: int, n: int, kmax: int) -> float:
    """The modelled time of one forward-sweep step over a block of `width` lanes."""
    if width <= DYNAMIC_READS_MAX_WIDTH:
        return _DYNAMIC_STEP_NS + width * (kmax * _DYNAMIC_READ_NS + _LANE_NS)
    return _GATHER_STEP_NS + n * _GATHER_STEP_NS_PER_VARIABLE + width * _LANE_NS


def _choose_width(run_count: np.ndarray, n: int, kmax: int) -> int:
    """The power-of-two width minimising the modelled sweep time, `Σ_runs blocks(run) * step_ns(width)`."""
    if run_count.size == 0:
        return 1
    best, best_cost = 1, None
    width = 1
    while True:
        cost = float(np.sum(-(-run_count // width))) * step_ns(width, n, kmax)
        if best_cost is None or cost < best_cost:
            best, best_cost = width, cost
        if width >= run_count.max():
            return best
        width *= 2
