"""Parameters: arrays the constraints capture, made arguments of `as_function` (`params=`), with
their derivatives (the Lagrangian's `Σ_i (∂f_i/∂θ)ᵀ λ_i`), against the same model in plain JAX."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagjax


def _close(a, b, tol=1e-9):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.max(np.abs(a - b)) <= tol * (1 + np.max(np.abs(b))), (a, b)


def _tree_close(a, b, tol=1e-9):
    jax.tree.map(lambda u, v: _close(u, v, tol), a, b)


# --- an array program whose layers capture their weights ---------------------------------------------
def mlp(params):
    """Two layers capturing W0, b0 and W1 (closure cells, a default argument); X an input, Y captured."""
    W0, b0, W1, Y = params["W0"], params["b0"], params["W1"], params["Y"]
    C = lagjax.Constraints({"X": (3, 5), "s": ()})
    C.add("h0", lambda X: jnp.tanh(W0 @ X + b0[:, None]), ["X"])
    C.add("h1", lambda h, s, W=W1: s * (W @ h), ["h0", "s"])
    C.add("loss", lambda h: jnp.mean((h - Y) ** 2), ["h1"])
    return lagjax.Computation(lambda z: z["loss"], C.inputs, C)


def mlp_plain(x, params):
    h0 = jnp.tanh(params["W0"] @ x["X"] + params["b0"][:, None])
    h1 = x["s"] * (params["W1"] @ h0)
    return jnp.mean((h1 - params["Y"]) ** 2)


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    params = {"W0": jnp.asarray(rng.normal(size=(4, 3))), "b0": rng.normal(size=4), "W1": jnp.asarray(rng.normal(size=(2, 4)))}
    params["Y"] = rng.normal(size=(2, 5))
    x = {"X": rng.normal(size=(3, 5)), "s": np.float64(0.7)}
    return mlp(params), params, x


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gradient_wrt_parameters(model, dtype):
    comp, params, x = model
    fn = comp.as_function(params=params)
    tol = 1e-9 if dtype == "float64" else 1e-5
    cast = lambda t: jax.tree.map(lambda a: jnp.asarray(a, dtype), t)  # noqa: E731
    xs, ps = cast(x), cast(params)
    _close(fn(xs, ps), mlp_plain(xs, ps), tol)
    _tree_close(jax.grad(fn, argnums=1)(xs, ps), jax.grad(mlp_plain, argnums=1)(xs, ps), tol)
    _tree_close(jax.grad(fn, argnums=(0, 1))(xs, ps), jax.grad(mlp_plain, argnums=(0, 1))(xs, ps), tol)


def _w0_alone(model):
    comp, params, x = model
    fn = comp.as_function(params=params)
    ours = lambda W: fn(x, {**params, "W0": W})  # noqa: E731
    ref = lambda W: mlp_plain(x, {**params, "W0": W})  # noqa: E731
    return ours, ref, params["W0"]


def test_one_parameter_forward_and_reverse_over_forward(model):
    """W0 alone (the others fixed): jvp, and jacrev of jacfwd (b of the tangent solve zero but on W0's layer)."""
    ours, ref, W = _w0_alone(model)
    v = jnp.ones_like(W)
    _tree_close(jax.jvp(ours, (W,), (v,)), jax.jvp(ref, (W,), (v,)))
    revfwd = lambda f: jax.jacrev(jax.jacfwd(f))  # noqa: E731
    _close(revfwd(ours)(W), revfwd(ref)(W), 1e-8)


@pytest.mark.slow
def test_one_parameter_every_mode(model):
    ours, ref, W = _w0_alone(model)
    for transform in (jax.jacfwd, jax.jacrev, jax.hessian):
        _close(transform(ours)(W), transform(ref)(W), 1e-8)
    batch = jnp.stack([W, 2 * W])
    _close(jax.vmap(jax.grad(ours))(batch), jax.vmap(jax.grad(ref))(batch))


def test_new_values_replace_the_captured_ones_without_recompiling(model):
    comp, params, x = model
    fn = comp.as_function(params=params)
    assert comp.as_function(params=params) is fn
    grad = jax.jit(jax.grad(fn, argnums=1))
    grad(x, params)
    other = jax.tree.map(lambda a: 1.5 * a, params)  # the same types: no new trace
    _close(fn(x, other), mlp_plain(x, other))
    _tree_close(grad(x, other), jax.grad(mlp_plain, argnums=1)(x, other))
    assert grad._cache_size() == 1
    _close(comp.as_function()(x), mlp_plain(x, params))  # the program itself is unchanged


# --- a scalar program: one array per constraint (stacked), one array every constraint shares ---------
def chain(rows, scale):
    C = lagjax.Constraints(["x"])
    prev = "x"
    for i, row in enumerate(rows):
        C.add_constraint(f"h{i}", functools.partial(lambda r, v: jnp.tanh(r[0] * v[0] + r[1]) * scale[0], row), [prev])
        prev = f"h{i}"
    return lagjax.Computation(lambda z: z[-1] ** 2, C.inputs, C)


def chain_plain(x, rows, scale):
    h = x
    for row in rows:
        h = jnp.tanh(row[0] * h + row[1]) * scale[0]
    return h**2


def test_stacked_and_shared_data_of_a_scalar_program():
    rng = np.random.default_rng(1)
    rows, scale = [rng.normal(size=2) for _ in range(6)], jnp.asarray([0.9])
    comp = chain(rows, scale)
    assert len(comp.schedule.groups) == 1  # one group: rows stacked, scale shared
    fn = comp.as_function(params={"rows": rows, "scale": scale})
    p = {"rows": rows, "scale": scale}
    ref = lambda x, p: chain_plain(x, p["rows"], p["scale"])  # noqa: E731
    x = jnp.asarray([0.4])
    _tree_close(jax.grad(fn, argnums=1)(x, p), jax.grad(ref, argnums=1)(x[0], p))
    some = lambda f: lambda r: f(x if f is fn else x[0], {**p, "rows": [rows[0], r, *rows[2:]]})  # noqa: E731
    _close(jax.grad(some(fn))(rows[1]), jax.grad(some(ref))(rows[1]))
    _close(jax.jacfwd(some(fn))(rows[1]), jax.jacfwd(some(ref))(rows[1]), 1e-8)


# --- a cycle capturing its matrix: z = tanh(A z + U x) --------------------------------------------------
@pytest.mark.parametrize("second", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["grad", "hessian"])
def test_parameter_of_a_cyclic_block(second):
    rng = np.random.default_rng(2)
    A, U = jnp.asarray(0.3 * rng.normal(size=(3, 3))), rng.normal(size=(3, 2))
    C = lagjax.Constraints({"x": (2,)})
    C.add("z", lambda z, x: jnp.tanh(A @ z + U @ x), ["z", "x"], shape=(3,))
    C.add("loss", lambda z: jnp.sum(z**2), ["z"])
    comp = lagjax.Computation(lambda z: z["loss"], C.inputs, C)
    fn = comp.as_function(params={"A": A, "U": U})

    def plain(x, p):  # the fixed point by plain iteration (a contraction), differentiated by JAX
        z = jax.lax.fori_loop(0, 200, lambda _, z: jnp.tanh(p["A"] @ z + p["U"] @ x), jnp.zeros(3))
        return jnp.sum(z**2)

    x, p = {"x": jnp.asarray([0.5, -0.3])}, {"A": A, "U": jnp.asarray(U)}
    _tree_close(jax.grad(fn, argnums=1)(x, p), jax.grad(plain, argnums=1)(x["x"], p), 1e-8)
    if second:
        _close(jax.hessian(lambda a: fn(x, {**p, "A": a}))(A), jax.hessian(lambda a: plain(x["x"], {**p, "A": a}))(A), 1e-7)


# --- bad input ----------------------------------------------------------------------------------------
def test_errors_name_the_parameter(model):
    comp, params, x = model
    with pytest.raises(ValueError, match=r"No constraint captures params\['Q'\]"):
        comp.as_function(params={"Q": jnp.ones((4, 3))})
    with pytest.raises(TypeError, match=r"params\['c'\] is a float"):
        comp.as_function(params={"c": 1.0})
    fn = comp.as_function(params=params)
    with pytest.raises(ValueError, match=r"params\['W0'\] must have shape \(4, 3\)"):
        fn(x, {**params, "W0": jnp.ones((3, 3))})
    with pytest.raises(ValueError, match="structure"):
        fn(x, {"W0": params["W0"]})
    with pytest.raises(TypeError, match="float array"):
        fn(x, {**params, "W1": jnp.ones((2, 4), jnp.int32)})
