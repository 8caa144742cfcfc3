"""Local quantities of the constraints at a given z, vectorised per group.

Given z, every constraint's value, penalty and partials depend on its own arguments only, so they
are computed for all constraints at once: one `jax.vmap` per group over its members' arguments and
captured data (`_grouping`), never a Python loop over constraints.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from lagjax._grouping import Group
from lagjax._schedule import Schedule


def scalar_fn(group: Group) -> Callable:
    """`f` of the group as a map `(k,), data -> ()`."""
    return lambda v, data: jnp.reshape(group.f(v, data), ())


def partials_fn(group: Group) -> Callable:
    """The partials of the group's `f`: `(k,), data -> (k,)`, from `df` or `jax.grad`."""
    if group.df_split is None:
        return jax.grad(scalar_fn(group))
    return lambda v, data: jnp.reshape(group.df(v, data), (group.k,))


def _data_axes(schedule: Schedule, g: int) -> tuple:
    """`vmap` axes of group g's data: 0 for leaves stacked per member, None for shared ones."""
    return tuple(None if one else 0 for one in schedule.group_shared[g])


def block_branches(schedule: Schedule, tables: dict) -> list[Callable]:
    """Per group, the map from a block's argument values `(width, kmax)` and its lanes' ranks among
    the group's members `(width,)` to its lanes' values `(width,)`."""

    def branch(g: int, group: Group) -> Callable:
        data, shared = tables["group_data"][g], schedule.group_shared[g]
        f = jax.vmap(scalar_fn(group), in_axes=(0, _data_axes(schedule, g)))

        def evaluate(values, member):
            lane_data = tuple(leaf if one else leaf[member] for leaf, one in zip(data, shared))
            return f(values[:, : group.k], lane_data).astype(values.dtype)

        return evaluate

    return [branch(g, group) for g, group in enumerate(schedule.groups)]


def _per_member(schedule: Schedule, tables: dict, z: jax.Array, fn: Callable, width: int) -> jax.Array:
    """`fn(group)` applied to every group's members, rows concatenated group after group, plus a
    zero row: `(n - d + 1, width)`, read in place with `lane_source` / `constraint_source`."""
    rows = []
    for g, group in enumerate(schedule.groups):
        args, data = tables["group_args"][g], tuple(tables["group_data"][g])
        local = jax.vmap(fn(group), in_axes=(0, _data_axes(schedule, g)))(z[args], data).astype(z.dtype).reshape(args.shape[0], -1)
        rows.append(jnp.pad(local, ((0, 0), (0, width - local.shape[1]))))
    return jnp.concatenate(rows + [jnp.zeros((1, width), z.dtype)])


def penalties(schedule: Schedule, tables: dict, z: jax.Array) -> jax.Array:
    """`f_i(z[args(i)]) - z[i]` for every constraint, in constraint order: `(n,) -> (n - d,)`."""
    values = _per_member(schedule, tables, z, scalar_fn, 1)[tables["constraint_source"], 0]
    return values - z[schedule.d :]


def local_jacobian(schedule: Schedule, tables: dict, z: jax.Array) -> jax.Array:
    """The sparse constraint Jacobian: `P[b, lane, a] = ∂f_i/∂z[args[b, lane, a]]`, shape `(S, width, kmax)`.

    Zero at padding lanes and padding positions. `z` has shape `(n,)`.
    """
    partials = _per_member(schedule, tables, z, partials_fn, schedule.kmax)[tables["lane_source"]]
    return partials.reshape(schedule.num_blocks, schedule.width, schedule.kmax)
