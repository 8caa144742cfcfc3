"""Expected arc counts of a left-to-right HMM with self-loops, as the gradient of log Z: Q cyclic blocks.

A left-to-right hidden Markov model (a weighted automaton) with Q states: a start weight s on
state 0 (s = e_0), from each state i a self-loop i -> i of weight W[i, i] and an arc i -> i+1 of
weight W[i, i+1], and final weights f (Q,). W is upper bidiagonal; every other W[i, j] is 0. The
weight of a path is the product of its start weight, its arc weights and its final weight, and the
total weight Z sums over every path of every length (infinitely many: each self-loop can be taken
any number of times; the sum converges for W[i, i] < 1). The *forward weights* α (α_j = the total
weight of the paths from the start to state j) satisfy one equation per state:

    α_0 = s_0 + W[0, 0] α_0
    α_j = W[j, j] α_j + W[j−1, j] α_{j−1},            j = 1, ..., Q − 1   (Q constraints)
    Z = Σ_j α_j f_j,     log Z                          (the objective)

Each α_j reads itself (the self-loop) and its predecessor: the program is Q strongly connected
components of one scalar each, along a chain, Q cyclic blocks (solved by Newton's method: the map is
linear, one step each), the whole built with two `add_constraints` calls (α_0, then all the others as
one table), so that 10⁴ states take milliseconds to build. The inputs are the arc weights
W[i, i] ("loop i"), W[i, i+1] ("next i") and the final weights f ("f i"): 3Q − 1 scalars.

The multipliers λ_j of the α-constraints solve the transposed, block-triangular system, back to front,

    (1 − W[j, j]) λ_j = f_j / Z + W[j, j+1] λ_{j+1},     i.e. (I − W) λ = f / Z,

so λ = β / Z with β = (I − W)⁻¹ f the *backward weights* (the backward half of forward–backward), and
the derivative in an arc weight is read off the one constraint it appears in:

    ∂ log Z / ∂W[i, j] = α_i λ_j = α_i β_j / Z,      E[count(i -> j)] = W[i, j] ∂ log Z / ∂W[i, j],

the expected number of times a path drawn with probability ∝ its weight takes the arc. The script
checks lagjax's expected counts against the closed form α = (I − W)⁻ᵀ s, β = (I − W)⁻¹ f computed
independently in NumPy/SciPy (W is bidiagonal: two banded solves, `scipy.linalg.solve_banded`, where a
dense (I − W)⁻¹ of 10⁴ × 10⁴ would not fit the time), and checks that the counts of all arcs add up to
the expected path length computed a third way, probabilistically: a path that ends in state j
(probability α_j f_j / Z) takes j forward arcs and, at each state i <= j, a geometric number of
self-loops of mean W[i, i] / (1 − W[i, i]), so

    E[length] = Σ_j (α_j f_j / Z) (j + Σ_{i<=j} W[i, i] / (1 − W[i, i])).

It then times lagjax's gradient against the natural JAX alternative: the forward recursion written as a
`lax.scan`, α_j = (s_j + W[j−1, j] α_{j−1}) / (1 − W[j, j]) (each self-loop solved in closed form),
differentiated by `jax.grad`. Compile (`.lower(x).compile()`) is timed apart from the calls, and every
timed call waits for its result (`block_until_ready`). float64.

Run: python examples/hmm_expected_counts.py [--states 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import solve_banded

jax.config.update("jax_enable_x64", True)

import lagjax  # noqa: E402


def random_hmm(Q: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Arc weights loop (Q,) = W[i, i], next (Q − 1,) = W[i, i+1] and final weights f (Q,), seeded.

    A stochastic automaton with exits, then damped: from state i the path loops with probability
    p_i ∈ [0.2, 0.8], leaves the automaton with probability (1 − p_i) e_i (e_i of mean 1/Q, so that
    about one path in e reaches the end, and α stays of order 1 however large Q is), else moves on;
    the final weights are then scaled by factors in [0.5, 1] so that Z is not exactly 1."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.2, 0.8, Q)
    e = rng.uniform(0, 2 / Q, Q)
    e[-1] = 1.0  # the last state only loops or ends
    return {"loop": p, "next": ((1 - p) * (1 - e))[:-1], "f": (1 - p) * e * rng.uniform(0.5, 1.0, Q)}


def flat(hmm: dict[str, np.ndarray]) -> np.ndarray:
    """The program's input vector: loop 0..Q−1, next 0..Q−2, f 0..Q−1."""
    return np.concatenate([hmm["loop"], hmm["next"], hmm["f"]])


def hmm_program(Q: int, solver: lagjax.Solver | None = None) -> lagjax.Computation:
    """log Z of the left-to-right HMM as a scalar program: Q cyclic blocks α_j, built in bulk."""
    loops = [f"loop {i}" for i in range(Q)]
    C = lagjax.Constraints(loops + [f"next {i}" for i in range(Q - 1)] + [f"f {i}" for i in range(Q)])
    d = 3 * Q - 1  # α_j is variable d + j; loop j is j, next j is Q + j, f j is 2Q − 1 + j
    # α_0 = s_0 + W[0, 0] α_0, s_0 = 1: reads itself
    C.add_constraints(["alpha 0"], lambda v: 1.0 + v[0] * v[1], np.array([[0, d]]))
    j = np.arange(1, Q)
    # α_j = W[j, j] α_j + W[j−1, j] α_{j−1}: one table, its own rows read forward (the self-loops)
    table = np.stack([j, d + j, Q + j - 1, d + j - 1], axis=1)
    C.add_constraints([f"alpha {j}" for j in range(1, Q)], lambda v: v[0] * v[1] + v[2] * v[3], table)
    alpha, final = d + np.arange(Q), 2 * Q - 1 + np.arange(Q)
    return lagjax.Computation(lambda z: jnp.log(z[alpha] @ z[final]), C.inputs, C, solver=solver)


def expected_counts(gradient, hmm) -> tuple[np.ndarray, np.ndarray]:
    """(E[count(i -> i)] (Q,), E[count(i -> i+1)] (Q − 1,)) = W ∘ ∂ log Z/∂W from the flat gradient."""
    Q, g = len(hmm["loop"]), np.asarray(gradient)
    return hmm["loop"] * g[:Q], hmm["next"] * g[Q : 2 * Q - 1]


def closed_form(hmm) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """log Z, the expected counts (loops, nexts) and the forward weights α from (I − W)⁻¹, NumPy/SciPy.

    I − W is upper bidiagonal: α = (I − W)⁻ᵀ s and β = (I − W)⁻¹ f are two banded solves."""
    loop, nxt, f = hmm["loop"], hmm["next"], hmm["f"]
    Q = len(loop)
    upper = np.zeros((2, Q))  # I − W in banded form: row 0 the superdiagonal, row 1 the diagonal
    upper[0, 1:], upper[1] = -nxt, 1 - loop
    lower = np.zeros((2, Q))  # (I − W)ᵀ: row 0 the diagonal, row 1 the subdiagonal
    lower[0], lower[1, :-1] = 1 - loop, -nxt
    s = np.zeros(Q)
    s[0] = 1.0
    alpha = solve_banded((1, 0), lower, s)
    beta = solve_banded((0, 1), upper, f)
    Z = alpha @ f
    return float(np.log(Z)), loop * alpha * beta / Z, nxt * alpha[:-1] * beta[1:] / Z, alpha


def expected_length(hmm, alpha) -> float:
    """E[path length] = Σ_j P(end in j) (j + Σ_{i<=j} W[i, i]/(1 − W[i, i])): geometric self-loops."""
    loop, f = hmm["loop"], hmm["f"]
    ends = alpha * f / (alpha @ f)
    return float(ends @ (np.arange(len(loop)) + np.cumsum(loop / (1 - loop))))


def scan_log_z(x, Q: int):
    """log Z by the forward recursion α_j = (s_j + W[j−1, j] α_{j−1}) / (1 − W[j, j]) in a lax.scan."""
    loop, nxt, f = x[:Q], x[Q : 2 * Q - 1], x[2 * Q - 1 :]

    def step(a, arc):
        a = arc[1] * a / (1 - arc[0])
        return a, a

    a0 = 1 / (1 - loop[0])
    _, rest = jax.lax.scan(step, a0, (loop[1:], nxt))
    return jnp.log(jnp.concatenate([a0[None], rest]) @ f)


def scan_gradient(Q: int):
    """`jax.grad` of `scan_log_z`: the natural JAX alternative (unjitted)."""
    return jax.grad(lambda x: scan_log_z(x, Q))


def timed(fn, x, repeats: int) -> tuple[float, float, float, np.ndarray]:
    """(compile s, 1st call s, steady run s (median), result) of `jax.jit(fn)` at x."""
    fn = fn if hasattr(fn, "lower") else jax.jit(fn)
    t = time.perf_counter()
    compiled = fn.lower(x).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(x))
    first_s = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(x))
        times.append(time.perf_counter() - t)
    return compile_s, first_s, float(np.median(times)), np.asarray(out)


def relative_difference(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=1000, help="Q, the number of states (default 1000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per steady figure (default 5)")
    args = parser.parse_args(argv)
    Q = args.states
    hmm = random_hmm(Q)
    x = jnp.asarray(flat(hmm))

    t = time.perf_counter()
    comp = hmm_program(Q)
    build_s = time.perf_counter() - t
    print(f"{Q:,} states, {2 * Q - 1:,} arcs; {comp.n:,} variables, {len(comp.blocks):,} cyclic blocks; built in {build_s:.2f} s")

    t = time.perf_counter()
    logZ_ref, loops_ref, nexts_ref, alpha = closed_form(hmm)
    closed_s = time.perf_counter() - t
    counts_ref = np.concatenate([loops_ref, nexts_ref])

    rows = []
    lagjax_fn = jax.jit(jax.grad(comp.as_function()))  # lagjax's multiplier sweep, as a JAX gradient
    rows.append(("lagjax: jax.grad(comp.as_function())", *timed(lagjax_fn, x, args.repeats)))
    rows.append(("lax.scan forward recursion + jax.grad", *timed(scan_gradient(Q), x, args.repeats)))
    t = time.perf_counter()
    gradient = jax.block_until_ready(comp.gradient(x))  # the method, with its status check on the host
    first_s = time.perf_counter() - t
    steady = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        jax.block_until_ready(comp.gradient(x))
        steady.append(time.perf_counter() - t)
    rows.append(("lagjax: comp.gradient(x)", None, first_s, float(np.median(steady)), np.asarray(gradient)))

    print(f"\nlog Z = {logZ_ref:.12f} (closed form, {closed_s * 1e3:.1f} ms: two banded solves of I − W)")
    print(f"\n{'method':<40} {'compile s':>10} {'1st call s':>11} {'run ms':>9} {'E[counts] rel. diff.':>21}")
    worst = 0.0
    for name, compile_s, first, run_s, grad in rows:
        error = relative_difference(np.concatenate(expected_counts(grad, hmm)), counts_ref)
        worst = max(worst, error)
        compile_text = "—" if compile_s is None else f"{compile_s:.2f}"
        print(f"{name:<40} {compile_text:>10} {first:>11.3f} {run_s * 1e3:>9.2f} {error:>21.1e}")

    loops, nexts = expected_counts(rows[0][4], hmm)
    print(f"\nexpected self-loop counts, states 0-4: lagjax {loops[:5]}")
    print(f"                            closed form {loops_ref[:5]}")
    print(f"expected forward-arc counts, arcs 0-4:  lagjax {nexts[:5]}")
    print(f"                            closed form {nexts_ref[:5]}")
    length, length_ref = loops.sum() + nexts.sum(), expected_length(hmm, alpha)
    length_error = abs(length - length_ref) / length_ref
    print(
        f"\nexpected path length: Σ counts (lagjax) = {length:.10f}, Σ_j P(end j)(j + Σ_i≤j W_ii/(1 − W_ii)) = {length_ref:.10f}, "
        f"relative difference {length_error:.1e}"
    )
    worst = max(worst, length_error)
    print(f"worst relative difference {worst:.1e}: {'ok' if worst <= 1e-8 else 'ABOVE 1e-8'} (target 1e-8)")
    return worst


if __name__ == "__main__":
    sys.exit(0 if main() <= 1e-8 else 1)
