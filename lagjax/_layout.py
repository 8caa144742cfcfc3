"""The variables of a structured program: their shapes, and their places in one flat vector.

The method's matrices (D, n × n in the scalar case) are over the *flattened* variables: variable v
of shape `s` occupies `size(s)` consecutive entries, at `offsets[v]`, in variable order. Everything
else is a dict keyed by name, with each variable's own shape.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


class Layout:
    """Names and shapes of the variables (inputs first), and the flat vector they make.

    Attributes: `names`, `shapes` (a mapping by name), `input_names`, `offsets` (shape `(n + 1,)`, the
    start of each variable in the flat vector, and its end), `size` (the flat length N), `index` (a
    dict: name -> variable). `shapes` and `index` are made when first read: at a million variables
    each is a dict of 0.3 s, and a program of scalars read by vectors never needs them.
    """

    def __init__(self, names: Sequence[Hashable], shapes: Sequence[tuple[int, ...]], d: int):
        self.names = list(names)
        self._shape_list = list(shapes)
        self.shapes = Shapes(self)
        self.input_names = self.names[:d]
        n = len(self.names)
        if self._shape_list.count(()) == n:  # scalars: an identity test each (`()` is one object)
            sizes = np.ones(n, np.int64)
        else:
            sizes = np.fromiter(map(math.prod, self._shape_list), np.int64, n)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.size = int(self.offsets[-1])

    @functools.cached_property
    def index(self) -> dict:
        """name -> variable index."""
        return dict(zip(self.names, range(len(self.names))))

    @functools.cached_property
    def input_index(self) -> dict:
        """input name -> input index (the inputs' part of `index`, without making all of it)."""
        return dict(zip(self.input_names, range(len(self.input_names))))

    @functools.cached_property
    def shape_of(self) -> dict:
        """name -> shape, a dict (what `shapes` reads)."""
        return dict(zip(self.names, self._shape_list))

    def slice(self, name: Hashable) -> slice:
        """Where variable `name` sits in the flat vector."""
        i = self.index[name]
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def flatten(self, tree: Mapping, names: Sequence[Hashable] | None = None) -> jax.Array:
        """The dict `{name: array}` as one flat vector, in variable order (of `names`, default all)."""
        names = self.names if names is None else names
        return jnp.concatenate([jnp.ravel(tree[name]) for name in names]) if names else jnp.zeros(0)

    def unflatten(self, flat: jax.Array, names: Sequence[Hashable] | None = None) -> dict:
        """The flat vector (of the variables `names`, default all) as a dict of arrays by name."""
        names = list(self.names if names is None else names)
        if not names:
            return {}
        sizes = [int(self.offsets[self.index[name] + 1] - self.offsets[self.index[name]]) for name in names]
        # `lax.split`, not slices: its transpose is one concatenate, where slices transpose into a
        # full-size pad per variable (quadratic in the program under reverse mode).
        parts = jax.lax.split(flat, sizes)
        return {name: jnp.reshape(part, self.shapes[name]) for name, part in zip(names, parts)}

    def check(self, tree, argument: str, names: Sequence[Hashable], dtype=None) -> dict:
        """`tree` as a dict of real arrays, one per name of `names`, each of its declared shape.

        Only shapes and dtypes are read (microseconds per entry): values are converted inside the
        jitted computation (`promote`). Errors name the argument and the key.
        """
        if not isinstance(tree, Mapping):
            raise TypeError(f"`{argument}` must be a dict of arrays keyed by variable name {list(names)}; got {type(tree).__name__}.")
        if len(tree) != len(names) or not all(k in tree for k in names):
            wanted = set(names)
            missing = [k for k in names if k not in tree]
            unexpected = [k for k in tree if k not in wanted]
            raise ValueError(f"The keys of `{argument}` must be {list(names)}; missing {missing}, unexpected {unexpected}.")
        shapes = self.shapes
        values = {}
        for name in names:
            value = tree[name]
            shape, kind = getattr(value, "shape", None), getattr(getattr(value, "dtype", None), "kind", None)
            if shape is None or kind is None:  # a Python number or a list
                try:
                    value = np.asarray(value)
                except (TypeError, ValueError) as error:
                    raise TypeError(
                        f"`{argument}[{name!r}]` must be an array of shape {shapes[name]}; got {type(value).__name__} ({error})."
                    ) from None
                shape, kind = value.shape, value.dtype.kind
                if kind in "iub":
                    value = value.astype(np.result_type(float))
            if kind == "c":
                raise TypeError(f"`{argument}[{name!r}]` is complex ({value.dtype}); lagjax programs are real: pass float32 or float64.")
            if kind not in "fiub" and np.dtype(value.dtype) != jnp.bfloat16:
                raise TypeError(f"`{argument}[{name!r}]` must hold real numbers; got dtype {value.dtype}.")
            if tuple(shape) != shapes[name]:
                expected = shapes[name]
                batch = (
                    " For a batch, use jax.vmap."
                    if tuple(shape[len(shape) - len(expected) :]) == expected and len(shape) > len(expected)
                    else ""
                )
                raise ValueError(
                    f"`{argument}[{name!r}]` must have the shape declared for {name!r}, {expected}; got {tuple(shape)}.{batch}"
                )
            values[name] = value
        if dtype is not None:
            return {name: jnp.asarray(v, dtype) for name, v in values.items()}
        return values


def promote(tree):
    """A dict of real arrays cast to one float type: their common type (integers become the default
    float type). Traced: called inside the jitted computation."""
    leaves = jax.tree.leaves(tree)
    dtype = jnp.result_type(*leaves) if leaves else jnp.result_type(float)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return jax.tree.map(lambda v: jnp.asarray(v, dtype), tree)


class Shapes(Mapping):
    """The shapes of a `Layout`'s variables by name, read-only; the dict behind it is made when first read."""

    def __init__(self, layout: Layout):
        self._layout = layout

    def __getitem__(self, name):
        return self._layout.shape_of[name]

    def __iter__(self):
        return iter(self._layout.names)

    def __len__(self) -> int:
        return len(self._layout.names)

    def __repr__(self) -> str:
        return repr(self._layout.shape_of)


class Variables(Mapping):
    """The variables of buffers as a read-only mapping by name, each read when it is looked up: an
    objective that reads a few of many variables traces a few slices, not one per variable."""

    def __init__(self, storage: Storage, buffers):
        self._storage, self._buffers = storage, buffers

    def __getitem__(self, name):
        v = self._storage.layout.index[name]
        s = self._storage.schedule
        return self._buffers[int(s.var_class[v])][int(s.var_row[v])]

    def __iter__(self):
        return iter(self._storage.layout.names)

    def __len__(self) -> int:
        return len(self._storage.layout.names)


class Storage:
    """The variables as the sweeps hold them, one buffer per class (`_schedule`), and back.

    Conversions, all traced as a few gathers and scatters whatever the number of variables:
    the flat vector of `Layout` (the matrices' order), dicts by name, and the inputs.
    """

    def __init__(self, layout: Layout, schedule):
        self.layout, self.schedule = layout, schedule
        self.rows = [np.asarray(schedule.var_row[v], np.int32) for v in schedule.class_vars]
        self._groups: dict = {}
        d = schedule.d
        self.input_classes = [
            (c, np.flatnonzero(schedule.var_class[:d] == c)) for c in range(schedule.num_classes) if np.any(schedule.var_class[:d] == c)
        ]

    @functools.cached_property
    def flat_index(self) -> list:
        """Per class, where its values (variables in index order, flattened) sit in the flat vector:
        one index per number, so built only when a flat conversion is asked for."""
        layout, schedule = self.layout, self.schedule
        return [  # a class's variables all have its size: one outer sum each
            (layout.offsets[variables][:, None] + np.arange(math.prod(shape))).reshape(-1).astype(np.int32)
            for variables, shape in zip(schedule.class_vars, schedule.shapes)
        ]

    @functools.cached_property
    def inverse(self) -> np.ndarray:
        """`flat = (classes concatenated)[inverse]`."""
        order = np.concatenate(self.flat_index) if self.flat_index else np.zeros(0, np.int32)
        return np.argsort(order).astype(np.int32)

    @functools.cached_property
    def single(self) -> bool:
        """One class, in variable order (vectors): the flat vector is its buffer's rows, no permutation."""
        return self.schedule.num_classes == 1 and bool(np.all(self.inverse == np.arange(self.inverse.size)))

    def groups(self, names: Sequence[Hashable]) -> tuple:
        """The variables `names` grouped by class: `((c, rows, names of class c), ...)`."""
        key = tuple(names)
        cached = self._groups.get(key)
        if cached is None:
            s = self.schedule
            index = self.layout.input_index if names is self.layout.input_names else self.layout.index
            by_class: dict = {}
            for name in names:
                v = index[name]
                by_class.setdefault(int(s.var_class[v]), []).append((int(s.var_row[v]), name))
            cached = self._groups[key] = tuple(
                (c, np.asarray([r for r, _ in items], np.int32), [n for _, n in items]) for c, items in sorted(by_class.items())
            )
        return cached

    def stack(self, buffers, names: Sequence[Hashable]) -> list:
        """What a jitted call returns of the variables `names`: the buffers of their classes, whole.
        A dict would be one XLA output (and one compiled kernel, ~30 ms on CPU) per variable; the rows
        of `names` only, a copy (of all the weights, for a gradient)."""
        return [buffers[c] for c, _, _ in self.groups(names)]

    def unstack(self, parts, names: Sequence[Hashable]) -> dict:
        """`stack`'s result as a dict by name, in the order of `names`.

        Concrete arrays are split as NumPy views (no copy, no dispatch per variable); traced ones
        (under an enclosing `jax.jit`) by indexing.
        """
        out = {}
        for (_, rows, group), part in zip(self.groups(names), parts):
            if not isinstance(part, jax.core.Tracer):
                part = np.asarray(part)
            for name, row in zip(group, rows.tolist()):
                out[name] = part[row]  # a NumPy view, ~0.2 µs
        return {name: out[name] for name in names}

    def zeros(self, dtype) -> list:
        """Buffers of zeros."""
        s = self.schedule
        return [jnp.zeros((rows,) + shape, dtype) for rows, shape in zip(s.rows, s.shapes)]

    def tables(self) -> dict:
        """The index arrays of the flat conversions, passed to the jitted code as arguments: embedded as
        constants, XLA would constant-fold the scatters of a linear objective's gradient (seconds at 10⁵)."""
        return dict(rows=list(self.rows), flat_index=list(self.flat_index), inverse=self.inverse)

    def from_flat(self, flat: jax.Array, t: dict) -> list:
        """A flat vector `(size,)` (every variable) as buffers (spare rows 0); `t` is `tables()`."""
        out = self.zeros(flat.dtype)
        for c, (rows, index) in enumerate(zip(t["rows"], t["flat_index"])):
            if rows.shape[0]:
                values = jnp.reshape(flat[index], (rows.shape[0],) + self.schedule.shapes[c])
                out[c] = out[c].at[rows].set(values, unique_indices=True)
        return out

    def to_flat(self, buffers, t: dict) -> jax.Array:
        """Buffers as the flat vector `(size,)`, in variable order; `t` is `tables()`."""
        parts = [jnp.ravel(b[rows]) for b, rows in zip(buffers, t["rows"]) if rows.shape[0]]
        if not parts:
            return jnp.zeros(0, buffers[0].dtype)
        if len(parts) == 1 and self.single:  # one class in variable order (vectors): no permutation
            return parts[0]
        return jnp.concatenate(parts)[t["inverse"]]

    def from_dict(self, tree: Mapping, dtype) -> list:
        """A dict of (some) variables by name as buffers, the others 0."""
        out = self.zeros(dtype)
        for c, rows, names in self.groups(list(tree)):
            out[c] = out[c].at[rows].set(jnp.stack([jnp.asarray(tree[name], dtype) for name in names]), unique_indices=True)
        return out

    def to_dict(self, buffers, names: Sequence[Hashable] | None = None) -> dict:
        """Buffers as a dict `{name: array}` of the variables `names` (default all); traced."""
        names = self.layout.names if names is None else list(names)
        out = {}
        for c, rows, group in self.groups(names):
            out.update(zip(group, buffers[c][rows]))
        return {name: out[name] for name in names}

    def stack_inputs(self, values: Mapping, dtype) -> list:
        """The inputs (a checked dict by input name) stacked by class, in the classes' order: NumPy on
        the host for concrete values (XLA compiles a concatenate of m operands in time growing with
        m: 4 s at 2,000), `jnp.stack` for traced ones."""
        parts = []
        for _, _, names in self.groups(self.layout.input_names):
            column = [values[name] for name in names]
            if any(isinstance(v, jax.core.Tracer) for v in column):
                parts.append(jnp.stack([jnp.asarray(v, dtype) for v in column]))
            else:
                parts.append(np.stack([np.asarray(v) for v in column]).astype(dtype, copy=False))
        return parts

    def inputs(self, x, dtype) -> list:
        """Buffers holding the inputs: `x` a vector `(d,)` of scalars, or the inputs stacked by class
        (`stack_inputs`)."""
        out = self.zeros(dtype)
        if isinstance(x, Mapping):  # a dict by input name: stacked here
            x = self.stack_inputs(x, dtype)
        if isinstance(x, (list, tuple)):
            for (c, _rows, _), part in zip(self.groups(self.layout.input_names), x):
                out[c] = lax.dynamic_update_slice_in_dim(out[c], jnp.asarray(part, dtype), 0, 0)
            return out
        ((c, _),) = self.input_classes
        out[c] = out[c].at[: self.schedule.d].set(x.astype(dtype))
        return out

    def seed(self, dx, dtype, t: dict) -> list:
        """`[dx; 0]` as buffers: the inputs' tangents `dx` (a vector `(d,)` or a dict) in their rows,
        zeros elsewhere, every buffer a linear function of dx."""
        if isinstance(dx, Mapping):
            dx = self.stack_inputs(dx, dtype)
        if not isinstance(dx, (list, tuple)):
            rest = jnp.zeros(self.layout.size - dx.shape[0], dtype)
            return self.from_flat(jnp.concatenate([dx.astype(dtype), rest]), t)
        # the inputs stacked by class: one flat vector, cut into the classes' buffers and padded
        s = self.schedule
        parts = {c: jnp.asarray(part, dtype) for (c, _, _), part in zip(self.groups(self.layout.input_names), dx)}
        flat = jnp.concatenate([jnp.ravel(p) for p in parts.values()]) if parts else jnp.zeros(0, dtype)
        out, start = [], 0
        for c in range(s.num_classes):
            shape = s.shapes[c]
            m = parts[c].shape[0] if c in parts else 0
            size = m * math.prod(shape)
            block = jnp.reshape(flat[start : start + size], (m,) + shape)
            start += size
            out.append(jnp.pad(block, [(0, s.rows[c] - m)] + [(0, 0)] * len(shape)))
        return out
