"""lagjax at scale: 10² to 10⁶ constraints against the alternatives, one table measured in one run (issue 3).

For each size n and profile (wide: 8 equal layers; deep: a chain), a random program from
`lagjax.testing.random_program(n, d=4, profile=...)`, float64. Each (n, profile) case runs in a fresh
subprocess, so that its peak memory is its own; in it, after a warm-up (JAX start-up, one tiny jit, one
100-constraint program so that the per-function shape checks are done), are measured:

  lagjax
    build s         random_program: the add_constraint calls and the schedule (Computation(...))
    compile s       lagjax's jitted gradient (the one `comp.gradient` calls), `.lower(tables, x).compile()`:
                    tracing, lowering and XLA compile
    1st call s      the first call of that compiled gradient
    compile+1st s   the two together: what a fresh process waits before its first gradient
    run ms          steady-state gradient: the median of `--repeats` calls, `block_until_ready()` on each
    ns/con          run time per constraint
    peak MB         the process's peak resident memory (`ru_maxrss`) once lagjax has compiled and run
    Δpeak MB        that peak minus the peak after importing jax and building the program
    XLA MB          XLA's own figure, `compiled.memory_analysis()`: argument + output + temp bytes
                    (the index tables are arguments: counted)
  the alternatives
    jax.grad        `jax.jit(jax.grad(testing.reference_forward(comp)))`: JAX's own reverse mode of the
                    program unrolled in Python (one traced operation per constraint); compile s and
                    run ms. Only for n <= `--unrolled-limit` (a size cut, default 1000, 100 with
                    `--quick`: its compile grows faster than n, about 15 s at 10² and 200 s at 10³ on a
                    shared 2-core machine); above it the cells say "skipped".
    scipy           `scipy.sparse.linalg.spsolve_triangular` solving only the multiplier system
                    D λ = -∇f(z), D given (CSR from `comp.sparse_dconstraints(z)`, built outside the
                    timing); its λ is checked against lagjax's (normwise relative error <= 1e-8).
    NumPy           the original algorithm in plain NumPy (the seed gist: a Python loop solving the
                    constraints, a dense n × n D built constraint by constraint from hand-written local
                    gradients, a back-substitution loop), timed for the whole gradient; only where
                    the dense D fits, n <= `--numpy-limit`. Its gradient is checked against lagjax's.
  ratios            lagjax/grad run = lagjax run / jax.grad run (below 1: lagjax faster);
                    grad/lagjax compile = jax.grad compile / lagjax compile; scipy/lagjax run = scipy's
                    solve alone / lagjax's whole gradient; NumPy/lagjax run = NumPy gradient / lagjax's.
                    Above 1, lagjax is faster.
  checks            "ok" where every alternative's answer matched lagjax's (see the notes otherwise).

After the table, the targets of issue 3, each with the measured figure and "met" or "MISSED". The table
is also written as Markdown (`--markdown`) and time per constraint against n is plotted, log-log, one
panel per profile (`--plot`, by default beside the Markdown: scale.png).

The NumPy twins of `lagjax.testing`'s random functions (value and hand-written gradient) are checked at
start-up against the jnp functions and `jax.grad` of them, so a change in testing.py is caught.

Run:
  python benchmarks/scale.py                      # the full table: 10² ... 10⁶, wide and deep (~30 min)
  python benchmarks/scale.py --quick              # smoke run: n = 100, 1000, 5 repeats, jax.grad at 100
                                                  #   only (~2 min)
  python benchmarks/scale.py --sizes 100 1000 --profiles wide deep mixed --repeats 10
  python benchmarks/scale.py --sizes 100 300 --repeats 3 --unrolled-limit 100 --markdown /tmp/scale.md
                                                  # a smoke test (~50 s), beside it /tmp/scale.png
Needs scipy and matplotlib besides lagjax.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from lagjax import testing  # noqa: E402

if __package__:  # python -m benchmarks.scale
    from . import _util
else:  # python benchmarks/scale.py: this folder is first on sys.path
    import _util

DEFAULT_SIZES = [100, 1_000, 5_000, 10_000, 100_000, 1_000_000]


# --- NumPy twins of testing._RANDOM_FUNCTIONS: (value, gradient) of v, shape (k,) ----------------------
def _sigmoid(u):
    return 0.5 * (1 + np.tanh(u / 2))


def _tanh_product_grad(v):
    a, b = np.tanh(v[0]), np.tanh(v[1] - 0.3)
    return np.array([(1 - a * a) * b, a * (1 - b * b)])


def _sin4_grad(v):
    c = np.cos(v[0] * v[1] + v[2] - v[3]) / 2
    return np.array([c * v[1], c * v[0], c, -c])


NUMPY_TWINS = {  # (arity k, index j) -> (value, gradient), for testing._RANDOM_FUNCTIONS[k][j]
    (1, 0): (lambda v: np.sin(v[0] + 0.5), lambda v: np.cos(v[:1] + 0.5)),
    (1, 1): (lambda v: np.tanh(2 * v[0]), lambda v: 2 * (1 - np.tanh(2 * v[:1]) ** 2)),
    (1, 2): (lambda v: _sigmoid(3 * v[0]), lambda v: 3 * _sigmoid(3 * v[:1]) * (1 - _sigmoid(3 * v[:1]))),
    (1, 3): (lambda v: np.logaddexp(0, v[0]) - 0.7, lambda v: _sigmoid(v[:1])),
    (2, 0): (lambda v: np.tanh(v[0]) * np.tanh(v[1] - 0.3), _tanh_product_grad),
    (2, 1): (lambda v: v[0] * v[1], lambda v: v[::-1].copy()),
    (2, 2): (lambda v: (v[0] + v[1]) / 2, lambda v: np.full(2, 0.5)),
    (3, 0): (lambda v: np.tanh(v.sum() / 3), lambda v: np.full(3, (1 - np.tanh(v.sum() / 3) ** 2) / 3)),
    (3, 1): (lambda v: v[0] * v[1] * v[2], lambda v: np.array([v[1] * v[2], v[0] * v[2], v[0] * v[1]])),
    (3, 2): (lambda v: (v[0] * v[1] + v[2]) / 2, lambda v: np.array([v[1] / 2, v[0] / 2, 0.5])),
    (4, 0): (lambda v: np.sin(v[0] * v[1] + v[2] - v[3]) / 2, _sin4_grad),
    (4, 1): (lambda v: v.mean(), lambda v: np.full(4, 0.25)),
    (4, 2): (lambda v: (v[0] * v[1] - v[2] * v[3]) / 2, lambda v: np.array([v[1], v[0], -v[3], -v[2]]) / 2),
}


def check_numpy_twins(points: int = 5, seed: int = 0) -> None:
    """Assert each NumPy twin equals its jnp function and `jax.grad` of it at random points of [-1, 1]^k."""
    keys = {(k, j) for k, fs in testing._RANDOM_FUNCTIONS.items() for j in range(len(fs))}
    if keys != set(NUMPY_TWINS):
        raise AssertionError(
            f"testing._RANDOM_FUNCTIONS has functions {sorted(keys)}, NUMPY_TWINS has {sorted(NUMPY_TWINS)}: "
            "update NUMPY_TWINS in benchmarks/scale.py to match lagjax/testing.py."
        )
    rng = np.random.default_rng(seed)
    for (k, j), (value, grad) in NUMPY_TWINS.items():
        f = testing._RANDOM_FUNCTIONS[k][j]
        jax_grad = jax.grad(lambda v: jnp.reshape(f(v), ()))
        for v in rng.uniform(-1, 1, (points, k)):
            np.testing.assert_allclose(
                value(v),
                np.asarray(f(jnp.asarray(v))),
                rtol=1e-12,
                atol=1e-15,
                err_msg=f"NumPy twin of testing._RANDOM_FUNCTIONS[{k}][{j}], value at {v}",
            )
            np.testing.assert_allclose(
                grad(v),
                np.asarray(jax_grad(jnp.asarray(v))),
                rtol=1e-12,
                atol=1e-15,
                err_msg=f"NumPy twin of testing._RANDOM_FUNCTIONS[{k}][{j}], gradient at {v}",
            )


# --- the original algorithm, in plain NumPy ---------------------------------------------------------------
class NumpyOriginal:
    """The seed gist's `Computation` for a random program: forward loop, dense D, back-substitution loop.

    Built from `comp.constraints`, each function replaced by its NumPy twin (found by identity). The
    objective is random_program's `f(z) = Σ z[last layer] + 0.01 Σ sin(z)`, so ∇f(z) = w + 0.01 cos(z),
    with the indicator w read once from `comp.df` (checked against it in `check_objective`).
    """

    def __init__(self, comp):
        which = {f: (k, j) for k, fs in testing._RANDOM_FUNCTIONS.items() for j, f in enumerate(fs)}
        self.d, self.n = comp.d, comp.n
        self.constraints = []  # (i, args, unique args, value, gradient)
        for c in comp.constraints:
            if c.f not in which:
                raise KeyError(f"constraint {c} uses a function that is not in testing._RANDOM_FUNCTIONS")
            value, grad = NUMPY_TWINS[which[c.f]]
            args = np.asarray(c.args, np.intp)
            self.constraints.append((c.i, args, np.unique(args).tolist(), value, grad))
        self.w = np.asarray(comp.df(jnp.zeros(comp.n))) - 0.01

    def df(self, z):
        return self.w + 0.01 * np.cos(z)

    def check_objective(self, comp, z) -> float:
        return testing.relative_error(self.df(z), comp.df(jnp.asarray(z)))

    def solve_constraints(self, x):
        z = np.zeros(self.n)
        z[: self.d] = x
        for i, args, _, value, _ in self.constraints:
            z[i] = value(z[args])
        return z

    def dconstraints(self, z):
        # Column i holds constraint i's local gradient above a -1 diagonal. np.add.at, not `+=`, so that
        # an argument repeated in a constraint gets the sum of its partials (the gist's `+=` kept one).
        D = np.zeros((self.n, self.n))
        D[np.arange(self.d), np.arange(self.d)] = -1
        for i, args, _, _, grad in self.constraints:
            np.add.at(D[:, i], args, grad(z[args]))
            D[i, i] = -1
        return D

    def reverse_mode(self, D, v):
        # D λ = -v, D upper triangular with -1 diagonal: λ_a = v_a + Σ_{i > a} D[a, i] λ_i, i in reverse order.
        lam = v.copy()
        for i, _, unique_args, _, _ in reversed(self.constraints):
            for a in unique_args:  # each distinct argument once: D[a, i] already sums repeats
                lam[a] += lam[i] * D[a, i]
        return lam

    def gradient(self, x):
        z = self.solve_constraints(x)
        return self.reverse_mode(self.dconstraints(z), self.df(z))[: self.d]


# --- measurements, one function per method ----------------------------------------------------------------
def timed(fn, repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` calls (fewer, but at least 3, once 20 s are spent)."""
    return _util.timed(fn, repeats, budget_s=20.0, statistic=np.median)


def warm_up(profile: str) -> None:
    """JAX start-up, the CPU compiler's first use and lagjax's per-function shape checks, outside the timings."""
    jax.block_until_ready(jax.jit(lambda v: v + 1)(jnp.zeros(4)))
    testing.random_program(100, d=4, seed=1, profile=profile)


def measure_lagjax(n: int, profile: str, repeats: int):
    """Build, compile, first call, steady state and memory of lagjax's gradient. Returns (row, comp, x, compiled)."""
    t = time.perf_counter()
    comp, x = testing.random_program(n, d=4, seed=0, profile=profile)
    build = time.perf_counter() - t
    baseline = _util.peak_rss_mb()
    x = jnp.asarray(x)
    # lagjax's own jitted gradient, its index tables passed as arguments (an outer
    # `jax.jit(comp.gradient)` would capture them as constants of the compiled program).
    compiled, compile_s = _util.compile_timed(comp._jit["gradient"], comp._tables, x)
    first = _util.clock(compiled, comp._tables, x)[0]
    run = timed(lambda: compiled(comp._tables, x)[0], repeats)  # (gradient, reports of cyclic blocks)
    peak = _util.peak_rss_mb()
    schedule = getattr(comp, "schedule", None)
    row = dict(
        layout=f"{schedule.num_steps}x{schedule.width}",
        build_s=build,
        compile_s=compile_s,
        first_s=first,
        compile_first_s=compile_s + first,
        run_s=run,
        ns_per_con=run / n * 1e9,
        peak_mb=peak,
        delta_peak_mb=peak - baseline,
        xla_mb=xla_memory_mb(compiled),
    )
    return row, comp, x, compiled


def xla_memory_mb(compiled) -> float | None:
    """argument + output + temp bytes of `compiled.memory_analysis()`, MB; None where XLA gives none."""
    memory = _util.xla_memory_mb(compiled)
    return sum(memory.values()) if memory else None


def measure_unrolled(comp, x, repeats: int, lagjax_grad) -> dict:
    """`jax.grad` of the forward pass unrolled in Python, jitted: compile and steady-state run."""
    compiled, compile_s = _util.compile_timed(jax.jit(jax.grad(testing.reference_forward(comp))), x)
    error = testing.relative_error(lagjax_grad, compiled(x))
    return dict(grad_compile_s=compile_s, grad_run_s=timed(lambda: compiled(x), repeats), check_grad=error, check_grad_ok=error <= 1e-10)


def measure_scipy(comp, x, repeats: int) -> dict:
    """scipy's sparse triangular solve of `D λ = -∇f(z)` alone, D given; λ checked against lagjax's."""
    import scipy.sparse
    import scipy.sparse.linalg

    z, lam = comp.multipliers(x)
    values, rows, cols = comp.sparse_dconstraints(z)
    D = scipy.sparse.coo_matrix((values, (rows, cols)), shape=(comp.n, comp.n)).tocsr()  # repeats add up
    D.sum_duplicates()
    D.sort_indices()
    rhs = -np.asarray(comp.df(z))
    solve = lambda: scipy.sparse.linalg.spsolve_triangular(D, rhs, lower=False)
    error = testing.relative_error(solve(), lam)
    return dict(scipy_s=timed(solve, repeats), check_scipy=error, check_scipy_ok=error <= 1e-8)


def measure_numpy(comp, x, repeats: int, lagjax_grad) -> dict:
    """The NumPy original's whole gradient: forward loop, dense D, back-substitution; checked against lagjax."""
    original = NumpyOriginal(comp)
    x = np.asarray(x)
    objective_error = original.check_objective(comp, original.solve_constraints(x))
    error = max(testing.relative_error(original.gradient(x), lagjax_grad), objective_error)
    return dict(numpy_s=timed(lambda: original.gradient(x), min(repeats, 5)), check_numpy=error, check_numpy_ok=error <= 1e-8)


def run_case(n: int, profile: str, repeats: int, unrolled_limit: int, numpy_limit: int) -> dict:
    """Every measurement of one (n, profile): lagjax first (its memory peak), then the alternatives."""
    warm_up(profile)
    row = dict(n=n, profile=profile)
    lagjax_row, comp, x, compiled = measure_lagjax(n, profile, repeats)
    row.update(lagjax_row)
    lagjax_grad = np.asarray(compiled(comp._tables, x)[0])
    if n <= unrolled_limit:
        row.update(measure_unrolled(comp, x, repeats, lagjax_grad))
    row.update(measure_scipy(comp, x, repeats))
    if n <= numpy_limit:
        row.update(measure_numpy(comp, x, repeats, lagjax_grad))
    return row


def run_case_in_subprocess(n: int, profile: str, args, label: str) -> dict:
    """`run_case` in a fresh Python process (so that its peak memory is its own); its row, or an error."""
    case = dict(n=n, profile=profile, repeats=args.repeats, unrolled_limit=args.unrolled_limit, numpy_limit=args.numpy_limit)
    try:
        return _util.in_subprocess(__file__, case, args.case_timeout, label=label)
    except _util.WorkerError as e:
        return dict(n=n, profile=profile, error=f"{e} (--case-timeout)" if e.timed_out else str(e))


# --- the table ----------------------------------------------------------------------------------------------
def _ratio(row, top, bottom):
    if row.get(top) is None or row.get(bottom) is None:
        return None
    return row[top] / row[bottom]


def _RATIO(x):  # two significant digits below 100, whole numbers above
    return f"{x:.2g}" if x < 100 else f"{x:,.0f}"


COLUMNS = [  # header, value of a row, format (a format string or a function)
    ("n", lambda r: r["n"], "{:,}"),
    ("profile", lambda r: r["profile"], "{}"),
    ("layout", lambda r: r.get("layout") or None, "{}"),
    ("build s", lambda r: r.get("build_s"), "{:.2f}"),
    ("compile s", lambda r: r.get("compile_s"), "{:.2f}"),
    ("1st call s", lambda r: r.get("first_s"), "{:.3f}"),
    ("compile+1st s", lambda r: r.get("compile_first_s"), "{:.2f}"),
    ("run ms", lambda r: _ms(r.get("run_s")), "{:.3f}"),
    ("ns/con", lambda r: r.get("ns_per_con"), "{:,.0f}"),
    ("peak MB", lambda r: r.get("peak_mb"), "{:,.0f}"),
    ("Δpeak MB", lambda r: r.get("delta_peak_mb"), "{:,.0f}"),
    ("XLA MB", lambda r: r.get("xla_mb"), "{:.2f}"),
    ("jax.grad compile s", lambda r: r.get("grad_compile_s"), "{:.2f}"),
    ("jax.grad run ms", lambda r: _ms(r.get("grad_run_s")), "{:.3f}"),
    ("lagjax/grad run", lambda r: _ratio(r, "run_s", "grad_run_s"), _RATIO),
    ("grad/lagjax compile", lambda r: _ratio(r, "grad_compile_s", "compile_s"), _RATIO),
    ("scipy ms", lambda r: _ms(r.get("scipy_s")), "{:.3f}"),
    ("scipy/lagjax run", lambda r: _ratio(r, "scipy_s", "run_s"), _RATIO),
    ("NumPy ms", lambda r: _ms(r.get("numpy_s")), "{:,.1f}"),
    ("NumPy/lagjax run", lambda r: _ratio(r, "numpy_s", "run_s"), _RATIO),
    ("checks", lambda r: _checks(r), "{}"),
]
SKIPPED = {"jax.grad compile s", "jax.grad run ms", "lagjax/grad run", "grad/lagjax compile", "NumPy ms", "NumPy/lagjax run"}


def _ms(seconds):
    return None if seconds is None else seconds * 1e3


def _checks(row):
    if "error" in row:
        return "FAILED"
    failed = [name[len("check_") : -len("_ok")] for name in row if name.endswith("_ok") and not row[name]]
    return "MISMATCH " + ",".join(failed) if failed else "ok"


def table_cells(rows) -> tuple[list[str], list[list[str]]]:
    headers = [header for header, _, _ in COLUMNS]
    cells = []
    for row in rows:
        line = []
        for header, get, fmt in COLUMNS:
            value = None if ("error" in row and header not in ("n", "profile", "checks")) else get(row)
            if value is not None:
                line.append(_util.fmt(value, fmt))
            elif "error" not in row and header in SKIPPED:
                line.append("skipped")
            else:
                line.append("—")
        cells.append(line)
    return headers, cells


def notes(rows, args) -> list[str]:
    out = []
    if any(r["n"] > args.unrolled_limit for r in rows):
        out.append(f"jax.grad skipped: compile would exceed the limit (n > --unrolled-limit = {args.unrolled_limit:,}).")
    if any(r["n"] > args.numpy_limit for r in rows):
        out.append(
            f"NumPy original skipped: its dense n × n D would exceed the limit (n > --numpy-limit = "
            f"{args.numpy_limit:,}; at 10⁶ it would need {8e12 / 2**40:.1f} TiB)."
        )
    for r in rows:
        if "error" in r:
            out.append(f"n={r['n']:,} {r['profile']}: FAILED, {r['error']}")
        for name in [k for k in r if k.endswith("_ok") and not r[k]]:
            check = name[: -len("_ok")]
            out.append(f"n={r['n']:,} {r['profile']}: {check} relative error {r[check]:.3g} above its tolerance.")
    return out


# --- the targets of issue 3 -----------------------------------------------------------------------------------
def _find(rows, n, profile=None):
    return [r for r in rows if r["n"] == n and (profile is None or r["profile"] == profile) and "error" not in r]


def targets(rows) -> list[tuple[str, str, str]]:
    """Each issue-3 target: (target, measured figure, "met" / "MISSED" / "not measured")."""
    out = []
    measured = [r for r in rows if "error" not in r and r["n"] <= 1_000_000]
    if measured:
        worst = max(measured, key=lambda r: r["compile_first_s"])
        largest = max(r["n"] for r in measured)
        note = "" if largest >= 1_000_000 else f" (largest n measured {largest:,})"
        out.append(
            (
                "compile + first call <= 2 s, every n <= 10⁶",
                f"worst {worst['compile_first_s']:.2f} s at n={worst['n']:,} {worst['profile']}{note}",
                _util.verdict(worst["compile_first_s"] <= 2),
            )
        )
    else:
        out.append(("compile + first call <= 2 s, every n <= 10⁶", "—", "not measured"))
    profiles = sorted({r["profile"] for r in rows}, key=lambda p: testing.PROFILES.index(p))
    limits = dict(wide=150, deep=500)
    for profile in profiles:
        if profile in limits:
            out.append(
                _at(
                    rows,
                    1_000_000,
                    profile,
                    f"steady <= {limits[profile]} ns/constraint at 10⁶, {profile}",
                    lambda r: (f"{r['ns_per_con']:,.0f} ns", r["ns_per_con"] <= limits[profile]),
                )
            )
    for profile in profiles:
        out.append(
            _at(
                rows,
                1_000_000,
                profile,
                f"lagjax gradient >= 2× faster than scipy solve at 10⁶, {profile}",
                lambda r: (_RATIO(r["scipy_s"] / r["run_s"]) + "×", r["scipy_s"] >= 2 * r["run_s"]),
                "scipy_s",
            )
        )
    for profile in profiles:
        out.append(
            _at(
                rows,
                5_000,
                profile,
                f">= 100× faster than the NumPy original at 5,000, {profile}",
                lambda r: (_RATIO(r["numpy_s"] / r["run_s"]) + "×", r["numpy_s"] >= 100 * r["run_s"]),
                "numpy_s",
            )
        )
    for profile in profiles:
        out.append(
            _at(
                rows,
                1_000,
                profile,
                f"steady within 3× of jax.grad's run at 1,000, {profile}",
                lambda r: ("lagjax/jax.grad = " + _RATIO(r["run_s"] / r["grad_run_s"]), r["run_s"] <= 3 * r["grad_run_s"]),
                "grad_run_s",
            )
        )
    for profile in profiles:
        out.append(
            _at(
                rows,
                1_000_000,
                profile,
                f"peak memory < 2 GB at 10⁶, {profile}",
                lambda r: (f"{r['peak_mb']:,.0f} MB (Δ {r['delta_peak_mb']:,.0f} MB)", r["peak_mb"] < 2000),
            )
        )
    for profile in profiles:
        out.append(_at(rows, 1_000_000, profile, f"build < 10 s at 10⁶, {profile}", lambda r: (f"{r['build_s']:.2f} s", r["build_s"] < 10)))
    return out


def _at(rows, n, profile, target, judge, needs="run_s"):
    found = [r for r in _find(rows, n, profile) if r.get(needs) is not None]
    if not found:
        return target, f"— (n={n:,} {profile} not in this run)", "not measured"
    figure, ok = judge(found[0])
    return target, figure, _util.verdict(ok)


# --- the plot ------------------------------------------------------------------------------------------------
METHODS = [  # label, row key (seconds per gradient or solve), line style, colour (the same in every panel)
    ("lagjax gradient (steady)", "run_s", "o-", "C0"),
    ("jax.grad, unrolled (steady)", "grad_run_s", "s--", "C1"),
    ("scipy spsolve_triangular (D λ = -∇f only)", "scipy_s", "^-.", "C2"),
    ("NumPy original (dense D)", "numpy_s", "d:", "C3"),
]


def plot(rows, path: str) -> None:
    """Time per constraint against n, log-log, one line per method, one panel per profile."""
    profiles = sorted({r["profile"] for r in rows}, key=lambda p: testing.PROFILES.index(p))
    fig, axes = _util.subplots(len(profiles), sharey=True)
    limits = dict(wide=150, deep=500)
    for ax, profile in zip(axes, profiles):
        ok = sorted((r for r in rows if r["profile"] == profile and "error" not in r), key=lambda r: r["n"])
        for label, key, style, colour in METHODS:
            points = [(r["n"], r[key] / r["n"] * 1e9) for r in ok if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), style, color=colour, label=label)
        if profile in limits:
            ax.axhline(limits[profile], color="grey", lw=0.8, ls=":", label=f"target at 10⁶: {limits[profile]} ns")
        ax.set(xscale="log", yscale="log", xlabel="n (constraints)", title=f"{profile} programs")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("time per constraint (ns)")
    _util.save_figure(fig, path, "Gradient time per constraint, float64, " + _util.short_machine())


# --- main ----------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help=f"numbers of constraints (default {' '.join(map(str, DEFAULT_SIZES))})"
    )
    parser.add_argument("--profiles", nargs="+", default=["wide", "deep"], choices=testing.PROFILES)
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per steady-state figure (default 20)")
    parser.add_argument(
        "--unrolled-limit",
        type=int,
        default=None,
        help="largest n for which jax.grad of the unrolled program is compiled (default 1000; 100 with --quick)",
    )
    parser.add_argument(
        "--numpy-limit", type=int, default=5_000, help="largest n for the NumPy original, whose dense D takes 8 n² bytes (default 5000)"
    )
    parser.add_argument("--case-timeout", type=float, default=3600, help="seconds allowed to one (n, profile) case")
    parser.add_argument("--quick", action="store_true", help="smoke run: sizes 100 1000, 5 repeats, jax.grad only at 100")
    _util.output_options(parser, os.path.join(os.path.dirname(os.path.abspath(__file__)), "scale.md"), json_option=True)
    args = _util.parse_args(parser, argv)
    args.sizes = args.sizes or ([100, 1_000] if args.quick else DEFAULT_SIZES)
    args.repeats = args.repeats or (5 if args.quick else 20)
    if args.unrolled_limit is None:
        args.unrolled_limit = 100 if args.quick else 1_000
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return _util.worker(run_case, args.worker)
    check_numpy_twins()
    header = f"{_util.machine()}; float64, scipy {__import__('scipy').__version__}; {_util.provenance()}"
    print(header)
    cases = [(n, p) for n in sorted(args.sizes) for p in args.profiles]
    rows, start = [], time.perf_counter()
    for k, (n, profile) in enumerate(cases, 1):
        rows.append(run_case_in_subprocess(n, profile, args, f"[{k}/{len(cases)}] n={n:,} {profile}"))

    headers, cells = table_cells(rows)
    items = targets(rows)
    print()
    print(_util.format_text(headers, cells))
    for note in notes(rows, args):
        print("  " + note)
    print("\nTargets (issue 3):")
    print(_util.format_targets(items))

    with open(args.markdown, "w") as out:
        out.write(
            f"{header}. Run: `{_util.command()}`, {time.perf_counter() - start:.0f} s.\n\n{_util.format_markdown(headers, cells)}\n\n"
        )
        out.writelines(f"- {note}\n" for note in notes(rows, args))
        out.write(f"\nTargets (issue 3):\n\n{_util.format_targets(items, markdown=True)}\n")
        out.write(
            f"\n![Gradient time per constraint against n, log-log, one panel per profile]"
            f"({os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.markdown)))})\n"
        )
    if args.json:
        _util.write_json(args.json, header, args, rows)
    plot(rows, args.plot)  # after the table: a failed plot loses no figures
    print(f"\nwrote {args.markdown} and {args.plot}" + (f" and {args.json}" if args.json else ""))
    failed = any("error" in r or _checks(r) != "ok" for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
