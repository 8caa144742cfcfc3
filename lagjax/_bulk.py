"""Bulk building (`Constraints.add_constraints`): the arguments of m constraints checked as arrays.

`add_constraints(lhs, f, rhs, data=...)` hands over m constraints of one function at once. Each check
here is one pass over an array (or one C-level pass over a list of names), never a Python loop per
constraint; the loops that name the offending rows run only once a check has failed. Messages name
the argument and the first offending rows, as `rows 3, 17 (and 5 more)`.

The function is checked once, by `jax.eval_shape` on row 0's shapes: every row has the same shapes.
The data are passed to `f` traced (`f(v, *data_r)`), so its template is grouped once (`with_data`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lagjax import _grouping, _signature

_SHOWN = 5  # rows named in a message


def rows(where, what: str = "row") -> str:
    """`row 3`, `rows 3, 17`, or `rows 3, 17, 21, 40, 41 (and 5 more)`: the first offending rows."""
    where = np.asarray(where, np.int64).reshape(-1)
    shown = ", ".join(map(str, where[:_SHOWN].tolist()))
    more = f" (and {where.size - _SHOWN} more)" if where.size > _SHOWN else ""
    return f"{what}{'s' if where.size > 1 else ''} {shown}{more}"


def is_hashable(name: Any) -> bool:
    """Whether `name` can be a variable name (a dict key)."""
    try:
        hash(name)
    except TypeError:
        return False
    return True


# --- lhs ---------------------------------------------------------------------------------------
def lhs_names(lhs: Any) -> list:
    """`lhs` as a list of m names; a clear error for a single name or a non-sequence."""
    if isinstance(lhs, (str, bytes)) or not isinstance(lhs, (Sequence, np.ndarray)):
        raise TypeError(
            f"`lhs` of add_constraints must be a list of the m new variables' names, got {lhs!r}. "
            f"For one constraint use add_constraint(lhs, f, rhs)."
        )
    return lhs.tolist() if isinstance(lhs, np.ndarray) else list(lhs)


def lhs_error(names: list, index: dict, d: int, describe: Callable[[int], str]) -> Exception:
    """Why `names` cannot all be new variables of a program whose variables are `index` (name -> i):
    unhashable, an input, already defined (`describe(i)`: the constraint defining variable i), or
    repeated within `names`. Called once the fast check (one dict update) has failed."""
    unhashable = [r for r, name in enumerate(names) if not is_hashable(name)]
    if unhashable:
        return TypeError(
            f"A variable name must be hashable (a string, say); {rows(unhashable)} of `lhs` are not: {names[unhashable[0]]!r}."
        )
    inputs = [r for r, name in enumerate(names) if index.get(name, d) < d]
    if inputs:
        return ValueError(
            f"{rows(inputs).capitalize()} of `lhs` name inputs of this program (row {inputs[0]}: {names[inputs[0]]!r}); "
            f"inputs take their values from `x` and cannot be redefined by a constraint. Give these constraints new names."
        )
    defined = [r for r, name in enumerate(names) if name in index]
    if defined:
        first = names[defined[0]]
        return ValueError(
            f"{rows(defined).capitalize()} of `lhs` name variables already defined ({first!r} by the constraint "
            f"`{describe(index[first])}`); each variable is defined once. Give these constraints new names."
        )
    seen: dict = {}
    repeats = [r for r, name in enumerate(names) if seen.setdefault(name, r) != r]
    first = names[repeats[0]]
    return ValueError(
        f"{rows(repeats).capitalize()} of `lhs` repeat names of earlier rows ({first!r} is also row {seen[first]}); "
        f"each variable is defined once. Give every constraint its own name."
    )


def check_strings(names: list) -> None:
    """In a structured program every variable is named by a string (the keys of its dicts)."""
    bad = [r for r, name in enumerate(names) if not isinstance(name, str)] if set(map(type, names)) != {str} else []
    if bad:
        raise TypeError(
            f"Variables of a structured program (dict inputs, array constraints) are named by strings, as the keys of the "
            f"dicts its Computation returns; {rows(bad)} of `lhs` are not (row {bad[0]}: {names[bad[0]]!r})."
        )


# --- rhs ---------------------------------------------------------------------------------------
def is_index_table(rhs: Any) -> bool:
    """An array (NumPy, JAX: anything with `dtype` and `shape`) is a table of indices; else rows of names."""
    return hasattr(rhs, "dtype") and hasattr(rhs, "shape")


def index_table(rhs: Any, m: int) -> np.ndarray:
    """`rhs` as an `(m, k)` int64 table of variable indices (a copy), checked: integers, 2-D, m rows,
    k >= 1, none negative. Indices past the program's variables are checked when it is resolved."""
    table = np.asarray(rhs)
    if table.dtype == bool or not np.issubdtype(table.dtype, np.integer):
        raise TypeError(
            f"`rhs` of add_constraints, given as an array, is a table of variable indices and must hold integers; got dtype "
            f"{table.dtype}. For names, pass a list of m lists of names."
        )
    if table.ndim != 2 or table.shape[0] != m or table.shape[1] < 1:
        hint = " For one argument each, write rhs[:, None]." if table.ndim == 1 and table.shape[0] == m else ""
        raise ValueError(
            f"`rhs` of add_constraints must be a table of shape (m, k) = ({m}, k), one row of k >= 1 argument indices "
            f"per name of `lhs`; got shape {table.shape}.{hint}"
        )
    table = table.astype(np.int64)  # a copy: the program's own
    negative = np.flatnonzero(np.any(table < 0, axis=1))
    if negative.size:
        r = int(negative[0])
        raise ValueError(
            f"{rows(negative).capitalize()} of `rhs` hold negative indices (row {r}: {table[r].tolist()}); a variable's "
            f"index is its position among the program's variables (inputs first, then one per constraint, in the order "
            f"added), from 0."
        )
    return table


def name_rows(rhs: Any, m: int) -> tuple[list, int]:
    """`rhs` as m rows of k names: `(the names flattened row after row, k)`, checked (m rows, one k >= 1)."""
    if isinstance(rhs, (str, bytes)) or not isinstance(rhs, Sequence):
        raise TypeError(f"`rhs` of add_constraints must be an (m, k) integer array of variable indices or m lists of names; got {rhs!r}.")
    rows_ = list(rhs)
    if len(rows_) != m:
        raise ValueError(
            f"`rhs` of add_constraints has {len(rows_)} rows, but `lhs` names m = {m} constraints: one row of arguments per name."
        )
    bad = [r for r, row in enumerate(rows_) if isinstance(row, (str, bytes)) or not isinstance(row, Sequence)]
    if bad:
        raise TypeError(
            f"Each row of `rhs` must be a list of names; {rows(bad)} are not (row {bad[0]}: {rows_[bad[0]]!r}). "
            f"Write e.g. [['x'], ['y']] for one argument each."
        )
    lengths = np.fromiter(map(len, rows_), np.int64, m)
    k = int(lengths[0]) if m else 1
    if k == 0 or np.any(lengths != k):
        other = np.flatnonzero(lengths != k) if k else np.flatnonzero(lengths == 0)
        raise ValueError(
            f"Every row of `rhs` must name the same number k >= 1 of arguments (one function, one arity); row 0 names {k}, "
            f"{rows(other)} name {lengths[other[0]] if other.size else 0}. Split constraints of other arities into calls of their own."
        )
    return list(itertools.chain.from_iterable(rows_)), k


def unhashable_rows(flat: list, k: int) -> str:
    """The message for names of `rhs` that cannot be variable names."""
    bad = [p for p, name in enumerate(flat) if not is_hashable(name)]
    return f"A variable name must be hashable (a string, say); {rows(np.unique(np.asarray(bad) // k))} of `rhs` read {flat[bad[0]]!r}."


# --- data --------------------------------------------------------------------------------------
def data_columns(data: Any, m: int) -> tuple[np.ndarray, ...]:
    """`data` (None, one array, or a tuple/list of arrays) as arrays with leading axis m, checked."""
    if data is None:
        return ()
    many = isinstance(data, (tuple, list))
    columns = []
    for j, column in enumerate(data if many else (data,)):
        what = f"`data[{j}]`" if many else "`data`"
        try:
            array = np.asarray(column)
        except Exception as err:  # noqa: BLE001  (ragged lists and the like: say which)
            raise TypeError(
                f"{what} of add_constraints must be an array with one row per constraint; got {type(column).__name__} ({err})."
            ) from None
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"{what} of add_constraints must hold real numbers (float, int or bool), one row per constraint; got dtype {array.dtype}."
            )
        if array.ndim == 0 or array.shape[0] != m:
            raise ValueError(
                f"{what} of add_constraints has shape {array.shape}, but `lhs` names m = {m} constraints: each array of "
                f"`data` has a leading axis of m, row r going to constraint r (shape ({m}, ...))."
            )
        columns.append(array)
    return tuple(columns)


def _probe(column: np.ndarray) -> jax.ShapeDtypeStruct:
    """One row of a data column, as `f` sees it: floats in the arguments' dtype (float32 here)."""
    dtype = jnp.float32 if np.issubdtype(column.dtype, np.floating) else column.dtype
    return jax.ShapeDtypeStruct(column.shape[1:], dtype)


def check_function(f: Callable, k: int, columns: tuple, lhs: Hashable) -> None:
    """Check `f(v, *data_0)` on row 0's shapes: a float scalar (shape `()` or `(1,)`) for v of shape `(k,)`."""
    where = f"`f` of add_constraints (row 0, defining {lhs!r})"
    described = f"a float vector of shape ({k},)" + (f" and data of shapes {[c.shape[1:] for c in columns]}" if columns else "")
    probes = [jax.ShapeDtypeStruct((k,), jnp.float32), *map(_probe, columns)]
    out = _signature.one_float_array(_signature.traced(f, probes, where, described, how="as f(v, *data_row) on"), where)
    if out.shape not in ((), (1,)):
        raise ValueError(
            f"{where} returned shape {out.shape} for {described}; it must return a scalar, shape () or (1,). "
            f"Reduce it (e.g. jnp.sum) or split it into several constraints."
        )


# --- the template -------------------------------------------------------------------------------
def signature(columns: tuple) -> tuple:
    """What a group's data must share: each column's row shape and dtype."""
    return tuple((c.shape[1:], c.dtype.str) for c in columns)


def liftable(split: _grouping.Split, k: int, columns: tuple) -> bool:
    """Whether `f`'s template runs with what `f` captures traced, as well as its data (see `_signature.liftable`)."""
    v = jax.ShapeDtypeStruct((k,), jnp.float32)
    leaves = tuple(jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype) for a in map(_grouping.resolve, split.leaves))
    try:
        out = jax.eval_shape(lambda v, leaves, data: split.function(leaves, jnp.float32)(v, *data), v, leaves, tuple(map(_probe, columns)))
    except Exception:  # noqa: BLE001  (any failure means: do not lift; the plain function was checked)
        return False
    return isinstance(out, jax.ShapeDtypeStruct) and out.shape in ((), (1,))


def with_data(split: _grouping.Split, columns: tuple) -> _grouping.Split:
    """The template `v -> f(v, *data_r)` as a `Split` of one argument vector: the leaves `f` captures,
    then one leaf per data column (row 0 stands for its shape). Float data take the arguments' dtype,
    as Python numbers captured by `f` do."""
    count = len(columns)

    def rebuild(leaves):
        g = split.rebuild(leaves)  # takes f's own leaves
        data = [next(leaves) for _ in range(count)]
        return lambda v: g(v, *data)

    weak = tuple(bool(np.issubdtype(c.dtype, np.floating)) for c in columns)
    return _grouping.Split(("data", split.key, signature(columns)), split.leaves + tuple(c[0] for c in columns), split.weak + weak, rebuild)
