"""The sweeps of a structured program: variables are arrays, and D is block structured.

Variable i (shape `s_i`) is defined by `z_i = f_i(z[a_1], ..., z[a_k])`. The block of D in row
block j, column block i is `(∂f_i/∂z_j)ᵀ`, a linear map that is never built: it is applied by
`jax.vjp` of `f_i` (a cotangent of `z_i` to one of `z_j`) and its transpose by `jax.jvp`. The
diagonal blocks are `-I`. In variable order D is block upper triangular, so:

    D λ = -c   <=>  λ_j = c_j + Σ_{i reads j} (∂f_i/∂z_j)ᵀ λ_i          back-substitution, i descending
    Dᵀ t = -b  <=>  t_i = b_i + Σ_{j in args(i)} (∂f_i/∂z_j) t_j          forward substitution, i ascending

With `c = ∇f(z)` the first gives the multipliers, and `λ` of the inputs is the gradient; with `b` a
direction of the inputs (zero elsewhere) the second gives the tangents. The sweeps are Python loops
over the constraints, traced once under `jax.jit`: the compiled program is the same sequence of
operations that `jax.grad` of the forward pass would give, so a structured program is meant for
tens to thousands of (array) constraints; a program of millions of scalars is the scalar engine's.

The local linear maps are passed to the sweeps as functions, `pullback(k, cotangent)` and
`pushforward(k, tangents)`, so that the same sweeps run on `jax.vjp`/`jax.jvp` at z (the method)
and on the blocks of a given dense D (`reverse_mode`, `forward_mode`).
"""

from __future__ import annotations

from typing import Callable, Hashable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from lagjax._layout import Layout


class Step(NamedTuple):
    """One constraint `z[name] = fn(*z[args])` of a structured program."""

    name: Hashable
    fn: Callable
    args: tuple[Hashable, ...]


def steps(constraints) -> list[Step]:
    """The constraints as steps; a scalar constraint's `f(vector)` becomes `fn(*scalars)`."""
    return [Step(c.name, c.f if c.positional else _positional(c.f, c.df), c.arg_names) for c in constraints]


def _positional(f: Callable, df: Callable | None) -> Callable:
    """`f` of a vector of k scalars as a function of k scalars; with `df` as its derivative if given."""

    def fn(*scalars):
        return jnp.reshape(f(jnp.stack(scalars)), ())

    if df is None:
        return fn
    fn = jax.custom_jvp(fn)

    @fn.defjvp
    def fn_jvp(primals, tangents):
        v, dv = jnp.stack(primals), jnp.stack(tangents)
        return fn(*primals), jnp.reshape(df(v), v.shape).astype(v.dtype) @ dv.astype(v.dtype)

    return fn


def _arguments(step: Step, z: dict) -> list:
    return [z[a] for a in step.args]


def solve(program: Sequence[Step], x: dict) -> dict:
    """The forward pass: `z` (all variables, by name) from the inputs `x`, each cast to x's dtype."""
    dtype = _dtype(x)
    z = dict(x)
    for step in program:
        z[step.name] = step.fn(*_arguments(step, z)).astype(dtype)
    return z


def linearize(program: Sequence[Step], x: dict) -> tuple[dict, Callable]:
    """The forward pass and its local pullbacks, kept from it (as `jax.grad` keeps its residuals)."""
    dtype = _dtype(x)
    z, pullbacks = dict(x), []
    for step in program:
        z[step.name], pullback = jax.vjp(_cast(step.fn, dtype), *_arguments(step, z))
        pullbacks.append(pullback)
    return z, lambda k, cotangent: pullbacks[k](cotangent)


def local_pullback(program: Sequence[Step], z: dict) -> Callable:
    """`pullback(k, c)`: the cotangent c of constraint k's variable, pulled back to its arguments by `jax.vjp` at z."""

    dtype = _dtype(z)

    def pullback(k, cotangent):
        step = program[k]
        return jax.vjp(_cast(step.fn, dtype), *_arguments(step, z))[1](cotangent.astype(dtype))

    return pullback


def local_pushforward(program: Sequence[Step], z: dict) -> Callable:
    """`pushforward(k, ts)`: the tangents of constraint k's arguments, pushed to its variable by `jax.jvp` at z."""

    def pushforward(k, tangents):
        step = program[k]
        return jax.jvp(step.fn, tuple(_arguments(step, z)), tuple(tangents))[1]

    return pushforward


def back_substitute(program: Sequence[Step], pullback: Callable, c: dict) -> dict:
    """Solve `D λ = -c` for the multipliers λ (a dict like `c`), constraints in descending order.

    Row block j: `-λ_j + Σ_{i reads j} (∂f_i/∂z_j)ᵀ λ_i = -c_j`. Every λ_i on the right belongs to a
    later constraint, so it is final when constraint i is reached and can be pulled back.
    """
    lam = dict(c)
    for k in reversed(range(len(program))):
        step = program[k]
        for a, contribution in zip(step.args, pullback(k, lam[step.name])):
            lam[a] = lam[a] + contribution.astype(lam[a].dtype)
    return lam


def forward_substitute(program: Sequence[Step], pushforward: Callable, b: dict) -> dict:
    """Solve `Dᵀ t = -b` for the tangents t (a dict like `b`), constraints in ascending order.

    Column block i: `-t_i + Σ_{j in args(i)} (∂f_i/∂z_j) t_j = -b_i`; the t_j are already known.
    """
    t = dict(b)
    for k, step in enumerate(program):
        t[step.name] = b[step.name] + pushforward(k, _arguments(step, t)).astype(b[step.name].dtype)
    return t


def apply(program: Sequence[Step], pullback: Callable, lam: dict) -> dict:
    """`D λ` for any λ (a dict): `-λ_j + Σ_{i reads j} (∂f_i/∂z_j)ᵀ λ_i`."""
    out = {name: -value for name, value in lam.items()}
    for k, step in enumerate(program):
        for a, contribution in zip(step.args, pullback(k, lam[step.name])):
            out[a] = out[a] + contribution.astype(out[a].dtype)
    return out


def apply_transposed(program: Sequence[Step], pushforward: Callable, t: dict) -> dict:
    """`Dᵀ t` for any t (a dict): `-t_i`, plus `Σ_{j in args(i)} (∂f_i/∂z_j) t_j` for constraints."""
    out = {name: -value for name, value in t.items()}
    for k, step in enumerate(program):
        out[step.name] = out[step.name] + pushforward(k, _arguments(step, t)).astype(t[step.name].dtype)
    return out


def penalties(program: Sequence[Step], z: dict) -> dict:
    """The constraint values `f_i(z[args(i)]) - z_i`, by constraint name."""
    return {step.name: step.fn(*_arguments(step, z)).astype(z[step.name].dtype) - z[step.name] for step in program}


def dense(program: Sequence[Step], layout: Layout, z: dict) -> jax.Array:
    """D at z over the flattened variables, shape `(N, N)`: `-I`, and the blocks `(∂f_i/∂z_j)ᵀ`.

    Each block is the local Jacobian `jax.jacfwd(f_i, argnums=p)` of one argument, made a matrix.
    """
    dtype = _dtype(z)
    D = -jnp.eye(layout.size, dtype=dtype)
    for step in program:
        args = _arguments(step, z)
        rows = layout.slice(step.name)
        for p, a in enumerate(step.args):
            block = jax.jacfwd(step.fn, argnums=p)(*args)  # shape s_i + s_a
            block = jnp.reshape(block, (rows.stop - rows.start, -1)).T.astype(dtype)
            D = D.at[layout.slice(a), rows].add(block)
    return D


def dense_pullback(program: Sequence[Step], layout: Layout, D: jax.Array) -> Callable:
    """`pullback(k, c)` read off a dense D: the blocks `D[a, i]` (only those on the program's pattern)."""

    def pullback(k, cotangent):
        step, columns = program[k], layout.slice(program[k].name)
        return tuple(
            jnp.reshape(D[layout.slice(a), columns] @ jnp.ravel(cotangent), layout.shapes[a]) for a in step.args
        )

    return pullback


def dense_pushforward(program: Sequence[Step], layout: Layout, D: jax.Array) -> Callable:
    """`pushforward(k, ts)` read off a dense D: `Σ_a D[a, i]ᵀ t_a`."""

    def pushforward(k, tangents):
        step, columns = program[k], layout.slice(program[k].name)
        total = sum(D[layout.slice(a), columns].T @ jnp.ravel(t) for a, t in zip(step.args, tangents))
        return jnp.reshape(total, layout.shapes[step.name])

    return pushforward


def _cast(fn: Callable, dtype) -> Callable:
    return lambda *args: fn(*args).astype(dtype)


def _dtype(tree: dict):
    leaves = jax.tree.leaves(tree)
    return jnp.result_type(*leaves) if leaves else jnp.result_type(float)
