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

import jax
import jax.numpy as jnp

from lagjax import _local
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


def scatter(schedule: Schedule, tables: dict, group: BlockGroup, members: jax.Array, valid: jax.Array, buffers, u: jax.Array) -> list:
    """The buffers with the members' variables set to the flat `u` `(width, size)`; padding lanes'
    writes are dropped (their rows point past the buffer)."""
    rows = tables["block_groups"][group.index]["rows"]
    out = list(buffers)
    for c in group.classes:
        shape = schedule.shapes[c]
        start, m = group.offsets[c], group.counts[c]
        part = jnp.reshape(u[:, start : start + m * math.prod(shape)], (-1,) + tuple(shape))
        where = jnp.where(valid[:, None], rows[c][members], out[c].shape[0])
        out[c] = out[c].at[jnp.ravel(where)].set(part.astype(out[c].dtype), mode="drop")
    return out


def split(schedule: Schedule, group: BlockGroup, u: jax.Array) -> dict:
    """One member's flat `u` as `{class: (counts[c], *shape_c)}`."""
    parts = {}
    for c in group.classes:
        shape, start, m = schedule.shapes[c], group.offsets[c], group.counts[c]
        parts[c] = jnp.reshape(u[start : start + m * math.prod(shape)], (m,) + tuple(shape))
    return parts


def function(schedule: Schedule, tables: dict, group: BlockGroup, member: jax.Array, buffers) -> Callable[[jax.Array], jax.Array]:
    """`F(u)` of one member (a traced rank): its constraints on the flat vector of its variables, `(size,) -> (size,)`."""
    dtype = buffers[0].dtype
    mine = tables["block_groups"][group.index]
    at = {g: mine["at"][g][member] for g in group.groups}
    fixed = {}  # per constraint group, per argument: the values read from outside the block (or a placeholder)
    for g in group.groups:
        fixed[g] = [buffers[c][at[g][:, p]] for p, c in enumerate(schedule.arg_class[g])]

    def F(u):
        parts = split(schedule, group, u.astype(dtype))
        values = {c: jnp.zeros_like(part) for c, part in parts.items()}
        for g in group.groups:
            args = []
            for p, c in enumerate(schedule.arg_class[g]):
                inside = group.inside[g][:, p]
                if not inside.any():
                    args.append(fixed[g][p])
                    continue
                own = parts[c][jnp.where(jnp.asarray(inside), at[g][:, p], 0)]  # position 0 where outside: masked below
                mask = jnp.reshape(jnp.asarray(inside), (-1,) + (1,) * len(schedule.shapes[c]))
                args.append(jnp.where(mask, own, fixed[g][p]))
            data = _local.member_data(schedule, tables, g, mine["members"][g][member])
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
