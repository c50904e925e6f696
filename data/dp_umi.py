"""diffusion_policy / UMI ReplayBuffer stores, both ways: import one exactly, export a Mimic store to one.

Their layout (diffusion_policy/common/replay_buffer.py, UMI's scripts_slam_pipeline/07_generate_replay_buffer.py):
zarr format 2, `data/<key>` arrays concatenated over episodes along axis 0, `meta/episode_ends` int64,
cameras `camera<i>_rgb` uint8 (N, H, W, 3) in one-frame chunks compressed with an imagecodecs numcodecs
codec (diffusion_policy: `imagecodecs_jpeg2k`; UMI: `imagecodecs_jpegxl`), low-dim float32 keys such as
`robot<i>_eef_pos`, `robot<i>_eef_rot_axis_angle`, `robot<i>_gripper_width`, `action`, `timestamp`. UMI
ships them as a `.zarr.zip` (a zarr ZipStore, entries stored uncompressed).

Both directions keep values exactly: dtypes are kept, frames are decoded and re-encoded losslessly (JPEG
XL), so decoded pixels equal the source's. A Mimic store is itself this layout plus `<key>_t` arrays and
root attrs; export drops the `_t` arrays and writes the frames in one-frame chunks with config keys the
older imagecodecs classes diffusion_policy/UMI register accept (`mimic.data.codecs.PortableJpegxl`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from mimic.data.codecs import image_codec
from mimic.data.dataset import DatasetError, ReplayDataset, check_layout, open_group
from mimic.data.writer import DatasetWriter, StreamSpec

BATCH_ROWS = 256  # rows per write: episodes are copied in batches of about this many (frames held decoded)


def is_zip(path: str | Path) -> bool:
    return str(path).lower().endswith(".zip")


@contextlib.contextmanager
def open_source(src: str | Path) -> Iterator[zarr.Group]:
    """The root group of a directory store, URL or `.zarr.zip`; a one-line DatasetError names the file."""
    if not is_zip(src):
        yield open_group(src, "r")
        return
    if not Path(src).is_file():
        raise DatasetError(f"{src}: no such file")
    try:
        store = zarr.storage.ZipStore(str(src), mode="r")
        root = zarr.open_group(store, mode="r")
    except Exception as exc:  # a bad zip or missing metadata raises several types
        raise DatasetError(f"{src}: not a readable zarr zip store ({type(exc).__name__}: {exc})") from None
    try:
        yield root
    finally:
        store.close()


def _is_image(arr: zarr.Array) -> bool:
    return arr.ndim == 4 and arr.shape[-1] == 3 and arr.dtype == np.uint8


def _episode_batches(ends: np.ndarray) -> Iterator[list[tuple[int, int]]]:
    """(start, end) row ranges of consecutive episodes, grouped into batches of about BATCH_ROWS rows."""
    batch, rows, s0 = [], 0, 0
    for e in ends:
        batch.append((s0, int(e)))
        rows += int(e) - s0
        s0 = int(e)
        if rows >= BATCH_ROWS:
            yield batch
            batch, rows = [], 0
    if batch:
        yield batch


def import_dp(
    src: str, out: str, fps: float | None = None, robot: str = "", tolerance_s: float | None = None
) -> int:
    """Import a diffusion_policy / UMI store (directory, URL or `.zarr.zip`); returns episodes written.

    Every `data/<key>` becomes a stream with the source's dtype and shape; rows are already on a grid, so
    `<key>_t` equals the grid time (`data/timestamp` when the store has one, else row / fps counted from
    each episode start). fps defaults to the store's root attr `fps` (a Mimic export has it), else 10.
    """
    with open_source(src) as root:
        ends = check_layout(root, src)
        if ends.size == 0:
            raise DatasetError(f"{src}: key 'meta/episode_ends' is empty (no episodes)")
        arrays = dict(root["data"].arrays())
        keys = sorted(k for k in arrays if k != "timestamp" and not k.endswith("_t"))
        if not keys:
            raise DatasetError(f"{src}: group 'data' has no arrays")
        fps = float(fps if fps is not None else root.attrs.get("fps", 10.0))
        tol = tolerance_s if tolerance_s is not None else 0.5 / fps
        streams = {}
        for k in keys:
            a = arrays[k]
            if a.ndim == 0:
                raise DatasetError(f"{src}: key 'data/{k}' is a scalar, expected one row per step")
            kind = "image" if _is_image(a) else "lowdim"
            streams[k] = StreamSpec(tuple(a.shape[1:]), str(a.dtype), kind, tol)
        joint_names = (
            [f"joint{i}" for i in range(arrays["robot0_joint_pos"].shape[1])]
            if ("robot0_joint_pos" in arrays and arrays["robot0_joint_pos"].ndim == 2)
            else []
        )
        carried = {
            k: root.attrs[k]
            for k in ("latencies", "calibration_ids", "cameras", "gripper_max")
            if k in root.attrs
        }
        attrs = {
            **carried,
            "robot": robot or str(root.attrs.get("robot", "")),
            "joint_names": list(root.attrs.get("joint_names") or joint_names),
            "task": str(root.attrs.get("task") or f"imported from {src}"),
        }
        w = DatasetWriter.create(out, fps, streams, attrs, image_quality=None)
        try:
            with tqdm(total=int(ends.size), desc="import", disable=ends.size < 20) as bar:
                for batch in _episode_batches(ends):
                    episodes = [_read_episode(arrays, keys, s0, s1, src, fps) for s0, s1 in batch]
                    w.write_episodes(episodes)
                    bar.update(len(batch))
        finally:
            w.close()
    return int(ends.size)


def _read_episode(
    arrays: dict[str, zarr.Array], keys: list[str], s0: int, s1: int, src: str, fps: float
) -> dict[str, np.ndarray]:
    rows = {}
    for k in [*keys, "timestamp"] if "timestamp" in arrays else keys:
        try:
            rows[k] = np.asarray(arrays[k][s0:s1])
        except Exception as exc:  # an undecodable chunk (unknown codec id, corrupt data)
            raise DatasetError(f"{src}: key 'data/{k}' rows {s0}..{s1} unreadable ({exc})") from None
    ts = rows["timestamp"].astype(np.float64) if "timestamp" in rows else np.arange(s1 - s0) / fps
    rows.update({f"{k}_t": ts for k in keys})
    rows["timestamp"] = ts
    return rows


def export_dp(store: str, out: str) -> int:
    """Write a Mimic store as a diffusion_policy / UMI ReplayBuffer (`out` a directory or `.zarr.zip`).

    Every data key but the `<key>_t` alignment times, with the same names and dtypes; frames one per
    chunk, lossless JPEG XL; root attrs carried (ReplayBuffer ignores them, `import-dp` reads fps back).
    Returns episodes written.
    """
    ds = ReplayDataset(store)
    keys = [k for k in ds.keys if not k.endswith("_t")]
    if not keys or ds.n_episodes == 0:
        raise DatasetError(f"{store}: nothing to export ({ds.n_episodes} episodes, keys {ds.keys})")
    if not is_zip(out):
        _write_dp(ds, keys, out)
        return ds.n_episodes
    staging = tempfile.mkdtemp(prefix=".export-dp-", dir=str(Path(out).resolve().parent))
    try:
        _write_dp(ds, keys, os.path.join(staging, "root.zarr"))
        _zip_dir(os.path.join(staging, "root.zarr"), out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ds.n_episodes


def _write_dp(ds: ReplayDataset, keys: list[str], out: str) -> None:
    root = zarr.open_group(out, mode="w-", zarr_format=2)
    root.attrs.update({**ds.attrs, "exported_from": ds.path})
    data = root.create_group("data")
    n = ds.n_steps
    for k in keys:
        src = ds.array(k)
        shape = (n, *src.shape[1:])
        if _is_image(src):
            dst = data.create_array(
                k, shape=shape, chunks=(1, *src.shape[1:]), dtype="uint8", compressors=image_codec(None)
            )
        else:  # one chunk per ~1M values: the default chunking of their ReplayBuffer for low-dim keys
            rows = max(1, min(n, (1 << 20) // max(1, int(np.prod(src.shape[1:])))))
            dst = data.create_array(k, shape=shape, chunks=(rows, *src.shape[1:]), dtype=src.dtype)
        for batch in _episode_batches(ds.episode_ends):
            s0, s1 = batch[0][0], batch[-1][1]
            dst[s0:s1] = np.asarray(src[s0:s1])
    root.create_group("meta").create_array("episode_ends", data=ds.episode_ends.astype(np.int64))


def _zip_dir(folder: str, out: str) -> None:
    """Zip a directory store the way zarr's ZipStore lays one out: entries relative to the root, stored."""
    with zipfile.ZipFile(out, "x", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for dirpath, _, files in sorted(os.walk(folder)):
            for name in sorted(files):
                full = os.path.join(dirpath, name)
                zf.write(full, os.path.relpath(full, folder).replace(os.sep, "/"))


class ReplayBufferWriter:
    """Build a new diffusion_policy / UMI ReplayBuffer episode by episode, as UMI's pipeline writes one
    (scripts_slam_pipeline/07_generate_replay_buffer.py: zarr format 2, low-dim keys as given, cameras one
    frame per chunk, `meta/episode_ends`, a stored `.zarr.zip` for a zip name).

    Episodes are appended to arrays that grow on disk, so memory holds one episode at a time; frames are
    lossless JPEG XL with the portable config keys (what `export_dp` writes). The store is built in a hidden
    sibling and appears at `out` only on `close()`, whole; `abort()` (or an exception inside `with`) leaves
    nothing. The first episode fixes the keys, per-row shapes and dtypes; a later episode that differs is a
    DatasetError naming the key.
    """

    def __init__(self, out: str | Path, attrs: dict | None = None) -> None:
        self.out = Path(out)
        if self.out.exists():
            raise DatasetError(f"{out}: already exists")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._staging = tempfile.mkdtemp(prefix=".replay-buffer-", dir=str(self.out.resolve().parent))
        self._root_path = os.path.join(self._staging, "root.zarr")
        self.root = zarr.open_group(self._root_path, mode="w-", zarr_format=2)
        self.root.attrs.update(attrs or {})
        self._data = self.root.create_group("data")
        self._ends: list[int] = []
        self._spec: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._done = False

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    def add_episode(self, episode: dict[str, np.ndarray]) -> None:
        """Append one episode: every key an array of the same number of rows."""
        rows = {k: np.asarray(v) for k, v in episode.items()}
        lengths = {len(v) for v in rows.values()}
        if len(lengths) != 1 or not rows:
            raise DatasetError(f"{self.out}: episode keys have different row counts {sorted(lengths)}")
        n = lengths.pop()
        if not self._spec:
            for k, v in rows.items():
                self._create(k, v)
        if set(rows) != set(self._spec):
            raise DatasetError(f"{self.out}: episode keys {sorted(rows)} differ from {sorted(self._spec)}")
        s0 = self._ends[-1] if self._ends else 0
        for k, v in rows.items():
            shape, dtype = self._spec[k]
            if v.shape[1:] != shape or v.dtype != dtype:
                raise DatasetError(
                    f"{self.out}: key 'data/{k}' is {v.dtype} {v.shape[1:]}, the store has {dtype} {shape}"
                )
            arr = self._data[k]
            arr.resize((s0 + n, *shape))
            arr[s0 : s0 + n] = v
        self._ends.append(s0 + n)

    def _create(self, key: str, v: np.ndarray) -> None:
        if v.ndim == 0:
            raise DatasetError(f"{self.out}: key 'data/{key}' is a scalar, expected one row per step")
        shape = tuple(v.shape[1:])
        if v.ndim == 4 and shape[-1] == 3 and v.dtype == np.uint8:
            self._data.create_array(
                key, shape=(0, *shape), chunks=(1, *shape), dtype="uint8", compressors=image_codec(None)
            )
        else:
            rows = max(1, (1 << 20) // max(1, int(np.prod(shape))))
            self._data.create_array(key, shape=(0, *shape), chunks=(rows, *shape), dtype=v.dtype)
        self._spec[key] = (shape, v.dtype)

    def close(self) -> int:
        """Write `meta/episode_ends` and move the store into place; returns episodes written."""
        if not self._ends:
            self.abort()
            raise DatasetError(f"{self.out}: no episodes to write")
        self._done = True
        try:
            self.root.create_group("meta").create_array("episode_ends", data=np.asarray(self._ends, np.int64))
            if is_zip(self.out):
                _zip_dir(self._root_path, str(self.out))
            else:
                os.rename(self._root_path, self.out)
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
        return len(self._ends)

    def abort(self) -> None:
        self._done = True
        shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> ReplayBufferWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.close()
