"""What the benchmark scripts (arrays.py, cyclic.py, engine.py, scale.py) share: timing, compile timing,
one fresh subprocess per case, peak memory, tables, provenance and plots.

A script imports it as `import _util` when run as `python benchmarks/X.py` (the script's folder is then
first on `sys.path`; the workers are started that way too) and as `from . import _util` under
`python -m benchmarks.X`.

This module imports jax but not lagjax at import time (only `provenance()` does, when called): cyclic.py
and scale.py switch on float64 before lagjax is imported. matplotlib is imported by `pyplot()` only.

Where the scripts' methods differ, the difference is a parameter here and each script passes its own
(see each function): a figure a script has published keeps its meaning.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


# --- timing ----------------------------------------------------------------------------------------------
def clock(fn: Callable, *args) -> tuple[float, Any]:
    """`(seconds, result)` of one call `fn(*args)`, `jax.block_until_ready()` on the result."""
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t, out


def timed(
    fn: Callable[[], Any],
    repeats: int,
    budget_s: float = 20.0,
    statistic: Callable = np.median,
    at_least: int = 3,
    at_least_if_slow: int | None = None,
) -> float:
    """Steady-state wall time of `fn()`: `statistic` of up to `repeats` calls, `block_until_ready()` on each.

    Fewer calls once `budget_s` seconds are spent, but at least `at_least` (or `at_least_if_slow` when
    given and the first call took over a third of the budget). The scripts' variants, kept as they were:
      cyclic.py   `statistic=np.median, at_least_if_slow=1`
      scale.py    `statistic=np.median`
      engine.py   `statistic=min, budget_s=--budget` (its tables report the least time)
    """
    times, start = [], time.perf_counter()
    while len(times) < repeats:
        times.append(clock(fn)[0])
        enough = at_least_if_slow if at_least_if_slow is not None and times[0] > budget_s / 3 else at_least
        if time.perf_counter() - start > budget_s and len(times) >= enough:
            break
    return float(statistic(times))


def rounds(
    calls: dict[str, Callable[[], Any]],
    repeats: int,
    min_rounds: int | None = None,
    budget_s: float | None = None,
    alternate: bool = True,
    max_calls: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """The times of several functions called in rounds, `{name: [seconds, ...]}`, `block_until_ready()` on each.

    Each round calls every function once, so that a slow spell of a shared machine hits them all alike;
    with `alternate`, in the given order on even rounds and reversed on odd ones (so that none is always
    first). Up to `repeats` rounds; with a `budget_s`, no more rounds once it is spent and `min_rounds`
    are done. `max_calls` caps some functions' calls (they sit out the later rounds). The variants:
      arrays.py   `alternate=True`, `--min-rounds`, `--budget`, 2 calls for a method whose first call
                  took over `--slow` s; it reports the median, the least and the number of calls
      engine.py   call overhead: `alternate=False`, `--calls` rounds, no budget; it reports the least
    """
    times = {name: [] for name in calls}
    names, start = list(calls), time.perf_counter()
    for round_ in range(repeats):
        for name in names if not alternate or round_ % 2 == 0 else names[::-1]:
            if max_calls and len(times[name]) >= max_calls.get(name, repeats):
                continue
            times[name].append(clock(calls[name])[0])
        if budget_s is not None and round_ + 1 >= (min_rounds or 0) and time.perf_counter() - start > budget_s:
            break
    return times


def compile_timed(fn: Callable, *args, times: int = 1, fresh: bool = False, enough_s: float = 10.0):
    """`(compiled, seconds)`: `fn.lower(*args).compile()` (tracing, lowering and XLA compile), timed apart
    from any call; `fn` is `jax.jit`-ed first when it has no `.lower`.

    The least of `times` compiles, no more once `enough_s` seconds are spent. `fresh`: `jax.clear_caches()`
    before each compile, so that each traces afresh (arrays.py, `--compiles`); without it a compile may
    reuse what earlier compiles in the process cached (cyclic.py and scale.py: one compile each).
    """
    if not hasattr(fn, "lower"):
        fn = jax.jit(fn)
    best, spent = float("inf"), 0.0
    for _ in range(times):
        if fresh:
            jax.clear_caches()
        t = time.perf_counter()
        compiled = fn.lower(*args).compile()
        seconds = time.perf_counter() - t
        best, spent = min(best, seconds), spent + seconds
        if spent > enough_s:
            break
    return compiled, best


# --- one fresh process per case --------------------------------------------------------------------------
RESULT_MARK = "BENCHMARK-RESULT "


class WorkerError(RuntimeError):
    """A worker that timed out, or exited without printing its result. `str()`: "timed out after T s" or
    "exit status N: <its last line of output>" (a traceback's last line: the exception)."""

    def __init__(self, message: str, returncode: int | None = None, last_line: str | None = None, timed_out: bool = False):
        super().__init__(message)
        self.returncode, self.last_line, self.timed_out = returncode, last_line, timed_out


def in_subprocess(script: str, spec: dict, timeout: float, env: dict | None = None, label: str | None = None, tail: int = 20):
    """Run `python script --worker JSON(spec)` in a fresh Python process and return the result its
    `worker` printed (so that every case has its own memory peak and compile caches).

    `env`: variables set for the worker on top of this process's environment. `label`: printed to stderr
    before the case, followed by the seconds it took. Raises `WorkerError` on a timeout or when the worker
    printed no result; the last `tail` lines of its output are then printed to stderr.
    """
    command = [sys.executable, os.path.abspath(script), "--worker", json.dumps(spec)]
    if label:
        print(f"{label} ...", end=" ", file=sys.stderr, flush=True)
    t = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        if label:
            print(f"timed out ({timeout:g} s)", file=sys.stderr, flush=True)
        raise WorkerError(f"timed out after {timeout:g} s", timed_out=True) from None
    results = [line[len(RESULT_MARK) :] for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if label:
        print(f"{time.perf_counter() - t:.0f} s" + ("" if results else " FAILED"), file=sys.stderr, flush=True)
    if results:
        return json.loads(results[0])
    lines = [s for s in (done.stderr or done.stdout).splitlines() if s.strip()] or ["(no output)"]
    print("    " + "\n    ".join(lines[-tail:]), file=sys.stderr)
    raise WorkerError(f"exit status {done.returncode}: {lines[-1].strip()}", done.returncode, lines[-1].strip())


def worker(run: Callable[..., Any], spec_json: str) -> int:
    """The `--worker` side of `in_subprocess`: `run(**spec)`, its result printed as one JSON line; 0."""
    result = run(**json.loads(spec_json))
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


# --- memory ----------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (`ru_maxrss`: KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def xla_memory_mb(compiled) -> dict[str, float]:
    """XLA's `compiled.memory_analysis()` in MB: `{"arg", "out", "temp"}` (argument, output and temp bytes);
    `{}` where the backend or jax version reports none."""
    try:
        stats = compiled.memory_analysis()
        return dict(arg=stats.argument_size_in_bytes / 2**20, out=stats.output_size_in_bytes / 2**20, temp=stats.temp_size_in_bytes / 2**20)
    except Exception:  # not every backend or jax version reports it
        return {}


def physical_memory_gb() -> float:
    """This machine's memory, GiB (16 where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):  # not on every platform
        return 16.0


# --- tables ----------------------------------------------------------------------------------------------
def fmt(value, spec: str | Callable[[Any], str] = "{}", missing: str = "—") -> str:
    """`value` formatted by a format string or a function; `missing` for None."""
    if value is None:
        return missing
    return spec(value) if callable(spec) else spec.format(value)


def format_text(headers: list[str], cells: list[list[str]]) -> str:
    """A plain-text table, every column right-aligned to its widest cell."""
    widths = [max(len(h), *(len(c[k]) for c in cells)) for k, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def format_markdown(headers: list[str], cells: list[list[str]], align: str | None = None) -> str:
    """A Markdown table; `align` one letter per column, "l" (`---`) or "r" (`---:`), all "r" by default."""
    align = align or "r" * len(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines)


def verdict(ok) -> str:
    """A target's verdict: "met" or "MISSED"."""
    return "met" if ok else "MISSED"


def format_targets(items: list[tuple[str, str, str]], markdown: bool = False, wrap: bool = False) -> str:
    """Targets `(target, measured figure, verdict)`: a Markdown table, or text, one line each (the
    verdict first), or with `wrap` the measured figure on a second line (for long figures)."""
    if markdown:
        return "\n".join(["| target | measured | |", "|---|---|---|"] + [f"| {t} | {m} | {s} |" for t, m, s in items])
    if wrap:
        return "\n".join(f"  {s:<7} {t}\n          {m}" for t, m, s in items)
    width = max(len(t) for t, _, _ in items)
    return "\n".join(f"  {s:<12} {t:<{width}}  {m}" for t, m, s in items)


# --- provenance ------------------------------------------------------------------------------------------
def machine(load: bool = True) -> str:
    """What measured: jax's version and device, the cores, the processor and Python; with `load`, the load
    average now (a shared machine's timings are noisy)."""
    device = jax.devices()[0]
    kind = "" if device.platform == "cpu" else f" ({device.device_kind})"
    text = (
        f"jax {jax.__version__} on {device.platform}{kind}, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    return text + (f", load average {os.getloadavg()[0]:.1f} at the start" if load else "")


def short_machine() -> str:
    """jax's version, its device and the cores: for a plot's title."""
    return f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores"


def provenance() -> str:
    """Which lagjax was measured: its git commit (and whether lagjax/ has uncommitted changes), its path."""
    import lagjax

    root = os.path.dirname(os.path.dirname(os.path.abspath(lagjax.__file__)))
    try:
        git = ["git", "-C", root]
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "lagjax"], capture_output=True, text=True).stdout.strip()
        return f"lagjax commit {commit}" + (" with uncommitted changes in lagjax/" if dirty else "") + f" (at {root})"
    except (OSError, subprocess.CalledProcessError):
        return f"lagjax at {root} (no git)"


def command(argv: list[str] | None = None) -> str:
    """This run's command line, `python benchmarks/X.py ...`, for the header of what it writes."""
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(os.path.abspath(argv[0]), os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return shlex.join(["python", script, *argv[1:]])


def write_json(path: str, header: str, args, rows) -> None:
    """The rows, the options and the header as JSON."""
    with open(path, "w") as out:
        json.dump(dict(machine=header, args=vars(args), rows=rows), out, indent=1)


# --- the options every script has ----------------------------------------------------------------------
def output_options(parser, markdown: str, flags: tuple[str, ...] = ("--markdown",), json_option: bool = False) -> None:
    """Add the options of what a script writes: the Markdown (`flags`, default `markdown`), `--plot` (default
    beside the Markdown, filled in by `parse_args`), `--json` where `json_option`, and the hidden `--worker`."""
    parser.add_argument(*flags, dest="markdown", default=markdown, help=f"the Markdown (default {markdown})")
    parser.add_argument("--plot", default=None, help="the plot, PNG (default: beside the Markdown, .png for .md)")
    if json_option:
        parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def parse_args(parser, argv=None):
    """`parser.parse_args(argv)`, with `--plot` beside the Markdown unless given."""
    args = parser.parse_args(argv)
    args.plot = args.plot or beside(args.markdown)
    return args


# --- plots -----------------------------------------------------------------------------------------------
def beside(markdown: str, ext: str = ".png") -> str:
    """The path beside `markdown` with its extension replaced (a script's plot, by default)."""
    return os.path.splitext(markdown)[0] + ext


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def subplots(panels: int, width: float = 6.0, height: float = 4.5, **kwargs):
    """`(figure, axes)`: `panels` panels side by side, `axes` a flat list."""
    fig, axes = pyplot().subplots(1, panels, figsize=(width * panels, height), squeeze=False, **kwargs)
    return fig, list(axes[0])


def save_figure(fig, path: str, title: str | None = None, legend: list[str] | None = None, dpi: int = 120) -> None:
    """Write `fig` to `path` (PNG), with a title over all its panels, and close it. `legend`: the names of
    the series of `bars` (series `k` in colour `Ck`, the same in every panel) as one legend under the panels."""
    bottom = 0.0
    if legend:
        columns = min(len(legend), 4)
        fig.legend(handles=series_handles(legend), loc="lower center", ncol=columns, fontsize=8, frameon=False)
        bottom = 0.03 + 0.05 * -(-len(legend) // columns) * 4.5 / fig.get_figheight()
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def series_handles(names: list[str]) -> list:
    """Legend entries for the series of `bars`: series `k` in colour `Ck`, whether or not it was drawn."""
    from matplotlib.patches import Patch

    return [Patch(color=f"C{k}", label=name) for k, name in enumerate(names)]


def log_scale(ax, which: str = "y") -> None:
    """Log scale on `ax`'s "x" or "y" axis, labelled in plain numbers (0.2, 1, 30), not powers of ten."""
    import matplotlib.ticker as ticker

    class Plain(ticker.LogFormatter):  # LogFormatter picks the ticks to label; the label is the plain number
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def bars(
    ax,
    groups: list[str],
    series: dict[str, list[float | None]],
    ylabel: str,
    title: str | None = None,
    log: bool = False,
    lines: tuple = (),
    annotate: str | None = None,
    legend: bool = False,
) -> None:
    """Grouped bars on `ax`: one group per entry of `groups` along x, one bar per series in each group,
    series `k` in colour `Ck` (the same in every panel); a None value draws no bar (not measured).

    `lines`: `(y, label, colour)` horizontal reference lines (parity, a target), labelled at their right
    end (over the bars). `annotate`: a format string for the value written above each bar. `legend`: a
    legend in this panel (else give `save_figure` the series' names).
    """
    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    drawn = False
    for k, (name, values) in enumerate(series.items()):
        offset = (k - (len(series) - 1) / 2) * width
        shown = [(i, v) for i, v in enumerate(values) if v is not None and np.isfinite(v) and (v > 0 or not log)]
        if not shown:
            continue
        drawn = True
        where, heights = zip(*shown)
        container = ax.bar(x[list(where)] + offset, heights, width, label=name, color=f"C{k}")
        if annotate:
            ax.bar_label(container, [annotate.format(v) for v in heights], fontsize=7, padding=1)
    for k, (y, label, colour) in enumerate(sorted(lines)):  # the lowest label under its line, others above
        ax.axhline(y, color=colour, lw=1, ls="--", zorder=3)
        ax.annotate(
            label,
            xy=(1, y),
            xycoords=("axes fraction", "data"),
            ha="right",
            fontsize=7,
            color=colour,
            va="top" if k == 0 and len(lines) > 1 else "bottom",
            zorder=4,
            bbox=dict(fc="white", ec="none", alpha=0.8, pad=0.5),
        )
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel(ylabel)
    if not drawn:
        ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color="grey")
    elif log:
        log_scale(ax)
    ax.margins(y=0.12)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    if legend:
        ax.legend(handles=series_handles(list(series)), fontsize=7)
