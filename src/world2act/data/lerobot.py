"""LeRobot v3 datasets: a crash-safe writer and a reader of any LeRobot v3.0 dataset (pyarrow + PyAV).

Layout (LeRobot ``codebase_version`` "v3.0"; written as plain files, checked against LeRobot's
own ``LeRobotDataset`` and ``lerobot-doctor``, see ``docs/data.md``)::

    meta/info.json                              fps, features (dtype/shape/names), totals,
                                                path templates, our DatasetSpec
    meta/tasks.parquet                          task_index, task (pandas index "task")
    meta/episodes/chunk-000/file-000.parquet    one row per episode (see below)
    meta/stats.json                             written by finalize()
    data/chunk-CCC/file-FFF.parquet             one row per frame
    videos/observation.images.<cam>/chunk-CCC/file-FFF.mp4

Per-frame columns: ``action`` [A] float32, ``observation.state`` [S] float32 (when S > 0),
``observation.gripper_width`` float32 (when the spec has it), ``sim_state`` [N] float64 (when
the spec has one; narrower episodes are zero-padded to N), ``timestamp`` (s, float32),
``frame_index``, ``episode_index``, ``index`` (global frame), ``task_index`` (int64). Row ``t`` =
observation before step ``t`` + action at step ``t``.

Per-episode columns: ``episode_index``, ``tasks`` (list of one string), ``task_index``,
``length``, ``success``, ``data/chunk_index``, ``data/file_index``, ``dataset_from_index``,
``dataset_to_index``, ``videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp}``,
``stats/<feature>/<stat>`` for every feature (LeRobot's per-episode statistics),
``sim_state_width`` (the episode's own simulator-state width), ``meta_json`` (the episode's
``meta`` dict as JSON: the source of truth when reading) and ``episode_meta/<key>`` flat
copies of scalar meta values (for tools that browse parquet).

Crash safety: every episode gets its own data file and video files (file index = episode
index, chunk = index // chunks_size), each written atomically; only then are tasks, the
episodes table and info.json rewritten (each atomically, episodes table last but one, and it
is the commit point: the reader trusts it). A writer killed at any moment leaves a dataset of
the episodes completed before; files of an interrupted episode are orphans, ignored by the
reader and overwritten on resume.

Reading datasets written by LeRobot itself: tasks kept as the pandas index, several episodes
per data and video file (rows by ``dataset_from_index``/``dataset_to_index``, frames by
seeking to ``videos/<key>/from_timestamp``), H.264 or AV1, ``video`` or ``image`` features
with any names (camera = the key without ``observation.images.``), and optional
``observation.state``, ``observation.gripper_width`` and ``sim_state``. Only ``action`` is
required.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from world2act import World2ActError
from world2act.data.schema import Episode
from world2act.data.stats import aggregate_stats, compute_stats, image_stats, numeric_stats
from world2act.data.video import (DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_PIX_FMT, DEFAULT_PRESET, codec_tag,
                                  read_video_span, video_preset, write_video)
from world2act.envs.registry import FAMILIES, family_of
from world2act.utils.io import _json_default, atomic_path, prepare_out_dir, read_json, write_json

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
INFO_PATH = "meta/info.json"
TASKS_PATH = "meta/tasks.parquet"
STATS_PATH = "meta/stats.json"

ACTION = "action"
STATE = "observation.state"
GRIPPER = "observation.gripper_width"
SIM_STATE = "sim_state"
IMAGE_PREFIX = "observation.images."
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
#: Keys ``episode_meta(i)`` adds itself; an Episode.meta may not use them.
RESERVED_META_KEYS = ("episode_index", "length", "task", "task_index", "success")
#: ``DatasetSpec.sim_state_dim`` value of datasets written before 2026-12 whose simulator
#: states were stored with a per-episode width (shape ``[-1]``). Still read and resumed;
#: LeRobot's writer cannot append to such a dataset, so new datasets use a fixed width.
VARIABLE = -1

#: Descriptive names of the action / state dimensions (``info.json`` ``features.*.names``).
#: LIBERO: OSC_POSE deltas (xyz, rotation, gripper -1 open / +1 close); state = end-effector
#: position, orientation as axis-angle, the two finger joint positions (m; left ≈ +0.04 and
#: right ≈ −0.04 when open). Meta-World: xyz delta + grip (+1 close); state = hand position
#: and the normalised finger gap (1 open).
ACTION_NAMES: dict[str, tuple[str, ...]] = {fam: spec.action_names for fam, spec in FAMILIES.items()}
STATE_NAMES: dict[str, tuple[str, ...]] = {fam: spec.state_names for fam, spec in FAMILIES.items()}


def image_key(camera: str) -> str:
    """Dataset feature key of a camera written by world2act: ``observation.images.<camera>``."""
    return IMAGE_PREFIX + camera


def _family(benchmark: str) -> str | None:
    return family_of(benchmark)


def default_names(benchmark: str, kind: str, dim: int) -> list[str]:
    """Names of the ``dim`` dimensions of ``kind`` (``"action"`` or ``"state"``) for a benchmark.

    :data:`ACTION_NAMES` / :data:`STATE_NAMES` when the benchmark and width match, otherwise
    ``a0, a1, …`` / ``s0, s1, …``.
    """
    table = ACTION_NAMES if kind == "action" else STATE_NAMES
    names = table.get(_family(benchmark) or "")
    if names is not None and len(names) == dim:
        return list(names)
    return [f"{'a' if kind == 'action' else 's'}{i}" for i in range(dim)]


def flat_names(names: Any) -> list[str] | None:
    """A feature's ``names`` from info.json as a flat list (LeRobot also writes ``{"motors": [...]}``)."""
    if names is None:
        return None
    if isinstance(names, dict):
        out: list[str] = []
        for v in names.values():
            out.extend(flat_names(v) or [])
        return out
    if isinstance(names, (list, tuple)):
        out = []
        for v in names:
            out.extend(flat_names(v) or []) if isinstance(v, (list, tuple, dict)) else out.append(str(v))
        return out
    return [str(names)]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What every episode of a dataset looks like.

    Attributes:
        fps: recording rate in Hz (LIBERO 20). Timestamps are ``frame_index / fps``.
        action_dim: A, width of ``action``.
        state_dim: S, width of ``observation.state`` (proprioception); 0 = no state feature
            (a LeRobot dataset without one).
        cameras: camera names (``observation.images.<name>`` video features), in order.
            May be empty (no videos).
        image_size: ``(H, W)`` of every camera frame.
        benchmark: e.g. ``libero_object`` or ``metaworld`` (informational; selects the
            default action/state names).
        robot_type: LeRobot ``robot_type`` (e.g. ``panda``, ``sawyer``).
        sim_state_dim: N, width of the per-frame ``sim_state`` (float64); None = no
            simulator states stored. Episodes whose states are narrower (LIBERO: the state
            size depends on the task's objects) are zero-padded to N and their own width is
            kept in the episode column ``sim_state_width``; the reader returns the unpadded
            states. ``-1`` (:data:`VARIABLE`): per-episode width, shape ``[-1]`` (datasets
            written before 2026-12; LeRobot's writer cannot append to these).
        action_names, state_names: names of the dimensions (None = :func:`default_names`).
        has_gripper_width: whether the dataset has ``observation.gripper_width``.
    """

    fps: float
    action_dim: int
    state_dim: int
    cameras: tuple[str, ...]
    image_size: tuple[int, int]
    benchmark: str = ""
    robot_type: str = ""
    sim_state_dim: int | None = None
    action_names: tuple[str, ...] | None = None
    state_names: tuple[str, ...] | None = None
    has_gripper_width: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(str(c) for c in self.cameras))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        for name in ("action_names", "state_names"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(str(x) for x in v))
        if not (isinstance(self.fps, (int, float)) and self.fps > 0 and math.isfinite(self.fps)):
            raise World2ActError(f"DatasetSpec.fps must be a positive number, got {self.fps!r}")
        if not isinstance(self.action_dim, (int, np.integer)) or self.action_dim <= 0:
            raise World2ActError(f"DatasetSpec.action_dim must be a positive integer, got {self.action_dim!r}")
        if not isinstance(self.state_dim, (int, np.integer)) or self.state_dim < 0:
            raise World2ActError(f"DatasetSpec.state_dim must be a non-negative integer, got {self.state_dim!r}")
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise World2ActError(f"DatasetSpec.image_size must be (H, W) with positive sizes, got {self.image_size}")
        if len(set(self.cameras)) != len(self.cameras) or any(not c or "/" in c for c in self.cameras):
            raise World2ActError(f"DatasetSpec.cameras must be distinct non-empty names without '/', got {self.cameras}")
        s = self.sim_state_dim
        if s is not None and (not isinstance(s, (int, np.integer)) or (s <= 0 and s != VARIABLE)):
            raise World2ActError(f"DatasetSpec.sim_state_dim must be None, a positive integer or -1 (variable), got {s!r}")
        for name, dim in (("action_names", self.action_dim), ("state_names", self.state_dim)):
            v = getattr(self, name)
            if v is not None and len(v) != dim:
                raise World2ActError(f"DatasetSpec.{name} has {len(v)} names for {dim} dimensions")

    def names(self, kind: str) -> list[str]:
        """Names of the ``"action"`` or ``"state"`` dimensions (given, or the benchmark's defaults)."""
        given = self.action_names if kind == "action" else self.state_names
        if given is not None:
            return list(given)
        return default_names(self.benchmark, kind, self.action_dim if kind == "action" else self.state_dim)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cameras"], d["image_size"] = list(self.cameras), list(self.image_size)
        for name in ("action_names", "state_names"):
            if d[name] is not None:
                d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


# --------------------------------------------------------------------------- helpers


def _fmt_fps(fps: float) -> int | float:
    return int(fps) if float(fps).is_integer() else float(fps)


def _features(spec: DatasetSpec, video: dict | None = None) -> dict[str, Any]:
    H, W = spec.image_size
    video = video or {"codec": DEFAULT_CODEC, "pix_fmt": DEFAULT_PIX_FMT}
    feats: dict[str, Any] = {ACTION: {"dtype": "float32", "shape": [spec.action_dim], "names": spec.names("action")}}
    if spec.state_dim:
        feats[STATE] = {"dtype": "float32", "shape": [spec.state_dim], "names": spec.names("state")}
    if spec.has_gripper_width:
        feats[GRIPPER] = {"dtype": "float32", "shape": [1], "names": ["gripper_width"]}
    if spec.sim_state_dim is not None:
        feats[SIM_STATE] = {"dtype": "float64", "shape": [spec.sim_state_dim], "names": None}
    for cam in spec.cameras:
        feats[image_key(cam)] = {
            "dtype": "video",
            "shape": [H, W, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": H, "video.width": W, "video.codec": codec_tag(video["codec"]),
                "video.pix_fmt": video["pix_fmt"], "video.is_depth_map": False, "video.fps": _fmt_fps(spec.fps),
                "video.channels": 3, "has_audio": False,
            },
        }
    for k in ("timestamp",):
        feats[k] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("frame_index", "episode_index", "index", "task_index"):
        feats[k] = {"dtype": "int64", "shape": [1], "names": None}
    return feats


def _camera_keys(feats: dict[str, Any]) -> dict[str, str]:
    """camera name -> feature key of every ``video``/``image`` feature, in info.json order.

    The name is the key without ``observation.images.`` (else without ``observation.``),
    or the key itself when that would be empty or collide.
    """
    out: dict[str, str] = {}
    for k, f in feats.items():
        if not isinstance(f, dict) or f.get("dtype") not in ("video", "image"):
            continue
        name = k[len(IMAGE_PREFIX):] if k.startswith(IMAGE_PREFIX) else (
            k[len("observation."):] if k.startswith("observation.") else k)
        if not name or name in out or "/" in name:
            name = k
        out[name] = k
    return out


def _image_hw(feat: dict[str, Any]) -> tuple[int, int]:
    """(H, W) of a video/image feature from its info (``video.height``) or its shape and names."""
    info = feat.get("info") or {}
    if info.get("video.height") and info.get("video.width"):
        return int(info["video.height"]), int(info["video.width"])
    shape = list(feat["shape"])
    names = [str(n).lower() for n in (flat_names(feat.get("names")) or [])]
    if "height" in names and "width" in names and len(names) == len(shape):
        return int(shape[names.index("height")]), int(shape[names.index("width")])
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _spec_from_info(info: dict[str, Any], where: Path) -> DatasetSpec:
    w2a = info.get("world2act") or {}
    if isinstance(w2a.get("spec"), dict):
        return DatasetSpec.from_dict(w2a["spec"])
    # A LeRobot dataset written by another tool: derive what we can from the features.
    feats = info["features"]
    if not isinstance(feats, dict) or ACTION not in feats:
        raise World2ActError(f"{where}: the dataset has no 'action' feature (features: {sorted(feats)}); world2act "
                             "needs the per-frame robot action and no option supplies it")
    try:
        cams = _camera_keys(feats)
        size = _image_hw(feats[next(iter(cams.values()))]) if cams else (1, 1)

        def width(key: str) -> int:
            shape = list(feats[key]["shape"])
            return int(np.prod(shape)) if shape else 1

        A = width(ACTION)
        S = width(STATE) if STATE in feats else 0
        sim = width(SIM_STATE) if SIM_STATE in feats and -1 not in list(feats[SIM_STATE]["shape"]) else (
            VARIABLE if SIM_STATE in feats else None)
        an, sn = flat_names(feats[ACTION].get("names")), flat_names(feats[STATE].get("names")) if S else None
        return DatasetSpec(fps=info["fps"], action_dim=A, state_dim=S, cameras=tuple(cams), image_size=size,
                           robot_type=info.get("robot_type") or "", sim_state_dim=sim,
                           action_names=an if an and len(an) == A else None,
                           state_names=sn if sn and len(sn) == S else None,
                           has_gripper_width=GRIPPER in feats)
    except (KeyError, IndexError, TypeError, ValueError, StopIteration) as e:
        raise World2ActError(f"{where}: features lack what world2act needs ({type(e).__name__}: {e})") from None


def _fixed_list(arr: np.ndarray, pa_type):
    import pyarrow as pa

    T, D = arr.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(arr).reshape(-1), type=pa_type), D)


def _column_matrix(table, name: str, dtype, where: Path) -> np.ndarray:
    """A list/fixed-size-list column as ``[T, D]`` (or a scalar column as ``[T]``)."""
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    T = len(col)
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(T, col.type.list_size)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lens = col.value_lengths().to_numpy(zero_copy_only=False)
        if T and (lens != lens[0]).any():
            raise World2ActError(f"{where}: column {name!r} has rows of different widths within one episode")
        D = int(lens[0]) if T else 0
        return col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(T, D)
    return col.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _write_parquet(path: Path, table) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _read_parquet(path: Path, what: str, columns: Sequence[str] | None = None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise World2ActError(f"{path}: {what} file not found")
    try:
        # ParquetFile (not read_table): avoids importing pyarrow.dataset (~0.4 s on first use).
        return pq.ParquetFile(path).read(columns=list(columns) if columns is not None else None)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise World2ActError(f"{path}: corrupt or unreadable {what} parquet ({type(e).__name__}: {e})") from None


def _read_tasks(path: Path) -> list[str]:
    """Task strings by task_index from ``meta/tasks.parquet``: the task as a ``task`` column
    (world2act) or as the pandas index (LeRobot: ``__index_level_0__``, or a named index)."""
    tt = _read_parquet(path, "tasks")
    cols = tt.column_names
    if "task_index" not in cols:
        raise World2ActError(f"{path}: needs a 'task_index' column, has {cols}")
    task_col = "task" if "task" in cols else None
    if task_col is None:
        meta = (tt.schema.metadata or {}).get(b"pandas")
        try:
            index_cols = [c for c in json.loads(meta).get("index_columns", []) if isinstance(c, str)] if meta else []
        except ValueError:
            index_cols = []
        candidates = [c for c in index_cols if c in cols] + [c for c in cols if c != "task_index"]
        import pyarrow as pa

        task_col = next((c for c in candidates if pa.types.is_string(tt.schema.field(c).type)
                         or pa.types.is_large_string(tt.schema.field(c).type)), None)
    if task_col is None:
        raise World2ActError(f"{path}: no task strings (expected a 'task' column or the task as the pandas index), "
                             f"has columns {cols}")
    idx = [int(x) for x in tt.column("task_index").to_pylist()]
    names = tt.column(task_col).to_pylist()
    if sorted(idx) != list(range(len(idx))):
        raise World2ActError(f"{path}: task_index values are not 0..{len(idx) - 1}")
    tasks = [""] * len(idx)
    for j, n in zip(idx, names):
        tasks[j] = str(n)
    return tasks


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _image_stats_shape(v: Any) -> Any:
    """Image statistics written before 2026-12 were flat ``[3]``: reshape to LeRobot's (3, 1, 1)."""
    a = np.asarray(v, dtype=np.float64)
    return a.reshape(3, 1, 1).tolist() if a.size == 3 and a.shape != (3, 1, 1) else v


# --------------------------------------------------------------------------- writer


class LeRobotDatasetWriter:
    """Write episodes into a LeRobot v3 dataset folder, one committed episode at a time.

    Args:
        root: dataset folder. Same rules as ``--out``
            (:func:`world2act.utils.io.prepare_out_dir`): a non-empty folder is refused unless
            ``resume`` or ``overwrite``.
        spec: the shape of every episode.
        resume: continue an existing dataset in ``root`` (numbering continues after its last
            committed episode; an interrupted episode's orphan files are overwritten). The
            existing dataset's spec must equal ``spec``, and its video settings are kept. A
            folder without ``meta/info.json`` starts a new dataset.
        overwrite: delete ``root`` first.
        chunks_size: files per ``chunk-CCC`` folder (LeRobot default 1000).
        video: a :data:`~world2act.data.video.VIDEO_PRESETS` name (``h264`` default:
            yuv420p, browser-playable; ``h264-444``; ``h264-lossless``; ``av1``); overrides
            the four settings below.
        video_codec, pix_fmt, crf, preset: encoder settings (see :mod:`world2act.data.video`).

    Raises:
        World2ActError: ``root`` not usable (see prepare_out_dir), an unknown video preset,
            yuv420p with an odd image size, or on ``resume`` an existing dataset that is
            corrupt or has a different spec (the differing fields are named).

    Usable as a context manager: ``finalize()`` runs on a clean exit.
    """

    def __init__(self, root: str | os.PathLike, spec: DatasetSpec, resume: bool = False, overwrite: bool = False,
                 *, chunks_size: int = DEFAULT_CHUNKS_SIZE, video: str | None = None, video_codec: str = DEFAULT_CODEC,
                 pix_fmt: str = DEFAULT_PIX_FMT, crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET) -> None:
        if not isinstance(spec, DatasetSpec):
            raise World2ActError(f"spec must be a DatasetSpec, got {type(spec).__name__}")
        self.root = Path(root)
        self.spec = spec
        self.chunks_size = int(chunks_size)
        self._video = video_preset(video) if video else {"codec": video_codec, "pix_fmt": pix_fmt, "crf": int(crf),
                                                          "preset": preset}
        self._rows: list[dict[str, Any]] = []  # episode rows (without flat meta columns)
        self._tasks: list[str] = []
        self._total_frames = 0
        self.root = prepare_out_dir(self.root, resume=resume, overwrite=overwrite)
        if resume and (self.root / INFO_PATH).exists():
            self._load_existing()
        H, W = spec.image_size
        if spec.cameras and self._video["pix_fmt"].endswith("420p") and (H % 2 or W % 2):
            raise World2ActError(f"{self.root}: image size {H}x{W} is odd; {self._video['pix_fmt']} video needs even "
                                 "sizes (use --video-codec h264-444)")
        if not (resume and (self.root / INFO_PATH).exists()):
            self._commit(write_tasks=True)
        self._clean_temp_files()

    # -- properties
    @property
    def num_episodes(self) -> int:
        """Committed episodes so far."""
        return len(self._rows)

    @property
    def num_frames(self) -> int:
        """Committed frames so far."""
        return self._total_frames

    @property
    def tasks(self) -> list[str]:
        return list(self._tasks)

    @property
    def video_settings(self) -> dict:
        """Encoder settings in use (``codec``, ``pix_fmt``, ``crf``, ``preset``)."""
        return dict(self._video)

    # -- resume
    def _load_existing(self) -> None:
        ds = LeRobotDataset(self.root, check_files=False)
        if ds.spec != self.spec:
            a, b = ds.spec.to_dict(), self.spec.to_dict()
            diff = ", ".join(f"{k}: existing {a[k]!r} vs requested {b[k]!r}" for k in a if a[k] != b.get(k))
            raise World2ActError(f"{self.root}: cannot resume, the existing dataset has a different spec ({diff})")
        w2a = ds.info.get("world2act") or {}
        self.chunks_size = int(ds.info.get("chunks_size", self.chunks_size))
        if w2a.get("video"):
            self._video.update(w2a["video"])
        self._tasks = list(ds.tasks)
        self._rows = []
        for r in ds._episodes:
            row = {k: v for k, v in r.items() if not k.startswith("episode_meta/")}
            for k in row:
                if k.startswith(f"stats/{IMAGE_PREFIX}") and not k.endswith("/count") and row[k] is not None:
                    row[k] = _image_stats_shape(row[k])
            self._rows.append(row)
        self._total_frames = sum(int(r["length"]) for r in self._rows)

    def _clean_temp_files(self) -> None:
        """Remove temporary files a killed writer may have left (``.name.XXXX.tmp.ext``)."""
        for sub in ("meta", "data", "videos"):
            d = self.root / sub
            if d.is_dir():
                for p in d.rglob(".*.tmp*"):
                    if p.is_file():
                        p.unlink(missing_ok=True)

    # -- checks
    def _check(self, ep: Episode, idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, str]:
        where = f"{self.root}: episode {idx}"
        if not isinstance(ep, Episode):
            raise World2ActError(f"{where}: expected an Episode, got {type(ep).__name__}")
        s = self.spec
        try:
            if s.has_gripper_width:
                ep.validate(where)
            else:  # the width is not stored: it may be NaN (a dataset without a gripper-width feature)
                dataclasses.replace(ep, gripper_width=np.zeros(len(ep.gripper_width), np.float32)).validate(where)
        except ValueError as e:
            raise World2ActError(str(e)) from None
        if not isinstance(ep.task, str) or not ep.task.strip():
            raise World2ActError(f"{where}: task must be a non-empty string, got {ep.task!r}")
        if ep.actions.shape[1] != s.action_dim:
            raise World2ActError(f"{where}: actions have width {ep.actions.shape[1]}, the dataset's action_dim is {s.action_dim}")
        if ep.states.shape[1] != s.state_dim:
            raise World2ActError(f"{where}: states have width {ep.states.shape[1]}, the dataset's state_dim is {s.state_dim}")
        if set(ep.images) != set(s.cameras):
            raise World2ActError(f"{where}: images have cameras {sorted(ep.images)}, the dataset needs exactly {list(s.cameras)}")
        for cam in s.cameras:
            if tuple(ep.images[cam].shape[1:3]) != s.image_size:
                raise World2ActError(f"{where}: images[{cam!r}] are {ep.images[cam].shape[1:3]}, the dataset's image_size is {s.image_size}")
        sim = None
        if s.sim_state_dim is None:
            if ep.sim_states is not None:
                raise World2ActError(f"{where}: has sim_states but the dataset spec has sim_state_dim=None")
        else:
            if ep.sim_states is None:
                raise World2ActError(f"{where}: sim_states missing (the dataset spec has sim_state_dim={s.sim_state_dim})")
            sim = np.asarray(ep.sim_states, dtype=np.float64)
            if sim.ndim != 2 or (s.sim_state_dim != VARIABLE and not 0 < sim.shape[1] <= s.sim_state_dim):
                raise World2ActError(f"{where}: sim_states have shape {sim.shape}, the dataset's sim_state_dim is "
                                     f"{s.sim_state_dim} (narrower states are zero-padded, wider ones refused)")
            if not np.all(np.isfinite(sim)):
                raise World2ActError(f"{where}: sim_states contain NaN or inf")
        if not isinstance(ep.meta, dict):
            raise World2ActError(f"{where}: meta must be a dict, got {type(ep.meta).__name__}")
        bad = [k for k in ep.meta if not isinstance(k, str) or k in RESERVED_META_KEYS]
        if bad:
            raise World2ActError(f"{where}: meta keys {bad} are not allowed (keys must be strings, not one of {list(RESERVED_META_KEYS)})")
        try:
            meta_json = json.dumps(ep.meta, sort_keys=True, default=_json_default, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise World2ActError(f"{where}: meta is not JSON-serialisable ({e})") from None
        return (np.asarray(ep.actions, np.float32), np.asarray(ep.states, np.float32),
                np.asarray(ep.gripper_width, np.float32), sim, meta_json)

    # -- writing
    def add_episode(self, ep: Episode) -> int:
        """Validate ``ep``, write its data and videos, then commit it to the episode table.

        Args:
            ep: an :class:`~world2act.data.schema.Episode` matching the spec: actions
                ``[T, A]``, states ``[T, S]``, gripper_width ``[T]`` (ignored, may be NaN, when
                the spec has no gripper width), images exactly for ``spec.cameras`` as uint8
                ``[T, H, W, 3]``, sim_states ``[T, N']`` with ``N' <= sim_state_dim`` iff the
                spec has one (zero-padded to ``sim_state_dim``), meta a JSON-serialisable dict
                with string keys (not ``episode_index/length/task/task_index/success``; tuples
                come back as lists).

        Returns:
            The new episode's index.

        Raises:
            World2ActError: the episode does not match the spec or is invalid (nothing is
                written), or a file cannot be written.
        """
        idx = len(self._rows)
        actions, states, grip, sim, meta_json = self._check(ep, idx)
        T = actions.shape[0]
        stats_path = self.root / STATS_PATH
        if stats_path.exists():  # stats are for the committed set; they go stale now
            stats_path.unlink()
        task_index = self._tasks.index(ep.task) if ep.task in self._tasks else len(self._tasks)
        chunk, file = idx // self.chunks_size, idx  # file index = episode index (unique per dataset)
        start = self._total_frames
        numeric, sim_width = self._write_data(actions, states, grip, sim, idx, task_index, chunk, file, start)

        row: dict[str, Any] = {
            "episode_index": idx,
            "tasks": [ep.task],
            "task_index": task_index,
            "length": T,
            "success": bool(ep.success),
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": start,
            "dataset_to_index": start + T,
        }
        self._write_videos(ep, T, chunk, file, row)
        # LeRobot's per-episode statistics of every feature (its writer aggregates these).
        for key, arr in numeric.items():
            for name, val in numeric_stats(arr).items():
                row[f"stats/{key}/{name}"] = val
        for cam in self.spec.cameras:
            for name, val in image_stats(ep.images[cam]).items():
                row[f"stats/{image_key(cam)}/{name}"] = val
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        if sim_width is not None:
            row["sim_state_width"] = sim_width
        row["meta_json"] = meta_json
        return self._append_row(row, ep.task, task_index, T, idx)

    def _write_data(self, actions, states, grip, sim, idx: int, task_index: int, chunk: int, file: int,
                    start: int) -> tuple[dict[str, np.ndarray], int | None]:
        """Write the episode's parquet file (action, state, gripper width, sim state zero-padded
        to the spec's width, the index columns). Returns ``(numeric, sim_width)``: the numeric
        columns for the per-episode statistics and the unpadded sim-state width (None without)."""
        import pyarrow as pa

        T = actions.shape[0]
        numeric: dict[str, np.ndarray] = {ACTION: actions}
        cols = {ACTION: _fixed_list(actions, pa.float32())}
        if self.spec.state_dim:
            cols[STATE] = _fixed_list(states, pa.float32())
            numeric[STATE] = states
        if self.spec.has_gripper_width:
            cols[GRIPPER] = pa.array(grip, type=pa.float32())
            numeric[GRIPPER] = grip
        sim_width = None
        if sim is not None:
            sim_width = int(sim.shape[1])
            if self.spec.sim_state_dim == VARIABLE:
                offsets = pa.array(np.arange(T + 1, dtype=np.int32) * sim.shape[1], type=pa.int32())
                cols[SIM_STATE] = pa.ListArray.from_arrays(offsets, pa.array(sim.reshape(-1), type=pa.float64()))
            else:
                if sim_width < self.spec.sim_state_dim:
                    sim = np.concatenate([sim, np.zeros((T, self.spec.sim_state_dim - sim_width))], axis=1)
                cols[SIM_STATE] = _fixed_list(sim, pa.float64())
                numeric[SIM_STATE] = sim
        frame_index = np.arange(T, dtype=np.int64)
        index_cols = {
            "timestamp": (frame_index / self.spec.fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.full(T, idx, dtype=np.int64),
            "index": start + frame_index,
            "task_index": np.full(T, task_index, dtype=np.int64),
        }
        for k, v in index_cols.items():
            cols[k] = pa.array(v)
            numeric[k] = v
        _write_parquet(self.root / DATA_PATH.format(chunk_index=chunk, file_index=file), pa.table(cols))
        return numeric, sim_width

    def _write_videos(self, ep: Episode, T: int, chunk: int, file: int, row: dict) -> None:
        """Encode one video per camera and add its location and time span to ``row``."""
        for cam in self.spec.cameras:
            key = image_key(cam)
            frames = ep.images[cam]
            write_video(self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file),
                        frames, self.spec.fps, codec=self._video["codec"], pix_fmt=self._video["pix_fmt"],
                        crf=self._video["crf"], preset=self._video["preset"])
            row[f"videos/{key}/chunk_index"] = chunk
            row[f"videos/{key}/file_index"] = file
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = T / self.spec.fps

    def _append_row(self, row: dict, task: str, task_index: int, T: int, idx: int) -> int:
        """Commit the episode's row (and its task when new); undone if the commit fails. Returns ``idx``."""
        new_task = task_index == len(self._tasks)
        self._rows.append(row)
        if new_task:
            self._tasks.append(task)
        self._total_frames += T
        try:
            self._commit(write_tasks=new_task)
        except BaseException:
            self._rows.pop()
            if new_task:
                self._tasks.pop()
            self._total_frames -= T
            raise
        return idx

    def _episodes_table(self):
        import pyarrow as pa

        rows = self._rows
        names: list[str] = []
        for r in rows:
            for k in r:
                if k not in names:
                    names.append(k)
        cols: dict[str, Any] = {}
        for k in names:
            vals = [r.get(k) for r in rows]
            if k.startswith("stats/") and k.endswith("/count"):
                cols[k] = pa.array(vals, type=pa.list_(pa.int64()))
            elif k.startswith("stats/"):
                cols[k] = pa.array(vals)
            else:
                cols[k] = pa.array(vals)
        # Flat, typed copies of scalar meta values (readers use meta_json).
        metas = [json.loads(r["meta_json"]) if r.get("meta_json") else {} for r in rows]
        keys = sorted({k for m in metas for k in m})
        for k in keys:
            vals = [m.get(k) for m in metas]
            if all(_is_scalar(v) for v in vals) and any(v is not None for v in vals):
                try:
                    cols[f"episode_meta/{k}"] = pa.array(vals)
                except (pa.ArrowException, TypeError, ValueError, OverflowError):
                    pass
        if not rows:
            cols = {"episode_index": pa.array([], pa.int64()), "tasks": pa.array([], pa.list_(pa.string())),
                    "task_index": pa.array([], pa.int64()), "length": pa.array([], pa.int64()),
                    "success": pa.array([], pa.bool_()), "meta_json": pa.array([], pa.string())}
        return pa.table(cols)

    def _tasks_table(self):
        import pyarrow as pa

        table = pa.table({"task_index": pa.array(np.arange(len(self._tasks), dtype=np.int64)),
                          "task": pa.array(self._tasks, type=pa.string())})
        # pandas metadata so that ``pd.read_parquet`` gives LeRobot's frame (index = task).
        pandas_meta = {
            "index_columns": ["task"], "column_indexes": [],
            "columns": [
                {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
            ],
            "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0",
        }
        return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})

    def _info(self) -> dict[str, Any]:
        s = self.spec
        n = len(self._rows)
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": s.robot_type or None,
            "total_episodes": n,
            "total_frames": self._total_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": _fmt_fps(s.fps),
            "splits": {"train": f"0:{n}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if s.cameras else None,
            "features": _features(s, self._video),
            "world2act": {
                "spec": s.to_dict(),
                "layout": "one data file and one video file per episode (file index = episode index)",
                "video": dict(self._video),
            },
        }

    def _commit(self, write_tasks: bool) -> None:
        # Order matters for crash safety: tasks (append-only) -> episodes (commit point) -> info.
        if write_tasks or not (self.root / TASKS_PATH).exists():
            _write_parquet(self.root / TASKS_PATH, self._tasks_table())
        for r in self._rows:  # every row lives in the one episode table written here
            r["meta/episodes/chunk_index"], r["meta/episodes/file_index"] = 0, 0
        _write_parquet(self.root / EPISODES_PATH, self._episodes_table())
        # Episode tables another writer (LeRobot appending to this dataset) left beside ours
        # now duplicate rows of file-000 (the reader keeps file-000's): remove them.
        for p in sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
            if p != self.root / EPISODES_PATH:
                p.unlink(missing_ok=True)
        write_json(self.root / INFO_PATH, self._info())

    def finalize(self) -> None:
        """Write ``meta/stats.json`` over all committed episodes.

        Numeric features (``action``, ``observation.state``, ``observation.gripper_width``,
        ``sim_state`` when it has a fixed width, and ``timestamp``, ``frame_index``,
        ``episode_index``, ``index``, ``task_index``): mean, std, min, max, q01, q10, q50, q90,
        q99, count, exact over all frames. Cameras: the same per channel in [0, 1], shaped
        (3, 1, 1), combined from per-episode statistics (quantiles count-weighted, as LeRobot
        does). See :mod:`world2act.data.stats`. Safe to call repeatedly; adding an episode
        afterwards deletes the stale stats file.
        """
        if not self._rows:
            write_json(self.root / STATS_PATH, {})
            return
        ds = LeRobotDataset(self.root, check_files=False)
        keys = [ACTION] + ([STATE] if self.spec.state_dim else []) + ([GRIPPER] if self.spec.has_gripper_width else [])
        keys += ([SIM_STATE] if self.spec.sim_state_dim not in (None, VARIABLE) else []) + list(INDEX_FEATURES)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        for i in range(ds.num_episodes):
            cols = ds._read_frames(i, columns=keys)
            for k in keys:
                parts[k].append(cols[k])
        stats = compute_stats({k: np.concatenate(v) for k, v in parts.items()})
        # Episodes written before 2026-12 lack image quantiles: decode their videos once.
        stale = [(i, cam) for cam in self.spec.cameras for i, r in enumerate(self._rows)
                 if r.get(f"stats/{image_key(cam)}/q50") is None]
        for i, cam in stale:
            frames = ds._read_video_frames(i, cam, int(self._rows[i]["length"]))
            for name, val in image_stats(frames).items():
                self._rows[i][f"stats/{image_key(cam)}/{name}"] = val
        if stale:
            self._commit(write_tasks=False)
        for cam in self.spec.cameras:
            key = image_key(cam)
            names = [n for n in ("mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99", "count")
                     if all(r.get(f"stats/{key}/{n}") is not None for r in self._rows)]
            per_ep = [{n: _image_stats_shape(r[f"stats/{key}/{n}"]) if n != "count" else r[f"stats/{key}/{n}"]
                       for n in names} for r in self._rows]
            stats[key] = aggregate_stats(per_ep)
        write_json(self.root / STATS_PATH, stats)

    def __enter__(self) -> "LeRobotDatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()


# --------------------------------------------------------------------------- reader


class LeRobotDataset:
    """Read a LeRobot v3 dataset: one written by :class:`LeRobotDatasetWriter` or by LeRobot.

    Opening reads ``meta/info.json``, ``meta/tasks.parquet`` and the episode table and checks
    that every episode's data and video files exist; frames are read per episode on demand.
    Episodes whose data share a file (datasets written by LeRobot itself) are supported via
    ``dataset_from_index``/``dataset_to_index`` (the file is read once and kept while
    consecutive episodes use it) and their videos by seeking to ``from_timestamp``.

    Args:
        root: dataset folder.
        check_files: check at open that every data/video file exists (default True).

    Attributes:
        spec (DatasetSpec), fps (float), num_episodes (int; also ``len(ds)``), num_frames,
        cameras (tuple[str, ...]), camera_keys (camera -> feature key), features (info.json's
        features), tasks (list[str], position = task_index), stats (dict from
        meta/stats.json, or None before ``finalize``), info (dict).

    Raises:
        World2ActError: a missing or corrupt ``info.json``, tasks or episodes parquet, no
            ``action`` feature, or a missing data/video file (the message names the file).
    """

    def __init__(self, root: str | os.PathLike, *, check_files: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise World2ActError(f"{self.root}: dataset folder not found")
        info_path = self.root / INFO_PATH
        info = read_json(info_path)
        if not isinstance(info, dict):
            raise World2ActError(f"{info_path}: not a LeRobot info.json (expected a JSON object)")
        missing = [k for k in ("codebase_version", "fps", "features", "data_path") if k not in info]
        if missing:
            raise World2ActError(f"{info_path}: not a LeRobot info.json (missing {missing})")
        if not str(info["codebase_version"]).startswith("v3"):
            raise World2ActError(f"{info_path}: codebase_version {info['codebase_version']!r} is not supported (need v3.x)")
        self.info: dict[str, Any] = info
        self.features: dict[str, Any] = info["features"]
        self.spec: DatasetSpec = _spec_from_info(info, info_path)
        self.fps = float(self.spec.fps)
        self.cameras: tuple[str, ...] = self.spec.cameras
        keys = _camera_keys(self.features)
        self.camera_keys: dict[str, str] = {c: keys.get(c, image_key(c)) for c in self.cameras}
        self.camera_sizes: dict[str, tuple[int, int]] = {
            c: (_image_hw(self.features[k]) if k in self.features else tuple(self.spec.image_size))
            for c, k in self.camera_keys.items()}
        self.tasks: list[str] = _read_tasks(self.root / TASKS_PATH)

        ep_files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not ep_files:
            raise World2ActError(f"{self.root / EPISODES_PATH}: episodes file not found")
        rows: list[dict[str, Any]] = []
        seen_eps: set = set()
        for p in ep_files:  # a row repeated in a later file (an interrupted rewrite) is skipped
            for r in _read_parquet(p, "episodes").to_pylist():
                if r.get("episode_index") not in seen_eps:
                    seen_eps.add(r.get("episode_index"))
                    rows.append(r)
        rows.sort(key=lambda r: r.get("episode_index", -1))
        for i, r in enumerate(rows):
            if r.get("episode_index") != i or "length" not in r:
                raise World2ActError(f"{ep_files[0].parent.parent}: episode table is inconsistent at episode {i}")
        self._episodes = rows
        self._stats: dict | None = None
        self._stats_loaded = False
        self._table_cache: tuple[Path, Any, np.ndarray | None] | None = None
        if check_files:
            seen: set[Path] = set()
            for i in range(len(rows)):
                paths = [self._data_path(i)] + [self._video_path(i, c) for c in self.cameras if self._is_video(c)]
                for p in paths:
                    if p in seen:
                        continue
                    if not p.is_file():
                        raise World2ActError(f"{p}: file of episode {i} not found (dataset {self.root})")
                    seen.add(p)

    # -- basic properties
    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    def __len__(self) -> int:
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        return int(sum(int(r["length"]) for r in self._episodes))

    @property
    def stats(self) -> dict | None:
        """``meta/stats.json`` (feature -> stat -> list), or None if not written yet."""
        if not self._stats_loaded:
            p = self.root / STATS_PATH
            self._stats = read_json(p) if p.exists() else None
            self._stats_loaded = True
        return self._stats

    def feature_names(self, key: str) -> list[str] | None:
        """The dimension names of feature ``key`` (flattened), or None when not given."""
        f = self.features.get(key)
        return flat_names(f.get("names")) if isinstance(f, dict) else None

    def feature_width(self, key: str) -> int:
        """Number of values per frame of feature ``key`` (1 for a scalar feature).

        Raises:
            World2ActError: the dataset has no such feature (the message lists the features).
        """
        f = self.features.get(key)
        if not isinstance(f, dict):
            raise World2ActError(f"{self.root}: no feature {key!r} (features: {', '.join(self.features)})")
        if key == SIM_STATE and self.spec.sim_state_dim is not None:
            return int(self.spec.sim_state_dim)
        shape = list(f.get("shape") or [1])
        return int(np.prod(shape))

    def __repr__(self) -> str:
        return f"LeRobotDataset({str(self.root)!r}, episodes={self.num_episodes}, cameras={list(self.cameras)})"

    # -- paths
    def _row(self, i: int) -> dict[str, Any]:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < len(self._episodes):
            raise World2ActError(f"{self.root}: episode index {i!r} out of range (dataset has {len(self._episodes)} episodes)")
        return self._episodes[int(i)]

    def _is_video(self, cam: str) -> bool:
        f = self.features.get(self.camera_keys[cam])
        return not isinstance(f, dict) or f.get("dtype") == "video"

    def _data_path(self, i: int) -> Path:
        r = self._row(i)
        return self.root / self.info["data_path"].format(chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])

    def _video_path(self, i: int, cam: str) -> Path:
        r = self._row(i)
        key = self.camera_keys[cam]
        tmpl = self.info.get("video_path") or VIDEO_PATH
        return self.root / tmpl.format(video_key=key, chunk_index=r[f"videos/{key}/chunk_index"],
                                       file_index=r[f"videos/{key}/file_index"])

    # -- reading
    def episode_meta(self, i: int) -> dict[str, Any]:
        """Metadata of episode ``i`` without reading frames.

        Returns:
            ``{**Episode.meta, "episode_index", "length", "task", "task_index", "success"}``
            (``success`` is True for datasets that do not record it).
        """
        r = self._row(i)
        meta = json.loads(r["meta_json"]) if r.get("meta_json") else {}
        tasks = r.get("tasks") or []
        if r.get("task_index") is not None:
            task_index = int(r["task_index"])
        else:
            task_index = self.tasks.index(tasks[0]) if tasks and tasks[0] in self.tasks else 0
        task = tasks[0] if tasks else (self.tasks[task_index] if task_index < len(self.tasks) else "")
        success = r.get("success")
        meta.update(episode_index=int(i), length=int(r["length"]), task=task, task_index=task_index,
                    success=True if success is None else bool(success))
        return meta

    def _episode_table(self, i: int):
        """The rows of episode ``i`` from its data file (cached while episodes share the file)."""
        r = self._row(i)
        path = self._data_path(i)
        T = int(r["length"])
        if self._table_cache is None or self._table_cache[0] != path:
            table = _read_parquet(path, "data")
            idx = None
            if "index" in table.column_names and table.num_rows != T:
                idx = table.column("index").to_numpy(zero_copy_only=False)
            self._table_cache = (path, table, idx)
        _, table, idx = self._table_cache
        if table.num_rows == T:
            return table, path
        # several episodes share this file (written by LeRobot itself)
        if idx is not None and r.get("dataset_from_index") is not None:
            lo, hi = int(r["dataset_from_index"]), int(r.get("dataset_to_index", int(r["dataset_from_index"]) + T))
            if np.all(idx[1:] >= idx[:-1]):
                a, b = np.searchsorted(idx, lo, "left"), np.searchsorted(idx, hi, "left")
                sub = table.slice(int(a), int(b - a))
            else:
                import pyarrow.compute as pc

                col = table.column("index")
                sub = table.filter(pc.and_(pc.greater_equal(col, lo), pc.less(col, hi)))
        elif "episode_index" in table.column_names:
            import pyarrow.compute as pc

            sub = table.filter(pc.equal(table.column("episode_index"), int(i)))
        else:
            sub = table
        if sub.num_rows != T:
            raise World2ActError(f"{path}: has {sub.num_rows} rows for episode {i}, expected {T}")
        return sub, path

    def read_columns(self, i: int, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Numeric per-frame columns of episode ``i`` (``[T, D]`` for vector features, ``[T]``
        for scalar ones), e.g. ``ds.read_columns(0, ["action"])["action"]``.

        Raises:
            World2ActError: a column the data file lacks (named, with the file).
        """
        return self._read_frames(i, columns)

    def _read_frames(self, i: int, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        table, path = self._episode_table(i)
        want = list(columns) if columns is not None else [
            c for c in table.column_names if not (isinstance(self.features.get(c), dict)
                                                  and self.features[c].get("dtype") in ("image", "video", "string"))]
        absent = [c for c in want if c not in table.column_names]
        if absent:
            raise World2ActError(f"{path}: data file lacks columns {absent}")
        out = {}
        for c in want:
            dtype = np.float64 if c == SIM_STATE else (np.int64 if c in INDEX_FEATURES[1:] else np.float32)
            out[c] = _column_matrix(table, c, dtype, path)
        return out

    def load_episode(self, i: int, cameras: Sequence[str] | None = None, load_images: bool = True) -> Episode:
        """Read episode ``i``.

        Args:
            i: episode index in ``[0, num_episodes)``.
            cameras: which cameras to decode (None = all of ``ds.cameras``).
            load_images: False skips video decoding entirely (``Episode.images == {}``): the
                fast path for segmentation and statistics.

        Returns:
            An :class:`Episode` with actions ``[T, A]`` float32, states ``[T, S]`` float32
            (``[T, 0]`` without a state feature), gripper_width ``[T]`` float32 (NaN when the
            dataset has no ``observation.gripper_width``), sim_states ``[T, N]`` float64 (the
            episode's own width) or None, images camera -> uint8 ``[T, H, W, 3]``, task,
            success, and meta (as written).

        Raises:
            World2ActError: index out of range, an unknown camera (valid ones listed), or a
                missing/corrupt data or video file or a video with fewer frames than the
                episode (the message names the file).
        """
        r = self._row(i)
        T = int(r["length"])
        if cameras is None:
            cameras = self.cameras if load_images else ()
        else:
            cameras = tuple(cameras)
            unknown = [c for c in cameras if c not in self.cameras]
            if unknown:
                raise World2ActError(f"{self.root}: unknown cameras {unknown} (dataset has {list(self.cameras)})")
        s = self.spec
        cols = [ACTION] + ([STATE] if s.state_dim else []) + ([GRIPPER] if s.has_gripper_width else [])
        cols += [SIM_STATE] if s.sim_state_dim is not None else []
        data = self._read_frames(i, cols)
        actions = data[ACTION].reshape(T, -1)
        states = data[STATE].reshape(T, -1) if s.state_dim else np.zeros((T, 0), np.float32)
        grip = data[GRIPPER].reshape(T) if s.has_gripper_width else np.full(T, np.nan, np.float32)
        sim = data.get(SIM_STATE)
        if sim is not None:
            sim = sim.reshape(T, -1)
            width = r.get("sim_state_width")
            if width is not None and 0 < int(width) < sim.shape[1]:
                sim = np.ascontiguousarray(sim[:, :int(width)])
        images: dict[str, np.ndarray] = {}
        if load_images:
            for cam in cameras:
                images[cam] = self._read_video_frames(i, cam, T) if self._is_video(cam) else self._read_image_frames(i, cam, T)
        meta = json.loads(r["meta_json"]) if r.get("meta_json") else {}
        em = self.episode_meta(i)
        return Episode(task=em["task"], actions=actions, states=states, gripper_width=grip,
                       images=images, sim_states=sim, success=em["success"], meta=meta)

    def _check_frames(self, frames: np.ndarray, cam: str, where: Path) -> np.ndarray:
        H, W = self.camera_sizes[cam]
        if frames.shape[1:3] != (H, W):
            raise World2ActError(f"{where}: video frames are {frames.shape[1]}x{frames.shape[2]}, the dataset declares "
                                 f"{H}x{W} for camera {cam!r}")
        return frames

    def _read_video_frames(self, i: int, cam: str, T: int) -> np.ndarray:
        r = self._row(i)
        path = self._video_path(i, cam)
        start = float(r.get(f"videos/{self.camera_keys[cam]}/from_timestamp") or 0.0)
        return self._check_frames(read_video_span(path, start, T, self.fps), cam, path)

    def _read_image_frames(self, i: int, cam: str, T: int) -> np.ndarray:
        """Frames of an ``image`` feature (PNG/JPEG bytes in the data parquet, LeRobot's layout)."""
        import io

        from PIL import Image

        table, path = self._episode_table(i)
        key = self.camera_keys[cam]
        if key not in table.column_names:
            raise World2ActError(f"{path}: data file lacks the image column {key!r}")
        frames = []
        for cell in table.column(key).to_pylist():
            try:
                if isinstance(cell, dict) and cell.get("bytes"):
                    img = Image.open(io.BytesIO(cell["bytes"]))
                elif isinstance(cell, dict) and cell.get("path"):
                    img = Image.open(self.root / cell["path"])
                else:
                    raise ValueError("no image bytes or path")
                frames.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
            except (OSError, ValueError) as e:
                raise World2ActError(f"{path}: undecodable image in column {key!r} of episode {i} ({e})") from None
        return self._check_frames(np.stack(frames), cam, path)

    def iter_episodes(self, cameras: Sequence[str] | None = None, load_images: bool = True) -> Iterator[Episode]:
        """Yield every episode in order (same arguments as :meth:`load_episode`)."""
        for i in range(self.num_episodes):
            yield self.load_episode(i, cameras=cameras, load_images=load_images)
