"""LeRobot v3.0 export/import: the export checked by an independent pyarrow + PyAV reader, then the round trip.

The reader in `read_lerobot` imports nothing from Mimic: it follows LeRobot's own layout (meta/info.json,
meta/episodes, data/ parquet, videos/ MP4 with per-episode from/to timestamps), so a wrong path template,
index range or frame count fails here the way it would fail in `LeRobotDataset`.

Measured frame loss (libx264, crf 18, yuv420p, 64x64 twin renders, source JPEG frames vs frames decoded
from the MP4 and stored again as JPEG): ~41.7 dB PSNR over every frame; the test requires >= 35 dB. Lowdim values, timestamps and episode bounds come back bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

MIN_PSNR_DB = 35.0  # rendered twin frames (measured ~41.7 dB)
# The float32 store's synthetic frames put a saturated red square on a colour gradient: yuv420p halves the
# chroma resolution at its edges, and the imported store re-encodes frames as JPEG; measured ~34.3 dB.
MIN_PSNR_SYNTHETIC_DB = 32.0


# ---- the independent reader: json + pyarrow + av + numpy only -----------------------------------------


def _column(table, name: str, shape: list[int]) -> np.ndarray:
    col = table[name].combine_chunks()
    rows = len(col)
    while hasattr(col, "flatten") and col.type.num_fields == 1:  # list / fixed-size list
        col = col.flatten()
    return col.to_numpy(zero_copy_only=False).reshape(rows, *shape)


def read_lerobot(root: Path) -> dict:
    """Check the v3.0 layout and return {info, stats, episodes, data: {feature: per-episode arrays}, frames}."""
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert isinstance(info["fps"], int) and info["fps"] > 0
    feats = info["features"]
    for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert feats[name]["shape"] == [1], name
    ep_tables = [pq.read_table(p) for p in sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))]
    eps = {c: [v for t in ep_tables for v in t[c].to_pylist()] for c in ep_tables[0].column_names}
    n_eps = len(eps["episode_index"])
    assert eps["episode_index"] == list(range(n_eps))
    assert info["total_episodes"] == n_eps and info["total_frames"] == sum(eps["length"])
    assert info["splits"] == {"train": f"0:{n_eps}"}
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column_names[:1] == ["task_index"] and "task" in tasks.column_names
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]

    lowdim = {k: f for k, f in feats.items() if f["dtype"] not in ("video", "image", "string")}
    videos = [k for k, f in feats.items() if f["dtype"] == "video"]
    data: dict[str, list[np.ndarray]] = {k: [] for k in lowdim}
    frames: dict[str, list[np.ndarray]] = {k: [] for k in videos}
    expect_from = 0
    for e in range(n_eps):
        lo, hi, n = eps["dataset_from_index"][e], eps["dataset_to_index"][e], eps["length"][e]
        assert lo == expect_from and hi - lo == n > 0
        expect_from = hi
        path = root / info["data_path"].format(
            chunk_index=eps["data/chunk_index"][e], file_index=eps["data/file_index"][e]
        )
        table = pq.read_table(path)
        index = table["index"].to_numpy()
        rows = table.take(np.flatnonzero((index >= lo) & (index < hi)))
        assert len(rows) == n
        assert rows["episode_index"].to_pylist() == [e] * n
        assert rows["frame_index"].to_pylist() == list(range(n))
        assert rows["index"].to_pylist() == list(range(lo, hi))
        ts = rows["timestamp"].to_numpy()
        assert ts.dtype == np.float32
        np.testing.assert_allclose(ts, np.arange(n) / info["fps"], atol=1e-6)
        for k, f in lowdim.items():
            arr = _column(rows, k, f["shape"])
            assert arr.dtype == np.dtype(f["dtype"]), k
            data[k].append(arr)
        for k in videos:
            vpath = root / info["video_path"].format(
                video_key=k,
                chunk_index=eps[f"videos/{k}/chunk_index"][e],
                file_index=eps[f"videos/{k}/file_index"][e],
            )
            t0, t1 = eps[f"videos/{k}/from_timestamp"][e], eps[f"videos/{k}/to_timestamp"][e]
            assert t1 - t0 == pytest.approx(n / info["fps"])
            with av.open(str(vpath)) as c:
                s = c.streams.video[0]
                got = [
                    f.to_ndarray(format="rgb24")
                    for f in c.decode(s)
                    if t0 - 1e-6 <= float(f.pts * s.time_base) < t1 - 1e-6
                ]
            assert len(got) == n, f"{k} episode {e}: {len(got)} frames in [{t0}, {t1}), length {n}"
            assert list(got[0].shape) == feats[k]["shape"]
            frames[k].append(np.stack(got))

    stats = json.loads((root / "meta/stats.json").read_text())
    for k, f in feats.items():
        assert {"min", "max", "mean", "std", "count"} <= set(stats[k]), k
        assert stats[k]["count"][0] > 0
        want = [3, 1, 1] if f["dtype"] == "video" else f["shape"]
        assert list(np.shape(stats[k]["mean"])) == want, k
    for k in videos:
        assert 0.0 <= np.min(stats[k]["min"]) <= np.max(stats[k]["max"]) <= 1.0
    return {"info": info, "stats": stats, "episodes": eps, "data": data, "frames": frames}


# ---- helpers that use Mimic ----------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def cli(*argv: str, capsys) -> tuple[int, str, str]:
    from mimic.data.cli import main

    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_same_store(a_path: Path, b_path: Path, *, same_attrs: bool = True) -> float:
    """Every lowdim array equal bit for bit (dtype included), same episodes; returns the frames' PSNR (dB)."""
    from mimic.data.dataset import ReplayDataset

    a, b = ReplayDataset(a_path), ReplayDataset(b_path)
    assert a.keys == b.keys
    np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
    if same_attrs:
        assert a.attrs == b.attrs
    worst = float("inf")
    for k in a.keys:
        x, y = a.read(k), b.read(k)
        assert x.dtype == y.dtype and x.shape == y.shape, k
        if x.dtype == np.uint8 and x.ndim == 4:
            worst = min(worst, psnr(x, y))
        else:
            assert x.tobytes() == y.tobytes(), f"{k} differs"
    return worst


@pytest.fixture(scope="module")
def twin_store(tmp_path_factory) -> Path:
    from mimic.workflows.record_expert import record_expert_dataset

    path = tmp_path_factory.mktemp("lerobot") / "reach.zarr"
    record_expert_dataset(path, "franka", "reach", 2, cameras=("scene",), image_size=(64, 64), progress=False)
    return path


def test_twin_store_exports_to_lerobot_v3_and_back(twin_store: Path, tmp_path: Path, capsys) -> None:
    from mimic.data.dataset import ReplayDataset

    out = tmp_path / "lerobot"
    rc, stdout, err = cli("export-lerobot", str(twin_store), str(out), "--repo-id", "me/reach", capsys=capsys)
    assert rc == 0, err
    assert "2 episodes" in stdout
    assert "me/reach" in (out / "README.md").read_text()

    got = read_lerobot(out)
    src = ReplayDataset(twin_store)
    info = got["info"]
    assert info["fps"] == 10 and info["robot_type"] == "franka"
    assert info["features"]["observation.images.camera0"]["shape"] == [64, 64, 3]
    assert info["features"]["observation.state"]["names"][-1] == "gripper_width"
    assert got["episodes"]["length"] == np.diff(np.r_[0, src.episode_ends]).tolist()
    state = np.concatenate(got["data"]["observation.state"])
    expect = np.concatenate([src.read("robot0_joint_pos"), src.read("robot0_gripper_width")], axis=1)
    assert state.dtype == expect.dtype and state.tobytes() == expect.tobytes()
    assert np.concatenate(got["data"]["action"]).tobytes() == src.read("action").tobytes()
    frames = np.concatenate(got["frames"]["observation.images.camera0"])
    assert psnr(src.read("camera0_rgb"), frames) >= MIN_PSNR_DB

    back = tmp_path / "back.zarr"
    rc, _, err = cli("import-lerobot", str(out), str(back), capsys=capsys)
    assert rc == 0, err
    assert assert_same_store(twin_store, back) >= MIN_PSNR_DB


def _float32_store(path: Path) -> Path:
    from mimic.data.writer import DatasetWriter, StreamSpec

    streams = {
        "robot0_joint_pos": StreamSpec((6,), "float32"),
        "action": StreamSpec((6,), "float32"),
        "camera0_rgb": StreamSpec((32, 48, 3), "uint8", "image"),
    }
    w = DatasetWriter.create(path, 15.0, streams, {"robot": "ur5e", "joint_names": [], "task": "wipe"})
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:32, 0:48]
    for e, n in enumerate((9, 5, 13)):
        t = 10.0 * e + np.arange(n) / 15.0
        q = rng.normal(size=(n, 6)).astype(np.float32)
        img = np.stack(  # smooth gradients with a moving square, like a rendered scene
            [np.stack([40 + 3 * xx + 2 * i, 30 + 5 * yy + 8 * e, 120 + 0 * xx + 4 * i], -1) for i in range(n)]
        ).astype(np.uint8)
        for i in range(n):
            img[i, 8:20, 4 + 2 * i : 16 + 2 * i] = (200, 60, 40)
        w.write_episode(
            {
                "robot0_joint_pos": q,
                "action": np.nextafter(q, np.float32(np.inf)),
                "camera0_rgb": img,
                **{f"{k}_t": t + 1e-4 * (j + 1) for j, k in enumerate(streams)},
                "timestamp": t,
            }
        )
    return path


def test_float32_store_round_trips_bitwise_and_imports_without_sidecar(tmp_path: Path, capsys) -> None:
    store = _float32_store(tmp_path / "f32.zarr")
    out = tmp_path / "lerobot"
    assert cli("export-lerobot", str(store), str(out), capsys=capsys)[0] == 0
    got = read_lerobot(out)
    feats = got["info"]["features"]
    assert "observation.state" not in feats  # no gripper stream: the joints keep their own feature
    assert feats["observation.robot0_joint_pos"]["dtype"] == "float32"
    assert got["data"]["observation.robot0_joint_pos"][0].dtype == np.float32
    assert [len(f) for f in got["frames"]["observation.images.camera0"]] == [9, 5, 13]

    back = tmp_path / "back.zarr"
    assert cli("import-lerobot", str(out), str(back), capsys=capsys)[0] == 0
    assert assert_same_store(store, back) >= MIN_PSNR_SYNTHETIC_DB

    # A dataset LeRobot recorded has no meta/mimic.json: values still exact, times rebuilt on the fps grid.
    foreign = tmp_path / "foreign"
    shutil.copytree(out, foreign)
    (foreign / "meta/mimic.json").unlink()
    info = json.loads((foreign / "meta/info.json").read_text())
    del info["features"]["mimic.time"]
    (foreign / "meta/info.json").write_text(json.dumps(info))
    plain = tmp_path / "plain.zarr"
    rc, _, err = cli("import-lerobot", str(foreign), str(plain), capsys=capsys)
    assert rc == 0, err
    from mimic.data.dataset import ReplayDataset

    a, b = ReplayDataset(store), ReplayDataset(plain)
    np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
    assert b.attrs["robot"] == "ur5e" and b.attrs["task"] == "wipe"
    for k in ("robot0_joint_pos", "action"):
        assert b.read(k).dtype == np.float32 and a.read(k).tobytes() == b.read(k).tobytes()
    for e in range(b.n_episodes):
        np.testing.assert_allclose(np.diff(b.episode(e, ["timestamp"])["timestamp"]), 1 / 15.0, atol=1e-9)


@pytest.mark.parametrize(
    "breakage, names",
    [
        ("no_info", ["meta/info.json", "missing"]),
        ("v21", ["meta/info.json", "'v2.1'"]),
        ("no_episodes", ["meta/episodes"]),
    ],
)
def test_not_a_lerobot_v3_dir_is_one_line_naming_the_file(
    tmp_path: Path, capsys, breakage: str, names: list[str]
) -> None:
    src = tmp_path / "src"
    (src / "meta").mkdir(parents=True)
    info = {"codebase_version": "v3.0", "fps": 10, "features": {"action": {"dtype": "float32", "shape": [2]}}}
    info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    if breakage == "v21":
        info["codebase_version"] = "v2.1"
    if breakage != "no_info":
        (src / "meta/info.json").write_text(json.dumps(info))
    out = tmp_path / "out.zarr"
    rc, _, err = cli("import-lerobot", str(src), str(out), capsys=capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mimic dataset import-lerobot: error:")
    for n in names:
        assert n in lines[0], lines[0]
    assert not out.exists()


def test_export_refuses_existing_output_and_missing_store(tmp_path: Path, capsys) -> None:
    store = _float32_store(tmp_path / "s.zarr")
    (tmp_path / "taken").mkdir()
    rc, _, err = cli("export-lerobot", str(store), str(tmp_path / "taken"), capsys=capsys)
    assert rc == 1 and "taken: output already exists" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli("export-lerobot", str(tmp_path / "nope.zarr"), str(tmp_path / "o"), capsys=capsys)
    assert rc == 1 and "nope.zarr" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
