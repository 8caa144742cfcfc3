"""`Computation` of a structured program: array variables, dicts by name in and out.

The same method as the scalar engine (see `_computation.py`), with block-structured D (see
`_block_substitution.py`). Variables, multipliers and tangents are dicts `{name: array}`, each of
its variable's shape; the matrices of the method (`dconstraints`, and the `D` of `reverse_mode` /
`forward_mode`) are over the flattened variables, in the layout of `flatten` / `unflatten`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lagjax import _block_substitution as blocks
from lagjax import _cyclic, _signature
from lagjax._computation import Computation, check_arguments
from lagjax._layout import Layout


class SolveError(RuntimeError):
    """A cyclic block of a program could not be solved: not converged, singular, or not finite.

    Raised by `Computation` methods called outside `jax.jit`; the message names the block's
    variables and the residual reached. Attributes: `names` (the block's variables), `stage`
    ("forward", "multipliers" or "tangents"), `status` (a `_cyclic.Status`), `residual`.
    """

    def __init__(self, names, stage: str, status: int, residual: float, steps: int):
        self.names, self.stage, self.status, self.residual = names, stage, _cyclic.Status(status), residual
        what = {"forward": "solving its constraints", "multipliers": "solving for its multipliers", "tangents": "solving for its tangents"}[stage]
        super().__init__(
            f"The cyclic block of {list(names)} failed {what}: {_cyclic.message(status)} "
            f"(residual {residual:.3g} after {steps} steps). Its values are NaN."
        )


class StructuredComputation(Computation):
    """A structured or cyclic program's constraints and objective (`Computation` returns one for them).

    Args: as `Computation`, and `solver`, the options of the cyclic blocks' root finder and linear
    solves (`lagjax.Solver`: tolerances, iteration limits, dense or matrix-free). For a structured
    program `f` maps the dict of all variables `{name: array}` to a scalar, and `df`, if given,
    returns the dict of its partials (one array per variable, of its shape).

    Attributes: `d`, `n` (the number of variables, not their total size), `inputs`, `names`,
    `shapes` (`{name: shape}`), `size` (N, the length of the flattened variables), `layout`,
    `constraints`, `components` (dependencies first: a constraint index, or a cyclic `Block`),
    `blocks` (the cyclic ones), `f`, `df`.

    A structured program's methods take and return dicts by name (inputs `x`: one array per input,
    of its declared shape, float32 or float64, promoted to their common type). A cyclic program of
    scalars declared with a list of inputs keeps the vectors of the scalar engine.

    Cyclic blocks report failure (not converged, singular, non-finite): outside `jax.jit` by
    raising `SolveError` naming the block's variables; inside it by NaN in the block's values (and
    everything computed from them), by `status(x)`, and, with `checked=True`, by a runtime error.
    """

    def __init__(self, f: Callable, inputs, constraints, df: Callable | None = None, *, solver=None, checked: bool = False):
        check_arguments(f, inputs, constraints)
        self.constraints = constraints.resolved()
        self.d, self.n = constraints.d, constraints.n
        self.inputs = list(constraints.inputs)
        self.names = constraints.names
        self.dicts = constraints.structured  # else a cyclic scalar program: vectors in and out
        shapes = constraints.shapes
        self.layout = layout = Layout(self.names, [shapes[name] for name in self.names], self.d)
        self.shapes, self.size = layout.shapes, layout.size
        self.input_names = layout.input_names
        if self.dicts:
            _signature.check_structured_objective(f, df, self.shapes)
        else:
            _signature.check_objective(f, df, self.n)
        self.f = f
        self.df = jax.grad(lambda z: jnp.reshape(f(z), ())) if df is None else df
        self._df_given = df is not None
        self.solver = _cyclic.check_solver(_cyclic.Solver() if solver is None else solver)
        self.checked = bool(checked)
        self._functions = {}
        self._tables = {}  # the scalar engine's index tables; this engine has none
        self.program = program = blocks.steps(self.constraints)
        self.components = components = blocks.order(self.constraints, self.d) if constraints.cyclic else list(range(len(program)))
        self.blocks = blocks.blocks(components)
        self._init = {name: self._initial_guess(name, value) for name, value in constraints.init.items()}

        def as_tree(z):  # the objective sees a dict, or the scalar engine's vector
            return z if self.dicts else layout.flatten(z)

        def objective(z):
            return jnp.reshape(self.f(as_tree(z)), ()).astype(blocks._dtype(z))

        def objective_gradient(z):
            g = self.df(as_tree(z))
            g = g if self.dicts else layout.unflatten(jnp.reshape(g, (self.n,)))
            return {name: jnp.reshape(g[name], z[name].shape).astype(z[name].dtype) for name in self.names}

        def solve(x):
            return blocks.solve(program, components, x, self._root)

        def multipliers(x):
            z, pullback, forward_infos = blocks.linearize(program, components, x, self._root)
            lam, infos = blocks.back_substitute(program, components, pullback, objective_gradient(z), self._adjoint(z))
            return (z, lam), {"forward": forward_infos, "multipliers": infos}

        def tangents(z, v):  # v: the input directions, flat, (m, D_in)
            push, tangent = blocks.local_pushforward(program, z), self._tangent(z)

            def sweep(direction):
                seed = {**{name: jnp.zeros_like(value) for name, value in z.items()}, **layout.unflatten(direction, self.input_names)}
                t, infos = blocks.forward_substitute(program, components, push, seed, tangent)
                return layout.flatten(t), infos

            T, infos = jax.vmap(sweep)(v)
            return T, {"tangents": [jax.tree.map(_worst, info) for info in infos]}

        def jacobian(x):
            z, forward_infos = solve(x)
            width = int(layout.offsets[self.d])
            T, infos = tangents(z, jnp.eye(width, dtype=blocks._dtype(z)))  # (width, size): a sweep per input entry
            infos["forward"] = forward_infos
            if not self.dicts:
                return T.T, infos
            return {
                name: {
                    a: jnp.moveaxis(T[layout.slice(a), layout.slice(name)], 0, -1).reshape(self.shapes[name] + self.shapes[a])
                    for a in self.input_names
                }
                for name in self.names
            }, infos

        def lagrangian(x, z, lam):
            penalties = blocks.penalties(program, z)
            value = objective(z)
            for name in self.input_names:
                value = value + jnp.vdot(lam[name], x[name] - z[name])
            for name, p in penalties.items():
                value = value + jnp.vdot(lam[name], p)
            return value

        def dlagrangian(x, z, lam):
            Dl = blocks.apply(program, blocks.local_pullback(program, z), lam)
            g = objective_gradient(z)
            dz = {name: g[name] + Dl[name] for name in self.names}
            dl = {**{name: x[name] - z[name] for name in self.input_names}, **blocks.penalties(program, z)}
            return {name: lam[name] for name in self.input_names}, dz, dl

        def reverse_mode(D, v):
            pull, adjoint = blocks.dense_pullback(program, layout, D), self._dense_solve(D, transpose=False)
            lam, _ = blocks.back_substitute(program, components, pull, layout.unflatten(v), adjoint)
            return layout.flatten(lam)

        def forward_mode(D, v):
            push, tangent = blocks.dense_pushforward(program, layout, D), self._dense_solve(D, transpose=True)
            t, _ = blocks.forward_substitute(program, components, push, layout.unflatten(v), tangent)
            return layout.flatten(t)

        # Entries as jitted functions of what the user passes: dicts, or for a cyclic scalar program
        # vectors, converted inside the jit (no eager op per variable).
        if self.dicts:
            tree_x = tree_z = flat = flat_x = flat_c = lambda tree: tree  # noqa: E731
        else:
            tree_x, tree_z = (lambda v: layout.unflatten(v, self.input_names)), layout.unflatten
            flat, flat_x = layout.flatten, (lambda t: layout.flatten(t, self.input_names))
            flat_c = lambda t: layout.flatten(t, self.names[self.d :])  # noqa: E731

        def tangents_entry(x, v):  # v: (m, width) directions
            z, forward_infos = solve(tree_x(x))
            T, infos = tangents(z, v)
            infos["forward"] = forward_infos
            t = layout.unflatten(T[0]) if self.dicts else T
            return (flat(z), t), infos

        def multipliers_entry(x):
            (z, lam), infos = multipliers(tree_x(x))
            return (flat(z), flat(lam)), infos

        def gradient(x):
            (z, lam), infos = multipliers(tree_x(x))
            return flat_x({k: v for k, v in lam.items() if k in self.input_names}), infos

        def report(fn):  # fn of z(x), with the forward pass's report
            def entry(x):
                z, infos = solve(tree_x(x))
                return fn(z), {"forward": infos}

            return entry

        def dlagrangian_entry(x, z, lam):
            dx, dz, dl = dlagrangian(tree_x(x), tree_z(z), tree_z(lam))
            return flat_x(dx), flat(dz), flat(dl)

        self._jit = {
            name: jax.jit(fn)
            for name, fn in dict(
                solve=report(flat),
                forward=report(objective),
                multipliers=multipliers_entry,
                gradient=gradient,
                tangents=tangents_entry,
                jacobian=lambda x: jacobian(tree_x(x)),
                lagrangian=lambda x, z, lam: lagrangian(tree_x(x), tree_z(z), tree_z(lam)),
                dlagrangian=dlagrangian_entry,
                dconstraints=lambda z: blocks.dense(program, layout, tree_z(z)),
                reverse_mode=reverse_mode,
                forward_mode=forward_mode,
                penalties=lambda z: flat_c(blocks.penalties(program, tree_z(z))),
                status=lambda x: multipliers(tree_x(x))[1],
            ).items()
        }

    # --- the cyclic blocks' solves -------------------------------------------------------
    def _initial_guess(self, name, value) -> np.ndarray:
        value = np.asarray(value, np.float64)
        shape = self.shapes[name]
        if value.shape != shape and value.size != 1:
            raise ValueError(f"The initial guess of {name!r} has shape {value.shape}; {name!r} has shape {shape}.")
        return np.broadcast_to(value, shape)

    def _root(self, block, z):
        """Solve the block's `u = F(u)` from the initial guesses (default 0); NaN where it fails."""
        dtype = blocks._dtype(z)
        F = blocks.block_function(self.program, self.layout, block, z)
        u0 = jnp.concatenate([jnp.ravel(jnp.asarray(self._init.get(n, np.zeros(self.shapes[n])), dtype)) for n in block.names])
        u, info = _cyclic.find_root(F, u0, self.solver)
        return self.layout.unflatten(_poisoned(u, info), block.names), info

    def _adjoint(self, z):
        """`adjoint(block, c)`: the block's multipliers, `(I - J)ᵀ λ_B = c`, at z."""
        return self._linear(z, _cyclic.solve_adjoint)

    def _tangent(self, z):
        """`tangent(block, b)`: the block's tangents, `(I - J) t_B = b`, at z."""
        return self._linear(z, _cyclic.solve_tangent)

    def _linear(self, z, solve):
        layout = self.layout

        def block_solve(block, rhs):
            F = blocks.block_function(self.program, layout, block, z)
            w, info = solve(F, layout.flatten(z, block.names), layout.flatten(rhs, block.names), self.solver)
            return layout.unflatten(_poisoned(w, info), block.names), info

        return block_solve

    def _dense_solve(self, D, transpose: bool):
        """A block's rows of `D λ = -c` (or columns of `Dᵀ t = -b`), solved on D's diagonal block."""
        layout = self.layout

        def block_solve(block, rhs):
            index = np.concatenate([np.arange(layout.slice(n).start, layout.slice(n).stop) for n in block.names])
            M = D[np.ix_(index, index)]
            w = jnp.linalg.solve(M.T if transpose else M, -layout.flatten(rhs, block.names))
            info = _cyclic.Info(jnp.where(jnp.all(jnp.isfinite(w)), 0, int(_cyclic.SINGULAR)).astype(jnp.int32), jnp.zeros((), w.dtype), jnp.int32(0))
            return layout.unflatten(w, block.names), info

        return block_solve

    def _run(self, name: str, *args):
        """Call a jitted entry that reports on the cyclic blocks; raise `SolveError` if one failed."""
        result, report = self._jit[name](*args)
        self._check(report)
        return result

    def _check(self, report: dict) -> None:
        if not self.blocks:
            return
        leaves = jax.tree.leaves(report)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            if self.checked:
                jax.debug.callback(self._raise_if_failed, report)
            return
        self._raise_if_failed(report)

    def _raise_if_failed(self, report: dict) -> None:
        for stage in ("forward", "multipliers", "tangents"):
            for block, info in zip(self.blocks, report.get(stage, ())):
                if int(info.status) != _cyclic.SUCCESS:
                    raise SolveError(block.names, stage, int(info.status), float(info.residual), int(info.steps))

    def status(self, x) -> dict:
        """The cyclic blocks' reports at `x`, jittable: `{"forward": [Info], "multipliers": [Info]}`, one
        `Info` (status, residual, steps) per block of `blocks`, in order; `Info.status == 0` is success
        (`lagjax.Status`). Use it inside `jax.jit`, where failures cannot raise."""
        return self._jit["status"](self._x(x))

    def __repr__(self) -> str:
        kind = "structured" if self.dicts else "scalar"
        return f"Computation(d={self.d}, n={self.n}, size={self.size}, {kind}, cyclic blocks={len(self.blocks)})"

    # --- argument checks -----------------------------------------------------------------
    def _x(self, x, dtype=None):
        if not self.dicts:
            return super()._x(x, dtype)
        return self.layout.check(x, "x", self.input_names, dtype)

    def _z(self, z, name: str = "z", dtype=None):
        if not self.dicts:
            return super()._z(z, name, dtype)
        return self.layout.check(z, name, self.names, dtype)

    def _flat(self, v, name: str, dtype=None) -> jax.Array:
        return self._vector(v, name, self.size, "the flattened variables (see `flatten`)", dtype)

    def _square(self, D) -> jax.Array:
        D = jnp.asarray(D)
        if D.shape != (self.size, self.size):
            raise ValueError(f"`D` must have shape ({self.size}, {self.size}), as from `dconstraints`; got {D.shape}.")
        return D

    def _common(self, *trees) -> jnp.dtype:
        return super()._common(*(jnp.asarray(leaf) for tree in trees for leaf in jax.tree.leaves(tree)))

    # --- flat views ----------------------------------------------------------------------
    def flatten(self, tree: dict) -> jax.Array:
        """A dict of all variables `{name: array}` as one flat vector, shape `(size,)`, in variable order."""
        return self.layout.flatten(self.layout.check(tree, "tree", self.names))

    def unflatten(self, flat) -> dict:
        """A flat vector, shape `(size,)`, as the dict of all variables `{name: array}`."""
        return self.layout.unflatten(self._flat(flat, "flat"))

    # --- the method ----------------------------------------------------------------------
    def solve_constraints(self, x):
        """The forward pass: every variable (a dict by name) for inputs `x` (a dict by input name)."""
        return self._run("solve", self._x(x))

    def forward(self, x) -> jax.Array:
        """Evaluate `f(z(x))`, a scalar."""
        return self._run("forward", self._x(x))

    def multipliers(self, x):
        """The stationary point `(z, λ)`, dicts over all variables, with `D λ = -∇f(z)`: by
        back-substitution between components, a linear solve on each cyclic block."""
        return self._run("multipliers", self._x(x))

    def gradient(self, x):
        """The gradient of `f(z(x))`: the inputs' multipliers, a dict by input name, shaped as the inputs."""
        return self._run("gradient", self._x(x))

    def tangents(self, x, v):
        """Forward mode: `(z, t)`, `t = dz/dx · v` for a direction `v` (a dict by input name, like `x`;
        for a cyclic scalar program, shape `(d,)` or `(m, d)` as in the scalar engine)."""
        x = self._x(x)
        dtype = jax.tree.leaves(x)[0].dtype if jax.tree.leaves(x) else None
        if self.dicts:
            directions = self.layout.flatten(self.layout.check(v, "v", self.input_names, dtype), self.input_names)[None]
        else:
            directions = jnp.asarray(v, dtype)
            if directions.ndim not in (1, 2) or directions.shape[-1] != self.d:
                raise ValueError(f"`v` must have shape ({self.d},) or (m, {self.d}), one entry per input; got {directions.shape}.")
        z, t = self._run("tangents", x, jnp.atleast_2d(directions))
        return z, (t[0] if not self.dicts and directions.ndim == 1 else t)

    def jacobian(self, x):
        """`dz/dx` as `{variable: {input: array}}`, each of shape `variable's shape + input's shape`
        (the structure `jax.jacfwd` gives; `(n, d)` for a cyclic scalar program); one tangent sweep per input entry."""
        return self._run("jacobian", self._x(x))

    def penalties(self, z):
        """The constraint values `f_i(z[args(i)]) - z_i`, a dict by constraint name."""
        return self._jit["penalties"](self._z(z))

    def lagrangian(self, x, z, l) -> jax.Array:
        """`L = f(z) + Σ_inputs <λ_i, x_i - z_i> + Σ_constraints <λ_i, f_i(z[args(i)]) - z_i>`, a scalar."""
        dtype = self._common(x, z, l)
        return self._jit["lagrangian"](self._x(x, dtype), self._z(z, dtype=dtype), self._z(l, "l", dtype))

    def dlagrangian(self, x, z, l):
        """The gradient of the Lagrangian, `(dx, dz, dl)`: dicts over the inputs, all variables, all variables.

        `dx = λ[inputs]`, `dz = ∇f(z) + D λ`, `dl = {inputs: x - z, constraints: penalties(z)}`.
        """
        dtype = self._common(x, z, l)
        return self._jit["dlagrangian"](self._x(x, dtype), self._z(z, dtype=dtype), self._z(l, "l", dtype))

    def dconstraints(self, z) -> jax.Array:
        """D at `z` over the flattened variables, shape `(size, size)`: for small programs and checks."""
        return self._jit["dconstraints"](self._z(z))

    def sparse_dconstraints(self, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """D at `z` in coordinate form `(values, rows, cols)`: its nonzero entries (built densely)."""
        D = np.asarray(self.dconstraints(z))
        rows, cols = np.nonzero(D)
        return D[rows, cols], rows, cols

    def reverse_mode(self, D, v) -> jax.Array:
        """Solve `D λ = -v` by block back-substitution; `v`, `λ` flat, shape `(size,)`.

        Only the blocks of D on the program's pattern are read, its diagonal blocks taken as -I; a
        cyclic block's rows are solved densely on D's diagonal block.
        """
        D = self._square(D)
        dtype = self._common(D, v)
        return self._jit["reverse_mode"](D.astype(dtype), self._flat(v, "v", dtype))

    def forward_mode(self, D, v) -> jax.Array:
        """Solve `Dᵀ t = -v` by block forward substitution; `v`, `t` flat, shape `(size,)`."""
        D = self._square(D)
        dtype = self._common(D, v)
        return self._jit["forward_mode"](D.astype(dtype), self._flat(v, "v", dtype))


def _poisoned(u: jax.Array, info: _cyclic.Info) -> jax.Array:
    """`u`, or NaN where the solve failed: a failed block never passes for a result."""
    return jnp.where(info.status == _cyclic.SUCCESS, u, jnp.nan)


def _worst(values: jax.Array) -> jax.Array:
    """The worst of a batch of a block's infos (over the directions of a tangent sweep)."""
    return jnp.max(values)
