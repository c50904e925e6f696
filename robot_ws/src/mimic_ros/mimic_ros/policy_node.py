"""Policy node: observation window aligned by capture time -> policy.predict -> timed action chunk.

Timing model (DESIGN.md 4): a sample arriving at `t_arrival` on stream s was captured at
`t_arrival - L_s`. The window ends at `t_obs`, the newest time for which every stream has data, and
holds `n_obs_steps` samples spaced `1 / control_hz`. Predicted row `i` is meant to execute at
`t_obs + (i - action_offset) / control_hz` (`action_offset = n_obs_steps - 1`, the first of
mimic.policies.chunk_policy.executed_rows: diffusion_policy's convention, the row aligned with the newest
observation). Rows due before `t_obs + inference + L_arm` can no longer be executed and are dropped; the
chunk is stamped with the time of its first kept row.
With matching off every latency is taken as 0: observations count as current and the chunk starts now.
Inference runs on a worker thread, never on the ROS callback thread.

A policy with cameras and `prepare` (mimic.policies.policy.Policy, the TCP-position wrapper) has its camera frames
encoded ahead of the chunk that will hold them as an older window step (docs/inference.md): the inference thread,
while it waits for the next chunk's time, hands `policy.prepare` each new set of newest aligned frames while they
can be an older step of that chunk's window (PolicyNode.in_older_step: about a camera period around each whole
control period before it; 3 frames per camera per chunk at 30 Hz), and only while that call (its slowest recent
time, twice over) still ends before the chunk is due. It runs between chunks on the chunk's own thread, so it
never delays one nor races it, and holds nothing but the last frames it prepared. The chunk then encodes only its
newest step's frames: /policy/diagnostics reports `encoded_frames` (frames the chunk's encoder computed, from the
policy's feature cache) and `prepared_frames` (encoded ahead since the last chunk).

Two kinds of policy (`action_space`, see mimic.policies.checkpoint.load_deployable, the one loading entry point):
- joint (default): rows [q, gripper] -> /policy/action_chunk (trajectory_msgs/JointTrajectory), executed by the
  controller in `mode:=chunk`;
- eef (mimic.policies.eef_relative.EefPolicy, trained on handheld demonstrations, or a scripted object with
  `action_space = "eef"`): rows [tcp pos, axis-angle, gripper width] -> /policy/eef_chunk
  (trajectory_msgs/MultiDOFJointTrajectory, convention in mimic_ros.msgs), executed by the controller in
  `mode:=eef` (`mimic deploy` picks the mode from the checkpoint). Its observations `robot0_eef_pos` /
  `robot0_eef_rot_axis_angle` are the TCP pose by forward kinematics of each /robot/joint_states sample on the
  arm's twin model (mimic.robots.ik, converted as the twins' and the handheld stores' keys), `robot0_gripper_width`
  the measured width; the relative-trajectory encoding and decoding are the policy's own (EefPolicy.predict).
  The gripper column is the arm's command as the policy returns it (EefPolicy applies its own post-processing).

    python -m mimic_ros.policy_node --ros-args -p checkpoint:=ckpt/ -p arm:=franka -p cameras:=scene,wrist \
        -p camera_latency_s:=0.15 -p arm_latency_s:=0.1
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint, MultiDOFJointTrajectory

from mimic.policies.chunk_policy import (
    SCRIPTED_PREFIX,
    check_chunk_policy,
    executed_rows,
    feature_cache_of,
    scripted_factory,
)
from mimic.policies.realtime import (
    DEFAULT_MAX_GUIDANCE,
    ChunkingConfig,
    DelayEstimate,
    InferenceDelay,
    continuation_prefix,
    supports_prefix,
    timed_chunk,
)
from mimic.robots.control import CHUNKING, Chunk
from mimic.robots.spec import ArmSpec
from mimic_ros.controller_node import CHUNK_TOPIC, resolve_spec
from mimic_ros.msgs import EEF_CHUNK_TOPIC, eef_chunk_msg
from mimic_ros.params import ParamError, declare_config, param
from mimic_ros.runtime import ManagedNode, run_node

EEF_OBS_KEYS = ("robot0_eef_pos", "robot0_eef_rot_axis_angle")
JOINT_OBS_KEYS = ("robot0_joint_pos", "robot0_gripper_width", *EEF_OBS_KEYS)
# chunks published this long with no subscriber -> one warning (a controller in the wrong mode?)
NO_LISTENER_WARN_S = 5.0
# control periods a chunk may start late (load, the loop's 5 ms polling) that the prepared frames allow for
PREPARE_SLACK = 0.25
PREPARE_FIRST_GUESS_S = 0.02  # what a first prepare is assumed to take, before one was timed
PREPARE_COST_DECAY = 0.9  # the prepare time kept: the slowest recent one, decaying by this per call


@dataclass
class PolicyNodeConfig:
    checkpoint: str = param("", "checkpoint directory (policies.load_deployable), or py:module:factory")
    arm: str = param(
        "franka", "arm spec name (mimic.robots.specs): joint names, and the model for eef observations"
    )
    cameras: str = param("scene,wrist", "camera names in policy order: camera0_rgb, camera1_rgb, ...")
    camera_latency_s: float = param(0.0, "camera capture-to-arrival latency (s)", range=(0.0, 2.0))
    joint_latency_s: float = param(
        0.0, "joint-state (and object-state) capture-to-arrival latency (s)", range=(0.0, 2.0)
    )
    object_latency_s: float = param(
        -1.0,
        "object-state capture-to-arrival latency (s), e.g. a tracker's on camera frames (< 0: joint_latency_s)",
        range=(-1.0, 2.0),
    )
    arm_latency_s: float = param(0.0, "arm command-to-motion latency (s)", range=(0.0, 2.0))
    matching: bool = param(True, "latency matching (false: observations count as current, chunks start now)")
    num_inference_steps: int = param(
        0, "denoising steps per prediction (0: the policy's default)", range=(0, 10_000)
    )
    chunk_candidates: int = param(
        0,
        "chunks sampled per prediction, the one continuing the last chunk kept (0: the checkpoint's)",
        range=(0, 256),
    )
    action_steps: int = param(
        0,
        "chunk rows executed per prediction, i.e. replan period in control steps (0: the checkpoint's)",
        range=(0, 256),
    )
    device: str = param("cpu", "torch device of the policy")
    engine: str = param(
        "torch",
        "how the policy's networks run: torch, bf16, compiled, onnx, onnx-int8 (mimic.policies.engines; "
        "onnx ones need `mimic export` first)",
    )
    chunking: str = param(
        "blend",
        "sync: wait for each chunk, send its executed rows; switch|ensemble|blend|rtc: compute the next chunk "
        "while the current one runs (mimic.policies.realtime); the controller's chunking must match",
        choices=CHUNKING,
    )
    inference_delay_s: str = param(
        "0", "extra delay injected per chunk before it is published: SECONDS or LO:HI (uniform)"
    )
    max_guidance: float = param(DEFAULT_MAX_GUIDANCE, "rtc: clip of the guidance weight", range=(0.01, 100.0))
    arm_namespaces: str = param(
        "robot0,robot1",
        "two-gripper policies: gripper i's arm is /<name i>/joint_states in and /<name i>/eef_chunk out",
    )
    base_positions: str = param(
        "",
        "two-gripper policies: each arm base's position in the frame both grippers' poses share, "
        "'x,y,z;x,y,z' (m, bases facing the same way); '' = the two-arm twin's (mimic.sim.tasks.bimanual_pick_place)",
    )


class StreamBuffer:
    """The recent samples of one observation stream, keyed by capture time (arrival minus its latency)."""

    def __init__(self, latency_s: float, maxlen: int = 64) -> None:
        self.latency_s = latency_s
        self.samples: deque[tuple[float, np.ndarray]] = deque(maxlen=maxlen)

    def add(self, t_arrival: float, value: np.ndarray) -> None:
        self.samples.append((t_arrival - self.latency_s, value))

    @property
    def newest(self) -> float | None:
        return self.samples[-1][0] if self.samples else None

    def period(self) -> float | None:
        """The longest spacing of the held samples' capture times (None with fewer than two): how long a sample can
        stay the newest."""
        if len(self.samples) < 2:
            return None
        t = [tc for tc, _ in self.samples]
        return max(b - a for a, b in zip(t, t[1:], strict=False))

    def at(self, t: float) -> np.ndarray:
        """The newest sample captured at or before `t` (the oldest one if none is that old)."""
        best = self.samples[0][1]
        for tc, v in self.samples:
            if tc <= t + 1e-9:
                best = v
            else:
                break
        return best


def window_end(buffers: dict[str, StreamBuffer]) -> float | None:
    """The newest capture time every stream covers (a window's t_obs), or None while a stream is empty."""
    newest = [b.newest for b in buffers.values()]
    if any(t is None for t in newest):
        return None
    return min(newest)


def align_window(
    buffers: dict[str, StreamBuffer], n_obs_steps: int, dt: float
) -> tuple[float, dict[str, np.ndarray]] | None:
    """(t_obs, {key: [n_obs_steps, ...]}) ending at the newest time all streams cover, or None if one is empty."""
    t_obs = window_end(buffers)
    if t_obs is None:
        return None
    times = [t_obs - (n_obs_steps - 1 - i) * dt for i in range(n_obs_steps)]
    return t_obs, {k: np.stack([b.at(t) for t in times]) for k, b in buffers.items()}


def newest_aligned(buffers: dict[str, StreamBuffer], keys: tuple[str, ...]) -> tuple[np.ndarray, ...] | None:
    """The samples of `keys` that a window aligned now would hold as its newest step (the stored arrays
    themselves, so a caller can tell by identity whether they changed), or None while a stream is empty."""
    t_obs = window_end(buffers)
    return None if t_obs is None else tuple(buffers[k].at(t_obs) for k in keys)


class PolicyNode(ManagedNode):
    def __init__(self, spec: ArmSpec | None = None, policy=None) -> None:
        super().__init__("policy")
        cfg = PolicyNodeConfig()
        declare_config(self, cfg)
        spec = spec or resolve_spec(cfg.arm)
        if policy is None:
            policy = load_checkpoint(cfg.checkpoint, cfg.device, inference_overrides(cfg), cfg.engine)
        source = f"parameter checkpoint={cfg.checkpoint!r}" if cfg.checkpoint else "policy"
        check_chunk_policy(policy, source)
        self.cfg, self.spec, self.policy = cfg, spec, policy
        self.action_space = getattr(policy, "action_space", "joint")  # check_chunk_policy checked it
        try:
            self.chunking = ChunkingConfig(
                cfg.chunking, InferenceDelay.parse(cfg.inference_delay_s), max_guidance=cfg.max_guidance
            )
        except ValueError as e:
            raise ParamError(f"parameter {e}") from None
        if cfg.chunking == "rtc" and (self.action_space != "joint" or not supports_prefix(policy)):
            raise ParamError(
                f"parameter chunking=rtc: {source} cannot continue a prefix (a trained joint policy can)"
            )
        lat = (lambda s: s) if cfg.matching else (lambda s: 0.0)
        self.lead_s = lat(cfg.arm_latency_s)
        self.dt = 1.0 / float(policy.control_hz)
        self.action_offset = executed_rows(int(policy.n_obs_steps), int(policy.n_action_steps))[0]
        self.lock = threading.Lock()
        self.buffers: dict[str, StreamBuffer] = {}
        keys = set(policy.obs_keys)
        self.ik = None  # forward kinematics for the robot0_eef_* keys (the arm's twin model)
        self.arm_namespaces: list[str] = []  # two-gripper policy: one arm per gripper
        if int(getattr(policy, "grippers", 1)) == 2:
            self._init_two_arms(cfg, spec, lat)
        single = keys - set(self.buffers)  # keys of one arm on /robot/joint_states
        if single & set(EEF_OBS_KEYS):
            from mimic_ros.controller_node import ik_solver

            self.ik = ik_solver(spec)
        if single & set(JOINT_OBS_KEYS):
            for key in single & set(JOINT_OBS_KEYS):
                self.buffers[key] = StreamBuffer(lat(cfg.joint_latency_s))
            self.create_subscription(JointState, "/robot/joint_states", self._on_joints, 10)
        for i, name in enumerate(n for n in cfg.cameras.split(",") if n):
            key = f"camera{i}_rgb"
            if key in keys:
                self.buffers[key] = StreamBuffer(lat(cfg.camera_latency_s), maxlen=8)
                self.create_subscription(
                    CompressedImage, f"/cameras/{name}/image/compressed", self._camera_cb(key), 2
                )
        if "object_state" in keys:
            obj_s = cfg.joint_latency_s if cfg.object_latency_s < 0 else cfg.object_latency_s
            self.buffers["object_state"] = StreamBuffer(lat(obj_s))
            self.create_subscription(JointState, "/objects/state", self._on_objects, 10)
        missing = keys - set(self.buffers)
        if missing:
            raise ValueError(f"policy node: no ROS stream provides observation keys {sorted(missing)}")
        if self.arm_namespaces:
            self.chunk_pubs = [
                self.create_publisher(MultiDOFJointTrajectory, f"/{ns}/eef_chunk", 10)
                for ns in self.arm_namespaces
            ]
            self.chunk_pub = self.chunk_pubs[0]
        elif self.action_space == "eef":
            self.chunk_pub = self.create_publisher(MultiDOFJointTrajectory, EEF_CHUNK_TOPIC, 10)
        else:
            self.chunk_pub = self.create_publisher(JointTrajectory, CHUNK_TOPIC, 10)
        self._unheard_since: float | None = None
        self._warned_unheard = False
        self.diag_pub = self.create_publisher(String, "/policy/diagnostics", 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.running = True
        self.chunks_sent = 0
        self.episode = 0  # bumped by ~/reset; a window built before it is never used after it
        self.last_chunk: Chunk | None = None  # the last published joint chunk, what an rtc chunk continues
        self.delay_estimate = DelayEstimate()
        self.rng = random.Random(0)
        self.prepare_keys = self._prepare_keys(policy)
        self.cache = feature_cache_of(policy)
        self.prepare_cost_s = PREPARE_FIRST_GUESS_S
        self.sample_period_s = self.dt  # the slowest stream's sample spacing, as last seen
        self.prepared: tuple[np.ndarray, ...] = ()  # the frames last handed to prepare
        self.prepared_frames = 0  # frames prepare encoded since the last chunk

    def _prepare_keys(self, policy) -> tuple[str, ...]:
        """The camera keys to prepare ahead of a chunk; none for a policy without `prepare` or cameras (scripted and
        end-effector policies), or whose window holds only the newest step (nothing in it is older)."""
        keys = tuple(getattr(policy, "image_keys", ()) or ())
        if not callable(getattr(policy, "prepare", None)) or int(policy.n_obs_steps) < 2:
            return ()
        return keys if all(k in self.buffers for k in keys) else ()

    def _init_two_arms(self, cfg: PolicyNodeConfig, spec: ArmSpec, lat: Callable[[float], float]) -> None:
        """A two-gripper policy (UMI's bimanual layout): per arm, /<ns>/joint_states -> the TCP pose by forward
        kinematics moved into the shared frame by the arm's base position -> robot<i>_eef_* and
        robot<i>_gripper_width; its chunk's gripper-i rows go back to arm i's base frame on /<ns>/eef_chunk."""
        from mimic_ros.controller_node import ik_solver

        names = [n for n in cfg.arm_namespaces.split(",") if n]
        if len(names) != 2:
            raise ParamError(f"parameter arm_namespaces={cfg.arm_namespaces!r}: a two-gripper policy needs 2")
        if cfg.base_positions:
            try:
                bases = [np.array([float(v) for v in p.split(",")]) for p in cfg.base_positions.split(";")]
            except ValueError:
                bases = []
            if len(bases) != 2 or any(b.shape != (3,) for b in bases):
                raise ParamError(f"parameter base_positions={cfg.base_positions!r}: expected 'x,y,z;x,y,z'")
        else:
            from mimic.sim.tasks.bimanual_pick_place import BASE_POSES

            bases = [t[:3, 3].copy() for t in BASE_POSES]
        self.arm_namespaces, self.base_positions = names, bases
        self.ik = ik_solver(spec)
        for i, ns in enumerate(names):
            for k in ("eef_pos", "eef_rot_axis_angle", "gripper_width"):
                self.buffers[f"robot{i}_{k}"] = StreamBuffer(lat(cfg.joint_latency_s))
            self.create_subscription(JointState, f"/{ns}/joint_states", self._two_arm_joints_cb(i), 10)

    def _two_arm_joints_cb(self, i: int) -> Callable[[JointState], None]:
        def on_joints(msg: JointState) -> None:
            from mimic.robots.eef_control import tcp_pose_row

            t, dof = time.time(), self.spec.dof
            pos = np.asarray(msg.position, float)
            if len(pos) <= dof or not np.all(np.isfinite(pos)):
                return
            tcp = tcp_pose_row(self.ik.fk(pos[:dof]))  # FK outside the lock
            tcp[:3] += self.base_positions[i]
            with self.lock:
                self.buffers[f"robot{i}_eef_pos"].add(t, tcp[:3])
                self.buffers[f"robot{i}_eef_rot_axis_angle"].add(t, tcp[3:])
                self.buffers[f"robot{i}_gripper_width"].add(t, pos[dof : dof + 1])

        return on_joints

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """New episode: drop buffered observations (they show the old scene) and the policy's state."""
        with self.lock:
            for b in self.buffers.values():
                b.samples.clear()
            self.episode += 1
            self.policy.reset()
            self.last_chunk = None
        response.success, response.message = True, f"episode {self.episode}"
        return response

    def _on_objects(self, msg: JointState) -> None:
        t = time.time()
        with self.lock:
            self.buffers["object_state"].add(t, np.asarray(msg.position, float))

    def _on_joints(self, msg: JointState) -> None:
        t, dof = time.time(), self.spec.dof
        pos = np.asarray(msg.position, float)
        if len(pos) < dof or not np.all(np.isfinite(pos)):
            return
        tcp = None
        if self.ik is not None:  # FK outside the lock (the inference thread reads the buffers under it)
            from mimic.robots.eef_control import tcp_pose_row

            tcp = tcp_pose_row(self.ik.fk(pos[:dof]))
        with self.lock:
            if "robot0_joint_pos" in self.buffers:
                self.buffers["robot0_joint_pos"].add(t, pos[:dof])
            if "robot0_gripper_width" in self.buffers and len(pos) > dof:
                self.buffers["robot0_gripper_width"].add(t, pos[dof : dof + 1])
            if tcp is not None:
                if "robot0_eef_pos" in self.buffers:
                    self.buffers["robot0_eef_pos"].add(t, tcp[:3])
                if "robot0_eef_rot_axis_angle" in self.buffers:
                    self.buffers["robot0_eef_rot_axis_angle"].add(t, tcp[3:])

    def _camera_cb(self, key: str) -> Callable[[CompressedImage], None]:
        def on_image(msg: CompressedImage) -> None:
            t = time.time()
            bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                self.get_logger().warning(f"{key}: undecodable image dropped")
                return
            with self.lock:
                self.buffers[key].add(t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

        return on_image

    def workers(self):
        return (self.loop,)

    def loop(self) -> None:
        """Compute chunks as the chunking strategy says, each published the moment it is ready.

        sync: the next inference starts once the controller has sent the last chunk's rows (the arm waits for it);
        every other strategy: one inference every `n_action_steps` rows (receding horizon) while the current chunk
        keeps running, so a chunk arrives before the one running ends. rtc passes the executing chunk as prefix."""
        s = max(1, int(self.policy.n_action_steps))
        next_t = time.time()
        while self.running:
            while self.running and time.time() < next_t:
                self.prepare_ahead(next_t)
                time.sleep(min(0.005, max(0.0, next_t - time.time())))
            if not self.running:
                break
            with self.lock:
                window = align_window(self.buffers, int(self.policy.n_obs_steps), self.dt)
                episode = self.episode
            if window is None:
                next_t = time.time() + 0.01
                continue
            t_start = self.infer_and_publish(window, episode)
            now = time.time()
            if not self.chunking.asynchronous and t_start is not None:
                next_t = max(now, t_start + s * self.dt - self.lead_s)
            else:
                next_t = max(now, next_t + s * self.dt)

    def prepare_ahead(self, next_t: float) -> None:
        """Encode the newest aligned camera frames if they changed since the last call, they can be an older step of
        the window of the chunk due at `next_t` (`in_older_step`), and there is time left to encode them before it."""
        if not self.prepare_keys:
            return
        now = time.time()
        if next_t - now < 2 * self.prepare_cost_s or not self.in_older_step(
            now, next_t, self.sample_period_s
        ):
            return
        with self.lock:
            frames = newest_aligned(self.buffers, self.prepare_keys)
            periods = [p for b in self.buffers.values() if (p := b.period()) is not None]
        self.sample_period_s = max(periods, default=self.dt)
        if frames is None:
            return
        if len(frames) == len(self.prepared) and all(
            a is b for a, b in zip(frames, self.prepared, strict=True)
        ):
            return
        self.prepared = frames
        t0 = time.perf_counter()
        try:
            n = self.policy.prepare({k: f[None] for k, f in zip(self.prepare_keys, frames, strict=True)})
        except (KeyError, ValueError) as e:  # frames the policy cannot take: predict says so, every chunk
            self.get_logger().warning(f"prepare disabled: {e}")
            self.prepare_keys = ()
            return
        self.prepare_cost_s = max(time.perf_counter() - t0, PREPARE_COST_DECAY * self.prepare_cost_s)
        self.prepared_frames += int(n)

    def in_older_step(self, now: float, next_t: float, period: float) -> bool:
        """Whether the samples newest now can be those of an older step of the window of the chunk due at `next_t`.

        Step t - j of that window holds the newest sample captured j control periods before the window's end; that
        end is the capture time of a stream's newest sample when the chunk starts, at most one sample `period` (the
        slowest stream's) before it. So step t - j holds the samples newest at some moment of
        [next_t - j dt - period, next_t - j dt], a window widened on both sides by PREPARE_SLACK control periods for
        a chunk that starts late and for capture-time jitter."""
        slack = PREPARE_SLACK * self.dt
        for j in range(1, int(self.policy.n_obs_steps)):
            slot = next_t - j * self.dt
            if slot - period - slack <= now <= slot + slack:
                return True
        return False

    def infer_and_publish(self, window: tuple[float, dict[str, np.ndarray]], episode: int) -> float | None:
        """One chunk from `window`: predict (with the rtc prefix), inject the configured delay, publish the rows still
        executable, report timing on /policy/diagnostics. Returns the published chunk's start, or None."""
        t_obs, obs = window
        if not self.cfg.matching:
            t_obs = time.time()  # naive: the newest sample is taken as current
        t_trigger = time.time()
        prefix, t_commit = None, None
        if self.chunking.strategy == "rtc" and self.last_chunk is not None:
            t_commit = t_trigger + self.delay_estimate.value + self.lead_s
            prefix = continuation_prefix(
                self.last_chunk,
                t_obs,
                self.dt,
                self.action_offset,
                int(self.policy.horizon),
                t_commit,
                self.chunking.max_guidance,
            )
        steps = self.cfg.num_inference_steps or None
        misses = self.cache.misses if self.cache is not None else 0
        if prefix is None:
            actions = self.policy.predict(obs, num_inference_steps=steps)
        else:
            actions = self.policy.predict(obs, num_inference_steps=steps, prefix=prefix)
        computed = time.time()
        encoded = self.cache.misses - misses if self.cache is not None else None
        prepared, self.prepared_frames = self.prepared_frames, 0
        injected = self.chunking.delay.sample(self.rng)
        if injected > 0:
            time.sleep(injected)
        t_ready = time.time()
        self.delay_estimate.add(t_ready - t_trigger)
        chunk = timed_chunk(actions, t_obs, self.dt, self.action_offset, t_ready, self.lead_s)
        if not self.cfg.matching:
            chunk = (t_ready, np.asarray(actions[self.action_offset :], float))
        if chunk is not None and not self.chunking.asynchronous:
            chunk = (chunk[0], chunk[1][: max(1, int(self.policy.n_action_steps))])
        published = chunk is not None and episode == self.episode
        if published:
            self.publish_chunk(*chunk)
            self.last_chunk = Chunk(chunk[0], self.dt, chunk[1]) if self.action_space == "joint" else None
        self.diag_pub.publish(
            String(
                data=json.dumps(
                    {
                        "inference_s": computed - t_trigger,
                        "delay_s": t_ready - t_trigger,
                        "injected_delay_s": injected,
                        "frozen_rows": prefix.frozen if prefix is not None else 0,
                        "frozen_until": t_commit if prefix is not None else None,
                        "chunking": self.chunking.strategy,
                        "obs_age_s": t_ready - t_obs,
                        "chunk_start_in_s": (chunk[0] - t_ready) if chunk else None,
                        "chunks_sent": self.chunks_sent,
                        "encoded_frames": encoded,
                        "prepared_frames": prepared if self.prepare_keys else None,
                    }
                )
            )
        )
        return chunk[0] if published else None

    def publish_chunk(self, t_start: float, rows: np.ndarray) -> None:
        if self.chunk_pub.get_subscription_count() > 0:
            self._unheard_since = None
        elif self._unheard_since is None:
            self._unheard_since = time.monotonic()
        elif not self._warned_unheard and time.monotonic() - self._unheard_since > NO_LISTENER_WARN_S:
            self._warned_unheard = True
            mode = "eef" if self.action_space == "eef" else "chunk"
            self.get_logger().warning(
                f"nobody subscribes to {self.chunk_pub.topic_name} ({self.action_space} policy): "
                f"is the controller running with mode:={mode}?"
            )
        if self.arm_namespaces:  # gripper i's 7 columns, back in arm i's base frame
            rows = np.array(rows, float)
            for i, pub in enumerate(self.chunk_pubs):
                arm_rows = rows[:, 7 * i : 7 * (i + 1)].copy()
                arm_rows[:, :3] -= self.base_positions[i]
                pub.publish(eef_chunk_msg(t_start, self.dt, arm_rows))
            self.chunks_sent += 1
            return
        if self.action_space == "eef":
            rows = np.array(rows, float)
            self.chunk_pub.publish(eef_chunk_msg(t_start, self.dt, rows))
            self.chunks_sent += 1
            return
        msg = JointTrajectory()
        msg.header.stamp.sec = int(t_start)
        msg.header.stamp.nanosec = int((t_start - int(t_start)) * 1e9)
        msg.joint_names = [*self.spec.joint_names, "gripper"]
        for i, row in enumerate(rows):
            ns = int(round(i * self.dt * 1e9))
            msg.points.append(
                JointTrajectoryPoint(
                    positions=row.tolist(), time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9)
                )
            )
        self.chunk_pub.publish(msg)
        self.chunks_sent += 1


def inference_overrides(cfg: PolicyNodeConfig) -> list[str]:
    """The node's parameters that change a checkpoint at load time (mimic.policies.checkpoint.INFERENCE_FIELDS)."""
    fields = {"policy.chunk_candidates": cfg.chunk_candidates, "policy.n_action_steps": cfg.action_steps}
    return [f"{key}={value}" for key, value in fields.items() if value]


def load_checkpoint(checkpoint: str, device: str, overrides: list[str] | None = None, engine: str = "torch"):
    """`policies.load_deployable(checkpoint, overrides=...)` (a joint Policy or an end-effector EefPolicy), or
    `py:module:factory` for a scripted policy object (tests, baselines; mimic.policies.chunk_policy.ChunkPolicy)."""
    if checkpoint.startswith(SCRIPTED_PREFIX):
        if overrides:
            raise ValueError(
                f"{', '.join(overrides)}: inference overrides apply to a checkpoint, not to {checkpoint}"
            )
        if engine != "torch":
            raise ValueError(f"engine {engine}: applies to a checkpoint, not to {checkpoint}")
        return scripted_factory(checkpoint)()
    if not checkpoint:
        raise ValueError("parameter checkpoint is empty")
    try:
        from mimic.policies import load_deployable
    except ImportError as e:
        raise ValueError(f"cannot load policies ({e})") from None
    return load_deployable(checkpoint, device=device, overrides=overrides or [], engine=engine)


def main(argv: list[str] | None = None, spec: ArmSpec | None = None, policy=None) -> int:
    """Run until SIGINT; parameters as `--ros-args -p name:=value`. `spec`/`policy` override `arm`/`checkpoint`."""
    # ParamError and CheckpointError are ValueError/OSError: one line, exit 2
    return run_node("policy", lambda: PolicyNode(spec, policy), argv, join_timeout_s=10.0)


if __name__ == "__main__":
    sys.exit(main())
