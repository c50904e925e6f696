"""Schema checks beyond layout: attrs, streams, grid spacing and recorded alignment error.

These are cheap (attrs and the lowdim time arrays only), so every command runs them on its input; `deep=True`
adds `mimic.data.integrity.deep_check`, which decodes every chunk.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mimic.data.dataset import SCHEMA_VERSION, DatasetError, ReplayDataset
from mimic.data.integrity import deep_check


@dataclass
class AlignmentStats:
    """Per key: max |capture time used - grid time| over committed rows (s)."""

    max_error_s: dict[str, float] = field(default_factory=dict)


def _check_root_attrs(path: str | Path, attrs: Any) -> None:
    """`fps` a positive number and `streams` a mapping of specs with a shape and a tolerance: a hand-edited or
    foreign value is named here as the attribute it is, not met later as a conversion error of the schema check."""
    fps = attrs["fps"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise DatasetError(f"{path}: root attr 'fps' is {fps!r}, expected a positive number")
    streams = attrs["streams"]
    if not isinstance(streams, Mapping):
        raise DatasetError(f"{path}: root attr 'streams' is {streams!r}, expected a mapping of stream specs")
    for key, spec in streams.items():
        ok = isinstance(spec, Mapping) and isinstance(spec.get("shape"), (list, tuple))
        tol = spec.get("tolerance_s") if isinstance(spec, Mapping) else None
        if not ok or isinstance(tol, bool) or not isinstance(tol, (int, float)):
            raise DatasetError(
                f"{path}: root attr 'streams.{key}' is {spec!r}, expected a shape and a tolerance_s"
            )


def validate(path: str | Path, deep: bool = False) -> tuple[ReplayDataset, AlignmentStats]:
    """Raise DatasetError (path + key) on the first violation; return the dataset and alignment stats.

    With `deep`, every chunk is decoded (and checked) before any other array is read, so a damaged chunk is
    reported as such rather than surfacing as a codec exception from a schema check.
    """
    ds = ReplayDataset(path)
    attrs = ds.attrs
    for name in ("schema_version", "fps", "streams", "robot", "joint_names"):
        if name not in attrs:
            raise DatasetError(f"{path}: root attr {name!r} missing")
    if attrs["schema_version"] != SCHEMA_VERSION:
        raise DatasetError(
            f"{path}: root attr 'schema_version' is {attrs['schema_version']!r}, expected {SCHEMA_VERSION}"
        )
    _check_root_attrs(path, attrs)
    if deep:
        deep_check(ds)
    fps = float(attrs["fps"])
    keys = set(ds.keys)
    if "timestamp" not in keys:
        raise DatasetError(f"{path}: missing key 'data/timestamp'")
    stats = AlignmentStats()
    ts = ds.read("timestamp")
    for key, spec in dict(attrs["streams"]).items():
        for k in (key, f"{key}_t"):
            if k not in keys:
                raise DatasetError(f"{path}: missing key 'data/{k}' declared in attrs.streams")
        arr = ds.array(key)
        if tuple(arr.shape[1:]) != tuple(spec["shape"]):
            raise DatasetError(
                f"{path}: key 'data/{key}' has row shape {arr.shape[1:]}, attrs say {spec['shape']}"
            )
        err = np.abs(ds.read(f"{key}_t") - ts)
        stats.max_error_s[key] = float(err.max()) if err.size else 0.0
        if err.size and err.max() > float(spec["tolerance_s"]) + 1e-9:
            raise DatasetError(
                f"{path}: key 'data/{key}_t' alignment error {err.max() * 1e3:.1f} ms exceeds "
                f"tolerance {float(spec['tolerance_s']) * 1e3:.1f} ms"
            )
    for i in range(ds.n_episodes):
        d = np.diff(ts[ds.episode_slice(i)])
        if d.size and np.max(np.abs(d - 1.0 / fps)) > 1e-6:
            raise DatasetError(f"{path}: key 'data/timestamp' in episode {i} is not on the {fps:g} Hz grid")
    return ds, stats
