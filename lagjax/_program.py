"""The builder: a program as a list of equality constraints over named variables.

Variables are numbered in the order they are named: the d inputs first (indices 0..d-1), then one
variable per constraint, in the order the constraints are added. A constraint may read variables
defined before it, after it (a forward reference), or itself. Forward references are resolved when
the program is finalised (`resolved`, called by `Computation`): a name still undefined then is an
error. The program is then ordered by its dependencies (`condensation`: levels of the acyclic part,
and the strongly connected components with a cycle, `_components.py`), whatever the order it was
written in; a cycle (a fixed point, a value function, an equilibrium) is solved as one block.

Two kinds of variable, which mix in one program:
- scalars, as in the original code: `Constraints(["x", "y"])`, `add_constraint(lhs, f, rhs)` with
  `f` a function of the vector of its k scalar arguments; `add_constraints(lhs, f, rhs, data=...)`
  adds m of them at once, one function, the arguments an `(m, k)` table of indices, per-constraint
  data stacked (`_bulk`): one group, checked as arrays (a million constraints in under a second);
- arrays: inputs declared with shapes, `Constraints({"W": (64, 32), "x": (32,)})`, and
  `add(lhs, f, rhs)` with `f` a function of its arguments taken positionally,
  `lambda W, x: jnp.tanh(W @ x)`; the shape of `lhs` is inferred by `jax.eval_shape`.
A program declared with a dict of inputs, or with any `add`, is *structured*: its `Computation`
takes and returns dicts keyed by variable name.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from lagjax import _bulk, _components, _grouping, _records, _signature
from lagjax._records import Constraint

__all__ = ["Constraint", "Constraints"]


class Constraints:
    """A program: named inputs, then constraints `lhs = f(rhs)` added one at a time.

    `Constraints(["x", "y"])` declares scalar inputs; their indices, `C.inputs`, are `[0, 1]`.
    `Constraints({"W": (64, 32), "x": (32,), "s": ()})` declares inputs with shapes (a shape
    tuple, or an example float array whose shape is taken): a structured program.
    `len(C)` is the number of constraints; iterating gives the `Constraint` records in order.
    """

    def __init__(self, inputs: Sequence[Hashable] | Mapping[str, Any]):
        structured = isinstance(inputs, Mapping)
        if not structured and (isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence)):
            raise TypeError(
                f"`inputs` must be a list of names, or a dict of shapes by name; got {inputs!r}. "
                f"Write e.g. Constraints(['x', 'y']) or Constraints({{'W': (3, 2), 'x': (2,)}})."
            )
        self._index: dict[Hashable, int] = {}
        self._names: list[Hashable] = []
        self._shapes: list[tuple[int, ...]] = []  # one per variable
        self._tail: list[Constraint] = []  # the records added since the last bulk chunk
        self._parts: list = [self._tail]  # runs of records and `_records.Bulk` chunks, in order
        self._part_starts: list[int] = [0]  # the position of each part's first constraint
        self.structured: bool = structured  # dicts in and out; set by a dict of inputs or by `add`
        for name in inputs:
            if structured:
                _check_string(name, "input")
            _check_name(name, "input")
            if name in self._index:
                raise ValueError(f"Input {name!r} is listed twice in `inputs`; each input is named once.")
            self._define(name)
            self._shapes.append(_input_shape(name, inputs[name]) if structured else ())
        self.inputs: list[int] = list(range(len(self._names)))
        self._level: list[int] = [0] * len(self._names)  # 0 for inputs, 1 + max over the arguments
        self._groups: list[_grouping.Group] = []
        self._group_of: dict[Hashable, int] = {}  # (template keys, arity) -> group
        self._splits: dict[tuple, tuple] = {}  # (id(function), arity) -> (function, its split)
        self._lifted: set[tuple] = set()  # (template key, arity): code that runs on traced data
        self._unliftable: set[tuple] = set()  # (template key, arity): code that needs Python values
        self._seen: dict[tuple, tuple[int, tuple]] = {}  # (id(f), id(df), k) -> (group, data); records keep f, df alive
        self._pending: dict[Hashable, list[int]] = {}  # a name read before its definition -> the constraints reading it
        self._deferred: list[int] = []  # array constraints whose shape waits for their arguments' (forward references)
        self._forward_chunks: list[_records.Bulk] = []  # chunks reading variables defined after them (or their own)
        self._bulk_checked: dict[tuple, Callable] = {}  # (id(f), k, data signature) -> f, checked by `add_constraints`
        self._level_cache = np.zeros(0, np.int64)  # `_level` as an array (a buffer), as far as `_level_array` brought it
        self._levels_copied = 0  # how far
        self._resolved: tuple | None = None  # `resolved()`'s result, while no constraint is added
        self._resolved_levels: tuple | None = None  # (that result, its levels)
        self.init: dict[Hashable, Any] = {}  # initial guesses of variables on cycles, by name

    # --- names <-> indices -------------------------------------------------------------
    @property
    def names(self) -> list[Hashable]:
        """All variable names, in index order (inputs first)."""
        return list(self._names)

    @property
    def d(self) -> int:
        """The number of inputs."""
        return len(self.inputs)

    @property
    def n(self) -> int:
        """The number of variables: inputs plus one per constraint."""
        return len(self._names)

    @property
    def shapes(self) -> dict[Hashable, tuple[int, ...]]:
        """The shape of every variable, by name (`()` for a scalar)."""
        if not self.structured:  # scalars only; `_index` holds the names in index order, and their hashes
            return dict.fromkeys(self._index, ())
        return dict(zip(self._names, self._shapes))

    @property
    def variable_shapes(self) -> list[tuple[int, ...]]:
        """The shape of every variable, in index order (a list; `shapes` is the same by name, a dict
        that costs a hash of every name)."""
        return list(self._shapes)

    def index(self, name: Hashable) -> int:
        """The index of variable `name`."""
        try:
            return self._index[name]
        except (KeyError, TypeError):
            raise KeyError(f"No variable named {name!r}; the program has {self._names!r}.") from None

    @property
    def groups(self) -> tuple[_grouping.Group, ...]:
        """The groups: constraints running the same code (see `lagjax._grouping`)."""
        return tuple(self._groups)

    def levels(self) -> np.ndarray:
        """The level of each variable, shape `(n,)`: 0 for inputs, `1 + max(level of arguments)`.

        For a program with forward references, levels are computed from the resolved arguments
        (`resolved` first); a variable on a cycle has no level, and gets -1.
        """
        if not self._forward():
            return np.asarray(self._level, np.int64)
        resolved = self.resolved()
        if self._resolved_levels is None or self._resolved_levels[0] is not resolved:
            self._resolved_levels = (resolved, _components.levels(self.d, resolved))
        return self._resolved_levels[1]

    def __len__(self) -> int:
        return len(self._names) - len(self.inputs)

    def __iter__(self):
        return itertools.chain.from_iterable(p.records(self._names) if isinstance(p, _records.Bulk) else p for p in self._parts)

    def __getitem__(self, c: int) -> Constraint:
        if len(self._parts) == 1:
            return self._tail[c]
        if isinstance(c, slice):
            return [self[j] for j in range(*c.indices(len(self)))]
        c = operator.index(c)
        if not -len(self) <= c < len(self):
            raise IndexError(f"constraint {c} out of range: the program has {len(self)} constraints.")
        part, r = self._locate(c % len(self))
        return part.records(self._names)[r] if isinstance(part, _records.Bulk) else part[r]

    def _locate(self, c: int) -> tuple[Any, int]:
        """The part holding constraint c (a list of records or a chunk), and c's position in it."""
        p = bisect.bisect_right(self._part_starts, c) - 1
        return self._parts[p], c - self._part_starts[p]

    def _set(self, c: int, record: Constraint) -> None:
        """Replace the record of constraint c (one added by `add_constraint` or `add`)."""
        part, r = self._locate(c)
        part[r] = record

    def _records(self) -> _records.Records:
        """The constraints as they stand, a snapshot (`_records.Records`)."""
        return _records.Records([tuple(p) if isinstance(p, list) else p for p in self._parts], self._names)

    def _forward(self) -> bool:
        """Whether some constraint reads a variable defined after it (or itself): the levels kept
        while building are then not the program's (`resolved`, `condensation`)."""
        return bool(self._pending) or bool(self._forward_chunks)

    def __repr__(self) -> str:
        lines = [f"Constraints(inputs={[self._names[i] for i in self.inputs]!r})"]
        lines += [f"  {c}" for c in self]
        return "\n".join(lines)

    def _define(self, name: Hashable) -> int:
        self._index[name] = len(self._names)
        self._names.append(name)
        return self._index[name]

    # --- adding constraints ------------------------------------------------------------
    def add_constraint(
        self,
        lhs: Hashable,
        f: Callable,
        rhs: Sequence[Hashable],
        df: Callable | None = None,
        *,
        init: Any = None,
    ) -> Constraint:
        """Define the new variable `lhs = f(values of rhs)`.

        Args:
          lhs: name of the variable this constraint defines; new, not an input.
          f: a JAX-traceable function of the 1-D vector of argument values (shape `(k,)`,
            `k = len(rhs)`), returning a scalar (shape `()` or `(1,)`). `jnp.sum`, `jnp.exp`,
            `jnp.tanh` work as they are.
          rhs: names of the arguments (inputs or `lhs` of constraints); a name may repeat. A name
            defined later, or `lhs` itself, makes the program cyclic (see the module docstring).
          df: optional gradient of `f`: `(k,) -> (k,)`. Omitted, `jax.grad(f)` is used.
          init: optional initial guess of `lhs` for the root finder, if `lhs` lies on a cycle
            (default 0).

        Returns:
          The `Constraint` record.

        Raises:
          ValueError: naming `lhs`, when the constraint is malformed: `lhs` already defined or an
            input, an empty `rhs`, or `f` / `df` returning the wrong shape.
          TypeError: naming `lhs`, for an unhashable name in `rhs` or an `f` / `df` that is not
            callable.
        """
        index = self._index
        try:
            fresh = lhs not in index
        except TypeError:
            raise TypeError(f"A variable name must be hashable (a string, say); the left-hand side is {lhs!r}.") from None
        if not fresh:
            self._redefined(lhs)
        if type(rhs) not in (list, tuple):
            _check_rhs(lhs, rhs)
        k = len(rhs)
        if k == 0:
            raise ValueError(
                f"The right-hand side of {lhs!r} is empty; a constraint reads at least one variable. "
                f"For a constant, fold it into the functions that use it."
            )
        level = self._level
        try:
            args = tuple(map(index.__getitem__, rhs))
            depth = 1 + max(map(level.__getitem__, args))
        except (KeyError, TypeError):
            args, depth = self._forward_references(lhs, rhs), 0  # levels only matter without cycles
        if self.structured:
            self._check_scalar_arguments(lhs, rhs, args)
        if init is not None:
            self.init[lhs] = init
        seen = self._seen.get((id(f), id(df), k))  # the same functions again: group and data known
        group, data = self._group(f, df, k, lhs) if seen is None else seen
        level.append(depth)
        i = index[lhs] = len(self._names)
        self._names.append(lhs)
        self._shapes.append(())
        constraint = Constraint(lhs, i, f, args, tuple(rhs), df, group, data)
        self._tail.append(constraint)
        return constraint

    def add_constraints(self, lhs: Sequence[Hashable], f: Callable, rhs: Any, *, data: Any = None) -> np.ndarray:
        """Define m new scalar variables at once, `lhs[r] = f(values of rhs[r], *data[r])` for r < m.

        The bulk form of `add_constraint`, for programs made by code: one call for m constraints of
        one function, its arguments a table. The m constraints form one group (the same code, their
        data stacked): `f` is checked once, on row 0's shapes, and everything else as arrays, so a
        million constraints take a fraction of a second.

        Args:
          lhs: the m names of the new variables (a list, a tuple or any sequence of hashables);
            none defined before (nor an input), none repeated.
          f: a JAX-traceable function `f(v, *data_r)` of the 1-D vector of a constraint's k argument
            values (shape `(k,)`) followed by its row of each data array (shapes `data[j].shape[1:]`),
            returning a scalar (shape `()` or `(1,)`). Without data, `f(v)`: as `add_constraint`'s `f`.
          rhs: the arguments, either as a table of variable indices, an integer array (NumPy or JAX)
            of shape `(m, k)`, `rhs[r, p]` the index of argument p of constraint r (inputs first, then
            one variable per constraint in the order added: `C.index(name)`, or what earlier calls
            returned); or as m sequences of k names. The table is the fast form. An index of this
            call's own variables (from `n` up) or of variables added later, or a name defined later,
            is a forward reference (a cycle where it leads back): checked when the program is
            resolved (`Computation(...)`), where an index past the program's variables is an error.
          data: per-constraint data: None, one array, or a tuple/list of arrays, each with a leading
            axis of m (row r goes to constraint r), of real numbers. Float data take the dtype of the
            arguments, as Python numbers captured by `f` do; integers stay integers.

        Returns:
          The indices of the new variables, shape `(m,)` int64: `n, n + 1, ..., n + m - 1`, for the
          tables of later calls.

        Raises:
          ValueError: naming the offending rows ("rows 3, 17 (and 5 more) of `lhs` ..."): lengths of
            `lhs`, `rhs` and `data` that differ, a name of `lhs` repeated, already defined or an input,
            rows of names of different lengths, negative indices, `f` returning a non-scalar on row
            0, array arguments (in a structured program, a scalar constraint reads scalars).
          TypeError: an `f` that is not callable or fails to trace on row 0's shapes (the original
            error shown beneath), unhashable names, an `rhs` table of non-integers, data that are not
            real numbers, non-string names in a structured program.
        """
        if not callable(f):
            raise TypeError(f"`f` of add_constraints must be callable, got {f!r}.")
        names = _bulk.lhs_names(lhs)
        m = len(names)
        columns = _bulk.data_columns(data, m)
        table = _bulk.index_table(rhs, m) if _bulk.is_index_table(rhs) else None
        flat, k = _bulk.name_rows(rhs, m) if table is None else (None, table.shape[1])
        if m == 0:
            return np.zeros(0, np.int64)
        if self.structured:
            _bulk.check_strings(names)
        checked = (id(f), k, _bulk.signature(columns))
        if self._bulk_checked.get(checked) is not f:  # each function once per arity and data shapes
            _bulk.check_function(f, k, columns, names[0])
            self._bulk_checked[checked] = f
        n, index = len(self._names), self._index
        try:
            index.update(zip(names, range(n, n + m)))
            clash = len(index) != n + m
        except TypeError:
            clash = True
        if clash:  # as it was, then say which rows
            self._index = dict(zip(self._names, range(n)))
            raise _bulk.lhs_error(names, self._index, self.d, lambda i: str(self[i - self.d]))
        try:  # the names are the program's now: taken back if anything fails
            args, missing = (table, (np.zeros(0, np.int64), [])) if table is not None else self._name_table(flat, k, n)
            if self.structured:
                self._check_scalar_table(args, names)
            group, leaves = self._bulk_group(f, k, columns, names[0])
        except Exception:
            for name in names:
                del index[name]
            raise
        start = len(self)
        chunk = _records.Bulk(start, self.d, names, f, args, group, leaves, columns, missing)
        for p, name in zip(missing[0].tolist(), missing[1]):
            self._pending.setdefault(name, []).append(start + p // k)
        forward = bool(missing[0].size) or int(args.max()) >= n
        if forward:
            self._forward_chunks.append(chunk)
        elif not self._forward():  # the levels kept while building: 1 + max over the arguments
            level = 1 + self._level_array()[args].max(axis=1)
            self._append_levels(level)
            self._level.extend(level.tolist())
        if len(self._level) < n + m:  # not read while forward references stand
            self._level.extend([0] * (n + m - len(self._level)))
        self._names.extend(names)
        self._shapes.extend([()] * m)
        self._parts.append(chunk)
        self._part_starts.append(start)
        self._tail = []
        self._parts.append(self._tail)
        self._part_starts.append(start + m)
        return np.arange(n, n + m, dtype=np.int64)

    def _level_array(self) -> np.ndarray:
        """`_level` as an array (`(n,)`), kept beside the list and brought up to date by its new part."""
        if self._levels_copied < len(self._level):
            self._append_levels(np.asarray(self._level[self._levels_copied :], np.int64))
        return self._level_cache[: self._levels_copied]

    def _append_levels(self, level: np.ndarray) -> None:
        """Append to `_level_array`'s buffer (doubled when full: appending m costs O(m))."""
        end = self._levels_copied + level.size
        if end > self._level_cache.size:
            grown = np.zeros(max(2 * self._level_cache.size, end), np.int64)
            grown[: self._levels_copied] = self._level_cache[: self._levels_copied]
            self._level_cache = grown
        self._level_cache[self._levels_copied : end] = level
        self._levels_copied = end

    def _name_table(self, flat: list, k: int, n: int) -> tuple[np.ndarray, tuple]:
        """Rows of names (flattened) as an `(m, k)` table of indices, and `(positions, names)` of
        those not defined yet (-1 in the table: forward references)."""
        try:
            found = np.fromiter(map(self._index.get, flat, itertools.repeat(-1)), np.int64, len(flat))
        except TypeError:
            raise TypeError(_bulk.unhashable_rows(flat, k)) from None
        positions = np.flatnonzero(found < 0)
        return found.reshape(-1, k), (positions, [flat[p] for p in positions.tolist()])

    def _check_scalar_table(self, args: np.ndarray, names: list) -> None:
        """In a structured program, a scalar constraint reads scalar variables only."""
        shapes = self._shapes
        read = np.unique(args[(args >= 0) & (args < len(shapes))])
        arrays = [a for a in read.tolist() if shapes[a] not in ((), None)]
        if arrays:
            bad = np.flatnonzero(np.any(np.isin(args, arrays), axis=1))
            name = self._names[arrays[0]]
            raise ValueError(
                f"{_bulk.rows(bad).capitalize()} of `rhs` read array variables ({name!r} has shape {shapes[arrays[0]]}), but "
                f"`add_constraints` defines scalar variables from scalar variables (row {bad[0]}: {names[bad[0]]!r}). For "
                f"array arguments use `add(lhs, f, rhs)`, whose `f` takes the arguments positionally."
            )

    def _bulk_group(self, f: Callable, k: int, columns: tuple, lhs: Hashable) -> tuple[int, tuple]:
        """The group of `add_constraints`' `f` at arity `k` with data `columns`, and what `f` itself
        captures; without data, the group `add_constraint` gives `f` (they share it)."""
        if not columns:
            return self._group(f, None, k, lhs)
        signature = _bulk.signature(columns)
        f_split = self._split(f, ("data", k, signature), lambda split: _bulk.liftable(split, k, columns))
        key = ("data", f_split.key, k, signature)
        group = self._group_of.get(key)
        if group is None:
            group = self._group_of[key] = len(self._groups)
            self._groups.append(_grouping.Group(_bulk.with_data(f_split, columns), None, k, f))
        return group, f_split.leaves

    def add(self, lhs: str, f: Callable, rhs: Sequence[str], *, shape: Sequence[int] | None = None, init: Any = None) -> Constraint:
        """Define the new array variable `lhs = f(*values of rhs)`; the program becomes structured.

        Args:
          lhs: name of the variable this constraint defines (a string); new, not an input.
          f: a JAX-traceable function taking the k argument values positionally, in the order of
            `rhs` (`lambda W, x: jnp.tanh(W @ x)`), and returning one float array, of any shape.
          rhs: names of the arguments; a name may repeat. A name defined later, or `lhs` itself,
            makes the program cyclic (see the module docstring).
          shape: optional, the shape `lhs` must have; a mismatch is an error. The shape is
            inferred by `jax.eval_shape` of `f` on its arguments' shapes, at this call, or, where
            an argument is not defined yet, when the program is finalised; a cycle needs `shape`
            on at least one of its variables.
          init: optional initial guess of `lhs` (an array of its shape) for the root finder, if
            `lhs` lies on a cycle (default zeros).

        Returns:
          The `Constraint` record (`positional=True`).

        Raises:
          ValueError: naming `lhs`: the errors of `add_constraint`, and `f` returning a shape
            other than `shape`.
          TypeError: naming `lhs`: the errors of `add_constraint`, and `f` failing to trace on its
            arguments' shapes (the original error shown beneath) or returning a non-float or
            non-array value.
        """
        if not callable(f):
            raise TypeError(f"`f` for {lhs!r} must be callable, got {f!r}.")
        _check_string(lhs, "left-hand side")
        if lhs in self._index:
            self._redefined(lhs)
        _check_rhs(lhs, rhs)
        if len(rhs) == 0:
            raise ValueError(f"The right-hand side of {lhs!r} is empty; a constraint reads at least one variable.")
        try:
            args = tuple(map(self._index.__getitem__, rhs))
        except (KeyError, TypeError):
            args = self._forward_references(lhs, rhs)
        shape = None if shape is None else _declared_shape(lhs, shape)
        known = all(0 <= a < len(self._shapes) and self._shapes[a] is not None for a in args)
        group, data = -1, ()
        if known:
            out_shape = self._infer_shape(lhs, f, rhs, args, shape)
            group, data = self._group_positional(f, tuple(self._shapes[a] for a in args), out_shape)
        else:  # waits for its arguments (`resolved`)
            self._deferred.append(len(self))
            out_shape = shape
        self.structured = True
        self._level.append(1 + max(self._level[a] if 0 <= a < len(self._level) else 0 for a in args))
        i = self._define(lhs)
        self._shapes.append(out_shape)
        if init is not None:
            self.init[lhs] = init
        constraint = Constraint(lhs, i, f, args, tuple(rhs), None, group, data, True)
        self._tail.append(constraint)
        return constraint

    def _infer_shape(self, lhs, f, rhs, args, shape) -> tuple[int, ...]:
        arg_shapes = {name: self._shapes[a] for name, a in zip(rhs, args)}
        out_shape = _signature.check_positional(f, [self._shapes[a] for a in args], list(rhs), f"constraint {lhs!r}")
        if shape is not None and shape != out_shape:
            raise ValueError(
                f"`f` of constraint {lhs!r} returns shape {out_shape} for arguments of shapes {arg_shapes}, "
                f"but `shape={shape}` was asked for."
            )
        return out_shape

    def add_arrays(
        self,
        lhs: Sequence[str],
        f: Callable | Sequence[Callable],
        rhs: Sequence[Sequence[str]],
        *,
        data: Sequence[tuple] | None = None,
        shape: Sequence[Sequence[int]] | None = None,
    ) -> None:
        """Add m array constraints at once, in order: `lhs[r] = f[r](*values of rhs[r], *data[r])`.

        The bulk form of `add`, for programs made by code (`lagjax.trace`): the data each constraint
        runs on are given explicitly rather than captured, and each distinct function is checked once.
        Constraints with the same function object, the same argument shapes and the same data shapes
        and dtypes form one group (their data stacked); `jax.eval_shape` runs once per group.

        Args:
          lhs: m new names (strings), none defined before, none repeated.
          f: one function, or m functions (a few distinct objects), each taking a constraint's k
            argument values positionally, then its data, and returning one float array.
          rhs: m sequences of names, each defined before its constraint: an input, a variable of an
            earlier constraint, or an earlier entry of `lhs` (for forward references and cycles use `add`).
          data: None, or m tuples of arrays passed to `f[r]` after the arguments.
          shape: None, or m shapes `lhs[r]` must have; omitted, inferred (once per group).

        Raises:
          ValueError: naming the row and its `lhs`: lengths that differ, a name defined twice, an
            empty or undefined right-hand side, a shape other than the one `f` returns.
          TypeError: naming the row's `lhs`: a name that is not a string, an `f` that is not callable
            or that fails to trace on its arguments' shapes (the original error shown beneath).
        """
        m = len(lhs)
        fs = [f] * m if callable(f) else list(f)
        data = [()] * m if data is None else list(data)
        shapes = [None] * m if shape is None else list(shape)
        for what, column in (("f", fs), ("rhs", rhs), ("data", data), ("shape", shapes)):
            if len(column) != m:
                raise ValueError(f"`add_arrays` got {m} names in `lhs` but {len(column)} entries in `{what}`; give one per constraint.")
        index, names, level, records, group_of, var_shapes = self._index, self._names, self._level, self._tail, self._group_of, self._shapes
        for r in range(m):
            name, g, args_r, data_r = lhs[r], fs[r], rhs[r], tuple(data[r])
            if not isinstance(name, str):
                _check_string(name, f"left-hand side of row {r}")
            if name in index:
                self._redefined(name)
            try:
                args = tuple(map(index.__getitem__, args_r))
            except (KeyError, TypeError):
                _check_rhs(name, args_r)
                missing = [a for a in args_r if not _bulk.is_hashable(a) or a not in index]
                raise ValueError(
                    f"Row {r} of `add_arrays` ({name!r}) reads {missing[0]!r}, which is not defined before it; `add_arrays` "
                    f"reads inputs and earlier variables only. Add constraints with forward references or cycles by `add`."
                ) from None
            if not args:
                raise ValueError(
                    f"The right-hand side of {name!r} (row {r} of `add_arrays`) is empty; a constraint reads at least one variable."
                )
            arg_shapes = tuple(map(var_shapes.__getitem__, args))
            key = ("arrays", id(g), arg_shapes, tuple(map(_leaf_type, data_r)))
            group = group_of.get(key)
            if group is None:
                group = self._array_group(key, g, args_r, arg_shapes, data_r, name)
            out_shape = self._groups[group].out_shape
            if shapes[r] is not None and shapes[r] != out_shape and _declared_shape(name, shapes[r]) != out_shape:
                raise ValueError(f"`f` of constraint {name!r} returns shape {out_shape}, but `shape={tuple(shapes[r])}` was asked for.")
            level.append(1 + max(map(level.__getitem__, args)))
            i = index[name] = len(names)
            names.append(name)
            var_shapes.append(out_shape)
            records.append(Constraint(name, i, _WithData(g, data_r), args, tuple(args_r), None, group, data_r, True))
        self.structured = self.structured or m > 0

    def _array_group(self, key: tuple, f: Callable, rhs, arg_shapes: tuple, data: tuple, lhs: str) -> int:
        """A new group of `add_arrays`: `f(*args, *data)` traced once on their shapes (`jax.eval_shape`)."""
        import itertools

        import jax
        import jax.numpy as jnp

        if not callable(f):
            raise TypeError(f"`f` for {lhs!r} must be callable, got {f!r}.")
        probes = [jax.ShapeDtypeStruct(s, jnp.float32) for s in arg_shapes]
        probes += [jax.ShapeDtypeStruct(*_leaf_type(leaf)) for leaf in data]
        described = "arguments of shapes " + ", ".join(f"{n!r}: {s}" for n, s in zip(rhs, arg_shapes)) + f" and {len(data)} data arrays"
        where = f"`f` of constraint {lhs!r}"
        out_shape = tuple(_signature.one_float_array(_signature.traced(f, probes, where, described), where).shape)
        n_data = len(data)
        split = _grouping.Split(key, data, (False,) * n_data, lambda leaves: _WithData(f, tuple(itertools.islice(leaves, n_data))))
        group = self._group_of[key] = len(self._groups)
        self._groups.append(_grouping.Group(split, None, len(arg_shapes), f, True, arg_shapes, out_shape))
        return group

    # --- forward references: cyclic programs ---------------------------------------------
    def condensation(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """`(level, blocks)` of the resolved program (`_components.condensation`); without forward
        references, the levels kept while building and no block."""
        if not self._forward():
            return self.levels(), []
        return _components.condensation(self.d, self.resolved())

    @property
    def cyclic(self) -> bool:
        """Whether the program has a cycle: some variable depends on itself, directly or through others.

        Reading a variable defined later is not a cycle by itself; the program is then ordered by its
        dependencies when it is resolved (`resolved`, called by `Computation`)."""
        return self._forward() and bool(np.any(self.levels() < 0))

    def _forward_references(self, lhs: Hashable, rhs: Sequence[Hashable]) -> tuple[int, ...]:
        """The argument indices, `-1` for a name not defined yet (resolved later), `lhs`'s own for itself."""
        position, i = len(self), len(self._names)
        args = []
        for name in rhs:
            if not _bulk.is_hashable(name):
                raise TypeError(f"A variable name must be hashable (a string, say); {lhs!r} reads {name!r}.")
            if name == lhs:
                args.append(i)
                self._pending.setdefault(name, []).append(position)
            elif name in self._index:
                args.append(self._index[name])
            else:
                args.append(-1)
                self._pending.setdefault(name, []).append(position)
        return tuple(args)

    def resolved(self) -> _records.Records:
        """The constraints with every forward reference resolved and every shape known: a sequence
        of `Constraint` records (`_records.Records`, also readable as arrays), made once while no
        constraint is added.

        Raises ValueError naming the variables: a name never defined, an index of `add_constraints`
        past the program's variables, a cycle of array constraints none of whose shapes is given, a
        scalar constraint reading an array.
        """
        if self._resolved is not None and len(self._resolved) == len(self):
            return self._resolved
        if self._forward():
            self._resolve_forward_references()
        self._resolved = self._records()
        return self._resolved

    def _resolve_forward_references(self) -> None:
        undefined = {name: users for name, users in self._pending.items() if name not in self._index}
        if undefined:
            lines = [f"{name!r} (read by {_some(self._name_of(c) for c in users)})" for name, users in undefined.items()]
            raise ValueError(
                f"Variables read but never defined: {'; '.join(lines)}. Define each by a constraint "
                f"(or declare it as an input) before building the Computation."
            )
        n = len(self._names)
        for chunk in self._forward_chunks:
            past = np.flatnonzero(np.any(chunk.args >= n, axis=1))
            if past.size:
                r = int(past[0])
                raise ValueError(
                    f"{_bulk.rows(past).capitalize()} of the `rhs` of add_constraints defining {chunk.names[0]!r} ... "
                    f"{chunk.names[-1]!r} read variables never defined: indices >= {n}, the number of variables (row {r}, "
                    f"{chunk.names[r]!r}, reads {chunk.args[r].tolist()}). Define those variables before building the "
                    f"Computation, or fix the indices."
                )
        index = self._index
        readers = {c for users in self._pending.values() for c in users}
        for c in readers:
            part, r = self._locate(c)
            if isinstance(part, _records.Bulk):  # resolved below, a chunk at a time
                continue
            name, i, f, _, arg_names, df, group, data, positional = part[r]
            args = tuple(map(index.__getitem__, arg_names))
            part[r] = Constraint(name, i, f, args, arg_names, df, group, data, positional)
            if self.structured and not positional:
                self._check_scalar_arguments(name, arg_names, args)
        for chunk in self._forward_chunks:
            if chunk.missing[0].size:
                chunk.resolve(index)
            if self.structured:
                self._check_scalar_table(chunk.args, chunk.names)
        self._infer_deferred_shapes()

    def _name_of(self, c: int) -> Hashable:
        """The name of the variable constraint c defines."""
        return self._names[self.d + c]

    def _infer_deferred_shapes(self) -> None:
        """Shapes of array constraints that read later variables, in dependency order."""
        waiting = list(self._deferred)
        given = {c: self._shapes[self[c].i] for c in waiting}  # `shape=`, or None
        inferred: set[int] = set()
        while len(inferred) < len(waiting):
            progress = False
            for c in waiting:
                record = self[c]
                if c in inferred or any(self._shapes[a] is None for a in record.args):
                    continue
                out_shape = self._infer_shape(record.name, record.f, record.arg_names, record.args, given[c])
                self._shapes[record.i] = out_shape
                group, data = self._group_positional(record.f, tuple(self._shapes[a] for a in record.args), out_shape)
                self._set(c, record._replace(group=group, data=data))
                inferred.add(c)
                progress = True
            if not progress:
                names = [self[c].name for c in waiting if c not in inferred]
                raise ValueError(
                    f"The shapes of {names} cannot be inferred: they read each other in a cycle. "
                    f"Give `shape=` to at least one of them in `add`."
                )
        self._deferred = []

    def _check_scalar_arguments(self, lhs: Hashable, rhs: Sequence[Hashable], args: tuple[int, ...]):
        _check_string(lhs, "left-hand side")
        for name, a in zip(rhs, args):
            if 0 <= a < len(self._shapes) and self._shapes[a] not in ((), None):
                raise ValueError(
                    f"`add_constraint` defines {lhs!r} from scalar variables, but {name!r} has shape "
                    f"{self._shapes[a]}; for array arguments use `add({lhs!r}, f, rhs)`, whose `f` takes "
                    f"the arguments positionally."
                )

    def _redefined(self, lhs: Hashable):
        defined = self._index[lhs]
        if defined < len(self.inputs):
            raise ValueError(
                f"{lhs!r} is an input of this program and cannot be redefined by a constraint; "
                f"inputs take their values from `x`. Give this constraint a new name."
            )
        earlier = self[defined - len(self.inputs)]
        raise ValueError(
            f"{lhs!r} is already defined by the constraint `{earlier}`; each variable is defined once. Give this constraint a new name."
        )

    def _split(self, f: Callable, arity: Hashable, liftable: Callable) -> _grouping.Split:
        """`f` split into template and data (`lagjax._grouping`); by value where it cannot be lifted.

        `arity` is what the template runs on (k, or the argument shapes); `liftable(split)` whether
        its code runs with the captured data traced (asked once per template and arity).
        """
        cached = self._splits.get((id(f), arity))
        if cached is not None and cached[0] is f:  # the same object, not a reused id
            return cached[1]
        split = _grouping.split(f)
        template = (split.key, arity)
        if split.leaves and template not in self._lifted:
            if template not in self._unliftable and liftable(split):
                self._lifted.add(template)
            else:
                self._unliftable.add(template)
                split = _grouping.as_static(split, f)
        self._splits[(id(f), arity)] = (f, split)  # keeps f alive, so its id stays its own
        return split

    def _group_positional(self, f: Callable, shapes: tuple, out_shape: tuple) -> tuple[int, tuple]:
        """The group of an array constraint's `f` on arguments of `shapes`, and the data it captures."""
        split = self._split(f, shapes, lambda split: _signature.liftable_positional(split, shapes, out_shape))
        key = ("positional", split.key, shapes)
        group = self._group_of.get(key)
        if group is None:
            group = self._group_of[key] = len(self._groups)
            self._groups.append(_grouping.Group(split, None, len(shapes), f, True, shapes, out_shape))
        return group, split.leaves

    def _group(self, f: Callable, df: Callable | None, k: int, lhs: Hashable) -> tuple[int, tuple]:
        """The group of `(f, df)` at arity `k` and the data it captures; a new group is checked first."""
        if not callable(f):
            raise TypeError(f"`f` for {lhs!r} must be callable, got {f!r}.")
        if df is not None and not callable(df):
            raise TypeError(f"`df` for {lhs!r} must be callable or None, got {df!r}.")
        f_split = self._split(f, k, lambda split: _signature.liftable(split, k, ((), (1,))))
        df_split = None if df is None else self._split(df, k, lambda split: _signature.liftable(split, k, ((k,),)))
        key = (f_split.key, None if df is None else df_split.key, k)
        group = self._group_of.get(key)
        if group is None:  # a new template: the user's own functions are checked, errors name them
            _signature.check_local(f, df, k, f"constraint {lhs!r}")
            group = self._group_of[key] = len(self._groups)
            self._groups.append(_grouping.Group(f_split, df_split, k, f))
        data = f_split.leaves + (df_split.leaves if df_split is not None else ())
        self._seen[(id(f), id(df), k)] = (group, data)
        return group, data


class _WithData:
    """`f` with its data bound after the arguments: `_WithData(f, data)(*args) == f(*args, *data)`
    (the function of a constraint added by `Constraints.add_arrays`)."""

    __slots__ = ("f", "data")

    def __init__(self, f: Callable, data: tuple):
        self.f, self.data = f, data

    def __call__(self, *args):
        return self.f(*args, *self.data)

    @property
    def __name__(self) -> str:
        return getattr(self.f, "__name__", type(self.f).__name__)


def _leaf_type(leaf) -> tuple[tuple[int, ...], Any]:
    """`(shape, dtype)` of a data array (NumPy's for other values)."""
    try:
        return tuple(leaf.shape), leaf.dtype
    except AttributeError:
        return np.shape(leaf), np.result_type(leaf)


def _some(names, shown: int = 5) -> str:
    """The first `shown` of `names`, repr'd, and how many more."""
    names = list(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(map(repr, names[:shown])) + more


def _check_rhs(lhs: Hashable, rhs: Any) -> None:
    if isinstance(rhs, (str, bytes)) or not isinstance(rhs, Sequence):
        raise TypeError(
            f"The right-hand side of {lhs!r} must be a list of names, got {rhs!r}; write e.g. add_constraint({lhs!r}, f, [{rhs!r}])."
        )


def _check_string(name: Any, role: str) -> None:
    if not isinstance(name, str):
        raise TypeError(
            f"Variables of a structured program (dict inputs, array constraints) are named by strings, "
            f"as the keys of the dicts its Computation returns; the {role} is {name!r}."
        )


def _declared_shape(lhs: str, shape: Any) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"`shape` of {lhs!r} must be a tuple of sizes, got {shape!r}.") from None


def _input_shape(name: str, spec: Any) -> tuple[int, ...]:
    """The declared shape of input `name`: a tuple of sizes, or an example float array."""
    if isinstance(spec, (tuple, list)) and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in spec):
        if any(s < 0 for s in spec):
            raise ValueError(f"The shape of input {name!r} has a negative size: {tuple(spec)}.")
        return tuple(int(s) for s in spec)
    dtype = getattr(spec, "dtype", None)
    if dtype is None or not hasattr(spec, "shape"):
        raise TypeError(
            f"Input {name!r} must be declared by a shape (a tuple such as (64, 32), or () for a scalar) "
            f"or an example float array; got {spec!r}."
        )
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise TypeError(
            f"Input {name!r} is declared by an example array of dtype {np.dtype(dtype)}; lagjax differentiates "
            f"float variables only (float32, float64). Declare its shape, or pass a float array."
        )
    return tuple(int(s) for s in spec.shape)


def _check_name(name: Any, role: str) -> None:
    if not _bulk.is_hashable(name):
        raise TypeError(f"A variable name must be hashable (a string, say); the {role} is {name!r}.")
