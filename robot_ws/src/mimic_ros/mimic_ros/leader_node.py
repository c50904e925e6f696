"""Leader node: a GELLO arm (mimic.teleop.gello) on /leader/joint_states, in the follower's joint space.

Each reading is published stamped with its capture time. On a `LeaderError` (a servo silent, a bad CRC,
the cable pulled) the node publishes nothing, so the controller's follow mode goes stale and holds the
arm; it logs the servo at fault and retries every `retry_s`, reconnecting if the port went away.

    python -m mimic_ros.leader_node --ros-args -p port:=/dev/ttyUSB0 -p calibration:=gello_franka.json \
        -p follower:=franka
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

from sensor_msgs.msg import JointState
from std_msgs.msg import String

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
        deadline = time.monotonic() + cfg.connect_timeout_s
        while True:
            try:
                self.leader.connect()
                break
            except (LeaderError, OSError) as e:
                if time.monotonic() > deadline:
                    raise ParamError(f"leader: cannot connect on {cfg.port}: {e}") from None
                time.sleep(0.2)
        self.pub = self.create_publisher(JointState, "/leader/joint_states", 10)
        self.status_pub = self.create_publisher(String, "~/status", 1)
        self.published = self.failures = 0
        self.error: str | None = None

    def workers(self):
        return (self._loop,)

    def _loop(self) -> None:
        period = 1.0 / self.cfg.rate_hz
        next_t, last_status, consecutive = time.monotonic(), 0.0, 0
        while self.running:
            try:
                if not self.leader.is_connected:
                    self.leader.connect()
                r = self.leader.read()
                self.pub.publish(joint_state(r.t, self.names, [*r.q, r.gripper]))
                self.published += 1
                consecutive = 0
                if self.error is not None:
                    self.get_logger().info(f"leader readings are back after: {self.error}")
                    self.error = None
            except (self.LeaderError, OSError) as e:
                self.failures += 1
                if self.error is None:
                    self.get_logger().error(f"leader failed, publishing nothing (follower holds): {e}")
                self.error = str(e)
                consecutive += 1
                if consecutive >= 3:  # not a glitch: reopen the port (the cable may have been replugged)
                    try:
                        self.leader.disconnect()
                    except Exception:  # noqa: BLE001 - the port may already be gone; reconnecting is the cure
                        pass
                time.sleep(self.cfg.retry_s)
                next_t = time.monotonic()
            if time.monotonic() - last_status > 1.0:
                last_status = time.monotonic()
                self.status_pub.publish(
                    String(
                        data=json.dumps(
                            {"published": self.published, "failures": self.failures, "error": self.error}
                        )
                    )
                )
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
            if time.monotonic() > next_t + 10 * period:
                next_t = time.monotonic()

    def close(self) -> None:
        self.leader.disconnect()
        print(json.dumps({"leader": {"published": self.published, "failures": self.failures}}), flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_node("leader", LeaderNode, argv)


if __name__ == "__main__":
    sys.exit(main())
