"""Training batches read from the store on demand, with bounded memory: WindowBatches for stores past RAM.

mimic.policies.data.WindowBatches loads every key of the store into RAM, which is what makes small local
training fast and what stops a 200 GB image store (or an s3:// one) from training at all. StreamingBatches
keeps the same API (`batch(ids, device)`, `__len__`, `rows`, `arrays`) so the training loop only switches:

- lowdim keys (joints, actions: a few floats a row, well under 1% of an image store) stay in RAM, so the
  normaliser fit, relative actions and the tcp_position conversion work exactly as in RAM;
- image keys are read per batch, only the chunks its windows touch, fetched in concurrent zarr selections
  of bounded size and kept decoded in an LRU bounded by `cache_mb` (ChunkLRU), optionally also in a local
  on-disk cache of decoded chunks (`cache_dir`), so later epochs neither re-download nor re-decode;
- under torchrun, `shard=(rank, world)` keeps only the windows of the rank's episodes (rank r: the split's
  episodes r, r + world, ...), so each rank reads a disjoint share of the store's frames.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import zarr

from mimic.data.storage import url_key
from mimic.data.torch_dataset import WindowDataset


class ChunkLRU:
    """Decoded chunks by (key, chunk index); the least recently used go once `budget_bytes` is exceeded."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = int(budget_bytes)
        self.nbytes = 0
        self._items: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple[str, int]) -> np.ndarray | None:
        v = self._items.get(key)
        if v is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return v

    def put(self, key: tuple[str, int], value: np.ndarray) -> None:
        if key in self._items:
            return
        if value.nbytes > self.budget:  # would evict everything else and still not fit: not kept
            return
        self._items[key] = value
        self.nbytes += value.nbytes
        while self.nbytes > self.budget:
            _, old = self._items.popitem(last=False)
            self.nbytes -= old.nbytes


class DiskChunks:
    """Decoded chunks as <root>/<key>/<chunk>.npy: written once (temporary file + rename), read on a miss."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, key: str, chunk: int) -> Path:
        return self.root / key / f"{chunk}.npy"

    def get(self, key: str, chunk: int) -> np.ndarray | None:
        f = self._file(key, chunk)
        try:
            return np.load(f)
        except (OSError, ValueError):
            return None

    def put(self, key: str, chunk: int, value: np.ndarray) -> None:
        f = self._file(key, chunk)
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, value)
        tmp.replace(f)


def window_rows(windows: WindowDataset) -> np.ndarray:
    """[N, horizon] store rows of every window (edge rows repeated as diffusion_policy pads)."""
    idx = windows.sampler.indices  # (buffer_start, buffer_end, sample_start, sample_end) per window
    j = np.arange(windows.horizon)
    b0, b1, s0 = idx[:, :1], idx[:, 1:2], idx[:, 2:3]
    return b0 + np.clip(j[None] - s0, 0, b1 - b0 - 1)


def shard_episodes(windows: WindowDataset, rank: int, world: int) -> np.ndarray:
    """The split's episode indices rank `rank` of `world` reads: every world-th one, starting at rank."""
    return np.flatnonzero(windows.episode_mask)[rank::world]


class StreamingBatches:
    """`batch(ids)` -> {"obs": {key: [B, T, ...]}, "action": [B, H, A]}, image frames read on demand."""

    def __init__(
        self,
        windows: WindowDataset,
        cache_mb: int = 512,
        cache_dir: str | Path | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.windows = windows
        self.obs_keys = list(windows.obs_keys)
        self.image_keys = set(windows.image_keys)
        self.n_obs_steps, self.horizon = windows.n_obs_steps, windows.horizon
        replay = windows.replay
        self.arrays: dict[str, np.ndarray] = {
            k: replay.read(k).astype(np.float32)
            for k in [*self.obs_keys, windows.action_key]
            if k not in self.image_keys
        }
        # Every window of the split: statistics that must agree across ranks (relative-action normaliser) use these.
        self.all_rows = window_rows(windows)
        rank, world = shard
        self.episodes = shard_episodes(windows, rank, world)
        window_episode = np.searchsorted(replay.episode_ends, windows.sampler.indices[:, 0], side="right")
        self.rows = self.all_rows[np.isin(window_episode, self.episodes)]
        if not len(self.rows):
            raise ValueError(
                f"{windows.path}: rank {rank} of {world} has no episodes to read "
                f"(the split has {int(windows.episode_mask.sum())}); use fewer processes"
            )
        self._images: dict[str, zarr.Array] = {k: replay.array(k) for k in self.image_keys}
        self.lru = ChunkLRU(cache_mb * 2**20)
        tag = url_key(str(windows.path), str(replay.n_steps), str(replay.episode_ends[-1:].tolist()))
        self.disk = DiskChunks(Path(cache_dir) / tag) if cache_dir else None
        self.chunks_fetched = 0  # chunks read from the store (neither LRU nor disk had them)

    def __len__(self) -> int:
        return len(self.rows)

    def frames(self, key: str, rows: np.ndarray) -> np.ndarray:
        """Decoded rows of image key `key` at `rows` (any shape), through the LRU, the disk cache, the store.

        Chunks may hold many frames (a JPEG XL chunk decodes whole), so the missing ones are fetched in groups
        of at most half the cache budget (at least one chunk) and only the needed frames are copied out: what
        a batch holds at once is the LRU plus one group, whatever the store's size or chunking."""
        arr = self._images[key]
        cs = int(arr.chunks[0])
        flat = rows.reshape(-1)
        chunk_of = flat // cs
        out = np.empty((len(flat), *arr.shape[1:]), arr.dtype)

        def take(c: int, block: np.ndarray) -> None:
            hit = chunk_of == c
            out[hit] = block[flat[hit] - c * cs]

        missing = []
        for c in np.unique(chunk_of).tolist():
            block = self.lru.get((key, c))
            if block is None and self.disk is not None:
                block = self.disk.get(key, c)
                if block is not None:
                    self.lru.put((key, c), block)
            if block is None:
                missing.append(c)
            else:
                take(c, block)
        chunk_bytes = cs * int(np.prod(arr.shape[1:])) * arr.dtype.itemsize
        per_group = max(1, self.lru.budget // 2 // max(1, chunk_bytes))
        n = arr.shape[0]
        for g in range(0, len(missing), per_group):
            group = missing[g : g + per_group]
            spans = [(c * cs, min((c + 1) * cs, n)) for c in group]
            sel = np.concatenate([np.arange(a, b) for a, b in spans])
            data = np.asarray(
                arr.get_orthogonal_selection((sel,))
            )  # one call: the group's chunks concurrently
            self.chunks_fetched += len(group)
            off = 0
            for c, (a, b) in zip(group, spans, strict=True):
                block = data[off : off + (b - a)]
                off += b - a
                take(c, block)
                if self.disk is not None:
                    self.disk.put(key, c, block)
                self.lru.put((key, c), block.copy() if len(group) > 1 else block)
            del data
        return out.reshape(*rows.shape, *arr.shape[1:])

    def batch(self, ids: np.ndarray, device: str | torch.device = "cpu") -> dict:
        rows = self.rows[ids]
        obs = {}
        for k in self.obs_keys:
            r = rows[:, : self.n_obs_steps]
            if k in self.image_keys:
                t = torch.from_numpy(np.ascontiguousarray(self.frames(k, r))).to(device)
                obs[k] = t.permute(0, 1, 4, 2, 3).float().div_(255.0)
            else:
                obs[k] = torch.from_numpy(np.ascontiguousarray(self.arrays[k][r])).to(device)
        action = torch.from_numpy(self.arrays[self.windows.action_key][rows]).to(device)
        return {"obs": obs, "action": action}
