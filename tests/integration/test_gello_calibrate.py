"""`mimic calibrate gello` as a user runs it: a real process on the emulated bus's pty, answering its prompts
while the test, as the person, moves the leader. The leader's true assembly (offsets, signs, trigger) is
unknown to the CLI; the file it writes must read the true poses back, across a power cycle too."""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import time

import numpy as np

from mimic.robots.specs import get_spec
from mimic.teleop.emulated_bus import EmulatedDynamixelBus
from mimic.teleop.gello import GelloConfig, GelloLeader
from mimic.teleop.gello_calibration import GelloCalibration, example_calibration

TICK = 2 * math.pi / 4096


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 30.0) -> str:
    """Read the CLI's stdout until `text` appears (prompts end without a newline)."""
    out = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in out:
        assert time.monotonic() < deadline, f"CLI never printed {text!r}; got {out.decode()!r}"
        assert proc.poll() is None or select.select([proc.stdout], [], [], 0)[0], (
            f"CLI exited: {out.decode()!r}"
        )
        if select.select([proc.stdout], [], [], 0.2)[0]:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk and proc.poll() is not None:
                break
            out += chunk
    return out.decode()


def test_cli_finds_the_assembly_and_the_file_survives_a_power_cycle(procs, tmp_path) -> None:
    spec = get_spec("franka")
    truth = example_calibration("franka", seed=7)
    hand_error = np.random.default_rng(1).uniform(-1, 1, spec.dof) * math.radians(1.0)  # not exactly at home
    out_path = tmp_path / "gello_franka.json"
    with EmulatedDynamixelBus(truth, baudrate=57_600, start_pose=spec.home) as bus:
        bus.set_joint_targets(spec.home + hand_error, spec.gripper_max)
        proc = procs.python(
            "-m",
            "mimic.cli",
            "calibrate",
            "gello",
            "--port",
            bus.port,
            "--arm",
            "franka",
            "--out",
            str(out_path),
            "--device-id",
            "lab-gello-1",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        _wait_for(proc, "1/3")
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        _wait_for(proc, "2/3")
        bus.set_joint_targets(
            spec.home + 0.2, spec.gripper_min
        )  # every joint a bit positive, trigger squeezed
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        _wait_for(proc, "3/3")
        bus.set_joint_targets(spec.home, spec.gripper_max)
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        text = _wait_for(proc, "wrote")
        assert proc.wait(timeout=30) == 0, text
        saved = json.loads(out_path.read_text())
        cal = GelloCalibration.load(out_path)
        assert saved["device_id"] == "lab-gello-1" and cal.verified_max_error_rad < math.radians(1.5)
        assert [j.sign for j in cal.joints] == [j.sign for j in truth.joints]
        d_offset = (cal.offsets - truth.offsets + math.pi) % (2 * math.pi) - math.pi
        np.testing.assert_allclose(np.abs(d_offset), np.abs(hand_error), atol=2 * TICK)
        assert cal.gripper is not None and abs(cal.gripper.closed_rad - truth.gripper.closed_rad) < 2 * TICK

        # power cycle at a pose where every servo's turn count may restart elsewhere; the file still reads right
        q = np.clip(spec.home + np.linspace(-0.5, 0.5, spec.dof), spec.q_min, spec.q_max)
        bus.set_joint_targets(q, 0.04)
        bus.power_cycle()
        leader = GelloLeader(GelloConfig(port=bus.port, calibration=out_path, follower="franka"))
        with leader:
            r = leader.read()
        np.testing.assert_allclose(r.q, q - hand_error, atol=2 * TICK)
        assert abs(r.gripper - 0.04) < 1e-3


def test_cli_refuses_a_joint_that_did_not_move(procs, tmp_path) -> None:
    spec = get_spec("ur5e")
    with EmulatedDynamixelBus(example_calibration("ur5e"), start_pose=spec.home) as bus:
        proc = procs.python(
            "-m",
            "mimic.calibration.cli",
            "gello",
            "--port",
            bus.port,
            "--arm",
            "ur5e",
            "--out",
            str(tmp_path / "c.json"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        _wait_for(proc, "1/3")
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        _wait_for(proc, "2/3")
        moved = spec.home + 0.2
        moved[3] = spec.home[3]  # the person forgot wrist_1
        bus.set_joint_targets(moved, 0.0)
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        text = _wait_for(proc, "pass --signs")
        assert proc.wait(timeout=30) == 1
        assert "joint 4 (servo 4)" in text and "Traceback" not in text
        assert not (tmp_path / "c.json").exists()


def test_cli_emulate_and_bad_input_are_one_line(procs, tmp_path) -> None:
    out = tmp_path / "xarm.json"
    proc = procs.python(
        "-m",
        "mimic.cli",
        "calibrate",
        "gello",
        "--emulate",
        "--arm",
        "xarm7",
        "--out",
        str(out),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    text = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, text
    cal = GelloCalibration.load(out)
    truth = example_calibration("xarm7")
    assert [j.sign for j in cal.joints] == [
        j.sign for j in truth.joints
    ] and cal.verified_max_error_rad < 1e-3
    for args, message in [
        (["--arm", "kuka", "--port", "/dev/null"], "unknown arm 'kuka'"),
        (["--arm", "franka", "--port", str(tmp_path / "ttyUSB0")], "no such serial port"),
        (["--arm", "franka"], "--port is required"),
        (["--arm", "franka", "--emulate", "--signs", "1,x"], "--signs: expected"),
    ]:
        # mimic.calibration.cli directly: `mimic` finds its verbs by importing packages (torch among them), seconds each
        proc = procs.python(
            "-m",
            "mimic.calibration.cli",
            "gello",
            "--out",
            str(tmp_path / "c.json"),
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        text = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode == 1 and message in text and "Traceback" not in text, text
        assert text.startswith("mimic calibrate gello: ")
        assert len(text.strip().splitlines()) == 1
    assert not (tmp_path / "c.json").exists()
