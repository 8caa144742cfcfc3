"""The demo (`lagjax demo`): the blog post's programs, solved, differentiated and checked.

`blog_program()` is `f(x) = exp(exp(x) + exp(x)²) + sin(exp(x) + exp(x)²)` as constraints a..f;
`two_input_program()` is the original code's example. `report` prints, for a Computation at x: the
constraints, the forward values, the multipliers, the gradient, and every oracle of
`lagjax.testing` with its largest error. `main` also draws the blog program's graph, with its values
and multipliers (`Computation.graph`), to `lagjax_demo.png`.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from lagjax import testing
from lagjax._computation import Computation
from lagjax._program import Constraints


def blog_program() -> Computation:
    """`f(x) = exp(exp(x) + exp(x)²) + sin(exp(x) + exp(x)²)`, one input, objective `z["f"]`."""
    C = Constraints(["x"])
    C.add_constraint("a", jnp.exp, ["x"])
    C.add_constraint("b", jnp.square, ["a"])
    C.add_constraint("c", jnp.sum, ["a", "b"])
    C.add_constraint("d", jnp.exp, ["c"])
    C.add_constraint("e", jnp.sin, ["c"])
    C.add_constraint("f", jnp.sum, ["d", "e"])
    out = C.index("f")
    return Computation(lambda z: z[out], C.inputs, C)


def two_input_program(seed: int = 0) -> Computation:
    """The original code's example: inputs x, y; objective a random linear function of all variables.

    The partials of exp, square, sum and sin are given (`df`), those of tanh come from `jax.grad`.
    """
    C = Constraints(["x", "y"])
    C.add_constraint("a", jnp.exp, ["x"], df=jnp.exp)
    C.add_constraint("b", jnp.square, ["a"], df=lambda v: 2 * v)
    C.add_constraint("c", jnp.sum, ["a", "b", "y"], df=jnp.ones_like)
    C.add_constraint("d", jnp.tanh, ["c"])
    C.add_constraint("e", jnp.sin, ["c"], df=jnp.cos)
    C.add_constraint("f", jnp.sum, ["d", "e"], df=jnp.ones_like)
    r = np.random.default_rng(seed).standard_normal(C.n)
    return Computation(lambda z: jnp.dot(r, z), C.inputs, C, df=lambda z: jnp.asarray(r))


def blog_gradient(x: float) -> float:
    """The blog program's derivative by hand: f'(x) = (exp(c) + cos(c)) (a + 2a²), a = eˣ, c = a + a²."""
    a = np.exp(x)
    c = a + a * a
    return float((np.exp(c) + np.cos(c)) * (a + 2 * a * a))


def report(comp: Computation, x, title: str) -> bool:
    """Print the program, its solution and its oracle table at `x`; return whether every oracle passed."""
    x = jnp.asarray(x, jnp.float64)
    z, lam = comp.multipliers(x)
    gradient = lam[: comp.d]
    print(f"== {title} ==")
    print("constraints:")
    for c in comp.constraints:
        print(f"  {c}")
    print(f"{'variable':>10} {'z (forward)':>22} {'λ (multiplier)':>22}")
    for name, zi, li in zip(comp.names, np.asarray(z), np.asarray(lam)):
        print(f"{name!s:>10} {zi:22.15g} {li:22.15g}")
    print(f"f(z) = {float(comp.forward(x)):.15g}")
    print(f"gradient = λ[:d] = {np.array2string(np.asarray(gradient), precision=15)}")
    print(f"{'oracle':>28} {'largest error':>14} {'tolerance':>10}  ok")
    passed = True
    for name, error, tol in testing.judge(comp, x):
        passed &= error <= tol
        print(f"{name:>28} {error:14.3g} {tol:10.0e}  {'yes' if error <= tol else 'NO'}")
    print()
    return passed


def write_graph(comp: Computation, x, path: str) -> None:
    """Draw `comp`'s graph at `x` to `path` (.png, .svg or .dot) and say where; without matplotlib
    (for .png and .svg), say so and go on."""
    try:
        written = comp.graph(x).save(path)
    except ImportError as error:
        print(f"graph not written: {error}\n")
        return
    print(f"graph of the blog program, with its values and multipliers at x = {list(x)}: {os.path.abspath(written)}\n")


def main(graph: str | None = "lagjax_demo.png") -> int:
    """Run the demo; the exit status is 0 when every oracle passed.

    Args:
      graph: where to write the blog program's graph (.png, .svg or .dot, in the current directory
        by default); None or "" skips it.
    """
    jax.config.update("jax_enable_x64", True)
    x = 0.3
    comp = blog_program()
    passed = report(comp, [x], "f(x) = exp(exp(x) + exp(x)²) + sin(exp(x) + exp(x)²)")
    print(f"by hand: f'({x}) = (exp(c) + cos(c))(a + 2a²) = {blog_gradient(x):.15g}\n")
    if graph:
        write_graph(comp, [x], graph)
    passed &= report(two_input_program(), [0.3, -0.2], "the original two-input example, f(z) = r·z")
    print("all oracles passed" if passed else "SOME ORACLES FAILED")
    return 0 if passed else 1
