"""The total weight of a weighted automaton with cycles, and expected edge counts as its gradient.

A weighted automaton (or weighted graph) with Q states has start weights s (Q,), final weights f (Q,)
and edge weights W (Q, Q), W[i, j] the weight of the edge i -> j. The weight of a path is the
product of its start weight, its edge weights and its final weight; the total weight Z sums over
every path, of every length. With cycles there are infinitely many paths, but when the spectral
radius of W is below 1 the sum converges, and the *forward weights* α (α_j = total weight of the
paths from a start to j) satisfy one equation per state:

    α = s + Wᵀ α                                      (Q constraints; α reads itself: a cycle)
    Z = α · f,     log Z                              (the objective)

These are the constraints of the program; α forms one strongly connected block, solved by Newton's
method (one step: the map is linear). The multipliers of the block solve the transposed system

    (I − W) β' = ∂ log Z/∂α = f / Z,

so β' = β / Z with β = (I − W)⁻¹ f the *backward weights* (the forward–backward algorithm falls out
of the Lagrangian), and the derivative in an edge weight is read off the constraint it appears in:

    ∂ log Z / ∂W[i, j] = α_i β_j / Z,      E[count of edge i -> j] = W[i, j] ∂ log Z / ∂W[i, j],

the expected number of times a path drawn with probability ∝ its weight uses the edge. The script
prints lagjax's expected counts beside the closed form from (I − W)⁻¹ computed by NumPy, and checks
that they add up to the expected path length, computed independently by summing the series
Σ_k k sᵀ Wᵏ f / Z over path lengths k.

Run: python examples/automaton_pathsum.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import lagjax  # noqa: E402

Q = 6  # states


def random_automaton(seed: int = 0):
    """s, f (Q,) and W (Q, Q) with about half the edges present and spectral radius 0.8, seeded."""
    rng = np.random.default_rng(seed)
    W = rng.random((Q, Q)) * (rng.random((Q, Q)) < 0.5)
    W *= 0.8 / np.max(np.abs(np.linalg.eigvals(W)))
    s = np.zeros(Q)
    s[0] = 1.0  # one start state
    f = rng.random(Q) * (rng.random(Q) < 0.6)
    f[-1] = 1.0  # at least one final state
    return s, f, W


def pathsum_program() -> lagjax.Computation:
    """log Z with α = s + Wᵀ α, Z = α · f: inputs s, f (Q,) and W (Q, Q)."""
    C = lagjax.Constraints({"s": (Q,), "f": (Q,), "W": (Q, Q)})
    C.add("alpha", lambda s, W, alpha: s + W.T @ alpha, ["s", "W", "alpha"], shape=(Q,))
    C.add("Z", lambda alpha, f: alpha @ f, ["alpha", "f"])
    C.add("logZ", jnp.log, ["Z"])
    return lagjax.Computation(lambda z: z["logZ"], C.inputs, C)


def closed_form(s, f, W):
    """Z and the expected edge counts from (I − W)⁻¹, in NumPy."""
    inverse = np.linalg.inv(np.eye(Q) - W)
    alpha, beta = inverse.T @ s, inverse @ f  # forward and backward weights
    Z = alpha @ f
    return Z, W * np.outer(alpha, beta) / Z


def expected_length_by_series(s, f, W, terms: int = 400) -> float:
    """E[path length] = Σ_k k sᵀ Wᵏ f / Σ_k sᵀ Wᵏ f, summing path lengths k < terms directly."""
    total = weighted = 0.0
    v = s.copy()  # sᵀ Wᵏ
    for k in range(terms):
        total += v @ f
        weighted += k * (v @ f)
        v = v @ W
    return weighted / total


def main() -> float:
    s, f, W = random_automaton()
    comp = pathsum_program()
    x = {"s": jnp.asarray(s), "f": jnp.asarray(f), "W": jnp.asarray(W)}
    grad = comp.gradient(x)  # ∂ log Z / ∂(s, f, W)
    counts = W * np.asarray(grad["W"])

    Z_ref, counts_ref = closed_form(s, f, W)
    print(f"{Q} states, {int((W > 0).sum())} edges, spectral radius of W = 0.8; Z = {Z_ref:.10f} (closed form)")
    print(comp, "cyclic blocks:", [block.names for block in comp.blocks])
    np.set_printoptions(precision=5, suppress=True, linewidth=120)
    print("\nexpected edge counts E[count(i -> j)], lagjax (W ∘ ∂ log Z/∂W):")
    print(counts)
    print("closed form W ∘ α βᵀ / Z:")
    print(counts_ref)
    error = float(np.max(np.abs(counts - counts_ref)) / np.max(np.abs(counts_ref)))
    print(f"max relative difference: {error:.1e}")

    length, length_ref = counts.sum(), expected_length_by_series(s, f, W)
    length_error = abs(length - length_ref) / length_ref
    print(
        f"\nexpected path length: Σ counts (lagjax) = {length:.12f}, series Σ k sᵀWᵏf / Z = {length_ref:.12f}, "
        f"relative difference {length_error:.1e}"
    )
    # f_j ∂ log Z/∂f_j is the probability that a path ends in state j: α_j f_j / Z, summing to 1
    ends, ends_ref = f * np.asarray(grad["f"]), closed_form_ends(s, f, W)
    ends_error = float(np.max(np.abs(ends - ends_ref)) / np.max(np.abs(ends_ref)))
    print(f"P(path ends in j) = f ∘ ∂ log Z/∂f, lagjax {ends}")
    print(f"                    α ∘ f / Z         {ends_ref}   relative difference {ends_error:.1e}")
    worst = max(error, length_error, ends_error)
    print(f"\nworst relative difference {worst:.1e}: {'ok' if worst <= 1e-8 else 'ABOVE 1e-8'} (target 1e-8)")
    return worst


def closed_form_ends(s, f, W) -> np.ndarray:
    alpha = np.linalg.solve((np.eye(Q) - W).T, s)
    return alpha * f / (alpha @ f)


if __name__ == "__main__":
    main()
