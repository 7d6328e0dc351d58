"""A stand-in pipeline stage for orchestration tests.

usage: fake_stage.py NAME [--fail-if FILE] [--sleep S] [--resume] --out DIR
Appends one line per invocation to DIR/../calls.txt, writes DIR/done.txt; exits 1 (after
writing a partial file) when FILE exists, to simulate a crash mid-stage.
"""
import sys
import time
from pathlib import Path

args = sys.argv[1:]
name = args[0]
out = Path(args[args.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
with open(out.parent / "calls.txt", "a") as f:
    f.write(f"{name} {'resume' if '--resume' in args else 'fresh'}\n")
if "--fail-if" in args and Path(args[args.index("--fail-if") + 1]).exists():
    (out / "partial.txt").write_text("half")
    print(f"{name}: simulated crash", file=sys.stderr)
    sys.exit(1)
if "--sleep" in args:
    time.sleep(float(args[args.index("--sleep") + 1]))
(out / "done.txt").write_text("ok")
