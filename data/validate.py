"""Schema checks beyond layout: attrs, streams, grid spacing and recorded alignment error.

These are cheap (attrs and the lowdim time arrays only), so every command runs them on its input; `deep=True`
adds `mimic.data.integrity.deep_check`, which decodes every chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mimic.data.dataset import SCHEMA_VERSION, DatasetError, ReplayDataset
from mimic.data.integrity import deep_check


@dataclass
class AlignmentStats:
    """Per key: max |capture time used - grid time| over committed rows (s)."""

    max_error_s: dict[str, float] = field(default_factory=dict)


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
