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

A cyclic program (some constraint reads a later variable, or itself) is ordered by its strongly
connected components (`_components.py`), dependencies first; D is then block upper triangular
with one diagonal block per component. A component with a cycle, a `Block`, is solved as one: its
variables u satisfy `u = F(u)` (`F` stacks the block's constraints, every other variable fixed),
found by a root finder, and its rows of the two systems are linear solves on the diagonal block,

    (I - J)ᵀ λ_B = c_B + (contributions of later components)      J = ∂F/∂u, the multipliers
    (I - J) t_B = b_B + (contributions of earlier components)               the tangents

(`_cyclic.py`); between components, substitution as above.

The local linear maps are passed to the sweeps as functions, `pullback(k, cotangent)` and
`pushforward(k, tangents)`, so that the same sweeps run on `jax.vjp`/`jax.jvp` at z (the method)
and on the blocks of a given dense D (`reverse_mode`, `forward_mode`).
"""

from __future__ import annotations

from typing import Callable, Hashable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lagjax import _components
from lagjax._layout import Layout


class Step(NamedTuple):
    """One constraint `z[name] = fn(*z[args])` of a structured program."""

    name: Hashable
    fn: Callable
    args: tuple[Hashable, ...]


class Block(NamedTuple):
    """A strongly connected component with a cycle: constraints (`steps`, indices into the program)
    defining the variables `names`, solved together."""

    steps: tuple[int, ...]
    names: tuple[Hashable, ...]


def steps(constraints) -> list[Step]:
    """The constraints as steps; a scalar constraint's `f(vector)` becomes `fn(*scalars)`."""
    return [Step(c.name, c.f if c.positional else _positional(c.f, c.df), c.arg_names) for c in constraints]


def order(constraints, d: int) -> list:
    """The components of the program, dependencies first: a step index (an acyclic constraint), or
    a `Block`. For a program in topological order (no forward references) this is `range(len)`."""
    n = d + len(constraints)
    counts = np.zeros(n + 1, np.int64)
    counts[d + 1 :] = [len(c.args) for c in constraints]
    indptr = np.cumsum(counts)
    indices = np.fromiter((a for c in constraints for a in c.args), np.int64, int(indptr[-1]))
    _, components = _components.strongly_connected(n, indptr, indices)
    out = []
    for component in components:
        if component[0] < d:  # an input
            continue
        if _components.is_cyclic(component, indptr, indices):
            out.append(Block(tuple(int(v) - d for v in component), tuple(constraints[int(v) - d].name for v in component)))
        else:
            out.append(int(component[0]) - d)
    return out


def blocks(components: Sequence) -> list[Block]:
    """The cyclic blocks among the components, in order."""
    return [c for c in components if isinstance(c, Block)]


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


def solve(program: Sequence[Step], components: Sequence, x: dict, root: Callable | None = None) -> tuple[dict, list]:
    """The forward pass: `z` (all variables, by name) from the inputs `x`, each cast to x's dtype.

    `root(block, z)` solves a cyclic block for its variables given the others: `(values, info)`.
    Returns `z` and the blocks' infos, in order.
    """
    z, _, infos = _forward(program, components, x, root, keep=False)
    return z, infos


def linearize(program: Sequence[Step], components: Sequence, x: dict, root: Callable | None = None) -> tuple[dict, Callable, list]:
    """The forward pass, and the pullbacks of its acyclic steps kept from it (as `jax.grad` keeps its
    residuals); a block's steps are linearised at the solution when pulled back."""
    z, pullbacks, infos = _forward(program, components, x, root, keep=True)
    dtype, at_solution = _dtype(x), local_pullback(program, z)

    def pullback(k, cotangent):
        return pullbacks[k](cotangent.astype(dtype)) if k in pullbacks else at_solution(k, cotangent)

    return z, pullback, infos


def _forward(program, components, x, root, keep: bool):
    dtype = _dtype(x)
    z, pullbacks, infos = dict(x), {}, []
    for c in components:
        if isinstance(c, Block):
            values, info = root(c, z)
            z.update(values)
            infos.append(info)
        elif keep:
            step = program[c]
            z[step.name], pullbacks[c] = jax.vjp(_cast(step.fn, dtype), *_arguments(step, z))
        else:
            step = program[c]
            z[step.name] = step.fn(*_arguments(step, z)).astype(dtype)
    return z, pullbacks, infos


def block_function(program: Sequence[Step], layout: Layout, block: Block, z: dict) -> Callable:
    """`F(u)`: the block's constraints on the flat vector u of its variables, every other variable
    taken from z; its fixed point `u = F(u)` is the block's solution."""
    dtype = _dtype(z)

    def F(u):
        values = {**z, **layout.unflatten(u, block.names)}
        return jnp.concatenate([jnp.ravel(program[k].fn(*_arguments(program[k], values)).astype(dtype)) for k in block.steps])

    return F


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


def back_substitute(program: Sequence[Step], components: Sequence, pullback: Callable, c: dict, adjoint: Callable | None = None) -> tuple[dict, list]:
    """Solve `D λ = -c` for the multipliers λ (a dict like `c`), components in descending order.

    Row block j: `-λ_j + Σ_{i reads j} (∂f_i/∂z_j)ᵀ λ_i = -c_j`. Every λ_i on the right belongs to a
    later component, so it is final when that component is reached and can be pulled back. A block
    B first solves its diagonal system, `adjoint(B, r) = (λ_B, info)` with r its accumulated right-
    hand side, then pulls λ_B back to the variables outside it. Returns λ and the blocks' infos.
    """
    lam, infos = dict(c), []
    for component in reversed(components):
        if isinstance(component, Block):
            solved, info = adjoint(component, {name: lam[name] for name in component.names})
            lam.update(solved)
            infos.append(info)
            ks, inside = component.steps, set(component.names)
        else:
            ks, inside = (component,), ()
        for k in ks:
            step = program[k]
            for a, contribution in zip(step.args, pullback(k, lam[step.name])):
                if a not in inside:
                    lam[a] = lam[a] + contribution.astype(lam[a].dtype)
    return lam, infos[::-1]


def forward_substitute(program: Sequence[Step], components: Sequence, pushforward: Callable, b: dict, tangent: Callable | None = None) -> tuple[dict, list]:
    """Solve `Dᵀ t = -b` for the tangents t (a dict like `b`), components in ascending order.

    Column block i: `-t_i + Σ_{j in args(i)} (∂f_i/∂z_j) t_j = -b_i`; the t_j of earlier components
    are known. A block B pushes those forward (its own variables' tangents taken as 0), then solves
    its diagonal system, `tangent(B, r) = (t_B, info)`. Returns t and the blocks' infos.
    """
    t, infos = dict(b), []
    for component in components:
        if isinstance(component, Block):
            outside = {**t, **{name: jnp.zeros_like(b[name]) for name in component.names}}
            rhs = {}
            for k in component.steps:
                step = program[k]
                rhs[step.name] = b[step.name] + pushforward(k, _arguments(step, outside)).astype(b[step.name].dtype)
            solved, info = tangent(component, rhs)
            t.update(solved)
            infos.append(info)
        else:
            step = program[component]
            t[step.name] = b[step.name] + pushforward(component, _arguments(step, t)).astype(b[step.name].dtype)
    return t, infos


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
