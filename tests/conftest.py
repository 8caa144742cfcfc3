"""Float64 available everywhere (float32 tests ask for it explicitly); programs built once per session."""

import functools

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from programs import PROGRAMS  # noqa: E402  (after enabling float64)


@functools.lru_cache(maxsize=None)
def _build(name):
    return PROGRAMS[name]()


@pytest.fixture(params=sorted(PROGRAMS))
def program(request):
    """`(Computation, x)` for each program of the catalogue, x in float64."""
    return _build(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
