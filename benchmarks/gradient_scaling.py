"""Compile time and run time of `Computation.gradient` for 10², 10⁴ and 10⁵ constraints.

For each size, a wide program (depth 8) and a deep one (depth 1000, or n where smaller), from
`lagjax.testing.random_program`, float64. Measured in one run:

  build     the add_constraint calls and the schedule (Python, NumPy)
  compile   lowering and compiling the jitted gradient (`jax.jit(...).lower(x).compile()`)
  run       median steady-state time of one gradient, `block_until_ready()` on every call
  ns/con    run time per constraint

and, as the alternative, `jax.grad` of the same program unrolled in Python (one traced operation
per constraint), where its compile stays under `--unrolled-limit` constraints (default 200).

Run: python benchmarks/gradient_scaling.py [--sizes 100 10000 100000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from lagjax import testing  # noqa: E402


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def measure(n, depth, repeats, unrolled_limit):
    t = time.perf_counter()
    comp, x = testing.random_program(n, d=4, depth=depth, seed=0)
    build = time.perf_counter() - t
    x = jnp.asarray(x)
    t = time.perf_counter()
    compiled = jax.jit(comp.gradient).lower(x).compile()
    compile_s = time.perf_counter() - t
    run = timed(lambda: compiled(x), repeats)
    row = dict(n=n, depth=depth, layout=f"{comp.schedule.num_blocks}x{comp.schedule.width}",
               build=build, compile=compile_s, run=run, ns=run / n * 1e9)
    if n <= unrolled_limit:
        plain = jax.grad(testing.reference_forward(comp))
        t = time.perf_counter()
        plain_compiled = jax.jit(plain).lower(x).compile()
        row["jax_compile"] = time.perf_counter() - t
        row["jax_run"] = timed(lambda: plain_compiled(x), repeats)
        np.testing.assert_allclose(compiled(x), plain_compiled(x), rtol=1e-10)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--unrolled-limit", type=int, default=200)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, float64")
    header = (f"{'n':>8} {'depth':>6} {'blocks':>10} {'build s':>8} {'compile s':>9} {'run ms':>9} {'ns/con':>8}"
              f" {'jax.grad compile s':>18} {'jax.grad run ms':>15} {'compile ratio':>13} {'run ratio':>9}")
    print(header)
    for n in args.sizes:
        for depth in [8, min(1000, n)]:
            r = measure(n, depth, args.repeats, args.unrolled_limit)
            line = (f"{r['n']:>8} {r['depth']:>6} {r['layout']:>10} {r['build']:8.2f} {r['compile']:9.2f}"
                    f" {r['run'] * 1e3:9.3f} {r['ns']:8.0f}")
            if "jax_run" in r:
                line += (f" {r['jax_compile']:18.2f} {r['jax_run'] * 1e3:15.3f}"
                         f" {r['compile'] / r['jax_compile']:13.2f} {r['run'] / r['jax_run']:9.2f}")
            else:
                line += f" {'(not run: unrolled compile grows with n)':>58}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
