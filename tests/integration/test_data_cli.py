"""`mimic dataset` verbs on real stores, diffusion_policy import, and bad stores -> one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from mimic.data.cli import main
from mimic.data.dataset import ReplayDataset
from mimic.data.validate import validate
from mimic.data.writer import DatasetWriter, StreamSpec

REPO = Path(__file__).resolve().parents[2]


def make_store(path: Path, episodes=(12, 9), img=32) -> Path:
    streams = {
        "robot0_joint_pos": StreamSpec((7,)),
        "robot0_gripper_width": StreamSpec((1,)),
        "action": StreamSpec((8,)),
        "camera0_rgb": StreamSpec((img, img, 3), "uint8", "image"),
        "camera1_rgb": StreamSpec((img, img, 3), "uint8", "image"),
    }
    w = DatasetWriter.create(
        path,
        10.0,
        streams,
        {
            "robot": "franka",
            "joint_names": [f"j{i}" for i in range(7)],
            "task": "push the T",
            "calibration_ids": {"gello": "abc"},
        },
    )
    for e, n in enumerate(episodes):
        w.begin_episode()
        for i in range(n * 10 + 1):
            t = e * 100 + i / 100
            w.append("robot0_joint_pos", t, np.sin(t + np.arange(7)))
            w.append("robot0_gripper_width", t, [0.04 * (i % 50) / 50])
            w.append("action", t, np.concatenate([np.sin(t + 0.1 + np.arange(7)), [0.02]]))
            if i % 3 == 0:
                w.append("camera0_rgb", t, np.full((img, img, 3), (i * 3) % 255, np.uint8))
                w.append("camera1_rgb", t, np.full((img, img, 3), 255 - (i * 3) % 255, np.uint8))
        w.end_episode()
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("cli") / "rec.zarr")


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_info_and_validate(store, capsys):
    rc, out, _ = run(["info", store], capsys)
    assert rc == 0 and "2 episodes" in out and "imagecodecs_jpeg" in out and "push the T" in out
    rc, out, _ = run(["validate", store], capsys)
    assert rc == 0 and "OK" in out
    # through the real `mimic` entry point as a process
    proc = subprocess.run(
        [sys.executable, "-m", "mimic.cli", "dataset", "validate", str(store)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_plot_png(store, tmp_path, capsys):
    out_png = tmp_path / "traj.png"
    rc, _, err = run(["plot", store, "-o", out_png, "--episode", 1], capsys)
    assert rc == 0, err
    import imageio.v2 as imageio

    im = imageio.imread(out_png)
    assert im.ndim == 3 and im.shape[0] > 300 and im.std() > 5  # a real drawing, not a blank canvas


def test_video_mp4(store, tmp_path, capsys):
    out_mp4 = tmp_path / "cams.mp4"
    rc, out, err = run(["video", store, "-o", out_mp4], capsys)
    assert rc == 0, err
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(out_mp4))
    meta = next(gen)
    frames = list(gen)
    n0 = int(ReplayDataset(store).episode_ends[0])
    assert len(frames) == n0 and tuple(meta["size"]) == (64, 32)  # two 32 px cameras side by side


def test_export_mcap_readable_as_ros2(store, tmp_path, capsys):
    from mcap_ros2.reader import read_ros2_messages

    out = tmp_path / "rec.mcap"
    rc, _, err = run(["export-mcap", store, "-o", out], capsys)
    assert rc == 0, err
    ds = ReplayDataset(store)
    topics: dict[str, int] = {}
    first = None
    for m in read_ros2_messages(str(out)):
        topics[m.channel.topic] = topics.get(m.channel.topic, 0) + 1
        if first is None and m.channel.topic == "/robot/joint_states":
            first = m.ros_msg
    # the live session's topics and types (data.mcap_topics), so a bag of a store reads like a recorded one
    assert topics["/robot/joint_states"] == ds.n_steps
    assert (
        topics["/cameras/camera0/image/compressed"]
        == topics["/cameras/camera1/image/compressed"]
        == ds.n_steps
    )
    assert topics["/recorder/status"] == 2 * ds.n_episodes
    assert list(first.name) == [*[f"j{i}" for i in range(7)], "gripper"]
    assert np.allclose(first.position[:7], ds.episode(0)["robot0_joint_pos"][0])


def test_merge_and_split(store, tmp_path, capsys):
    merged = tmp_path / "m.zarr"
    rc, _, err = run(["merge", store, store, "-o", merged], capsys)
    assert rc == 0, err
    m = validate(merged)[0]
    assert m.n_episodes == 4 and m.n_steps == 2 * ReplayDataset(store).n_steps
    assert np.array_equal(m.episode(2)["action"], ReplayDataset(store).episode(0)["action"])
    rc, _, err = run(
        [
            "split",
            merged,
            "--train",
            tmp_path / "tr.zarr",
            "--val",
            tmp_path / "va.zarr",
            "--val-ratio",
            0.25,
        ],
        capsys,
    )
    assert rc == 0, err
    assert (
        validate(tmp_path / "tr.zarr")[0].n_episodes == 3
        and validate(tmp_path / "va.zarr")[0].n_episodes == 1
    )


def write_dp_v2(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A diffusion_policy ReplayBuffer as its real datasets are stored: zarr v2, images Jpeg2k."""
    import imagecodecs.numcodecs as icn

    icn.register_codecs(verbose=False)
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    d = g.create_group("data")
    n = 25
    act = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    d.create_array("action", data=act)
    d.create_array("robot0_joint_pos", data=np.cumsum(act, 0))
    img = d.create_array(
        "img", shape=(n, 16, 16, 3), chunks=(1, 16, 16, 3), dtype="uint8", compressors=icn.Jpeg2k(level=50)
    )
    img[:] = np.full((n, 16, 16, 3), 77, np.uint8)
    ends = np.array([10, 25], np.int64)
    g.create_group("meta").create_array("episode_ends", data=ends)
    return act, ends


def test_import_dp_v2_store(tmp_path, capsys):
    act, ends = write_dp_v2(tmp_path / "dp.zarr")
    rc, _, err = run(
        ["import-dp", tmp_path / "dp.zarr", "-o", tmp_path / "imp.zarr", "--fps", 10, "--robot", "ur5e"],
        capsys,
    )
    assert rc == 0, err
    ds = validate(tmp_path / "imp.zarr")[0]
    assert list(ds.episode_ends) == list(ends) and ds.attrs["robot"] == "ur5e"
    assert np.allclose(ds.read("action"), act)
    assert np.allclose(ds.episode(1)["timestamp"], np.arange(15) / 10)
    assert abs(int(ds.episode(0)["img"].mean()) - 77) <= 2


def corrupt(kind: str, src: Path, dst: Path) -> str:
    """Build one bad store; returns the key the error must name."""
    import shutil

    shutil.copytree(src, dst)
    g = zarr.open_group(str(dst), mode="r+")
    if kind == "truncated":
        n = int(g["meta/episode_ends"][-1])
        g["data/action"].resize((n - 5, 8))
        return "data/action"
    if kind == "foreign":
        shutil.rmtree(dst / "meta")
        return "meta"
    if kind == "episode_ends":
        g["meta/episode_ends"][:] = [50, 40]
        return "meta/episode_ends"
    if kind == "alignment":
        t = g["data/camera0_rgb_t"]
        t[3] = t[3] + 1.0
        return "data/camera0_rgb_t"
    if kind == "attrs":
        del g.attrs["schema_version"]
        return "schema_version"
    raise AssertionError(kind)


KINDS = ["truncated", "foreign", "episode_ends", "alignment", "attrs", "not_zarr"]
# import-dp reads the diffusion_policy layout only; alignment and attrs are Mimic-specific fields.
CASES = [
    (v, k)
    for v in ("validate", "plot", "merge", "export-mcap", "import-dp")
    for k in KINDS
    if not (v == "import-dp" and k in ("alignment", "attrs"))
]


@pytest.mark.parametrize(("verb", "kind"), CASES)
def test_bad_store_one_line_error_nothing_written(store, tmp_path, capsys, kind, verb):
    bad = tmp_path / "bad.zarr"
    if kind == "not_zarr":
        bad.mkdir()
        (bad / "notes.txt").write_text("hello")
        key = str(bad)
    else:
        key = corrupt(kind, store, bad)
    out = tmp_path / "out.bin"
    argv = {
        "validate": ["validate", bad],
        "plot": ["plot", bad, "-o", out],
        "merge": ["merge", bad, "-o", out],
        "export-mcap": ["export-mcap", bad, "-o", out],
        "import-dp": ["import-dp", bad, "-o", out],
    }[verb]
    rc, _, err = run(argv, capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and key in lines[0], err
    assert not out.exists()
