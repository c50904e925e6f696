"""End-effector chunk messages (mimic_ros.msgs) and the deploy's choice of controller mode from the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mimic.policies.checkpoint import CheckpointError, action_space
from mimic_ros.deploy import checkpoint_action_space, controller_mode
from mimic_ros.msgs import EEF_JOINTS, eef_chunk_from_msg, eef_chunk_msg


def rows(n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    aa = Rotation.random(n, random_state=1).as_rotvec()
    return np.column_stack([rng.uniform(-0.5, 0.5, (n, 3)), aa, rng.uniform(0, 0.08, n)])


def test_round_trip_keeps_poses_widths_and_timing() -> None:
    r = rows()
    msg = eef_chunk_msg(1234.5, 0.1, r)
    assert list(msg.joint_names) == list(EEF_JOINTS) and len(msg.points) == 5
    assert all(len(p.transforms) == 2 for p in msg.points)
    t0, dt, back = eef_chunk_from_msg(msg)
    assert t0 == pytest.approx(1234.5, abs=1e-6) and dt == pytest.approx(0.1, abs=1e-9)
    np.testing.assert_allclose(back[:, :3], r[:, :3], atol=1e-12)
    np.testing.assert_allclose(back[:, 6], r[:, 6], atol=1e-12)
    # same rotations (axis-angle is unique below pi, which Rotation.random stays under almost surely)
    rel = Rotation.from_rotvec(back[:, 3:6]) * Rotation.from_rotvec(r[:, 3:6]).inv()
    assert np.all(rel.magnitude() < 1e-9)


def test_malformed_messages_are_refused() -> None:
    def broken(edit) -> None:
        msg = eef_chunk_msg(10.0, 0.1, rows())
        edit(msg)
        assert eef_chunk_from_msg(msg) is None

    broken(lambda m: setattr(m, "joint_names", ["tcp"]))
    broken(lambda m: setattr(m.points[2], "transforms", m.points[2].transforms[:1]))
    broken(lambda m: setattr(m.points[1].transforms[0].rotation, "w", 3.0))  # not a unit quaternion
    broken(lambda m: setattr(m.points[3].time_from_start, "nanosec", 350_000_000))  # uneven spacing
    broken(lambda m: setattr(m.points[0].transforms[0].translation, "x", float("nan")))
    broken(lambda m: setattr(m, "points", []))


def test_deploy_picks_the_controller_mode_from_the_checkpoint_kind(tmp_path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "processor.json").write_text('{"action_repr": "joint"}')
    assert action_space(ckpt) == "joint" and controller_mode(checkpoint_action_space(str(ckpt))) == "chunk"
    (ckpt / "processor.json").write_text('{"action_repr": "tcp_position"}')
    assert controller_mode(checkpoint_action_space(str(ckpt))) == "chunk"
    (ckpt / "processor.json").write_text('{"action_repr": "eef_relative", "gripper_max": 0.08}')
    assert controller_mode(checkpoint_action_space(str(ckpt))) == "eef"
    with pytest.raises(ValueError, match="'joints' is not one of"):
        controller_mode("joints")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        checkpoint_action_space(str(tmp_path / "missing"))
    scripted = "py:tests.integration.test_deploy_eef:ReachEefPolicy"
    assert checkpoint_action_space(scripted) == "eef"
    assert checkpoint_action_space("py:tests.integration.test_deploy_matching:ScriptedPolicy") == "joint"
    with pytest.raises(ValueError, match="no_such"):
        checkpoint_action_space("py:tests.no_such_module:x")
