"""`Computation`: a program with an objective, and every quantity of the method of Lagrange multipliers.

The Lagrangian, with one multiplier per variable (x: d inputs, z: n variables, λ: n multipliers):

    L(x, z, λ) = f(z) + Σ_{i<d} λ_i (x_i - z_i) + Σ_{i>=d} λ_i (f_i(z[args(i)]) - z_i)

Its stationary point is forward and backward propagation:
    ∇_λ L = 0  <=>  the constraints hold            (forward pass: `solve_constraints`)
    ∇_z L = 0  <=>  D λ = -∇f(z)                    (backward pass: `multipliers`)
    ∇_x L = λ[:d] is then the gradient of f(z(x))   (`gradient`)
    Dᵀ t = -v, v = [direction; 0], gives dz/dx · direction  (forward mode: `tangents`)

Every program goes through the same pipeline: the builder's constraints, resolved (forward
references, shapes), levelled over the condensation of their strongly connected components
(`_components`), scheduled in steps of groups (`_schedule`), and swept (`_sweeps`) with the local
linear maps at the solution (`_linear`). `as_function` makes the program a JAX function whose
derivatives (any transformation, any order) come from these sweeps (`_function`).

The interface is fixed by how the inputs were declared: a list of names gives vectors in and out (the
original code's API); a dict of shapes (or any array constraint, `Constraints.add`) gives dicts by
name, each of its variable's shape; the matrices of the method (`dconstraints`, the `D` of
`reverse_mode` / `forward_mode`) are then over the flattened variables (`flatten` / `unflatten`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lagjax import _activity, _cyclic, _function, _layout, _linear, _local, _schedule, _signature, _sweeps
from lagjax._program import Constraints


class SolveError(RuntimeError):
    """A cyclic block of a program could not be solved: not converged, singular, or not finite.

    Raised by `Computation` methods called outside `jax.jit`; the message names the block's
    variables and the residual reached, and how many other blocks failed. Attributes: `names` (the
    first failed block's variables), `blocks` (every failed block's variables), `stage`
    ("forward", "multipliers" or "tangents"), `status` (a `Status`), `residual`.
    """

    def __init__(self, names, stage: str, status: int, residual: float, steps: int, others: Sequence = ()):
        self.names, self.stage, self.status, self.residual = names, stage, _cyclic.Status(status), residual
        self.blocks = [tuple(names)] + [tuple(o) for o in others]
        what = {"forward": "solving its constraints", "multipliers": "solving for its multipliers", "tangents": "solving for its tangents"}[
            stage
        ]
        more = ""
        if others:
            shown = ", ".join(str(list(o)) for o in others[:3])
            more = f" {len(others)} other block(s) failed too ({shown}{', ...' if len(others) > 3 else ''}; all in `.blocks`); theirs are NaN as well."
        super().__init__(
            f"The cyclic block of {list(names)} failed {what}: {_cyclic.message(status)} "
            f"(residual {residual:.3g} after {steps} steps). Its values are NaN.{more}"
        )


class ConditionWarning(UserWarning):
    """A cyclic block was solved, but is ill-conditioned at its solution (`Status.ILL_CONDITIONED`):
    its values are kept and are less accurate than the tolerance. Issued by `Computation` methods
    called outside `jax.jit`; the message names the blocks, their condition estimates and what
    accuracy the values have. Attributes: `blocks` (the flagged blocks' variables), `stage`,
    `condition` (their estimates)."""

    def __init__(self, comp, stage: str, info, flagged):
        self.blocks = [comp.blocks[int(k)].names for k in flagged]
        self.stage, self.condition = stage, [float(info.condition[k]) for k in flagged]
        b = int(flagged[0])
        more = f" ({len(flagged) - 1} other block(s) too, all in `.blocks`)" if flagged.size > 1 else ""
        super().__init__(
            f"The cyclic block of {list(self.blocks[0])} is ill-conditioned ({stage}): condition estimate "
            f"{float(info.condition[b]):.3g}, residual {float(info.residual[b]):.3g}{more}. {_cyclic.message(_cyclic.ILL_CONDITIONED)}."
        )


class Computation:
    """A program's constraints and objective, with its forward and backward solves.

    Args:
      f: the objective, a JAX-traceable scalar function of all the variables: of the vector `z`
        (shape `(n,)`) for a program declared with a list of inputs, of the dict `{name: array}`
        for one declared with a dict (or holding array constraints).
      inputs: the input indices, `constraints.inputs` (the first d variables).
      constraints: the `Constraints` of the program. They are read once, here: constraints added
        afterwards are not part of this Computation.
      df: optional gradient of `f` (a vector `(n,)`, or a dict of arrays shaped as the variables);
        omitted, `jax.grad(f)` is used.
      solver: the options of the cyclic blocks' root finder and linear solves (`lagjax.Solver`).
      checked: with cyclic blocks, make a failed block a runtime error inside `jax.jit` too.

    Attributes: `d`, `n` (the number of variables), `inputs`, `names`, `input_names`, `shapes`
    (`{name: shape}`), `size` (N, the length of the flattened variables), `layout`, `constraints`,
    `schedule`, `blocks` (the cyclic blocks, dependencies first, each with its `names`), `f`, `df`.

    Every method accepts arrays of float32 or float64 (integers are promoted to the default float
    type, complex values are refused), runs jitted, compiles once per input shape and dtype, and
    works inside `jax.jit` and `jax.vmap`.

    Cyclic blocks report failure (not converged, singular, non-finite): outside `jax.jit` by raising
    `SolveError` naming the block's variables; inside it by NaN in the block's values (and everything
    computed from them), by `status(x)`, and, with `checked=True`, by a runtime error.
    """

    def __init__(
        self,
        f: Callable,
        inputs: Sequence[int],
        constraints: Constraints,
        df: Callable | None = None,
        *,
        solver: _cyclic.Solver | None = None,
        checked: bool = False,
    ):
        check_arguments(f, inputs, constraints)
        self.constraints = records = constraints.resolved()
        self.d, self.n = constraints.d, constraints.n
        self.inputs = list(constraints.inputs)
        self.names = constraints.names
        self.dicts = constraints.structured  # dicts by name in and out, else vectors
        shapes = constraints.variable_shapes  # in index order: no dict of 10⁶ names to hash
        self.layout = layout = _layout.Layout(self.names, shapes, self.d)
        self.shapes, self.size, self.input_names = layout.shapes, layout.size, layout.input_names
        if self.dicts:
            _signature.check_structured_objective(f, df, self.shapes)
        else:
            _signature.check_objective(f, df, self.n)
        self.f = f
        self.df = jax.grad(lambda z: jnp.reshape(f(z), ())) if df is None else df
        self._df_given = df is not None
        self.solver = _cyclic.check_solver(_cyclic.Solver() if solver is None else solver)
        self.checked = bool(checked)

        self._condensation = level, blocks = constraints.condensation()
        self.schedule = schedule = _schedule.build(self.d, shapes, records, constraints.groups, level, blocks, self.names)
        self.blocks = schedule.blocks
        self.storage = storage = _layout.Storage(layout, schedule)
        self._tables = jax.device_put({**schedule.tables(), "storage": storage.tables()})  # no compile, unlike jnp.asarray
        self.init = dict(constraints.init)  # initial guesses of variables on cycles, by name
        self._init = [self._initial_guesses(group, self.init) for group in schedule.block_groups]
        self._names = {None: self.names, "inputs": self.input_names, "constraints": self.names[self.d :]}
        self._functions = {}  # as_function's results, one per (output, as_dict): compiled once
        self._restrictions = {}  # the active parts (`_activity`), by active inputs
        _warn_if_many_groups(schedule)
        self._jit = {name: jax.jit(getattr(self, "_" + name + "_entry")) for name in _ENTRIES}
        for name in ("gradient_part", "tangents_part"):  # the active part's sweeps, one per set of inputs
            self._jit[name] = jax.jit(getattr(self, "_" + name + "_entry"), static_argnames="active")

    # --- the internal protocol: solve, linearise, objective ----------------------------------
    def solve_point(self, tables, x):
        """The forward pass on the class buffers: `(z, report, factors)` for inputs `x` (a vector or a
        dict); `factors`, the cyclic blocks' factorisations at their roots (`_sweeps.solve`)."""
        dtype = jax.tree.leaves(x)[0].dtype if jax.tree.leaves(x) else jnp.result_type(float)
        z0 = self.storage.inputs(x, dtype)
        init = [jnp.asarray(u, dtype) for u in self._init]
        return _sweeps.solve(self.schedule, tables, z0, self.solver, init)

    def solve_buffers(self, tables, x):
        """The forward pass on the class buffers: `(z, report)` for inputs `x` (a vector or a dict)."""
        z, report, _ = self.solve_point(tables, x)
        return z, report

    def linearize(self, tables, z, factors=None) -> _linear.AtPoint:
        """The local linear maps at z: D without building it (`_linear`); `factors` from `solve_point`
        at z, reused by the cyclic blocks' linear solves."""
        return _linear.AtPoint(self.schedule, tables, z, self.solver, factors)

    def tree(self, buffers, tables):
        """Buffers as the objective sees all variables: a mapping by name (`Variables`: each read when
        looked up), or the vector `(n,)` (traced)."""
        return _layout.Variables(self.storage, buffers) if self.dicts else self.storage.to_flat(buffers, tables["storage"])

    def _out(self, buffers, tables, names=None):
        """What a jitted entry returns of buffers: the vector of all variables (or of the `names`
        "inputs" / "constraints"), or for dicts the variables stacked by class (`Storage.stack`)."""
        if self.dicts:
            return self.storage.stack(buffers, self._names[names])
        flat = self.storage.to_flat(buffers, tables["storage"])
        return {None: flat, "inputs": flat[: self.d], "constraints": flat[self.d :]}[names]

    def _result(self, value, names=None):
        """An entry's `_out` as the user sees it: a vector, or a dict by name."""
        return self.storage.unstack(value, self._names[names]) if self.dicts else value

    def buffers(self, tree, tables, dtype=None):
        """The inverse of `tree`."""
        if self.dicts:
            tree = _layout.promote(tree)
            return self.storage.from_dict(tree, dtype or jax.tree.leaves(tree)[0].dtype)
        return self.storage.from_flat(tree if dtype is None else tree.astype(dtype), tables["storage"])

    def objective(self, z, tables):
        """`f(z)`, a scalar in z's dtype, for buffers z."""
        return jnp.reshape(self.f(self.tree(z, tables)), ()).astype(z[0].dtype)

    def objective_gradient(self, z, tables):
        """`∇f(z)` as buffers: `jax.grad` through the view of the buffers the objective reads (so
        variables it does not read cost nothing), or the user's `df`."""
        if not self._df_given:
            return jax.grad(self.objective)(z, tables)
        g = self.df(self.tree(z, tables))
        if self.dicts:
            return self.storage.from_dict({name: jnp.reshape(g[name], self.shapes[name]) for name in self.names}, z[0].dtype)
        return self.storage.from_flat(jnp.reshape(g, (self.n,)).astype(z[0].dtype), tables["storage"])

    def restriction(self, inputs, seeded=()) -> _activity.Restriction | None:
        """The active part for the inputs `inputs` (indices; `_activity`) and the constraint variables
        `seeded` (those capturing a differentiated parameter), built once; None when it is the whole
        program (every variable computed from them, every argument active)."""
        key = tuple(sorted(set(int(i) for i in inputs))), tuple(sorted(set(int(i) for i in seeded)))
        if key not in self._restrictions:
            R = _activity.Restriction(self, *key)
            whole = R.variables.size == self.n and all(all(mark) for mark in R.schedule.active)
            self._restrictions[key] = None if whole else R
        return self._restrictions[key]

    def _multipliers(self, tables, x):
        z, forward, factors = self.solve_point(tables, x)
        maps = self.linearize(tables, z, factors)
        lam, report = _sweeps.back_substitute(self.schedule, tables, maps, self.objective_gradient(z, tables))
        return z, lam, {"forward": forward, "multipliers": report}

    def _tangent_sweeps(self, tables, z, factors, seeds):
        """Tangents for a batch of seeds (buffers with a leading axis): `(t, report)`."""
        maps = self.linearize(tables, z, factors)
        t, reports = jax.vmap(lambda seed: _sweeps.forward_substitute(self.schedule, tables, maps, seed))(seeds)
        return t, {"tangents": worst(reports)}

    # --- jitted entries: what the public methods run -------------------------------------------
    def _solve_entry(self, tables, x):
        z, report = self.solve_buffers(tables, x)
        return self._out(z, tables), {"forward": report}

    def _forward_entry(self, tables, x):
        z, report = self.solve_buffers(tables, x)
        return self.objective(z, tables), {"forward": report}

    def _multipliers_entry(self, tables, x):
        z, lam, report = self._multipliers(tables, x)
        return (self._out(z, tables), self._out(lam, tables)), report

    def _gradient_entry(self, tables, x):
        _, lam, report = self._multipliers(tables, x)
        return self._out(lam, tables, "inputs"), report

    def _gradient_part_entry(self, tables, rtables, x, active):
        R = self.restriction(active)
        z, forward, factors = self.solve_point(tables, x)
        maps = R.linearize(z, rtables, factors)
        lam, report = R.multipliers(maps, R.gather(self.objective_gradient(z, tables), rtables), rtables)
        return R.out(lam, rtables), {"forward": forward, "multipliers": report}

    def _tangents_part_entry(self, tables, rtables, x, v, active):  # v: the active inputs' directions, by name
        R = self.restriction(active)
        z, forward, factors = self.solve_point(tables, x)
        dtype = z[0].dtype
        t, report = R.tangents(R.linearize(z, rtables, factors), R.seed(v, dtype, rtables), rtables)
        t = R.scatter(t, rtables, dtype)
        return (self._out(z, tables), self._out(t, tables)), {"forward": forward, "tangents": report}

    def _tangents_entry(self, tables, x, v):  # v: (m, width), flat input directions
        z, forward, factors = self.solve_point(tables, x)
        width = int(self.layout.offsets[self.d])
        rest = jnp.zeros((v.shape[0], self.size - width), v.dtype)
        seeds = jax.vmap(lambda e: self.storage.from_flat(e, tables["storage"]))(jnp.concatenate([v, rest], axis=1))
        t, report = self._tangent_sweeps(tables, z, factors, seeds)
        report["forward"] = forward
        return (self._out(z, tables), jax.vmap(lambda b: self._out(b, tables))(t)), report

    def _jacobian_entry(self, tables, x):
        z, forward, factors = self.solve_point(tables, x)
        width = int(self.layout.offsets[self.d])
        dtype = z[0].dtype
        seeds = jax.vmap(lambda e: self.storage.from_flat(e, tables["storage"]))(jnp.eye(width, self.size, dtype=dtype))
        t, report = self._tangent_sweeps(tables, z, factors, seeds)
        report["forward"] = forward
        T = jax.vmap(lambda b: self.storage.to_flat(b, tables["storage"]))(t)  # (width, size)
        if not self.dicts:
            return T.T, report
        layout = self.layout
        return {
            name: {
                a: jnp.moveaxis(T[layout.slice(a), layout.slice(name)], 0, -1).reshape(self.shapes[name] + self.shapes[a])
                for a in self.input_names
            }
            for name in self.names
        }, report

    def _penalties_entry(self, tables, z):
        return self._out(_local.penalties(self.schedule, tables, self.buffers(z, tables)), tables, "constraints")

    def _lagrangian_entry(self, tables, x, z, lam):
        zb, lb = self.buffers(z, tables), self.buffers(lam, tables)
        pen = _local.penalties(self.schedule, tables, zb)
        inputs = self.storage.inputs(x, zb[0].dtype)
        # penalties are zero at the inputs' rows; x - z lives only there
        gap = [pen_c + jnp.where(_input_rows(self.schedule, c), inputs[c] - zb[c], 0) for c, pen_c in enumerate(pen)]
        return self.objective(zb, tables) + sum(jnp.vdot(l, p) for l, p in zip(lb, gap))

    def _dlagrangian_entry(self, tables, x, z, lam):
        zb, lb = self.buffers(z, tables), self.buffers(lam, tables)
        maps = self.linearize(tables, zb)
        Dl = _sweeps.apply(self.schedule, tables, maps, lb)
        dz = [g + d for g, d in zip(self.objective_gradient(zb, tables), Dl)]
        pen = _local.penalties(self.schedule, tables, zb)
        inputs = self.storage.inputs(x, zb[0].dtype)
        dl = [p + jnp.where(_input_rows(self.schedule, c), inputs[c] - zb[c], 0) for c, p in enumerate(pen)]
        return self._out(lb, tables, "inputs"), self._out(dz, tables), self._out(dl, tables)

    def _dconstraints_entry(self, tables, z):
        maps = self.linearize(tables, self.buffers(z, tables))
        st = tables["storage"]
        apply = lambda e: self.storage.to_flat(_sweeps.apply(self.schedule, tables, maps, self.storage.from_flat(e, st)), st)  # noqa: E731
        dtype = jax.tree.leaves(z)[0].dtype
        return jax.vmap(apply)(jnp.eye(self.size, dtype=dtype)).T  # row k of the map: column k of D

    def _partials_entry(self, tables, z):
        maps = self.linearize(tables, self.buffers(z, tables))
        return [maps.partials[g] for g in self.schedule.scalar_groups]

    def _reverse_mode_entry(self, tables, D, v):
        maps = _linear.FromDense(self.schedule, tables, self.layout, D)
        lam, _ = _sweeps.back_substitute(self.schedule, tables, maps, self.storage.from_flat(v, tables["storage"]))
        return self.storage.to_flat(lam, tables["storage"])

    def _forward_mode_entry(self, tables, D, v):
        maps = _linear.FromDense(self.schedule, tables, self.layout, D)
        t, _ = _sweeps.forward_substitute(self.schedule, tables, maps, self.storage.from_flat(v, tables["storage"]))
        return self.storage.to_flat(t, tables["storage"])

    def _status_entry(self, tables, x):
        _, _, report = self._multipliers(tables, x)
        return report

    # --- failures of cyclic blocks ----------------------------------------------------------
    def _initial_guesses(self, group, init: dict) -> np.ndarray:
        """A block group's flat initial guesses for the root finder, `(B, size)`: the given `init`
        values, else zeros."""
        guesses = np.zeros((len(group.blocks), group.size))
        if not init:
            return guesses
        column = 0  # of `group.order`: class c's variables are counts[c] columns
        for c in group.classes:
            shape = self.schedule.shapes[c]
            size = math.prod(shape)
            for j in range(group.counts[c]):
                at = group.offsets[c] + j * size
                for b, v in enumerate(group.order[:, column + j].tolist()):
                    name = self.names[v]
                    if name not in init:
                        continue
                    value = np.asarray(init[name], np.float64)
                    if value.shape != shape and value.size != 1:
                        raise ValueError(f"The initial guess of {name!r} has shape {value.shape}; {name!r} has shape {shape}.")
                    guesses[b, at : at + size] = np.ravel(np.broadcast_to(value, shape))
            column += group.counts[c]
        return guesses

    def _run(self, name: str, *args):
        """Call a jitted entry that reports on the cyclic blocks; raise `SolveError` if one failed."""
        result, report = self._jit[name](self._tables, *args)
        self._check(report)
        return result

    def _check(self, report: dict) -> None:
        if not self.blocks:
            return
        leaves = jax.tree.leaves(report)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            if self.checked:
                jax.debug.callback(self._raise_if_failed, report)
            return
        self._raise_if_failed(report)

    def _raise_if_failed(self, report: dict) -> None:
        for stage in ("forward", "multipliers", "tangents"):
            if stage not in report:
                continue
            info = jax.tree.map(np.asarray, report[stage])
            failed = np.flatnonzero(~np.isin(info.status, (_cyclic.SUCCESS, _cyclic.ILL_CONDITIONED)))
            if failed.size:
                b = int(failed[0])
                others = [self.blocks[int(k)].names for k in failed[1:]]
                raise SolveError(self.blocks[b].names, stage, int(info.status[b]), float(info.residual[b]), int(info.steps[b]), others)
            flagged = np.flatnonzero(info.status == _cyclic.ILL_CONDITIONED)
            if flagged.size:
                warnings.warn(ConditionWarning(self, stage, info, flagged), stacklevel=4)

    def status(self, x) -> dict:
        """The cyclic blocks' reports at `x`, jittable: `{"forward": Info, "multipliers": Info}`, each
        `Info`'s fields (status, residual, steps, condition) arrays of shape `(len(blocks),)`, one entry
        per block of `blocks`, in order; `status == 0` is success (`lagjax.Status`). Use it inside
        `jax.jit`, where failures cannot raise."""
        return self._jit["status"](self._tables, self._inputs(x))

    def __repr__(self) -> str:
        s = self.schedule
        kind = "dicts" if self.dicts else "vectors"
        return (
            f"Computation(d={self.d}, n={self.n}, size={self.size}, {kind}, groups={len(s.groups)}, "
            f"depth={s.depth}, steps={s.num_steps}x{s.width}, cyclic blocks={len(self.blocks)})"
        )

    # --- argument checks -----------------------------------------------------------------
    def _vector(self, value, name: str, size: int, what: str, dtype=None) -> jax.Array:
        value = jnp.asarray(value, dtype)
        if jnp.issubdtype(value.dtype, jnp.complexfloating):
            raise TypeError(f"`{name}` is complex ({value.dtype}); lagjax programs are real: pass float32 or float64.")
        if not jnp.issubdtype(value.dtype, jnp.floating):
            value = value.astype(jnp.result_type(float))
        if value.shape != (size,):
            raise ValueError(f"`{name}` must have shape ({size},), {what}; got shape {value.shape}.")
        return value

    def _x(self, x, dtype=None):
        """The inputs checked and promoted to one float type, as given: a vector, or a dict by name."""
        if self.dicts:
            values = self.layout.check(x, "x", self.input_names)
            dtype = dtype or _float_type(values)
            return {name: jnp.asarray(v, dtype) for name, v in values.items()}
        return self._vector(x, "x", self.d, f"one value per input {self.input_names}", dtype)

    def _inputs(self, x, dtype=None):
        """The inputs as the jitted entries take them: a vector, or for dicts stacked by class
        (`Storage.stack_inputs`: one array per shape, whatever the number of inputs)."""
        if not self.dicts:
            return self._x(x, dtype)
        values = self.layout.check(x, "x", self.input_names)
        dtype = dtype or _float_type(values)
        if self.d <= HOST_STACKING_MIN:  # stacked inside the jitted entry: no work per call here
            return {name: v if getattr(v, "dtype", None) == dtype else jnp.asarray(v, dtype) for name, v in values.items()}
        return self.storage.stack_inputs(values, dtype)

    def _z(self, z, name: str = "z", dtype=None):
        if self.dicts:
            return self.layout.check(z, name, self.names, dtype)
        return self._vector(z, name, self.n, "one value per variable", dtype)

    def _flat(self, v, name: str, dtype=None) -> jax.Array:
        what = "the flattened variables (see `flatten`)" if self.dicts else "one value per variable"
        return self._vector(v, name, self.size, what, dtype)

    def _square(self, D) -> jax.Array:
        D = jnp.asarray(D)
        if D.shape != (self.size, self.size):
            raise ValueError(f"`D` must have shape ({self.size}, {self.size}), as from `dconstraints`; got {D.shape}.")
        return D

    def _common(self, *trees) -> jnp.dtype:
        dtype = jnp.result_type(*(jnp.asarray(leaf) for tree in trees for leaf in jax.tree.leaves(tree)))
        return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)

    # --- flat views ----------------------------------------------------------------------
    def flatten(self, tree: dict) -> jax.Array:
        """A dict of all variables `{name: array}` as one flat vector, shape `(size,)`, in variable order."""
        return self.layout.flatten(self.layout.check(tree, "tree", self.names))

    def unflatten(self, flat) -> dict:
        """A flat vector, shape `(size,)`, as the dict of all variables `{name: array}`."""
        return self.layout.unflatten(self._flat(flat, "flat"))

    # --- the method ----------------------------------------------------------------------
    def solve_constraints(self, x):
        """The forward pass: every variable, for inputs `x`.

        Vectors: `x` `(d,)` -> `z` `(n,)`. Dicts: `x` by input name -> `z` by variable name.
        """
        return self._result(self._run("solve", self._inputs(x)))

    def forward(self, x) -> jax.Array:
        """Evaluate `f(z(x))`, a scalar."""
        return self._run("forward", self._inputs(x))

    def multipliers(self, x):
        """The stationary point `(z, λ)`, both over all variables (`(n,)` vectors, or dicts), with
        `D λ = -∇f(z)`: by back-substitution over the steps, a linear solve on each cyclic block; D is never built."""
        z, lam = self._run("multipliers", self._inputs(x))
        return self._result(z), self._result(lam)

    def gradient(self, x, wrt: Sequence[Hashable] | None = None):
        """The gradient of `f(z(x))` w.r.t. `x`: the input multipliers, shape `(d,)` (or a dict by input name).

        `wrt`: the names of the inputs to differentiate w.r.t. (default all). The multipliers are
        then solved on the active part only, the variables computed from those inputs (`_activity`),
        and the result holds those inputs only: shape `(len(wrt),)` in input order, or a dict.
        """
        if wrt is None:
            return self._result(self._run("gradient", self._inputs(x)), "inputs")
        active = self._wrt(wrt)
        R = self.restriction(active)
        if R is None:
            full = self._result(self._run("gradient", self._inputs(x)), "inputs")
            return {self.names[i]: full[self.names[i]] for i in active} if self.dicts else full[np.asarray(active)]
        result, report = self._jit["gradient_part"](self._tables, R.tables, self._inputs(x), active=active)
        self._check(report)
        return R.result(result)

    def _wrt(self, wrt) -> tuple[int, ...]:
        """`wrt`, names of inputs, as their sorted indices; a clear error for anything else."""
        if isinstance(wrt, (str, bytes)) or not isinstance(wrt, Iterable):
            raise TypeError(f"`wrt` must be a list of input names (of {self.input_names}); got {wrt!r}.")
        wrt = list(wrt)
        unknown = [name for name in wrt if not _is_input(self.layout, name)]
        if unknown or not wrt:
            raise ValueError(f"`wrt` must name some of the program's inputs {self.input_names}; got {wrt!r} (not inputs: {unknown}).")
        return tuple(sorted({self.layout.index[name] for name in wrt}))

    def tangents(self, x, v):
        """Forward mode: `(z, t)` with `t = dz/dx · v`, the directional derivative of z along v.

        Solves `Dᵀ t = -[v; 0]` by forward substitution; D is never built. Vectors: `v` shape `(d,)`,
        or `(m, d)` for m directions at once; `t` shape `(n,)` or `(m, n)`. Dicts: `v` a dict by input
        name like `x`, `t` a dict by variable name; an input missing from `v` has direction zero, and
        only the variables computed from the others are swept (the rest of `t` is zero).
        """
        x = self._inputs(x)
        dtype = jax.tree.leaves(x)[0].dtype if jax.tree.leaves(x) else None
        if self.dicts and isinstance(v, Mapping) and set(v) < set(self.input_names):  # zero along the others
            R = self.restriction(self._wrt(list(v)))
            if R is not None:
                v = self.layout.check(v, "v", R.names, dtype)
                (z, t), report = self._jit["tangents_part"](self._tables, R.tables, x, v, active=R.inputs)
                self._check(report)
                return self._result(z), self._result(t)
            v = {**{name: np.zeros(self.shapes[name], dtype) for name in self.input_names}, **v}
        if self.dicts:
            directions = self.layout.flatten(self.layout.check(v, "v", self.input_names, dtype), self.input_names)[None]
        else:
            directions = jnp.asarray(v, dtype)
            if directions.ndim not in (1, 2) or directions.shape[-1] != self.d:
                raise ValueError(f"`v` must have shape ({self.d},) or (m, {self.d}), one entry per input; got {directions.shape}.")
        z, t = self._run("tangents", x, jnp.atleast_2d(directions))
        if self.dicts:
            return self._result(z), self._result([a[0] for a in t])
        return z, (t[0] if directions.ndim == 1 else t)

    def jacobian(self, x):
        """`dz/dx` by forward mode, one tangent sweep per input entry: shape `(n, d)`, or, for dicts,
        `{variable: {input: array}}` of shapes `variable's shape + input's shape` (as `jax.jacfwd` gives)."""
        return self._run("jacobian", self._inputs(x))

    def penalties(self, z):
        """The constraint values `f_i(z[args(i)]) - z_i`: shape `(n - d,)` in constraint order, or a dict by constraint name."""
        return self._result(self._jit["penalties"](self._tables, self._z(z)), "constraints")

    def lagrangian(self, x, z, l) -> jax.Array:
        """`L = f(z) + Σ_inputs <λ_i, x_i - z_i> + Σ_constraints <λ_i, f_i(z[args(i)]) - z_i>`, a scalar."""
        dtype = self._common(x, z, l)
        return self._jit["lagrangian"](self._tables, self._inputs(x, dtype), self._z(z, dtype=dtype), self._z(l, "l", dtype))

    def dlagrangian(self, x, z, l):
        """The gradient of the Lagrangian, `(dx, dz, dl)`, shapes `(d,)`, `(n,)`, `(n,)` (or dicts).

        `dx = λ[:d]`, `dz = ∇f(z) + D λ`, `dl = [x - z[:d]; penalties(z)]`; D is never built.
        """
        dtype = self._common(x, z, l)
        dx, dz, dl = self._jit["dlagrangian"](self._tables, self._inputs(x, dtype), self._z(z, dtype=dtype), self._z(l, "l", dtype))
        return self._result(dx, "inputs"), self._result(dz), self._result(dl)

    def dconstraints(self, z) -> jax.Array:
        """The dense constraint Jacobian D at `z`, shape `(size, size)` over the flattened variables
        (`(n, n)` for vectors): for small programs and checks."""
        return self._jit["dconstraints"](self._tables, self._z(z))

    def sparse_dconstraints(self, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """D at `z` in coordinate form, `(values, rows, cols)`, NumPy arrays.

        `D[rows[e], cols[e]] += values[e]` over the entries e builds D (a variable repeated among a
        constraint's arguments has one entry per occurrence; they add up), e.g.
        `scipy.sparse.coo_matrix((values, (rows, cols)), shape=(size, size))`. The -1 diagonal is
        included. Programs of scalars (any size) are read off the local partials; others off the dense D.
        """
        s = self.schedule
        if len(s.scalar_groups) < len(s.groups):
            D = np.asarray(self.dconstraints(z))
            rows, cols = np.nonzero(D)
            return D[rows, cols], rows, cols
        P = [np.asarray(p) for p in self._jit["partials"](self._tables, self._z(z))]
        offsets = self.layout.offsets
        values = [p.reshape(-1) for p in P]
        rows = [offsets[s.group_args[g]].reshape(-1) for g in s.scalar_groups]
        cols = [np.repeat(offsets[s.group_vars[g]], s.groups[g].k) for g in s.scalar_groups]
        diagonal = np.arange(self.size)
        dtype = P[0].dtype if P else np.float64
        return (
            np.concatenate(values + [np.full(self.size, -1, dtype)]),
            np.concatenate(rows + [diagonal]),
            np.concatenate(cols + [diagonal]),
        )

    def reverse_mode(self, D, v) -> jax.Array:
        """Solve `D λ = -v` by back-substitution; `v` and `λ` flat, shape `(size,)` (`(n,)` for vectors).

        D is a constraint Jacobian as from `dconstraints`: its diagonal blocks are -I by construction
        and are not read (but a cyclic block's, which is solved densely); of the rest, only the
        blocks on the program's pattern are read.
        """
        D = self._square(D)
        dtype = self._common(D, v)
        return self._jit["reverse_mode"](self._tables, D.astype(dtype), self._flat(v, "v", dtype))

    def forward_mode(self, D, v) -> jax.Array:
        """Solve `Dᵀ t = -v` by forward substitution; `v` and `t` flat, shape `(size,)` (see `reverse_mode`)."""
        D = self._square(D)
        dtype = self._common(D, v)
        return self._jit["forward_mode"](self._tables, D.astype(dtype), self._flat(v, "v", dtype))

    # --- a JAX function ------------------------------------------------------------------
    def as_function(self, output: str = "f", *, as_dict: bool | None = None, params=None) -> Callable:
        """The program as a JAX function of its inputs, differentiated by lagjax's sweeps.

        `output="f"`: `x ↦ f(z*(x))`, a scalar. `output="z"`: `x ↦ z*(x)`, the solved variables.

        Inputs `x`: as the other methods take them (a vector `(d,)` in input order, or a dict by
        input name; a program of scalars also takes a dict `{name: scalar}`). float32 and float64 are
        kept (a dict's values are promoted to their common type); integers become the default float
        type. Output `z`: a vector `(n,)` in variable order, or, when `x` is a dict (or `as_dict=True`),
        a dict of all variables by name; `as_dict=False` forces the (flat) vector.

        It composes with `jax.jit`, `jax.vmap` (batches run as one batched sweep), `jax.grad`,
        `jax.vjp`, `jax.jacrev` (reverse mode: the multiplier sweep, `D λ = -v`), `jax.jvp`,
        `jax.jacfwd` (forward mode: the tangent sweep, `Dᵀ t = -v`), `jax.hessian` and any nesting;
        the same function object is returned on every call, so it compiles once per shape and dtype.
        Differentiated w.r.t. some inputs only, it sweeps only what they reach (`_activity`).
        If this Computation was given `df`, it is the derivative of `f` (second orders differentiate `df`).

        Parameters: `params`, a pytree of arrays that the constraints' functions capture (the very
        objects: closure cells, default arguments, `functools.partial` arguments; matched by
        identity, as `jax.closure_convert` lifts constants), makes the function `(x, params) ↦ ...`,
        where `params` has that structure and those shapes and replaces the captured values. Its
        derivative w.r.t. a parameter θ is the Lagrangian's, `Σ_i (∂f_i/∂θ)ᵀ λ_i` over the
        constraints capturing θ (`_parameters`)::

            W = jnp.ones((3, 2))
            C.add("h", lambda x: jnp.tanh(W @ x), ["x"])    # W is captured, not an input
            ...
            fn = comp.as_function(params={"W": W})
            jax.grad(fn, argnums=1)(x, {"W": W})            # {"W": ∂f/∂W}

        Raises:
          ValueError: naming the leaf, when no constraint captures a leaf of `params`.
        """
        key = (
            (output, as_dict) if params is None else (output, as_dict, jax.tree.structure(params), tuple(map(id, jax.tree.leaves(params))))
        )
        if key not in self._functions:
            self._functions[key] = _function.make(self, output, as_dict, params)
        return self._functions[key]

    def graph(self, x=None, *, max_nodes: int = 200, partials: bool = False):
        """A picture of the program: its variables (with their values z and multipliers λ at `x`, if
        given), arguments, groups and cyclic blocks; a summary past `max_nodes` variables. Returns a
        `lagjax.Graph` (`.dot`, `.save(path)` to .dot/.svg/.png); see `lagjax._graph.graph`."""
        from lagjax._graph import graph

        return graph(self, x, max_nodes=max_nodes, partials=partials)


_ENTRIES = (
    "solve", "forward", "multipliers", "gradient", "tangents", "jacobian", "penalties", "lagrangian",
    "dlagrangian", "dconstraints", "partials", "reverse_mode", "forward_mode", "status",
)  # fmt: skip


def _float_type(values: dict):
    """The common float type of a dict of arrays (integers: the default float type)."""
    dtype = np.result_type(*(v.dtype for v in values.values())) if values else np.dtype(jnp.result_type(float))
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(jnp.result_type(float))


def _is_input(layout, name) -> bool:
    try:
        return layout.index[name] < len(layout.input_names)
    except (KeyError, TypeError):
        return False


def _input_rows(schedule: _schedule.Schedule, c: int) -> np.ndarray:
    """A mask broadcasting over class c's buffer: True at its inputs' rows."""
    d_c = int(np.sum(schedule.var_class[: schedule.d] == c))
    mask = np.arange(schedule.rows[c]) < d_c
    return mask.reshape((-1,) + (1,) * len(schedule.shapes[c]))


def check_arguments(f: Callable, inputs: Sequence[int], constraints: Constraints) -> None:
    """The checks of `Computation(f, inputs, constraints)`."""
    if not isinstance(constraints, Constraints):
        raise TypeError(f"`constraints` must be a lagjax.Constraints, got {type(constraints).__name__}.")
    if not callable(f):
        raise TypeError(f"The objective `f` must be callable, got {f!r}.")
    if not isinstance(inputs, Sequence) or list(inputs) != constraints.inputs:
        raise ValueError(f"`inputs` must be the program's input indices, `constraints.inputs` = {constraints.inputs}; got {inputs!r}.")


# Dict inputs are stacked by class, one array per shape, for the sweeps. Inside the jitted entry
# that is one XLA concatenate per class, whose compile time grows with its operands (about 2 ms
# each on CPU: 4 s at 2,000); on the host it is NumPy, about 4 µs per input per call. Programs
# with more inputs than this are stacked on the host.
HOST_STACKING_MIN = 128

# Past this many groups, compile time is dominated by per-group code (a `lax.switch` branch and a
# `vmap` each): about 20 s by a hundred groups on a 2-core CPU.
MANY_GROUPS = 64


def _warn_if_many_groups(schedule: _schedule.Schedule) -> None:
    if len(schedule.groups) <= MANY_GROUPS:
        return
    examples = ", ".join(str(getattr(g.first, "__name__", g.first)) for g in schedule.groups[:3])
    warnings.warn(
        f"This program has {len(schedule.groups)} groups of constraints running different code "
        f"(e.g. {examples}), and compile time grows with the number of groups (about 20 s by a "
        f"hundred on a 2-core CPU). Write it with a few shared functions: a function per kind of constraint, "
        f"defined once, with per-constraint values captured as arrays or numbers "
        f"(`lambda v, row=row: row @ v` groups fine) rather than as Python control flow or shapes; "
        f"or make those values inputs of the program.",
        stacklevel=3,
    )


# A status's severity when one report must stand for several (the tangents of many seeds).
_SEVERITY = np.asarray([0, 2, 3, 4, 1], np.int32)  # SUCCESS, NOT_CONVERGED, SINGULAR, NONFINITE, ILL_CONDITIONED


def worst(reports: _cyclic.Info) -> _cyclic.Info:
    """One `Info` per block from reports with a leading axis (one per seed): each block's worst."""
    severity = jnp.asarray(_SEVERITY)[jnp.clip(reports.status, 0, _SEVERITY.size - 1)]
    pick = jnp.argmax(severity, axis=0)
    return jax.tree.map(lambda a: jnp.take_along_axis(a, pick[None], axis=0)[0], reports)
