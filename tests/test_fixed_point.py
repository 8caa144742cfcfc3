"""`lagjax.fixed_point` against answers computed without it: closed forms, dense NumPy solves of the
implicit-function theorem, and `jax.grad` through a long unrolled iteration (`lax.fori_loop`).

- `z = cos(a z)`: at a = 1 the Dottie number; dz/da and d²z/da² by the implicit-function theorem by hand;
- `z = A z + b`: `z = (I − A)⁻¹ b`, gradients w.r.t. A and b in closed form, dense and matrix-free;
- `z = tanh(W z + U x + b)`: against 200 plain iterations (a contraction, ‖W‖₂ = 0.5: error 10⁻⁶⁰);
- a pytree z (two leaves of different shapes) against the same unrolled iteration;
- failures (NaN and a status), bad input (errors naming it), and the primitive `lagjax.trace` reads.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import lagjax
from lagjax import Solver, Status, fixed_point
from lagjax._fixed_point import fixed_point_p, is_tracing, tracing

DOTTIE = 0.7390851332151607
TOL = {"float64": 1e-10, "float32": 2e-4}


# ---------------------------------------------------------------------------------------------------
# z = cos(a z)
# ---------------------------------------------------------------------------------------------------


def cos_root(a, dtype="float64"):
    return fixed_point(lambda z, a: jnp.cos(a * z), jnp.asarray(0.5, dtype), a)


def cos_derivatives(a):
    """z, dz/da, d²z/da² of G(z, a) = cos(a z) − z = 0: z by Newton in NumPy, the derivatives by the
    implicit-function theorem by hand."""
    z = 0.5
    for _ in range(50):
        z -= (np.cos(a * z) - z) / (-a * np.sin(a * z) - 1)
    s, c = np.sin(a * z), np.cos(a * z)
    G_z, G_a = -a * s - 1, -z * s
    G_zz, G_az, G_aa = -(a**2) * c, -s - a * z * c, -(z**2) * c
    dz = -G_a / G_z
    return z, dz, -(G_aa + 2 * G_az * dz + G_zz * dz**2) / G_z


def test_cos_is_the_dottie_number():
    z, info = fixed_point(lambda z: jnp.cos(z), 1.0, return_info=True)
    assert z.dtype == jnp.float64
    np.testing.assert_allclose(z, DOTTIE, rtol=1e-15)
    assert int(info.status) == Status.SUCCESS and float(info.residual) <= 1e-10 and int(info.steps) >= 1


def test_cos_derivatives_by_hand():
    """Value, jvp, vmap of grad, hessian (forward over reverse): in one jitted function (one compile)."""
    a = jnp.asarray([1.3, 1.0, 0.5])
    z, jvp, dz, d2z, dz0 = jax.jit(
        lambda a: (
            jax.vmap(cos_root)(a),
            jax.jvp(cos_root, (a[0],), (2.0,))[1],
            jax.vmap(jax.grad(cos_root))(a),
            jax.hessian(cos_root)(a[0]),
            jax.grad(lambda z0: fixed_point(jnp.cos, z0))(a[0]),  # z does not depend on its initial guess
        )
    )(a)
    expected = np.array([cos_derivatives(float(x)) for x in a])
    np.testing.assert_allclose(z, expected[:, 0], rtol=1e-14)
    np.testing.assert_allclose(jvp, 2 * expected[0, 1], rtol=1e-10)
    np.testing.assert_allclose(dz, expected[:, 1], rtol=1e-10)
    np.testing.assert_allclose(d2z, expected[0, 2], rtol=1e-9)
    assert dz0 == 0
    # at a = 1 the Dottie number, and dz/da = −z sin z / (1 + sin z)
    np.testing.assert_allclose(z[1], DOTTIE, rtol=1e-15)
    np.testing.assert_allclose(dz[1], -DOTTIE * np.sin(DOTTIE) / (1 + np.sin(DOTTIE)), rtol=1e-10)


@pytest.mark.slow
def test_cos_second_derivatives_other_orders():
    """Reverse over reverse, forward over forward, and the Hessian of a closed-over parameter."""
    closed = lambda a: fixed_point(lambda z: jnp.cos(a * z), 0.5)  # noqa: E731
    got = jax.jit(lambda a: (jax.jacrev(jax.jacrev(cos_root))(a), jax.jacfwd(jax.jacfwd(cos_root))(a), jax.hessian(closed)(a)))(1.3)
    np.testing.assert_allclose(got, [cos_derivatives(1.3)[2]] * 3, rtol=1e-9)


def test_cos_float32():
    a = np.array([0.5, 1.0, 1.5], np.float32)
    f = lambda a: cos_root(a, "float32")  # noqa: E731
    (z, info), dz = jax.jit(lambda a: (fixed_point(jnp.cos, jnp.ones((), jnp.float32), return_info=True), jax.vmap(jax.grad(f))(a)))(a)
    assert z.dtype == dz.dtype == jnp.float32 and info.residual.dtype == jnp.float32
    np.testing.assert_allclose(z, DOTTIE, rtol=TOL["float32"])
    assert int(info.status) == Status.SUCCESS
    np.testing.assert_allclose(dz, [cos_derivatives(float(x))[1] for x in a], rtol=TOL["float32"])


def test_closed_over_parameter_is_differentiated():
    """A parameter F closes over (not passed in args) is hoisted: its derivative is right."""
    f = lambda a: fixed_point(lambda z: jnp.cos(a * z), 0.5)  # noqa: E731
    np.testing.assert_allclose(jax.jit(jax.grad(f))(1.3), cos_derivatives(1.3)[1], rtol=1e-10)


# ---------------------------------------------------------------------------------------------------
# z = A z + b
# ---------------------------------------------------------------------------------------------------


def linear_case(m, rng):
    A = rng.normal(size=(m, m))
    return 0.6 * A / np.linalg.norm(A, 2), rng.normal(size=m), rng.normal(size=m)


MATRIX_FREE = Solver(dense_max=0, krylov_restart=3)  # GMRES with restarts for m = 5


@pytest.mark.parametrize("solver", [Solver(), pytest.param(MATRIX_FREE, marks=pytest.mark.slow)], ids=["dense", "matrix-free"])
def test_linear_map_closed_form(solver, rng):
    """z = (I − A)⁻¹ b; for c·z: ∂/∂b = (I − A)⁻ᵀ c, ∂/∂A = ((I − A)⁻ᵀ c) zᵀ; dz/db = (I − A)⁻¹ both ways;
    the Hessian of |z|² in b is 2 (I − A)⁻ᵀ (I − A)⁻¹."""
    A, b, c = linear_case(5, rng)
    M = np.linalg.inv(np.eye(5) - A)
    z_star, lam = M @ b, M.T @ c

    def solve(A, b):
        return fixed_point(lambda z, A, b: A @ z + b, jnp.zeros(5), A, b, solver=solver)

    def everything(A, b):
        return (
            solve(A, b),
            jax.grad(lambda A, b: c @ solve(A, b), argnums=(0, 1))(A, b),
            jax.jacfwd(solve, argnums=1)(A, b),
            jax.jacrev(solve, argnums=1)(A, b),
            jax.hessian(lambda b: jnp.sum(solve(A, b) ** 2))(b),
        )

    z, (gA, gb), J_fwd, J_rev, H = jax.jit(everything)(A, b)
    # the root finder's tolerance, max|F(z) − z| <= 1e-10 (1 + max|z|) (dense: polished to machine precision);
    # the linear solves' relative tolerance 1e-10
    np.testing.assert_allclose(z, z_star, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gb, lam, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(gA, np.outer(lam, z_star), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(J_fwd, M, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(J_rev, M, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(H, 2 * M.T @ M, rtol=1e-8, atol=1e-9)


# ---------------------------------------------------------------------------------------------------
# z = tanh(W z + U x + b): against 200 plain iterations, differentiated by JAX
# ---------------------------------------------------------------------------------------------------

M_NET, D_NET = 6, 3


def network(rng, dtype="float64"):
    W = rng.normal(size=(M_NET, M_NET))
    p = dict(W=0.5 * W / np.linalg.norm(W, 2), U=rng.normal(size=(M_NET, D_NET)), b=rng.normal(size=M_NET))
    return {k: jnp.asarray(v, dtype) for k, v in p.items()}, jnp.asarray(rng.normal(size=D_NET), dtype)


def layer(z, p, x):
    return jnp.tanh(p["W"] @ z + p["U"] @ x + p["b"])


def equilibrium(p, x, solver=None):
    return fixed_point(layer, jnp.zeros(M_NET, x.dtype), p, x, solver=solver)


def unrolled(p, x):
    return lax.fori_loop(0, 200, lambda _, z: layer(z, p, x), jnp.zeros(M_NET, x.dtype))


def net_loss(solve):
    return lambda p, x: jnp.sum(jnp.sin(solve(p, x)))


def transformations(solve, p, x, v, xs):
    """z, grad w.r.t. (p, x), jvp, jacfwd, jacrev w.r.t. x, hessian w.r.t. x, vmap of grad over xs."""
    loss = lambda x: net_loss(solve)(p, x)  # noqa: E731
    return dict(
        z=solve(p, x),
        grad=jax.grad(net_loss(solve), argnums=(0, 1))(p, x),
        jvp=jax.jvp(lambda x: solve(p, x), (x,), (v,))[1],
        jacfwd=jax.jacfwd(solve, argnums=1)(p, x),
        jacrev=jax.jacrev(solve, argnums=1)(p, x),
        hessian=jax.hessian(loss)(x),
        vmap=jax.vmap(jax.grad(loss))(xs),
    )


def test_network_gradient(rng):
    p, x = network(rng)
    (value, z), grads = jax.jit(
        jax.value_and_grad(lambda p, x: (net_loss(equilibrium)(p, x), equilibrium(p, x)), argnums=(0, 1), has_aux=True)
    )(p, x)
    np.testing.assert_allclose(z, unrolled(p, x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(value, net_loss(unrolled)(p, x), rtol=1e-12)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(jax.grad(net_loss(unrolled), argnums=(0, 1))(p, x))):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_network_transformations(rng):
    p, x = network(rng)
    v, xs = jnp.asarray(rng.normal(size=D_NET)), jnp.asarray(rng.normal(size=(4, D_NET)))
    got = jax.jit(lambda p, x: transformations(equilibrium, p, x, v, xs))(p, x)
    expected = transformations(unrolled, p, x, v, xs)
    for key in got:
        for g, e in zip(jax.tree.leaves(got[key]), jax.tree.leaves(expected[key])):
            np.testing.assert_allclose(g, e, rtol=1e-8, atol=1e-11, err_msg=key)


def test_network_float32(rng):
    """float32 throughout; compared with the float64 oracle on the same numbers."""
    p, x = network(rng, "float32")
    p64, x64 = network(np.random.default_rng(0))
    (value, z), grads = jax.jit(
        jax.value_and_grad(lambda p, x: (net_loss(equilibrium)(p, x), equilibrium(p, x)), argnums=(0, 1), has_aux=True)
    )(p, x)
    expected = jax.grad(net_loss(unrolled), argnums=(0, 1))(p64, x64)
    assert z.dtype == value.dtype == jnp.float32
    np.testing.assert_allclose(z, unrolled(p64, x64), rtol=TOL["float32"], atol=TOL["float32"])
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        assert g.dtype == jnp.float32
        np.testing.assert_allclose(g, e, rtol=TOL["float32"], atol=TOL["float32"])


@pytest.mark.slow
def test_network_matrix_free(rng):
    p, x = network(rng)
    v, xs = jnp.asarray(rng.normal(size=D_NET)), jnp.asarray(rng.normal(size=(4, D_NET)))
    solver = Solver(dense_max=0, krylov_restart=4)
    got = jax.jit(lambda p, x: transformations(lambda p, x: equilibrium(p, x, solver), p, x, v, xs))(p, x)
    expected = transformations(unrolled, p, x, v, xs)
    for key in got:
        for g, e in zip(jax.tree.leaves(got[key]), jax.tree.leaves(expected[key])):
            np.testing.assert_allclose(g, e, rtol=1e-7, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["grad", "grad-jvp-hessian"])
def test_gradient_wrt_some_args_only(full, rng):
    """Args without a tangent are never differentiated: a function of them that refuses to be
    differentiated does not stop a gradient, a jvp, a Hessian or reverse over forward w.r.t. the others."""

    @jax.custom_jvp
    def frozen(u):
        return u

    @frozen.defjvp
    def frozen_jvp(primals, tangents):
        raise AssertionError("an arg without a tangent was differentiated")

    p, x = network(rng)
    c = jnp.zeros(M_NET)

    def solve(p, x):
        return fixed_point(lambda z, p, x, c: layer(z, p, x) + frozen(c), jnp.zeros(M_NET), p, x, c)

    def some(solve, p, x):
        loss = net_loss(solve)
        if not full:
            return (jax.grad(loss, argnums=1)(p, x),)
        return (
            jax.grad(lambda W: loss({**p, "W": W}, x))(p["W"]),
            jax.jvp(lambda x: solve(p, x), (x,), (jnp.ones(D_NET),))[1],
            jax.hessian(lambda b: loss({**p, "b": b}, x))(p["b"]),
            # reverse over forward w.r.t. b only
            jax.grad(lambda b: jnp.sum(jax.jvp(lambda x: solve({**p, "b": b}, x), (x,), (jnp.ones(D_NET),))[1] ** 2))(p["b"]),
        )

    for got, expected in zip(jax.jit(lambda p, x: some(solve, p, x))(p, x), some(unrolled, p, x)):
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-11)


# ---------------------------------------------------------------------------------------------------
# A pytree z
# ---------------------------------------------------------------------------------------------------


def pytree_map(z, M, x):
    """z = {"a": (2,), "b": (2, 2)}, coupled: a contraction (factors 0.4 and 0.3 on bounded terms)."""
    a = 0.4 * jnp.tanh(M @ z["b"].ravel() + x)
    b = 0.3 * jnp.cos(jnp.outer(z["a"], z["a"]) + x[0]) + x[1]
    return {"a": a, "b": b}


def test_pytree_z(rng):
    M, x = jnp.asarray(rng.normal(size=(2, 4))), jnp.asarray(rng.normal(size=2))
    z0 = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}
    solve = lambda M, x: fixed_point(pytree_map, z0, M, x)  # noqa: E731
    plain = lambda M, x: lax.fori_loop(0, 200, lambda _, z: pytree_map(z, M, x), z0)  # noqa: E731

    def loss(solve):
        def loss(M, x):
            z = solve(M, x)
            return jnp.sum(z["a"] ** 2) + jnp.sum(jnp.sin(z["b"])), z

        return loss

    (value, z), grads = jax.jit(jax.value_and_grad(loss(solve), argnums=(0, 1), has_aux=True))(M, x)
    (value_plain, z_plain), grads_plain = jax.value_and_grad(loss(plain), argnums=(0, 1), has_aux=True)(M, x)
    assert jax.tree.structure(z) == jax.tree.structure(z0) and z["b"].shape == (2, 2)
    for got, expected in zip(jax.tree.leaves((value, z)), jax.tree.leaves((value_plain, z_plain))):
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    for got, expected in zip(grads, grads_plain):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_no_retrace_under_jit():
    traces = []

    def F(z, a):
        traces.append(1)
        return jnp.cos(a * z)

    f = jax.jit(lambda a: fixed_point(F, 0.5, a))
    f(1.0), f(2.0)
    assert len(traces) == 1


# ---------------------------------------------------------------------------------------------------
# Failures: NaN and a status, never a silently wrong number.
# ---------------------------------------------------------------------------------------------------


def test_failures_give_nan_and_status():
    """z = z² + c has no real fixed point at c = 1 (Newton runs out of steps); z = (z₁, z₀) has a line of
    fixed points, I − J singular (z not determined); F(z) = NaN is not finite."""

    def failures(c):
        no_root = lambda c: fixed_point(lambda z, c: z**2 + c, 0.0, c, solver=Solver(max_steps=20), return_info=True)  # noqa: E731
        return (
            no_root(c),
            jax.grad(lambda c: no_root(c)[0])(c),
            fixed_point(lambda z, c: z[::-1] + c, jnp.asarray([0.1, 0.3]), c - 1, return_info=True),
            fixed_point(lambda z: z * jnp.nan, jnp.ones(2), return_info=True),
        )

    (z, info), grad, (z_singular, info_singular), (z_nan, info_nan) = jax.jit(failures)(1.0)
    assert np.isnan(z) and int(info.status) in (Status.NOT_CONVERGED, Status.SINGULAR) and int(info.steps) <= 20
    assert np.isnan(grad)
    assert np.all(np.isnan(z_singular)) and int(info_singular.status) == Status.SINGULAR
    assert np.all(np.isnan(z_nan)) and int(info_nan.status) == Status.NONFINITE


# ---------------------------------------------------------------------------------------------------
# Bad input: errors at the call that name what is wrong.
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "F, z0, args, error, match",
    [
        (lambda z: z, 1, (), TypeError, r"`z0` must be real floating .* int"),
        (lambda z: z, jnp.ones(2, jnp.complex64), (), TypeError, r"`z0` must be real floating .* complex"),
        (lambda z: z, {"a": jnp.ones(2), "b": jnp.arange(2)}, (), TypeError, r"`z0\['b'\]` must be real floating"),
        (lambda z: z, jnp.ones(0), (), ValueError, r"`z0` must hold at least one number"),
        (lambda z: z, {}, (), ValueError, r"`z0` must hold at least one number"),
        ("cos", jnp.ones(2), (), TypeError, r"`F` must be a function"),
        (lambda z: (z, z), jnp.ones(2), (), ValueError, r"`F` must return a pytree of z0's structure"),
        (lambda z: {"a": z["a"], "b": z["b"][:1]}, {"a": jnp.ones(2), "b": jnp.ones(3)}, (), ValueError, r"z0\['b'\] of shape \(3,\), F returned shape \(1,\)"),
        (lambda z: z.astype(jnp.float32), jnp.ones(2), (), ValueError, r"z0 of dtype float64, F returned float32"),
        (lambda z: jnp.round(z).astype(jnp.int32), jnp.ones(2), (), ValueError, r"F returned int32"),
        (lambda z, s: z, jnp.ones(2), ("text",), TypeError, r"`args\[0\]` must be an array"),
        (lambda z, c: z, jnp.ones(2), (jnp.ones(2, jnp.complex64),), TypeError, r"`args\[0\]` is complex"),
        (lambda z: z, {"a": jnp.ones(2), "b": jnp.ones(2, jnp.float32)}, (), TypeError, r"share one float dtype .*; got float64 \(z0\['a'\]\), float32 \(z0\['b'\]\)"),
    ],
    ids=["int z0", "complex z0", "int leaf", "empty z0", "no leaves", "F not callable", "F structure", "F shape", "F dtype", "F int", "str arg", "complex arg", "mixed dtypes"],
)  # fmt: skip
def test_bad_input(F, z0, args, error, match):
    with pytest.raises(error, match=match):
        fixed_point(F, z0, *args)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(solver="newton"), TypeError, r"`solver` must be a lagjax.Solver"),
        (dict(solver=Solver(max_steps=-1)), ValueError, r"`Solver.max_steps` must be >= 0"),
        (dict(solver=Solver(rtol=2.0)), ValueError, r"`Solver.rtol` must be in \(0, 1\)"),
        (dict(return_info="yes"), TypeError, r"`return_info` must be True or False"),
    ],
    ids=["not a Solver", "max_steps", "rtol", "return_info"],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        fixed_point(jnp.cos, jnp.ones(2), **kwargs)


def test_weakly_typed_output_is_cast():
    """A Python float from F (weakly typed) is taken in z0's dtype; integer arguments are constants."""
    out = jax.eval_shape(lambda k: fixed_point(lambda z, k: 0.25 + 0 * k, jnp.ones((), jnp.float32), k), 3)
    assert out.dtype == jnp.float32 and out.shape == ()


# ---------------------------------------------------------------------------------------------------
# The primitive `lagjax.trace` reads (the interface in lagjax/_fixed_point.py's docstring).
# ---------------------------------------------------------------------------------------------------


def _equations(closed, name):
    return [e for e in closed.jaxpr.eqns if e.primitive.name == name]


def test_primitive_only_while_tracing():
    def f(a):
        return fixed_point(lambda z, a: jnp.cos(a * z), jnp.asarray(0.5), a)

    assert not is_tracing()
    assert not _equations(jax.make_jaxpr(f)(1.0), "lagjax_fixed_point")
    with tracing():
        assert is_tracing()
        with tracing():
            pass
        assert is_tracing()  # nested: the outer context still holds
        # a fresh function: jax.make_jaxpr caches traces by function identity, whatever the context
        closed = jax.make_jaxpr(lambda a: f(a))(1.0)
    assert not is_tracing()
    (eqn,) = _equations(closed, "lagjax_fixed_point")
    assert eqn.primitive is fixed_point_p and fixed_point_p.multiple_results
    assert isinstance(eqn.params["jaxpr"], jax.extend.core.ClosedJaxpr)
    assert eqn.params["num_z"] == 1 and eqn.params["solver"] == Solver()
    assert len(eqn.invars) == 2 and len(eqn.outvars) == 1  # (z0, a) -> z
    # the impl evaluates the fixed point
    np.testing.assert_allclose(jax.core.eval_jaxpr(closed.jaxpr, closed.consts, 1.0)[0], DOTTIE, rtol=1e-15)


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["jit", "jit-grad-vmap"])
def test_primitive_params_pytree_and_closure(full, rng):
    """A pytree z and a closed-over traced array: the jaxpr is (*z_leaves, *arg_leaves) -> z_leaves, the
    closed-over tracer a trailing arg leaf, the concrete array a constant of the jaxpr. The traced jaxpr
    evaluates in jit (the lowering), under grad (the JVP rule) and vmap (the batching rule)."""
    M, x = jnp.asarray(rng.normal(size=(2, 4))), jnp.asarray(rng.normal(size=2))
    z0 = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}
    offset = jnp.asarray([0.1, -0.2])  # concrete, closed over: a constant

    def fn(solve, M, x):
        z = solve(lambda z, x: pytree_map(z, M, x + offset), z0, x)  # M closed over: traced
        return jnp.sum(z["a"] ** 2) + jnp.sum(jnp.sin(z["b"]))

    with tracing():
        closed = jax.make_jaxpr(lambda M, x: fn(fixed_point, M, x))(M, x)
    (eqn,) = _equations(closed, "lagjax_fixed_point")
    inner = eqn.params["jaxpr"]
    assert eqn.params["num_z"] == 2 and len(eqn.invars) == 2 + 2  # z leaves, then x and the hoisted M
    assert [v.aval.shape for v in inner.jaxpr.invars] == [(2,), (2, 2), (2,), (2, 4)]
    assert [v.aval.shape for v in inner.jaxpr.outvars] == [(2,), (2, 2)]
    assert inner.consts and not any(isinstance(c, jax.core.Tracer) for c in inner.consts)
    assert [v.aval.shape for v in eqn.outvars] == [(2,), (2, 2)]

    plain = lambda F, z0, x: lax.fori_loop(0, 200, lambda _, z: F(z, x), z0)  # noqa: E731
    traced = lambda M, x: jax.core.eval_jaxpr(closed.jaxpr, closed.consts, M, x)[0]  # noqa: E731
    xs = jnp.stack([x, -x])

    def everything(f):
        if not full:
            return f(M, x)
        return f(M, x), jax.grad(f, argnums=(0, 1))(M, x), jax.vmap(f, in_axes=(None, 0))(M, xs)

    got = jax.jit(lambda: everything(traced))()
    expected = everything(lambda M, x: fn(plain, M, x))
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12)


def test_return_info_refused_while_tracing():
    with tracing(), pytest.raises(ValueError, match="`return_info=True` is not available inside `lagjax.trace`"):
        jax.make_jaxpr(lambda a: fixed_point(jnp.cos, a, return_info=True))(1.0)


def test_exported():
    assert lagjax.fixed_point is fixed_point and "fixed_point" in lagjax.__all__
