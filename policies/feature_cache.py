"""Exact per-frame image-feature cache for inference.

The observation encoder maps every (step, camera) frame to its feature on its own ([B, T, ...] -> [B, T, F], no
mixing across steps), so a frame's feature is the same in every window that holds it. A deployed policy's
window slides by one step per control period: when a chunk is requested at step t, the frame of step t-1 has
been there a whole period. `FrameFeatureCache` keeps each frame's feature, keyed by the frame's content, so
a frame is encoded once and reused while it stays in the window; `Policy.prepare` encodes the newest frame
ahead of the next chunk request, so the request itself encodes only the frames of step t.

Exact and transparent by construction:
- the key is what the camera's encoder receives: camera key, shape, dtype and a hash of the bytes; a hit is
  confirmed by comparing the stored bytes with the frame's, so a hash collision is a miss, never a wrong feature;
- features are valid for one set of encoder weights: every call compares the encoder's modules (identity) and
  its parameters (identity, storage, in-place version counter: an optimiser step, an EMA update,
  load_state_dict) with those the entries were computed with, and drops every entry when they differ;
- a miss is encoded by the same module the uncached path calls, on the missing frames only: the same network at
  another batch size, equal to float rounding with fp32 trunks (measured 0 to 1e-6, ONNX Runtime and torch);
  bf16 kernels block by batch size, so there features move by bf16 rounding (engines.CACHE_TOLERANCE);
- training never sees it (Policy.forward encodes directly), nor do policies off the CPU (hashing would copy
  every frame to the host).

Bounded: `capacity` frames per camera, least recently used dropped first. A call that brings more frames of
one camera than `capacity` (batched validation, many environments at once) bypasses the cache for that
camera: it could not reuse them, and hashing a whole batch would only cost.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch

DEFAULT_CAPACITY = 8  # frames per camera: a 2-step window, the prepared frame and room for chunk candidates


def supports_cache(encoder: Any) -> bool:
    """Whether `encoder` exposes its per-camera trunks (`images[key](frames [N, ...]) -> [N, F]`) and its keys, as
    ObsEncoder and the ONNX per-camera encoder do; a whole-window ONNX graph (older exports) does not."""
    return all(hasattr(encoder, a) for a in ("images", "image_keys", "lowdim_keys"))


class FrameFeatureCache:
    """Per-camera LRU of frame -> image feature, exact (module docstring). Thread-safe: the bookkeeping is under a
    lock, encoding is not, so a `prepare` on one thread and a chunk on another may both encode one frame."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"feature cache: capacity {capacity} must be >= 1")
        self.capacity = int(capacity)
        self._entries: dict[str, OrderedDict[tuple, tuple[bytes, torch.Tensor]]] = {}
        self._modules: tuple[Any, ...] = ()  # the encoder (and its camera trunks) the entries belong to
        self._params: list[torch.Tensor] = []
        self._stamp: tuple[int, ...] = ()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # A copy of a policy (apply_engine's reference, an EMA copy) or a pickled one starts empty: entries belong to
    # the encoder object that computed them.
    def __deepcopy__(self, memo: dict) -> FrameFeatureCache:
        return FrameFeatureCache(self.capacity)

    def __getstate__(self) -> dict[str, Any]:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["capacity"])

    def __len__(self) -> int:
        return sum(len(e) for e in self._entries.values())

    def sizes(self) -> dict[str, int]:
        """Entries held per camera."""
        return {k: len(e) for k, e in self._entries.items()}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    # ---- validity ------------------------------------------------------------------------------

    def bind(self, encoder: Any) -> None:
        """Drop every entry unless `encoder` (its trunks, their parameters) is exactly what computed them."""
        modules = (encoder, *(encoder.images[k] for k in encoder.image_keys))
        with self._lock:
            if len(modules) != len(self._modules) or any(
                a is not b for a, b in zip(modules, self._modules, strict=True)
            ):
                self._entries.clear()
                self._modules = modules
                self._params = list(encoder.parameters())  # the module walk is ~0.15 ms: once per encoder
                self._stamp = _stamp(self._params)
                return
            stamp = _stamp(self._params)
            if stamp != self._stamp:
                self._entries.clear()
                self._stamp = stamp

    # ---- lookup --------------------------------------------------------------------------------

    def features(
        self, key: str, frames: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """frames [N, ...] of camera `key`, as its encoder takes them -> features [N, F]: stored ones where the same
        frame was seen, `encode` (one batched call) on the others, which are then stored."""
        n = frames.shape[0]
        if n > self.capacity:
            return encode(frames)
        keys, blobs = [], []
        for i in range(n):
            blob = frames[i].detach().numpy().tobytes()  # C order, whatever the layout of the view
            keys.append((tuple(frames.shape[1:]), str(frames.dtype), hash(blob)))
            blobs.append(blob)
        out: list[torch.Tensor | None] = [None] * n
        # One encode per distinct missing frame: an episode's first window repeats a frame, candidates a window.
        todo: dict[tuple, list[int]] = {}
        with self._lock:
            store = self._entries.setdefault(key, OrderedDict())
            for i, (k, blob) in enumerate(zip(keys, blobs, strict=True)):
                hit = store.get(k)
                if hit is not None and hit[0] == blob:
                    store.move_to_end(k)
                    out[i] = hit[1]
                    self.hits += 1
                else:
                    todo.setdefault(k, []).append(i)
        if todo:
            first = [rows[0] for rows in todo.values()]
            fresh = encode(_rows(frames, first))
            with self._lock:
                store = self._entries.setdefault(key, OrderedDict())
                for j, (k, rows) in enumerate(todo.items()):
                    feat = fresh[j]
                    for i in rows:
                        out[i] = feat
                    store[k] = (blobs[rows[0]], feat)
                    store.move_to_end(k)
                    self.misses += 1
                while len(store) > self.capacity:
                    store.popitem(last=False)
        return torch.stack(out)  # type: ignore[arg-type]

    def encode(self, encoder: Any, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`encoder(obs)` (ObsEncoder.forward: {key: [B, T, ...]} -> [B, T, F], images as its trunks take them)
        with each camera frame's feature from the cache."""
        self.bind(encoder)
        feats = [obs[k].flatten(2) for k in encoder.lowdim_keys]
        for k in encoder.image_keys:
            x = obs[k]
            b, t = x.shape[:2]
            feats.append(self.features(k, x.flatten(0, 1), encoder.images[k]).unflatten(0, (b, t)))
        return torch.cat(feats, -1)

    def encode_frames(self, encoder: Any, images: Mapping[str, torch.Tensor]) -> int:
        """Store the features of camera frames {key: [N, ...]} (as the trunks take them) not yet stored; returns
        how many were encoded."""
        self.bind(encoder)
        before = self.misses
        for k, x in images.items():
            if x.shape[0] > self.capacity:
                raise ValueError(
                    f"feature cache: {x.shape[0]} frames of {k!r} at once, more than it holds ({self.capacity})"
                )
            self.features(k, x, encoder.images[k])
        return self.misses - before


def _rows(frames: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """frames[rows], a view where the rows are consecutive (the steady state: one new frame). Torch's index copy
    splits over its intra-op threads, and with another process on a core it waited up to 20 ms for the second."""
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return frames[rows[0] : rows[0] + len(rows)]
    return torch.from_numpy(frames.detach().numpy()[rows]).to(frames.device)


def _stamp(params: list[torch.Tensor]) -> tuple[int, ...]:
    """What changes when a parameter does: its in-place version counter (optimiser steps, EMA updates,
    load_state_dict) and its storage (`p.data = ...`, `module.to(...)`)."""
    return tuple(p._version for p in params) + tuple(p.data_ptr() for p in params)
