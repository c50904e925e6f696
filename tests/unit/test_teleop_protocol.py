"""Protocol 2.0 codec (against the ROBOTIS e-manual's example packets and the SDK's own CRC/stuffing),
leader->follower mapping, and the calibration file format."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from dynamixel_sdk import Protocol2PacketHandler
from hypothesis import given, settings
from hypothesis import strategies as st

from mimic.calibration.gello import compute_calibration
from mimic.robots.specs import ARM_NAMES, get_spec
from mimic.teleop import dynamixel as dx
from mimic.teleop.gello_calibration import GelloCalibration, example_calibration
from mimic.teleop.leader import LeaderError, ScriptedLeader
from mimic.teleop.mapping import default_map, trigger_to_width, width_to_trigger


def test_packets_match_the_e_manual_examples() -> None:
    assert dx.instruction_packet(1, dx.PING).hex(" ") == "ff ff fd 00 01 03 00 01 19 4e"
    assert (
        dx.instruction_packet(1, dx.READ, bytes([0x84, 0, 4, 0])).hex(" ")
        == "ff ff fd 00 01 07 00 02 84 00 04 00 1d 15"
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_crc_matches_the_sdk(data: bytes) -> None:
    assert dx.crc16(data) == Protocol2PacketHandler().updateCRC(0, list(data), len(data))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0xFF, 0xFD, 0x00, 0x55, 0x12]), max_size=40))
def test_stuffing_round_trips_and_matches_the_sdk(params: list[int]) -> None:
    payload = bytes([dx.WRITE] + params)
    assert dx.unstuff(dx.stuff(payload)) == payload
    # the SDK stuffs a packet it sends: ours must be byte-identical
    ours = dx.instruction_packet(3, dx.WRITE, bytes(params))
    n = len(params) + 3
    sdk_packet = [0xFF, 0xFF, 0xFD, 0x00, 3, n & 0xFF, n >> 8, dx.WRITE, *params, 0, 0] + [0] * 64
    ph = Protocol2PacketHandler()
    stuffed = ph.addStuffing(sdk_packet)
    total = stuffed[5] + (stuffed[6] << 8) + 7
    crc = ph.updateCRC(0, stuffed, total - 2)
    stuffed[total - 2], stuffed[total - 1] = crc & 0xFF, crc >> 8
    assert bytes(stuffed[:total]) == ours
    packet, used = dx.parse_packet(bytearray(b"\x00\x13" + ours + b"\xff"))
    assert packet is not None and packet.crc_ok and used == len(ours) + 2
    assert packet.servo_id == 3 and packet.instruction == dx.WRITE and packet.params == bytes(params)


def test_parse_flags_bad_crc_and_waits_for_partial_packets() -> None:
    pkt = bytearray(dx.status_packet(7, 0, b"\x01\x02\x03\x04"))
    assert dx.parse_packet(pkt[:9]) == (None, 0)
    pkt[-1] ^= 0x01
    packet, _ = dx.parse_packet(pkt)
    assert packet is not None and not packet.crc_ok and packet.params == b"\x00\x01\x02\x03\x04"
    assert dx.ticks_to_signed(0xFFFFFFFF) == -1 and dx.ticks_to_signed(4095) == 4095


@pytest.mark.parametrize("arm", ARM_NAMES)
def test_map_round_trip_clip_and_trigger(arm: str) -> None:
    spec = get_spec(arm)
    m = default_map(arm)
    assert m.leader_dof == spec.dof == {"franka": 7, "ur5e": 6, "xarm7": 7}[arm]
    q = np.random.default_rng(0).uniform(spec.q_min, spec.q_max)
    np.testing.assert_allclose(m.to_follower(m.to_leader(q)), q)
    for w in (0.0, spec.gripper_max / 3, spec.gripper_max):
        assert trigger_to_width(width_to_trigger(w, spec), spec) == pytest.approx(w)
    assert trigger_to_width(1.7, spec) == spec.gripper_min


def test_calibration_recovers_offsets_signs_and_rejects_bad_files(tmp_path) -> None:
    truth = example_calibration("franka", seed=3)
    home = get_spec("franka").home
    ref_raw = truth.raw_for(home) + 2 * math.pi * np.array([0, 1, -1, 0, 2, 0, 0])  # turn counts differ
    moved_raw = truth.raw_for(home + 0.1) + 2 * math.pi * np.array([0, 1, -1, 0, 2, 0, 0])
    cal = compute_calibration(
        "franka",
        truth.servo_ids[:7],
        ref_raw,
        home,
        moved_raw=moved_raw,
        gripper_id=8,
        gripper_open_raw=3.4,
        gripper_closed_raw=2.7,
    )
    assert [j.sign for j in cal.joints] == [j.sign for j in truth.joints]
    turns = cal.turns_near_reference(truth.raw_for(home + 0.2))
    np.testing.assert_allclose(cal.leader_angles(truth.raw_for(home + 0.2), turns), home + 0.2, atol=1e-9)
    path = cal.save(tmp_path / "c.json")
    assert GelloCalibration.load(path).to_dict() == cal.to_dict()
    with pytest.raises(ValueError, match="servo 2"):
        compute_calibration(
            "franka", truth.servo_ids[:7], ref_raw, home, moved_raw=ref_raw + [0.1, 0, *[0.1] * 5]
        )
    d = json.loads(path.read_text())
    d["joints"][2]["sign"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"bad.json: field joints\[2\].sign"):
        GelloCalibration.load(tmp_path / "bad.json")
    del d["joints"][2]["sign"]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"missing field joints\[2\].sign"):
        GelloCalibration.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not found"):
        GelloCalibration.load(tmp_path / "none.json")


def test_scripted_leader_clips_and_refuses_read_before_connect() -> None:
    spec = get_spec("ur5e")
    leader = ScriptedLeader("ur5e", lambda t: (spec.home + 100.0, 1.0))
    with pytest.raises(LeaderError):
        leader.read()
    with leader:
        r = leader.read()
    np.testing.assert_array_equal(r.q, spec.q_max)
    assert r.gripper == spec.gripper_max
    assert leader.joint_names[-1] == "gripper" and len(leader.joint_names) == 7


def test_gello_driver_and_emulated_bus_read_the_format_without_the_procedure():
    """teleop sits below calibration: the driver and the emulated bus load no mimic.calibration module."""
    code = (
        "import sys, mimic.teleop.gello, mimic.teleop.emulated_bus\n"
        "print(*sorted(m for m in sys.modules if m.startswith('mimic.calibration')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == []
