"""The schedule's tables against the program they were built from, and the layers' import order."""

import ast
import pathlib

import jax.numpy as jnp
import numpy as np
from programs import PROGRAMS

from lagjax import Computation, Constraints, _schedule, testing


def _levels(comp):
    """Levels by a plain recursion over the constraints (programs without cycles)."""
    level = np.zeros(comp.n, int)
    for c in testing.evaluation_order(comp):
        level[c.i] = 1 + max(level[a] for a in c.args)
    return level


def _check_tables(comp):
    s = comp.schedule
    n = comp.n
    valid = s.out < n
    assert sorted(s.out[valid].tolist()) == list(range(comp.d, n)), "each constraint in one lane"
    for step in range(s.num_steps):
        lanes = valid[step]
        assert lanes[0], "a step starts with a real lane"
        g = s.step_group[step]
        c_out = s.group_class[g]
        members = [comp.constraints[i - comp.d] for i in s.out[step][lanes]]
        assert all(c.group == g for c in members), "a step runs one group"
        assert lanes.sum() <= s.widths[c_out]
        # each lane's variable sits in its step's rows, contiguous, in its class
        rows = s.start[step, c_out] + np.flatnonzero(lanes)
        assert np.array_equal(s.var_row[s.out[step][lanes]], rows)
        assert np.all(s.var_class[s.out[step][lanes]] == c_out)
        for lane, c in zip(np.flatnonzero(lanes), members):
            for p, a in enumerate(c.args):
                assert s.arg_rows[step, lane, p] == s.var_row[a] and s.var_class[a] == s.arg_class[g][p]
    for c in range(s.num_classes):  # rows are unique within a class
        rows = s.var_row[s.var_class == c]
        assert len(set(rows.tolist())) == rows.size and rows.max(initial=-1) < s.rows[c] - s.widths[c]


def test_tables_hold_each_constraint_once_in_a_valid_order(program):
    comp, _ = program
    _check_tables(comp)
    level, s = _levels(comp), comp.schedule
    step_levels = [level[s.out[step, 0]] for step in range(s.num_steps)]
    assert step_levels == sorted(step_levels), "steps in level order: arguments come first"
    for step in range(s.num_steps):
        lanes = s.out[step][s.out[step] < comp.n]
        assert len({level[v] for v in lanes}) == 1, "a step's lanes are independent (one level)"
    assert s.depth == level.max()
    assert s.segments == ((0, s.num_steps, -1, 0),), "no cycle: one segment"


def test_cyclic_blocks_end_their_segments_and_their_lanes_are_masked():
    C = Constraints(["x"])
    C.add_constraint("a", lambda v: 0.5 * jnp.tanh(v[0]) + v[1], ["b", "x"])  # a, b: a cycle
    C.add_constraint("b", lambda v: 0.5 * jnp.sin(v[0]), ["a"])
    C.add_constraint("c", jnp.sum, ["a", "x"])
    C.add_constraint("u", lambda v: 0.5 * jnp.tanh(v[0]) + v[1], ["u", "c"])  # a self-loop after it
    comp = Computation(lambda z: z[-1], C.inputs, C)
    s = comp.schedule
    _check_tables(comp)
    assert [b.names for b in comp.blocks] == [("a", "b"), ("u",)]
    (begin0, end0, g0, t0), (begin1, end1, g1, t1) = s.segments[:2]
    assert [b.group for b in comp.blocks] == [0, 1], "two structures: two block groups"
    assert (g0, t0, g1, t1) == (0, 0, 1, 0) and begin1 == end0
    step_of = {int(v): step for step in range(s.num_steps) for v in s.out[step] if v < comp.n}
    index = {name: i for i, name in enumerate(comp.names)}
    assert step_of[index["a"]] < end0 and step_of[index["b"]] < end0 <= step_of[index["c"]] < end1
    for step in range(s.num_steps):
        assert s.step_member[step] == (s.out[step, 0] in (index["a"], index["b"], index["u"]))
    # a block's lanes push only outside the block: a's read of b and u's of itself are masked
    lane = lambda name: (step_of[index[name]], 0)  # noqa: E731
    assert s.real[lane("a")][:2].tolist() == [False, True]  # b inside, x outside
    assert s.real[lane("u")][:2].tolist() == [False, True]  # u inside, c outside


def test_width_follows_the_shape():
    wide, _ = PROGRAMS["wide"](width=256)
    deep, _ = PROGRAMS["deep"]()
    assert deep.schedule.width == 1
    assert wide.schedule.width >= 64
    assert wide.schedule.num_steps <= 8  # 3 runs (2 groups at level 1, 1 at level 2)


def test_identical_layers_are_one_group_whatever_their_order():
    layer = lambda W, h: jnp.tanh(W @ h)  # noqa: E731
    shapes = {"h": (3, 2), **{f"W{i}": (3, 3) for i in range(12)}}
    for order in (range(12), reversed(range(12))):
        C = Constraints(shapes)
        for i in order:
            C.add(f"h{i + 1}", layer, [f"W{i}", f"h{i}" if i else "h"], shape=(3, 2))
        comp = Computation(lambda z: jnp.sum(z["h12"]), C.inputs, C)
        assert len(comp.schedule.groups) == 1 and comp.schedule.num_steps == 12
        _check_tables(comp)


def test_choose_width():
    assert _schedule._choose_width(np.ones(1000, int), n=1000, kmax=4) == 1  # a chain
    assert _schedule._choose_width(np.array([100_000]), n=100_000, kmax=4) >= 1024  # one wide level


# The layers of DESIGN.md, lowest first: a module may import only modules of its own layer or below.
LAYERS = [
    {"_components", "_grouping", "_signature", "_layout", "_records", "_bulk", "_block_groups"},  # builder helpers, structure, storage
    {"_program"},  # the builder
    {"_schedule"},  # the schedule
    {"_cyclic", "_local"},  # solvers of one block; local quantities
    {"_fixed_point", "_parameters"},  # one fixed point as a JAX function; captured arrays as arguments
    {"_blocks"},
    {"_linear"},
    {"_sweeps"},
    {"_activity", "_graph"},  # the active part of a program, swept alone; its picture
    {"_function", "_computation"},  # the public class and the JAX function around it
    {"_trace"},  # a JAX function's jaxpr as a program
    {"testing", "demo", "__main__", "__init__"},
]


def test_no_module_imports_a_module_above_it():
    root = pathlib.Path(__file__).resolve().parents[1] / "lagjax"
    layer_of = {name: k for k, names in enumerate(LAYERS) for name in names}
    assert {p.stem for p in root.glob("*.py")} == set(layer_of), "every module has a layer"
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # imports for annotations only are no dependency
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                node.body = []
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "lagjax":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lagjax."):
                imported.add(node.module.split(".")[1])
        for name in imported & set(layer_of):
            assert layer_of[name] <= layer_of[path.stem], f"{path.stem} imports {name}, a layer above it"
