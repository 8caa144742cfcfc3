"""A block group's members as functions of their own variables: `u = F(u)`, every other variable fixed.

A member's variables u are flattened class after class (`_block_groups.BlockGroup`). `F` evaluates
the member's constraints group by group, one `vmap` each over the group's constraints in the block,
reading each argument from u if it is a variable of the block and from the buffers z otherwise
(those are read once, when `F` is built). The member is a traced index into the group's stacked
tables, so one trace serves every member, and `jax.vmap` over members solves a block step at once.
F's fixed point is the block's solution (`_cyclic.find_root`); its Jacobian `J = ∂F/∂u` there
defines the block's rows of the two linear systems,

    (I - J)ᵀ λ_B = c    (the multipliers: `_cyclic.solve_adjoint`)
    (I - J) t_B = b     (the tangents: `_cyclic.solve_tangent`)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lagjax import _cyclic, _local
from lagjax._block_groups import BlockGroup
from lagjax._schedule import Schedule


def lanes(tables: dict, group: BlockGroup, step) -> tuple[jax.Array, jax.Array]:
    """The members of block step `step` of `group`, `(width,)`, padding lanes given the step's first
    member; and which lanes are real."""
    members = tables["block_groups"][group.index]["steps"][step]
    valid = members >= 0
    return jnp.where(valid, members, members[0]), valid


def gather(schedule: Schedule, tables: dict, group: BlockGroup, members: jax.Array, buffers) -> jax.Array:
    """The members' variables read from the class buffers, flattened: `(width, size)`."""
    rows = tables["block_groups"][group.index]["rows"]
    width = members.shape[0]
    return jnp.concatenate([jnp.reshape(buffers[c][rows[c][members]], (width, -1)) for c in group.classes], axis=1)


def split(schedule: Schedule, group: BlockGroup, u: jax.Array) -> dict:
    """One member's flat `u` as `{class: (counts[c], *shape_c)}`."""
    parts = {}
    for c in group.classes:
        shape, start, m = schedule.shapes[c], group.offsets[c], group.counts[c]
        parts[c] = jnp.reshape(u[start : start + m * math.prod(shape)], (m,) + tuple(shape))
    return parts


def outside(schedule: Schedule, tables: dict, group: BlockGroup, members: jax.Array, buffers) -> dict:
    """What a block step's members read from outside their blocks: per constraint group g, the
    arguments from the buffers, `fixed[g][p]` `(width, n_g, *shape_p)` (a placeholder where an argument
    is inside the block), and the data its constraints capture, `data[g]` (None for a leaf all share).
    Read outside the block step's `lax.switch` (see `StepOut`)."""
    mine = tables["block_groups"][group.index]
    fixed, data = {}, {}
    for g in group.groups:
        at = mine["at"][g][members]
        fixed[g] = [buffers[c][at[:, :, p]] for p, c in enumerate(schedule.arg_class[g])]
        ranks = mine["members"][g][members]
        data[g] = tuple(None if one else leaf[ranks] for leaf, one in zip(tables["group_data"][g], schedule.group_shared[g]))
    return dict(fixed=fixed, data=data)


def function(schedule: Schedule, tables: dict, group: BlockGroup, read: dict, dtype) -> Callable[[jax.Array], jax.Array]:
    """`F(u)` of one member, its `outside` values `read` (one lane's): its constraints on the flat
    vector of its variables, `(size,) -> (size,)`."""

    def F(u):
        parts = split(schedule, group, u.astype(dtype))
        values = {c: jnp.zeros_like(part) for c, part in parts.items()}
        for g in group.groups:
            args = []
            for p, c in enumerate(schedule.arg_class[g]):
                inside = group.inside[g][:, p]
                if not inside.any():
                    args.append(read["fixed"][g][p])
                    continue
                own = parts[c][group.inner[g][:, p]]  # position 0 where outside: masked below
                mask = jnp.reshape(jnp.asarray(inside), (-1,) + (1,) * len(schedule.shapes[c]))
                args.append(jnp.where(mask, own, read["fixed"][g][p]))
            leaves = zip(tables["group_data"][g], schedule.group_shared[g], read["data"][g])
            data = tuple(leaf if shared else own for leaf, shared, own in leaves)
            out = _local.evaluate(schedule, g, args, data).astype(dtype)
            c = schedule.group_class[g]
            values[c] = values[c].at[group.out[g]].set(out, unique_indices=True)
        return jnp.concatenate([jnp.ravel(values[c]) for c in group.classes])

    return F


def over_lanes(fn: Callable, width: int) -> Callable:
    """`fn` of one member mapped over a block step's lanes (a plain call, no `vmap`, at width 1)."""
    if width == 1:
        return lambda *args: jax.tree.map(lambda a: a[None], fn(*jax.tree.map(lambda a: a[0], args)))
    return jax.vmap(fn)


# --- a block step's results, in one format for every block group -----------------------------------
# A block step is one branch of a `lax.switch` over the block groups. A branch that wrote the class
# buffers itself would make XLA copy them at every block step (O(n) per block: a cliff for many small
# blocks along a long chain), so a branch only reads, and returns its writes padded to shapes common
# to all groups; they are applied outside the switch, in place. Padding rows point past the buffers
# (dropped).


class StepOut(NamedTuple):
    """A block step's writes: per class c (of some block group's variables) `rows[c]` `(L_c,)` and
    `values[c]` `(L_c, *shape_c)`; `ids` `(W,)` the blocks solved and `info` their `Info`s; `factors`
    (forward only) the members' factorisations flattened, `(members (W,), lu (W, M²), permutation (W, M),
    norms (W, 3))`, written into the group `group`'s stack."""

    rows: dict
    values: dict
    ids: jax.Array
    info: _cyclic.Info
    factors: tuple | None


def _common(schedule: Schedule, dense_max: int) -> tuple[int, dict, int]:
    """`(W, {c: L_c}, M)`: the widest block step, the most rows of each class one writes, and the
    largest size of a dense group (whose factors are kept)."""
    groups = schedule.block_groups
    W = max(group.width for group in groups)
    classes = sorted({c for group in groups for c in group.classes})
    L = {c: max(group.width * group.counts.get(c, 0) for group in groups) for c in classes}
    return W, L, max((group.size for group in groups if group.size <= dense_max), default=0)


def _pad(a: jax.Array, n: int, fill=0) -> jax.Array:
    extra = n - a.shape[0]
    if extra == 0:
        return a
    return jnp.concatenate([a, jnp.full((extra,) + a.shape[1:], fill, a.dtype)])


def pack(schedule: Schedule, tables: dict, group: BlockGroup, members, valid, ends, u, info, factors=None, dense_max=0) -> StepOut:
    """A block step of `group` in the common format: its members' new values `u` `(width, size)`
    (for the rows of their variables), their `info`, and (forward) their `factors`; `ends`, per class
    its buffer's rows and dtype."""
    W, L, M = _common(schedule, dense_max)
    rows = tables["block_groups"][group.index]["rows"]
    out_rows, out_values = {}, {}
    for c, n in L.items():
        shape = schedule.shapes[c]
        end, dtype = ends[c]  # past the buffer: dropped
        if c in group.classes:
            start, m = group.offsets[c], group.counts[c]
            r = jnp.ravel(jnp.where(valid[:, None], rows[c][members], end))
            v = jnp.reshape(u[:, start : start + m * math.prod(shape)], (-1,) + tuple(shape)).astype(dtype)
        else:
            r, v = jnp.zeros((0,), jnp.int32), jnp.zeros((0,) + tuple(shape), dtype)
        out_rows[c], out_values[c] = _pad(r, n, end), _pad(v, n)
    ids = _pad(jnp.where(valid, tables["block_groups"][group.index]["blocks"][members], len(schedule.blocks)), W, len(schedule.blocks))
    info = jax.tree.map(lambda a: _pad(a, W), info)
    packed = None
    if factors is not None:
        ranks = _pad(jnp.where(valid, members, len(group.blocks)), W, 2**30)
        lu = jnp.reshape(factors.lu, (factors.lu.shape[0], -1))
        lu = _pad(jnp.pad(lu, ((0, 0), (0, M * M - lu.shape[1]))), W)
        perm = _pad(jnp.pad(factors.permutation, ((0, 0), (0, M - factors.permutation.shape[1]))), W)
        norms = _pad(jnp.stack([factors.norm1, factors.norm_inf, factors.inverse_norm1], axis=1), W)
        packed = (ranks, lu, perm, norms)
    return StepOut(out_rows, out_values, ids, info, packed)


def write(buffers, out: StepOut) -> list:
    """The buffers with a block step's values written (in place; padding dropped)."""
    buffers = list(buffers)
    for c, rows in out.rows.items():
        buffers[c] = buffers[c].at[rows].set(out.values[c], mode="drop")
    return buffers


def record(report: _cyclic.Info, out: StepOut) -> _cyclic.Info:
    """Every block's `Info` with the block step's written at its blocks."""
    return jax.tree.map(lambda r, i: r.at[out.ids].set(i.astype(r.dtype), mode="drop"), report, out.info)


def keep_factors(schedule: Schedule, factors: list, out: StepOut, group_index, dense_max: int) -> list:
    """Every block group's stacked `Factors`, the block step's members' written where `group_index`
    (traced) is theirs."""
    ranks, lu, perm, norms = out.factors
    factors = list(factors)
    for g, group in enumerate(schedule.block_groups):
        m = group.size if group.size <= dense_max else 0
        if m == 0:
            continue
        W = group.width
        ids = jnp.where(group_index == g, ranks[:W], len(group.blocks))
        kept = factors[g]
        factors[g] = _cyclic.Factors(
            kept.lu.at[ids].set(jnp.reshape(lu[:W, : m * m], (W, m, m)), mode="drop"),
            kept.permutation.at[ids].set(perm[:W, :m], mode="drop"),
            kept.norm1.at[ids].set(norms[:W, 0], mode="drop"),
            kept.norm_inf.at[ids].set(norms[:W, 1], mode="drop"),
            kept.inverse_norm1.at[ids].set(norms[:W, 2], mode="drop"),
        )
    return factors
