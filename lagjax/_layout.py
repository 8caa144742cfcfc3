"""The variables of a structured program: their shapes, and their places in one flat vector.

The method's matrices (D, n × n in the scalar case) are over the *flattened* variables: variable v
of shape `s` occupies `size(s)` consecutive entries, at `offsets[v]`, in variable order. Everything
else is a dict keyed by name, with each variable's own shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class Layout:
    """Names and shapes of the variables (inputs first), and the flat vector they make.

    Attributes: `names`, `shapes` (dict by name), `input_names`, `offsets` (shape `(n + 1,)`, the
    start of each variable in the flat vector, and its end), `size` (the flat length N).
    """

    def __init__(self, names: Sequence[Hashable], shapes: Sequence[tuple[int, ...]], d: int):
        self.names = list(names)
        self.shapes = dict(zip(self.names, shapes))
        self.input_names = self.names[:d]
        sizes = [math.prod(s) for s in shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self.size = int(self.offsets[-1])
        self._slice = {name: slice(int(a), int(b)) for name, a, b in zip(self.names, self.offsets[:-1], self.offsets[1:])}

    def slice(self, name: Hashable) -> slice:
        """Where variable `name` sits in the flat vector."""
        return self._slice[name]

    def flatten(self, tree: Mapping, names: Sequence[Hashable] | None = None) -> jax.Array:
        """The dict `{name: array}` as one flat vector, in variable order (of `names`, default all)."""
        names = self.names if names is None else names
        return jnp.concatenate([jnp.ravel(tree[name]) for name in names]) if names else jnp.zeros(0)

    def unflatten(self, flat: jax.Array, names: Sequence[Hashable] | None = None) -> dict:
        """The flat vector (of the variables `names`, default all) as a dict of arrays by name."""
        names = list(self.names if names is None else names)
        if not names:
            return {}
        sizes = [self._slice[name].stop - self._slice[name].start for name in names]
        # `lax.split`, not slices: its transpose is one concatenate, where slices transpose into a
        # full-size pad per variable (quadratic in the program under reverse mode).
        parts = jax.lax.split(flat, sizes)
        return {name: jnp.reshape(part, self.shapes[name]) for name, part in zip(names, parts)}

    def check(self, tree, argument: str, names: Sequence[Hashable], dtype=None) -> dict:
        """`tree` as a dict of float arrays, one per name of `names`, each of its declared shape.

        Values are promoted to one float type: `dtype` if given, else their common type (integers
        become the default float type). Errors name the argument and the key.
        """
        if not isinstance(tree, Mapping):
            raise TypeError(
                f"`{argument}` must be a dict of arrays keyed by variable name {list(names)}; "
                f"got {type(tree).__name__}."
            )
        wanted = set(names)
        missing = [k for k in names if k not in tree]
        unexpected = [k for k in tree if k not in wanted]
        if missing or unexpected:
            raise ValueError(f"The keys of `{argument}` must be {list(names)}; missing {missing}, unexpected {unexpected}.")
        values = {}
        for name in names:
            value = tree[name]
            where = f"{argument}[{name!r}]"
            if not isinstance(value, jax.Array):
                try:
                    value = jnp.asarray(value)
                except TypeError as error:
                    raise TypeError(f"`{where}` must be an array of shape {self.shapes[name]}; got {type(value).__name__} ({error}).") from None
            if jnp.issubdtype(value.dtype, jnp.complexfloating):
                raise TypeError(f"`{where}` is complex ({value.dtype}); lagjax programs are real: pass float32 or float64.")
            if not (jnp.issubdtype(value.dtype, jnp.number) or value.dtype == jnp.bool_):
                raise TypeError(f"`{where}` must hold real numbers; got dtype {value.dtype}.")
            if value.shape != self.shapes[name]:
                raise ValueError(
                    f"`{where}` must have the shape declared for {name!r}, {self.shapes[name]}; got {value.shape}."
                    + (" For a batch, use jax.vmap." if value.shape[value.ndim - len(self.shapes[name]):] == self.shapes[name] else "")
                )
            values[name] = value
        if dtype is None:
            dtype = jnp.result_type(*values.values()) if values else jnp.result_type(float)
            if not jnp.issubdtype(dtype, jnp.floating):
                dtype = jnp.result_type(float)
        return {name: v.astype(dtype) for name, v in values.items()}
