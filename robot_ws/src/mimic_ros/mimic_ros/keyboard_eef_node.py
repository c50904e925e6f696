"""Keyboard end-effector teleop node: single keys from a terminal -> TCP targets on /policy/eef_chunk.

A second capture path beside the GELLO leader, for an arm with no leader device: the controller runs in
`mode:=eef` (IK on the arm's twin model, the same Limiter as every other mode) and this node is its target
source. Keys (mimic.teleop.keyboard_eef; position steps in the arm's base frame, rotations about the base axes
through the TCP, so the TCP turns in place):

    w / s   +x / -x  (step_m)          i / k   rotate +/- about x  (step_rad)
    a / d   +y / -y                    j / l   rotate +/- about y
    r / f   +z / -z                    u / o   rotate +/- about z
    space   gripper: toggle open (the spec's gripper_max) / closed (gripper_min)
    c       catch up: target := the measured TCP (the arm was moved while the controller held, e.g. by hand)
    any other printable key prints this list
    q       quit (exit status 0; in a session with ends_session, this ends the session)

The target starts at the arm's TCP pose: forward kinematics (mimic.robots.ik on the twin model, converted by
mimic.robots.eef_control.tcp_pose_row, as the policy node's eef observations) of the first /robot/joint_states,
and the gripper's measured width decides whether it starts open. Keys before that are ignored.
A position key stops at the faces of the workspace box (`workspace`, or a cube of half-size
`workspace_half_m` around the starting TCP); a key whose target IK cannot reach within `max_pos_err_m` /
`max_rot_err_rad` (the controller's thresholds) is refused and the target stays, so target and arm never
drift apart.

The target goes out as a one-point end-effector chunk (mimic_ros.msgs convention, joint_names ["tcp",
"gripper"]) executing `horizon_s` after it is sent, at once after each key and again at `rate_hz`, so the
controller keeps commanding (the recorder's `action` stays live) and the controller's blend (`blend_s`)
smooths each step. When this node stops, its last chunk runs out after `horizon_s` and the arm holds.

Keys come from `tty` (default: the controlling terminal, /dev/tty), switched to cbreak mode (no Enter, no
echo; restored on exit); a path that is not a terminal (a FIFO) is read as plain bytes. A read holding an
escape sequence (arrow keys) is ignored whole. Under `mimic session up` the nodes have no terminal: pass
yours, `--set tty=$(tty)` (session teleop_keyboard_twin). End of input (the terminal closed) stops the
node with exit status 1. Status (std_msgs/String JSON, latched) on ~/status after every key and at 1 Hz.

    python -m mimic_ros.keyboard_eef_node --ros-args -p arm:=franka -p step_m:=0.01 -p step_rad:=0.05
"""

from __future__ import annotations

import json
import os
import select
import sys
import termios
import threading
import time
import tty
from dataclasses import dataclass

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import MultiDOFJointTrajectory

from mimic_ros.msgs import EEF_CHUNK_TOPIC, eef_chunk_msg
from mimic_ros.params import ParamError, declare_config, param
from mimic_ros.runtime import ManagedNode, run_node

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
QUIT_KEYS = ("q",)


@dataclass
class KeyboardEefNodeConfig:
    arm: str = param("franka", "arm spec name (mimic.robots.specs): franka, ur5e, xarm7")
    tty: str = param(
        "",
        "terminal the keys are read from ('' = the controlling terminal /dev/tty; under "
        "`mimic session up`: --set tty=$(tty))",
    )
    step_m: float = param(0.01, "TCP translation per position key (m)", range=(0.0005, 0.1))
    step_rad: float = param(0.05, "TCP rotation per rotation key (rad)", range=(0.001, 0.5))
    workspace: str = param(
        "",
        "'xmin,ymin,zmin,xmax,ymax,zmax': box the TCP target stays in (m, base frame); "
        "'' = a cube of half-size workspace_half_m around the starting TCP",
    )
    workspace_half_m: float = param(0.25, "half-size of the default workspace cube (m)", range=(0.005, 2.0))
    rate_hz: float = param(
        10.0, "the target is republished this often, besides once per key (Hz)", range=(1.0, 100.0)
    )
    horizon_s: float = param(
        0.3,
        "a chunk's point executes this long after it is sent; the arm holds this long "
        "after the node stops (s)",
        range=(0.02, 2.0),
    )
    max_pos_err_m: float = param(
        0.005,
        "IK position residual above which a key's target is unreachable and "
        "refused (use the controller's value, m)",
        range=(1e-5, 0.1),
    )
    max_rot_err_rad: float = param(
        0.05, "IK orientation residual above which a key's target is refused (rad)", range=(1e-4, 1.0)
    )


class KeyboardEefNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("keyboard")
        cfg = KeyboardEefNodeConfig()
        declare_config(self, cfg)
        from mimic.robots.control import parse_workspace
        from mimic_ros.controller_node import ik_solver, resolve_spec

        self.cfg = cfg
        self.spec = resolve_spec(cfg.arm)
        try:
            self.box = parse_workspace(cfg.workspace)
        except ValueError as e:
            raise ParamError(f"keyboard: parameter {e}") from None
        self.ik = ik_solver(self.spec)  # FK for the seed and catch-up, IK for the reachability check
        self.fd, self.saved_tty = self._open_tty(cfg.tty or "/dev/tty")
        self.lock = threading.Lock()
        self.q_measured: np.ndarray | None = None  # newest /robot/joint_states (joints + gripper)
        self.target = None  # mimic.teleop.keyboard_eef.KeyboardEef once seeded
        self.q_solution: np.ndarray | None = None  # IK seed: the last accepted target's solution
        self.last: dict = {}
        self.published = 0
        self.done = False
        self.create_subscription(JointState, "/robot/joint_states", self._on_state, 10)
        self.pub = self.create_publisher(MultiDOFJointTrajectory, EEF_CHUNK_TOPIC, 10)
        self.status_pub = self.create_publisher(String, "~/status", LATCHED)

    def _open_tty(self, path: str) -> tuple[int, list | None]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
        except OSError as e:
            raise ParamError(
                f"keyboard: cannot open terminal {path!r} ({e.strerror}); run it in a terminal or "
                "pass one: -p tty:=$(tty) (a session: --set tty=$(tty))"
            ) from None
        if not os.isatty(fd):
            return fd, None
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)  # one key at a time, no echo; Ctrl-C still signals the terminal's foreground job
        return fd, saved

    def _on_state(self, msg: JointState) -> None:
        pos = np.asarray(msg.position, float)
        if len(pos) >= self.spec.dof and np.all(np.isfinite(pos)):
            with self.lock:
                self.q_measured = pos

    # --- the worker: keys in, chunks out ----------------------------------------------------------------
    def workers(self):
        return (self._loop,)

    def finished(self) -> bool:
        return self.done

    def _measured(self) -> tuple[np.ndarray, float] | None:
        with self.lock:
            q = self.q_measured
        if q is None:
            return None
        from mimic.robots.eef_control import tcp_pose_row

        gripper = float(q[self.spec.dof]) if len(q) > self.spec.dof else self.spec.gripper_max
        return tcp_pose_row(self.ik.fk(q[: self.spec.dof])), gripper

    def _reachable(self, row: np.ndarray) -> bool:
        from mimic.robots.eef_control import poses_to_matrices

        res = self.ik.solve(self.q_solution, poses_to_matrices(row[None])[0])
        if res.within(self.cfg.max_pos_err_m, self.cfg.max_rot_err_rad):
            self.q_solution = res.q
            return True
        return False

    def _seed(self) -> bool:
        from mimic.teleop.keyboard_eef import HELP, KeyboardEef, KeyboardEefConfig, box_around

        m = self._measured()
        if m is None:
            return False
        tcp, gripper = m
        lo, hi = self.box or box_around(tcp, self.cfg.workspace_half_m)
        conf = KeyboardEefConfig(
            step_m=self.cfg.step_m,
            step_rad=self.cfg.step_rad,
            gripper_open_m=self.spec.gripper_max,
            gripper_closed_m=self.spec.gripper_min,
            workspace_lo=lo,
            workspace_hi=hi,
        )
        with self.lock:
            self.q_solution = self.q_measured[: self.spec.dof].copy()
        self.target = KeyboardEef(conf, tcp, gripper, reachable=self._reachable)
        print(
            f"keyboard: target seeded at TCP {np.round(tcp[:3], 4).tolist()} m, gripper "
            f"{'open' if self.target.gripper_open else 'closed'}, box {np.round(lo, 3).tolist()} .. "
            f"{np.round(hi, 3).tolist()}\n{HELP}; q: quit",
            flush=True,
        )
        return True

    def _publish(self) -> None:
        self.pub.publish(eef_chunk_msg(time.time() + self.cfg.horizon_s, 0.1, self.target.row()[None]))
        self.published += 1

    def status(self) -> dict:
        out = {"seeded": self.target is not None, "published": self.published, "last": self.last}
        if self.target is not None:
            out.update(
                target=self.target.row().tolist(),
                gripper_open=self.target.gripper_open,
                counts=dict(self.target.counts),
                box=[self.target.lo.tolist(), self.target.hi.tolist()],
            )
        return out

    def _press(self, key: str) -> None:
        if self.target is None:
            print(f"keyboard: key {key!r} ignored: no /robot/joint_states yet", flush=True)
            return
        from mimic.teleop.keyboard_eef import CATCH_UP_KEY, HELP

        measured = self._measured() if key == CATCH_UP_KEY else None
        res = self.target.press(key, measured_tcp=None if measured is None else measured[0])
        if not res.known:
            if key.isprintable():
                print(f"keyboard: {key!r} is not bound; {HELP}; q: quit", flush=True)
            return
        if key == CATCH_UP_KEY and res.changed:
            with self.lock:  # IK for the next keys starts from where the arm is
                self.q_solution = self.q_measured[: self.spec.dof].copy()
        row = self.target.row()
        note = " (stopped at the workspace box)" if res.clipped else ""
        note += f" (refused: {res.refused})" if res.refused else ""
        print(
            f"keyboard: {key!r} -> TCP {np.round(row[:3], 4).tolist()} m, axis-angle "
            f"{np.round(row[3:6], 3).tolist()}, gripper {row[6]:.3f} m{note}",
            flush=True,
        )
        self.last = {"key": key, "changed": res.changed, "clipped": res.clipped, "refused": res.refused}
        self._publish()
        self.status_pub.publish(String(data=json.dumps(self.status())))

    def _read_keys(self, timeout: float) -> str | None:
        """Keys typed within `timeout` ('' if none), or None at end of input."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return ""
        try:
            data = os.read(self.fd, 64)
        except OSError:  # EIO: the terminal (a pty's master) is gone
            return None
        if not data:
            return None
        text = data.decode("latin-1")
        return (
            "" if "\x1b" in text else text
        )  # an escape sequence (arrow key...) is no binding: drop it whole

    def _loop(self) -> None:
        period = 1.0 / self.cfg.rate_hz
        next_pub, next_status = time.monotonic(), 0.0
        while self.running:
            if self.target is None and self._seed():
                self.status_pub.publish(String(data=json.dumps(self.status())))
            keys = self._read_keys(min(0.05, next_pub - time.monotonic()))
            if keys is None:
                print(
                    "keyboard: end of keyboard input (terminal closed); stopping", file=sys.stderr, flush=True
                )
                self.exit_code, self.done = 1, True
                return
            for key in keys:
                if key in QUIT_KEYS:
                    print("keyboard: quit", flush=True)
                    self.done = True
                    return
                self._press(key)
            now = time.monotonic()
            if now >= next_pub:
                next_pub = max(next_pub + period, now)
                if self.target is not None:
                    self._publish()
            if now >= next_status:
                next_status = now + 1.0
                self.status_pub.publish(String(data=json.dumps(self.status())))

    def close(self) -> None:
        if self.saved_tty is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved_tty)
            except termios.error:  # the terminal is already gone
                pass
        os.close(self.fd)
        print(
            json.dumps(
                {
                    "keyboard": {
                        "published": self.published,
                        "counts": None if self.target is None else self.target.counts,
                    }
                }
            ),
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    return run_node("keyboard", KeyboardEefNode, argv)


if __name__ == "__main__":
    sys.exit(main())
