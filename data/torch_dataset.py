"""Training windows as torch tensors: obs history + action horizon, split by episode.

Decoding JPEG per sample is the bottleneck when training, so `cache_dir` decodes every committed
row once into a raw .npy memmap per key (keyed by store path and committed length) and samples from
there; without it, windows are read straight from zarr.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mimic.data.dataset import DatasetError, ReplayDataset
from mimic.data.normalizer import Normalizer
from mimic.data.sampler import SequenceSampler


def is_image_key(arr_shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return len(arr_shape) == 4 and arr_shape[-1] == 3 and dtype == np.uint8


def split_episodes(n_episodes: int, val_ratio: float, seed: int) -> np.ndarray:
    """Boolean mask of validation episodes; at least one train episode always remains."""
    mask = np.zeros(n_episodes, bool)
    n_val = min(int(round(n_episodes * val_ratio)), n_episodes - 1)
    if val_ratio > 0 and n_episodes > 1:
        n_val = max(n_val, 1)
    if n_val > 0:
        mask[np.random.default_rng(seed).choice(n_episodes, n_val, replace=False)] = True
    return mask


class WindowDataset(Dataset):
    """Items {"obs": {key: [n_obs, ...]}, "action": [horizon, A]}, float32, images [n_obs,3,H,W] in 0..1."""

    def __init__(
        self,
        path: str | Path,
        obs_keys: list[str] | tuple[str, ...],
        action_key: str = "action",
        n_obs_steps: int = 2,
        horizon: int = 16,
        split: str = "train",
        val_ratio: float = 0.1,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        n_action_steps: int | None = None,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"WindowDataset: split must be 'train' or 'val', got {split!r}")
        if not 1 <= n_obs_steps <= horizon:
            raise ValueError(f"WindowDataset: need 1 <= n_obs_steps ({n_obs_steps}) <= horizon ({horizon})")
        self.replay = ReplayDataset(path)
        self.path = str(path)
        self.obs_keys = list(obs_keys)
        self.action_key = action_key
        self.n_obs_steps = n_obs_steps
        self.horizon = horizon
        self.n_action_steps = n_action_steps if n_action_steps is not None else horizon - n_obs_steps + 1
        for key in [*self.obs_keys, action_key]:
            self.replay.array(key)  # raises DatasetError naming the missing key
        self.image_keys = {
            k for k in self.obs_keys if is_image_key(self.replay.array(k).shape, self.replay.array(k).dtype)
        }
        val_mask = split_episodes(self.replay.n_episodes, val_ratio, seed)
        self.train_mask = ~val_mask
        self.episode_mask = val_mask if split == "val" else self.train_mask
        self._arrays: dict[str, np.ndarray] | None = None
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self._cache_dir is not None:
            self._build_cache()
        self.sampler = SequenceSampler(
            self.replay.episode_ends,
            horizon,
            pad_before=n_obs_steps - 1,
            pad_after=self.n_action_steps - 1,
            keys=[*self.obs_keys, action_key],
            get=self._get,
            episode_mask=self.episode_mask,
            key_first_k={k: n_obs_steps for k in self.obs_keys},
        )

    # ---- storage -------------------------------------------------------------------------------
    def _cache_path(self) -> Path:
        assert self._cache_dir is not None
        tag = json.dumps(
            [str(Path(self.path).resolve()), self.replay.n_steps, self.replay.episode_ends[-1:].tolist()]
        )
        return self._cache_dir / hashlib.sha1(tag.encode()).hexdigest()[:16]

    def _build_cache(self) -> None:
        """Decode each key once into <cache>/<key>.npy; reused across runs and workers."""
        root = self._cache_path()
        root.mkdir(parents=True, exist_ok=True)
        n = self.replay.n_steps
        for key in [*self.obs_keys, self.action_key]:
            target = root / f"{key}.npy"
            if target.exists():
                continue
            src = self.replay.array(key)
            tmp = root / f"{key}.npy.tmp"
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=src.dtype, shape=(n, *src.shape[1:]))
            step = max(1, 256 if key in self.image_keys else 100_000)
            for s in tqdm(range(0, n, step), desc=f"cache {key}", leave=False, disable=n <= step):
                mm[s : s + step] = src[s : min(s + step, n)]
            mm.flush()
            del mm
            tmp.rename(target)  # atomic: a half-written cache is never picked up

    def _get(self, key: str, start: int, stop: int) -> np.ndarray:
        if self._cache_dir is not None:
            if self._arrays is None:  # opened lazily so DataLoader workers each map their own view
                root = self._cache_path()
                self._arrays = {
                    k: np.load(root / f"{k}.npy", mmap_mode="r") for k in [*self.obs_keys, self.action_key]
                }
            return np.asarray(self._arrays[key][start:stop])
        return np.asarray(self.replay.array(key)[start:stop])

    # ---- Dataset API ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, idx: int) -> dict:
        seq = self.sampler.sample_sequence(idx)
        obs = {}
        for key in self.obs_keys:
            x = seq[key][: self.n_obs_steps]
            if key in self.image_keys:
                obs[key] = torch.from_numpy(np.moveaxis(x, -1, 1).astype(np.float32) / 255.0)
            else:
                obs[key] = torch.from_numpy(x.astype(np.float32))
        return {"obs": obs, "action": torch.from_numpy(seq[self.action_key].astype(np.float32))}

    def get_normalizer(self, modes: dict[str, str]) -> Normalizer:
        """Fit on the training split's rows (whatever split this instance is), images identity only."""
        train_mask = self.train_mask
        arrays: dict[str, np.ndarray] = {}
        for key, mode in modes.items():
            if key in self.image_keys:
                if mode != "identity":
                    raise DatasetError(f"{self.path}: image key 'data/{key}' only supports mode 'identity'")
                arrays[key] = np.zeros((1, 1), np.float32)
                continue
            rows = [self.replay.episode(i, [key])[key] for i in np.flatnonzero(train_mask)]
            arrays[key] = np.concatenate(rows).astype(np.float64)
        return Normalizer().fit(arrays, modes)
