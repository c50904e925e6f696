"""The commit point of a store: appending to `meta/episode_ends` in one atomic metadata write.

A zarr array on a local store is one metadata file (`zarr.json` in format 3, `.zarray` in format 2, which
new stores use) plus one file per chunk, and the local store writes every file whole (temporary file + rename). Growing the array with `resize()` and then assigning the
new values is two writes, and a kill between them leaves the grown shape reading the fill value (0) for ends
that were never written: a store no reader can trust.

So the new ends are written first into the chunk files through a staged view of the array that has the
grown shape in memory only: readers keep reading the old shape, which ignores whatever lies past it in an
edge chunk, and every committed value in a rewritten chunk is rewritten unchanged. Only then is the grown
shape saved, as the single metadata write that makes the whole batch of episodes exist at once. In format 2
zarr's resize would also rewrite `.zattrs`, a second write after the commit, so only `.zarray` is written.
"""

from __future__ import annotations

import numpy as np
import zarr
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync


def append_ends(ends: zarr.Array, new_ends: np.ndarray) -> None:
    """Append `new_ends` to the 1-D `ends` array; they become visible together or not at all."""
    new_ends = np.asarray(new_ends, dtype=ends.dtype)
    if new_ends.ndim != 1 or not new_ends.size:
        raise ValueError(f"append_ends: need a non-empty 1-D batch of ends, got shape {new_ends.shape}")
    n0 = ends.shape[0]
    n1 = n0 + new_ends.size
    live = ends.async_array
    grown = live.metadata.update_shape((n1,))
    staged = zarr.Array(AsyncArray(grown, live.store_path, live.config))
    staged[n0:n1] = new_ends  # chunk files only: the saved shape still says n0
    if grown.zarr_format == 2:
        zarray = grown.to_buffer_dict(default_buffer_prototype())[".zarray"]
        sync((live.store_path / ".zarray").set(zarray))  # one metadata write: the commit
        object.__setattr__(live, "metadata", grown)
    else:
        ends.resize((n1,))  # one zarr.json write: the commit
