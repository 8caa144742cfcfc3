"""Parameters: arrays that constraints capture, made arguments that get derivatives.

A constraint's function may close over arrays, `lambda x: jnp.tanh(W @ x)`: they are data of its
group (`_grouping`), constants of the sweeps. Declared as parameters θ (the very arrays the functions
capture, matched by identity, as `jax.closure_convert` lifts a function's constants), they become
arguments of the program, and the implicit-function theorem gains one term:

    C(x, z*(x, θ), θ) = 0  =>  Dᵀ dz = -[dx; (∂f/∂θ) dθ]

So a parameter's tangent is one more seed, `b_i = (∂f_i/∂θ) dθ` at each constraint capturing it, of
the same linear solve; in reverse mode JAX transposes that seed, which gives the Lagrangian's

    ∂L/∂θ = Σ_i (∂f_i/∂θ)ᵀ λ_i,

the multipliers of the constraints that read θ, weighted by how θ enters them. The constraints
seeded are sources of the activity analysis (`_activity`) beside the differentiated inputs.
"""

from __future__ import annotations

from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from lagjax import _grouping, _local


class Parameters:
    """The arrays `params` (a pytree) as arguments of a program `comp`.

    Attributes:
      paths: each leaf's path in `params` (`"['W']"`), for messages.
      shapes: each leaf's shape.
      uses: per leaf, where it is captured: `(g, j, members)` for group g's data leaf j, at the
        members `members` (ranks, an int array), or `None` for a leaf the whole group shares.
      variables: per leaf, the variables of the constraints capturing it (their seeds), `(m,)`.

    Raises:
      TypeError: naming the leaf, when it is not an array.
      ValueError: naming the leaf, when no constraint of `comp` captures it.
    """

    def __init__(self, comp, params):
        flat, self.treedef = jax.tree_util.tree_flatten_with_path(params)
        self.paths = [jax.tree_util.keystr(path) for path, _ in flat]
        leaves = [leaf for _, leaf in flat]
        for path, leaf in zip(self.paths, leaves):
            if not isinstance(leaf, (jax.Array, np.ndarray)):
                raise TypeError(
                    f"Parameter params{path} is a {type(leaf).__name__}; a parameter is an array that a constraint's "
                    f"function captures (the same object). A Python number is not matched: capture an array instead."
                )
        self.shapes = [tuple(np.shape(leaf)) for leaf in leaves]
        captured = _captured(comp)
        s = comp.schedule
        self.uses, self.variables = [], []
        for path, leaf in zip(self.paths, leaves):
            uses = captured.get(id(leaf), [])
            if not uses:
                raise ValueError(
                    f"No constraint captures params{path} (shape {np.shape(leaf)}). Parameters are matched by identity: "
                    f"pass the very array objects the constraints' functions close over (or take as default or "
                    f"functools.partial arguments). A module-level global is read when called, not captured: pass it "
                    f"as a default argument, `lambda x, W=W: ...`, or build the program inside a function."
                )
            self.uses.append([(g, j, None if s.group_shared[g][j] else np.asarray(m, np.int64)) for (g, j), m in uses.items()])
            self.variables.append(
                np.unique(np.concatenate([s.group_vars[g] if m is None else s.group_vars[g][m] for g, j, m in self.uses[-1]]))
            )

    def check(self, params) -> list:
        """The leaves of `params`, of this structure and these shapes; a clear error otherwise."""
        leaves, treedef = jax.tree.flatten(params)
        if treedef != self.treedef:
            raise ValueError(f"`params` must have the structure of the parameters declared, {self.treedef}; got {treedef}.")
        out = []
        for path, shape, leaf in zip(self.paths, self.shapes, leaves):
            leaf = jnp.asarray(leaf)
            if leaf.shape != shape:
                raise ValueError(f"params{path} must have shape {shape}, as the array the constraints capture; got {leaf.shape}.")
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(f"params{path} must be a float array (float32 or float64); got dtype {leaf.dtype}.")
            out.append(leaf)
        return out

    def substitute(self, tables: dict, theta) -> dict:
        """The program's tables with the parameters' values `theta` (leaves) in place of the captured ones."""
        if not theta:
            return tables
        data = [list(leaves) for leaves in tables["group_data"]]
        for value, uses in zip(theta, self.uses):
            for g, j, members in uses:
                leaf = data[g][j]
                value = jnp.asarray(value, leaf.dtype)
                data[g][j] = value if members is None else leaf.at[members].set(value, unique_indices=True)
        return {**tables, "group_data": data}

    def seed(self, schedule, storage, tables, z, dtheta) -> list:
        """`(∂f/∂θ) dθ` in the program's class buffers (zero off the constraints capturing θ), for the
        tangents `dtheta` (leaves; `None` where not differentiated); `tables` already substituted.
        Each group's function is differentiated w.r.t. its data leaves that vary only."""
        dtype = z[0].dtype
        by_group = defaultdict(lambda: defaultdict(list))  # g -> j -> [(members, tangent)]
        for t, uses in zip(dtheta, self.uses):
            if t is not None:
                for g, j, members in uses:
                    by_group[g][j].append((members, t))
        out = storage.zeros(dtype)
        for g, columns in by_group.items():
            seeded = _members(schedule, g, columns)
            db = _data_tangents(schedule, tables, z, g, seeded, columns)
            c = schedule.group_class[g]
            out[c] = out[c].at[schedule.group_rows[g][seeded]].add(db.astype(dtype), unique_indices=True)
        return out

    def seeded(self, active) -> tuple[int, ...]:
        """The variables seeded by the parameters `active` (leaf numbers)."""
        if not active:
            return ()
        return tuple(np.unique(np.concatenate([self.variables[k] for k in active])).tolist())


def _captured(comp) -> dict:
    """`{id(array): {(g, j): [member ranks]}}`: where each captured object lies in the groups' data."""
    s, d = comp.schedule, comp.d
    out = defaultdict(lambda: defaultdict(list))
    for g, variables in enumerate(s.group_vars):
        for rank, v in enumerate(variables.tolist()):
            for j, leaf in enumerate(comp.constraints[v - d].data):
                out[id(_grouping.origin(leaf))][(g, j)].append(rank)
    return out


def _members(schedule, g, columns) -> np.ndarray:
    """Group g's members whose seeds are formed: those capturing a differentiated parameter."""
    if any(members is None for uses in columns.values() for members, _ in uses):
        return np.arange(schedule.group_vars[g].size)
    return np.unique(np.concatenate([members for uses in columns.values() for members, _ in uses]))


def _data_tangents(schedule, tables, z, g, seeded, columns) -> jax.Array:
    """`(∂f_i/∂data) ddata` for group g's members `seeded`, `(len(seeded), *out_shape)`: a jvp
    w.r.t. the data leaves with tangents only (the arguments and other leaves held fixed)."""
    group = schedule.groups[g]
    rows = tables["group_arg_rows"][g][seeded]
    args = [z[c][rows[:, p]] for p, c in enumerate(schedule.arg_class[g])]
    data = list(_local.member_data(schedule, tables, g, seeded))
    varying = sorted(columns)
    tangents = []
    for j in varying:
        leaf = tables["group_data"][g][j]
        total = None
        for members, t in columns[j]:
            t = jnp.asarray(t, leaf.dtype)
            full = t if members is None else jnp.zeros(leaf.shape, leaf.dtype).at[members].set(t, unique_indices=True)
            total = full if total is None else total + full
        tangents.append(total if schedule.group_shared[g][j] else total[seeded])
    axes = _local.data_axes(schedule, g)

    def one(a, d, dd):
        def f(*values):
            full = list(d)
            for j, value in zip(varying, values):
                full[j] = value
            return group.apply(a, tuple(full))

        return jax.jvp(f, tuple(d[j] for j in varying), tuple(dd))[1]

    return jax.vmap(one, in_axes=(0, axes, tuple(axes[j] for j in varying)))(args, tuple(data), tuple(tangents))
