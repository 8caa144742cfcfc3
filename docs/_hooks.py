"""MkDocs hooks (`hooks:` in mkdocs.yml).

- The benchmark plots (`benchmarks/*.png`, written by the benchmark scripts) become files of the
  site at `benchmarks/<name>.png`, so the pages embed them without a copy in docs/ (the tables are
  included by the snippets extension: `--8<-- "benchmarks/scale.md"`).
- `KNOWN_DOCSTRING_WARNINGS`: griffe's warnings about docstrings known to be malformed, kept from
  failing `mkdocs build --strict` until those docstrings are fixed. Every other warning fails the
  build. Remove an entry when its docstring is fixed (tests/test_docs.py says when one is stale).
"""

import logging
from pathlib import Path

from mkdocs.structure.files import File

_ROOT = Path(__file__).resolve().parent.parent

# (file, text of the warning): the Raises: sections of Constraints.add_constraint and
# Constraints.add are not `Exception: description` pairs.
KNOWN_DOCSTRING_WARNINGS: list[tuple[str, str]] = []
seen = set()  # the entries that matched a warning in this build


class _Known(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for entry in KNOWN_DOCSTRING_WARNINGS:
            if all(part in message for part in entry):
                seen.add(entry)
                logging.getLogger("mkdocs.hooks").info("known docstring warning (not failing the build): %s", message)
                return False
        return True


logging.getLogger("mkdocs.plugins.griffe").addFilter(_Known())


def on_files(files, config):
    for plot in sorted((_ROOT / "benchmarks").glob("*.png")):
        files.append(File.generated(config, f"benchmarks/{plot.name}", abs_src_path=str(plot)))
    return files
