"""Training batches gathered in RAM from a Mimic store, with mimic.data.torch_dataset.WindowDataset's windows.

WindowDataset owns the episode split, the diffusion_policy edge padding (its SequenceSampler indices)
and the normaliser fit; this module only turns those window indices into row indices once and gathers
whole batches with numpy fancy indexing, which is ~100x faster than one __getitem__ per sample and
is what keeps a CPU training step bound by the network rather than by Python.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mimic.data.normalizer import Normalizer
from mimic.data.torch_dataset import WindowDataset


class WindowBatches:
    """All windows of one split: `batch(ids)` -> {"obs": {key: [B, T, ...]}, "action": [B, H, A]} tensors."""

    def __init__(self, windows: WindowDataset, progress: bool = False) -> None:
        self.windows = windows
        self.obs_keys = list(windows.obs_keys)
        self.image_keys = set(windows.image_keys)
        self.n_obs_steps, self.horizon = windows.n_obs_steps, windows.horizon
        keys = [*self.obs_keys, windows.action_key]
        self.arrays: dict[str, np.ndarray] = {}
        for k in tqdm(keys, desc=f"load {Path(windows.path).name}", disable=not progress, leave=False):
            arr = windows.replay.read(k)
            self.arrays[k] = arr if k in self.image_keys else arr.astype(np.float32)
        idx = windows.sampler.indices  # (buffer_start, buffer_end, sample_start, sample_end) per window
        j = np.arange(self.horizon)
        b0, b1, s0 = idx[:, :1], idx[:, 1:2], idx[:, 2:3]
        # window position j reads buffer row b0 + (j - s0), clamped: rows before/after repeat the edge row
        self.rows = b0 + np.clip(j[None] - s0, 0, b1 - b0 - 1)

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, ids: np.ndarray, device: str | torch.device = "cpu") -> dict:
        rows = self.rows[ids]
        obs = {}
        for k in self.obs_keys:
            x = self.arrays[k][rows[:, : self.n_obs_steps]]
            t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
            obs[k] = t.permute(0, 1, 4, 2, 3).float().div_(255.0) if k in self.image_keys else t
        action = torch.from_numpy(self.arrays[self.windows.action_key][rows]).to(device)
        return {"obs": obs, "action": action}


MIN_LOWDIM_RANGE = 0.02  # dataset units: the narrowest range widen_small_ranges lets a key keep
# Rotation features (rot6d components, unitless in [-1, 1]) of end-effector policies: handheld demos hold the tool
# exactly down, so their tilt components barely move, while an arm's TCP tilts by a degree or two under IK
# (accepted within 0.05 rad) and tracking. With the positions' 0.02, a 1-degree tilt (0.017) normalises to 1.7,
# outside the [-1, 1] the demos fill; with 0.2 it normalises to 0.17.
MIN_ROTATION_RANGE = 0.2


def widen_small_ranges(normalizer: Normalizer, keys: list[str], min_range: float) -> Normalizer:
    """Cap the gain of min-max keys whose training range is below `min_range` (dataset units).

    A dimension that barely moves in the demos (a resting cube's quaternion x/y, ~1e-4) would otherwise
    get a gain of ~1e4 and turn sim noise at test time into out-of-distribution inputs.
    """
    state = normalizer.state_dict()
    for k in keys:
        s, o = state[f"{k}.scale"].double(), state[f"{k}.offset"].double()
        lo, hi = (-1 - o) / s, (1 - o) / s
        small = (hi - lo) < min_range
        if bool(small.any()):
            mid = (lo + hi) / 2
            new_s = torch.where(small, torch.full_like(s, 2.0 / min_range), s)
            state[f"{k}.scale"] = new_s.float()
            state[f"{k}.offset"] = torch.where(small, -mid * new_s, o).float()
    return Normalizer().load_state_dict(state)


def relative_action_normalizer(normalizer: Normalizer, batches: WindowBatches, key: str) -> Normalizer:
    """Refit the "action" stats on actions relative to `key` at each window's newest observation step.

    Matches Policy.action_reference: the first dims(key) action dims minus the reference, the rest as is.
    """
    rows = getattr(batches, "all_rows", batches.rows)  # every window, not one rank's share: ranks must agree
    action = batches.arrays[batches.windows.action_key][rows]  # [N, H, A]
    ref = batches.arrays[key][rows[:, batches.n_obs_steps - 1]].reshape(len(rows), -1)
    rel = action.astype(np.float64)
    rel[..., : ref.shape[1]] -= ref[:, None, :]
    return refit_action_normalizer(normalizer, rel)


def refit_action_normalizer(normalizer: Normalizer, actions: np.ndarray) -> Normalizer:
    """`normalizer` with its "action" min-max stats fitted anew on `actions` [..., A] (the actions the policy
    actually predicts, when they are not the store's raw rows)."""
    a = np.asarray(actions, np.float64)
    fitted = Normalizer().fit({"action": a.reshape(-1, a.shape[-1])}, {"action": "minmax"}).state_dict()
    state = normalizer.state_dict()
    state.update(fitted)
    return Normalizer().load_state_dict(state)
