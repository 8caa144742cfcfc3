"""`Constraints.add_constraints`: m constraints of one function at once, against the same programs
built one constraint at a time and against plain JAX; its errors; the vectorised levels beside a
plain recursion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lagjax import Computation, Constraints, _components, _records, testing

DTYPES = [jnp.float32, jnp.float64]
TOLERANCE = {jnp.float32: 1e-5, jnp.float64: 1e-12}


# --- a layered program with data: the same three ways --------------------------------------------
# inputs x (d = 3); layer 1, m1 = 6: h_r = tanh(w_r · x[A_r] + b_r); layer 2, m2 = 5: u_r = h[B_r, 0] * h[B_r, 1]
# + 0.1 (no data); objective Σ u² + Σ sin(h).
RNG = np.random.default_rng(0)
A = RNG.integers(0, 3, (6, 2))
W = RNG.normal(size=(6, 2))
B = RNG.normal(size=6)
P = RNG.integers(0, 6, (5, 2))
X = np.array([0.3, -0.8, 0.5])


def layer1(v, w, b):
    return jnp.tanh(w @ v + b)


def layer2(v):
    return v[0] * v[1] + 0.1


def objective(z):
    return jnp.sum(z[9:] ** 2) + jnp.sum(jnp.sin(z[3:9]))


def plain(x):
    """The program in plain JAX: no lagjax."""
    h = jnp.tanh(jnp.sum(jnp.asarray(W, x.dtype) * x[A], axis=1) + jnp.asarray(B, x.dtype))
    u = h[P[:, 0]] * h[P[:, 1]] + 0.1
    return jnp.concatenate([x, h, u])


def bulk_by_indices():
    C = Constraints(["x0", "x1", "x2"])
    h = C.add_constraints([f"h{r}" for r in range(6)], layer1, A, data=(W, B))
    u = C.add_constraints([f"u{r}" for r in range(5)], layer2, h[P])
    assert h.tolist() == list(range(3, 9)) and u.tolist() == list(range(9, 14))
    return Computation(objective, C.inputs, C)


def bulk_by_names():
    C = Constraints(["x0", "x1", "x2"])
    C.add_constraints([f"h{r}" for r in range(6)], layer1, [[f"x{a}" for a in row] for row in A.tolist()], data=[W, B])
    C.add_constraints([f"u{r}" for r in range(5)], layer2, [[f"h{a}" for a in row] for row in P.tolist()])
    return Computation(objective, C.inputs, C)


def one_at_a_time():
    C = Constraints(["x0", "x1", "x2"])
    for r in range(6):
        C.add_constraint(f"h{r}", lambda v, w=W[r], b=B[r]: jnp.tanh(w @ v + b), [f"x{a}" for a in A[r]])
    for r in range(5):
        C.add_constraint(f"u{r}", layer2, [f"h{a}" for a in P[r]])
    return Computation(objective, C.inputs, C)


@pytest.fixture(scope="module")
def programs():
    return {"indices": bulk_by_indices(), "names": bulk_by_names(), "one at a time": one_at_a_time()}


@pytest.mark.parametrize("dtype", DTYPES)
def test_values_gradient_tangents_against_plain_jax(programs, dtype):
    x = jnp.asarray(X, dtype)
    z = plain(x)
    gradient = jax.grad(lambda x: objective(plain(x)))(x)
    v = jnp.asarray([1.0, -2.0, 0.5], dtype)
    _, tangent = jax.jvp(plain, (x,), (v,))
    tol = TOLERANCE[dtype]
    for how, comp in programs.items():
        assert comp.solve_constraints(x).dtype == dtype, how
        assert testing.relative_error(comp.solve_constraints(x), z) < tol, how
        if how != "names":  # the same program as "indices" (one schedule): its values suffice
            assert testing.relative_error(comp.gradient(x), gradient) < tol, how
            assert testing.relative_error(comp.tangents(x, v)[1], tangent) < tol, how


def test_one_group_per_call(programs):
    bulk = programs["indices"]
    assert len(bulk.schedule.groups) == 2  # one per add_constraints call
    assert [c.name for c in bulk.constraints] == [f"h{r}" for r in range(6)] + [f"u{r}" for r in range(5)]
    record = bulk.constraints[2]
    assert record.args == tuple(A[2]) and record.arg_names == tuple(f"x{a}" for a in A[2])
    assert float(record.f(jnp.asarray(X[A[2]]))) == pytest.approx(float(np.tanh(W[2] @ X[A[2]] + B[2])))


@pytest.mark.slow
def test_every_oracle(programs):
    testing.check_computation(programs["indices"], X, rtol=1e-9)


def test_records_and_repr():
    C = Constraints(["x"])
    C.add_constraint("a", jnp.sin, ["x"])
    C.add_constraints(["b", "c"], jnp.sum, np.array([[0, 1], [1, 2]]))
    C.add_constraint("d", jnp.sum, ["c", "a"])
    assert len(C) == 4 and C.n == 5
    assert [c.name for c in C] == ["a", "b", "c", "d"] and C[-2].name == "c" and C[2].args == (1, 2)
    assert [c.i for c in C[1:3]] == [2, 3]
    assert "c = sum(a, b)" in repr(C)
    assert C.levels().tolist() == [0, 1, 2, 3, 4]
    assert C.add_constraints([], jnp.sum, np.zeros((0, 1), int)).size == 0 and len(C) == 4


# --- forward references and cycles ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", ["indices", "names"])
def test_forward_reference(form, dtype):
    # a = 2 * b + x (b defined later), b = sin(x * y); the first call reads the second's variable
    C = Constraints(["x", "y"])
    rhs = np.array([[3, 0]]) if form == "indices" else [["b", "x"]]  # index 3: the next call's variable
    C.add_constraints(["a"], lambda v: 2 * v[0] + v[1], rhs)
    C.add_constraints(["b"], lambda v: jnp.sin(v[0] * v[1]), np.array([[0, 1]]))
    C.add_constraint("s", lambda v: v[0] * v[1], ["a", "b"])
    comp = Computation(lambda z: z[4], C.inputs, C)

    def plain(x):
        b = jnp.sin(x[0] * x[1])
        return (2 * b + x[0]) * b

    x = jnp.asarray([0.4, 0.9], dtype)
    assert not C.cyclic
    assert testing.relative_error(comp.forward(x), plain(x)) < TOLERANCE[dtype]
    assert testing.relative_error(comp.gradient(x), jax.grad(plain)(x)) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [pytest.param(jnp.float32, marks=pytest.mark.slow), jnp.float64])
def test_a_cycle_within_one_call_against_the_closed_form(dtype):
    # v_r = a_r v_{r+1 mod m} + x_r (a ring of m = 5, |a_r| < 1): (I - A) v = x, a cyclic block
    m = 5
    a = np.asarray([0.5, -0.3, 0.7, 0.2, -0.6])
    ring = np.stack([1 + (np.arange(m) + 1) % m, np.zeros(m, int)], axis=1)  # [v_{r+1}, x]: indices, x is 0
    C = Constraints(["x"])
    C.add_constraints([f"v{r}" for r in range(m)], lambda v, a: a * v[0] + v[1], ring, data=a)
    comp = Computation(lambda z: jnp.sum(z[1:] ** 2), C.inputs, C)
    assert C.cyclic and [b.names for b in comp.blocks] == [tuple(f"v{r}" for r in range(m))]
    Amat = np.zeros((m, m))
    Amat[np.arange(m), (np.arange(m) + 1) % m] = a

    def closed(x):
        v = jnp.linalg.solve(jnp.eye(m, dtype=x.dtype) - jnp.asarray(Amat, x.dtype), jnp.full(m, x[0]))
        return jnp.sum(v**2)

    x = jnp.asarray([0.7], dtype)
    tol = {jnp.float32: 1e-4, jnp.float64: 1e-9}[dtype]
    assert testing.relative_error(comp.forward(x), closed(x)) < tol
    assert testing.relative_error(comp.gradient(x), jax.grad(closed)(x)) < tol


def test_a_structured_program_of_scalars():
    C = Constraints({"W": (2, 3), "s": (), "t": ()})
    C.add_constraints(["p", "q"], lambda v, c: c * v[0] * v[1], [["s", "t"], ["t", "t"]], data=np.array([1.0, 3.0]))
    C.add("y", lambda W, p: W * p, ["W", "p"])
    comp = Computation(lambda z: jnp.sum(z["y"]) + z["q"], C.inputs, C)
    x = {"W": np.arange(6.0).reshape(2, 3), "s": 0.5, "t": -2.0}
    grad = comp.gradient(x)

    def plain(x):
        return jnp.sum(x["W"] * x["s"] * x["t"]) + 3 * x["t"] ** 2

    expected = jax.grad(plain)({k: jnp.asarray(v) for k, v in x.items()})
    for name in x:
        assert testing.relative_error(grad[name], expected[name]) < 1e-12, name


# --- random_program, now built in bulk ---------------------------------------------------------------
@pytest.mark.parametrize("profile", ["wide", pytest.param("mixed", marks=pytest.mark.slow)])
def test_random_program_in_bulk_against_the_plain_loop(profile):
    comp, x = testing.random_program(800, d=3, profile=profile, seed=2)
    assert any(isinstance(part, _records.Bulk) for part in comp.constraints.parts)
    assert all(c.f in testing._RANDOM_FUNCTIONS[len(c.args)] for c in comp.constraints)  # the functions themselves
    assert len(comp.schedule.groups) <= 13
    expected = jax.grad(testing.reference_forward(comp))(jnp.asarray(x))
    assert testing.relative_error(comp.gradient(x), expected) < 1e-12


# --- levels: vectorised rounds, then one by one ---------------------------------------------------
def plain_levels(d, args):
    """Levels by their definition, iterated to a fixed point; -1 on and after cycles."""
    n = d + len(args)
    level = {v: 0 for v in range(d)}
    changed = True
    while changed:
        changed = False
        for c, row in enumerate(args):
            if d + c not in level and all(a in level for a in row):
                level[d + c] = 1 + max(level[a] for a in row)
                changed = True
    return np.asarray([level.get(v, -1) for v in range(n)])


class Record:
    def __init__(self, args):
        self.args, self.group = tuple(args), 0


@pytest.mark.parametrize("seed", range(3))
def test_levels_against_their_definition(seed, monkeypatch):
    # a wide part (rounds), a chain (one by one), a cycle with what reads it; shuffled
    rng = np.random.default_rng(seed)
    d = 3
    rows = [list(rng.integers(0, d, 2)) for _ in range(300)]
    rows += [[d + 299 + j] for j in range(200)]  # a chain after the wide part
    rows += [[d + 500 + 1], [d + 500], [d + 501, 0]]  # a 2-cycle and a reader
    permutation = rng.permutation(len(rows))
    where = np.r_[np.arange(d), d + np.argsort(permutation)]
    args = [[int(where[a]) for a in rows[p]] for p in permutation]
    expected = plain_levels(d, args)
    for threshold in (0, 256, 10**9):  # rounds only, both, one by one only
        monkeypatch.setattr(_components, "_ROUND_MIN_EDGES", threshold)
        np.testing.assert_array_equal(_components.levels(d, [Record(a) for a in args]), expected)


# --- errors: each names the argument and the rows ------------------------------------------------
def program():
    C = Constraints(["x", "y"])
    C.add_constraint("a", jnp.sin, ["x"])
    return C


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda C: C.add_constraints(["p", "q"], jnp.sum, np.zeros((3, 1), int)),
            ValueError,
            r"shape \(m, k\) = \(2, k\).*got shape \(3, 1\)",
        ),
        (lambda C: C.add_constraints(["p", "q"], jnp.sum, np.zeros(2, int)), ValueError, r"rhs\[:, None\]"),
        (
            lambda C: C.add_constraints(["p", "q"], jnp.sum, [["x"]]),
            ValueError,
            r"`rhs` of add_constraints has 1 rows, but `lhs` names m = 2",
        ),
        (lambda C: C.add_constraints(["p", "q"], jnp.sum, [["x"], ["x", "y"]]), ValueError, r"row 0 names 1, row 1 name 2"),
        (lambda C: C.add_constraints(["p", "q"], jnp.sum, ["x", "y"]), TypeError, r"rows 0, 1 are not"),
        (lambda C: C.add_constraints(["p", "q"], jnp.sum, np.zeros((2, 1))), TypeError, r"must hold integers; got dtype float64"),
        (
            lambda C: C.add_constraints([f"p{r}" for r in range(9)], jnp.sum, -np.arange(9)[:, None]),
            ValueError,
            r"Rows 1, 2, 3, 4, 5 \(and 3 more\) of `rhs` hold negative indices \(row 1: \[-1\]\)",
        ),
        (
            lambda C: C.add_constraints(["p", "q"], jnp.sum, [["x"], ["y"]], data=np.ones(3)),
            ValueError,
            r"`data` of add_constraints has shape \(3,\)",
        ),
        (
            lambda C: C.add_constraints(["p", "q"], jnp.sum, [["x"], ["y"]], data=(np.ones(2), np.ones((1, 2)))),
            ValueError,
            r"`data\[1\]` .* shape \(1, 2\)",
        ),
        (lambda C: C.add_constraints(["p", "q"], jnp.sum, [["x"], ["y"]], data=np.ones(2) * 1j), TypeError, r"real numbers.*complex128"),
        (
            lambda C: C.add_constraints(["p", "p", "q", "q"], jnp.sum, [["x"]] * 4),
            ValueError,
            r"Rows 1, 3 of `lhs` repeat names of earlier rows \('p' is also row 0\)",
        ),
        (
            lambda C: C.add_constraints(["p", "a"], jnp.sum, [["x"]] * 2),
            ValueError,
            r"Row 1 of `lhs` name variables already defined \('a' by the constraint `a = sin\(x\)`\)",
        ),
        (lambda C: C.add_constraints(["p", "y"], jnp.sum, [["x"]] * 2), ValueError, r"Row 1 of `lhs` name inputs of this program"),
        (lambda C: C.add_constraints(["p", ["q"]], jnp.sum, [["x"]] * 2), TypeError, r"row 1 of `lhs` are not: \['q'\]"),
        (lambda C: C.add_constraints("pq", jnp.sum, [["x"]] * 2), TypeError, r"`lhs` of add_constraints must be a list"),
        (lambda C: C.add_constraints(["p", "q"], jnp.sum, [["x"], [["y"]]]), TypeError, r"row 1 of `rhs` read \['y'\]"),
        (lambda C: C.add_constraints(["p", "q"], "sum", [["x"], ["y"]]), TypeError, r"`f` of add_constraints must be callable, got 'sum'"),
        (
            lambda C: C.add_constraints(["p", "q"], lambda v: v * 2, [["x", "y"]] * 2),
            ValueError,
            r"row 0, defining 'p'\) returned shape \(2,\)",
        ),
        (
            lambda C: C.add_constraints(["p", "q"], lambda v: np.exp(v[0]), [["x"]] * 2),
            TypeError,
            r"failed when called as f\(v, \*data_row\)",
        ),
        (lambda C: C.add_constraints(["p", "q"], lambda v, w: v[0] * w, [["x"]] * 2), TypeError, r"failed when called"),  # no data given
    ],
)
def test_bad_input_is_named_and_leaves_the_program_as_it_was(call, error, message):
    C = program()
    with pytest.raises(error, match=message):
        call(C)
    assert C.n == 3 and len(C) == 1 and C.names == ["x", "y", "a"]
    C.add_constraints(["p", "q"], jnp.sum, [["a", "x"], ["p", "y"]])  # the names are free again
    assert C.index("q") == 4 and len(Computation(jnp.sum, C.inputs, C).constraints) == 3


def test_undefined_variables_are_named_when_the_program_is_built():
    C = program()
    C.add_constraints([f"p{r}" for r in range(8)], jnp.sum, np.arange(8)[:, None] + 4)  # p7 reads index 11
    with pytest.raises(
        ValueError, match=r"Row 7 of the `rhs` of add_constraints defining 'p0' \.\.\. 'p7' read variables never defined: indices >= 11"
    ):
        Computation(jnp.sum, C.inputs, C)
    C = program()
    C.add_constraints([f"p{r}" for r in range(7)], jnp.sum, [["nowhere"]] * 7)
    with pytest.raises(ValueError, match=r"never defined: 'nowhere' \(read by 'p0', 'p1', 'p2', 'p3', 'p4' and 2 more\)"):
        Computation(jnp.sum, C.inputs, C)


def test_structured_programs_name_rows_by_string_and_read_scalars():
    C = Constraints({"W": (2, 2), "s": ()})
    with pytest.raises(TypeError, match=r"row 1 of `lhs` are not \(row 1: 7\)"):
        C.add_constraints(["p", 7], jnp.sum, [["s"], ["s"]])
    with pytest.raises(ValueError, match=r"Row 1 of `rhs` read array variables \('W' has shape \(2, 2\)\)"):
        C.add_constraints(["p", "q"], jnp.sum, [["s"], ["W"]])
    C.add_constraints(["p", "q"], jnp.sum, [["s"], ["r"]])  # 'r' defined later, as an array
    C.add("r", lambda W: W * 2, ["W"])
    with pytest.raises(ValueError, match=r"Row 1 of `rhs` read array variables \('r' has shape \(2, 2\)\)"):
        Computation(lambda z: z["p"], C.inputs, C)


# --- at scale ---------------------------------------------------------------------------------------
def test_a_hundred_thousand_constraints_as_one_table():
    m, d = 100_000, 4
    C = Constraints([f"x{i}" for i in range(d)])
    rng = np.random.default_rng(1)
    first = C.add_constraints(
        [f"h{r}" for r in range(m)], lambda v, w: jnp.tanh(w * v[0] + v[1]), rng.integers(0, d, (m, 2)), data=rng.normal(size=m)
    )
    C.add_constraints(["s"], jnp.sum, first[None, :4])  # (a wide constraint pads every lane of the schedule to its arity)
    comp = Computation(lambda z: z[-1], C.inputs, C)
    assert len(comp.schedule.groups) == 2 and comp.schedule.depth == 2
    assert comp.constraints[m - 1].name == f"h{m - 1}"


def test_float_data_take_the_arguments_dtype():
    C = Constraints(["x"])
    C.add_constraints(["p", "q"], lambda v, w, i: w * v[0] + i, [["x"], ["x"]], data=(np.array([0.5, 2.0]), np.array([1, 2])))
    comp = Computation(jnp.sum, C.inputs, C)
    z = comp.solve_constraints(jnp.asarray([1.0], jnp.float32))
    assert z.dtype == jnp.float32 and np.allclose(np.asarray(z), [1.0, 1.5, 4.0])
