"""The cyclic-block solvers against independent answers: plain fixed-point iteration, NumPy dense solves.

Every scenario is one member of a single family of blocks, so that one compiled function per solver and
dtype covers them all (each new compile costs seconds here):

    F(u) = a ⊙ tanh(A u + x) + B u + e + h ⊙ exp(u)

- "tanh": the equilibrium layer z = tanh(A z + x), ‖A‖₂ = 0.9 (a contraction);
- "mdp": a value function F(u) = e + γ P u, γ = 0.99, P row-stochastic (I − J well-posed but ill-conditioned);
- "swap": F(u) = P u with P swapping neighbours, u₀ = u₁: I − J is singular;
- "exp": F(u) = u + 10²⁰ exp(u), no fixed point while I − J = −10²⁰ diag(exp u) stays regular: Newton walks
  u → −∞ one unit per step and runs out of steps before the residual falls below the tolerance;
- "shift": F(u) = u + 1, no fixed point and I − J = 0;
- "nan": x = NaN.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from lagjax import _cyclic
from lagjax._cyclic import ILL_CONDITIONED, NONFINITE, NOT_CONVERGED, SINGULAR, SUCCESS, Solver

M = 12
SCENARIOS = ["tanh", "mdp", "swap", "exp", "shift", "nan"]
DENSE = Solver()
# matrix-free for m = 12, with restarts every 5 Krylov iterations: several GMRES cycles per solve
MATRIX_FREE = Solver(dense_max=4, krylov_restart=5)
SOLVERS = {"dense": DENSE, "matrix-free": MATRIX_FREE}


def F(p, u):
    return p["a"] * jnp.tanh(p["A"] @ u + p["x"]) + p["B"] @ u + p["e"] + p["h"] * jnp.exp(u)


def scenario(name, rng):
    """Parameters of F as float64 NumPy arrays, and right-hand sides c, b for the linear solves."""
    zero, zeros, eye = np.zeros((M, M)), np.zeros(M), np.eye(M)
    p = dict(A=zero, B=zero, a=zeros, x=zeros, e=zeros, h=zeros)
    if name in ("tanh", "nan"):
        A = rng.normal(size=(M, M))
        p.update(A=0.9 * A / np.linalg.norm(A, 2), a=np.ones(M), x=rng.normal(size=M))
        if name == "nan":
            p["x"] = np.full(M, np.nan)
    elif name == "mdp":
        P = rng.random((M, M)) * (rng.random((M, M)) < 0.4) + np.eye(M, k=1) + np.eye(M, k=1 - M)
        p.update(B=0.99 * P / P.sum(1, keepdims=True), e=rng.random(M))
    elif name == "swap":
        p.update(B=np.kron(np.eye(M // 2), [[0.0, 1.0], [1.0, 0.0]]))
    elif name == "exp":
        p.update(B=eye, h=np.full(M, 1e20))
    elif name == "shift":
        p.update(B=eye, e=np.ones(M))
    c, b = rng.normal(size=M), rng.normal(size=M)
    return p, c, (np.zeros(M) if name == "mdp" else b)  # mdp: a zero right-hand side, solved exactly


@functools.cache
def batch():
    """All scenarios stacked on a leading axis (float64 NumPy)."""
    rng = np.random.default_rng(0)
    ps, cs, bs = zip(*(scenario(name, rng) for name in SCENARIOS))
    stacked = {k: np.stack([p[k] for p in ps]) for k in ps[0]}
    return stacked, np.stack(cs), np.stack(bs)


TRACES = {"count": 0}


def solve_block(p, c, b, solver):
    """find_root from u0 = 0, then both linear solves at the root found: without the root's factors
    (I − J formed and factored at u), and with them (`return_factors`: the LU of the last Newton point)."""
    TRACES["count"] += 1
    f = functools.partial(F, p)
    u, root, factors = _cyclic.find_root(f, jnp.zeros_like(c), solver, return_factors=True)
    w, adjoint = _cyclic.solve_adjoint(f, u, c, solver)
    t, tangent = _cyclic.solve_tangent(f, u, b, solver)
    reused = _cyclic.solve_adjoint(f, u, c, solver, factors), _cyclic.solve_tangent(f, u, b, solver, factors)
    return (u, w, t, root, adjoint, tangent), reused


solve_one = jax.jit(solve_block, static_argnums=3)
solve_batch = jax.jit(jax.vmap(solve_block, in_axes=(0, 0, 0, None)), static_argnums=3)


def as_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


# float32 runs all scenarios batched through jax.vmap (dense and matrix-free): one compile covers vmap
# too, and its answers face the same independent oracles as the unbatched runs.
BATCHED = {("dense", jnp.float32), ("matrix-free", jnp.float32)}


@functools.cache
def all_results(solver_name, dtype):
    """Each scenario solved in `dtype`, as NumPy: dict name -> the two outputs of `solve_block`."""
    cast = lambda tree: jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), tree)
    solver = SOLVERS[solver_name]
    if (solver_name, dtype) in BATCHED:
        out = as_numpy(solve_batch(*cast(batch()), solver))
        return {name: jax.tree_util.tree_map(lambda v: v[k], out) for k, name in enumerate(SCENARIOS)}
    return {name: as_numpy(solve_one(*cast(params(name)), solver)) for name in SCENARIOS}


def results(solver_name, dtype):
    """dict name -> (u, w, t, root, adjoint, tangent), the linear solves without the root's factors."""
    return {name: out[0] for name, out in all_results(solver_name, dtype).items()}


def reused_results(solver_name, dtype):
    """dict name -> ((w, adjoint), (t, tangent)), the linear solves given the root's factors."""
    return {name: out[1] for name, out in all_results(solver_name, dtype).items()}


def params(name):
    p, c, b = batch()
    k = SCENARIOS.index(name)
    return {key: v[k] for key, v in p.items()}, c[k], b[k]


def numpy_F(p, u):
    return p["a"] * np.tanh(p["A"] @ u + p["x"]) + p["B"] @ u + p["e"] + p["h"] * np.exp(u)


def numpy_I_minus_J(p, u):
    """I − ∂F/∂u at u, by hand (float64 NumPy)."""
    sech2 = 1 - np.tanh(p["A"] @ u + p["x"]) ** 2
    return np.eye(M) - ((p["a"] * sech2)[:, None] * p["A"] + p["B"] + np.diag(p["h"] * np.exp(u)))


DTYPES = [pytest.param(jnp.float64, id="f64"), pytest.param(jnp.float32, id="f32")]
SOLVER_NAMES = pytest.mark.parametrize("solver_name", list(SOLVERS))


def tolerance(dtype):
    return 1e-9 if dtype == jnp.float64 else 2e-4


@SOLVER_NAMES
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["tanh", "mdp"])
def test_solutions_against_independent_answers(name, dtype, solver_name):
    u, w, t, root, adjoint, tangent = results(solver_name, dtype)[name]
    p, c, b = params(name)
    assert u.dtype == w.dtype == t.dtype == dtype
    for info in (root, adjoint, tangent):
        assert int(info.status) == SUCCESS, _cyclic.message(info.status)
    # the root: against a long plain fixed-point iteration (tanh, a contraction) or the closed form (mdp)
    if name == "tanh":
        z = np.zeros(M)
        for _ in range(2000):
            z = numpy_F(p, z)
    else:
        z = np.linalg.solve(np.eye(M) - p["B"], p["e"])
    scale = np.max(np.abs(z))
    np.testing.assert_allclose(u, z, atol=tolerance(dtype) * scale * (100 if name == "mdp" else 1))
    rtol, atol = _cyclic.tolerances(SOLVERS[solver_name], dtype)
    assert root.residual <= atol + rtol * np.max(np.abs(u))
    np.testing.assert_allclose(root.residual, np.max(np.abs(numpy_F(p, z) - z)), atol=atol + rtol * scale)
    # the linear solves: against NumPy's dense solve of I − J at the float64 root
    A = numpy_I_minus_J(p, z)
    cond = np.linalg.cond(A, 1)
    for x, expected in ((w, np.linalg.solve(A.T, c)), (t, np.linalg.solve(A, b))):
        np.testing.assert_allclose(x, expected, atol=tolerance(dtype) * cond * np.max(np.abs(expected)))
    assert adjoint.residual <= rtol * np.max(np.abs(c)) * (1 if solver_name == "matrix-free" else cond)
    # the condition: dense, max(1, ‖I − J‖₁) ‖(I − J)⁻¹‖₁ (Hager's estimate, a lower bound, rarely off by
    # more than a small factor) against NumPy's at the float64 root, the same in the three solves
    if solver_name == "dense":
        expected = max(1, np.linalg.norm(A, 1)) * np.linalg.norm(np.linalg.inv(A), 1)
        assert expected >= cond and expected < _cyclic.condition_limit(DENSE, dtype)
        for info in (root, adjoint, tangent):
            assert expected / 3 <= info.condition <= expected * (1 + tolerance(dtype) * cond), (info.condition, expected)
    else:
        assert np.isnan(root.condition) and np.isnan(adjoint.condition) and np.isnan(tangent.condition)


@SOLVER_NAMES
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_solves_reuse_the_root_factors(dtype, solver_name):
    # with the root's factors (the LU at the last Newton point, refined once against the exact product
    # at the polished root) the solves agree with those that factor I − J at the root; float32 batched
    plain, reused = results(solver_name, dtype), reused_results(solver_name, dtype)
    for name in SCENARIOS:
        (w, adjoint), (t, tangent) = reused[name]
        root, expected = plain[name][3], plain[name][4:]
        assert [int(adjoint.status), int(tangent.status)] == [int(i.status) for i in expected], name
        if name not in ("tanh", "mdp"):
            continue
        cond = float(root.condition) if solver_name == "dense" else 1e3
        for x, x0 in ((w, plain[name][1]), (t, plain[name][2])):
            np.testing.assert_allclose(x, x0, atol=10 * np.finfo(dtype).eps * cond * max(np.max(np.abs(x0)), 1e-300))
        for info, info0 in zip((adjoint, tangent), expected):
            if solver_name == "dense":  # the root's estimate, copied; the plain solve's is at the polished root
                assert info.condition == root.condition
                np.testing.assert_allclose(info.condition, info0.condition, rtol=1e-3)
            assert info.residual <= max(4 * info0.residual, 10 * np.finfo(dtype).eps * cond * np.max(np.abs(x0)))


@SOLVER_NAMES
@pytest.mark.parametrize("dtype", DTYPES)
def test_failures_are_reported(dtype, solver_name):
    r = results(solver_name, dtype)
    status = {name: tuple(int(info.status) for info in r[name][3:]) for name in SCENARIOS}
    # swap: u = 0 is a root, but not determined by the block. Dense: detected at the root; matrix-free:
    # the root finder cannot tell (no conditioning estimate), the linear solves that follow do.
    assert status["swap"] == ((SINGULAR if solver_name == "dense" else SUCCESS), SINGULAR, SINGULAR)
    assert status["exp"][0] == NOT_CONVERGED
    assert int(r["exp"][3].steps) == SOLVERS[solver_name].max_steps
    assert float(r["exp"][3].residual) > 0
    assert status["shift"][0] == SINGULAR
    np.testing.assert_allclose(r["shift"][3].residual, 1.0)
    assert status["nan"] == (NONFINITE, NONFINITE, NONFINITE)


def test_no_retracing_and_vmap_matches_unbatched():
    one = results("dense", jnp.float64)  # six scenarios, one compile (same shapes)
    before = TRACES["count"]
    p, c, b = params("tanh")
    again = as_numpy(solve_one(p, 0.5 * c, b, DENSE))[0]
    assert TRACES["count"] == before, "a call with the same shapes and solver must not retrace"
    np.testing.assert_allclose(again[1], 0.5 * one["tanh"][1], rtol=1e-10)
    # the batched float32 run against the unbatched float64 one, scenario by scenario, statuses included
    batched = results("dense", jnp.float32)
    for name in SCENARIOS:
        assert [int(i.status) for i in batched[name][3:]] == [int(i.status) for i in one[name][3:]], name
    # matrix-free: GMRES's loops batched too (the solutions are checked in the tests above)
    batched, one = results("matrix-free", jnp.float32), results("matrix-free", jnp.float64)
    for name in ("tanh", "mdp", "swap", "nan"):
        assert [int(i.status) for i in batched[name][3:]] == [int(i.status) for i in one[name][3:]], name


# --- Honest roots: 1 × 1 blocks, degenerate and regular, one family, batched -----------------------------
#
# F(y) = y + a y² + b (sin y − y) + c (cos y − y) + d (1 − y / 2), one member per row of ROOTS:
# y ∓ y² (a double root at 0: Newton halves the error, linear convergence), sin y (a triple root at 0),
# cos y (the Dottie number, regular), y / 2 + 1 (root 2, I − J = 1/2: κ = 1 but condition 2).
ROOTS = {"y - y²": (-1, 0, 0, 0), "y + y²": (1, 0, 0, 0), "sin": (0, 1, 0, 0), "cos": (0, 0, 1, 0), "linear": (0, 0, 0, 1)}
DEGENERATE = ["y - y²", "y + y²", "sin"]


def scalar_F(q, y):
    a, b, c, d = q
    return y + a * y**2 + b * (jnp.sin(y) - y) + c * (jnp.cos(y) - y) + d * (1 - y / 2)


@functools.partial(jax.jit, static_argnums=1)
def scalar_roots(q, solver):
    """find_root from y0 = 1 and an adjoint solve with its factors, vmapped over the rows of q."""

    def one(q):
        f = functools.partial(scalar_F, q)
        y, info, factors = _cyclic.find_root(f, jnp.ones((1,), q.dtype), solver, return_factors=True)
        w, adjoint = _cyclic.solve_adjoint(f, y, jnp.ones((1,), q.dtype), solver, factors)
        return y[0], f(y)[0], info, w[0], adjoint

    return jax.vmap(one)(q)


@pytest.mark.parametrize("dtype", DTYPES)
def test_degenerate_roots_are_ill_conditioned_not_silent(dtype):
    q = jnp.asarray(list(ROOTS.values()), dtype)
    y, Fy, info, w, adjoint = as_numpy(scalar_roots(q, DENSE))
    status = dict(zip(ROOTS, info.status.tolist()))
    limit, eps = _cyclic.condition_limit(DENSE, dtype), np.finfo(dtype).eps
    assert limit == 1 / np.sqrt(eps)
    # per member under vmap: the regular roots converge, the degenerate ones are flagged, values kept
    assert status == {"y - y²": ILL_CONDITIONED, "y + y²": ILL_CONDITIONED, "sin": ILL_CONDITIONED, "cos": SUCCESS, "linear": SUCCESS}
    assert _cyclic.usable(info.status).tolist() == [True] * len(ROOTS)
    for k, name in enumerate(ROOTS):
        if name in DEGENERATE:
            assert info.condition[k] > limit
            # the accuracy MESSAGES promises: about condition × (residual + rounding of F(u) − u), within a
            # small multiple at a multiple root (the true root is 0)
            bound = info.condition[k] * (info.residual[k] + eps * max(abs(y[k]), abs(Fy[k])))
            assert 0 < abs(y[k]) <= 4 * bound, (name, y[k], bound)
            assert abs(y[k]) < (1e-6 if dtype == jnp.float64 else 2e-3)  # and far better than the residual test
            assert int(adjoint.status[k]) == ILL_CONDITIONED and adjoint.condition[k] == info.condition[k]
        else:
            assert 1 <= info.condition[k] < 10 and int(adjoint.status[k]) == SUCCESS
    k = list(ROOTS).index("linear")  # 1 − ∂F/∂y = 1/2: κ₁ = 1, the condition max(1, 1/2) · 2 = 2
    np.testing.assert_allclose([y[k], info.condition[k], w[k]], [2, 2, 2], rtol=10 * eps)
    k = list(ROOTS).index("cos")
    np.testing.assert_allclose(info.condition[k], 1, rtol=10 * eps)  # max(1, 1 + sin z) / (1 + sin z)
    np.testing.assert_allclose(y[k], 0.7390851332151607, rtol=10 * eps)


def test_max_condition_flags_and_keeps():
    q = jnp.asarray(list(ROOTS.values()), jnp.float64)
    y, _, info, w, adjoint = as_numpy(scalar_roots(q, Solver(max_condition=1.5)))
    y0, _, info0, w0, _ = as_numpy(scalar_roots(q, DENSE))
    k = list(ROOTS).index("linear")  # condition 2 > 1.5: flagged, the same values
    assert int(info.status[k]) == int(adjoint.status[k]) == ILL_CONDITIONED and (y[k], w[k]) == (y0[k], w0[k])
    assert int(info.status[list(ROOTS).index("cos")]) == SUCCESS  # condition 1
    # inf: no flag on the estimate; the double root met the step test (its error halves each step): SUCCESS
    y, _, info, _, _ = as_numpy(scalar_roots(q, Solver(max_condition=float("inf"))))
    assert info.status.tolist()[:2] == [SUCCESS, SUCCESS] and np.all(np.abs(y[:2]) < 1e-9)


def test_factors_are_a_fixed_pytree_through_scan_and_switch():
    # dense: the LU of I − J (1 × 1 here); matrix-free: a placeholder of fixed shapes, ignored by the solves
    q = jnp.asarray(list(ROOTS.values()), jnp.float64)
    f = functools.partial(scalar_F, q[3])
    shapes = jax.eval_shape(lambda u: _cyclic.find_root(f, u, Solver(dense_max=0), return_factors=True)[2], jnp.ones(1))
    assert isinstance(shapes, _cyclic.Factors) and (shapes.lu.shape, shapes.permutation.shape, shapes.norm1.shape) == ((0, 0), (0,), ())

    def body(_, qk):  # the branches return factors of one structure; the scan stacks them
        branches = [lambda u: _cyclic.find_root(functools.partial(scalar_F, qk), u, DENSE, return_factors=True)] * 2
        y, info, factors = lax.switch((qk[3] > 0).astype(jnp.int32), branches, jnp.ones((1,), qk.dtype))
        w, adjoint = _cyclic.solve_adjoint(functools.partial(scalar_F, qk), y, jnp.ones_like(y), DENSE, factors)
        return None, (y[0], info.status, w[0], adjoint.status, factors.lu)

    _, (y, status, w, adjoint, lu) = jax.jit(lambda q: lax.scan(body, None, q))(q)
    y0, _, info0, w0, adjoint0 = as_numpy(scalar_roots(q, DENSE))
    np.testing.assert_array_equal(status, info0.status)
    np.testing.assert_array_equal(adjoint, adjoint0.status)
    np.testing.assert_allclose(y, y0, rtol=1e-14)
    np.testing.assert_allclose(w, w0, rtol=1e-12)
    assert lu.shape == (len(ROOTS), 1, 1)


def test_zero_right_hand_side_is_solved_exactly():
    for solver_name in SOLVERS:
        t, tangent = results(solver_name, jnp.float64)["mdp"][2::3]
        assert int(tangent.status) == SUCCESS and float(tangent.residual) == 0.0 and not np.any(t)


def test_condition_estimate_against_numpy(rng):
    # Hager's estimate of ‖A⁻¹‖₁ is a lower bound: the reciprocal condition is over-, never underestimated
    U, _, Vt = np.linalg.svd(rng.normal(size=(7, M, M)))
    singular_values = np.stack([np.linspace(1, s, M) for s in np.logspace(0, -12, 7)])
    A = np.concatenate([np.einsum("bij,bj,bjk->bik", U, singular_values, Vt), np.ones((1, M, M))])
    estimate = jax.jit(jax.vmap(lambda A: _cyclic._reciprocal_condition(_cyclic._lu_factor(A), _cyclic._norm1(A))))(A)
    exact = 1 / np.linalg.cond(A[:-1], 1)
    assert np.all(estimate[:-1] >= exact * (1 - 1e-6)) and np.all(estimate[:-1] <= 3 * exact), (estimate, exact)
    assert estimate[-1] < M * np.finfo(np.float64).eps, "a matrix of ones is singular"


def test_messages():
    for status in _cyclic.Status:
        assert _cyclic.message(np.int32(status)) == _cyclic.MESSAGES[status] and _cyclic.message(status)
    assert "max_steps" in _cyclic.message(NOT_CONVERGED)
    with pytest.raises(ValueError, match="status"):
        _cyclic.message(7)


def test_default_tolerances():
    assert _cyclic.tolerances(Solver(), jnp.float64) == (1e-10, 1e-10)
    assert _cyclic.tolerances(Solver(), jnp.float32) == (1e-5, 1e-5)
    assert _cyclic.tolerances(Solver(rtol=1e-6, atol=0.0), jnp.float64) == (1e-6, 0.0)


@pytest.mark.parametrize(
    "solver, error, field",
    [
        (Solver(rtol=-1.0), ValueError, "rtol"),
        (Solver(rtol=2.0), ValueError, "rtol"),
        (Solver(atol=float("nan")), ValueError, "atol"),
        (Solver(max_steps=-1), ValueError, "max_steps"),
        (Solver(max_steps=2.5), TypeError, "max_steps"),
        (Solver(dense_max=True), TypeError, "dense_max"),
        (Solver(krylov_max=0), ValueError, "krylov_max"),
        (Solver(krylov_restart=0), ValueError, "krylov_restart"),
        (Solver(max_condition=0.5), ValueError, "max_condition"),
        (Solver(max_condition=float("nan")), ValueError, "max_condition"),
        (Solver(max_condition="1e8"), TypeError, "max_condition"),
        (Solver(max_condition=True), TypeError, "max_condition"),
        ((1e-8, None), TypeError, "Solver"),
    ],
)
def test_check_solver_names_the_field(solver, error, field):
    with pytest.raises(error, match=field):
        _cyclic.check_solver(solver)


def test_traced_solver_field_is_refused():
    with pytest.raises(TypeError, match="static"):
        jax.jit(lambda n: _cyclic.check_solver(Solver(dense_max=n)))(3)


def test_bad_block_shapes_name_the_argument():
    with pytest.raises(ValueError, match="`F` must map"):
        _cyclic.find_root(lambda u: u[:2], jnp.zeros(3))
    with pytest.raises(ValueError, match="`u0`"):
        _cyclic.find_root(lambda u: u, jnp.zeros((2, 2)))
    with pytest.raises(TypeError, match="`c`"):
        _cyclic.solve_adjoint(lambda u: u, jnp.zeros(3), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="`u`"):
        _cyclic.solve_tangent(lambda u: u, jnp.zeros(2), jnp.zeros(3))


# --- GMRES on its own: explicit matrices against NumPy ------------------------------------------------


def gmres_system(n=40, seed=3):
    """A nonsymmetric, well-conditioned A (eigenvalues spread around 1) and a right-hand side."""
    rng = np.random.default_rng(seed)
    return np.eye(n) + 0.6 * rng.normal(size=(n, n)) / np.sqrt(n), rng.normal(size=n)


@functools.cache
def gmres_jit(restart):
    solver = Solver(krylov_restart=restart, krylov_max=200)
    return jax.jit(lambda A, b, target: _cyclic._gmres(lambda v: A @ v, b, target, solver))


@pytest.mark.parametrize(
    "restart, dtype",
    [(4, jnp.float64), *(pytest.param(r, t, marks=pytest.mark.slow) for r, t in [(40, jnp.float32), (40, jnp.float64), (4, jnp.float32)])],
)
def test_gmres_against_numpy(dtype, restart):
    A, b = gmres_system()
    rtol, _ = _cyclic.tolerances(Solver(), dtype)
    target = rtol * np.max(np.abs(b))
    expected = np.linalg.solve(A, b)
    for factor in (1.0, 1e18 if dtype == jnp.float64 else 1e15):  # the scale of A does not matter
        x, residual, cycles = gmres_jit(restart)(jnp.asarray(factor * A, dtype), jnp.asarray(b, dtype), target)
        assert x.dtype == dtype and residual <= target
        x = np.asarray(x, np.float64)
        # the residual reported is the true one
        np.testing.assert_allclose(residual, np.max(np.abs(b - factor * A @ x)), rtol=0.5, atol=10 * target)
        bound = tolerance(dtype) * np.linalg.cond(A, 1) * np.max(np.abs(expected))
        np.testing.assert_allclose(factor * x, expected, atol=bound)
        assert (int(cycles) > 1) == (restart == 4)  # restarted when the Krylov space is small
    # a zero right-hand side: x = 0 without a cycle
    x, residual, cycles = gmres_jit(restart)(jnp.asarray(A, dtype), jnp.zeros(40, dtype), 0.0)
    assert not np.any(x) and float(residual) == 0 and int(cycles) == 0


def test_gmres_on_a_singular_operator_stops_finite():
    A, b = gmres_system()
    A[:, 0] = A[:, 1]  # rank deficient, b not in the range: no solution
    x, residual, cycles = gmres_jit(4)(jnp.asarray(A), jnp.asarray(b), 1e-10)
    assert np.all(np.isfinite(x)) and residual > 1e-3 and int(cycles) < 50  # stagnation noticed


def test_gmres_traces_once_whatever_the_restart_length():
    # no Python loop over Krylov iterations: the traced program does not grow with krylov_restart
    def size(restart):
        solver = Solver(krylov_restart=restart, krylov_max=500)
        jaxpr = jax.make_jaxpr(lambda b: _cyclic._gmres(lambda v: 2.0 * v, b, 1e-8, solver))(jnp.ones(100))
        return re.sub(r"\d+|\s+", "", str(jaxpr))  # the program, shapes, constants and layout aside

    assert size(5) == size(50) == size(80)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_small_lu_solves_against_numpy(m):
    """Blocks up to `_TINY` values are factored by unrolled elimination (above it, LAPACK): both
    against NumPy's solve, with a zero leading entry (a pivot needed), transposed, and on columns."""
    rng = np.random.default_rng(m)
    for trial in range(5):
        A = rng.standard_normal((m, m)) + (0 if trial else 0.1) * np.eye(m)
        if trial == 0 and m > 1:
            A[0, 0] = 0.0
        b, B = rng.standard_normal(m), rng.standard_normal((m, 3))
        lu = _cyclic._lu_factor(jnp.asarray(A))
        assert lu[1].dtype == jnp.int32
        tol = 1e-12 * np.linalg.cond(A)
        np.testing.assert_allclose(_cyclic._lu_solve(lu, jnp.asarray(b)), np.linalg.solve(A, b), atol=tol)
        np.testing.assert_allclose(_cyclic._lu_solve(lu, jnp.asarray(b), trans=1), np.linalg.solve(A.T, b), atol=tol)
        np.testing.assert_allclose(_cyclic._lu_solve(lu, jnp.asarray(B)), np.linalg.solve(A, B), atol=tol)
        exact = np.abs(np.linalg.inv(A)).sum(axis=0).max()
        assert float(_cyclic._inverse_norm1(lu)) == pytest.approx(exact, rel=1e-10)
    singular = _cyclic._lu_factor(jnp.zeros((m, m)))
    assert float(_cyclic._inverse_norm1(singular)) == np.inf
