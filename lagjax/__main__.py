"""The command line: `lagjax demo` (or `python -m lagjax demo`)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lagjax", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="solve, differentiate and check the blog post's programs")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from lagjax import demo

        return demo.main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
