"""Building big programs (issue 14, bulk building): `add_constraints` against a loop of `add_constraint`.

The program: `lagjax.testing.random_program(n, d=4, profile="wide")`'s, float64: 8 layers of n/8 scalar
constraints, each reading one variable of the layer before and up to 3 earlier ones, 13 functions. Its
draws (names, argument tables, functions: `testing.random_draws`) are made before any timing; then,
each n in a fresh subprocess (after a warm-up: JAX start-up and a 200-constraint program):

  add_constraints   `testing.random_constraints(draws)`: one `add_constraints` call per run of one
                    function within a layer (about 8 x 13 calls; runs under 8 constraints, if any, by
                    `add_constraint`), its argument table an integer array
  Computation       `lagjax.Computation(f, C.inputs, C)` of that program: resolution, levels, schedule,
                    tables (no compile)
  loop              the same program, variable for variable, by a Python loop of `add_constraint`
                    (`random_constraints(draws, bulk=False)`), then `Computation(...)`: the alternative
  compile s         lagjax's jitted gradient (the one `comp.gradient` calls), `.lower(tables, x).compile()`
  1st call s        the first call of that compiled gradient
  run ms            steady-state gradient: the median of `--repeats` calls, `block_until_ready()` on each

Every row checks that both programs give the same gradient (relative error, `testing.relative_error`)
and that the bulk one's gradient agrees with `jax.grad` of the plain loop (`testing.reference_forward`)
where n <= `--oracle-limit` (an eager loop: slow beyond 10⁴). The target: add_constraints + Computation
<= 2 s at 10⁶ on this machine.

Run: `python benchmarks/build.py` (about 3 minutes); `--sizes 10000 100000` for a quick run.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402

DEFAULT_SIZES = [10_000, 100_000, 1_000_000]
TARGET_S = 2.0  # add_constraints + Computation at 10⁶


def run(n: int, repeats: int, oracle_limit: int) -> dict:
    """One case, in a fresh process (`_util.worker`)."""
    import lagjax
    from lagjax import testing

    testing.random_program(200, d=4)  # warm-up: JAX, the functions' shape checks
    draws = testing.random_draws(n, d=4, profile="wide")
    objective = functools.partial(testing.random_objective, draws.last, 0.01)
    x = jnp.asarray(draws.x)
    result = {"n": n}
    for how, bulk in (("bulk", True), ("loop", False)):
        t = time.perf_counter()
        C = testing.random_constraints(draws, bulk=bulk)
        added = time.perf_counter()
        comp = lagjax.Computation(objective, C.inputs, C)
        built = time.perf_counter()
        result[how] = {"add_s": added - t, "computation_s": built - added, "groups": len(comp.schedule.groups)}
        if how == "bulk":
            tables = comp._tables
            compiled, result["compile_s"] = _util.compile_timed(comp._jit["gradient"], tables, x)
            result["first_s"], (gradient, _) = _util.clock(compiled, tables, x)
            result["run_s"] = _util.timed(lambda: compiled(tables, x), repeats, statistic=np.median)
            if n <= oracle_limit:
                result["oracle"] = testing.relative_error(gradient, jax.grad(testing.reference_forward(comp))(x))
        else:
            result["agreement"] = testing.relative_error(comp.gradient(x), gradient)
        del C, comp
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--oracle-limit", type=int, default=10_000)
    p.add_argument("--timeout", type=float, default=900.0)
    here = os.path.dirname(os.path.abspath(__file__))
    _util.output_options(p, os.path.join(here, "build.md"))
    args = _util.parse_args(p, argv)
    if args.worker:
        return _util.worker(run, args.worker)
    start = time.perf_counter()
    header = _util.machine()
    rows = []
    for n in args.sizes:
        spec = dict(n=n, repeats=args.repeats, oracle_limit=args.oracle_limit)
        rows.append(_util.in_subprocess(__file__, spec, args.timeout, label=f"n = {n:,}"))

    headers = [
        "constraints",
        "add_constraints s",
        "Computation s",
        "bulk total s",
        "loop: add_constraint s",
        "Computation s",
        "loop total s",
        "loop/bulk",
        "compile s",
        "1st call s",
        "run ms",
        "groups",
        "same gradient",
        "vs jax.grad",
    ]
    cells, targets = [], []
    for r in rows:
        bulk, loop = r["bulk"], r["loop"]
        bulk_s, loop_s = bulk["add_s"] + bulk["computation_s"], loop["add_s"] + loop["computation_s"]
        cells.append(
            [
                f"{r['n']:,}",
                f"{bulk['add_s']:.2f}",
                f"{bulk['computation_s']:.2f}",
                f"{bulk_s:.2f}",
                f"{loop['add_s']:.2f}",
                f"{loop['computation_s']:.2f}",
                f"{loop_s:.2f}",
                f"{loop_s / bulk_s:.1f}",
                f"{r['compile_s']:.2f}",
                f"{r['first_s']:.2f}",
                f"{1e3 * r['run_s']:.1f}",
                f"{bulk['groups']}",
                f"{r['agreement']:.0e}",
                _util.fmt(r.get("oracle"), "{:.0e}"),
            ]
        )
        if r["n"] == 1_000_000:
            targets.append(("add_constraints + Computation at 10⁶ ≤ 2 s", f"{bulk_s:.2f} s", _util.verdict(bulk_s <= TARGET_S)))
    print(_util.format_text(headers, cells))
    if targets:
        print(_util.format_targets(targets))
    with open(args.markdown, "w") as out:
        out.write(
            f"# Building big programs: add_constraints against a loop of add_constraint (benchmarks/build.py)\n\n"
            f"{header}; {_util.provenance()}. Run: `{_util.command(argv)}`, {time.perf_counter() - start:.0f} s.\n\n"
            f"`testing.random_program(n, d=4)`'s program (8 layers, 13 functions), float64, built from the same draws "
            f"two ways, each n in a fresh process; compile, 1st call and run: the bulk-built program's gradient; "
            f"run: the median of {args.repeats} calls. Same gradient: relative error between the two programs' "
            f"gradients; vs jax.grad: the bulk one's against `jax.grad` of the plain loop.\n\n"
            f"{_util.format_markdown(headers, cells)}\n\n" + (f"{_util.format_targets(targets, markdown=True)}\n" if targets else "")
        )
    plot(rows, args.plot)
    print(f"wrote {args.markdown} and {args.plot}")
    return 0


def plot(rows: list, path: str) -> None:
    """Two panels: build time (add + Computation) bulk against loop; the bulk program's compile + 1st call and run."""
    fig, (left, right) = _util.subplots(2)
    groups = [f"{r['n']:,}" for r in rows]
    _util.bars(
        left,
        groups,
        {
            "add_constraints + Computation": [r["bulk"]["add_s"] + r["bulk"]["computation_s"] for r in rows],
            "add_constraint loop + Computation": [r["loop"]["add_s"] + r["loop"]["computation_s"] for r in rows],
        },
        "seconds",
        "build",
        log=True,
        lines=((TARGET_S, "target at 10⁶", "C3"),),
        annotate="{:.2f}",
        legend=True,
    )
    _util.bars(
        right,
        groups,
        {"compile + 1st call s": [r["compile_s"] + r["first_s"] for r in rows], "run s": [r["run_s"] for r in rows]},
        "seconds",
        "the gradient of the bulk-built program",
        log=True,
        annotate="{:.2f}",
        legend=True,
    )
    _util.save_figure(fig, path, title=f"Building n scalar constraints ({_util.short_machine()})")


if __name__ == "__main__":
    sys.exit(main())
