"""Leader node: a GELLO arm (mimic.teleop.gello) on /leader/joint_states, in the follower's joint space.

Each reading is published stamped with its capture time. On a `LeaderError` (a servo silent, a bad CRC,
the cable pulled) the node publishes nothing, so the controller's follow mode goes stale and holds the
arm; it logs the servo at fault and retries every `retry_s`, reconnecting if the port went away.

A servo hardware alarm (overheating, input voltage, overload) is not retried: the leader latches it, the node
keeps running but publishes nothing until the operator calls `~/clear_alarm` (std_srvs/Trigger), which reboots
the servo and checks every servo; it answers success=false with the one-line reason while the alarm persists.
An alarm already present at start leaves the node up and latched the same way.

    python -m mimic_ros.leader_node --ros-args -p port:=/dev/ttyUSB0 -p calibration:=gello_franka.json \
        -p follower:=franka
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass

from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mimic_ros.msgs import joint_state
from mimic_ros.params import ParamError, declare_config, param
from mimic_ros.runtime import ManagedNode, run_node


@dataclass
class LeaderNodeConfig:
    port: str = param("", "serial port of the GELLO's Dynamixel bus (/dev/ttyUSB0, or an emulated bus pty)")
    calibration: str = param(
        "", "GELLO calibration JSON (mimic.teleop.gello_calibration; written by mimic calibrate gello)"
    )
    follower: str = param("franka", "follower arm the readings are mapped to (mimic.robots.specs name)")
    baudrate: int = param(0, "bus baud rate (0: the calibration file's)", range=(0, 4_000_000))
    rate_hz: float = param(200.0, "read/publish rate (Hz); the bus may cap it", range=(1.0, 2000.0))
    retry_s: float = param(0.5, "after a failure, seconds between reconnection attempts", range=(0.01, 60.0))
    connect_timeout_s: float = param(
        10.0, "how long the first connection may take (the port may appear late)", range=(0.0, 600.0)
    )


class LeaderNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("leader")
        cfg = LeaderNodeConfig()
        declare_config(self, cfg)
        if not cfg.port or not cfg.calibration:
            raise ParamError("leader: parameters port and calibration are required")
        from mimic.teleop.gello import GelloConfig, GelloLeader
        from mimic.teleop.leader import LeaderError

        self.LeaderError = LeaderError
        try:
            self.leader = GelloLeader(
                GelloConfig(
                    port=cfg.port,
                    calibration=cfg.calibration,
                    follower=cfg.follower,
                    baudrate=cfg.baudrate or None,
                )
            )
        except (ValueError, KeyError) as e:
            raise ParamError(f"leader: {e}") from None
        self.cfg = cfg
        self.names = list(self.leader.joint_names)
        self.published = self.failures = 0
        self.error: str | None = None
        deadline = time.monotonic() + cfg.connect_timeout_s
        while True:
            try:
                self.leader.connect()
                break
            except (LeaderError, OSError) as e:
                if self.leader.alarm is not None:  # the bus is up, a servo is in alarm: wait for the operator
                    self._latched(e)
                    break
                if time.monotonic() > deadline:
                    raise ParamError(f"leader: cannot connect on {cfg.port}: {e}") from None
                time.sleep(0.2)
        self._bus_lock = threading.Lock()  # the read loop and ~/clear_alarm share the bus
        self.pub = self.create_publisher(JointState, "/leader/joint_states", 10)
        self.status_pub = self.create_publisher(String, "~/status", 1)
        self.create_service(Trigger, "~/clear_alarm", self._on_clear_alarm)

    def _latched(self, e: Exception) -> None:
        self.failures += 1
        self.error = " ".join(str(e).split())
        self.get_logger().error(
            f"leader servo alarm, publishing nothing (follower holds) until ~/clear_alarm succeeds: {self.error}"
        )

    def _on_clear_alarm(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Reboot the servo in alarm and resume; success=false with the one-line reason if it persists."""
        with self._bus_lock:
            if self.leader.alarm is None:
                response.success, response.message = True, "no alarm latched"
                return response
            try:
                if not self.leader.is_connected:
                    try:  # the port was lost meanwhile; in alarm, connect keeps it open for the reboot
                        self.leader.connect()
                    except (self.LeaderError, OSError):
                        pass
                self.leader.clear_alarm()
            except (self.LeaderError, OSError) as e:
                reason = " ".join(str(e).split())
                self.get_logger().error(f"~/clear_alarm failed, the follower still holds: {reason}")
                response.success, response.message = False, reason
                return response
        self.get_logger().info("servo alarm cleared by ~/clear_alarm: publishing leader readings again")
        response.success, response.message = True, "alarm cleared; leader readings resume"
        return response

    def workers(self):
        return (self._loop,)

    def _loop(self) -> None:
        period = 1.0 / self.cfg.rate_hz
        next_t, last_status, consecutive = time.monotonic(), 0.0, 0
        while self.running:
            with self._bus_lock:
                latched = self.leader.alarm is not None  # no reads, nothing published, until ~/clear_alarm
                failed = not latched and self._read_and_publish(consecutive)
            consecutive = consecutive + 1 if failed else 0
            if latched or failed:
                time.sleep(self.cfg.retry_s)
                next_t = time.monotonic()
            if time.monotonic() - last_status > 1.0:
                last_status = time.monotonic()
                status = {
                    "published": self.published,
                    "failures": self.failures,
                    "error": self.error,
                    "alarm": self.leader.alarm is not None,
                }
                self.status_pub.publish(String(data=json.dumps(status)))
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
            if time.monotonic() > next_t + 10 * period:
                next_t = time.monotonic()

    def _read_and_publish(self, consecutive: int) -> bool:
        """One reading published; True when it failed (then the loop waits `retry_s`)."""
        try:
            if not self.leader.is_connected:
                self.leader.connect()
            r = self.leader.read()
        except (self.LeaderError, OSError) as e:
            if self.leader.alarm is not None:
                self._latched(e)
                return True
            self.failures += 1
            if self.error is None:
                self.get_logger().error(f"leader failed, publishing nothing (follower holds): {e}")
            self.error = str(e)
            if consecutive + 1 >= 3:  # not a glitch: reopen the port (the cable may have been replugged)
                try:
                    self.leader.disconnect()
                except Exception:  # noqa: BLE001 - the port may already be gone; reconnecting is the cure
                    pass
            return True
        self.pub.publish(joint_state(r.t, self.names, [*r.q, r.gripper]))
        self.published += 1
        if self.error is not None:
            self.get_logger().info(f"leader readings are back after: {self.error}")
            self.error = None
        return False

    def close(self) -> None:
        self.leader.disconnect()
        print(json.dumps({"leader": {"published": self.published, "failures": self.failures}}), flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_node("leader", LeaderNode, argv)


if __name__ == "__main__":
    sys.exit(main())
