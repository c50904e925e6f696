"""Store-to-store operations: merge and split by episode (diffusion_policy / UMI import: `mimic.data.dp_umi`).

Outputs never share a path with an input or with each other, and merge's output and split's two outputs are
staged (mimic.data.staging): each appears whole, and neither of split's does if either write fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mimic.data.dataset import DatasetError, ReplayDataset
from mimic.data.staging import staged_output
from mimic.data.storage import locate
from mimic.data.torch_dataset import split_episodes
from mimic.data.validate import validate
from mimic.data.writer import DatasetWriter, StreamSpec

CARRIED_ATTRS = ("robot", "joint_names", "latencies", "calibration_ids", "task")


def _streams(ds: ReplayDataset) -> dict[str, StreamSpec]:
    return {k: StreamSpec.from_json(v) for k, v in dict(ds.attrs["streams"]).items()}


def _refuse_existing(out: str | Path) -> None:
    if locate(out).exists():  # a URL is checked for reachability too, before any input is read
        raise DatasetError(f"{out}: output already exists")


def _same_place(a: str | Path, b: str | Path) -> bool:
    """Whether two paths or URLs name one location (`x.zarr`, `./x.zarr` and its absolute path do)."""
    la, lb = locate(a, check=False), locate(b, check=False)
    if la.local and lb.local:
        return os.path.normpath(la.path) == os.path.normpath(lb.path)
    return (la.protocol, la.path.rstrip("/")) == (lb.protocol, lb.path.rstrip("/"))


def _copy(sources: list[tuple[ReplayDataset, list[int]]], out: str | Path) -> int:
    first = sources[0][0]
    streams = _streams(first)
    w = DatasetWriter.create(
        out, first.attrs["fps"], streams, {k: first.attrs[k] for k in CARRIED_ATTRS if k in first.attrs}
    )
    total = sum(len(eps) for _, eps in sources)
    # Episodes go out in batches of about this many rows (fewer with images, which are held decoded).
    batch_rows = 256 if any(s.kind == "image" for s in streams.values()) else 16384
    with tqdm(total=total, desc=f"write {Path(str(out)).name}", disable=total < 20) as bar:
        batch: list[dict[str, np.ndarray]] = []
        rows = 0
        for ds, eps in sources:
            for i in eps:
                batch.append(ds.episode(i))
                rows += len(batch[-1]["timestamp"])
                if rows >= batch_rows:
                    w.write_episodes(batch)
                    bar.update(len(batch))
                    batch, rows = [], 0
        w.write_episodes(batch)
        bar.update(len(batch))
    w.close()
    return total


def merge(inputs: list[str], out: str) -> int:
    """Concatenate episodes of stores with identical fps and streams; returns episodes written."""
    for p in inputs:
        if _same_place(p, out):
            raise DatasetError(f"merge: the output {out} is also an input")
    _refuse_existing(out)
    sets = [validate(p)[0] for p in inputs]
    ref = sets[0]
    for p, ds in zip(inputs[1:], sets[1:], strict=True):
        for attr in ("fps", "streams"):
            if ds.attrs[attr] != ref.attrs[attr]:
                raise DatasetError(f"{p}: root attr {attr!r} differs from {inputs[0]}")
    with staged_output(out) as where:  # callers other than the CLI (DAgger) get a whole store or none too
        return _copy([(ds, list(range(ds.n_episodes))) for ds in sets], where)


def split(src: str, out_train: str, out_val: str, val_ratio: float, seed: int) -> tuple[int, int]:
    """Split by episode with the same rule WindowDataset uses; neither output appears if either write fails."""
    paths = (src, out_train, out_val)
    if any(_same_place(a, b) for i, a in enumerate(paths) for b in paths[i + 1 :]):
        raise DatasetError(
            f"split: the source and the two outputs must be three paths ({src}, {out_train}, {out_val})"
        )
    if not 0.0 < val_ratio < 1.0:
        raise DatasetError(f"split: --val-ratio {val_ratio} must be in (0, 1)")
    _refuse_existing(out_train)
    _refuse_existing(out_val)
    ds = validate(src)[0]
    val = split_episodes(ds.n_episodes, val_ratio, seed)
    if not val.any():
        raise DatasetError(
            f"{src}: val_ratio {val_ratio} leaves no validation episode ({ds.n_episodes} episodes)"
        )
    # Nested: a decode error in the val copy removes the staged train copy too, so no half split is left.
    with staged_output(out_train) as tr, staged_output(out_val) as va:
        return (
            _copy([(ds, list(np.flatnonzero(~val)))], tr),
            _copy([(ds, list(np.flatnonzero(val)))], va),
        )
