"""The builder: a program as a list of equality constraints over named scalar variables.

Variables are numbered in the order they are named: the d inputs first (indices 0..d-1), then one
variable per constraint, in the order the constraints are added. A constraint may only read
variables defined before it, so this numbering is a topological order and the constraint Jacobian
is upper triangular in it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Sequence

from lagjax import _signature


@dataclasses.dataclass(frozen=True)
class Constraint:
    """One constraint `z[i] = f(z[args])`: its penalty is `f(z[args]) - z[i]`.

    Attributes:
      name: the variable it defines (the left-hand side).
      i: that variable's index.
      f: maps the 1-D vector `z[args]` (shape `(k,)`) to a scalar (shape `()` or `(1,)`).
      args: indices of the right-hand side, in order (repeats allowed), length k >= 1.
      arg_names: their names.
      df: optional, maps `z[args]` to the k partials `∂f/∂z[args]` (shape `(k,)`);
        `None` means the partials come from `jax.grad(f)`.
    """

    name: Hashable
    i: int
    f: Callable
    args: tuple[int, ...]
    arg_names: tuple[Hashable, ...]
    df: Callable | None = None

    def __str__(self) -> str:
        fname = getattr(self.f, "__name__", type(self.f).__name__)
        return f"{self.name} = {fname}({', '.join(map(str, self.arg_names))})"


class Constraints:
    """A program: named inputs, then constraints `lhs = f(rhs)` added one at a time.

    `Constraints(["x", "y"])` declares the inputs; their indices, `C.inputs`, are `[0, 1]`.
    `len(C)` is the number of constraints; iterating gives the `Constraint` records in order.
    """

    def __init__(self, inputs: Sequence[Hashable]):
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise TypeError(
                f"`inputs` must be a list of names, got {inputs!r}; write e.g. Constraints(['x', 'y'])."
            )
        self._index: dict[Hashable, int] = {}
        self._names: list[Hashable] = []
        self._constraints: list[Constraint] = []
        for name in inputs:
            _check_name(name, "input")
            if name in self._index:
                raise ValueError(f"Input {name!r} is listed twice in `inputs`; each input is named once.")
            self._define(name)
        self.inputs: list[int] = list(range(len(self._names)))
        self._checked: set[tuple[Any, Any, int]] = set()

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

    def index(self, name: Hashable) -> int:
        """The index of variable `name`."""
        try:
            return self._index[name]
        except (KeyError, TypeError):
            raise KeyError(f"No variable named {name!r}; the program has {self._names!r}.") from None

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
    ) -> Constraint:
        """Define the new variable `lhs = f(values of rhs)`.

        Args:
          lhs: name of the variable this constraint defines; new, not an input.
          f: a JAX-traceable function of the 1-D vector of argument values (shape `(k,)`,
            `k = len(rhs)`), returning a scalar (shape `()` or `(1,)`). `jnp.sum`, `jnp.exp`,
            `jnp.tanh` work as they are.
          rhs: names of the arguments, each defined earlier (an input or an earlier `lhs`);
            a name may repeat.
          df: optional gradient of `f`: `(k,) -> (k,)`. Omitted, `jax.grad(f)` is used.

        Returns:
          The `Constraint` record.

        Raises:
          ValueError / TypeError naming `lhs` when the constraint is malformed: `lhs` already
          defined or an input, a name of `rhs` not yet defined or equal to `lhs`, an empty `rhs`,
          or `f` / `df` returning the wrong shape.
        """
        _check_name(lhs, "left-hand side")
        if lhs in self._index:
            if self._index[lhs] < len(self.inputs):
                raise ValueError(
                    f"{lhs!r} is an input of this program and cannot be redefined by a constraint; "
                    f"inputs take their values from `x`. Give this constraint a new name."
                )
            earlier = self._constraints[self._index[lhs] - len(self.inputs)]
            raise ValueError(
                f"{lhs!r} is already defined by the constraint `{earlier}`; each variable is defined "
                f"once. Give this constraint a new name."
            )
        if not callable(f):
            raise TypeError(f"`f` for {lhs!r} must be callable, got {f!r}.")
        if df is not None and not callable(df):
            raise TypeError(f"`df` for {lhs!r} must be callable or None, got {df!r}.")
        if isinstance(rhs, (str, bytes)) or not isinstance(rhs, Sequence):
            raise TypeError(
                f"The right-hand side of {lhs!r} must be a list of names, got {rhs!r}; "
                f"write e.g. add_constraint({lhs!r}, f, [{rhs!r}])."
            )
        if len(rhs) == 0:
            raise ValueError(
                f"The right-hand side of {lhs!r} is empty; a constraint reads at least one variable. "
                f"For a constant, fold it into the functions that use it."
            )
        for name in rhs:
            if name == lhs:
                raise ValueError(
                    f"{lhs!r} appears in its own right-hand side; a variable cannot depend on itself "
                    f"(cyclic programs are not supported yet)."
                )
            if not _is_hashable(name) or name not in self._index:
                raise ValueError(
                    f"{name!r} is used in the right-hand side of {lhs!r} before it is defined. Define "
                    f"{name!r} first (an input or an earlier constraint); programs must be acyclic, "
                    f"each variable defined before it is used (cyclic programs are not supported yet)."
                )
        key = (id(f), id(df), len(rhs))  # identity: callables need not be hashable; the records keep them alive
        if key not in self._checked:
            _signature.check_local(f, df, len(rhs), f"constraint {lhs!r}")
            self._checked.add(key)
        args = tuple(self._index[name] for name in rhs)
        constraint = Constraint(lhs, self._define(lhs), f, args, tuple(rhs), df)
        self._constraints.append(constraint)
        return constraint


def _is_hashable(name: Any) -> bool:
    try:
        hash(name)
    except TypeError:
        return False
    return True


def _check_name(name: Any, role: str) -> None:
    if not _is_hashable(name):
        raise TypeError(f"A variable name must be hashable (a string, say); the {role} is {name!r}.")
