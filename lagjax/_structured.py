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
from lagjax import _signature
from lagjax._computation import Computation, check_arguments
from lagjax._layout import Layout


class StructuredComputation(Computation):
    """A structured program's constraints and objective (`Computation` returns one for them).

    Args: as `Computation`; `f` maps the dict of all variables `{name: array}` to a scalar, and
    `df`, if given, returns the dict of its partials (one array per variable, of its shape).

    Attributes: `d`, `n` (the number of variables, not their total size), `inputs`, `names`,
    `shapes` (`{name: shape}`), `size` (N, the length of the flattened variables), `layout`,
    `constraints`, `f`, `df`.

    Every method takes and returns dicts by name (inputs `x`: one array per input, of its declared
    shape, float32 or float64, promoted to their common type), runs jitted and compiles once per
    dtype.
    """

    def __init__(self, f: Callable, inputs, constraints, df: Callable | None = None):
        check_arguments(f, inputs, constraints)
        self.d, self.n = constraints.d, constraints.n
        self.inputs = list(constraints.inputs)
        self.names = constraints.names
        self.constraints = tuple(constraints)
        self.layout = layout = Layout(self.names, [constraints.shapes[name] for name in self.names], self.d)
        self.shapes, self.size = layout.shapes, layout.size
        self.input_names = layout.input_names
        _signature.check_structured_objective(f, df, self.shapes)
        self.f = f
        self.df = jax.grad(lambda z: jnp.reshape(f(z), ())) if df is None else df
        self._df_given = df is not None
        self._functions = {}
        self._tables = {}  # the scalar engine's index tables; a structured program has none
        self.program = program = blocks.steps(self.constraints)

        def objective(z):
            return jnp.reshape(self.f(z), ()).astype(blocks._dtype(z))

        def objective_gradient(z):
            g = self.df(z)
            return {name: jnp.reshape(g[name], z[name].shape).astype(z[name].dtype) for name in self.names}

        def multipliers(x):
            z, pullback = blocks.linearize(program, x)
            return z, blocks.back_substitute(program, pullback, objective_gradient(z))

        def tangents(z, v):  # v: the input directions, flat, (m, D_in)
            push = blocks.local_pushforward(program, z)

            def sweep(direction):
                seed = {**self._zeros(z), **layout.unflatten(direction, self.input_names)}
                return layout.flatten(blocks.forward_substitute(program, push, seed))

            return jax.vmap(sweep)(v)

        def jacobian(x):
            z = blocks.solve(program, x)
            width = int(layout.offsets[self.d])
            T = tangents(z, jnp.eye(width, dtype=blocks._dtype(z)))  # (width, size): a sweep per input entry
            return {
                name: {
                    a: jnp.moveaxis(T[layout.slice(a), layout.slice(name)], 0, -1).reshape(self.shapes[name] + self.shapes[a])
                    for a in self.input_names
                }
                for name in self.names
            }

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
            c = layout.unflatten(v)
            return layout.flatten(blocks.back_substitute(program, blocks.dense_pullback(program, layout, D), c))

        def forward_mode(D, v):
            b = layout.unflatten(v)
            return layout.flatten(blocks.forward_substitute(program, blocks.dense_pushforward(program, layout, D), b))

        self._jit = {
            name: jax.jit(fn)
            for name, fn in dict(
                solve=lambda x: blocks.solve(program, x),
                forward=lambda x: objective(blocks.solve(program, x)),
                multipliers=multipliers,
                gradient=lambda x: {k: v for k, v in multipliers(x)[1].items() if k in self.input_names},
                tangents=tangents,
                jacobian=jacobian,
                lagrangian=lagrangian,
                dlagrangian=dlagrangian,
                dconstraints=lambda z: blocks.dense(program, layout, z),
                reverse_mode=reverse_mode,
                forward_mode=forward_mode,
                penalties=lambda z: blocks.penalties(program, z),
            ).items()
        }

    def __repr__(self) -> str:
        return f"Computation(d={self.d}, n={self.n}, size={self.size}, structured)"

    def _zeros(self, z: dict) -> dict:
        return {name: jnp.zeros_like(value) for name, value in z.items()}

    # --- argument checks -----------------------------------------------------------------
    def _x(self, x, dtype=None) -> dict:
        return self.layout.check(x, "x", self.input_names, dtype)

    def _z(self, z, name: str = "z", dtype=None) -> dict:
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
        return self.layout.flatten(self._z(tree, "tree"))

    def unflatten(self, flat) -> dict:
        """A flat vector, shape `(size,)`, as the dict of all variables `{name: array}`."""
        return self.layout.unflatten(self._flat(flat, "flat"))

    # --- the method ----------------------------------------------------------------------
    def solve_constraints(self, x) -> dict:
        """The forward pass: every variable `{name: array}` for inputs `x` (a dict by input name)."""
        return self._jit["solve"](self._x(x))

    def forward(self, x) -> jax.Array:
        """Evaluate `f(z(x))`, a scalar."""
        return self._jit["forward"](self._x(x))

    def multipliers(self, x) -> tuple[dict, dict]:
        """The stationary point `(z, λ)`, dicts over all variables, with `D λ = -∇f(z)`, by back-substitution."""
        return self._jit["multipliers"](self._x(x))

    def gradient(self, x) -> dict:
        """The gradient of `f(z(x))`: the inputs' multipliers, a dict by input name, shaped as the inputs."""
        return self._jit["gradient"](self._x(x))

    def tangents(self, x, v) -> tuple[dict, dict]:
        """Forward mode: `(z, t)`, `t = dz/dx · v` for a direction `v` (a dict by input name, like `x`)."""
        x = self._x(x)
        v = self.layout.flatten(self.layout.check(v, "v", self.input_names, jax.tree.leaves(x)[0].dtype if x else None), self.input_names)
        z = self._jit["solve"](x)
        return z, self.layout.unflatten(self._jit["tangents"](z, v[None])[0])

    def jacobian(self, x) -> dict:
        """`dz/dx` as `{variable: {input: array}}`, each of shape `variable's shape + input's shape`
        (the structure `jax.jacfwd` gives); by forward mode, one tangent sweep per input entry."""
        return self._jit["jacobian"](self._x(x))

    def penalties(self, z) -> dict:
        """The constraint values `f_i(z[args(i)]) - z_i`, a dict by constraint name."""
        return self._jit["penalties"](self._z(z))

    def lagrangian(self, x, z, l) -> jax.Array:
        """`L = f(z) + Σ_inputs <λ_i, x_i - z_i> + Σ_constraints <λ_i, f_i(z[args(i)]) - z_i>`, a scalar."""
        dtype = self._common(x, z, l)
        return self._jit["lagrangian"](self._x(x, dtype), self._z(z, dtype=dtype), self._z(l, "l", dtype))

    def dlagrangian(self, x, z, l) -> tuple[dict, dict, dict]:
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

        Only the blocks of D on the program's pattern are read; its diagonal blocks are taken as -I.
        """
        D = self._square(D)
        dtype = self._common(D, v)
        return self._jit["reverse_mode"](D.astype(dtype), self._flat(v, "v", dtype))

    def forward_mode(self, D, v) -> jax.Array:
        """Solve `Dᵀ t = -v` by block forward substitution; `v`, `t` flat, shape `(size,)`."""
        D = self._square(D)
        dtype = self._common(D, v)
        return self._jit["forward_mode"](D.astype(dtype), self._flat(v, "v", dtype))
