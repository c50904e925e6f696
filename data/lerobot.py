"""LeRobot v3.0 datasets both ways: `export_lerobot(store, out_dir)` and `import_lerobot(src_dir, store)`.

The v3.0 layout (what LeRobot's `LeRobotDataset` reads, written here with pyarrow + PyAV only, because the
`lerobot` package cannot be installed beside this project's torch):

- `meta/info.json`: codebase_version "v3.0", integer fps, `features` (dtype / shape / names), chunk and file
  size limits, `data_path` / `video_path` templates, totals and splits.
- `meta/stats.json`: per feature min / max / mean / std / count / q01..q99 (images per channel, in [0, 1],
  shaped [3, 1, 1]); `meta/tasks.parquet`: task text -> task_index (pandas index metadata, so LeRobot's
  `pd.read_parquet` sees the task as the index).
- `meta/episodes/chunk-000/file-000.parquet`: one row per episode (length, tasks, dataset_from/to_index, the
  data file, and per video key its file and from/to timestamps), plus per-episode `stats/<feature>/<stat>`.
- `data/chunk-XXX/file-YYY.parquet`: one row per frame; a feature of shape [1] is a scalar column, [n] a
  fixed-size list; `timestamp` (float32, seconds since the episode start), frame_index, episode_index, index,
  task_index.
- `videos/<key>/chunk-XXX/file-YYY.mp4`: many episodes back to back per file; an episode's frames sit at
  `from_timestamp + timestamp` in its file.

Key mapping (exactly inverted by the import; documented in docs/contracts.md):

- `robot0_joint_pos` [n] + `robot0_gripper_width` [1] (same dtype) -> `observation.state` [n + 1]
- `action` -> `action`; every other lowdim key `<k>` -> `observation.<k>`; dtypes are kept (float64 stays
  float64, float32 stays float32), so values survive bit for bit.
- `camera<i>_rgb` (uint8 HWC) -> video `observation.images.camera<i>`
- `timestamp` and every `<k>_t` (float64 capture times) -> one float64 vector `mimic.time` whose `names` are
  the Mimic keys; LeRobot's policies only read `observation.*` and `action`, so it never reaches a network.
- root attrs (robot, joint names, latencies, stream specs, ...) -> `meta/mimic.json`, a file LeRobot ignores.

A dataset without `meta/mimic.json` (one LeRobot recorded) imports by the same rules: `observation.<x.y>` ->
`<x_y>`, times on the fps grid from the frame indices, attrs from info.json and the task table.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from mimic.data.dataset import DatasetError, ReplayDataset
from mimic.data.writer import DatasetWriter, StreamSpec

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
MIMIC_PATH = "meta/mimic.json"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"

STATE = "observation.state"
IMAGES = "observation.images."
TIMES = "mimic.time"
JOINTS, GRIPPER = "robot0_joint_pos", "robot0_gripper_width"
DEFAULT_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
PROGRESS_MIN_FRAMES = 500  # smaller jobs finish before a bar says anything


@dataclass(frozen=True)
class LeRobotExportConfig:
    """Encoder and file-size settings; the defaults keep 64x64 sim renders above ~40 dB PSNR.

    libx264 at crf 18 rather than LeRobot's default AV1: it is in every FFmpeg build LeRobot decodes with,
    encodes small frames fastest, and the loss is chroma subsampling (yuv420p) more than quantisation.
    `gop` 2 keeps a keyframe every other frame, as LeRobot does, so random access decodes at most one extra
    frame.
    """

    repo_id: str = ""
    codec: str = "libx264"
    crf: int = 18
    gop: int = 2
    pix_fmt: str = "yuv420p"
    chunks_size: int = 1000
    data_files_size_in_mb: int = 100
    video_files_size_in_mb: int = 200


# ---- mapping --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lowdim:
    """One LeRobot non-video feature and the Mimic keys (with their widths) it is made of."""

    name: str
    dtype: str
    parts: tuple[tuple[str, int], ...]  # (mimic key, width) in column order
    names: list[str] | None = None

    @property
    def width(self) -> int:
        return sum(w for _, w in self.parts)


def _image_feature(key: str) -> str:
    return IMAGES + key.removesuffix("_rgb")


def _export_mapping(ds: ReplayDataset, streams: dict[str, StreamSpec]) -> tuple[list[_Lowdim], list[str]]:
    """Lowdim features and image keys of a store, or a DatasetError naming the stream that does not map."""
    images = [k for k, s in streams.items() if s.kind == "image"]
    for k in images:
        if not k.endswith("_rgb"):
            raise DatasetError(f"{ds.path}: image stream {k!r} is not named '<camera>_rgb'")
    low = {k: s for k, s in streams.items() if s.kind == "lowdim"}
    for k, s in low.items():
        if len(s.shape) != 1:
            raise DatasetError(f"{ds.path}: stream {k!r} has shape {list(s.shape)}, only 1-D lowdim maps")
    joint_names = [str(n) for n in ds.attrs.get("joint_names") or []]
    feats: list[_Lowdim] = []
    j, g = low.get(JOINTS), low.get(GRIPPER)
    if j is not None and g is not None and g.shape == (1,) and j.dtype == g.dtype:
        n = j.shape[0]
        names = joint_names if len(joint_names) == n else [f"joint{i}" for i in range(n)]
        feats.append(_Lowdim(STATE, j.dtype, ((JOINTS, n), (GRIPPER, 1)), [*names, "gripper_width"]))
        low = {k: s for k, s in low.items() if k not in (JOINTS, GRIPPER)}
    if "action" in low:
        a = low.pop("action")
        names = [*joint_names, "gripper"] if a.shape[0] == len(joint_names) + 1 else None
        feats.append(_Lowdim("action", a.dtype, (("action", a.shape[0]),), names))
    for k, s in low.items():
        feats.append(_Lowdim(f"observation.{k}", s.dtype, ((k, s.shape[0]),)))
    times = ["timestamp", *(f"{k}_t" for k in streams)]
    feats.append(_Lowdim(TIMES, "float64", tuple((t, 1) for t in times), times))
    return feats, images


def _lowdim_spec(f: _Lowdim) -> dict[str, Any]:
    return {"dtype": f.dtype, "shape": [f.width], "names": f.names}


# ---- stats ----------------------------------------------------------------------------------------------


def _stats(x: np.ndarray, axes: tuple[int, ...]) -> dict[str, np.ndarray]:
    """LeRobot's per-feature statistics of x reduced over `axes` (float64; count = samples)."""
    x = np.asarray(x, dtype=np.float64)
    keep = x.ndim != 2  # images keep [C, 1, 1]
    out = {
        "min": x.min(axis=axes, keepdims=keep),
        "max": x.max(axis=axes, keepdims=keep),
        "mean": x.mean(axis=axes, keepdims=keep),
        "std": x.std(axis=axes, keepdims=keep),
        "count": np.array([x.shape[0]]),
    }
    for q in QUANTILES:
        out[f"q{int(round(q * 100)):02d}"] = np.quantile(x, q, axis=axes, keepdims=keep)
    if keep:  # (1, C, 1, 1) -> (C, 1, 1)
        out = {k: (v[0] if k != "count" else v) for k, v in out.items()}
    return out


def _image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel stats in [0, 1] of up to 100 evenly spaced frames, downsampled past 300 px (as LeRobot)."""
    n = len(frames)
    idx = np.round(np.linspace(0, n - 1, min(n, 100))).astype(int)
    x = frames[idx]
    step = max(1, max(x.shape[1:3]) // 150) if max(x.shape[1:3]) >= 300 else 1
    x = x[:, ::step, ::step].transpose(0, 3, 1, 2).astype(np.float64) / 255.0  # NCHW
    return _stats(x, (0, 2, 3))


def _aggregate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Dataset stats from episode stats: exact min/max/mean/std, count-weighted quantiles (as LeRobot)."""
    n = np.array([p["count"][0] for p in parts], dtype=np.float64)
    w = (n / n.sum()).reshape(-1, *([1] * parts[0]["mean"].ndim))
    means = np.stack([p["mean"] for p in parts])
    mean = (w * means).sum(0)
    var = (w * (np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2)).sum(0)
    out = {
        "min": np.min([p["min"] for p in parts], axis=0),
        "max": np.max([p["max"] for p in parts], axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([int(n.sum())]),
    }
    for k in parts[0]:
        if k.startswith("q"):
            out[k] = (w * np.stack([p[k] for p in parts])).sum(0)
    return out


def _jsonable(stats: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


# ---- writing --------------------------------------------------------------------------------------------


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file + 1 >= chunks_size else (chunk, file + 1)


def _column(values: np.ndarray, dtype: str, width: int) -> pa.Array:
    """A [1] feature is a scalar column and an [n] one a fixed-size list, as HF datasets stores them."""
    values = np.ascontiguousarray(values, dtype=dtype)
    if width == 1:
        return pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)


class _VideoWriter:
    """One camera's MP4 files: episodes appended back to back, a new file once the size limit is passed."""

    def __init__(self, root: Path, feature: str, fps: int, cfg: LeRobotExportConfig) -> None:
        self.root, self.feature, self.fps, self.cfg = root, feature, fps, cfg
        self.chunk = self.file = 0
        self._container: Any = None
        self._stream: Any = None
        self._frames = 0  # frames in the open file

    @property
    def path(self) -> Path:
        return self.root / VIDEO_PATH.format(
            video_key=self.feature, chunk_index=self.chunk, file_index=self.file
        )

    def _open(self, h: int, w: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w")
        opts = {"crf": str(self.cfg.crf), "g": str(self.cfg.gop)}
        self._stream = self._container.add_stream(self.cfg.codec, rate=self.fps, options=opts)
        self._stream.width, self._stream.height, self._stream.pix_fmt = w, h, self.cfg.pix_fmt
        self._stream.time_base = Fraction(1, self.fps)
        self._frames = 0

    def write_episode(self, frames: np.ndarray) -> dict[str, Any]:
        """Append one episode; returns its episodes-table columns (file and from/to timestamps)."""
        import av

        if (
            self._container is not None
            and self.path.stat().st_size / 2**20 >= self.cfg.video_files_size_in_mb
        ):
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file, self.cfg.chunks_size)
        if self._container is None:
            self._open(frames.shape[1], frames.shape[2])
        start = self._frames
        for img in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts, vf.time_base = self._frames, Fraction(1, self.fps)
            self._container.mux(self._stream.encode(vf))
            self._frames += 1
        p = f"videos/{self.feature}/"
        return {
            p + "chunk_index": self.chunk,
            p + "file_index": self.file,
            p + "from_timestamp": start / self.fps,
            p + "to_timestamp": self._frames / self.fps,
        }

    def close(self) -> None:
        if self._container is not None:
            self._container.mux(self._stream.encode())
            self._container.close()
            self._container = None

    def info(self) -> dict[str, Any]:
        """The feature's `info` block, probed from its first file as LeRobot does."""
        import av

        first = self.root / VIDEO_PATH.format(video_key=self.feature, chunk_index=0, file_index=0)
        with av.open(str(first)) as c:
            s = c.streams.video[0]
            return {
                "video.height": s.height,
                "video.width": s.width,
                "video.codec": s.codec_context.codec.canonical_name,
                "video.pix_fmt": s.pix_fmt,
                "video.is_depth_map": False,
                "video.fps": self.fps,
                "video.channels": 3,
                "video.g": self.cfg.gop,
                "video.crf": self.cfg.crf,
                "has_audio": False,
                "is_depth_map": False,
            }


class _DataWriter:
    """The frame table's parquet files; a new file once the size limit is passed."""

    def __init__(self, root: Path, cfg: LeRobotExportConfig) -> None:
        self.root, self.cfg = root, cfg
        self.chunk = self.file = 0
        self._writer: pq.ParquetWriter | None = None

    @property
    def path(self) -> Path:
        return self.root / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)

    def write_episode(self, table: pa.Table) -> dict[str, int]:
        if self._writer is not None and self.path.stat().st_size / 2**20 >= self.cfg.data_files_size_in_mb:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file, self.cfg.chunks_size)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="snappy")
        self._writer.write_table(table)
        return {"data/chunk_index": self.chunk, "data/file_index": self.file}

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tasks_table(tasks: list[str]) -> pa.Table:
    """task_index with the task text as a pandas index, which is how LeRobot writes and reads it."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": None}
        ],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }  # fmt: skip
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks)})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _card(repo_id: str, info: dict[str, Any]) -> str:
    """A minimal Hugging Face dataset card so the folder can be pushed as `repo_id` unchanged."""
    return (
        "---\nlicense: apache-2.0\ntask_categories:\n- robotics\ntags:\n- LeRobot\nconfigs:\n"
        "- config_name: default\n  data_files: data/*/*.parquet\n---\n\n"
        f"# {repo_id}\n\nExported from a Mimic dataset store. {info['total_episodes']} episodes, "
        f"{info['total_frames']} frames at {info['fps']} fps, robot {info['robot_type']!r}.\n"
    )


def export_lerobot(store: str | Path, out_dir: str | Path, cfg: LeRobotExportConfig | None = None) -> int:
    """Write `store` as a LeRobot v3.0 dataset folder `out_dir` (which must not exist); returns episodes.

    Why one pass over episodes: every output (frame table, videos, episode rows, stats) is appended per
    episode, so memory stays one episode deep whatever the store's size.
    """
    cfg = cfg or LeRobotExportConfig()
    ds = ReplayDataset(store)
    out = Path(out_dir)
    attrs = ds.attrs
    if "streams" not in attrs or "fps" not in attrs:
        raise DatasetError(f"{store}: root attrs 'streams'/'fps' missing (not a Mimic store)")
    if ds.n_episodes == 0:
        raise DatasetError(f"{store}: key 'meta/episode_ends' is empty (no episodes to export)")
    fps_f = float(attrs["fps"])
    if fps_f != round(fps_f):
        raise DatasetError(f"{store}: root attr 'fps' is {fps_f:g}; LeRobot v3 needs an integer fps")
    fps = int(round(fps_f))
    streams = {k: StreamSpec.from_json(v) for k, v in dict(attrs["streams"]).items()}
    lowdim, images = _export_mapping(ds, streams)
    for k in images:
        h, w, _ = streams[k].shape
        if h % 2 or w % 2:
            raise DatasetError(
                f"{store}: image stream {k!r} is {h}x{w}; {cfg.pix_fmt} video needs even sizes"
            )
    task = str(attrs.get("task") or "")
    repo_id = cfg.repo_id or f"mimic/{Path(str(store)).name.removesuffix('.zarr')}"

    out.mkdir(parents=True)
    data = _DataWriter(out, cfg)
    videos = {k: _VideoWriter(out, _image_feature(k), fps, cfg) for k in images}
    rows: list[dict[str, Any]] = []
    ep_stats: list[dict[str, dict[str, np.ndarray]]] = []
    index = 0
    try:
        with tqdm(
            total=ds.n_steps, desc="export-lerobot", unit="frame", disable=ds.n_steps < PROGRESS_MIN_FRAMES
        ) as bar:
            for e in range(ds.n_episodes):
                ep = ds.episode(e)
                n = len(ep["timestamp"])
                cols: dict[str, pa.Array] = {}
                stats: dict[str, dict[str, np.ndarray]] = {}
                for f in lowdim:
                    x = np.concatenate([ep[k].reshape(n, w) for k, w in f.parts], axis=1)
                    cols[f.name] = _column(x, f.dtype, f.width)
                    stats[f.name] = _stats(x, (0,))
                frame_index = np.arange(n, dtype=np.int64)
                defaults = {
                    "timestamp": (frame_index / fps).astype(np.float32),
                    "frame_index": frame_index,
                    "episode_index": np.full(n, e, np.int64),
                    "index": index + frame_index,
                    "task_index": np.zeros(n, np.int64),
                }
                for name, v in defaults.items():
                    cols[name] = pa.array(v)
                    stats[name] = _stats(v.reshape(n, 1), (0,))
                row: dict[str, Any] = {"episode_index": e, "tasks": [task], "length": n}
                row.update(data.write_episode(pa.table(cols)))
                row.update({"dataset_from_index": index, "dataset_to_index": index + n})
                for k, vw in videos.items():
                    row.update(vw.write_episode(ep[k]))
                    stats[vw.feature] = _image_stats(ep[k])
                row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
                row.update({f"stats/{f}/{s}": v.tolist() for f, st in stats.items() for s, v in st.items()})
                rows.append(row)
                ep_stats.append(stats)
                index += n
                bar.update(n)
        data.close()
        for vw in videos.values():
            vw.close()

        features: dict[str, Any] = {f.name: _lowdim_spec(f) for f in lowdim}
        for k, vw in videos.items():
            features[vw.feature] = {
                "dtype": "video",
                "shape": list(streams[k].shape),
                "names": ["height", "width", "channels"],
                "info": vw.info(),
            }
        for name in DEFAULT_COLUMNS:
            features[name] = {
                "dtype": "float32" if name == "timestamp" else "int64",
                "shape": [1],
                "names": None,
            }
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": str(attrs.get("robot") or "") or None,
            "total_episodes": ds.n_episodes,
            "total_frames": ds.n_steps,
            "total_tasks": 1,
            "chunks_size": cfg.chunks_size,
            "data_files_size_in_mb": cfg.data_files_size_in_mb,
            "video_files_size_in_mb": cfg.video_files_size_in_mb,
            "fps": fps,
            "splits": {"train": f"0:{ds.n_episodes}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if images else None,
            "features": features,
        }
        (out / "meta").mkdir(exist_ok=True)
        (out / INFO_PATH).write_text(json.dumps(info, indent=4))
        stats_all = {f: _jsonable(_aggregate([s[f] for s in ep_stats])) for f in ep_stats[0]}
        (out / STATS_PATH).write_text(json.dumps(stats_all, indent=4))
        pq.write_table(_tasks_table([task]), out / TASKS_PATH)
        ep_path = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
        ep_path.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), ep_path, compression="snappy")
        sidecar = {"format": "mimic-lerobot/1", "repo_id": repo_id, "attrs": attrs}
        (out / MIMIC_PATH).write_text(json.dumps(sidecar, indent=2))
        (out / "README.md").write_text(_card(repo_id, info))
    except BaseException:
        data.close()
        for vw in videos.values():
            try:
                vw.close()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        shutil.rmtree(out, ignore_errors=True)
        raise
    return ds.n_episodes


# ---- reading --------------------------------------------------------------------------------------------


def _load_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing ({what})")
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return obj


def _read_parquet(path: Path) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    try:
        return pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DatasetError(f"{path}: not a readable parquet file ({type(exc).__name__})") from None


def _to_numpy(col: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], dtype: str, where: str) -> np.ndarray:
    """A scalar or (nested) list column as an array (rows, *shape) of `dtype`."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    rows = len(arr)
    while (
        pa.types.is_list(arr.type)
        or pa.types.is_fixed_size_list(arr.type)
        or pa.types.is_large_list(arr.type)
    ):
        arr = arr.flatten()
    values = arr.to_numpy(zero_copy_only=False)
    if values.size != rows * math.prod(shape):
        raise DatasetError(
            f"{where}: has {values.size // max(rows, 1)} values per row, feature shape is {list(shape)}"
        )
    return values.astype(dtype, copy=False).reshape(rows, *shape)


@dataclass(frozen=True)
class _Source:
    """A LeRobot v3 folder as the import needs it: info, episodes table, tasks, optional Mimic sidecar."""

    root: Path
    info: dict[str, Any]
    episodes: dict[str, np.ndarray | list]
    tasks: list[str]
    sidecar: dict[str, Any] | None


def _open_source(src: Path) -> _Source:
    info_path = src / INFO_PATH
    info = _load_json(info_path, "not a LeRobot dataset")
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        raise DatasetError(
            f"{info_path}: codebase_version is {version!r}, only {CODEBASE_VERSION!r} is supported"
        )
    for field in ("fps", "features", "data_path"):
        if field not in info:
            raise DatasetError(f"{info_path}: field {field!r} missing")
    if not isinstance(info["features"], dict) or not info["features"]:
        raise DatasetError(f"{info_path}: field 'features' is empty")
    ep_files = sorted((src / "meta" / "episodes").glob("*/*.parquet"))
    if not ep_files:
        raise DatasetError(f"{src / 'meta' / 'episodes'}: no episodes parquet files")
    tables = [_read_parquet(p) for p in ep_files]
    need = [
        "episode_index",
        "length",
        "dataset_from_index",
        "dataset_to_index",
        "data/chunk_index",
        "data/file_index",
    ]
    videos = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    for k in videos:
        need += [f"videos/{k}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")]
    episodes: dict[str, Any] = {}
    for c in need:
        for p, t in zip(ep_files, tables, strict=True):
            if c not in t.column_names:
                raise DatasetError(f"{p}: column {c!r} missing")
        episodes[c] = np.concatenate([t[c].to_numpy() for t in tables])
    order = np.argsort(episodes["episode_index"], kind="stable")
    episodes = {c: v[order] for c, v in episodes.items()}
    if "tasks" in tables[0].column_names:
        tasks_col = [x for t in tables for x in t["tasks"].to_pylist()]
        episodes["tasks"] = [tasks_col[i] for i in order]
    tasks: list[str] = []
    if (src / TASKS_PATH).is_file():
        tt = _read_parquet(src / TASKS_PATH)
        if "task" in tt.column_names:
            tasks = [str(x) for x in tt["task"].to_pylist()]
    sidecar = _load_json(src / MIMIC_PATH, "") if (src / MIMIC_PATH).is_file() else None
    return _Source(src, info, episodes, tasks, sidecar)


def _import_mapping(source: _Source) -> tuple[list[_Lowdim], dict[str, str]]:
    """The inverse of `_export_mapping`: lowdim features -> Mimic keys, and video feature -> image key."""
    info_path = source.root / INFO_PATH
    lowdim: list[_Lowdim] = []
    images: dict[str, str] = {}
    for name, ft in source.info["features"].items():
        dtype = ft.get("dtype")
        shape = tuple(ft.get("shape") or ())
        if name in DEFAULT_COLUMNS or dtype in ("string", "language"):
            continue
        if dtype == "video":
            if not name.startswith(IMAGES) or len(shape) != 3 or shape[2] != 3:
                raise DatasetError(
                    f"{info_path}: video feature {name!r} is not 'observation.images.<name>' HxWx3"
                )
            images[name] = name.removeprefix(IMAGES).replace(".", "_") + "_rgb"
            continue
        if dtype == "image":
            raise DatasetError(
                f"{info_path}: feature {name!r} stores images in parquet; only video features import"
            )
        if len(shape) != 1:
            raise DatasetError(
                f"{info_path}: feature {name!r} has shape {list(shape)}; only 1-D features import"
            )
        try:
            np.dtype(dtype)
        except TypeError:
            raise DatasetError(f"{info_path}: feature {name!r} has unknown dtype {dtype!r}") from None
        if name == TIMES:
            names = ft.get("names") or []
            if len(names) != shape[0]:
                raise DatasetError(f"{info_path}: feature {TIMES!r} needs one name per column")
            lowdim.append(_Lowdim(name, dtype, tuple((str(k), 1) for k in names), names))
        elif name == STATE and shape[0] >= 2:
            lowdim.append(_Lowdim(name, dtype, ((JOINTS, shape[0] - 1), (GRIPPER, 1)), ft.get("names")))
        elif name == "action":
            lowdim.append(_Lowdim(name, dtype, (("action", shape[0]),)))
        else:
            key = name.removeprefix("observation.").replace(".", "_")
            lowdim.append(_Lowdim(name, dtype, ((key, shape[0]),)))
    keys = [k for f in lowdim if f.name != TIMES for k, _ in f.parts] + list(images.values())
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise DatasetError(f"{info_path}: features map to the same Mimic key(s) {dup}")
    return lowdim, images


class _VideoCursor:
    """Frames of one MP4, decoded forward once; reopened only if a caller asks for an earlier time."""

    def __init__(self, path: Path, tolerance_s: float) -> None:
        self.path, self.tol = path, tolerance_s
        self._open()

    def _open(self) -> None:
        import av

        if not self.path.is_file():
            raise DatasetError(f"{self.path}: missing")
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
        except Exception as exc:  # noqa: BLE001 - av raises several types for a bad file
            raise DatasetError(f"{self.path}: not a readable video ({type(exc).__name__})") from None
        self._frames: Iterator[Any] = self._container.decode(stream)
        self._base = stream.time_base
        self._t = -math.inf
        self._img: np.ndarray | None = None

    def at(self, ts: float) -> np.ndarray:
        """The frame presented at `ts` seconds (within the tolerance), as uint8 HWC RGB."""
        if ts < self._t - self.tol:
            self.close()
            self._open()
        while self._img is None or self._t < ts - self.tol:
            try:
                frame = next(self._frames)
            except StopIteration:
                raise DatasetError(
                    f"{self.path}: no frame at {ts:.4f} s (video ends at {self._t:.4f} s)"
                ) from None
            except Exception as exc:  # noqa: BLE001
                raise DatasetError(
                    f"{self.path}: decoding failed near {ts:.4f} s ({type(exc).__name__})"
                ) from None
            if frame.pts is None:
                continue
            self._t = float(frame.pts * self._base)
            self._img = frame.to_ndarray(format="rgb24")
        if abs(self._t - ts) > self.tol:
            raise DatasetError(f"{self.path}: no frame within {self.tol * 1e3:.0f} ms of {ts:.4f} s")
        return self._img

    def close(self) -> None:
        self._container.close()


def import_lerobot(src_dir: str | Path, store: str | Path) -> int:
    """Read a LeRobot v3.0 folder into a new Mimic store `store`; returns episodes written.

    A folder this module exported comes back exactly (lowdim values bit for bit, times, attrs, episode
    bounds); frames come back through the video codec. Any other v3.0 folder imports by the same mapping.
    """
    src = Path(src_dir)
    source = _open_source(src)
    info, eps = source.info, source.episodes
    fps = float(info["fps"])
    if not fps > 0:
        raise DatasetError(f"{src / INFO_PATH}: field 'fps' is {info['fps']!r}")
    lowdim, images = _import_mapping(source)
    feats = info["features"]
    data_cols = [f.name for f in lowdim]
    has_times = any(f.name == TIMES for f in lowdim)

    streams: dict[str, StreamSpec] = {}
    for f in lowdim:
        if f.name != TIMES:
            streams.update({k: StreamSpec((w,), f.dtype, "lowdim", 0.5 / fps) for k, w in f.parts})
    for name, key in images.items():
        streams[key] = StreamSpec(tuple(feats[name]["shape"]), "uint8", "image", 0.5 / fps)
    sidecar_attrs = dict((source.sidecar or {}).get("attrs") or {})
    if sidecar_attrs:
        want = {k: StreamSpec.from_json(v) for k, v in dict(sidecar_attrs.get("streams") or {}).items()}
        if {k: (s.shape, s.dtype, s.kind) for k, s in want.items()} != {
            k: (s.shape, s.dtype, s.kind) for k, s in streams.items()
        }:
            raise DatasetError(
                f"{src / MIMIC_PATH}: field 'attrs.streams' does not match {INFO_PATH} features"
            )
        streams = want
        attrs = {k: v for k, v in sidecar_attrs.items() if k not in ("schema_version", "fps", "streams")}
    else:
        state_names = (feats.get(STATE) or {}).get("names")
        joints = (
            [str(n) for n in state_names[:-1]] if isinstance(state_names, list) and JOINTS in streams else []
        )
        attrs = {
            "robot": str(info.get("robot_type") or ""),
            "joint_names": joints,
            "task": "; ".join(source.tasks),
        }
    if has_times:
        times = next(f for f in lowdim if f.name == TIMES)
        want_t = {"timestamp", *(f"{k}_t" for k in streams)}
        if {k for k, _ in times.parts} != want_t:
            raise DatasetError(
                f"{src / INFO_PATH}: feature {TIMES!r} names do not cover 'timestamp' and every '<key>_t'"
            )

    n_eps = len(eps["episode_index"])
    total = int(np.sum(eps["length"]))
    writer = DatasetWriter.create(store, fps, streams, attrs)
    cursors: dict[str, _VideoCursor] = {}
    table_cache: dict[Path, dict[str, Any]] = {}
    try:
        with tqdm(
            total=total, desc="import-lerobot", unit="frame", disable=total < PROGRESS_MIN_FRAMES
        ) as bar:
            for i in range(n_eps):
                rows = _episode_rows(source, i, lowdim, data_cols, has_times, fps, table_cache)
                n = len(rows["timestamp"])
                rel_t = rows.pop("_rel_t")
                for name, key in images.items():
                    path = src / str(info.get("video_path") or VIDEO_PATH).format(
                        video_key=name,
                        chunk_index=int(eps[f"videos/{name}/chunk_index"][i]),
                        file_index=int(eps[f"videos/{name}/file_index"][i]),
                    )
                    cur = cursors.get(name)
                    if cur is None or cur.path != path:
                        if cur is not None:
                            cur.close()
                        cur = cursors[name] = _VideoCursor(path, 0.4 / fps)
                    t0 = float(eps[f"videos/{name}/from_timestamp"][i])
                    frames = np.stack([cur.at(t0 + float(t)) for t in rel_t])
                    if frames.shape[1:] != streams[key].shape:
                        raise DatasetError(
                            f"{path}: frames are {list(frames.shape[1:])}, feature {name!r} says {list(streams[key].shape)}"
                        )
                    rows[key] = frames
                    if not has_times:
                        rows[f"{key}_t"] = rows["timestamp"]
                writer.write_episode(rows)
                bar.update(n)
    except BaseException:
        writer.close()
        shutil.rmtree(str(store), ignore_errors=True)
        raise
    finally:
        for cur in cursors.values():
            cur.close()
    writer.close()
    return n_eps


def _episode_rows(
    source: _Source,
    i: int,
    lowdim: list[_Lowdim],
    data_cols: list[str],
    has_times: bool,
    fps: float,
    cache: dict[Path, dict[str, Any]],
) -> dict[str, np.ndarray]:
    """Episode i's lowdim rows as Mimic keys, plus `_rel_t` (LeRobot timestamps, for the video lookup)."""
    eps, info = source.episodes, source.info
    path = source.root / str(info["data_path"]).format(
        chunk_index=int(eps["data/chunk_index"][i]), file_index=int(eps["data/file_index"][i])
    )
    if path not in cache:
        cache.clear()  # one data file held at a time
        table = _read_parquet(path)
        for c in [*data_cols, "index", "frame_index", "timestamp"]:
            if c not in table.column_names:
                raise DatasetError(f"{path}: column {c!r} missing")
        cache[path] = {"table": table, "index": table["index"].to_numpy()}
    table, index = cache[path]["table"], cache[path]["index"]
    lo, hi, length = int(eps["dataset_from_index"][i]), int(eps["dataset_to_index"][i]), int(eps["length"][i])
    sel = np.flatnonzero((index >= lo) & (index < hi))
    if len(sel) != length or hi - lo != length:
        raise DatasetError(
            f"{path}: episode {int(eps['episode_index'][i])} has {len(sel)} rows for index {lo}..{hi}, length {length}"
        )
    part = table.take(pa.array(sel))
    order = np.argsort(part["frame_index"].to_numpy(), kind="stable")
    part = part.take(pa.array(order))
    rows: dict[str, np.ndarray] = {}
    for f in lowdim:
        x = _to_numpy(part[f.name], (f.width,), f.dtype, f"{path}: column {f.name!r}")
        col = 0
        for key, w in f.parts:
            rows[key] = x[:, col : col + w] if f.name != TIMES else x[:, col]
            col += w
    rows["_rel_t"] = part["timestamp"].to_numpy().astype(np.float64)
    if not has_times:  # a LeRobot recording: times on the fps grid, episodes back to back
        t = (lo + part["frame_index"].to_numpy().astype(np.float64)) / fps
        rows["timestamp"] = t
        for key in [k for f in lowdim for k, _ in f.parts]:
            rows[f"{key}_t"] = t
    return rows
