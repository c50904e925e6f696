"""Store-to-store operations: merge and split by episode (diffusion_policy / UMI import: `mimic.data.dp_umi`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mimic.data.dataset import DatasetError, ReplayDataset
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
    return total


def merge(inputs: list[str], out: str) -> int:
    """Concatenate episodes of stores with identical fps and streams; returns episodes written."""
    _refuse_existing(out)
    sets = [validate(p)[0] for p in inputs]
    ref = sets[0]
    for p, ds in zip(inputs[1:], sets[1:], strict=True):
        for attr in ("fps", "streams"):
            if ds.attrs[attr] != ref.attrs[attr]:
                raise DatasetError(f"{p}: root attr {attr!r} differs from {inputs[0]}")
    return _copy([(ds, list(range(ds.n_episodes))) for ds in sets], out)


def split(src: str, out_train: str, out_val: str, val_ratio: float, seed: int) -> tuple[int, int]:
    """Split by episode with the same rule WindowDataset uses; both outputs are removed if either fails."""
    if len({str(src), str(out_train), str(out_val)}) < 3:
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
    try:
        return (
            _copy([(ds, list(np.flatnonzero(~val)))], out_train),
            _copy([(ds, list(np.flatnonzero(val)))], out_val),
        )
    except BaseException:  # no half split left behind: a decode error in the second copy removes the first
        for out in (out_train, out_val):
            if "://" not in str(out):
                shutil.rmtree(out, ignore_errors=True)
        raise
