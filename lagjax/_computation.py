"""`Computation`: a program with an objective, and every quantity of the method of Lagrange multipliers.

The Lagrangian, with one multiplier per variable (x: d inputs, z: n variables, λ: n multipliers):

    L(x, z, λ) = f(z) + Σ_{i<d} λ_i (x_i - z_i) + Σ_{i>=d} λ_i (f_i(z[args(i)]) - z_i)

Its stationary point is forward and backward propagation:
    ∇_λ L = 0  <=>  the constraints hold            (forward pass: `solve_constraints`)
    ∇_z L = 0  <=>  D λ = -∇f(z)                    (backward pass: `multipliers`)
    ∇_x L = λ[:d] is then the gradient of f(z(x))   (`gradient`)
    Dᵀ t = -v, v = [direction; 0], gives dz/dx · direction  (forward mode: `tangents`)

`as_function` makes the program a JAX function whose derivatives (any transformation, any order)
come from these two sweeps (see `_function.py`).
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lagjax import _function, _jacobian, _local, _schedule, _signature, _substitution
from lagjax._program import Constraints


class Computation:
    """A program's constraints and objective, with its forward and backward solves.

    Args:
      f: the objective, a JAX-traceable map from all n variables `z` (shape `(n,)`) to a scalar.
      inputs: the input indices, `constraints.inputs` (the first d variables).
      constraints: the `Constraints` of the program. They are read once, here: constraints added
        afterwards are not part of this Computation.
      df: optional gradient of `f`, `(n,) -> (n,)`; omitted, `jax.grad(f)` is used.
      solver, checked: options of cyclic programs (see `StructuredComputation`).

    Attributes: `d`, `n`, `inputs`, `names` (variable names in index order), `constraints` (a tuple
    of `Constraint`), `f`, `df` (always callable).

    Every method accepts arrays of float32 or float64 (integers are promoted to the default float
    type, complex values are refused), runs jitted, compiles once per input shape and dtype, and works inside `jax.jit`.

    A structured program (array variables: `Constraints` with a dict of inputs, or `add`) gives a
    `StructuredComputation` (see `lagjax._structured`): the same methods, with dicts by name.
    """

    def __new__(cls, f=None, inputs=None, constraints=None, df=None, **options):
        if cls is Computation and isinstance(constraints, Constraints) and (constraints.structured or constraints.cyclic):
            from lagjax._structured import StructuredComputation  # array variables or cycles: the block engine

            return super().__new__(StructuredComputation)
        return super().__new__(cls)

    def __init__(
        self,
        f: Callable,
        inputs: Sequence[int],
        constraints: Constraints,
        df: Callable | None = None,
        *,
        solver=None,
        checked: bool = False,
    ):
        check_arguments(f, inputs, constraints)  # `solver`, `checked`: for cyclic blocks; this program has none
        self.d = constraints.d
        self.n = constraints.n
        self.inputs = list(constraints.inputs)
        self.names = constraints.names
        self.constraints = tuple(constraints)
        _signature.check_objective(f, df, self.n)
        self.f = f
        self.df = jax.grad(lambda z: jnp.reshape(f(z), ())) if df is None else df
        self._df_given = df is not None
        self._functions = {}  # as_function's results, one per (output, as_dict): compiled once

        sched = _schedule.build(self.d, self.constraints, constraints.groups, constraints.levels())
        self.schedule = sched
        self._tables = jax.device_put(sched.tables())  # no compile, unlike jnp.asarray
        _warn_if_many_groups(sched)

        def solve(tables, x):
            return _substitution.solve_constraints(sched, tables, x)

        def objective(z):
            return jnp.reshape(self.f(z), ()).astype(z.dtype)

        def objective_gradient(z):
            return jnp.reshape(self.df(z), (self.n,)).astype(z.dtype)

        def multipliers(tables, x):
            z = solve(tables, x)
            partials = _local.local_jacobian(sched, tables, z)
            return z, _substitution.back_substitute(sched, tables, partials, objective_gradient(z))

        def tangents(tables, x, v):
            z = solve(tables, x)
            partials = _local.local_jacobian(sched, tables, z)
            seeds = jnp.zeros((v.shape[0], self.n), x.dtype).at[:, : self.d].set(v)
            t = jax.vmap(lambda s: _substitution.forward_substitute(sched, tables, partials, s))(seeds)
            return z, t

        def lagrangian(tables, x, z, lam):
            d = self.d
            penalties = _local.penalties(sched, tables, z)
            return objective(z) + lam[:d] @ (x - z[:d]) + lam[d:] @ penalties

        def dlagrangian(tables, x, z, lam):
            partials = _local.local_jacobian(sched, tables, z)
            dz = objective_gradient(z) + _jacobian.apply(sched, tables, partials, lam)
            dl = jnp.concatenate([x - z[: self.d], _local.penalties(sched, tables, z)])
            return lam[: self.d], dz, dl

        def dconstraints(tables, z):
            return _jacobian.dense(sched, tables, _local.local_jacobian(sched, tables, z))

        def reverse_mode(tables, D, v):
            partials = _jacobian.partials_from_dense(sched, tables, D)
            return _substitution.back_substitute(sched, tables, partials, v)

        def forward_mode(tables, D, v):
            partials = _jacobian.partials_from_dense(sched, tables, D)
            return _substitution.forward_substitute(sched, tables, partials, v)

        def penalties(tables, z):
            return _local.penalties(sched, tables, z)

        def partials(tables, z):
            return _local.local_jacobian(sched, tables, z)

        self._jit = {
            name: jax.jit(fn)
            for name, fn in dict(
                solve=solve,
                forward=lambda tables, x: objective(solve(tables, x)),
                multipliers=multipliers,
                gradient=lambda tables, x: multipliers(tables, x)[1][: self.d],
                tangents=tangents,
                lagrangian=lagrangian,
                dlagrangian=dlagrangian,
                dconstraints=dconstraints,
                reverse_mode=reverse_mode,
                forward_mode=forward_mode,
                penalties=penalties,
                partials=partials,
            ).items()
        }

    def __repr__(self) -> str:
        return (
            f"Computation(d={self.d}, n={self.n}, groups={len(self.schedule.groups)}, "
            f"depth={self.schedule.depth}, blocks={self.schedule.num_blocks}x{self.schedule.width})"
        )

    # --- argument checks -----------------------------------------------------------------
    def _vector(self, value, name: str, size: int, what: str, dtype=None) -> jax.Array:
        value = jnp.asarray(value, dtype)
        if jnp.issubdtype(value.dtype, jnp.complexfloating):
            raise TypeError(f"`{name}` is complex ({value.dtype}); lagjax programs are real: pass float32 or float64.")
        if not jnp.issubdtype(value.dtype, jnp.floating):
            value = value.astype(jnp.result_type(float))
        if value.shape != (size,):
            raise ValueError(f"`{name}` must have shape ({size},), {what}; got shape {value.shape}.")
        return value

    def _x(self, x, dtype=None) -> jax.Array:
        names = [self.names[i] for i in self.inputs]
        return self._vector(x, "x", self.d, f"one value per input {names}", dtype)

    def _z(self, z, name: str = "z", dtype=None) -> jax.Array:
        return self._vector(z, name, self.n, "one value per variable", dtype)

    def _square(self, D) -> jax.Array:
        D = jnp.asarray(D)
        if D.shape != (self.n, self.n):
            raise ValueError(f"`D` must have shape ({self.n}, {self.n}), as from `dconstraints`; got {D.shape}.")
        return D

    def _common(self, *arrays) -> jnp.dtype:
        dtype = jnp.result_type(*(jnp.asarray(a) for a in arrays))
        return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)

    # --- the method ----------------------------------------------------------------------
    def solve_constraints(self, x) -> jax.Array:
        """The forward pass: the feasible `z` (shape `(n,)`) for inputs `x` (shape `(d,)`)."""
        return self._jit["solve"](self._tables, self._x(x))

    def forward(self, x) -> jax.Array:
        """Evaluate `f(z(x))`, a scalar, for inputs `x` (shape `(d,)`)."""
        return self._jit["forward"](self._tables, self._x(x))

    def multipliers(self, x) -> tuple[jax.Array, jax.Array]:
        """The stationary point: `(z, λ)`, both shape `(n,)`, with `D λ = -∇f(z)`.

        Computed from the sparse local partials by back-substitution; D is never built.
        """
        return self._jit["multipliers"](self._tables, self._x(x))

    def gradient(self, x) -> jax.Array:
        """The gradient of `f(z(x))` w.r.t. `x`: the input multipliers `λ[:d]`, shape `(d,)`."""
        return self._jit["gradient"](self._tables, self._x(x))

    def tangents(self, x, v) -> tuple[jax.Array, jax.Array]:
        """Forward mode: `(z, t)` with `t = dz/dx · v`, the directional derivative of z along v.

        Solves `Dᵀ t = -[v; 0]` by forward substitution; D is never built.
        Args: `x` shape `(d,)`; `v` shape `(d,)`, or `(m, d)` for m directions at once.
        Returns: `z` shape `(n,)`; `t` shape `(n,)`, or `(m, n)`.
        """
        x = self._x(x)
        v = jnp.asarray(v, x.dtype)
        if v.ndim not in (1, 2) or v.shape[-1] != self.d:
            raise ValueError(f"`v` must have shape ({self.d},) or (m, {self.d}), one entry per input; got {v.shape}.")
        z, t = self._jit["tangents"](self._tables, x, jnp.atleast_2d(v))
        return z, (t[0] if v.ndim == 1 else t)

    def jacobian(self, x) -> jax.Array:
        """`dz/dx`, shape `(n, d)`, by forward mode: one tangent sweep per input."""
        x = self._x(x)
        return self.tangents(x, jnp.eye(self.d, dtype=x.dtype))[1].T

    def penalties(self, z) -> jax.Array:
        """The constraint values `f_i(z[args(i)]) - z_i`, shape `(n - d,)`, in constraint order."""
        return self._jit["penalties"](self._tables, self._z(z))

    def lagrangian(self, x, z, l) -> jax.Array:
        """`L(x, z, λ) = f(z) + λ[:d]·(x - z[:d]) + λ[d:]·penalties(z)`, a scalar."""
        dtype = self._common(x, z, l)
        return self._jit["lagrangian"](self._tables, self._x(x, dtype), self._z(z, dtype=dtype), self._z(l, "l", dtype))

    def dlagrangian(self, x, z, l) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The gradient of the Lagrangian, `(dx, dz, dl)`, shapes `(d,)`, `(n,)`, `(n,)`.

        `dx = λ[:d]`, `dz = ∇f(z) + D λ`, `dl = [x - z[:d]; penalties(z)]`; D is never built.
        """
        dtype = self._common(x, z, l)
        return self._jit["dlagrangian"](self._tables, self._x(x, dtype), self._z(z, dtype=dtype), self._z(l, "l", dtype))

    def dconstraints(self, z) -> jax.Array:
        """The dense constraint Jacobian D at `z`, shape `(n, n)`: for small programs and checks."""
        return self._jit["dconstraints"](self._tables, self._z(z))

    def sparse_dconstraints(self, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """D at `z` in coordinate form, for programs of any size: `(values, rows, cols)`, NumPy arrays.

        `D[rows[e], cols[e]] += values[e]` over the entries e builds D (a variable repeated among a
        constraint's arguments has one entry per occurrence; they add up), e.g.
        `scipy.sparse.coo_matrix((values, (rows, cols)), shape=(n, n))`. The -1 diagonal is included.
        """
        P = np.asarray(self._jit["partials"](self._tables, self._z(z)))
        rows, cols, mask = _jacobian.coordinates(self.schedule)
        diagonal = np.arange(self.n)
        return (
            np.concatenate([P[mask], np.full(self.n, -1, P.dtype)]),
            np.concatenate([rows, diagonal]),
            np.concatenate([cols, diagonal]),
        )

    def reverse_mode(self, D, v) -> jax.Array:
        """Solve the upper triangular system `D λ = -v` by back-substitution; `v` and `λ` shape `(n,)`.

        D is a constraint Jacobian as from `dconstraints`: its diagonal is -1 by construction and is
        not read; of the rest, only the entries on the program's sparsity pattern are read.
        """
        D = self._square(D)
        dtype = self._common(D, v)
        return self._jit["reverse_mode"](self._tables, D.astype(dtype), self._z(v, "v", dtype))

    def forward_mode(self, D, v) -> jax.Array:
        """Solve `Dᵀ t = -v` by forward substitution; `v` and `t` shape `(n,)`.

        D is a constraint Jacobian as from `dconstraints`: its diagonal is -1 by construction and is
        not read; of the rest, only the entries on the program's sparsity pattern are read.
        """
        D = self._square(D)
        dtype = self._common(D, v)
        return self._jit["forward_mode"](self._tables, D.astype(dtype), self._z(v, "v", dtype))

    # --- a JAX function ------------------------------------------------------------------
    def as_function(self, output: str = "f", *, as_dict: bool | None = None) -> Callable:
        """The program as a JAX function of its inputs, differentiated by lagjax's sweeps.

        `output="f"`: `x ↦ f(z*(x))`, a scalar. `output="z"`: `x ↦ z*(x)`, the solved variables.

        Inputs `x`: a vector of shape `(d,)` in input order, or a dict `{name: scalar}` whose keys are
        exactly the input names `[names[i] for i in inputs]`. float32 and float64 are kept (a dict's
        values are promoted to their common type); integers become the default float type.
        Output `z`: a vector of shape `(n,)` in variable order, or, when `x` is a dict (or
        `as_dict=True`), a dict `{name: scalar}` of all n variables; `as_dict=False` forces the vector.

        It composes with `jax.jit`, `jax.vmap` (batches run as one batched sweep), `jax.grad`,
        `jax.vjp`, `jax.jacrev` (reverse mode: the multiplier sweep, `D λ = -v`), `jax.jvp`,
        `jax.jacfwd` (forward mode: the tangent sweep, `Dᵀ t = -v`), `jax.hessian` and any nesting;
        the same function object is returned on every call, so it compiles once per shape and dtype.
        If this Computation was given `df`, it is the derivative of `f` (second orders differentiate `df`).

        Parameters: a constraint has no derivative w.r.t. arrays it closes over. Make such values
        inputs of the program and pass a dict; to differentiate w.r.t. some of them only, close over
        the rest in a wrapper::

            fn = comp.as_function()                        # inputs: "w", "b", "x"
            loss = lambda params, x: fn({**params, "x": x})
            jax.grad(loss)({"w": 0.5, "b": 0.1}, 2.0)       # {"w": ..., "b": ...}
        """
        key = (output, as_dict)
        if key not in self._functions:
            self._functions[key] = _function.make(self, output, as_dict)
        return self._functions[key]

def check_arguments(f: Callable, inputs: Sequence[int], constraints: Constraints) -> None:
    """The checks of `Computation(f, inputs, constraints)` common to both engines."""
    if not isinstance(constraints, Constraints):
        raise TypeError(f"`constraints` must be a lagjax.Constraints, got {type(constraints).__name__}.")
    if not callable(f):
        raise TypeError(f"The objective `f` must be callable, got {f!r}.")
    if not isinstance(inputs, Sequence) or list(inputs) != constraints.inputs:
        raise ValueError(
            f"`inputs` must be the program's input indices, `constraints.inputs` = {constraints.inputs}; "
            f"got {inputs!r}."
        )


# Past this many groups, compile time is dominated by per-group code (a `lax.switch` branch and a
# `vmap` each): about 20 s by a hundred groups on a 2-core CPU.
MANY_GROUPS = 64


def _warn_if_many_groups(schedule: _schedule.Schedule) -> None:
    if len(schedule.groups) <= MANY_GROUPS:
        return
    examples = ", ".join(str(getattr(g.first, "__name__", g.first)) for g in schedule.groups[:3])
    warnings.warn(
        f"This program has {len(schedule.groups)} groups of constraints running different code "
        f"(e.g. {examples}), and compile time grows with the number of groups (about 20 s by a "
        f"hundred on a 2-core CPU). Write it with a few shared functions: a function per kind of constraint, "
        f"defined once, with per-constraint values captured as arrays or numbers "
        f"(`lambda v, row=row: row @ v` groups fine) rather than as Python control flow or shapes; "
        f"or make those values inputs of the program.",
        stacklevel=3,
    )
