"""Only what is asked: derivatives w.r.t. some inputs sweep the active part alone, and no zero
tangent is pushed through a user's function. Every answer against plain JAX (`testing.reference_forward`,
a Python loop sharing no code with the sweeps) or a model written by hand."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagjax
from lagjax import testing
from lagjax._activity import descendants


# --- programs: scalar, array, cyclic; each with inputs a subset of which is differentiated ----------
def scalar_program():
    C = lagjax.Constraints(["a", "b", "c"])
    C.add_constraint("u", lambda v: jnp.sin(v[0] * v[1]), ["a", "b"])
    C.add_constraint("w", lambda v: jnp.tanh(v[0]) + v[1] ** 2, ["u", "c"])
    C.add_constraint("y", lambda v: v[0] * jnp.exp(-v[1]), ["c", "c"])
    C.add_constraint("o", jnp.sum, ["w", "y", "u"])
    o = C.index("o")
    comp = lagjax.Computation(lambda z: z[o] ** 2 + 0.1 * jnp.sum(jnp.cos(z)), C.inputs, C)
    return comp, {"a": 0.3, "b": -0.7, "c": 0.4}


def array_program():
    shapes = {"W0": (4, 3), "W1": (2, 4), "X": (3, 5), "Y": (2, 5)}
    C = lagjax.Constraints(shapes)
    C.add("h0", lambda W, X: jnp.tanh(W @ X), ["W0", "X"])
    C.add("h1", lambda W, h: W @ h, ["W1", "h0"])
    C.add("loss", lambda h, Y: jnp.mean((h - Y) ** 2) + jnp.sum(h[0] ** 3), ["h1", "Y"])
    comp = lagjax.Computation(lambda z: z["loss"], C.inputs, C)
    rng = np.random.default_rng(0)
    return comp, {k: rng.normal(size=s) / 2 for k, s in shapes.items()}


def cyclic_program():
    """u, v on a cycle (a forward reference); p, q feed it, r only the objective's last step."""
    C = lagjax.Constraints(["p", "q", "r"])
    C.add_constraint("u", lambda v: 0.5 * jnp.cos(v[0]) + v[1], ["v", "p"])
    C.add_constraint("v", lambda v: 0.3 * jnp.sin(v[0]) * v[1], ["u", "q"])
    C.add_constraint("o", lambda v: v[0] * v[1] + jnp.exp(v[2]), ["u", "v", "r"])
    o = C.index("o")
    comp = lagjax.Computation(lambda z: z[o] ** 2, C.inputs, C)
    return comp, {"p": 0.2, "q": 0.9, "r": -0.3}


PROGRAMS = {"scalar": scalar_program, "array": array_program, "cyclic": cyclic_program}


def _plain(comp):
    """The plain forward pass `x (dict) -> f`, for the reference derivatives."""
    forward = testing.reference_forward(comp)
    if comp.dicts:
        return forward
    names = comp.input_names
    return lambda x: forward(jnp.stack([jnp.asarray(x[k]) for k in names]))


def _subsets(names):
    return [s for r in range(1, len(names) + 1) for s in itertools.combinations(names, r)]


def _split(x, subset):
    return {k: x[k] for k in subset}, {k: v for k, v in x.items() if k not in subset}


def _assert_close(actual, expected, rtol=1e-9):
    assert testing.relative_error(actual, expected) < rtol, (actual, expected)


CASES = [(name, subset) for name, build in PROGRAMS.items() for subset in _subsets(build()[0].input_names)]
# the fast suite: each input alone and the last one left out, per program (every subset: -m slow)
FAST = {
    ("scalar", ("a",)),
    ("scalar", ("b", "c")),
    ("scalar", ("a", "b", "c")),
    ("array", ("W0",)),
    ("array", ("W1", "X")),
    ("cyclic", ("q", "r")),
}
FIRST_ORDER = [pytest.param(*case, marks=() if case in FAST else pytest.mark.slow) for case in CASES]


@pytest.fixture(scope="module")
def built():
    out = {}
    for name, build in PROGRAMS.items():
        comp, x = build()
        out[name] = comp, {k: jnp.asarray(v, jnp.float64) for k, v in x.items()}, _plain(comp)
    return out


@pytest.mark.parametrize("name,subset", FIRST_ORDER, ids=[f"{n}-{'+'.join(s)}" for n, s in CASES])
def test_first_order_wrt_every_subset(built, name, subset):
    """`jax.grad` and `jax.jvp` of `as_function` w.r.t. each subset of inputs, the rest closed over."""
    comp, x, plain = built[name]
    params, rest = _split(x, subset)
    fn = comp.as_function()
    ours, ref = (lambda p: fn({**p, **rest})), (lambda p: plain({**p, **rest}))
    jax.tree.map(_assert_close, jax.jit(jax.grad(ours))(params), jax.grad(ref)(params))
    v = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype).reshape(a.shape) + 1.0), params)
    _assert_close(jax.jvp(ours, (params,), (v,))[1], jax.jvp(ref, (params,), (v,))[1])
    # the methods: gradient w.r.t. the subset, tangents along a direction on the subset only
    expected = jax.grad(ref)(params)
    if not comp.dicts:  # vectors in input order
        x = jnp.stack([x[k] for k in comp.input_names])
        expected = jnp.stack([expected[k] for k in comp.input_names if k in subset])
    jax.tree.map(_assert_close, comp.gradient(x, wrt=list(subset)), expected)
    if comp.dicts:
        _, t = comp.tangents(x, v)
        expected = jax.jvp(lambda p: testing.reference_solve(comp)({**p, **rest}), (params,), (v,))[1]
        jax.tree.map(_assert_close, t, expected)


@pytest.mark.slow
@pytest.mark.parametrize("name,subset", CASES, ids=[f"{n}-{'+'.join(s)}" for n, s in CASES])
def test_every_transformation_wrt_every_subset(built, name, subset):
    """jacfwd, jacrev, hessian (forward over reverse) and a jvp of a grad."""
    comp, x, plain = built[name]
    params, rest = _split(x, subset)
    fn = comp.as_function()
    ours, ref = (lambda p: fn({**p, **rest})), (lambda p: plain({**p, **rest}))
    for transform in (jax.jacfwd, jax.jacrev, jax.hessian):  # reverse over forward: below
        jax.tree.map(lambda a, b: _assert_close(a, b, 1e-8), transform(ours)(params), transform(ref)(params))
    v = jax.tree.map(jnp.ones_like, params)
    jvp_of_grad = lambda f: jax.jvp(jax.grad(f), (params,), (v,))[1]  # noqa: E731
    jax.tree.map(lambda a, b: _assert_close(a, b, 1e-8), jvp_of_grad(ours), jvp_of_grad(ref))


@pytest.mark.slow
def test_reverse_over_forward_wrt_a_subset(built):
    """Once an AssertionError in JAX's transpose of custom_linear_solve: a buffer of the right-hand
    side that no seed reaches was not linear in the tangents (the solve is now posed on one vector)."""
    comp, x, plain = built["array"]
    params, rest = _split(x, ("W0",))
    fn = comp.as_function()
    revfwd = lambda f: jax.jacrev(jax.jacfwd(f))  # noqa: E731
    jax.tree.map(_assert_close, revfwd(lambda p: fn({**p, **rest}))(params), revfwd(lambda p: plain({**p, **rest}))(params))


@pytest.mark.slow
def test_hessian_wrt_a_subset(built):
    """Second order through the active part (fast suite): the array program w.r.t. W1 and X."""
    comp, x, plain = built["array"]
    params, rest = _split(x, ("W1", "X"))
    fn = comp.as_function()
    H = jax.hessian(lambda p: fn({**p, **rest}))(params)
    jax.tree.map(lambda a, b: _assert_close(a, b, 1e-8), H, jax.hessian(lambda p: plain({**p, **rest}))(params))


# --- the XLA:CPU case: data's zero tangents met a matrix product ------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_forward_mode_with_data_not_differentiated(dtype, jit):
    """`jax.jvp` w.r.t. the weights of a 2-layer program, the data closed over, default configuration
    (XLA:CPU in jaxlib 0.10.2 miscompiles `W @ zeros` in some fusions: the data's zero tangents are
    never formed now), against plain JAX."""
    rng = np.random.default_rng(0)
    shapes = {"X": (64, 128), "Y": (64, 128), "W0": (64, 64), "W1": (64, 64)}
    C = lagjax.Constraints(shapes)
    C.add("h0", lambda W, h: jnp.tanh(W @ h), ["W0", "X"])
    C.add("h1", lambda W, h: jnp.tanh(W @ h), ["W1", "h0"])
    C.add("loss", lambda h, y: jnp.mean((h - y) ** 2), ["h1", "Y"])
    fn = lagjax.Computation(lambda z: z["loss"], C.inputs, C).as_function()
    x = {k: jnp.asarray(rng.normal(size=s) / 8, dtype) for k, s in shapes.items()}
    params, data = {k: x[k] for k in ("W0", "W1")}, {k: x[k] for k in ("X", "Y")}
    v = jax.tree.map(jnp.ones_like, params)

    def plain(p):
        return jnp.mean((jnp.tanh(p["W1"] @ jnp.tanh(p["W0"] @ data["X"])) - data["Y"]) ** 2)

    ours = lambda p, v: jax.jvp(lambda p: fn({**p, **data}), (p,), (v,))[1]  # noqa: E731
    ours = jax.jit(ours) if jit else ours
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    assert testing.relative_error(ours(params, v), jax.jvp(plain, (params,), (v,))[1]) < tolerance


def test_no_tangent_reaches_a_function_through_its_inactive_arguments():
    """A user's layer whose data argument passes through a custom_jvp that counts its JVP rule's
    calls: differentiating w.r.t. the weights only, in any mode, never calls it."""
    calls = {"data": 0}

    @jax.custom_jvp
    def tagged(X):
        return X

    @tagged.defjvp
    def tagged_jvp(primals, tangents):
        calls["data"] += 1
        return primals[0], tangents[0]

    shapes = {"W": (3, 4), "X": (4, 2)}
    C = lagjax.Constraints(shapes)
    C.add("h", lambda W, X: jnp.tanh(W @ tagged(X)), ["W", "X"])
    C.add("loss", lambda h: jnp.sum(h**2), ["h"])
    comp = lagjax.Computation(lambda z: z["loss"], C.inputs, C)
    fn = comp.as_function()
    x = {"W": jnp.ones((3, 4)) / 3, "X": jnp.linspace(-1, 1, 8).reshape(4, 2)}
    wrt_W = lambda W: fn({"W": W, "X": x["X"]})  # noqa: E731
    jax.grad(wrt_W)(x["W"])
    jax.jvp(wrt_W, (x["W"],), (jnp.ones((3, 4)),))
    H = jax.hessian(wrt_W)(x["W"])
    plain = lambda W: jnp.sum(jnp.tanh(W @ x["X"]) ** 2)  # noqa: E731
    assert testing.relative_error(H, jax.hessian(plain)(x["W"])) < 1e-10
    comp.gradient(x, wrt=["W"])
    comp.tangents(x, {"W": jnp.ones((3, 4))})
    assert calls["data"] == 0
    jax.grad(lambda X: fn({"W": x["W"], "X": X}))(x["X"])  # the check can fail: X differentiated
    assert calls["data"] > 0


# --- the active part's structure -----------------------------------------------------------------
def tenths_program(tenths: int = 10, length: int = 30):
    """`tenths` inputs, each feeding a chain of its own; the objective sums the chains' ends."""
    C = lagjax.Constraints([f"x{j}" for j in range(tenths)])
    step = lambda v: jnp.sin(v[0]) + 0.5 * v[0]  # noqa: E731
    for j in range(tenths):
        prev = f"x{j}"
        for t in range(length):
            C.add_constraint(f"c{j}_{t}", step, [prev])
            prev = f"c{j}_{t}"
    ends = np.array([C.index(f"c{j}_{length - 1}") for j in range(tenths)])
    return lagjax.Computation(lambda z: jnp.sum(z[ends] ** 2), C.inputs, C)


def test_the_active_part_is_the_descendants():
    comp = tenths_program()
    R = comp.restriction([comp.names.index("x3")])
    swept = {comp.names[v] for v in R.variables[len(R.inputs) :]}  # the constraints of the active part
    assert swept == {f"c3_{t}" for t in range(30)}
    assert R.schedule.num_steps == 30 and R.schedule.width == 1
    assert comp.restriction(range(comp.d)) is None  # everything active: the whole program's sweeps
    # descendants against a plain fixed point of "reads an active variable"
    records, n = comp.constraints, comp.n
    rng = np.random.default_rng(0)
    for _ in range(5):
        sources = rng.choice(comp.d, 3, replace=False)
        active = np.zeros(n, bool)
        active[sources] = True
        changed = True
        while changed:
            changed = False
            for r in records:
                if not active[r.i] and any(active[a] for a in r.args):
                    active[r.i] = changed = True
        np.testing.assert_array_equal(descendants(n, records, sources.tolist()), active)


def test_gradient_wrt_and_partial_tangents_on_a_vector_program():
    comp = tenths_program(tenths=4, length=5)
    x = jnp.linspace(0.1, 0.7, 4)
    full = comp.gradient(x)
    g = comp.gradient(x, wrt=["x2", "x0"])
    np.testing.assert_allclose(g, full[np.array([0, 2])], rtol=1e-12)
    plain = testing.reference_forward(comp)
    np.testing.assert_allclose(g, jax.grad(plain)(x)[np.array([0, 2])], rtol=1e-12)


def test_wrt_errors_name_the_inputs():
    comp, x = scalar_program()
    with pytest.raises(ValueError, match=r"`wrt` must name some of the program's inputs \['a', 'b', 'c'\].*not inputs: \['u'\]"):
        comp.gradient(x, wrt=["a", "u"])
    with pytest.raises(TypeError, match=r"`wrt` must be a list of input names"):
        comp.gradient(x, wrt="a")
    with pytest.raises(ValueError, match=r"`wrt` must name"):
        comp.gradient(x, wrt=[])


def test_restricted_derivatives_compile_once():
    comp, x = array_program()
    fn = comp.as_function()
    rest = {k: v for k, v in x.items() if k != "W1"}
    grad = jax.jit(jax.grad(lambda W: fn({"W1": W, **rest})))
    grad(x["W1"])
    before = grad._cache_size()
    grad(x["W1"] + 1.0)
    assert grad._cache_size() == before
    comp.gradient(x, wrt=["W1"])
    size = comp._jit["gradient_part"]._cache_size()
    comp.gradient({**x, "W1": x["W1"] * 2}, wrt=["W1"])
    assert comp._jit["gradient_part"]._cache_size() == size


def test_each_step_function_is_traced_a_fixed_number_of_times():
    """Trace once per group: the traces of a layer function under `jax.grad` / `jax.jvp` of
    `as_function` and `comp.gradient` do not grow with the number of layers (a trace counter, as
    `chex.assert_max_traces` keeps)."""
    traces = {"n": 0}

    def layer(W, h):
        traces["n"] += 1
        return jnp.tanh(W @ h)

    def counts(L):
        shapes = {"X": (3, 2), **{f"W{l}": (3, 3) for l in range(L)}}
        C = lagjax.Constraints(shapes)
        prev = "X"
        for l in range(L):
            C.add(f"h{l}", layer, [f"W{l}", prev])
            prev = f"h{l}"
        comp = lagjax.Computation(lambda z: jnp.sum(z[prev] ** 2), C.inputs, C)
        x = {k: jnp.full(s, 0.3) for k, s in shapes.items()}
        fn = comp.as_function()
        out = []
        for run in (
            lambda: jax.grad(fn)(x),
            lambda: jax.jvp(fn, (x,), (x,)),
            lambda: jax.grad(lambda W: fn({**x, "W0": W}))(x["W0"]),
            lambda: comp.gradient(x),
        ):
            traces["n"] = 0
            run()
            out.append(traces["n"])
        return out

    few, many = counts(2), counts(7)
    assert few == many, (few, many)
    assert max(many) <= 12
