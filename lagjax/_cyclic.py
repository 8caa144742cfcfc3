"""Solvers for one cyclic block: the root finder forward, the linear solves of the implicit function backward.

The engine flattens the variables of one strongly connected component into a vector u of size m and
hands over F with u = F(u) at the solution (every other variable closed over). Three problems follow:

- forward, the block's constraints `G(u) = F(u) − u = 0`: Newton's method (`find_root`);
- the multipliers, `(I − J)ᵀ w = c` with `J = ∂F/∂u` at the solution (`solve_adjoint`);
- the tangents, `(I − J) t = b` (`solve_tangent`).

Blocks with `m <= solver.dense_max` form the dense m × m Jacobian (`jax.jacfwd`) and factor it; larger
blocks are matrix-free: restarted GMRES on Jacobian-vector products (`jax.jvp`) or vector-Jacobian
products (`jax.vjp`). Everything is jittable and vmappable; m is static.

Failures are reported, never hidden: every solve returns an `Info` whose `status` is one of the `Status`
codes below, with the residual reached. GMRES is our own (`_gmres`; `jax.scipy.sparse.linalg.gmres`
compiles slowly, reports nothing and stagnates silently when restarted, jax-ml/jax#15837): its running
estimate of the residual only ends a restart cycle early; the true residual `b − A x` is recomputed
after every cycle and checked against the tolerance.

Tolerances (`rtol`, `atol` of `Solver`, both measured in the max-norm):

- root finding stops when `max|F(u) − u| <= atol + rtol · max|u|`; dense blocks also require the
  Newton step there, `max|δ|`, to be within that bound, and their condition (`Info.condition`) to be at
  most `Solver.max_condition`, or report `ILL_CONDITIONED` (values kept: `usable`);
- a matrix-free linear solve succeeds when `max|c − A w| <= rtol · max|c|` (scale-free: the system is
  linear; `atol` plays no part, so tiny right-hand sides are still solved to relative accuracy);
- a dense linear solve (LU) succeeds when its backward error is within rtol,
  `max|c − A w| <= rtol · (max|c| + ‖A‖∞ max|w|)`, and `I − J` is not numerically singular: its
  reciprocal condition number (1-norm) is at least m · eps; past `Solver.max_condition` it is
  `ILL_CONDITIONED` (values kept).

The dense linear solves can reuse the root's factorisation (`find_root(..., return_factors=True)`,
`Factors`): a gradient then forms and factors I − J once per Newton step, never again after the root.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular


class Status(enum.IntEnum):
    """Outcome of a block solve; `message(status)` gives the human message."""

    SUCCESS = 0
    NOT_CONVERGED = 1
    SINGULAR = 2
    NONFINITE = 3
    ILL_CONDITIONED = 4


SUCCESS, NOT_CONVERGED, SINGULAR, NONFINITE, ILL_CONDITIONED = (
    Status.SUCCESS,
    Status.NOT_CONVERGED,
    Status.SINGULAR,
    Status.NONFINITE,
    Status.ILL_CONDITIONED,
)

MESSAGES = {
    Status.SUCCESS: "converged",
    Status.NOT_CONVERGED: (
        "the root finder reached its iteration limit (`Solver.max_steps`) without meeting the tolerance; "
        "the cycle may have no fixed point, or need more steps or a better initial guess"
    ),
    Status.SINGULAR: (
        "the block's Jacobian I - ∂F/∂u is singular or too ill-conditioned (a variable of the cycle is not "
        "determined by its equations), or the matrix-free linear solve did not reach its tolerance within "
        "`Solver.krylov_max` iterations"
    ),
    Status.NONFINITE: "NaN or inf in the iterate, F(u), the Jacobian, or the right-hand side",
    Status.ILL_CONDITIONED: (
        "the values are kept but are inaccurate: the block's Jacobian I - ∂F/∂u is ill-conditioned at the "
        "solution (`info.condition` above `Solver.max_condition`: a multiple root such as y = y - y² at 0, or "
        "a variable barely determined by its equations), or Newton's steps stopped shrinking before they met "
        "the tolerance. The root is then only accurate to about `info.condition` × (`info.residual` + "
        "rounding of F(u) - u) in the max-norm (a small multiple of it at a multiple root, up to a factor m "
        "between norms), and the multipliers or tangents to a relative error of about `info.condition` × "
        "machine epsilon, more where the root's own error changes ∂F/∂u"
    ),
}


def usable(status) -> jax.Array:
    """Whether a block's values can be used: a bool array, True for SUCCESS and ILL_CONDITIONED.

    ILL_CONDITIONED values are kept (less accurate, see `MESSAGES`); every other code means no value.
    """
    status = jnp.asarray(status)
    return (status == SUCCESS) | (status == ILL_CONDITIONED)


def message(status) -> str:
    """The human message of a status code (a `Status`, an int, or a concrete integer array of size 1)."""
    code = int(np.asarray(status).reshape(()))
    if code not in MESSAGES:
        raise ValueError(f"`status` must be one of the codes {[int(s) for s in Status]}, got {code}.")
    return MESSAGES[Status(code)]


class Info(NamedTuple):
    """What a block solve reached: scalar arrays (batched under `jax.vmap`).

    Attributes:
      status: int32, a `Status` code.
      residual: the max-norm of `F(u) − u` at the returned u (`find_root`), or of the linear residual
        (`solve_adjoint`, `solve_tangent`); in the dtype of the solve.
      steps: int32, Newton steps (`find_root`), GMRES restart cycles (matrix-free linear solves), or 0
        (a dense linear solve: one LU factorisation).
      condition: dense blocks, the estimated condition of the block at the returned point,
        `max(1, ‖I − J‖₁) · ‖(I − J)⁻¹‖₁` (see `find_root`; inf where I − J is singular in floating
        point, NaN where it is not finite); NaN on matrix-free blocks (not estimated: there the adjoint
        or tangent solve's status reports a singular operator). In the dtype of the solve.
    """

    status: jax.Array
    residual: jax.Array
    steps: jax.Array
    condition: jax.Array


class Solver(NamedTuple):
    """Options of the block solvers. Static: close over it or pass it as a static argument of `jax.jit`.

    Attributes:
      rtol: relative tolerance, max-norm. None: 1e-10 for float64, 1e-5 for float32 (about 10⁶ and 10²
        machine epsilons: reachable by Newton despite rounding in F, tight enough that the gradients
        built on the solution keep ~8 and ~4 digits), `sqrt(eps)` for other float dtypes.
      atol: absolute tolerance of the root finder on `max|F(u) − u|` (see the module docstring);
        None: the same value as `rtol`'s default, so a solution near zero is judged on a unit scale.
      max_steps: Newton steps allowed before `NOT_CONVERGED`. Newton converges in a handful of steps
        once close; 50 leaves room for the damped steps of a poor start.
      dense_max: blocks with m <= dense_max form the dense Jacobian (m JVPs) and factor it (O(m³)),
        which also certifies that the block determines its variables (condition estimate); larger
        blocks are matrix-free. 128: on CPU (2 cores) both cost about 1 ms per solve at m = 128 on
        sparse blocks; at m = 256 dense is ~3x slower, at 512 ~10x. 0: always matrix-free.
      krylov_max: Krylov iterations (Jacobian-vector products) allowed per linear solve, matrix-free.
      krylov_restart: the GMRES Krylov dimension between restarts (memory: krylov_restart · m values).
        20: iteration j of a cycle orthogonalises against j basis vectors, so long cycles cost
        O(restart² · m) besides the products; on sparse blocks (an MDP, m = 10³–10⁴, CPU) 20 ran faster
        than 50 and used less memory, the restarts costing few extra iterations. Raise it for
        ill-conditioned blocks that stagnate between restarts.
      max_condition: dense blocks, the condition estimate (`Info.condition`) above which a root or a
        linear solve is reported `ILL_CONDITIONED` (values kept). None: `1 / sqrt(eps)` of the dtype
        (6.7e7 for float64, 2.9e3 for float32): past it the root is only known to about condition ×
        residual (larger than the tolerance unless the residual is far below it) and the multipliers and
        tangents to about condition × eps relative, i.e. fewer than half the digits of the dtype.
        `float("inf")` never flags on the estimate (the step test of `find_root` still does). >= 1.
    """

    rtol: float | None = None
    atol: float | None = None
    max_steps: int = 50
    dense_max: int = 128
    krylov_max: int = 500
    krylov_restart: int = 20
    max_condition: float | None = None


_DEFAULT_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}

# Damped Newton: halve the step until the residual's 2-norm decreases by the Armijo factor (1 − 1e-4 α).
_MAX_HALVINGS = 8
# Newton–Krylov solves each Newton system only to this fraction of the current residual.
_FORCING = 1e-3
# Hager's estimator of ‖A⁻¹‖₁: power steps (LAPACK's gecon takes up to 5), then the ramp.
_HAGER_STEPS = 4
# Dense linear solves given factors: at most this many LU passes (the solve and its refinements).
_MAX_PASSES = 4
# A GMRES restart cycle that does not reduce the residual's 2-norm by 0.1 % is taken as stagnation.
_STAGNATION = 0.999


def check_solver(solver: Solver) -> Solver:
    """Validate a `Solver`'s fields (Python values: it is static); return it, or raise naming the field."""
    if not isinstance(solver, Solver):
        raise TypeError(f"`solver` must be a lagjax Solver(...), got {type(solver).__name__}.")
    for name in ("rtol", "atol"):
        value = getattr(solver, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"`Solver.{name}` must be a Python float or None (a static option), got {value!r}.")
        ok = 0 < value < 1 if name == "rtol" else 0 <= value < np.inf
        if not ok:
            bound = "in (0, 1)" if name == "rtol" else "finite and >= 0"
            raise ValueError(f"`Solver.{name}` must be {bound}, or None for the dtype's default; got {value!r}.")
    for name, lowest in (("max_steps", 0), ("dense_max", 0), ("krylov_max", 1), ("krylov_restart", 1)):
        value = getattr(solver, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(
                f"`Solver.{name}` must be a Python int (a static option: close over the Solver or mark it "
                f"static in jax.jit), got {value!r}."
            )
        if value < lowest:
            raise ValueError(f"`Solver.{name}` must be >= {lowest}, got {value}.")
    value = solver.max_condition
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"`Solver.max_condition` must be a Python float or None (a static option), got {value!r}.")
        if not value >= 1:  # NaN refused too; inf allowed (never flag on the estimate)
            raise ValueError(f"`Solver.max_condition` must be >= 1 (a condition number is), or None; got {value!r}.")
    return solver


def tolerances(solver: Solver, dtype) -> tuple[float, float]:
    """`(rtol, atol)` of `solver` for `dtype`, the defaults filled in."""
    dtype = np.dtype(dtype)
    default = _DEFAULT_RTOL.get(dtype, float(np.sqrt(np.finfo(dtype).eps)))
    rtol = default if solver.rtol is None else float(solver.rtol)
    atol = default if solver.atol is None else float(solver.atol)
    return rtol, atol


def condition_limit(solver: Solver, dtype) -> float:
    """`solver.max_condition` for `dtype`, the default `1 / sqrt(eps)` filled in."""
    if solver.max_condition is not None:
        return float(solver.max_condition)
    return float(1 / np.sqrt(np.finfo(np.dtype(dtype)).eps))


# ---------------------------------------------------------------------------------------------------
# Forward: the block's constraints G(u) = F(u) − u = 0, by Newton's method.
#
# G'(u) = J − I, so the Newton step δ solves (I − J) δ = G(u) and u ← u + α δ, with α halved until
# ‖G‖₂ decreases (α = 1 near the solution: quadratic convergence). Dense blocks factor I − J; large
# blocks solve the step by GMRES on v ↦ v − J v (`jax.linearize`: one linearisation per step).
# ---------------------------------------------------------------------------------------------------


class Factors(NamedTuple):
    """The LU factorisation of `I − J` at a block's last Newton point, for the linear solves that follow.

    Returned by `find_root(..., return_factors=True)` and accepted by `solve_adjoint` and
    `solve_tangent` (`factors=`), which then form no Jacobian and factor nothing. A pytree of arrays:
    batched under `jax.vmap`, carried by `lax.scan`, returned by the branches of `lax.switch`.

    Dense blocks: `lu` (m, m) and `permutation` (m,) are the LU factors of `I − J`, `(I − J)[permutation] = L U`, at the last point where `find_root`
    evaluated J (the root before its final polishing step, so J differs from J at the returned root
    by about the size of that step: the solves refine against the exact product at u), `norm1` and
    `norm_inf` are `‖I − J‖₁`, `‖I − J‖∞` there, `inverse_norm1` Hager's estimate of `‖(I − J)⁻¹‖₁`.
    Matrix-free blocks: a placeholder of fixed structure, `lu` of shape (0, 0), `permutation` (0,), the
    norms NaN; the solves ignore it (GMRES on the exact products).
    """

    lu: jax.Array
    permutation: jax.Array
    norm1: jax.Array
    norm_inf: jax.Array
    inverse_norm1: jax.Array


def find_root(F: Callable, u0: jax.Array, solver: Solver = Solver(), *, return_factors: bool = False):
    """Solve u = F(u) for one cyclic block by (damped) Newton's method.

    Args:
      F: (m,) -> (m,), the block's definitions (other variables closed over); its output is cast to u0's dtype.
      u0: (m,) the initial guess; its float dtype is the dtype of the solve.
      solver: the options (`Solver`).
      return_factors: also return the `Factors` of I − J (dense blocks: the LU at the last Newton
        point; matrix-free: a placeholder), for `solve_adjoint` and `solve_tangent` to reuse.

    Returns:
      `(u, info)`, or `(u, info, factors)` with `return_factors`: u (m,), the last iterate;
      `info.residual = max|F(u) − u|` at the last point checked, `info.steps` the Newton steps taken,
      `info.condition` (dense) `max(1, ‖I − J‖₁) · ‖(I − J)⁻¹‖₁` there: the amplification of an error in
      the block's equations into its variables, never below the condition number κ₁(I − J), and unlike
      it not 1 for every 1 × 1 block (a double root y = y − y² has I − J = 2y → 0). NaN matrix-free.

      The tolerance is `tol = atol + rtol · max|u|`. Dense blocks converge when the residual
      `max|F(u) − u|` and the Newton step at u, `max|δ|` with `(I − J) δ = F(u) − u` (from the LU already
      at hand), are both <= tol: at a regular root the step test costs at most one more step (quadratic
      convergence); at a multiple root Newton only converges linearly and the step is the honest
      measure of the remaining error. A SUCCESS root then gets that step (polishing, free); an
      ILL_CONDITIONED one is returned where its residual, condition and factors were evaluated.
      `info.status`:
        SUCCESS: converged, and (dense) `info.condition <= Solver.max_condition`;
        ILL_CONDITIONED (dense; values kept): the residual test is met but `info.condition` exceeds
          `max_condition`, or the step test could not be met: the steps stopped shrinking while still
          above both the tolerance and the rounding floor (‖(I − J)⁻¹‖₁ times the rounding of F(u) − u),
          or `max_steps` ran out. The root is then accurate to about condition × residual (`MESSAGES`);
        NOT_CONVERGED: `solver.max_steps` steps without meeting the residual test;
        SINGULAR: dense blocks, I − J at the returned root has a reciprocal condition number below
          m · eps, or a Newton step was not finite (I − J singular at an iterate); matrix-free blocks,
          out of steps with the last Newton system unsolved. The conditioning of a matrix-free block
          at its root is not estimated here (SUCCESS on the residual test alone, condition NaN): the
          adjoint or tangent solve that follows reports it;
        NONFINITE: NaN or inf in u, F(u) or (dense) the Jacobian.
    """
    G, u0 = _check_block(F, u0, "u0")
    solver = check_solver(solver)
    m, dtype = u0.shape[0], u0.dtype
    rtol, atol = tolerances(solver, dtype)
    eps = float(np.finfo(dtype).eps)
    dense = m <= solver.dense_max
    eye = jnp.eye(m, dtype=dtype)
    inf = jnp.full((), jnp.inf, dtype)

    def evaluate(u):
        """G(u), and I − J at u LU-factored with its 1- and ∞-norms (dense; placeholders when matrix-free)."""
        if not dense:
            return G(u), (jnp.zeros((), dtype), jnp.zeros((), jnp.int32)), jnp.zeros((), dtype)
        g, J = G(u), jax.jacfwd(F)(u).astype(dtype)
        A = eye - J
        return g, _lu_factor(A), (_norm1(A), _norm_inf(A))  # the norms, not A: an m × m carry less (compiles faster)

    def newton_step(u, g, lu):
        """δ with (I − J) δ = g, and whether the linear solve succeeded (matrix-free: GMRES)."""
        _, jvp = jax.linearize(G, u)  # the linearisation of G is v ↦ J v − v = −(I − J) v
        target = jnp.maximum(_FORCING * _max_norm(g), 0.1 * atol)
        delta, residual, _ = _gmres(lambda v: -jvp(v), g, target, solver)
        return delta, residual <= target

    def status_of(u, g, norms, delta, steps, solved, previous):
        """RUNNING (-1) or a `Status` code at the iterate u after `steps` steps, the most severe first.

        Dense: `delta` is the Newton step at u, `previous` the size of the one that led to u."""
        finite = _all_finite(u) & _all_finite(g) & (jnp.isfinite(norms[0]) if dense else True)  # ‖I − J‖₁: J finite
        tol = atol + rtol * _max_norm(u)
        converged = _max_norm(g) <= tol
        out_of_steps = steps >= solver.max_steps
        status = jnp.where(out_of_steps, jnp.int32(NOT_CONVERGED), jnp.int32(-1))
        if dense:  # a non-finite Newton step with a finite I − J: singular, stop now
            size = _max_norm(delta)
            status = jnp.where(_all_finite(delta), status, jnp.int32(SINGULAR))
            # the residual is small but the step is not: go on while the steps shrink (a regular root
            # squares them, a multiple root shrinks them by a constant factor); once they stop, or out
            # of steps, the root is as good as it gets: ILL_CONDITIONED, unless that step is rounding
            # (decided after the loop, where ‖(I − J)⁻¹‖ is estimated)
            stalled = ~(size < previous) | out_of_steps
            status = jnp.where(converged & stalled, jnp.int32(ILL_CONDITIONED), status)
            converged = converged & (size <= tol)
        else:  # Newton–Krylov tolerates inexact steps; out of steps after a failed one: singular
            status = jnp.where(solved | (status != NOT_CONVERGED), status, jnp.int32(SINGULAR))
        status = jnp.where(converged, jnp.int32(SUCCESS), status)
        return jnp.where(finite, status, jnp.int32(NONFINITE))

    def step(u, g, lu, delta):
        delta, solved = newton_step(u, g, lu)
        # an inexact Krylov step is still tried
        return jnp.where(_all_finite(delta), _damped(G, u, g, delta), u), solved

    # One evaluation site: evaluate at u, stop there or take a step (evaluated in the next pass).
    def body(state):
        u, steps, solved, previous, _ = state
        g, lu, norms = evaluate(u)
        delta = _lu_solve(lu, g) if dense else jnp.zeros_like(u)  # dense: the step, computed once
        status = status_of(u, g, norms, delta, steps, solved, previous)
        running = status < 0
        if dense:  # no lax.cond: the line search does not start when the loop stops here
            u = _damped(G, u, g, delta, running)
        else:  # a GMRES solve is not started either
            u, solved = lax.cond(running, step, lambda u, g, lu, delta: (u, solved), u, g, lu, delta)
        size = jnp.where(running, _max_norm(delta), previous)
        return u, steps + running.astype(jnp.int32), solved, size, (status, g, lu, norms, delta)

    _, lu0, norms0 = jax.eval_shape(evaluate, u0)
    last0 = (jnp.int32(-1), jnp.zeros_like(u0), _zeros_like(lu0), _zeros_like(norms0), jnp.zeros_like(u0))
    state0 = (u0, jnp.int32(0), jnp.bool_(True), inf, last0)
    u, steps, _, _, (status, g, lu, norms, delta) = lax.while_loop(lambda state: state[-1][0] < 0, body, state0)
    residual = _max_norm(g)
    if not dense:
        condition = jnp.full((), jnp.nan, dtype)
        factors = Factors(jnp.zeros((0, 0), dtype), jnp.zeros((0,), jnp.int32), condition, condition, condition)
    else:
        factors = Factors(*lu, *norms, _inverse_norm1(lu))
        condition = _condition(factors)
        kept = usable(status)
        # a stalled step no larger than rounding can make it: the root is as good as the dtype allows
        noise = 4 * m * eps * factors.inverse_norm1 * jnp.maximum(_max_norm(u), _max_norm(g + u))
        rounding = (status == ILL_CONDITIONED) & (_max_norm(delta) <= noise)
        status = jnp.where(rounding, jnp.int32(SUCCESS), status)
        # a root is not enough: the block must determine its variables there
        status = jnp.where(kept & _singular(factors, m, eps), jnp.int32(SINGULAR), status)
        status = jnp.where((status == SUCCESS) & ~(condition <= condition_limit(solver, dtype)), jnp.int32(ILL_CONDITIONED), status)
        # One more Newton step with the factorisation already at hand: the tolerance bounds the
        # residual where the loop stopped; this step squares it (near machine precision) at the
        # cost of nothing (δ is computed). The reported residual stays the one that was checked.
        # Not for ILL_CONDITIONED roots: there J moves with the step as much as I − J is worth (a
        # double root halves both the error and I − J), so the residual, the condition and the factors
        # reported would describe another point; the root stays where they were evaluated.
        polished = u + delta
        u = jnp.where((status == SUCCESS) & _all_finite(polished), polished, u)
        condition = jnp.where(status == NONFINITE, jnp.nan, condition)
    info = Info(status, residual, steps, condition)
    return (u, info, factors) if return_factors else (u, info)


def _damped(G, u, g, delta, start=True):
    """u + α δ with α = 1, 1/2, ... until ‖G‖₂ decreases by (1 − 1e-4 α) (a NaN residual never does);
    u itself where `start` is False (nothing evaluated)."""
    norm0 = _norm2(g)

    def rejected(state):  # k = 0: nothing tried yet
        alpha, _, g_try, k = state
        return start & ((k == 0) | ((k <= _MAX_HALVINGS) & ~(_norm2(g_try) <= (1 - 1e-4 * alpha) * norm0)))

    def halve(state):
        alpha, _, _, k = state
        alpha = alpha / 2
        u_try = u + alpha * delta
        return alpha, u_try, G(u_try), k + 1

    two = jnp.full((), 2, u.dtype)
    _, u_new, _, _ = lax.while_loop(rejected, halve, (two, u, g, jnp.int32(0)))
    return u_new


# ---------------------------------------------------------------------------------------------------
# Backward: (I − J)ᵀ w = c is the multiplier equation of the block. With the penalties F(u) − u of the
# block's constraints, the rows of ∇_z L = 0 that belong to the block read ∇_u f + (J − I)ᵀ λ_B + (terms
# of the blocks that use u, already known by substitution) = 0: one linear solve on the diagonal block,
# c collecting everything else. (I − J)ᵀ w is w − vjp(F)(w): matrix-free by `jax.vjp`.
# ---------------------------------------------------------------------------------------------------


def solve_adjoint(
    F: Callable, u: jax.Array, c: jax.Array, solver: Solver = Solver(), factors: Factors | None = None
) -> tuple[jax.Array, Info]:
    """Solve (I − J)ᵀ w = c, J = ∂F/∂u at u: the multipliers of one cyclic block.

    Args:
      F: (m,) -> (m,), the block's definitions.
      u: (m,) the point (the block's solution).
      c: (m,) the right-hand side; its dtype is the dtype of the solve (u is cast to it).
      solver: the options (`Solver`).
      factors: dense blocks, the `Factors` from `find_root(..., return_factors=True)` at this root: no
        Jacobian is formed and nothing factored; the LU solve is refined by one step against the exact
        product at u, and the condition is the one estimated there. None: I − J is formed (`jax.jacfwd`)
        and factored at u. Ignored by matrix-free blocks.

    Returns:
      `(w, info)`: w (m,); `info.residual = max|c − (I − J)ᵀ w|`. `info.status`:
      SUCCESS, or (dense) ILL_CONDITIONED when `info.condition` (of I − J, as in `find_root`) exceeds
      `Solver.max_condition`, values kept; SINGULAR, NONFINITE (see the module docstring).
    """
    return _solve_linear(F, u, c, solver, factors, transpose=True)


# ---------------------------------------------------------------------------------------------------
# Forward mode: differentiating u = F(u, x) gives t = J t + (∂F/∂x) ẋ, i.e. (I − J) t = b with
# b = (∂F/∂x) ẋ, the tangents of the block's inputs pushed through F. (I − J) t is t − jvp(F)(t).
# ---------------------------------------------------------------------------------------------------


def solve_tangent(
    F: Callable, u: jax.Array, b: jax.Array, solver: Solver = Solver(), factors: Factors | None = None
) -> tuple[jax.Array, Info]:
    """Solve (I − J) t = b, J = ∂F/∂u at u: the tangents of one cyclic block.

    Args:
      F: (m,) -> (m,), the block's definitions.
      u: (m,) the point (the block's solution).
      b: (m,) the right-hand side; its dtype is the dtype of the solve (u is cast to it).
      solver: the options (`Solver`).
      factors: dense blocks, the `Factors` from `find_root(..., return_factors=True)` at this root: no
        Jacobian is formed and nothing factored; the LU solve is refined by one step against the exact
        product at u, and the condition is the one estimated there. None: I − J is formed (`jax.jacfwd`)
        and factored at u. Ignored by matrix-free blocks.

    Returns:
      `(t, info)`: t (m,); `info.residual = max|b − (I − J) t|`. `info.status`:
      SUCCESS, or (dense) ILL_CONDITIONED when `info.condition` (of I − J, as in `find_root`) exceeds
      `Solver.max_condition`, values kept; SINGULAR, NONFINITE (see the module docstring).
    """
    return _solve_linear(F, u, b, solver, factors, transpose=False)


def _solve_linear(F, u, rhs, solver, factors, transpose):
    """(I − J)ᵀ x = rhs (transpose) or (I − J) x = rhs: dense LU for small blocks, GMRES for large."""
    G, rhs = _check_block(F, rhs, "c" if transpose else "b")
    u = _check_point(u, rhs)
    solver = check_solver(solver)
    m, dtype = rhs.shape[0], rhs.dtype
    eps = float(np.finfo(dtype).eps)
    rtol, _ = tolerances(solver, dtype)
    target = rtol * _max_norm(rhs)
    finite_in = _all_finite(rhs) & _all_finite(u)

    if m <= solver.dense_max:
        A = None
        if factors is None:  # I − J at u, exact
            A = jnp.eye(m, dtype=dtype) - jax.jacfwd(F)(u).astype(dtype)
            lu = _lu_factor(A)
            factors = Factors(*lu, _norm1(A), _norm_inf(A), _inverse_norm1(lu))
            finite_in = finite_in & _all_finite(A)
        # backward error: x solves a system within rtol of (A, rhs); LU attains ~eps, so this only
        # catches a breakdown. Conditioning, the real risk, is judged by the condition estimate.
        norm = factors.norm1 if transpose else factors.norm_inf  # ‖A‖∞ of the system solved
        accepted = lambda x: rtol * (_max_norm(rhs) + norm * _max_norm(x))
        if A is None:  # I − J at the pre-polish point: refine against the exact product at u
            x, residual = _refined_solve(factors, _operator(G, u, transpose), rhs, transpose, accepted)
        else:  # exact factors: one solve, the residual by the dense product
            x = _lu_solve(lu, rhs, trans=1 if transpose else 0)
            residual = _max_norm(rhs - ((x @ A) if transpose else (A @ x)))
        backward_ok = residual <= accepted(x)
        solved = _all_finite(x) & backward_ok & ~_singular(factors, m, eps)
        # a finite x with a non-finite residual: the product at u is not finite (J there)
        finite_in = finite_in & jnp.isfinite(factors.norm1) & (jnp.isfinite(residual) | ~_all_finite(x))
        steps = jnp.int32(0)
        condition = _condition(factors)
        ill = ~(condition <= condition_limit(solver, dtype))
    else:
        matvec = _operator(G, u, transpose)
        x, residual, steps = _gmres(matvec, rhs, target, solver)
        solved = residual <= target
        finite_in = finite_in & _all_finite(matvec(rhs))  # J itself finite at u, as far as one product sees
        condition = jnp.full((), jnp.nan, dtype)
        ill = jnp.bool_(False)
    # Finite inputs but a non-finite or inaccurate solution: the operator is (numerically) singular.
    status = jnp.where(solved, jnp.where(ill, jnp.int32(ILL_CONDITIONED), jnp.int32(SUCCESS)), jnp.int32(SINGULAR))
    status = jnp.where(finite_in, status, jnp.int32(NONFINITE))
    condition = jnp.where(status == NONFINITE, jnp.nan, condition)
    return x, Info(status, residual, steps, condition)


def _operator(G, u, transpose):
    """x ↦ (I − J)ᵀ x (transpose) or (I − J) x at u, by one `jax.vjp` or `jax.linearize` of G = F − id."""
    if transpose:
        _, vjp = jax.vjp(G, u)  # vjp(w) = (J − I)ᵀ w
        return lambda w: -vjp(w)[0]
    _, jvp = jax.linearize(G, u)  # jvp(t) = (J − I) t
    return lambda t: -jvp(t)


def _refined_solve(factors, matvec, rhs, transpose, accepted):
    """x from the LU of `factors` refined against `matvec`; returns `(x, max|rhs − A x|)`.

    One `lax.while_loop` of passes, each a triangular solve and a product (traced once): the first
    solves from x = 0, the next correct by the residual; at least two, more (up to `_MAX_PASSES`) while
    `max|rhs − A x| > accepted(x)`. With exact factors the correction is at rounding level; with the
    factors of a nearby matrix (the root's last Newton point, not the polished root) each pass
    multiplies the error by about ‖(I − J)⁻¹‖ ‖ΔJ‖, tiny at a regular root.
    """
    lu = (factors.lu, factors.permutation)

    def going(state):
        k, x, r = state
        return (k < 2) | ((k < _MAX_PASSES) & ~(_max_norm(r) <= accepted(x)))

    def refine(state):
        k, x, r = state
        x = x + _lu_solve(lu, r, trans=1 if transpose else 0)
        return k + 1, x, rhs - matvec(x)

    _, x, r = lax.while_loop(going, refine, (jnp.int32(0), jnp.zeros_like(rhs), rhs))
    return x, _max_norm(r)


def _gmres(matvec, b, target, solver):
    """Restarted GMRES for A x = b until `max|b − A x| <= target`, the true residual checked every cycle.

    Returns `(x, max|b − A x|, cycles)`. Stops early when a cycle stagnates (singular or hopeless).

    Our own GMRES (`_arnoldi_cycle`), not `jax.scipy.sparse.linalg.gmres`: jax's is slower to compile
    (it is compiled twice per gradient of a matrix-free block: Newton–Krylov and adjoint) and
    orthogonalises against the whole restart basis at every iteration. It runs on the normalised system
    Â y = b̂, b̂ = b / ‖b‖₂, Â = A / s with s = ‖A b̂‖₂, whose solution gives x = (‖b‖₂ / s) y: the
    Arnoldi quantities are then of order one whatever the scale of A and b (no overflow of float32
    squares, no absolute threshold that means something else at ‖A‖ ~ 10¹⁸).
    """
    m = b.shape[0]
    restart = min(solver.krylov_restart, solver.krylov_max, m)
    max_cycles = -(-solver.krylov_max // restart)
    norm_b = _norm2(b)
    norm_b = jnp.where(norm_b > 0, norm_b, 1)
    b_hat = b / norm_b
    scale = _norm2(matvec(b_hat))
    scale = jnp.where((scale > 0) & jnp.isfinite(scale), scale, 1)
    matvec_hat = lambda y: matvec(y) / scale
    target_hat = target / norm_b
    # A cycle stops on its own 2-norm estimate of the residual; ask for half the target (2-norm >=
    # max-norm, and the estimate drifts from the true residual by rounding).
    estimate_target = jnp.maximum(0.5 * target_hat, jnp.finfo(b.dtype).tiny)

    def going(state):
        _, _, _, top, cycles, stalled = state
        return (top > target_hat) & (cycles < max_cycles) & ~stalled

    def cycle(state):
        y, r, norm, top, cycles, _ = state
        y_new = y + _arnoldi_cycle(matvec_hat, r, norm, estimate_target, restart)
        r_new = b_hat - matvec_hat(y_new)
        new_norm = _norm2(r_new)
        # Only an improvement is taken: a breakdown (NaN, as on an exactly singular operator) or a
        # worse iterate (a nearly singular Hessenberg matrix) keeps the last one, and stops.
        better = new_norm < norm
        y, r = jnp.where(better, y_new, y), jnp.where(better, r_new, r)
        top = jnp.where(better, _max_norm(r_new), top)
        return y, r, jnp.where(better, new_norm, norm), top, cycles + 1, ~(new_norm < _STAGNATION * norm)

    state = (jnp.zeros_like(b), b_hat, _norm2(b_hat), _max_norm(b_hat), jnp.int32(0), jnp.bool_(False))
    y, r, _, top, cycles, _ = lax.while_loop(going, cycle, state)
    # b − A x = ‖b‖₂ (b̂ − Â y): the true residual of the last cycle, scaled back
    return (norm_b / scale) * y, norm_b * top, cycles


def _arnoldi_cycle(matvec, r, beta, target, k):
    """One GMRES cycle from the residual r (‖r‖₂ = beta > 0): the correction d minimising ‖r − A d‖₂
    over the Krylov space span(r, A r, ..., A^(n−1) r), n <= k.

    Arnoldi with modified Gram–Schmidt builds the basis V and the Hessenberg matrix column by column;
    Givens rotations reduce it to the triangular R as it grows, so |g[n]| is the residual's 2-norm
    (in exact arithmetic) and the cycle stops as soon as it is <= target, or at a breakdown (A v in
    the span already: then the space holds the solution, or A is singular and the column is dropped).
    Loops are `lax` loops over traced bounds: one trace whatever k, and iteration j only touches the
    j + 1 basis vectors it has. Memory: (k + 1) · m values for V.
    """
    m, dtype = r.shape[0], r.dtype
    V = jnp.zeros((k + 1, m), dtype).at[0].set(r / beta)
    g = jnp.zeros((k + 1,), dtype).at[0].set(beta)
    R = jnp.zeros((k, k), dtype)
    rotations = jnp.zeros((2, k), dtype)  # cos, sin of the Givens rotation of each column

    def going(state):
        j, _, _, _, _, done = state
        return (j < k) & ~done

    def step(state):
        j, V, R, g, rotations, _ = state

        # Modified Gram–Schmidt against v_0..v_j; in the same pass, the rotations of the earlier
        # columns turn the Hessenberg column h into R's: rotation i − 1 acts on (h_(i−1), h_i) once h_i
        # is known, `pending` holding the rotated h_(i−1).
        def orthogonalise(i, state):
            w, column, pending = state
            v = V[i]
            h = jnp.vdot(v, w)
            c, s = rotations[0, i - 1], rotations[1, i - 1]  # i = 0: nothing to rotate yet
            first = i == 0
            column = column.at[i - 1].set(jnp.where(first, column[i - 1], c * pending + s * h))
            return w - h * v, column, jnp.where(first, h, c * h - s * pending)

        zero = jnp.zeros((), dtype)
        w, column, pending = lax.fori_loop(0, j + 1, orthogonalise, (matvec(V[j]), jnp.zeros((k,), dtype), zero))
        # the quantities of a cycle are of order one (the system is normalised, ‖v‖₂ = 1): plain norms
        h_next = jnp.sqrt(jnp.vdot(w, w))
        rho = jnp.sqrt(pending * pending + h_next * h_next)
        # rho = 0: A v_j lies in the span of v_0..v_(j−1) (A singular on the space): the column is
        # dropped. NaN (a non-finite product): dropped as well.
        keep = (rho > 0) & jnp.isfinite(rho)
        safe_rho = jnp.where(keep, rho, 1)
        c, s = jnp.where(keep, pending / safe_rho, 1), jnp.where(keep, h_next / safe_rho, 0)
        estimate = -s * g[j]
        g = g.at[j + 1].set(estimate).at[j].multiply(c)
        R = R.at[:, j].set(column.at[j].set(rho))
        rotations = rotations.at[:, j].set(jnp.stack([c, s]))
        V = V.at[j + 1].set(jnp.where(keep, w / jnp.where(h_next > 0, h_next, 1), 0))  # 0 · NaN: keep V finite
        done = ~keep | ~(h_next > 0) | (jnp.abs(estimate) <= target)
        return j + keep.astype(jnp.int32), V, R, g, rotations, done

    state = (jnp.int32(0), V, R, g, rotations, jnp.bool_(False))
    n, V, R, g, _, _ = lax.while_loop(going, step, state)
    # R[:n, :n] z = g[:n]; the unused columns are made the identity (and their z zero)
    used = jnp.arange(k) < n
    R = jnp.where(used[None, :], R, jnp.eye(k, dtype=dtype))
    z = solve_triangular(R, jnp.where(used, g[:k], 0), lower=False)
    return z @ V[:k]


# ---------------------------------------------------------------------------------------------------
# Small pieces.
# ---------------------------------------------------------------------------------------------------


# Blocks of at most this many values compute ‖(I − J)⁻¹‖₁ exactly, from the inverse (m columns in one
# triangular solve), not by Hager's estimator: on a batch of 2048 2 × 2 blocks (CPU) its ten
# vector solves cost about 3 ms, the inverse a tenth of that.
_EXACT_INVERSE_MAX = 16


def _inverse_norm1(lu):
    """‖A⁻¹‖₁ from A's LU factors (exact up to `_EXACT_INVERSE_MAX` rows, else Hager's estimate); inf
    where A is singular in floating point.

    As LAPACK's gecon (Higham, Algorithm 4.1): a few solves with A and Aᵀ on vectors, O(m²) each (a
    solve with m right-hand sides, i.e. forming A⁻¹, is much slower in XLA on CPU). Every ‖A⁻¹ x‖₁ with
    ‖x‖₁ = 1 is a lower bound of ‖A⁻¹‖₁, so the estimate is their maximum: it may underestimate
    (rarely by more than a small factor), never overestimate.
    """
    m, dtype = lu[0].shape[0], lu[0].dtype
    if m <= _EXACT_INVERSE_MAX:  # small blocks: ‖A⁻¹‖₁ itself, from A⁻¹ (one solve of m columns)
        exact = jnp.max(jnp.sum(jnp.abs(_lu_solve(lu, jnp.eye(m, dtype=dtype))), axis=0))
        return jnp.where(jnp.isfinite(exact), exact, jnp.inf)

    # Higham's safeguard against a misleading start, an alternating ramp, is the last pass of the loop
    # (one solve site traced for both): its ‖A⁻¹ x‖₁ / ‖x‖₁ also bounds ‖A⁻¹‖₁ from below
    ramp = (1 + jnp.arange(m, dtype=dtype) / max(m - 1, 1)) * jnp.where(jnp.arange(m) % 2 == 0, 1, -1).astype(dtype)

    def power_step(k, state):
        x, estimate = state
        x = jnp.where(k == _HAGER_STEPS, ramp, x)
        y = _lu_solve(lu, x)  # A⁻¹ x
        z = _lu_solve(lu, jnp.where(y >= 0, 1, -1).astype(dtype), trans=1)  # A⁻ᵀ sign(y)
        estimate = jnp.maximum(estimate, jnp.sum(jnp.abs(y)) / jnp.sum(jnp.abs(x)))
        return jax.nn.one_hot(jnp.argmax(jnp.abs(z)), m, dtype=dtype), estimate  # the most promising unit vector

    x0 = jnp.full((m,), 1 / m, dtype)
    _, estimate = lax.fori_loop(0, _HAGER_STEPS + 1, power_step, (x0, jnp.zeros((), dtype)))
    return jnp.where(jnp.isfinite(estimate), estimate, jnp.inf)


def _reciprocal_condition(lu, norm_A):
    """1 / (‖A‖₁ ‖A⁻¹‖₁) from A's LU factors and ‖A‖₁ (Hager's estimate); 0 where A is singular in floating point."""
    rcond = 1 / (norm_A * _inverse_norm1(lu))
    return jnp.where(jnp.isfinite(rcond), rcond, 0)


def _condition(factors):
    """`max(1, ‖I − J‖₁) · ‖(I − J)⁻¹‖₁`: the condition reported in `Info.condition` (>= κ₁(I − J), >= 1)."""
    condition = jnp.maximum(1, jnp.maximum(1, factors.norm1) * factors.inverse_norm1)  # >= 1 despite rounding
    return jnp.where(jnp.isnan(condition), jnp.inf, condition)


def _singular(factors, m, eps):
    """Whether κ₁(I − J) > 1 / (m · eps) (the reciprocal condition below m · eps), or it is not finite."""
    return ~(factors.norm1 * factors.inverse_norm1 * (m * eps) <= 1)


# Blocks of at most this many values are factored and solved by unrolled jnp code, not LAPACK: a
# batched LU or triangular solve calls LAPACK once per member, about a microsecond each on CPU,
# where a 2 × 2 elimination is a few vector operations over the whole batch.
_TINY = 3


def _lu_factor(A):
    """`(lu, permutation)` with `A[permutation] = L U` (L unit lower, U upper, packed in lu)."""
    m = A.shape[0]
    if m > _TINY:
        lu, _, permutation = lax.linalg.lu(A)
        return lu, permutation
    # Gaussian elimination with partial pivoting, unrolled on rows: selects and elementwise
    # arithmetic only (no gather or scatter), which XLA fuses
    rows, order = [A[i] for i in range(m)], [jnp.int32(i) for i in range(m)]
    for k in range(m - 1):
        best = jnp.argmax(jnp.stack([jnp.abs(rows[i][k]) for i in range(k, m)])) + k
        pivot = sum(jnp.where(best == i, rows[i], 0) for i in range(k, m))
        pivot_index = sum(jnp.where(best == i, order[i], 0) for i in range(k, m))
        for i in range(k + 1, m):  # the row that was at k takes the pivot's place
            rows[i], order[i] = jnp.where(best == i, rows[k], rows[i]), jnp.where(best == i, order[k], order[i])
        rows[k], order[k] = pivot, pivot_index
        upper = jnp.where(jnp.arange(m) > k, pivot, 0)  # the pivot row's part in U right of k
        for i in range(k + 1, m):
            multiplier = rows[i][k] / pivot[k]
            rows[i] = (rows[i] - multiplier * upper).at[k].set(multiplier)
    return jnp.stack(rows), jnp.stack(order).astype(jnp.int32)


def _lu_solve(lu, b, trans=0):
    """A x = b (trans=0) or Aᵀ x = b (trans=1) from `_lu_factor(A)`, b `(m,)` or `(m, k)`: two
    triangular solves (LAPACK trsm; unrolled substitutions for tiny blocks).

    Not `jax.scipy.linalg.lu_solve`: that one converts the pivots to a permutation at every call (a
    loop per call site); here the permutation is computed once, by the factorisation.
    """
    lu, permutation = lu
    m = lu.shape[0]
    vector = b.ndim == 1
    b = b[:, None] if vector else b
    if m > _TINY:
        solve = lambda x, **how: lax.linalg.triangular_solve(lu, x, left_side=True, **how)
        if trans == 0:  # L U x = b[perm]
            x = solve(solve(b[permutation], lower=True, unit_diagonal=True), lower=False)
        else:  # Aᵀ = Uᵀ Lᵀ P: Uᵀ Lᵀ (P x) = b, (P x) = x[perm]
            z = solve(solve(b, lower=False, transpose_a=True), lower=True, transpose_a=True, unit_diagonal=True)
            x = jnp.zeros_like(z).at[permutation].set(z)
        return x[:, 0] if vector else x
    L = jnp.tril(lu, -1) + jnp.eye(m, dtype=lu.dtype)
    U = jnp.triu(lu)
    if trans == 0:
        x = _substitute(U, _substitute(L, b[permutation], lower=True), lower=False)
    else:
        z = _substitute(L.T, _substitute(U.T, b, lower=True), lower=False)
        x = jnp.zeros_like(z).at[permutation].set(z)
    return x[:, 0] if vector else x


def _substitute(T, b, lower):
    """T x = b for a triangular T `(m, m)` (m tiny), b `(m, k)`: unrolled substitution, row by row."""
    m = T.shape[0]
    x = [None] * m
    for i in range(m) if lower else range(m - 1, -1, -1):
        known = range(i) if lower else range(i + 1, m)
        x[i] = (b[i] - sum((T[i, j] * x[j] for j in known), jnp.zeros_like(b[i]))) / T[i, i]
    return jnp.stack(x)


def _norm1(A):
    """‖A‖₁, the largest column sum of |A|."""
    return jnp.max(jnp.sum(jnp.abs(A), axis=0))


def _norm_inf(A):
    """‖A‖∞, the largest row sum of |A|."""
    return jnp.max(jnp.sum(jnp.abs(A), axis=1))


def _zeros_like(tree):
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), tree)


def _max_norm(v):
    return jnp.max(jnp.abs(v))


def _norm2(v):
    """‖v‖₂ without overflow (float32 squares overflow from 10¹⁹): scaled by max|v|."""
    top = _max_norm(v)
    safe = jnp.where((top > 0) & jnp.isfinite(top), top, 1)
    return jnp.where(jnp.isfinite(top), safe * jnp.sqrt(jnp.sum(jnp.square(v / safe))), top)


def _all_finite(v):
    return jnp.all(jnp.isfinite(v))


def _check_block(F, v, name):
    """Check v is a float vector (m,), m >= 1, and F maps it to shape (m,); return (G, v), G(u) = F(u) − u."""
    v = jnp.asarray(v)
    if v.ndim != 1 or v.shape[0] == 0:
        raise ValueError(f"`{name}` must be a non-empty vector (m,): the block flattened, got shape {v.shape}.")
    if not jnp.issubdtype(v.dtype, jnp.floating):
        raise TypeError(f"`{name}` must have a real floating dtype (float32 or float64), got {v.dtype}.")
    if not callable(F):
        raise TypeError(f"`F` must be a function (m,) -> (m,), got {type(F).__name__}.")
    out = jax.eval_shape(F, jax.ShapeDtypeStruct(v.shape, v.dtype))
    if getattr(out, "shape", None) != v.shape:
        got = getattr(out, "shape", out)
        raise ValueError(f"`F` must map a vector of shape {v.shape} to the same shape, got {got}.")
    return (lambda u: F(u).astype(v.dtype) - u), v


def _check_point(u, like):
    u = jnp.asarray(u)
    if u.shape != like.shape:
        raise ValueError(f"`u` must have the shape of the right-hand side {like.shape}, got {u.shape}.")
    return u.astype(like.dtype)
