"""``world2act pipeline``: every stage end to end, resumable, with a report.

Stages (DESIGN.md): collect → segment → train-wm → train-base → align → post-train →
eval-base / eval-posttrained, laid out as ``OUT/demos``, ``OUT/skills``, ``OUT/wm``,
``OUT/base``, ``OUT/align``, ``OUT/posttrain``, ``OUT/eval-base``, ``OUT/eval-posttrained``,
plus ``OUT/report.md`` and ``OUT/summary.json``. After the stages, the base and post-trained
policies are timed interleaved in the pipeline's own process (``OUT/latency_paired.json``,
:func:`measure_paired_latency`): the report's latency ratio comes from that, not from the two
evaluations' separately timed figures.

Each stage runs as its own ``world2act <command>`` subprocess (memory is returned between
stages and a kill can only interrupt the running stages); stages whose inputs are ready run
concurrently, two at a time by default (``--parallel``). When a stage finishes, the pipeline
writes ``OUT/<stage>/pipeline_stage.json`` with a hash of the stage's exact arguments and of
its upstream stages' hashes. On a re-run a stage is skipped when that file matches; an
interrupted stage is re-run with ``--resume`` (its own checkpoints), and a stage whose inputs
changed is re-run from scratch with ``--overwrite``.

Options may also come from ``--config FILE.yaml`` and ``key=value`` overrides
(:class:`PipelineConfig`: ``preset``, ``parallel``, ``only``, ``log_with``, ``seed``,
``device``). ``--seed S`` (S ≠ 0) is passed on to every stage except the evaluations (their
seeds are the protocol's ``--seeds``) and ``--device D`` (D ≠ auto) to every stage; both then
enter the stage hashes, so changing them re-runs the stages (the defaults add nothing, so
existing runs stay up to date).

``--log-with tensorboard|wandb|trackio`` is passed on to the training stages (train-wm,
train-base, align, post-train; it does not enter the stage hashes, so switching trackers
re-runs nothing) and the evaluation summary is logged from the pipeline itself
(``OUT/tensorboard`` for TensorBoard: ``tensorboard --logdir OUT`` shows every stage).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from world2act import World2ActError
from world2act.utils.config import opt
from world2act.utils.io import read_json, write_json

log = logging.getLogger("world2act.pipeline")
STAMP = "pipeline_stage.json"
TRACKED_COMMANDS = ("train-wm", "train-base", "align", "post-train")  # commands that take --log-with


@dataclasses.dataclass
class Stage:
    """One pipeline stage: a ``world2act`` command with its arguments.

    Attributes:
        name: folder name under the pipeline's ``--out`` (also the report's label).
        command: the ``world2act`` subcommand.
        args: arguments (``{out}`` = the pipeline folder; ``--out`` is added automatically).
        after: stages whose outputs this one reads (their hashes enter this stage's hash).
        resumable: whether the command accepts ``--resume`` to continue an interrupted run.
        program: the executable prefix (default ``python -m world2act``; tests substitute a
            fake stage script).
    """

    name: str
    command: str
    args: list[str]
    after: list[str]
    resumable: bool = True
    program: list[str] | None = None


@dataclasses.dataclass
class PipelineConfig:
    """Configuration of ``world2act pipeline`` (``--config FILE.yaml`` keys, ``key=value`` overrides).

    Attributes:
        preset: one of :data:`world2act.presets.PRESETS`. parallel: stages run at once.
        only: stage names allowed to run (empty: all). log_with: experiment tracker.
        seed: passed to every non-evaluation stage as ``--seed`` when non-zero.
        device: passed to every stage as ``--device`` unless ``auto``.
    """

    preset: str = opt("", "smoke: toy sizes (≤ 8 min, CI); quick: libero_object, meaningful comparison (≤ 60 min, "
                      "make demo); metaworld: four Meta-World grasp tasks, the cheap proving ground (≈ 60 min); "
                      "paper: the paper's protocol (GPU); required here or in --config", required=True,
                      choices="world2act.presets:PRESETS")
    parallel: int = opt(2, "stages run at once when their inputs are ready (default 2: one per core)")
    only: list[str] = opt(help="comma-separated stage names allowed to run (others must be up to date)", factory=list)
    log_with: str = opt("none", "experiment tracker passed on to the training stages (default none)",
                        choices="world2act.utils.tracking:BACKENDS")
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise World2ActError(f"pipeline: device {self.device!r}: valid choices are auto, cpu, cuda")
        if int(self.seed) < 0:
            raise World2ActError(f"pipeline: seed must be non-negative, got {self.seed}")


def with_seed_device(stages: list[Stage], seed: int = 0, device: str = "auto") -> list[Stage]:
    """The stages with ``--seed`` (non-zero, not on ``eval`` stages) and ``--device`` (not
    ``auto``) appended to their arguments; unchanged for the defaults."""
    out = []
    for st in stages:
        extra = (["--seed", str(int(seed))] if seed and st.command != "eval" else [])
        extra += ["--device", device] if device and device != "auto" else []
        out.append(dataclasses.replace(st, args=[*st.args, *extra]) if extra else st)
    return out


def _preset_stages(preset: str) -> tuple[list[Stage], dict]:
    from world2act.presets import PRESETS

    if callable(preset):  # a custom preset function (tests, notebooks)
        return preset()
    if preset not in PRESETS:
        raise World2ActError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[preset]()


def stage_hash(stage: Stage, upstream: dict[str, str]) -> str:
    blob = json.dumps({"command": stage.command, "args": stage.args,
                       "after": {n: upstream.get(n) for n in stage.after}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_pipeline(preset, out: str | Path, *, overwrite: bool = False, only: list[str] | None = None,
                 extra_env: dict | None = None, max_parallel: int = 2, log_with: str = "none",
                 seed: int = 0, device: str = "auto") -> dict:
    """Run (or resume) every stage of ``preset`` into ``out``; write report.md and summary.json.

    ``seed`` / ``device``: passed on to the stages (:func:`with_seed_device`).
    Stages whose inputs are ready run concurrently, up to ``max_parallel`` at a time (on two
    cores: the base policy trains beside the world model, and the base is evaluated beside
    Stage 1 and Stage 2). Concurrent stages get ``WORLD2ACT_THREADS = cores // max_parallel``
    torch threads (unless set): two spinning OpenMP threads per process on an oversubscribed
    machine were measured up to 15x slower than one.

    Raises:
        World2ActError: unknown preset, or a stage failed (the message names the stage, its log
            file and the last error line; stages running beside it are stopped and resume on
            the next run).
    """
    from world2act.utils.tracking import check_backend

    log_with = check_backend(log_with)
    stages, meta = _preset_stages(preset)
    stages = with_seed_device(stages, seed, device)
    if meta.get("requires_cuda"):
        import torch

        if not torch.cuda.is_available():
            raise World2ActError(f"no CUDA GPU on this machine: {meta['requires_cuda']}")
    out, env, max_parallel = _prepare_run(out, overwrite, extra_env, max_parallel)
    hashes, timings, done, pending = _plan_stages(stages, out, only)
    _schedule(pending, done, timings, hashes, out, env, log_with, max_parallel)
    return _finish_pipeline(preset, meta, stages, timings, hashes, out, log_with)


def _prepare_run(out, overwrite: bool, extra_env: dict | None, max_parallel: int):
    """Make ``out`` (wiped first with ``overwrite``) and ``out/logs``; build the stages'
    environment (offline hub; ``WORLD2ACT_THREADS`` shared out when stages run concurrently).
    Returns ``(out, env, max_parallel)``."""
    out = Path(out).resolve()
    if overwrite and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    max_parallel = max(1, int(max_parallel))
    env = dict(os.environ, **(extra_env or {}))
    env.setdefault("HF_HUB_OFFLINE", "1")
    if max_parallel > 1:
        env.setdefault("WORLD2ACT_THREADS", str(max(1, (os.cpu_count() or 1) // max_parallel)))
    return out, env, max_parallel


def _plan_stages(stages: list[Stage], out: Path, only):
    """Hash every stage (its command, arguments and upstream hashes); skip those whose stamp
    matches, refuse a stale stage outside ``only``. Returns ``(hashes, timings, done, pending)``."""
    hashes: dict[str, str] = {}
    for st in stages:  # presets list stages in dependency order
        hashes[st.name] = stage_hash(st, hashes)
    timings: dict[str, dict] = {}
    done: set[str] = set()
    pending: list[Stage] = []
    for st in stages:
        stamp = out / st.name / STAMP
        if stamp.is_file() and read_json(stamp).get("hash") == hashes[st.name]:
            timings[st.name] = {"status": "skipped (up to date)", "wall_s": read_json(stamp).get("wall_s")}
            done.add(st.name)
            log.info("[%s] up to date, skipped", st.name)
        elif only and st.name not in only:
            raise World2ActError(f"stage {st.name} is not up to date and not in --only {only}")
        else:
            pending.append(st)
    return hashes, timings, done, pending


def _launch_stage(st: Stage, out: Path, env: dict, log_with: str, running: dict) -> None:
    """Start one stage as a subprocess logging to ``out/logs/NAME.log`` (resuming an interrupted
    resumable stage, else starting its folder over); record it in ``running``."""
    from world2act.utils.procs import child_dies_with_parent

    folder = out / st.name
    prefix = st.program or [sys.executable, "-m", "world2act"]
    argv = [*prefix, st.command, *[a.replace("{out}", str(out)) for a in st.args], "--out", str(folder)]
    if log_with != "none" and st.command in TRACKED_COMMANDS:
        argv += ["--log-with", log_with]
    if folder.exists() and any(folder.iterdir()):
        if st.resumable and not (folder / STAMP).is_file():
            argv.append("--resume")  # interrupted earlier: continue from its checkpoints
        else:
            import shutil

            shutil.rmtree(folder)  # inputs or arguments changed: start this stage over
    log.info("[%s] %s", st.name, " ".join(argv[len(prefix):]))
    logfile = out / "logs" / f"{st.name}.log"
    lf = open(logfile, "a")
    lf.write(f"\n$ {' '.join(argv)}\n")
    lf.flush()
    proc = subprocess.Popen(argv, stdout=lf, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=child_dies_with_parent())  # a killed pipeline takes its stages along
    running[st.name] = (st, proc, lf, logfile, time.time())


def _stop_all(running: dict) -> None:
    """Terminate every running stage (killed after 30 s), close its log and forget it."""
    for _, proc, lf, _, _ in running.values():
        if proc.poll() is None:
            proc.terminate()
    for _, proc, lf, _, _ in running.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        lf.close()
    running.clear()


def _schedule(pending: list[Stage], done: set, timings: dict, hashes: dict, out: Path, env: dict, log_with: str,
              max_parallel: int) -> None:
    """Run the pending stages, up to ``max_parallel`` at once, each when its inputs are done;
    stamp each finished stage. A failure (or an interrupt) stops the running ones and raises."""
    running: dict[str, tuple] = {}
    try:
        while pending or running:
            for st in list(pending):
                if len(running) >= max_parallel:
                    break
                if all(d in done for d in st.after):
                    pending.remove(st)
                    _launch_stage(st, out, env, log_with, running)
            if not running:
                raise World2ActError(f"stages {[s.name for s in pending]} wait for inputs no stage produces")
            time.sleep(0.2)
            for name, (st, proc, lf, logfile, t0) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                lf.close()
                del running[name]
                wall = round(time.time() - t0, 1)
                if rc != 0:
                    _stop_all(running)
                    tail = [l for l in logfile.read_text().splitlines() if l.strip()][-1:] or ["(no output)"]
                    raise World2ActError(f"stage {name} failed (exit {rc}); log {logfile}: {tail[0][:300]}")
                write_json(out / name / STAMP, {"hash": hashes[name], "command": st.command, "args": st.args,
                                                "wall_s": wall, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
                timings[name] = {"status": "ran", "wall_s": wall}
                done.add(name)
                log.info("[%s] done in %.1f s", name, wall)
    except BaseException:
        _stop_all(running)
        raise


def _finish_pipeline(preset, meta: dict, stages: list[Stage], timings: dict, hashes: dict, out: Path,
                     log_with: str) -> dict:
    """Time base vs post-trained interleaved, write report.md and summary.json, log the summary
    to the tracker; returns the summary."""
    from world2act.report import write_report

    timings = {st.name: timings[st.name] for st in stages if st.name in timings}
    # the report's latency figure: base and post-trained timed interleaved in THIS process
    # (the per-policy eval.json figures were timed in separate processes under different load)
    measure_paired_latency(out, key=f"{hashes.get('base')}:{hashes.get('posttrain')}")
    summary = write_report(out, preset=preset if isinstance(preset, str) else getattr(preset, "__name__", "custom"),
                           preset_meta=meta, timings=timings)
    if log_with != "none":
        from world2act.utils.tracking import make_tracker

        with make_tracker(log_with, out, "pipeline", {"preset": summary.get("preset") or str(preset)}) as tracker:
            tracker.log({"eval": summary.get("success", {}),
                         "residual_latency_overhead": summary.get("residual_latency_overhead")}, step=0)
    return summary


#: the interleaved base vs post-trained timing under the pipeline folder (read by the report)
PAIRED_LATENCY_FILE = "latency_paired.json"


def measure_paired_latency(out: str | Path, *, base: str = "base", post: str = "posttrain/policy",
                           key: str | None = None, n: int = 50, warmup: int = 5) -> dict | None:
    """Time the base and post-trained policies of a pipeline run interleaved, in this process,
    and write ``OUT/latency_paired.json`` (:data:`PAIRED_LATENCY_FILE`).

    Uses :func:`world2act.evaluation.paired_latency.paired_latency` (batch 1, one torch thread,
    the same synthetic observation for both; ``n`` rounds after ``warmup``): per-policy median ms
    per chunk and the paired ratio post / base with its bootstrap 95% interval. This is the
    figure ``report.md`` shows; the per-policy ``latency`` in each ``eval.json`` is left as is.

    Args:
        out: the pipeline folder. base / post: policy folders relative to ``out``.
        key: identifies the inputs (the base and post-train stage hashes); an existing file
            with the same key and no error is reused instead of timing again.
        n: timed rounds. warmup: untimed rounds first.

    Returns:
        the written dict (with ``key``, ``base``, ``post``; ``error`` instead of figures when
        loading or timing failed), or None when either policy folder has no ``config.json``
        (a stage did not run: nothing is written, and an older file is removed).
    """
    out = Path(out)
    path = out / PAIRED_LATENCY_FILE
    if not (out / base / "config.json").is_file() or not (out / post / "config.json").is_file():
        path.unlink(missing_ok=True)
        return None
    if key is not None and path.is_file():
        try:
            old = read_json(path)
        except (OSError, ValueError):
            old = {}
        if old.get("key") == key and "error" not in old:
            return old
    t0 = time.time()
    try:
        from world2act.evaluation.latency import synthetic_observation
        from world2act.evaluation.paired_latency import paired_latency
        from world2act.policies import load_policy

        pb, pp = load_policy(out / base), load_policy(out / post)
        res = paired_latency({"base": pb, "base + World2Act": pp}, synthetic_observation(pb), n=n, warmup=warmup)
        log.info("paired latency: base %.2f ms, base + World2Act %.2f ms per chunk, ratio %.3f",
                 res["policies"]["base"]["ms_per_chunk"], res["policies"]["base + World2Act"]["ms_per_chunk"], res["ratio"])
    except Exception as e:  # noqa: BLE001 - latency is informational; the report says it failed
        res = {"error": f"{type(e).__name__}: {e}"}
        log.warning("paired latency failed: %s", res["error"])
    res.update(key=key, base=base, post=post, total_s=round(time.time() - t0, 1),
               measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(path, res)
    return res


Config, RUN_OPTIONS = PipelineConfig, ("resume", "overwrite")


def main(cfg: PipelineConfig, args) -> int:
    """``world2act pipeline``: run the :class:`PipelineConfig` (``--resume`` is the default behaviour)."""
    from world2act.presets import PRESETS

    if cfg.preset not in PRESETS:
        raise World2ActError(f"pipeline: unknown preset {cfg.preset!r}; valid: {', '.join(PRESETS)}")
    summary = run_pipeline(cfg.preset, args.out, overwrite=args.overwrite, only=list(cfg.only) or None,
                           max_parallel=cfg.parallel, log_with=cfg.log_with, seed=cfg.seed, device=cfg.device)
    print(f"report: {Path(args.out) / 'report.md'}")
    headline = summary.get("headline")
    if headline:
        print(headline)
    return 0
