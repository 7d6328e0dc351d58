"""``world2act segment``: demonstrations -> synchronised atomic-skill clips (paper Sec. 3.1-3.2).

Reads a LeRobot v3 demonstration dataset (from ``world2act collect``), detects gripper-closure
events (:mod:`~world2act.skills.contacts`), decomposes each instruction into skills (schema
decomposer or LLM, :mod:`~world2act.skills.decompose` / :mod:`~world2act.skills.llm`), pairs
them one to one (:mod:`~world2act.skills.sync`) and writes:

* ``OUT/`` a LeRobot v3 dataset with one episode per skill clip, its low-level prompt as the
  task, and meta ``source_episode``, ``frame_from``, ``frame_to`` (exclusive), ``skill_index``,
  ``num_skills``, ``instruction`` (the global one), ``skill_verb`` plus the source episode's meta;
  simulator states are kept;
* ``OUT/meta/skill_stats.json``: ``episodes_total``, ``episodes_skipped``, ``episodes_in``,
  ``episodes_synced``, ``sync_rate``, ``clips_out``, ``discard_reasons``, per-task rates,
  length distributions before/after (Fig. 3) and the detector settings;
* ``OUT/meta/skill_segments.json``: per source episode, the events, boundaries, prompts or the
  discard reason and its explanation;
* ``OUT/meta/skill_lengths.png``: overlaid length histograms; ``OUT/manifest.json``.

Any LeRobot v3 dataset works: without an ``observation.gripper_width`` feature the closure
signal comes from a gripper action or state dimension named with ``--gripper-from``
(``action:6``, ``action:gripper``, ``state:7:close-high``; see :class:`GripperSource` for the
rule).

Segmenting the same dataset twice gives identical files (except the manifest's timestamps).
``--resume`` continues an interrupted run (clips already written are kept, decisions are
recomputed deterministically); ``--overwrite`` starts over.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from world2act import World2ActError
from world2act.skills.contacts import (BENCHMARK_DEFAULTS, CONVENTIONS, ContactParams, benchmark_family,
                                       detect_events, event_summary, robust_open_width, signal_range,
                                       width_from_command)
from world2act.skills.decompose import SchemaDecomposer, SkillStep, UnparseableInstruction
from world2act.skills.llm import LLMConfig
from world2act.skills.sync import EpisodeSegmentation, align_schema, sync_summary
from world2act.utils.config import opt

log = logging.getLogger(__name__)

STATS_FILE = "meta/skill_stats.json"
SEGMENTS_FILE = "meta/skill_segments.json"
PLOT_FILE = "meta/skill_lengths.png"

# per-episode discard reasons raised before alignment (an unreadable file is an error, not a discard)
NAN_GRIPPER = "nan_gripper_width"
NAN_VALUES = "nan_actions_or_states"
UNPARSEABLE = "unparseable_instruction"
TOO_SHORT = "episode_too_short"


@dataclasses.dataclass
class SegmentConfig:
    """Configuration of ``world2act segment``.

    Attributes:
        dataset: input LeRobot v3 demonstration dataset folder.
        out: output folder (the skill dataset).
        decomposer: ``"schema"`` (deterministic, offline; default) or ``"llm"`` (appendix E).
        tau: contact threshold on ``c_t``; None = benchmark default (LIBERO 0.10, Meta-World 0.30).
        w_open: ``"dataset"`` (99.5th percentile of all widths; default), ``"benchmark"``
            (robot constant: LIBERO 0.080 m, Meta-World 1.0), ``"episode"`` (per episode), or
            a number in dataset units.
        min_duration, min_gap: debouncing, frames.
        settle_frac, max_settle: settled-frame rule of events (see contacts.ContactParams).
        use_gripper_action: corroborate closures with the commanded gripper sign (last action
            dim, +1 = close in LIBERO and Meta-World).
        min_clip_frames: an episode whose clips would be shorter than this is discarded.
        max_ignored_retries: schema aligner: at most this many retried grasps (a grasp released
            and tried again) are ignored as false positives (0 = strict; see sync.align_schema).
        include_failed: also segment episodes recorded as unsuccessful (default: skipped and
            counted in ``episodes_skipped``, not in the sync rate).
        gripper_from: ``SOURCE:DIM[:CONVENTION]`` — derive the closure signal from a gripper
            action or state dimension instead of ``observation.gripper_width`` (needed when
            the dataset has none; see :class:`GripperSource`). Empty = use the width.
        video_codec: video preset of the skill dataset (``h264``, ``h264-444``,
            ``h264-lossless``, ``av1``); empty = the source dataset's settings when world2act
            wrote it, else ``h264``.
        llm: LLM settings (used with ``decomposer="llm"``).
        progress: show progress bars.
    """

    dataset: str = opt("", "demonstration dataset folder (LeRobot v3, from `world2act collect`)")
    out: str = ""
    decomposer: str = opt("schema", "schema (default: deterministic, offline) or llm (OpenAI-compatible endpoint, "
                          "appendix E)", choices=["schema", "llm"])
    tau: float | None = opt(None, "contact threshold on the closure signal c=1-w/w_open (default: libero 0.10, "
                            "metaworld 0.30)")
    w_open: str = opt("dataset", "fully-open width calibration: dataset (default), benchmark, episode, or a number")
    min_duration: int = 4
    min_gap: int = 4
    settle_frac: float = 0.9
    max_settle: int = 15
    use_gripper_action: bool = opt(False, "corroborate closures with the commanded gripper action sign")
    min_clip_frames: int = opt(8, "discard episodes whose clips would be shorter (default 8)")
    max_ignored_retries: int = 2
    include_failed: bool = opt(False, "also segment episodes recorded as unsuccessful")
    gripper_from: str = opt("", "closure signal from a gripper action/state dimension instead of "
                            "observation.gripper_width, e.g. action:6, action:gripper, state:7:close-high (CONV "
                            "close-high = high values mean closed, default for actions; open-high default for "
                            "states); see docs/data.md", metavar="SOURCE:DIM[:CONV]")
    video_codec: str = opt("", "video of the skill dataset: h264 (yuv420p), h264-444, h264-lossless, av1 (default: as "
                           "the source dataset)")
    llm: LLMConfig = dataclasses.field(default_factory=LLMConfig)
    progress: bool = opt(True, "no progress bars", flag="--no-progress")

    def __post_init__(self) -> None:
        if self.decomposer not in ("schema", "llm"):
            raise World2ActError(f"--decomposer {self.decomposer!r}: valid choices are schema, llm")
        if self.tau is not None and not 0 < float(self.tau) < 1:
            raise World2ActError(f"--tau {self.tau}: must be in (0, 1)")
        w = str(self.w_open)
        if w not in ("dataset", "benchmark", "episode"):
            try:
                if float(w) <= 0:
                    raise ValueError
            except ValueError:
                raise World2ActError(f"--w-open {w!r}: valid choices are dataset, benchmark, episode or a positive number") from None
        if self.min_clip_frames < 1:
            raise World2ActError(f"--min-clip-frames {self.min_clip_frames}: must be >= 1")
        if self.video_codec:
            from world2act.data.video import video_preset

            video_preset(self.video_codec)


@dataclasses.dataclass(frozen=True)
class GripperSource:
    """Where ``--gripper-from`` takes the closure signal from, and how it becomes a width.

    Spec ``SOURCE:DIM[:CONVENTION]``: ``SOURCE`` is ``action``, ``state`` (=
    ``observation.state``) or any numeric feature key; ``DIM`` an index into it or one of its
    dimension names (``action:6`` = ``action:gripper`` for LIBERO); ``CONVENTION`` says which
    end of the range means closed: ``close-high`` (default for actions: a gripper command in
    [-1, 1] with +1 = close, as LIBERO, Meta-World and LeRobot's LIBERO data) or ``open-high``
    (default for everything else: a finger position or gap that grows as the gripper opens;
    LIBERO's right finger ``state:7`` is negative when open, so it is ``state:7:close-high``).

    The rule (:func:`~world2act.skills.contacts.width_from_command`): the values are scaled to
    [0, 1] with the range between their 0.5th and 99.5th percentiles over the dataset (over
    each episode with ``--w-open episode``), flipped for ``close-high``, which gives a width
    with 1 = fully open, 0 = fully closed. So ``w_open`` is 1 (a number given with ``--w-open``
    is used as is; ``--w-open benchmark`` is refused), and the closure is ``c = 1 - w``. The
    default threshold ``tau`` is 0.5 for an action (a command switches between its extremes:
    the midpoint) and, for a state, the benchmark's (LIBERO 0.10, Meta-World 0.30; 0.10 when
    the benchmark is unknown: a gripper holding a wide object closes only ~20% of its range).
    """

    spec: str
    key: str
    dim: int
    name: str | None
    convention: str

    @property
    def is_action(self) -> bool:
        from world2act.data.lerobot import ACTION

        return self.key == ACTION

    def describe(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"{self.key}[{self.dim}]{label} ({self.convention})"


def parse_gripper_from(spec: str, ds, where) -> GripperSource:
    """Resolve a ``--gripper-from`` spec against dataset ``ds`` (see :class:`GripperSource`).

    Raises:
        World2ActError: a malformed spec, a feature the dataset lacks, or a dimension it does
            not have (one line naming the dataset and the feature, with the valid choices).
    """
    from world2act.data.lerobot import ACTION, STATE

    parts = str(spec).split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise World2ActError(f"--gripper-from {spec!r}: expected SOURCE:DIM[:close-high|open-high] with SOURCE "
                             f"'action' or 'state' (dataset {where}, action names: {ds.feature_names(ACTION)})")
    source, token = parts[0], parts[1]
    key = {"action": ACTION, "state": STATE}.get(source, source)
    feat = ds.features.get(key)
    if not isinstance(feat, dict) or feat.get("dtype") in ("video", "image", "string"):
        numeric = [k for k, f in ds.features.items() if isinstance(f, dict) and f.get("dtype") not in ("video", "image", "string")]
        raise World2ActError(f"--gripper-from {spec!r}: dataset {where} has no numeric feature {key!r} "
                             f"(numeric features: {', '.join(numeric)})")
    width = ds.feature_width(key)
    names = ds.feature_names(key)
    names = names if names and len(names) == width else None
    valid = f"0..{width - 1}" + (f" or a name: {', '.join(names)}" if names else "")
    try:
        dim = int(token)
    except ValueError:
        if names is None or token not in names:
            raise World2ActError(f"--gripper-from {spec!r}: feature {key!r} of dataset {where} has no dimension "
                                 f"named {token!r} (valid: {valid})") from None
        dim = names.index(token)
    if not 0 <= dim < width:
        raise World2ActError(f"--gripper-from {spec!r}: feature {key!r} of dataset {where} has {width} "
                             f"dimension(s) (valid: {valid})")
    convention = parts[2] if len(parts) == 3 else ("close-high" if key == ACTION else "open-high")
    if convention not in CONVENTIONS:
        raise World2ActError(f"--gripper-from {spec!r}: convention {convention!r} for feature {key!r} of dataset "
                             f"{where} is not one of {', '.join(CONVENTIONS)}")
    return GripperSource(spec=str(spec), key=key, dim=dim, name=names[dim] if names else None, convention=convention)


# --------------------------------------------------------------------------- CLI


Config, RUN_OPTIONS, NEEDS_OUT = SegmentConfig, ("resume", "overwrite"), False  # out may come from --config


def main(cfg: SegmentConfig, args) -> int:
    stats = run(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"segment: {stats['episodes_synced']}/{stats['episodes_in']} episodes synchronised "
          f"(sync rate {stats['sync_rate']:.1%}), {stats['clips_out']} clips -> {cfg.out}")
    if stats["discard_reasons"]:
        print("  discarded: " + ", ".join(f"{k} {v}" for k, v in stats["discard_reasons"].items()))
    lb, la = stats["lengths"]["before"], stats["lengths"]["after"]
    ab = stats["lengths"]["median_share_abs"]
    print(f"  median-centred share (±25% of each median): episodes {lb['median_share']:.1%} -> clips "
          f"{la['median_share']:.1%}; within ±{stats['lengths']['abs_window_frames']:.0f} frames: "
          f"{ab['before']:.1%} -> {ab['after']:.1%}")
    return 0


# --------------------------------------------------------------------------- library


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise World2ActError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (resume or overwrite):
        raise World2ActError(f"--out {out}: folder exists and is not empty (pass --resume to continue or --overwrite to replace it)")


def contact_params(cfg: SegmentConfig, benchmark: str, w_open: float, default_tau: float | None = None) -> ContactParams:
    """Detector parameters for ``benchmark`` from the config (tau: ``cfg.tau``, else
    ``default_tau``, else the robot family's default)."""
    tau = cfg.tau if cfg.tau is not None else default_tau
    if tau is None:
        tau = BENCHMARK_DEFAULTS[benchmark_family(benchmark)]["tau"]
    return ContactParams(tau=float(tau), w_open=float(w_open), min_duration=cfg.min_duration, min_gap=cfg.min_gap,
                         settle_frac=cfg.settle_frac, max_settle=cfg.max_settle,
                         use_gripper_action=cfg.use_gripper_action)


def _benchmark_of(ds, first_meta: dict | None) -> str:
    b = ds.spec.benchmark or (first_meta or {}).get("benchmark") or ""
    return str(b)


def run(cfg: SegmentConfig, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Segment ``cfg.dataset`` into a skill dataset in ``cfg.out``; return the statistics dict.

    Phases: :func:`_open_inputs` (checks, gripper signal, benchmark defaults),
    :func:`_read_signals` (pass 1, no images), :func:`_calibrate` (open width / signal range),
    :func:`_decompose_instructions` (language stream), :func:`_detect_contacts` (visual stream),
    :func:`_align_episodes` (alignment), :func:`_write_skill_clips` and :func:`_write_stats`.

    Raises:
        World2ActError: missing/corrupt dataset (a missing, corrupt or truncated data parquet
            or mp4 of any episode: the message names the file and the episode; a parquet is
            caught before anything is written, an mp4 when its clips are written, resumable
            with ``resume=True`` once repaired), no gripper-width feature or a constant
            gripper signal, unknown benchmark without explicit ``tau`` and ``w_open``, an
            unusable ``--out``, an LLM endpoint that rejects the key/model, or no episode
            synchronised at all (nothing to write).
    """
    started = time.time()
    inp = _open_inputs(cfg, resume, overwrite)
    results, loaded, skipped = _read_signals(cfg, inp)
    w_open_global, signal_range_used = _calibrate(inp, loaded)
    schemas, schema_errors = _decompose_instructions(loaded)
    params_by_ep, contacts = _detect_contacts(cfg, inp, results, loaded, w_open_global)
    _align_episodes(cfg, results, loaded, schemas, schema_errors, contacts)
    synced, summary = _synced_or_raise(results, inp.src)
    clip_lengths = _write_skill_clips(cfg, inp, synced, resume, overwrite)
    return _write_stats(cfg, inp, results, synced, summary, skipped, params_by_ep, w_open_global,
                        signal_range_used, schema_errors, clip_lengths, started)


@dataclasses.dataclass
class _Inputs:
    """What :func:`run` derives from its arguments before reading any episode."""

    src: Path
    out: Path
    ds: Any
    gsrc: GripperSource | None
    benchmark: str
    w_mode: str
    default_tau: float | None
    signal_name: str


def _open_inputs(cfg: SegmentConfig, resume: bool, overwrite: bool) -> _Inputs:
    """Check ``--dataset`` / ``--out``, open the dataset, resolve the gripper signal
    (``--gripper-from`` or the gripper-width feature) and the benchmark's default ``tau``.

    Raises:
        World2ActError: see :func:`run` (all before anything is written).
    """
    from world2act.data import LeRobotDataset
    from world2act.data.lerobot import GRIPPER

    if not cfg.dataset:
        raise World2ActError("--dataset is required (a LeRobot v3 dataset folder from `world2act collect`)")
    if not cfg.out:
        raise World2ActError("--out is required (folder for the skill dataset)")
    src, out = Path(cfg.dataset), Path(cfg.out)
    if src.resolve() == out.resolve():
        raise World2ActError(f"--out {out}: must differ from --dataset")
    _check_out(out, resume, overwrite)
    ds = LeRobotDataset(src)
    gsrc = parse_gripper_from(cfg.gripper_from, ds, src) if cfg.gripper_from else None
    if gsrc is None and GRIPPER not in ds.features:
        raise World2ActError(f"{src / 'meta/info.json'}: the dataset has no {GRIPPER!r} feature; segmentation needs a "
                             "gripper closure signal: pass --gripper-from action:DIM or state:DIM (action names: "
                             f"{ds.feature_names('action')}; state names: {ds.feature_names('observation.state')})")
    if ds.num_episodes == 0:
        raise World2ActError(f"{src}: the dataset has no episodes")
    first_meta = ds.episode_meta(0)
    benchmark = _benchmark_of(ds, first_meta)
    w_mode = str(cfg.w_open)
    default_tau = None
    if gsrc is not None:
        if w_mode == "benchmark":
            raise World2ActError("--w-open benchmark: a --gripper-from signal is scaled to [0, 1] by its own range, "
                                 "the robot's open width does not apply (use dataset, episode or a number)")
        if gsrc.is_action:
            default_tau = 0.5
        else:
            try:
                default_tau = BENCHMARK_DEFAULTS[benchmark_family(benchmark)]["tau"]
            except World2ActError:
                default_tau = 0.10
    elif cfg.tau is None or w_mode == "benchmark":
        benchmark_family(benchmark)  # raises with the valid names
    signal_name = gsrc.describe() if gsrc is not None else GRIPPER
    return _Inputs(src, out, ds, gsrc, benchmark, w_mode, default_tau, signal_name)


def _read_signals(cfg: SegmentConfig, inp: _Inputs):
    """Pass 1, the fast path (no images): every episode's gripper signal, actions and positions.

    Returns:
        ``(results, loaded, skipped)``: one :class:`EpisodeSegmentation` per episode read (NaN
        episodes already discarded), ``loaded[episode] = (signal, actions, T, task, positions)``,
        and the skip counts.

    Raises:
        World2ActError: an unreadable episode file, no episode at all, a constant signal.
    """
    from world2act.data.lerobot import STATE
    from world2act.utils.progress import progress_bar

    ds, gsrc, src, signal_name = inp.ds, inp.gsrc, inp.src, inp.signal_name
    skipped = {"unsuccessful": 0}
    results: list[EpisodeSegmentation] = []
    loaded: dict[int, tuple[np.ndarray, np.ndarray, int, str, np.ndarray]] = {}
    for i in progress_bar(range(ds.num_episodes), desc="reading gripper signals", disable=not cfg.progress, leave=False):
        meta = ds.episode_meta(i)
        task, T = str(meta["task"]), int(meta["length"])
        if not cfg.include_failed and not meta.get("success", True):
            skipped["unsuccessful"] += 1
            continue
        try:
            ep = ds.load_episode(i, load_images=False)
            if gsrc is None:
                w = np.asarray(ep.gripper_width, dtype=np.float64)
            elif gsrc.is_action:
                w = np.asarray(ep.actions[:, gsrc.dim], dtype=np.float64)
            elif gsrc.key == STATE:
                w = np.asarray(ep.states[:, gsrc.dim], dtype=np.float64)
            else:
                w = ds.read_columns(i, [gsrc.key])[gsrc.key].reshape(T, -1)[:, gsrc.dim].astype(np.float64)
        except World2ActError as e:  # a missing/corrupt/truncated file: the dataset is broken, say which file
            raise World2ActError(f"{e} (episode {i}); repair or re-collect the dataset") from None
        if not np.all(np.isfinite(w)):
            bad = int(np.sum(~np.isfinite(w)))
            results.append(EpisodeSegmentation(i, T, task, False, NAN_GRIPPER, f"{bad} of {T} values of {signal_name} are NaN/inf"))
            continue
        if not (np.all(np.isfinite(ep.actions)) and np.all(np.isfinite(ep.states))):
            results.append(EpisodeSegmentation(i, T, task, False, NAN_VALUES, "actions or states contain NaN/inf"))
            continue
        pos = np.asarray(ep.states[:, :3], dtype=np.float64) if ep.states.shape[1] >= 3 else None
        loaded[i] = (w, np.asarray(ep.actions), T, task, pos)
        results.append(EpisodeSegmentation(i, T, task, False))  # decided below
    if not results:
        raise World2ActError(f"{src}: no episode to segment ({skipped['unsuccessful']} unsuccessful episodes skipped; "
                             "pass --include-failed to use them)")
    if loaded:
        allw = np.concatenate([v[0] for v in loaded.values()])
        if float(np.ptp(allw)) < 1e-6:
            raise World2ActError(f"{src}: {signal_name} is constant ({allw[0]:.4g}) in every episode: "
                                 "no gripper signal to segment")
    return results, loaded, skipped


def _calibrate(inp: _Inputs, loaded: dict):
    """The open width: a ``--gripper-from`` signal is first mapped to a width in [0, 1] (in
    place in ``loaded``); then ``--w-open`` (dataset, benchmark, episode or a number) picks it.

    Returns:
        ``(w_open for all episodes or None for per-episode, the signal range used or None)``.
    """
    gsrc, w_mode, benchmark = inp.gsrc, inp.w_mode, inp.benchmark
    signal_range_used: list[float] | str | None = None
    if gsrc is not None:
        # a gripper action/state dimension -> a width in [0, 1] (GripperSource's rule)
        if w_mode == "episode":
            for k, v in loaded.items():
                lo, hi = signal_range(v[0])
                w = width_from_command(v[0], lo, hi if hi > lo else lo + 1.0, gsrc.convention)
                loaded[k] = (w, *v[1:])
            signal_range_used = "per-episode"
        elif loaded:
            lo, hi = signal_range(np.concatenate([v[0] for v in loaded.values()]))
            if not hi > lo:
                raise World2ActError(f"{inp.src}: {inp.signal_name} spans no range between its 0.5th and 99.5th "
                                     f"percentiles ({lo:.4g}): no gripper signal to segment")
            for k, v in loaded.items():
                loaded[k] = (width_from_command(v[0], lo, hi, gsrc.convention), *v[1:])
            signal_range_used = [round(lo, 6), round(hi, 6)]
        w_open_global: float | None = 1.0 if w_mode in ("dataset", "episode") else float(w_mode)
    elif w_mode == "dataset":
        w_open_global = robust_open_width(np.concatenate([v[0] for v in loaded.values()])) if loaded else 1.0
    elif w_mode == "benchmark":
        w_open_global = BENCHMARK_DEFAULTS[benchmark_family(benchmark)]["w_open"]
    elif w_mode == "episode":
        w_open_global = None
    else:
        w_open_global = float(w_mode)
    if gsrc is None and w_open_global is not None and benchmark:
        try:
            ref = BENCHMARK_DEFAULTS[benchmark_family(benchmark)]["w_open"]
            if abs(w_open_global / ref - 1) > 0.2:
                log.warning("calibrated w_open %.4g differs from the %s robot's %.4g by more than 20%%",
                            w_open_global, benchmark_family(benchmark), ref)
        except World2ActError:
            pass
    return w_open_global, signal_range_used


def _decompose_instructions(loaded: dict):
    """Language stream: each task instruction's skill schema (None when unparseable).

    Returns:
        ``(schemas, schema_errors)`` keyed by instruction.
    """
    schema_dec = SchemaDecomposer()
    schemas: dict[str, list[SkillStep] | None] = {}
    schema_errors: dict[str, str] = {}
    for task in sorted({v[3] for v in loaded.values()}):
        try:
            schemas[task] = schema_dec.decompose(task)
        except UnparseableInstruction as e:
            schemas[task] = None
            schema_errors[task] = str(e)
            log.warning("schema decomposer: %s", e)
    return schemas, schema_errors


def _detect_contacts(cfg: SegmentConfig, inp: _Inputs, results, loaded: dict, w_open_global):
    """Visual stream: gripper contact events of every loaded episode (sets ``r.events``).

    Returns:
        ``(contact params per episode, contact result per episode)``.
    """
    params_by_ep: dict[int, ContactParams] = {}
    contacts: dict[int, Any] = {}
    for r in results:
        if r.episode not in loaded:
            continue
        w, actions, T, task, _ = loaded[r.episode]
        w_open = w_open_global if w_open_global is not None else robust_open_width(w)
        params = contact_params(cfg, inp.benchmark, w_open, inp.default_tau)
        params_by_ep[r.episode] = params
        cr = detect_events(w, params, actions)
        contacts[r.episode] = cr
        r.events = event_summary(cr.events)
        if cr.dropped:
            r.detail = "; ".join(cr.dropped)
    return params_by_ep, contacts


def _align_episodes(cfg: SegmentConfig, results, loaded: dict, schemas: dict, schema_errors: dict,
                    contacts: dict) -> None:
    """Align each episode's contact events with its skill schema (or ask the LLM aligner);
    sets ``synced``, ``boundaries``, ``steps`` or the discard ``reason`` on every result."""
    llm_items, llm_eps = [], []
    for r in results:
        if r.episode not in loaded:
            continue
        w, actions, T, task, positions = loaded[r.episode]
        steps = schemas.get(task)
        if T < 2:
            r.reason, r.detail = TOO_SHORT, f"{T} frames"
            continue
        if cfg.decomposer == "llm":
            llm_items.append((task, steps, contacts[r.episode].events, T))
            llm_eps.append(r)
            continue
        if steps is None:
            r.reason, r.detail = UNPARSEABLE, schema_errors.get(task, "")
            continue
        al = align_schema(contacts[r.episode].events, steps, T, cfg.min_clip_frames, positions=positions,
                          max_ignored_retries=cfg.max_ignored_retries)
        r.steps = list(steps)
        if al.ok:
            r.synced, r.boundaries = True, al.boundaries
            r.ignored_retries = al.ignored_retries
            if al.detail:
                r.detail = "; ".join(x for x in (r.detail, al.detail) if x)
        else:
            r.reason, r.detail = al.reason, al.detail
            r.steps = list(steps)
    if llm_items:
        from world2act.skills.llm import LLMAligner

        aligner = LLMAligner(cfg.llm, cfg.min_clip_frames)
        for r, res in zip(llm_eps, aligner.align_many(llm_items, progress=cfg.progress)):
            if res.alignment.ok:
                r.synced, r.boundaries, r.steps, r.detail = True, res.alignment.boundaries, res.steps, res.alignment.detail
            else:
                r.reason, r.detail = res.alignment.reason, res.alignment.detail
                r.steps = list(schemas.get(r.instruction) or [])
        log.info("llm: %d requests sent, %d cache hits", aligner.requests_sent, aligner.cache_hits)


def _synced_or_raise(results, src: Path):
    """Log the discarded episodes; return ``(synced results, sync summary)``.

    Raises:
        World2ActError: no episode synchronised (nothing to write).
    """
    for r in results:
        if not r.synced:
            log.info("episode %d discarded: %s%s", r.episode, r.reason, f" ({r.detail})" if r.detail else "")
    synced = [r for r in results if r.synced]
    summary = sync_summary(results)
    if not synced:
        reasons = ", ".join(f"{k} {v}" for k, v in summary["discard_reasons"].items())
        raise World2ActError(f"{src}: no episode could be synchronised ({reasons}); see docs/skills.md "
                             "(try --tau, --w-open or --decomposer llm)")
    return synced, summary


def _write_skill_clips(cfg: SegmentConfig, inp: _Inputs, synced, resume: bool, overwrite: bool) -> list[int]:
    """Write one clip per skill of every synced episode (the source's video settings unless
    ``--video-codec``); on resume, skip clips already written. Returns all clip lengths.

    Raises:
        World2ActError: existing clips that do not match this segmentation; an unreadable mp4.
    """
    from world2act.data import LeRobotDataset, LeRobotDatasetWriter
    from world2act.utils.progress import progress_bar

    ds, out = inp.ds, inp.out
    src_video = (ds.info.get("world2act") or {}).get("video") or {}
    if cfg.video_codec or not src_video:
        video_kw: dict[str, Any] = {"video": cfg.video_codec or "h264"}
    else:
        video_kw = {"video_codec": src_video.get("codec", "libx264"), "pix_fmt": src_video.get("pix_fmt", "yuv420p"),
                    "crf": int(src_video.get("crf", 10)), "preset": str(src_video.get("preset", "veryfast"))}
    writer = LeRobotDatasetWriter(out, ds.spec, resume=resume, overwrite=overwrite, **video_kw)
    done: set[tuple[int, int]] = set()
    if resume and writer.num_episodes:
        existing = LeRobotDataset(out, check_files=False)
        for j in range(existing.num_episodes):
            m = existing.episode_meta(j)
            done.add((int(m.get("source_episode", -1)), int(m.get("skill_index", -1))))
    expected = [(r.episode, k) for r in synced for k in range(len(r.steps))]
    if done and [x for x in expected if x in done] != expected[:len(done)]:
        raise World2ActError(f"--out {out}: the existing clips do not match this run's segmentation "
                             "(different settings?); use --overwrite")
    clip_lengths: list[int] = []
    for r in progress_bar(synced, desc="writing skill clips", disable=not cfg.progress, leave=False):
        clips = r.clips()
        clip_lengths.extend(b - a for a, b, _ in clips)
        todo = [(k, c) for k, c in enumerate(clips) if (r.episode, k) not in done]
        if not todo:
            continue
        try:
            ep = ds.load_episode(r.episode, load_images=True)
        except World2ActError as e:  # e.g. a truncated mp4 (the fast pass above decodes no video)
            raise World2ActError(f"{e} (episode {r.episode}); repair or re-collect the dataset, then rerun "
                                 f"with --resume (the clips written so far are kept)") from None
        for k, (a, b, step) in todo:
            clip = ep.slice(a, b)
            clip.task = step.prompt
            clip.meta = {**ep.meta, "source_episode": r.episode, "frame_from": a, "frame_to": b, "skill_index": k,
                         "num_skills": len(clips), "instruction": r.instruction, "skill_verb": step.verb}
            writer.add_episode(clip)
    writer.finalize()
    return clip_lengths


def _write_stats(cfg: SegmentConfig, inp: _Inputs, results, synced, summary: dict, skipped: dict, params_by_ep: dict,
                 w_open_global, signal_range_used, schema_errors: dict, clip_lengths: list[int], started: float) -> dict:
    """Statistics (``meta/skill_stats.json``), per-episode segments, the length plot and the
    manifest; returns the statistics dict."""
    from world2act.skills.stats import distribution_report, plot_lengths
    from world2act.utils.io import write_json
    from world2act.utils.manifest import write_manifest

    ds, src, out = inp.ds, inp.src, inp.out
    before = [r.length for r in results]
    params0 = next(iter(params_by_ep.values()), None)
    stats = {
        "episodes_total": ds.num_episodes,
        "episodes_skipped": skipped,
        **{k: summary[k] for k in ("episodes_in", "episodes_synced", "sync_rate", "clips_out", "discard_reasons")},
        "decomposer": cfg.decomposer,
        "benchmark": inp.benchmark,
        "contact": {
            "tau": params0.tau if params0 else cfg.tau,
            "w_open": (round(w_open_global, 6) if w_open_global is not None else "per-episode"),
            "w_open_calibration": inp.w_mode,
            "signal": inp.signal_name,
            "signal_range": signal_range_used,
            "min_duration": cfg.min_duration, "min_gap": cfg.min_gap, "settle_frac": cfg.settle_frac,
            "max_settle": cfg.max_settle, "use_gripper_action": cfg.use_gripper_action,
        },
        "lengths": distribution_report(before, clip_lengths, fps=ds.fps),
        "retried_grasps_ignored": sum(r.ignored_retries for r in results),
        "clips_per_verb": _count([s.verb for r in synced for s in r.steps]),
        "per_task": summary["per_task"],
        "unparseable_instructions": schema_errors,
    }
    write_json(out / STATS_FILE, stats)
    write_json(out / SEGMENTS_FILE, [_segment_record(r) for r in results])
    plot_lengths(before, clip_lengths, out / PLOT_FILE,
                 title=f"{src.name}: {len(before)} episodes -> {len(clip_lengths)} skill clips")
    cfg_dict = dataclasses.asdict(cfg)
    write_manifest(out, stage="segment", config=cfg_dict,
                   inputs={"dataset": str(src.resolve()), "dataset_episodes": ds.num_episodes},
                   metrics={k: stats[k] for k in ("episodes_in", "episodes_synced", "sync_rate", "clips_out")},
                   started=started)
    return stats


def _count(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return dict(sorted(out.items()))


def _segment_record(r: EpisodeSegmentation) -> dict:
    rec = {"episode": r.episode, "length": r.length, "instruction": r.instruction, "synced": r.synced,
           "reason": r.reason, "detail": r.detail, "events": r.events}
    if r.synced:
        rec["clips"] = [{"frame_from": a, "frame_to": b, "verb": s.verb, "prompt": s.prompt} for a, b, s in r.clips()]
    else:
        rec["schema"] = [s.prompt for s in r.steps]
    return rec
