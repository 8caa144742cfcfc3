"""Groups: constraints that run the same code, what each captures stacked as data.

Programs built in a loop often make one function per constraint, `lambda v, row=row: row @ v` or
`functools.partial(g, w)`: the same code over different captured values. Grouped by identity,
they would make one group per constraint (a `lax.switch` branch and a `vmap` each), and compile
time would grow with the program. `split` cuts a function into a hashable *template key*, equal for
functions that run the same code and differ only in captured arrays and numbers, and its *data*,
those arrays and numbers. A `Group` evaluates the template as a function of `(v, data)`, so one
`vmap` over the members' stacked data evaluates them all.

What counts as data: NumPy and JAX arrays and numbers (bools and traced values excepted), found in
a function's default arguments and closure cells, and in a `functools.partial`'s arguments. A
closure cell is read when the program is built (`Computation(...)`), as the function would read it
when called, so closures over a loop variable see its last value, as in Python. Anything else a
function captures (another function, a module, an object) is part of the template, equal by
identity; strings, bytes, bools and None equal by value; functions and partials are split in turn.
Python numbers captured as data take the dtype of the argument vector, as in the original function.
An array that all of a group's constraints capture (one shared function, say) is kept once, not
stacked.

A template whose code cannot run on traced data (a captured int used as a shape, or in an `if`)
is not grouped this way: `Constraints.add_constraint` then groups its functions by the captured
values themselves (`as_static`), one group per distinct set of values.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_MAX_DEPTH = 3  # how deep captured functions are split in turn
_CONSTANT_TYPES = (str, bytes, bool, np.bool_, type(None))

Rebuild = Callable[[Iterator], Any]


def _is_data(value: Any) -> bool:
    return (
        isinstance(value, (np.ndarray, np.number, jax.Array, int, float))
        and not isinstance(value, (bool, np.bool_, jax.core.Tracer))  # a traced value stays in the template
        and getattr(value, "dtype", np.float64) != object  # noqa: E721  (a NumPy dtype, not a type)
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Cell:
    """A closure cell holding data: read when the program is built (`resolve`), not when the
    constraint is added, as the function itself would read it when called (late binding)."""

    cell: types.CellType


def resolve(leaf) -> np.ndarray:
    """A leaf's value as a NumPy array: the array, or a `Cell`'s current contents."""
    return np.asarray(origin(leaf))


def origin(leaf) -> Any:
    """The object a constraint captured: the array itself (a JAX array stays one), or a `Cell`'s
    current contents. Captured arrays are matched by identity to parameters (`_parameters`)."""
    return leaf.cell.cell_contents if isinstance(leaf, Cell) else leaf


def same(a, b) -> bool:
    """Whether two leaves are one and the same value (then a group keeps one copy, not a stack)."""
    return a is b or (isinstance(a, Cell) and isinstance(b, Cell) and a.cell is b.cell)


def _data(value: Any) -> np.ndarray | None:
    """`value` as a NumPy array if it is data (see the module docstring), else None."""
    if not _is_data(value):
        return None
    try:
        return value if isinstance(value, np.ndarray) else np.asarray(value)
    except Exception:  # noqa: BLE001  (e.g. typed PRNG keys: not data, part of the template)
        return None


def _split(value: Any, depth: int, cell: types.CellType | None = None) -> tuple[Hashable, list, list[bool], Rebuild]:
    """`(key, leaves, weak, rebuild)`: `rebuild(iter(leaves))` gives back an equivalent value.

    `cell`: the closure cell `value` was read from, kept as the leaf (`Cell`) if `value` is data.
    """
    array = _data(value)
    if array is not None:
        leaf = Cell(cell) if cell is not None else value if isinstance(value, jax.Array) else array
        return ("data", array.shape, array.dtype.str), [leaf], [isinstance(value, (int, float))], next
    if depth < _MAX_DEPTH and isinstance(value, types.FunctionType):
        return _split_function(value, depth + 1)
    if depth < _MAX_DEPTH and isinstance(value, functools.partial):
        return _split_partial(value, depth + 1)
    key = ("constant", type(value), value) if isinstance(value, _CONSTANT_TYPES) else ("object", id(value))
    return key, [], [], lambda leaves: value


def _split_all(values: list, depth: int, cells: list | None = None) -> tuple[tuple, list, list[bool], list[Rebuild]]:
    cells = cells or [None] * len(values)
    parts = [_split(v, depth, c) for v, c in zip(values, cells)]
    leaves = [leaf for p in parts for leaf in p[1]]
    weak = [w for p in parts for w in p[2]]
    return tuple(p[0] for p in parts), leaves, weak, [p[3] for p in parts]


def _split_function(f: types.FunctionType, depth: int):
    defaults = list(f.__defaults__ or ())
    kw_names = sorted(f.__kwdefaults__ or {})
    cells = list(f.__closure__ or ())
    empty = object()
    contents = []
    for cell in cells:
        try:
            contents.append(cell.cell_contents)
        except ValueError:  # a cell not yet filled
            contents.append(empty)
    values = defaults + [f.__kwdefaults__[k] for k in kw_names] + contents
    keys, leaves, weak, rebuilds = _split_all(values, depth, [None] * (len(values) - len(cells)) + cells)
    key = ("function", f.__code__, id(f.__globals__), tuple(kw_names), keys)
    nd, nk = len(defaults), len(kw_names)

    def rebuild(it):
        new = [r(it) for r in rebuilds]
        closure = tuple(types.CellType() if v is empty else types.CellType(v) for v in new[nd + nk :])
        g = types.FunctionType(f.__code__, f.__globals__, f.__name__, tuple(new[:nd]) or None, closure or None)
        if nk:
            g.__kwdefaults__ = dict(zip(kw_names, new[nd : nd + nk]))
        return g

    return key, leaves, weak, rebuild


def _split_partial(p: functools.partial, depth: int):
    kw_names = sorted(p.keywords)
    keys, leaves, weak, rebuilds = _split_all([p.func, *p.args, *(p.keywords[k] for k in kw_names)], depth)
    na = len(p.args)

    def rebuild(it):
        new = [r(it) for r in rebuilds]
        return functools.partial(new[0], *new[1 : 1 + na], **dict(zip(kw_names, new[1 + na :])))

    return ("partial", tuple(kw_names), keys), leaves, weak, rebuild


@dataclasses.dataclass(frozen=True)
class Split:
    """A function cut into its template and its data (see the module docstring)."""

    key: Hashable
    leaves: tuple[np.ndarray, ...]
    weak: tuple[bool, ...]
    rebuild: Rebuild

    def call(self, v: jax.Array, leaves) -> jax.Array:
        """The template applied to `v` with `leaves` (traced or not) in place of the captured data."""
        return self.function(leaves, v.dtype)(v)

    def function(self, leaves, dtype) -> Callable:
        """The template with `leaves` in place of the captured data; Python numbers take `dtype`."""
        leaves = [
            jnp.asarray(leaf, dtype) if weak and jnp.issubdtype(leaf.dtype, jnp.floating) else leaf for leaf, weak in zip(leaves, self.weak)
        ]
        return self.rebuild(iter(leaves))


def split(f: Callable) -> Split:
    """Cut `f` into a template key and its data."""
    key, leaves, weak, rebuild = _split(f, 0)
    return Split(key, tuple(leaves), tuple(weak), rebuild)


def as_static(split: Split, f: Callable) -> Split:
    """`f` with its data made part of the template (compared by value): for code that needs its
    captured numbers as Python values. Functions capturing equal values still share a group."""
    values = tuple((a.shape, a.dtype.str, a.tobytes()) for a in map(resolve, split.leaves))
    return Split(("static", split.key, values), (), (), lambda leaves: f)


@dataclasses.dataclass(frozen=True, eq=False)
class Group:
    """Constraints running one template on arguments of the same shapes: one `vmap` evaluates them.

    Two calling conventions, one interface (`apply`): a scalar constraint (`add_constraint`) has
    `f` of the vector of its k scalar arguments (and `df`, its k partials, or None for `jax.grad`);
    an array constraint (`add`, `positional=True`) has `f` of its k arguments taken positionally.
    `data` is one member's captured data, a flat tuple: f's leaves, then df's. `first` is the first
    member's function, for messages.
    """

    f_split: Split
    df_split: Split | None
    k: int
    first: Callable
    positional: bool = False
    arg_shapes: tuple = ()
    out_shape: tuple = ()

    def __post_init__(self):
        if not self.positional:
            object.__setattr__(self, "arg_shapes", ((),) * self.k)

    @property
    def num_leaves(self) -> int:
        return len(self.f_split.leaves) + (len(self.df_split.leaves) if self.df_split else 0)

    @property
    def scalar(self) -> bool:
        """Whether its arguments and value are all scalars: its local Jacobian is k numbers."""
        return self.out_shape == () and all(s == () for s in self.arg_shapes)

    def apply(self, args, data: tuple) -> jax.Array:
        """The constraint's value, of shape `out_shape`, from its k argument values (each of its shape)."""
        leaves = data[: len(self.f_split.leaves)]
        if self.positional:
            return self.f_split.function(leaves, args[0].dtype)(*args)
        v = jnp.stack(args)
        return jnp.reshape(self.f_split.call(v, leaves), ())

    def partials(self, args, data: tuple) -> jax.Array:
        """A scalar group's local Jacobian, shape `(k,)`: from `df` if given, else `jax.grad`."""
        if self.df_split is None:
            return jnp.stack(jax.grad(lambda *a: self.apply(a, data).astype(a[0].dtype), argnums=tuple(range(self.k)))(*args))
        v = jnp.stack(args)
        return jnp.reshape(self.df_split.call(v, data[len(self.f_split.leaves) :]), (self.k,)).astype(v.dtype)
