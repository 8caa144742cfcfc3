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
  `f` a function of the vector of its k scalar arguments;
- arrays: inputs declared with shapes, `Constraints({"W": (64, 32), "x": (32,)})`, and
  `add(lhs, f, rhs)` with `f` a function of its arguments taken positionally,
  `lambda W, x: jnp.tanh(W @ x)`; the shape of `lhs` is inferred by `jax.eval_shape`.
A program declared with a dict of inputs, or with any `add`, is *structured*: its `Computation`
takes and returns dicts keyed by variable name.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from lagjax import _components, _grouping, _signature


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
        self._constraints: list[Constraint] = []
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
        return dict(zip(self._names, self._shapes))

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
        if not self._pending:
            return np.asarray(self._level, np.int64)
        resolved = self.resolved()
        if self._resolved_levels is None or self._resolved_levels[0] is not resolved:
            self._resolved_levels = (resolved, _components.levels(self.d, resolved))
        return self._resolved_levels[1]

    def __len__(self) -> int:
        return len(self._constraints)

    def __iter__(self):
        return iter(self._constraints)

    def __getitem__(self, c: int) -> Constraint:
        return self._constraints[c]

    def __repr__(self) -> str:
        lines = [f"Constraints(inputs={[self._names[i] for i in self.inputs]!r})"]
        lines += [f"  {c}" for c in self._constraints]
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
        self._constraints.append(constraint)
        return constraint

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
            self._deferred.append(len(self._constraints))
            out_shape = shape
        self.structured = True
        self._level.append(1 + max(self._level[a] if 0 <= a < len(self._level) else 0 for a in args))
        i = self._define(lhs)
        self._shapes.append(out_shape)
        if init is not None:
            self.init[lhs] = init
        constraint = Constraint(lhs, i, f, args, tuple(rhs), None, group, data, True)
        self._constraints.append(constraint)
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
        index, names, level, records, group_of, var_shapes = self._index, self._names, self._level, self._constraints, self._group_of, self._shapes
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
                missing = [a for a in args_r if not _is_hashable(a) or a not in index]
                raise ValueError(
                    f"Row {r} of `add_arrays` ({name!r}) reads {missing[0]!r}, which is not defined before it; `add_arrays` "
                    f"reads inputs and earlier variables only. Add constraints with forward references or cycles by `add`."
                ) from None
            if not args:
                raise ValueError(f"The right-hand side of {name!r} (row {r} of `add_arrays`) is empty; a constraint reads at least one variable.")
            arg_shapes = tuple(map(var_shapes.__getitem__, args))
            key = ("arrays", id(g), arg_shapes, tuple(map(_leaf_type, data_r)))
            group = group_of.get(key)
            if group is None:
                group = self._array_group(key, g, args_r, arg_shapes, data_r, name)
            out_shape = self._groups[group].out_shape
            if shapes[r] is not None and _declared_shape(name, shapes[r]) != out_shape:
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
        out_shape = tuple(_signature._one_float_array(_signature._traced(f, probes, where, described), where).shape)
        n_data = len(data)
        split = _grouping.Split(key, data, (False,) * n_data, lambda leaves: _WithData(f, tuple(itertools.islice(leaves, n_data))))
        group = self._group_of[key] = len(self._groups)
        self._groups.append(_grouping.Group(split, None, len(arg_shapes), f, True, arg_shapes, out_shape))
        return group

    # --- forward references: cyclic programs ---------------------------------------------
    def condensation(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """`(level, blocks)` of the resolved program (`_components.condensation`); without forward
        references, the levels kept while building and no block."""
        if not self._pending:
            return self.levels(), []
        return _components.condensation(self.d, self.resolved())

    @property
    def cyclic(self) -> bool:
        """Whether the program has a cycle: some variable depends on itself, directly or through others.

        Reading a variable defined later is not a cycle by itself; the program is then ordered by its
        dependencies when it is resolved (`resolved`, called by `Computation`)."""
        return bool(self._pending) and bool(np.any(self.levels() < 0))

    def _forward_references(self, lhs: Hashable, rhs: Sequence[Hashable]) -> tuple[int, ...]:
        """The argument indices, `-1` for a name not defined yet (resolved later), `lhs`'s own for itself."""
        position, i = len(self._constraints), len(self._names)
        args = []
        for name in rhs:
            if not _is_hashable(name):
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

    def resolved(self) -> tuple[Constraint, ...]:
        """The constraints with every forward reference resolved and every shape known.

        Raises ValueError naming the variables: a name never defined, a cycle of array constraints
        none of whose shapes is given, a scalar constraint reading an array.
        """
        if not self._pending:
            return tuple(self._constraints)
        if self._resolved is not None and len(self._resolved) == len(self._constraints):
            return self._resolved
        undefined = {name: users for name, users in self._pending.items() if name not in self._index}
        if undefined:
            lines = [f"{name!r} (read by {', '.join(repr(self._constraints[c].name) for c in users)})" for name, users in undefined.items()]
            raise ValueError(
                f"Variables read but never defined: {'; '.join(lines)}. Define each by a constraint "
                f"(or declare it as an input) before building the Computation."
            )
        index, records = self._index, self._constraints
        readers = {c for users in self._pending.values() for c in users}
        for c in readers:
            name, i, f, _, arg_names, df, group, data, positional = records[c]
            args = tuple(map(index.__getitem__, arg_names))
            records[c] = Constraint(name, i, f, args, arg_names, df, group, data, positional)
            if self.structured and not positional:
                self._check_scalar_arguments(name, arg_names, args)
        self._infer_deferred_shapes()
        self._resolved = tuple(self._constraints)
        return self._resolved

    def _infer_deferred_shapes(self) -> None:
        """Shapes of array constraints that read later variables, in dependency order."""
        waiting = list(self._deferred)
        given = {c: self._shapes[self._constraints[c].i] for c in waiting}  # `shape=`, or None
        inferred: set[int] = set()
        while len(inferred) < len(waiting):
            progress = False
            for c in waiting:
                record = self._constraints[c]
                if c in inferred or any(self._shapes[a] is None for a in record.args):
                    continue
                out_shape = self._infer_shape(record.name, record.f, record.arg_names, record.args, given[c])
                self._shapes[record.i] = out_shape
                group, data = self._group_positional(record.f, tuple(self._shapes[a] for a in record.args), out_shape)
                self._constraints[c] = record._replace(group=group, data=data)
                inferred.add(c)
                progress = True
            if not progress:
                names = [self._constraints[c].name for c in waiting if c not in inferred]
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
        earlier = self._constraints[defined - len(self.inputs)]
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


def _is_hashable(name: Any) -> bool:
    try:
        hash(name)
    except TypeError:
        return False
    return True


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
    if not _is_hashable(name):
        raise TypeError(f"A variable name must be hashable (a string, say); the {role} is {name!r}.")
