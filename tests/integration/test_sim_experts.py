"""Scripted experts solve the twin tasks (physics only, no rendering, to stay affordable in CI).

CI runs 100 seeds of the contact tasks and of track on the Franka and 20 seeds of every other (task, arm) pair; the
100-seed numbers for every pair are measured by hand (`mimic.sim.expert` docstring lists them).
"""

from collections import Counter

import numpy as np
import pytest

from mimic.robots.specs import ARM_NAMES
from mimic.sim import TASKS, make_env, make_expert
from mimic.sim.expert import run_expert_episode

ROS_KEYS = ("robot0_joint_pos", "robot0_gripper_width", "object_state")  # what a ROS session publishes


def rollouts(task: str, arm: str, seeds: range, keys: tuple[str, ...] | None = None) -> tuple[float, Counter]:
    """(success rate, how often the push_t expert went round the block each way) over `seeds`."""
    env = make_env(task, arm, cameras=())
    expert = make_expert(env)
    ok, sides = 0, Counter()
    for s in seeds:
        obs = env.reset(seed=s)
        expert.reset()
        info = {"success": False}
        for _ in range(env.max_steps):
            view = obs if keys is None else {k: obs[k] for k in keys}
            obs, _, term, trunc, info = env.step(expert.act(view))
            if term or trunc:
                break
        ok += info["success"]
        sides.update(expert.route_sides)
    return ok / len(seeds), sides


def test_pick_place_franka_100_seeds():
    assert rollouts("pick_place", "franka", range(100))[0] >= 0.95


def test_push_t_franka_100_seeds_going_round_either_side():
    rate, sides = rollouts("push_t", "franka", range(100))
    assert rate >= 0.95
    # Multimodal demonstrations: the pusher goes round the block both ways, neither way rare.
    assert min(sides[1], sides[-1]) >= 0.2 * (sides[1] + sides[-1]), sides


def test_track_franka_100_seeds():
    assert rollouts("track", "franka", range(100))[0] >= 0.95


@pytest.mark.parametrize(
    ("task", "arm"),
    [
        (t, a)
        for t in TASKS
        for a in ARM_NAMES
        if (t, a) not in (("pick_place", "franka"), ("push_t", "franka"), ("track", "franka"))
    ],
)
def test_expert_20_seeds(task, arm):
    assert rollouts(task, arm, range(1000, 1020))[0] >= 0.95


@pytest.mark.parametrize("task", ["pick_place", "push_t", "track"])
def test_expert_runs_on_what_a_ros_session_publishes(task):
    """The operator node drives the expert from /robot/joint_states and /objects/state only."""
    assert rollouts(task, "ur5e", range(2000, 2003), keys=ROS_KEYS)[0] == 1.0


def test_push_t_layout_and_success_criterion():
    from mimic.sim.env import PUSH_T_GOAL

    env = make_env("push_t", "xarm7", cameras=())
    obs = env.reset(seed=3)
    state = obs["object_state"]
    assert state.shape == (6,) and -np.pi <= state[2] < np.pi
    np.testing.assert_array_equal(state[3:], PUSH_T_GOAL)
    assert obs["robot0_gripper_width"][0] < 1e-3  # fingers closed: a pusher
    assert not env.success() and env.coverage() < 0.5
    adr = env.model.joint("tee").qposadr[0]
    for dx, ok in ((0.0, True), (0.0008, True), (0.005, False)):
        x, y, yaw = PUSH_T_GOAL
        env.data.qpos[adr : adr + 7] = [x + dx, y, 0, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        env.data.qvel[:] = 0
        _, reward, term, _, info = env.step(np.r_[env.spec.home, 0.0])
        assert env.success() == ok == term == info["success"]
        assert info["coverage"] == pytest.approx(env.coverage()) and 0 < reward <= 1.0


def test_reset_is_seeded():
    env = make_env("pick_place", "xarm7", cameras=())
    a, b = env.reset(seed=7)["object_state"], env.reset(seed=7)["object_state"]
    c = env.reset(seed=8)["object_state"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_observation_and_images_match_the_contract():
    env = make_env("pick_place", "franka", cameras=("scene", "wrist"), image_size=(48, 64))
    obs = env.reset(seed=0)
    assert obs["robot0_joint_pos"].shape == (7,) and obs["robot0_gripper_width"].shape == (1,)
    assert obs["camera0_rgb"].shape == (48, 64, 3) and obs["camera0_rgb"].dtype == np.uint8
    assert obs["camera1_rgb"].std() > 0
    with pytest.raises(ValueError, match="expected 8"):
        env.step(np.zeros(3))
    env.close()


def test_env_latency_delays_observations_and_commands():
    from mimic.sim.latency import LatencyConfig

    live = make_env("reach", "franka", cameras=())
    late = make_env("reach", "franka", cameras=(), latency=LatencyConfig(joint_state_s=0.1, command_s=0.05))
    obs_live, obs_late = live.reset(seed=0), late.reset(seed=0)
    target = obs_live["robot0_joint_pos"] + np.r_[0.1, np.zeros(6)]
    action = np.concatenate([target, [0.08]])
    live.step(action)
    late.step(action)
    # The 50 ms command delay leaves the delayed arm clearly behind after the first control period.
    assert late.data.qpos[0] < live.data.qpos[0] - 5e-3
    for _ in range(3):
        obs_live, *_ = live.step(action)
        prev_late_truth = late.data.qpos[:7].copy()
        obs_late, *_ = late.step(action)
    # A 0.1 s joint-state delay at 10 Hz shows exactly the previous step's true state.
    np.testing.assert_allclose(obs_late["robot0_joint_pos"], prev_late_truth, atol=1e-12)


def test_command_latency_longer_than_a_control_period_delays_and_never_drops():
    from mimic.sim.latency import LatencyConfig

    env = make_env("reach", "franka", cameras=(), latency=LatencyConfig(command_s=0.15))
    obs = env.reset(seed=0)
    q0 = env.data.qpos[0]
    action = np.concatenate([obs["robot0_joint_pos"] + np.r_[0.1, np.zeros(6)], [0.08]])
    env.step(action)
    assert abs(env.data.qpos[0] - q0) < 1e-4  # 100 ms in: not applied yet
    env.step(action)
    assert env.data.qpos[0] > q0 + 5e-3  # applied 150 ms after it was sent, moving by 200 ms
    for _ in range(10):
        env.step(action)
    assert env.data.qpos[0] == pytest.approx(q0 + 0.1, abs=2e-3)


def test_experts_cope_with_injected_latency():
    """130 ms of command + joint-state latency (with jitter): the experts still finish their tasks."""
    from mimic.sim.latency import LatencyConfig

    for task in ("pick_place", "push_t"):
        env = make_env(
            task,
            "franka",
            cameras=(),
            latency=LatencyConfig(joint_state_s=0.03, command_s=0.1, jitter_s=0.01, seed=1),
        )
        expert = make_expert(env)
        for s in range(3):
            assert run_expert_episode(env, expert, s)[0], (task, s)


def test_push_t_expert_seed_gives_different_demonstrations_from_one_start():
    """Like people, the expert sometimes goes round the block the other way from the very same state."""
    env = make_env("push_t", "franka", cameras=())
    expert = make_expert(env)
    ways = set()
    for k in range(4):
        assert run_expert_episode(env, expert, 4, expert_seed=k)[0]
        ways.add(tuple(expert.route_sides))
    assert len(ways) >= 2
