"""ROS 2 bags both ways: `mimic dataset export-mcap` and `import-mcap`.

- A twin store exported and imported again keeps every stream, episode and value. Capture times travel as
  integer-nanosecond stamps, so `<key>_t` come back within 1 ns and a lowdim value interpolated at a grid time
  that moved by an ulp within 1e-12 of the original (the grid `timestamp` itself is identical); frames are
  decoded and JPEG-encoded once more by each direction (quality 90), so they agree within that loss.
- A bag recorded from a live teleop session (its nodes as real processes, every topic recorded by
  tests/peers/bag_recorder.py) imports into a store that validates, with the recorder's keys and episodes.
- Bad input is one line naming the file and the topic.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import zarr

from mimic.data import mcap_topics as mt
from mimic.data.cli import main
from mimic.data.dataset import ReplayDataset
from mimic.data.validate import validate

pytestmark = pytest.mark.integration

LATENCIES = {"camera_s": {"camera0": 0.05}, "joint_s": 0.004}  # camera0: the twin store names no cameras


def run(argv: list, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def twin_store(tmp_path_factory):
    from mimic.workflows.record_expert import record_expert_dataset

    path = tmp_path_factory.mktemp("mcap") / "twin.zarr"
    record_expert_dataset(path, "franka", "reach", 2, cameras=("scene",), image_size=(64, 64), progress=False)
    zarr.open_group(str(path), mode="r+").attrs["latencies"] = LATENCIES
    return path


def read_bag(path) -> dict[str, list]:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    by_topic: dict[str, list] = {}
    with open(path, "rb") as f:
        for m in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            by_topic.setdefault(m.channel.topic, []).append((m.message.log_time, m.decoded_message))
    return by_topic


def test_export_import_round_trip_keeps_every_stream(twin_store, tmp_path, capsys) -> None:
    bag, back = tmp_path / "twin.mcap", tmp_path / "back.zarr"
    rc, _, err = run(["export-mcap", twin_store, "-o", bag], capsys)
    assert rc == 0, err
    src = ReplayDataset(twin_store)
    topics = read_bag(bag)
    assert set(topics) == {
        "/robot/joint_states",
        "/robot/joint_command",
        "/objects/state",
        "/cameras/camera0/image/compressed",
        "/mimic/robot0_eef_pos",
        "/mimic/robot0_eef_rot_axis_angle",
        "/recorder/status",
    }
    # stamps are the capture times, log times those plus the recorded latency of the stream
    js = topics["/robot/joint_states"]
    assert len(js) == src.n_steps and list(js[0][1].name)[-1] == "gripper"
    stamps = np.array([mt.stamp_to_s(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in js])
    assert np.abs(stamps - src.read("robot0_joint_pos_t")).max() < 1e-9
    assert all(log - mt.to_ns(t) == mt.to_ns(0.004) for (log, _), t in zip(js, stamps, strict=True))
    cam = topics["/cameras/camera0/image/compressed"]
    assert cam[0][1].format == "jpeg" and bytes(cam[0][1].data[:2]) == b"\xff\xd8"
    assert cam[0][0] - mt.to_ns(
        mt.stamp_to_s(cam[0][1].header.stamp.sec, cam[0][1].header.stamp.nanosec)
    ) == (mt.to_ns(0.05))
    cmd = np.array([m.position for _, m in topics["/robot/joint_command"]])
    assert np.array_equal(cmd, src.read("action"))  # float64 rows in float64 positions: exact
    status = [json.loads(m.data) for _, m in topics["/recorder/status"]]
    assert [(s["recording"], s["episodes"]) for s in status] == [(True, 0), (False, 1), (True, 1), (False, 2)]

    rc, out, err = run(["import-mcap", bag, back], capsys)
    assert rc == 0, err
    assert "2 episodes" in out and "/recorder/status" in out
    got = ReplayDataset(back)
    assert got.keys == src.keys
    assert np.array_equal(got.episode_ends, src.episode_ends)
    assert got.attrs["latencies"] == LATENCIES and got.attrs["streams"] == src.attrs["streams"]
    assert np.array_equal(got.read("timestamp"), src.read("timestamp"))
    for key in src.keys:
        a, b = src.read(key), got.read(key)
        assert a.shape == b.shape and a.dtype == b.dtype, key
        if a.dtype == np.uint8:  # two JPEG generations at quality 90 on 64x64 renders
            diff = np.abs(a.astype(int) - b.astype(int))
            assert diff.mean() < 1.0 and diff.max() < 48, (key, diff.mean(), diff.max())
        elif key.endswith("_t"):
            assert np.abs(a - b).max() <= 1e-9, key
        else:
            assert np.abs(a - b).max() <= 1e-12, (key, np.abs(a - b).max())

    # cut by gaps instead of the status (the twin's episodes are 100 s apart): the same two episodes
    rc, out, err = run(["import-mcap", bag, tmp_path / "gaps.zarr", "--episode-gap-s", "5"], capsys)
    assert rc == 0, err
    assert np.array_equal(ReplayDataset(tmp_path / "gaps.zarr").episode_ends, src.episode_ends)


def write_bag(path, topics: dict[str, str]) -> None:
    """A bag with one message on each of `topics` ({topic: type})."""
    from mcap_ros2.writer import Writer

    with open(path, "wb") as f:
        w = Writer(f)
        for i, (topic, msgtype) in enumerate(topics.items()):
            schema = w.register_msgdef(msgtype, mt.MSGDEFS[msgtype])
            header = {"stamp": {"sec": 1, "nanosec": i}, "frame_id": ""}
            msg = (
                {"data": "{}"}
                if msgtype == mt.STRING
                else {"header": header, "name": ["a"], "position": [0.0], "velocity": [], "effort": []}
            )
            w.write_message(topic, schema, msg, log_time=10**9 + i)
        w.finish()


def copy_bag(src, dst, keep) -> None:
    """Copy a bag's metadata and the raw messages of the topics `keep(topic)` accepts."""
    from mcap.reader import make_reader
    from mcap.writer import Writer

    with open(src, "rb") as f, open(dst, "wb") as g:
        reader, w = make_reader(f), Writer(g)
        w.start(profile="ros2", library="test")
        schemas: dict[int, int] = {}
        channels: dict[int, int] = {}
        for schema, channel, message in reader.iter_messages():
            if not keep(channel.topic):
                continue
            if schema.id not in schemas:
                schemas[schema.id] = w.register_schema(schema.name, schema.encoding, schema.data)
            if channel.id not in channels:
                channels[channel.id] = w.register_channel(
                    channel.topic, channel.message_encoding, schemas[schema.id]
                )
            w.add_message(channels[channel.id], message.log_time, message.data, message.publish_time)
        for m in reader.iter_metadata():
            w.add_metadata(m.name, dict(m.metadata))
        w.finish()


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("not_mcap", "not a readable MCAP file"),
        ("no_joint_states", "missing topic /robot/joint_states"),
        ("wrong_type", "topic /robot/joint_states has type std_msgs/msg/String"),
        ("export_missing_topic", "missing topic /cameras/camera0/image/compressed"),
    ],
)
def test_bad_bag_one_line_error_naming_file_and_topic(case, needle, twin_store, tmp_path, capsys) -> None:
    bag = tmp_path / f"{case}.mcap"
    if case == "not_mcap":
        bag.write_text("this is no bag\n")
    elif case == "no_joint_states":
        write_bag(bag, {"/objects/state": mt.JOINT_STATE})
    elif case == "wrong_type":
        write_bag(bag, {"/robot/joint_states": mt.STRING})
    else:  # an exported store's bag whose camera topic went missing (filtered out on the way)
        full = tmp_path / "full.mcap"
        assert run(["export-mcap", twin_store, "-o", full], capsys)[0] == 0
        copy_bag(full, bag, lambda topic: "cameras" not in topic)
    out = tmp_path / "out.zarr"
    rc, _, err = run(["import-mcap", bag, out], capsys)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(bag) in lines[0] and needle in lines[0], err
    assert not out.exists()


# The teleop session on the twin with a scripted leader on /leader/joint_states (no GELLO emulation), task reach,
# at the rates test_session_teleop.py measured to keep a loaded 2-core machine from stalling takes.
SESSION_SETS = {
    "leader.enabled": "false",
    "operator.output": "topic",
    "operator.episodes": 2,
    "operator.retries": 4,
    "operator.task": "reach",
    "arm.task": "reach",
    "recorder.task": "reach",
    "controller.rate_hz": 50,
    "operator.leader_rate_hz": 50,
    "arm.state_rate_hz": 50,
    "arm.camera_rate_hz": 10,
    "arm.image_height": 64,
    "arm.image_width": 64,
    "recorder.tolerance_s": 0.25,
}


def test_bag_of_a_live_teleop_session_imports_like_the_recorder(procs, tmp_path) -> None:
    bag, imported, recorded = tmp_path / "session.mcap", tmp_path / "from_bag.zarr", tmp_path / "demos.zarr"
    recorder = procs.python(
        "-u",
        "-m",
        "tests.peers.bag_recorder",
        "--out",
        str(bag),
        "--seconds",
        "400",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert recorder.stdout.readline().strip() == "MIMIC_BAG_READY"
    args = [
        sys.executable,
        "-m",
        "mimic.cli",
        "session",
        "up",
        "teleop_twin",
        "--log-dir",
        str(tmp_path / "logs"),
    ]
    sets = {**SESSION_SETS, "recorder.path": recorded, "operator.results_path": tmp_path / "operator.json"}
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    session = procs.start(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = session.communicate(timeout=300)
    assert session.returncode == 0, out[-4000:]
    os.killpg(recorder.pid, signal.SIGINT)
    summary = json.loads(recorder.communicate(timeout=60)[0].strip().splitlines()[-1])
    for topic in (
        "/robot/joint_states",
        "/robot/joint_command",
        "/leader/joint_states",
        "/objects/state",
        "/cameras/scene/image/compressed",
        "/cameras/wrist/image/compressed",
        "/recorder/status",
    ):
        assert summary["messages"].get(topic, 0) > 0, summary

    r = subprocess.run(
        [sys.executable, "-m", "mimic.cli", "dataset", "import-mcap", str(bag), str(imported)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    v = subprocess.run(
        [sys.executable, "-m", "mimic.cli", "dataset", "validate", str(imported)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert v.returncode == 0, v.stdout + v.stderr
    got, _ = validate(imported)
    ref, _ = validate(recorded)
    assert got.keys == ref.keys and got.attrs["streams"].keys() == ref.attrs["streams"].keys()
    assert got.attrs["robot"] == "franka" and got.attrs["cameras"] == ["scene", "wrist"]
    for key in ("camera0_rgb", "action", "object_state"):
        assert got.array(key).shape[1:] == ref.array(key).shape[1:], key
    # The recorder's own episodes, cut at its start/stop as the bag saw them: the same episodes, each spanning
    # about the same time (the bag and the recorder see a sample arrive at slightly different moments, and a
    # recorder behind on its queue takes in samples stamped before its start), the same motion.
    assert got.n_episodes == ref.n_episodes == 2
    for e in range(2):
        g, f = got.episode(e), ref.episode(e)
        n_got, n_ref = len(g["timestamp"]), len(f["timestamp"])
        assert 0.5 * n_ref <= n_got <= n_ref + 10, (e, n_got, n_ref)
        inside = (g["timestamp"] >= f["timestamp"][0]) & (g["timestamp"] <= f["timestamp"][-1])
        assert inside.sum() >= 0.5 * n_got
        for key in ("robot0_joint_pos", "action"):
            expect = np.stack(
                [
                    np.interp(g["timestamp"][inside], f["timestamp"], f[key][:, j])
                    for j in range(f[key].shape[1])
                ],
                1,
            )
            assert np.abs(expect - g[key][inside]).max() < 0.02, key  # the arm moves ~1 rad per episode
