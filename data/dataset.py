"""Read-only view of a Mimic dataset store: committed episodes only.

`meta/episode_ends` is the commit point, so every reader slices `data/*` to its last value and
ignores any uncommitted tail a crashed writer left behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

import mimic.data.codecs  # noqa: F401  (registers the JPEG codec before any array is opened)
from mimic.data.storage import StorageError, locate

SCHEMA_VERSION = 1


class DatasetError(ValueError):
    """A store that is missing, foreign, truncated or violates the schema; message names path and key."""


def open_group(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a store (v2 or v3), a local path or an fsspec URL (mimic.data.storage), or raise a one-line
    DatasetError naming the path."""
    try:
        loc = locate(path)
    except StorageError as exc:
        raise DatasetError(str(exc)) from None
    if loc.protocol != "file" and mode == "r" and not loc.exists():
        raise DatasetError(f"{path}: no store at this URL")
    try:
        target = loc.path if loc.local else loc.zarr_store(read_only=mode == "r")
        grp = zarr.open_group(target, mode=mode)  # type: ignore[arg-type]
    except Exception as exc:  # zarr raises several types for missing/corrupt metadata
        raise DatasetError(f"{path}: not a readable zarr group ({type(exc).__name__}: {exc})") from None
    return grp


def committed_prefix(ends: np.ndarray) -> np.ndarray:
    """Drop one trailing 0: the slot a writer before atomic commits resized for and was killed before filling.

    That slot was never a commit, so ignoring it loses nothing; any other zero is a broken store.
    """
    if ends.ndim == 1 and ends.size and ends[-1] == 0:
        return ends[:-1]
    return ends


def ends_problem(ends: np.ndarray) -> str | None:
    """Why `ends` (after committed_prefix) is not a valid commit, or None: strictly increasing positive ints."""
    if ends.ndim != 1:
        return f"has {ends.ndim} dimensions, expected 1"
    if not ends.size:
        return None
    if ends[0] <= 0:
        return f"entry 0 is {int(ends[0])}, expected > 0"
    bad = np.flatnonzero(np.diff(ends) <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        return f"entry {i} is {int(ends[i])} after {int(ends[i - 1])}, expected strictly increasing"
    return None


def check_layout(grp: zarr.Group, path: str | Path) -> np.ndarray:
    """Validate the data/ + meta/episode_ends layout; return the committed episode_ends (int64).

    Why strict: a reader that guessed past a broken commit would hand out rows no writer committed, and a
    writer that "repaired" it would truncate committed episodes; both refuse instead.
    """
    for name in ("data", "meta"):
        if name not in grp:
            raise DatasetError(f"{path}: missing group {name!r} (not a Mimic/diffusion_policy store)")
    meta = grp["meta"]
    if "episode_ends" not in meta:
        raise DatasetError(f"{path}: missing key 'meta/episode_ends'")
    try:
        ends = np.asarray(meta["episode_ends"][:], dtype=np.int64)
    except Exception as exc:
        raise DatasetError(f"{path}: key 'meta/episode_ends' unreadable ({exc})") from None
    ends = committed_prefix(ends)
    why = ends_problem(ends)
    if why is not None:
        raise DatasetError(f"{path}: key 'meta/episode_ends' is not a valid commit: {why}")
    n = int(ends[-1]) if ends.size else 0
    for key, arr in grp["data"].arrays():
        if arr.shape[0] < n:
            raise DatasetError(
                f"{path}: key 'data/{key}' has {arr.shape[0]} rows < committed {n} (truncated)"
            )
    return ends


class ReplayDataset:
    """Committed episodes of a store; arrays are read lazily per episode."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.root = open_group(path, "r")
        self.episode_ends = check_layout(self.root, path)
        self._data = self.root["data"]
        # A store's streams are fixed when it is created: list them once (each listing reads the directory).
        self._arrays: dict[str, zarr.Array] = dict(self._data.arrays())
        self._keys = sorted(self._arrays)

    @property
    def n_episodes(self) -> int:
        return int(self.episode_ends.size)

    @property
    def n_steps(self) -> int:
        return int(self.episode_ends[-1]) if self.episode_ends.size else 0

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    def array(self, key: str) -> zarr.Array:
        if key not in self._arrays:
            raise DatasetError(f"{self.path}: missing key 'data/{key}' (have {self._keys})")
        return self._arrays[key]

    def episode_slice(self, i: int) -> slice:
        if not 0 <= i < self.n_episodes:
            raise IndexError(f"{self.path}: episode {i} out of range 0..{self.n_episodes - 1}")
        start = int(self.episode_ends[i - 1]) if i > 0 else 0
        return slice(start, int(self.episode_ends[i]))

    def episode(self, i: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Episode `i`'s rows of `keys` (default all). A chunk that does not decode is a DatasetError naming the
        store and episode: the codec's own error names neither, and merges and replays read many of them."""
        sl = self.episode_slice(i)
        try:
            return {k: np.asarray(self.array(k)[sl]) for k in (keys or self.keys)}
        except DatasetError:
            raise
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else ""
            raise DatasetError(f"{self.path}: episode {i} unreadable ({type(exc).__name__}: {why})") from None

    def read(self, key: str) -> np.ndarray:
        """All committed rows of one key."""
        return np.asarray(self.array(key)[: self.n_steps])
