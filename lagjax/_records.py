"""The constraints of a program, as records and as arrays (NumPy; no JAX).

`Constraints` keeps its constraints in *parts*, in order: runs of `Constraint` records (one per
`add_constraint` or `add` call) and `Bulk` chunks (one per `add_constraints` call: m constraints of
one function, their arguments an `(m, k)` integer table, their data stacked with a leading axis m).
`Records` is a snapshot of the parts, as `Constraints.resolved` returns it:

- a sequence of `Constraint` records, for code that reads constraints one at a time (oracles,
  pictures, the active part); a chunk's records are made when first read, once;
- `table(records)`: the same constraints as arrays (`Table`: arity, arguments, group), which the
  structure (`_components`) and the schedule (`_schedule`) read, never looping over constraints in
  Python; `group_data` their captured data stacked per group.

Both functions also take a plain sequence of records (what `_activity` builds), at a cost of a pass
over them in Python.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import operator
from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

import numpy as np

from lagjax import _grouping


class Constraint(NamedTuple):
    """One constraint `z[i] = f(z[args])`: its penalty is `f(z[args]) - z[i]`.

    Attributes:
      name: the variable it defines (the left-hand side).
      i: that variable's index.
      f: maps the 1-D vector `z[args]` (shape `(k,)`) to a scalar (shape `()` or `(1,)`).
      args: indices of the right-hand side, in order (repeats allowed), length k >= 1.
      arg_names: their names.
      df: optional, maps `z[args]` to the k partials `∂f/∂z[args]` (shape `(k,)`);
        `None` means the partials come from `jax.grad(f)`.
      group: the number of its group in `Constraints.groups`: constraints running the same code.
      data: what `f` and `df` capture, as arrays (see `lagjax._grouping`).
      positional: True for an array constraint (`Constraints.add`): `f` takes the k argument
        values positionally, `f(*z[args])`, and returns an array of the variable's shape.
    """

    name: Hashable
    i: int
    f: Callable
    args: tuple[int, ...]
    arg_names: tuple[Hashable, ...]
    df: Callable | None = None
    group: int = 0
    data: tuple = ()
    positional: bool = False

    def __str__(self) -> str:
        fname = getattr(self.f, "__name__", type(self.f).__name__)
        return f"{self.name} = {fname}({', '.join(map(str, self.arg_names))})"


class Row:
    """A bulk constraint's function with its row of data bound: `v -> f(v, *data)`, as a record's `f`."""

    __slots__ = ("f", "data", "__name__")

    def __init__(self, f: Callable, data: tuple):
        self.f, self.data = f, data
        self.__name__ = getattr(f, "__name__", type(f).__name__)

    def __call__(self, v):
        return self.f(v, *self.data)

    def __repr__(self) -> str:
        return f"Row({self.__name__}, data of shapes {[np.shape(a) for a in self.data]})"


@dataclasses.dataclass(eq=False)
class Bulk:
    """m constraints `z[d + start + r] = f(z[args[r]], *(column[r] for column in columns))`, r < m.

    Attributes:
      start: the position of its first constraint among the program's constraints.
      d: the program's number of inputs (its first variable is `d + start`).
      names: (m,) the variables it defines, a list.
      f: the user's function `f(v, *data_r)`, v of shape `(k,)`.
      args: (m, k) int64 argument indices; -1 where a name was read before its definition.
      group: its group in `Constraints.groups`.
      leaves: the data `f` itself captures (`_grouping.split`), the same for every row.
      columns: the explicit data, each an array with leading axis m (row r goes to constraint r).
      missing: `(positions, names)`: flat positions in `args` of names read before their definition.
    """

    start: int
    d: int
    names: list
    f: Callable
    args: np.ndarray
    group: int
    leaves: tuple = ()
    columns: tuple = ()
    missing: tuple = (np.zeros(0, np.int64), [])
    _records: list | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def k(self) -> int:
        return self.args.shape[1]

    def resolve(self, index: dict) -> None:
        """Fill in the arguments read before their definition, now defined (`index`: name -> variable)."""
        positions, names = self.missing
        if positions.size:
            self.args.reshape(-1)[positions] = [index[name] for name in names]
            self.missing = (np.zeros(0, np.int64), [])
        self._records = None

    def record(self, r: int, names: Sequence) -> Constraint:
        """The record of row r (`names`: the program's variable names, by index)."""
        args = tuple(self.args[r].tolist())
        data = tuple(column[r] for column in self.columns)
        f = Row(self.f, data) if data else self.f
        return Constraint(
            self.names[r], self.d + self.start + r, f, args, tuple(names[a] for a in args), None, self.group, self.leaves + data
        )

    def records(self, names: Sequence) -> list[Constraint]:
        """Every row's record, made once (a record's `f` keeps its identity between readings)."""
        if self._records is None:
            args = list(map(tuple, self.args.tolist()))
            arg_names = [tuple(map(names.__getitem__, a)) for a in args]
            first, f, group, leaves = self.d + self.start, self.f, self.group, self.leaves
            if not self.columns:
                self._records = [
                    Constraint(nm, first + r, f, a, an, None, group, leaves)
                    for r, (nm, a, an) in enumerate(zip(self.names, args, arg_names))
                ]
            else:
                rows = list(zip(*(list(column) for column in self.columns)))
                self._records = [
                    Constraint(nm, first + r, Row(f, data), a, an, None, group, leaves + data)
                    for r, (nm, a, an, data) in enumerate(zip(self.names, args, arg_names, rows))
                ]
        return self._records


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
    """Constraints as arrays: `arity` (m,), `args` (m, kmax) int32 argument indices padded with -1, `group` (m,)."""

    arity: np.ndarray
    args: np.ndarray
    group: np.ndarray

    @property
    def kmax(self) -> int:
        return self.args.shape[1]


class Records(Sequence):
    """A snapshot of a program's constraints (see the module docstring): `Constraint` records by position.

    `parts`: tuples of records and `Bulk` chunks, in order; `names`: the program's variable names.
    """

    def __init__(self, parts: Sequence, names: Sequence):
        self.parts = tuple(p for p in parts if len(p))
        self.starts = list(itertools.accumulate((len(p) for p in self.parts), initial=0))
        self.names = names

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, c):
        if isinstance(c, slice):
            return [self[j] for j in range(*c.indices(len(self)))]
        c = operator.index(c)
        c = c + len(self) if c < 0 else c
        if not 0 <= c < len(self):
            raise IndexError(f"constraint {c} out of range: the program has {len(self)} constraints.")
        p = bisect.bisect_right(self.starts, c) - 1
        part = self.parts[p]
        return part.records(self.names)[c - self.starts[p]] if isinstance(part, Bulk) else part[c - self.starts[p]]

    def __iter__(self):
        return itertools.chain.from_iterable(p.records(self.names) if isinstance(p, Bulk) else p for p in self.parts)

    @functools.cached_property
    def table(self) -> Table:
        return _concatenate([p.args if isinstance(p, Bulk) else _table_of_records(p) for p in self.parts], self.parts)


def table(constraints: Sequence) -> Table:
    """The constraints (`Records`, or any sequence of records with `args` and `group`) as a `Table`."""
    if isinstance(constraints, Records):
        return constraints.table
    return _concatenate([_table_of_records(constraints)], [constraints])


def _table_of_records(records: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(arity, args (m, kmax) padded with -1, group)` of records, one pass each in C where it can be."""
    m = len(records)
    args = list(map(operator.attrgetter("args"), records))
    arity = np.fromiter(map(len, args), np.int64, m)
    kmax = int(arity.max(initial=1))
    flat = np.fromiter(itertools.chain.from_iterable(args), np.int32, int(arity.sum()))
    table = np.full((m, kmax), -1, np.int32)
    table[np.arange(kmax) < arity[:, None]] = flat  # row-major: each row's arguments, in order
    group = np.fromiter(map(operator.attrgetter("group"), records), np.int64, m)
    return arity, table, group


def _concatenate(pieces: list, parts: Sequence) -> Table:
    """One `Table` of the parts' pieces: a chunk's argument table, or a run of records' `(arity, args, group)`."""
    if not pieces:
        return Table(np.zeros(0, np.int64), np.full((0, 1), -1, np.int32), np.zeros(0, np.int64))
    sizes = [len(part) for part in parts]
    kmax = max(piece.shape[1] if isinstance(part, Bulk) else piece[1].shape[1] for piece, part in zip(pieces, parts))
    arity, args, group = np.empty(sum(sizes), np.int64), np.full((sum(sizes), kmax), -1, np.int32), np.empty(sum(sizes), np.int64)
    start = 0
    for piece, part, m in zip(pieces, parts, sizes):
        if isinstance(part, Bulk):
            arity[start : start + m] = piece.shape[1]
            args[start : start + m, : piece.shape[1]] = piece
            group[start : start + m] = part.group
        else:
            arity[start : start + m], group[start : start + m] = piece[0], piece[2]
            args[start : start + m, : piece[1].shape[1]] = piece[1]
        start += m
    return Table(arity, args, group)


def group_data(constraints: Sequence, g: int, num_leaves: int, members: np.ndarray) -> tuple[tuple, tuple[bool, ...]]:
    """Group g's captured data, stacked over its `members` (constraint positions, in that order).

    Returns `(data, shared)`: per leaf, the array stacked with a leading axis `len(members)`, or, where
    every member captures one and the same value (`shared`), that value once. A group's members may
    come from runs of records and from chunks (`add_constraints` of a function without data joins
    the group of `add_constraint` of that function): each part's members are read at once.
    """
    if num_leaves == 0:
        return (), ()
    parts, starts = (constraints.parts, constraints.starts) if isinstance(constraints, Records) else ((constraints,), [0])
    part_of = np.searchsorted(np.asarray(starts[:-1] if isinstance(constraints, Records) else starts), members, side="right") - 1
    pieces = [(np.flatnonzero(part_of == p), parts[p], members[part_of == p] - starts[p]) for p in np.unique(part_of).tolist()]
    data, shared = [], []
    for j in range(num_leaves):
        values = [_part_leaf(part, rows, j) for _, part, rows in pieces]  # per piece: (one leaf, None) or (None, rows)
        if all(one is not None for one, _ in values) and all(_grouping.same(one, values[0][0]) for one, _ in values):
            data.append(_grouping.resolve(values[0][0]))
            shared.append(True)
            continue
        column = None
        for (where, _, rows), (one, stacked) in zip(pieces, values):
            block = (
                np.broadcast_to(np.asarray(_grouping.resolve(one)), (rows.size,) + np.shape(_grouping.resolve(one)))
                if stacked is None
                else stacked
            )
            if column is None:
                column = np.empty((members.size,) + block.shape[1:], block.dtype)
            column[where] = block
        if members.size == 1:  # a group of one keeps its value once
            data.append(column[0])
            shared.append(True)
        else:
            data.append(column)
            shared.append(False)
    return tuple(data), tuple(shared)


def _part_leaf(part, rows: np.ndarray, j: int) -> tuple:
    """Leaf j of the constraints `rows` of one part: `(leaf, None)` where they all capture that one
    value, else `(None, the values stacked)`."""
    if isinstance(part, Bulk):
        if j < len(part.leaves):  # what `f` itself captures: the same in every row
            return part.leaves[j], None
        return None, part.columns[j - len(part.leaves)][rows]
    leaves = [part[r].data[j] for r in rows.tolist()]
    if all(_grouping.same(leaf, leaves[0]) for leaf in leaves):
        return leaves[0], None
    return None, np.stack([_grouping.resolve(leaf) for leaf in leaves])
