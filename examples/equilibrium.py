"""A fixed-point (deep-equilibrium) layer as a cyclic program, differentiated by implicit multipliers.

A deep-equilibrium layer maps inputs X (n_in, batch) to the fixed point Z (h, batch) of one layer:

    Z = tanh(A Z + B X + b)                           (h · batch constraints; Z reads itself: a cycle)
    L = mean((c · Z − y)²)                            (a readout c and targets y: the loss)

Written as constraints, Z is one strongly connected block. lagjax solves it by Newton's method on
G(Z) = tanh(A Z + B X + b) − Z = 0 (here with the dense block Jacobian: h · batch = 128 unknowns, up to
`lagjax.Solver.dense_max`; larger blocks go matrix-free, Newton–Krylov), and never differentiates the
iterations. The Lagrangian L + <Λ, tanh(A Z + B X + b) − Z> is stationary in Z when, column by column,

    (I − J)ᵀ μ = ∂L/∂z,     J = diag(s) A,   s = 1 − z²   (the derivative of tanh at the fixed point),

one linear solve on the block, and then the gradients are read off the constraint: with ν = s ∘ μ,

    ∂L/∂A = Σ_n ν_n z_nᵀ,    ∂L/∂B = Σ_n ν_n x_nᵀ,    ∂L/∂b = Σ_n ν_n.

This is the implicit function theorem; the script compares lagjax's gradient with

  1. `jax.grad` through the fixed-point iteration unrolled for K steps (JAX stores all K iterates), and
  2. the formulas above, with the fixed point found by plain iteration in NumPy and a dense solve per column,

prints the block's status (converged, residual, Newton steps) from `comp.status`, and shows what
happens when the solver is given too few steps: `SolveError` outside `jit`, NaN inside.

Run: python examples/equilibrium.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import lagjax  # noqa: E402

H, N_IN, BATCH = 32, 4, 4  # hidden units, input features, examples
K = 300  # unrolled iterations: the iteration contracts at least by 0.9 per step, 0.9^300 ~ 2e-14


def problem(seed: int = 0):
    """A (‖A‖₂ = 0.9, so the iteration contracts), B, b, inputs X, readout c, targets y; seeded."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(H, H))
    A *= 0.9 / np.linalg.norm(A, 2)
    B = rng.normal(size=(H, N_IN)) / np.sqrt(N_IN)
    return A, B, 0.1 * rng.normal(size=H), rng.normal(size=(N_IN, BATCH)), rng.normal(size=H) / np.sqrt(H), rng.normal(size=BATCH)


def layer(A, B, b, X, Z):
    return jnp.tanh(A @ Z + B @ X + b[:, None])


def equilibrium_program(c, y, solver=None) -> lagjax.Computation:
    C = lagjax.Constraints({"A": (H, H), "B": (H, N_IN), "b": (H,), "X": (N_IN, BATCH)})
    C.add("Z", layer, ["A", "B", "b", "X", "Z"], shape=(H, BATCH))  # the cycle: Z reads Z
    C.add("L", lambda Z: jnp.mean((c @ Z - y) ** 2), ["Z"])
    return lagjax.Computation(lambda z: z["L"], C.inputs, C, solver=solver)


def unrolled_loss(params, X, c, y):
    """The loss after K steps of z <- layer(z) from z = 0: JAX differentiates through every step."""
    Z = jax.lax.fori_loop(0, K, lambda _, Z: layer(params["A"], params["B"], params["b"], X, Z), jnp.zeros((H, BATCH)))
    return jnp.mean((c @ Z - y) ** 2)


def implicit_closed_form(A, B, b, X, c, y):
    """The implicit-function gradients in NumPy: Z by plain iteration, a dense solve per column."""
    Z = np.zeros((H, BATCH))
    for _ in range(2000):
        Z_new = np.tanh(A @ Z + B @ X + b[:, None])
        if np.max(np.abs(Z_new - Z)) < 1e-15:
            break
        Z = Z_new
    S = 1 - Z**2
    G = np.outer(c, 2 * (c @ Z - y) / BATCH)  # ∂L/∂Z
    nu = np.empty_like(Z)
    for n in range(BATCH):
        J = S[:, n, None] * A
        nu[:, n] = S[:, n] * np.linalg.solve((np.eye(H) - J).T, G[:, n])
    return {"A": nu @ Z.T, "B": nu @ X.T, "b": nu.sum(axis=1)}


def relative_difference(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main() -> float:
    A, B, b, X, c, y = problem()
    comp = equilibrium_program(c, y)
    x = {"A": jnp.asarray(A), "B": jnp.asarray(B), "b": jnp.asarray(b), "X": jnp.asarray(X)}
    print(comp, f"({H} x {BATCH} = {H * BATCH} unknowns in the cycle of Z)")

    grad = comp.gradient(x)
    report = comp.status(x)  # jittable: one Info per cyclic block and stage
    for stage in ("forward", "multipliers"):
        info = report[stage][0]
        print(f"  {stage:<11} status {lagjax.Status(int(info.status)).name}, residual {float(info.residual):.1e}, steps {int(info.steps)}")

    params = {k: x[k] for k in ("A", "B", "b")}
    unrolled = jax.jit(jax.grad(unrolled_loss))(params, x["X"], jnp.asarray(c), jnp.asarray(y))
    closed = implicit_closed_form(A, B, b, X, c, y)
    print(f"\n  dL/db[:4]  lagjax            {np.asarray(grad['b'][:4])}")
    print(f"             unrolled, K={K}   {np.asarray(unrolled['b'][:4])}")
    print(f"             implicit, dense   {closed['b'][:4]}")
    worst = 0.0
    print("\n  max relative difference   vs unrolled jax.grad   vs implicit closed form")
    for name in ("A", "B", "b"):
        e1, e2 = relative_difference(grad[name], unrolled[name]), relative_difference(grad[name], closed[name])
        worst = max(worst, e1, e2)
        print(f"  dL/d{name:<21} {e1:>18.1e}   {e2:>22.1e}")

    # Too few Newton steps: never a silently wrong gradient.
    print("\nwith lagjax.Solver(max_steps=2):")
    short = equilibrium_program(c, y, solver=lagjax.Solver(max_steps=2))
    try:
        short.forward(x)
    except lagjax.SolveError as error:
        print(f"  outside jit, SolveError: {error}")
    loss = jax.jit(short.as_function())(x)  # inside jit nothing can raise: the block's values are NaN
    print(f"  inside jit, the loss is {float(loss)} (and `short.status(x)` reports NOT_CONVERGED with the residual)")

    print(f"\nworst relative difference {worst:.1e}: {'ok' if worst <= 1e-8 else 'ABOVE 1e-8'} (target 1e-8)")
    return worst


if __name__ == "__main__":
    main()
