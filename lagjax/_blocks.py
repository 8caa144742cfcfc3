"""A cyclic block as a function of its own variables: `u = F(u)`, every other variable fixed.

The block's variables u are flattened class after class (`_schedule.Block`). `F` evaluates the
block's constraints group by group, one `vmap` each over the group's members in the block, reading
each argument from u if it is a variable of the block and from the buffers z otherwise (those are
read once, when `F` is built). Its fixed point is the block's solution (`_cyclic.find_root`); its
Jacobian `J = ∂F/∂u` there defines the block's rows of the two linear systems,

    (I - J)ᵀ λ_B = c    (the multipliers: `_cyclic.solve_adjoint`)
    (I - J) t_B = b     (the tangents: `_cyclic.solve_tangent`)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from lagjax import _local
from lagjax._schedule import Block, Schedule


def gather(schedule: Schedule, block: Block, buffers) -> jax.Array:
    """The block's variables read from the class buffers, flattened: `(block.size,)`."""
    return jnp.concatenate([jnp.ravel(buffers[c][block.rows[c]]) for c in block.classes])


def scatter(schedule: Schedule, block: Block, buffers, u: jax.Array) -> list:
    """The buffers with the block's variables set to the flat `u`."""
    out = list(buffers)
    for c, part in split(schedule, block, u).items():
        out[c] = out[c].at[block.rows[c]].set(part.astype(out[c].dtype), unique_indices=True)
    return out


def split(schedule: Schedule, block: Block, u: jax.Array) -> dict:
    """The flat `u` as `{class: (m_c, *shape_c)}`."""
    parts = {}
    for c in block.classes:
        shape = schedule.shapes[c]
        m = block.rows[c].shape[0]
        start = block.offsets[c]
        parts[c] = jnp.reshape(u[start : start + m * math.prod(shape)], (m,) + tuple(shape))
    return parts


def function(schedule: Schedule, tables: dict, block: Block, buffers) -> Callable[[jax.Array], jax.Array]:
    """`F(u)`: the block's constraints on the flat vector of its variables, `(size,) -> (size,)`."""
    dtype = buffers[0].dtype
    fixed = {}  # per group, per argument: the values read from outside the block (or a placeholder)
    for g in block.groups:
        group = schedule.groups[g]
        fixed[g] = [buffers[schedule.arg_class[g][p]][block.at[g][:, p]] for p in range(group.k)]

    def F(u):
        parts = split(schedule, block, u.astype(dtype))
        values = {c: jnp.zeros_like(part) for c, part in parts.items()}
        for g in block.groups:
            group = schedule.groups[g]
            args = []
            for p in range(group.k):
                c = schedule.arg_class[g][p]
                inside = block.inside[g][:, p]
                if not inside.any():
                    args.append(fixed[g][p])
                    continue
                own = parts[c][block.at[g][:, p] * inside]  # position 0 where outside: masked below
                mask = jnp.reshape(jnp.asarray(inside), (-1,) + (1,) * len(schedule.shapes[c]))
                args.append(jnp.where(mask, own, fixed[g][p]))
            data = _local.member_data(schedule, tables, g, block.members[g])
            out = _local.evaluate(schedule, g, args, data).astype(dtype)
            c = schedule.group_class[g]
            values[c] = values[c].at[block.out[g]].set(out, unique_indices=True)
        return jnp.concatenate([jnp.ravel(values[c]) for c in block.classes])

    return F
