"""`fixed_point(F, z0, *args)`: the z with `z = F(z, *args)`, an ordinary JAX function differentiated implicitly.

The derivation (the implicit-function theorem on `G(z, a) = F(z, a) − z = 0`, a = the args):

    F(z*(a), a) = z*(a)  =>  J dz + (∂F/∂a) da = dz  =>  (I − J) dz = (∂F/∂a) da,   J = ∂F/∂z at z*

z is flattened into one vector u (m,), leaf after leaf, so that these are the problems of one cyclic
block of a program (`_cyclic`): the root `u = F(u)` by Newton (`find_root`), the tangents
`(I − J) t = b` (`solve_tangent`) and, transposed, the multipliers `(I − J)ᵀ w = c` (`solve_adjoint`).

The design, and why (as `_function.py`'s `as_function`):

- `z*(a)` is a `jax.custom_jvp` function whose primal is `find_root`, which JAX therefore never
  differentiates. Its JVP rule calls `z*(a)` itself (so a second differentiation goes through the rule
  again), pushes the tangents of the args through F (`b = ∂F/∂a · da`, the args with a tangent only:
  `symbolic_zeros=True`, so an arg not differentiated is never perturbed and no constant zero tangent
  reaches F) and returns `dz = custom_linear_solve(I − J, b)`, `solve` = `solve_tangent`,
  `transpose_solve` = `solve_adjoint`. Forward mode (`jvp`, `jacfwd`) runs the tangent solve; reverse
  mode (`grad`, `jacrev`) transposes the rule, and the transpose of `custom_linear_solve` is its
  `transpose_solve`: one adjoint solve. Higher orders differentiate the rule, and `custom_linear_solve`
  w.r.t. its matrix through the `matvec` `t ↦ t − J t` (never used to solve).
- z does not depend on z0 (the initial guess): z0's tangent is ignored.
- Closures: F is traced once per call (`jax.make_jaxpr`) into a closed jaxpr `(*z_leaves, *arg_leaves)
  -> z_leaves`. Arrays F closes over stay constants of it; tracers it closes over (the variables of an
  enclosing `jit`, `grad` or `vmap`) are hoisted into explicit trailing args, so that derivatives w.r.t.
  closed-over values are right and the `custom_jvp` rule closes over no tracer.
- Failures give NaN, never a silently wrong number: a root not found (not converged, I − J singular
  at the root, non-finite values) makes z NaN, and a failed tangent or adjoint solve makes its
  derivative NaN; an ill-conditioned root (`Status.ILL_CONDITIONED`: a double root, say) is kept,
  flagged in its `Info`. `return_info=True` returns the root finder's `Info`.

Interface with `lagjax.trace` (`_trace.py`), which turns a fixed point inside a traced function into a
cyclic constraint of the program:

- `fixed_point_p = jax.extend.core.Primitive("lagjax_fixed_point")`, `multiple_results = True`.
  Operands `(*z0_leaves, *arg_leaves)`, outputs the z leaves (shapes and dtypes of z0's leaves).
  Params: `jaxpr`, a `jax.extend.core.ClosedJaxpr` of `(*z_leaves, *arg_leaves) -> z_leaves` (F
  flattened; its consts are concrete arrays, never tracers); `num_z`, the number of z leaves; `solver`,
  the `Solver` (hashable). `arg_leaves` are the leaves of `args` followed by the tracers F closed over.
- `fixed_point` binds `fixed_point_p` only while `tracing()` is entered (a `contextvars` flag: `trace`
  enters it around its `jax.make_jaxpr`; `is_tracing()` reads it); otherwise it takes the `custom_jvp`
  path. The primitive's impl and its lowering evaluate that path (so `jax.core.eval_jaxpr` of a traced
  jaxpr, jitted or not, gives the fixed point), and its JVP and batching rules are the path's own (so a
  `jax.grad` or `jax.vmap` inside the traced function still works, as ordinary JAX code).
- `jax.make_jaxpr` (and `jax.jit`) cache traces by function identity, whatever the context (jax 0.10):
  `trace` must call `make_jaxpr` on a fresh wrapper (`lambda *a: fn(*a)`) inside `tracing()`. A function
  the user jitted and called before, outside it, keeps its cached jaxpr: its fixed points stay the
  `custom_jvp` path there (right, but not a cyclic constraint). Conversely, a trace cached while tracing
  holds the primitive, which evaluates, differentiates and batches like the ordinary path.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import ClosedJaxpr, Primitive, jaxpr_as_fun
from jax.interpreters import ad, batching, mlir

from lagjax import _cyclic
from lagjax._cyclic import Info, Solver

# ---------------------------------------------------------------------------------------------------
# The public function.
# ---------------------------------------------------------------------------------------------------


def fixed_point(F: Callable, z0, *args, solver: Solver | None = None, return_info: bool = False):
    """The fixed point `z = F(z, *args)`, differentiable in `args` by the implicit-function theorem.

    The root is found by Newton's method on `F(z, *args) − z` (the solver of lagjax's cyclic blocks),
    and every JAX transformation works: `jit`, `vmap`, `jvp`, `grad`, `jacfwd`, `jacrev`, `hessian`,
    w.r.t. any subset of `args` (or arrays F closes over). Derivatives solve `(I − ∂F/∂z) dz = ∂F/∂args ·
    dargs` (forward) or its transpose (reverse) at the root; the iteration is never differentiated.

    Args:
      F: `F(z, *args) -> z`, returning a pytree of z0's structure, shapes and dtypes.
      z0: the initial guess: a pytree of real floating arrays of one dtype (any shapes, m numbers in all, m >= 1).
        The result does not depend on it (its tangent is ignored) as long as Newton reaches the root.
      *args: pytrees of arrays passed to F after z; float leaves are differentiable, integer and
        boolean leaves are constants.
      solver: a `lagjax.Solver` (tolerances, iteration limits; `dense_max`: up to that many numbers
        in z the Jacobian is formed and factored, beyond it the solves are matrix-free GMRES).
        None: `Solver()`.
      return_info: also return the root finder's `Info` (status, residual `max|F(z) − z|`, Newton steps).

    Returns:
      z, a pytree like z0; `(z, info)` with `return_info=True`. If the root finder fails (`info.status`
      neither `Status.SUCCESS` nor `ILL_CONDITIONED`: not converged, `I − ∂F/∂z` singular at the root,
      non-finite values), z is NaN;
      a failed linear solve in a derivative makes that derivative NaN.

    Raises:
      TypeError: F not callable, z0 not real floating or of mixed dtypes, an arg not an array or complex,
        `solver` not a `Solver`.
      ValueError: z0 empty, or F's output not of z0's structure, shapes and dtypes.
    """
    solver = _check_solver(solver)
    if return_info not in (True, False):
        raise TypeError(f"`return_info` must be True or False, got {return_info!r}.")
    if not callable(F):
        raise TypeError(f"`F` must be a function F(z, *args) -> z, got {type(F).__name__}.")
    z_leaves, z_tree, z_paths = _leaves(z0, "z0", _check_z0_leaf)
    if sum(math.prod(v.shape) for v in z_leaves) == 0:
        raise ValueError("`z0` must hold at least one number (the initial guess of z), got no elements.")
    mixed = {v.dtype: path for v, path in zip(z_leaves, z_paths)}
    if len(mixed) > 1:
        raise TypeError(
            f"`z0`'s leaves must share one float dtype (z is solved as one vector, to that dtype's tolerance); got "
            f"{', '.join(f'{dtype} (z0{path})' for dtype, path in mixed.items())}. Cast them to one dtype."
        )
    arg_leaves, arg_tree, _ = _leaves(args, "args", _check_arg_leaf)
    jaxpr, hoisted = flat_jaxpr(F, (z_tree, z_paths, z_leaves), (arg_tree, arg_leaves))
    operands = (*z_leaves, *arg_leaves, *hoisted)
    if is_tracing():
        if return_info:
            raise ValueError(
                "`return_info=True` is not available inside `lagjax.trace`: the fixed point is a cyclic block of the "
                "traced program, whose solves the Computation reports (`Computation.status`). Drop return_info there."
            )
        z = fixed_point_p.bind(*operands, jaxpr=jaxpr, num_z=len(z_leaves), solver=solver)
        return jax.tree_util.tree_unflatten(z_tree, z)
    # F was traced anew: nothing to reuse (`compiled`'s cache serves the primitive's impl, called again
    # with the same params), and no jaxpr with F's captured arrays is kept past the call
    z, info = jax.jit(functools.partial(solve_leaves, jaxpr, len(z_leaves), solver))(operands)
    z = jax.tree_util.tree_unflatten(z_tree, z)
    return (z, info) if return_info else z


# ---------------------------------------------------------------------------------------------------
# The context `lagjax.trace` enters: inside it, fixed_point binds its primitive.
# ---------------------------------------------------------------------------------------------------

_TRACING = contextvars.ContextVar("lagjax_fixed_point_tracing", default=False)


@contextlib.contextmanager
def tracing():
    """Within this context `fixed_point` binds `fixed_point_p` (for `lagjax.trace`'s `jax.make_jaxpr`)."""
    token = _TRACING.set(True)
    try:
        yield
    finally:
        _TRACING.reset(token)


def is_tracing() -> bool:
    """Whether `tracing()` is entered (in this thread or task)."""
    return _TRACING.get()


# ---------------------------------------------------------------------------------------------------
# F flattened: a closed jaxpr (*z_leaves, *arg_leaves) -> z_leaves, checked against z0.
# ---------------------------------------------------------------------------------------------------


def flat_jaxpr(F: Callable, z: tuple, args: tuple) -> tuple[ClosedJaxpr, list]:
    """F as a closed jaxpr `(*z_leaves, *arg_leaves, *hoisted) -> z_leaves`, and the hoisted tracers.

    `z = (treedef, paths, leaves)`, `args = (treedef, leaves)`. F's output is checked here (at the call):
    z0's structure, each leaf's shape and dtype (a weakly typed output, e.g. a Python float, is cast).
    Tracers F closes over become the trailing inputs `hoisted` (returned, to be passed as operands);
    concrete arrays stay constants of the jaxpr.
    """
    (z_tree, z_paths, z_leaves), (arg_tree, arg_leaves) = z, args
    num_z = len(z_leaves)

    def F_flat(*leaves):
        out = F(jax.tree_util.tree_unflatten(z_tree, leaves[:num_z]), *jax.tree_util.tree_unflatten(arg_tree, leaves[num_z:]))
        return _check_output(out, z_tree, z_paths, z_leaves)

    closed = jax.make_jaxpr(F_flat)(*z_leaves, *arg_leaves)
    traced = [isinstance(c, jax.core.Tracer) for c in closed.consts]
    if not any(traced):
        return closed, []
    positions = [i for i, t in enumerate(traced) if t]
    hoisted = [closed.consts[i] for i in positions]

    def F_hoisted(*leaves):  # the traced constants replaced by the trailing inputs
        n = len(leaves) - len(hoisted)
        return jax.core.eval_jaxpr(closed.jaxpr, _with(closed.consts, positions, leaves[n:]), *leaves[:n])

    return jax.make_jaxpr(F_hoisted)(*z_leaves, *arg_leaves, *hoisted), hoisted


def _check_output(out, z_tree, z_paths, z_leaves) -> list:
    """F's output leaves, checked against z0's structure, shapes and dtypes (weak types cast)."""
    out_leaves, out_tree = jax.tree_util.tree_flatten(out)
    if out_tree != z_tree:
        raise ValueError(f"`F` must return a pytree of z0's structure {z_tree}, got {out_tree}.")
    checked = []
    for path, value, like in zip(z_paths, out_leaves, z_leaves):
        value = jnp.asarray(value)
        if value.shape != like.shape:
            raise ValueError(f"`F` must return z0's shapes: for z0{path} of shape {like.shape}, F returned shape {value.shape}.")
        if value.dtype != like.dtype:
            if not (jax.typeof(value).weak_type and jnp.issubdtype(value.dtype, jnp.floating)):
                raise ValueError(
                    f"`F` must return z0's dtypes: for z0{path} of dtype {like.dtype}, F returned {value.dtype}. "
                    f"Cast F's output (`.astype(z.dtype)`) or pass z0 in {value.dtype}."
                )
            value = value.astype(like.dtype)
        checked.append(value)
    return checked


# ---------------------------------------------------------------------------------------------------
# The solve: z flattened into u (m,), Newton forward, the implicit-function theorem for derivatives.
# ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def compiled(jaxpr: ClosedJaxpr, num_z: int, solver: Solver) -> Callable:
    """`solve_leaves` jitted for one flat F: an eager call runs one compiled program, not the root finder's
    loops op by op. Keyed on the jaxpr's identity: the primitive's impl, evaluated again with the same
    params, reuses it. (`fixed_point` traces F anew at every call and compiles without it: jit the caller.)
    """
    return jax.jit(functools.partial(solve_leaves, jaxpr, num_z, solver))


def solve_leaves(jaxpr: ClosedJaxpr, num_z: int, solver: Solver, operands: Sequence) -> tuple[list, Info]:
    """The z leaves of the fixed point of the flat F (`jaxpr`), and the root finder's `Info`.

    `operands = (*z0_leaves, *arg_leaves)`; the solve runs in the dtype of the z0 leaves.
    """
    z0, args = list(operands[:num_z]), list(operands[num_z:])
    layout = Layout(z0)
    F_flat = jaxpr_as_fun(jaxpr)
    u, info = implicit_root(lambda u, a: layout.flatten(F_flat(*layout.unflatten(u), *a)), solver)(layout.flatten(z0), args)
    return layout.unflatten(u), info


class Layout:
    """The z leaves as one vector u (m,) in their (one) dtype, leaf after leaf (C order), and back."""

    def __init__(self, leaves: Sequence):
        self.shapes = [tuple(v.shape) for v in leaves]
        self.dtypes = [v.dtype for v in leaves]
        self.dtype = jnp.result_type(*self.dtypes)
        self.offsets = np.cumsum([math.prod(s) for s in self.shapes])[:-1].tolist()

    def flatten(self, leaves) -> jax.Array:
        """(m,) from the leaves, cast to the solve's dtype."""
        parts = [jnp.ravel(v).astype(self.dtype) for v in leaves]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts)

    def unflatten(self, u: jax.Array) -> list:
        """The leaves (their shapes and dtypes) from u (m,)."""
        parts = jnp.split(u, self.offsets) if self.offsets else [u]
        return [p.reshape(s).astype(d) for p, s, d in zip(parts, self.shapes, self.dtypes)]


def implicit_root(F: Callable, solver: Solver) -> Callable:
    """`root(u0, args) -> (u, info)`, u = F(u, args) (F: (m,), list of arrays -> (m,)), as a `custom_jvp`.

    F must close over no tracer (`flat_jaxpr` hoists them into args). u is NaN where the root finder
    failed; `info` has zero tangents.
    """

    @jax.custom_jvp
    def root(u0, args):
        u, info = _cyclic.find_root(lambda u: F(u, args), u0, solver)
        return _nan_unless_solved(u, info), info

    # (I − J) du = (∂F/∂a) da at the root, for the args a with a tangent (`dargs` symbolic zeros elsewhere).
    def root_jvp(primals, tangents):
        (u0, args), (_, dargs) = primals, tangents
        u, info = root(u0, args)
        zeros = (_zero(u), jax.tree.map(_zero, info))
        active = [i for i, t in enumerate(dargs) if not _is_zero(t)]
        if not active:
            return (u, info), zeros
        b = jax.jvp(lambda *a: F(u, _with(args, active, a)), [args[i] for i in active], [dargs[i] for i in active])[1]
        at_root = lambda v: F(v, args)  # noqa: E731

        def matvec(t):  # (I − J) t, for JAX's derivative of the solve w.r.t. its matrix
            return t - jax.jvp(at_root, (u,), (t,))[1]

        def solve(_, rhs):  # (I − J) t = rhs
            t, info = _cyclic.solve_tangent(at_root, u, rhs, solver)
            return _nan_unless_solved(t, info)

        def transpose_solve(_, rhs):  # (I − J)ᵀ w = rhs
            w, info = _cyclic.solve_adjoint(at_root, u, rhs, solver)
            return _nan_unless_solved(w, info)

        return (u, info), (lax.custom_linear_solve(matvec, b, solve, transpose_solve), zeros[1])

    root.defjvp(root_jvp, symbolic_zeros=True)
    return root


def _with(values: list, positions: list, replacements) -> list:
    out = list(values)
    for i, v in zip(positions, replacements):
        out[i] = v
    return out


def _nan_unless_solved(x: jax.Array, info: Info) -> jax.Array:
    return jnp.where(_cyclic.usable(info.status), x, jnp.nan)  # an ill-conditioned root is kept, flagged


def _zero(value):
    return SymbolicZero(jax.typeof(value).to_tangent_aval())


def _is_zero(tangent) -> bool:
    """A symbolic zero, or the float0 tangent of an integer or boolean arg."""
    return isinstance(tangent, SymbolicZero) or getattr(tangent, "dtype", None) == jax.dtypes.float0


# ---------------------------------------------------------------------------------------------------
# The primitive `lagjax.trace` reads: impl, abstract evaluation, lowering, JVP and batching rules, each
# the custom_jvp path's own.
# ---------------------------------------------------------------------------------------------------

fixed_point_p = Primitive("lagjax_fixed_point")
fixed_point_p.multiple_results = True


def _impl(*operands, jaxpr, num_z, solver):
    operands = [jnp.asarray(x, getattr(x, "dtype", None)) for x in operands]  # literals of a jaxpr: typed Python scalars
    return compiled(jaxpr, num_z, solver)(operands)[0]


def _abstract_eval(*avals, jaxpr, num_z, solver):
    return [jax.core.ShapedArray(a.shape, a.dtype) for a in avals[:num_z]]


def _jvp(primals, tangents, *, jaxpr, num_z, solver):
    active = [i for i, t in enumerate(tangents) if type(t) is not ad.Zero]
    evaluate = lambda *a: _impl(*_with(primals, active, a), jaxpr=jaxpr, num_z=num_z, solver=solver)  # noqa: E731
    return jax.jvp(evaluate, [primals[i] for i in active], [tangents[i] for i in active])


def _batch(operands, dims, *, jaxpr, num_z, solver):
    evaluate = lambda *ops: _impl(*ops, jaxpr=jaxpr, num_z=num_z, solver=solver)  # noqa: E731
    return jax.vmap(evaluate, in_axes=list(dims))(*operands), [0] * num_z  # an unbatched operand's dim is None


fixed_point_p.def_impl(_impl)
fixed_point_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(fixed_point_p, mlir.lower_fun(_impl, multiple_results=True))
ad.primitive_jvps[fixed_point_p] = _jvp
batching.primitive_batchers[fixed_point_p] = _batch


# ---------------------------------------------------------------------------------------------------
# Checks at the call.
# ---------------------------------------------------------------------------------------------------


def _check_solver(solver) -> Solver:
    if solver is None:
        return Solver()
    if not isinstance(solver, Solver):
        raise TypeError(f"`solver` must be a lagjax.Solver(...) or None, got {type(solver).__name__}.")
    return _cyclic.check_solver(solver)


def _leaves(tree, name: str, check: Callable) -> tuple[list, object, list]:
    """The checked array leaves of `tree`, its treedef, and each leaf's path (`['a']`, `[0]`)."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [jax.tree_util.keystr(path) for path, _ in with_paths]
    return [check(value, f"{name}{path}") for (_, value), path in zip(with_paths, paths)], treedef, paths


def _as_array(value, name: str) -> jax.Array:
    if isinstance(value, jax.Array):
        return value
    try:
        return jnp.asarray(value)
    except TypeError:
        raise TypeError(
            f"`{name}` must be an array (pytrees of arrays only), got {type(value).__name__}. Close over other values in F instead."
        ) from None


def _check_z0_leaf(value, name: str) -> jax.Array:
    value = _as_array(value, name)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        kind = "complex" if jnp.issubdtype(value.dtype, jnp.complexfloating) else "not floating"
        raise TypeError(
            f"`{name}` must be real floating (float32 or float64): z is solved for and differentiated; got {value.dtype} ({kind}). "
            "Pass e.g. jnp.asarray(z0, float)."
        )
    return value


def _check_arg_leaf(value, name: str) -> jax.Array:
    value = _as_array(value, name)
    if jnp.issubdtype(value.dtype, jnp.complexfloating):
        raise TypeError(f"`{name}` is complex ({value.dtype}); fixed_point is over real numbers: pass float32 or float64.")
    if not (jnp.issubdtype(value.dtype, jnp.number) or value.dtype == jnp.bool_):
        raise TypeError(f"`{name}` must hold numbers; got dtype {value.dtype}.")
    return value
