"""LeRobot v3 datasets: a crash-safe writer and a validating reader (pyarrow + PyAV).

Layout (LeRobot ``codebase_version`` "v3.0"; the ``lerobot`` package itself cannot be
installed here, so this module writes the plain files)::

    meta/info.json                              fps, features (dtype/shape/names), totals,
                                                path templates, our DatasetSpec
    meta/tasks.parquet                          task_index, task (pandas index "task")
    meta/episodes/chunk-000/file-000.parquet    one row per episode (see below)
    meta/stats.json                             written by finalize()
    data/chunk-CCC/file-FFF.parquet             one row per frame
    videos/observation.images.<cam>/chunk-CCC/file-FFF.mp4

Per-frame columns: ``action`` [A] float32, ``observation.state`` [S] float32,
``observation.gripper_width`` float32, ``sim_state`` [N] float64 (when the spec has one),
``timestamp`` (s, float32), ``frame_index``, ``episode_index``, ``index`` (global frame),
``task_index`` (int64). Row ``t`` = observation before step ``t`` + action at step ``t``.

Per-episode columns: ``episode_index``, ``tasks`` (list of one string), ``task_index``,
``length``, ``success``, ``data/chunk_index``, ``data/file_index``, ``dataset_from_index``,
``dataset_to_index``, ``videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp}``,
``meta_json`` (the episode's ``meta`` dict as JSON: the source of truth when reading),
``episode_meta/<key>`` flat copies of scalar meta values (for tools that browse parquet), and
``stats/observation.images.<cam>/{mean,std,min,max,count}`` per-episode image statistics.

Crash safety: every episode gets its own data file and video files (file index = episode
index, chunk = index // chunks_size), each written atomically; only then are tasks, the
episodes table and info.json rewritten (each atomically, episodes table last but one, and it
is the commit point: the reader trusts it). A writer killed at any moment leaves a dataset of
the episodes completed before; files of an interrupted episode are orphans, ignored by the
reader and overwritten on resume.
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
from world2act.data.stats import aggregate_stats, compute_stats, image_stats
from world2act.data.video import DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_PIX_FMT, DEFAULT_PRESET, read_video, write_video
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
#: Keys ``episode_meta(i)`` adds itself; an Episode.meta may not use them.
RESERVED_META_KEYS = ("episode_index", "length", "task", "task_index", "success")
#: ``DatasetSpec.sim_state_dim`` value for simulator states whose width varies between
#: episodes (LIBERO: the flattened MuJoCo state size depends on the task's objects).
VARIABLE = -1


def image_key(camera: str) -> str:
    """Dataset feature key of a camera: ``observation.images.<camera>``."""
    return IMAGE_PREFIX + camera


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What every episode of a dataset looks like.

    Attributes:
        fps: recording rate in Hz (LIBERO 20). Timestamps are ``frame_index / fps``.
        action_dim: A, width of ``action``.
        state_dim: S, width of ``observation.state`` (proprioception).
        cameras: camera names (``observation.images.<name>`` video features), in order.
            May be empty (no videos).
        image_size: ``(H, W)`` of every camera frame.
        benchmark: e.g. ``libero_object`` or ``metaworld`` (informational).
        robot_type: LeRobot ``robot_type`` (e.g. ``panda``, ``sawyer``).
        sim_state_dim: N, width of the per-frame ``sim_state`` (float64); None = no
            simulator states stored; ``-1`` (:data:`VARIABLE`) = stored with a width that
            may differ between episodes (constant within one).
    """

    fps: float
    action_dim: int
    state_dim: int
    cameras: tuple[str, ...]
    image_size: tuple[int, int]
    benchmark: str = ""
    robot_type: str = ""
    sim_state_dim: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(str(c) for c in self.cameras))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if not (isinstance(self.fps, (int, float)) and self.fps > 0 and math.isfinite(self.fps)):
            raise World2ActError(f"DatasetSpec.fps must be a positive number, got {self.fps!r}")
        for name in ("action_dim", "state_dim"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise World2ActError(f"DatasetSpec.{name} must be a positive integer, got {v!r}")
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise World2ActError(f"DatasetSpec.image_size must be (H, W) with positive sizes, got {self.image_size}")
        if len(set(self.cameras)) != len(self.cameras) or any(not c or "/" in c for c in self.cameras):
            raise World2ActError(f"DatasetSpec.cameras must be distinct non-empty names without '/', got {self.cameras}")
        s = self.sim_state_dim
        if s is not None and (not isinstance(s, (int, np.integer)) or (s <= 0 and s != VARIABLE)):
            raise World2ActError(f"DatasetSpec.sim_state_dim must be None, a positive integer or -1 (variable), got {s!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cameras"], d["image_size"] = list(self.cameras), list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


# --------------------------------------------------------------------------- helpers


def _fmt_fps(fps: float) -> int | float:
    return int(fps) if float(fps).is_integer() else float(fps)


def _features(spec: DatasetSpec) -> dict[str, Any]:
    H, W = spec.image_size
    feats: dict[str, Any] = {
        ACTION: {"dtype": "float32", "shape": [spec.action_dim], "names": [f"a{i}" for i in range(spec.action_dim)]},
        STATE: {"dtype": "float32", "shape": [spec.state_dim], "names": [f"s{i}" for i in range(spec.state_dim)]},
        GRIPPER: {"dtype": "float32", "shape": [1], "names": None},
    }
    if spec.sim_state_dim is not None:
        feats[SIM_STATE] = {"dtype": "float64", "shape": [spec.sim_state_dim], "names": None}
    for cam in spec.cameras:
        feats[image_key(cam)] = {
            "dtype": "video",
            "shape": [H, W, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": H, "video.width": W, "video.codec": "h264", "video.pix_fmt": DEFAULT_PIX_FMT,
                "video.is_depth_map": False, "video.fps": _fmt_fps(spec.fps), "video.channels": 3,
                "has_audio": False,
            },
        }
    for k in ("timestamp",):
        feats[k] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("frame_index", "episode_index", "index", "task_index"):
        feats[k] = {"dtype": "int64", "shape": [1], "names": None}
    return feats


def _spec_from_info(info: dict[str, Any], where: Path) -> DatasetSpec:
    w2a = info.get("world2act") or {}
    if isinstance(w2a.get("spec"), dict):
        return DatasetSpec.from_dict(w2a["spec"])
    # A LeRobot dataset written by another tool: derive what we can from the features.
    feats = info["features"]
    try:
        cams = tuple(k[len(IMAGE_PREFIX):] for k, f in feats.items()
                     if k.startswith(IMAGE_PREFIX) and f.get("dtype") in ("video", "image"))
        size = tuple(feats[image_key(cams[0])]["shape"][:2]) if cams else (1, 1)
        sim = feats[SIM_STATE]["shape"][0] if SIM_STATE in feats else None
        return DatasetSpec(fps=info["fps"], action_dim=feats[ACTION]["shape"][0], state_dim=feats[STATE]["shape"][0],
                           cameras=cams, image_size=size, robot_type=info.get("robot_type") or "", sim_state_dim=sim)
    except (KeyError, IndexError, TypeError) as e:
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


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


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
            existing dataset's spec must equal ``spec``. A folder without ``meta/info.json``
            starts a new dataset.
        overwrite: delete ``root`` first.
        chunks_size: files per ``chunk-CCC`` folder (LeRobot default 1000).
        video_codec, pix_fmt, crf, preset: encoder settings (see :mod:`world2act.data.video`).

    Raises:
        World2ActError: ``root`` not usable (see prepare_out_dir), or on ``resume`` an
            existing dataset that is corrupt or has a different spec (the differing fields
            are named).

    Usable as a context manager: ``finalize()`` runs on a clean exit.
    """

    def __init__(self, root: str | os.PathLike, spec: DatasetSpec, resume: bool = False, overwrite: bool = False,
                 *, chunks_size: int = DEFAULT_CHUNKS_SIZE, video_codec: str = DEFAULT_CODEC,
                 pix_fmt: str = DEFAULT_PIX_FMT, crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET) -> None:
        if not isinstance(spec, DatasetSpec):
            raise World2ActError(f"spec must be a DatasetSpec, got {type(spec).__name__}")
        self.root = Path(root)
        self.spec = spec
        self.chunks_size = int(chunks_size)
        self._video = {"codec": video_codec, "pix_fmt": pix_fmt, "crf": int(crf), "preset": preset}
        self._rows: list[dict[str, Any]] = []  # episode rows (without flat meta columns)
        self._tasks: list[str] = []
        self._total_frames = 0
        self.root = prepare_out_dir(self.root, resume=resume, overwrite=overwrite)
        if resume and (self.root / INFO_PATH).exists():
            self._load_existing()
        else:
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
        self._rows = [{k: v for k, v in r.items() if not k.startswith("episode_meta/")} for r in ds._episodes]
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
        try:
            ep.validate(where)
        except ValueError as e:
            raise World2ActError(str(e)) from None
        s = self.spec
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
            if sim.ndim != 2 or (s.sim_state_dim != VARIABLE and sim.shape[1] != s.sim_state_dim):
                raise World2ActError(f"{where}: sim_states have shape {sim.shape}, the dataset's sim_state_dim is {s.sim_state_dim}")
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
                ``[T, A]``, states ``[T, S]``, gripper_width ``[T]``, images exactly for
                ``spec.cameras`` as uint8 ``[T, H, W, 3]``, sim_states ``[T, N]`` iff the spec
                has ``sim_state_dim``, meta a JSON-serialisable dict with string keys (not
                ``episode_index/length/task/task_index/success``; tuples come back as lists).

        Returns:
            The new episode's index.

        Raises:
            World2ActError: the episode does not match the spec or is invalid (nothing is
                written), or a file cannot be written.
        """
        import pyarrow as pa

        idx = len(self._rows)
        actions, states, grip, sim, meta_json = self._check(ep, idx)
        T = actions.shape[0]
        stats_path = self.root / STATS_PATH
        if stats_path.exists():  # stats are for the committed set; they go stale now
            stats_path.unlink()
        task_index = self._tasks.index(ep.task) if ep.task in self._tasks else len(self._tasks)
        chunk, file = idx // self.chunks_size, idx  # file index = episode index (unique per dataset)
        start = self._total_frames

        cols = {
            ACTION: _fixed_list(actions, pa.float32()),
            STATE: _fixed_list(states, pa.float32()),
            GRIPPER: pa.array(grip, type=pa.float32()),
        }
        if sim is not None:
            if self.spec.sim_state_dim == VARIABLE:
                offsets = pa.array(np.arange(T + 1, dtype=np.int32) * sim.shape[1], type=pa.int32())
                cols[SIM_STATE] = pa.ListArray.from_arrays(offsets, pa.array(sim.reshape(-1), type=pa.float64()))
            else:
                cols[SIM_STATE] = _fixed_list(sim, pa.float64())
        frame_index = np.arange(T, dtype=np.int64)
        cols["timestamp"] = pa.array((frame_index / self.spec.fps).astype(np.float32), type=pa.float32())
        cols["frame_index"] = pa.array(frame_index)
        cols["episode_index"] = pa.array(np.full(T, idx, dtype=np.int64))
        cols["index"] = pa.array(start + frame_index)
        cols["task_index"] = pa.array(np.full(T, task_index, dtype=np.int64))
        _write_parquet(self.root / DATA_PATH.format(chunk_index=chunk, file_index=file), pa.table(cols))

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
        for cam in self.spec.cameras:
            key = image_key(cam)
            frames = ep.images[cam]
            write_video(self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file),
                        frames, self.spec.fps, **self._video)
            row[f"videos/{key}/chunk_index"] = chunk
            row[f"videos/{key}/file_index"] = file
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = T / self.spec.fps
            for name, val in image_stats(frames).items():
                row[f"stats/{key}/{name}"] = [int(v) for v in val] if name == "count" else [float(v) for v in val]
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        row["meta_json"] = meta_json

        new_task = task_index == len(self._tasks)
        self._rows.append(row)
        if new_task:
            self._tasks.append(ep.task)
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
            cols[k] = pa.array([r.get(k) for r in rows])
        # Flat, typed copies of scalar meta values (readers use meta_json).
        metas = [json.loads(r["meta_json"]) for r in rows]
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
            "features": _features(s),
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
        _write_parquet(self.root / EPISODES_PATH, self._episodes_table())
        write_json(self.root / INFO_PATH, self._info())

    def finalize(self) -> None:
        """Write ``meta/stats.json`` over all committed episodes.

        Numeric features (``action``, ``observation.state``, ``observation.gripper_width``,
        and ``sim_state`` when it has a fixed width): mean, std, min, max, q01, q99, count
        (from all frames). Cameras: per-channel mean, std, min, max in [0, 1] and count,
        aggregated exactly from per-episode statistics. See :mod:`world2act.data.stats`.
        Safe to call repeatedly; adding an episode afterwards deletes the stale stats file.
        """
        if not self._rows:
            write_json(self.root / STATS_PATH, {})
            return
        ds = LeRobotDataset(self.root, check_files=False)
        keys = [ACTION, STATE, GRIPPER] + ([SIM_STATE] if self.spec.sim_state_dim not in (None, VARIABLE) else [])
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        for i in range(ds.num_episodes):
            cols = ds._read_frames(i, columns=keys)
            for k in keys:
                parts[k].append(cols[k])
        stats = compute_stats({k: np.concatenate(v) for k, v in parts.items()})
        for cam in self.spec.cameras:
            key = image_key(cam)
            per_ep = [{n: r[f"stats/{key}/{n}"] for n in ("mean", "std", "min", "max", "count")} for r in self._rows]
            stats[key] = aggregate_stats(per_ep)
        write_json(self.root / STATS_PATH, stats)

    def __enter__(self) -> "LeRobotDatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()


# --------------------------------------------------------------------------- reader


class LeRobotDataset:
    """Read a LeRobot v3 dataset written by :class:`LeRobotDatasetWriter`.

    Opening reads ``meta/info.json``, ``meta/tasks.parquet`` and the episode table and checks
    that every episode's data and video files exist; frames are read per episode on demand.
    Episodes whose data share a file (datasets written by LeRobot itself) are supported via
    ``dataset_from_index``/``dataset_to_index`` and the video timestamps.

    Args:
        root: dataset folder.
        check_files: check at open that every data/video file exists (default True).

    Attributes:
        spec (DatasetSpec), fps (float), num_episodes (int; also ``len(ds)``), num_frames,
        cameras (tuple[str, ...]), tasks (list[str], position = task_index),
        stats (dict from meta/stats.json, or None before ``finalize``), info (dict).

    Raises:
        World2ActError: a missing or corrupt ``info.json``, tasks or episodes parquet, or a
            missing data/video file (the message names the file).
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
        self.spec: DatasetSpec = _spec_from_info(info, info_path)
        self.fps = float(self.spec.fps)
        self.cameras: tuple[str, ...] = self.spec.cameras

        tasks_path = self.root / TASKS_PATH
        tt = _read_parquet(tasks_path, "tasks")
        if "task" not in tt.column_names or "task_index" not in tt.column_names:
            raise World2ActError(f"{tasks_path}: needs columns 'task' and 'task_index', has {tt.column_names}")
        order = np.argsort(tt.column("task_index").to_numpy(zero_copy_only=False))
        names = tt.column("task").to_pylist()
        self.tasks: list[str] = [names[j] for j in order]

        ep_files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not ep_files:
            raise World2ActError(f"{self.root / EPISODES_PATH}: episodes file not found")
        rows: list[dict[str, Any]] = []
        for p in ep_files:
            rows.extend(_read_parquet(p, "episodes").to_pylist())
        rows.sort(key=lambda r: r.get("episode_index", -1))
        for i, r in enumerate(rows):
            if r.get("episode_index") != i or "length" not in r:
                raise World2ActError(f"{ep_files[0].parent.parent}: episode table is inconsistent at episode {i}")
        self._episodes = rows
        self._stats: dict | None = None
        self._stats_loaded = False
        if check_files:
            for i in range(len(rows)):
                for p in [self._data_path(i)] + [self._video_path(i, c) for c in self.cameras]:
                    if not p.is_file():
                        raise World2ActError(f"{p}: file of episode {i} not found (dataset {self.root})")

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

    def __repr__(self) -> str:
        return f"LeRobotDataset({str(self.root)!r}, episodes={self.num_episodes}, cameras={list(self.cameras)})"

    # -- paths
    def _row(self, i: int) -> dict[str, Any]:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < len(self._episodes):
            raise World2ActError(f"{self.root}: episode index {i!r} out of range (dataset has {len(self._episodes)} episodes)")
        return self._episodes[int(i)]

    def _data_path(self, i: int) -> Path:
        r = self._row(i)
        return self.root / self.info["data_path"].format(chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])

    def _video_path(self, i: int, cam: str) -> Path:
        r = self._row(i)
        key = image_key(cam)
        tmpl = self.info.get("video_path") or VIDEO_PATH
        return self.root / tmpl.format(video_key=key, chunk_index=r[f"videos/{key}/chunk_index"],
                                       file_index=r[f"videos/{key}/file_index"])

    # -- reading
    def episode_meta(self, i: int) -> dict[str, Any]:
        """Metadata of episode ``i`` without reading frames.

        Returns:
            ``{**Episode.meta, "episode_index", "length", "task", "task_index", "success"}``.
        """
        r = self._row(i)
        meta = json.loads(r["meta_json"]) if r.get("meta_json") else {}
        task_index = int(r.get("task_index", self.tasks.index(r["tasks"][0]) if r.get("tasks") else 0))
        task = r["tasks"][0] if r.get("tasks") else self.tasks[task_index]
        meta.update(episode_index=int(i), length=int(r["length"]), task=task, task_index=task_index,
                    success=bool(r.get("success", True)))
        return meta

    def _read_frames(self, i: int, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Numeric per-frame columns of episode ``i`` (``[T, D]`` or ``[T]``)."""
        r = self._row(i)
        path = self._data_path(i)
        T = int(r["length"])
        want = list(columns) if columns is not None else None
        read_cols = None if want is None else sorted(set(want) | {"index"})
        table = _read_parquet(path, "data", columns=None)
        if read_cols is not None:
            absent = [c for c in read_cols if c not in table.column_names]
            if absent:
                raise World2ActError(f"{path}: data file lacks columns {absent}")
            table = table.select(read_cols)
        if table.num_rows != T:  # several episodes share this file (written by LeRobot itself)
            import pyarrow.compute as pc

            lo, hi = int(r.get("dataset_from_index", 0)), int(r.get("dataset_to_index", T))
            idx = table.column("index")
            table = table.filter(pc.and_(pc.greater_equal(idx, lo), pc.less(idx, hi)))
            if table.num_rows != T:
                raise World2ActError(f"{path}: has {table.num_rows} rows for episode {i}, expected {T}")
        out = {}
        for c in table.column_names:
            dtype = np.float64 if c == SIM_STATE else (np.int64 if c in ("frame_index", "episode_index", "index", "task_index") else np.float32)
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
            An :class:`Episode` with actions ``[T, A]`` float32, states ``[T, S]`` float32,
            gripper_width ``[T]`` float32, sim_states ``[T, N]`` float64 or None, images
            camera -> uint8 ``[T, H, W, 3]``, task, success, and meta (as written).

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
        cols = [ACTION, STATE, GRIPPER] + ([SIM_STATE] if self.spec.sim_state_dim is not None else [])
        data = self._read_frames(i, cols)
        images: dict[str, np.ndarray] = {}
        if load_images:
            for cam in cameras:
                images[cam] = self._read_video_frames(i, cam, T)
        meta = json.loads(r["meta_json"]) if r.get("meta_json") else {}
        em = self.episode_meta(i)
        ep = Episode(task=em["task"], actions=data[ACTION], states=data[STATE], gripper_width=data[GRIPPER].reshape(T),
                     images=images, sim_states=data.get(SIM_STATE), success=em["success"], meta=meta)
        return ep

    def _read_video_frames(self, i: int, cam: str, T: int) -> np.ndarray:
        r = self._row(i)
        path = self._video_path(i, cam)
        frames = read_video(path)
        key = image_key(cam)
        start = int(round(float(r.get(f"videos/{key}/from_timestamp", 0.0)) * self.fps))
        if frames.shape[0] < start + T:
            raise World2ActError(f"{path}: video has {frames.shape[0]} frames, episode {i} needs frames {start}..{start + T - 1}")
        H, W = self.spec.image_size
        if frames.shape[1:3] != (H, W):
            raise World2ActError(f"{path}: video frames are {frames.shape[1]}x{frames.shape[2]}, dataset image_size is {H}x{W}")
        return frames[start:start + T]

    def iter_episodes(self, cameras: Sequence[str] | None = None, load_images: bool = True) -> Iterator[Episode]:
        """Yield every episode in order (same arguments as :meth:`load_episode`)."""
        for i in range(self.num_episodes):
            yield self.load_episode(i, cameras=cameras, load_images=load_images)
