"""Views of the constraint Jacobian D besides the sparse partials: the products `D λ` and `Dᵀ t`, and the dense matrix.

D is n x n, column i the gradient w.r.t. z of constraint i's penalty: `D[i, i] = -1`, and
`D[j, i] = Σ ∂f_i/∂z_j` over the positions where j appears in args(i). The dense matrix is for
small programs, the original API and the oracles; the engine never builds it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lagjax._schedule import Schedule


def _padded(schedule: Schedule, v: jax.Array) -> jax.Array:
    """`v` (n,) with a zero appended at index n, where padding lanes and positions point."""
    return jnp.zeros(schedule.n + 1, v.dtype).at[: schedule.n].set(v)


def apply(schedule: Schedule, tables: dict, partials: jax.Array, lam: jax.Array) -> jax.Array:
    """`D λ` without D: `(D λ)_j = -λ_j + Σ_{i consumes j} ∂f_i/∂z_j λ_i`. Shapes `(n,) -> (n,)`."""
    source = _padded(schedule, lam)[tables["out"]]  # 0 at padding lanes
    pushed = jnp.zeros(schedule.n + 1, lam.dtype).at[tables["args"]].add(partials * source[..., None])
    return pushed[: schedule.n] - lam


def apply_transposed(schedule: Schedule, tables: dict, partials: jax.Array, t: jax.Array) -> jax.Array:
    """`Dᵀ t` without D: `(Dᵀ t)_i = -t_i + Σ_{j in args(i)} ∂f_i/∂z_j t_j`. Shapes `(n,) -> (n,)`."""
    pulled = jnp.where(tables["valid"], jnp.sum(partials * _padded(schedule, t)[tables["args"]], axis=-1), 0)
    return jnp.zeros(schedule.n + 1, t.dtype).at[tables["out"]].add(pulled)[: schedule.n] - t


def dense(schedule: Schedule, tables: dict, partials: jax.Array) -> jax.Array:
    """The dense D, shape `(n, n)`, from the sparse partials."""
    n = schedule.n
    ext = jnp.zeros((n + 1, n + 1), partials.dtype)
    ext = ext.at[tables["args"], tables["out"][..., None]].add(partials)
    return ext[:n, :n] - jnp.eye(n, dtype=partials.dtype)


def coordinates(schedule: Schedule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the sparse partials sit in D: `(rows, cols, mask)`, `P[mask]` the values at `(rows, cols)`."""
    mask = schedule.valid[..., None] & (schedule.args != schedule.n)
    cols = np.broadcast_to(schedule.out[..., None], schedule.args.shape)
    return schedule.args[mask], cols[mask], mask


def partials_from_dense(schedule: Schedule, tables: dict, D: jax.Array) -> jax.Array:
    """The sparse partials read off a dense D, shape `(S, width, kmax)` (the inverse of `dense`).

    A variable repeated among a constraint's arguments has one entry of D (the sum of its partials):
    it is read once, at its first position, and the other positions get 0.
    """
    n = schedule.n
    ext = jnp.zeros((n + 1, n + 1), D.dtype).at[:n, :n].set(D)
    read = ext[tables["args"], tables["out"][..., None]]
    return jnp.where(tables["first_use"], read, 0)
