"""Engine costs: forward references, a self-loop, depth of array programs, and per-call overhead.

Every row is measured against an alternative in the same run; every measurement runs in a fresh
Python process (so no compile cache leaks from one case to the next), under a per-case timeout:

  reverse order N   N acyclic scalar constraints `z_i = sin(z_{i-1}) + 0.5*y` (`z_0` reads the input
                    `x`), added with `add_constraint` in reverse order (each reads a variable defined
                    later), objective `z_{N-1}`; float64. Alternative: the same program added in order.
  self-loop N       the in-order chain, then `u = 0.5*tanh(u) + z_{N-1}` (a constraint reading itself),
                    objective `u`; float64. Alternative: the chain without the loop (the in-order case
                    of the row above, the same measurement).
  layers L          L array layers `h_i = tanh(W_i @ h_{i-1} + b_i)`, W (32, 32), b (32, 1), h (32, 16),
                    float32, one shared layer function, objective `sum(h_{L-1}**2)`, gradient w.r.t.
                    every input. Alternatives: `jax.jit(jax.grad(...))` of the model written with
                    `lax.scan` over stacked W, b, and written as a Python loop (unrolled).
  call overhead L   an L-layer program as above: one call of `comp.gradient(x)` against
                    `jax.jit(comp.gradient)(x)` and `jax.jit(jax.grad(plain model))(x)`, x a dict of
                    device arrays; the least time over `--calls` calls after a warm-up.

Columns: build s, the `add_constraint` / `add` loop; compile + first s, `Computation(...)` and the first
`comp.gradient(x)` (for a jitted alternative: its first call, which traces and compiles it); run ms, the
least of up to `--repeats` calls (fewer once `--budget` seconds are spent), `block_until_ready()` on
every timed call. Ratios are lagjax's figure over the alternative's (above 1: lagjax slower). "agree"
is the largest relative difference between the two gradients (of the inputs' gradient norms for the
layer programs), where both compute the same function. A case over `--timeout` shows "timeout", one
that raised shows "error: <first line>".

Run:
  python benchmarks/engine.py            # N = 10^5, L = 10, 100, 1000 (the 1000-layer unrolled one
                                         # takes about 10 s to compile); writes benchmarks/engine.md
  python benchmarks/engine.py --quick    # N = 10^4, L = 10, 100: a smoke test
  python benchmarks/engine.py --n 2000 --layers 5 20 --overhead-layers 10 --repeats 5 --budget 2 \
      --calls 20 --out /tmp/engine.md      # a quicker one (~25 s), beside it /tmp/engine.png

The table is written as Markdown (`--out`) and plotted (`--plot`, by default beside it: engine.png):
compile + first call and run against the number of layers, log-log, lagjax against lax.scan and the
unrolled model; the other rows' ratios lagjax / alternative as bars.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from lagjax import Computation, Constraints

if __package__:  # python -m benchmarks.engine
    from . import _util
else:  # python benchmarks/engine.py: this folder is first on sys.path
    import _util

WIDTH, BATCH = 32, 16


# --- the programs ----------------------------------------------------------------------------------------
def chain_step(a):
    """One scalar constraint of the chain: `sin(previous) + 0.5*y`, from the vector `[previous, y]`."""
    return jnp.sin(a[0]) + 0.5 * a[1]


def self_loop(a):
    """The self-loop `u = 0.5*tanh(u) + v`, from the vector `[u, v]`."""
    return 0.5 * jnp.tanh(a[0]) + a[1]


def layer(W, b, h):
    """One array layer, shared by every constraint and by both plain JAX models."""
    return jnp.tanh(W @ h + b)


def chain(n: int, reverse: bool) -> tuple[Constraints, str]:
    """The chain of `n` scalars over inputs x, y, added in order or in reverse; its last variable's name."""
    C = Constraints(["x", "y"])
    for i in range(n - 1, -1, -1) if reverse else range(n):
        C.add_constraint(f"z{i}", chain_step, [f"z{i - 1}" if i else "x", "y"])
    return C, f"z{n - 1}"


def layer_inputs(L: int) -> dict:
    """The inputs of an L-layer program as a dict of device arrays, the same in every process."""
    rng = np.random.default_rng(0)
    x = {}
    for i in range(L):
        x[f"W{i}"] = rng.normal(size=(WIDTH, WIDTH)).astype(np.float32) / np.sqrt(WIDTH)
        x[f"b{i}"] = 0.1 * rng.normal(size=(WIDTH, 1)).astype(np.float32)
    x["h"] = rng.normal(size=(WIDTH, BATCH)).astype(np.float32)
    return jax.device_put(x)


def layers(L: int) -> tuple[Constraints, str]:
    """The L-layer program as constraints, inputs declared with shapes; its last variable's name."""
    C = Constraints({**{k: v for i in range(L) for k, v in ((f"W{i}", (WIDTH, WIDTH)), (f"b{i}", (WIDTH, 1)))}, "h": (WIDTH, BATCH)})
    previous = "h"
    for i in range(L):
        C.add(f"h{i}", layer, [f"W{i}", f"b{i}", previous])
        previous = f"h{i}"
    return C, previous


def loss_unrolled(x: dict) -> jax.Array:
    """The layer model as plain JAX, a Python loop over the layers of the dict `x`."""
    h = x["h"]
    for i in range(sum(k.startswith("W") for k in x)):
        h = layer(x[f"W{i}"], x[f"b{i}"], h)
    return jnp.sum(h**2)


def loss_scan(x: dict) -> jax.Array:
    """The layer model as plain JAX, `lax.scan` over stacked `W` (L, 32, 32) and `b` (L, 32, 1)."""
    h, _ = jax.lax.scan(lambda h, wb: (layer(wb[0], wb[1], h), None), x["h"], (x["W"], x["b"]))
    return jnp.sum(h**2)


# --- timing, in the worker process -----------------------------------------------------------------------
def steady(fn, x, repeats: int, budget: float) -> float:
    """The least time of up to `repeats` calls of `fn(x)` (at least 3; no more once `budget` s are spent)."""
    return _util.timed(lambda: fn(x), repeats, budget_s=budget, statistic=min)


def digest(grad) -> list[float]:
    """A gradient reduced to what every method can compare: the vector itself (scalar programs), or the
    norms of the gradients of all W's, all b's and of h (layer programs, dicts or stacked)."""
    if not isinstance(grad, dict):
        return [float(v) for v in np.asarray(grad)]
    return [float(np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for k, g in grad.items() if k[0] == p))) for p in "Wbh"]


def lagjax_case(build, x, repeats: int, budget: float) -> dict:
    """Build a program (`build()` returns the Constraints and the objective), construct the Computation,
    call its gradient once and then in steady state."""
    t = time.perf_counter()
    C, objective = build()
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    comp = Computation(objective, C.inputs, C)
    grad = jax.block_until_ready(comp.gradient(x))
    first_s = time.perf_counter() - t
    return dict(
        build_s=build_s, first_s=first_s, run_s=steady(comp.gradient, x, repeats, budget), digest=digest(grad), cls=type(comp).__name__
    )


def jitted_case(loss, x, repeats: int, budget: float) -> dict:
    """`jax.jit(jax.grad(loss))`: its first call (trace, compile, run), then steady state."""
    fn = jax.jit(jax.grad(loss))
    first_s, grad = _util.clock(fn, x)
    return dict(first_s=first_s, run_s=steady(fn, x, repeats, budget), digest=digest(grad))


def run_case(kind: str, size: int, repeats: int, budget: float, calls: int) -> dict:
    """One measurement (what `kind` names, at `size`), in this fresh process."""
    jax.block_until_ready(jax.jit(jax.grad(lambda v: jnp.sum(jnp.sin(v))))(jnp.ones(3)))  # JAX start-up
    if kind in ("chain", "reverse", "selfloop"):
        x = jnp.array([0.3, 0.7])  # float64: JAX_ENABLE_X64 is set for this process

        def build():
            C, last = chain(size, reverse=kind == "reverse")
            if kind == "selfloop":
                C.add_constraint("u", self_loop, ["u", last])
                last = "u"
            i = C.index(last)
            return C, lambda z: z[i]

        return lagjax_case(build, x, repeats, budget)
    x = layer_inputs(size)
    if kind == "lagjax":

        def build():
            C, last = layers(size)
            return C, lambda z: jnp.sum(z[last] ** 2)

        return lagjax_case(build, x, repeats, budget)
    if kind == "unrolled":
        return jitted_case(loss_unrolled, x, repeats, budget)
    if kind == "scan":
        stacked = {"W": jnp.stack([x[f"W{i}"] for i in range(size)]), "b": jnp.stack([x[f"b{i}"] for i in range(size)]), "h": x["h"]}
        return jitted_case(loss_scan, stacked, repeats, budget)
    if kind == "overhead":
        C, last = layers(size)
        comp = Computation(lambda z: jnp.sum(z[last] ** 2), C.inputs, C)
        methods = {"gradient": comp.gradient, "jit": jax.jit(comp.gradient), "plain": jax.jit(jax.grad(loss_unrolled))}
        digests = {m: digest(_util.clock(fn, x)[1]) for m, fn in methods.items()}  # compile and warm up
        # in rounds, the same order each round, so that a slow spell of the machine hits every method; the least
        times = _util.rounds({m: (lambda fn=fn: fn(x)) for m, fn in methods.items()}, calls, alternate=False)
        results = {m: dict(run_s=min(times[m]), digest=digests[m]) for m in methods}
        results["gradient"]["cls"] = type(comp).__name__
        return results
    raise ValueError(f"unknown case {kind!r}")


# --- the cases, each in a subprocess ---------------------------------------------------------------------
def in_subprocess(kind: str, size: int, args) -> dict:
    """`run_case` in a fresh Python process: its result, or `{"error": ...}`."""
    spec = dict(kind=kind, size=size, repeats=args.repeats, budget=args.budget, calls=args.calls)
    env = {"JAX_ENABLE_X64": "1" if kind in ("chain", "reverse", "selfloop") else "0"}
    try:
        return _util.in_subprocess(__file__, spec, args.timeout, env=env, label=f"  {kind} {size:,}", tail=15)
    except _util.WorkerError as e:
        if e.timed_out:
            return {"error": "timeout"}
        return {"error": f"error: {e.last_line}"}  # the exception's line, last in the traceback


def worker_case(**spec) -> dict:
    """`run_case` in the worker; an exception becomes `{"error": "error: <its first line>"}` (for the table)."""
    try:
        return run_case(**spec)
    except Exception as e:  # noqa: BLE001 -- reported in the table
        first = (str(e).strip().splitlines() or [""])[0]
        return {"error": f"error: {type(e).__name__}: {first}"}


# --- the table -------------------------------------------------------------------------------------------
def cell(result: dict, key: str, scale: float = 1.0) -> str:
    """A figure of `result`; a failed case shows its error in the compile + first cell, "—" elsewhere."""
    if "error" in result:
        return result["error"].replace("|", "\\|")[:140] if key == "first_s" else "—"
    return "—" if result.get(key) is None else f"{result[key] * scale:.3g}"


def ratio(a: dict, b: dict, key: str) -> str:
    """`a[key] / b[key]`, or "—" where either is missing."""
    x, y = a.get(key), b.get(key)
    return "—" if x is None or y is None else f"{x / y:.3g}"


def agreement(a: dict, b: dict, tolerance: float) -> str:
    """The largest relative difference of the two gradients' digests, flagged above `tolerance`."""
    if "digest" not in a or "digest" not in b:
        return "—"
    p, q = np.array(a["digest"]), np.array(b["digest"])
    error = float(np.max(np.abs(p - q)) / max(float(np.max(np.abs(q))), 1e-300))
    return f"{error:.1e}" + ("" if error <= tolerance else " MISMATCH")


HEADERS = [
    "row",
    "lagjax",
    "build s",
    "compile + first s",
    "run ms",
    "alternative",
    "alt build s",
    "alt compile + first s",
    "alt run ms",
    "compile ratio",
    "run ratio",
    "agree",
]


def line(row: str, ours: dict, alt_name: str, alt: dict, tolerance: float | None) -> list[str]:
    """One table line: lagjax's case, its alternative, lagjax / alternative."""
    return [
        row,
        ours.get("cls", "—"),
        cell(ours, "build_s"),
        cell(ours, "first_s"),
        cell(ours, "run_s", 1e3),
        alt_name,
        cell(alt, "build_s"),
        cell(alt, "first_s"),
        cell(alt, "run_s", 1e3),
        ratio(ours, alt, "first_s"),
        ratio(ours, alt, "run_s"),
        "—" if tolerance is None else agreement(ours, alt, tolerance),
    ]


# --- the plot --------------------------------------------------------------------------------------------
PLOT_TITLE = "lagjax engine costs: depth against lax.scan and the unrolled model; order, self-loop, call overhead"
LAYER_METHODS = ("lagjax (Computation + comp.gradient)", "lax.scan jit(grad)", "unrolled jit(grad)")


def plot(by_depth: dict, pairs: list, path: str) -> None:
    """Compile + first call and steady-state run against the number of layers (log-log), one line per
    method; then the other rows' ratios lagjax / alternative as bars (above 1: lagjax slower)."""
    fig, (compile_, run, others) = _util.subplots(3, width=5.5)
    depths = sorted(by_depth)
    for ax, key, scale, ylabel, title in (
        (compile_, "first_s", 1, "seconds", "compile + first call"),
        (run, "run_s", 1e3, "ms", "steady-state run (least)"),
    ):
        for k, name in enumerate(LAYER_METHODS):
            points = [(L, by_depth[L][k][key] * scale) for L in depths if by_depth[L][k].get(key) is not None]
            if points:
                ax.plot(*zip(*points), "os^"[k] + "-", color=f"C{k}", label=name)
        _util.log_scale(ax, "y")
        ax.set_xscale("log")
        ax.set_xticks(depths, [f"{L:,}" for L in depths])
        ax.set_xticks([], minor=True)
        ax.set(xlabel="layers (32 × 32, batch 16)", ylabel=ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)

    def ratio_of(ours, alt, key):
        x, y = ours.get(key), alt.get(key)
        return None if x is None or y is None else x / y

    _util.bars(
        others,
        [label for label, _, _ in pairs],
        {"compile + first": [ratio_of(o, a, "first_s") for _, o, a in pairs], "run": [ratio_of(o, a, "run_s") for _, o, a in pairs]},
        "lagjax / alternative",
        "other rows, ratios",
        lines=[(1, "parity", "grey")],
        annotate="{:.2f}",
        legend=True,
    )
    others.tick_params(axis="x", labelsize=7)
    _util.save_figure(fig, path, f"{PLOT_TITLE}\n{_util.short_machine()}")


def parse_args(argv=None):
    """The options, with the sizes `--quick` implies filled in."""
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: N = 10^4, L = 10 100, fewer calls")
    p.add_argument("--n", type=int, default=None, help="scalars in the chains (default 10^5; 10^4 with --quick)")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="depths (default 10 100 1000; 10 100 with --quick)")
    p.add_argument("--overhead-layers", type=int, default=50, help="depth of the call-overhead program (default 50)")
    p.add_argument("--repeats", type=int, default=None, help="steady-state calls, at most (default 20; 5 with --quick)")
    p.add_argument("--budget", type=float, default=20.0, help="seconds of steady-state calls per case (default 20)")
    p.add_argument("--calls", type=int, default=None, help="call-overhead calls per method (default 200; 50 with --quick)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed to one case (default 300)")
    _util.output_options(p, os.path.join(here, "engine.md"), flags=("--out", "--markdown"))
    args = _util.parse_args(p, argv)
    args.n = args.n or (10**4 if args.quick else 10**5)
    args.layers = sorted(args.layers or ([10, 100] if args.quick else [10, 100, 1000]))
    args.repeats = args.repeats or (5 if args.quick else 20)
    args.calls = args.calls or (50 if args.quick else 200)
    return args


def main(argv=None) -> int:
    """Run every case (or, with `--worker`, one), print the table, write it to `--out` and plot it to `--plot`."""
    args = parse_args(argv)
    if args.worker:
        return _util.worker(worker_case, args.worker)
    machine = f"{_util.machine()}; {_util.provenance()}"
    print(machine, file=sys.stderr)
    start, n = time.perf_counter(), args.n
    reverse, forward, loop = (in_subprocess(kind, n, args) for kind in ("reverse", "chain", "selfloop"))
    cells = [
        line(f"reverse order {n:,}", reverse, "in order", forward, 1e-8),
        line(f"self-loop {n:,}", loop, "chain without the loop", forward, None),
    ]
    pairs = [("reverse order\nvs in order", reverse, forward), ("self-loop\nvs chain", loop, forward)]
    by_depth = {}  # layers L: the results of lagjax, lax.scan, unrolled
    for L in args.layers:
        ours, scan, unrolled = by_depth[L] = tuple(in_subprocess(kind, L, args) for kind in ("lagjax", "scan", "unrolled"))
        cells += [
            line(f"layers {L}", ours, "lax.scan jit(grad)", scan, 1e-4),
            line(f"layers {L}", ours, "unrolled jit(grad)", unrolled, 1e-4),
        ]
    L = args.overhead_layers
    over = in_subprocess("overhead", L, args)
    mine, jitted, plain = (over if "error" in over else over[m] for m in ("gradient", "jit", "plain"))
    cells += [
        line(f"call overhead {L} (comp.gradient)", mine, "jax.jit(comp.gradient)", jitted, 1e-4),
        line(f"call overhead {L} (comp.gradient)", mine, "jit(grad(plain model))", plain, 1e-4),
    ]
    pairs += [(f"call overhead {L}\nvs jit(comp.gradient)", mine, jitted), (f"call overhead {L}\nvs jit(grad(plain))", mine, plain)]

    lo, hi = args.layers[0], args.layers[-1]
    first = {depth: [r.get("first_s") for r in by_depth[depth]] for depth in (lo, hi)}
    flat = [f"{a / b:.3g}" if a and b else "—" for a, b in zip(first[hi], first[lo])]
    image = os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.markdown)))
    text = (
        f"# lagjax engine costs (benchmarks/engine.py)\n\n{machine}. "
        f"Run: `{_util.command()}`, {time.perf_counter() - start:.0f} s; "
        f"each case in a fresh process, timeout {args.timeout:g} s; float64 for the scalar rows, float32 for the "
        f"layers (32 × 32, batch 16).\n\n{_util.format_markdown(HEADERS, cells, align='llrrrlrrrrrr')}\n\n"
        f"Flatness, compile + first call at {hi} layers / at {lo}: lagjax {flat[0]}, lax.scan {flat[1]}, "
        f"unrolled {flat[2]}.\n\n"
        "Ratios are lagjax / alternative (above 1: lagjax slower). compile + first: `Computation(...)` and the "
        "first `comp.gradient(x)`, or the first call of the jitted alternative; run: the least of the steady "
        f"calls ({args.repeats} at most; {args.calls} per method for call overhead, where run ms is the time per "
        "call). agree: largest relative difference of the gradients (layers: of the inputs' gradient norms); "
        "the self-loop's alternative is the in-order chain's measurement, another function.\n\n"
        f"![{PLOT_TITLE}]({image})\n"
    )
    with open(args.markdown, "w") as out:
        out.write(text)
    print(text)
    plot(by_depth, pairs, args.plot)  # after the table: a failed plot loses no figures
    print(f"wrote {args.markdown} and {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
