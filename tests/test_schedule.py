"""The schedule's tables against the program they were built from."""

import jax.numpy as jnp
import numpy as np

from lagjax import testing
from lagjax import Constraints
from lagjax import _schedule
from programs import PROGRAMS


def _levels(comp):
    level = np.zeros(comp.n, int)
    for c in comp.constraints:
        level[c.i] = 1 + max(level[a] for a in c.args)
    return level


def test_tables_hold_each_constraint_once_in_a_valid_order(program):
    comp, _ = program
    s = comp.schedule
    n, level = comp.n, _levels(comp)
    outs = s.out[s.valid]
    assert sorted(outs.tolist()) == list(range(comp.d, n))
    for b in range(s.num_blocks):
        lanes = s.valid[b]
        assert lanes[0], "a block starts with a real lane"
        members = [comp.constraints[i - comp.d] for i in s.out[b][lanes]]
        group = s.groups[s.block_group[b]]
        assert all(c.group == s.block_group[b] and len(c.args) == group.k for c in members)
        assert len({level[c.i] for c in members}) == 1, "a block's lanes are independent (one level)"
        for lane, c in zip(np.flatnonzero(lanes), members):
            k = len(c.args)
            assert tuple(s.args[b, lane, :k]) == c.args and np.all(s.args[b, lane, k:] == n)
        assert np.all(s.out[b][~lanes] == n)  # padding lanes define no variable
        assert np.all(s.args[b][~lanes] == s.args[b, 0])  # and read lane 0's arguments
    block_levels = [level[s.out[b, 0]] for b in range(s.num_blocks)]
    assert block_levels == sorted(block_levels)
    assert s.depth == level.max()


def test_width_follows_the_shape():
    wide, _ = PROGRAMS["wide"](width=256)
    deep, _ = PROGRAMS["deep"]()
    assert deep.schedule.width == 1
    assert wide.schedule.width >= 64
    assert wide.schedule.num_blocks <= 8  # 3 runs (2 groups at level 1, 1 at level 2)


def test_first_use_marks_repeated_arguments_once():
    C = Constraints(["x", "y"])
    C.add_constraint("a", jnp.sum, ["x", "y", "x", "x"])
    s = _schedule.build(C.d, list(C), C.groups, C.levels())
    assert s.first_use[0, 0].tolist() == [True, True, False, False]


def test_choose_width():
    assert _schedule._choose_width(np.ones(1000, int), n=1000, kmax=4) == 1  # a chain
    assert _schedule._choose_width(np.array([100_000]), n=100_000, kmax=4) >= 1024  # one wide level


def test_slots_hold_each_block_contiguously():
    comp, _ = testing.random_program(40, d=3, profile="mixed", seed=1)
    s = comp.schedule
    lanes = s.start[:, None] + np.arange(s.width)
    assert np.array_equal(s.slot_of[s.out[s.valid]], lanes[s.valid])  # variable -> its lane's slot
    assert np.array_equal(s.slot_of[: s.d], np.arange(s.d))
    real = s.args != s.n
    assert np.array_equal(s.slots[real], s.slot_of[s.args[real]])
