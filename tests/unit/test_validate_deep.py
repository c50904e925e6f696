"""`validate(deep=True)` / `mimic dataset validate --deep`: damaged chunks, non-finite floats and time going
backwards are each named in one line; the cheap checks alone stay as they were."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from mimic.data.cli import main as dataset_main
from mimic.data.dataset import DatasetError
from mimic.data.validate import validate
from mimic.data.writer import DatasetWriter, StreamSpec

FPS = 10.0


def make_store(path: Path) -> Path:
    streams = {
        "action": StreamSpec((2,), tolerance_s=0.2),
        "camera0_rgb": StreamSpec((8, 8, 3), "uint8", "image", tolerance_s=0.2),
    }
    w = DatasetWriter.create(path, FPS, streams, {"robot": "franka", "joint_names": ["a", "b"]})
    for ep, n in enumerate((6, 5)):
        t = 10.0 * ep + np.arange(n) / FPS
        w.write_episode(
            {
                "action": np.full((n, 2), float(ep)),
                "camera0_rgb": np.full((n, 8, 8, 3), 40 * ep, np.uint8),
                "action_t": t,
                "camera0_rgb_t": t,
                "timestamp": t,
            }
        )
    w.close()
    return path


def test_clean_store_passes(tmp_path, capsys):
    store = make_store(tmp_path / "ok.zarr")
    assert dataset_main(["validate", "--deep", str(store)]) == 0
    assert "OK (2 episodes, 11 steps; every chunk decodes" in capsys.readouterr().out


def test_damaged_chunk_nan_and_backwards_time_each_named_once(tmp_path, capsys):
    store = make_store(tmp_path / "bad.zarr")
    # 8x8 frames: all 11 rows sit in one multi-frame chunk (zarr format 2 key "0.0.0.0")
    (store / "data" / "camera0_rgb" / "0.0.0.0").write_bytes(b"\xff\x0a not a jpeg xl")
    g = zarr.open_group(str(store), mode="r+")
    g["data/action"][2, 1] = np.inf
    g["data/action_t"][8] = g["data/action_t"][7] - 0.01  # episode 1, backwards, within tolerance
    validate(store)  # the cheap checks read neither images nor action rows
    with pytest.raises(DatasetError) as err:
        validate(store, deep=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{store}: ")
    assert "key 'data/camera0_rgb' chunk 0 (rows 0..0) does not decode" in msg
    assert "key 'data/action' row 2 (episode 0) holds a non-finite value" in msg
    assert "key 'data/action_t' goes backwards at row 8 (episode 1)" in msg
    assert dataset_main(["validate", "--deep", str(store)]) == 1
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "data/camera0_rgb" in err_lines[0]


def test_timestamp_must_strictly_increase_within_an_episode_only(tmp_path):
    store = make_store(tmp_path / "ts.zarr")
    g = zarr.open_group(str(store), mode="r+")
    g["data/timestamp"][3] = g["data/timestamp"][2]
    with pytest.raises(DatasetError, match=r"'data/timestamp' goes backwards at row 3 \(episode 0\)"):
        validate(store, deep=True)
