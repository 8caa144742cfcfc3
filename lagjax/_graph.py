"""`graph`: a picture of a program, its variables with their values and multipliers.

Nodes are the variables, in layers by level (the dependency order of `_components.condensation`:
inputs on top, each constraint below what it reads), coloured by group (the constraints that run
the same code, `Schedule.groups`), with the values `z` and multipliers `λ` of `comp.multipliers(x)`
when `x` is given. Edges are arguments: from each variable a constraint reads to the variable it
defines; with `partials=True` each carries the local partial `∂f_i/∂z_j = D[j, i]` at z(x). Cyclic
blocks (`comp.blocks`) are drawn as clusters: a block's members share one layer, inside a dashed
rectangle.

The objective `f` is one extra node, below the variables. `f` is a function of all the variables
whose reads lagjax cannot see: without `x` the node stands alone, without edges; with `x` a dashed
edge comes from each variable with a nonzero `∂f/∂z` at z(x) (`comp.df`), so a variable `f` reads
whose partial happens to vanish at that x draws no edge.

Past `max_nodes` variables, the graph is a summary: one node per (group, band of levels), with the
number of variables it holds, and edges between those nodes, counted (`_summary`, vectorised NumPy).

Output: `Graph.dot` is Graphviz DOT text (nothing needed to make it); `Graph.save` writes `.dot`,
`.svg` or `.png`, drawing the last two with matplotlib (imported when drawing, never at import)
after lagjax's own layered layout (`_Layout`): no Graphviz binary is used or needed.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from lagjax import _components

if TYPE_CHECKING:  # `Computation.graph` calls this module: it sits below `_computation`
    from lagjax._computation import Computation

# ColorBrewer Set3 without its grey (the inputs are white, the objective orange): one colour per group.
PALETTE = (
    "#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
    "#bc80bd", "#ccebc5", "#ffed6f", "#a6cee3",
)  # fmt: skip
INPUT_COLOUR, OBJECTIVE_COLOUR, OTHER_COLOUR = "#ffffff", "#fdae6b", "#d9d9d9"
LABEL_WIDTH = 44  # characters of a node's first line before it is cut with "…"
MAX_LAYERS = 24  # a summary's bands of levels: at most this many layers
DENSE_PARTIALS_MAX = 3000  # array programs: the partials' norms come from the dense D up to this size
FORMATS = (".dot", ".svg", ".png")
NO_READS = "f's reads are not known without x: the objective is drawn without edges."


class Node(NamedTuple):
    """A node of a `Graph`.

    Attributes:
      id: its DOT identifier: `v<index>` for variable `index`, `objective`, `s<k>` in a summary.
      label: the lines it shows.
      role: "input", "intermediate" or "objective".
      group: its group (an index of `comp.schedule.groups`); -1 for inputs and the objective.
      layer: its layer (the variable's level; in a summary, its band of levels).
      cluster: the cyclic block it belongs to (an index of `comp.blocks`), else -1.
      count: the number of variables it stands for (1 but in a summary).
      tooltip: the values at full precision (`.15g`, as `lagjax demo` prints them), one per line.
      name: the variable's name (None for the objective and summary nodes).
    """

    id: str
    label: tuple
    role: str
    group: int = -1
    layer: int = 0
    cluster: int = -1
    count: int = 1
    tooltip: str = ""
    name: Hashable = None


class Edge(NamedTuple):
    """An edge of a `Graph`: `tail` is read by `head`'s constraint (`count` times: repeated arguments,
    or in a summary the arguments between the two nodes' variables); into the objective, a read of f."""

    tail: str
    head: str
    label: str = ""
    count: int = 1


class Cluster(NamedTuple):
    """A cyclic block: its `label` and the ids of its `members`."""

    id: str
    label: str
    members: tuple


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """A picture of a program (`graph`, or `Computation.graph`).

    Attributes:
      nodes: the `Node`s, one per variable (and the objective), or per summary node.
      edges: the `Edge`s: arguments, and the objective's reads.
      clusters: the `Cluster`s: cyclic blocks.
      legend: `(colour, text)` pairs: the inputs, each group, the objective.
      title: a line saying what is drawn.
      summary: whether this is a summary graph (one node per group and band of levels).
      notes: what could not be drawn, in words (e.g. partials skipped for a large array program).

    `dot` (a property) is the Graphviz DOT text; `save(path)` writes `.dot`, `.svg` or `.png`;
    `render(format)` gives the SVG or PNG bytes. In a notebook the graph shows itself as SVG.
    """

    nodes: tuple
    edges: tuple
    clusters: tuple
    legend: tuple
    title: str
    summary: bool = False
    notes: tuple = ()

    def __repr__(self) -> str:
        kind = "summary " if self.summary else ""
        return f"Graph({kind}{len(self.nodes)} nodes, {len(self.edges)} edges, {len(self.clusters)} cyclic blocks)"

    @property
    def dot(self) -> str:
        """The graph as Graphviz DOT text (`dot -Tsvg` draws it, where Graphviz is installed)."""
        lines = [
            "digraph lagjax {",
            f'  graph [label="{_escape(self.title)}", labelloc=t, fontname="monospace", fontsize=11];',
            '  node [shape=box, style="rounded,filled", fontname="monospace", fontsize=10];',
            '  edge [fontname="monospace", fontsize=8, color="#444444"];',
        ]
        for node in self.nodes:
            attrs = {"label": "\n".join(node.label), "fillcolor": _colour(node)}
            if node.role == "input":
                attrs["style"] = "filled,bold"
            elif node.role == "objective":
                attrs["shape"], attrs["style"] = "doubleoctagon", "filled"
            if node.tooltip:
                attrs["tooltip"] = node.tooltip
            lines.append(f"  {node.id} [{_attributes(attrs)}];")
        for k, cluster in enumerate(self.clusters):
            members = "; ".join(cluster.members)
            lines.append(f'  subgraph cluster_{k} {{ label="{_escape(cluster.label)}"; style=dashed; {members}; }}')
        for edge in self.edges:
            attrs = {"label": edge.label} if edge.label else {}
            if edge.head == "objective":  # a read of f, not an argument of a constraint
                attrs.update(style="dashed", color="#999999")
            lines.append(f"  {edge.tail} -> {edge.head}" + (f" [{_attributes(attrs)}]" if attrs else "") + ";")
        rows = "".join(f'<tr><td bgcolor="{colour}">{_html(text)}</td></tr>' for colour, text in self.legend)
        table = f'<table border="0" cellborder="1" cellspacing="0">{rows}</table>'
        lines.append(f'  legend [shape=plaintext, style="", label=<{table}>];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def render(self, format: str = "png") -> bytes:
        """The picture as bytes: `format` "svg" or "png". Needs matplotlib (`pip install matplotlib`)."""
        if format not in ("svg", "png"):
            raise ValueError(f"`format` must be 'svg' or 'png', got {format!r}.")
        figure = _draw(self)
        buffer = io.BytesIO()
        width, height = figure.get_size_inches()
        dpi = min(110.0, 16000.0 / max(width, height, 1.0))  # PNGs at most 16,000 pixels a side
        figure.savefig(buffer, format=format, dpi=dpi, facecolor="white")
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Write the graph to `path`, by its suffix: `.dot` (DOT text), `.svg` or `.png` (drawn with
        matplotlib). Returns the path written."""
        path = pathlib.Path(path)
        suffix = format_of(path)
        if suffix == ".dot":
            path.write_text(self.dot, encoding="utf-8")
        else:
            path.write_bytes(self.render(suffix[1:]))
        return path

    def _repr_svg_(self) -> str:
        return self.render("svg").decode("utf-8")

    def _repr_png_(self) -> bytes:
        return self.render("png")


def format_of(path: str | os.PathLike) -> str:
    """The suffix of `path` ('.dot', '.svg' or '.png'), or a ValueError saying which ones work."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"Cannot write a graph to {str(path)!r}: the file name must end in .dot, .svg or .png (got {suffix or 'no suffix'!r})."
        )
    return suffix


def graph(comp: Computation, x: Any = None, *, max_nodes: int = 200, partials: bool = False) -> Graph:
    """A picture of the program of `comp`: its variables, arguments, groups and cyclic blocks.

    Args:
      comp: the `Computation`.
      x: optional inputs, as `comp.multipliers` takes them (a vector `(d,)`, or a dict by input
        name); given, each variable shows its value z and multiplier λ at the solution (an array
        variable its shape and norm, or its entries when it has at most 3), and the objective its
        value, with a dashed edge from every variable with a nonzero `∂f/∂z` there.
      max_nodes: past this many variables (`comp.n`), draw a summary: one node per group and band
        of levels, with the number of variables it holds (at most `max_nodes` nodes, 24 layers).
      partials: label each edge j -> i with the local partial `∂f_i/∂z_j` at z(x) (`D[j, i]`, from
        `comp.sparse_dconstraints`; for array variables the norm of that block of D, skipped past
        3,000 flattened variables), and each objective edge with `∂f/∂z_j`. Needs `x`; not drawn in
        a summary.

    Returns:
      A `Graph`: `.dot` (DOT text), `.save(path)` (`.dot`, `.svg`, `.png`), shown in notebooks.

    Raises:
      TypeError: `comp` is not a Computation. ValueError: `partials=True` without `x`, a bad
      `max_nodes`, or `x` not shaped as the inputs (the message of `comp.multipliers`).
    """
    if not all(hasattr(comp, a) for a in ("schedule", "constraints", "multipliers")):  # a Computation
        raise TypeError(f"`comp` must be a lagjax.Computation, got {type(comp).__name__}.")
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, (int, np.integer)) or max_nodes < 1:
        raise ValueError(f"`max_nodes` must be a positive int, got {max_nodes!r}.")
    if partials and x is None:
        raise ValueError("`partials=True` needs `x`: the partials are taken at the solution z(x); pass x.")
    structure = _Structure(comp)
    values = None if x is None else _Values(comp, x)
    if comp.n > max_nodes:
        return _summary(comp, structure, values, int(max_nodes))
    return _full(comp, structure, values, partials)


# --- what is drawn: the program's structure and values ----------------------------------------------
class _Structure:
    """The program's graph as arrays: each variable's level, group and block; the argument edges.

    Read from the schedule's per-group tables (`group_vars`, `group_args`): one NumPy operation per
    group, none per variable. Levels: `_components.condensation` of the constraints.
    """

    def __init__(self, comp: Computation):
        s = comp.schedule
        n = comp.n
        self.level, _ = _components.condensation(comp.d, comp.constraints)
        self.group = np.full(n, -1, np.int64)
        tails, heads = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for g in range(len(s.groups)):
            variables = np.asarray(s.group_vars[g], np.int64)
            args = np.asarray(s.group_args[g], np.int64).reshape(variables.size, -1)
            self.group[variables] = g
            tails.append(args.ravel())
            heads.append(np.repeat(variables, args.shape[1]))
        pairs, self.count = np.unique(np.concatenate(tails) * n + np.concatenate(heads), return_counts=True)
        self.tail, self.head = pairs // n, pairs % n  # one edge per (argument, constraint) pair
        self.block = np.full(n, -1, np.int64)
        for b, block in enumerate(comp.blocks):
            self.block[block.variables] = b
        self.sizes = np.diff(comp.layout.offsets)


class _Values:
    """The solution at x, flattened: z and λ `(size,)`, the objective's value and gradient `(size,)`."""

    def __init__(self, comp: Computation, x):
        z, lam = comp.multipliers(x)
        self.z, self.lam = _flat(comp, z), _flat(comp, lam)
        self.f = float(np.asarray(comp.f(z)).reshape(()))
        self.df = _flat(comp, comp.df(z))
        self.offsets = comp.layout.offsets
        starts = np.minimum(self.offsets[:-1], max(comp.size - 1, 0))
        nonzero = np.abs(self.df) > 0
        reads = np.logical_or.reduceat(nonzero, starts) if comp.size else np.zeros(comp.n, bool)
        self.reads = reads & (np.diff(self.offsets) > 0)  # per variable: ∂f/∂z ≠ 0

    def of(self, which: str, i: int) -> np.ndarray:
        """Variable i's entries of `which` ("z", "lam" or "df")."""
        return getattr(self, which)[self.offsets[i] : self.offsets[i + 1]]


def _flat(comp: Computation, tree) -> np.ndarray:
    if comp.dicts:
        parts = [np.ravel(np.asarray(tree[name], np.float64)) for name in comp.names]
        return np.concatenate(parts) if parts else np.zeros(0)
    return np.asarray(tree, np.float64).reshape(-1)


def _full(comp: Computation, st: _Structure, values: _Values | None, partials: bool) -> Graph:
    """One node per variable, one edge per (argument, constraint) pair."""
    d, n = comp.d, comp.n
    shapes = [comp.shapes[name] for name in comp.names]
    nodes, notes = [], []
    for i, name in enumerate(comp.names):
        if i < d:
            head, role, text = f"{name}  (input)", "input", str(name)
        else:
            text = str(comp.constraints[i - d])
            head, role = _cut(text, LABEL_WIDTH), "intermediate"
        label, tooltip = [head], [text]
        if values is not None:
            for symbol, which in (("z", "z"), ("λ", "lam")):
                entries = values.of(which, i).reshape(shapes[i])
                label.append(f"{symbol} = {_short(entries)}")
                tooltip.append(f"{symbol} = {_precise(entries)}")
        group, level, block = int(st.group[i]), int(st.level[i]), int(st.block[i])
        nodes.append(Node(f"v{i}", tuple(label), role, group, level, block, 1, "\n".join(tooltip), name))

    labels = [""] * st.tail.size
    if partials:
        local, note = _partials(comp, values, st)
        if note:
            notes.append(note)
        if local is not None:
            scalar = (st.sizes[st.tail] == 1) & (st.sizes[st.head] == 1)
            labels = [f"∂ {v:.4g}" if one else f"‖∂‖ {v:.4g}" for v, one in zip(local.tolist(), scalar.tolist())]
    edges = [
        Edge(f"v{j}", f"v{i}", " ".join(filter(None, [labels[e], f"×{c}" if c > 1 else ""])), int(c))
        for e, (j, i, c) in enumerate(zip(st.tail.tolist(), st.head.tolist(), st.count.tolist()))
    ]

    objective = ["objective f(z)"] if values is None else ["objective", f"f(z) = {values.f:.6g}"]
    tooltip = "" if values is None else f"f(z) = {values.f:.15g}"
    layer = int(st.level.max(initial=0)) + 1
    nodes.append(Node("objective", tuple(objective), "objective", -1, layer, -1, 1, tooltip))
    if values is None:
        notes.append(NO_READS)
    else:
        for i in np.flatnonzero(values.reads).tolist():
            g = values.of("df", i)
            text = (f"∂f {float(g[0]):.4g}" if g.size == 1 else f"‖∂f‖ {np.linalg.norm(g):.4g}") if partials else ""
            edges.append(Edge(f"v{i}", "objective", text))

    clusters = tuple(
        Cluster(
            f"cluster_{b}",
            f"cyclic block {b} ({_plural(len(block.names), 'variable')})",
            tuple(f"v{v}" for v in block.variables.tolist()),
        )
        for b, block in enumerate(comp.blocks)
    )
    at = "" if values is None else f"; z and λ at x = {_inputs_text(comp, values)}"
    title = f"{_plural(n, 'variable')} ({_plural(d, 'input')}), {_plural(st.tail.size, 'argument')}{at}"
    return Graph(tuple(nodes), tuple(edges), clusters, _legend(comp, st, values is not None), title, False, tuple(notes))


def _partials(comp: Computation, values: _Values, st: _Structure) -> tuple[np.ndarray | None, str]:
    """Per edge j -> i, `D[j, i]` at z(x) (for arrays the norm of that block of D, the Frobenius norm
    of `∂f_i/∂z_j`), and a note if skipped."""
    z = comp.unflatten(values.z) if comp.dicts else values.z
    offsets = comp.layout.offsets
    if st.tail.size == 0:
        return np.zeros(0), ""
    if all(shape == () for shape in comp.shapes.values()):
        entries, rows, cols = comp.sparse_dconstraints(z)
        out = np.zeros(st.tail.size)
        keys = st.tail * comp.n + st.head
        key = rows.astype(np.int64) * comp.n + cols
        where = np.searchsorted(keys, key)
        found = (where < st.tail.size) & (keys[np.minimum(where, st.tail.size - 1)] == key)
        np.add.at(out, where[found], entries[found])
        return out + (st.tail == st.head), ""  # a self-read: D[i, i] = -1 + ∂f_i/∂z_i
    if comp.size > DENSE_PARTIALS_MAX:
        return None, f"Partials not drawn: array programs past {DENSE_PARTIALS_MAX} flattened variables (this one has {comp.size})."
    D = np.asarray(comp.dconstraints(z)) + np.eye(comp.size)
    blocks = [D[offsets[j] : offsets[j + 1], offsets[i] : offsets[i + 1]] for j, i in zip(st.tail.tolist(), st.head.tolist())]
    return np.asarray([block.item() if block.size == 1 else np.linalg.norm(block) for block in blocks]), ""


def _summary(comp: Computation, st: _Structure, values: _Values | None, max_nodes: int) -> Graph:
    """One node per (group, band of levels); edges between them, counted. Vectorised over variables."""
    d, n = comp.d, comp.n
    groups = comp.schedule.groups
    key = st.group.copy()  # -1: inputs
    present, sizes = np.unique(key[d:], return_counts=True)
    budget = max(max_nodes - 2, 1)  # besides the inputs' node and the objective's
    other = len(groups)
    if present.size > budget:  # too many groups: the smallest become "other groups"
        keep = present[np.argsort(-sizes, kind="stable")[: max(budget - 1, 1)]]
        key[d:] = np.where(np.isin(key[d:], keep), key[d:], other)
    level = st.level
    depth = int(level.max(initial=0))
    width = max(1, -(-depth // MAX_LAYERS))
    while True:  # the narrowest bands of levels that fit in the budget
        layer = np.where(np.arange(n) < d, 0, 1 + (np.maximum(level, 1) - 1) // width)
        codes, node_of = np.unique((key + 1) * (depth + 2) + layer, return_inverse=True)
        if codes.size - (d > 0) <= budget or width >= depth:
            break
        width *= 2
    node_of = node_of.reshape(-1)
    m = codes.size
    count = np.bincount(node_of, minlength=m)
    lo = np.full(m, depth + 1, np.int64)
    hi = np.zeros(m, np.int64)
    np.minimum.at(lo, node_of, level)
    np.maximum.at(hi, node_of, level)
    on_cycles = np.bincount(node_of, weights=st.block >= 0, minlength=m).astype(np.int64)
    node_key, node_layer = codes // (depth + 2) - 1, codes % (depth + 2)
    if values is not None:  # per node, the largest |λ| of its variables
        starts = np.minimum(values.offsets[:-1], max(comp.size - 1, 0))
        per_variable = np.maximum.reduceat(np.abs(values.lam), starts) if comp.size else np.zeros(n)
        largest = np.zeros(m)
        np.maximum.at(largest, node_of, np.where(st.sizes > 0, per_variable, 0.0))

    nodes = []
    for k in range(m):
        g = int(node_key[k])
        levels = f"level {lo[k]}" if lo[k] == hi[k] else f"levels {lo[k]}–{hi[k]}"
        if g < 0:
            label = [f"inputs ×{count[k]:,}", levels]
        else:
            label = [_group_name(groups[g]) if g < other else "other groups", _plural(int(count[k]), "variable"), levels]
        if on_cycles[k]:
            label.append(f"{on_cycles[k]:,} on cycles")
        if values is not None:
            label.append(f"max |λ| = {largest[k]:.3g}")
        role = "input" if g < 0 else "intermediate"
        nodes.append(Node(f"s{k}", tuple(label), role, g if g < other else -1, int(node_layer[k]), -1, int(count[k])))

    pairs, inverse = np.unique(node_of[st.tail] * m + node_of[st.head], return_inverse=True)
    weight = np.bincount(inverse.reshape(-1), weights=st.count, minlength=pairs.size).astype(np.int64)
    edges = [Edge(f"s{a // m}", f"s{a % m}", f"×{w:,}", int(w)) for a, w in zip(pairs.tolist(), weight.tolist())]

    objective = ["objective f(z)"] if values is None else ["objective", f"f(z) = {values.f:.6g}"]
    nodes.append(Node("objective", tuple(objective), "objective", -1, int(node_layer.max(initial=0)) + 1))
    notes = [NO_READS] if values is None else []
    if values is not None:
        readers = np.bincount(node_of[values.reads], minlength=m)
        edges += [Edge(f"s{k}", "objective", f"×{c:,}", int(c)) for k, c in enumerate(readers.tolist()) if c]
    bands = "one level" if width == 1 else f"bands of {width:,} levels"
    title = f"summary of {n:,} variables ({d:,} inputs) in {m} nodes: group × {bands}"
    return Graph(tuple(nodes), tuple(edges), (), _legend(comp, st, values is not None, key), title, True, tuple(notes))


def _legend(comp: Computation, st: _Structure, at_x: bool, key: np.ndarray | None = None) -> tuple:
    key = st.group if key is None else key
    groups = comp.schedule.groups
    present, sizes = np.unique(key[comp.d :], return_counts=True)
    entries = [(INPUT_COLOUR, f"inputs ×{comp.d:,}")]
    for g, m in zip(present.tolist(), sizes.tolist()):
        if g < len(groups):
            entries.append((PALETTE[g % len(PALETTE)], f"group {g}: {_group_name(groups[g], True)} ×{m:,}"))
        else:
            entries.append((OTHER_COLOUR, f"other groups ×{m:,}"))
    if len(groups) > len(PALETTE):
        entries.append((OTHER_COLOUR, f"(colours repeat every {len(PALETTE)} groups)"))
    entries.append((OBJECTIVE_COLOUR, "objective f, dashed from ∂f/∂z ≠ 0" if at_x else "objective f (its reads: with x)"))
    return tuple(entries)


def _group_name(group, where: bool = False) -> str:
    """A group's function by name; for a lambda, where it was written."""
    f = group.first
    while hasattr(f, "func"):  # functools.partial
        f = f.func
    name = getattr(f, "__name__", type(f).__name__)
    code = getattr(f, "__code__", None)
    if where and name == "<lambda>" and code is not None:
        name += f" ({os.path.basename(code.co_filename)}:{code.co_firstlineno})"
    return name


def _colour(node: Node) -> str:
    if node.role == "input":
        return INPUT_COLOUR
    if node.role == "objective":
        return OBJECTIVE_COLOUR
    return PALETTE[node.group % len(PALETTE)] if node.group >= 0 else OTHER_COLOUR


def _short(a: np.ndarray) -> str:
    """A value in a few characters: a scalar to 6 digits, up to 3 entries, else shape and norm."""
    if a.size == 1:
        return f"{float(a.reshape(())):.6g}"
    if a.size <= 3:
        return "[" + ", ".join(f"{v:.4g}" for v in a.ravel().tolist()) + "]"
    return f"{a.shape} norm {np.linalg.norm(a):.4g}"


def _precise(a: np.ndarray) -> str:
    if a.size == 1:
        return f"{float(a.reshape(())):.15g}"
    first = ", ".join(f"{v:.15g}" for v in a.ravel()[:6].tolist())
    return f"shape {a.shape}, norm {np.linalg.norm(a):.15g}, first entries [{first}{', …' if a.size > 6 else ''}]"


def _inputs_text(comp: Computation, values: _Values) -> str:
    if comp.dicts:
        return "the given x"
    return _cut("[" + ", ".join(f"{v:.4g}" for v in values.z[: comp.d].tolist()) + "]", 48)


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'s' * (count != 1)}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attributes(attrs: dict) -> str:
    return ", ".join(f'{k}="{_escape(v)}"' for k, v in attrs.items())


# --- the layout: layers by level, ordered by barycentres, long edges through dummy nodes -------------
FONT_PT = 9.0
CHAR_IN = 0.602 * FONT_PT / 72  # the advance of DejaVu Sans Mono, in inches
LINE_IN = 1.3 * FONT_PT / 72
PAD_X, PAD_Y = 0.12, 0.07
NODE_SEP, LAYER_SEP, CLUSTER_PAD = 0.3, 0.55, 0.34
DUMMY_WIDTH = 0.06
LOOP_WIDTH = 0.4  # a self-loop's reach beyond its node's right side


def _isotonic(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to `y` in weighted least squares (pool adjacent violators)."""
    means, weights, counts = [], [], []
    for value, weight in zip(y.tolist(), w.tolist()):
        means.append(value), weights.append(weight), counts.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            total = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / total
            weights[-2], counts[-2] = total, counts[-2] + counts[-1]
            means.pop(), weights.pop(), counts.pop()
    return np.repeat(means, counts)


class _Layout:
    """Positions, in inches (y downwards), of a `Graph`'s nodes, and the routes of its edges.

    Layers are the nodes' `layer`s. An edge spanning several layers runs through one dummy node per
    layer crossed, shared by all edges of one tail (a bus). Each layer is ordered by the barycentre
    of its neighbours' positions, sweeping down and up and keeping the order with fewest crossings,
    then neighbours are swapped where that removes crossings; a cluster's members stay together, as
    one unit. x: each node moved towards its neighbours' mean, the layer's order and separations
    kept (an isotonic regression per layer).
    """

    def __init__(self, g: Graph):
        nodes = g.nodes
        self.index = {node.id: k for k, node in enumerate(nodes)}
        N = len(nodes)
        layers = np.unique([node.layer for node in nodes], return_inverse=True)[1].reshape(-1) if N else np.zeros(0, np.int64)
        self.size = [(max(map(len, node.label)) * CHAR_IN + 2 * PAD_X, len(node.label) * LINE_IN + 2 * PAD_Y) for node in nodes]
        self.cluster = [node.cluster for node in nodes]
        self.layer = layers.tolist()
        tails = [self.index[e.tail] for e in g.edges]
        heads = [self.index[e.head] for e in g.edges]
        self.loop = {t for t, h in zip(tails, heads) if t == h}
        self.layer_sep = LAYER_SEP + (0.25 if any(e.label for e in g.edges) else 0.0)
        # buses: one dummy per tail and crossed layer, up to the tail's farthest head
        reach: dict = {}
        for t, h in zip(tails, heads):
            if self.layer[h] > self.layer[t] + 1:
                reach[t] = max(reach.get(t, 0), self.layer[h])
        self.dummy = {}
        budget = 20 * N + 200
        for t in sorted(reach, key=lambda t: reach[t] - self.layer[t]):
            span = range(self.layer[t] + 1, reach[t])
            if len(self.dummy) + len(span) > budget:
                break
            for layer in span:
                self.dummy[(t, layer)] = len(self.size)
                self.size.append((DUMMY_WIDTH, 0.0))
                self.layer.append(layer)
                self.cluster.append(-1)
        self.routes = []  # per edge: ("down", items), ("long", [t, h]), ("same", [t, h]) or ("self", [t])
        links: set = set()
        for t, h in zip(tails, heads):
            lt, lh = self.layer[t], self.layer[h]
            if t == h:
                self.routes.append(("self", [t]))
            elif lt == lh:
                self.routes.append(("same", [t, h]))
            elif lh == lt + 1 or (t, lt + 1) in self.dummy:
                items = [t] + [self.dummy[(t, layer)] for layer in range(lt + 1, lh)] + [h]
                links.update(zip(items[:-1], items[1:]))
                self.routes.append(("down", items))
            else:
                self.routes.append(("long", [t, h]))
        self.up = [[] for _ in self.size]
        self.down = [[] for _ in self.size]
        for a, b in links:
            self.down[a].append(b)
            self.up[b].append(a)
        self.order = [[] for _ in range(max(self.layer, default=-1) + 1)]
        source = list(range(N)) + [t for (t, _) in self.dummy]  # a dummy starts beside its tail
        for k in sorted(range(len(self.size)), key=lambda k: (source[k], k)):
            self.order[self.layer[k]].append(k)
        self._reduce_crossings()
        self._place()

    # ordering ------------------------------------------------------------------------------
    def _rank(self) -> np.ndarray:
        rank = np.zeros(len(self.size))
        for items in self.order:
            rank[items] = np.arange(len(items)) - (len(items) - 1) / 2
        return rank

    def _sort(self, layer: int, neighbours: list, rank: np.ndarray) -> None:
        items = self.order[layer]
        key = {k: (float(np.mean(rank[neighbours[k]])) if neighbours[k] else float(rank[k])) for k in items}
        units: dict = {}
        for k in items:
            units.setdefault(("c", self.cluster[k]) if self.cluster[k] >= 0 else ("n", k), []).append(k)
        ordered = sorted(units.values(), key=lambda unit: float(np.mean([key[k] for k in unit])))
        self.order[layer] = [k for unit in ordered for k in sorted(unit, key=key.__getitem__)]
        rank[self.order[layer]] = np.arange(len(items)) - (len(items) - 1) / 2

    def _pair_crossings(self, rank: np.ndarray, layer: int) -> int:
        """Crossings between layers `layer` and `layer + 1`; -1 if too many links to count."""
        if layer < 0 or layer + 1 >= len(self.order):
            return 0
        pairs = [(rank[a], rank[b]) for a in self.order[layer] for b in self.down[a]]
        if len(pairs) > 3000:
            return -1
        if len(pairs) < 2:
            return 0
        top, bottom = np.asarray(pairs).T
        return int(np.sum(np.triu((top[:, None] - top[None]) * (bottom[:, None] - bottom[None]) < 0, 1)))

    def _crossings(self) -> int:
        rank = self._rank()
        counts = [self._pair_crossings(rank, layer) for layer in range(len(self.order) - 1)]
        return -1 if any(c < 0 for c in counts) else sum(counts)

    def _units(self, items: list) -> list:
        """The layer's items in runs: a cyclic block's members are one unit, every other item one."""
        units = []
        for k in items:
            if units and self.cluster[k] >= 0 and self.cluster[units[-1][-1]] == self.cluster[k]:
                units[-1].append(k)
            else:
                units.append([k])
        return units

    def _reduce_crossings(self, sweeps: int = 8) -> None:
        best, best_order = self._crossings(), [list(items) for items in self.order]
        for sweep in range(sweeps):
            if best <= 0:
                break
            rank = self._rank()
            layers = range(1, len(self.order)) if sweep % 2 == 0 else range(len(self.order) - 2, -1, -1)
            for layer in layers:
                self._sort(layer, self.up if sweep % 2 == 0 else self.down, rank)
            crossings = self._crossings()
            if crossings < 0:
                return
            if crossings < best:
                best, best_order = crossings, [list(items) for items in self.order]
        self.order = best_order
        if best > 0 and len(self.size) <= 400:
            self._transpose()

    def _transpose(self, passes: int = 4) -> None:
        """Swap neighbouring units of a layer wherever that removes crossings (after the sweeps)."""
        for _ in range(passes):
            improved = False
            for layer, items in enumerate(self.order):
                units = self._units(items)
                for j in range(len(units) - 1):
                    rank = self._rank()
                    above, below = self._pair_crossings(rank, layer - 1), self._pair_crossings(rank, layer)
                    if above < 0 or below < 0:
                        return
                    units[j], units[j + 1] = units[j + 1], units[j]
                    self.order[layer] = [k for unit in units for k in unit]
                    rank = self._rank()
                    if self._pair_crossings(rank, layer - 1) + self._pair_crossings(rank, layer) < above + below:
                        improved = True
                    else:
                        units[j], units[j + 1] = units[j + 1], units[j]
                        self.order[layer] = [k for unit in units for k in unit]
            if not improved:
                return

    # coordinates ---------------------------------------------------------------------------------
    def _gaps(self, items: list) -> np.ndarray:
        gaps = []
        for a, b in zip(items[:-1], items[1:]):
            gap = (self.size[a][0] + self.size[b][0]) / 2 + (NODE_SEP if self.size[a][1] and self.size[b][1] else NODE_SEP / 2)
            gap += LOOP_WIDTH if a in self.loop else 0.0
            if self.cluster[a] != self.cluster[b]:
                gap += CLUSTER_PAD * ((self.cluster[a] >= 0) + (self.cluster[b] >= 0))
            gaps.append(gap)
        return np.asarray(gaps)

    def _place(self, passes: int = 24) -> None:
        x = np.zeros(len(self.size))
        for items in self.order:
            offsets = np.concatenate([[0.0], np.cumsum(self._gaps(items))])
            x[items] = offsets - offsets[-1] / 2
        dummy = np.asarray([s[1] == 0.0 for s in self.size])
        for sweep in range(passes):
            layers = range(len(self.order)) if sweep % 2 == 0 else range(len(self.order) - 1, -1, -1)
            for layer in layers:
                items = self.order[layer]
                desired, weight = np.empty(len(items)), np.empty(len(items))
                for j, k in enumerate(items):
                    neighbours = self.up[k] + self.down[k]
                    if neighbours:  # straight buses: links between dummies pull hardest
                        w = np.where(dummy[neighbours] & dummy[k], 8.0, np.where(dummy[neighbours] | dummy[k], 2.0, 1.0))
                        desired[j] = np.average(x[neighbours], weights=w)
                        weight[j] = 4.0 if dummy[k] else 1.0
                    else:
                        desired[j], weight[j] = x[k], 0.5
                offsets = np.concatenate([[0.0], np.cumsum(self._gaps(items))])
                x[items] = _isotonic(desired - offsets, weight) + offsets
        self.x = x - (min((x[k] - self.size[k][0] / 2 for k in range(len(x))), default=0.0))
        # y: each layer as tall as its tallest node, the gaps wider around clusters and labels
        self.top, self.bottom = [], []
        y = 0.0
        for items in self.order:
            clustered = any(self.cluster[k] >= 0 for k in items)
            y += CLUSTER_PAD if clustered else 0.0
            height = max((self.size[k][1] for k in items), default=0.0)
            self.top.append(y)
            self.bottom.append(y + height)
            y += height + self.layer_sep + (CLUSTER_PAD if clustered else 0.0)
        self.y = np.asarray([(self.top[self.layer[k]] + self.bottom[self.layer[k]]) / 2 for k in range(len(self.size))])
        self.height = y - self.layer_sep
        self.width = max((self.x[k] + self.size[k][0] / 2 + LOOP_WIDTH * (k in self.loop) for k in range(len(x))), default=0.0)


# --- drawing with matplotlib ---------------------------------------------------------------------------
def _bezier(p0, p1, p2, p3, t: float):
    s = 1 - t
    return tuple(s**3 * a + 3 * s * s * t * b + 3 * s * t * t * c + t**3 * e for a, b, c, e in zip(p0, p1, p2, p3))


def _route(lay: _Layout, kind: str, items: list, port: float):
    """An edge's path: vertices and codes (y downwards), its last Bézier segment, and the points of
    that segment (as fractions of it) where its label may go, best first."""
    if kind == "self":
        (k,) = items
        x, y, (w, h) = lay.x[k], lay.y[k], lay.size[k]
        a, b = (x + w / 2, y - h / 4), (x + w / 2, y + h / 4)
        c1, c2 = (x + w / 2 + LOOP_WIDTH, y - h / 2 - 0.1), (x + w / 2 + LOOP_WIDTH, y + h / 2 + 0.1)
        return [a, c1, c2, b], ["M", "C", "C", "C"], (a, c1, c2, b), (0.5,)
    if kind == "same":  # an arc above (left to right) or below (right to left)
        t, h = items
        side = -1 if lay.x[t] < lay.x[h] else 1
        yt = lay.y[t] + side * lay.size[t][1] / 2
        yh = lay.y[h] + side * lay.size[h][1] / 2
        lift = side * min(0.18 + 0.04 * abs(lay.x[h] - lay.x[t]), CLUSTER_PAD - 0.06)
        a, b = (lay.x[t], yt), (lay.x[h] + port, yh)
        c1, c2 = (a[0], yt + lift), (b[0], yh + lift)
        return [a, c1, c2, b], ["M", "C", "C", "C"], (a, c1, c2, b), (0.5, 0.3, 0.7)
    points = [(lay.x[items[0]], lay.y[items[0]] + lay.size[items[0]][1] / 2)]
    for k in items[1:-1]:  # a dummy: straight down through its layer
        points += [(lay.x[k], lay.top[lay.layer[k]]), (lay.x[k], lay.bottom[lay.layer[k]])]
    h = items[-1]
    points.append((lay.x[h] + port, lay.y[h] - lay.size[h][1] / 2))
    verts, codes = [points[0]], ["M"]
    for j in range(0, len(points) - 1, 2):  # between layers: vertical tangents at both ends
        a, b = points[j], points[j + 1]
        dy = (b[1] - a[1]) / 2
        verts += [(a[0], a[1] + dy), (b[0], b[1] - dy), b]
        codes += ["C", "C", "C"]
        if j + 2 < len(points):
            verts.append(points[j + 2])
            codes.append("L")
    return verts, codes, tuple(verts[-4:]), (0.45, 0.3, 0.6, 0.18, 0.75)


def _draw(g: Graph):
    """The graph drawn on a matplotlib Figure, one unit an inch (y upwards: the layout's y negated)."""
    mpl = _matplotlib()
    lay = _Layout(g)
    legend_width = max((len(text) for _, text in g.legend), default=0) * CHAR_IN * 8 / 9 + 0.6
    margin, title_height = 0.3, 0.45
    words = max(len(g.title) * 10 / 9, len(" ".join(g.notes)) * 7 / 9) * CHAR_IN
    width = max(lay.width + legend_width, words) + 2 * margin + 0.3
    height = max(lay.height, 0.24 * len(g.legend) + 0.3) + title_height + 2 * margin
    figure = mpl.Figure(figsize=(width, height))
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(-margin, width - margin)
    ax.set_ylim(-(height - margin - title_height), margin + title_height)
    ax.set_axis_off()
    ax.text(0, title_height / 2 + 0.05, g.title, fontsize=10, ha="left", va="center", **MONO)
    if g.notes:
        ax.text(0, 0.08, " ".join(g.notes), fontsize=7, ha="left", va="center", color="#666666", **MONO)
    _draw_clusters(ax, mpl, g, lay)
    _draw_edges(ax, mpl, g, lay)
    _draw_nodes(ax, mpl, g, lay)
    _draw_legend(ax, mpl, g, lay.width + 0.5)
    return figure


MONO = dict(family="monospace")


class _Matplotlib(NamedTuple):
    Figure: Any
    FancyArrowPatch: Any
    FancyBboxPatch: Any
    Rectangle: Any
    Path: Any


def _matplotlib() -> _Matplotlib:
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
        from matplotlib.path import Path
    except ImportError:
        raise ImportError(
            "Drawing a graph as SVG or PNG needs matplotlib: pip install matplotlib "
            "(or save it as .dot, Graphviz's text, which needs nothing)."
        ) from None
    return _Matplotlib(Figure, FancyArrowPatch, FancyBboxPatch, Rectangle, Path)


def _draw_clusters(ax, mpl: _Matplotlib, g: Graph, lay: _Layout) -> None:
    """Dashed rectangles around the cyclic blocks, each named in its corner."""
    for cluster in g.clusters:
        members = [lay.index[m] for m in cluster.members]
        x0 = min(lay.x[k] - lay.size[k][0] / 2 for k in members) - CLUSTER_PAD / 2
        x1 = max(lay.x[k] + lay.size[k][0] / 2 + LOOP_WIDTH * (k in lay.loop) for k in members) + CLUSTER_PAD / 2
        y0 = min(lay.y[k] - lay.size[k][1] / 2 for k in members) - CLUSTER_PAD
        y1 = max(lay.y[k] + lay.size[k][1] / 2 for k in members) + CLUSTER_PAD
        box = dict(facecolor="#f7f7f7", edgecolor="#777777", linestyle="--", lw=1.0, zorder=0)
        ax.add_patch(mpl.Rectangle((x0, -y1), x1 - x0, y1 - y0, **box))
        name = cluster.id.replace("cluster_", "block ")
        ax.text(x0 + 0.05, -y0 - 0.04, name, fontsize=7, ha="left", va="top", color="#555555", **MONO)


def _draw_edges(ax, mpl: _Matplotlib, g: Graph, lay: _Layout) -> None:
    """The edges as Bézier paths with arrowheads; labels where they overlap no node and no label."""
    ports = [0.0] * len(g.edges)  # incoming ends spread along the head's top, ordered by where they come from
    arriving: dict = {}
    for e, (kind, items) in enumerate(lay.routes):
        if kind in ("down", "long"):
            arriving.setdefault(items[-1], []).append((lay.x[items[-2]], e))
    for h, incoming in arriving.items():
        incoming.sort()
        step = min(0.14, (lay.size[h][0] - 2 * PAD_X) / max(len(incoming), 1))
        for r, (_, e) in enumerate(incoming):
            ports[e] = (r - (len(incoming) - 1) / 2) * step
    codes_of = {"M": mpl.Path.MOVETO, "L": mpl.Path.LINETO, "C": mpl.Path.CURVE4}
    taken = [(lay.x[k], lay.y[k], lay.size[k][0] / 2, lay.size[k][1] / 2) for k in range(len(g.nodes))]
    for edge, (kind, items), port in zip(g.edges, lay.routes, ports):
        verts, codes, segment, places = _route(lay, kind, items, port)
        path = mpl.Path([(vx, -vy) for vx, vy in verts], [codes_of[c] for c in codes])
        read = edge.head == "objective"  # a read of f, dashed: not an argument of a constraint
        style = dict(lw=0.7 if read else 0.8, linestyle="--" if read else "-", color="#999999" if read or kind == "long" else "#444444")
        ax.add_patch(mpl.FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=9, zorder=1, **style))
        if not edge.label:
            continue
        half = (len(edge.label) * CHAR_IN * 7 / 18 + 0.04, 0.08)
        spots = [_bezier(*segment, t) for t in places]
        clear = [p for p in spots if not any(abs(p[0] - x) < half[0] + w and abs(p[1] - y) < half[1] + h for x, y, w, h in taken)]
        lx, ly = (clear or spots)[0]
        taken.append((lx, ly) + half)
        box = dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.85)
        ax.text(lx, -ly, edge.label, fontsize=7, color="#222222", zorder=3, bbox=box, ha="center", va="center", **MONO)


def _draw_nodes(ax, mpl: _Matplotlib, g: Graph, lay: _Layout) -> None:
    """Boxes filled with their group's colour: inputs square with a bold border, the objective doubled."""
    for k, node in enumerate(g.nodes):
        (w, h), x, y = lay.size[k], lay.x[k], -lay.y[k]
        if node.role == "objective":
            outer = dict(boxstyle="round,pad=0,rounding_size=0.1", fc="white", ec="#333333", lw=1.0, zorder=2)
            ax.add_patch(mpl.FancyBboxPatch((x - w / 2 - 0.04, y - h / 2 - 0.04), w + 0.08, h + 0.08, **outer))
        style = "square,pad=0" if node.role == "input" else "round,pad=0,rounding_size=0.07"
        lw = 1.6 if node.role == "input" else 0.9
        ax.add_patch(mpl.FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=style, fc=_colour(node), ec="#333333", lw=lw, zorder=2))
        ax.text(x, y, "\n".join(node.label), fontsize=FONT_PT, linespacing=1.3, zorder=3, ha="center", va="center", **MONO)


def _draw_legend(ax, mpl: _Matplotlib, g: Graph, x0: float) -> None:
    ax.text(x0, 0.0, "legend", fontsize=8, ha="left", va="center", weight="bold", **MONO)
    entries = [(dict(fc=colour, ec="#333333"), text) for colour, text in g.legend]
    if g.clusters:
        entries.append((dict(fc="#f7f7f7", ec="#777777", linestyle="--"), "cyclic block"))
    for r, (style, text) in enumerate(entries):
        y = -0.3 - 0.24 * r
        ax.add_patch(mpl.Rectangle((x0, y - 0.08), 0.16, 0.16, lw=0.8, **style))
        ax.text(x0 + 0.25, y, text, fontsize=8, ha="left", va="center", **MONO)
