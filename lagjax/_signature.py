"""Shape checks of user functions, by abstract evaluation (`jax.eval_shape`): no FLOPs are spent.

They run at the call that hands the function over (`add_constraint`, `Computation(...)`), so a
wrong shape is reported there, naming the constraint, rather than deep inside a traced sweep.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from lagjax import _grouping


def _abstract_result(fn: Callable, size: int, what: str):
    probe = jax.ShapeDtypeStruct((size,), jnp.float32)
    try:
        out = jax.eval_shape(fn, probe)
    except Exception as err:  # the user's function failed to trace: show why, beneath ours
        hint = (
            " It must be a JAX-traceable function of that vector: use jax.numpy (jnp.exp, not np.exp)."
            if isinstance(err, jax.errors.TracerArrayConversionError)
            else ""
        )
        raise TypeError(
            f"{what} failed when called on a float vector of shape ({size},).{hint} The original error is shown above."
        ) from err
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise TypeError(f"{what} must return one array, got the structure {jax.tree.structure(out)}.")
    if not jnp.issubdtype(out.dtype, jnp.inexact):
        raise TypeError(f"{what} must return floating-point values, got dtype {out.dtype}.")
    return out


def check_local(f: Callable, df: Callable | None, k: int, where: str) -> None:
    """Check `f: (k,) -> ()` or `(1,)`, and `df: (k,) -> (k,)` when given."""
    out = _abstract_result(f, k, f"`f` of {where}")
    if out.shape not in ((), (1,)):
        raise ValueError(
            f"`f` of {where} returned shape {out.shape} for its {k} argument(s); it must return a "
            f"scalar, shape () or (1,). Reduce it (e.g. jnp.sum) or split it into several constraints."
        )
    if df is not None:
        out = _abstract_result(df, k, f"`df` of {where}")
        if out.shape != (k,):
            raise ValueError(
                f"`df` of {where} returned shape {out.shape}; it must return the {k} partial "
                f"derivative(s) of `f` w.r.t. its arguments, shape ({k},)."
            )


def check_objective(f: Callable, df: Callable | None, n: int) -> None:
    """Check the objective `f: (n,) -> ()` and its gradient `df: (n,) -> (n,)` when given."""
    out = _abstract_result(f, n, "The objective `f`")
    if out.shape not in ((), (1,)):
        raise ValueError(
            f"The objective `f` returned shape {out.shape} for the {n} variables; it must be a scalar, "
            f"shape () or (1,) (for several outputs, build one Computation per output or sum them)."
        )
    if df is not None:
        out = _abstract_result(df, n, "The objective gradient `df`")
        if out.shape != (n,):
            raise ValueError(
                f"The objective gradient `df` returned shape {out.shape}; it must return one partial derivative per variable, shape ({n},)."
            )


def liftable(split, k: int, shapes: tuple[tuple, ...]) -> bool:
    """Whether a function's template runs with its captured data traced (see `lagjax._grouping`),
    returning one of `shapes` for an argument vector of shape `(k,)`.

    False where the code needs a captured number as a Python value (a shape, an `if`): its
    functions are then grouped by the captured values instead.
    """
    v = jax.ShapeDtypeStruct((k,), jnp.float32)
    data = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in map(_grouping.resolve, split.leaves))
    try:
        out = jax.eval_shape(split.call, v, data)
    except Exception:  # noqa: BLE001  (any failure means: do not lift; the plain function was checked)
        return False
    return isinstance(out, jax.ShapeDtypeStruct) and out.shape in shapes


def liftable_positional(split, shapes: tuple[tuple, ...], out_shape: tuple) -> bool:
    """Whether an array constraint's template runs with its captured data traced, returning `out_shape`
    for arguments of `shapes` (see `liftable`)."""
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    data = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in map(_grouping.resolve, split.leaves))
    try:
        out = jax.eval_shape(lambda args, data: split.function(data, jnp.float32)(*args), args, data)
    except Exception:  # noqa: BLE001  (any failure means: do not lift; the plain function was checked)
        return False
    return isinstance(out, jax.ShapeDtypeStruct) and tuple(out.shape) == tuple(out_shape)


def traced(fn: Callable, probes, what: str, described: str, how: str = "on"):
    """`jax.eval_shape(fn, *probes)`, the user's own error shown beneath ours when it fails to trace."""
    try:
        return jax.eval_shape(fn, *probes)
    except Exception as err:
        hint = (
            " It must be a JAX-traceable function: use jax.numpy (jnp.exp, not np.exp)."
            if isinstance(err, jax.errors.TracerArrayConversionError)
            else ""
        )
        raise TypeError(f"{what} failed when called {how} {described}.{hint} The original error is shown above.") from err


def one_float_array(out, what: str) -> jax.ShapeDtypeStruct:
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise TypeError(f"{what} must return one array, got the structure {jax.tree.structure(out)}.")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{what} must return real floating-point values, got dtype {out.dtype}.")
    return out


def check_positional(f: Callable, shapes: list[tuple], names: list, where: str) -> tuple[int, ...]:
    """The shape `f(*args)` returns for float arguments of `shapes`; an error naming `where` if it fails."""
    probes = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    described = "arguments of shapes " + ", ".join(f"{n!r}: {s}" for n, s in zip(names, shapes))
    out = traced(f, probes, f"`f` of {where}", described)
    return tuple(one_float_array(out, f"`f` of {where}").shape)


def check_structured_objective(f: Callable, df: Callable | None, shapes: dict) -> None:
    """Check the objective of a structured program, `f: {name: array} -> ()`, and `df: -> {name: array}`."""
    probes = {name: jax.ShapeDtypeStruct(s, jnp.float32) for name, s in shapes.items()}
    described = "the dict of all variables {name: array}"
    out = one_float_array(traced(f, [probes], "The objective `f`", described), "The objective `f`")
    if out.shape not in ((), (1,)):
        raise ValueError(
            f"The objective `f` returned shape {out.shape}; it must be a scalar, shape () or (1,) "
            f"(for several outputs, build one Computation per output or sum them)."
        )
    if df is not None:
        out = traced(df, [probes], "The objective gradient `df`", described)
        expected = jax.tree.structure(probes)
        if jax.tree.structure(out) != expected or any(o.shape != p.shape for o, p in zip(jax.tree.leaves(out), jax.tree.leaves(probes))):
            raise ValueError(
                "The objective gradient `df` must return a dict with one array per variable, of that "
                f"variable's shape ({shapes}); got {jax.tree.map(lambda o: o.shape, out)}."
            )
