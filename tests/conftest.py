"""Float64 available everywhere (float32 tests ask for it explicitly); programs built once per session."""

import functools
import os
import shutil
import tempfile
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from programs import PROGRAMS  # noqa: E402  (after enabling float64)

from lagjax import testing  # noqa: E402


@functools.cache
def _build(name):
    return PROGRAMS[name]()


@pytest.fixture(params=sorted(PROGRAMS))
def program(request):
    """`(Computation, x)` for each program of the catalogue, x in float64."""
    return _build(request.param)


@pytest.fixture(params=["float64", "float32"], ids=["f64", "f32"])
def case(request, program):
    """`(comp, x, dtype, reference)`: x cast to dtype; float64 answers from the plain loop (`_reference`).

    float32 results are compared with the float64 answers: a stricter oracle than a float32 one.
    """
    comp, x = program
    name = request.node.callspec.params["program"]
    return comp, jnp.asarray(x, request.param), jnp.dtype(request.param), _reference(name)


def constraint_vector(comp, x):
    """C(x, z) by a plain Python loop: [x - z[:d]; f_i(z[args]) - z_i]. D = (∂C/∂z)ᵀ."""

    def C(z):
        pen = [jnp.reshape(c.f(z[jnp.asarray(c.args)]), ()).astype(z.dtype) - z[c.i] for c in comp.constraints]
        return jnp.concatenate([x - z[: comp.d], jnp.stack(pen)])

    return C


@functools.cache
def _reference(name):
    """Answers computed without lagjax's engine, once per program, in float64.

    z by the plain loop; ∇f(x) = jax.grad and dz/dx = jax.jacfwd of it; D = (∂C/∂z)ᵀ by jax.jacfwd
    of the plain constraint vector (eager throughout: no compile that grows with the program).
    """
    comp, x = _build(name)
    x = jnp.asarray(x, jnp.float64)
    z = testing.reference_solve(comp)(x)
    return dict(
        z=z,
        grad=jax.grad(testing.reference_forward(comp))(x),
        dz_dx=jax.jacfwd(testing.reference_solve(comp))(x),
        D=jax.jacfwd(constraint_vector(comp, x))(z).T,
    )


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# `case` (test_method: the original code's checks) in the fast suite: every program of the catalogue
# in one dtype; both dtypes on every program with -m slow. (test_testing runs every oracle on every
# program in float64 in the fast suite.)
CASE_FAST = {"float64": {"two_input", "deep", "shared", "arities"}, "float32": {"blog", "wide"}}


# The longest tests whose ground another default test covers (a second order, dtype or program of
# the same check): under -m slow, so that the default suite stays within 5 minutes on 2 cores.
SLOW_IN_DEFAULT = {
    "test_as_function_on_cycles", "test_mlp_in_any_order[shuffled]", "test_oracles[float64]",
    "test_jitted_and_not_agree_with_the_reference[arities]", "test_random_cyclic_programs_against_the_closed_form",
    "test_random_program_in_bulk_against_the_plain_loop[wide]", "test_mixed_program_with_cycles[False]",
    "test_scalar_cycle_keeps_vectors", "test_random_program_shuffled", "test_first_order_wrt_every_subset[cyclic-q+r]",
    "test_a_cycle_within_one_call_against_the_closed_form[float32]", "test_scalar_program_in_any_order[reverse]",
    "test_values_gradient_tangents_against_plain_jax[float32]", "test_catalogue_passes_default_tolerances[wide]",
    "test_equilibrium_oracles", "test_catalogue_passes_default_tolerances[arities]",
    "test_150_random_programs_pass_every_oracle", "test_float32_passes_float32_tolerances",
    "test_every_first_order_transformation_matches_the_plain_forward_pass[arities]", "test_gradient_wrt_parameters[float32]",
    "test_catalogue_passes_default_tolerances[two_input]", "test_scalar_program_in_any_order[shuffled]",
    "test_dlagrangian[f64-arities]", "test_catalogue_passes_default_tolerances[shared]",
    "test_first_order_wrt_every_subset[array-W1+X]", "test_solutions_against_independent_answers[tanh-f32-matrix-free]",
    "test_a_cycle_within_one_call_against_the_closed_form[float64]", "test_catalogue_passes_default_tolerances[blog]",
    "test_dlagrangian[f64-deep]", "test_first_order_wrt_every_subset[scalar-a+b+c]", "test_dlagrangian[f64-two_input]",
    "test_first_order_wrt_every_subset[array-W0]", "test_failure_inside_jit_is_nan_and_status",
}  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    """Mark slow: `case` outside `CASE_FAST`, dlagrangian in float32 (finite differences of a
    float32 Lagrangian), and `SLOW_IN_DEFAULT`."""
    for item in items:
        if item.name in SLOW_IN_DEFAULT:
            item.add_marker(pytest.mark.slow)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "case" in params and params.get("program") not in CASE_FAST[params["case"]]:
            item.add_marker(pytest.mark.slow)
        if item.name.startswith("test_dlagrangian[f32-"):
            item.add_marker(pytest.mark.slow)


# One compile per program for the whole run: the xdist workers (and tests building the same program)
# share XLA's executables through JAX's persistent cache, in a folder of this run's own, removed at
# its end. Named after xdist's run id, which the controller chooses and every worker is given.
def _cache_folder(run: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"lagjax-tests-xla-{run}")


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        run = config.workerinput["testrunuid"]
    else:  # the controller (before it starts the workers), or the only process
        if hasattr(config.option, "testrunuid") and config.option.testrunuid is None:
            config.option.testrunuid = uuid.uuid4().hex
        run = getattr(config.option, "testrunuid", None) or str(os.getpid())
        config._lagjax_cache = _cache_folder(run)
    jax.config.update("jax_compilation_cache_dir", _cache_folder(run))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def pytest_unconfigure(config):
    folder = getattr(config, "_lagjax_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
