"""Bad input: a clear error at the call that made the mistake, naming the variable or argument."""

import jax.numpy as jnp
import numpy as np
import pytest

from lagjax import Computation, Constraints, SolveError


@pytest.fixture
def C():
    C = Constraints(["x", "y"])
    C.add_constraint("a", jnp.exp, ["x"])
    return C


def test_name_never_defined(C):
    C.add_constraint("b", jnp.sum, ["a", "q"])  # a forward reference: allowed until the program is finalised
    with pytest.raises(ValueError, match=r"never defined: 'q' \(read by 'b'\)"):
        Computation(lambda z: z[-1], C.inputs, C)


def test_unhashable_name_in_right_hand_side(C):
    with pytest.raises(TypeError, match=r"'b' reads \['q'\]"):
        C.add_constraint("b", jnp.sum, ["a", ["q"]])
    assert len(C) == 1 and "b" not in C.names  # nothing half-added


def test_variable_defined_twice(C):
    with pytest.raises(ValueError, match=r"'a' is already defined by the constraint `a = exp\(x\)`"):
        C.add_constraint("a", jnp.sin, ["y"])


def test_input_redefined(C):
    with pytest.raises(ValueError, match=r"'y' is an input of this program and cannot be redefined"):
        C.add_constraint("y", jnp.sin, ["x"])


def test_variable_in_its_own_right_hand_side_undetermined(C):
    C.add_constraint("b", jnp.sum, ["a", "b"])  # b = a + b: a cycle with no solution
    comp = Computation(lambda z: z[-1], C.inputs, C)
    with pytest.raises(SolveError, match=r"cyclic block of \['b'\] failed solving its constraints"):
        comp.gradient([1.0, 2.0])


def test_empty_right_hand_side(C):
    with pytest.raises(ValueError, match=r"The right-hand side of 'b' is empty"):
        C.add_constraint("b", jnp.sum, [])


def test_right_hand_side_as_a_string(C):
    with pytest.raises(TypeError, match=r"The right-hand side of 'b' must be a list of names, got 'a'"):
        C.add_constraint("b", jnp.sin, "a")


def test_f_returning_the_wrong_shape(C):
    with pytest.raises(ValueError, match=r"`f` of constraint 'b' returned shape \(2,\).*must return a scalar"):
        C.add_constraint("b", lambda v: v * 2, ["a", "y"])


def test_f_that_does_not_trace(C):
    def numpy_only(v):
        return np.exp(np.asarray(v)).sum()

    with pytest.raises(TypeError, match=r"`f` of constraint 'b' failed.*use jax.numpy") as info:
        C.add_constraint("b", numpy_only, ["a"])
    assert info.value.__cause__ is not None  # the original error is kept beneath


def test_f_returning_integers(C):
    with pytest.raises(TypeError, match=r"`f` of constraint 'b' must return floating-point values"):
        C.add_constraint("b", lambda v: jnp.argmax(v), ["a", "y"])


def test_df_returning_the_wrong_number_of_partials(C):
    with pytest.raises(ValueError, match=r"`df` of constraint 'b' returned shape \(1,\).*the 2 partial"):
        C.add_constraint("b", jnp.sum, ["a", "y"], df=lambda v: jnp.ones(1))


def test_not_callable(C):
    with pytest.raises(TypeError, match=r"`f` for 'b' must be callable"):
        C.add_constraint("b", 3.0, ["a"])


def test_duplicate_and_malformed_inputs():
    with pytest.raises(ValueError, match=r"Input 'x' is listed twice"):
        Constraints(["x", "x"])
    with pytest.raises(TypeError, match=r"`inputs` must be a list of names"):
        Constraints("xy")


def test_non_scalar_objective(C):
    with pytest.raises(ValueError, match=r"The objective `f` returned shape \(3,\).*must be a scalar"):
        Computation(lambda z: z, C.inputs, C)


def test_objective_gradient_of_the_wrong_shape(C):
    with pytest.raises(ValueError, match=r"`df` returned shape \(2,\).*shape \(3,\)"):
        Computation(lambda z: z[2], C.inputs, C, df=lambda z: z[:2])


def test_inputs_that_are_not_the_programs(C):
    with pytest.raises(ValueError, match=r"`inputs` must be the program's input indices"):
        Computation(lambda z: z[2], [0], C)


@pytest.fixture
def comp(C):
    return Computation(lambda z: z[2], C.inputs, C)


def test_x_of_the_wrong_length(comp):
    for method in [comp.solve_constraints, comp.forward, comp.multipliers, comp.gradient, comp.jacobian]:
        with pytest.raises(ValueError, match=r"`x` must have shape \(2,\), one value per input \['x', 'y'\]; got shape \(3,\)"):
            method(np.zeros(3))


def test_other_arguments_of_the_wrong_shape(comp):
    with pytest.raises(ValueError, match=r"`z` must have shape \(3,\)"):
        comp.dconstraints(np.zeros(2))
    with pytest.raises(ValueError, match=r"`l` must have shape \(3,\)"):
        comp.lagrangian(np.zeros(2), np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"`D` must have shape \(3, 3\)"):
        comp.reverse_mode(np.zeros((2, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"`v` must have shape \(2,\) or \(m, 2\)"):
        comp.tangents(np.zeros(2), np.zeros(3))


def test_unknown_name(C):
    with pytest.raises(KeyError, match=r"No variable named 'nope'"):
        C.index("nope")


def test_complex_inputs_are_refused(comp):
    with pytest.raises(TypeError, match=r"`x` is complex"):
        comp.gradient(np.array([1 + 2j, 0]))


def test_inputs_that_are_not_a_list(C):
    with pytest.raises(ValueError, match=r"`inputs` must be the program's input indices.*got 1"):
        Computation(lambda z: z[2], 1, C)


def test_random_program_arguments():
    from lagjax import testing

    with pytest.raises(ValueError, match=r"1 <= depth <= n; got n=2, depth=8"):
        testing.random_program(2, depth=8)


def test_unhashable_callables_are_fine():
    class Scale:  # a callable object that is not hashable (like a module holding arrays)
        __hash__ = None

        def __call__(self, v):
            return 2.0 * v[0]

    C = Constraints(["x"])
    C.add_constraint("a", Scale(), ["x"])
    comp = Computation(lambda z: z[1] ** 2, C.inputs, C)
    np.testing.assert_allclose(comp.gradient(np.array([1.5])), [8 * 1.5])


def test_shape_errors_in_f_keep_their_own_message(C):
    with pytest.raises(TypeError, match=r"`f` of constraint 'b' failed") as info:
        C.add_constraint("b", lambda v: v[0] @ v[1:], ["a", "y"])
    assert "jnp.exp" not in str(info.value)  # the numpy hint is only for numpy calls on tracers
