"""DatasetWriter: mixed-rate alignment round trip, tolerance errors, discard and reopen."""

from __future__ import annotations

import numpy as np
import pytest

from mimic.data.dataset import ReplayDataset
from mimic.data.validate import validate
from mimic.data.writer import DatasetWriter, StreamSpec

FPS = 10.0


def streams(img=16):
    return {
        "robot0_joint_pos": StreamSpec((3,), tolerance_s=0.01),
        "action": StreamSpec((4,), tolerance_s=0.03),
        "camera0_rgb": StreamSpec((img, img, 3), "uint8", "image", tolerance_s=0.02),
    }


def frame(i, img=16):
    return np.full((img, img, 3), (i % 36) * 7, np.uint8)


def record(w, t0, dur, jitter=None):
    """joints 500 Hz (q = [t, 2t, sin t]), action 50 Hz, camera 30 Hz with optional capture jitter."""
    rng = np.random.default_rng(0)
    w.begin_episode()
    events = []
    events += [(t0 + i / 500, "robot0_joint_pos", i) for i in range(int(dur * 500))]
    events += [(t0 + i / 50 + 0.002, "action", i) for i in range(int(dur * 50))]
    events += [
        (t0 + i / 30 + (rng.uniform(-jitter, jitter) if jitter else 0), "camera0_rgb", i)
        for i in range(int(dur * 30))
    ]
    for t, key, i in sorted(events):
        if key == "robot0_joint_pos":
            w.append(key, t, [t, 2 * t, np.sin(t)])
        elif key == "action":
            w.append(key, t, [t, t, t, 1.0])
        else:
            w.append(key, t, frame(i))
    return w.end_episode()


def test_mixed_rate_round_trip(tmp_path):
    path = tmp_path / "d.zarr"
    w = DatasetWriter.create(
        path,
        FPS,
        streams(),
        {
            "robot": "franka",
            "joint_names": ["a", "b", "c"],
            "latencies": {"camera0_rgb": 0.03},
            "task": "reach",
        },
    )
    n0 = record(w, 100.0, 2.0, jitter=0.003)
    n1 = record(w, 200.0, 1.5)
    w.close()
    ds, stats = validate(path)
    assert ds.n_episodes == 2 and list(ds.episode_ends) == [n0, n0 + n1]
    assert n0 >= 19 and n1 >= 14
    assert ds.attrs["schema_version"] == 1 and ds.attrs["fps"] == FPS and ds.attrs["robot"] == "franka"
    assert ds.attrs["latencies"] == {"camera0_rgb": 0.03}
    ep = ds.episode(0)
    t = ep["timestamp"]
    assert np.allclose(np.diff(t), 1 / FPS)
    # lowdim streams are linearly interpolated onto the grid: exact for a linear signal
    assert np.allclose(ep["robot0_joint_pos"][:, 0], t, atol=1e-9)
    assert np.allclose(ep["robot0_joint_pos"][:, 2], np.sin(t), atol=1e-5)
    assert np.allclose(ep["action"][:, 0], t, atol=1e-9)
    # images: nearest frame; the recorded capture time says which one and is within tolerance
    cam_t = ep["camera0_rgb_t"]
    assert np.all(np.abs(cam_t - t) <= 0.5 / 30 + 0.003 + 1e-9)
    assert stats.max_error_s["camera0_rgb"] <= 0.02
    idx = np.round((ep["camera0_rgb"][:, 0, 0, 0].astype(int)) / 7).astype(int)
    expected = np.round((cam_t - 100.0) * 30).astype(int)
    assert np.all(np.abs(idx - expected % 36) <= 1)  # JPEG may move a flat value by a level or two
    assert np.all(np.abs(ep["robot0_joint_pos_t"] - t) <= 1 / 1000 + 1e-9)


def test_tolerance_violation_names_stream_and_gap(tmp_path):
    w = DatasetWriter.create(tmp_path / "d.zarr", FPS, streams(), {"robot": "ur5e", "joint_names": []})
    w.begin_episode()
    w.append("action", 0.0, [0, 0, 0, 0])
    w.append("camera0_rgb", 0.0, frame(0))
    w.append("robot0_joint_pos", 0.0, [0, 0, 0])
    with pytest.raises(ValueError, match=r"stream 'robot0_joint_pos'.*ms from grid time"):
        w.append("camera0_rgb", 0.1, frame(1))
        w.append("action", 0.1, [0, 0, 0, 0])
        w.append("robot0_joint_pos", 0.3, [0, 0, 0])  # 200 ms hole in the joint stream
    w.discard_episode()
    with pytest.raises(ValueError, match="expects shape"):
        w.begin_episode()
        w.append("action", 0.0, [0, 0])
    with pytest.raises(KeyError, match="unknown stream 'nope'"):
        w.append("nope", 0.0, 1)


def test_discard_and_reopen_trim_uncommitted_rows(tmp_path):
    path = tmp_path / "d.zarr"
    w = DatasetWriter.create(path, FPS, streams(), {"robot": "xarm7", "joint_names": []})
    n0 = record(w, 0.0, 1.0)
    # a discarded episode leaves nothing behind
    w.begin_episode()
    for i in range(40):
        for k, v in (("robot0_joint_pos", [0, 0, 0]), ("action", [0, 0, 0, 0]), ("camera0_rgb", frame(i))):
            w.append(k, 10 + i / 40, v)
    w.flush()
    w.discard_episode()
    assert ReplayDataset(path).array("timestamp").shape[0] == n0
    # an episode flushed but never committed (as if the process died) is trimmed on open()
    w.begin_episode()
    for i in range(40):
        for k, v in (("robot0_joint_pos", [0, 0, 0]), ("action", [0, 0, 0, 0]), ("camera0_rgb", frame(i))):
            w.append(k, 20 + i / 40, v)
    w.flush()
    del w
    assert ReplayDataset(path).n_steps == n0  # readers already ignore the tail
    w2 = DatasetWriter.open(path)
    assert w2.dropped_steps == 10
    assert ReplayDataset(path).array("camera0_rgb").shape[0] == n0
    n1 = record(w2, 30.0, 1.0)
    assert list(validate(path)[0].episode_ends) == [n0, n0 + n1]


def test_write_episodes_batch_equals_one_by_one_and_refuses_a_bad_episode_whole(tmp_path):
    """merge/split write many episodes per zarr operation: the store must match one write per episode, and
    a bad episode anywhere in a batch must leave nothing of that batch behind."""
    src = tmp_path / "src.zarr"
    w = DatasetWriter.create(src, FPS, streams(), {"robot": "franka", "joint_names": ["a", "b", "c"]})
    for k in range(3):
        record(w, 100.0 * (k + 1), 1.0 + 0.3 * k)
    w.close()
    ds = ReplayDataset(src)
    eps = [ds.episode(i) for i in range(ds.n_episodes)]
    one, many = tmp_path / "one.zarr", tmp_path / "many.zarr"
    for path, batched in ((one, False), (many, True)):
        out = DatasetWriter.create(path, FPS, streams(), {"robot": "franka", "joint_names": ["a", "b", "c"]})
        lengths = out.write_episodes(eps) if batched else [out.write_episode(e) for e in eps]
        assert lengths == list(np.diff(np.r_[0, ds.episode_ends]))
        short = dict(eps[0], action=eps[0]["action"][:-1])
        with pytest.raises(ValueError, match="inconsistent"):
            out.write_episodes([eps[1], short])
        out.close()
    a, b = validate(one)[0], validate(many)[0]
    assert list(a.episode_ends) == list(b.episode_ends) == list(ds.episode_ends)
    for key in ds.keys:
        assert np.array_equal(a.read(key), b.read(key)) and np.array_equal(a.read(key), ds.read(key))
