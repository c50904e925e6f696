"""LatencyConfig: the twin's injected delays and the ground truth calibration is checked against."""

import numpy as np
import pytest

from mimic.sim.latency import LatencyConfig


def test_draws_are_constant_plus_uniform_jitter_and_ground_truth_is_their_mean():
    lat = LatencyConfig(camera_s=0.15, joint_state_s=0.01, command_s=0.1, jitter_s=0.02, seed=1)
    draws = np.array([lat.draw(lat.camera_s) for _ in range(4000)])
    assert draws.min() >= 0.15 and draws.max() <= 0.17
    assert abs(draws.mean() - lat.ground_truth()["camera_s"]) < 5e-4
    assert lat.ground_truth() == pytest.approx({"camera_s": 0.16, "joint_state_s": 0.02, "command_s": 0.11})


def test_seeded_and_exact_without_jitter():
    a, b = LatencyConfig(jitter_s=0.01, seed=4), LatencyConfig(jitter_s=0.01, seed=4)
    assert [a.draw(0.1) for _ in range(5)] == [b.draw(0.1) for _ in range(5)]
    assert LatencyConfig(command_s=0.05).draw(0.05) == 0.05


def test_negative_latency_is_a_one_line_error():
    with pytest.raises(ValueError, match="LatencyConfig.command_s must be >= 0"):
        LatencyConfig(command_s=-0.01)
