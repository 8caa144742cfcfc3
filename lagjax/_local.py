"""Local quantities of the constraints at a given z, vectorised per group.

Given z, every constraint's value, penalty and partials depend on its own arguments only, so they
are computed for all constraints at once: one `jax.vmap` per group over its members' arguments and
captured data (`_grouping`), never a Python loop over constraints. z is the tuple of class buffers
(`_schedule`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lagjax._schedule import Schedule


def data_axes(schedule: Schedule, g: int) -> tuple:
    """`vmap` axes of group g's data: 0 for leaves stacked per member, None for shared ones."""
    return tuple(None if one else 0 for one in schedule.group_shared[g])


def member_data(schedule: Schedule, tables: dict, g: int, members) -> tuple:
    """Group g's data for the members `members` (ranks, any shape); shared leaves as they are."""
    return tuple(leaf if one else leaf[members] for leaf, one in zip(tables["group_data"][g], schedule.group_shared[g]))


def evaluate(schedule: Schedule, g: int, args: list, data: tuple) -> jax.Array:
    """Group g's values for a batch of members: `args[p]` `(m, *shape_p)` -> `(m, *shape_out)`."""
    group = schedule.groups[g]
    return jax.vmap(lambda a, d: group.apply(a, d), in_axes=(0, data_axes(schedule, g)))(args, data)


def arguments(schedule: Schedule, tables: dict, z, g: int) -> list:
    """Group g's members' arguments read from z: per position, `(m_g, *shape_p)`."""
    rows = tables["group_arg_rows"][g]
    return [z[c][rows[:, p]] for p, c in enumerate(schedule.arg_class[g])]


def values(schedule: Schedule, tables: dict, z, g: int) -> jax.Array:
    """`f_i(z[args(i)])` for group g's members, `(m_g, *shape_out)`, in z's dtype."""
    data = tuple(tables["group_data"][g])
    return evaluate(schedule, g, arguments(schedule, tables, z, g), data).astype(z[0].dtype)


def penalties(schedule: Schedule, tables: dict, z) -> list:
    """`f_i(z[args(i)]) - z_i` at every constraint's row, class buffers (zero at inputs and spare rows)."""
    out = [jnp.zeros_like(b) for b in z]
    for g in range(len(schedule.groups)):
        c, rows = schedule.group_class[g], tables["group_rows"][g]
        out[c] = out[c].at[rows].set(values(schedule, tables, z, g) - z[c][rows], unique_indices=True)
    return out


def group_partials(schedule: Schedule, tables: dict, z, g: int) -> jax.Array:
    """A scalar group's local Jacobians, `(m_g, k)`: `∂f_i/∂z[args(i)]`."""
    group = schedule.groups[g]
    data = tuple(tables["group_data"][g])
    args = arguments(schedule, tables, z, g)
    return jax.vmap(group.partials, in_axes=(0, data_axes(schedule, g)))(args, data).astype(z[0].dtype)


def step_partials(schedule: Schedule, tables: dict, per_group: dict, dtype) -> jax.Array:
    """The scalar groups' partials in step layout, `(S, width, kmax)`; zero at every other lane and
    at padding positions (one gather from the groups' rows concatenated)."""
    kmax = schedule.kmax
    rows = [jnp.pad(per_group[g], ((0, 0), (0, kmax - per_group[g].shape[1]))) for g in schedule.scalar_groups]
    table = jnp.concatenate(rows + [jnp.zeros((1, kmax), dtype)])
    P = table[tables["lane_source"]].reshape(schedule.num_steps, schedule.width, kmax)
    return jnp.where(tables["real"], P, 0)
