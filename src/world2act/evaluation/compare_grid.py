"""``world2act compare --grid FILE.yaml --out DIR``: run a comparison grid (base vs DreamGen vs
World2Act; Skill-WM vs Base-WM targets; budgets) on one base policy, one set of components and
the SAME evaluation episodes, then pair every cell with the reference (base) cell.

Grid file (YAML; see docs/compare.md and configs/compare_metaworld.yaml)::

    benchmark: metaworld               # evaluation + training benchmark (shared, never per cell)
    tasks: [reach-v3, push-v3]         # list or "a,b" or "all"
    trials: 50                         # per task and evaluation seed
    seeds: [0]                         # evaluation seeds
    policy: runs/mw/base/policy        # base policy folder (the reference and the start of every method)
    wm: runs/mw/wm                     # world model (world2act, dreamgen)
    align: runs/mw/align               # Stage-1 folder (world2act)
    dataset: runs/mw/demos             # demonstrations (dreamgen)
    seed: 0                            # training seed (default: --seed)
    reference: base                    # the cell others are paired with (default: the first base cell)
    eval: {workers: 2, video_episodes: 0, init_offset_per_seed: 0, image_size: null, init_states: eval}
    cells:
      - {name: base, method: base}
      - {name: world2act, method: world2act}
      - {name: world2act-basewm, method: world2act, overrides: [wm=runs/mw/base_wm, align=runs/mw/align_basewm]}
      - {name: dreamgen, method: dreamgen, overrides: {finetune.steps: 500}, config: configs/dg.yaml}

A cell is ``{name, method: base|world2act|dreamgen, overrides, config, policy}``: ``overrides``
are the dotted ``key=value`` overrides of that command's config (``post-train``:
:class:`~world2act.posttrain.config.PostTrainConfig`; ``dreamgen``:
:class:`~world2act.baselines.dreamgen.DreamGenConfig`), as a list of strings or a mapping;
``config`` is that command's ``--config`` YAML; ``policy`` replaces the shared base policy for
this cell. Precedence: defaults ← cell ``config`` ← shared grid values ← cell ``overrides``.

Training runs **in this process** by calling the stages' ``run`` functions
(:func:`world2act.posttrain.loop.run`, :func:`world2act.baselines.dreamgen.run`) exactly as their
CLIs do: every failure becomes a Python exception that is recorded as that cell's error, the
grid is tested with plain monkeypatching, and no argument is translated twice. (The price: a
segfault in one cell ends the grid; rerunning the command resumes it.)

Layout: ``DIR/<name>/train/`` (the stage's ``--out``; absent for base cells) and
``DIR/<name>/eval/`` (``world2act eval``'s folder). A training folder whose ``manifest.json`` is
complete for the same config (recorded in ``DIR/<name>/cell.json``) is reused, an incomplete
one is resumed; an evaluation whose
``eval.json`` is complete for the same policy, tasks, trials and seeds is reused, an incomplete
one is resumed (``--resume``). ``DIR/compare.json``, ``compare.md`` and ``compare.png`` are
(re)written after every cell.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import re
import time
import traceback
from pathlib import Path
from typing import Any

from world2act import World2ActError
from world2act.utils.config import opt

log = logging.getLogger(__name__)

METHODS = ("base", "world2act", "dreamgen")
SHARED_KEYS = ("benchmark", "tasks", "trials", "seeds", "policy", "wm", "align", "dataset", "seed", "reference",
               "eval", "cells", "title")
CELL_KEYS = ("name", "method", "overrides", "config", "policy")
EVAL_KEYS = {"workers": 2, "video_episodes": 0, "init_offset_per_seed": 0, "image_size": None,
             "init_states": "eval"}  # init_states: validation = choose settings on post-training init states
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# components each method reads (config field -> what it is)
_COMPONENTS = {"base": ("policy",), "world2act": ("policy", "wm", "align"), "dreamgen": ("policy", "wm", "dataset")}


@dataclasses.dataclass
class Cell:
    """One validated grid entry: ``config`` is the stage's config dataclass (None for base)."""

    name: str
    method: str
    policy: str
    config: Any = None
    index: int = 0


@dataclasses.dataclass
class Grid:
    """A validated grid: the shared evaluation protocol and the cells in run order."""

    path: str
    benchmark: str
    tasks: list
    trials: int
    seeds: list[int]
    cells: list[Cell]
    reference: str
    eval: dict
    title: str = ""


# ---------------------------------------------------------------------------- validation
def _overrides(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        import json

        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in raw.items()]
    if isinstance(raw, str):
        raw = raw.split()
    if not isinstance(raw, list) or not all(isinstance(o, str) and "=" in o for o in raw):
        raise World2ActError(f"{where}: overrides must be a list of key=value strings or a mapping, got {raw!r}")
    return list(raw)


def _missing_path(value: str) -> str | None:
    """The first path of a (comma-separated) component value that is not a folder, else None."""
    for p in [s.strip() for s in str(value).split(",") if s.strip()]:
        if p.startswith("remote://"):
            continue
        if not Path(p).is_dir():
            return p
    return None


def _apply_grid_overrides(data: dict, overrides: list[str], where: str) -> None:
    """Dotted ``key=value`` overrides of the grid's shared keys (``trials=10``, ``eval.workers=0``)."""
    import yaml

    for ov in overrides:
        if "=" not in ov:
            raise World2ActError(f"{where}: override {ov!r}: expected key=value (e.g. trials=10)")
        key, raw = ov.split("=", 1)
        parts = key.split(".")
        if parts[0] not in SHARED_KEYS or parts[0] == "cells":
            raise World2ActError(f"{where}: override {ov!r}: unknown grid key {parts[0]!r}; valid: "
                                 f"{', '.join(k for k in SHARED_KEYS if k != 'cells')} (cells are set in the file)")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise World2ActError(f"{where}: override {ov!r}: {part!r} is not a mapping")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""


def load_grid(path: str | Path, *, seed: int = 0, overrides: list[str] | None = None) -> Grid:
    """Read and validate a grid file completely, before anything runs.

    Raises:
        World2ActError: one line naming the entry: an unknown key or method, a duplicate or
            unusable cell name, a benchmark without seeded (Meta-World) or official (LIBERO)
            evaluation init states, bad tasks / trials / seeds, a cell config that its command
            refuses (unknown override key, bad value), or a missing component folder.
    """
    from world2act.utils.config import read_yaml_mapping

    where = str(path)
    data = read_yaml_mapping(path)
    _apply_grid_overrides(data, list(overrides or []), where)
    unknown = sorted(set(data) - set(SHARED_KEYS))
    if unknown:
        raise World2ActError(f"{where}: unknown key(s) {unknown}; valid: {', '.join(SHARED_KEYS)}")
    bench, tasks, trials, seeds, train_seed = _grid_episodes(data, where, seed)
    ev = dict(EVAL_KEYS)
    ev_raw = data.get("eval") or {}
    if not isinstance(ev_raw, dict) or set(ev_raw) - set(EVAL_KEYS):
        raise World2ActError(f"{where}: eval: expected a mapping with keys {', '.join(EVAL_KEYS)}, got {ev_raw!r}")
    ev.update(ev_raw)
    if ev["init_states"] not in ("eval", "validation"):
        raise World2ActError(f"{where}: eval.init_states must be eval or validation, got {ev['init_states']!r}")

    cells_raw = data.get("cells")
    if not isinstance(cells_raw, list) or not cells_raw:
        raise World2ActError(f"{where}: 'cells' must be a non-empty list of {{name, method, ...}} entries")
    shared = {k: data[k] for k in ("policy", "wm", "align", "dataset") if data.get(k)}
    cells: list[Cell] = []
    seen: set[str] = set()
    for i, raw in enumerate(cells_raw, 1):
        cells.append(_parse_cell(i, raw, where, seen, shared, bench, tasks, train_seed))
    bases = [c.name for c in cells if c.method == "base"]
    reference = data.get("reference") or (bases[0] if bases else None)
    if reference is None:
        raise World2ActError(f"{where}: no base cell: add {{name: base, method: base}} (the reference every cell is paired with)")
    if reference not in seen:
        raise World2ActError(f"{where}: reference {reference!r} is not a cell name; cells: {', '.join(c.name for c in cells)}")
    return Grid(path=where, benchmark=bench, tasks=tasks, trials=trials, seeds=seeds, cells=cells,
                reference=str(reference), eval=ev, title=str(data.get("title") or ""))


def _grid_episodes(data: dict, where: str, seed: int):
    """The grid's benchmark (one with pairable evaluation init states), tasks, trials, seeds and
    training seed, checked by building the episode jobs. Returns ``(bench, tasks, trials,
    seeds, train_seed)``."""
    from world2act.envs import BENCHMARKS, resolve_tasks
    from world2act.evaluation.harness import episode_jobs

    bench = data.get("benchmark")
    if not bench:
        raise World2ActError(f"{where}: 'benchmark' is required (one of {', '.join(BENCHMARKS)})")
    if bench not in BENCHMARKS:
        raise World2ActError(f"{where}: benchmark {bench!r} has no seeded (Meta-World) or official (LIBERO) evaluation "
                             f"init states, so its episodes cannot be paired; valid: {', '.join(BENCHMARKS)}")
    tasks_raw = data.get("tasks", "all")
    try:
        tasks = resolve_tasks(bench, tasks_raw if isinstance(tasks_raw, (str, list)) else str(tasks_raw))
    except World2ActError as e:
        raise World2ActError(f"{where}: tasks: {e}") from None
    try:
        trials = int(data.get("trials", 50))
        seeds_raw = data.get("seeds", [0])
        seeds = [int(s) for s in (str(seeds_raw).split(",") if isinstance(seeds_raw, (str, int)) else seeds_raw)]
        train_seed = int(data.get("seed", seed))
    except (TypeError, ValueError):
        raise World2ActError(f"{where}: trials, seeds and seed must be integers") from None
    if len(set(seeds)) != len(seeds):
        raise World2ActError(f"{where}: seeds {seeds}: duplicate seeds")
    try:
        episode_jobs(bench, tasks, trials, seeds)
    except World2ActError as e:
        raise World2ActError(f"{where}: {e}") from None
    return bench, tasks, trials, seeds, train_seed


def _parse_cell(i: int, raw, where: str, seen: set, shared: dict, bench: str, tasks: list, train_seed: int) -> Cell:
    """Validate cell ``i`` (its keys, a unique folder name added to ``seen``, its method, its
    stage config as its CLI builds it, its component folders and training seeds); returns it."""
    if not isinstance(raw, dict):
        raise World2ActError(f"{where}: cell {i}: expected a mapping {{name, method, ...}}, got {raw!r}")
    name = str(raw.get("name") or "")
    at = f"{where}: cell {i} {name!r}" if name else f"{where}: cell {i}"
    bad = sorted(set(raw) - set(CELL_KEYS))
    if bad:
        raise World2ActError(f"{at}: unknown key(s) {bad}; valid: {', '.join(CELL_KEYS)}")
    if not name:
        raise World2ActError(f"{at}: 'name' is required")
    if not _NAME.match(name) or name in ("compare.json", "compare.md", "compare.png"):
        raise World2ActError(f"{at}: name must be a folder name (letters, digits, '.', '_', '-')")
    if name in seen:
        raise World2ActError(f"{at}: duplicate name {name!r}; every cell needs its own name (its folder)")
    seen.add(name)
    method = raw.get("method")
    if method not in METHODS:
        raise World2ActError(f"{at}: unknown method {method!r}; valid: {', '.join(METHODS)}")
    policy = str(raw.get("policy") or shared.get("policy") or "")
    ovs = _overrides(raw.get("overrides"), at)
    cfg = None
    if method == "base":
        if ovs or raw.get("config"):
            raise World2ActError(f"{at}: a base cell takes no overrides or config (it evaluates the base policy as is)")
    else:
        cfg = _build_config(method, raw.get("config"), ovs, shared, policy, bench, tasks, train_seed, at)
        if cfg.benchmark != bench:
            raise World2ActError(f"{at}: benchmark is shared by the whole grid ({bench}); a cell cannot change it")
        policy = cfg.policy
    values = {"policy": policy} if cfg is None else {c: getattr(cfg, c) for c in _COMPONENTS[method]}
    for comp in _COMPONENTS[method]:
        if not values.get(comp):
            raise World2ActError(f"{at}: method {method} needs '{comp}' (set it in the grid or the cell)")
        miss = _missing_path(values[comp])
        if miss:
            raise World2ActError(f"{at}: {comp} folder {miss} not found")
    if cfg is not None:
        _check_train_seeds(bench, cfg.tasks, cfg.init_states_per_task, at)
    return Cell(name=name, method=method, policy=policy, config=cfg, index=i)


def _build_config(method: str, config_file: str | None, ovs: list[str], shared: dict, policy: str, bench: str,
                  tasks: list, seed: int, at: str):
    """The stage config of a training cell, built as its CLI builds it (load_config)."""
    from world2act.utils.config import load_config

    if method == "world2act":
        from world2act.posttrain.config import PostTrainConfig as cls

        explicit = {"policy": policy, "wm": shared.get("wm"), "align": shared.get("align")}
    else:
        from world2act.baselines.dreamgen import DreamGenConfig as cls

        explicit = {"policy": policy, "wm": shared.get("wm"), "dataset": shared.get("dataset")}
    if config_file and not Path(config_file).is_file():
        raise World2ActError(f"{at}: config file {config_file} not found")
    try:
        return load_config(cls, config_file, ovs, benchmark=bench, tasks=[str(t) for t in tasks], seed=seed, **explicit)
    except World2ActError as e:
        raise World2ActError(f"{at}: {e}") from None


def _check_train_seeds(bench: str, tasks: list, n: int, at: str) -> None:
    """Training cells imagine / roll out from the post-training seed range of their tasks."""
    from world2act.envs import resolve_tasks
    from world2act.posttrain.loop import posttrain_seeds

    try:
        for t in resolve_tasks(bench, list(tasks)):
            posttrain_seeds(bench, t, n)
    except (World2ActError, ValueError) as e:
        raise World2ActError(f"{at}: no post-training init states for tasks {list(tasks)} on {bench} ({e})") from None


# ---------------------------------------------------------------------------- the stage calls
def train_world2act(cfg, out: Path, *, device: str, resume: bool) -> dict:
    """``world2act post-train`` in this process (its ``main`` minus argument parsing)."""
    from world2act.posttrain import loop
    from world2act.utils.io import prepare_out_dir

    out = prepare_out_dir(out, resume=resume)
    return loop.run(cfg, out, device=device, resume=resume)


def train_dreamgen(cfg, out: Path, *, device: str, resume: bool) -> dict:
    """``world2act dreamgen`` in this process."""
    from world2act.baselines import dreamgen

    return dreamgen.run(cfg, out, device=device, resume=resume)


TRAINERS = {"world2act": train_world2act, "dreamgen": train_dreamgen}


def evaluate_policy(policy: str, grid: Grid, out: Path, *, device: str, overwrite: bool) -> dict:
    """``world2act eval --resume`` on the grid's shared protocol (same tasks, trials, seeds)."""
    from world2act.evaluation import harness

    e = grid.eval
    return harness.evaluate(policy, grid.benchmark, list(grid.tasks), grid.trials, list(grid.seeds), out,
                            workers=int(e["workers"]), video_episodes=int(e["video_episodes"]),
                            image_size=e["image_size"], device=device, resume=not overwrite, overwrite=overwrite,
                            init_offset_per_seed=int(e["init_offset_per_seed"]), init_states=str(e["init_states"]))


# ---------------------------------------------------------------------------- running
CELL_FILE = "cell.json"


def _train_done(cell: Cell, cdir: Path) -> bool:
    """True when ``cdir/train`` holds a complete run of exactly this cell's config.

    The config is recorded in ``cdir/cell.json`` when the training finishes (the stages may
    fill in defaults in their manifest's copy, e.g. post-train's camera, so that copy is not
    compared). A complete run without ``cell.json`` is resumed (the stage then finds its work done).

    Raises:
        World2ActError: a complete run with other settings (it is never overwritten silently).
    """
    import json

    from world2act.utils.manifest import config_hash, read_manifest

    train_dir = cdir / "train"
    m = read_manifest(train_dir)
    if not (m and m.get("complete") and (train_dir / "policy").is_dir() and (cdir / CELL_FILE).is_file()):
        return False
    try:
        rec = json.loads((cdir / CELL_FILE).read_text())
    except json.JSONDecodeError:
        return False
    if rec.get("config_hash") != config_hash(cell.config) or rec.get("method") != cell.method:
        raise World2ActError(f"{train_dir} holds a finished run with other settings ({cdir / CELL_FILE}); "
                             "delete it or use a new --out")
    return True


def _eval_done(policy: str, grid: Grid, eval_dir: Path) -> dict | None:
    """The finished ``eval.json`` of this policy on the grid's protocol, else None."""
    import json

    f = eval_dir / "eval.json"
    if not f.is_file():
        return None
    try:
        ev = json.loads(f.read_text())
    except json.JSONDecodeError:
        return None
    p = ev.get("protocol") or {}
    same = (ev.get("complete") and ev.get("benchmark") == grid.benchmark and str(ev.get("policy")) == str(policy)
            and [str(t) for t in p.get("tasks", [])] == [str(t) for t in grid.tasks]
            and p.get("trials") == grid.trials and list(p.get("seeds", [])) == list(grid.seeds))
    return ev if same else None


def run_cell(cell: Cell, grid: Grid, out: Path, *, device: str) -> dict:
    """Train (if the method trains and no finished run is there) and evaluate one cell.

    Returns its record (without the paired figures); raises whatever the stage raises.
    """
    from world2act.utils.io import write_json
    from world2act.utils.manifest import config_hash, read_manifest

    rec: dict[str, Any] = {}
    cdir = out / cell.name
    policy = cell.policy
    trained_now = False
    if cell.method != "base":
        train_dir = cdir / "train"
        rec["train_dir"] = str(train_dir)
        if _train_done(cell, cdir):
            log.info("compare: %s: training in %s is complete, reused", cell.name, train_dir)
            rec["trained"] = "reused"
        else:
            resume = train_dir.is_dir() and any(train_dir.iterdir())
            log.info("compare: %s: training (%s)%s -> %s", cell.name, cell.method, " resumed" if resume else "", train_dir)
            t0 = time.time()
            TRAINERS[cell.method](copy.deepcopy(cell.config), train_dir, device=device, resume=resume)
            write_json(cdir / CELL_FILE, {"name": cell.name, "method": cell.method,
                                          "config_hash": config_hash(cell.config), "config": cell.config})
            rec["trained"] = "resumed" if resume else "trained"
            rec["train_run_s"] = round(time.time() - t0, 1)
            trained_now = True
        m = read_manifest(train_dir) or {}
        rec["train_wall_s"] = m.get("wall_time_s", rec.get("train_run_s"))
        policy = str(train_dir / "policy")
    rec["policy"] = policy
    eval_dir = cdir / "eval"
    rec["eval_dir"] = str(eval_dir)
    ev = None if trained_now else _eval_done(policy, grid, eval_dir)
    if ev is not None:
        log.info("compare: %s: evaluation in %s is complete, reused", cell.name, eval_dir)
        rec["evaluated"] = "reused"
    else:
        log.info("compare: %s: evaluating %s on %s (%d task(s) x %d seed(s) x %d trials) -> %s", cell.name, policy,
                 grid.benchmark, len(grid.tasks), len(grid.seeds), grid.trials, eval_dir)
        ev = evaluate_policy(policy, grid, eval_dir, device=device, overwrite=trained_now)
        rec["evaluated"] = "evaluated"
    rec["eval_wall_s"] = (ev.get("timing") or {}).get("wall_s")
    rec["complete"] = bool(ev.get("complete"))
    rec["_eval"] = ev
    return rec


def run_grid(grid: Grid, out: str | Path, *, device: str = "cpu") -> dict:
    """Run every cell (a failing cell is recorded and the others go on), pair each with the
    reference and write ``compare.json`` / ``compare.md`` / ``compare.png`` after every cell."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {c.name: {"name": c.name, "method": c.method, "status": "pending"} for c in grid.cells}
    evals: dict[str, dict] = {}
    n = len(grid.cells)
    try:
        for k, cell in enumerate(grid.cells, 1):
            log.info("compare [%d/%d] %s (%s)", k, n, cell.name, cell.method)
            t0 = time.time()
            rec = records[cell.name]
            if cell.config is not None:
                rec["config"] = dataclasses.asdict(cell.config)
            try:
                r = run_cell(cell, grid, out, device=device)
                evals[cell.name] = r.pop("_eval")
                rec.update(r)
                rec["status"] = "ok" if r.get("complete") else "incomplete"
            except Exception as e:  # noqa: BLE001 - one cell's crash must not stop the others
                rec["status"] = "error"
                rec["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
                rec["traceback"] = traceback.format_exc(limit=8)
                log.error("compare [%d/%d] %s failed: %s (the other cells go on)", k, n, cell.name, rec["error"])
            finally:
                _free_memory()
            rec["cell_s"] = round(time.time() - t0, 1)
            result = summarize(grid, records, evals)
            write_outputs(out, result)
            if rec["status"] != "error":
                c = next(x for x in result["cells"] if x["name"] == cell.name)
                sr = c.get("success_rate")
                log.info("compare [%d/%d] %s done: mean success %s", k, n, cell.name,
                         "n/a" if sr is None else f"{100 * sr:.1f}%")
    except KeyboardInterrupt:
        for rec in records.values():
            if rec["status"] == "pending":
                rec["status"] = "interrupted"
        write_outputs(out, summarize(grid, records, evals))
        raise
    return summarize(grid, records, evals)


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


# ---------------------------------------------------------------------------- summary
def summarize(grid: Grid, records: dict[str, dict], evals: dict[str, dict]) -> dict:
    """The ``compare.json`` content: per cell success per task, mean, paired figures vs the reference."""
    from world2act.evaluation.stats import episode_records, paired_comparison, paired_verdict

    ref = evals.get(grid.reference)
    labels: dict[str, str] = {}
    cells = []
    for cell in grid.cells:
        rec = {k: v for k, v in records[cell.name].items()}
        ev = evals.get(cell.name)
        if ev is not None:
            rec["per_task"] = {t: v.get("success_rate") for t, v in (ev.get("per_task") or {}).items()}
            for t, v in (ev.get("per_task") or {}).items():
                labels.setdefault(t, v.get("name") or t)
            o = ev.get("overall") or {}
            rec.update({"success_rate": o.get("success_rate"), "n_episodes": o.get("n_trials"),
                        "n_success": o.get("n_success"), "n_errors": o.get("n_errors"), "ci95": o.get("ci95")})
            if cell.name != grid.reference and ref is not None:
                pc = paired_comparison(episode_records(ref), episode_records(ev))
                pc["verdict"] = paired_verdict(pc)
                rec["paired"] = pc
        cells.append(rec)
    ok = [c for c in cells if c["status"] == "ok"]
    return {"grid": grid.path, "title": grid.title, "benchmark": grid.benchmark, "tasks": [str(t) for t in grid.tasks],
            "trials": grid.trials, "seeds": grid.seeds, "reference": grid.reference,
            "complete": len(ok) == len(cells), "labels": labels, "cells": cells,
            "errors": {c["name"]: c["error"] for c in cells if c.get("error")}}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _wall(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def markdown(res: dict) -> str:
    """``compare.md``: success per task per cell, then each cell paired with the reference."""
    from world2act.evaluation.stats import ALPHA, VERDICT_RULE, format_p

    cells = res["cells"]
    ref = res["reference"]
    title = res.get("title") or f"Method comparison on {res['benchmark']}"
    lines = [f"# {title}", "",
             f"Grid `{res['grid']}`: {len(res['tasks'])} task(s), {res['trials']} trials x seeds {res['seeds']} per task, "
             f"the same episodes for every cell (paired by task, seed and trial). Reference: `{ref}`.", ""]
    if not res["complete"]:
        lines += ["**Not every cell finished**: see the status column and the errors below.", ""]
    lines += ["## Success rate per task (%)", "",
              "| task | " + " | ".join(c["name"] for c in cells) + " |",
              "|---|" + "---:|" * len(cells)]
    for t in res["tasks"]:
        label = res["labels"].get(t, t)
        lines.append(f"| {t if label == t else f'{t}: {label}'} | " + " | ".join(_pct((c.get("per_task") or {}).get(t)) for c in cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{_pct(c.get('success_rate'))}**" for c in cells) + " |")
    lines += ["", f"## Paired with `{ref}`", "",
              f"Difference = cell − {ref} in success-rate points over the paired episodes; 95% CI of the mean paired "
              f"difference (normal approximation); exact McNemar p on the discordant pairs; {VERDICT_RULE} "
              f"(alpha {ALPHA:g}).", "",
              "| cell | method | status | mean success % | paired episodes | difference (pp) | 95% CI (pp) | "
              "McNemar p | fixed / broken | verdict | training wall | eval wall |",
              "|---|---|---|---:|---:|---:|---|---:|---:|---|---:|---:|"]
    for c in cells:
        pc = c.get("paired") or {}
        if pc.get("n"):
            lo, hi = pc["ci95"]
            fig = (f"{pc['n']} | {100 * pc['diff']:+.1f} | {100 * lo:+.1f} … {100 * hi:+.1f} | {format_p(pc['mcnemar_p'])} | "
                   f"{pc['improved']} / {pc['regressed']} | {pc['verdict']}")
        elif c["name"] == ref:
            fig = "— | reference | — | — | — | —"
        else:
            fig = "— | — | — | — | — | —"
        lines.append(f"| {c['name']} | {c['method']} | {c['status']} | {_pct(c.get('success_rate'))} | {fig} | "
                     f"{_wall(c.get('train_wall_s'))} | {_wall(c.get('eval_wall_s'))} |")
    errs = [c for c in cells if c.get("error")]
    if errs:
        lines += ["", "## Errors", ""]
        lines += [f"- `{c['name']}` ({c['method']}): {c['error']}" for c in errs]
    lines += budget_markdown(res)
    lines += ["", "Folders: `<cell>/train/` (training output, reused when complete) and `<cell>/eval/` "
              "(`world2act eval` output with `episodes.jsonl`). Rerun the same command to resume.", ""]
    return "\n".join(lines)


def _save_png(fig, path: str | Path) -> None:
    """Write a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    from world2act.utils.io import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def bar_plot(res: dict, path: str | Path) -> None:
    """Grouped bars: success per task (and the mean) for every cell that has an evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in res["cells"] if c.get("per_task")]
    groups = list(res["tasks"]) + ["mean"]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) * max(1, len(cells)) * 0.5 + 2), 3.8))
    w = 0.8 / max(1, len(cells))
    for i, c in enumerate(cells):
        vals = [100 * ((c["per_task"].get(t)) or 0) for t in res["tasks"]] + [100 * (c.get("success_rate") or 0)]
        xs = [g + (i - (len(cells) - 1) / 2) * w for g in range(len(groups))]
        ax.bar(xs, vals, width=w, label=c["name"])
    ax.set_xticks(range(len(groups)))
    names = [g if g == "mean" else f"{g}: {res['labels'].get(g, g)}" for g in groups]
    ax.set_xticklabels([x if len(x) <= 28 else x[:27] + "…" for x in names], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 120)
    ax.set_title(res.get("title") or f"{res['benchmark']}: {res['trials']} trials x seeds {res['seeds']}", fontsize=9)
    if cells:
        ax.legend(fontsize=8, loc="upper center", ncol=min(len(cells), 5), frameon=False)
    _save_png(fig, path)


# what a scaling series shares: the same method, components and training tasks (Fig. 5b)
_SERIES_KEYS = ("policy", "wm", "align", "dataset", "tasks", "wm_prompts", "adapter")


def budget_series(res: dict) -> dict[str, list[dict]]:
    """Success against the imagination budget (paper Fig. 5b): training cells with an
    evaluation, grouped by method, components and training tasks (``_SERIES_KEYS``), sorted by
    ``init_states_per_task`` (imagined trajectories per task); only groups with ≥ 2 budgets.

    Returns:
        ``{series label: [{"n", "name", "success_rate", "ci95", "paired"}, ...]}``.
    """
    import json

    groups: dict[tuple[str, str], list[dict]] = {}
    for c in res["cells"]:
        cfg = c.get("config") or {}
        if c.get("success_rate") is None or "init_states_per_task" not in cfg:
            continue
        key = (c["method"], json.dumps({k: cfg.get(k) for k in _SERIES_KEYS if k in cfg}, sort_keys=True))
        groups.setdefault(key, []).append({"n": int(cfg["init_states_per_task"]), "name": c["name"],
                                           "success_rate": c["success_rate"], "ci95": c.get("ci95"),
                                           "paired": c.get("paired")})
    out: dict[str, list[dict]] = {}
    for (method, _), pts in groups.items():
        if len({p["n"] for p in pts}) < 2:
            continue
        pts.sort(key=lambda p: p["n"])
        out[method if method not in out else f"{method} ({pts[0]['name']}, …)"] = pts
    return out


def budget_markdown(res: dict) -> list[str]:
    """The ``compare.md`` section of :func:`budget_series` (empty without a series)."""
    series = budget_series(res)
    if not series:
        return []
    lines = ["", "## Imagination budget (Fig. 5b)", "",
             f"Success against imagined trajectories per task; difference paired with `{res['reference']}`.", "",
             "| series | imagined trajectories / task | cell | success % | difference (pp) | 95% CI (pp) |",
             "|---|---:|---|---:|---:|---|"]
    for label, pts in series.items():
        for p in pts:
            pc = p.get("paired") or {}
            diff = f"{100 * pc['diff']:+.1f} | {100 * pc['ci95'][0]:+.1f} … {100 * pc['ci95'][1]:+.1f}" if pc.get("n") else "— | —"
            lines.append(f"| {label} | {p['n']} | {p['name']} | {_pct(p['success_rate'])} | {diff} |")
    return lines


def budget_plot(res: dict, path: str | Path) -> bool:
    """``compare_scaling.png``: success (95% CI bars) against imagined trajectories per task,
    one line per :func:`budget_series` series, the reference as a dashed line. Returns False
    (and writes nothing) when the grid has no series."""
    series = budget_series(res)
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for label, pts in series.items():
        xs = [p["n"] for p in pts]
        ys = [100 * p["success_rate"] for p in pts]
        ci = [p.get("ci95") or [p["success_rate"]] * 2 for p in pts]
        err = [[y - 100 * lo for y, (lo, _) in zip(ys, ci)], [100 * hi - y for y, (_, hi) in zip(ys, ci)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
    ref = next((c for c in res["cells"] if c["name"] == res["reference"]), {})
    if ref.get("success_rate") is not None:
        ax.axhline(100 * ref["success_rate"], color="grey", ls="--", lw=1, label=f"{res['reference']} (reference)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("imagined trajectories per task")
    ax.set_ylabel("success rate (%)")
    ax.set_title(f"{res['benchmark']}: success vs imagination budget", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    _save_png(fig, path)
    return True


def write_outputs(out: Path, res: dict) -> None:
    """``compare.json``, ``compare.md``, ``compare.png`` and, when cells of one method differ in
    their imagination budget, ``compare_scaling.png`` (each written atomically)."""
    from world2act.utils.io import atomic_write, write_json

    write_json(out / "compare.json", res)
    atomic_write(out / "compare.md", markdown(res))
    for name, plot in (("compare.png", bar_plot), ("compare_scaling.png", budget_plot)):
        try:
            plot(res, out / name)
        except Exception as e:  # noqa: BLE001 - the figure is informative; the tables are the result
            log.warning("compare: %s failed: %s", name, e)


# ---------------------------------------------------------------------------- CLI
@dataclasses.dataclass
class CompareGridArgs:
    """Options of ``world2act compare``: the grid file is its config (``--config`` is the same file)
    and trailing ``key=value`` overrides change the grid's shared keys."""

    grid: str = opt("", "grid YAML: shared protocol + cells {name, method: base|world2act|dreamgen, overrides} "
                    "(docs/compare.md); --config FILE is the same; trailing key=value overrides change the grid's "
                    "shared keys (trials=10, eval.workers=0)")
    check: bool = opt(False, "validate the grid and list the cells, run nothing")


Config = CompareGridArgs


def make_config(args) -> CompareGridArgs:
    if args.grid and args.config and args.config != args.grid:
        raise World2ActError("compare: give the grid once (--grid or --config), not two different files")
    if not (args.grid or args.config):
        raise World2ActError("compare: --grid FILE.yaml is required (docs/compare.md)")
    return CompareGridArgs(grid=args.grid or args.config, check=bool(args.check))


def main(cfg: CompareGridArgs, args) -> int:
    from world2act.utils.seeding import resolve_device, set_torch_threads

    grid = load_grid(cfg.grid, seed=args.seed, overrides=list(args.overrides or []))
    log.info("compare: grid %s valid: %d cell(s) on %s, %d task(s) x %d seed(s) x %d trials, reference %s",
             grid.path, len(grid.cells), grid.benchmark, len(grid.tasks), len(grid.seeds), grid.trials, grid.reference)
    if cfg.check:
        for c in grid.cells:
            print(f"{c.name}: {c.method} (policy {c.policy})")
        return 0
    set_torch_threads()
    res = run_grid(grid, args.out, device=resolve_device(args.device))
    for c in res["cells"]:
        pc = c.get("paired") or {}
        extra = (f", {100 * pc['diff']:+.1f} pp vs {grid.reference} (95% CI {100 * pc['ci95'][0]:+.1f} … "
                 f"{100 * pc['ci95'][1]:+.1f}, McNemar p {pc['mcnemar_p']:.3g})") if pc.get("n") else ""
        state = c["status"] if c["status"] != "error" else f"error: {c['error']}"
        sr = c.get("success_rate")
        print(f"{c['name']} ({c['method']}): {'n/a' if sr is None else f'{100 * sr:.1f}%'}{extra} [{state}]")
    print(f"-> {Path(args.out) / 'compare.md'}")
    return 0 if res["complete"] else 1
