#!/usr/bin/env python
"""List functions longer than N lines (default 80) under src/ (ast-based).

Usage: python scripts/long_functions.py [--max 80] [ROOT ...]

Prints ``lines  path:line  qualified.name`` sorted by length, longest first; exits 1 when any
function is over the limit (so it can gate CI), 0 otherwise. A function's length runs from its
``def`` (decorators excluded) to its last line, nested functions included.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def long_functions(paths, limit: int):
    """``(lines, path, lineno, qualname)`` for every function over ``limit`` lines."""
    out = []
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for f in files:
            tree = ast.parse(f.read_text(), filename=str(f))
            stack = [(tree, "")]
            while stack:
                node, prefix = stack.pop()
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        name = f"{prefix}{child.name}"
                        if not isinstance(child, ast.ClassDef):
                            n = child.end_lineno - child.lineno + 1
                            if n > limit:
                                out.append((n, str(f), child.lineno, name))
                        stack.append((child, name + "."))
                    else:
                        stack.append((child, prefix))
    return sorted(out, reverse=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max", type=int, default=80, help="longest allowed function, in lines (default 80)")
    p.add_argument("roots", nargs="*", type=Path, default=[Path(__file__).resolve().parents[1] / "src"])
    a = p.parse_args(argv)
    rows = long_functions(a.roots, a.max)
    for n, path, line, name in rows:
        print(f"{n:5d}  {path}:{line}  {name}")
    print(f"{len(rows)} function(s) over {a.max} lines")
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main())
