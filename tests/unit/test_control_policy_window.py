"""The policy node's timing logic: capture-time alignment of the observation window and chunk stamping."""

from __future__ import annotations

import numpy as np

from mimic.policies.realtime import timed_chunk
from mimic_ros.policy_node import StreamBuffer, align_window


def test_window_ends_at_newest_time_all_streams_cover_using_capture_times() -> None:
    cam, joints = StreamBuffer(latency_s=0.150), StreamBuffer(latency_s=0.0)
    for k in range(20):  # both stream the value of a clock; the camera's frames arrive 150 ms late
        t = 10.0 + 0.05 * k
        cam.add(t + 0.150, np.array([t]))
        joints.add(t, np.array([t]))
    t_obs, obs = align_window({"cam": cam, "joints": joints}, n_obs_steps=2, dt=0.1)
    assert abs(t_obs - 10.95) < 1e-9  # the camera's newest capture; joints reach 10.95 too
    np.testing.assert_allclose(obs["cam"][:, 0], [10.85, 10.95])
    np.testing.assert_allclose(obs["joints"][:, 0], [10.85, 10.95])
    assert align_window({"cam": cam, "empty": StreamBuffer(0.0)}, 2, 0.1) is None


def test_chunk_drops_rows_that_can_no_longer_execute_and_stamps_the_first_kept() -> None:
    actions = np.arange(16, dtype=float)[:, None].repeat(8, axis=1)
    # Row 1 is aligned with t_obs=100; ready 50 ms later, the arm needs 100 ms: rows due before 100.15 go.
    t_start, rows = timed_chunk(actions, t_obs=100.0, dt=0.1, action_offset=1, t_ready=100.05, lead_s=0.1)
    assert abs(t_start - 100.2) < 1e-9 and rows[0, 0] == 3.0 and len(rows) == 13
    assert timed_chunk(actions, 100.0, 0.1, 1, t_ready=110.0, lead_s=0.1) is None


def test_workspace_parameter_uses_the_spec_kinematics() -> None:
    import pytest

    from mimic.robots.kinematics import forward_kinematics
    from mimic.robots.specs import get_spec
    from mimic_ros.controller_node import workspace_box

    spec = get_spec("franka")
    p = forward_kinematics(spec, spec.home)[:3, 3]
    box = workspace_box(",".join(str(x) for x in [*(p - 0.05), *(p + 0.05)]), spec)
    assert box.contains(spec.home)
    q = spec.home.copy()
    q[0] += 0.5  # swings the flange ~0.15 m sideways
    assert not box.contains(q)
    assert workspace_box("", spec) is None
    with pytest.raises(ValueError, match="workspace"):
        workspace_box("1,2,3", spec)
