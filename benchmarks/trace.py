"""`lagjax.trace` of a Python loop of K steps: compile time flat in K, against `jax.jit(jax.grad(f))`.

The model, as a user writes it (float32, h of size 16, W (16, 16), b (16,)):

    def f(W, b, h):
        for _ in range(K):
            h = h + 0.01 * jnp.tanh(W @ h + b)
        return jnp.sum(h ** 2)

and its gradient w.r.t. all three arguments. Every measurement runs in a fresh Python process (no compile
cache leaks from one case to the next), under a per-case timeout:

  lagjax        `lagjax.trace(f, W, b, h)`, then `jax.jit(jax.grad(traced.as_function(), (0, 1, 2)))`: its
                first call (compile + first). Columns: make_jaxpr s (`jax.make_jaxpr` inside `trace`),
                convert s (the jaxpr's 5K + 2 equations into a `Constraints` program), build s
                (`Computation(...)`: structure, schedule, tables), compile + first s; total s, their sum.
                The same with `lagjax.trace(..., fuse=True)`: the loop body is one constraint, not five.
  make_jaxpr    `jax.make_jaxpr(f)` alone, in its own process (what tracing costs whatever is done next).
  unrolled      `jax.jit(jax.grad(f, (0, 1, 2)))`: compile + first call (XLA compiles the K unrolled copies:
                skipped above `--unrolled-max` K, where it takes minutes).
  lax.scan      the same model written with `lax.scan` over K steps, `jax.jit(jax.grad(...))`: compile +
                first call.

run ms: the least of up to `--repeats` steady calls (fewer once `--budget` s are spent), `block_until_ready()`
on each. agree: the largest relative difference of lagjax's gradient from lax.scan's (norm of each argument's).

Run:
  python benchmarks/trace.py                       # K = 10, 100, 1000, 2000, 10000; writes benchmarks/trace.md
  python benchmarks/trace.py --ks 10 100 --markdown /tmp/trace.md     # a quick one
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

if __package__:  # python -m benchmarks.trace
    from . import _util
else:  # python benchmarks/trace.py
    import _util

WIDTH = 16


# --- the model ----------------------------------------------------------------------------------------
def unrolled(K: int):
    """The model as a Python loop of K steps (what `lagjax.trace` and `jax.jit` see)."""

    def f(W, b, h):
        for _ in range(K):
            h = h + 0.01 * jnp.tanh(W @ h + b)
        return jnp.sum(h**2)

    return f


def scanned(K: int):
    """The same model with `lax.scan` over the K steps."""

    def f(W, b, h):
        h, _ = lax.scan(lambda h, _: (h + 0.01 * jnp.tanh(W @ h + b), None), h, None, length=K)
        return jnp.sum(h**2)

    return f


def example():
    rng = np.random.default_rng(0)
    W = jnp.asarray(rng.standard_normal((WIDTH, WIDTH)) / 4, jnp.float32)
    return W, jnp.asarray(rng.standard_normal(WIDTH) / 4, jnp.float32), jnp.asarray(rng.standard_normal(WIDTH), jnp.float32)


# --- one case in one process ------------------------------------------------------------------------------
def run_case(case: str, K: int, repeats: int, budget: float) -> dict:
    args = example()
    f = unrolled(K)
    T = time.perf_counter
    if case == "make_jaxpr":
        t = T()
        closed = jax.make_jaxpr(f)(*args)
        return dict(make_jaxpr=T() - t, equations=len(closed.jaxpr.eqns))
    if case in VARIANTS:
        from lagjax import _trace

        t0 = T()
        arguments, closed = _trace.jaxpr_of(f, args, {})  # lagjax.trace is these three steps
        t1 = T()
        parts = _trace.program_of(arguments, closed, fuse=case == "lagjax_fused")
        t2 = T()
        traced = _trace.Traced(*parts)
        t3 = T()
        g = jax.jit(jax.grad(traced.as_function(), (0, 1, 2)))
        seconds, grads = _util.clock(g, *args)
        timing = dict(make_jaxpr=t1 - t0, convert=t2 - t1, build=t3 - t2, compile_first=seconds)
        extra = dict(equations=len(closed.jaxpr.eqns), constraints=len(traced.constraints), groups=len(traced.groups))
    else:
        model = scanned(K) if case == "scan" else f
        g = jax.jit(jax.grad(model, (0, 1, 2)))
        seconds, grads = _util.clock(g, *args)
        timing, extra = dict(compile_first=seconds), {}
    run = _util.timed(lambda: g(*args), repeats, budget_s=budget, statistic=min)
    norms = [float(jnp.linalg.norm(x)) for x in grads]
    return dict(**timing, run_ms=1e3 * run, norms=norms, grads=[np.asarray(x).ravel().tolist() for x in grads], **extra)


def measure(args) -> list[dict]:
    rows = []
    for K in args.ks:
        row = dict(K=K)
        cases = [*VARIANTS, "make_jaxpr", "scan"] + (["unrolled"] if K <= args.unrolled_max else [])
        for case in cases:
            try:
                row[case] = _util.in_subprocess(
                    __file__, dict(case=case, K=K, repeats=args.repeats, budget=args.budget), args.timeout, label=f"K={K} {case}"
                )
            except _util.WorkerError as err:
                row[case] = dict(error=str(err))
        rows.append(row)
    return rows


# --- the tables ------------------------------------------------------------------------------------------
VARIANTS = {"lagjax": "per equation", "lagjax_fused": "fuse=True"}


def agreement(a: dict, b: dict) -> float | None:
    """The largest relative difference of two gradients, argument by argument."""
    if "grads" not in a or "grads" not in b:
        return None
    return max(float(np.linalg.norm(np.subtract(u, v)) / max(np.linalg.norm(v), 1e-30)) for u, v in zip(a["grads"], b["grads"]))


def total(lag: dict) -> float | None:
    return None if "compile_first" not in lag else lag["make_jaxpr"] + lag["convert"] + lag["build"] + lag["compile_first"]


LAGJAX_HEADERS = [
    "K", "trace", "equations", "constraints", "groups", "make_jaxpr s", "convert s", "build s", "compile + first s",
    "total s", "total − make_jaxpr s", "run ms", "run / lax.scan's", "agree",
]  # fmt: skip
ALTERNATIVES_HEADERS = [
    "K", "make_jaxpr alone s", "unrolled jit(grad) compile + first s", "lax.scan compile + first s", "unrolled run ms", "lax.scan run ms",
]  # fmt: skip


def _get(d, key):
    return d.get(key) if isinstance(d, dict) else None


def lagjax_cells(row: dict, variant: str) -> list[str]:
    lag, scan = row[variant], row["scan"]
    t = total(lag)
    ratio = lag["run_ms"] / scan["run_ms"] if "run_ms" in lag and "run_ms" in scan else None
    return [
        f"{row['K']:,}",
        VARIANTS[variant],
        _util.fmt(_get(lag, "equations"), "{:,}"),
        _util.fmt(_get(lag, "constraints"), "{:,}"),
        _util.fmt(_get(lag, "groups")),
        _util.fmt(_get(lag, "make_jaxpr"), "{:.3g}"),
        _util.fmt(_get(lag, "convert"), "{:.3g}"),
        _util.fmt(_get(lag, "build"), "{:.3g}"),
        _util.fmt(_get(lag, "compile_first"), "{:.3g}"),
        _util.fmt(t, "{:.3g}"),
        _util.fmt(None if t is None else t - lag["make_jaxpr"], "{:.3g}"),
        _util.fmt(_get(lag, "run_ms"), "{:.3g}"),
        _util.fmt(ratio, "{:.2f}"),
        _util.fmt(agreement(lag, scan), "{:.1e}", missing=lag.get("error", "—")),
    ]


def alternatives_cells(row: dict) -> list[str]:
    alone, scan, unroll = row["make_jaxpr"], row["scan"], row.get("unrolled", {})
    return [
        f"{row['K']:,}",
        _util.fmt(_get(alone, "make_jaxpr"), "{:.3g}", missing=alone.get("error", "—")),
        _util.fmt(_get(unroll, "compile_first"), "{:.3g}", missing=unroll.get("error", "skipped")),
        _util.fmt(_get(scan, "compile_first"), "{:.3g}", missing=scan.get("error", "—")),
        _util.fmt(_get(unroll, "run_ms"), "{:.3g}", missing="skipped"),
        _util.fmt(_get(scan, "run_ms"), "{:.3g}"),
    ]


def targets(rows: list[dict]) -> list[tuple[str, str, str]]:
    out = []
    for variant, label in VARIANTS.items():
        upto = [r for r in rows if r["K"] <= 2000 and total(r[variant]) is not None]
        if upto:
            worst = max(upto, key=lambda r: total(r[variant]))
            figure = f"{total(worst[variant]):.2f} s at K = {worst['K']:,} (the most up to 2,000)"
            out.append(
                (f"{label}: trace + build + compile + first call ≤ 5 s up to K = 2,000", figure, _util.verdict(total(worst[variant]) <= 5))
            )
        for r in rows:
            lag = r[variant]
            if r["K"] == 10_000 and total(lag) is not None:
                beyond = total(lag) - lag["make_jaxpr"]
                figure = f"{beyond:.2f} s beyond make_jaxpr's {lag['make_jaxpr']:.2f} s (alone: {_util.fmt(r['make_jaxpr'].get('make_jaxpr'), '{:.2f}')} s)"
                out.append((f"{label}: at K = 10⁴, at most 3 s beyond make_jaxpr", figure, _util.verdict(beyond <= 3)))
                figure = f"{lag['convert']:.2f} s for {lag['equations']:,} equations"
                out.append((f"{label}: a traced jaxpr of 5·10⁴ equations into a program ≤ 1 s", figure, _util.verdict(lag["convert"] <= 1)))
        ratios = [(r[variant]["run_ms"] / r["scan"]["run_ms"], r["K"]) for r in rows if "run_ms" in r[variant] and "run_ms" in r["scan"]]
        if ratios:
            worst_ratio, K = max(ratios)
            figure = f"{worst_ratio:.2f}× at K = {K:,} (the worst)"
            out.append((f"{label}: steady state within 1.5× of lax.scan's jax.grad", figure, _util.verdict(worst_ratio <= 1.5)))
    return out


def plot(rows: list[dict], path: str) -> None:
    fig, (ax1, ax2) = _util.subplots(2)
    Ks = [r["K"] for r in rows]
    series = {
        "lagjax.trace + build + compile + first": [total(r["lagjax"]) for r in rows],
        "the same, fuse=True": [total(r["lagjax_fused"]) for r in rows],
        "jax.make_jaxpr alone": [r["make_jaxpr"].get("make_jaxpr") for r in rows],
        "jax.jit(jax.grad(f)) unrolled": [r.get("unrolled", {}).get("compile_first") for r in rows],
        "lax.scan jit(grad)": [r["scan"].get("compile_first") for r in rows],
    }
    for k, (name, values) in enumerate(series.items()):
        shown = [(K, v) for K, v in zip(Ks, values) if v is not None]
        if shown:
            ax1.plot(*zip(*shown), "o-", color=f"C{k}", label=name)
    ax1.axhline(5, color="grey", ls="--", lw=1)
    ax1.set_xscale("log"), _util.log_scale(ax1)
    ax1.set_xlabel("K (loop steps)"), ax1.set_ylabel("seconds"), ax1.set_title("compile + first call of the gradient", fontsize=10)
    ax1.legend(fontsize=7)
    runs = {
        "lagjax": [r["lagjax"].get("run_ms") for r in rows],
        "lagjax fuse=True": [r["lagjax_fused"].get("run_ms") for r in rows],
        "lax.scan": [r["scan"].get("run_ms") for r in rows],
        "unrolled": [r.get("unrolled", {}).get("run_ms") for r in rows],
    }
    _util.bars(ax2, [f"{K:,}" for K in Ks], runs, "ms per gradient", title="steady state", log=True)
    _util.save_figure(fig, path, title=f"lagjax.trace of a Python loop of K steps ({_util.short_machine()})", legend=list(runs))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100, 1000, 2000, 10000])
    parser.add_argument("--unrolled-max", type=int, default=1000, help="the largest K for the unrolled jax.jit(jax.grad(f)) (default 1000)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of steady calls per case at most (default 10)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case (default 600)")
    _util.output_options(parser, "benchmarks/trace.md", json_option=True)
    args = _util.parse_args(parser, argv)
    if args.worker:
        return _util.worker(run_case, args.worker)
    header = _util.machine()
    start = time.perf_counter()
    rows = measure(args)
    minutes = (time.perf_counter() - start) / 60
    table = [lagjax_cells(r, v) for r in rows for v in VARIANTS]
    others = [alternatives_cells(r) for r in rows]
    goals = targets(rows)
    print(_util.format_text(LAGJAX_HEADERS, table) + "\n\n" + _util.format_text(ALTERNATIVES_HEADERS, others))
    print(_util.format_targets(goals))
    with open(args.markdown, "w") as out:
        out.write(f"# lagjax.trace of a Python loop (benchmarks/trace.py)\n\n{header}; {_util.provenance()}. ")
        out.write(f"Run: `{_util.command()}`, {minutes:.1f} min; each case in a fresh process.\n\n")
        out.write(_util.format_markdown(LAGJAX_HEADERS, table, "rl" + "r" * 12) + "\n\nThe alternatives, each in its own process:\n\n")
        out.write(_util.format_markdown(ALTERNATIVES_HEADERS, others) + "\n\n" + _util.format_targets(goals, markdown=True) + "\n\n")
        out.write(
            "Model: `h = h + 0.01 * tanh(W @ h + b)` K times in a Python loop, h of size 16, float32, objective sum(h²), "
            "gradient w.r.t. W, b and h0. lagjax total = make_jaxpr + convert + build + compile + first call of "
            "`jax.jit(jax.grad(traced.as_function()))`; the alternatives' figures are their compile + first call. run ms: the "
            "least of the steady calls. agree: lagjax's gradient against lax.scan's (largest relative difference per argument).\n\n"
        )
        out.write(f"![lagjax.trace against jax.jit(jax.grad(f)) and lax.scan]({_util.beside(args.markdown).split('/')[-1]})\n")
    if args.json:
        _util.write_json(args.json, header, args, rows)
    plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
