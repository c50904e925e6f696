"""mimic.workflows.record_expert: expert demos with and without the goal held after success (the operator node's hold_steps)."""

from __future__ import annotations

import numpy as np
import pytest

from mimic.data.dataset import ReplayDataset
from mimic.workflows.record_expert import record_expert_dataset


def test_hold_steps_append_expert_rows_that_stay_at_the_goal(tmp_path) -> None:
    plain = ReplayDataset(
        record_expert_dataset(tmp_path / "plain.zarr", "franka", "reach", 2, progress=False)
    )
    held = ReplayDataset(
        record_expert_dataset(tmp_path / "held.zarr", "franka", "reach", 2, progress=False, hold_steps=4)
    )
    for e in range(2):
        a = plain.episode(e, ["robot0_eef_pos"])["robot0_eef_pos"]
        b = held.episode(e, ["robot0_eef_pos", "object_state"])
        assert len(b["robot0_eef_pos"]) == len(a) + 4
        np.testing.assert_allclose(b["robot0_eef_pos"][: len(a)], a)  # same seeds, same expert: same start
        # the extra rows are observations after success: the TCP stays within the task's 2 cm of the goal
        dist = np.linalg.norm(b["robot0_eef_pos"][len(a) + 1 :] - b["object_state"][len(a) + 1 :], axis=1)
        assert np.all(dist < 0.02), dist


def test_action_noise_perturbs_the_arm_and_records_the_experts_clean_targets(tmp_path) -> None:
    """DART: with noise the arm's joints wander off the expert's path, yet the stored actions stay the
    expert's own smooth targets."""
    noisy = ReplayDataset(
        record_expert_dataset(
            tmp_path / "noisy.zarr", "franka", "reach", 2, progress=False, action_noise=0.02
        )
    )
    plain = ReplayDataset(
        record_expert_dataset(tmp_path / "plain.zarr", "franka", "reach", 2, progress=False)
    )
    for e in range(2):
        n = noisy.episode(e, ["robot0_joint_pos", "action"])
        p = plain.episode(e, ["robot0_joint_pos", "action"])
        # joints one step later vs the target commanded: the noise shows up in the measured state
        lag_noisy = np.abs(n["robot0_joint_pos"][1:] - n["action"][:-1, :7]).mean()
        lag_plain = np.abs(p["robot0_joint_pos"][1:] - p["action"][:-1, :7]).mean()
        assert lag_noisy > lag_plain + 0.005, (lag_noisy, lag_plain)
        # the measured joints jitter with the noise (second difference ~0.028 rad); the stored targets do not
        # (~0.004-0.005 rad, as without noise): they are the expert's clean labels
        jerk_state = np.abs(np.diff(n["robot0_joint_pos"], 2, axis=0)).mean()
        jerk_label = np.abs(np.diff(n["action"][:, :7], 2, axis=0)).mean()
        assert jerk_label < 0.3 * jerk_state, (jerk_label, jerk_state)


def test_action_noise_outside_its_range_is_refused(tmp_path) -> None:
    import pytest

    with pytest.raises(ValueError, match="action_noise"):
        record_expert_dataset(tmp_path / "x.zarr", "franka", "reach", 1, progress=False, action_noise=0.7)


def test_regrasp_episodes_store_the_recovery_from_the_failed_lift_on(tmp_path) -> None:
    """A regrasp demonstration starts with the fingers closed on air beside the cube, then opens, goes back,
    closes on the cube (4 cm wide) and places it: the expert saw its empty gripper and retried."""
    from mimic.sim.expert import MISS_WIDTH_M

    full = ReplayDataset(
        record_expert_dataset(tmp_path / "full.zarr", "franka", "pick_place", 2, progress=False)
    )
    store = ReplayDataset(
        record_expert_dataset(
            tmp_path / "re.zarr", "franka", "pick_place", 2, progress=False, regrasp_fraction=1.0
        )
    )
    assert store.attrs["expert_regrasp_fraction"] == 1.0 and store.attrs["expert_success"] == [True, True]
    for e in range(2):
        ep = store.episode(e, ["robot0_gripper_width", "robot0_eef_pos", "object_state"])
        width = ep["robot0_gripper_width"][:, 0]
        assert width[0] < MISS_WIDTH_M  # closed, holding nothing, at the start of the stored rows
        assert (
            np.linalg.norm(ep["robot0_eef_pos"][0, :2] - ep["object_state"][0, :2]) > 0.03
        )  # beside the cube
        opened = int(np.argmax(width > 0.06))
        assert opened > 0 and np.any(np.abs(width[opened:] - 0.04) < 0.005)  # reopened, then held the cube
        assert len(ep["robot0_gripper_width"]) < len(full.episode(e, ["action"])["action"]) + 40


def test_regrasp_is_refused_outside_pick_place(tmp_path) -> None:
    with pytest.raises(ValueError, match="regrasp_fraction"):
        record_expert_dataset(tmp_path / "x.zarr", "franka", "reach", 1, progress=False, regrasp_fraction=0.5)
