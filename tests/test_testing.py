"""lagjax.testing: every oracle passes on correct programs, and catches a wrong one."""

import jax.numpy as jnp
import numpy as np
import pytest

from lagjax import Computation, Constraints, demo, testing


# -m slow: the demo's test runs every oracle on both programs at the float64 defaults (also 1e-10)
@pytest.mark.slow
@pytest.mark.parametrize("make", [demo.blog_program, demo.two_input_program], ids=["blog", "two_input"])
def test_example_programs_pass_every_oracle_at_1e_10(make):
    """The issue's bar: every oracle, finite differences included, to 1e-10 relative in float64."""
    comp = make()
    x = np.linspace(0.3, -0.2, comp.d)
    errors = testing.check_computation(comp, x, rtol=1e-10, fd_rtol=1e-10)
    assert set(errors) == {
        "multipliers_vs_grad",
        "tangents_vs_jacfwd",
        "dconstraints_vs_jacrev",
        "dlagrangian_vs_grad",
        "dlagrangian_vs_fd",
        "multipliers_vs_solve",
        "multipliers_vs_triangular",
        "reverse_mode_dense",
        "implicit_function",
        "stationarity",
    }


def test_catalogue_passes_default_tolerances(program):
    comp, x = program
    testing.check_computation(comp, x)


def test_float32_passes_float32_tolerances():
    comp = demo.two_input_program()
    testing.check_computation(comp, np.array([0.3, -0.2], np.float32))


def _exp_program(df):
    C = Constraints(["x"])
    C.add_constraint("a", jnp.exp, ["x"], df=df)
    C.add_constraint("b", jnp.sin, ["a"])
    return Computation(lambda z: z[2], C.inputs, C)


def test_a_wrong_partial_is_caught_and_named():
    """A user `df` that is not f's derivative: the oracles that see it fail, by name, with the error."""
    with pytest.raises(AssertionError) as info:
        testing.check_computation(_exp_program(df=jnp.cos), np.array([0.5]))
    message = str(info.value)
    caught = [
        "multipliers_vs_grad",
        "tangents_vs_jacfwd",
        "dconstraints_vs_jacrev",
        "dlagrangian_vs_grad",
        "dlagrangian_vs_fd",
        "multipliers_vs_solve",
        "multipliers_vs_triangular",
    ]
    for name in caught:
        assert f"{name}: largest error" in message
    # The checks of self-consistency (the sweeps agree with lagjax's own D) stay quiet: the solves are right.
    for name in ["reverse_mode_dense", "implicit_function", "stationarity"]:
        assert name not in message
    testing.check_computation(_exp_program(df=jnp.exp), np.array([0.5]))  # and the right df passes


def test_central_difference_is_fourth_order_accurate():
    v = np.linspace(-1, 2, 7)
    fd = testing.central_difference(lambda u: jnp.sum(jnp.sin(u) * u), v)
    np.testing.assert_allclose(fd, np.cos(v) * v + np.sin(v), rtol=1e-10, atol=1e-11)


def test_relative_error_is_normwise():
    assert testing.relative_error([1.0, 2.0], [1.0, 2.0]) == 0
    assert testing.relative_error([1.0, 2.5], [1.0, 2.0]) == pytest.approx(0.25)
    assert testing.relative_error([1e-3], [0.0]) == pytest.approx(1e-3)
    assert testing.relative_error([np.nan], [1.0]) == np.inf
