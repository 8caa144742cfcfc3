"""A catalogue of test programs, each built by a function returning `(Computation, x)` in float64."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from lagjax import Computation, Constraints, demo


def blog():
    return demo.blog_program(), np.array([0.3])


def two_input():
    return demo.two_input_program(), np.array([0.3, -0.2])


def _logistic(v):
    return 1 / (1 + jnp.exp(-v[0]))


def wide(width: int = 32, seed: int = 1):
    """Four inputs feeding `width` independent units, then sums of four units: depth 2, wide."""
    rng = np.random.default_rng(seed)
    C = Constraints([f"x{i}" for i in range(4)])
    units = [lambda v: jnp.sin(v[0] * v[1]), lambda v: jnp.tanh(v[0] - 0.5 * v[1])]
    for j in range(width):
        a, b = rng.choice(4, 2, replace=False)
        C.add_constraint(f"h{j}", units[j % 2], [f"x{a}", f"x{b}"])
    for j in range(0, width, 4):
        C.add_constraint(f"s{j}", jnp.sum, [f"h{j + t}" for t in range(4)])
    outs = np.array([C.index(f"s{j}") for j in range(0, width, 4)])
    return Computation(lambda z: jnp.sum(z[outs] ** 2), C.inputs, C), rng.uniform(-1, 1, 4)


def deep(depth: int = 60):
    """A chain alternating sin, tanh and logistic, an input mixed in every tenth step: deep, narrow."""
    unary = [lambda v: jnp.sin(1.3 * v[0]), lambda v: jnp.tanh(2 * v[0]), _logistic]
    mix = lambda v: v[0] + 0.5 * jnp.cos(v[1])  # noqa: E731
    C = Constraints(["x", "y"])
    prev = "x"
    for t in range(depth):
        name = f"c{t}"
        if t % 10 == 9:
            C.add_constraint(name, mix, [prev, "y"])
        else:
            C.add_constraint(name, unary[t % 3], [prev])
        prev = name
    last = C.index(prev)
    return Computation(lambda z: jnp.sin(z[last]) + 0.1 * jnp.sum(z**2), C.inputs, C), np.array([0.4, -0.7])


def shared(layers: int = 6, width: int = 4):
    """A lattice: node (l, j) reads nodes j and j+1 of layer l-1, so subexpressions are shared."""
    node = lambda v: 0.9 * jnp.tanh(v[0] + v[1])  # noqa: E731
    C = Constraints([f"x{j}" for j in range(width)])
    prev = [f"x{j}" for j in range(width)]
    for layer in range(layers):
        cur = [f"n{layer}_{j}" for j in range(width)]
        for j in range(width):
            C.add_constraint(cur[j], node, [prev[j], prev[(j + 1) % width]])
        prev = cur
    return Computation(lambda z: jnp.prod(jnp.cos(z)), C.inputs, C), np.linspace(-0.8, 0.6, width)


def arities():
    """Every arity from 1 to 4, repeated arguments included (`p = x·x`), user `df` for some."""
    C = Constraints(["x", "y", "w"])
    C.add_constraint("u", _logistic, ["x"])
    C.add_constraint("p", jnp.prod, ["x", "x"])  # a repeated argument: ∂p/∂x = 2x
    C.add_constraint("q", lambda v: v[0] * v[1], ["u", "y"], df=lambda v: jnp.stack([v[1], v[0]]))
    C.add_constraint("r", jax_logsumexp, ["p", "q", "w"])
    C.add_constraint("s", lambda v: jnp.dot(jnp.array([0.5, -1.0, 2.0, 0.25]), jnp.sin(v)), ["r", "u", "p", "y"])
    C.add_constraint("t", lambda v: v[0] * v[1] * v[2] * v[3], ["s", "r", "q", "u"])
    C.add_constraint("o", jnp.sum, ["t", "s", "s"])
    out = C.index("o")
    return Computation(lambda z: z[out] ** 2 + jnp.sum(jnp.tanh(z)), C.inputs, C), np.array([0.2, -1.1, 0.7])


def jax_logsumexp(v):
    return jnp.log(jnp.sum(jnp.exp(v)))


PROGRAMS = {f.__name__: f for f in [blog, two_input, wide, deep, shared, arities]}


def counted_program():
    """A two-constraint program whose function counts its traces: `(comp, {"count": traces})`."""
    traces = {"count": 0}

    def f(v):
        traces["count"] += 1  # runs once per trace, never per call
        return jnp.sin(v[0]) * v[1]

    C = Constraints(["x", "y"])
    C.add_constraint("a", f, ["x", "y"])
    C.add_constraint("b", f, ["a", "x"])
    return Computation(lambda z: z[3], C.inputs, C), traces
