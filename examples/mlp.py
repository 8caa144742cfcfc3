"""A 4-layer MLP written as constraints, one per layer, trained with gradients from lagjax.

The constraint view of a network. Its layers are equality constraints between named arrays,

    h1  = tanh(W1 @ X  + b1)       (32, B)
    h2  = tanh(W2 @ h1 + b2)       (32, B)
    h3  = tanh(W3 @ h2 + b3)       (32, B)
    out =      W4 @ h3 + b4        (1, B)

and training minimises a loss f(z) = mean(log(1 + exp(-Y · out))) of the variables z subject to them.
The weights, biases, data X and labels Y are the program's *inputs* (a constraint has no derivative
w.r.t. what it closes over); X holds one column per example. At the stationary point of the
Lagrangian

    L(z, λ) = f(z) + Σ_layers <λ_h, layer_h(z) - h>

the multiplier λ_h of a layer is ∂f/∂h, the total derivative of the loss w.r.t. that layer's output:
exactly backpropagation's error signal (the "adjoint" of the layer). lagjax solves for all of them
by one back-substitution, layer by layer through `jax.vjp`, and the multipliers of the inputs are the
gradient. `Computation.as_function()` makes the program an ordinary JAX function, so `jax.grad`,
`jax.jit` and optax work on it; `Computation.multipliers` shows every λ.

The script trains on two interleaved half-moons (numpy, seeded) with optax's Adam, prints the loss,
the norm of each layer's multiplier at the start and at the end, and checks lagjax's gradient
against `jax.grad` of the same network written as a plain JAX loop.

Run: python examples/mlp.py [--steps 60]
Needs the `examples` extras: python -m pip install -e '.[examples]'
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lagjax

SIZES = [2, 32, 32, 32, 1]  # input features, three hidden layers, one output: 4 layers
LAYERS = ["h1", "h2", "h3", "out"]


def hidden(W, b, h):
    return jnp.tanh(W @ h + b[:, None])


def linear(W, b, h):
    return W @ h + b[:, None]


def loss_of(out, Y):
    """Logistic loss of the scores `out` for labels `Y` in {-1, +1}."""
    return jnp.mean(jnp.logaddexp(0.0, -Y * out))


def network(batch: int) -> lagjax.Computation:
    """The MLP as a structured program: inputs W1..W4, b1..b4, X, Y; one constraint per layer."""
    shapes = {}
    for l in range(1, len(SIZES)):
        shapes[f"W{l}"] = (SIZES[l], SIZES[l - 1])
        shapes[f"b{l}"] = (SIZES[l],)
    shapes["X"], shapes["Y"] = (SIZES[0], batch), (1, batch)
    C = lagjax.Constraints(shapes)
    previous = "X"
    for l, name in enumerate(LAYERS, 1):
        C.add(name, linear if name == "out" else hidden, [f"W{l}", f"b{l}", previous])
        previous = name
    return lagjax.Computation(lambda z: loss_of(z["out"], z["Y"]), C.inputs, C)


def plain_loss(params: dict, data: dict) -> jax.Array:
    """The same network as ordinary JAX: a Python loop over the layers (the reference for jax.grad)."""
    h = data["X"]
    for l in range(1, len(SIZES)):
        h = (linear if l == len(SIZES) - 1 else hidden)(params[f"W{l}"], params[f"b{l}"], h)
    return loss_of(h, data["Y"])


def two_moons(n: int, seed: int, noise: float = 0.1) -> dict:
    """`n` points on two interleaved half-circles: X `(2, n)`, labels Y `(1, n)` in {-1, +1}."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    X = np.stack([x - 0.5, y - 0.25]) + noise * rng.normal(size=(2, n))
    return {"X": jnp.asarray(X, jnp.float32), "Y": jnp.asarray(np.where(upper, 1.0, -1.0)[None], jnp.float32)}


def initial_parameters(seed: int) -> dict:
    """Weights normal / sqrt(fan-in), biases 0, float32."""
    rng = np.random.default_rng(seed)
    params = {}
    for l in range(1, len(SIZES)):
        params[f"W{l}"] = jnp.asarray(rng.normal(size=(SIZES[l], SIZES[l - 1])) / np.sqrt(SIZES[l - 1]), jnp.float32)
        params[f"b{l}"] = jnp.zeros(SIZES[l], jnp.float32)
    return params


def print_multipliers(comp: lagjax.Computation, params: dict, data: dict, when: str) -> None:
    """‖λ‖ of every layer, from `comp.multipliers`: how strongly the loss pulls on each layer's output."""
    _, lam = comp.multipliers({**params, **data})
    norms = "  ".join(f"‖λ_{name}‖ {float(jnp.linalg.norm(lam[name])):.2e}" for name in LAYERS)
    print(f"multipliers at {when}: {norms}")


def check_gradient(comp: lagjax.Computation, params: dict, data: dict) -> float:
    """Max relative difference, over the parameters, of lagjax's gradient and jax.grad of the plain loop."""
    fn = comp.as_function()
    ours = jax.grad(lambda p: fn({**p, **data}))(params)  # as_function: lagjax's multiplier sweep
    multipliers = comp.gradient({**params, **data})  # the inputs' multipliers, directly
    reference = jax.grad(plain_loss)(params, data)
    error = 0.0
    for name in params:
        scale = float(jnp.max(jnp.abs(reference[name]))) or 1.0
        for g in (ours[name], multipliers[name]):
            error = max(error, float(jnp.max(jnp.abs(g - reference[name]))) / scale)
    return error


def train(steps: int, seed: int = 0, batch: int = 256, learning_rate: float = 0.02, every: int = 10) -> list[float]:
    """Adam on the logistic loss; returns the loss at every step and prints it every `every` steps."""
    comp = network(batch)
    fn = comp.as_function()  # x ↦ f(z*(x)), x a dict of all inputs
    data = two_moons(batch, seed)
    params = initial_parameters(seed)
    print(f"program: {comp}: {len(LAYERS)} layer constraints, {sum(p.size for p in params.values())} parameters, {batch} examples")

    def loss(params):
        return fn({**params, **data})  # data closed over: gradients w.r.t. the parameters only

    optimiser = optax.adam(learning_rate)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)  # lagjax's back-substitution, under jit
        updates, state = optimiser.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    error = check_gradient(comp, params, data)
    print(f"lagjax gradient vs jax.grad of the plain JAX loop: max relative difference {error:.1e}")
    print("λ_h = ∂loss/∂h, the error signal backpropagation sends to layer h (its adjoint):")
    print_multipliers(comp, params, data, "start")
    state, losses = optimiser.init(params), []
    for t in range(steps):
        params, state, value = step(params, state)
        losses.append(float(value))
        if t % every == 0 or t == steps - 1:
            print(f"step {t:4d}  loss {losses[-1]:.5f}")
    print_multipliers(comp, params, data, "end  ")
    scores = comp.solve_constraints({**params, **data})["out"]
    accuracy = float(jnp.mean(jnp.sign(scores) == data["Y"]))
    print(f"training accuracy {accuracy:.1%}")
    if error > 1e-4:
        raise AssertionError(f"lagjax's gradient differs from jax.grad's by {error:.1e} (relative)")
    return losses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimisation steps (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    losses = train(args.steps, args.seed)
    print(f"loss {losses[0]:.5f} -> {losses[-1]:.5f} in {args.steps} steps, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
