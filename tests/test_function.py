"""`Computation.as_function`: every JAX transformation against the plain forward pass, and proof that
the derivatives come from lagjax's sweeps (not from JAX differentiating the forward scan).

Oracles: `jax.grad` / `jax.jacfwd` / `jax.hessian` of `lagjax.testing.reference_forward` and
`reference_solve` (a Python loop over the constraints), float64, normwise relative error 1e-10.
Compile time dominates: each program's transformations are compiled together, once (`_transforms`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import _build, _reference
from programs import counted_program

from lagjax import Computation, Constraints, testing

RTOL = 1e-10


def close(actual, expected, rtol=RTOL):
    error = testing.relative_error(actual, expected)
    assert error <= rtol, f"relative error {error:.2e} > {rtol:.0e}"


@functools.cache
def _transforms(name, jacobians):
    """One jitted function returning every transformation of the program `name` at x.

    `jacfwd` and `jacrev` are `vmap`s of `jvp` and `vjp`; they cost a compile, so only one program runs them.
    """
    comp, _ = _build(name)
    fn, solve = comp.as_function(), comp.as_function("z")
    v = jnp.linspace(1.0, -1.0, comp.d)
    u = jnp.sin(jnp.arange(comp.n) + 1.0)

    def everything(x):
        out = dict(
            f=fn(x),
            z=solve(x),
            grad=jax.grad(fn)(x),
            jvp=jax.jvp(solve, (x,), (v.astype(x.dtype),))[1],
            vjp=jax.vjp(solve, x)[1](u.astype(x.dtype))[0],
        )
        if jacobians:
            out.update(jacfwd=jax.jacfwd(solve)(x), jacrev=jax.jacrev(solve)(x))
        return out

    return jax.jit(everything), v, u


@pytest.mark.parametrize(
    "name", ["arities", pytest.param("deep", marks=pytest.mark.slow)]
)  # repeated arguments and user df; a width-1 chain (-m slow)
def test_every_first_order_transformation_matches_the_plain_forward_pass(name):
    comp, x = _build(name)
    ref = _reference(name)
    everything, v, u = _transforms(name, jacobians=name == "arities")
    got = everything(x)
    close(got["z"], ref["z"])
    close(got["f"], comp.f(ref["z"]))
    close(got["grad"], ref["grad"])
    close(got["jvp"], ref["dz_dx"] @ v)
    close(got["vjp"], u @ ref["dz_dx"])
    if "jacfwd" in got:
        close(got["jacfwd"], ref["dz_dx"])
        close(got["jacrev"], ref["dz_dx"])


@functools.cache
def _reference_hessian(name):
    comp, x = _build(name)
    return jax.jit(jax.hessian(testing.reference_forward(comp)))(x)


def test_second_order_in_every_mode_combination():
    """forward-over-reverse (`hessian`), reverse-over-reverse, forward-over-forward: all from the sweeps."""
    comp, x = _build("two_input")
    fn = comp.as_function()
    second = jax.jit(lambda x: (jax.hessian(fn)(x), jax.jacrev(jax.grad(fn))(x), jax.jacfwd(jax.jacfwd(fn))(x)))
    expected = _reference_hessian("two_input")
    for H in second(x):
        close(H, expected)


def test_hessian_with_repeated_arguments_and_a_user_gradient():
    comp, x = _build("arities")  # `p = x·x`, a user `df`, arities 1 to 4
    close(jax.jit(jax.hessian(comp.as_function()))(x), _reference_hessian("arities"))


def test_nested_in_a_larger_function():
    """The program inside a larger function, twice, and its z fed back into it (no outer `jax.jit`:
    `test_dict_inputs_and_outputs` and `test_float32_is_kept`)."""
    comp, x = _build("two_input")
    fn, solve = comp.as_function(), comp.as_function("z")
    ref_f, ref_z = testing.reference_forward(comp), testing.reference_solve(comp)

    def outer(fn, solve):
        return lambda y: jnp.sin(fn(jnp.tanh(y))) * fn(solve(y)[-2:]) + jnp.sum(solve(y) ** 2)

    close(jax.jit(jax.grad(outer(fn, solve)))(x), jax.jit(jax.grad(outer(ref_f, ref_z)))(x))


# --- the sweeps are what runs ----------------------------------------------------------------


def executed_scans(jaxpr, inside_solve=False):
    """`(reverse, inside_solve, carry shape)` of every scan that runs, recursively.

    Of a `custom_linear_solve` only its `solve` runs (the other three jaxprs are for
    differentiation and transposition); a `custom_jvp_call` runs its primal, `call_jaxpr`.
    """
    found = []
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "scan":
            found.append((eqn.params["reverse"], inside_solve, eqn.outvars[0].aval.shape))
        if name == "custom_linear_solve":
            found += executed_scans(eqn.params["jaxprs"].solve.jaxpr, True)
            continue
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else [param]:
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    found += executed_scans(sub, inside_solve)
    return found


def test_reverse_mode_runs_the_multiplier_sweep_and_forward_mode_the_tangent_sweep():
    """grad/vjp/jacrev: the forward scan, then one back-substitution (a reverse scan) as the solve of a
    `custom_linear_solve`, and no other scan (JAX transposes no scan). jvp/jacfwd: the forward scan and
    one forward substitution. Under vmap the same scans, with a batched carry."""
    comp, x = _build("arities")
    fn, solve = comp.as_function(), comp.as_function("z")
    carry = (comp.schedule.rows[0],)  # the sweeps carry the scalars' buffer (`_schedule`: inputs, lanes, spare rows)
    forward_scan = (False, False, carry)
    reverse = {jax.grad(fn): carry, lambda x: jax.vjp(solve, x)[1](jnp.ones(comp.n)): carry}
    reverse[jax.jacrev(solve)] = (comp.n, *carry)  # one cotangent per output, batched
    for f, shape in reverse.items():
        assert executed_scans(jax.make_jaxpr(f)(x).jaxpr) == [forward_scan, (True, True, shape)]
    forward = {lambda x: jax.jvp(solve, (x,), (x,))[1]: carry, jax.jacfwd(solve): (comp.d, *carry)}
    for f, shape in forward.items():
        assert executed_scans(jax.make_jaxpr(f)(x).jaxpr) == [forward_scan, (False, True, shape)]
    xs = jnp.stack([x, 2 * x, -x])
    assert executed_scans(jax.make_jaxpr(jax.vmap(fn))(xs).jaxpr) == [(False, False, (3, *carry))]
    assert executed_scans(jax.make_jaxpr(jax.vmap(jax.grad(fn)))(xs).jaxpr) == [
        (False, False, (3, *carry)),
        (True, True, (3, *carry)),
    ]


def test_vmap_matches_one_at_a_time():
    comp, x = _build("deep")
    fn = comp.as_function()
    xs = x + 0.1 * np.random.default_rng(2).normal(size=(4, comp.d))
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(fn)))(xs)
    close(values, np.stack([comp.forward(xi) for xi in xs]))
    close(grads, np.stack([comp.gradient(xi) for xi in xs]))


# --- pytrees, parameters, dtypes ---------------------------------------------------------------


def test_dict_inputs_and_outputs():
    comp, x = _build("two_input")  # inputs "x", "y"
    fn, solve = comp.as_function(), comp.as_function("z")
    named = {"x": x[0], "y": x[1]}
    ref = _reference("two_input")
    close(fn(named), fn(x))
    z = solve(named)
    assert set(z) == set(comp.names)
    close(np.array([z[name] for name in comp.names]), ref["z"])
    assert comp.as_function("z", as_dict=False)(named).shape == (comp.n,)
    assert set(comp.as_function("z", as_dict=True)(x)) == set(comp.names)
    grad = jax.grad(fn)(named)
    assert set(grad) == {"x", "y"}
    close(np.array([grad["x"], grad["y"]]), ref["grad"])
    # a subset: close over the rest
    close(jax.grad(lambda y: fn({"x": x[0], "y": y}))(x[1]), ref["grad"][1])
    # a batch of dicts
    batch = {"x": jnp.array([x[0], 0.1]), "y": jnp.array([x[1], 0.5])}
    close(jax.vmap(fn)(batch), np.array([fn(x), fn(np.array([0.1, 0.5]))]))


def test_parameters_declared_as_inputs_get_gradients():
    """`y = tanh(w·x + b)`, loss `(y - 1)²`: w and b are inputs of the program, x is closed over."""
    mul = lambda v: v[0] * v[1]  # noqa: E731
    C = Constraints(["w", "b", "x"])
    C.add_constraint("wx", mul, ["w", "x"])
    C.add_constraint("y", lambda v: jnp.tanh(v[0] + v[1]), ["wx", "b"])
    y = C.index("y")
    df = lambda z: jnp.zeros_like(z).at[y].set(2 * (z[y] - 1))  # noqa: E731  (a user gradient of f is used)
    fn = Computation(lambda z: (z[y] - 1) ** 2, C.inputs, C, df=df).as_function()
    loss = lambda params, x: fn({**params, "x": x})  # noqa: E731
    params, x = {"w": 0.7, "b": -0.2}, 1.5
    grad = jax.grad(loss)(params, x)
    t = np.tanh(0.7 * 1.5 - 0.2)
    common = 2 * (t - 1) * (1 - t**2)
    close(np.array([grad["w"], grad["b"]]), np.array([common * x, common]))


def test_float32_is_kept():
    comp, x = _build("two_input")
    fn, solve = comp.as_function(), comp.as_function("z")
    x32 = x.astype(np.float32)
    outputs = [fn(x32), solve(x32), jax.grad(fn)(x32)]
    assert all(o.dtype == np.float32 for o in outputs)
    close(outputs[2], _reference("two_input")["grad"], rtol=1e-4)
    assert fn({"x": np.float32(x[0]), "y": np.float32(x[1])}).dtype == np.float32


def test_a_program_without_constraints():
    C = Constraints(["x", "y"])
    fn = Computation(lambda z: jnp.sum(z**3), C.inputs, C).as_function()
    x = np.array([0.5, -2.0])
    grad, hessian = jax.jit(lambda x: (jax.grad(fn)(x), jax.hessian(fn)(x)))(x)
    close(grad, 3 * x**2)
    close(hessian, np.diag(6 * x))


# --- no retracing, scale -----------------------------------------------------------------------


def test_repeated_calls_do_not_retrace():
    comp, traces = counted_program()
    assert comp.as_function() is comp.as_function()
    fn = comp.as_function()
    xs = np.random.default_rng(0).normal(size=(4, 2))
    calls = [(fn, xs[0]), (jax.jit(jax.grad(fn)), xs[0]), (jax.grad(fn), xs[0]), (jax.jit(jax.vmap(fn)), xs)]
    for method, first in calls:
        method(first)
        before = traces["count"]
        for x in xs[1:]:
            method(x if first.ndim == 1 else xs + x)
        assert traces["count"] == before, f"a repeated call of {method} retraced"


@pytest.mark.slow
def test_hessian_of_a_thousand_constraints():
    """The Hessian of a 1,000-constraint program (its compile time is a benchmark's, not a test's)."""
    comp, x = testing.random_program(1000, d=4, depth=8, seed=0)
    fn = comp.as_function()
    H = jax.jit(jax.hessian(fn))(x).block_until_ready()
    close(H, H.T, rtol=1e-12)
    # against central differences of lagjax's gradient (`multipliers`, not `as_function`)
    h = 1e-5
    steps = np.eye(comp.d) * h
    gradients = jax.vmap(comp.gradient)(np.concatenate([x + steps, x - steps]))
    close(H, (gradients[: comp.d] - gradients[comp.d :]) / (2 * h), rtol=1e-7)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros(3), ValueError, r"`x` must have shape \(2,\), one value per input \['x', 'y'\]; got shape \(3,\)\.$"),
        (np.zeros((5, 2)), ValueError, r"got shape \(5, 2\)\. For a batch of inputs, use jax.vmap"),
        ({"x": 1.0}, ValueError, r"must be the program's inputs \['x', 'y'\]; missing \['y'\], unexpected \[\]"),
        ({"x": 1.0, "y": 2.0, "q": 3.0}, ValueError, r"missing \[\], unexpected \['q'\]"),
        ({"x": np.zeros(3), "y": 1.0}, ValueError, r"`x\['x'\]` must have shape \(\), a scalar"),
        ("abc", TypeError, r"`x` must be an array of shape \(2,\)"),
        (np.array([1j, 2.0]), TypeError, r"`x` is complex"),
    ],
    ids=["length", "batch", "missing", "unexpected", "nonscalar", "string", "complex"],
)
def test_bad_input_names_what_was_expected(bad, error, message):
    fn = _build("two_input")[0].as_function()
    with pytest.raises(error, match=message):
        fn(bad)


def test_bad_arguments_and_integer_inputs():
    comp, _ = _build("two_input")
    with pytest.raises(ValueError, match=r"`output` must be 'f' .* or 'z' .*; got 'lam'"):
        comp.as_function("lam")
    fn = comp.as_function()
    np.testing.assert_allclose(fn(np.array([1, 0])), fn(np.array([1.0, 0.0])))  # evaluated as floats
    with pytest.raises(TypeError, match=r"grad requires real- or complex-valued inputs .* got int"):
        jax.grad(fn)(np.array([1, 0]))  # JAX refuses before lagjax runs: pass floats to differentiate
