"""`trace(fn, *example_args)`: any JAX function of float arrays to a scalar, as a constraint program.

`jax.make_jaxpr` gives `fn`'s program as equations `outs = primitive[params](ins)`; each becomes a
constraint of a `Constraints` program, and the result is a `Computation` (a `Traced`, which also takes
and returns what `fn` does):

- **inputs** are the argument leaves, named after `fn`'s parameters and the leaves' pytree paths
  (`x`, `params['W1']`, `layers[0].b`), of their shapes (`inspect.signature` binds the example arguments);
- **variables** are the float results of equations that depend on the inputs, named after their
  primitive (`tanh_12`; `Traced.source(name)` gives the line of `fn` that made it), each defined by the
  constraint `z = primitive.bind(*args, **params)`; a primitive with several results gives one
  constraint per result used;
- **data**: literals, closed-over arrays (the jaxpr's consts) and the results of equations none of whose
  operands depends on the inputs (evaluated here, once: constant folding) are data of the constraint
  functions, not inputs;
- the **objective** is the program's output variable.

What becomes what:

- `jit` / `pjit`, `closed_call`, `checkpoint` (`remat`): inlined, their equations traced in place.
- `custom_jvp` / `custom_vjp` functions: one constraint each, evaluated by binding their primitive back
  with its own rules (`Primitive.get_bind_params`, as `jax.core.eval_jaxpr` does), so lagjax's
  sweeps differentiate them by their rules. JAX has no forward mode of a `custom_vjp`, and
  `as_function`'s derivatives are built on forward mode: such a program is differentiated by the
  Computation's `gradient` (the multipliers, `jax.vjp` of each constraint), not by `jax.grad(as_function())`.
- `lax.scan`, `fori_loop`, `cond`: one constraint each (per result used). Unrolling a scan of length
  T would give T copies of its body for lagjax to group, but a scan is already what lagjax's schedule
  makes of a loop, and its body is compiled once either way; keeping it whole keeps the program as the
  user wrote it and its size independent of T. Its derivative is JAX's, inside the constraint.
  `while_loop` has no reverse-mode derivative in JAX, so a `while` whose float results depend on the
  inputs is refused (write it with `lax.scan`, `fori_loop` of static bounds, or `lagjax.fixed_point`).
- **integer and boolean intermediates** that depend on the inputs (`argmax`, a comparison for
  `jnp.where`, a computed index) cannot be float variables: each is *fused* into every constraint that
  consumes it, which recomputes it from its float arguments (its derivative is zero, as in JAX).
- `lagjax.fixed_point(F, z0, *args)` (bound as `_fixed_point.fixed_point_p` while `trace` runs
  `make_jaxpr`): a cycle. Each z leaf j is a variable defined by `z_j = F(z, args)[j]`, reading all the
  z leaves (itself included), so the leaves form one cyclic block, solved by the Computation's root
  finder; its initial guess is z0's value at the example arguments (a constant, whatever the inputs:
  the fixed point does not depend on z0). The fixed point's `solver` is the Computation's; fixed points
  with different solvers in one function are refused (a Computation has one).
- anything else lagjax cannot represent (complex intermediates, side effects such as `jax.debug.print`,
  a primitive with no reverse-mode derivative) is refused with an error naming the primitive and the
  line of `fn` it came from.

**Fusion** (`fuse=True`): a float result read once, by an elementwise equation, is no variable but a
step of its reader's `Program` (chains of at most `MAX_FUSED` equations); read by anything else (a
product, a reduction, a loop, an inlined jaxpr, the output) it is a variable. A loop body
`h + 0.01 * tanh(W @ h + b)` is then one constraint, not five: fewer sweep steps and groups, no
multipliers of the fused intermediates.

**Grouping.** A Python loop of K steps gives K copies of its body's equations; lagjax compiles one
branch per group of constraints running the same code (`lagjax._grouping`), so the K copies must share
code. Each constraint's function is a `_Program` (a few primitive steps), made once per *template*:
the primitives, their parameters (hashed; a `custom_jvp`'s by the text of its primal jaxpr and the
source of its rules), how the operands are wired and which are data. Equations with one template share
one `_Program` object; their data (literals, constants) are passed explicitly after the arguments
(`Constraints.add_arrays`), stacked per group. So the program has a few groups whatever K, and compile
time stays flat in K.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import gc
import inspect
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import source_info_util
from jax.extend.core import ClosedJaxpr, DropVar, Jaxpr, Literal
from jax.extend.core import primitives as P

from lagjax import _fixed_point
from lagjax._computation import Computation
from lagjax._program import Constraints

_INLINED = {P.jit_p: "jaxpr", P.closed_call_p: "call_jaxpr", P.remat_p: "jaxpr", P.call_p: "call_jaxpr"}
_HINTS = {
    "while": "JAX has no reverse-mode derivative of `while_loop`: write the loop with `lax.scan`, "
    "`lax.fori_loop` of static bounds, or, for an iteration to convergence, `lagjax.fixed_point`.",
}


# ---------------------------------------------------------------------------------------------------
# The public entry and its Computation.
# ---------------------------------------------------------------------------------------------------


def trace(fn: Callable, *example_args, fuse: bool = False, **example_kwargs) -> Traced:
    """The program of `fn` as a `Computation`: one constraint per equation of its jaxpr.

    Args:
      fn: a JAX-traceable function of pytrees of float arrays returning a scalar (the objective).
      *example_args, **example_kwargs: arguments to trace `fn` at: their pytree structure, shapes and
        dtypes (float32 or float64) are the program's. Values matter only as the initial guess of
        fixed points (see the module docstring).
      fuse: False (default): one variable per equation's result, each with its multiplier. True: a
        result read once, by an elementwise equation, is computed inside its reader, in chains of at
        most `MAX_FUSED` equations: fewer variables, steps and groups (a loop body
        `h + 0.01 * tanh(W @ h + b)` is one constraint, not five), faster sweeps, and no multipliers of
        the fused intermediates. (`fuse` is trace's own keyword; a parameter of `fn` so named is passed by position.)

    Returns:
      A `Traced` (a `Computation`): its methods take a dict `{input name: array}` (`traced.input_names`);
      `traced.as_function()` takes the arguments of `fn` and returns what `fn` returns.

    Raises:
      TypeError: naming the argument, for an integer, boolean or complex argument leaf.
      ValueError: for an output that is not one float scalar, or that does not depend on the
        arguments; naming the primitive and the line of `fn`, for an equation lagjax cannot represent.
    """
    arguments, closed = jaxpr_of(fn, example_args, example_kwargs)
    return Traced(*program_of(arguments, closed, fuse))


def jaxpr_of(fn: Callable, args: tuple, kwargs: dict) -> tuple[Arguments, ClosedJaxpr]:
    """The first half of `trace`: `fn`'s arguments as inputs, and its jaxpr (`jax.make_jaxpr`)."""
    if not callable(fn):
        raise TypeError(f"`fn` must be a function of float arrays returning a scalar, got {type(fn).__name__}.")
    arguments = Arguments(fn, args, kwargs)
    with _fixed_point.tracing():
        closed, out_shape = jax.make_jaxpr(arguments.flat(fn), return_shape=True)(*arguments.example)
    arguments.check_output(out_shape)
    return arguments, closed


def program_of(arguments: Arguments, closed: ClosedJaxpr, fuse: bool = False) -> tuple:
    """The second half: the jaxpr as a `Constraints` program; `Traced`'s arguments."""
    scope = _KEYS.set(_Keys())  # the template keys of this conversion only
    try:
        converter = Converter(arguments, fuse)
        with _no_collection():
            (out,) = converter.walk(closed.jaxpr, closed.consts, list(arguments.names))
            objective = converter.objective(out)
            program, solver = converter.program(objective)
    finally:
        _KEYS.reset(scope)
    return program, objective, arguments, converter.sources, solver


def _uses(jaxpr: Jaxpr) -> dict:
    """How many times each variable is read by an equation of `jaxpr`; its outputs count as read twice."""
    uses: dict = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if not isinstance(v, Literal):
                uses[v] = uses.get(v, 0) + 1
    for v in jaxpr.outvars:
        uses[v] = 2
    return uses


@contextlib.contextmanager
def _no_collection():
    """Python's cyclic garbage collector paused: the conversion makes a few objects per equation, and
    the collections they trigger walk the whole jaxpr each time (a third of the time at 10⁵ equations)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Traced(Computation):
    """The `Computation` of a traced function (`lagjax.trace`).

    Besides the Computation's attributes and methods (which take a dict `{input name: array}`):
    `output` (the objective's variable), `arguments` (how `fn`'s arguments map to inputs), `program`
    (the `Constraints`), `groups` (the schedule's groups), `source(name)`; `as_function()` takes `fn`'s
    arguments.
    """

    def __init__(self, program: Constraints, output: str, arguments: Arguments, sources: dict, solver=None):
        super().__init__(_Objective(output), program.inputs, program, solver=solver)
        self.program, self.output, self.arguments, self._sources = program, output, arguments, sources
        self._traced_function = None

    @property
    def groups(self) -> tuple:
        """The groups of constraints running one code (`lagjax._grouping`): the unit of compile."""
        return self.schedule.groups

    def source(self, name: str) -> str | None:
        """Where in `fn` the variable `name` was made ("file:line (function)"); None for an input."""
        info = self._sources.get(name)
        return None if info is None else source_info_util.summarize(info)

    def as_function(self, output: str = "f", **options) -> Callable:
        """`fn` again, with the same arguments and result, differentiated by lagjax's sweeps.

        Composes with every JAX transformation, as `Computation.as_function` (which this calls, and
        which `output="z"` or its other options reach: a function of the dict of inputs). Arguments are
        cast to the example's dtypes; their structure and shapes must be the example's.
        """
        if output != "f" or options:
            return super().as_function(output, **options)
        if self._traced_function is None:
            self._traced_function = self.arguments.wrap(super().as_function())
        return self._traced_function

    def __repr__(self) -> str:
        return f"Traced({self.arguments.name}: {self.d} inputs, {self.n - self.d} constraints in {len(self.groups)} groups, output {self.output!r})"


class _Objective:
    """The objective of a traced program: the output variable, `z[name]`."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, z: dict) -> jax.Array:
        return z[self.name]


# ---------------------------------------------------------------------------------------------------
# fn's arguments: the inputs' names, the flat function make_jaxpr traces, the wrapper as_function returns.
# ---------------------------------------------------------------------------------------------------


class Arguments:
    """`fn`'s arguments as the program's inputs: leaves named by parameter and pytree path.

    The example is bound to `fn`'s signature (`inspect.signature(fn).bind`), so a later call may pass
    each argument by position or keyword; without a signature, positional `arg0, ...` and keywords.
    """

    def __init__(self, fn: Callable, args: tuple, kwargs: dict):
        self.name = getattr(fn, "__name__", type(fn).__name__)
        try:
            self.signature = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin or C function: no signature
            self.signature = None
        values, self.parameters = self._bind(args, kwargs)
        with_paths, self.tree = jax.tree_util.tree_flatten_with_path(values)
        self.names = [self.parameters[path[0].idx] + jax.tree_util.keystr(path[1:]) for path, _ in with_paths]
        self.example = [_input_leaf(value, name) for (_, value), name in zip(with_paths, self.names)]
        self.shapes = [tuple(v.shape) for v in self.example]
        self.dtypes = [v.dtype for v in self.example]
        self.out_tree = self.out_shape = None

    def _bind(self, args: tuple, kwargs: dict) -> tuple[tuple, list[str]]:
        """`(values, parameter names)`: one value per bound parameter (a tuple for *args, a dict for **kwargs)."""
        if self.signature is None:
            self.num_positional = len(args)
            return (*args, *kwargs.values()), [f"arg{i}" for i in range(len(args))] + list(kwargs)
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"The arguments do not match the signature of `{self.name}{self.signature}`: {err}.") from None
        return tuple(bound.arguments.values()), list(bound.arguments)

    def call(self, fn: Callable, values: Sequence) -> Any:
        """`fn` called with one value per bound parameter."""
        if self.signature is None:
            n = self.num_positional
            return fn(*values[:n], **dict(zip(self.parameters[n:], values[n:])))
        bound = inspect.BoundArguments(self.signature, dict(zip(self.parameters, values)))
        return fn(*bound.args, **bound.kwargs)

    def flat(self, fn: Callable) -> Callable:
        """`fn` as a function of the input leaves, in input order (what `make_jaxpr` traces)."""
        return lambda *leaves: self.call(fn, jax.tree_util.tree_unflatten(self.tree, leaves))

    def check_output(self, out_shape) -> None:
        """`fn`'s result must be one float scalar."""
        leaves, self.out_tree = jax.tree_util.tree_flatten(out_shape)
        shapes = [getattr(leaf, "shape", None) for leaf in leaves]
        if len(leaves) != 1 or shapes[0] != ():
            raise ValueError(
                f"`{self.name}` must return one scalar (the objective), got {jax.tree_util.tree_unflatten(self.out_tree, shapes)} "
                f"(shapes). Reduce it (jnp.sum, a loss), or trace one function per output."
            )
        self.out_shape = leaves[0]
        if not jnp.issubdtype(self.out_shape.dtype, jnp.floating):
            raise ValueError(f"`{self.name}` must return a real float scalar, got dtype {self.out_shape.dtype}.")

    def leaves(self, args: tuple, kwargs: dict) -> list:
        """The input leaves of a call, checked against the example's structure and shapes, in its dtypes."""
        values, _ = self._bind(args, kwargs)
        leaves, tree = jax.tree_util.tree_flatten(values)
        if tree != self.tree:
            raise TypeError(f"`{self.name}` was traced with arguments of structure {self.tree}; this call passes {tree}.")
        out = []
        for leaf, name, shape, dtype in zip(leaves, self.names, self.shapes, self.dtypes):
            leaf = jnp.asarray(leaf)
            if leaf.shape != shape:
                raise ValueError(
                    f"Argument `{name}` was traced with shape {shape}; this call passes shape {leaf.shape}. Trace again for new shapes."
                )
            out.append(leaf if leaf.dtype == dtype else leaf.astype(dtype))
        return out

    def wrap(self, flat: Callable) -> Callable:
        """`fn`'s signature around `flat` (a function of the dict of inputs, returning the scalar)."""
        names, out_tree, out_dtype = self.names, self.out_tree, self.out_shape.dtype

        def traced(*args, **kwargs):
            value = flat(dict(zip(names, self.leaves(args, kwargs))))
            return jax.tree_util.tree_unflatten(out_tree, [jnp.reshape(value, ()).astype(out_dtype)])

        traced.__name__ = traced.__qualname__ = self.name
        return traced


def _input_leaf(value, name: str) -> jax.Array:
    """An argument leaf as an array; only real floats are inputs."""
    try:
        value = jnp.asarray(value)
    except TypeError:
        raise TypeError(f"Argument `{name}` is {type(value).__name__}, not an array; close over it (functools.partial) instead.") from None
    if not jnp.issubdtype(value.dtype, jnp.floating):
        kind = "complex" if jnp.issubdtype(value.dtype, jnp.complexfloating) else "integer or boolean"
        raise TypeError(
            f"Argument `{name}` has dtype {value.dtype} ({kind}); lagjax.trace differentiates real float arguments "
            f"(float32, float64). Pass it as a float array, or close over it (functools.partial(fn, ...)) to keep it as data."
        )
    return value


# ---------------------------------------------------------------------------------------------------
# Constraint functions: programs of a few primitive steps, one object per template.
# ---------------------------------------------------------------------------------------------------


class Bind:
    """One primitive with its parameters: `Bind(p, params)(*operands) = p.bind(*operands, **params)`
    (with `get_bind_params`, as `jax.core.eval_jaxpr` binds, so `custom_jvp` calls keep their rules)."""

    def __init__(self, primitive, params: dict):
        self.primitive, self.params, self.__name__ = primitive, params, primitive.name

    def __call__(self, *operands):
        return self.primitive.bind(*operands, **self.primitive.get_bind_params(self.params))


class CallJaxpr:
    """A fixed point's F: `CallJaxpr(jaxpr, c)(*consts, *operands)` evaluates the closed jaxpr with
    its c consts given as the first operands (data, so that copies of one F share code)."""

    __name__ = "fixed_point"

    def __init__(self, jaxpr: Jaxpr, num_consts: int):
        self.jaxpr, self.num_consts = jaxpr, num_consts

    def __call__(self, *operands):
        c = self.num_consts
        return jax.core.eval_jaxpr(self.jaxpr, operands[:c], *operands[c:])


ARG, DATA, STEP = 0, 1, 2


class Program:
    """A constraint's function: `Program(...)(*args, *data)`, a few primitive steps.

    `steps`: `(apply, refs, index)`, `apply` a `Bind` (or `CallJaxpr`) whose operands `refs` are
    `(ARG, k)`, `(DATA, k)` or `(STEP, k)` (an earlier step's result), `index` which of its results
    (None: it has one). The last step's result is the constraint's value. The arguments are cast to the
    dtypes they were traced in (`arg_dtypes`) and the value to the first argument's dtype (the program's
    float type), so a program traced in float32 also runs in float64.
    """

    def __init__(self, steps: tuple, arg_dtypes: tuple):
        self.steps, self.arg_dtypes = steps, arg_dtypes
        self.num_args = len(arg_dtypes)
        self.__name__ = steps[-1][0].__name__

    def __call__(self, *values):
        k = self.num_args
        args = [v if v.dtype == d else v.astype(d) for v, d in zip(values[:k], self.arg_dtypes)]
        sources = (args, values[k:], [])
        for apply, refs, index in self.steps:
            out = apply(*[sources[kind][j] for kind, j in refs])
            sources[STEP].append(out if index is None else out[index])
        value, dtype = sources[STEP][-1], values[0].dtype
        return value if value.dtype == dtype else value.astype(dtype)

    def __repr__(self) -> str:
        return f"Program({' ∘ '.join(apply.__name__ for apply, _, _ in reversed(self.steps))})"


def _data_first(program: Program, *values):
    """`program` with its data first (`functools.partial(_data_first, program, *data)(*args)`, for `add`)."""
    n = len(values) - program.num_args
    return program(*values[n:], *values[:n])


class Fused:
    """A result that depends on the inputs but is no variable: computed inside the constraint(s) reading
    it. `eqn` made it (result `index`) from the operands `ins` (entries, see `Converter`). An integer or
    boolean one is recomputed in each reader; a float one (`fuse=True`: `aval`, its chain's `depth`) has one
    reader, or becomes a variable (`name`) where it cannot be fused."""

    def __init__(self, eqn, ins: list, index: int | None, key: Hashable, aval=None, depth: int = 0):
        self.eqn, self.ins, self.index, self.key, self.aval, self.depth = eqn, ins, index, key, aval, depth
        self.name = None


# ---------------------------------------------------------------------------------------------------
# Template keys: equal for equations running the same code.
# ---------------------------------------------------------------------------------------------------


class _Keys:
    """The template keys of one conversion: the jaxprs' keys memoised, and the objects whose id is part
    of a key kept alive (once each), so that no other object reuses the id while the keys are compared.
    Dropped with the conversion (`program_of`): nothing grows from one `trace` to the next."""

    def __init__(self):
        self.jaxprs: dict[int, tuple] = {}
        self.kept: dict[int, Any] = {}


_KEYS: contextvars.ContextVar[_Keys] = contextvars.ContextVar("lagjax_trace_keys")


def _keys() -> _Keys:
    return _KEYS.get()  # set by `program_of` around its conversion


def _by_id(value) -> tuple:
    _keys().kept[id(value)] = value
    return ("id", id(value))


def _source_of(fun) -> Hashable:
    """A function's source location (JAX's debug info), or its identity where JAX records none."""
    info = getattr(getattr(fun, "debug_info", None), "func_src_info", None)
    return info if info else _by_id(fun)


def jaxpr_key(jaxpr) -> Hashable:
    """A jaxpr's structure: its equations' primitives, parameters and wiring, and its avals (memoised)."""
    closed = jaxpr if isinstance(jaxpr, ClosedJaxpr) else None
    open_ = closed.jaxpr if closed is not None else jaxpr
    memo = _keys().jaxprs
    cached = memo.get(id(jaxpr))
    if cached is not None and cached[0] is jaxpr:
        return cached[1]
    number = {v: i for i, v in enumerate([*open_.constvars, *open_.invars])}

    def ref(v):
        return ("literal", v.aval, np.asarray(v.val).tobytes()) if isinstance(v, Literal) else number[v]

    eqns = []
    for eqn in open_.eqns:
        eqns.append((eqn.primitive, params_key(eqn.primitive, eqn.params), tuple(map(ref, eqn.invars))))
        for v in eqn.outvars:
            number[v] = len(number)
    consts = () if closed is None or not closed.consts else tuple(_by_id(c) for c in closed.consts)
    source = getattr(open_.debug_info, "func_src_info", None)
    key = (source, tuple(v.aval for v in open_.invars), tuple(eqns), tuple(map(ref, open_.outvars)), consts)
    memo[id(jaxpr)] = (jaxpr, key)
    return key


def _hashable(value) -> Hashable:
    if isinstance(value, (ClosedJaxpr, Jaxpr)):
        return jaxpr_key(value)
    if isinstance(value, (tuple, list)):
        return tuple(map(_hashable, value))
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    try:
        hash(value)
    except TypeError:
        return _by_id(value)
    return value


def params_key(primitive, params: dict) -> Hashable:
    """A primitive's parameters as a key: equal for parameters that run the same code.

    Parameters holding jaxprs (`scan`, `cond`, ...) are keyed by the jaxprs' structure (`jaxpr_key`). A
    `custom_jvp` / `custom_vjp` call carries objects made afresh at each call (its primal jaxpr, its
    rules wrapped): it is keyed by its primal jaxpr's structure and source and its rules' sources.
    Other parameters are hashable as they are; any that is not is keyed by identity.
    """
    if primitive is _CUSTOM_JVP:
        return (
            "custom_jvp",
            jaxpr_key(params["call_jaxpr"]),
            _source_of(params["jvp_jaxpr_fun"]),
            params["num_consts"],
            params["symbolic_zeros"],
        )
    if primitive is _CUSTOM_VJP:
        rules = (_source_of(params["fwd_jaxpr_thunk"]), _source_of(params["bwd"]))
        return ("custom_vjp", jaxpr_key(params["call_jaxpr"]), rules, params["num_consts"], params["symbolic_zeros"])
    key = tuple(params.items())
    return _hashable(key) if primitive in _WITH_JAXPRS else key


_CUSTOM_JVP, _CUSTOM_VJP, _FIXED_POINT = P.custom_jvp_call_p, P.custom_vjp_call_p, _fixed_point.fixed_point_p
_WITH_JAXPRS = {P.scan_p, P.while_p, P.cond_p, P.linear_solve_p, P.custom_lin_p}
_ARG_REFS = tuple((ARG, k) for k in range(256))
# `fuse=True`: a float result read once by one of these primitives is computed inside its reader, in
# chains of at most MAX_FUSED equations; read by any other (a product, a reduction, a loop), it is a variable.
_ELEMENTWISE = set(
    "abs acos acosh add asin asinh atan atan2 atanh broadcast_in_dim cbrt clamp convert_element_type copy cos cosh "
    "div erf erf_inv erfc exp exp2 expand_dims expm1 integer_pow is_finite log log1p logistic max min mul ne neg "
    "nextafter pow reshape round rsqrt select_n sign sin sinh sqrt square squeeze stop_gradient sub tan tanh".split()
)
MAX_FUSED = 16
_DATA_REFS = tuple((DATA, k) for k in range(256))


# ---------------------------------------------------------------------------------------------------
# The conversion: jaxpr equations to constraints.
# ---------------------------------------------------------------------------------------------------


class Converter:
    """Walks a jaxpr, turning its equations into constraint records (see the module docstring).

    An *entry* is what a jaxpr variable is to the program: a variable name (`str`, a float that depends
    on the inputs), a `Fused` (an integer or boolean that does), or data (an array: a literal, a const,
    a folded result).
    """

    def __init__(self, arguments: Arguments, fuse: bool = False):
        self.arguments, self.fuse = arguments, fuse
        self.uses: dict = {}  # with `fuse`: how many times each variable of the jaxpr being walked is read
        self.dtypes = dict(zip(arguments.names, arguments.dtypes))  # each variable's traced dtype and shape
        self.shapes = dict(zip(arguments.names, arguments.shapes))
        self.reserved = set(arguments.names)
        self.records: list[tuple] = []  # (name, program, args, data, shape, block)
        self.sources: dict[str, Any] = {}
        self.programs: dict[Hashable, Program] = {}
        self.literals: dict[tuple, np.ndarray] = {}
        self.blocks: list[dict] = []  # per fixed point: its eqn and operands, for initial guesses
        self.example: dict = {}  # example values of the variables evaluated so far (`values`)
        self.solvers: list = []
        self.count = 0
        self._float: dict[Any, int] = {}

    # --- the walk ------------------------------------------------------------------------------
    def walk(self, jaxpr: Jaxpr, consts: Sequence, operands: list) -> list:
        """The entries of `jaxpr`'s outputs, its equations converted on the way."""
        env = dict(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, operands))
        literal = self.literal
        outer, self.uses = self.uses, _uses(jaxpr) if self.fuse else {}
        for eqn in jaxpr.eqns:
            ins = [literal(v) if isinstance(v, Literal) else env[v] for v in eqn.invars]
            env.update(zip(eqn.outvars, self.equation(eqn, ins)))
        self.uses = outer
        return [literal(v) if isinstance(v, Literal) else self.variable(env[v]) for v in jaxpr.outvars]

    def literal(self, v) -> np.ndarray:
        """A literal as data; equal literals are one array (so a group keeps them once, not stacked)."""
        value = np.asarray(v.val, v.aval.dtype)
        key = (value.dtype.str, value.shape, value.tobytes())
        return self.literals.setdefault(key, value)

    def equation(self, eqn, ins: list) -> list:
        """The entries of one equation's results."""
        primitive = eqn.primitive
        sub = _INLINED.get(primitive)
        if sub is not None:
            ins = list(map(self.variable, ins))  # a fused float is read once: not by an inner jaxpr's several readers
            inner = eqn.params[sub]
            if isinstance(inner, ClosedJaxpr):
                return self.walk(inner.jaxpr, inner.consts, ins)
            return self.walk(inner, [], ins)
        depends = fused = False
        for e in ins:
            kind = type(e)
            if kind is str:
                depends = True
            elif kind is Fused:
                depends = fused = True
        if not depends:
            return self.fold(eqn, ins)
        if eqn.effects:
            self.refuse(
                eqn, "it has side effects (a print or a callback), which a constraint, evaluated many times and in any order, cannot keep."
            )
        if self.fuse:
            if primitive.name not in _ELEMENTWISE:  # read by a product, a reduction, a loop: fused floats become variables
                ins = list(map(self.variable, ins))
            if not primitive.multiple_results and self.uses.get(eqn.outvars[0]) == 1 and self.is_float(eqn.outvars[0].aval.dtype):
                depth = 1 + max((e.depth for e in ins if type(e) is Fused), default=0)
                if depth <= MAX_FUSED:
                    return [Fused(eqn, ins, None, None, eqn.outvars[0].aval, depth)]
        if primitive is _FIXED_POINT:
            return self.fixed_point(eqn, ins)
        if not primitive.multiple_results:
            aval = eqn.outvars[0].aval
            if self.is_float(aval.dtype):
                return [self.constraint(eqn, ins, None, aval) if fused or len(ins) > 255 else self.simple(eqn, ins, None, aval)]
        outs = []
        for j, v in enumerate(eqn.outvars):
            index = j if primitive.multiple_results else None
            if isinstance(v, DropVar):
                outs.append(None)
            elif self.is_float(v.aval.dtype):
                outs.append(self.constraint(eqn, ins, index, v.aval) if fused or len(ins) > 255 else self.simple(eqn, ins, index, v.aval))
            elif jnp.issubdtype(v.aval.dtype, jnp.complexfloating):
                self.refuse(eqn, f"its result is complex ({v.aval.dtype}); lagjax's variables are real floats.")
            else:
                outs.append(Fused(eqn, ins, index, None))
        return outs

    def variable(self, entry):
        """`entry`, a fused float made a variable (its constraint added once); other entries as they are."""
        if type(entry) is not Fused or entry.aval is None:
            return entry
        if entry.name is None:
            entry.name = self.constraint(entry.eqn, entry.ins, entry.index, entry.aval)
        return entry.name

    def fold(self, eqn, ins: list) -> list:
        """An equation none of whose operands depends on the inputs: evaluated now, its results data."""
        try:
            out = Bind(eqn.primitive, eqn.params)(*ins)
        except Exception as err:
            raise ValueError(
                f"Evaluating the constant equation `{eqn.primitive}` at {self.line(eqn)} failed; the original error is shown above."
            ) from err
        return list(out) if eqn.primitive.multiple_results else [out]

    def is_float(self, dtype) -> bool:
        known = self._float.get(dtype)
        if known is None:
            known = self._float[dtype] = bool(jnp.issubdtype(dtype, jnp.floating))
        return known

    # --- constraints ------------------------------------------------------------------------------
    def constraint(self, eqn, ins: list, index: int | None, aval, name: str | None = None, apply=None) -> str:
        """A new variable defined by `eqn`'s result `index` (its integer operands fused in)."""
        args, data, steps, keys = [], [], [], []
        refs = self.operands(ins, args, data, steps, keys)
        keys.append((self.step_key(eqn) if apply is None else apply[0], refs, index))
        steps.append((eqn, refs, index, None if apply is None else apply[1]))
        arg_dtypes = tuple(self.dtypes[a] for a in args)
        key = (tuple(keys), arg_dtypes)
        try:
            program = self.programs.get(key)
        except TypeError:  # a parameter that is not hashable: keyed by identity
            key = _hashable(key)
            program = self.programs.get(key)
        if program is None:
            program = self.programs[key] = self.new_program(steps, arg_dtypes, args, data)
        name = name or self.name(eqn.primitive.name)
        self.dtypes[name], self.shapes[name] = aval.dtype, tuple(aval.shape)
        self.sources[name] = eqn.source_info
        self.records.append((name, program, tuple(args), tuple(data), tuple(aval.shape), None))
        return name

    def simple(self, eqn, ins: list, index: int | None, aval) -> str:
        """`constraint`, for an equation with no integer operand to fuse (most of them, fast)."""
        args, data, refs = [], [], []
        for e in ins:
            if type(e) is str:
                if e in args:
                    refs.append(_ARG_REFS[args.index(e)])
                else:
                    refs.append(_ARG_REFS[len(args)])
                    args.append(e)
            else:
                refs.append(_DATA_REFS[len(data)])
                data.append(e)
        primitive = eqn.primitive
        arg_dtypes = tuple(map(self.dtypes.__getitem__, args))
        key = (primitive, params_key(primitive, eqn.params), tuple(refs), index, arg_dtypes)
        try:
            program = self.programs.get(key)
        except TypeError:  # a parameter that is not hashable: keyed by identity
            key = (primitive, _hashable(key[1]), *key[2:])
            program = self.programs.get(key)
        if program is None:
            program = self.programs[key] = self.new_program([(eqn, tuple(refs), index, None)], arg_dtypes, args, data)
        self.count += 1
        name = f"{primitive.name}_{self.count}"
        if name in self.reserved:
            name = self.name(primitive.name)
        shape = aval.shape
        self.dtypes[name], self.shapes[name] = aval.dtype, shape
        self.sources[name] = eqn.source_info
        self.records.append((name, program, tuple(args), tuple(data), shape, None))
        return name

    def operands(self, ins: list, args: list, data: list, steps: list, keys: list, fused: dict | None = None) -> tuple:
        """The references of `ins` (see `Program`), collecting arguments, data and fused steps."""
        refs = []
        for e in ins:
            if type(e) is str:
                if e not in args:
                    args.append(e)
                refs.append((ARG, args.index(e)))
            elif isinstance(e, Fused):
                fused = {} if fused is None else fused
                if id(e) not in fused:
                    inner = self.operands(e.ins, args, data, steps, keys, fused)
                    e.key = e.key or self.step_key(e.eqn)
                    keys.append((e.key, inner, e.index))
                    steps.append((e.eqn, inner, e.index, None))
                    fused[id(e)] = (STEP, len(steps) - 1)
                refs.append(fused[id(e)])
            else:
                data.append(e)
                refs.append((DATA, len(data) - 1))
        return tuple(refs)

    def step_key(self, eqn) -> Hashable:
        return (eqn.primitive, params_key(eqn.primitive, eqn.params))

    def new_program(self, steps: list, arg_dtypes: tuple, args: list, data: list) -> Program:
        """The `Program` of a new template, checked once: JAX must be able to differentiate it in reverse mode."""
        program = Program(tuple((apply or Bind(eqn.primitive, eqn.params), refs, index) for eqn, refs, index, apply in steps), arg_dtypes)
        eqn = steps[-1][0]
        if eqn.primitive is not _fixed_point.fixed_point_p:
            self.check_differentiable(program, eqn, [self.avals_of(a) for a in args], data)
        return program

    def avals_of(self, name: str) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(self.shapes[name], self.dtypes[name])

    def check_differentiable(self, program: Program, eqn, arg_avals: list, data: list) -> None:
        """`jax.vjp` of the program, traced abstractly: what lagjax's multiplier sweep runs."""
        probes = [jax.ShapeDtypeStruct(np.shape(d), d.dtype) for d in data]

        def pullback(*values):
            out, vjp = jax.vjp(lambda *a: program(*a, *values[len(arg_avals) :]), *values[: len(arg_avals)])
            return vjp(jnp.ones_like(out))

        try:
            jax.eval_shape(pullback, *arg_avals, *probes)
        except Exception as err:
            hint = _HINTS.get(eqn.primitive.name, "")
            self.refuse(
                eqn, f"JAX cannot differentiate it in reverse mode, which lagjax's multipliers need ({type(err).__name__}: {err}). {hint}"
            )

    def name(self, primitive: str) -> str:
        """A fresh variable name after a primitive: `tanh_12`."""
        self.count += 1
        name = f"{primitive}_{self.count}"
        while name in self.reserved:  # an input named so
            name += "'"
        return name

    # --- fixed points: cycles ------------------------------------------------------------------------
    def fixed_point(self, eqn, ins: list) -> list:
        """`z = F(z, args)`: one variable per z leaf, each defined by its leaf of F, reading all of z."""
        jaxpr, num_z, solver = eqn.params["jaxpr"], eqn.params["num_z"], eqn.params["solver"]
        if solver not in self.solvers:
            self.solvers.append(solver)
        z0, rest = ins[:num_z], ins[num_z:]
        if any(isinstance(e, Fused) for e in z0):
            self.refuse(eqn, "its initial guess z0 is not a float array.")
        names = [self.name("fixed_point") for _ in range(num_z)]
        block = len(self.blocks)
        self.blocks.append(dict(names=names, jaxpr=jaxpr, solver=solver, z0=z0, args=rest))
        consts = [np.asarray(c) if not isinstance(c, jax.Array) else c for c in jaxpr.consts]
        call = CallJaxpr(jaxpr.jaxpr, len(consts))
        apply_key = ("fixed_point", jaxpr_key(jaxpr.jaxpr), tuple(c.shape for c in consts))
        for name, v in zip(names, eqn.outvars):
            self.shapes[name], self.dtypes[name] = tuple(v.aval.shape), v.aval.dtype
        for j, (name, v) in enumerate(zip(names, eqn.outvars)):
            self.constraint(eqn, [*consts, *names, *rest], j, v.aval, name=name, apply=(apply_key, call))
            self.records[-1] = self.records[-1][:5] + (block,)
        return names

    def initial_guess(self, block: dict, j: int) -> np.ndarray:
        """z0's leaf j at the example arguments: data as it is, a variable evaluated (`values`)."""
        entry = block["z0"][j]
        return np.asarray(entry) if type(entry) is not str else np.asarray(self.values([entry])[entry])

    def values(self, wanted: list[str]) -> dict:
        """The example values of the variables `wanted` and what they read: the records evaluated in order,
        each once per conversion (kept in `self.example`: a fixed point's initial guess reads values too)."""
        values = self.example
        if not values:
            values.update(zip(self.arguments.names, self.arguments.example))
        needed = {w for w in wanted if w not in values}
        for record in reversed(self.records):
            if record[0] in needed:
                needed.update(a for a in record[2] if a not in values)
        for name, program, args, data, _, block in self.records:
            if name not in needed or name in values:
                continue
            if block is None:
                values[name] = program(*[values[a] for a in args], *data)
            else:  # a fixed point: solved as `lagjax.fixed_point` solves it
                b = self.blocks[block]
                read = lambda e: values[e] if type(e) is str else e  # noqa: E731
                z0 = [jnp.asarray(self.initial_guess(b, i)) for i in range(len(b["names"]))]
                z = _fixed_point.solve_leaves(b["jaxpr"], len(z0), b["solver"], [*z0, *map(read, b["args"])])[0]
                values.update(zip(b["names"], z))
        return values

    # --- the program ---------------------------------------------------------------------------------
    def objective(self, out) -> str:
        """The output's variable (an input, or a constraint's)."""
        if type(out) is not str:
            raise ValueError(
                f"The result of `{self.arguments.name}` does not depend on its arguments: there is nothing to differentiate. "
                f"Trace a function whose result is computed from its float arguments."
            )
        return out

    def program(self, objective: str) -> tuple[Constraints, Any]:
        """The `Constraints` of the records the objective reads (dead ones dropped), and the solver."""
        live = self.live(objective)
        C = Constraints(dict(zip(self.arguments.names, self.arguments.shapes)))
        chunk: list[tuple] = []
        for record in self.records:
            if record[0] not in live:
                continue
            if record[5] is None:
                chunk.append(record)
                continue
            self.flush(C, chunk)
            name, program, args, data, shape, block = record
            j = self.blocks[block]["names"].index(name)
            init = self.initial_guess(self.blocks[block], j)
            C.add(name, functools.partial(_data_first, program, *data), list(args), shape=shape, init=init)
        self.flush(C, chunk)
        solvers = {s for s in self.solvers if s is not None}
        if len(solvers) > 1:
            raise ValueError(
                f"`{self.arguments.name}` holds fixed points with different solvers ({', '.join(map(repr, solvers))}); "
                f"a traced program has one solver for all its cycles. Pass the same `solver=` to every lagjax.fixed_point."
            )
        return C, (solvers.pop() if solvers else None)

    @staticmethod
    def flush(C: Constraints, chunk: list) -> None:
        if chunk:
            names, programs, args, data, shapes, _ = zip(*chunk)
            C.add_arrays(list(names), list(programs), list(args), data=list(data), shape=list(shapes))
            chunk.clear()

    def live(self, objective: str) -> set:
        """The variables the objective reads, directly or not (a fixed point's leaves all, or none)."""
        live, decided = {objective}, set()
        for name, _, args, _, _, block in reversed(self.records):
            if block is not None and block not in decided:
                decided.add(block)
                if any(n in live for n in self.blocks[block]["names"]):
                    live.update(self.blocks[block]["names"])
            if name in live:
                live.update(args)
        return live

    # --- errors --------------------------------------------------------------------------------------
    @staticmethod
    def line(eqn) -> str:
        return source_info_util.summarize(eqn.source_info)

    def refuse(self, eqn, why: str):
        raise ValueError(f"lagjax.trace cannot represent `{eqn.primitive}` at {self.line(eqn)}: {why}")
