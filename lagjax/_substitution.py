"""The three substitution sweeps, each one `jax.lax.scan` over the schedule's blocks.

Notation: D is the n x n constraint Jacobian, column i the gradient w.r.t. z of constraint i's
penalty, so `D[i, i] = -1` and `D[j, i] = ∂f_i/∂z_j` for j in args(i). In topological order D is
upper triangular with -1 on its diagonal, so both triangular systems below are solved by
substitution, in linear time, from the sparse partials `P` alone (see `_local.local_jacobian`).

The sweeps carry their vectors in slot order (`_schedule`): block b owns the slots
`start[b] : start[b] + width`, so its values are one `dynamic_slice` to read and one in-place
`dynamic_update_slice` to write. Its arguments are read with one `dynamic_slice` each in narrow
blocks, and with a gather in wide ones (`Schedule.dynamic_reads`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from lagjax import _local
from lagjax._schedule import Schedule


def to_slots(schedule: Schedule, tables: dict, v: jax.Array) -> jax.Array:
    """A vector over the variables, `(n,)`, in slot order, `(num_slots,)`; padding slots 0."""
    return jnp.zeros(schedule.num_slots, v.dtype).at[tables["slot_of"]].set(v)


def from_slots(tables: dict, v: jax.Array) -> jax.Array:
    """The inverse of `to_slots`: `(num_slots,) -> (n,)`."""
    return v[tables["slot_of"]]


def read(schedule: Schedule, v: jax.Array, slots: jax.Array) -> jax.Array:
    """`v[slots]` for one block's argument slots `(width, kmax)`."""
    if not schedule.dynamic_reads:
        return v[slots]
    flat = slots.reshape(-1)
    values = [lax.dynamic_index_in_dim(v, flat[e], keepdims=False) for e in range(flat.shape[0])]
    return jnp.stack(values).reshape(slots.shape)


def block(v: jax.Array, start: jax.Array, width: int) -> jax.Array:
    """The block's own values, `v[start : start + width]`."""
    return lax.dynamic_slice_in_dim(v, start, width)


def solve_constraints(schedule: Schedule, tables: dict, x: jax.Array) -> jax.Array:
    """The forward pass, ∇_λ L = 0: `z[:d] = x`, then `z[i] = f_i(z[args(i)])` block by block.

    Args: `x` of shape `(d,)`. Returns `z` of shape `(n,)`.
    """
    z = jnp.zeros(schedule.num_slots, x.dtype).at[: schedule.d].set(x)
    if schedule.num_blocks == 0:
        return from_slots(tables, z)

    branches = _local.block_branches(schedule, tables)

    def step(z, blk):
        slots, start, group, member = blk
        values = read(schedule, z, slots)
        if len(branches) == 1:
            new = branches[0](values, member)
        else:
            new = lax.switch(group, branches, values, member)
        return lax.dynamic_update_slice_in_dim(z, new, start, 0), None

    xs = (tables["slots"], tables["start"], tables["block_group"], tables["member"])
    z, _ = lax.scan(step, z, xs)
    return from_slots(tables, z)


def back_substitute(schedule: Schedule, tables: dict, partials: jax.Array, v: jax.Array) -> jax.Array:
    """Solve `D λ = -v` (reverse mode): the multipliers.

    Row j of the system reads `λ_j = v_j + Σ_{i consumes j} ∂f_i/∂z_j λ_i`. Every consumer of j
    comes later in topological order, so sweeping blocks in reverse, a block's λ is final when it is
    reached, and it pushes `∂f_i/∂z_j λ_i` to its arguments (padding lanes and positions are
    masked: they push zero, even where a λ is infinite).

    Args: `partials` `(S, width, kmax)`, `v` `(n,)`. Returns `λ` `(n,)`.
    """
    lam = to_slots(schedule, tables, v)
    if schedule.num_blocks == 0:
        return from_slots(tables, lam)

    def step(lam, blk):
        slots, start, real, p = blk
        own = block(lam, start, schedule.width)
        return lam.at[slots].add(jnp.where(real, p * own[:, None], 0)), None

    xs = (tables["slots"], tables["start"], tables["real"], partials)
    lam, _ = lax.scan(step, lam, xs, reverse=True)
    return from_slots(tables, lam)


def forward_substitute(schedule: Schedule, tables: dict, partials: jax.Array, v: jax.Array) -> jax.Array:
    """Solve `Dᵀ t = -v` (forward mode): the tangents.

    Row i of the system reads `t_i = v_i + Σ_{j in args(i)} ∂f_i/∂z_j t_j`; the arguments come
    earlier in topological order, so one forward sweep solves it.

    Args: `partials` `(S, width, kmax)`, `v` `(n,)`. Returns `t` `(n,)`.
    """
    t = to_slots(schedule, tables, v)
    if schedule.num_blocks == 0:
        return from_slots(tables, t)

    def step(t, blk):
        slots, start, real, p = blk
        pushed = jnp.where(real, p * read(schedule, t, slots), 0)
        own = block(t, start, schedule.width) + jnp.sum(pushed, axis=-1)
        return lax.dynamic_update_slice_in_dim(t, own, start, 0), None

    t, _ = lax.scan(step, t, (tables["slots"], tables["start"], tables["real"], partials))
    return from_slots(tables, t)
