"""The documentation: the MkDocs site builds with `--strict`, every ```python block of README.md and
docs/ runs as written, the README stays a front page, and its headline benchmark figures match the
tables the benchmark scripts wrote.

Code blocks run page by page, each page's blocks in order in one namespace, all pages in one fresh
process (`run_pages`; a page that wants float64 enables it itself, as a reader would). Output shown
on a page, or code not meant to run, is fenced ```text, ```pycon or ```bash instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[^\s`]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
RUNS = {"python"}  # fences that are run
SHOWN = {"text", "pycon", "bash", "console", ""}  # fences that are only shown


def fences(text: str):
    """`(language, first line of the code (1-based), code)` of every fenced block, code dedented."""
    for m in FENCE.finditer(text):
        indent = len(m["indent"])
        code = "\n".join(line[indent:] for line in m["code"].splitlines())
        yield m["lang"], text.count("\n", 0, m.start("code")) + 1, code


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.update(NO_MKDOCS_2_WARNING="1", MPLBACKEND="Agg")
    return env


# --- the site ------------------------------------------------------------------------------
def test_mkdocs_build_strict(tmp_path):
    """Broken links, missing pages or includes, unresolved references and docstring warnings fail it."""
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    assert (tmp_path / "site" / "index.html").exists()
    # the hook's list of known docstring warnings holds only those still seen: fixed ones are removed
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    for entry in hooks.KNOWN_DOCSTRING_WARNINGS:
        assert any(all(part in line for part in entry) for line in run.stderr.splitlines()), (
            f"{entry} no longer warns: remove it from KNOWN_DOCSTRING_WARNINGS in docs/_hooks.py"
        )


# --- the examples --------------------------------------------------------------------------
def run_pages(pages: list[str]) -> int:
    """Run the ```python blocks of each page, printing `ok` or `FAILED` and the traceback per page;
    return the number of pages that failed.

    Called in a fresh process (JAX is imported once for all pages): each page runs in a namespace of
    its own with float64 off at its start, as in a fresh interpreter; its blocks are compiled with the
    page's line numbers, so a traceback points into the page.
    """
    import time
    import traceback

    import jax

    failed = 0
    for page in pages:
        jax.config.update("jax_enable_x64", False)
        namespace, start = {"__name__": "__main__"}, time.perf_counter()
        try:
            for lang, line, code in fences(Path(page).read_text(encoding="utf-8")):
                if lang in RUNS:
                    exec(compile("\n" * (line - 1) + code, page, "exec"), namespace)
        except BaseException:
            failed += 1
            print(f"FAILED {page}\n{traceback.format_exc()}", flush=True)
        else:
            print(f"ok {page} {time.perf_counter() - start:.1f} s", flush=True)
    return failed


def _pages_with_code() -> list[Path]:
    return [page for page in PAGES if any(lang in RUNS for lang, _, _ in fences(page.read_text(encoding="utf-8")))]


def _run_examples(pages, tmp_path):
    runner = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import test_docs; sys.exit(test_docs.run_pages(sys.argv[1:]) > 0)"
    run = subprocess.run(
        [sys.executable, "-c", runner, *map(str, pages)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, f"examples failed:\n{run.stdout[-12000:]}\n{run.stderr[-4000:]}"


def test_readme_examples_run(tmp_path):
    """Every ```python block of README.md, in order."""
    assert README in _pages_with_code()
    _run_examples([README], tmp_path)


@pytest.mark.slow
def test_examples_run(tmp_path):
    """Every ```python block of docs/, page by page, in order (a minute and a half of compiles: -m slow)."""
    pages = [page for page in _pages_with_code() if page != README]
    assert len(pages) > 5
    _run_examples(pages, tmp_path)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_code_fences_are_run_or_shown(page):
    """A block is run (```python) or only shown (```text, ```pycon, ```bash): no language escapes the
    examples test by a spelling (```py, ```python3)."""
    for lang, line, _ in fences(page.read_text(encoding="utf-8")):
        assert lang in RUNS | SHOWN, f"{_name(page)}:{line}: fence ```{lang}: use ```python (run) or ```text (shown)"


# --- the README ----------------------------------------------------------------------------
def test_readme_is_a_front_page():
    text = README.read_text(encoding="utf-8")
    assert len(text) < 12000, f"README.md has {len(text)} characters; move detail to docs/ (the limit is 12,000)"


def test_readme_test_command_is_ci():
    """The set-up's test command is the one `.ci/run` runs."""
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    assert f"\n    {command}\n" in README.read_text(encoding="utf-8"), f"README.md must show `{command}` (.ci/run)"


def test_readme_links_resolve():
    """Relative links and images of the README point at files of the repository."""
    text = re.sub(r"<!--.*?-->", "", README.read_text(encoding="utf-8"), flags=re.S)
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert targets
    for target in targets:
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        path = target.split("#")[0]
        assert (ROOT / path).exists(), f"README.md links to {target}, which does not exist"


# --- the headline benchmark figures --------------------------------------------------------
def tables(path: Path) -> list[tuple[list[str], list[list[str]]]]:
    """The Markdown tables of a file: `(header, rows)`, cells stripped."""
    found, lines = [], path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|[\s:|-]+\|", lines[i + 1].strip()):
            if i > 0 and lines[i - 1].startswith("|"):
                continue
            cells = lambda row: [cell.strip() for cell in row.strip().strip("|").split("|")]
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(cells(row))
            found.append((cells(line), rows))
    return found


def cell(path: Path, column: str, **where) -> list[str]:
    """The cells of `column` (`"ratio#2"`: its second occurrence) in the first table holding it whose
    rows match `where` (column -> value; underscores in the column stand for spaces)."""
    name, _, nth = column.partition("#")
    for header, rows in tables(path):
        if header.count(name) < int(nth or 1):
            continue
        index = [i for i, h in enumerate(header) if h == name][int(nth or 1) - 1]
        keys = {header.index(k.replace("_", " ")): v for k, v in where.items() if k.replace("_", " ") in header}
        if len(keys) < len(where):
            continue
        values = [row[index] for row in rows if all(row[k] == v for k, v in keys.items())]
        if values:
            return values
    raise AssertionError(f"{_name(path)} has no table with column {column!r} and rows {where}")


def _value(values: list[str], how: str) -> str:
    if how == "range":
        numbers = [float(v.replace(",", "")) for v in values]
        return f"{min(numbers):.2f}–{max(numbers):.2f}"
    return values[0]


BENCH = ROOT / "benchmarks"
# (bullet, table file, column, rows, "one" or "range", how the page writes it)
HEADLINES = [
    ("Scale", "scale.md", "ns/con", dict(n="1,000,000", profile="wide"), "one", "{} ns per constraint"),
    ("Scale", "scale.md", "ns/con", dict(n="1,000,000", profile="deep"), "one", "{} ns"),
    ("Scale", "scale.md", "scipy/lagjax run", dict(n="1,000,000", profile="wide"), "one", "{}×"),
    ("Scale", "scale.md", "scipy/lagjax run", dict(n="1,000,000", profile="deep"), "one", "{}×"),
    ("Scale", "scale.md", "compile s", dict(n="1,000,000", profile="wide"), "one", "compiles in {} s"),
    ("Scale", "scale.md", "NumPy/lagjax run", dict(n="5,000", profile="wide"), "one", "{}×"),
    ("Scale", "scale.md", "lagjax/grad run", dict(n="1,000", profile="wide"), "one", "{} of the time"),
    ("Scale", "scale.md", "jax.grad compile s", dict(n="1,000", profile="wide"), "one", "compiles in {} s"),
    ("Arrays", "arrays.md", "ratio#2", dict(), "range", "{}× the time of `jax.grad`"),
    ("Arrays", "arrays.md", "ratio", dict(), "range", "{}×"),
    ("Cycles", "cyclic.md", "run ms", dict(case="mdp 10,000", method="lagjax"), "one", "{} ms"),
    ("Cycles", "cyclic.md", "run ms", dict(case="mdp 10,000", method="unrolled K"), "one", "{} ms"),
    ("Cycles", "cyclic.md", "run ms", dict(case="mdp 10,000", method="dense"), "one", "{} ms"),
    ("Cycles", "cyclic.md", "compile s", dict(case="pairs 10,000", method="lagjax"), "one", "{} s"),
    ("Cycles", "cyclic.md", "run ms", dict(case="pairs 10,000", method="lagjax"), "one", "{} ms"),
    ("Cycles", "cyclic.md", "run ms", dict(case="pairs 10,000", method="unrolled K"), "one", "{} ms"),
    ("Depth", "engine.md", "compile + first s", dict(row="layers 1000"), "one", "{} s"),
    ("Depth", "engine.md", "compile + first s", dict(row="layers 10"), "one", "{} s"),
    ("Depth", "engine.md", "alt compile + first s", dict(row="layers 1000", alternative="unrolled jit(grad)"), "one", "{} s"),
]


def _bullets(path: Path) -> dict[str, str]:
    """The headline bullets of a page, `- **Label** ...`, by label, their lines joined."""
    text = path.read_text(encoding="utf-8")
    bullets = re.findall(r"^- \*\*(\w+)\*\*(.*?)(?=^- |^#|\Z)", text, re.S | re.M)
    return {label: " ".join(body.split()) for label, body in bullets}


@pytest.mark.parametrize("page", [README, DOCS / "benchmarks" / "index.md"], ids=_name)
def test_headline_figures_match_the_tables(page):
    """A headline figure is the one its benchmark's table holds now: rerun a benchmark, then update them."""
    bullets = _bullets(page)
    for label, file, column, where, how, written in HEADLINES:
        assert label in bullets, f"{_name(page)} has no headline bullet **{label}**"
        expected = written.format(_value(cell(BENCH / file, column, **where), how))
        assert expected in bullets[label], (
            f"{_name(page)}, **{label}**: benchmarks/{file} ({column}, {where or 'all rows'}) now reads "
            f"{expected!r}, which the headline does not say: update it from the table"
        )
