"""`lagjax.trace`: JAX functions as constraint programs, checked against plain JAX.

A catalogue of functions, each traced and compared with the function itself: its value, `jax.grad`,
`jax.jvp` and (small ones) `jax.hessian`, in float64 and float32. Then what the conversion promises:
names and source lines, data (literals, closed-over arrays) that are not inputs, a Python loop of K
steps in a few groups whatever K, fixed points as cycles, and errors for what cannot be represented.
The full matrix (every function, both dtypes, every transformation) runs under `-m slow`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import lagjax

RNG = np.random.default_rng(0)
C4 = jnp.asarray(RNG.standard_normal((4, 4)))  # closed over: data, not an input


def normal(*shape):
    return RNG.standard_normal(shape)


# --- the catalogue: (function, example args, options) ------------------------------------------------------
@jax.custom_jvp
def softplus(x):
    return jnp.log1p(jnp.exp(x))


softplus.defjvp(lambda p, t: (softplus(p[0]), jax.nn.sigmoid(p[0]) * t[0]))


@jax.custom_vjp
def clip_gradient(x):
    return x


clip_gradient.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -0.5, 0.5),))


@jax.jit
def jitted(a, b):
    return jnp.sin(a) * b + jnp.cos(b)


def mlp(params, x):
    h = jax.nn.relu(params["W1"] @ x + params["b1"])
    return jnp.sum(jnp.tanh(params["W2"] @ h + params["b2"]) ** 2)


def attention(q, k, v):
    weights = jax.nn.softmax(q @ k.T / jnp.sqrt(q.shape[-1]), axis=-1)
    return jnp.sum((weights @ v) ** 2)


def layer_norm(x, gain):
    mean, var = jnp.mean(x, -1, keepdims=True), jnp.var(x, -1, keepdims=True)
    return jnp.sum(gain * (x - mean) / jnp.sqrt(var + 1e-5) * jnp.arange(1.0, 1.0 + x.shape[-1]))


def rnn(W, U, xs):
    h = jnp.full(W.shape[0], 0.1)
    for x in xs:  # unrolled in Python
        h = jnp.tanh(W @ h + U @ x)
    return jnp.sum(h**2)


def euler(y0, k):
    y = y0
    for _ in range(20):  # explicit Euler of dy/dt = -k y + sin(y), dt = 0.05
        y = y + 0.05 * (-k * y + jnp.sin(y))
    return jnp.sum(y**2)


def where_step(x):
    return jnp.sum(jnp.where(x > 0, x**2, jnp.sin(x)) + jnp.maximum(x, 0.3))


def gather(x):
    return x[jnp.argmax(x)] + jnp.sum(x[jnp.array([0, 2, 2])] ** 2) + jnp.sum(x[1:4]) + jnp.take(x, jnp.argsort(x))[0] * x[-1]


def pytree(layers, x):
    for layer in layers:
        x = jnp.tanh(layer["W"] @ x + layer["b"])
    return jnp.sum(x**2)


def constants(x):
    return jnp.sum(C4 @ x) + jnp.sum(jnp.ones(4) * x**2) + jnp.sum(np.arange(4.0) * jnp.exp(x)) + 2.0


def calls_jit(a, b):
    return jnp.sum(jitted(a, b) * jitted(b, a))


def scan_loop(x, w):
    carry, ys = lax.scan(lambda c, wi: (jnp.tanh(c * wi + 0.1), jnp.sin(c)), x, w)
    return jnp.sum(carry**2) + jnp.sum(ys)


def fori(x):
    return jnp.sum(lax.fori_loop(0, 4, lambda i, c: 0.9 * c + jnp.sin(c) / (1.0 + i), x))


def top_k(x):
    values, indices = lax.top_k(x, 3)
    return jnp.sum(values * jnp.arange(1.0, 4.0)) + jnp.sum(x[indices] ** 2)


def fixed_point(a, b):
    z = lagjax.fixed_point(lambda z, a, b: 0.5 * jnp.tanh(z) + a * b, a, a, b)  # z0 = a: an initial guess that is a variable
    return jnp.sum(z**2)


CATALOGUE = {
    "mlp": (mlp, lambda: ({"W1": normal(5, 3), "b1": normal(5), "W2": normal(2, 5), "b2": normal(2)}, normal(3))),
    "attention": (attention, lambda: (normal(3, 4), normal(5, 4), normal(5, 2))),
    "logsumexp": (lambda x: jax.nn.logsumexp(x) + jax.scipy.special.logsumexp(2 * x), lambda: (normal(6),)),
    "layer_norm": (layer_norm, lambda: (normal(2, 5), normal(5))),
    "rnn": (rnn, lambda: (normal(4, 4) / 2, normal(4, 3), normal(6, 3))),
    "euler": (euler, lambda: (normal(3), np.abs(normal(3)) + 0.5)),
    "where": (where_step, lambda: (normal(6),)),
    "gather": (gather, lambda: (normal(6),)),
    "pytree": (pytree, lambda: ([{"W": normal(3, 3), "b": normal(3)}, {"W": normal(2, 3), "b": normal(2)}], normal(3))),
    "custom_jvp": (lambda x: jnp.sum(softplus(x) * x), lambda: (normal(5),)),
    "custom_vjp": (lambda x: jnp.sum(clip_gradient(x) * jnp.sin(x)), lambda: (normal(5) * 3,)),
    "constants": (constants, lambda: (normal(4),)),
    "calls_jit": (calls_jit, lambda: (normal(3), normal(3))),
    "scan": (scan_loop, lambda: (normal(3), normal(4, 3))),
    "fori_loop": (fori, lambda: (normal(4),)),
    "top_k": (top_k, lambda: (normal(7),)),
    "fixed_point": (fixed_point, lambda: (normal(3) / 2, normal(3) / 2)),
}
# `as_function`'s derivatives are built on forward mode (a custom_jvp rule, transposed for reverse mode),
# and JAX has no jvp of a custom_vjp function: such a program is differentiated by `comp.gradient` only.
NO_FORWARD_MODE = {"custom_vjp"}
SMALL = ["logsumexp", "where", "custom_jvp", "euler", "fixed_point", "gather", "scan"]  # Hessians
# The default run (each case compiles lagjax's sweeps for its groups: seconds each): the rest under -m slow.
FAST = {
    "value_and_gradient": {("mlp", "float64"), ("rnn", "float64"), ("fixed_point", "float64"), ("where", "float32")},
    "jvp": {("where", "float32")},
    "hessian": set(),
}


@functools.cache
def traced(name, dtype):
    fn, example = CATALOGUE[name]
    args = jax.tree.map(lambda a: jnp.asarray(a, dtype), example())
    return lagjax.trace(fn, *args), fn, args


def cases(test, names=tuple(CATALOGUE)):
    """(name, dtype) pairs for `test`, those outside its default run (`FAST`) marked slow."""
    out = []
    for dtype in ("float64", "float32"):
        for name in names:
            slow = () if (name, dtype) in FAST[test] else pytest.mark.slow
            out.append(pytest.param(name, dtype, marks=slow, id=f"{name}-{dtype}"))
    return out


def tolerance(dtype):
    return dict(rtol=1e-9, atol=1e-10) if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)


def assert_trees_close(actual, expected, dtype):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), **tolerance(dtype))


# --- the catalogue against plain JAX ---------------------------------------------------------------------
@pytest.mark.parametrize("name, dtype", cases("value_and_gradient", [n for n in CATALOGUE if n not in NO_FORWARD_MODE]))
def test_value_and_gradient(name, dtype):
    comp, fn, args = traced(name, dtype)
    value, grads = jax.value_and_grad(comp.as_function(), argnums=tuple(range(len(args))))(*args)
    value_jax, grads_jax = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*args)
    assert value.dtype == value_jax.dtype
    assert_trees_close(value, value_jax, dtype)
    assert_trees_close(grads, grads_jax, dtype)


@pytest.mark.parametrize("name, dtype", cases("jvp", [n for n in CATALOGUE if n not in NO_FORWARD_MODE]))
def test_jvp(name, dtype):
    comp, fn, args = traced(name, dtype)
    tangents = jax.tree.map(lambda a: jnp.asarray(RNG.standard_normal(a.shape), a.dtype), args)
    out, dout = jax.jvp(comp.as_function(), args, tangents)
    out_jax, dout_jax = jax.jvp(fn, args, tangents)
    assert_trees_close((out, dout), (out_jax, dout_jax), dtype)


@pytest.mark.parametrize("name, dtype", cases("hessian", SMALL))
def test_hessian(name, dtype):
    comp, fn, args = traced(name, dtype)
    argnums = tuple(range(len(args)))
    assert_trees_close(jax.hessian(comp.as_function(), argnums)(*args), jax.hessian(fn, argnums)(*args), dtype)


@pytest.mark.slow
def test_methods_take_dicts_by_input_name():
    comp, fn, args = traced("mlp", "float64")
    assert comp.input_names == ["params['W1']", "params['W2']", "params['b1']", "params['b2']", "x"]  # pytree order
    x = dict(zip(comp.input_names, jax.tree.leaves(args)))
    grads = jax.grad(fn, argnums=(0, 1))(*args)
    assert_trees_close(comp.gradient(x), dict(zip(comp.input_names, jax.tree.leaves(grads))), "float64")
    np.testing.assert_allclose(comp.forward(x), fn(*args), rtol=1e-12)


@pytest.mark.slow
def test_custom_vjp_uses_its_own_rule():
    comp, fn, args = traced("custom_vjp", "float64")
    assert any(str(c).startswith("custom_vjp_call") for c in comp.constraints)
    grad = comp.gradient({"x": args[0]})["x"]  # the multipliers: jax.vjp of each constraint
    np.testing.assert_allclose(grad, jax.grad(fn)(*args), rtol=1e-12)
    x = args[0]
    assert not np.allclose(grad, np.sin(x) + x * np.cos(x))  # the clipped rule, not the plain derivative
    with pytest.raises(TypeError, match="forward-mode"):  # as_function differentiates by forward mode
        jax.grad(comp.as_function())(*args)


@pytest.mark.slow
def test_cond_is_one_constraint():
    """`lax.cond` with a predicate computed from the input: the index is fused into the cond's constraint."""

    def f(x):
        return jnp.sum(lax.cond(jnp.sum(x) > 0, lambda y: y**2, lambda y: -jnp.sin(y), x))

    for x in (jnp.asarray(normal(3)) + 1.0, jnp.asarray(normal(3)) - 1.0):
        comp = lagjax.trace(f, x)
        assert sum(str(c).startswith("cond") for c in comp.constraints) == 1
        np.testing.assert_allclose(comp.gradient({"x": x})["x"], jax.grad(f)(x), rtol=1e-12)


@pytest.mark.slow
def test_as_function_transformations():
    comp, fn, args = traced("rnn", "float64")
    g = comp.as_function()
    assert g is comp.as_function()
    batch = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), args)
    grads = jax.jit(jax.vmap(jax.grad(g, argnums=(0, 1, 2))))(*batch)
    assert_trees_close(grads, jax.vmap(jax.grad(fn, argnums=(0, 1, 2)))(*batch), "float64")
    W, U, xs = args
    np.testing.assert_allclose(g(W, U=U, xs=xs), fn(*args), rtol=1e-12)  # by keyword too


# --- what becomes what ---------------------------------------------------------------------------------------
def test_names_sources_and_data():
    comp, _, args = traced("constants", "float64")
    assert comp.input_names == ["x"]  # C4, jnp.ones(4), np.arange(4.0), 2.0: data, not inputs
    assert comp.n - comp.d == len(comp.constraints)
    for c in comp.constraints:
        primitive = c.name.rsplit("_", 1)[0]
        assert str(c).startswith(f"{c.name} = {primitive}(")
        assert "test_trace.py" in comp.source(c.name) and "constants" in comp.source(c.name)
    assert comp.source("x") is None
    assert comp.output == comp.constraints[-1].name


def test_nested_jit_is_inlined():
    comp, _, _ = traced("calls_jit", "float64")
    assert not any(str(c).startswith(("jit", "pjit")) for c in comp.constraints)
    assert {str(c).split(" = ")[1].split("(")[0] for c in comp.constraints} >= {"sin", "cos", "mul", "add"}


def test_integer_intermediates_are_fused():
    comp, fn, args = traced("gather", "float64")
    integer = ("argmax", "iota", "lt", "gt", "convert_element_type", "select_n", "clamp")
    assert not [c.name for c in comp.constraints if c.name.startswith(integer)]  # no integer variables
    assert [c for c in comp.constraints if c.name.startswith("dynamic_slice")]  # x[argmax(x)]: argmax fused into it


def loop(h, W, b, K):
    for _ in range(K):
        h = h + 0.01 * jnp.tanh(W @ h + b)
    return jnp.sum(h**2)


def test_a_loop_of_K_steps_makes_a_few_groups():
    """K copies of the body share one function per equation of the body: the groups do not grow with K."""
    W, b, h = jnp.asarray(normal(8, 8)) / 3, jnp.asarray(normal(8)), jnp.asarray(normal(8))
    sizes = {}
    for K in (3, 40):
        comp = lagjax.trace(functools.partial(loop, K=K), h, W, b)
        assert len(comp.constraints) == 5 * K + 2
        sizes[K] = (len(comp.groups), len({id(c.f.f) for c in comp.constraints}))
    assert sizes[3] == sizes[40] and sizes[40][0] <= 8, sizes  # (the rnn case of the catalogue differentiates such a loop)


def test_fuse_makes_one_constraint_per_loop_step():
    """`fuse=True`: a loop body whose intermediates are read once is one constraint; values and gradients unchanged."""
    W, b, h = jnp.asarray(normal(8, 8)) / 3, jnp.asarray(normal(8)), jnp.asarray(normal(8))
    K = 30
    f = functools.partial(loop, K=K)
    comp = lagjax.trace(f, h, W, b, fuse=True)
    assert len(comp.constraints) == K + 1 and len(comp.groups) <= 3  # the body K times (the last with h**2), the sum
    assert str(comp.constraints[0]).startswith("add_1 = add(h, W, b)")  # h + 0.01 * tanh(W @ h + b), named after its root
    grads = jax.grad(comp.as_function(), argnums=(0, 1, 2))(h, W, b)
    assert_trees_close(grads, jax.grad(f, argnums=(0, 1, 2))(h, W, b), "float64")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CATALOGUE if n not in NO_FORWARD_MODE])
def test_fused_catalogue(name):
    fn, example = CATALOGUE[name]
    args = jax.tree.map(jnp.asarray, example())
    comp = lagjax.trace(fn, *args, fuse=True)
    assert len(comp.constraints) <= len(traced(name, "float64")[0].constraints)
    argnums = tuple(range(len(args)))
    assert_trees_close(jax.value_and_grad(comp.as_function(), argnums)(*args), jax.value_and_grad(fn, argnums)(*args), "float64")


@pytest.mark.slow
def test_fixed_point_is_a_cycle():
    comp, fn, args = traced("fixed_point", "float64")
    assert len(comp.blocks) == 1 and len(comp.blocks[0].names) == 1
    (name,) = comp.blocks[0].names
    assert name.startswith("fixed_point_")
    np.testing.assert_allclose(comp.init[name], args[0])  # z0 at the example arguments
    a, b = args
    z = lagjax.fixed_point(lambda z, a, b: 0.5 * jnp.tanh(z) + a * b, a, a, b)
    dz_da = b / (1 - 0.5 / jnp.cosh(z) ** 2)  # the implicit-function theorem, elementwise
    np.testing.assert_allclose(comp.gradient({"a": a, "b": b})["a"], 2 * z * dz_da, rtol=1e-8)


def test_fixed_point_solver_is_the_computation_s():
    solver = lagjax.Solver(rtol=1e-11, atol=1e-13)

    def f(x):
        z = lagjax.fixed_point(lambda z, x: {"u": jnp.cos(z["u"]) * x}, {"u": jnp.full(2, 0.5)}, x, solver=solver)
        return jnp.sum(z["u"])

    x = jnp.asarray([0.5, 0.7])
    comp = lagjax.trace(f, x)
    assert comp.solver == solver


# --- what cannot be represented ----------------------------------------------------------------------------
def test_non_scalar_output_is_refused():
    with pytest.raises(ValueError, match="must return one scalar"):
        lagjax.trace(lambda x: jnp.sin(x), jnp.ones(3))


def test_output_not_depending_on_the_arguments_is_refused():
    with pytest.raises(ValueError, match="does not depend on its arguments"):
        lagjax.trace(lambda x: jnp.sum(C4), jnp.ones(3))


@pytest.mark.parametrize(
    "value, kind", [(jnp.arange(3), "integer"), (jnp.ones(3, jnp.complex128), "complex"), (jnp.ones(3, bool), "boolean")]
)
def test_non_float_arguments_are_refused(value, kind):
    with pytest.raises(TypeError, match=rf"Argument `p\['n'\]` has dtype .*{kind}"):
        lagjax.trace(lambda x, p: jnp.sum(x * p["n"]), jnp.ones(3), {"n": value})


def test_while_loop_is_refused_naming_it_and_its_line():
    def f(x):
        return jnp.sum(lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, jnp.sin(c[1])), (0, x))[1])

    with pytest.raises(ValueError, match=r"cannot represent `while` at .*test_trace.py:\d+.*lax.scan"):
        lagjax.trace(f, jnp.ones(3))


def test_side_effects_are_refused():
    def f(x):
        jax.debug.print("x = {}", x)
        return jnp.sum(x)

    with pytest.raises(ValueError, match=r"cannot represent `debug_print` at .*test_trace.py.*side effects"):
        lagjax.trace(f, jnp.ones(3))


def test_complex_intermediates_are_refused():
    with pytest.raises(ValueError, match=r"cannot represent `\w+` at .*test_trace.py.*complex"):
        lagjax.trace(lambda x: jnp.sum(jnp.abs(x * 1j)), jnp.ones(3))


def test_calls_must_match_the_example():
    comp, _, args = traced("where", "float64")
    with pytest.raises(ValueError, match="Argument `x` was traced with shape"):
        comp.as_function()(jnp.ones(4))
