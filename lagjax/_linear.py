"""The local linear maps of a program: the blocks of its constraint Jacobian D, never built.

Variable i is defined by `z_i = f_i(z[a_1], ..., z[a_k])`; the block of D in row j, column i is
`(∂f_i/∂z_j)ᵀ`, and the diagonal blocks are -I. The sweeps (`_sweeps`) need three things of D:

- `pullback(g, lanes, c)`: a cotangent c of the lanes' variables pulled back to their arguments,
  `(∂f_i/∂z_a)ᵀ c` per argument position (the multipliers' back-substitution, `D λ`);
- `pushforward(g, lanes, ts)`: tangents of the arguments pushed to the variables, `Σ_a ∂f_i/∂z_a t_a`;
- `adjoint(block, c)` and `tangent(block, b)`: a cyclic block's rows of the two systems, solved on
  its diagonal block: `(I - J)ᵀ λ_B = c` and `(I - J) t_B = b`, `J = ∂F/∂u` (`_blocks`).

A scalar group (scalar arguments and value) has k numbers for its local Jacobian: they are computed
for all its members at once (`partials`, `step_partials`) and the sweeps multiply-add them, branch-free.
Two sources implement the maps: `AtPoint` (the method: `jax.vjp` / `jax.jvp` of each constraint at z,
and the blocks' solvers) and `FromDense` (the blocks of a given dense D: `reverse_mode`, `forward_mode`).
`lanes` is a dict of `arg_rows`, `arg_vars` `(L, k)`, `members`, `out` `(L,)`: which constraints.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lagjax import _blocks, _cyclic, _local
from lagjax._schedule import Schedule


class AtPoint:
    """The local linear maps at z (class buffers), for the solve options `solver`; `factors`, per block
    group the `_cyclic.Factors` of its members at z (from the forward solve, `_sweeps.solve`), reused
    by the blocks' linear solves (None: each solve forms and factors its Jacobian)."""

    def __init__(self, schedule: Schedule, tables: dict, z, solver: _cyclic.Solver, factors=None):
        self.schedule, self.tables, self.z, self.solver, self.factors = schedule, tables, list(z), solver, factors
        dtype = z[0].dtype
        self.partials = {g: _local.group_partials(schedule, tables, z, g) for g in schedule.scalar_groups}
        self.step_partials = _local.step_partials(schedule, tables, self.partials, dtype)

    def _arguments(self, g, lanes):
        s = self.schedule
        return [self.z[c][lanes["arg_rows"][:, p]] for p, c in enumerate(s.arg_class[g])]

    def _function(self, g, data):
        group = self.schedule.groups[g]
        dtype = self.z[0].dtype
        return lambda *a: group.apply(a, data).astype(dtype)

    def _of_active(self, g, data, args):
        """Group g's function of its active arguments only, the others fixed at `args`; and those."""
        active = [p for p, a in enumerate(self.schedule.active[g]) if a]
        f = self._function(g, data)

        def of_active(*values):
            full = list(args)
            for p, value in zip(active, values):
                full[p] = value
            return f(*full)

        return of_active, active

    def pullback(self, g, lanes, cotangent):
        """Per argument position, `(∂f_i/∂z_a)ᵀ c`; zero at inactive positions (never computed)."""
        s = self.schedule
        data = _local.member_data(s, self.tables, g, lanes["members"])

        def one(args, d, c):
            f, active = self._of_active(g, d, args)
            pulled = dict(zip(active, jax.vjp(f, *[args[p] for p in active])[1](c)))
            return [pulled[p] if p in pulled else jnp.zeros_like(a) for p, a in enumerate(args)]

        return list(jax.vmap(one, in_axes=(0, _local.data_axes(s, g), 0))(self._arguments(g, lanes), data, cotangent))

    def pushforward(self, g, lanes, tangents):
        """`Σ_a ∂f_i/∂z_a t_a` over the active positions: no tangent is pushed through f elsewhere."""
        s = self.schedule
        data = _local.member_data(s, self.tables, g, lanes["members"])

        def one(args, d, ts):
            f, active = self._of_active(g, d, args)
            return jax.jvp(f, tuple(args[p] for p in active), tuple(ts[p] for p in active))[1]

        return jax.vmap(one, in_axes=(0, _local.data_axes(s, g), 0))(self._arguments(g, lanes), data, tangents)

    def reads(self, group, members):
        """What the linear solves of a block step of `group` read at z: per member, its `outside` values,
        its variables u, and its factors (or None)."""
        outside = _blocks.outside(self.schedule, self.tables, group, members, self.z)
        u = _blocks.gather(self.schedule, self.tables, group, members, self.z)
        mine = None if self.factors is None else self.factors[group.index]
        return outside, u, None if mine is None else jax.tree.map(lambda a: a[members], mine)

    def adjoint(self, group, at, c):
        """`(I − J)ᵀ λ_B = c` for one member, `at` its share of `reads`."""
        outside, u, factors = at
        F = _blocks.function(self.schedule, self.tables, group, outside, self.z[0].dtype)
        return _cyclic.solve_adjoint(F, u, c, self.solver, factors)

    def tangent(self, group, at, b):
        """`(I − J) t_B = b` for one member, `at` its share of `reads`."""
        outside, u, factors = at
        F = _blocks.function(self.schedule, self.tables, group, outside, self.z[0].dtype)
        return _cyclic.solve_tangent(F, u, b, self.solver, factors)


class FromDense:
    """The local linear maps read off a dense D over the flattened variables (`Layout`): only the blocks
    on the program's pattern are read, the diagonal blocks taken as -I (cyclic blocks: D's diagonal block)."""

    def __init__(self, schedule: Schedule, tables: dict, layout, D: jax.Array):
        self.schedule, self.tables, self.D, self.layout = schedule, tables, D, layout
        offsets = jnp.asarray(layout.offsets[:-1], jnp.int32)
        self.offsets = offsets
        self.partials = {}
        for g in schedule.scalar_groups:
            lanes = dict(arg_vars=jnp.asarray(schedule.group_args[g], jnp.int32), out=jnp.asarray(schedule.group_vars[g], jnp.int32))
            self.partials[g] = self._scalar_partials(lanes)
        self.step_partials = _local.step_partials(schedule, tables, self.partials, D.dtype)

    def _scalar_partials(self, lanes):
        """`D[a, i]` at each argument position (a repeated argument read once, at its first position)."""
        a, i = lanes["arg_vars"], lanes["out"]
        values = self.D[self.offsets[a], self.offsets[i][:, None]]
        return jnp.where(_first_use(a), values, 0)

    def _block(self, a_vars, i_var, a_shape, i_shape):
        size_a, size_i = math.prod(a_shape), math.prod(i_shape)
        return lax.dynamic_slice(self.D, (self.offsets[a_vars], self.offsets[i_var]), (size_a, size_i))

    def pullback(self, g, lanes, cotangent):
        s = self.schedule
        group = s.groups[g]
        first = _first_use(lanes["arg_vars"])

        def one(a_vars, i_var, c, first):
            out = []
            for p, shape in enumerate(group.arg_shapes):
                block = self._block(a_vars[p], i_var, shape, group.out_shape)
                out.append(jnp.where(first[p], jnp.reshape(block @ jnp.ravel(c), shape), 0))
            return out

        return jax.vmap(one)(lanes["arg_vars"], lanes["out"], cotangent, first)

    def pushforward(self, g, lanes, tangents):
        s = self.schedule
        group = s.groups[g]
        first = _first_use(lanes["arg_vars"])

        def one(a_vars, i_var, ts, first):
            total = 0
            for p, shape in enumerate(group.arg_shapes):
                block = self._block(a_vars[p], i_var, shape, group.out_shape)
                total = total + jnp.where(first[p], block.T @ jnp.ravel(ts[p]), 0)
            return jnp.reshape(total, group.out_shape)

        return jax.vmap(one)(lanes["arg_vars"], lanes["out"], list(tangents), first)

    def reads(self, group, members):
        """D's diagonal blocks of a block step's members, over their variables in the order of u."""
        s, offsets = self.schedule, self.layout.offsets
        index = []  # per member, the entries of D of its flattened variables: (B, size), a constant
        start = 0
        for c in group.classes:
            m, size = group.counts[c], math.prod(s.shapes[c])
            variables = group.order[:, start : start + m]
            index.append((offsets[variables][:, :, None] + np.arange(size)).reshape(len(group.blocks), -1))
            start += m
        index = jnp.asarray(np.concatenate(index, axis=1), jnp.int32)[members]
        return self.D[index[:, :, None], index[:, None, :]]

    def adjoint(self, group, diagonal, c):
        return _dense_solve(diagonal, -c)

    def tangent(self, group, diagonal, b):
        return _dense_solve(diagonal.T, -b)


def _dense_solve(M, rhs):
    w = jnp.linalg.solve(M, rhs)
    status = jnp.where(jnp.all(jnp.isfinite(w)), 0, int(_cyclic.SINGULAR)).astype(jnp.int32)
    return w, _cyclic.Info(status, jnp.zeros((), w.dtype), jnp.int32(0), jnp.full((), jnp.nan, w.dtype))


def _first_use(arg_vars: jax.Array) -> jax.Array:
    """`(L, k)`: whether each argument position is its variable's first occurrence in its lane."""
    k = arg_vars.shape[1]
    firsts = [jnp.ones(arg_vars.shape[0], bool)]
    for p in range(1, k):
        firsts.append(jnp.all(arg_vars[:, :p] != arg_vars[:, p : p + 1], axis=1))
    return jnp.stack(firsts, axis=1)
