"""A program as a JAX function: `x ↦ z*(x)` and `x ↦ f(z*(x))`, differentiated by lagjax's own sweeps.

The derivation (the implicit-function theorem on the constraints `C(x, z) = [x - z[:d]; f_i(z[args(i)]) - z_i]`):

    C(x, z*(x)) = 0  =>  (∂C/∂z) dz + (∂C/∂x) dx = 0  =>  Dᵀ dz = -[dx; 0]

with `D = (∂C/∂z)ᵀ` the constraint Jacobian (-1 on the diagonal). Written as the linear system

    A dz = b,   A = -Dᵀ (apply: `(A t)_i = t_i - Σ_{j in args(i)} ∂f_i/∂z_j t_j`),   b = [dx; 0],

its solution is the forward substitution `forward_substitute(P, b)` (which solves `Dᵀ t = -b`) and the
solution of the transposed system `Aᵀ λ = c`, i.e. `D λ = -c`, is the back-substitution
`back_substitute(P, c)`. So a cotangent `c = ∇f(z)` pulls back to `λ[:d]`, the multipliers of the inputs.

The design, and why:

- `z*(x)` is a `jax.custom_jvp` function. Its primal is the forward sweep (`_sweeps.solve`), which
  JAX therefore never differentiates. Its JVP rule calls `z*(x)` itself (so that a second
  differentiation goes through the rule again, not through the scan), computes the local linear maps
  at z (`_linear.AtPoint`) with differentiable JAX code, and returns `dz = custom_linear_solve(A, [dx; 0])` with
  `solve` = the forward substitution and `transpose_solve` = the back-substitution.
- Forward mode (`jvp`, `jacfwd`) evaluates the rule: one tangent sweep. Reverse mode (`grad`, `vjp`,
  `jacrev`) linearises the rule and transposes it; the transpose of `custom_linear_solve` is its
  `transpose_solve`, so reverse mode runs the multiplier sweep, not JAX's transpose of a scan.
  (A `custom_jvp` whose rule called `forward_substitute` directly would get reverse mode by JAX
  transposing that scan; a `custom_vjp` would lose forward mode and higher orders.)
- Higher orders: the JVP rule is ordinary JAX code in `x` (through `z*(x)` and `P(z*(x))`), and JAX
  differentiates `custom_linear_solve` w.r.t. the matrix by `dt = A⁻¹(db - dA t)`, which needs `A`
  as a `matvec`: that is what `-_sweeps.apply_transposed` is for (never used to solve; JAX also
  transposes it into the `vecmat` of the transposed system). Computing z under `stop_gradient` and
  attaching `custom_linear_solve` to it, without the `custom_jvp`, would give first derivatives but
  freeze `P` at z, losing the second-order terms `∂P/∂z · dz`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from lagjax import _layout, _sweeps
from lagjax._parameters import Parameters

OUTPUTS = ("f", "z")


def implicit_solution(comp, parameters=None) -> Callable:
    """`z*(tables, x, theta)`: the class buffers of the solution for inputs `x` (a vector or a dict) and
    parameters `theta` (the leaves of `parameters`, a `_parameters.Parameters`; `[]` without), whose
    derivatives in `x` and `theta` (any mode, any order) come from the two sweeps.

    The tables are an argument, not a closure: a `custom_jvp` rule must not close over tracers (here,
    the tables as arguments of the enclosing `jax.jit`). They are constants of the program (indices,
    and the data captured by grouped functions): their tangents are ignored; a parameter's value
    replaces its captured array in them (`Parameters.substitute`), and its tangent seeds the solve. A
    failed cyclic block gives NaN (and, with `checked=True`, a runtime error), never a silently wrong value.
    """
    schedule, storage = comp.schedule, comp.storage

    def substituted(tables, theta):
        return tables if parameters is None else parameters.substitute(tables, theta)

    @jax.custom_jvp
    def solution(tables, x, theta):
        z, report = comp.solve_buffers(substituted(tables, theta), x)
        comp._check({"forward": report})
        return z

    def solution_jvp(primals, tangents):
        (tables, x, theta), (_, dx, dtheta) = primals, tangents
        z = solution(tables, x, theta)
        tables = substituted(tables, theta)
        active = _active_inputs(comp, dx)
        varied = [None if isinstance(t, SymbolicZero) else t for t in dtheta]
        seeded = parameters.seeded([k for k, t in enumerate(varied) if t is not None]) if parameters is not None else ()
        if not active and not seeded:
            return z, [_zero(b) for b in z]
        seed = parameters.seed(schedule, storage, tables, z, varied) if seeded else None
        R = comp.restriction(active, seeded)
        if R is not None:
            return z, _restricted_tangents(comp, R, z, dx, seed, tables if parameters is not None else None)
        maps = comp.linearize(tables, z)  # differentiable in z: second orders flow through the local maps

        def matvec(t):
            return [-a for a in _sweeps.apply_transposed(schedule, tables, maps, t)]

        def solve(_, b):  # A t = b  <=>  Dᵀ t = -b
            t, infos = _sweeps.forward_substitute(schedule, tables, maps, b)
            comp._check({"tangents": infos})
            return t

        def transpose_solve(_, c):  # Aᵀ λ = c  <=>  D λ = -c
            lam, infos = _sweeps.back_substitute(schedule, tables, maps, c)
            comp._check({"multipliers": infos})
            return lam

        b = storage.seed(dx, z[0].dtype, tables["storage"])  # [dx; 0]
        if seed is not None:
            b = [u + v for u, v in zip(b, seed)]
        return z, linear_solve(matvec, b, solve, transpose_solve)

    # Symbolic zeros: the inputs not differentiated are known, and only the active part is swept.
    solution.defjvp(solution_jvp, symbolic_zeros=True)
    return solution


def _active_inputs(comp, dx) -> tuple[int, ...]:
    """The inputs whose tangents are not symbolic zeros (`dx` a vector, or a dict by input name)."""
    if not isinstance(dx, Mapping):
        return () if isinstance(dx, SymbolicZero) else tuple(range(comp.d))
    index = comp.layout.index
    return tuple(sorted(index[name] for name, t in dx.items() if not isinstance(t, SymbolicZero)))


def _restricted_tangents(comp, R, z, dx, seed=None, full=None) -> list:
    """`dz` for the tangents `dx` of the active inputs only (and the parameters' `seed`, the
    program's buffers): the same linear solve as on the whole program, on its active part
    (`_activity`); zero outside it. `full`: the program's tables with the parameters' values, whose
    data the active part then reads.

    The restriction's tables are constants of the trace here (the rule cannot take arguments of its
    own), so a restricted `as_function` derivative embeds them in its compiled code.
    """
    tables, dtype = (R.tables if full is None else R.with_data(R.tables, full)), z[0].dtype
    maps = R.linearize(z, tables)

    def solve(_, b):
        t, report = R.tangents(maps, b, tables)
        comp._check({"tangents": report})
        return t

    def transpose_solve(_, c):
        lam, report = R.multipliers(maps, c, tables)
        comp._check({"multipliers": report})
        return lam

    b = R.seed({name: dx[name] for name in R.names}, dtype, tables)
    if seed is not None:
        b = [u + v for u, v in zip(b, R.gather(seed, tables))]
    t = linear_solve(lambda t: R.matvec(maps, tables, t), b, solve, transpose_solve)
    dz = R.scatter(t, tables, dtype)
    # a class holding no active variable has a symbolic zero tangent: no zero is formed downstream
    return [dz[c] if c in R.active_classes else _zero(b) for c, b in enumerate(z)]


def linear_solve(matvec, b, solve, transpose_solve) -> list:
    """`jax.lax.custom_linear_solve` of buffers (a list of arrays of one dtype), posed on one vector.

    JAX's rules for `custom_linear_solve` need the right-hand side's leaves alike: its transpose
    asserts that every leaf of b is linear in the tangents, and its JVP passes a leaf's symbolic zero
    tangent on as an operand; a buffer of b that does not vary (a class no seed reaches, in reverse
    over forward mode, say) breaks either. Packed into one vector, b is linear as a whole.
    """
    shapes = [x.shape for x in b]
    sizes = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes])

    def pack(buffers):
        return jnp.concatenate([jnp.ravel(x) for x in buffers])

    def unpack(v):
        return [jnp.reshape(v[start:stop], shape) for start, stop, shape in zip(sizes[:-1], sizes[1:], shapes)]

    t = jax.lax.custom_linear_solve(
        lambda v: pack(matvec(unpack(v))),
        pack(b),
        lambda _, v: pack(solve(None, unpack(v))),
        lambda _, v: pack(transpose_solve(None, unpack(v))),
    )
    return unpack(t)


def _zero(value):
    return SymbolicZero(jax.typeof(value).to_tangent_aval())


def with_gradient(f: Callable, df: Callable) -> Callable:
    """The objective `z ↦ f(z)` (z a vector, or a dict of arrays) with the user's gradient `df` as its
    derivative (JAX differentiates `df`)."""

    @jax.custom_jvp
    def objective(z):
        return jnp.reshape(f(z), ()).astype(jnp.result_type(*jax.tree.leaves(z)))

    @objective.defjvp
    def objective_jvp(primals, tangents):
        (z,), (dz,) = primals, tangents
        g = jax.tree.map(lambda g, z: jnp.reshape(g, z.shape).astype(z.dtype), df(z), z)
        return objective(z), sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(dz)))

    return objective


class Packing:
    """Inputs and outputs of `as_function`: a flat vector, or a dict keyed by variable name.

    `check` runs in Python on every call, before `jax.jit` sees the argument, so that a wrong
    structure gets lagjax's message rather than a tracing error; `vector` and `solution` are traced.
    """

    def __init__(self, comp):
        self.storage = comp.storage
        self.d = comp.d
        self.names = list(comp.names)
        self.input_names = [comp.names[i] for i in comp.inputs]
        self._input_set = frozenset(self.input_names)

    def check(self, x):
        """`x` unchanged if it is a dict of scalars keyed by the input names, else as an array `(d,)`."""
        if isinstance(x, Mapping):
            missing = [k for k in self.input_names if k not in x]
            unexpected = [k for k in x if k not in self._input_set]
            if missing or unexpected:
                raise ValueError(
                    f"The keys of `x` must be the program's inputs {self.input_names}; missing {missing}, unexpected {unexpected}."
                )
            for name in self.input_names:
                _check_real(x[name], f"x[{name!r}]", (), "a scalar, one value per input")
            return dict(x)
        x = _check_real(x, "x", (self.d,), f"one value per input {self.input_names}")
        return x

    def vector(self, x):
        """The checked `x` as a float vector `(d,)`, or a dict's values promoted to their common type
        (kept a dict, so that inputs not differentiated have tangents of their own: symbolic zeros)."""
        if isinstance(x, Mapping):
            values = {name: _float(jnp.asarray(x[name])) for name in self.input_names}
            dtype = jnp.result_type(*values.values())
            return {name: v.astype(dtype) for name, v in values.items()}
        return _float(x)

    def solution(self, z, tables, as_dict: bool):
        """The buffers z as the vector `(n,)`, or a dict `{name: z[i]}` of all n variables."""
        z = self.storage.to_flat(z, tables["storage"])
        return {name: z[i] for i, name in enumerate(self.names)} if as_dict else z


def _check_real(value, name: str, shape: tuple, what: str):
    """`value` as an array of `shape`, real or integer; a clear error otherwise."""
    if not isinstance(value, jax.Array):
        try:
            value = jnp.asarray(value)
        except TypeError as error:
            raise TypeError(f"`{name}` must be an array of shape {shape}, {what}; got {type(value).__name__} ({error}).") from None
    if value.shape != shape:
        batch = " For a batch of inputs, use jax.vmap." if value.shape[-len(shape) :] == shape or not shape else ""
        raise ValueError(f"`{name}` must have shape {shape}, {what}; got shape {value.shape}.{batch}")
    if jnp.issubdtype(value.dtype, jnp.complexfloating):
        raise TypeError(f"`{name}` is complex ({value.dtype}); lagjax programs are real: pass float32 or float64.")
    if not (jnp.issubdtype(value.dtype, jnp.number) or value.dtype == jnp.bool_):
        raise TypeError(f"`{name}` must hold real numbers; got dtype {value.dtype}.")
    return value


def _float(value: jax.Array) -> jax.Array:
    """Integers and booleans as the default float type; float32 and float64 kept."""
    return value if jnp.issubdtype(value.dtype, jnp.floating) else value.astype(jnp.result_type(float))


class StructuredPacking:
    """Inputs and outputs of a structured program's `as_function`: dicts by name (or a flat `z`)."""

    def __init__(self, comp):
        self.comp = comp

    def check(self, x) -> dict:
        return self.comp.layout.check(x, "x", self.comp.input_names)

    def vector(self, x) -> dict:
        """The checked dict promoted to one float type (traced); the sweeps stack it by class."""
        return _layout.promote(x)

    def solution(self, z, tables, as_dict: bool):
        return self.comp.storage.to_dict(z) if as_dict else self.comp.storage.to_flat(z, tables["storage"])


def make(comp, output: str, as_dict: bool | None, params=None) -> Callable:
    """The function behind `Computation.as_function` (see there); jitted, tables passed as arguments.
    With `params` (a pytree of arrays the constraints capture), the function is `(x, params) -> ...`."""
    if output not in OUTPUTS:
        raise ValueError(f"`output` must be 'f' (the objective f(z*(x))) or 'z' (the solved variables z*(x)); got {output!r}.")
    if as_dict not in (None, True, False):
        raise TypeError(f"`as_dict` must be None, True or False; got {as_dict!r}.")
    packing = StructuredPacking(comp) if comp.dicts else Packing(comp)
    parameters = None if params is None else Parameters(comp, params)
    solution = implicit_solution(comp, parameters)
    if comp._df_given:  # the user's gradient as the objective's derivative: on a real dict (a pytree)
        with_df = with_gradient(comp.f, comp.df)
        objective = lambda z, tables: with_df(comp.storage.to_dict(z) if comp.dicts else comp.storage.to_flat(z, tables["storage"]))  # noqa: E731
    else:
        objective = comp.objective

    def evaluate(tables, x, theta):
        z = solution(tables, packing.vector(x), theta)
        if output == "f":
            return objective(z, tables)
        return packing.solution(z, tables, isinstance(x, Mapping) if as_dict is None else as_dict)

    jitted = jax.jit(evaluate)
    tables = comp._tables
    if comp.dicts and not (output == "z" and as_dict is False):
        # A dict program's function converts nothing to or from the flat vector, whose tables hold
        # an index per number (hundreds of MB for large weights). Inside a user's `jax.jit` the
        # tables are constants of the compiled code: 150 s to compile 64 layers of 2048² with them.
        tables = {**tables, "storage": {}}

    if parameters is None:

        def function(x):
            return jitted(tables, packing.check(x), [])

    else:

        def function(x, params):
            return jitted(tables, packing.check(x), parameters.check(params))

    kind = "f(z*(x)), a scalar" if output == "f" else "z*(x), the solved variables"
    given = "a dict {name: array} by input name" if comp.dicts else f"shape ({comp.d},) or a dict {{name: scalar}} by input name"
    function.__doc__ = f"{kind}, for inputs `x` of {given}" + ("." if parameters is None else ", and `params` as declared.")
    function.__name__ = f"lagjax_{output}"
    return function
