"""Store-to-store operations: merge, split by episode, import of diffusion_policy ReplayBuffers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from mimic.data.dataset import DatasetError, ReplayDataset, check_layout, open_group
from mimic.data.torch_dataset import is_image_key, split_episodes
from mimic.data.validate import validate
from mimic.data.writer import DatasetWriter, StreamSpec

CARRIED_ATTRS = ("robot", "joint_names", "latencies", "calibration_ids", "task")


def _streams(ds: ReplayDataset) -> dict[str, StreamSpec]:
    return {k: StreamSpec.from_json(v) for k, v in dict(ds.attrs["streams"]).items()}


def _refuse_existing(out: str | Path) -> None:
    if Path(str(out)).exists():
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
    """Split by episode with the same rule WindowDataset uses."""
    _refuse_existing(out_train)
    _refuse_existing(out_val)
    ds = validate(src)[0]
    val = split_episodes(ds.n_episodes, val_ratio, seed)
    if not val.any():
        raise DatasetError(
            f"{src}: val_ratio {val_ratio} leaves no validation episode ({ds.n_episodes} episodes)"
        )
    return (
        _copy([(ds, list(np.flatnonzero(~val)))], out_train),
        _copy([(ds, list(np.flatnonzero(val)))], out_val),
    )


def import_dp(src: str, out: str, fps: float, robot: str = "", tolerance_s: float | None = None) -> int:
    """Import a diffusion_policy ReplayBuffer store (zarr v2 or v3: data/<key>, meta/episode_ends).

    Its rows are already on a grid, so `<key>_t` equals the grid time (data/timestamp if the store has
    one, else row / fps counted from each episode start).
    """
    _refuse_existing(out)
    try:  # diffusion_policy stores images with imagecodecs' numcodecs codecs (e.g. Jpeg2k)
        import imagecodecs.numcodecs as icn

        icn.register_codecs(verbose=False)
    except Exception:  # noqa: BLE001 - optional; plain stores need none
        pass
    root = open_group(src, "r")
    ends = check_layout(root, src)
    if ends.size == 0:
        raise DatasetError(f"{src}: key 'meta/episode_ends' is empty (no episodes)")
    data = root["data"]
    keys = sorted(k for k, _ in data.arrays() if k != "timestamp" and not k.endswith("_t"))
    if not keys:
        raise DatasetError(f"{src}: group 'data' has no arrays")
    tol = tolerance_s if tolerance_s is not None else 0.5 / fps
    streams = {}
    for k in keys:
        a = data[k]
        kind = "image" if is_image_key(a.shape, a.dtype) else "lowdim"
        dtype = "uint8" if kind == "image" else ("float64" if a.dtype.kind == "f" else str(a.dtype))
        streams[k] = StreamSpec(tuple(a.shape[1:]), dtype, kind, tol)
    joint_names = (
        [f"joint{i}" for i in range(data["robot0_joint_pos"].shape[1])] if "robot0_joint_pos" in keys else []
    )
    w = DatasetWriter.create(
        out, fps, streams, {"robot": robot, "joint_names": joint_names, "task": f"imported from {src}"}
    )
    has_ts = "timestamp" in [k for k, _ in data.arrays()]
    try:
        for i in tqdm(range(ends.size), desc="import", disable=ends.size < 20):
            s0 = int(ends[i - 1]) if i else 0
            s1 = int(ends[i])
            ts = np.asarray(data["timestamp"][s0:s1], np.float64) if has_ts else np.arange(s1 - s0) / fps
            rows = {k: np.asarray(data[k][s0:s1]) for k in keys}
            rows.update({f"{k}_t": ts for k in keys})
            rows["timestamp"] = ts
            w.write_episode(rows)
    except BaseException:
        import shutil

        shutil.rmtree(str(out), ignore_errors=True)  # nothing written on failure
        raise
    return int(ends.size)
