"""lagjax: automatic differentiation as the method of Lagrange multipliers, in JAX.

A program is a set of equality constraints `z_i = f_i(z[args(i)])` over named variables; the
stationary point of its Lagrangian is forward and backward propagation. See `Constraints` (build a
program: scalar or array variables, in any order, cycles allowed), `Computation` (solve it and
differentiate it; `Solver` options for the cyclic blocks, `SolveError` when one fails) and
`lagjax.testing` (independent oracles).
"""

from importlib import metadata as _metadata

from lagjax._block_groups import Block
from lagjax._computation import Computation, ConditionWarning, SolveError
from lagjax._cyclic import Info, Solver, Status
from lagjax._fixed_point import fixed_point
from lagjax._graph import Graph
from lagjax._program import Constraint, Constraints
from lagjax._trace import Traced, trace

__all__ = [
    "Block",
    "Computation",
    "ConditionWarning",
    "Constraint",
    "Constraints",
    "Graph",
    "Info",
    "SolveError",
    "Solver",
    "Status",
    "Traced",
    "fixed_point",
    "trace",
]

try:
    __version__ = _metadata.version("lagjax")
except _metadata.PackageNotFoundError:  # not installed: run from a source checkout
    __version__ = "0.0.0+unknown"
