"""mimic.policies.tcp_position: a policy trained on TCP positions (forward kinematics of the demonstrated joint
targets) deploys as joint rows through IK, and its config is checked."""

from __future__ import annotations

import numpy as np
import pytest

from mimic.policies.config import ConfigError, PolicyConfig, load_train_config
from mimic.policies.tcp_position import TcpPositionPolicy, tcp_actions
from mimic.robots.ik import IKSolver


@pytest.fixture(scope="module")
def reach_store(tmp_path_factory):
    from mimic.workflows.record_expert import record_expert_dataset

    return record_expert_dataset(
        tmp_path_factory.mktemp("store") / "reach.zarr", "franka", "reach", episodes=3, progress=False
    )


def test_fk_of_the_demonstrated_targets_is_where_the_tcp_goes(reach_store):
    from mimic.data.dataset import ReplayDataset

    ep = ReplayDataset(reach_store).episode(0, ["action", "robot0_eef_pos", "robot0_joint_pos"])
    rows = tcp_actions(ep["action"], IKSolver.for_arm("franka"))
    assert rows.shape == (len(ep["action"]), 4)
    np.testing.assert_allclose(rows[:, 3], ep["action"][:, -1])  # the gripper column passes through
    # the same kinematics as the twin's TCP site: measured joints map onto the measured TCP (to a physics
    # sub-step: mj_step leaves site positions from before its integration, joint positions from after)
    measured = np.c_[ep["robot0_joint_pos"], ep["action"][:, -1]]
    np.testing.assert_allclose(
        tcp_actions(measured, IKSolver.for_arm("franka"))[:, :3], ep["robot0_eef_pos"], atol=1e-3
    )
    with pytest.raises(ValueError, match="needs 8"):
        tcp_actions(ep["action"][:, :5], IKSolver.for_arm("franka"))


def test_trained_tcp_policy_deploys_joint_rows_that_reach_its_tcp_rows(reach_store, tmp_path):
    from mimic.policies import load_deployable, load_policy
    from mimic.workflows.train import train

    cfg = load_train_config(
        None,
        [
            f"dataset={reach_store}",
            f"run_dir={tmp_path / 'run'}",
            "steps=30",
            "batch_size=32",
            "val_every=30",
            "ckpt_every=30",
            "threads=1",
            "policy.obs_keys=[robot0_eef_pos,object_state]",
            "policy.horizon=8",
            "policy.n_action_steps=4",
            "policy.action_repr=tcp_position",
            "policy.unet.down_dims=[16,32]",
            "policy.unet.time_embed_dim=16",
        ],
    )
    ckpt = train(cfg, progress=False) / "checkpoint"
    inner = load_policy(ckpt)
    assert inner.action_dim == 4 and inner.normalizer.state_dict()["action.scale"].shape == (4,)
    policy = load_deployable(ckpt)
    assert isinstance(policy, TcpPositionPolicy) and policy.action_space == "joint" and policy.action_dim == 8
    assert "robot0_joint_pos" in policy.obs_keys  # the IK seed joins the window
    from mimic.data.dataset import ReplayDataset

    ep = ReplayDataset(reach_store).episode(0, list(policy.obs_keys))
    window = {k: v[:2].astype(np.float64) for k, v in ep.items()}
    assert inner.predict({k: window[k] for k in inner.obs_keys}).shape == (8, 4)
    assert policy.predict(window).shape == (8, 8)
    # IK: the demonstrated TCP rows (reachable) come back as joint rows whose TCP is on them
    tcp_rows = tcp_actions(ReplayDataset(reach_store).episode(0, ["action"])["action"][:8], policy.ik)
    joints = policy.to_joints(tcp_rows, window["robot0_joint_pos"][-1])
    assert policy.counters.unreachable_rows == 0
    assert np.abs(tcp_actions(joints, policy.ik)[:, :3] - tcp_rows[:, :3]).max() < 1e-4
    np.testing.assert_allclose(joints[:, -1], tcp_rows[:, 3])
    # an unreachable row (1.5 m up) repeats the last reachable joints and is counted
    far = tcp_rows.copy()
    far[5:, 2] = 1.5
    held = policy.to_joints(far, window["robot0_joint_pos"][-1])
    assert policy.counters.unreachable_rows == 3 and np.allclose(held[5:, :-1], held[4, :-1])


def test_action_repr_is_checked():
    with pytest.raises(ConfigError, match="action_repr"):
        PolicyConfig(action_repr="cartesian").validate()
    with pytest.raises(ConfigError, match="action_relative_to"):
        PolicyConfig(action_repr="tcp_position", action_relative_to="robot0_joint_pos").validate()
