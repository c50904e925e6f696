"""Per-key affine normalisation (x * scale + offset) fitted on training data.

One affine form for every mode keeps the checkpoint format trivial: a flat dict of
"<key>.scale" / "<key>.offset" tensors that a policy saves next to its weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

MODES = ("minmax", "meanstd", "identity")
_EPS = 1e-6


class Normalizer:
    """Maps each key's last dimension (or whole trailing shape) to a normalised range."""

    def __init__(self) -> None:
        self._scale: dict[str, np.ndarray] = {}
        self._offset: dict[str, np.ndarray] = {}

    @property
    def keys(self) -> list[str]:
        return list(self._scale)

    def fit(self, arrays: dict[str, np.ndarray], modes: dict[str, str]) -> Normalizer:
        """Fit stats per key over axis 0 (rows). Modes: minmax -> [-1, 1], meanstd, identity."""
        for key, mode in modes.items():
            if mode not in MODES:
                raise ValueError(f"normalizer: key {key!r} has unknown mode {mode!r} (use one of {MODES})")
            if key not in arrays:
                raise KeyError(f"normalizer: no data for key {key!r}")
            x = np.asarray(arrays[key], dtype=np.float64)
            x = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)
            if mode == "identity":
                scale = np.ones(x.shape[1])
                offset = np.zeros(x.shape[1])
            elif mode == "minmax":
                lo, hi = x.min(axis=0), x.max(axis=0)
                rng = hi - lo
                # A constant dimension maps to 0 instead of dividing by zero.
                flat = rng < _EPS
                scale = np.where(flat, 1.0, 2.0 / np.where(flat, 1.0, rng))
                offset = np.where(flat, -lo, -1.0 - lo * scale)
            else:
                mean, std = x.mean(axis=0), x.std(axis=0)
                scale = 1.0 / np.maximum(std, _EPS)
                offset = -mean * scale
            shape = np.asarray(arrays[key]).shape[1:] or (1,)
            self._scale[key] = scale.reshape(shape).astype(np.float32)
            self._offset[key] = offset.reshape(shape).astype(np.float32)
        return self

    def _params(self, key: str, x: Any) -> tuple[Any, Any]:
        if key not in self._scale:
            raise KeyError(f"normalizer: unknown key {key!r} (have {self.keys})")
        s, o = self._scale[key], self._offset[key]
        if s.shape == (1,) and getattr(x, "shape", (1,))[-1:] != (1,):
            s, o = s.reshape(()), o.reshape(())
        if isinstance(x, torch.Tensor):
            return (
                torch.as_tensor(s, dtype=x.dtype, device=x.device),
                torch.as_tensor(o, dtype=x.dtype, device=x.device),
            )
        return s, o

    def normalize(self, key: str, x: Any) -> Any:
        s, o = self._params(key, x)
        return x * s + o

    def unnormalize(self, key: str, x: Any) -> Any:
        s, o = self._params(key, x)
        return (x - o) / s

    def state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key in self._scale:
            out[f"{key}.scale"] = torch.from_numpy(self._scale[key].copy())
            out[f"{key}.offset"] = torch.from_numpy(self._offset[key].copy())
        return out

    def load_state_dict(self, d: dict[str, Any]) -> Normalizer:
        self._scale.clear()
        self._offset.clear()
        for name, value in d.items():
            key, _, part = name.rpartition(".")
            arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if part == "scale":
                self._scale[key] = arr.astype(np.float32)
            elif part == "offset":
                self._offset[key] = arr.astype(np.float32)
            else:
                raise KeyError(f"normalizer: unexpected state key {name!r}")
        missing = set(self._scale) ^ set(self._offset)
        if missing:
            raise KeyError(f"normalizer: scale/offset pair incomplete for {sorted(missing)}")
        return self
