"""Property tests: every oracle of `lagjax.testing` on random programs (hypothesis), float64, 1e-9.

Each hypothesis example draws 150 random programs (1 to 8 constraints, 1 to 4 inputs, any
profile, arity and objective) and checks their disjoint union: one program whose components share
no variable, so the union's multipliers, tangents, D and Lagrangian are the components' side by
side, and an error in any component is an error of the union. Checking 150 programs at once pays
the compile time of the jitted methods and oracles once instead of 150 times; the schedule of the
union mixes the components' levels, so unions exercise narrow and wide blocks alike.

Default run: 1 example, 150 programs. `-m slow`: 20 examples, 3,000 programs.

Cyclic programs: random linear systems whose variables read any variable (earlier, later, itself),
contractions, against the closed form `(I - W)⁻¹`; 3 examples.
"""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagjax import Computation, Constraints, testing

PROGRAMS_PER_EXAMPLE = 150

program_specs = st.fixed_dictionaries(
    dict(
        n=st.integers(1, 8),
        d=st.integers(1, 4),
        profile=st.sampled_from(testing.PROFILES),
        max_arity=st.integers(1, 4),
        objective=st.sampled_from(["all", "last"]),
        seed=st.integers(0, 2**31 - 1),
    )
)
unions = st.lists(program_specs, min_size=PROGRAMS_PER_EXAMPLE, max_size=PROGRAMS_PER_EXAMPLE)


def union(parts):
    """The disjoint union of `random_program`s: all inputs, then each program's constraints.

    Variables are renamed `(p, name)` for program p; the objective is the sum of the programs'
    objectives (`testing.random_objective`'s terms, weighted at the renamed variables).
    """
    C = Constraints([(p, comp.names[i]) for p, (comp, _) in enumerate(parts) for i in comp.inputs])
    for p, (comp, _) in enumerate(parts):
        for c in comp.constraints:
            C.add_constraint((p, c.name), c.f, [(p, a) for a in c.arg_names], c.df)
    weights = np.zeros((2, C.n))
    for p, (comp, _) in enumerate(parts):
        last, scale = comp.f.args  # the program's objective: Σ z[last:] + scale · Σ sin(z)
        where = np.asarray([C.index((p, name)) for name in comp.names])
        weights[0, where[last:]] = 1.0
        weights[1, where] = scale
    x = np.concatenate([x for _, x in parts])
    return Computation(functools.partial(weighted_objective, weights), C.inputs, C), x


def weighted_objective(weights, z):
    weights = jnp.asarray(weights, z.dtype)
    return weights[0] @ z + weights[1] @ jnp.sin(z)


def check_union(specs):
    comp, x = union([testing.random_program(**spec) for spec in specs])
    testing.check_computation(comp, x, rtol=1e-9)


@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(unions)
def test_150_random_programs_pass_every_oracle(specs):
    check_union(specs)


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(unions)
def test_3000_random_programs_pass_every_oracle(specs):
    check_union(specs)


def test_one_constraint_unused_inputs_ignored_variables():
    # One constraint reading one of three inputs; the objective reads only the constraint's
    # variable, so two inputs are unused and the inputs themselves are ignored by the objective.
    comp, x = testing.random_program(1, d=3, max_arity=1, objective="last", seed=3)
    assert len(comp.constraints) == 1 and len(comp.constraints[0].args) == 1
    errors = testing.check_computation(comp, x, rtol=1e-9)
    gradient = np.asarray(comp.gradient(x))
    unused = [i for i in comp.inputs if i not in comp.constraints[0].args]
    assert np.all(gradient[unused] == 0) and errors["multipliers_vs_grad"] <= 1e-9


@pytest.mark.parametrize("profile", testing.PROFILES)
def test_random_program_profiles(profile):
    comp, x = testing.random_program(64, d=3, profile=profile, seed=5)
    depth = dict(wide=8, deep=64, mixed=None)[profile]
    if depth is not None:
        assert comp.schedule.depth == depth
    values = np.asarray(comp.solve_constraints(x))
    assert np.all(np.abs(values) <= 1)  # bounded functions: every value in [-1, 1]
    assert max(len(c.args) for c in comp.constraints) <= 4


# --- cyclic programs: random linear systems with random cycles, against the closed form ------------
@st.composite
def linear_cyclic_programs(draw):
    """`z_i = Σ_j W_ij z_j + Σ_k B_ik x_k` over n scalar variables, each reading 1 to 3 variables
    anywhere in the program (earlier, later, itself), scaled so that Σ_j |W_ij| <= 0.9: a
    contraction, so the system has one solution, `z = (I - W)⁻¹ B x`."""
    n, d = draw(st.integers(2, 9)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    W, B = np.zeros((n, n)), np.zeros((n, d))
    reads = []
    for i in range(n):
        js = rng.integers(0, n, rng.integers(1, 4))
        ks = rng.integers(0, d, 1)
        w = rng.uniform(-1, 1, len(js))
        w *= 0.9 / max(np.abs(w).sum(), 1e-9)
        np.add.at(W[i], js, w)
        B[i, ks[0]] += 1.0
        reads.append((js, ks[0], w))
    return n, d, W, B, reads, rng.uniform(-1, 1, n), rng.uniform(-1, 1, d)


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linear_cyclic_programs())
def test_random_cyclic_programs_against_the_closed_form(spec):
    """One random system per example: every cyclic block compiles a root finder and linear solves
    of its own, so a union of systems would cost more to compile than separate examples."""
    n, d, W, B, reads, c, x = spec
    C = Constraints([f"x{k}" for k in range(d)])
    for i, (js, k, w) in enumerate(reads):
        C.add_constraint(f"z{i}", lambda v, w=w: w @ v[:-1] + v[-1], [f"z{j}" for j in js] + [f"x{k}"])
    comp = Computation(lambda z: z[d:] @ c, C.inputs, C)
    A = np.eye(n) - W
    assert testing.relative_error(comp.gradient(x), B.T @ np.linalg.solve(A.T, c)) < 1e-10
    assert testing.relative_error(comp.jacobian(x)[d:], np.linalg.solve(A, B)) < 1e-10
