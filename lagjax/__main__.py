"""The command line: `lagjax demo` (or `python -m lagjax demo`), and `lagjax graph FILE.py:NAME`.

lagjax demo [--graph PATH | --no-graph]
    the blog post's programs, solved, differentiated and checked; the blog program's graph, with
    its values and multipliers, written to lagjax_demo.png (`--graph PATH` to choose, `--no-graph`
    or `--graph ''` to skip).
lagjax graph FILE.py:NAME [-o out.png] [--x 0.3,0.1] [--max-nodes N] [--partials]
    draw the program NAME of FILE.py: a Computation, or a function of no arguments returning one
    (.png, .svg or .dot by the suffix of -o; default NAME.png).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import pathlib
import sys


class UsageError(Exception):
    """A mistake on the command line, reported as `lagjax <command>: error: <message>`, status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lagjax", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="solve, differentiate and check the blog post's programs")
    where = demo_parser.add_mutually_exclusive_group()
    where.add_argument(
        "--graph",
        default="lagjax_demo.png",
        metavar="PATH",
        help="where to write the blog program's graph: .png, .svg or .dot (default lagjax_demo.png; '' skips it)",
    )
    where.add_argument("--no-graph", action="store_true", help="do not write the graph")
    graph_parser = commands.add_parser("graph", help="draw a program: lagjax graph FILE.py:NAME -o out.png")
    graph_parser.add_argument(
        "target", metavar="FILE.py:NAME", help="a Python file and, in it, a Computation or a function of no arguments returning one"
    )
    graph_parser.add_argument("-o", "--output", metavar="PATH", help="the picture: .png, .svg or .dot (default NAME.png)")
    graph_parser.add_argument(
        "--x", metavar="X", help="the inputs, comma-separated (--x 0.3,0.1; --x=-0.3,0.1 for a leading minus): draws values and multipliers"
    )
    graph_parser.add_argument("--max-nodes", type=int, default=200, metavar="N", help="past N variables, a summary graph (default 200)")
    graph_parser.add_argument("--partials", action="store_true", help="label the edges with the local partials at x (needs --x)")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return run_demo(None if args.no_graph else (args.graph or None))
        return draw(args)
    except UsageError as error:
        print(f"lagjax {args.command}: error: {error}", file=sys.stderr)
        return 2


def run_demo(graph: str | None) -> int:
    """`lagjax demo`: the graph's path checked before anything runs."""
    from lagjax import _graph, demo

    if graph:
        try:
            _graph.format_of(graph)
        except ValueError as error:
            raise UsageError(f"--graph: {error}") from None
    return demo.main(graph=graph)


def draw(args) -> int:
    """`lagjax graph`: load the program, draw it, say where."""
    import jax

    jax.config.update("jax_enable_x64", True)  # as `lagjax demo`: values in float64
    from lagjax import _graph

    comp, name = load(args.target)
    output = pathlib.Path(args.output if args.output else f"{name}.png")
    try:
        _graph.format_of(output)
        x = None if args.x is None else inputs(comp, args.x)
        picture = comp.graph(x, max_nodes=args.max_nodes, partials=args.partials)
        picture.save(output)
    except (ValueError, TypeError, ImportError) as error:
        raise UsageError(str(error)) from None
    at = "" if x is None else f", with its values and multipliers at x = {args.x}"
    print(f"wrote the graph of {name} ({comp.n} variables{at}) to {output}")
    return 0


def load(target: str):
    """The Computation named by `FILE.py:NAME`, and NAME."""
    from lagjax import Computation

    path, colon, name = target.rpartition(":")
    if not colon or not path or not name:
        raise UsageError(
            f"{target!r} names no program: write FILE.py:NAME, a Python file and the name in it of a Computation (or of a function returning one)."
        )
    file = pathlib.Path(path)
    if not file.is_file():
        raise UsageError(f"no file {path!r} (from {target!r}).")
    spec = importlib.util.spec_from_file_location(f"lagjax_graph_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path!r} is not a Python file that can be imported.")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.resolve().parent))  # its own imports of neighbouring files
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(file.resolve().parent))
    if not hasattr(module, name):
        defined = sorted(k for k in vars(module) if not k.startswith("_"))
        raise UsageError(f"{path!r} defines no {name!r}; it defines {defined}.")
    value = getattr(module, name)
    if not isinstance(value, Computation) and callable(value) and not isinstance(value, type):
        try:
            inspect.signature(value).bind()
        except TypeError:
            raise UsageError(
                f"{name!r} in {path!r} is a function that takes arguments; give a Computation, or a function of no arguments returning one."
            ) from None
        except ValueError:  # no signature to read: call it
            pass
        value = value()
        if not isinstance(value, Computation):
            raise UsageError(f"{name}() in {path!r} returned a {type(value).__name__}, not a lagjax.Computation.")
    if not isinstance(value, Computation):
        raise UsageError(
            f"{name!r} in {path!r} is a {type(value).__name__}, not a lagjax.Computation (nor a function of no arguments returning one)."
        )
    return value, name


def inputs(comp, text: str):
    """`--x 0.3,0.1` as the program's inputs: a vector, or a dict of scalars by input name."""
    import numpy as np

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--x must be numbers separated by commas, e.g. --x 0.3,0.1; got {text!r}.") from None
    if len(values) != comp.d:
        raise UsageError(f"--x gives {len(values)} number{'s' * (len(values) != 1)} for the {comp.d} inputs {comp.input_names}.")
    if not comp.dicts:
        return np.asarray(values)
    shapes = {name: comp.shapes[name] for name in comp.input_names}
    if any(shape != () for shape in shapes.values()):
        raise UsageError(
            f"--x gives numbers, but the inputs have shapes {shapes}: draw this program from Python, comp.graph(x).save(path)."
        )
    return dict(zip(comp.input_names, values))


if __name__ == "__main__":
    sys.exit(main())
