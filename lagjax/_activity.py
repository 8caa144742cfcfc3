"""Activity analysis: the part of a program that varies with some of its inputs, swept alone.

Differentiating w.r.t. some inputs A only, the *active* variables S are A and everything computed
from them (their descendants in the dependency graph; a cyclic block is in S whole or not at all).
Both sweeps restricted to S are exact:

- tangents: `t_i = v_i + Σ_{j in args(i)} ∂f_i/∂z_j t_j` is zero outside S for a seed v on A, and
  for i in S only the active arguments j contribute;
- multipliers: `λ_j = v_j + Σ_{i reads j} (∂f_i/∂z_j)ᵀ λ_i`, and every reader of an active j is
  active, so λ on S depends on S alone (λ of A is the gradient w.r.t. A).

So the active part is a program of its own (`Restriction`), scheduled by the same `_schedule.build`:
its inputs are A and the *frontier* (inactive variables read by active constraints, constants of the
sweeps), its constraints the active ones. Each argument position is marked active or not, and a
group splits by that mark, so that the local maps of a constraint are taken w.r.t. its active
arguments only (`Schedule.active`, `_linear.AtPoint`): a constraint none of whose arguments is active
is not in the sweeps at all, and no zero tangent is ever pushed through a user's function. (XLA:CPU
in jaxlib 0.10.2 miscompiles some products with a constant zero operand: a data matrix's zero
tangent met one.) The sweeps then cost what the active part costs.

The restricted sweeps read and write buffers of their own (`gather` from the program's, `scatter`
back, zeros outside S); their tables are built once per set of active inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lagjax import _cyclic, _layout, _linear, _schedule, _sweeps


def descendants(n: int, records, sources) -> np.ndarray:
    """`(n,)` bool: the variables `sources` and every variable computed from them."""
    d = n - len(records)
    readers = [[] for _ in range(n)]
    for c, record in enumerate(records):
        for a in record.args:
            readers[a].append(d + c)
    active = np.zeros(n, bool)
    stack = list(sources)
    active[stack] = True
    while stack:
        for i in readers[stack.pop()]:
            if not active[i]:
                active[i] = True
                stack.append(i)
    return active


class Restriction:
    """The active part of a program for the inputs `inputs` (indices), as a program of its own.

    `seeded`: constraint variables whose own values vary too (they capture a differentiated
    parameter, `_parameters`): sources of the analysis beside the inputs, seeded by the caller.

    Attributes:
      inputs: the active inputs' indices; `names` their names.
      variables: (n_S,) the sub-program's variables' indices in the program: the active inputs,
        the frontier, then the active constraints' variables.
      schedule, storage: the sub-program's (`_schedule.Schedule`, `_layout.Storage`).
      blocks: per block of the sub-program, its index among the program's blocks.
      tables: what the traced code reads (`tables()`), device arrays.
    """

    def __init__(self, comp, inputs, seeded=()):
        s, records, d, n = comp.schedule, comp.constraints, comp.d, comp.n
        self.comp = comp
        self.inputs = tuple(sorted(int(i) for i in inputs))
        self.names = [comp.names[i] for i in self.inputs]
        active = descendants(n, records, self.inputs + tuple(seeded))
        constraints = np.flatnonzero(active[d:]) + d
        read = {a for i in constraints.tolist() for a in records[i - d].args}
        frontier = sorted(a for a in read if not active[a])
        sub_inputs = list(self.inputs) + frontier
        self.variables = variables = np.asarray(sub_inputs + constraints.tolist(), np.int64)
        index = np.full(n, -1, np.int64)
        index[variables] = np.arange(variables.size)
        d_s = len(sub_inputs)

        groups, marks, subgroup, sub_records, full_group = [], [], {}, [], []
        for i in constraints.tolist():
            record = records[i - d]
            mark = tuple(bool(active[a]) for a in record.args)
            key = (record.group, mark)
            if key not in subgroup:
                subgroup[key] = len(groups)
                groups.append(s.groups[record.group])
                marks.append(mark)
                full_group.append(record.group)
            args = tuple(int(index[a]) for a in record.args)
            sub_records.append(record._replace(i=int(index[i]), args=args, group=subgroup[key]))

        level, _ = comp._condensation
        sub_level = np.zeros(variables.size, np.int64)
        sub_level[d_s:] = np.asarray(level)[constraints]
        self.blocks = [b for b, block in enumerate(s.blocks) if active[block.variables[0]]]
        sub_blocks = [index[s.blocks[b].variables] for b in self.blocks]
        names = [comp.names[v] for v in variables.tolist()]
        shapes = [comp.shapes[name] for name in names]
        self.schedule = sub = _schedule.build(d_s, shapes, sub_records, groups, sub_level, sub_blocks, names, marks)
        self.layout = _layout.Layout(names, shapes, d_s)
        self.storage = _layout.Storage(self.layout, sub)
        self.full_class = [s.shapes.index(shape) for shape in sub.shapes]
        rank = np.zeros(n, np.int64)  # each constraint variable's rank among its group's members
        for members in s.group_vars:
            rank[members] = np.arange(members.size)
        self._members = [(g, rank[variables[v]]) for g, v in zip(full_group, sub.group_vars)]  # per subgroup
        with jax.ensure_compile_time_eval():  # built inside a trace (a JVP rule), still concrete arrays
            self.tables = jax.device_put(self._tables(active))

    def _tables(self, active) -> dict:
        s, sub, variables = self.comp.schedule, self.schedule, self.variables
        gather, scatter_from, scatter_to = [], [], []
        self.active_classes = set()  # the program's classes holding active variables
        for cs, cf in enumerate(self.full_class):
            mine = sub.class_vars[cs]
            rows = np.zeros(sub.rows[cs], np.int32)
            rows[sub.var_row[mine]] = s.var_row[variables[mine]]
            gather.append(rows)
            written = mine[active[variables[mine]]]
            if written.size:
                self.active_classes.add(cf)
            scatter_from.append(np.asarray(sub.var_row[written], np.int32))
            scatter_to.append(np.asarray(s.var_row[variables[written]], np.int32))
        # flat conversions (an index per number) only where used: the gradient of a vector program.
        # Dict programs stack and seed by class; inside `as_function` these tables are constants.
        storage = {} if self.comp.dicts else self.storage.tables()
        return {
            **sub.tables(),
            "storage": storage,
            "gather": gather,
            "scatter_from": scatter_from,
            "scatter_to": scatter_to,
        }

    def with_data(self, tables, full) -> dict:
        """The active part's `tables` with its groups' data read from the program's tables `full`
        (where parameters have replaced captured arrays, `_parameters`)."""
        s, sub = self.comp.schedule, self.schedule
        data = []
        for g_sub, (g, ranks) in enumerate(self._members):
            leaves = []
            for j, leaf in enumerate(full["group_data"][g]):
                if s.group_shared[g][j]:
                    leaves.append(leaf)
                else:
                    leaves.append(leaf[ranks[0]] if sub.group_shared[g_sub][j] else leaf[ranks])
            data.append(leaves)
        return {**tables, "group_data": data}

    # --- between the program's buffers and the active part's --------------------------------
    def gather(self, buffers, tables) -> list:
        """The active part's buffers read from the program's (every variable of the sub-program)."""
        return [buffers[cf][rows] for cf, rows in zip(self.full_class, tables["gather"])]

    def scatter(self, sub, tables, dtype) -> list:
        """The program's buffers holding the active variables of `sub`, zero elsewhere (linear in `sub`)."""
        out = self.comp.storage.zeros(dtype)
        for cs, cf in enumerate(self.full_class):
            out[cf] = out[cf].at[tables["scatter_to"][cs]].set(sub[cs][tables["scatter_from"][cs]], unique_indices=True)
        return out

    def seed(self, dx: dict, dtype, tables) -> list:
        """`[dx; 0]` in the active part's buffers, for `dx` by active input name (linear in dx)."""
        frontier = self.layout.input_names[len(self.inputs) :]
        values = {**{name: dx[name] for name in self.names}, **{name: jnp.zeros(self.layout.shapes[name], dtype) for name in frontier}}
        return self.storage.seed(values, dtype, tables["storage"])

    # --- the sweeps on the active part ---------------------------------------------------------
    def linearize(self, z, tables, factors=None) -> _linear.AtPoint:
        """The active part's local maps at the program's solution `z` (buffers); `factors`, the
        program's block groups' factorisations there (`Computation.solve_point`), reused where a
        block group of the part holds blocks of one of the program's, their variables in the same order."""
        if factors is not None:
            factors = [None if m is None else jax.tree.map(lambda a, m=m: a[m[1]], factors[m[0]]) for m in self._factor_sources]
        return _linear.AtPoint(self.schedule, tables, self.gather(z, tables), self.comp.solver, factors)

    @property
    def _factor_sources(self) -> list:
        """Per block group of the part, `(program block group, member ranks)` whose factors it reuses, or None."""
        if not hasattr(self, "_sources"):
            comp, self._sources = self.comp, []
            for group in self.schedule.block_groups:
                program = [comp.blocks[self.blocks[b]] for b in group.blocks.tolist()]
                source = {block.group for block in program}
                ranks = np.asarray([block.member for block in program], np.int64)
                same = len(source) == 1 and np.array_equal(
                    self.variables[group.order], comp.schedule.block_groups[min(source)].order[ranks]
                )
                self._sources.append((min(source), ranks) if same else None)
        return self._sources

    def tangents(self, maps, seed, tables) -> tuple[list, list]:
        """Forward substitution on the active part: `(t, report)`, t in the active part's buffers."""
        t, infos = _sweeps.forward_substitute(self.schedule, tables, maps, seed)
        return t, self.report(infos)

    def multipliers(self, maps, v, tables) -> tuple[list, list]:
        """Back-substitution on the active part for `v` (its buffers): `(λ, report)`."""
        lam, infos = _sweeps.back_substitute(self.schedule, tables, maps, v)
        return lam, self.report(infos)

    def matvec(self, maps, tables, t) -> list:
        """`A t = -Dᵀ t` on the active part (the matrix of `custom_linear_solve`, `_function`)."""
        return [-a for a in _sweeps.apply_transposed(self.schedule, tables, maps, t)]

    def out(self, lam, tables):
        """What a jitted entry returns of the active inputs' multipliers (see `Computation._out`)."""
        if self.comp.dicts:
            return self.storage.stack(lam, self.names)
        return self.storage.to_flat(lam, tables["storage"])[: len(self.inputs)]

    def result(self, value):
        """`out`'s value as the user sees it: a vector in input order, or a dict by input name."""
        return self.storage.unstack(value, self.names) if self.comp.dicts else value

    def report(self, infos) -> _cyclic.Info:
        """Every block of the program's `Info`, fields `(len(comp.blocks),)`, from the sub-program's
        (success for blocks outside the active part)."""
        dtype = infos.residual.dtype
        full = _sweeps.no_report(len(self.comp.blocks), dtype)
        if not self.blocks:
            return full
        where = jnp.asarray(self.blocks, jnp.int32)
        return jax.tree.map(lambda f, i: f.at[where].set(i), full, infos)
