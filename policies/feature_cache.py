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

The missing frames of all cameras of one call go to the encoder together (`encode_cameras`): the ONNX encoder runs
the cameras' trunks side by side when it has the threads (mimic.policies.engines.OnnxEncoder), so a chunk's
new frames, one per camera, take the time of one trunk on two free cores.

Bounded: `capacity` frames per camera, least recently used dropped first. A call that brings more frames of
one camera than `capacity` (batched validation, many environments at once) bypasses the cache for that
camera: it could not reuse them, and hashing a whole batch would only cost.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
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

    def encode(self, encoder: Any, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`encoder(obs)` (ObsEncoder.forward: {key: [B, T, ...]} -> [B, T, F], images as its trunks take them)
        with each camera frame's feature from the cache."""
        self.bind(encoder)
        feats = [obs[k].flatten(2) for k in encoder.lowdim_keys]
        images, _ = self._cameras(encoder, {k: obs[k].flatten(0, 1) for k in encoder.image_keys})
        feats += [images[k].unflatten(0, tuple(obs[k].shape[:2])) for k in encoder.image_keys]
        return torch.cat(feats, -1)

    def encode_frames(self, encoder: Any, images: Mapping[str, torch.Tensor]) -> int:
        """Store the features of camera frames {key: [N, ...]} (as the trunks take them) not yet stored; returns
        how many were encoded."""
        self.bind(encoder)
        for k, x in images.items():
            if x.shape[0] > self.capacity:
                raise ValueError(
                    f"feature cache: {x.shape[0]} frames of {k!r} at once, more than it holds ({self.capacity})"
                )
        return self._cameras(encoder, images)[1]

    def _cameras(
        self, encoder: Any, frames: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], int]:
        """`features` for every camera of one call, and how many frames were encoded: the missing frames of all
        cameras go to the encoder together (`encode_cameras`), so an encoder that runs its trunks side by side on
        several cores encodes the cameras' new frames at once. A camera with more frames than the cache holds is
        encoded whole and nothing of it stored."""
        looks: dict[str, _Lookup] = {}
        todo: dict[str, torch.Tensor] = {}
        for k, x in frames.items():
            if x.shape[0] > self.capacity:
                todo[k] = x
                continue
            looks[k] = self._lookup(k, x)
            if looks[k].todo:
                todo[k] = looks[k].missing()
        fresh = encode_cameras(encoder, todo) if todo else {}
        out: dict[str, torch.Tensor] = {}
        encoded = 0
        for k in frames:
            look = looks.get(k)
            if look is None:
                out[k] = fresh[k]
                continue
            if look.todo:
                self._store(look, fresh[k])
                encoded += len(look.todo)
            out[k] = look.result()
        return out, encoded

    def _lookup(self, key: str, frames: torch.Tensor) -> _Lookup:
        """The stored features of `frames` [N, ...] and which distinct frames are missing (under the lock)."""
        look = _Lookup(key, frames)
        for i in range(frames.shape[0]):
            blob = frames[i].detach().numpy().tobytes()  # C order, whatever the layout of the view
            look.keys.append((tuple(frames.shape[1:]), str(frames.dtype), hash(blob)))
            look.blobs.append(blob)
        with self._lock:
            store = self._entries.setdefault(key, OrderedDict())
            for i, (k, blob) in enumerate(zip(look.keys, look.blobs, strict=True)):
                hit = store.get(k)
                if hit is not None and hit[0] == blob:
                    store.move_to_end(k)
                    look.out[i] = hit[1]
                    self.hits += 1
                else:
                    # One encode per distinct missing frame: an episode's first window repeats a frame,
                    # chunk candidates a window.
                    look.todo.setdefault(k, []).append(i)
        return look

    def _store(self, look: _Lookup, fresh: torch.Tensor) -> None:
        """Fill `look`'s missing rows from `fresh` (the features of `look.missing()`, in order) and store them."""
        with self._lock:
            store = self._entries.setdefault(look.key, OrderedDict())
            for j, (k, rows) in enumerate(look.todo.items()):
                feat = fresh[j]
                for i in rows:
                    look.out[i] = feat
                store[k] = (look.blobs[rows[0]], feat)
                store.move_to_end(k)
                self.misses += 1
            while len(store) > self.capacity:
                store.popitem(last=False)


class _Lookup:
    """One camera's frames in one call: their keys and bytes, the features found, the distinct ones missing."""

    def __init__(self, key: str, frames: torch.Tensor) -> None:
        self.key, self.frames = key, frames
        self.keys: list[tuple] = []
        self.blobs: list[bytes] = []
        self.out: list[torch.Tensor | None] = [None] * frames.shape[0]
        self.todo: dict[tuple, list[int]] = {}  # frame key -> the rows holding that frame

    def missing(self) -> torch.Tensor:
        """The distinct missing frames, one row each, in `todo`'s order."""
        return _rows(self.frames, [rows[0] for rows in self.todo.values()])

    def result(self) -> torch.Tensor:
        return torch.stack(self.out)  # type: ignore[arg-type]


def encode_cameras(encoder: Any, frames: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{camera key: frames [N, ...]} -> {key: features [N, F]} through the encoder's trunks: its own
    `encode_cameras` where it has one (the ONNX encoder runs the cameras side by side when it has the threads),
    else one trunk after the other."""
    run = getattr(encoder, "encode_cameras", None)
    if run is not None:
        return run(frames)
    return {k: encoder.images[k](x) for k, x in frames.items()}


def cache_of(policy: Any) -> FrameFeatureCache | None:
    """The feature cache behind a deployable policy, for its hit and miss counters: the policy's own, or that of the
    policy a wrapper holds as `.policy` (the TCP-position wrapper); None for policies without one, or off the CPU
    (where the cache does not apply, so its counters would say nothing)."""
    for p in (policy, getattr(policy, "policy", None)):
        cache = getattr(p, "feature_cache", None)
        if isinstance(cache, FrameFeatureCache):
            device = getattr(p, "device", None)
            return cache if device is None or torch.device(device).type == "cpu" else None
    return None


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
