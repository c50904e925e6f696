"""`mimic dataset convert`: rewrite a store in the portable format (zarr format 2, standard codec ids).

Why: stores written before the portable format keep camera frames in the private zarr-v3 codec
"mimic.jpeg", which only a Mimic import can decode. The rewrite keeps every committed episode, every root
attr and every array outside `data/` and `meta/` (the handheld recorder's `raw/` arrival times). Frames are
re-encoded losslessly by default, so the new store decodes to exactly the old one's pixels; `quality`
trades that for size (lossy JPEG XL, one more generation of loss).
"""

from __future__ import annotations

import numpy as np
import zarr
from tqdm import tqdm

from mimic.data.dataset import DatasetError, open_group
from mimic.data.validate import validate
from mimic.data.writer import DatasetWriter, StreamSpec

SET_BY_WRITER = ("schema_version", "fps", "streams")
BATCH_ROWS = 256


def convert(src: str, out: str, quality: int | None = None) -> int:
    """Rewrite `src` into a new portable store `out`; returns episodes written."""
    ds, _ = validate(src)
    attrs = ds.attrs
    if "streams" not in attrs:
        raise DatasetError(f"{src}: root attr 'streams' missing (not a Mimic store; use import-dp)")
    streams = {k: StreamSpec.from_json(v) for k, v in dict(attrs["streams"]).items()}
    w = DatasetWriter.create(
        out, attrs["fps"], streams, {k: v for k, v in attrs.items() if k not in SET_BY_WRITER}, quality
    )
    try:
        batch: list[dict[str, np.ndarray]] = []
        rows = 0
        for i in tqdm(range(ds.n_episodes), desc="convert", disable=ds.n_episodes < 20):
            batch.append(ds.episode(i))
            rows += len(batch[-1]["timestamp"])
            if rows >= BATCH_ROWS:
                w.write_episodes(batch)
                batch, rows = [], 0
        w.write_episodes(batch)
    finally:
        w.close()
    _copy_extra(ds.root, open_group(out, "r+"))
    return ds.n_episodes


def _copy_extra(src: zarr.Group, dst: zarr.Group) -> None:
    """Copy groups and arrays outside data/ and meta/ (values and attrs), creating parents as needed."""
    for name, node in sorted(src.members(max_depth=None), key=lambda m: m[0]):
        if name.split("/")[0] in ("data", "meta"):
            continue
        parent, _, leaf = name.rpartition("/")
        where = dst.require_group(parent) if parent else dst
        if isinstance(node, zarr.Array):
            arr = where.create_array(leaf, data=np.asarray(node[...]))
        else:
            arr = where.require_group(leaf)
        arr.attrs.update(dict(node.attrs))
