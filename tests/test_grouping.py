"""Constraints written as closures: grouped by the code they run, their captured values as data."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from lagjax import Computation, Constraints, testing


def closure_program(n, kinds, seed=0):
    """n constraints, each its own function object capturing its own coefficients; the kinds of
    closure in turn."""
    rng = np.random.default_rng(seed)
    C = Constraints([f"x{i}" for i in range(3)])
    names = list(C.names)
    for c in range(n):
        kind = kinds[c % len(kinds)]
        args = [names[j] for j in rng.integers(max(0, len(names) - 10), len(names), 3)]
        row = rng.normal(size=3) / 2
        if kind == "default":  # the loop idiom: a default argument
            f = lambda v, row=row: jnp.tanh(jnp.dot(row, v))  # noqa: E731
        elif kind == "cell":  # a closure cell, and a Python float
            f = (lambda row, s: lambda v: jnp.sin(row @ v) * s)(row, float(rng.uniform(0.5, 1.0)))
        elif kind == "partial":
            f = functools.partial(lambda row, v: jnp.tanh(row @ v), row)
        C.add_constraint(f"z{c}", f, args)
        names.append(f"z{c}")
    return Computation(lambda z: jnp.sum(z[-3:] ** 2), C.inputs, C), rng.uniform(-1, 1, 3)


def test_closures_form_one_group_per_kind_and_pass_every_oracle():
    comp, x = closure_program(24, ["default", "cell", "partial"])
    assert len(comp.schedule.groups) == 3
    testing.check_computation(comp, x)  # the oracles call each original closure, not the group


def test_ten_thousand_closures_are_one_group():
    comp, x = closure_program(10_000, ["default"])
    assert len(comp.schedule.groups) == 1
    assert comp.schedule.group_data[0][0].shape == (10_000, 3)  # the captured rows, stacked
    assert np.all(np.isfinite(np.asarray(comp.gradient(x))))


def test_float32_closures_keep_float32():
    comp, x = closure_program(12, ["cell"])
    x32 = jnp.asarray(x, jnp.float32)
    assert comp.gradient(x32).dtype == jnp.float32
    np.testing.assert_allclose(comp.gradient(x32), comp.gradient(x), rtol=1e-4)


def test_code_needing_python_numbers_groups_by_value():
    C = Constraints(["x"])
    for i in range(12):  # v[:k] needs k as a Python int: cannot take k as traced data
        C.add_constraint(f"z{i}", lambda v, k=i % 3 + 1: jnp.sum(v[:k]), ["x", "x", "x"])
    comp = Computation(lambda z: jnp.sum(z**2), C.inputs, C)
    assert len(comp.schedule.groups) == 3  # one per distinct k
    assert_gradient_matches_the_plain_loop(comp, np.array([0.7]))


def test_many_groups_warn_once_saying_what_to_do():
    C = Constraints(["x"])
    for i in range(70):  # 70 different code objects: no grouping possible
        C.add_constraint(f"z{i}", eval("lambda v: jnp.sin(v[0])", {"jnp": jnp}), ["x"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Computation(lambda z: jnp.sum(z), C.inputs, C)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "70 groups" in messages[0] and "lambda v, row=row" in messages[0]


def test_captured_jax_arrays_and_functions():
    scale = jax.numpy.asarray(2.0)
    C = Constraints(["x", "y"])
    for i, g in enumerate([jnp.sin, jnp.cos, jnp.sin]):  # a captured function is part of the template
        C.add_constraint(f"z{i}", lambda v, g=g, w=scale * (i + 1): g(w * v[0]) + v[1], ["x", "y"])
    comp = Computation(lambda z: jnp.sum(z[2:]), C.inputs, C)
    assert len(comp.schedule.groups) == 2  # sin and cos
    assert_gradient_matches_the_plain_loop(comp, np.array([0.3, -0.4]))


def assert_gradient_matches_the_plain_loop(comp, x):
    expected = jax.grad(testing.reference_forward(comp))(x)
    assert testing.relative_error(comp.gradient(x), expected) <= 1e-12


def test_a_traced_capture_builds_inside_jax_grad():
    def loss(w):
        C = Constraints(["x"])
        C.add_constraint("y", lambda v: w * jnp.sin(jnp.sum(v)), ["x"])  # w is a tracer here
        return Computation(lambda z: z[1], C.inputs, C).forward(jnp.array([1.0]))

    np.testing.assert_allclose(jax.grad(loss)(2.0), np.sin(1.0), rtol=1e-12)


def test_closures_over_a_loop_variable_see_its_last_value_as_python_does():
    C = Constraints(["x", "y"])
    rows = [np.array([1.0, 0.0]), np.array([1.0, 2.0])]
    for i, row in enumerate(rows):  # late binding: both lambdas read the loop's last `row`
        C.add_constraint(f"y{i}", lambda v: jnp.dot(row, v), ["x", "y"])
    comp = Computation(lambda z: z[2] + z[3], C.inputs, C)
    x = np.array([1.0, 2.0])
    np.testing.assert_array_equal(comp.solve_constraints(x), testing.reference_solve(comp)(x))


def test_an_array_shared_by_every_constraint_is_kept_once():
    W = np.linspace(0, 1, 50_000)
    f = lambda v, W=W: W[-1] * v[0]  # noqa: E731  (one function, one captured array)
    C = Constraints(["x"])
    for i in range(100):
        C.add_constraint(f"z{i}", f, ["x"])
    comp = Computation(lambda z: jnp.sum(z), C.inputs, C)
    assert comp.schedule.group_data[0][0].shape == (50_000,)  # not (100, 50_000)
    np.testing.assert_allclose(comp.gradient(np.array([0.5])), [101.0])


def test_an_infinite_gradient_stays_infinite_through_padding_positions():
    C = Constraints(["x"])
    C.add_constraint("a", jnp.sqrt, ["x"])
    C.add_constraint("b", jnp.sqrt, ["a"])
    C.add_constraint("c", jnp.sum, ["a", "b"])  # arity 2: the arity-1 rows get a padding position
    comp = Computation(lambda z: z[2], C.inputs, C)
    x = np.array([0.0])
    expected = jax.grad(testing.reference_forward(comp))(x)
    assert np.isinf(expected[0])
    np.testing.assert_array_equal(comp.gradient(x), expected)
    np.testing.assert_array_equal(comp.jacobian(x)[:, 0], jax.jacfwd(testing.reference_solve(comp))(x)[:, 0])
