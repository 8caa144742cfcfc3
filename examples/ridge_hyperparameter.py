"""Tuning a regularisation strength by gradient: the inner optimum as a cycle, the outer loss as objective.

Bilevel learning. The inner problem fits ridge-regression weights on training data (X, y),

    w*(λ) = argmin_w  ½‖X w − y‖² + ½ λ ‖w‖²,     λ = exp(θ),

and the outer objective is the validation loss ½ mean((X_val w* − y_val)²), to be minimised over θ.
The inner optimum is a fixed point of one gradient-descent step, which is a constraint on w that reads w:

    w = w − η (Xᵀ(X w − y) + λ w)                     (p constraints; w reads itself: a cycle)
    L = ½ mean((X_val w − y_val)²)                     (the objective)

Any step size η > 0 has the same fixed point (the stationarity condition (XᵀX + λI) w = Xᵀy); lagjax
solves the block by Newton's method, so η need not make the iteration converge (η = 1/‖X‖₂² here,
for scale). The gradient comes from the multipliers of the block, one linear solve with
(I − ∂F/∂w)ᵀ = η (XᵀX + λI): the implicit function theorem, without differentiating any solver steps:

    dL/dθ = −λ μᵀ w*,     μ = (XᵀX + λI)⁻¹ ∂L/∂w      (and dL/dy = X μ, each training label's influence).

The script compares lagjax's gradient in θ = log λ, and in the training labels y, with `jax.grad` of
the closed form w*(λ) = (XᵀX + λI)⁻¹ Xᵀy written directly in JAX, and then takes a few gradient steps
on θ with `jax.grad` of the program as a JAX function.

Run: python examples/ridge_hyperparameter.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import lagjax  # noqa: E402

N_TRAIN, N_VAL, P = 30, 200, 20  # few training examples, many features: regularisation matters
STEP = 4.0  # gradient-descent step on log λ


def data(seed: int = 0):
    """Training and validation sets from one noisy linear model, seeded."""
    rng = np.random.default_rng(seed)
    w_true = 0.3 * rng.normal(size=P)
    X, X_val = rng.normal(size=(N_TRAIN, P)), rng.normal(size=(N_VAL, P))
    y = X @ w_true + 1.0 * rng.normal(size=N_TRAIN)
    y_val = X_val @ w_true + 1.0 * rng.normal(size=N_VAL)
    return X, y, X_val, y_val


def bilevel_program(X, X_val, y_val) -> lagjax.Computation:
    """Inputs θ = log λ (a scalar) and the training labels y; the data X, X_val, y_val are constants."""
    eta = 1.0 / np.linalg.norm(X, 2) ** 2
    C = lagjax.Constraints({"log_lam": (), "y": (N_TRAIN,)})

    def gradient_step(log_lam, y, w):
        return w - eta * (X.T @ (X @ w - y) + jnp.exp(log_lam) * w)

    C.add("w", gradient_step, ["log_lam", "y", "w"], shape=(P,))  # the inner optimum: a fixed point
    C.add("L", lambda w: 0.5 * jnp.mean((X_val @ w - y_val) ** 2), ["w"])
    return lagjax.Computation(lambda z: z["L"], C.inputs, C)


def closed_form_loss(log_lam, y, X, X_val, y_val):
    """The validation loss through w*(λ) = (XᵀX + λI)⁻¹Xᵀy, in plain JAX (jax.grad differentiates the solve)."""
    w = jnp.linalg.solve(X.T @ X + jnp.exp(log_lam) * jnp.eye(P), X.T @ y)
    return 0.5 * jnp.mean((X_val @ w - y_val) ** 2)


def relative_difference(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main() -> float:
    X, y, X_val, y_val = data()
    comp = bilevel_program(X, X_val, y_val)
    print(comp, "cyclic blocks:", [block.names for block in comp.blocks])
    reference = jax.jit(jax.grad(closed_form_loss, argnums=(0, 1)))

    worst = 0.0
    print("\n  log λ    dL/dlog λ lagjax     closed form        rel. diff   dL/dy rel. diff")
    for log_lam in (-2.0, 0.0, 2.0, 4.0):
        x = {"log_lam": jnp.asarray(log_lam), "y": jnp.asarray(y)}
        grad = comp.gradient(x)
        d_theta, d_y = reference(jnp.asarray(log_lam), jnp.asarray(y), X, X_val, y_val)
        e_theta, e_y = relative_difference(grad["log_lam"], d_theta), relative_difference(grad["y"], d_y)
        worst = max(worst, e_theta, e_y)
        print(f"  {log_lam:+5.1f}  {float(grad['log_lam']):+.12e}  {float(d_theta):+.12e}  {e_theta:9.1e}   {e_y:9.1e}")

    # Hyperparameter descent: the program as a JAX function, differentiated by jax.grad, jitted.
    fn = comp.as_function()
    loss_and_grad = jax.jit(jax.value_and_grad(lambda theta: fn({"log_lam": theta, "y": jnp.asarray(y)})))
    theta = jnp.asarray(0.0)
    print(f"\n  gradient descent on log λ (step {STEP}):")
    for step in range(8):
        loss, g = loss_and_grad(theta)
        print(f"    step {step}: log λ = {float(theta):+.4f}, validation loss {float(loss):.6f}, gradient {float(g):+.2e}")
        theta = theta - STEP * g
    print(f"\nworst relative difference {worst:.1e}: {'ok' if worst <= 1e-8 else 'ABOVE 1e-8'} (target 1e-8)")
    return worst


if __name__ == "__main__":
    main()
