"""Keyboard end-effector teleop logic (mimic.teleop.keyboard_eef): key -> TCP target, workspace clipping, gripper."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mimic.robots.control import parse_workspace
from mimic.teleop.keyboard_eef import (
    MOTION_KEYS,
    KeyboardEef,
    KeyboardEefConfig,
    box_around,
)

# a TCP pointing down (rotation near pi: the axis-angle representation is the delicate case)
START = np.r_[0.5, 0.0, 0.4, Rotation.from_euler("xyz", [np.pi, 0.0, 0.3]).as_rotvec()]


def make(**kw) -> KeyboardEef:
    return KeyboardEef(KeyboardEefConfig(**kw), START, gripper=0.08)


@pytest.mark.parametrize("key", sorted(k for k, v in MOTION_KEYS.items() if v[0] == "pos"))
def test_position_keys_step_one_axis_in_the_base_frame(key):
    kb = make(step_m=0.02)
    res = kb.press(key)
    _, axis, sign = MOTION_KEYS[key]
    expected = START[:3].copy()
    expected[axis] += sign * 0.02
    assert res.changed and not res.clipped and res.refused is None
    np.testing.assert_allclose(kb.row()[:3], expected, atol=1e-12)
    assert (Rotation.from_rotvec(kb.row()[3:6]) * Rotation.from_rotvec(START[3:]).inv()).magnitude() < 1e-9


@pytest.mark.parametrize("key", sorted(k for k, v in MOTION_KEYS.items() if v[0] == "rot"))
def test_rotation_keys_turn_about_a_base_axis_in_place(key):
    kb = make(step_rad=0.1)
    kb.press(key)
    _, axis, sign = MOTION_KEYS[key]
    delta = Rotation.from_rotvec(kb.row()[3:6]) * Rotation.from_rotvec(START[3:]).inv()  # base-frame delta
    expected = np.zeros(3)
    expected[axis] = sign * 0.1
    np.testing.assert_allclose(delta.as_rotvec(), expected, atol=1e-9)
    np.testing.assert_allclose(kb.row()[:3], START[:3], atol=1e-12)


def test_opposite_keys_cancel_and_the_bindings_are_the_documented_ones():
    assert {k: v[:2] for k, v in MOTION_KEYS.items()} == {
        "w": ("pos", 0),
        "s": ("pos", 0),
        "a": ("pos", 1),
        "d": ("pos", 1),
        "r": ("pos", 2),
        "f": ("pos", 2),
        "i": ("rot", 0),
        "k": ("rot", 0),
        "j": ("rot", 1),
        "l": ("rot", 1),
        "u": ("rot", 2),
        "o": ("rot", 2),
    }
    kb = make()
    for a, b in ("ws", "ad", "rf", "ik", "jl", "uo"):
        kb.press(a)
        kb.press(b)
    np.testing.assert_allclose(kb.row()[:3], START[:3], atol=1e-12)
    assert (Rotation.from_rotvec(kb.row()[3:6]) * Rotation.from_rotvec(START[3:]).inv()).magnitude() < 1e-9


def test_space_toggles_the_gripper_from_its_measured_state():
    kb = KeyboardEef(KeyboardEefConfig(gripper_open_m=0.08, gripper_closed_m=0.0), START, gripper=0.079)
    assert kb.gripper == 0.08
    assert kb.press(" ").changed and kb.row()[6] == 0.0
    kb.press(" ")
    assert kb.row()[6] == 0.08
    closed = KeyboardEef(KeyboardEefConfig(), START, gripper=0.01)  # measured nearly closed: starts closed
    assert closed.gripper == 0.0


def test_position_stops_at_the_workspace_box():
    lo, hi = box_around(START, 0.05)
    kb = make(step_m=0.02, workspace_lo=lo, workspace_hi=hi)
    results = [kb.press("f") for _ in range(5)]  # 10 cm down, box allows 5 cm
    assert [r.clipped for r in results] == [False, False, True, True, True]
    assert kb.row()[2] == pytest.approx(START[2] - 0.05)
    np.testing.assert_allclose(kb.row()[:2], START[:2])
    kb.press("r")  # back in: a full step from the face
    assert kb.row()[2] == pytest.approx(START[2] - 0.03)
    assert kb.counts == {"keys": 6, "clipped": 3, "unreachable": 0}


def test_a_target_outside_the_box_may_move_in_but_never_further_out():
    lo = (0.0, -0.1, 0.0)
    hi = (0.45, 0.1, 0.5)  # START x = 0.5 is already beyond hi x
    kb = make(step_m=0.02, workspace_lo=lo, workspace_hi=hi)
    assert kb.press("w").clipped and kb.row()[0] == pytest.approx(0.5)
    kb.press("s")
    assert kb.row()[0] == pytest.approx(0.48)
    kb.press("a")  # other axes unaffected
    assert kb.row()[1] == pytest.approx(0.02)


def test_unreachable_targets_are_refused_and_the_target_stays():
    kb = KeyboardEef(KeyboardEefConfig(), START, 0.08, reachable=lambda row: row[2] > 0.385)
    kb.press("f")
    res = kb.press("f")
    assert res.refused == "unreachable" and not res.changed
    assert kb.row()[2] == pytest.approx(0.39)
    assert kb.counts["unreachable"] == 1


def test_catch_up_and_unknown_keys():
    kb = make()
    kb.press("w")
    assert kb.press("c").refused  # no measurement given
    moved = START + np.r_[0.1, 0, 0, 0, 0, 0]
    assert kb.press("c", measured_tcp=moved).changed
    np.testing.assert_allclose(kb.row()[:6], moved)
    res = kb.press("x")
    assert not res.known and not res.changed and kb.counts["keys"] == 3


def test_config_and_box_parsing_errors():
    with pytest.raises(ValueError):
        KeyboardEefConfig(step_m=0.0)
    with pytest.raises(ValueError):
        KeyboardEefConfig(gripper_open_m=0.0)
    with pytest.raises(ValueError):
        KeyboardEefConfig(workspace_lo=(0, 0, 0))
    with pytest.raises(ValueError):
        KeyboardEefConfig(workspace_lo=(0, 0, 1), workspace_hi=(1, 1, 0))
    assert parse_workspace("") is None
    assert parse_workspace("0,-1,0.1,1,1,0.9") == ((0.0, -1.0, 0.1), (1.0, 1.0, 0.9))
    for bad in ("1,2,3", "0,0,0,0,1,1", "a,b,c,d,e,f"):
        with pytest.raises(ValueError):
            parse_workspace(bad)
