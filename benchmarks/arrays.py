"""Array programs: an MLP's gradient by lagjax against `jax.grad` of the same model, measured in one run (issue 5).

The model: `depth` layers of `width` units, float32, one constraint per layer,

    h1 = tanh(W1 @ X + b1), ..., h_{depth-1} = tanh(W_{depth-1} @ h_{depth-2} + b_{depth-1}),
    out = W_depth @ h_{depth-1} + b_depth,        loss = mean((out - Y)²),

every W `(width, width)`, every b `(width,)`, data X and targets Y `(width, batch)` (one column per
example), weights normal / sqrt(width). The inputs of the program are the weights, the biases, X and Y.

Batch 128 (`--batch`): a usual minibatch, large enough that every layer is a matrix product
(`(width, width) @ (width, batch)`) rather than a matrix-vector product, so that at widths 512 and 2048
the time is the FLOPs both sides share and the comparison is of what each adds around them; at
width 64 the products are small and the per-layer overhead shows. It also keeps the largest row
(depth 64 × width 2048: 1 GiB of weights, about 200 GFLOP per gradient) at seconds per call on 2 cores.

Each (depth, width) case runs in a fresh subprocess (its memory and compile caches are its own). In it,
after a warm-up (JAX start-up and all four methods compiled and run once on a depth-2, width-8
model, outside the timings), four gradients are compiled, run once, checked and timed:

  jax.grad (params)     `jax.jit(jax.grad(plain_loss))(params, data)`: JAX's reverse mode of the model
                        written as a plain Python loop over the layers; gradient w.r.t. the parameters.
  lagjax as_function    `jax.jit(jax.grad(loss))(params, data)` with
                        `loss = lambda params, data: fn({**params, **data})`, `fn = comp.as_function()`:
                        lagjax's multiplier sweep as a JAX function; the same gradient, the fair
                        comparison with the row above.
  jax.grad (all)        `jax.grad` of the plain loop w.r.t. the parameters *and* X and Y.
  lagjax gradient       `comp._jit["gradient"](x)` (what `comp.gradient` runs): the multipliers of
                        every input, so the same outputs as the row above, its fair comparison.

The data are arguments of every compiled function (not constants baked into it).

  compile s    `.lower(...).compile()`: tracing, lowering and XLA compile, timed apart from the first
               call; the least of `--compiles` (3) compiles, each after `jax.clear_caches()` so that
               each traces afresh (fewer once a method has spent 10 s compiling).
  run ms       steady state: the median of up to `--repeats` calls per method (at least `--min-rounds`,
               more while `--budget` seconds last), `block_until_ready()` on each, after the first call;
               the methods are called in rounds, in order and reversed on alternate rounds, so that
               a slow spell of the machine hits them all (see `steady_state`). "calls": how many were
               timed, per method; "ratio of fastest": the ratio of the fastest calls, for a shared
               machine. The targets use the medians.
  HLO ops      instructions in the optimised HLO of each compiled gradient (`compiled.as_text()`):
               equal counts mean XLA runs the same program, whatever the timings say.
  memory MB    `compiled.memory_analysis()`: temp + output bytes (the arguments, parameters and data,
               are the same for both sides of a ratio and not counted). A method whose argument +
               output + temp exceeds `--memory-limit` is compiled and its memory reported, but it is
               not run ("not run" in the table, its run target MISSED).
  λ MB         the multipliers beyond jax.grad's own output: those of every layer's variable and of X
               and Y, whose size is that of the forward pass's activations plus the data.
  rel err      `‖g_lagjax - g_jax‖ / ‖g_jax‖` over all the outputs, of the first call; must be <= 1e-4
               (float32).

Targets of issue 5, per row: steady-state gradient within 1.15× of jax.grad's, compile within 1.5×,
memory (temp + output) no more than jax.grad's plus the multipliers (λ MB). The table and the targets
are printed and written as Markdown (`--markdown`), and the three ratios (run, compile, memory over
jax.grad's plus λ) are plotted as bars per case (`--plot`, by default beside the Markdown: arrays.png).

Run:
  python benchmarks/arrays.py            # depth 4, 16, 64 × width 64, 512, 2048
  python benchmarks/arrays.py --quick    # depth 4, 16 × width 64, 512, 6 calls per method (~1 min)
  python benchmarks/arrays.py --depths 4 --widths 512 --repeats 50
  python benchmarks/arrays.py --depths 2 4 --widths 64 --repeats 6 --min-rounds 4 --budget 2 --compiles 2 \
      --markdown /tmp/arrays.md          # a smoke test (~30 s), beside it /tmp/arrays.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import lagjax

if __package__:  # python -m benchmarks.arrays
    from . import _util
else:  # python benchmarks/arrays.py: this folder is first on sys.path
    import _util

METHODS = ("grad", "fn", "grad_all", "lagjax")  # see NAMES
NAMES = {"grad": "jax.grad (params)", "fn": "lagjax as_function", "grad_all": "jax.grad (all)", "lagjax": "lagjax gradient"}
PAIRS = (("fn", "grad"), ("lagjax", "grad_all"))  # (lagjax method, its jax.grad baseline)
TOLERANCE = 1e-4
TARGET_RUN, TARGET_COMPILE = 1.15, 1.5


# --- the model, twice: as constraints and as a plain JAX loop ------------------------------------------
def hidden(W, b, h):
    return jnp.tanh(W @ h + b[:, None])


def linear(W, b, h):
    return W @ h + b[:, None]


def mse(out, Y):
    return jnp.mean((out - Y) ** 2)


def shapes(depth: int, width: int, batch: int) -> dict:
    out = {}
    for l in range(1, depth + 1):
        out[f"W{l}"], out[f"b{l}"] = (width, width), (width,)
    out["X"], out["Y"] = (width, batch), (width, batch)
    return out


def program(depth: int, width: int, batch: int):
    """The MLP as constraints: one per layer, `h{l}` for the hidden ones and `out`."""
    C = lagjax.Constraints(shapes(depth, width, batch))
    previous = "X"
    for l in range(1, depth + 1):
        name = "out" if l == depth else f"h{l}"
        C.add(name, linear if l == depth else hidden, [f"W{l}", f"b{l}", previous])
        previous = name
    return lagjax.Computation(lambda z: mse(z["out"], z["Y"]), C.inputs, C)


def plain_loss(params: dict, data: dict) -> jax.Array:
    """The same model written as plain JAX: a Python loop over the layers."""
    depth = len(params) // 2
    h = data["X"]
    for l in range(1, depth + 1):
        h = (linear if l == depth else hidden)(params[f"W{l}"], params[f"b{l}"], h)
    return mse(h, data["Y"])


def arrays(depth: int, width: int, batch: int, seed: int = 0) -> tuple[dict, dict]:
    """(params, data), float32, drawn in float32 (the largest row has 1 GiB of weights)."""
    rng = np.random.default_rng(seed)
    params, data = {}, {}
    for name, shape in shapes(depth, width, batch).items():
        value = rng.standard_normal(shape, dtype=np.float32)
        if name[0] == "W":
            value /= np.sqrt(width)
        elif name[0] == "b":
            value *= 0.1
        (data if name in ("X", "Y") else params)[name] = jnp.asarray(value)
    return params, data


def gradient_functions(comp) -> dict:
    """The four methods, each a function to jit and the arguments builder `(params, data) -> args`."""
    fn = comp.as_function()

    def loss(params, data):
        return fn({**params, **data})

    return {
        "grad": (jax.jit(jax.grad(plain_loss)), lambda p, d: (p, d)),
        "fn": (jax.jit(jax.grad(loss)), lambda p, d: (p, d)),
        "grad_all": (jax.jit(jax.grad(plain_loss, argnums=(0, 1))), lambda p, d: (p, d)),
        "lagjax": (comp._jit["gradient"], lambda p, d: (comp._tables, comp._inputs({**p, **d}))),
    }


def as_dict(method: str, output, comp=None) -> dict:
    """A method's output as one dict by input name. (`comp._jit["gradient"]` returns `(gradient,
    reports)`, the gradient stacked by shape: `comp._result` splits it by name.)"""
    if method == "grad_all":
        return {**output[0], **output[1]}
    if method == "lagjax":
        return {k: jnp.asarray(v) for k, v in comp._result(output[0], "inputs").items()}
    return dict(output)


def relative_error(ours: dict, reference: dict) -> float:
    num = sum(float(jnp.sum((ours[k].astype(jnp.float64) - reference[k]) ** 2)) for k in reference)
    den = sum(float(jnp.sum(reference[k].astype(jnp.float64) ** 2)) for k in reference)
    return float(np.sqrt(num / den)) if den else float(np.sqrt(num))


# --- one case ------------------------------------------------------------------------------------------
def warm_up(batch: int) -> None:
    """JAX start-up and every method's first compile and call, on a depth-2 width-8 model."""
    comp = program(2, 8, batch)
    params, data = arrays(2, 8, batch)
    for fn, args in gradient_functions(comp).values():
        jax.block_until_ready(fn(*args(params, data)))


def run_case(
    depth: int, width: int, batch: int, repeats: int, min_rounds: int, budget: float, memory_limit_gb: float, slow_s: float, compiles: int
) -> dict:
    warm_up(batch)
    t = time.perf_counter()
    comp = program(depth, width, batch)
    row = dict(depth=depth, width=width, batch=batch, build_s=time.perf_counter() - t)
    params, data = arrays(depth, width, batch)
    row["params_m"] = sum(p.size for p in params.values()) / 1e6
    variables = comp.solve_constraints({**params, **data})
    extra = [name for name in variables if name not in params]  # the layers' variables and X, Y
    row["lambda_mb"] = sum(variables[name].nbytes for name in extra) / 2**20
    del variables

    compiled, args, outputs, first = {}, {}, {}, {}
    for method, (fn, make_args) in gradient_functions(comp).items():
        args[method] = make_args(params, data)
        compiled[method], row[f"{method}_compile_s"] = _util.compile_timed(fn, *args[method], times=compiles, fresh=True)
        memory = row[f"{method}_memory"] = _util.xla_memory_mb(compiled[method])
        need = sum(memory.values()) / 1024 if memory else 0.0
        if need > memory_limit_gb:  # XLA would fail to allocate, or the machine would swap
            row[f"{method}_skipped"] = f"needs {need:,.1f} GiB, above --memory-limit {memory_limit_gb:.1f} GiB"
            del compiled[method]
            continue
        first[method], output = _util.clock(compiled[method], *args[method])
        row[f"{method}_first_s"] = first[method]
        outputs[method] = as_dict(method, output, comp)
    for ours, reference in PAIRS:
        if ours in outputs and reference in outputs:
            row[f"{ours}_error"] = relative_error(outputs[ours], outputs[reference])
    outputs.clear()

    for method, (median, fastest, calls) in steady_state(compiled, args, first, repeats, min_rounds, budget, slow_s).items():
        row[f"{method}_run_s"], row[f"{method}_fastest_s"], row[f"{method}_calls"] = median, fastest, calls
        row[f"{method}_hlo_ops"] = hlo_ops(compiled[method])
    return row


def hlo_ops(compiled) -> int | None:
    """The number of instructions of the optimised HLO (all computations, fusions' bodies included)."""
    try:
        return sum(1 for line in compiled.as_text().splitlines() if " = " in line and not line.lstrip().startswith(("HloModule", "//")))
    except Exception:
        return None


def steady_state(compiled, args, first, repeats, min_rounds, budget, slow_s) -> dict:
    """`{method: (median seconds, fastest seconds, number of calls)}`, `block_until_ready()` on every call.

    In rounds (`_util.rounds`): each method called once per round, in order and in reverse order on
    alternate rounds, so that a slow spell of the machine (it may be shared) hits all of them alike; at
    least `min_rounds`, then more while `budget` seconds last, at most `repeats`. A method whose first
    call took more than `slow_s` seconds is timed in the first 2 rounds only.
    """
    calls = {method: (lambda f=compiled[method], a=args[method]: f(*a)) for method in compiled}
    times = _util.rounds(
        calls,
        repeats,
        min_rounds=min_rounds,
        budget_s=budget,
        alternate=True,
        max_calls={method: 2 for method in compiled if first[method] > slow_s},
    )
    return {method: (float(np.median(t)), float(np.min(t)), len(t)) for method, t in times.items()}


def run_case_in_subprocess(depth: int, width: int, args, label: str) -> dict:
    """`run_case` in a fresh Python process; its row, or an error."""
    case = dict(
        depth=depth,
        width=width,
        batch=args.batch,
        repeats=args.repeats,
        min_rounds=args.min_rounds,
        budget=args.budget,
        memory_limit_gb=args.memory_limit,
        slow_s=args.slow,
        compiles=args.compiles,
    )
    try:
        return _util.in_subprocess(__file__, case, args.case_timeout, label=label)
    except _util.WorkerError as e:
        return dict(depth=depth, width=width, error=f"{e} (--case-timeout)" if e.timed_out else str(e))


# --- the tables ----------------------------------------------------------------------------------------
def _mem(row, method):
    m = row.get(f"{method}_memory") or {}
    return m["temp"] + m["out"] if m else None


def _case(r):
    return [str(r["depth"]), f"{r['width']:,}"]


def _ms(row, method):
    seconds = row.get(f"{method}_run_s")
    return "not run" if seconds is None else f"{seconds * 1e3:,.2f}"


def _run_ratio(row, ours, base, which="run"):
    a, b = row.get(f"{ours}_{which}_s"), row.get(f"{base}_{which}_s")
    return None if a is None or b is None else a / b


def run_table(rows):
    headers = ["depth", "width", "params M", "build s"]
    for ours, base in PAIRS:
        headers += [f"{NAMES[base]} ms", f"{NAMES[ours]} ms", "ratio", "ratio of fastest"]
    headers += ["calls"]
    cells = []
    for r in rows:
        if "error" in r:
            cells.append(_case(r) + ["FAILED"] * (len(headers) - 2))
            continue
        line = _case(r) + [f"{r['params_m']:.2f}", f"{r['build_s']:.2f}"]
        for ours, base in PAIRS:
            ratio, fastest = _run_ratio(r, ours, base), _run_ratio(r, ours, base, "fastest")
            line += [_ms(r, base), _ms(r, ours), "—" if ratio is None else f"{ratio:.3f}", "—" if fastest is None else f"{fastest:.3f}"]
        cells.append(line + ["/".join(str(r.get(f"{m}_calls", 0)) for m in METHODS)])
    return headers, cells


def compile_table(rows):
    headers = ["depth", "width"]
    for ours, base in PAIRS:
        headers += [f"{NAMES[base]} s", f"{NAMES[ours]} s", "ratio"]
    headers += [f"1st call {NAMES[m]} s" for m in METHODS]
    cells = []
    for r in rows:
        if "error" in r:
            cells.append(_case(r) + ["FAILED"] * (len(headers) - 2))
            continue
        line = _case(r)
        for ours, base in PAIRS:
            line += [
                f"{r[f'{base}_compile_s']:.2f}",
                f"{r[f'{ours}_compile_s']:.2f}",
                f"{r[f'{ours}_compile_s'] / r[f'{base}_compile_s']:.2f}",
            ]
        cells.append(line + [f"{r[f'{m}_first_s']:.3f}" if f"{m}_first_s" in r else "not run" for m in METHODS])
    return headers, cells


def memory_table(rows):
    headers = ["depth", "width", "λ MB"]
    for ours, base in PAIRS:
        headers += [f"{NAMES[base]} temp+out MB", f"{NAMES[ours]} temp+out MB", "ratio", "lagjax - jax.grad MB"]
    headers += [f"{NAMES[ours]} rel err" for ours, _ in PAIRS]
    headers += [f"HLO ops {NAMES[base]} / {NAMES[ours]}" for ours, base in PAIRS]
    cells = []
    for r in rows:
        if "error" in r:
            cells.append(_case(r) + ["FAILED"] * (len(headers) - 2))
            continue
        line = _case(r) + [f"{r['lambda_mb']:,.1f}"]
        for ours, base in PAIRS:
            a, b = _mem(r, ours), _mem(r, base)
            line += ["—"] * 4 if a is None or b is None else [f"{b:,.1f}", f"{a:,.1f}", f"{a / b:.2f}", f"{a - b:+,.1f}"]
        line += [f"{r[f'{ours}_error']:.1e}" if f"{ours}_error" in r else "not run" for ours, _ in PAIRS]
        cells.append(line + [f"{r.get(f'{base}_hlo_ops') or '—'} / {r.get(f'{ours}_hlo_ops') or '—'}" for ours, base in PAIRS])
    return headers, cells


def target_table(rows):
    """Per row, every target of issue 5 with its figure and met / MISSED."""
    headers = ["depth", "width"]
    for ours, _base in PAIRS:
        headers += [f"{NAMES[ours]}: run ≤ {TARGET_RUN}×", f"compile ≤ {TARGET_COMPILE}×", "memory ≤ jax.grad + λ"]
    cells, missed = [], 0
    for r in rows:
        if "error" in r:
            cells.append(_case(r) + ["FAILED"] * (len(headers) - 2))
            missed += 1
            continue
        line = _case(r)
        for ours, base in PAIRS:
            run = _run_ratio(r, ours, base)
            comp = r[f"{ours}_compile_s"] / r[f"{base}_compile_s"]
            a, b = _mem(r, ours), _mem(r, base)
            if run is None:  # lagjax's method not run (memory): missed; the baseline not run: not measured
                run_cell, ok_run = ("not run MISSED", False) if f"{ours}_skipped" in r else ("not measured", None)
            else:
                ok_run = run <= TARGET_RUN
                run_cell = f"{run:.3f} {_util.verdict(ok_run)}"
            ok = [ok_run, comp <= TARGET_COMPILE, None if a is None else a <= b + r["lambda_mb"]]
            missed += sum(x is False for x in ok)
            line += [
                run_cell,
                f"{comp:.2f} {_util.verdict(ok[1])}",
                "not measured" if a is None else f"{a:,.1f} ≤ {b + r['lambda_mb']:,.1f} MB {_util.verdict(ok[2])}",
            ]
        cells.append(line)
    return headers, cells, missed


def notes(rows) -> list[str]:
    out = []
    for r in rows:
        if "error" in r:
            out.append(f"depth {r['depth']} × width {r['width']}: FAILED, {r['error']}")
            continue
        for method in METHODS:
            if f"{method}_skipped" in r:
                out.append(
                    f"depth {r['depth']} × width {r['width']}: {NAMES[method]} not run: {r[f'{method}_skipped']} "
                    f"(memory_analysis: argument + output + temp)"
                )
        for ours, base in PAIRS:
            if f"{ours}_error" in r and not r[f"{ours}_error"] <= TOLERANCE:
                out.append(
                    f"depth {r['depth']} × width {r['width']}: {NAMES[ours]} differs from {NAMES[base]} "
                    f"by {r[f'{ours}_error']:.2e} (relative), above {TOLERANCE:g}: MISMATCH"
                )
    return out


# --- the plot ------------------------------------------------------------------------------------------
PLOT_TITLE = "lagjax / jax.grad per (depth, width): steady-state run, compile, memory"


def plot(rows, path: str, batch: int) -> None:
    """The three ratios the targets judge, per (depth, width) case, one bar per pair of methods:
    steady-state run (medians), compile, and memory (temp + output) over jax.grad's plus the multipliers."""
    groups = [f"{r['depth']} × {r['width']:,}" for r in rows]
    fig, (run, compile_, memory) = _util.subplots(3, width=max(4.5, 0.9 * len(rows) + 2.5))
    label = {pair: f"{NAMES[pair[0]]} / {NAMES[pair[1]]}" for pair in PAIRS}

    def per_pair(value):
        return {label[pair]: [None if "error" in r else value(r, *pair) for r in rows] for pair in PAIRS}

    def memory_ratio(r, ours, base):
        a, b = _mem(r, ours), _mem(r, base)
        return None if a is None or b is None else a / (b + r["lambda_mb"])

    _util.bars(
        run,
        groups,
        per_pair(_run_ratio),
        "lagjax / jax.grad",
        "steady-state run (median)",
        lines=[(1, "parity", "grey"), (TARGET_RUN, f"target ≤ {TARGET_RUN}×", "red")],
        annotate="{:.2f}",
    )
    _util.bars(
        compile_,
        groups,
        per_pair(lambda r, ours, base: r[f"{ours}_compile_s"] / r[f"{base}_compile_s"]),
        "lagjax / jax.grad",
        "compile (.lower().compile())",
        lines=[(1, "parity", "grey"), (TARGET_COMPILE, f"target ≤ {TARGET_COMPILE}×", "red")],
        annotate="{:.2f}",
    )
    _util.bars(
        memory,
        groups,
        per_pair(memory_ratio),
        "lagjax / (jax.grad + λ)",
        "memory, temp + output",
        lines=[(1, "target ≤ 1", "red")],
        annotate="{:.2f}",
    )
    for ax in (run, compile_, memory):
        ax.set_xlabel("depth × width")
    _util.save_figure(fig, path, f"{PLOT_TITLE}; float32, batch {batch}, {_util.short_machine()}", legend=list(label.values()))


# --- main ----------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=None, help="layers (default 4 16 64)")
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="units per layer (default 64 512 2048)")
    parser.add_argument("--batch", type=int, default=128, help="examples per batch (default 128)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per method, at most (default 30; 6 with --quick)")
    parser.add_argument("--min-rounds", type=int, default=None, help="timed calls per method, at least (default 6; 4 with --quick)")
    parser.add_argument(
        "--budget",
        type=float,
        default=40.0,
        help="seconds of timed calls per case, shared by the methods, after which a method's "
        "calls stop once it has --min-rounds (default 40)",
    )
    parser.add_argument(
        "--compiles", type=int, default=3, help="compiles per method, the least reported; fewer once 10 s are spent (default 3)"
    )
    parser.add_argument(
        "--slow", type=float, default=10.0, help="a method whose first call takes longer gets 2 timed calls only (default 10 s)"
    )
    parser.add_argument(
        "--memory-limit",
        type=float,
        default=0.75 * _util.physical_memory_gb(),
        help="GiB; a method whose memory_analysis (argument + output + temp) is larger is compiled "
        "but not run (default 3/4 of this machine's memory)",
    )
    parser.add_argument("--case-timeout", type=float, default=1800, help="seconds allowed to one case")
    parser.add_argument("--quick", action="store_true", help="smoke run: depths 4 16, widths 64 512, 5 rounds")
    _util.output_options(parser, os.path.join(os.path.dirname(os.path.abspath(__file__)), "arrays.md"), json_option=True)
    args = _util.parse_args(parser, argv)
    args.depths = args.depths or ([4, 16] if args.quick else [4, 16, 64])
    args.widths = args.widths or ([64, 512] if args.quick else [64, 512, 2048])
    args.repeats = args.repeats or (6 if args.quick else 30)
    args.min_rounds = min(args.repeats, args.min_rounds or (4 if args.quick else 6))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return _util.worker(run_case, args.worker)
    header = f"{_util.machine()}; float32, batch {args.batch}; {_util.provenance()}"
    print(header)
    cases = [(depth, width) for depth in sorted(args.depths) for width in sorted(args.widths)]
    rows, start = [], time.perf_counter()
    for k, (depth, width) in enumerate(cases, 1):
        rows.append(run_case_in_subprocess(depth, width, args, f"[{k}/{len(cases)}] depth {depth} × width {width}"))

    tables = [
        ("Steady-state gradient (median ms; ratio = lagjax / jax.grad, below 1: lagjax faster)", run_table(rows)),
        ("Compile (s, `.lower().compile()`; ratio = lagjax / jax.grad) and first call (s)", compile_table(rows)),
        (
            "Memory (`memory_analysis()`, temp + output MB), agreement with jax.grad, and the size of the compiled "
            "programs (instructions of the optimised HLO)",
            memory_table(rows),
        ),
    ]
    t_headers, t_cells, missed = target_table(rows)
    mismatches = notes(rows)
    with open(args.markdown, "w") as out:
        out.write(
            f"# lagjax vs jax.grad on MLPs (benchmarks/arrays.py)\n\n{header}. "
            f"Run: `{_util.command()}`, {time.perf_counter() - start:.0f} s.\n"
        )
        for title, (headers, cells) in tables:
            print(f"\n{title}\n{_util.format_text(headers, cells)}")
            out.write(f"\n{title}:\n\n{_util.format_markdown(headers, cells)}\n")
        print(f"\nTargets (issue 5), {missed} missed:\n{_util.format_text(t_headers, t_cells)}")
        out.write(f"\nTargets (issue 5), {missed} missed:\n\n{_util.format_markdown(t_headers, t_cells)}\n")
        for note in mismatches:
            print("  " + note)
            out.write(f"\n- {note}")
        out.write(f"\n\n![{PLOT_TITLE}]({os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.markdown)))})\n")
    if args.json:
        _util.write_json(args.json, header, args, rows)
    plot(rows, args.plot, args.batch)  # after the tables: a failed plot loses no figures
    print(f"\nwrote {args.markdown}, {args.plot}" + (f" and {args.json}" if args.json else ""))
    failed = any("error" in r or any(r.get(f"{ours}_error", 0) > TOLERANCE for ours, _ in PAIRS) for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
