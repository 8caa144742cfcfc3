"""The three substitution sweeps, each one `jax.lax.scan` over the schedule's blocks.

Notation: D is the n x n constraint Jacobian, column i the gradient w.r.t. z of constraint i's
penalty, so `D[i, i] = -1` and `D[j, i] = ∂f_i/∂z_j` for j in args(i). In topological order D is
upper triangular with -1 on its diagonal, so both triangular systems below are solved by
substitution, in linear time, from the sparse partials `P` alone (see `_local.local_jacobian`).

Carried vectors have n + 1 entries; the last is the schedule's scratch slot.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from lagjax._schedule import Schedule


def extend(schedule: Schedule, v: jax.Array) -> jax.Array:
    """`v` (n,) with the scratch slot appended: (n + 1,)."""
    return jnp.zeros(schedule.n + 1, v.dtype).at[: schedule.n].set(v)


def push(target: jax.Array, source: jax.Array, out, args, valid, partials) -> jax.Array:
    """`target[args] += partials * source[out]` over real lanes: the transposed local Jacobian.

    Works on one block (`out` (width,)) or all at once (`out` (S, width)); padding lanes push
    nothing, whatever the scratch slot holds.
    """
    source_out = jnp.where(valid, source[out], 0)
    return target.at[args].add(partials * source_out[..., None])


def solve_constraints(
    schedule: Schedule, branches: Sequence[Callable], tables: dict, x: jax.Array
) -> jax.Array:
    """The forward pass, ∇_λ L = 0: `z[:d] = x`, then `z[i] = f_i(z[args(i)])` block by block.

    Args: `x` of shape `(d,)`. Returns `z` of shape `(n,)`.
    """
    z = jnp.zeros(schedule.n + 1, x.dtype).at[: schedule.d].set(x)
    if schedule.num_blocks == 0:
        return z[: schedule.n]

    def step(z, block):
        out, args, group = block
        values = z[args]
        if len(branches) == 1:
            new = branches[0](values)
        else:
            new = jax.lax.switch(group, branches, values)
        return z.at[out].set(new), None

    z, _ = jax.lax.scan(step, z, (tables["out"], tables["args"], tables["block_group"]))
    return z[: schedule.n]


def back_substitute(schedule: Schedule, tables: dict, partials: jax.Array, v: jax.Array) -> jax.Array:
    """Solve `D λ = -v` (reverse mode): the multipliers.

    Row j of the system reads `λ_j = v_j + Σ_{i consumes j} ∂f_i/∂z_j λ_i`. Every consumer of j
    comes later in topological order, so sweeping blocks in reverse, a block's λ is final when it is
    reached, and it pushes `∂f_i/∂z_j λ_i` to its arguments.

    Args: `partials` `(S, width, kmax)`, `v` `(n,)`. Returns `λ` `(n,)`.
    """
    lam = extend(schedule, v)
    if schedule.num_blocks == 0:
        return lam[: schedule.n]

    def step(lam, block):
        out, args, valid, p = block
        return push(lam, lam, out, args, valid, p), None

    xs = (tables["out"], tables["args"], tables["valid"], partials)
    lam, _ = jax.lax.scan(step, lam, xs, reverse=True)
    return lam[: schedule.n]


def forward_substitute(schedule: Schedule, tables: dict, partials: jax.Array, v: jax.Array) -> jax.Array:
    """Solve `Dᵀ t = -v` (forward mode): the tangents.

    Row i of the system reads `t_i = v_i + Σ_{j in args(i)} ∂f_i/∂z_j t_j`; the arguments come
    earlier in topological order, so one forward sweep solves it.

    Args: `partials` `(S, width, kmax)`, `v` `(n,)`. Returns `t` `(n,)`.
    """
    t = extend(schedule, v)
    if schedule.num_blocks == 0:
        return t[: schedule.n]

    def step(t, block):
        out, args, valid, p = block
        dt = jnp.where(valid, jnp.sum(p * t[args], axis=-1), 0)  # the scratch slot stays 0
        return t.at[out].add(dt), None

    xs = (tables["out"], tables["args"], tables["valid"], partials)
    t, _ = jax.lax.scan(step, t, xs)
    return t[: schedule.n]
