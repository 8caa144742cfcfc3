"""Jitted and not, no retracing, float32 and float64, JAX's own AD through the forward pass."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from programs import PROGRAMS, counted_program

from lagjax import Computation, Constraints


@pytest.mark.parametrize("name", ["arities"])  # several arities and groups: the lax.switch path
def test_jitted_and_not_agree_with_the_reference(name):
    """The sweeps run eagerly (`jax.disable_jit`, scans as Python loops) and under an outer `jax.jit`."""
    comp, x = PROGRAMS[name]()
    grad = jax.grad(lambda x: comp.f(jnp.asarray(comp.solve_constraints(x))))(x)  # differentiating the scan
    v = np.linspace(1, -1, comp.d)
    with jax.disable_jit():
        z_eager, lam_eager = comp.multipliers(x)
        t_eager = comp.tangents(x, v)[1]
    z_jit, lam_jit = jax.jit(comp.multipliers)(x)
    t_jit = jax.jit(comp.tangents)(x, v)[1]
    chex.assert_trees_all_close((z_eager, lam_eager, t_eager), (z_jit, lam_jit, t_jit), rtol=1e-12, atol=1e-12)
    chex.assert_trees_all_close(lam_jit[: comp.d], grad, rtol=1e-10)
    chex.assert_trees_all_close(jax.jit(comp.gradient)(x), grad, rtol=1e-10)


def test_repeated_calls_do_not_retrace():
    comp, traces = counted_program()
    for method in [comp.gradient, comp.solve_constraints, comp.forward, lambda x: comp.tangents(x, [1.0, 0.0])]:
        method(np.array([0.1, 0.2]))
        before = traces["count"]
        for x in np.random.default_rng(0).normal(size=(3, 2)):
            method(x)
        assert traces["count"] == before, "a repeated call with the same shape and dtype retraced"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_keep_the_input_dtype(dtype):
    comp, x = PROGRAMS["two_input"]()  # its objective holds float64 constants: results still follow x
    x = x.astype(dtype)
    z, lam = comp.multipliers(x)
    _, t = comp.tangents(x, np.ones(2, dtype))
    outputs = [z, lam, t, comp.gradient(x), comp.forward(x), comp.dconstraints(z), comp.jacobian(x)]
    outputs += [*comp.dlagrangian(x, z, lam), comp.lagrangian(x, z, lam), comp.penalties(z)]
    assert all(o.dtype == dtype for o in outputs)


def test_integer_inputs_are_promoted_to_float():
    comp, _ = PROGRAMS["two_input"]()
    z = comp.solve_constraints(np.array([1, 0]))
    assert jnp.issubdtype(z.dtype, jnp.floating)
    np.testing.assert_allclose(z[:2], [1.0, 0.0])


def test_tangents_for_several_directions_at_once():
    comp, x = PROGRAMS["wide"]()
    V = np.random.default_rng(1).normal(size=(5, comp.d))
    _, T = comp.tangents(x, V)
    assert T.shape == (5, comp.n)
    np.testing.assert_allclose(T, V @ np.asarray(comp.jacobian(x)).T, rtol=1e-12, atol=1e-12)


def test_a_program_without_constraints():
    C = Constraints(["x", "y"])
    comp = Computation(lambda z: jnp.sum(z**3), C.inputs, C)
    x = np.array([0.5, -2.0])
    np.testing.assert_allclose(comp.gradient(x), 3 * x**2)
    np.testing.assert_allclose(comp.jacobian(x), np.eye(2))


def test_vmap_over_inputs():
    comp, x = PROGRAMS["deep"]()
    xs = x + np.random.default_rng(2).normal(size=(4, comp.d)) * 0.1
    batched = jax.vmap(comp.gradient)(xs)
    np.testing.assert_allclose(batched, np.stack([comp.gradient(xi) for xi in xs]), rtol=1e-12)
