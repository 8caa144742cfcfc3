"""The original code's checks, ported: each quantity of the method against an independent answer.

Tolerances (normwise: |actual - expected| <= rtol * max|expected|, elementwise):
float64 1e-10, float32 1e-4; finite differences 1e-8 in float64 (Richardson-extrapolated central
differences), 5e-2 in float32.
"""

import chex
import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
from conftest import constraint_vector

from lagjax import testing

RTOL = {jnp.dtype("float64"): 1e-10, jnp.dtype("float32"): 1e-4}
FD_RTOL = {jnp.dtype("float64"): 1e-8, jnp.dtype("float32"): 5e-2}


def assert_close(actual, expected, rtol):
    expected = np.asarray(expected, np.float64)
    chex.assert_trees_all_close(
        np.asarray(actual, np.float64), expected, rtol=rtol, atol=rtol * max(np.abs(expected).max(initial=0), 1e-30)
    )


def test_reverse_mode(case):
    """λ[:d] is ∇f(x): from the dense D, from the sparse partials, and `gradient`."""
    comp, x, dtype, ref = case
    expected = ref["grad"]
    z = comp.solve_constraints(x)
    lam_dense = comp.reverse_mode(comp.dconstraints(z), comp.df(z))
    z2, lam = comp.multipliers(x)
    assert lam.dtype == dtype and z2.dtype == dtype
    assert_close(lam_dense[: comp.d], expected, RTOL[dtype])
    assert_close(lam[: comp.d], expected, RTOL[dtype])
    assert_close(comp.gradient(x), expected, RTOL[dtype])
    assert_close(z2, ref["z"], RTOL[dtype])


def test_forward_mode(case):
    """Dᵀ t = -e_i gives column i of dz/dx, from the dense D and from the sparse partials."""
    comp, x, dtype, ref = case
    dz_dx = ref["dz_dx"]
    grad = ref["grad"]
    z = comp.solve_constraints(x)
    D = comp.dconstraints(z)
    for i in range(comp.d):
        t = comp.forward_mode(D, jnp.zeros(comp.n, dtype).at[i].set(1))
        assert_close(t, dz_dx[:, i], RTOL[dtype])
        _, t_sparse = comp.tangents(x, jnp.zeros(comp.d, dtype).at[i].set(1))
        assert t_sparse.dtype == dtype
        assert_close(t_sparse, dz_dx[:, i], RTOL[dtype])
        assert_close(comp.df(z) @ t_sparse, grad[i], RTOL[dtype])  # df/dz · dz/dx_i = df/dx_i
    assert_close(comp.jacobian(x), dz_dx, RTOL[dtype])


def test_implicit_function_view(case):
    """dz/dx = -(Dᵀ)⁻¹ ∂C/∂x, and ∇f(z) dz/dx = ∇f(x), at a feasible z only."""
    comp, x, dtype, ref = case
    z = comp.solve_constraints(x)
    dC_dx = np.zeros((comp.n, comp.d))
    dC_dx[comp.inputs, comp.inputs] = 1
    dz_dx = -np.linalg.solve(np.asarray(comp.dconstraints(z), np.float64).T, dC_dx)
    assert_close(dz_dx, ref["dz_dx"], 10 * RTOL[dtype])
    assert_close(np.asarray(comp.df(z)) @ dz_dx, ref["grad"], 10 * RTOL[dtype])


def test_dconstraints(case):
    """D against the Jacobian of the constraint vector, transposed: column i is ∇_z of penalty i."""
    comp, x, dtype, ref = case
    z = comp.solve_constraints(x)
    D = comp.dconstraints(z)
    assert D.shape == (comp.n, comp.n) and D.dtype == dtype
    assert_close(D, ref["D"], RTOL[dtype])
    assert_close(np.diag(D), -np.ones(comp.n), 0)
    assert_close(np.tril(D, -1), np.zeros((comp.n, comp.n)), 0)  # upper triangular in topological order


def test_dlagrangian(case, rng):
    """dlagrangian at an arbitrary (x, z, λ) against jax.grad and central finite differences."""
    comp, x, dtype, ref = case
    z = jnp.asarray(comp.solve_constraints(x) + rng.uniform(-0.1, 0.1, comp.n), dtype)
    l = jnp.asarray(rng.uniform(-1, 1, comp.n), dtype)
    dx, dz, dl = comp.dlagrangian(x, z, l)
    gx, gz, gl = jax.grad(comp.lagrangian, argnums=(0, 1, 2))(x, z, l)
    for ours, theirs in [(dx, gx), (dz, gz), (dl, gl)]:
        assert_close(ours, theirs, RTOL[dtype])
    cuts = [comp.d, comp.d + comp.n]
    fd = testing.central_difference(lambda v: comp.lagrangian(*jnp.split(v, cuts)), jnp.concatenate([x, z, l]))
    assert_close(jnp.concatenate([dx, dz, dl]), fd, FD_RTOL[dtype])
    # The Lagrangian itself, summed by hand from its definition.
    pen = constraint_vector(comp, x)(z)[comp.d :]
    by_hand = comp.f(z) + l[: comp.d] @ (x - z[: comp.d]) + l[comp.d :] @ pen
    assert_close(comp.lagrangian(x, z, l), by_hand, RTOL[dtype])
    assert_close(comp.penalties(z), pen, RTOL[dtype])


def test_linear_system(case):
    """λ solves D λ = -∇f: against a general dense solve and a triangular solve."""
    comp, x, dtype, ref = case
    z, lam = comp.multipliers(x)
    D, g = comp.dconstraints(z), comp.df(z)
    assert_close(lam, np.linalg.solve(np.asarray(D, np.float64), -np.asarray(g, np.float64)), 10 * RTOL[dtype])
    assert_close(lam, jax.scipy.linalg.solve_triangular(D, -g, lower=False), RTOL[dtype])


def test_block_coordinate(case):
    """At (z*, λ*): ∇_x L = λ[:d], ∇_z L = 0, ∇_λ L = 0."""
    comp, x, dtype, ref = case
    z, lam = comp.multipliers(x)
    dx, dz, dl = comp.dlagrangian(x, z, lam)
    assert_close(dx, lam[: comp.d], 0)
    scale = np.abs(np.asarray(lam)).max()
    assert np.abs(np.asarray(dz)).max() <= RTOL[dtype] * scale
    assert np.abs(np.asarray(dl)).max() <= RTOL[dtype] * max(np.abs(np.asarray(z)).max(), 1)
