"""Controller node: the only publisher of /robot/joint_command, in follow (teleop), chunk or eef (deploy) mode.

Wiring: /robot/joint_states (first measurement seeds the controller) + one target source -> /robot/joint_command
at `rate_hz`:
- `mode:=follow`: /leader/joint_states (sensor_msgs/JointState) -> `mimic.robots.control.FollowController`;
- `mode:=chunk`: /policy/action_chunk (trajectory_msgs/JointTrajectory, rows [q, gripper]) ->
  `mimic.robots.control.ChunkController`;
- `mode:=eef`: /policy/eef_chunk (trajectory_msgs/MultiDOFJointTrajectory) -> `mimic.robots.eef_control.EefChunkController`.

End-effector mode (`mode:=eef`) executes timed TCP-pose chunks, what a policy trained on handheld (UMI-style)
demonstrations predicts. Message convention (mimic_ros.msgs): `joint_names` ["tcp", "gripper"], each point two
transforms: the TCP pose in the arm's base frame (the twin's world frame), then the gripper with its opening
width (m) in `translation.x`; `header.stamp` = the time the first point executes, uniform `time_from_start`,
exactly as the joint chunks. Each chunk is solved point by point by damped least-squares IK on the arm's twin
model (mimic.robots.ik; the solve runs on the subscription thread, outside the control loop's lock, seeded with the
last commanded joints), and the joint chunk then runs through the same ChunkController and Limiter as chunk
mode: timing (lead_s latency matching, blend_s, stale chunks), joint limits, velocity limits, workspace box.
A point the IK cannot reach within `max_pos_err_m` / `max_rot_err_rad` is refused, never approximated: the
chunk ends there and holds its last reachable target (a chunk whose first point is unreachable is refused
whole and the arm keeps following what it had, then holds). Refusals are counted in the status under
`eef` (unreachable_points, unreachable_chunks, worst accepted IK residual) next to the Limiter's `counters`;
the status goes out as JSON on /controller/diagnostics every second and to `stats_path` on exit.

The control loop runs on its own thread paced by `mimic.robots.pacer.Pacer` (absolute deadlines) rather than
an rclpy timer, whose p99 period error on this machine is ~0.2 ms before any work (goal: <= 0.5 ms).
Subscriptions are served by a single-threaded executor on the main thread. Parameters (mimic_ros.params):
a bad value stops the node at start with one line naming it (exit 2).

    python -m mimic_ros.controller_node --ros-args -p arm:=franka -p mode:=chunk -p rate_hz:=500 -p lead_s:=0.1
    python -m mimic_ros.controller_node --ros-args -p arm:=franka -p mode:=eef -p lead_s:=0.1
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from mimic.robots.control import (
    CHUNKING,
    ChunkController,
    FollowController,
    WorkspaceBox,
    continuation_of,
    parse_workspace,
)
from mimic.robots.pacer import Pacer, enable_realtime
from mimic.robots.spec import ArmSpec
from mimic_ros.msgs import EEF_CHUNK_TOPIC, eef_chunk_from_msg
from mimic_ros.params import ParamError, declare_config, param
from mimic_ros.runtime import ManagedNode, run_node

GRIPPER_JOINT = "gripper"
MODES = ("follow", "chunk", "eef")
CHUNK_TOPIC = "/policy/action_chunk"


@dataclass
class ControllerConfig:
    arm: str = param("franka", "arm spec name (mimic.robots.specs): franka, ur5e, xarm7")
    mode: str = param(
        "follow",
        "follow: track /leader/joint_states; chunk: timed joint chunks on /policy/action_chunk; "
        "eef: timed TCP-pose chunks on /policy/eef_chunk, through IK",
        choices=MODES,
    )
    rate_hz: float = param(
        500.0, "control rate: /robot/joint_command messages per second", range=(1.0, 2000.0)
    )
    lead_s: float = param(
        0.0, "chunk/eef: arm command-to-motion latency; latency matching on when > 0 (s)", range=(0.0, 2.0)
    )
    stale_after_s: float = param(0.1, "follow: a leader older than this -> hold (s)", range=(0.001, 10.0))
    chunking: str = param(
        "blend",
        "chunk/eef: how a new chunk takes over, as the policy node's chunking (mimic.robots.control.CHUNKING): "
        "blend over blend_s, ensemble (ACT), or switch at its first row (sync, switch, rtc)",
        choices=CHUNKING,
    )
    blend_s: float = param(
        0.1, "chunking=blend: a new chunk is blended in over this time (s)", range=(0.0, 5.0)
    )
    ensemble_decay: float = param(
        0.01, "chunking=ensemble: ACT's weight decay per chunk of age", range=(0.0, 10.0)
    )
    velocity_scale: float = param(
        0.5, "fraction of the spec's joint velocity limits used", range=(0.001, 1.0)
    )
    workspace: str = param(
        "", "'xmin,ymin,zmin,xmax,ymax,zmax' (m, base frame) the flange must stay in; '' = none"
    )
    max_pos_err_m: float = param(
        0.005,
        "eef: largest IK position residual accepted; a farther target is unreachable (m)",
        range=(1e-5, 0.1),
    )
    max_rot_err_rad: float = param(
        0.05, "eef: largest IK orientation residual accepted (rad)", range=(1e-4, 1.0)
    )
    stats_path: str = param("", "JSON of period statistics and safety counters, written on exit ('' = none)")


def stamp_to_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(t: float, msg_stamp) -> None:
    sec = int(t)
    msg_stamp.sec, msg_stamp.nanosec = sec, int((t - sec) * 1e9)


def chunk_from_msg(msg: JointTrajectory, dof: int) -> tuple[float, float, np.ndarray] | None:
    """(t_start, dt, rows[H, dof+1]) from a JointTrajectory with uniformly spaced points, else None."""
    if not msg.points or any(len(p.positions) != dof + 1 for p in msg.points):
        return None
    tfs = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])
    if len(tfs) > 1:
        steps = np.diff(tfs)
        if np.ptp(steps) > 1e-4:
            return None
        dt = float(steps.mean())
    else:
        dt = 0.1
    rows = np.array([p.positions for p in msg.points], dtype=float)
    return stamp_to_s(msg.header.stamp) + float(tfs[0]), dt, rows


def resolve_spec(arm: str) -> ArmSpec:
    try:
        from mimic.robots.specs import get_spec
    except ImportError as e:
        raise ValueError(f"cannot load arm specs ({e})") from None
    try:
        return get_spec(arm)
    except KeyError as e:
        raise ParamError(f"parameter arm={arm!r}: {e}") from None


def workspace_box(text: str, spec: ArmSpec) -> WorkspaceBox | None:
    """Parse the `workspace` parameter; the flange position comes from the spec's forward kinematics."""
    try:
        box = parse_workspace(text)
    except ValueError as e:
        raise ValueError(f"parameter {e}") from None
    if box is None:
        return None
    from mimic.robots.kinematics import forward_kinematics

    return WorkspaceBox(lo=np.array(box[0]), hi=np.array(box[1]), fk=lambda q: forward_kinematics(spec, q))


def ik_solver(spec: ArmSpec):
    """IK on the arm's twin model (the TCP frame handheld poses are expressed in); ParamError if it has none."""
    from mimic.robots.ik import IKSolver

    try:
        return IKSolver.for_arm(spec)
    except (KeyError, ValueError) as e:
        raise ParamError(f"mode=eef needs the twin model of arm {spec.name!r} for IK ({e})") from None


class ControllerNode(ManagedNode):
    def __init__(self, spec: ArmSpec | None = None) -> None:
        super().__init__("controller")
        cfg = ControllerConfig()
        declare_config(self, cfg)
        spec = spec or resolve_spec(cfg.arm)
        self.cfg, self.spec = cfg, spec
        box = workspace_box(cfg.workspace, spec)
        if cfg.mode == "follow":
            self.ctl = FollowController(
                spec, cfg.rate_hz, cfg.stale_after_s, cfg.velocity_scale, workspace=box
            )
            self.create_subscription(JointState, "/leader/joint_states", self._on_leader, 10)
        elif cfg.mode == "chunk":
            self.ctl = ChunkController(
                spec,
                cfg.rate_hz,
                lead_s=cfg.lead_s,
                blend_s=cfg.blend_s,
                velocity_scale=cfg.velocity_scale,
                workspace=box,
                continuation=continuation_of(cfg.chunking),
                ensemble_decay=cfg.ensemble_decay,
            )
            self.create_subscription(JointTrajectory, CHUNK_TOPIC, self._on_chunk, 10)
        else:
            from mimic.robots.eef_control import EefChunkController

            self.ctl = EefChunkController(
                ik_solver(spec),
                cfg.rate_hz,
                lead_s=cfg.lead_s,
                blend_s=cfg.blend_s,
                velocity_scale=cfg.velocity_scale,
                workspace=box,
                max_pos_err_m=cfg.max_pos_err_m,
                max_rot_err_rad=cfg.max_rot_err_rad,
            )
            self.create_subscription(MultiDOFJointTrajectory, EEF_CHUNK_TOPIC, self._on_eef_chunk, 10)
        self.create_subscription(JointState, "/robot/joint_states", self._on_state, 10)
        self.pub = self.create_publisher(JointState, "/robot/joint_command", 10)
        self.diag = self.create_publisher(String, "/controller/diagnostics", 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.reset_after = 0.0  # joint states captured before this time cannot seed (see _on_reset)
        self.names = [*spec.joint_names, GRIPPER_JOINT]
        self.lock = threading.Lock()
        self.seeded = threading.Event()
        self.running = True
        self.period_errors: deque[float] = deque(maxlen=30_000)  # the last minute at 500 Hz
        self.compute_s: deque[float] = deque(maxlen=30_000)
        self.ticks = 0
        self.commands_sent = 0
        self._gripper = 0.0

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Forget the old targets and re-seed from the next measurement (the twin was reset, the arm moved).

        Until a joint state captured after this call arrives, the loop sends nothing: the arm holds.
        """
        with self.lock:
            self.seeded.clear()
            self.reset_after = time.time()
        response.success, response.message = True, "re-seeding from the next /robot/joint_states"
        return response

    def _on_state(self, msg: JointState) -> None:
        if self.seeded.is_set() or len(msg.position) < self.spec.dof:
            return
        if stamp_to_s(msg.header.stamp) < self.reset_after:
            return
        g = msg.position[self.spec.dof] if len(msg.position) > self.spec.dof else 0.0
        with self.lock:
            self.ctl.reset(np.array(msg.position[: self.spec.dof]), g, time.time())
            self._gripper = g
        self.seeded.set()
        self.get_logger().info("seeded from /robot/joint_states; commanding")

    def _on_leader(self, msg: JointState) -> None:
        dof = self.spec.dof
        if len(msg.position) < dof:
            self.ctl.counters.refused += 1
            return
        g = msg.position[dof] if len(msg.position) > dof else self._gripper
        with self.lock:
            self.ctl.set_leader(stamp_to_s(msg.header.stamp), np.array(msg.position[:dof]), g)

    def _on_chunk(self, msg: JointTrajectory) -> None:
        parsed = chunk_from_msg(msg, self.spec.dof)
        with self.lock:
            if parsed is None:
                self.ctl.counters.refused += 1
                return
            self.ctl.set_chunk(*parsed, t_now=time.time())

    def _on_eef_chunk(self, msg: MultiDOFJointTrajectory) -> None:
        """IK outside the lock (the loop keeps its period), then the joint rows into the chunk controller."""
        parsed = eef_chunk_from_msg(msg)
        with self.lock:
            seeded = self.seeded.is_set()
            last = self.ctl.joint.limiter.last
            if parsed is None or not seeded or last is None:  # malformed, or no measured arm to seed IK
                self.ctl.counters.refused += 1
                return
            seed = last[0].copy()
        t_start, dt, poses = parsed
        rows = self.ctl.plan_chunk(poses, seed)
        if rows is None:
            return
        with self.lock:
            self.ctl.joint.set_chunk(t_start, dt, rows, t_now=time.time())

    def loop(self) -> None:
        """Fixed-rate control loop on absolute deadlines; a missed deadline re-anchors instead of bursting."""
        while self.running and not self.seeded.wait(0.05):
            pass
        realtime, note = enable_realtime(  # the executor (main thread) takes the GIL for every message
            what=f"controller loop at {self.cfg.rate_hz:g} Hz",
            helper_threads=(threading.main_thread().native_id,),
        )
        (self.get_logger().info if realtime else self.get_logger().warning)(note)
        pacer = Pacer(self.cfg.rate_hz)
        last_diag = time.monotonic()
        while self.running:
            err = pacer.wait()
            self.ticks += 1
            tick_start = time.perf_counter()
            if err is not None:
                self.period_errors.append(err)
            t = time.time()
            with self.lock:
                out = self.ctl.target(t) if self.seeded.is_set() else None
            if out is not None:
                q, g = out
                msg = JointState()
                s_to_stamp(t, msg.header.stamp)
                msg.name = self.names
                msg.position = [*q.tolist(), g]
                self.pub.publish(msg)
                self.commands_sent += 1
            self.compute_s.append(time.perf_counter() - tick_start)
            if time.monotonic() - last_diag > 1.0:
                last_diag = time.monotonic()
                self.diag.publish(String(data=json.dumps(self.stats())))

    def workers(self):
        return (self.loop,)

    def close(self) -> None:
        """Print the loop's timing and safety counters, and write them to stats_path if set."""
        stats = self.stats()
        print(json.dumps(stats), flush=True)
        if self.cfg.stats_path:
            with open(self.cfg.stats_path, "w") as f:
                json.dump(stats, f, indent=1)

    def stats(self) -> dict:
        err = np.asarray(list(self.period_errors) or [0.0]) * 1e3
        comp = np.asarray(list(self.compute_s) or [0.0]) * 1e3
        with self.lock:
            counters = self.ctl.counters.as_dict()
            eef = self.ctl.eef_counters.as_dict() if self.cfg.mode == "eef" else None
        out = {
            "mode": self.cfg.mode,
            "rate_hz": self.cfg.rate_hz,
            "period_error_ms_p50": float(np.median(err)),
            "period_error_ms_p99": float(np.percentile(err, 99)),
            "period_error_ms_max": float(err.max()),
            "tick_compute_ms_p99": float(np.percentile(comp, 99)),
            "ticks": self.ticks,
            "commands_sent": self.commands_sent,
            "counters": counters,
        }
        if eef is not None:
            out["eef"] = eef
        return out


def main(argv: list[str] | None = None, spec: ArmSpec | None = None) -> int:
    """Run until SIGINT; parameters come as `--ros-args -p name:=value`. `spec` overrides `arm` (tests)."""
    return run_node("controller", lambda: ControllerNode(spec), argv, errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
