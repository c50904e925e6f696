"""Arm node: one `mimic.robots.arm.Arm` backend on the ROS graph.

Wiring: `mimic.robots.factory.make_arm(backend)` -> /robot/joint_states at `state_rate_hz`;
/robot/joint_command -> `Arm.command`, steps squeezed by transport jitter spread to the velocity limit
(`_smooth`); a refused command is counted and logged, never fatal: the arm keeps its last accepted target. On the twin (`backend:=twin:<arm>`) the node also plays the scene:
/objects/state (the tracker-like object stream of the contract), /cameras/<name>/image/compressed
rendered with `TwinArm.capture`, /sim/status (JSON: episode, seed, live and latched task success) and
the `/sim/reset` service (std_srvs/Trigger) that starts episode i with seed `seed + i`.
/objects/state is stamped with its capture time, `object_latency_s` before it is published (default 0: live).

Injected latency goes through `mimic.sim.latency.LatencyConfig`: joint-state and command delays inside the
twin; the camera delay is applied here, by holding each rendered frame until `capture time + delay`
before publishing it (stamped with its capture time). The result is what the twin's own delayed capture
gives, but the renderer (one EGL context, one thread) is never blocked sleeping out the latency, so two
cameras keep their rate at 150 ms latency.

    python -m mimic_ros.arm_node --ros-args -p backend:=twin:franka -p task:=pick_place -p seed:=100
"""

from __future__ import annotations

import heapq
import json
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mimic.robots.arm import ArmError, CommandRefused
from mimic_ros.msgs import GRIPPER_JOINT, joint_state, jpeg_image
from mimic_ros.params import ParamError, declare_config, param
from mimic_ros.runtime import ManagedNode, run_node

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass
class ArmNodeConfig:
    backend: str = param(
        "twin:franka",
        "arm URI for mimic.robots.factory.make_arm: twin:<arm>, franka:<host>, ur:<host>, xarm:<host>",
    )
    # sim.TASKS spelled out: importing sim loads mujoco, which a hardware arm node does without
    # (tests/unit/test_session_yaml.py keeps the two equal).
    task: str = param(
        "",
        "twin only: task scene, a sim.TASKS name ('' = the bare arm)",
        choices=("", "reach", "pick_place", "push_t", "track"),
    )
    seed: int = param(
        0, "twin only: seed of episode 0; /sim/reset number i seeds seed + i", range=(0, 2**31 - 1)
    )
    state_rate_hz: float = param(
        100.0, "rate of /robot/joint_states and /objects/state (Hz)", range=(1.0, 1000.0)
    )
    cameras: str = param(
        "scene,wrist",
        "twin only: comma-separated cameras rendered to /cameras/<name>/image/compressed ('' = none)",
    )
    camera_rate_hz: float = param(15.0, "twin only: frame rate of each camera (Hz)", range=(0.5, 60.0))
    image_height: int = param(96, "twin only: rendered image height (px)", range=(16, 1080))
    image_width: int = param(96, "twin only: rendered image width (px)", range=(16, 1920))
    jpeg_quality: int = param(90, "JPEG quality of published frames", range=(10, 100))
    camera_latency_s: float = param(
        0.0, "twin only: injected capture-to-arrival delay of frames (s)", range=(0.0, 1.0)
    )
    joint_latency_s: float = param(
        0.0, "twin only: injected age of joint-state readings (s)", range=(0.0, 1.0)
    )
    command_latency_s: float = param(0.0, "twin only: injected command-to-motion delay (s)", range=(0.0, 1.0))
    object_latency_s: float = param(
        0.0,
        "twin only: injected age of /objects/state readings (s): a tracker on "
        "camera frames reports objects as late as the camera",
        range=(0.0, 1.0),
    )
    latency_jitter_s: float = param(
        0.0, "twin only: uniform extra delay in [0, jitter] per sample (s)", range=(0.0, 0.5)
    )
    status_rate_hz: float = param(5.0, "rate of /sim/status (Hz)", range=(0.5, 100.0))
    arms: int = param(
        1,
        "twin only: 2 = two arms of the backend's model at one table (task bimanual_pick_place, "
        "mimic.sim.bimanual) on /robot<i>/joint_states and /robot<i>/joint_command, i = 0, 1",
        range=(1, 2),
    )
    start: str = param(
        "home",
        "twin only, arms=2: where each episode begins: home, or handheld (each TCP at a demo-like start "
        "pose, mimic.sim.bimanual.start_tcp_rows, as `mimic eval --start handheld`)",
        choices=("home", "handheld"),
    )


class ArmNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("arm")
        cfg = ArmNodeConfig()
        declare_config(self, cfg)
        self.cfg = cfg
        self.bimanual = None  # mimic.sim.bimanual.BimanualTwinArms when arms == 2
        if cfg.arms == 2:
            self._init_bimanual(cfg)
            return
        if cfg.start != "home":
            raise ParamError(f"arm: start={cfg.start!r} applies to the two-arm twin (arms=2) only")
        from mimic.robots.factory import make_arm, parse_uri
        from mimic.sim.latency import LatencyConfig

        scheme, _ = parse_uri(cfg.backend)
        self.is_twin = scheme == "twin"
        kwargs = {}
        if self.is_twin:
            kwargs = dict(
                task=cfg.task or None,
                seed=cfg.seed,
                latency=LatencyConfig(
                    joint_state_s=cfg.joint_latency_s,
                    command_s=cfg.command_latency_s,
                    jitter_s=cfg.latency_jitter_s,
                    seed=cfg.seed,
                ),
            )
        elif (
            cfg.task
            or cfg.camera_latency_s
            or cfg.joint_latency_s
            or cfg.command_latency_s
            or cfg.object_latency_s
        ):
            raise ParamError(f"arm: task/latency parameters are for twin backends, not {cfg.backend!r}")
        try:
            self.arm = make_arm(cfg.backend, **kwargs)
        except KeyError as e:  # unknown arm name in the spec table
            raise ParamError(f"arm: backend={cfg.backend!r}: {e}") from None
        self.spec = self.arm.spec
        self.names = [*self.spec.joint_names, GRIPPER_JOINT]
        self.camera_names = [c for c in cfg.cameras.split(",") if c] if self.is_twin else []
        if self.is_twin:
            from mimic.sim.env import CAMERA_KEYS

            bad = [c for c in self.camera_names if c not in CAMERA_KEYS]
            if bad:
                raise ParamError(
                    f"arm: parameter cameras: unknown twin camera(s) {bad}; known {list(CAMERA_KEYS)}"
                )
        self.camera_delay = LatencyConfig(
            camera_s=cfg.camera_latency_s, jitter_s=cfg.latency_jitter_s, seed=cfg.seed + 1
        )
        self.object_delay = LatencyConfig(jitter_s=cfg.latency_jitter_s, seed=cfg.seed + 2)
        try:
            self.arm.connect()
        except (ArmError, OSError) as e:
            raise ParamError(f"arm: cannot connect to {cfg.backend}: {e}") from None

        self.device_lock = threading.Lock()  # held across a reset so no reader sees a half-reset twin
        self.episode, self.seed = 0, cfg.seed
        self.succeeded = False
        self.counts = {"commands": 0, "refused": 0, "smoothed": 0, "ignored": 0, "states": 0}
        self._q_ref: np.ndarray | None = None  # last executed command and when (see _smooth)
        self._t_ref = 0.0
        self.frames = {c: 0 for c in self.camera_names}
        self._last_refusal_log = 0.0

        self.state_pub = self.create_publisher(JointState, "/robot/joint_states", 10)
        # Deep queue: a stalled executor must not drop commands, or the next one is a jump the guard refuses.
        self.create_subscription(JointState, "/robot/joint_command", self._on_command, 100)
        self.status_pub = self.create_publisher(
            String, "/sim/status" if self.is_twin else "/arm/status", LATCHED
        )
        if self.is_twin:
            self.object_pub = self.create_publisher(JointState, "/objects/state", 10)
            self.camera_pubs = {
                c: self.create_publisher(CompressedImage, f"/cameras/{c}/image/compressed", 2)
                for c in self.camera_names
            }
            self.create_service(Trigger, "/sim/reset", self._on_reset)

    def _init_bimanual(self, cfg: ArmNodeConfig) -> None:
        """Two arms of one twin scene: /robot<i>/joint_states and /robot<i>/joint_command per arm, the scene's
        /objects/state (20 values, mimic.sim.tasks.bimanual_pick_place), /sim/status and /sim/reset."""
        scheme, _, arm = cfg.backend.partition(":")
        if scheme != "twin" or cfg.cameras or cfg.task not in ("",):
            raise ParamError(
                f"arm: arms=2 runs the two-arm twin: backend twin:<arm>, cameras '' and task '' "
                f"(got backend={cfg.backend!r}, cameras={cfg.cameras!r}, task={cfg.task!r})"
            )
        from mimic.sim.bimanual import TASK, BimanualTwinArms

        try:
            self.bimanual = BimanualTwinArms(arm or "franka", seed=cfg.seed, start=cfg.start)
        except KeyError as e:
            raise ParamError(f"arm: backend={cfg.backend!r}: {e}") from None
        self.bimanual.connect()
        self.is_twin, self.camera_names, self.task_name = True, [], TASK
        self.spec = self.bimanual.spec
        self.names = [*self.spec.joint_names, GRIPPER_JOINT]
        self.device_lock = threading.Lock()
        self.episode, self.seed, self.succeeded = 0, cfg.seed, False
        self.counts = {"commands": 0, "refused": 0, "smoothed": 0, "ignored": 0, "states": 0}
        self.frames: dict[str, int] = {}
        self._last_refusal_log = 0.0
        n = len(self.bimanual.arms)
        self.state_pubs = [self.create_publisher(JointState, f"/robot{i}/joint_states", 10) for i in range(n)]
        for i in range(n):
            self.create_subscription(
                JointState, f"/robot{i}/joint_command", self._bimanual_command_cb(i), 100
            )
        self.object_pub = self.create_publisher(JointState, "/objects/state", 10)
        self.status_pub = self.create_publisher(String, "/sim/status", LATCHED)
        self.create_service(Trigger, "/sim/reset", self._on_reset)

    def _bimanual_command_cb(self, i: int):
        def on_command(msg: JointState) -> None:
            dof = self.spec.dof
            if len(msg.position) < dof:
                self.counts["refused"] += 1
                return
            g = float(msg.position[dof]) if len(msg.position) > dof else None
            try:
                with self.device_lock:
                    self.bimanual.arms[i].command(np.asarray(msg.position[:dof], float), g)
                self.counts["commands"] += 1
            except CommandRefused as e:
                self.counts["refused"] += 1
                if time.monotonic() - self._last_refusal_log > 1.0:
                    self._last_refusal_log = time.monotonic()
                    self.get_logger().warning(
                        f"robot{i}: command refused ({self.counts['refused']} so far): {e}"
                    )

        return on_command

    def _bimanual_state_loop(self) -> None:
        period = 1.0 / self.cfg.state_rate_hz
        status_every = max(1, int(round(self.cfg.state_rate_hz / self.cfg.status_rate_hz)))
        next_t, tick = time.monotonic(), 0
        while self.running:
            with self.device_lock:
                states = [a.state() for a in self.bimanual.arms]
                t_obj, obj, ok = self.bimanual.scene()
            self.succeeded = self.succeeded or ok
            self._success_now = ok
            for pub, s in zip(self.state_pubs, states, strict=True):
                pub.publish(joint_state(s.t, self.names, [*s.q, s.gripper], [*s.dq, 0.0]))
            self.counts["states"] += 1
            self.object_pub.publish(joint_state(t_obj, [f"object_state[{i}]" for i in range(len(obj))], obj))
            tick += 1
            if tick % status_every == 0:
                self._publish_status()
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
            if time.monotonic() > next_t + 10 * period:
                next_t = time.monotonic()

    # --- ROS callbacks ------------------------------------------------------------------------------
    def _on_command(self, msg: JointState) -> None:
        dof = self.spec.dof
        if len(msg.position) < dof:
            self.counts["refused"] += 1
            return
        q = np.asarray(msg.position[:dof], float)
        g = float(msg.position[dof]) if len(msg.position) > dof else None
        try:
            with self.device_lock:
                q = self._smooth(q)
                self.arm.command(q, g)
                self._q_ref, self._t_ref = q, time.time()
            self.counts["commands"] += 1
        except CommandRefused as e:
            self.counts["refused"] += 1
            if time.monotonic() - self._last_refusal_log > 1.0:
                self._last_refusal_log = time.monotonic()
                self.get_logger().warning(f"command refused ({self.counts['refused']} so far): {e}")
        except ArmError:
            self.counts["ignored"] += 1

    def _smooth(self, q: np.ndarray) -> np.ndarray:
        """Clip the step from the last executed command to what the velocity limit allows in the time since.

        The controller rate-limits on its own clock, but commands reach this process with transport jitter:
        two sent 2 ms apart can arrive 0.1 ms apart and then look twice as fast as they are, and one refusal
        leaves the arm's guard behind the controller for good (every later step looks even faster). Steps
        squeezed by jitter are therefore spread here (counted as `smoothed`); the arm's own guard still
        refuses targets outside the joint limits. `dt` follows `CommandGuard`'s rule.
        """
        if self._q_ref is None or q.shape != self._q_ref.shape or not np.all(np.isfinite(q)):
            return q
        spec = self.spec
        dt = min(max(time.time() - self._t_ref, 1.0 / spec.control_rate_hz), 0.1)
        max_step = 0.95 * np.asarray(spec.dq_max, float) * dt
        step = q - self._q_ref
        if np.all(np.abs(step) <= max_step):
            return q
        self.counts["smoothed"] += 1
        return self._q_ref + np.clip(step, -max_step, max_step)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """New seeded episode: the twin's scene is re-randomised and the arm put back at home."""
        if self.bimanual is not None:
            with self.device_lock:
                self.bimanual.disconnect()
                self.episode += 1
                self.seed = self.bimanual.seed = self.cfg.seed + self.episode
                self.bimanual.connect()
                self.succeeded = False
            self._publish_status()
            response.success = True
            response.message = json.dumps({"episode": self.episode, "seed": self.seed})
            return response
        with self.device_lock:
            self.arm.stop()
            self.arm.disconnect()
            self.episode += 1
            self.seed = self.cfg.seed + self.episode
            self.arm.seed = self.seed
            self.arm.connect()
            self._q_ref = None  # the guard starts from the measured pose; the first command sets ours
            self.succeeded = False
        self.get_logger().info(f"episode {self.episode}: twin reset with seed {self.seed}")
        self._publish_status()
        response.success = True
        response.message = json.dumps({"episode": self.episode, "seed": self.seed})
        return response

    # --- workers ------------------------------------------------------------------------------------
    def workers(self):
        if self.bimanual is not None:
            return (self._bimanual_state_loop,)
        return (self._state_loop, self._camera_loop) if self.camera_names else (self._state_loop,)

    def _twin_scene(self) -> tuple[float, np.ndarray, bool]:
        """(capture time, object_state as old as `object_latency_s`, live task success), read consistently with
        the twin's physics thread."""
        arm = self.arm
        t, obj = arm.object_state(self.object_delay.draw(self.cfg.object_latency_s))
        with arm._lock:  # the physics thread steps env.data under this lock
            return t, obj, bool(arm.env.success()) if self.cfg.task else False

    def _state_loop(self) -> None:
        period = 1.0 / self.cfg.state_rate_hz
        status_every = max(1, int(round(self.cfg.state_rate_hz / self.cfg.status_rate_hz)))
        next_t, tick, last_t = time.monotonic(), 0, None
        while self.running:
            with self.device_lock:
                if not self.arm.is_connected:
                    s = None
                else:
                    s = self.arm.state()
                    if self.is_twin:
                        t_obj, obj, ok = self._twin_scene()
                        self.succeeded = self.succeeded or ok
            if s is not None and s.t == last_t:  # physics has not advanced since (CPU starved): no duplicate
                s = None
            if s is not None:
                last_t = s.t
                self.state_pub.publish(joint_state(s.t, self.names, [*s.q, s.gripper], [*s.dq, 0.0]))
                self.counts["states"] += 1
                if self.is_twin:
                    names = [f"object_state[{i}]" for i in range(len(obj))]
                    self.object_pub.publish(joint_state(t_obj, names, obj))
                    self._success_now = ok
            tick += 1
            if tick % status_every == 0:
                self._publish_status()
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
            if time.monotonic() > next_t + 10 * period:  # starved: re-anchor instead of bursting
                next_t = time.monotonic()

    def _publish_status(self) -> None:
        status = {
            "backend": self.cfg.backend,
            "episode": self.episode,
            "seed": self.seed,
            "task": self.cfg.task if self.bimanual is None else self.task_name,
            "success": bool(getattr(self, "_success_now", False)),
            "succeeded": self.succeeded,
            **self.counts,
            "frames": dict(self.frames),
            "t": time.time(),
        }
        self.status_pub.publish(String(data=json.dumps(status)))

    def _camera_loop(self) -> None:
        """Render every camera at `camera_rate_hz`; publish each frame once its injected delay has passed."""
        cfg = self.cfg
        size = (cfg.image_height, cfg.image_width)
        period = 1.0 / cfg.camera_rate_hz
        due: list[tuple[float, int, str, float, np.ndarray]] = []  # heap of (publish at, seq, camera, t, rgb)
        seq, next_capture = 0, time.time()
        while self.running:
            now = time.time()
            if now >= next_capture:
                next_capture += period
                if next_capture < now:  # rendering slower than the rate: skip, do not burst
                    next_capture = now + period
                for cam in self.camera_names:
                    with self.device_lock:
                        if not self.arm.is_connected:
                            continue
                        t, rgb = self.arm.capture(cam, size)
                    seq += 1
                    heapq.heappush(due, (t + self.camera_delay.draw(cfg.camera_latency_s), seq, cam, t, rgb))
            while due and due[0][0] <= time.time():
                _, _, cam, t, rgb = heapq.heappop(due)
                self.camera_pubs[cam].publish(jpeg_image(t, rgb, cfg.jpeg_quality, frame_id=cam))
                self.frames[cam] += 1
            wake = min(next_capture, due[0][0]) if due else next_capture
            time.sleep(min(0.05, max(0.0, wake - time.time())))
        self.arm.env.close()  # the EGL context belongs to this thread: free it here, not in a finaliser

    def close(self) -> None:
        self._publish_status()
        if self.bimanual is not None:
            for a in self.bimanual.arms:
                a.stop()
            self.bimanual.disconnect()
            print(json.dumps({"arm": self.counts, "frames": self.frames}), flush=True)
            return
        self.arm.stop()
        self.arm.disconnect()
        print(json.dumps({"arm": self.counts, "frames": self.frames}), flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_node("arm", ArmNode, argv)


if __name__ == "__main__":
    sys.exit(main())
