"""Portable stores: plain zarr + imagecodecs decode every array of a recorded store with no Mimic import,
and `mimic dataset convert` rewrites a legacy `mimic.jpeg` store into that format pixel for pixel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

from mimic.data.cli import main
from mimic.data.codecs import JpegCodec
from mimic.data.dataset import ReplayDataset
from mimic.data.validate import validate
from mimic.data.writer import DatasetWriter
from tests.plain_zarr import read_plain

STANDARD = {None, "blosc", "zstd", "imagecodecs_jpeg", "imagecodecs_jpegxl"}


def test_recorded_store_decodes_with_plain_zarr_and_imagecodecs(tmp_path):
    from mimic.workflows.record_expert import record_expert_dataset

    store = tmp_path / "rec.zarr"
    record_expert_dataset(
        store, "franka", "reach", 2, cameras=("scene",), image_size=(64, 64), progress=False
    )
    arrays, meta = read_plain(store, tmp_path)
    assert meta["mimic_imported"] is False and meta["zarr_format"] == 2
    assert set(meta["codecs"].values()) <= STANDARD, meta["codecs"]
    ds = ReplayDataset(store)
    cams = [k for k in ds.keys if ds.array(k).ndim == 4]
    assert cams and ds.n_episodes == 2
    assert ds.array(cams[0]).chunks[0] == 1  # a live store: one JPEG per chunk, diffusion_policy's layout
    on_disk = json.loads((store / "data" / cams[0] / ".zarray").read_text())["compressor"]
    assert on_disk == {"id": "imagecodecs_jpeg", "level": 90}  # only set keys: older imagecodecs read it
    for key in ds.keys:
        assert np.array_equal(arrays[f"data/{key}"][: ds.n_steps], ds.read(key)), key
    assert np.array_equal(arrays["meta/episode_ends"], ds.episode_ends)


def make_legacy(path: Path, n: tuple[int, ...] = (7, 5)) -> dict[str, np.ndarray]:
    """A store as written before the portable format: zarr format 3, frames in the private "mimic.jpeg"."""
    rng = np.random.default_rng(3)
    total = sum(n)
    streams = {
        "robot0_joint_pos": {"shape": [2], "dtype": "float64", "kind": "lowdim", "tolerance_s": 0.05},
        "camera0_rgb": {"shape": [24, 24, 3], "dtype": "uint8", "kind": "image", "tolerance_s": 0.05},
    }
    g = zarr.open_group(str(path), mode="w-", zarr_format=3)
    g.attrs.update(
        {
            "robot": "franka",
            "joint_names": ["a", "b"],
            "latencies": {},
            "calibration_ids": {},
            "task": "legacy",
            "schema_version": 1,
            "fps": 10.0,
            "streams": streams,
            "episode_marks": {"1": {"stalled": "camera0_rgb", "samples_after_stall": 2}},
        }
    )
    d = g.create_group("data")
    t = np.arange(total) / 10.0
    values = {
        "robot0_joint_pos": rng.normal(size=(total, 2)),
        "camera0_rgb": rng.integers(0, 255, (total, 24, 24, 3), dtype=np.uint8),
        "robot0_joint_pos_t": t,
        "camera0_rgb_t": t,
        "timestamp": t,
    }
    for k, v in values.items():
        if k == "camera0_rgb":
            a = d.create_array(
                k,
                shape=v.shape,
                chunks=(1, 24, 24, 3),
                dtype="uint8",
                serializer=JpegCodec(level=90),
                compressors=None,
            )
            a[:] = v
        else:
            d.create_array(k, data=v)
    g.create_group("meta").create_array("episode_ends", data=np.cumsum(n).astype(np.int64))
    g.require_group("raw").require_group("episode_0").create_array("pose_arrival_t", data=np.arange(4.0))
    return values


def test_convert_rewrites_a_legacy_store_portably_and_exactly(tmp_path, capsys):
    legacy, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    make_legacy(legacy)
    old = ReplayDataset(legacy)  # the legacy codec still reads
    assert main(["convert", str(legacy), str(new)]) == 0, capsys.readouterr().err
    assert "lossless" in capsys.readouterr().out
    arrays, meta = read_plain(new, tmp_path)
    assert meta["zarr_format"] == 2 and set(meta["codecs"].values()) <= STANDARD, meta["codecs"]
    ds = validate(new)[0]
    assert ds.attrs["episode_marks"] == old.attrs["episode_marks"] and ds.attrs["task"] == "legacy"
    assert list(ds.episode_ends) == list(old.episode_ends)
    for key in old.keys:
        assert np.array_equal(ds.read(key), old.read(key)), key
        assert np.array_equal(arrays[f"data/{key}"][: ds.n_steps], old.read(key)), key
    assert np.array_equal(arrays["raw/episode_0/pose_arrival_t"], np.arange(4.0))
    w = DatasetWriter.open(new)  # the converted store takes more episodes
    w.write_episode({k: v[:3] for k, v in ds.episode(0).items()})
    w.close()
    assert validate(new)[0].n_episodes == 3
    assert main(["convert", str(legacy), str(new)]) == 1
    assert "already exists" in capsys.readouterr().err
