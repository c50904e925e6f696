"""diffusion_policy / UMI stores both ways: import keeps every value and decoded pixel, export-dp writes
their layout (zarr format 2) that plain zarr + imagecodecs read back pixel-exact."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import imagecodecs.numcodecs as icn
import numpy as np
import zarr

from mimic.data.cli import main
from mimic.data.dataset import ReplayDataset
from mimic.data.validate import validate
from mimic.data.writer import DatasetWriter, StreamSpec

ENDS = np.array([6, 11, 15], np.int64)
# The keyword arguments diffusion_policy/UMI's own JpegXl codec class accepts: a config key beyond these
# would make their zarr 2 fail to build the codec.
DP_JPEGXL_KEYS = {
    "id", "level", "effort", "distance", "lossless", "decodingspeed", "photometric", "planar",
    "usecontainer", "index", "keeporientation", "numthreads",
}  # fmt: skip


def source_values(rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = int(ENDS[-1])
    values: dict[str, np.ndarray] = {}
    for r in range(2):
        values[f"robot{r}_eef_pos"] = rng.normal(size=(n, 3)).astype(np.float32)
        values[f"robot{r}_eef_rot_axis_angle"] = rng.normal(size=(n, 3)).astype(np.float32)
        values[f"robot{r}_gripper_width"] = rng.uniform(0, 0.08, (n, 1)).astype(np.float32)
        values[f"robot{r}_demo_start_pose"] = rng.normal(size=(n, 6))
        values[f"camera{r}_rgb"] = rng.integers(0, 255, (n, 20, 24, 3), dtype=np.uint8)
    values["action"] = rng.normal(size=(n, 14)).astype(np.float32)
    values["timestamp"] = np.arange(n, dtype=np.float64) / 10.0 + 1000.0
    return values


def write_source(root: zarr.Group, values: dict[str, np.ndarray], codec) -> None:  # noqa: ANN001
    """Their writer's layout: one-frame image chunks in an imagecodecs codec, low-dim arrays whole."""
    data = root.create_group("data")
    for k, v in values.items():
        if v.ndim == 4:
            a = data.create_array(
                k, shape=v.shape, chunks=(1, *v.shape[1:]), dtype="uint8", compressors=codec
            )
            a[:] = v
        else:
            data.create_array(k, data=v)
    root.create_group("meta").create_array("episode_ends", data=ENDS)


def decoded(path: Path) -> dict[str, np.ndarray]:
    """The source store's own decoded values, read straight through zarr."""
    if str(path).endswith(".zip"):
        store = zarr.storage.ZipStore(str(path), mode="r")
        g = zarr.open_group(store, mode="r")
        out = {k: a[...] for k, a in g["data"].arrays()}
        store.close()
        return out
    return {k: a[...] for k, a in zarr.open_group(str(path), mode="r")["data"].arrays()}


def check_import(src: Path, out: Path, capsys) -> None:  # noqa: ANN001
    assert main(["import-dp", str(src), "-o", str(out), "--fps", "10"]) == 0, capsys.readouterr().err
    want = decoded(src)
    ds = validate(out)[0]
    assert list(ds.episode_ends) == list(ENDS)
    for k, v in want.items():
        got = ds.read(k)
        assert got.dtype == v.dtype and got.shape == v.shape, (k, got.dtype, v.dtype)
        assert np.array_equal(got, v), k
    assert np.array_equal(ds.read("camera0_rgb_t"), want["timestamp"])


def test_import_dp_directory_store_exactly(tmp_path, capsys):
    icn.register_codecs(verbose=False)
    src = tmp_path / "dp.zarr"
    write_source(zarr.open_group(str(src), mode="w", zarr_format=2), source_values(np.random.default_rng(0)),
                 icn.Jpeg2k(level=50))  # fmt: skip
    check_import(src, tmp_path / "imp.zarr", capsys)


def test_import_umi_zip_store_exactly(tmp_path, capsys):
    icn.register_codecs(verbose=False)
    src = tmp_path / "dataset.zarr.zip"
    store = zarr.storage.ZipStore(str(src), mode="w")
    write_source(zarr.open_group(store, mode="w", zarr_format=2), source_values(np.random.default_rng(1)),
                 icn.Jpeg2k(level=50))  # fmt: skip
    store.close()
    check_import(src, tmp_path / "imp.zarr", capsys)


def test_import_dp_bad_inputs_are_one_line(tmp_path, capsys):
    bad = tmp_path / "broken.zarr.zip"
    bad.write_bytes(b"not a zip")
    assert main(["import-dp", str(bad), "-o", str(tmp_path / "x.zarr")]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.zarr").exists()


EXPORT_READER = """
import sys, json, numpy as np, zarr, imagecodecs.numcodecs
imagecodecs.numcodecs.register_codecs()
path = sys.argv[1]
store = zarr.storage.ZipStore(path, mode="r") if path.endswith(".zip") else path
root = zarr.open_group(store, mode="r", zarr_format=2)
info = {"keys": sorted(root["data"].array_keys()), "meta": sorted(root["meta"].array_keys()), "arrays": {}}
for k, a in root["data"].arrays():
    cfg = a.metadata.compressor.get_config() if a.metadata.compressor else None
    info["arrays"][k] = {"dtype": str(a.dtype), "shape": list(a.shape), "chunks": list(a.chunks), "codec": cfg}
ends = root["meta"]["episode_ends"]
info["ends"] = ends[:].tolist(); info["ends_dtype"] = str(ends.dtype)
np.savez(sys.argv[2], **{k: a[...] for k, a in root["data"].arrays()})
info["mimic_imported"] = any(m == "mimic" or m.startswith("mimic.") for m in sys.modules)
print(json.dumps(info))
"""


def make_mimic_store(path: Path) -> ReplayDataset:
    rng = np.random.default_rng(2)
    streams = {
        "robot0_eef_pos": StreamSpec((3,), "float32"),
        "robot0_eef_rot_axis_angle": StreamSpec((3,), "float32"),
        "robot0_gripper_width": StreamSpec((1,), "float32"),
        "action": StreamSpec((7,), "float32"),
        "camera0_rgb": StreamSpec((32, 40, 3), "uint8", "image"),
    }
    w = DatasetWriter.create(path, 10.0, streams, {"robot": "handheld", "joint_names": []})
    for e, n in enumerate((9, 14)):
        t = 100.0 * e + np.arange(n) / 10.0
        rows = {
            k: rng.normal(size=(n, *s.shape)).astype(s.dtype) for k, s in streams.items() if s.kind != "image"
        }
        rows["camera0_rgb"] = rng.integers(0, 255, (n, 32, 40, 3), dtype=np.uint8)
        rows.update({f"{k}_t": t for k in streams})
        rows["timestamp"] = t
        w.write_episode(rows)
    w.close()
    return ReplayDataset(path)


def zarray(store: Path, key: str) -> dict:
    """An array's `.zarray` exactly as written, from a directory store or a zip."""
    if str(store).endswith(".zip"):
        with zipfile.ZipFile(store) as zf:
            return json.loads(zf.read(f"{key}/.zarray"))
    return json.loads((store / key / ".zarray").read_text())


def test_export_dp_reads_back_with_plain_zarr_format_2(tmp_path, capsys):
    ds = make_mimic_store(tmp_path / "m.zarr")
    for out in (tmp_path / "out.zarr", tmp_path / "out.zarr.zip"):
        assert main(["export-dp", str(tmp_path / "m.zarr"), str(out)]) == 0, capsys.readouterr().err
        npz = tmp_path / f"{out.name}.npz"
        r = subprocess.run([sys.executable, "-c", EXPORT_READER, str(out), str(npz)], capture_output=True,
                           text=True, timeout=300, cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout.strip().splitlines()[-1])
        assert info["mimic_imported"] is False and info["meta"] == ["episode_ends"]
        assert info["ends"] == ds.episode_ends.tolist() and info["ends_dtype"] == "int64"
        want_keys = sorted(k for k in ds.keys if not k.endswith("_t"))
        assert info["keys"] == want_keys
        cam = info["arrays"]["camera0_rgb"]
        assert cam["chunks"] == [1, 32, 40, 3] and cam["codec"]["id"] == "imagecodecs_jpegxl"
        assert set(zarray(out, "data/camera0_rgb")["compressor"]) <= DP_JPEGXL_KEYS  # the config on disk
        with np.load(npz) as f:
            for k in want_keys:
                assert info["arrays"][k]["dtype"] == str(ds.array(k).dtype), k
                assert np.array_equal(f[k], ds.read(k)), k  # pixel-exact against Mimic's decoded frames
    back = tmp_path / "back.zarr"  # and import-dp takes the export back, fps from its attrs
    assert main(["import-dp", str(tmp_path / "out.zarr.zip"), "-o", str(back)]) == 0, capsys.readouterr().err
    b = validate(back)[0]
    assert b.attrs["fps"] == 10.0 and list(b.episode_ends) == list(ds.episode_ends)
    for k in ds.keys:
        assert np.array_equal(b.read(k), ds.read(k)), k
