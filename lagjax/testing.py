"""Independent oracles for every quantity of a `Computation`: the checks lagjax itself is tested with.

Each oracle compares a lagjax result with an answer obtained another way and returns the largest
error, *normwise relative*: `max|actual - expected| / max|expected|` (absolute where `expected` is 0).

| oracle                      | lagjax                      | independent answer                              |
| --------------------------- | --------------------------- | ----------------------------------------------- |
| multipliers_vs_grad         | λ[:d] (back-substitution)   | `jax.grad` of the plain forward pass            |
| tangents_vs_jacfwd          | tangents (forward sweep)    | `jax.jacfwd` of the plain forward pass          |
| dconstraints_vs_jacrev      | D (local partials)          | `jax.jacrev` of the constraint vector, transposed |
| dlagrangian_vs_grad         | dlagrangian                 | `jax.grad` of `lagrangian`                      |
| dlagrangian_vs_fd           | dlagrangian                 | central finite differences of `lagrangian`      |
| multipliers_vs_solve        | λ                           | `jnp.linalg.solve(D', -∇f)`                     |
| multipliers_vs_triangular   | λ                           | `solve_triangular(D', -∇f)`                     |
| reverse_mode_dense          | λ (sparse partials)         | `reverse_mode(D, ∇f)` (partials read off D)     |
| implicit_function           | `jax.jacfwd` of the plain forward pass | `-(D'ᵀ)⁻¹ ∂C/∂x`                     |
| stationarity                | ∇L at (x, z*, λ*)           | 0 for ∇_z L and ∇_λ L, λ[:d] for ∇_x L          |

D is `dconstraints` (lagjax's local partials); D' is `jax.jacrev` of the constraint vector,
transposed (JAX's AD of the constraint functions `f`, never of a user's `df`), so a wrong `df` is
caught by the dense solves too. `reverse_mode_dense` and `stationarity` check lagjax against itself
(the sweeps solve the system lagjax's own D defines): they pass even when a `df` is wrong.

"The plain forward pass" is `reference_solve`: a Python loop over the constraints, as in the
original NumPy code, sharing no code with lagjax's scans. It runs eagerly, so keep the programs
checked this way to a few thousand constraints.

`check_computation(comp, x)` runs them all and raises one `AssertionError` listing every oracle
whose error exceeds its tolerance; `oracle_errors` returns the errors without judging them.
"""

from __future__ import annotations

import functools
import gc
import weakref
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np

from lagjax._computation import Computation
from lagjax._program import Constraints

__all__ = [
    "central_difference",
    "check_computation",
    "default_tolerances",
    "judge",
    "oracle_errors",
    "random_program",
    "reference_forward",
    "reference_solve",
    "relative_error",
]


def reference_solve(comp: Computation) -> Callable:
    """The plain forward pass `x -> z`: one constraint at a time, in a Python loop.

    Scalar programs: `(d,) -> (n,)`; each step `z[i] = f_i(z[args(i)])` is one small jitted function
    per distinct `f_i` (so that eager differentiation dispatches one operation per constraint, not
    one per primitive), or plain eager code where a program has too many distinct functions to
    compile each. Structured programs: dicts by name, `z[name] = f(*z[args])`, eagerly.
    """
    if _cyclic(comp):
        return functools.partial(_plain_cyclic_solve, comp)
    if _structured(comp):
        return functools.partial(_plain_structured_solve, evaluation_order(comp))
    steps = _STEPS.get(comp)
    if steps is None:
        functions = {id(c.f): c.f for c in comp.constraints}
        wrap = jax.jit if len(functions) <= _MAX_JITTED_STEPS else (lambda step: step)
        steps = _STEPS[comp] = {key: wrap(functools.partial(_plain_step, f)) for key, f in functions.items()}

    def solve(x):
        x = jnp.asarray(x)
        z = jnp.zeros(comp.n, x.dtype).at[: comp.d].set(x)
        for c in evaluation_order(comp):  # indices as arrays: compiled once, not once per index
            z = steps[id(c.f)](z, jnp.asarray(c.args), jnp.asarray(c.i))
        return z

    return solve


def evaluation_order(comp: Computation) -> list:
    """The constraints of an acyclic program in an order where each comes after its arguments.

    A depth-first search of its own (not lagjax's levels), with an explicit stack: the oracles'
    plain loop must not share the engine's ordering code.
    """
    d, records = comp.d, comp.constraints
    state = [2] * d + [0] * len(records)  # 0 unvisited, 1 on the path, 2 done
    order = []
    for root in range(d, comp.n):
        if state[root]:
            continue
        state[root] = 1
        path = [(root, iter(records[root - d].args))]
        while path:
            v, arguments = path[-1]
            for a in arguments:
                if state[a] == 1:
                    raise ValueError(f"{comp.names[a]!r} lies on a cycle: the program has no evaluation order.")
                if state[a] == 0:
                    state[a] = 1
                    path.append((a, iter(records[a - d].args)))
                    break
            else:
                state[v] = 2
                order.append(records[v - d])
                path.pop()
    return order


_MAX_JITTED_STEPS = 16  # more distinct functions (closures, say): eager, rather than a compile each
_STEPS: weakref.WeakKeyDictionary[Computation, dict] = weakref.WeakKeyDictionary()  # per program, while it lives


def _plain_step(f: Callable, z: jax.Array, args: jax.Array, i: jax.Array) -> jax.Array:
    return z.at[i].set(jnp.reshape(f(z[args]), ()).astype(z.dtype))


def _plain_value(c, args: list):
    """The right-hand side of constraint `c` on its argument values, called as the user wrote it."""
    return c.f(*args) if c.positional else jnp.reshape(c.f(jnp.stack(args)), ())


def _plain_structured_solve(constraints, x: dict) -> dict:
    z = dict(x)
    dtype = jnp.result_type(*x.values())
    for c in constraints:
        z[c.name] = _plain_value(c, [z[a] for a in c.arg_names]).astype(dtype)
    return z


# Newton steps of the plain cyclic solve: quadratic convergence from a start in the basin; its
# derivative (by jax.grad through the unrolled steps) converges with it.
NEWTON_STEPS = 30


def _plain_cyclic_solve(comp, x):
    """A cyclic program's variables by Newton's method on all its constraints at once, unrolled.

    The residual `r(u) = [f_i(z[args(i)]) - z_i]` over every constraint's variable (u, flat),
    `NEWTON_STEPS` dense Newton steps `u <- u - (∂r/∂u)⁻¹ r(u)` from the initial guesses (or 0);
    written without lagjax's components or solvers, and differentiable by `jax.grad` / `jax.jacfwd`
    through the steps (unrolled by reverse mode: memory grows with the steps). Vectors in and out for a scalar program, dicts for a structured one.
    """
    layout, names = comp.layout, comp.names[comp.d :]
    x = x if comp.dicts else layout.unflatten(jnp.asarray(x), comp.input_names)
    dtype = jnp.result_type(*x.values())

    def residual(u):
        z = {**x, **layout.unflatten(u, names)}
        return jnp.concatenate(
            [jnp.ravel(_plain_value(c, [z[a] for a in c.arg_names]).astype(dtype) - z[c.name]) for c in comp.constraints]
        )

    u = jnp.concatenate([jnp.ravel(jnp.asarray(comp.init.get(n, np.zeros(comp.shapes[n])), dtype)) for n in names])

    def newton(_, u):
        return u - jnp.linalg.solve(jax.jacfwd(residual)(u), residual(u))

    u = jax.lax.fori_loop(0, NEWTON_STEPS, newton, u)  # a fixed trip count: a scan, differentiable both ways
    z = {**x, **layout.unflatten(u, names)}
    return z if comp.dicts else layout.flatten(z)


def reference_forward(comp: Computation) -> Callable:
    """`x -> f(z(x))` through `reference_solve`."""
    solve = reference_solve(comp)
    return lambda x: jnp.reshape(comp.f(solve(x)), ())


def _structured(comp: Computation) -> bool:
    """Whether the program takes and returns dicts (else vectors)."""
    return comp.dicts


def _cyclic(comp: Computation) -> bool:
    return bool(comp.blocks)


class _Flat:
    """A program's inputs, variables and multipliers as flat vectors (the identity for scalar programs)."""

    def __init__(self, comp: Computation):
        self.comp = comp
        if _structured(comp):
            layout = comp.layout
            self.width, self.size = int(layout.offsets[comp.d]), layout.size
            self.x = lambda tree: layout.flatten(tree, layout.input_names)
            self.z = layout.flatten
            self.xs = lambda v: layout.unflatten(v, layout.input_names)
            self.zs = layout.unflatten
        else:
            self.width, self.size = comp.d, comp.n
            self.x = self.z = self.xs = self.zs = lambda v: v

    def jacobian(self, J) -> jax.Array:
        """`dz/dx` as a matrix `(size, width)`, from `Computation.jacobian`'s result."""
        if not _structured(self.comp):
            return J
        layout = self.comp.layout
        return jnp.concatenate(
            [
                jnp.concatenate([jnp.reshape(J[v][a], (-1, layout.slice(a).stop - layout.slice(a).start)) for a in layout.input_names], 1)
                for v in layout.names
            ]
        )

    def constraint_vector(self, x: jax.Array) -> Callable:
        """`C(x, z)` on flat z, one entry per flattened variable: `[x - z[inputs]; f_i(z[args]) - z_i]`.

        Scalar programs use lagjax's vectorised `penalties`; structured ones a plain loop over the
        constraints, calling each function as the user wrote it.
        """
        comp, width = self.comp, self.width
        if not _structured(comp):
            return lambda z: jnp.concatenate([x - z[:width], comp.penalties(z)])

        def C(zf):
            z = self.zs(zf)
            pen = [jnp.ravel(_plain_value(c, [z[a] for a in c.arg_names]).astype(zf.dtype) - z[c.name]) for c in comp.constraints]
            return jnp.concatenate([x - zf[:width], *pen])

        return C


def relative_error(actual, expected) -> float:
    """`max|actual - expected| / max|expected|`; the absolute error where `expected` is all zero."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    chex.assert_equal_shape([actual, expected])
    if actual.size == 0:
        return 0.0
    if not (np.all(np.isfinite(actual)) and np.all(np.isfinite(expected))):
        return float("inf") if not np.array_equal(actual, expected, equal_nan=True) else 0.0
    scale = np.max(np.abs(expected))
    error = np.max(np.abs(actual - expected))
    return float(error / scale) if scale > 0 else float(error)


def central_difference(fn: Callable[[jax.Array], jax.Array], v: jax.Array) -> jax.Array:
    """The gradient of a scalar `fn` at `v` by central differences with one Richardson step.

    `(4 D(h/2) - D(h)) / 3`, with `D(h)` the central difference of step h: truncation error
    O(h⁴). The step is `h = eps^(1/5) (1 + |v_i|)`, eps of `v`'s dtype. Returns shape of `v`.
    """
    v = jnp.asarray(v)
    eps = jnp.finfo(v.dtype).eps
    h = eps**0.2 * (1 + jnp.abs(v))
    basis = jnp.eye(v.size, dtype=v.dtype).reshape((v.size,) + v.shape)
    shifts = jnp.concatenate([basis * (h / 2), -basis * (h / 2), basis * h, -basis * h])
    values = jax.vmap(fn)(v + shifts).reshape(4, -1)  # one batched evaluation: one copy of fn to compile
    step = h.reshape(-1)
    half, full = (values[0] - values[1]) / step, (values[2] - values[3]) / (2 * step)
    return ((4 * half - full) / 3).reshape(v.shape)


def default_tolerances(dtype) -> dict[str, float]:
    """Tolerances used by `check_computation`: `rtol` for exact oracles, `fd_rtol` for finite differences."""
    if jnp.dtype(dtype) == jnp.float64:
        return dict(rtol=1e-10, fd_rtol=1e-7)
    return dict(rtol=1e-4, fd_rtol=5e-2)


def oracle_errors(comp: Computation, x, *, z=None, l=None, seed: int = 0) -> dict[str, float]:
    """The largest (normwise relative) error of every oracle, by name, at inputs `x`.

    `x`: shape `(d,)`, or a dict by input name for a structured program. `z` and `l` (shape `(n,)`,
    or for a structured program flat, shape `(size,)`) are where `dlagrangian` is checked, an
    arbitrary point, not the solution; by default `z = z* + 0.1 (1 + |z*|) u` and `l = u'` with u, u'
    uniform in [-1, 1]. Structured programs are compared over their flattened variables.
    """
    F = _Flat(comp)
    x = comp._x(x)
    xf = F.x(x)
    dtype = xf.dtype
    z_tree, lam_tree = comp.multipliers(x)
    chex.assert_tree_all_finite((z_tree, lam_tree))
    z_star, lam = F.z(z_tree), F.z(lam_tree)
    rng = np.random.default_rng(seed)
    if z is None:
        z = z_star + 0.1 * (1 + np.abs(z_star)) * rng.uniform(-1, 1, F.size)
    if l is None:
        l = rng.uniform(-1, 1, F.size)
    z, l = jnp.asarray(z, dtype), jnp.asarray(l, dtype)
    point = (x, F.zs(z), F.zs(l))

    D = comp.dconstraints(z_tree)
    ours = dict(
        lam=lam,
        dz_dx=F.jacobian(comp.jacobian(x)),
        D=D,
        dlagrangian=_concatenate(F, comp.dlagrangian(*point)),
        reverse_mode=comp.reverse_mode(D, F.z(comp.df(z_tree))),
        at_solution=_concatenate(F, comp.dlagrangian(x, z_tree, lam_tree)),
    )
    theirs = _independent_answers(comp, xf, z_star, (xf, z, l))
    grad_plain, dz_dx_plain = _plain_derivatives(comp, F, xf)

    ours, theirs = jax.tree.map(np.asarray, (ours, theirs))
    w, N = F.width, F.size
    at = ours["at_solution"]
    dx, dz, dl = at[:w], at[w : w + N], at[w + N :]
    grad_f, lam = theirs["grad_f"], ours["lam"]
    scale = max(np.max(np.abs(grad_f), initial=0), np.max(np.abs(lam), initial=0), 1e-300)
    errors = {
        "multipliers_vs_grad": relative_error(lam[:w], grad_plain),
        "tangents_vs_jacfwd": relative_error(ours["dz_dx"], dz_dx_plain),
        "dconstraints_vs_jacrev": relative_error(D, theirs["D"]),
        "dlagrangian_vs_grad": relative_error(ours["dlagrangian"], theirs["dlagrangian_grad"]),
        "dlagrangian_vs_fd": relative_error(ours["dlagrangian"], theirs["dlagrangian_fd"]),
        "multipliers_vs_solve": relative_error(lam, theirs["lam_solve"]),
        "multipliers_vs_triangular": relative_error(lam, theirs["lam_triangular"]),
        "reverse_mode_dense": relative_error(ours["reverse_mode"], lam),
        "implicit_function": max(
            relative_error(dz_dx_plain, theirs["dz_dx_implicit"]),
            relative_error(grad_plain, grad_f @ theirs["dz_dx_implicit"]),
        ),
        "stationarity": max(
            relative_error(dx, lam[:w]),
            np.max(np.abs(dz), initial=0) / scale,
            np.max(np.abs(dl), initial=0) / max(np.max(np.abs(np.asarray(z_star)), initial=0), 1.0),
        ),
    }
    if _cyclic(comp):  # D is block triangular, not triangular: the dense solve stands
        del errors["multipliers_vs_triangular"]
    return errors


def _plain_derivatives(comp: Computation, F: _Flat, xf: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`jax.grad` and `jax.jacfwd` of the plain forward pass, over the flat inputs.

    Eager for scalar programs (a compile would grow with their thousands of constraints); jitted for
    structured ones, whose few array constraints compile quickly and run slowly op by op.
    """
    solve, forward = reference_solve(comp), reference_forward(comp)

    def derivatives(v):
        return F.x(jax.grad(forward)(F.xs(v))), jax.jacfwd(lambda u: F.z(solve(F.xs(u))))(v)

    return (jax.jit(derivatives) if _structured(comp) or _cyclic(comp) else derivatives)(xf)


def _concatenate(F: _Flat, gradient) -> jax.Array:
    """`(dx, dz, dl)` of `dlagrangian` as one flat vector."""
    dx, dz, dl = gradient
    return jnp.concatenate([F.x(dx), F.z(dz), F.z(dl)])


@functools.partial(jax.jit, static_argnums=0)
def _independent_answers(comp: Computation, x, z_star, point) -> dict:
    """What the oracles compare with, by JAX's own differentiation and dense linear algebra (flat)."""
    F = _Flat(comp)
    grad_f = F.z(comp.df(F.zs(z_star))).astype(x.dtype)
    D = jax.jacrev(F.constraint_vector(x))(z_star).T
    cuts = np.cumsum([F.width, F.size])
    flat_lagrangian = lambda v: comp.lagrangian(*(g(p) for g, p in zip((F.xs, F.zs, F.zs), jnp.split(v, cuts))))
    flat_point = jnp.concatenate(point)
    # Implicit-function theorem: C(x, z(x)) = 0 for all x, so ∂C/∂x + ∂C/∂z dz/dx = 0, and with
    # ∂C/∂z = Dᵀ and ∂C/∂x = E (a 1 at each input copy): dz/dx = -(Dᵀ)⁻¹ E.
    E = jnp.eye(F.size, F.width, dtype=x.dtype)
    return dict(
        grad_f=grad_f,
        D=D,
        dlagrangian_grad=jax.grad(flat_lagrangian)(flat_point),
        dlagrangian_fd=central_difference(flat_lagrangian, flat_point),
        lam_solve=jnp.linalg.solve(D, -grad_f),
        lam_triangular=_triangular_solve(comp, D, -grad_f),
        dz_dx_implicit=-jnp.linalg.solve(D.T, E),
    )


def _triangular_solve(comp: Computation, D: jax.Array, v: jax.Array) -> jax.Array:
    """`D⁻¹ v` by `solve_triangular`: D is upper triangular in an evaluation order (`evaluation_order`),
    not necessarily in the order the variables were defined."""
    if _cyclic(comp):
        return jnp.full_like(v, jnp.nan)  # block triangular only: this oracle is not used
    offsets = comp.layout.offsets
    variables = list(range(comp.d)) + [c.i for c in evaluation_order(comp)]
    perm = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in variables]).astype(np.int64)
    solved = jax.scipy.linalg.solve_triangular(D[np.ix_(perm, perm)], v[perm], lower=False)
    return jnp.zeros_like(v).at[perm].set(solved)


def judge(comp: Computation, x, *, rtol: float | None = None, fd_rtol: float | None = None, **kwargs) -> list[tuple[str, float, float]]:
    """Every oracle's `(name, largest error, tolerance)` at `x`; defaults from `default_tolerances`.

    `**kwargs` go to `oracle_errors` (`z`, `l`, `seed`).
    """
    tolerances = default_tolerances(_Flat(comp).x(comp._x(x)).dtype)
    rtol = tolerances["rtol"] if rtol is None else rtol
    fd_rtol = tolerances["fd_rtol"] if fd_rtol is None else fd_rtol
    errors = oracle_errors(comp, x, **kwargs)
    return [(name, error, fd_rtol if name.endswith("_fd") else rtol) for name, error in errors.items()]


def check_computation(comp: Computation, x, *, rtol: float | None = None, fd_rtol: float | None = None, **kwargs) -> dict[str, float]:
    """Run every oracle at `x` and raise an AssertionError naming each that fails.

    Args:
      comp: the Computation.
      x: inputs, shape `(d,)` (a dict by input name for a structured program); its dtype sets the
        default tolerances (`default_tolerances`).
      rtol: tolerance of the exact oracles (normwise relative).
      fd_rtol: tolerance of the finite-difference oracle.
      **kwargs: passed to `oracle_errors` (`z`, `l`, `seed`).

    Returns:
      The errors by oracle name, when all pass.
    """
    verdicts = judge(comp, x, rtol=rtol, fd_rtol=fd_rtol, **kwargs)
    failed = [f"  {name}: largest error {error:.3g} > {tol:.3g}" for name, error, tol in verdicts if not error <= tol]
    if failed:
        raise AssertionError(f"{len(failed)} of {len(verdicts)} oracles failed for {comp!r}:\n" + "\n".join(failed))
    return {name: error for name, error, _ in verdicts}


# Bounded functions by arity: each maps [-1, 1]^k into [-1, 1] (so values stay finite at any size),
# defined once here and shared by every constraint that uses it, so a program of any size has at
# most a dozen groups.
_RANDOM_FUNCTIONS = {
    1: (
        lambda v: jnp.sin(v[0] + 0.5),
        lambda v: jnp.tanh(2 * v[0]),
        lambda v: jax.nn.sigmoid(3 * v[0]),
        lambda v: jax.nn.softplus(v[0]) - 0.7,
    ),
    2: (
        lambda v: jnp.tanh(v[0]) * jnp.tanh(v[1] - 0.3),
        lambda v: v[0] * v[1],
        lambda v: (v[0] + v[1]) / 2,
    ),
    3: (
        lambda v: jnp.tanh(jnp.sum(v) / 3),
        lambda v: v[0] * v[1] * v[2],
        lambda v: (v[0] * v[1] + v[2]) / 2,
    ),
    4: (
        lambda v: jnp.sin(v[0] * v[1] + v[2] - v[3]) / 2,
        lambda v: jnp.mean(v),
        lambda v: (v[0] * v[1] - v[2] * v[3]) / 2,
    ),
}

PROFILES = ("wide", "deep", "mixed")


def _layer_sizes(n: int, profile: str, depth: int | None) -> np.ndarray:
    """Constraints per layer (layer 1 reads the inputs), summing to n."""
    if depth is not None:
        if not 1 <= depth <= n:
            raise ValueError(f"`random_program` needs 1 <= depth <= n; got n={n}, depth={depth}.")
        return np.diff(np.arange(depth + 1) * n // depth)
    if profile == "wide":
        return _layer_sizes(n, "", min(n, 8))
    if profile == "deep":
        return np.ones(n, np.int64)
    if profile == "mixed":  # a wide third, a chain, a wide third
        a, b = n // 3, n - 2 * (n // 3)
        return np.r_[_layer_sizes(a, "wide", None) if a else [], np.ones(b, np.int64), _layer_sizes(a, "wide", None) if a else []].astype(
            np.int64
        )
    raise ValueError(f"`profile` must be one of {PROFILES}; got {profile!r}.")


def random_program(
    n: int,
    d: int = 4,
    depth: int | None = None,
    seed: int = 0,
    *,
    profile: str = "wide",
    max_arity: int = 4,
    objective: str = "all",
) -> tuple[Computation, np.ndarray]:
    """A random scalar program of `n` constraints and `d` inputs, and inputs for it.

    Constraints come in layers; each reads one variable of the layer before (so the depth is the
    number of layers) and, up to its arity (uniform in 1..`max_arity`), any earlier variables.
    Functions are drawn from a dozen bounded ones (sin, tanh, logistic, softplus, products and
    scaled sums of bounded values): every value stays in [-1, 1], whatever the size. Within a
    layer, variables are numbered by function (in the order drawn within a function), and a run of
    one function is added by one `add_constraints` call: a million constraints build in seconds.

    Args:
      n: the number of constraints, >= 1.
      d: the number of inputs, >= 1; inputs beyond the first layer's reach may be unused.
      depth: the number of layers, of equal size (overrides `profile`).
      seed: the NumPy random seed.
      profile: the layer sizes where `depth` is None: "wide", 8 equal layers (`min(n, 8)`);
        "deep", a chain, one constraint per layer; "mixed", a wide third, a chain, a wide third.
      max_arity: the largest arity, 1 to 4.
      objective: "all", the sum of the last layer plus 0.01 · Σ sin(z) (every variable counts);
        "last", the sum of the last layer only (other variables are ignored by the objective).

    Returns:
      `(comp, x)`: the `Computation` and inputs, a NumPy float64 array of shape `(d,)`, uniform in [-1, 1].
    """
    draws = random_draws(n, d, depth, seed, profile=profile, max_arity=max_arity, objective=objective)
    C = random_constraints(draws)
    f = functools.partial(random_objective, draws.last, 0.01 if objective == "all" else 0.0)
    return Computation(f, C.inputs, C), draws.x


def random_draws(
    n: int, d: int = 4, depth: int | None = None, seed: int = 0, *, profile: str = "wide", max_arity: int = 4, objective: str = "all"
) -> RandomDraws:
    """What `random_program` draws (same arguments), before anything is built (`random_constraints`)."""
    if n < 1 or d < 1:
        raise ValueError(f"`random_program` needs n >= 1 and d >= 1; got n={n}, d={d}.")
    if not 1 <= max_arity <= 4:
        raise ValueError(f"`max_arity` must be 1 to 4; got {max_arity}.")
    if objective not in ("all", "last"):
        raise ValueError(f'`objective` must be "all" or "last"; got {objective!r}.')
    sizes = _layer_sizes(n, profile, depth)
    rng = np.random.default_rng(seed)
    layer_start = np.r_[0, d + np.cumsum(np.r_[0, sizes])]  # first variable of each layer; layer 0 = inputs
    layer = np.repeat(np.arange(1, len(sizes) + 1), sizes)
    lo, hi = layer_start[layer - 1], layer_start[layer]
    arity = rng.integers(1, max_arity + 1, n)
    args = (rng.random((n, 4)) * hi[:, None]).astype(np.int64)  # any earlier variable
    args[:, 0] = lo + (rng.random(n) * (hi - lo)).astype(np.int64)  # one from the layer before
    choice = rng.integers(0, 12, n)
    functions = [f for k in range(1, 5) for f in _RANDOM_FUNCTIONS[k]]
    counts = np.array([len(_RANDOM_FUNCTIONS[k]) for k in range(1, 5)])
    first = np.r_[0, np.cumsum(counts)[:-1]]
    fid = first[arity - 1] + choice % counts[arity - 1]  # each constraint's function, in `functions`

    # within each layer (whose constraints read earlier layers only), constraints of one function
    # together: a long run is one `add_constraints` call, a short one a loop of `add_constraint`
    order = np.lexsort((fid, layer))
    where = np.r_[np.arange(d), np.empty(n, np.int64)]
    where[d + order] = d + np.arange(n)  # a constraint's variable, from its draw
    draws = RandomDraws(
        names=[f"x{i}" for i in range(d)] + [f"z{d + c}" for c in range(n)],
        d=d,
        functions=[functions[f] for f in fid[order].tolist()],
        table=where[args][order],
        arity=arity[order],
        runs=np.flatnonzero(np.r_[True, (fid[order][1:] != fid[order][:-1]) | (layer[order][1:] != layer[order][:-1]), True]),
    )
    return draws._replace(last=int(layer_start[-2]), x=rng.uniform(-1, 1, d))


class RandomDraws(NamedTuple):
    """A random program's constraints as `random_program` draws them, in variable order: constraint
    c defines `names[d + c]` by `functions[c]` of the variables `table[c, :arity[c]]`; `runs` (R + 1,)
    the boundaries of runs of one function within a layer; `last` the first variable of the last
    layer (the objective's); `x` the inputs, shape `(d,)`."""

    names: list
    d: int
    functions: list
    table: np.ndarray
    arity: np.ndarray
    runs: np.ndarray
    last: int = 0
    x: np.ndarray | None = None


def random_constraints(draws: RandomDraws, bulk: bool = True) -> Constraints:
    """The `Constraints` of `draws`: each run of at least `_BULK_MIN` constraints by one
    `add_constraints` call (`bulk`), the others by `add_constraint` (all of them, without `bulk`).
    Either way the same program, variable for variable."""
    names, d, functions, table = draws.names, draws.d, draws.functions, draws.table
    ks, runs = draws.arity.tolist(), draws.runs.tolist()
    sizes = np.diff(draws.runs)
    short = np.repeat(sizes < _BULK_MIN, sizes) if bulk else np.ones(len(ks), bool)  # added one at a time
    rows = dict(zip(np.flatnonzero(short).tolist(), table[short].tolist()))
    C = Constraints(names[:d])
    add, name_of = C.add_constraint, names.__getitem__
    collecting = gc.isenabled()
    gc.disable()  # a million small records: the cyclic collector would rescan them all, often
    try:
        for begin, end in zip(runs[:-1], runs[1:]):
            if bulk and end - begin >= _BULK_MIN:
                C.add_constraints(names[d + begin : d + end], functions[begin], table[begin:end, : ks[begin]])
                continue
            for c in range(begin, end):
                add(names[d + c], functions[c], list(map(name_of, rows[c][: ks[c]])))
    finally:
        if collecting:
            gc.enable()
    return C


_BULK_MIN = 8  # runs of at least this many constraints of one function in a layer: one `add_constraints`


def random_objective(last: int, scale: float, z: jax.Array) -> jax.Array:
    """The objective of `random_program`: `Σ z[last:] + scale · Σ sin(z)` (no array constants, so its
    compile time does not grow with the program)."""
    return jnp.sum(z[last:]) + scale * jnp.sum(jnp.sin(z))
