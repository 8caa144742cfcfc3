"""Block groups: many cyclic blocks of one structure, solved by one vmapped solver, against closed forms.

The programs are linear (or linear in the cycles), so every answer has a closed form computed in
NumPy, independently of lagjax: z = (I − W)⁻¹ B x for the whole program, gradients by the transposed
solve.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lagjax
from lagjax import Computation, Constraints, testing


def pairs_program(alpha, beta, order=None, dtype_names=None):
    """Pairs `a_i = α_i b_i + x_i`, `b_i = β_i a_i + y`: one 2-variable cycle each, in bulk; objective
    Σ_i (i + 1) a_i + b_i. `order`: a permutation of the 2N constraints, added one at a time in that
    order (forward references) instead of in bulk."""
    N = len(alpha)
    C = Constraints([f"x{i}" for i in range(N)] + ["y"])
    a = lambda v, al: al * v[0] + v[1]  # noqa: E731
    b = lambda v, be: be * v[0] + v[1]  # noqa: E731
    if order is None:
        C.add_constraints([f"a{i}" for i in range(N)], a, [[f"b{i}", f"x{i}"] for i in range(N)], data=np.asarray(alpha))
        C.add_constraints([f"b{i}" for i in range(N)], b, [[f"a{i}", "y"] for i in range(N)], data=np.asarray(beta))
    else:
        for k in order:
            i = k % N
            if k < N:
                C.add_constraint(f"a{i}", lambda v, al=float(alpha[i]): a(v, al), [f"b{i}", f"x{i}"])
            else:
                C.add_constraint(f"b{i}", lambda v, be=float(beta[i]): b(v, be), [f"a{i}", "y"])
    ia = np.asarray([C.index(f"a{i}") for i in range(N)])
    ib = np.asarray([C.index(f"b{i}") for i in range(N)])
    weights = jnp.arange(1, N + 1, dtype=float)
    return Computation(lambda z: z[ia] @ weights.astype(z.dtype) + jnp.sum(z[ib]), C.inputs, C), ia, ib


def pairs_closed_form(alpha, beta, x, y):
    """(a, b, ∂f/∂x, ∂f/∂y) of `pairs_program` in NumPy: a = (x + α y) / (1 − αβ), b = β a + y."""
    alpha, beta = np.asarray(alpha, np.float64), np.asarray(beta, np.float64)
    a = (x + alpha * y) / (1 - alpha * beta)
    b = beta * a + y
    w = np.arange(1, len(alpha) + 1, dtype=float)
    da_dx, da_dy = 1 / (1 - alpha * beta), alpha / (1 - alpha * beta)
    gx = w * da_dx + beta * da_dx
    gy = np.sum(w * da_dy + beta * da_dy + 1)
    return a, b, gx, gy


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_many_pairs_are_one_block_group_and_match_the_closed_form(dtype):
    N = 40
    rng = np.random.default_rng(0)
    alpha, beta = rng.uniform(-0.9, 0.9, N), rng.uniform(-0.9, 0.9, N)
    comp, ia, ib = pairs_program(alpha, beta)
    assert len(comp.blocks) == N and len(comp.schedule.block_groups) == 1
    (group,) = comp.schedule.block_groups
    assert group.width > 1 and group.steps.size > N, "a block step of many members, padded"
    x, y = rng.uniform(-1, 1, N), 0.3
    inputs = jnp.asarray(np.r_[x, y], dtype)
    a, b, gx, gy = pairs_closed_form(alpha, beta, x, y)
    tol = 1e-10 if dtype == jnp.float64 else 2e-4
    if dtype == jnp.float64:
        z = comp.solve_constraints(inputs)
        assert testing.relative_error(z[ia], a) < tol and testing.relative_error(z[ib], b) < tol
    gradient = comp.gradient(inputs)
    assert gradient.dtype == dtype and testing.relative_error(gradient, np.r_[gx, gy]) < tol


@pytest.mark.slow
def test_many_pairs_tangents_as_function_and_status():
    N = 40
    rng = np.random.default_rng(0)
    alpha, beta = rng.uniform(-0.9, 0.9, N), rng.uniform(-0.9, 0.9, N)
    comp, ia, _ = pairs_program(alpha, beta)
    x, y = rng.uniform(-1, 1, N), 0.3
    inputs = jnp.asarray(np.r_[x, y])
    _, _, gx, gy = pairs_closed_form(alpha, beta, x, y)
    J = comp.jacobian(inputs)  # the tangents: forward substitution with the blocks' tangent solves
    assert testing.relative_error(J[ia, :N], np.diag(1 / (1 - alpha * beta))) < 1e-10
    assert testing.relative_error(jax.grad(comp.as_function())(inputs), np.r_[gx, gy]) < 1e-10
    report = comp.status(inputs)
    assert report["forward"].status.shape == (N,) and not np.any(np.asarray(report["forward"].status))
    assert report["multipliers"].status.shape == (N,) and not np.any(np.asarray(report["multipliers"].status))
    # the active part: blocks of pairs 2 and 5 only, reusing the forward solve's factors
    R = comp.restriction((2, 5))
    assert len(R.schedule.block_groups) == 1 and R._factor_sources[0][0] == 0
    assert testing.relative_error(comp.gradient(inputs, wrt=["x2", "x5"]), gx[[2, 5]]) < 1e-10
    assert testing.relative_error(comp.gradient(inputs, wrt=["y"]), [gy]) < 1e-10


def test_traces_do_not_grow_with_the_number_of_blocks():
    traces = []  # one entry per trace of the user's function (a captured int would be data: traced)

    def build(N):
        C = Constraints([f"x{i}" for i in range(N)])

        def f(v, c):
            traces.append(1)
            return c * jnp.tanh(v[0]) + v[1]

        C.add_constraints([f"a{i}" for i in range(N)], f, [[f"b{i}", f"x{i}"] for i in range(N)], data=np.linspace(0.1, 0.5, N))
        C.add_constraints([f"b{i}" for i in range(N)], lambda v: 0.5 * jnp.sin(v[0]), [[f"a{i}"] for i in range(N)])
        return Computation(lambda z: jnp.sum(z**2), C.inputs, C)

    for N in (3, 60):
        comp = build(N)
        assert len(comp.schedule.block_groups) == 1
        traces.clear()
        jax.block_until_ready(comp.solve_constraints(jnp.linspace(-1, 1, N)))
        counts = len(traces)
        if N == 3:
            few = counts
    assert counts == few, "the user's function is traced as often for 60 blocks as for 3"


def test_failed_members_are_nan_alone_and_named():
    N = 40  # the size of the test above: the same compiled code (JAX's persistent cache in the tests)
    alpha, beta = np.full(N, 0.5), np.full(N, 0.4)
    alpha[[3, 7]], beta[[3, 7]] = 1.0, 1.0  # a = b + x, b = a + y: no solution unless x + y = 0
    comp, ia, ib = pairs_program(alpha, beta)
    x, y = np.linspace(0.1, 1.0, N), 0.3
    inputs = jnp.asarray(np.r_[x, y])
    z = np.asarray(jax.jit(comp.solve_constraints)(inputs))
    a, b, _, _ = pairs_closed_form(alpha, beta, x, y)
    bad = np.isin(np.arange(N), [3, 7])
    assert np.all(np.isnan(z[ia][bad])) and np.all(np.isnan(z[ib][bad]))
    assert testing.relative_error(z[ia][~bad], a[~bad]) < 1e-12 and testing.relative_error(z[ib][~bad], b[~bad]) < 1e-12
    status = np.asarray(comp.status(inputs)["forward"].status)
    names = [comp.blocks[k].names for k in np.flatnonzero(status)]
    assert names == [("a3", "b3"), ("a7", "b7")]
    with pytest.raises(lagjax.SolveError, match=r"\['a3', 'b3'\] failed.*1 other block\(s\) failed too \(\['a7', 'b7'\]") as error:
        comp.solve_constraints(inputs)
    assert error.value.blocks == [("a3", "b3"), ("a7", "b7")]


def test_failure_reaches_only_what_reads_it():
    C = Constraints(["x", "y"])
    C.add_constraints(["a0", "a1"], lambda v, c: c * v[0] + v[1], [["a0", "x"], ["a1", "y"]], data=np.asarray([0.5, 1.0]))
    C.add_constraint("u", jnp.sum, ["a0"])  # downstream of the good block only
    C.add_constraint("w", jnp.sum, ["a1", "x"])  # downstream of the failed one
    comp = Computation(lambda z: z[-1], C.inputs, C)
    assert len(comp.schedule.block_groups) == 1
    z = np.asarray(jax.jit(comp.solve_constraints)(jnp.asarray([1.0, 2.0])))
    assert z[C.index("a0")] == pytest.approx(2.0) and z[C.index("u")] == pytest.approx(2.0)
    assert np.isnan(z[C.index("a1")]) and np.isnan(z[C.index("w")])


def test_shuffled_program_and_per_constraint_building_agree():
    N = 9
    rng = np.random.default_rng(1)
    alpha, beta = rng.uniform(-0.8, 0.8, N), rng.uniform(-0.8, 0.8, N)
    comp, _, _ = pairs_program(alpha, beta, order=rng.permutation(2 * N))
    assert len(comp.schedule.block_groups) == 1
    x, y = rng.uniform(-1, 1, N), -0.4
    _, _, gx, gy = pairs_closed_form(alpha, beta, x, y)
    assert testing.relative_error(comp.gradient(jnp.asarray(np.r_[x, y])), np.r_[gx, gy]) < 1e-10


def linear_program(n, d, rows):
    """`z_i = Σ w z[js] + x_k` in Constraints, row i = (js, w, k); and its closed form (W, B)."""
    C = Constraints([f"x{k}" for k in range(d)])
    W, B = np.zeros((n, n)), np.zeros((n, d))
    for i, (js, w, k) in enumerate(rows):
        C.add_constraint(f"z{i}", lambda v, w=np.asarray(w): jnp.asarray(w, v.dtype) @ v[:-1] + v[-1], [f"z{j}" for j in js] + [f"x{k}"])
        np.add.at(W[i], js, w)
        B[i, k] += 1
    return C, W, B


def test_blocks_of_one_group_along_a_chain():
    """Cycles hung along a chain: each a block at its own level, all of one group (width 1 steps)."""
    M, gap = 6, 4
    rows, n = [], 0
    previous = None
    for _ in range(M):
        for _ in range(gap):  # chain links: c = 0.9 c_prev + x0
            rows.append(([previous] if previous is not None else [], [0.9] if previous is not None else [], 0))
            previous = n
            n += 1
        p, q = n, n + 1  # p = 0.3 q + 0.5 c, q = 0.6 p + x1: a cycle fed by the chain
        rows.append(([q, previous], [0.3, 0.5], 1))
        rows.append(([p], [0.6], 1))
        n += 2
        rows.append(([previous, p], [0.5, 0.4], 0))  # the chain continues from the cycle
        previous = n
        n += 1
    C, W, B = linear_program(n, 2, rows)
    c = np.linspace(-1, 1, n)
    comp = Computation(lambda z: z[2:] @ jnp.asarray(c, z.dtype), C.inputs, C)
    assert len(comp.blocks) == M and len(comp.schedule.block_groups) == 1
    assert comp.schedule.block_groups[0].width == 1 and len({int(s) for s in comp.schedule.block_groups[0].step_level}) == M
    x = np.asarray([0.7, -0.2])
    A = np.eye(n) - W
    assert testing.relative_error(comp.gradient(x), B.T @ np.linalg.solve(A.T, c)) < 1e-10


@pytest.mark.slow
def test_block_groups_pass_the_dense_oracles():
    N = 5
    rng = np.random.default_rng(2)
    comp, _, _ = pairs_program(rng.uniform(-0.8, 0.8, N), rng.uniform(-0.8, 0.8, N))
    errors = testing.check_computation(comp, jnp.asarray(rng.uniform(-1, 1, N + 1)))
    assert errors  # check_computation raises on a failed oracle


@st.composite
def many_small_cycles(draw):
    """K small cycles (1 to 3 variables) drawn from two templates, each reading earlier cycles'
    variables: linear, a contraction (row sums of |W| <= 0.9), so z = (I − W)⁻¹ B x."""
    K, d = draw(st.integers(2, 12)), draw(st.integers(1, 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    templates = [rng.integers(1, 4) for _ in range(2)]
    rows, n = [], 0
    for _ in range(K):
        size = templates[rng.integers(2)]
        first = n
        for j in range(size):
            inner = [first + (j + 1) % size]  # the cycle: each reads the next (a self-loop if size 1)
            outer = [int(rng.integers(0, first))] if first and rng.random() < 0.7 else []
            w = rng.uniform(-1, 1, len(inner) + len(outer))
            w *= 0.9 / np.abs(w).sum()
            rows.append((inner + outer, w, int(rng.integers(d))))
        n += size
    return K, n, d, rows, rng.uniform(-1, 1, n), rng.uniform(-1, 1, d)


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(many_small_cycles())
def test_random_programs_of_many_small_cycles_against_the_closed_form(spec):
    K, n, d, rows, c, x = spec
    C, W, B = linear_program(n, d, rows)
    comp = Computation(lambda z: z[d:] @ jnp.asarray(c, z.dtype), C.inputs, C)
    assert len(comp.blocks) == K and len(comp.schedule.block_groups) <= K
    A = np.eye(n) - W
    assert testing.relative_error(comp.gradient(x), B.T @ np.linalg.solve(A.T, c)) < 1e-10
    assert testing.relative_error(comp.jacobian(x)[d:], np.linalg.solve(A, B)) < 1e-10


def test_a_degenerate_member_is_flagged_alone():
    """y_i = y_i − s_i (y_i − x_i)² − (1 − s_i)(y_i − x_i): a simple root at x_i where s_i = 0, a double
    root where s_i = 1 (I − ∂F/∂y = 0 there): that member alone is flagged, its value kept."""
    s = np.asarray([0.0, 1.0, 0.0, 0.0])
    C = Constraints([f"x{i}" for i in range(4)])
    C.add_constraints(
        [f"y{i}" for i in range(4)],
        lambda v, s: v[0] - s * (v[0] - v[1]) ** 2 - (1 - s) * (v[0] - v[1]),
        [[f"y{i}", f"x{i}"] for i in range(4)],
        data=s,
    )
    comp = Computation(lambda z: jnp.sum(z[4:]), C.inputs, C)
    assert len(comp.schedule.block_groups) == 1
    x = jnp.asarray([0.5, 0.7, -0.25, 2.0])
    report = jax.jit(comp.status)(x)["forward"]
    status = np.asarray(report.status)
    assert status.tolist() == [lagjax.Status.SUCCESS, lagjax.Status.ILL_CONDITIONED, lagjax.Status.SUCCESS, lagjax.Status.SUCCESS]
    assert float(report.condition[1]) > 1e7 > float(np.max(np.asarray(report.condition)[[0, 2, 3]]))
    with pytest.warns(lagjax.ConditionWarning, match=r"\['y1'\] is ill-conditioned") as caught:
        z = np.asarray(comp.solve_constraints(x))
    assert caught[0].message.blocks == [("y1",)]
    assert np.all(z[4:][[0, 2, 3]] == np.asarray(x)[[0, 2, 3]])
    assert abs(z[5] - 0.7) < 1e-4  # a double root: accurate to about the square root of the tolerance
