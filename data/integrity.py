"""Deep store checks (`mimic dataset validate --deep`): every chunk decodes, floats are finite, time runs forward.

Why apart from the schema checks in `validate`: these read every byte of the store, images included, so
they are opt-in. They catch what the layout cannot show and what training would otherwise learn from or
crash on mid-run: a chunk a disk or copy damaged (a codec error), a NaN or inf in a float array, a
timestamp that goes backwards inside an episode. All problems are gathered, at most one per array, and
raised as one DatasetError line naming each array and the chunk or row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from mimic.data.dataset import DatasetError, ReplayDataset

MAX_BLOCK_BYTES = 64 << 20  # decoded bytes read at once; a failing block is re-read chunk by chunk


@dataclass
class DeepStats:
    """What the deep pass covered."""

    arrays: int = 0
    chunks: int = 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _blocks(arr: zarr.Array, n_rows: int) -> list[tuple[int, int]]:
    """Row ranges of whole axis-0 chunks, each about MAX_BLOCK_BYTES decoded."""
    c0 = int(arr.chunks[0])
    row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize
    per_block = max(c0, (MAX_BLOCK_BYTES // max(1, row_bytes)) // c0 * c0)
    return [(s, min(n_rows, s + per_block)) for s in range(0, n_rows, per_block)]


def _bad_chunk(arr: zarr.Array, name: str, start: int, stop: int) -> str:
    """Locate the first chunk in rows [start, stop) that does not decode; one problem line."""
    c0 = int(arr.chunks[0])
    for s in range(start, stop, c0):
        e = min(stop, s + c0)
        try:
            arr[s:e]
        except Exception as exc:  # noqa: BLE001 - any codec/store failure is the finding
            return f"key '{name}' chunk {s // c0} (rows {s}..{e - 1}) does not decode ({_first_line(exc)})"
    return f"key '{name}' rows {start}..{stop - 1} do not decode together"


def _scan(arr: zarr.Array, name: str, n_rows: int, ends: np.ndarray | None, stats: DeepStats) -> str | None:
    """Decode rows [0, n_rows) of one array; for committed data also require finite floats."""
    if arr.ndim == 0:
        try:
            arr[...]
        except Exception as exc:  # noqa: BLE001
            return f"key '{name}' does not decode ({_first_line(exc)})"
        stats.chunks += 1
        return None
    check_finite = ends is not None and arr.dtype.kind == "f"
    for start, stop in _blocks(arr, n_rows):
        try:
            block = np.asarray(arr[start:stop])
        except Exception:  # noqa: BLE001
            return _bad_chunk(arr, name, start, stop)
        stats.chunks += -(-(stop - start) // int(arr.chunks[0]))
        if check_finite:
            bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
            if bad.any():
                row = start + int(np.argmax(bad))
                ep = int(np.searchsorted(ends, row, side="right"))
                return f"key '{name}' row {row} (episode {ep}) holds a non-finite value (NaN or inf)"
    return None


def _time_problem(ds: ReplayDataset, key: str, strict: bool) -> str | None:
    """Per episode, `timestamp` must strictly increase and a `<key>_t` capture time must never decrease."""
    t = ds.read(key)
    d = np.diff(t)
    bad = d <= 0 if strict else d < 0
    bad[ds.episode_ends[:-1] - 1] = False  # a new episode may start at any time
    if not bad.any():
        return None
    row = int(np.argmax(bad)) + 1
    ep = int(np.searchsorted(ds.episode_ends, row, side="right"))
    return f"key 'data/{key}' goes backwards at row {row} (episode {ep}): {t[row - 1]!r} -> {t[row]!r}"


def deep_check(ds: ReplayDataset) -> DeepStats:
    """Decode every committed row of data/*, every other array whole; raise one DatasetError line on problems."""
    stats = DeepStats()
    problems: list[str] = []
    for path, node in ds.root.members(max_depth=None):
        if not isinstance(node, zarr.Array):
            continue
        stats.arrays += 1
        committed = path.startswith("data/")
        n_rows = ds.n_steps if committed else (node.shape[0] if node.ndim else 0)
        problem = _scan(node, path, n_rows, ds.episode_ends if committed else None, stats)
        if problem is None and committed and node.ndim == 1 and node.dtype.kind == "f":
            key = path.removeprefix("data/")
            if key == "timestamp" or key.endswith("_t"):
                problem = _time_problem(ds, key, strict=key == "timestamp")
        if problem is not None:
            problems.append(problem)
    if problems:
        raise DatasetError(f"{ds.path}: " + "; ".join(sorted(problems)))
    return stats
