"""Cyclic programs: strongly connected blocks solved by root finding, differentiated by the implicit function.

Independent answers: closed forms with dense solves (`(I - γP)⁻¹`), `jax.grad` through an unrolled
Newton solve of the whole system (`lagjax.testing.reference_solve`), and the other oracles of
`lagjax.testing` (finite differences, dense solves of `D λ = -∇f`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagjax
from lagjax import testing


def mdp(states=6, gamma=0.9, seed=0, solver=None):
    """V = r + γ P V, objective w·V: a value function, whose gradients have a closed form."""
    rng = np.random.default_rng(seed)
    P = rng.random((states, states))
    P /= P.sum(1, keepdims=True)
    w = rng.random(states)
    C = lagjax.Constraints({"r": (states,), "P": (states, states)})
    C.add("V", lambda r, P, V: r + gamma * P @ V, ["r", "P", "V"], shape=(states,))
    C.add("J", lambda V: jnp.dot(jnp.asarray(w), V), ["V"])
    comp = lagjax.Computation(lambda z: z["J"], C.inputs, C, solver=solver)
    return comp, {"r": rng.normal(size=states), "P": P}, w, gamma


def closed_form(x, w, gamma):
    """V = (I - γP)⁻¹ r; dJ/dr = (I - γP)⁻ᵀ w; dJ/dP = γ (dJ/dr) Vᵀ."""
    A = np.eye(len(w)) - gamma * x["P"]
    V = np.linalg.solve(A, x["r"])
    dr = np.linalg.solve(A.T, w)
    return V, {"r": dr, "P": gamma * np.outer(dr, V)}


@pytest.mark.parametrize("dense_max", [256, 0], ids=["dense", "matrix-free"])
def test_mdp_against_closed_form(dense_max):
    comp, x, w, gamma = mdp(solver=lagjax.Solver(dense_max=dense_max))
    V, expected = closed_form(x, w, gamma)
    assert comp.blocks and comp.blocks[0].names == ("V",)
    assert testing.relative_error(comp.solve_constraints(x)["V"], V) < 1e-10
    gradient = comp.gradient(x)
    for name in expected:
        assert testing.relative_error(gradient[name], expected[name]) < 1e-9


def test_mdp_float32():
    comp, x, w, gamma = mdp()
    _, expected = closed_form(x, w, gamma)
    gradient = comp.gradient(jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), x))
    assert gradient["r"].dtype == jnp.float32
    assert testing.relative_error(gradient["r"], expected["r"]) < 1e-4


def equilibrium(n=3, seed=1):
    """z = tanh(A z + x): a fixed-point layer, then acyclic steps reading it."""
    rng = np.random.default_rng(seed)
    C = lagjax.Constraints({"x": (n,), "A": (n, n)})
    C.add("z", lambda A, z, x: jnp.tanh(A @ z + x), ["A", "z", "x"], shape=(n,))
    C.add("loss", lambda z: jnp.sum(z**2) + jnp.sum(jnp.sin(z)), ["z"])
    comp = lagjax.Computation(lambda z: z["loss"], C.inputs, C)
    return comp, {"x": rng.normal(size=n), "A": 0.5 * rng.normal(size=(n, n)) / np.sqrt(n)}


def test_equilibrium_oracles():
    comp, x = equilibrium()
    errors = testing.check_computation(comp, x)
    assert "multipliers_vs_triangular" not in errors  # D is block triangular only


def test_scalar_cycle_keeps_vectors():
    # a = b / 2 + x, b = sin(a) / 2 + y (a 2-cycle); c reads b before b is defined; o after
    C = lagjax.Constraints(["x", "y"])
    C.add_constraint("c", lambda v: v[0] * v[1], ["b", "x"])  # forward reference, no cycle
    C.add_constraint("a", lambda v: 0.5 * v[0] + v[1], ["b", "x"])
    C.add_constraint("b", lambda v: 0.5 * jnp.sin(v[0]) + v[1], ["a", "y"])
    C.add_constraint("o", lambda v: v[0] * v[1] + v[2], ["a", "b", "c"])
    comp = lagjax.Computation(lambda z: z[-1], C.inputs, C)
    assert [b.names for b in comp.blocks] == [("a", "b")]
    x = np.array([0.3, -0.7])
    z = comp.solve_constraints(x)
    assert z.shape == (6,)
    a, b = z[3], z[4]  # variables: x, y, c, a, b, o
    assert abs(a - (0.5 * b + x[0])) < 1e-14 and abs(b - (0.5 * np.sin(a) + x[1])) < 1e-14
    testing.check_computation(comp, x)


def test_as_function_on_cycles():
    comp, x = equilibrium()
    fn = comp.as_function()
    plain = testing.reference_forward(comp)  # jax.grad through the unrolled Newton solve
    small = {"x": x["x"]}
    g = jax.jit(jax.grad(lambda p: fn({**p, "A": x["A"]})))(small)
    assert testing.relative_error(g["x"], jax.grad(lambda p: plain({**p, "A": x["A"]}))(small)["x"]) < 1e-9
    # second order: the Hessian against central differences of the (checked) gradient
    grad_x = jax.jit(jax.grad(lambda v: fn({"x": v, "A": x["A"]})))
    H = jax.hessian(lambda v: fn({"x": v, "A": x["A"]}))(x["x"])
    H_fd = jnp.stack([testing.central_difference(lambda v: grad_x(v)[i], x["x"]) for i in range(3)])
    assert testing.relative_error(H, H_fd) < 1e-7


@pytest.mark.slow
def test_vmap_over_a_cyclic_program():
    comp, x = equilibrium()
    fn = comp.as_function()
    batch = jax.vmap(lambda v: fn({"x": v, "A": x["A"]}))(jnp.stack([x["x"], -x["x"]]))
    assert testing.relative_error(batch[1], fn({"x": -x["x"], "A": x["A"]})) < 1e-12


def test_initial_guess_selects_the_root():
    # a = (a² + 2) / 3 has the roots 1 and 2; Newton from 0 finds 1, from 3 finds 2
    for init, root in [(None, 1.0), (3.0, 2.0)]:
        C = lagjax.Constraints(["x"])
        C.add_constraint("a", lambda v: (v[0] ** 2 + 2) / 3 + 0 * v[1], ["a", "x"], init=init)
        comp = lagjax.Computation(lambda z: z[-1], C.inputs, C)
        assert abs(comp.solve_constraints([0.0])[1] - root) < 1e-14


# --- failures: reported, naming the block's variables; never a silently wrong value --------------
def test_singular_block_named():
    C = lagjax.Constraints(["x"])
    C.add_constraint("a", lambda v: v[0], ["b"])
    C.add_constraint("b", lambda v: v[0], ["a"])  # a = b, b = a: undetermined
    C.add_constraint("o", lambda v: v[0] * v[1], ["a", "x"])
    comp = lagjax.Computation(lambda z: z[-1], C.inputs, C)
    with pytest.raises(lagjax.SolveError, match=r"\['a', 'b'\].*singular") as info:
        comp.gradient([1.0])
    assert info.value.status == lagjax.Status.SINGULAR and info.value.names == ("a", "b")


def test_not_converged_and_nonfinite():
    C = lagjax.Constraints(["x"])
    C.add_constraint("a", lambda v: 1 + v[0] ** 2 + 0 * v[1], ["a", "x"])  # no real fixed point
    comp = lagjax.Computation(lambda z: z[-1], C.inputs, C, solver=lagjax.Solver(max_steps=5))
    with pytest.raises(lagjax.SolveError, match=r"\['a'\] failed solving its constraints") as info:
        comp.forward([0.0])
    assert info.value.status != lagjax.Status.SUCCESS
    C = lagjax.Constraints(["x"])
    C.add_constraint("a", lambda v: jnp.log(v[0] - 10) + v[1], ["a", "x"])  # log of a negative number at 0
    comp = lagjax.Computation(lambda z: z[-1], C.inputs, C)
    with pytest.raises(lagjax.SolveError, match="NaN or inf"):
        comp.forward([0.0])


def test_failure_inside_jit_is_nan_and_status():
    C = lagjax.Constraints(["x"])
    C.add_constraint("a", lambda v: v[0] + v[1], ["a", "x"])  # a = a + x: no solution unless x = 0
    comp = lagjax.Computation(lambda z: z[-1], C.inputs, C)
    assert np.isnan(jax.jit(comp.gradient)(jnp.array([1.0]))).all()
    assert np.isnan(jax.grad(comp.as_function())(jnp.array([1.0]))).all()
    report = jax.jit(comp.status)(jnp.array([1.0]))
    assert report["forward"].status.shape == (1,) and int(report["forward"].status[0]) != lagjax.Status.SUCCESS
    checked = lagjax.Computation(lambda z: z[-1], C.inputs, C, checked=True)
    with pytest.raises(Exception, match=r"cyclic block of \['a'\]"):
        jax.block_until_ready(jax.jit(checked.gradient)(jnp.array([1.0])))


def test_cycle_without_shapes():
    C = lagjax.Constraints({"x": (3,)})
    C.add("u", lambda v, x: v + x, ["v", "x"])
    C.add("v", lambda u: 0.5 * u, ["u"])
    with pytest.raises(ValueError, match=r"shapes of \['u', 'v'\] cannot be inferred.*shape="):
        lagjax.Computation(lambda z: jnp.sum(z["v"]), C.inputs, C)


def test_components_of_a_long_cycle_without_recursion():
    # 10⁵ scalar constraints in one cycle (z_0 reads the last), then a tail: ordered without recursion
    n = 100_000
    C = lagjax.Constraints(["x"])
    C.add_constraint("z0", jnp.sum, [f"z{n - 1}", "x"])
    for i in range(1, n):
        C.add_constraint(f"z{i}", jnp.sum, [f"z{i - 1}"])
    C.add_constraint("tail", jnp.sum, ["z0"])
    comp = lagjax.Computation(lambda z: z[-1], C.inputs, C)
    assert len(comp.blocks) == 1 and len(comp.blocks[0].names) == n
    tail = comp.names.index("tail")
    step = int(np.argwhere(comp.schedule.out == tail)[0, 0])
    (_, end, group, _), *_ = comp.schedule.segments
    assert group == 0 and step >= end  # the tail after the cycle it reads
