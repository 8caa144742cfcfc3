"""The blog post's example, as a script: the same as `lagjax demo`.

f(x) = exp(exp(x) + exp(x)²) + sin(exp(x) + exp(x)²), written as constraints a..f, and the original
code's two-input example: their constraints, forward values, multipliers, gradient, and every oracle
of `lagjax.testing` with its largest error. The programs are built in `lagjax/demo.py`
(`blog_program`, `two_input_program`): read it for how a program is written.

Run: python examples/blog_example.py
"""

import sys

from lagjax import demo

if __name__ == "__main__":
    sys.exit(demo.main())
