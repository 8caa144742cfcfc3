"""Order invariance: a program means the same whatever order its constraints are added in.

Variables are numbered in the order they are named, so a constraint added before the variables it
reads is a forward reference, resolved when the `Computation` is built; an acyclic program added in
any order is the same program. Each test builds one program in several orders (topological, its
reverse, a fixed shuffle) and checks, against answers lagjax's engine does not compute:

- every oracle of `lagjax.testing.check_computation`;
- the gradient against `jax.grad` of the same function written as plain JAX;
- the forward values, the multipliers and the gradient, matched by variable *name*, against those of
  the topological order (indices differ between orders: `comp.names` maps them).

Cyclic blocks in the middle of acyclic programs (a scalar self-loop, a 2-cycle) are checked against
plain JAX solving them by fixed-point iteration (`lax.fori_loop`, contractions), differentiated by
`jax.grad`, never by lagjax.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagjax import Computation, Constraints, testing

ORDERS = ("topological", "reverse", "shuffled")
# in the fast suite, the orders nothing else covers (the topological order is every other test's)
SHUFFLED_FAST = [pytest.param(o, marks=() if o == "shuffled" else pytest.mark.slow) for o in ORDERS]
REORDERED_FAST = [pytest.param(o, marks=() if o != "topological" else pytest.mark.slow) for o in ORDERS]


def permutation(order: str, n: int, seed: int = 1234) -> list[int]:
    """Positions of the constraints, in the order they are added."""
    if order == "topological":
        return list(range(n))
    if order == "reverse":
        return list(range(n))[::-1]
    if order == "shuffled":
        return np.random.default_rng(seed).permutation(n).tolist()
    raise ValueError(order)


def max_error(a, b):
    """The largest relative error over the leaves of two pytrees of the same structure."""
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    return max(testing.relative_error(u, v) for u, v in zip(leaves_a, leaves_b))


def by_name(comp, vector):
    """A scalar program's vector over its variables (index order), as a dict by variable name."""
    vector = np.asarray(vector)
    assert vector.shape == (len(comp.names),)
    return {name: vector[k] for k, name in enumerate(comp.names)}


# --- 1. a scalar program -------------------------------------------------------------------------
def _sin(v):
    return jnp.sin(1.3 * v[0] + 0.2)


def _tanh(v):
    return jnp.tanh(2 * v[0])


def _bump(v):
    return jnp.exp(-(v[0] ** 2))


def _mul(v):
    return v[0] * v[1]


def _mix(v):
    return jnp.tanh(v[0]) * jnp.cos(v[1] - 0.3)


def _tri(v):
    return (v[0] * v[1] + jnp.sin(v[2])) / 2


def _avg3(v):
    return jnp.tanh(jnp.sum(v) / 3)


SCALAR_INPUTS = ["a", "b", "c", "d"]
_FUNCTIONS = {1: (_sin, _tanh, _bump), 2: (_mul, _mix), 3: (_tri, _avg3)}


def scalar_spec(n: int = 32, seed: int = 7):
    """`[(name, f, arg names)]` in topological order: each reads the previous variable and, up to
    its arity (1 to 3), any earlier ones; functions from seven, so the program has seven groups."""
    rng = np.random.default_rng(seed)
    names = list(SCALAR_INPUTS)
    spec = []
    for t in range(n):
        k = int(rng.integers(1, 4))
        f = _FUNCTIONS[k][int(rng.integers(len(_FUNCTIONS[k])))]
        args = [names[-1]] + [names[int(rng.integers(len(names)))] for _ in range(k - 1)]
        name = f"v{t}"
        spec.append((name, f, args))
        names.append(name)
    return spec


SCALAR_SPEC = scalar_spec()
SCALAR_X = np.array([0.4, -0.7, 0.9, 0.25])


def scalar_objective(value):
    """The objective, over variables by name: `value(name)` is the variable's value."""
    inner = sum(jnp.sin(value(name)) for name, _, _ in SCALAR_SPEC)
    return value("v31") + 0.5 * value("v17") ** 2 + value("v9") * value("v23") + 0.1 * inner


def plain_values(x):
    """Every variable by name, in plain JAX: the constraints evaluated in topological order."""
    env = dict(zip(SCALAR_INPUTS, x))
    for name, f, args in SCALAR_SPEC:
        env[name] = f(jnp.stack([env[a] for a in args]))
    return env


def plain_scalar(x):
    """The same function in plain JAX."""
    return scalar_objective(plain_values(x).__getitem__)


def scalar_program(order: str):
    C = Constraints(SCALAR_INPUTS)
    for position in permutation(order, len(SCALAR_SPEC)):
        name, f, args = SCALAR_SPEC[position]
        C.add_constraint(name, f, args)
    index = {name: C.index(name) for name in C.names}
    comp = Computation(lambda z: scalar_objective(lambda name: z[index[name]]), C.inputs, C)
    return comp


@functools.cache
def scalar_results(order: str):
    comp = scalar_program(order)
    z, lam = comp.multipliers(SCALAR_X)
    return comp, dict(
        z=by_name(comp, comp.solve_constraints(SCALAR_X)),
        z_multipliers=by_name(comp, z),
        lam=by_name(comp, lam),
        gradient=np.asarray(comp.gradient(SCALAR_X)),
    )


@pytest.mark.parametrize("order", REORDERED_FAST)
def test_scalar_program_in_any_order(order):
    comp, ours = scalar_results(order)
    _, topological = scalar_results("topological")
    assert sorted(comp.names) == sorted(SCALAR_INPUTS + [name for name, _, _ in SCALAR_SPEC])
    assert comp.names[: len(SCALAR_INPUTS)] == SCALAR_INPUTS  # inputs first, in their order
    # every oracle, in every order, scalar and array: test_every_oracle_in_every_order (-m slow)
    expected = jax.grad(plain_scalar)(jnp.asarray(SCALAR_X))
    assert testing.relative_error(ours["gradient"], expected) < 1e-12
    for key in ("z", "z_multipliers", "lam"):
        names = sorted(topological[key])
        assert sorted(ours[key]) == names
        error = testing.relative_error([ours[key][n] for n in names], [topological[key][n] for n in names])
        assert error < 1e-12, (key, error)
    assert testing.relative_error(ours["gradient"], topological["gradient"]) < 1e-12
    # forward mode: the tangents of every variable, by name, against jax.jvp of the plain loop
    v = np.array([0.3, -1.0, 0.5, 2.0])
    _, t = comp.tangents(SCALAR_X, v)
    expected_t = jax.jvp(plain_values, (jnp.asarray(SCALAR_X),), (jnp.asarray(v),))[1]
    t = by_name(comp, t)
    assert sorted(t) == sorted(expected_t)
    assert testing.relative_error([t[n] for n in expected_t], [expected_t[n] for n in expected_t]) < 1e-12


# --- 2. an MLP of array constraints --------------------------------------------------------------
MLP_SHAPES = {
    "W1": (4, 3),
    "b1": (4,),
    "W2": (4, 4),
    "b2": (4,),
    "W3": (4, 4),
    "b3": (4,),
    "W4": (2, 4),
    "b4": (2,),
    "X": (3, 5),
    "Y": (2, 5),
}


def _layer(W, b, h):
    return jnp.tanh(W @ h + b[:, None])


def mlp_spec():
    """`[(name, f, args)]` in topological order: four layers (three of shape (4, 5), the same
    function), a regulariser on a hidden layer, a scalar loss."""
    return [
        ("h1", _layer, ["W1", "b1", "X"]),
        ("h2", _layer, ["W2", "b2", "h1"]),
        ("h3", _layer, ["W3", "b3", "h2"]),
        ("out", lambda W, b, h: W @ h + b[:, None], ["W4", "b4", "h3"]),
        ("reg", lambda h: 0.05 * jnp.sum(h**2), ["h2"]),
        ("err", lambda o, y: jnp.mean((o - y) ** 2), ["out", "Y"]),
        ("loss", lambda e, r: e + r, ["err", "reg"]),
    ]


def plain_mlp(x):
    h1 = jnp.tanh(x["W1"] @ x["X"] + x["b1"][:, None])
    h2 = jnp.tanh(x["W2"] @ h1 + x["b2"][:, None])
    h3 = jnp.tanh(x["W3"] @ h2 + x["b3"][:, None])
    out = x["W4"] @ h3 + x["b4"][:, None]
    return jnp.mean((out - x["Y"]) ** 2) + 0.05 * jnp.sum(h2**2)


def mlp_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape) / np.sqrt(shape[-1]) for name, shape in MLP_SHAPES.items()}


def mlp_program(order: str):
    spec = mlp_spec()
    C = Constraints(MLP_SHAPES)
    for position in permutation(order, len(spec), seed=3):
        name, f, args = spec[position]
        C.add(name, f, args)
    return Computation(lambda z: z["loss"], C.inputs, C)


@functools.cache
def mlp_results(order: str):
    comp = mlp_program(order)
    x = mlp_inputs()
    z, lam = comp.multipliers(x)
    return comp, dict(z=z, lam=lam, gradient=comp.gradient(x))


@pytest.mark.parametrize("order", SHUFFLED_FAST)
def test_mlp_in_any_order(order):
    x = mlp_inputs()
    comp, ours = mlp_results(order)
    _, topological = mlp_results("topological")
    assert comp.size < 200  # the dense oracles stay small
    assert comp.shapes["h3"] == (4, 5) and comp.shapes["loss"] == ()
    # every oracle: test_every_oracle_in_every_order (-m slow); here against plain JAX
    expected = jax.grad(plain_mlp)(x)
    assert set(ours["gradient"]) == set(MLP_SHAPES)
    assert max_error(ours["gradient"], expected) < 1e-12
    for key in ("z", "lam"):
        assert set(ours[key]) == set(topological[key])
        assert max_error({k: ours[key][k] for k in topological[key]}, topological[key]) < 1e-12, key
    fn = comp.as_function()
    assert testing.relative_error(fn(x), plain_mlp(x)) < 1e-13
    assert max_error(jax.grad(fn)(x), expected) < 1e-12

    # the hidden layer's multiplier is the adjoint of the rest of the model w.r.t. it
    def from_h2(h2):
        h3 = jnp.tanh(x["W3"] @ h2 + x["b3"][:, None])
        out = x["W4"] @ h3 + x["b4"][:, None]
        return jnp.mean((out - x["Y"]) ** 2) + 0.05 * jnp.sum(h2**2)

    assert testing.relative_error(ours["lam"]["h2"], jax.grad(from_h2)(ours["z"]["h2"])) < 1e-12


# --- 3. arrays, scalars and cycles in one program -------------------------------------------------
MIXED_SHAPES = {"W1": (3, 2), "b1": (3,), "X": (2, 4), "W2": (2, 3), "s": (), "t": ()}
FIXED_POINT_STEPS = 200  # the cycles below contract by 1/2 or better: 200 steps reach machine precision


def mixed_spec():
    """`[(kind, name, f, args)]` in topological order (the self-loop and the 2-cycle read themselves
    or each other): kind "add" is an array constraint, "scalar" a scalar one (`add_constraint`)."""
    return [
        ("add", "h1", _layer, ["W1", "b1", "X"]),  # (3, 4)
        ("add", "m", lambda h: jnp.mean(h), ["h1"]),  # ()
        ("scalar", "v", lambda v: v[0] * v[1] + 0.3, ["m", "s"]),  # a scalar reading scalars
        ("scalar", "u", lambda v: 0.5 * jnp.tanh(v[0]) + v[1], ["u", "v"]),  # a self-loop
        ("scalar", "p", lambda v: 0.3 * jnp.sin(v[0]) + v[1] * v[2], ["q", "u", "t"]),  # p, q: a 2-cycle
        ("scalar", "q", lambda v: 0.4 * jnp.cos(v[0]) + v[1], ["p", "u"]),
        ("add", "h2", lambda W, h, p, q: jnp.tanh(p * (W @ h) + q), ["W2", "h1", "p", "q"]),  # (2, 4)
        ("add", "loss", lambda h, u: jnp.mean(h**2) + u**2, ["h2", "u"]),  # ()
    ]


def plain_mixed(x):
    """The same function in plain JAX; the cycles by fixed-point iteration from 0."""
    h1 = jnp.tanh(x["W1"] @ x["X"] + x["b1"][:, None])
    v = jnp.mean(h1) * x["s"] + 0.3
    u = jax.lax.fori_loop(0, FIXED_POINT_STEPS, lambda _, u: 0.5 * jnp.tanh(u) + v, jnp.zeros_like(v))

    def step(_, pq):
        p, q = pq
        return 0.3 * jnp.sin(q) + u * x["t"], 0.4 * jnp.cos(p) + u

    p, q = jax.lax.fori_loop(0, FIXED_POINT_STEPS, step, (jnp.zeros_like(v), jnp.zeros_like(v)))
    h2 = jnp.tanh(p * (x["W2"] @ h1) + q)
    return jnp.mean(h2**2) + u**2


def mixed_inputs(seed: int = 2):
    rng = np.random.default_rng(seed)
    x = {name: rng.normal(size=shape) / np.sqrt(shape[-1] if shape else 1) for name, shape in MIXED_SHAPES.items()}
    x["s"], x["t"] = np.float64(0.8), np.float64(-0.6)
    return x


def mixed_program(order: str):
    spec = mixed_spec()
    C = Constraints(MIXED_SHAPES)
    for position in permutation(order, len(spec), seed=5):
        kind, name, f, args = spec[position]
        (C.add if kind == "add" else C.add_constraint)(name, f, args)
    return Computation(lambda z: z["loss"], C.inputs, C)


@pytest.mark.parametrize("oracles", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_mixed_program_with_cycles(oracles):
    """Added in a shuffled order: forward references across array layers, scalars and two cycles.
    Every oracle of `lagjax.testing` under -m slow (the cyclic plain solve compiles for about a minute)."""
    x = mixed_inputs()
    comp = mixed_program("shuffled")
    assert comp.size < 200
    assert sorted(sorted(b.names) for b in comp.blocks) == [["p", "q"], ["u"]]
    if oracles:
        testing.check_computation(comp, x)
    expected = jax.grad(plain_mixed)(x)
    gradient = comp.gradient(x)
    assert set(gradient) == set(MIXED_SHAPES)
    assert max_error(gradient, expected) < 1e-10
    z = comp.solve_constraints(x)
    assert abs(z["u"] - (0.5 * np.tanh(z["u"]) + z["v"])) < 1e-13
    assert testing.relative_error(comp.as_function()(x), plain_mixed(x)) < 1e-12


# --- 4. a self-loop in the middle of a 10⁴-constraint chain ---------------------------------------
CHAIN_BEFORE, CHAIN_AFTER = 5_000, 4_999  # with the self-loop: 10⁴ constraints


def _before(v):  # z_i = z_{i-1} + 10⁻³ sin(z_{i-1} + x1)
    return v[0] + 1e-3 * jnp.sin(v[0] + v[1])


def _loop(v):  # u = tanh(u) / 2 + z_last: a contraction
    return 0.5 * jnp.tanh(v[0]) + v[1]


def _after(v):  # w_i = w_{i-1} + 10⁻³ cos(w_{i-1} x2)
    return v[0] + 1e-3 * jnp.cos(v[0] * v[1])


def long_program():
    C = Constraints(["x0", "x1", "x2"])
    previous = "x0"
    for i in range(CHAIN_BEFORE):
        C.add_constraint(f"z{i}", _before, [previous, "x1"])
        previous = f"z{i}"
    C.add_constraint("u", _loop, ["u", previous])
    previous = "u"
    for i in range(CHAIN_AFTER):
        C.add_constraint(f"w{i}", _after, [previous, "x2"])
        previous = f"w{i}"
    u, z, w = C.index("u"), C.index(f"z{CHAIN_BEFORE - 1}"), C.index(previous)
    return Computation(lambda zz: zz[w] + 0.5 * zz[u] ** 2 + 0.1 * zz[z], C.inputs, C)


def plain_long(x):
    """The same function: the chains as `lax.scan`, the self-loop by fixed-point iteration."""
    x0, x1, x2 = x[0], x[1], x[2]
    z, _ = jax.lax.scan(lambda z, _: (_before(jnp.stack([z, x1])), None), x0, None, length=CHAIN_BEFORE)
    u = jax.lax.fori_loop(0, FIXED_POINT_STEPS, lambda _, u: _loop(jnp.stack([u, z])), jnp.zeros_like(z))
    w, _ = jax.lax.scan(lambda w, _: (_after(jnp.stack([w, x2])), None), u, None, length=CHAIN_AFTER)
    return w + 0.5 * u**2 + 0.1 * z


def test_self_loop_inside_a_long_chain():
    comp = long_program()
    assert len(comp.constraints) == 10_000
    assert [b.names for b in comp.blocks] == [("u",)]
    x = jnp.array([0.3, -0.4, 0.7])
    expected = jax.grad(plain_long)(x)
    assert np.all(np.abs(np.asarray(expected)) > 1e-3)  # every input matters
    assert testing.relative_error(comp.gradient(x), expected) < 1e-8
    assert testing.relative_error(comp.forward(x), plain_long(x)) < 1e-12


# --- 5. random programs, shuffled -----------------------------------------------------------------
def shuffled_copy(comp, seed: int):
    """The program of `comp` (a `random_program`) rebuilt from its constraint records in a shuffled
    order; its objective is the original's, reading the variables by name."""
    records = list(comp.constraints)
    C = Constraints([comp.names[i] for i in comp.inputs])
    for position in np.random.default_rng(seed).permutation(len(records)).tolist():
        c = records[position]
        C.add_constraint(c.name, c.f, list(c.arg_names), c.df)
    where = np.asarray([C.index(name) for name in comp.names])  # original index -> new index
    return Computation(functools.partial(_reindexed, comp.f, where), C.inputs, C)


def _reindexed(f, where, z):
    return f(z[jnp.asarray(where)])


def check_shuffled(spec: dict, seed: int):
    comp, x = testing.random_program(**spec)
    copy = shuffled_copy(comp, seed)
    assert sorted(copy.names, key=str) == sorted(comp.names, key=str)
    expected = comp.gradient(x)
    gradient = copy.gradient(x)
    assert testing.relative_error(gradient, expected) < 1e-12
    z, lam = comp.multipliers(x)
    z2, lam2 = copy.multipliers(x)
    for ours, theirs in ((z2, z), (lam2, lam)):
        ours, theirs = by_name(copy, ours), by_name(comp, theirs)
        assert testing.relative_error([ours[n] for n in comp.names], [theirs[n] for n in comp.names]) < 1e-12
    return comp, copy, x, gradient


def test_random_program_shuffled():
    spec = dict(n=24, d=3, profile="mixed", max_arity=4, objective="all", seed=11)
    comp, copy, x, gradient = check_shuffled(spec, seed=4)
    # independent of both: jax.grad of the plain loop over the original program
    assert testing.relative_error(gradient, jax.grad(testing.reference_forward(comp))(jnp.asarray(x))) < 1e-12


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.fixed_dictionaries(
        dict(
            n=st.integers(1, 30),
            d=st.integers(1, 4),
            profile=st.sampled_from(testing.PROFILES),
            max_arity=st.integers(1, 4),
            objective=st.sampled_from(["all", "last"]),
            seed=st.integers(0, 2**31 - 1),
        )
    ),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_programs_shuffled(spec, seed):
    check_shuffled(spec, seed)


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
def test_every_oracle_in_every_order(order):
    """Every oracle on the scalar and array programs in each order (the fast tests compare the orders
    with each other and with plain JAX; `test_random_program_shuffled` runs the plain loop's oracles)."""
    testing.check_computation(scalar_program(order), SCALAR_X)
    testing.check_computation(mlp_program(order), mlp_inputs())
