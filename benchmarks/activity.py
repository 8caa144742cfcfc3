"""Only what is asked (issue 13): derivatives w.r.t. some inputs cost their active part only.

The program: `--inputs` (10) inputs, each feeding a disjoint part of its own, `--chains` chains of
`--length` scalar constraints (`c = sin(c) + 0.5 c`, one shared function); the objective sums the
squares of the chains' ends. With the defaults, 10 × 100 × 100 = 10⁵ constraints, 100 levels, each
1,000 wide: differentiated w.r.t. one input, a tenth of the program is active.

Rows, each beside the same derivative w.r.t. every input, measured in the same run (float64):

  jax.jvp, one input     `jax.jit` of `jax.jvp` of `comp.as_function()` w.r.t. x0, the other inputs
                         closed over (their tangents are symbolic zeros: the active part is swept)
  jax.jvp, all inputs    the same along a direction on every input
  gradient(wrt=[x0])     `comp.gradient(x, wrt=["x0"])`: the multipliers of the active part
  gradient               `comp.gradient(x)`

and the forward-mode case of the XLA:CPU miscompile (`jax.jvp` w.r.t. the weights of a 2-layer
array program, data closed over, float32, no XLA flag): its relative error against plain JAX.

Run: `python benchmarks/activity.py` (about a minute); quick: `--chains 10 --length 10`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402

import lagjax  # noqa: E402
from lagjax import testing  # noqa: E402

TARGETS = {"jax.jvp": 0.25, "gradient": 0.5}


def step(v):
    return jnp.sin(v[0]) + 0.5 * v[0]


def program(inputs: int, chains: int, length: int) -> lagjax.Computation:
    """`inputs` inputs, each feeding `chains` chains of `length` constraints; level by level, so the
    builder keeps its levels (no forward reference)."""
    names = [f"x{j}" for j in range(inputs)]
    C = lagjax.Constraints(names)
    prev = {(j, k): names[j] for j in range(inputs) for k in range(chains)}
    for t in range(length):
        for j in range(inputs):
            for k in range(chains):
                name = f"c{j}_{k}_{t}"
                C.add_constraint(name, step, [prev[j, k]])
                prev[j, k] = name
    ends = np.asarray([C.index(name) for name in prev.values()])
    return lagjax.Computation(lambda z: jnp.sum(z[ends] ** 2), C.inputs, C)


def compiled(fn, *args):
    """`(compile s, first call s, compiled)` with the compile timed apart."""
    t = time.perf_counter()
    c = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t
    first_s, _ = _util.clock(c, *args)
    return compile_s, first_s, c


def measure_jvp(comp, x, repeats):
    fn = comp.as_function()
    names = comp.input_names
    rest = {k: x[k] for k in names[1:]}
    one = lambda x0: jax.jvp(lambda a: fn({**rest, names[0]: a}), (x0,), (jnp.ones_like(x0),))[1]  # noqa: E731
    every = lambda x, v: jax.jvp(fn, (x,), (v,))[1]  # noqa: E731
    v = {k: jnp.ones_like(x[k]) for k in names}
    rows = {}
    for label, f, args in [("one", one, (x[names[0]],)), ("all", every, (x, v))]:
        compile_s, first_s, c = compiled(f, *args)
        rows[label] = dict(
            compile_s=compile_s,
            first_s=first_s,
            run_s=_util.timed(lambda c=c, args=args: c(*args), repeats, statistic=min),
            value=float(c(*args)),
        )
    return rows


def measure_method(call_one, call_all, repeats):
    rows = {}
    for label, f in [("one", call_one), ("all", call_all)]:
        first_s, _ = _util.clock(f)
        rows[label] = dict(compile_s=None, first_s=first_s, run_s=_util.timed(f, repeats, statistic=min))
    return rows


def miscompile_case() -> float:
    """The forward-mode case of `tests/test_activity.py` (float32, no flag): relative error vs plain JAX."""
    rng = np.random.default_rng(0)
    shapes = {"X": (64, 128), "Y": (64, 128), "W0": (64, 64), "W1": (64, 64)}
    C = lagjax.Constraints(shapes)
    C.add("h0", lambda W, h: jnp.tanh(W @ h), ["W0", "X"])
    C.add("h1", lambda W, h: jnp.tanh(W @ h), ["W1", "h0"])
    C.add("loss", lambda h, y: jnp.mean((h - y) ** 2), ["h1", "Y"])
    fn = lagjax.Computation(lambda z: z["loss"], C.inputs, C).as_function()
    x = {k: jnp.asarray(rng.normal(size=s) / 8, jnp.float32) for k, s in shapes.items()}
    params, data = {k: x[k] for k in ("W0", "W1")}, {k: x[k] for k in ("X", "Y")}
    v = jax.tree.map(jnp.ones_like, params)

    def plain(p):
        return jnp.mean((jnp.tanh(p["W1"] @ jnp.tanh(p["W0"] @ data["X"])) - data["Y"]) ** 2)

    ours = jax.jvp(lambda p: fn({**p, **data}), (params,), (v,))[1]
    return testing.relative_error(ours, jax.jvp(plain, (params,), (v,))[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=10)
    p.add_argument("--chains", type=int, default=100)
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--repeats", type=int, default=30)
    here = os.path.dirname(os.path.abspath(__file__))
    _util.output_options(p, os.path.join(here, "activity.md"))
    args = _util.parse_args(p, argv)
    start = time.perf_counter()
    n = args.inputs * args.chains * args.length
    print(f"{n:,} constraints: {args.inputs} inputs x {args.chains} chains x {args.length}", flush=True)

    t = time.perf_counter()
    comp = program(args.inputs, args.chains, args.length)
    build_s = time.perf_counter() - t
    names = comp.input_names
    xv = jnp.linspace(0.1, 0.9, args.inputs)
    xd = {k: xv[j] for j, k in enumerate(names)}

    results = {"jax.jvp": measure_jvp(comp, xd, args.repeats)}
    results["gradient"] = measure_method(lambda: comp.gradient(xv, wrt=[names[0]]), lambda: comp.gradient(xv), args.repeats)
    forward = jax.jit(comp.as_function())  # the forward pass both need: f(z(x)) alone
    _util.clock(forward, xv)
    forward_s = _util.timed(lambda: forward(xv), args.repeats, statistic=min)
    # the answers: one input's jvp is the x0 entry of the gradient; wrt=[x0] equals the full gradient's entry
    g = comp.gradient(xv)
    checks = {
        "jax.jvp": testing.relative_error(results["jax.jvp"]["one"]["value"], g[0]),
        "gradient": testing.relative_error(comp.gradient(xv, wrt=[names[0]]), g[:1]),
    }
    error = miscompile_case()

    headers = [
        "derivative",
        "one input: compile s",
        "1st call s",
        "run ms",
        "all inputs: compile s",
        "1st call s",
        "run ms",
        "run ratio one/all",
        "target",
        "beyond the forward pass: ratio one/all",
        "agreement",
    ]
    cells = []
    for name, rows in results.items():
        one, every = rows["one"], rows["all"]
        ratio = one["run_s"] / every["run_s"]
        beyond = (one["run_s"] - forward_s) / (every["run_s"] - forward_s)
        target = TARGETS.get(name)
        cells.append(
            [
                {"jax.jvp": "jax.jvp of as_function", "gradient": "comp.gradient (wrt=[x0])"}[name],
                _util.fmt(one["compile_s"], "{:.2f}"),
                f"{one['first_s']:.2f}",
                f"{1e3 * one['run_s']:.2f}",
                _util.fmt(every["compile_s"], "{:.2f}"),
                f"{every['first_s']:.2f}",
                f"{1e3 * every['run_s']:.2f}",
                f"{ratio:.3f}",
                f"≤ {target} {_util.verdict(ratio <= target)}" if target else "—",
                f"{beyond:.3f}",
                f"{checks[name]:.1e}",
            ]
        )
    table = _util.format_markdown(headers, cells)
    print(_util.format_text(headers, cells))
    print(
        f"forward mode, data closed over (float32, no XLA flag): relative error {error:.2e} (target ≤ 1e-5: {_util.verdict(error <= 1e-5)})"
    )
    with open(args.markdown, "w") as out:
        out.write(
            f"# Only what is asked: derivatives w.r.t. one input of ten (benchmarks/activity.py)\n\n"
            f"{_util.machine()}; {_util.provenance()}. Run: `{_util.command(argv)}`, {time.perf_counter() - start:.0f} s.\n\n"
            f"{n:,} scalar constraints ({args.inputs} inputs, each feeding {args.chains} chains of {args.length}; "
            f"build {build_s:.1f} s), float64; run: the least of up to {args.repeats} calls. "
            f"Agreement: relative error of the one-input answer against the same entry of the all-input one.\n\n"
            f"{table}\n\n"
            f"Both derivatives need the forward pass over the whole program (the jvp returns f(z(x)), the "
            f"multipliers are taken at z(x)): `jax.jit(comp.as_function())` alone runs in {1e3 * forward_s:.2f} ms. "
            f'"Beyond the forward pass" is `(one - forward) / (all - forward)`: what the sweeps of the active part '
            f"cost against the whole program's (a tenth of it is active).\n\n"
            f"Forward mode through `as_function` w.r.t. the weights of a 2-layer array program, data closed "
            f"over (the XLA:CPU miscompile case), float32, default configuration: relative error {error:.2e} "
            f"against plain JAX (target ≤ 1e-5: {_util.verdict(error <= 1e-5)}).\n"
        )
    plot(results, args.plot)
    print(f"wrote {args.markdown} and {args.plot}")
    return 0


def plot(results: dict, path: str) -> None:
    """Run time of each derivative w.r.t. one input and w.r.t. all, side by side (log scale)."""
    fig, (ax,) = _util.subplots(1, width=7.0)
    groups = list(results)
    series = {
        "one input": [1e3 * results[g]["one"]["run_s"] for g in groups],
        "all inputs": [1e3 * results[g]["all"]["run_s"] for g in groups],
    }
    _util.bars(ax, groups, series, "run ms", log=True, annotate="{:.3g}", legend=True)
    _util.save_figure(fig, path, f"derivatives w.r.t. one input of ten\n{_util.short_machine()}")


if __name__ == "__main__":
    sys.exit(main())
