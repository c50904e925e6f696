"""Fixed-length windows over episodes with diffusion_policy's edge padding.

A window may start up to `pad_before` steps before an episode and end up to `pad_after` steps after
it; the missing rows repeat the first/last row, so every real step can be the "current" observation
and every action chunk has full length, as in diffusion_policy's SequenceSampler.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def create_indices(
    episode_ends: np.ndarray,
    sequence_length: int,
    pad_before: int = 0,
    pad_after: int = 0,
    episode_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Rows of (buffer_start, buffer_end, sample_start, sample_end) like diffusion_policy."""
    if sequence_length < 1 or pad_before < 0 or pad_after < 0:
        raise ValueError("sampler: sequence_length >= 1 and pads >= 0 required")
    pad_before = min(pad_before, sequence_length - 1)
    pad_after = min(pad_after, sequence_length - 1)
    mask = np.ones(len(episode_ends), bool) if episode_mask is None else episode_mask
    rows: list[tuple[int, int, int, int]] = []
    for i, end in enumerate(episode_ends):
        if not mask[i]:
            continue
        start = int(episode_ends[i - 1]) if i > 0 else 0
        ep_len = int(end) - start
        for idx in range(-pad_before, ep_len - sequence_length + pad_after + 1):
            b0, b1 = max(idx, 0) + start, min(idx + sequence_length, ep_len) + start
            s0 = b0 - (idx + start)
            s1 = sequence_length - (idx + sequence_length + start - b1)
            rows.append((b0, b1, s0, s1))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


class SequenceSampler:
    """Windows of `sequence_length` rows from per-key readers `get(key, start, stop) -> ndarray`."""

    def __init__(
        self,
        episode_ends: np.ndarray,
        sequence_length: int,
        pad_before: int,
        pad_after: int,
        keys: list[str],
        get: Callable[[str, int, int], np.ndarray],
        episode_mask: np.ndarray | None = None,
        key_first_k: dict[str, int] | None = None,
    ) -> None:
        self.indices = create_indices(episode_ends, sequence_length, pad_before, pad_after, episode_mask)
        self.sequence_length = sequence_length
        self.keys = keys
        self._get = get
        # Only the first k rows of these keys are needed (observations); saves reading images.
        self.key_first_k = key_first_k or {}

    def __len__(self) -> int:
        return len(self.indices)

    def sample_sequence(self, idx: int) -> dict[str, np.ndarray]:
        b0, b1, s0, s1 = (int(v) for v in self.indices[idx])
        out: dict[str, np.ndarray] = {}
        for key in self.keys:
            k = self.key_first_k.get(key, self.sequence_length)
            # rows of the window [s0, s1) come from buffer [b0, b1); we only need window rows < k
            need_end = min(s1, max(k, s0 + 1))
            sample = self._get(key, b0, b0 + (need_end - s0))
            seq = np.empty((self.sequence_length,) + sample.shape[1:], dtype=sample.dtype)
            seq[s0:need_end] = sample
            seq[:s0] = sample[0]
            # After the episode end: repeat the last row. For first-k keys the rows past k are unused
            # by the caller and hold the same repeat instead of being read.
            seq[need_end:] = sample[-1]
            out[key] = seq
        return out
