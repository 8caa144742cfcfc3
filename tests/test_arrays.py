"""Structured programs: array variables, positional constraints, dicts by name.

Every result is checked against an independent oracle: `jax.grad` / `jax.hessian` of the same model
written as plain JAX, and `lagjax.testing`'s oracles (the plain loop, dense solves, finite differences).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagjax
from lagjax import testing


def mlp_program(sizes=(3, 5, 4, 2), batch=6):
    """A small MLP with a batch of data, scalars mixed in: a scale `s` and a seed-style constraint."""
    shapes = {}
    for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), 1):
        shapes[f"W{l}"], shapes[f"b{l}"] = (b, a), (b,)
    shapes.update(X=(sizes[0], batch), Y=(sizes[-1], batch), s=())
    C = lagjax.Constraints(shapes)
    previous = "X"
    for l in range(1, len(sizes)):
        C.add(f"h{l}", lambda W, b, h: jnp.tanh(W @ h + b[:, None]), [f"W{l}", f"b{l}", previous])
        previous = f"h{l}"
    C.add("err", lambda h, y: jnp.mean((h - y) ** 2), [previous, "Y"])  # a scalar from arrays
    C.add_constraint("scaled", lambda v: v[0] * jnp.exp(v[1]), ["err", "s"])  # seed-style, scalars
    comp = lagjax.Computation(lambda z: z["scaled"] + 0.1 * jnp.sum(z["h1"] ** 2), C.inputs, C)
    rng = np.random.default_rng(0)
    x = {name: rng.normal(size=shape) / np.sqrt(shape[-1] if shape else 1) for name, shape in shapes.items()}
    return comp, x, len(sizes) - 1


def plain_mlp(x, layers):
    """The same model as plain JAX."""
    h = x["X"]
    for l in range(1, layers + 1):
        h = jnp.tanh(x[f"W{l}"] @ h + x[f"b{l}"][:, None])
        if l == 1:
            h1 = h
    return jnp.mean((h - x["Y"]) ** 2) * jnp.exp(x["s"]) + 0.1 * jnp.sum(h1**2)


@pytest.fixture(scope="module")
def mlp():
    return mlp_program()


def max_error(a, b):
    return max(testing.relative_error(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_shapes_inferred(mlp):
    comp, x, _ = mlp
    assert comp.shapes["h1"] == (5, 6) and comp.shapes["h3"] == (2, 6)
    assert comp.shapes["err"] == () and comp.shapes["scaled"] == ()
    assert comp.size == sum(int(np.prod(s)) for s in comp.shapes.values())


@pytest.fixture(scope="module")
def small_mlp():
    return mlp_program(sizes=(2, 3, 2), batch=2)  # every oracle compiles a copy: keep it small


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
def test_oracles(small_mlp, dtype):
    comp, x, _ = small_mlp
    testing.check_computation(comp, jax.tree.map(lambda a: jnp.asarray(a, dtype), x))


def test_gradient_and_multipliers_against_jax_grad(mlp):
    comp, x, layers = mlp
    expected = jax.grad(plain_mlp)(x, layers)
    gradient = comp.gradient(x)
    assert set(gradient) == set(x)
    assert max_error(gradient, expected) < 1e-12
    z, lam = comp.multipliers(x)
    assert all(lam[name].shape == comp.shapes[name] for name in comp.names)

    # the multiplier of a layer is the gradient w.r.t. that layer's output, other layers held as functions of it
    def from_h2(h2):
        h3 = jnp.tanh(x["W3"] @ h2 + x["b3"][:, None])
        return jnp.mean((h3 - x["Y"]) ** 2) * jnp.exp(x["s"])

    assert testing.relative_error(lam["h2"], jax.grad(from_h2)(z["h2"])) < 1e-12


def test_float32_kept(mlp):
    comp, x, layers = mlp
    x32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), x)
    gradient = comp.gradient(x32)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(gradient))
    assert max_error(gradient, jax.grad(plain_mlp)(x, layers)) < 1e-5  # against the float64 answer
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(comp.solve_constraints(x32)))


@pytest.mark.slow  # the fast suite differentiates array programs through as_function in test_activity
def test_as_function_transformations(mlp):
    comp, x, layers = mlp
    fn = comp.as_function()
    assert testing.relative_error(fn(x), plain_mlp(x, layers)) < 1e-13
    params = {k: v for k, v in x.items() if k[0] in "Wb"}
    data = {k: v for k, v in x.items() if k not in params}
    loss = jax.jit(jax.grad(lambda p: fn({**p, **data})))
    assert max_error(loss(params), jax.grad(lambda p: plain_mlp({**p, **data}, layers))(params)) < 1e-12
    small = {"W3": x["W3"], "s": x["s"]}  # second order: the Hessian w.r.t. two inputs
    rest = {k: v for k, v in x.items() if k not in small}
    hessian = jax.hessian(lambda p: fn({**p, **rest}))(small)
    expected = jax.hessian(lambda p: plain_mlp({**p, **rest}, layers))(small)
    assert max_error(hessian, expected) < 1e-10
    batch = jax.vmap(lambda s: fn({**x, "s": s}))(jnp.array([0.0, 0.5]))
    assert max_error(batch, jnp.stack([plain_mlp({**x, "s": s}, layers) for s in (0.0, 0.5)])) < 1e-13
    z = comp.as_function("z")(x)
    assert set(z) == set(comp.names) and comp.as_function("z", as_dict=False)(x).shape == (comp.size,)


def test_no_retracing(mlp):
    comp, x, _ = mlp
    comp.gradient(x)
    before = comp._jit["gradient"]._cache_size()
    comp.gradient({k: v + 1 for k, v in x.items()})
    assert comp._jit["gradient"]._cache_size() == before


def test_flatten_roundtrip(mlp):
    comp, x, _ = mlp
    z = comp.solve_constraints(x)
    flat = comp.flatten(z)
    assert flat.shape == (comp.size,)
    assert max_error(comp.unflatten(flat), z) == 0


# --- bad input: a clear error at the call that made the mistake, naming the variable -------------
def test_shape_mismatch_names_constraint():
    C = lagjax.Constraints({"W": (4, 3), "x": (5,)})
    with pytest.raises(TypeError, match=r"constraint 'h'.*'W': \(4, 3\), 'x': \(5,\)") as info:
        C.add("h", lambda W, x: W @ x, ["W", "x"])
    assert info.value.__cause__ is not None  # JAX's own error, shown beneath


def test_declared_shape_mismatch():
    C = lagjax.Constraints({"x": (3,)})
    with pytest.raises(ValueError, match=r"'h' returns shape \(3,\).*shape=\(4,\)"):
        C.add("h", jnp.sin, ["x"], shape=(4,))


def test_non_float_input_declaration():
    with pytest.raises(TypeError, match="Input 'n'.*int"):
        lagjax.Constraints({"n": np.arange(3)})
    with pytest.raises(TypeError, match="Input 'x' must be declared by a shape"):
        lagjax.Constraints({"x": "3"})


def test_function_failing_to_trace():
    C = lagjax.Constraints({"x": (3,)})
    with pytest.raises(TypeError, match=r"`f` of constraint 'h' failed.*jax.numpy"):
        C.add("h", lambda x: np.sin(np.asarray(x)), ["x"])
    with pytest.raises(TypeError, match=r"constraint 'g' must return real floating-point"):
        C.add("g", lambda x: x > 0, ["x"])
    with pytest.raises(TypeError, match=r"constraint 'g' must return one array"):
        C.add("g", lambda x: (x, x), ["x"])


def test_scalar_constraint_on_array_argument():
    C = lagjax.Constraints({"x": (3,)})
    with pytest.raises(ValueError, match=r"'x' has shape \(3,\).*add\('y'"):
        C.add_constraint("y", jnp.sum, ["x"])


def test_structured_names_are_strings():
    with pytest.raises(TypeError, match="named by strings"):
        lagjax.Constraints({1: (3,)})
    C = lagjax.Constraints({"x": (3,)})
    with pytest.raises(TypeError, match="named by strings"):
        C.add(("h", 1), jnp.sin, ["x"])


def test_input_shape_checked_at_call(mlp):
    comp, x, _ = mlp
    with pytest.raises(ValueError, match=r"`x\['W1'\]` must have the shape declared for 'W1', \(5, 3\); got \(3, 5\)"):
        comp.gradient({**x, "W1": x["W1"].T})
    with pytest.raises(ValueError, match=r"missing \['s'\]"):
        comp.gradient({k: v for k, v in x.items() if k != "s"})
    with pytest.raises(TypeError, match=r"`x\['s'\]` is complex"):
        comp.gradient({**x, "s": 1j})


def test_objective_checked():
    C = lagjax.Constraints({"x": (3,)})
    C.add("h", jnp.sin, ["x"])
    with pytest.raises(ValueError, match=r"objective `f` returned shape \(3,\)"):
        lagjax.Computation(lambda z: z["h"], C.inputs, C)
    with pytest.raises(TypeError, match=r"objective `f` failed"):
        lagjax.Computation(lambda z: z["nope"], C.inputs, C)
