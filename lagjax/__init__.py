"""lagjax: automatic differentiation as the method of Lagrange multipliers, in JAX.

A program is a set of equality constraints `z_i = f_i(z[args(i)])` over named variables; the
stationary point of its Lagrangian is forward and backward propagation. See `Constraints` (build a
program: scalar or array variables, in any order, cycles allowed), `Computation` (solve it and
differentiate it; `Solver` options for the cyclic blocks, `SolveError` when one fails) and
`lagjax.testing` (independent oracles).
"""

from lagjax._computation import Computation, SolveError
from lagjax._cyclic import Solver, Status
from lagjax._program import Constraint, Constraints

__all__ = ["Computation", "Constraint", "Constraints", "SolveError", "Solver", "Status"]
__version__ = "0.1.0"
