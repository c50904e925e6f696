"""Read a store the way a user without Mimic would: a subprocess with zarr + imagecodecs + numpy only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

# Reads every array of a store with zarr + imagecodecs + numpy only, and proves Mimic was never imported.
PLAIN_READER = """
import sys, json, numpy as np, zarr, imagecodecs.numcodecs
imagecodecs.numcodecs.register_codecs()
root = zarr.open_group(sys.argv[1], mode="r")
out, meta = {}, {"zarr_format": root.metadata.zarr_format, "codecs": {}}
for name, arr in root.members(max_depth=None):
    if isinstance(arr, zarr.Array):
        out[name] = arr[...]
        meta["codecs"][name] = arr.metadata.compressor.codec_id if arr.metadata.compressor else None
np.savez(sys.argv[2], **{k.replace("/", "|"): v for k, v in out.items()})
meta["mimic_imported"] = any(m == "mimic" or m.startswith("mimic.") for m in sys.modules)
print(json.dumps(meta))
"""


def read_plain(store: Path, tmp_path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Every array of `store` decoded by plain zarr (keys "data/<key>", "meta/episode_ends") and what the
    reader saw: zarr format, codec ids, whether any Mimic module was imported."""
    npz = tmp_path / "plain.npz"
    r = subprocess.run(
        [sys.executable, "-c", PLAIN_READER, str(store), str(npz)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout.strip().splitlines()[-1])
    with np.load(npz) as f:
        return {k.replace("|", "/"): f[k] for k in f.files}, meta
