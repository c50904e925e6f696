"""Controller node: the only publisher of /robot/joint_command, in follow (teleop) or chunk (deploy) mode.

Wiring: /robot/joint_states (first measurement seeds the controller) + /leader/joint_states (follow) or
/policy/action_chunk (chunk) -> `robots.control` -> /robot/joint_command at `rate_hz`.
The control loop runs on its own thread paced by `robots.control.Pacer` (absolute deadlines) rather than
an rclpy timer, whose p99 period error on this machine is ~0.2 ms before any work (goal: <= 0.5 ms). Subscriptions are served by a single-threaded executor on the main thread.

    python -m mimic_ros.controller_node --ros-args -p arm:=franka -p mode:=chunk -p rate_hz:=500 -p lead_s:=0.1
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from mimic_ros.runtime import announce_ready
from robots.control import ChunkController, FollowController, Pacer, WorkspaceBox
from robots.spec import ArmSpec

GRIPPER_JOINT = "gripper"


@dataclass
class ControllerConfig:
    arm: str = "franka"
    mode: str = "follow"  # follow | chunk
    rate_hz: float = 500.0
    lead_s: float = 0.0  # arm command-to-motion latency (chunk mode): latency matching on when > 0
    stale_after_s: float = 0.1  # follow mode: leader older than this -> hold
    blend_s: float = 0.1
    velocity_scale: float = 0.5
    workspace: str = ""  # "xmin,ymin,zmin,xmax,ymax,zmax" (m, base frame) the flange must stay in; "" = none
    stats_path: str = ""  # optional JSON of period statistics and safety counters, written on exit


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


def declare_config(node: Node, cfg: object) -> None:
    """Declare every field of a config dataclass as a ROS parameter (default = field value) and read it back.

    Values arrive from `--ros-args -p name:=value` (supervisor and launch file alike). Parameters are
    dynamically typed so that `lead_s:=0` works, then cast to the field's type; a value that does not
    cast stops the node with a one-line error naming the parameter.
    """
    for name, default in asdict(cfg).items():
        value = node.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True)).value
        try:
            if isinstance(default, bool) and isinstance(value, str):
                value = value.lower() in ("1", "true", "yes", "on")
            setattr(cfg, name, type(default)(value))
        except (TypeError, ValueError):
            raise ValueError(
                f"{node.get_name()}: parameter {name}={value!r} is not a {type(default).__name__}"
            ) from None


def resolve_spec(arm: str) -> ArmSpec:
    try:
        from robots.specs import get_spec
    except ImportError as e:
        raise ValueError(f"cannot load arm specs ({e})") from None
    return get_spec(arm)


def workspace_box(text: str, spec: ArmSpec) -> WorkspaceBox | None:
    """Parse the `workspace` parameter; the flange position comes from the spec's forward kinematics."""
    if not text.strip():
        return None
    try:
        v = np.array([float(x) for x in text.split(",")])
    except ValueError:
        v = np.array([])
    if v.size != 6 or np.any(v[:3] >= v[3:]):
        raise ValueError(
            f"parameter workspace={text!r} is not 'xmin,ymin,zmin,xmax,ymax,zmax' with min < max"
        )
    from robots.kinematics import forward_kinematics

    return WorkspaceBox(lo=v[:3], hi=v[3:], fk=lambda q: forward_kinematics(spec, q))


class ControllerNode(Node):
    def __init__(self, spec: ArmSpec | None = None) -> None:
        super().__init__("controller")
        cfg = ControllerConfig()
        declare_config(self, cfg)
        if cfg.mode not in ("follow", "chunk"):
            raise ValueError(f"parameter mode={cfg.mode!r} is not follow or chunk")
        if cfg.rate_hz <= 0 or cfg.lead_s < 0 or cfg.blend_s < 0 or not 0 < cfg.velocity_scale <= 1:
            raise ValueError(f"controller: parameters out of range: {cfg}")
        spec = spec or resolve_spec(cfg.arm)
        self.cfg, self.spec = cfg, spec
        box = workspace_box(cfg.workspace, spec)
        if cfg.mode == "follow":
            self.ctl = FollowController(
                spec, cfg.rate_hz, cfg.stale_after_s, cfg.velocity_scale, workspace=box
            )
            self.create_subscription(JointState, "/leader/joint_states", self._on_leader, 10)
        else:
            self.ctl = ChunkController(
                spec,
                cfg.rate_hz,
                lead_s=cfg.lead_s,
                blend_s=cfg.blend_s,
                velocity_scale=cfg.velocity_scale,
                workspace=box,
            )
            self.create_subscription(JointTrajectory, "/policy/action_chunk", self._on_chunk, 10)
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

    def loop(self) -> None:
        """Fixed-rate control loop on absolute deadlines; a missed deadline re-anchors instead of bursting."""
        while self.running and not self.seeded.wait(0.05):
            pass
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

    def stats(self) -> dict:
        err = np.asarray(list(self.period_errors) or [0.0]) * 1e3
        comp = np.asarray(list(self.compute_s) or [0.0]) * 1e3
        with self.lock:
            counters = self.ctl.counters.as_dict()
        return {
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


def main(argv: list[str] | None = None, spec: ArmSpec | None = None) -> int:
    """Run until SIGINT; parameters come as `--ros-args -p name:=value`. `spec` overrides `arm` (tests)."""
    # SIGINT raises KeyboardInterrupt here instead of invalidating the context under the worker thread.
    rclpy.init(
        args=sys.argv if argv is None else ["controller", *argv],
        signal_handler_options=SignalHandlerOptions.NO,
    )
    try:
        node = ControllerNode(spec)
    except ValueError as e:
        print(f"controller: {e}", file=sys.stderr)
        rclpy.shutdown()
        return 2
    cfg = node.cfg
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    worker = threading.Thread(target=node.loop, name="control-loop")
    worker.start()
    announce_ready(node)
    try:
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.running = False
        worker.join(timeout=2.0)
        stats = node.stats()
        print(json.dumps(stats), flush=True)
        if cfg.stats_path:
            with open(cfg.stats_path, "w") as f:
                json.dump(stats, f, indent=1)
        executor.remove_node(node)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
