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


def block_branches(schedule: Schedule, tables: dict) -> list[Callable]:
    """Per group, the map from a block's argument values `(width, kmax)` and its lanes' ranks among
    the group's members `(width,)` to its lanes' values `(width,)`."""

    def branch(g: int, group: Group) -> Callable:
        f = jax.vmap(scalar_fn(group))
        data = tables["group_data"][g]

        def evaluate(values, member):
            lane_data = tuple(leaf[member] for leaf in data)
            return f(values[:, : group.k], lane_data).astype(values.dtype)

        return evaluate

    return [branch(g, group) for g, group in enumerate(schedule.groups)]


def penalties(schedule: Schedule, tables: dict, z: jax.Array) -> jax.Array:
    """`f_i(z[args(i)]) - z[i]` for every constraint, in constraint order: `(n,) -> (n - d,)`."""
    result = jnp.zeros(schedule.n - schedule.d, z.dtype)
    for g, group in enumerate(schedule.groups):
        cons, args = tables["group_constraints"][g], tables["group_args"][g]
        values = jax.vmap(scalar_fn(group))(z[args], tuple(tables["group_data"][g])).astype(z.dtype)
        result = result.at[cons].set(values - z[schedule.d + cons])
    return result


def local_jacobian(schedule: Schedule, tables: dict, z: jax.Array) -> jax.Array:
    """The sparse constraint Jacobian: `P[b, lane, a] = ∂f_i/∂z[args[b, lane, a]]`, shape `(S, width, kmax)`.

    Zero at padding lanes and padding positions. `z` has shape `(n,)`.
    """
    partials = jnp.zeros((schedule.num_blocks * schedule.width, schedule.kmax), z.dtype)
    for g, group in enumerate(schedule.groups):
        slots, args = tables["group_slots"][g], tables["group_args"][g]
        local = jax.vmap(partials_fn(group))(z[args], tuple(tables["group_data"][g])).astype(z.dtype)
        partials = partials.at[slots, : group.k].set(local)
    return partials.reshape(schedule.num_blocks, schedule.width, schedule.kmax)
