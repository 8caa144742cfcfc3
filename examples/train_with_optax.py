"""Fit the parameters of a constraint program to data with optax; gradients from `Computation.as_function`.

The program is a tiny network written as 205 scalar constraints: two data inputs `u0, u1`, two
hidden layers of 12 tanh units and a linear output,

    p = w·u            (one constraint per weight: `product`)
    h = tanh(Σ p + b)  (one per unit: `neuron`)
    y = Σ p + b        (the output: `total`)

Weights and biases are *inputs* of the program (a constraint has no gradient w.r.t. what it closes
over): the program's input vector is `[u0, u1, θ]`, θ the 205 parameters in the order of `names`,
so the prediction is `fn(concatenate([u, θ]))` with `fn = comp.as_function()`, batched over the data
with `jax.vmap`, and `jax.grad` w.r.t. θ runs lagjax's multiplier sweep, batched. A dict
`fn({**params, "u0": u0, "u1": u1})` works the same way, but 205 scalar leaves are 205 separate
arguments to XLA and compile several times slower than one vector: with many parameters, use a vector.
The three
functions are module-level and shared by all constraints: constraints are grouped by the code
they run, so the program has 4 groups, not 205.

Run: python examples/train_with_optax.py [--steps 300] [--plot train_with_optax.png]
Needs the `examples` extras: python -m pip install -e '.[examples]'
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lagjax import Computation, Constraints

HIDDEN = 12


def product(v):
    return v[0] * v[1]


def neuron(v):
    return jnp.tanh(jnp.sum(v))


def total(v):
    return jnp.sum(v)


def network(hidden: int = HIDDEN) -> tuple[Computation, list[str]]:
    """The program and the names of its parameters (every input but `u0`, `u1`)."""
    sizes = [2, hidden, hidden, 1]
    params = [f"w{l}_{j}_{k}" for l in range(3) for j in range(sizes[l + 1]) for k in range(sizes[l])]
    params += [f"b{l}_{j}" for l in range(3) for j in range(sizes[l + 1])]
    C = Constraints(["u0", "u1", *params])
    previous = ["u0", "u1"]
    for l in range(3):
        current = []
        for j in range(sizes[l + 1]):
            for k, source in enumerate(previous):
                C.add_constraint(f"p{l}_{j}_{k}", product, [f"w{l}_{j}_{k}", source])
            terms = [f"p{l}_{j}_{k}" for k in range(len(previous))] + [f"b{l}_{j}"]
            name = f"h{l}_{j}" if l < 2 else "y"
            C.add_constraint(name, neuron if l < 2 else total, terms)
            current.append(name)
        previous = current
    y = C.index("y")
    return Computation(lambda z: z[y], C.inputs, C), params


def initial_parameters(names: list[str], seed: int) -> jax.Array:
    """θ, shape `(len(names),)`: weights normal / sqrt(fan-in), biases 0."""
    rng = np.random.default_rng(seed)
    fan_in = {"0": 2, "1": HIDDEN, "2": HIDDEN}
    return jnp.asarray([0.0 if name[0] == "b" else rng.normal() / np.sqrt(fan_in[name[1]]) for name in names])


def data(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """`size` points in [-1, 1]², target `sin(π u0) · u1 + 0.5 u0²`."""
    u = np.random.default_rng(seed + 1).uniform(-1, 1, (size, 2))
    return u, np.sin(np.pi * u[:, 0]) * u[:, 1] + 0.5 * u[:, 0] ** 2


def train(steps: int, seed: int = 0, learning_rate: float = 0.02, every: int = 25) -> list[float]:
    """Adam on the mean squared error; returns the loss at every step and prints it every `every` steps."""
    comp, names = network()
    fn = comp.as_function()  # x ↦ f(z*(x)): the prediction y
    u, target = data(seed)
    print(f"program: {comp}, {len(names)} parameters, {len(u)} data points")

    def loss(theta):
        predict = lambda point: fn(jnp.concatenate([point, theta]))  # noqa: E731  (inputs: u0, u1, θ)
        return jnp.mean((jax.vmap(predict)(u) - target) ** 2)

    optimiser = optax.adam(learning_rate)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)  # the multiplier sweep, batched over the data
        updates, state = optimiser.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    params = initial_parameters(names, seed)
    state = optimiser.init(params)
    losses = []
    for t in range(steps):
        params, state, value = step(params, state)
        losses.append(float(value))
        if t % every == 0 or t == steps - 1:
            print(f"step {t:4d}  loss {losses[-1]:.5f}")
    return losses


def plot(losses: list[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(losses)
    ax.set_xlabel("step")
    ax.set_ylabel("mean squared error")
    ax.set_title("205-constraint network, optax, gradients by lagjax")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="train_with_optax.png", help="where to save the loss curve (PNG)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    losses = train(args.steps, args.seed)
    plot(losses, args.plot)
    print(f"loss {losses[0]:.5f} -> {losses[-1]:.5f} in {args.steps} steps, {time.perf_counter() - start:.1f} s; plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
