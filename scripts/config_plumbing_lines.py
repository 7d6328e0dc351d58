"""Count lines of configuration plumbing in src/ (issue 17 target: at least halved).

Plumbing = every line of ``utils/config.py`` plus the body of every function named
``add_arguments``, ``main``, ``_add_shared``, ``build_parser``, ``command_parser`` or
``make_config`` anywhere in ``src/``
(docstrings included; blank lines excluded). Run: ``python scripts/config_plumbing_lines.py [-v]``.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
NAMES = {"add_arguments", "main", "_add_shared", "build_parser", "command_parser", "make_config"}


def nonblank(lines: list[str]) -> int:
    return sum(1 for ln in lines if ln.strip())


def main() -> int:
    verbose = "-v" in sys.argv
    total = 0
    cfg = SRC / "world2act" / "utils" / "config.py"
    n = nonblank(cfg.read_text().splitlines())
    total += n
    if verbose:
        print(f"{n:5d}  {cfg.relative_to(SRC)}")
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.parse(text).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in NAMES:
                start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                n = nonblank(lines[start - 1:node.end_lineno])
                total += n
                if verbose:
                    print(f"{n:5d}  {path.relative_to(SRC)}:{node.name}")
    print(f"config plumbing lines: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
