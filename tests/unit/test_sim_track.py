"""The track task: a goal moving round a circle as a function of simulated time, success held for 1 s,
the goal observation delayed like every other observation, and timing that decides success."""

from __future__ import annotations

import numpy as np
import pytest

from mimic.sim import make_env
from mimic.sim.env import TRACK_HOLD_S, TRACK_RADIUS_M, TRACK_SPEED_M_S, TRACK_TOL_M
from mimic.sim.expert import Expert, run_expert_episode, track_ahead
from mimic.sim.latency import LatencyConfig


def test_goal_runs_counter_clockwise_round_a_seeded_circle():
    env = make_env("track", "franka", cameras=())
    s0 = env.reset(seed=3)["object_state"]
    assert s0.shape == (6,)
    np.testing.assert_allclose(np.linalg.norm(s0[3:]), TRACK_SPEED_M_S)
    np.testing.assert_array_equal(env.reset(seed=3)["object_state"], s0)
    assert not np.allclose(env.reset(seed=4)["object_state"], s0)
    env.reset(seed=3)
    hold = np.r_[env.spec.home, env.spec.gripper_max]
    states = [env.step(hold)[0]["object_state"] for _ in range(10)]
    p1 = states[-1][:3]
    assert p1[2] == s0[2] and np.all(np.array(states)[:, 5] == 0)  # horizontal
    # 1 s along the circle: the chord of an arc of speed / radius rad, turning left (counter-clockwise).
    arc = TRACK_SPEED_M_S * 1.0 / TRACK_RADIUS_M
    assert np.linalg.norm(p1 - s0[:3]) == pytest.approx(2 * TRACK_RADIUS_M * np.sin(arc / 2), rel=1e-6)
    v, dp = s0[3:5], p1[:2] - s0[:2]
    assert v[0] * dp[1] - v[1] * dp[0] > 0
    # The expert's prediction from one observation is the goal's true future.
    np.testing.assert_allclose(track_ahead(s0, 1.0), p1, atol=1e-9)


def test_success_needs_the_tcp_near_the_current_goal_for_the_hold_time():
    env = make_env("track", "xarm7", cameras=())
    env.reset(seed=0)
    d, tcp = env.data, env.tcp_site

    def check(t: float, offset: float) -> bool:
        d.time = t
        d.site_xpos[tcp] = env.track_goal(t)[0] + [offset, 0, 0]  # placed by hand, as kinematics would
        return env.success()

    near = 0.5 * TRACK_TOL_M
    assert not check(0.0, near)
    assert not check(0.5, near)
    assert not check(0.6, 2 * TRACK_TOL_M)  # one check out of tolerance restarts the clock
    assert not check(0.7, near)
    assert not check(0.7 + TRACK_HOLD_S - 0.05, near)
    assert check(0.7 + TRACK_HOLD_S, near)
    env.reset(seed=0)
    assert not check(0.0, near)


def test_goal_observation_is_delayed_with_the_other_observations():
    late = make_env("track", "franka", cameras=(), latency=LatencyConfig(joint_state_s=0.2))
    late.reset(seed=1)
    hold = np.r_[late.spec.home, late.spec.gripper_max]
    for _ in range(5):
        obs, *_ = late.step(hold)
    pos, vel = late.track_goal(late.data.time - 0.2)
    np.testing.assert_allclose(obs["object_state"], np.r_[pos, vel], atol=1e-12)


def rollouts(lookahead_s: float, latency: LatencyConfig | None, seeds=range(5)) -> float:
    env = make_env("track", "franka", cameras=(), latency=latency)
    expert = Expert(env, track_lookahead_s=lookahead_s)
    return sum(run_expert_episode(env, expert, s)[0] for s in seeds) / len(seeds)


def test_timing_decides_success():
    """150 ms old observations and 100 ms late commands: the expert succeeds when it aims that much further
    ahead (what latency matching does for a policy) and fails when it does not."""
    lat = dict(joint_state_s=0.15, command_s=0.1)
    assert rollouts(0.13, None) == 1.0
    assert rollouts(0.13 + 0.25, LatencyConfig(**lat)) == 1.0
    assert rollouts(0.13, LatencyConfig(**lat)) == 0.0


def test_twin_arm_reports_objects_as_old_as_asked_and_forgets_the_last_episode():
    import time

    from mimic.sim.twin import TwinArm

    arm = TwinArm("franka", task="track", seed=5, realtime=False)
    arm.connect()
    try:
        arm.advance(0.5)
        time.sleep(0.2)
        arm.advance(0.5)
        t_then, then = arm.object_state(0.1)
        t_now, now = arm.object_state(0.0)
        assert t_now - t_then >= 0.2
        np.testing.assert_allclose(then, np.concatenate(arm.env.track_goal(0.5)), atol=1e-9)
        np.testing.assert_allclose(now, np.concatenate(arm.env.track_goal(1.0)), atol=1e-9)
        arm.disconnect()
        arm.seed = 6
        arm.connect()  # a new episode: even an old reading shows the new one's start
        np.testing.assert_allclose(
            arm.object_state(0.1)[1], np.concatenate(arm.env.track_goal(0.0)), atol=1e-12
        )
    finally:
        arm.disconnect()


def test_deploy_delays_objects_and_matches_them_only_with_matching_on():
    from mimic_ros.deploy import build_parser, session_overrides

    def sets(*argv: str) -> dict[str, str]:
        args = build_parser().parse_args(["ckpt", "--task", "track", *argv])
        return dict(o.split("=", 1) for o in session_overrides(args, "r.json"))

    s = sets("--object-latency-s", "0.15")
    assert s["arm.object_latency_s"] == s["policy.object_latency_s"] == "0.15" and s["arm.task"] == '"track"'
    assert sets()["arm.object_latency_s"] == "0.0"  # default: objects live, as before
    s = sets("--object-latency-s", "0.15", "--no-matching")
    assert s["arm.object_latency_s"] == "0.15" and s["policy.matching"] == "False"
