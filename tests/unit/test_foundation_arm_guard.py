"""CommandGuard: the one refusal rule every backend shares (joint limits, velocity limits, shape, NaN)."""

from __future__ import annotations

import numpy as np
import pytest

from mimic.robots.arm import CommandGuard, CommandRefused
from mimic.robots.spec import ArmSpec, DHRow


def make_spec() -> ArmSpec:
    return ArmSpec(
        name="test2",
        joint_names=("j1", "j2"),
        dh=(DHRow(0, 0, 0), DHRow(0.3, 0, 0)),
        dh_convention="standard",
        q_min=np.array([-1.0, -2.0]),
        q_max=np.array([1.0, 2.0]),
        dq_max=np.array([2.0, 1.0]),
        home=np.zeros(2),
        control_rate_hz=500.0,
        gripper_min=0.0,
        gripper_max=0.08,
        flange_offset=0.0,
        source="test",
    )


def test_accepts_within_limits_and_rate() -> None:
    guard = CommandGuard(make_spec())
    guard.reset(np.zeros(2), t=0.0)
    q = guard.check([0.003, 0.001], gripper=0.04, t=0.002)  # 1.5 and 0.5 rad/s
    assert q.tolist() == [0.003, 0.001]


@pytest.mark.parametrize(
    "target, gripper, match",
    [
        ([1.5, 0.0], None, r"j1 target 1\.5000 rad outside \[-1\.0000, 1\.0000\]"),
        ([0.0, -2.5], None, r"j2 target -2\.5000 rad outside"),
        ([0.0, 0.0, 0.0], None, r"3 joints, the arm has 2"),
        ([np.nan, 0.0], None, r"NaN"),
        ([0.0, 0.0], 0.2, r"gripper target 0\.2000 m outside"),
    ],
)
def test_refuses_outside_spec(target, gripper, match) -> None:
    guard = CommandGuard(make_spec())
    with pytest.raises(CommandRefused, match=match):
        guard.check(target, gripper=gripper, t=0.0)


def test_refuses_velocity_and_keeps_reference() -> None:
    guard = CommandGuard(make_spec())
    guard.reset(np.zeros(2), t=0.0)
    with pytest.raises(
        CommandRefused, match=r"j2 step \+0\.0100 rad in 2\.0 ms = 5\.00 rad/s exceeds the 1\.00"
    ):
        guard.check([0.0, 0.01], t=0.002)
    # The refused target did not move the reference: a small step from zero is still fine.
    guard.check([0.0, 0.001], t=0.003)


def test_stale_reference_never_licenses_a_jump() -> None:
    guard = CommandGuard(make_spec(), max_step_time=0.1)
    guard.reset(np.zeros(2), t=0.0)
    # 10 s later, 0.5 rad would be 0.05 rad/s on average, but it is a jump the arm would take at full speed.
    with pytest.raises(CommandRefused):
        guard.check([0.0, 0.5], t=10.0)
    guard.check([0.0, 0.09], t=10.0)  # within dq_max * max_step_time
