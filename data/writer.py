"""Streaming, crash-safe episode writer: mixed-rate samples in, fixed-grid rows out.

Each stream receives (capture time, value) at its own rate. A grid row at time g is emitted as soon as
every stream has a sample at or after g: images take the nearest sample, lowdim streams are linearly
interpolated; `data/<key>_t` keeps the capture time of the nearest sample used, so alignment error
stays inspectable. Rows are flushed to zarr in small batches (`flush_every_s`), never buffered for a
whole episode, on one background thread so image encoding and file I/O never stall the caller.

On-disk format: zarr format 2 with standard codec ids only (`mimic.data.codecs`): camera arrays are one
JPEG per chunk, or (lossless) several frames per chunk as one JPEG XL image, where `mimic.data.image_chunks`
keeps the open chunk's original frames so appends rewrite it without re-encoding stored frames.

Every mutation commits the same way: the data rows land first (past the committed end, where no reader
looks), then `mimic.data.commit.append_ends` makes the new episode ends exist in one atomic metadata
write. A kill at any moment therefore leaves every committed episode intact; `DatasetWriter.open()` trims
the uncommitted tail and refuses, without touching anything, a store whose ends are not a valid commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from mimic.data.codecs import image_chunk_rows, image_codec
from mimic.data.commit import append_ends
from mimic.data.dataset import SCHEMA_VERSION, DatasetError, check_layout, open_group
from mimic.data.image_chunks import ChunkTail
from mimic.data.storage import Location, StorageError, locate

log = logging.getLogger(__name__)

LOWDIM_CHUNK_ROWS = 1024
REQUIRED_ATTRS = ("robot", "joint_names")
DEFAULT_ATTRS: dict[str, Any] = {
    "robot": "",
    "joint_names": [],
    "latencies": {},
    "calibration_ids": {},
    "task": "",
}


@dataclass(frozen=True)
class StreamSpec:
    """One input stream: per-sample shape/dtype, image or lowdim, and the max distance to the grid (s)."""

    shape: tuple[int, ...]
    dtype: str = "float64"
    kind: str = "lowdim"
    tolerance_s: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in ("lowdim", "image"):
            raise ValueError(f"StreamSpec.kind must be 'lowdim' or 'image', got {self.kind!r}")
        if self.kind == "image" and (len(self.shape) != 3 or self.shape[2] != 3 or self.dtype != "uint8"):
            raise ValueError(f"StreamSpec: image streams are uint8 (H, W, 3), got {self.dtype} {self.shape}")
        if self.tolerance_s <= 0:
            raise ValueError(f"StreamSpec.tolerance_s must be > 0, got {self.tolerance_s}")

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "kind": self.kind,
            "tolerance_s": self.tolerance_s,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> StreamSpec:
        return StreamSpec(tuple(d["shape"]), d["dtype"], d["kind"], float(d["tolerance_s"]))


class _Stream:
    """Samples of one stream not yet consumed by the grid (always keeps the last one at/before g)."""

    def __init__(self, key: str, spec: StreamSpec) -> None:
        self.key, self.spec = key, spec
        self.t: list[float] = []
        self.v: list[np.ndarray] = []

    def add(self, t: float, value: np.ndarray) -> None:
        if self.t and t < self.t[-1]:
            raise ValueError(f"stream {self.key!r}: capture time went backwards ({t:.6f} < {self.t[-1]:.6f})")
        self.t.append(t)
        self.v.append(value)

    def ready(self, g: float) -> bool:
        return bool(self.t) and self.t[-1] >= g

    def sample(self, g: float) -> tuple[np.ndarray, float]:
        """Value at grid time g and the capture time of the nearest sample; prunes older samples."""
        ts = self.t
        i = max(0, int(np.searchsorted(ts, g, side="right")) - 1)  # last sample <= g (or first)
        j = min(i + 1, len(ts) - 1)
        near = i if abs(ts[i] - g) <= abs(ts[j] - g) else j
        gap = abs(ts[near] - g)
        if gap > self.spec.tolerance_s:
            raise ValueError(
                f"stream {self.key!r}: nearest sample is {gap * 1e3:.1f} ms from grid time "
                f"{g:.4f} s (tolerance {self.spec.tolerance_s * 1e3:.1f} ms)"
            )
        if (
            self.spec.kind == "image"
            or j == i
            or ts[j] == ts[i]
            or not np.issubdtype(np.dtype(self.spec.dtype), np.floating)
        ):
            value = self.v[near]
        else:
            a = (g - ts[i]) / (ts[j] - ts[i])
            value = (self.v[i] * (1.0 - a) + self.v[j] * a).astype(self.spec.dtype)
        t_used = ts[near]
        del self.t[:i], self.v[:i]
        return value, t_used


def _new_group(path: str | Path, loc: Location) -> zarr.Group:
    """The new store's root group at `loc`: a folder that cannot be made (a parent that is a file, no
    permission, a full disk) is the user's path, reported as one line naming it before any episode is recorded."""
    try:
        return zarr.open_group(loc.path if loc.local else loc.zarr_store(), mode="w-", zarr_format=2)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot create the store ({exc.strerror or exc})") from None


class DatasetWriter:
    """Use `create()` for a new store or `open()` to append to an existing one."""

    # Each flush resizes and rewrites the open chunk of every array (13 for a two-camera recording), so its
    # cost is per flush, not per row: 1 s costs the recorder ~8% of a core where 0.25 s cost ~21% (measured
    # on this machine). Only the open episode's rows wait for it; a commit always flushes first.
    DEFAULT_FLUSH_EVERY_S = 1.0

    def __init__(self, path: str, root: zarr.Group, flush_every_s: float = DEFAULT_FLUSH_EVERY_S) -> None:
        self.path = path
        self.root = root
        self.fps = float(root.attrs["fps"])
        self.streams = {k: StreamSpec.from_json(v) for k, v in dict(root.attrs["streams"]).items()}
        self.flush_every_s = flush_every_s
        self.dropped_steps = 0
        self._data = root["data"]
        self._ends = root["meta"]["episode_ends"]
        self._active: dict[str, _Stream] | None = None
        self._lock = threading.RLock()  # append() may be called from several ROS callback threads
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dataset-writer")
        self._inflight: deque[Future] = deque()
        self._tails = {
            k: ChunkTail(self._data[k].chunks[0], self._data[k].shape[0])
            for k, s in self.streams.items()
            if s.kind == "image" and self._data[k].chunks[0] > 1
        }

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        fps: float,
        streams: dict[str, StreamSpec],
        attrs: dict[str, Any] | None = None,
        image_quality: int | None = 90,
    ) -> DatasetWriter:
        """New store (fails if one exists). attrs must name `robot` and `joint_names`.

        `image_quality` is the JPEG quality of camera arrays (one frame per chunk, fast enough to record live),
        None for lossless JPEG XL, several frames per chunk (imports and conversions use it so that decoded
        pixels equal their source's).
        """
        attrs = dict(attrs or {})
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise DatasetError(f"{path}: attrs missing {missing}")
        if fps <= 0:
            raise DatasetError(f"{path}: fps must be > 0, got {fps}")
        if "timestamp" in streams or any(k.endswith("_t") for k in streams):
            raise DatasetError(f"{path}: stream names may not be 'timestamp' or end in '_t'")
        try:  # a URL is checked (protocol, bucket, credentials) before anything is written
            loc = locate(path)
            if loc.exists():
                raise DatasetError(f"{path}: already exists (use DatasetWriter.open to append)")
        except StorageError as exc:
            raise DatasetError(str(exc)) from None
        root = _new_group(path, loc)
        root.attrs.update(
            {
                **DEFAULT_ATTRS,
                **attrs,
                "schema_version": SCHEMA_VERSION,
                "fps": float(fps),
                "streams": {k: s.to_json() for k, s in streams.items()},
            }
        )
        data = root.create_group("data")
        for key, s in streams.items():
            if s.kind == "image":
                data.create_array(
                    key,
                    shape=(0, *s.shape),
                    chunks=(image_chunk_rows(s.shape, image_quality), *s.shape),
                    dtype="uint8",
                    compressors=image_codec(image_quality),
                    fill_value=0,
                )
            else:
                data.create_array(
                    key, shape=(0, *s.shape), chunks=(LOWDIM_CHUNK_ROWS, *s.shape), dtype=s.dtype
                )
            data.create_array(f"{key}_t", shape=(0,), chunks=(LOWDIM_CHUNK_ROWS,), dtype="float64")
        data.create_array("timestamp", shape=(0,), chunks=(LOWDIM_CHUNK_ROWS,), dtype="float64")
        root.create_group("meta").create_array(
            "episode_ends", shape=(0,), chunks=(LOWDIM_CHUNK_ROWS,), dtype="int64"
        )
        return cls(str(path), root)

    @classmethod
    def open(cls, path: str | Path) -> DatasetWriter:
        """Reopen for appending; trims rows past the last commit and reports how many steps it dropped.

        Never trims below the last commit: a store whose `meta/episode_ends` is not a valid commit, or
        whose data is shorter than it, is refused with a DatasetError before anything is written.
        """
        root = open_group(path, "r+")
        if root.attrs.get("schema_version") != SCHEMA_VERSION or "streams" not in root.attrs:
            raise DatasetError(
                f"{path}: attrs 'schema_version'/'streams' missing or wrong (not a Mimic store)"
            )
        ends = check_layout(root, path)
        ends_arr = root["meta"]["episode_ends"]
        if ends_arr.shape[0] > ends.size:  # the never-filled slot of a writer killed before atomic commits
            ends_arr.resize((ends.size,))
        n = int(ends[-1]) if ends.size else 0
        data = root["data"]
        written = data["timestamp"].shape[0]
        for _, arr in data.arrays():
            if arr.shape[0] > n:
                arr.resize((n, *arr.shape[1:]))
        loc = locate(path, check=False)
        for partial in loc.local_path.rglob("*.partial") if loc.local else ():  # a write killed mid-file
            partial.unlink(missing_ok=True)
        w = cls(str(path), root)
        w.dropped_steps = max(0, written - n)
        if w.dropped_steps:
            log.warning("%s: dropped %d uncommitted steps after episode %d", path, w.dropped_steps, ends.size)
        return w

    # ---- episodes ------------------------------------------------------------------------------
    @property
    def n_committed(self) -> int:
        ends = np.asarray(self._ends[:])
        return int(ends[-1]) if ends.size else 0

    def begin_episode(self) -> None:
        with self._lock:
            self._begin()

    def _begin(self) -> None:
        if self._active is not None:
            raise RuntimeError(f"{self.path}: begin_episode() while an episode is open")
        self._active = {k: _Stream(k, s) for k, s in self.streams.items()}
        self._start = self.n_committed
        self._rows = 0
        self._grid0: float | None = None
        self._pending: dict[str, list] = {k: [] for k in self._data_keys()}
        self._last_flush = time.monotonic()
        self._truncate(self._start)  # rows left by a discarded episode

    def append(self, key: str, t_capture: float, value: Any) -> None:
        """Add one sample; emits and (periodically) flushes every grid row that became complete."""
        with self._lock:
            self._append(key, t_capture, value)

    def _append(self, key: str, t_capture: float, value: Any) -> None:
        if self._active is None:
            raise RuntimeError(f"{self.path}: append({key!r}) outside an episode (call begin_episode)")
        stream = self._active.get(key)
        if stream is None:
            raise KeyError(f"{self.path}: unknown stream {key!r} (have {sorted(self._active)})")
        arr = np.asarray(value, dtype=stream.spec.dtype)
        if arr.shape != stream.spec.shape:
            raise ValueError(
                f"{self.path}: stream {key!r} expects shape {stream.spec.shape}, got {arr.shape}"
            )
        stream.add(float(t_capture), arr)
        self._emit_ready()
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self._flush()

    def end_episode(self) -> int:
        """Flush and commit; returns the episode's number of steps."""
        with self._lock:
            return self._end()

    def _end(self) -> int:
        if self._active is None:
            raise RuntimeError(f"{self.path}: end_episode() outside an episode")
        self.flush()
        if self._rows == 0:
            self._discard()
            raise ValueError(f"{self.path}: episode has no complete rows (every stream needs samples)")
        append_ends(self._ends, np.array([self._start + self._rows]))  # the commit
        self._committed()
        rows, self._active = self._rows, None
        return rows

    def write_episode(self, rows: dict[str, np.ndarray]) -> int:
        """Append one already-aligned episode (every data key, `<key>_t` and `timestamp`) and commit.

        For import/merge/split, where rows already sit on the grid; live recording uses append().
        """
        return self.write_episodes([rows])[0]

    def write_episodes(self, episodes: list[dict[str, np.ndarray]]) -> list[int]:
        """Append several already-aligned episodes with one write per key, then commit them all.

        Why: a store's cost is per zarr operation (a resize and a metadata file per key), not per row, so
        merge and split batch episodes. The data lands before the episode ends, which then land whole in
        one atomic write, so a kill mid-batch leaves the earlier commits intact and this batch uncommitted.
        Returns each one's steps.
        """
        if self._active is not None:
            raise RuntimeError(f"{self.path}: write_episode() while an episode is open")
        keys = self._data_keys()
        lengths = []
        for rows in episodes:
            missing = [k for k in keys if k not in rows]
            if missing:
                raise KeyError(f"{self.path}: episode is missing keys {missing}")
            n = len(rows["timestamp"])
            bad = [k for k in keys if len(rows[k]) != n]
            if n == 0 or bad:
                raise ValueError(
                    f"{self.path}: episode keys {bad or ['timestamp']} have inconsistent/zero length"
                )
            lengths.append(n)
        if not episodes:
            return []
        with self._lock:
            start = self.n_committed
            self._truncate(start)  # rows left by a discarded episode
            self._write_batch({k: np.concatenate([np.asarray(rows[k]) for rows in episodes]) for k in keys})
            append_ends(self._ends, start + np.cumsum(lengths))  # the commit of the whole batch
            self._committed()
        return lengths

    def discard_episode(self) -> None:
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        if self._active is None:
            return
        self._active = None
        for rows in self._pending.values():
            rows.clear()
        self._truncate(self._start)

    def close(self) -> None:
        """Discards an open (uncommitted) episode; committed data is already on disk."""
        self.discard_episode()
        self._pool.shutdown(wait=True)

    def flush(self) -> None:
        """Write every complete row now and wait until it is on disk (not a commit)."""
        self._flush()
        self._drain()

    # ---- internals -----------------------------------------------------------------------------
    def _data_keys(self) -> list[str]:
        return [*self.streams, *(f"{k}_t" for k in self.streams), "timestamp"]  # timestamp last

    def _emit_ready(self) -> None:
        assert self._active is not None
        streams = self._active.values()
        if self._grid0 is None:
            if not all(s.t for s in streams):
                return
            self._grid0 = max(s.t[0] for s in streams)
        while True:
            g = self._grid0 + self._rows / self.fps
            if not all(s.ready(g) for s in streams):
                return
            for s in streams:
                value, t_used = s.sample(g)
                self._pending[s.key].append(value)
                self._pending[f"{s.key}_t"].append(t_used)
            self._pending["timestamp"].append(g)
            self._rows += 1

    MAX_INFLIGHT = 8  # batches queued for the background thread before append() waits (bounds memory)

    def _flush(self) -> None:
        """Hand the pending rows to the writer thread; raises a failure of an earlier batch."""
        self._last_flush = time.monotonic()
        while self._inflight and (self._inflight[0].done() or len(self._inflight) >= self.MAX_INFLIGHT):
            self._inflight.popleft().result()
        if not self._pending["timestamp"]:
            return
        batch = {key: np.stack(self._pending[key]) for key in self._data_keys()}
        for rows in self._pending.values():
            rows.clear()
        self._inflight.append(self._pool.submit(self._write_batch, batch))

    def _drain(self) -> None:
        while self._inflight:
            self._inflight.popleft().result()

    def _write_batch(self, batch: dict[str, np.ndarray]) -> None:
        for key in self._data_keys():  # timestamp last: its length bounds the rows fully written
            arr = self._data[key]
            n0 = arr.shape[0]
            k = len(batch[key])
            arr.resize((n0 + k, *arr.shape[1:]))
            rows = batch[key].astype(arr.dtype, copy=False)
            tail = self._tails.get(key)
            start, rows = tail.extend(n0, rows) if tail is not None else (n0, rows)
            arr[start : n0 + k] = rows

    def _committed(self) -> None:
        for tail in self._tails.values():
            tail.commit()

    def _truncate(self, n: int) -> None:
        self._drain()
        for _, arr in self._data.arrays():
            if arr.shape[0] > n:
                arr.resize((n, *arr.shape[1:]))
        for tail in self._tails.values():
            tail.truncate(n)
