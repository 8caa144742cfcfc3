"""The value of a policy as a cyclic program: its gradient w.r.t. rewards and transition probabilities.

A Markov chain (an MDP under a fixed policy) with S states, rewards r (S,), transition matrix P
(S, S), rows summing to 1, and discount γ < 1. The value of each state is defined by Bellman's
equation, which is a set of S equality constraints:

    V = r + γ P V                                     (S constraints; V reads itself: a cycle)
    J = w · V                                         (w: the distribution of the start state)

In an acyclic program each constraint would be solved once, by substitution. Here V is its own
argument, so V forms one strongly connected block; lagjax solves the block's constraints
G(V) = r + γ P V − V = 0 by Newton's method (the map is linear: one step, up to rounding).

The Lagrangian L = J + μ · (r + γ P V − V) is stationary in V when

    (I − γ P)ᵀ μ = ∂J/∂V = w,

one linear solve on the block's diagonal (dense LU here, GMRES for large blocks), and then the
gradient is read off the Lagrangian's derivatives in the inputs:

    ∂J/∂r = μ,        ∂J/∂P = γ μ Vᵀ,

μ being the discounted state-visit frequencies from the start distribution w. The script compares
lagjax's gradient with this closed form computed independently by NumPy, (I − γP)⁻¹ explicitly, and
then does the same on a 2-state chain written with scalar constraints (`add_constraint`), whose
cycle runs between two variables V0 and V1 rather than within one array.

∂J/∂P is the unconstrained partial derivative (each P[s, t] moved alone); the derivative along the
simplex of row s subtracts the row's mean.

Run: python examples/mdp_values.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import lagjax  # noqa: E402

GAMMA = 0.9


def relative_difference(a, b) -> float:
    """max|a − b| / max|b|."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def random_chain(S: int, seed: int = 0):
    """Rewards (S,), a row-stochastic P (S, S) and a start distribution w (S,), seeded."""
    rng = np.random.default_rng(seed)
    P = rng.random((S, S)) ** 4  # uneven rows
    P /= P.sum(axis=1, keepdims=True)
    w = rng.random(S)
    return rng.normal(size=S), P, w / w.sum()


def value_program(S: int, w: np.ndarray) -> lagjax.Computation:
    """J = w · V with V = r + γ P V: inputs r (S,) and P (S, S)."""
    C = lagjax.Constraints({"r": (S,), "P": (S, S)})
    # V reads V: the cycle. Its shape cannot be inferred before V exists, so it is given.
    C.add("V", lambda r, P, V: r + GAMMA * P @ V, ["r", "P", "V"], shape=(S,))
    C.add("J", lambda V: jnp.dot(w, V), ["V"])
    return lagjax.Computation(lambda z: z["J"], C.inputs, C)


def closed_form(r, P, w):
    """(J, ∂J/∂r, ∂J/∂P) from the explicit inverse (I − γP)⁻¹, in NumPy."""
    inverse = np.linalg.inv(np.eye(len(r)) - GAMMA * P)
    V = inverse @ r
    mu = inverse.T @ w  # discounted visit frequencies
    return w @ V, mu, GAMMA * np.outer(mu, V)


def structured(S: int = 50) -> float:
    print(f"--- a {S}-state chain, V an array on a cycle (add) ---")
    r, P, w = random_chain(S)
    comp = value_program(S, w)
    print(comp, "blocks:", [block.names for block in comp.blocks])
    x = {"r": jnp.asarray(r), "P": jnp.asarray(P)}

    grad = comp.gradient(x)
    _, dr_ref, dP_ref = closed_form(r, P, w)
    report = comp.status(x)
    for stage in ("forward", "multipliers"):
        info = report[stage][0]
        print(f"  {stage:<11}: status {lagjax.Status(int(info.status)).name}, residual {float(info.residual):.1e}, steps {int(info.steps)}")
    print(f"  dJ/dr[:4]       lagjax {np.asarray(grad['r'][:4]).round(6)}")
    print(f"                  (I-γP)^-T w {dr_ref[:4].round(6)}")
    print(f"  dJ/dP[0, :4]    lagjax {np.asarray(grad['P'][0, :4]).round(6)}")
    print(f"                  γ μ Vᵀ {dP_ref[0, :4].round(6)}")

    # The same derivatives through the program as a JAX function: jax.grad of it, jitted.
    fn = comp.as_function()
    by_jax = jax.jit(jax.grad(fn))(x)
    errors = {
        "dJ/dr": relative_difference(grad["r"], dr_ref),
        "dJ/dP": relative_difference(grad["P"], dP_ref),
        "jax.grad(as_function) dJ/dP": relative_difference(by_jax["P"], dP_ref),
    }
    for name, error in errors.items():
        print(f"  max relative difference, {name:<28}: {error:.1e}")
    return max(errors.values())


def scalar(p: float = 0.7, q: float = 0.4, r0: float = 1.0, r1: float = -0.5) -> float:
    """Two states; from state 0 stay with probability p, from state 1 move to 0 with probability q."""
    print("\n--- a 2-state chain with scalar constraints (add_constraint) ---")
    C = lagjax.Constraints(["r0", "r1", "p", "q"])
    # V0 refers to V1 before V1 is defined: the cycle V0 -> V1 -> V0 (and each reads itself).
    C.add_constraint("V0", lambda v: v[0] + GAMMA * (v[1] * v[2] + (1 - v[1]) * v[3]), ["r0", "p", "V0", "V1"])
    C.add_constraint("V1", lambda v: v[0] + GAMMA * (v[1] * v[2] + (1 - v[1]) * v[3]), ["r1", "q", "V0", "V1"])
    C.add_constraint("J", lambda v: 0.5 * (v[0] + v[1]), ["V0", "V1"])
    comp = lagjax.Computation(lambda z: z[-1], C.inputs, C)
    grad = np.asarray(comp.gradient(jnp.array([r0, r1, p, q])))  # vectors in and out, in input order

    P = np.array([[p, 1 - p], [q, 1 - q]])
    _, dr, dP = closed_form(np.array([r0, r1]), P, np.array([0.5, 0.5]))
    # p moves P[0, 0] up and P[0, 1] down; q moves P[1, 0] up and P[1, 1] down
    expected = np.array([dr[0], dr[1], dP[0, 0] - dP[0, 1], dP[1, 0] - dP[1, 1]])
    print(f"  d J / d(r0, r1, p, q)  lagjax      {grad.round(10)}")
    print(f"                         closed form {expected.round(10)}")
    error = relative_difference(grad, expected)
    print(f"  max relative difference: {error:.1e}")
    return error


if __name__ == "__main__":
    worst = max(structured(), scalar())
    print(f"\nworst relative difference {worst:.1e}: {'ok' if worst <= 1e-8 else 'ABOVE 1e-8'} (target 1e-8)")
