"""The three sweeps of the method, each a loop over the schedule's steps (`_schedule`), and D's products.

Notation: D is the constraint Jacobian, column i the gradient w.r.t. z of constraint i's penalty:
the block of row j, column i is `(∂f_i/∂z_j)ᵀ` for j in args(i), the diagonal blocks are -I. In
dependency order (the condensation's levels) D is block upper triangular, so

    D λ = -v   <=>  λ_j = v_j + Σ_{i reads j} (∂f_i/∂z_j)ᵀ λ_i      back-substitution, steps in reverse
    Dᵀ t = -v  <=>  t_i = v_i + Σ_{j in args(i)} (∂f_i/∂z_j) t_j      forward substitution, steps in order

With `v = ∇f(z)` the first gives the multipliers (those of the inputs are the gradient); with v a
direction of the inputs the second gives the tangents. A cyclic block B is a diagonal block of its
own: its rows are the linear solves `(I - J)ᵀ λ_B = c_B` and `(I - J) t_B = b_B` (`_linear`), where
c_B and b_B are what the substitution has gathered for B from outside it; its constraints' lanes push
only to (and pull only from) variables outside B (`Schedule.real`).

The vectors are tuples of class buffers. A step switches on its group (`lax.switch`); a branch reads
what it needs and returns its lanes' values (or their contributions to the arguments' multipliers)
for every class, and the buffers are updated outside the switch, in place: a branch that wrote a
buffer itself would make XLA copy it at every step. Scalar groups need no branch in the
substitutions: their partials are computed beforehand and multiplied in.

Without cycles a sweep is one `lax.scan`. With cycles it is a scan over segments (a run of steps,
then a block step: `Schedule.segments`), each running its steps in a `fori_loop`; a block step is a
`lax.switch` over the block groups, its members solved by one `vmap` of the group's solver: the
compiled sweep holds one copy of each block group's solver, however many blocks the group has.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from lagjax import _blocks, _cyclic, _local
from lagjax._schedule import Schedule


# --- reading and writing the buffers --------------------------------------------------------------
def read(schedule: Schedule, buffer: jax.Array, rows: jax.Array, c_out: int) -> jax.Array:
    """`buffer[rows]`, one `dynamic_slice` per row in narrow steps (`Schedule.dynamic_reads`)."""
    if not schedule.dynamic_reads(c_out) or rows.ndim != 1:
        return buffer[rows]
    return jnp.stack([lax.dynamic_index_in_dim(buffer, rows[e], keepdims=False) for e in range(rows.shape[0])])


def own(schedule: Schedule, buffer: jax.Array, start: jax.Array, c: int) -> jax.Array:
    """The step's own rows of class c, `buffer[start : start + widths[c]]`."""
    return lax.dynamic_slice_in_dim(buffer, start, schedule.widths[c])


def read_own(schedule: Schedule, buffers: list, start: jax.Array) -> tuple[list, list]:
    """The step's own rows of every class, read into values of their own (a `lax.cond` on a traced
    predicate, which XLA keeps as one computation) before the step writes the buffers in place.

    Read by plain slices, XLA fuses the read into each of its consumers, some of which need not
    come before the write, and then copies the whole buffer at every step to keep them right (seen
    on CPU: O(n) per step; an optimization barrier is lowered to that copy too).
    """

    def read(buffers):
        return [own(schedule, b, start[c], c) for c, b in enumerate(buffers)]

    def never(buffers):
        return [jnp.zeros((schedule.widths[c],) + b.shape[1:], b.dtype) for c, b in enumerate(buffers)]

    return lax.cond(start[0] >= 0, read, never, list(buffers)), list(buffers)


def _lanes(schedule: Schedule, g: int, t: dict) -> dict:
    """The lanes of one step of group g (see `_linear`)."""
    w, k = schedule.widths[schedule.group_class[g]], schedule.groups[g].k
    return dict(arg_rows=t["arg_rows"][:w, :k], arg_vars=t["lane_args"][:w, :k], members=t["member"][:w], out=t["out"][:w])


def _zeros(schedule: Schedule, classes, dtype) -> list:
    return [jnp.zeros((schedule.widths[c],) + schedule.shapes[c], dtype) for c in classes]


def _write(buffers, classes, values, start) -> list:
    """The buffers with each class of `classes` written at the step's rows (in place)."""
    buffers = list(buffers)
    for c, value in zip(classes, values):
        buffers[c] = lax.dynamic_update_slice_in_dim(buffers[c], value, start[c], 0)
    return buffers


def _step_tables(schedule: Schedule, tables: dict, extra: dict | None = None) -> dict:
    xs = dict(
        start=tables["start"],
        member=tables["member"],
        arg_rows=tables["arg_rows"],
        lane_args=tables["lane_args"],
        real=tables["real"],
        out=tables["out"],
    )
    return {**xs, **(extra or {})}


def _loop(
    schedule: Schedule, tables: dict, step: Callable, buffers, xs: dict, blocks: tuple | None, reverse: bool, factors=None, dense_max=0
):
    """Run `step` over the steps; with cyclic blocks, segment by segment with a block step of one
    block group at each segment's end (at its start, in reverse). `blocks = (needs, solve)`:
    `needs(group, members, buffers)` what a block step of `group` needs of the buffers, and
    `solve(group, read)` its members' new values `(width, size)`, their `Info`s and (the forward
    pass, where `factors` holds every group's stacked `Factors`) their factorisations.

    The reads are made for every block group outside the block step's `lax.switch`, and its writes
    applied outside it too (`_blocks.StepOut`): a switch given the buffers costs a copy of them per
    block step on CPU (measured: O(n) per block, a cliff for many small blocks along a long chain).
    Returns `(buffers, report, factors)`: `report` the `Info` of every block, fields `(num_blocks,)`."""
    dtype = buffers[0].dtype
    report = no_report(len(schedule.blocks), dtype)
    if not schedule.blocks:
        if schedule.num_steps:
            buffers, _ = lax.scan(lambda c, x: (step(c, x), None), buffers, xs, reverse=reverse)
        return buffers, report, factors
    needs, solve_group = blocks
    ends = [(b.shape[0], b.dtype) for b in buffers]

    def run_steps(buffers, begin, end):
        def body(j, buffers):
            i = end - 1 - j if reverse else begin + j
            return step(buffers, jax.tree.map(lambda a: a[i], xs))

        return lax.fori_loop(0, end - begin, body, buffers)

    def block_step(group):
        def run(reads):
            members, valid, needed = reads[group.index]
            u, info, found = solve_group(group, needed)
            return _blocks.pack(schedule, tables, group, members, valid, ends, u, info, found, dense_max)

        return run

    keep = factors is not None
    branches = [block_step(group) for group in schedule.block_groups]

    def segment(state, seg):
        begin, end, which, t = seg
        buffers, report, factors = state
        if not reverse:
            buffers = run_steps(buffers, begin, end)
        reads = []
        for group in schedule.block_groups:  # every group's reads (its block step t, clipped): small
            members, valid = _blocks.lanes(tables, group, jnp.clip(t, 0, group.steps.shape[0] - 1))
            reads.append((members, valid, needs(group, members, buffers)))
        # one block group: no conditional (a `lax.switch` costs O(n) per block step on CPU, measured)
        out = lax.switch(which, branches, reads) if len(branches) > 1 else branches[0](reads)
        buffers, report = _blocks.write(buffers, out), _blocks.record(report, out)
        if keep:
            factors = _blocks.keep_factors(schedule, factors, out, which, dense_max)
        if reverse:
            buffers = run_steps(buffers, begin, end)
        return (buffers, report, factors), None

    # every segment but a last one without a block ends in a block step; that tail runs on its own
    (*_, last), tail = schedule.segments, schedule.segments[-1][2] < 0
    segments = jax.tree.map(lambda a: a[: len(schedule.segments) - tail], tables["segments"])
    state = (list(buffers), report, factors)
    if reverse and tail:
        state = (run_steps(state[0], last[0], last[1]), *state[1:])
    state, _ = lax.scan(segment, state, segments, reverse=reverse)
    if not reverse and tail:
        state = (run_steps(state[0], last[0], last[1]), *state[1:])
    return state


def no_report(num_blocks: int, dtype) -> _cyclic.Info:
    """Every block's `Info` before it is solved: success, nothing done, no condition estimate."""
    zeros = jnp.zeros((num_blocks,), jnp.int32)
    return _cyclic.Info(zeros, jnp.zeros((num_blocks,), dtype), zeros, jnp.full((num_blocks,), jnp.nan, dtype))


def _poisoned(u: jax.Array, info: _cyclic.Info) -> jax.Array:
    """`u` `(width, size)`, or NaN at the members whose solve failed: a failed block never passes for a
    result (an ill-conditioned one keeps its values, flagged by its status)."""
    return jnp.where(_cyclic.usable(info.status)[:, None], u, jnp.nan)


# --- the forward pass ---------------------------------------------------------------------------
def solve(schedule: Schedule, tables: dict, z0: list, solver: _cyclic.Solver, init: list) -> tuple[list, object]:
    """The forward pass, ∇_λ L = 0: `z_i = f_i(z[args(i)])` step by step, cyclic blocks by root finding.

    Args: `z0`, the class buffers with the inputs in place (zeros elsewhere); `init`, per block group
    the flat initial guesses of its members' variables `(B, size)`. Returns `(z, report, factors)`:
    the buffers, every block's `Info` (fields `(num_blocks,)`), and per block group its members'
    `_cyclic.Factors` at their roots (stacked), for the linear solves that follow (`_linear.AtPoint`).
    """
    written = schedule.written
    dtype = z0[0].dtype

    def branch(g):
        c_out = schedule.group_class[g]

        def evaluate(z, t):
            lanes = _lanes(schedule, g, t)
            args = [read(schedule, z[c], lanes["arg_rows"][:, p], c_out) for p, c in enumerate(schedule.arg_class[g])]
            data = _local.member_data(schedule, tables, g, lanes["members"])
            values = _local.evaluate(schedule, g, args, data).astype(dtype)
            return [values if c == c_out else zero for c, zero in zip(written, _zeros(schedule, written, dtype))]

        return evaluate

    def skip(z, t):  # a cyclic block's constraints: solved with their block, at the segment's end
        return _zeros(schedule, written, dtype)

    branches = [branch(g) for g in range(len(schedule.groups))] + [skip]

    def step(z, t):
        outs = lax.switch(t["group"], branches, z, t) if len(branches) > 1 else branches[0](z, t)
        return _write(z, written, outs, t["start"])

    def needs(group, members, z):
        return _blocks.outside(schedule, tables, group, members, z), init[group.index][members].astype(dtype)

    def solve_group(group, needed):
        def one(outside, u0):
            return _cyclic.find_root(_blocks.function(schedule, tables, group, outside, dtype), u0, solver, return_factors=True)

        u, info, found = _blocks.over_lanes(one, group.width)(*needed)
        return _poisoned(u, info), info, found

    xs = _step_tables(schedule, tables, dict(group=tables["forward_branch"]))
    factors = [no_factors(group, solver, dtype) for group in schedule.block_groups]
    return _loop(schedule, tables, step, list(z0), xs, (needs, solve_group), False, factors, solver.dense_max)


def no_factors(group, solver: _cyclic.Solver, dtype) -> _cyclic.Factors:
    """A block group's `Factors` before its blocks are solved, stacked `(B, ...)` (zeros; matrix-free
    groups: the placeholder of `find_root`)."""
    B, m = len(group.blocks), group.size if group.size <= solver.dense_max else 0
    norm = jnp.full((B,), jnp.nan, dtype)
    return _cyclic.Factors(jnp.zeros((B, m, m), dtype), jnp.zeros((B, m), jnp.int32), norm, norm, norm)


# --- the substitutions -----------------------------------------------------------------------------
def back_substitute(schedule: Schedule, tables: dict, maps, v: list) -> tuple[list, object]:
    """Solve `D λ = -v` (reverse mode): the multipliers, class buffers like `v`.

    Every consumer of a variable comes in a later step (or is in its block), so sweeping the steps in
    reverse, a step's λ is final when it is reached; it pushes `(∂f_i/∂z_j)ᵀ λ_i` to its arguments.
    A block first solves its diagonal system for λ_B, then its constraints' steps push λ_B out.
    Returns `(λ, infos)`.
    """
    dtype = v[0].dtype
    sc = schedule.scalar_class
    targets = [c for c in range(schedule.num_classes) if schedule.scatter_kmax[c]]

    def contributions(parts: dict) -> list:
        """`{class: (lanes, positions, *shape)}` padded to the scatter tables' shapes, every target class."""
        out = []
        for c in targets:
            shape = (schedule.scatter_lanes[c], schedule.scatter_kmax[c]) + schedule.shapes[c]
            part = parts.get(c)
            if part is None:
                out.append(jnp.zeros(shape, dtype))
            else:
                out.append(jnp.zeros(shape, dtype).at[: part.shape[0], : part.shape[1]].set(part))
        return out

    def dense(owns, t):  # scalar groups: the partials, multiplied in
        w = schedule.widths[sc]
        pushed = t["P"][:w] * owns[sc][:, None]
        return contributions({sc: pushed[:, : schedule.scatter_kmax[sc]]})

    def branch(g):
        c_out = schedule.group_class[g]

        def pull(owns, t):
            lanes = _lanes(schedule, g, t)
            cts = maps.pullback(g, lanes, owns[c_out])
            real = t["real"][: lanes["out"].shape[0]]
            parts = {}
            for c in targets:
                ps = schedule.positions[g][c]
                if ps:
                    parts[c] = jnp.stack([_masked(cts[p].astype(dtype), real[:, p]) for p in ps], axis=1)
            return contributions(parts)

        return pull

    vector_groups = [g for g in range(len(schedule.groups)) if not schedule.groups[g].scalar]
    branches = ([dense] if schedule.scalar_groups else []) + [branch(g) for g in vector_groups]

    def step(lam, t):
        owns, lam = read_own(schedule, lam, t["start"])
        parts = lax.switch(t["group"], branches, owns, t) if len(branches) > 1 else branches[0](owns, t)
        lam = list(lam)
        for c, part in zip(targets, parts):
            lam[c] = lam[c].at[t["scatter"][c]].add(part, mode="clip")  # in bounds: no select, no copy
        return lam

    extra = dict(group=tables["substitution_branch"], P=maps.step_partials, scatter={c: tables["scatter"][c] for c in targets})
    xs = _step_tables(schedule, tables, extra)
    lam, report, _ = _loop(schedule, tables, step, list(v), xs, _diagonal_solves(schedule, tables, maps, maps.adjoint), reverse=True)
    return lam, report


def forward_substitute(schedule: Schedule, tables: dict, maps, v: list) -> tuple[list, object]:
    """Solve `Dᵀ t = -v` (forward mode): the tangents, class buffers like `v`.

    The arguments of a step come from earlier steps (or from its block), so one forward sweep solves
    it; a block's constraints' steps gather `v_i + Σ_{j outside} ∂f_i/∂z_j t_j`, then the block solves
    its diagonal system. Returns `(t, infos)`.
    """
    dtype = v[0].dtype
    written = schedule.written
    sc = schedule.scalar_class

    def dense(t, owns, s):
        w = schedule.widths[sc]
        rows = s["arg_rows"][:w]
        values = read(schedule, t[sc], rows.reshape(-1), sc).reshape(rows.shape)
        pushed = jnp.sum(jnp.where(s["real"][:w], s["P"][:w] * values, 0), axis=-1)
        value = owns[sc] + pushed
        return [value if c == sc else zero for c, zero in zip(written, _zeros(schedule, written, dtype))]

    def branch(g):
        c_out = schedule.group_class[g]

        def push(t, owns, s):
            lanes = _lanes(schedule, g, s)
            real = s["real"][: lanes["out"].shape[0]]
            tangents = [
                _masked(read(schedule, t[c], lanes["arg_rows"][:, p], c_out), real[:, p]) for p, c in enumerate(schedule.arg_class[g])
            ]
            value = owns[c_out] + maps.pushforward(g, lanes, tangents).astype(dtype)
            return [value if c == c_out else zero for c, zero in zip(written, _zeros(schedule, written, dtype))]

        return push

    vector_groups = [g for g in range(len(schedule.groups)) if not schedule.groups[g].scalar]
    branches = ([dense] if schedule.scalar_groups else []) + [branch(g) for g in vector_groups]

    def step(t, s):
        owns, t = read_own(schedule, t, s["start"])
        outs = lax.switch(s["group"], branches, t, owns, s) if len(branches) > 1 else branches[0](t, owns, s)
        return _write(t, written, outs, s["start"])

    xs = _step_tables(schedule, tables, dict(group=tables["substitution_branch"], P=maps.step_partials))
    t, report, _ = _loop(schedule, tables, step, list(v), xs, _diagonal_solves(schedule, tables, maps, maps.tangent), reverse=False)
    return t, report


def _diagonal_solves(schedule: Schedule, tables: dict, maps, solve: Callable) -> tuple:
    """`(needs, solve)` of `_loop` for a substitution: a block step's right-hand sides gathered from the
    swept buffers, and its members' diagonal systems solved by `solve(group, at, rhs)` (`maps.adjoint`
    or `maps.tangent`)."""

    def needs(group, members, buffers):
        return maps.reads(group, members), _blocks.gather(schedule, tables, group, members, buffers)

    def solve_group(group, needed):
        w, info = _blocks.over_lanes(lambda at, rhs: solve(group, at, rhs), group.width)(*needed)
        return _poisoned(w, info), info, None

    return needs, solve_group


def _masked(value: jax.Array, mask: jax.Array) -> jax.Array:
    """`value` `(L, *shape)` with the lanes where `mask` `(L,)` is False set to 0."""
    return jnp.where(jnp.reshape(mask, mask.shape + (1,) * (value.ndim - 1)), value, 0)


# --- D's products, all constraints at once (no substitution: vectorised per group) ------------------
def _member_lanes(schedule: Schedule, tables: dict, g: int) -> dict:
    return dict(
        arg_rows=tables["group_arg_rows"][g],
        arg_vars=tables["group_args"][g],
        members=jnp.arange(schedule.group_vars[g].shape[0]),
        out=tables["group_vars"][g],
    )


def apply(schedule: Schedule, tables: dict, maps, lam: list) -> list:
    """`D λ` for any λ: `-λ_j + Σ_{i reads j} (∂f_i/∂z_j)ᵀ λ_i` (every entry of D, blocks included)."""
    out = [-l for l in lam]
    for g, group in enumerate(schedule.groups):
        c_out, rows, arg_rows = schedule.group_class[g], tables["group_rows"][g], tables["group_arg_rows"][g]
        cotangent = lam[c_out][rows]
        if group.scalar:
            cts = list((maps.partials[g] * cotangent[:, None]).T)
        else:
            cts = maps.pullback(g, _member_lanes(schedule, tables, g), cotangent)
        for p, c in enumerate(schedule.arg_class[g]):
            out[c] = out[c].at[arg_rows[:, p]].add(cts[p].astype(out[c].dtype))
    return out


def apply_transposed(schedule: Schedule, tables: dict, maps, t: list) -> list:
    """`Dᵀ t` for any t: `-t_i + Σ_{j in args(i)} (∂f_i/∂z_j) t_j` (every entry of D, blocks included)."""
    out = [-x for x in t]
    for g, group in enumerate(schedule.groups):
        c_out, rows, arg_rows = schedule.group_class[g], tables["group_rows"][g], tables["group_arg_rows"][g]
        tangents = [t[c][arg_rows[:, p]] for p, c in enumerate(schedule.arg_class[g])]
        if group.scalar:
            pushed = jnp.sum(maps.partials[g] * jnp.stack(tangents, axis=1), axis=1)
        else:
            pushed = maps.pushforward(g, _member_lanes(schedule, tables, g), tangents)
        out[c_out] = out[c_out].at[rows].add(pushed.astype(out[c_out].dtype))
    return out
