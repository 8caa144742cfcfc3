"""`Computation.graph`: the picture of a program, checked against the program itself.

Independent answers: the variables and arguments read off `comp.constraints`; values and multipliers
from `comp.multipliers` and the blog's hand derivative (`demo.blog_gradient`); local partials by hand
and by `jax.jacfwd` of the constraint's own function; group sizes counted from the constraints.
"""

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lagjax
from lagjax import demo
from lagjax.__main__ import main

PNG = b"\x89PNG\r\n\x1a\n"
X = [0.3]


def parse(dot: str):
    """`(nodes, edges)` of DOT text: `{id: {attribute: value}}` and `[(tail, head, {attribute: value})]`."""
    attribute = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
    unescape = lambda v: v.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")  # noqa: E731
    nodes, edges = {}, []
    for line in dot.splitlines():
        edge = re.match(r"\s*(\w+) -> (\w+)(?: \[(.*)\])?;$", line)
        node = re.match(r"\s*(\w+) \[(.*)\];$", line)
        if edge:
            edges.append((edge[1], edge[2], {k: unescape(v) for k, v in attribute.findall(edge[3] or "")}))
        elif node and node[1] not in ("graph", "node", "edge", "legend"):
            nodes[node[1]] = {k: unescape(v) for k, v in attribute.findall(node[2])}
    return nodes, edges


def by_name(comp, nodes):
    """The DOT id of each variable, found by its label: `str(constraint)`, or `name  (input)`."""
    first = {attrs["label"].split("\n")[0]: node for node, attrs in nodes.items()}
    ids = {name: first[f"{name}  (input)"] for name in comp.input_names}
    ids.update({c.name: first[str(c)] for c in comp.constraints})
    return ids


def numbers(text: str, symbol: str) -> list[str]:
    return re.findall(rf"^{symbol} = (\S+)$", text, re.M)


@pytest.fixture(scope="module")
def blog():
    return demo.blog_program()


@pytest.fixture(scope="module")
def blog_graph(blog):
    return blog.graph(X, partials=True)


def test_demo_program_every_variable_edge_value_and_multiplier(blog, blog_graph):
    assert isinstance(blog_graph, lagjax.Graph) and not blog_graph.summary
    nodes, edges = parse(blog_graph.dot)
    ids = by_name(blog, nodes)
    assert len(ids) == blog.n and set(ids.values()) | {"objective"} == set(nodes)
    names = {node: name for name, node in ids.items()}
    expected = {(a, c.name) for c in blog.constraints for a in c.arg_names}
    arguments = {(names[t], names[h]) for t, h, _ in edges if h != "objective"}
    assert arguments == expected
    assert [(names[t], h) for t, h, _ in edges if h == "objective"] == [("f", "objective")]  # f = z["f"]

    z, lam = (np.asarray(v) for v in blog.multipliers(np.asarray(X)))
    for i, name in enumerate(blog.names):
        attrs = nodes[ids[name]]
        # the tooltip as `lagjax demo` prints the table (`.15g`), the label to 6 digits
        assert numbers(attrs["tooltip"], "z") == [f"{z[i]:.15g}"]
        assert numbers(attrs["tooltip"], "λ") == [f"{lam[i]:.15g}"]
        assert float(numbers(attrs["label"], "z")[0]) == pytest.approx(z[i], rel=1e-5)
        assert float(numbers(attrs["label"], "λ")[0]) == pytest.approx(lam[i], rel=1e-5)
    gradient = float(numbers(nodes[ids["x"]]["tooltip"], "λ")[0])
    assert gradient == pytest.approx(demo.blog_gradient(X[0]), rel=1e-12)
    assert nodes[ids["x"]]["style"] == "filled,bold"  # the input's role
    assert float(re.search(r"f\(z\) = (\S+)", nodes["objective"]["tooltip"])[1]) == pytest.approx(z[-1], rel=1e-14)


def test_demo_partials_by_hand(blog, blog_graph):
    nodes, edges = parse(blog_graph.dot)
    names = {node: name for name, node in by_name(blog, nodes).items()}
    a = np.exp(X[0])
    c = a + a * a
    by_hand = {("x", "a"): a, ("a", "b"): 2 * a, ("a", "c"): 1, ("b", "c"): 1, ("c", "d"): np.exp(c),
               ("c", "e"): np.cos(c), ("d", "f"): 1, ("e", "f"): 1}  # fmt: skip
    for tail, head, attrs in edges:
        value = float(re.match(r"∂f? (\S+)", attrs["label"])[1])
        expected = 1.0 if head == "objective" else by_hand[(names[tail], names[head])]
        assert value == pytest.approx(expected, rel=1e-3)


def test_png_and_svg_without_graphviz(blog_graph, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)

    def no_process(*args, **kwargs):
        raise AssertionError("drawing must not start a process (Graphviz)")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    png = blog_graph.save(tmp_path / "g.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 10_000
    svg = blog_graph.save(tmp_path / "g.SVG")
    assert ET.parse(svg).getroot().tag.endswith("svg")
    assert (blog_graph.save(tmp_path / "g.dot")).read_text(encoding="utf-8") == blog_graph.dot
    assert ET.fromstring(blog_graph._repr_svg_()).tag.endswith("svg")  # in a notebook


def test_without_x(blog):
    g = blog.graph()
    nodes, edges = parse(g.dot)
    assert not any("z =" in attrs["label"] for attrs in nodes.values())
    assert not [e for e in edges if e[1] == "objective"] and g.notes  # f's reads: not known without x
    assert len(edges) == sum(len(c.args) for c in blog.constraints)


def cyclic_program():
    """a, b a 2-cycle, b reading itself too; c reads b before it is defined; o after (one block: one
    root finder to compile)."""
    C = lagjax.Constraints(["x", "y"])
    C.add_constraint("c", lambda v: v[0] * v[1], ["b", "x"])
    C.add_constraint("a", lambda v: 0.5 * v[0] + v[1], ["b", "x"])
    C.add_constraint("b", lambda v: 0.5 * jnp.sin(v[0]) + 0.25 * jnp.tanh(v[2]) + v[1], ["a", "y", "b"])
    C.add_constraint("o", lambda v: v[0] * v[1] + v[2], ["a", "b", "c"])
    return lagjax.Computation(lambda z: z[-1], C.inputs, C)


def test_cyclic_blocks_are_clusters(tmp_path):
    comp = cyclic_program()
    assert [b.names for b in comp.blocks] == [("a", "b")]
    x = np.array([0.3, -0.7])
    g = comp.graph(x, partials=True)
    nodes, edges = parse(g.dot)
    ids = by_name(comp, nodes)
    clusters = re.findall(r"subgraph (cluster_\d+) \{ (.*?); style=dashed; (.*); \}", g.dot)
    assert [sorted(m.split("; ")) for _, _, m in clusters] == [sorted(ids[v] for v in b.names) for b in comp.blocks]
    layer = {node.id: node.layer for node in g.nodes}
    assert layer[ids["a"]] == layer[ids["b"]]  # a block's members share one layer
    names = {node: name for name, node in ids.items()}
    arguments = {(names[t], names[h]): attrs for t, h, attrs in edges if h != "objective"}
    assert set(arguments) == {(a, c.name) for c in comp.constraints for a in c.arg_names}
    z, _ = comp.multipliers(x)
    a, b = np.asarray(z)[[comp.names.index("a"), comp.names.index("b")]]
    assert float(arguments[("b", "b")]["label"][2:]) == pytest.approx(0.25 / np.cosh(b) ** 2, rel=1e-3)  # the self-read
    assert float(arguments[("a", "b")]["label"][2:]) == pytest.approx(0.5 * np.cos(a), rel=1e-3)
    assert g.save(tmp_path / "cyclic.png").read_bytes().startswith(PNG)


def dict_program():
    """Array variables and scalars: h = tanh(W x) (3,), loss = s·Σh², out = loss²."""
    C = lagjax.Constraints({"W": (3, 2), "x": (2,), "s": ()})
    C.add("h", lambda W, x: jnp.tanh(W @ x), ["W", "x"])
    C.add("loss", lambda h, s: s * jnp.sum(h**2), ["h", "s"])
    C.add_constraint("out", lambda v: v[0] ** 2, ["loss"])
    comp = lagjax.Computation(lambda z: z["out"], C.inputs, C)
    rng = np.random.default_rng(0)
    return comp, {"W": rng.normal(size=(3, 2)), "x": rng.normal(size=2), "s": 0.7}


def test_dict_program_shows_arrays_short():
    comp, x = dict_program()
    g = comp.graph(x, partials=True)
    nodes, edges = parse(g.dot)
    ids = by_name(comp, nodes)
    z, lam = comp.multipliers(x)
    W = nodes[ids["W"]]["label"]
    assert "(3, 2)" in W and float(re.search(r"z = \(3, 2\) norm (\S+)", W)[1]) == pytest.approx(np.linalg.norm(x["W"]), rel=1e-3)
    h = [float(v) for v in re.search(r"z = \[(.*)\]", nodes[ids["h"]]["label"])[1].split(", ")]
    assert h == pytest.approx(np.asarray(z["h"]), rel=1e-3)
    assert float(numbers(nodes[ids["s"]]["tooltip"], "λ")[0]) == pytest.approx(float(lam["s"]), rel=1e-12)
    assert max(len(line) for attrs in nodes.values() for line in attrs["label"].split("\n")) <= 48  # short
    names = {node: name for name, node in ids.items()}
    labels = {(names[t], names[hd]): attrs.get("label", "") for t, hd, attrs in edges if hd != "objective"}
    assert set(labels) == {(a, c.name) for c in comp.constraints for a in c.arg_names}
    dh_dW = jax.jacfwd(lambda W: jnp.tanh(W @ x["x"]))(jnp.asarray(x["W"]))  # the partial of h's own function
    assert float(labels[("W", "h")].split()[-1]) == pytest.approx(float(jnp.linalg.norm(dh_dW)), rel=1e-3)
    assert labels[("W", "h")].startswith("‖∂‖")
    assert float(labels[("loss", "out")].split()[-1]) == pytest.approx(2 * float(z["loss"]), rel=1e-3)  # signed


def chain(n: int, every: int = 0):
    """`n` scalars `z_i = sin(z_{i-1}) + 0.5 y` (every `every`-th `cos(z_{i-1}) · y` instead)."""
    step = lambda v: jnp.sin(v[0]) + 0.5 * v[1]  # noqa: E731
    other = lambda v: jnp.cos(v[0]) * v[1]  # noqa: E731
    C = lagjax.Constraints(["x", "y"])
    for i in range(n):
        C.add_constraint(f"z{i}", other if every and i % every == every - 1 else step, [f"z{i - 1}" if i else "x", "y"])
    last = C.index(f"z{n - 1}")
    return lagjax.Computation(lambda z: z[last], C.inputs, C)


def test_summary_counts():
    comp = chain(300, every=10)
    g = comp.graph([0.3, 0.1], max_nodes=50)
    assert g.summary and len(g.nodes) <= 50 + 1
    variables = [node for node in g.nodes if node.role != "objective"]
    assert sum(node.count for node in variables) == comp.n
    # per function, the variables its nodes hold: counted from the constraints
    per_function = {}
    for c in comp.constraints:
        per_function[c.f] = per_function.get(c.f, 0) + 1
    groups = comp.schedule.groups
    held = {}
    for node in variables:
        if node.role == "intermediate":
            held[groups[node.group].first] = held.get(groups[node.group].first, 0) + node.count
            assert f"{node.count:,} variable" in "\n".join(node.label)
    assert held == per_function
    assert [node.count for node in variables if node.role == "input"] == [comp.d]
    arguments = [e for e in g.edges if e.head != "objective"]
    assert sum(e.count for e in arguments) == sum(len(c.args) for c in comp.constraints)
    (read,) = [e for e in g.edges if e.head == "objective"]  # f = z[-1]: one variable, in the last band
    tail = next(node for node in variables if node.id == read.tail)
    assert read.count == 1 and tail.layer == max(v.layer for v in variables)
    assert groups[tail.group].first is comp.constraints[-1].f
    nodes, _ = parse(g.dot)
    assert not any(node.startswith("v") for node in nodes)  # no per-variable node
    assert lagjax.Graph.render(g, "png").startswith(PNG)


def test_summary_of_a_hundred_thousand_constraints_is_fast():
    comp = chain(100_000)
    start = time.perf_counter()
    g = comp.graph()
    seconds = time.perf_counter() - start
    assert g.summary and sum(node.count for node in g.nodes if node.role != "objective") == comp.n
    assert seconds < 2.0, f"the summary took {seconds:.2f} s"


def test_bad_input(blog, blog_graph, tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.dot, \.svg or \.png \(got '\.jpg'\)"):
        blog_graph.save(tmp_path / "g.jpg")
    with pytest.raises(ValueError, match=r"`x` must have shape \(1,\)"):
        blog.graph([0.3, 0.4])
    with pytest.raises(ValueError, match="`partials=True` needs `x`"):
        blog.graph(partials=True)
    with pytest.raises(ValueError, match="`max_nodes` must be a positive int"):
        blog.graph(max_nodes=0)
    with pytest.raises(TypeError, match="must be a lagjax.Computation"):
        lagjax._graph.graph("not a program")
    with pytest.raises(ValueError, match="`format` must be 'svg' or 'png'"):
        blog_graph.render("jpg")
    comp, x = dict_program()
    with pytest.raises(ValueError, match=r"`x\['W'\]` must have the shape"):
        comp.graph({**x, "W": np.zeros((2, 3))})


def test_without_matplotlib(blog_graph, tmp_path, monkeypatch, capsys):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.patches", "matplotlib.path"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        blog_graph.save(tmp_path / "g.png")
    assert blog_graph.save(tmp_path / "g.dot").exists()  # DOT needs nothing
    demo.write_graph(demo.blog_program(), X, str(tmp_path / "d.png"))
    assert "graph not written" in capsys.readouterr().out


def test_cli_demo_writes_the_graph(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "report", lambda *args: True)  # the oracle tables: tests/test_demo.py
    assert main(["demo"]) == 0
    png = tmp_path / "lagjax_demo.png"
    assert png.read_bytes().startswith(PNG) and str(png) in capsys.readouterr().out
    png.unlink()
    assert main(["demo", "--graph", "pictures.svg"]) == 0
    assert ET.parse(tmp_path / "pictures.svg").getroot().tag.endswith("svg") and not png.exists()
    capsys.readouterr()
    for skip in (["--no-graph"], ["--graph", ""]):
        assert main(["demo", *skip]) == 0
        assert "graph of the blog program" not in capsys.readouterr().out and not png.exists()
    assert main(["demo", "--graph", "picture.jpg"]) == 2
    assert "must end in .dot, .svg or .png" in capsys.readouterr().err


USER_FILE = """
import jax.numpy as jnp
import lagjax

def build():
    C = lagjax.Constraints(["x", "y"])
    C.add_constraint("p", jnp.prod, ["x", "y"])
    C.add_constraint("q", jnp.sin, ["p"])
    return lagjax.Computation(lambda z: z[3], C.inputs, C)

comp = build()
number = 3

def needs_arguments(a):
    return build()
"""


def test_cli_graph(tmp_path, capsys):
    program = tmp_path / "program.py"
    program.write_text(USER_FILE)
    out = tmp_path / "out.png"
    assert main(["graph", f"{program}:build", "-o", str(out), "--x", "0.3,0.1"]) == 0
    assert out.read_bytes().startswith(PNG) and str(out) in capsys.readouterr().out
    assert main(["graph", f"{program}:comp", "-o", str(tmp_path / "out.dot"), "--x=-0.3,0.1", "--partials"]) == 0
    nodes, _ = parse((tmp_path / "out.dot").read_text(encoding="utf-8"))
    q = next(attrs for attrs in nodes.values() if attrs["label"].startswith("q = sin(p)"))
    assert float(numbers(q["tooltip"], "z")[0]) == pytest.approx(np.sin(-0.03), rel=1e-12)
    assert main(["graph", f"{program}:comp", "-o", str(tmp_path / "plain.dot")]) == 0
    assert "z =" not in (tmp_path / "plain.dot").read_text(encoding="utf-8")
    capsys.readouterr()
    for args, message in [
        ([f"{tmp_path / 'missing.py'}:comp"], "no file"),
        ([f"{program}:nothing"], "defines no 'nothing'; it defines ["),
        ([f"{program}:number"], "is a int, not a lagjax.Computation"),
        ([f"{program}:needs_arguments"], "takes arguments"),
        ([str(program)], "write FILE.py:NAME"),
        ([f"{program}:comp", "--x", "0.3"], "--x gives 1 number for the 2 inputs"),
        ([f"{program}:comp", "--x", "a,b"], "--x must be numbers"),
        ([f"{program}:comp", "-o", str(tmp_path / "out.gif")], "must end in .dot, .svg or .png"),
    ]:
        assert main(["graph", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lagjax graph: error:") and message in err, err
