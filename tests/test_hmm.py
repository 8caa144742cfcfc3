"""examples/hmm_expected_counts.py at Q = 50 states (50 cyclic blocks of one scalar on a chain): lagjax's
expected arc counts W ∘ ∂ log Z/∂W against the closed form from a dense (I − W)⁻¹ in NumPy, the counts'
sum against the expected path length, and the example's own oracles (banded solves, lax.scan)."""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "hmm_expected_counts.py"
spec = importlib.util.spec_from_file_location("hmm_expected_counts", PATH)
hmm_example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hmm_example)

Q = 50


def dense_closed_form(hmm):
    """log Z and the expected counts of every arc, W ∘ α βᵀ / Z, with a dense (I − W)⁻¹ (Q × Q)."""
    n = len(hmm["loop"])
    W = np.diag(hmm["loop"]) + np.diag(hmm["next"], 1)
    inverse = np.linalg.inv(np.eye(n) - W)
    alpha, beta = inverse[0], inverse @ hmm["f"]  # α = (I − W)⁻ᵀ e_0, β = (I − W)⁻¹ f
    Z = alpha @ hmm["f"]
    return np.log(Z), W * np.outer(alpha, beta) / Z


def series_length(hmm, terms=4000):
    """E[path length] = Σ_k k e_0ᵀ Wᵏ f / Σ_k e_0ᵀ Wᵏ f, summing over path lengths k directly."""
    W = np.diag(hmm["loop"]) + np.diag(hmm["next"], 1)
    v, total, weighted = np.eye(len(hmm["loop"]))[0], 0.0, 0.0
    for k in range(terms):
        total, weighted = total + v @ hmm["f"], weighted + k * (v @ hmm["f"])
        v = v @ W
    return weighted / total


@pytest.fixture(scope="module")
def solved():
    hmm = hmm_example.random_hmm(Q, seed=1)
    comp = hmm_example.hmm_program(Q)
    return hmm, comp, np.asarray(comp.gradient(hmm_example.flat(hmm)))


def test_program_is_a_chain_of_self_loops(solved):
    _, comp, _ = solved
    assert comp.n == 4 * Q - 1
    assert [list(block.names) for block in comp.blocks] == [[f"alpha {j}"] for j in range(Q)]


def test_expected_counts_match_dense_closed_form(solved):
    hmm, _, gradient = solved
    loops, nexts = hmm_example.expected_counts(gradient, hmm)
    _, counts = dense_closed_form(hmm)
    np.testing.assert_allclose(loops, np.diag(counts), rtol=1e-10, atol=0)
    np.testing.assert_allclose(nexts, np.diag(counts, 1), rtol=1e-10, atol=0)
    # ∂ log Z/∂f_j = α_j / Z: f ∘ it is P(path ends in j), summing to 1
    ends = hmm["f"] * gradient[2 * Q - 1 :]
    assert abs(ends.sum() - 1) < 1e-12


def test_counts_sum_to_expected_path_length(solved):
    hmm, _, gradient = solved
    loops, nexts = hmm_example.expected_counts(gradient, hmm)
    length = series_length(hmm)
    assert abs(loops.sum() + nexts.sum() - length) <= 1e-10 * length
    _, _, _, alpha = hmm_example.closed_form(hmm)
    assert abs(hmm_example.expected_length(hmm, alpha) - length) <= 1e-10 * length


def test_example_oracles_agree_with_dense(solved):
    """The example's banded closed form and its lax.scan alternative, against the dense inverse."""
    hmm, _, _ = solved
    logZ, counts = dense_closed_form(hmm)
    logZ_banded, loops, nexts, _ = hmm_example.closed_form(hmm)
    assert abs(logZ_banded - logZ) <= 1e-12 * max(1.0, abs(logZ))
    np.testing.assert_allclose(loops, np.diag(counts), rtol=1e-12)
    np.testing.assert_allclose(nexts, np.diag(counts, 1), rtol=1e-12)
    scan_loops, scan_nexts = hmm_example.expected_counts(jax.jit(hmm_example.scan_gradient(Q))(hmm_example.flat(hmm)), hmm)
    np.testing.assert_allclose(scan_loops, np.diag(counts), rtol=1e-10)
    np.testing.assert_allclose(scan_nexts, np.diag(counts, 1), rtol=1e-10)
