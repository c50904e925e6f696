"""The leader node through a servo alarm: real dynamixel-sdk in a real `mimic_ros.leader_node` process against
the emulated Protocol 2.0 bus on a pty. While the alarm is latched the node stays up and publishes no leader
targets (the follower holds); `~/clear_alarm` answers success=false with the reason while the cause persists
and reboots the servo once it is gone, after which readings flow again."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mimic.teleop.emulated_bus import EmulatedDynamixelBus
from mimic.teleop.gello_calibration import example_calibration
from tests.ros_teardown import close_node

READY = "MIMIC_NODE_READY"
LATCHED = "leader servo alarm, publishing nothing"


class Watcher:
    """The test's ROS node: counts /leader/joint_states, keeps /leader/status, calls /leader/clear_alarm."""

    def __init__(self) -> None:
        rclpy.init()
        self.node = rclpy.create_node("leader_alarm_test")
        self.ex = SingleThreadedExecutor()
        self.ex.add_node(self.node)
        self.count, self.last_stamp, self.status = 0, 0.0, {}
        self.node.create_subscription(JointState, "/leader/joint_states", self._on_state, 50)
        self.node.create_subscription(String, "/leader/status", self._on_status, 5)
        self.clear = self.node.create_client(Trigger, "/leader/clear_alarm")

    def _on_state(self, msg: JointState) -> None:
        self.count += 1
        self.last_stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    def _on_status(self, msg: String) -> None:
        self.status = json.loads(msg.data)

    def spin_until(self, done, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
            self.ex.spin_once(timeout_sec=0.02)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.02)

    def clear_alarm(self) -> Trigger.Response:
        assert self.clear.wait_for_service(timeout_sec=20.0), "/leader/clear_alarm not available"
        future = self.clear.call_async(Trigger.Request())
        self.spin_until(future.done, 20.0, "/leader/clear_alarm answered")
        return future.result()

    def close(self) -> None:
        close_node(self.ex, self.node)


def start_leader(procs, port: str, calibration: str) -> tuple[subprocess.Popen, list[str]]:
    params = {
        "port": port,
        "calibration": calibration,
        "follower": "franka",
        "rate_hz": 50.0,
        "retry_s": 0.05,
    }
    args = ["-u", "-m", "mimic_ros.leader_node", "--ros-args"]
    for k, v in params.items():
        args += ["-p", f"{k}:={json.dumps(v) if isinstance(v, str) else v}"]
    proc = procs.python(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"leader_node exited before ready:\n{''.join(lines)}"
        lines.append(line)
        if line.startswith(READY):
            threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
            return proc, lines
    raise AssertionError(f"leader_node not ready after 60 s:\n{''.join(lines)}")


def test_a_servo_alarm_holds_the_leader_until_clear_alarm_succeeds(procs, tmp_path) -> None:
    cal = example_calibration("franka", baudrate=1_000_000)
    path = cal.save(tmp_path / "gello.json")
    with EmulatedDynamixelBus(cal) as bus:
        proc, log = start_leader(procs, bus.port, str(path))
        w = Watcher()
        try:
            w.spin_until(lambda: w.count >= 20, 30.0, "20 leader readings")

            bus.alarm(4, 0x24, persist=True)  # overheating + overload, and the motor is still hot
            w.spin_until(lambda: w.status.get("alarm") is True, 20.0, "status reports the alarm")
            w.spin_for(0.3)  # anything published before the latch has arrived by now
            held = w.count
            w.spin_for(1.5)
            assert w.count == held, "published leader targets while the alarm was latched"
            assert proc.poll() is None, "".join(log)

            refused = w.clear_alarm()
            assert not refused.success and "\n" not in refused.message
            assert "servo 4" in refused.message and "still in alarm" in refused.message, refused.message
            w.spin_for(0.5)
            assert w.count == held, "published leader targets after a failed clear_alarm"

            bus.alarm(4, 0)  # the motor cooled down: the next reboot comes up clean
            cleared = w.clear_alarm()
            assert cleared.success, cleared.message
            w.spin_until(lambda: w.count >= held + 20, 20.0, "readings resume after clear_alarm")
            assert abs(w.last_stamp - time.time()) < 1.0  # fresh readings, not a backlog
            assert proc.poll() is None
            assert sum(LATCHED in line for line in log) == 1, "".join(log)  # one line per alarm
        finally:
            w.close()


def test_an_alarm_at_start_leaves_the_node_up_and_latched(procs, tmp_path) -> None:
    cal = example_calibration("franka", baudrate=1_000_000)
    path = cal.save(tmp_path / "gello.json")
    with EmulatedDynamixelBus(cal) as bus:
        bus.alarm(2, 0x08)  # motor encoder, before the node opens the bus
        proc, log = start_leader(procs, bus.port, str(path))
        w = Watcher()
        try:
            w.spin_until(lambda: w.status.get("alarm") is True, 20.0, "status reports the alarm")
            assert w.count == 0 and proc.poll() is None
            cleared = w.clear_alarm()  # reboots servo 2 and finishes connecting
            assert cleared.success, cleared.message
            w.spin_until(lambda: w.count >= 10, 20.0, "readings after clear_alarm")
        finally:
            w.close()
