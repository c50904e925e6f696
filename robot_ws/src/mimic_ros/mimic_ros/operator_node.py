"""Operator node: a scripted person doing teleoperation on the twin, to record demonstrations unattended.

The person's brain is `sim.make_expert` running on what the session publishes (/robot/joint_states,
/objects/state), never on the twin's internals. The person's hands move the leader:
- `output:=bus` (the real chain): an `mimic.teleop.emulated_bus.EmulatedDynamixelBus` owned by this process;
  its pty is linked at `bus_link`, where the leader node opens it with dynamixel-sdk like a /dev/ttyUSB0.
  Targets are swept linearly over each expert period (a hand moves continuously; GELLO rejects jumps).
- `output:=topic`: publishes /leader/joint_states itself at `leader_rate_hz` (a scripted leader, no GELLO).

Per episode: /sim/reset (new seed) -> /controller/reset -> recorder ~/start -> expert at the task rate
until the twin reports success (plus `hold_steps` to show the release) or `max_steps` -> ~/stop -> the
leader is walked back home. Success per episode comes from /sim/status; a table and (optionally) a JSON
file report the run; the node then exits, which ends the session (`ends_session: true` in the YAML).

    python -m mimic_ros.operator_node --ros-args -p episodes:=5 -p bus_link:=/tmp/gello -p calibration:=/tmp/g.json
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from mimic.sim.env import TASKS
from mimic_ros.msgs import GRIPPER_JOINT, joint_state
from mimic_ros.params import ParamError, declare_config, param
from mimic_ros.ros_client import Latest, ServiceError, Stopped, TriggerClient
from mimic_ros.runtime import ManagedNode, run_node


@dataclass
class OperatorConfig:
    arm: str = param("franka", "follower arm (mimic.robots.specs name); must match the arm node's twin")
    task: str = param("pick_place", "twin task the expert performs", choices=TASKS)
    episodes: int = param(5, "episodes to record", range=(1, 10_000))
    output: str = param("bus", "how the person moves the leader", choices=("bus", "topic"))
    bus_link: str = param(
        "", "bus output: path of a symlink to the emulated bus pty (the leader node's port)"
    )
    calibration: str = param(
        "", "bus output: GELLO calibration JSON; written (example calibration) if absent"
    )
    baudrate: int = param(
        1_000_000, "bus output: baud rate of the example calibration's servos", range=(9600, 4_000_000)
    )
    leader_rate_hz: float = param(100.0, "topic output: /leader/joint_states rate (Hz)", range=(10.0, 1000.0))
    max_steps: int = param(
        0, "expert steps per episode before giving up (0: the task's limit)", range=(0, 100_000)
    )
    hold_steps: int = param(5, "expert steps recorded after the twin reports success", range=(0, 1000))
    home_s: float = param(2.0, "time to walk the leader back home between episodes (s)", range=(0.1, 30.0))
    retries: int = param(
        2, "re-records of an episode whose recording stalled (discarded, not committed)", range=(0, 100)
    )
    record: bool = param(True, "drive the recorder (~/start, ~/stop)")
    recorder: str = param("/recorder", "recorder node namespace whose services are called")
    reset_controller: bool = param(True, "call /controller/reset after each twin reset")
    results_path: str = param("", "JSON file for the per-episode results ('' = log only)")
    timeout_s: float = param(30.0, "bound on every wait for a stream or a service (s)", range=(1.0, 600.0))


class TopicLeader:
    """The leader as a topic: the newest target republished at a fixed rate, stamped at publication."""

    def __init__(self, node: ManagedNode, names: list[str], rate_hz: float) -> None:
        self.node, self.names, self.period = node, names, 1.0 / rate_hz
        self.pub = node.create_publisher(JointState, "/leader/joint_states", 10)
        self.target: np.ndarray | None = None

    def move(self, q: np.ndarray, gripper: float, over_s: float) -> None:
        self.target = np.concatenate([q, [gripper]])

    def loop(self) -> None:
        next_t = time.monotonic()
        while self.node.running:
            if self.target is not None:
                self.pub.publish(joint_state(time.time(), self.names, self.target))
            next_t += self.period
            time.sleep(max(0.0, next_t - time.monotonic()))

    def close(self) -> None:
        pass


class BusLeader:
    """The leader as servos on an emulated Dynamixel bus; the person sweeps it to each target."""

    def __init__(self, cfg: OperatorConfig, home: np.ndarray, gripper: float) -> None:
        from mimic.teleop.emulated_bus import EmulatedDynamixelBus
        from mimic.teleop.gello_calibration import GelloCalibration, example_calibration

        if not cfg.bus_link or not cfg.calibration:
            raise ParamError("operator: output=bus needs parameters bus_link and calibration")
        cal_path = Path(cfg.calibration)
        if cal_path.exists():
            cal = GelloCalibration.load(cal_path)
        else:
            cal_path.parent.mkdir(parents=True, exist_ok=True)
            cal = example_calibration(cfg.arm, baudrate=cfg.baudrate)
            cal.save(cal_path)
        self.bus = EmulatedDynamixelBus(cal, follower=cfg.arm, start_pose=home)
        link = Path(cfg.bus_link)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(self.bus.port, link)
        self.link = link
        self.q, self.g = np.asarray(home, float).copy(), float(gripper)
        self.bus.set_joint_targets(self.q, self.g)
        self._lock = threading.Lock()

    def move(self, q: np.ndarray, gripper: float, over_s: float) -> None:
        """Sweep from where the hand is now to (q, gripper) in `over_s` seconds."""
        with self._lock:
            q0, g0 = self.q.copy(), self.g
            q1, g1 = np.asarray(q, float).copy(), float(gripper)
            self.q, self.g = q1, g1

        def path(t: float) -> tuple[np.ndarray, float]:
            a = min(max(t / over_s, 0.0), 1.0)
            return q0 + (q1 - q0) * a, g0 + (g1 - g0) * a

        self.bus.follow(path)

    def loop(self) -> None:
        pass

    def close(self) -> None:
        try:
            self.link.unlink(missing_ok=True)
        finally:
            self.bus.close()


class OperatorNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("operator")
        cfg = OperatorConfig()
        declare_config(self, cfg)
        from mimic.sim import make_env, make_expert

        try:
            self.env = make_env(cfg.task, cfg.arm, seed=0, cameras=())
        except (ValueError, KeyError) as e:
            raise ParamError(f"operator: {e}") from None
        self.cfg, self.spec = cfg, self.env.spec
        self.expert = make_expert(self.env)
        self.scratch = mujoco.MjData(self.env.model)
        self.max_steps = cfg.max_steps or self.env.max_steps
        names = [*self.spec.joint_names, GRIPPER_JOINT]
        if cfg.output == "bus":
            self.leader: TopicLeader | BusLeader = BusLeader(cfg, self.spec.home, self.spec.gripper_max)
        else:
            self.leader = TopicLeader(self, names, cfg.leader_rate_hz)
            self.leader.move(self.spec.home, self.spec.gripper_max, 0.0)
        self.joints, self.objects, self.sim_status = Latest(), Latest(), Latest()
        self.create_subscription(JointState, "/robot/joint_states", self.joints, 10)
        self.create_subscription(JointState, "/objects/state", self.objects, 10)
        self.create_subscription(String, "/sim/status", self.sim_status, 10)
        self.rec_status = Latest()
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(String, f"{cfg.recorder.rstrip('/')}/status", self.rec_status, latched)
        self.reset_sim = TriggerClient(self, "/sim/reset")
        self.reset_ctl = TriggerClient(self, "/controller/reset")
        rec = cfg.recorder.rstrip("/")
        self.rec_start, self.rec_stop = (
            TriggerClient(self, f"{rec}/start"),
            TriggerClient(self, f"{rec}/stop"),
        )
        self.rec_discard = TriggerClient(self, f"{rec}/discard")
        self.results: list[dict] = []
        self.done = threading.Event()

    def workers(self):
        return (self.leader.loop, self._run)

    def finished(self) -> bool:
        return self.done.is_set()

    # --- observation from ROS --------------------------------------------------------------------------
    def observation(self) -> dict[str, np.ndarray]:
        """What the expert needs, from the newest /robot/joint_states and /objects/state only."""
        js, obj = self.joints.msg, self.objects.msg
        dof = self.spec.dof
        q = np.asarray(js.position[:dof], float)
        d, env = self.scratch, self.env
        d.qpos[env.arm_qpos] = q
        mujoco.mj_kinematics(env.model, d)
        return {
            "robot0_joint_pos": q,
            "robot0_gripper_width": np.asarray(js.position[dof : dof + 1], float),
            "robot0_eef_pos": d.site_xpos[env.tcp_site].copy(),
            "object_state": np.asarray(obj.position, float),
        }

    # --- the episode loop (worker thread) ------------------------------------------------------------
    def _run(self) -> None:
        try:
            alive = lambda: self.running  # noqa: E731
            self.joints.wait(0, self.cfg.timeout_s, "/robot/joint_states", alive)
            self.objects.wait(0, self.cfg.timeout_s, "/objects/state", alive)
            retries = self.cfg.retries
            while len(self.committed()) < self.cfg.episodes and self.running:
                result = self._episode(len(self.committed()))
                self.results.append(result)
                if result.get("discarded"):
                    if retries == 0:
                        raise ServiceError(
                            f"episode {result['episode']} stalled again: {result['discarded']}"
                        )
                    retries -= 1
            self.exit_code = 0 if len(self.committed()) == self.cfg.episodes else 1
        except (ServiceError, TimeoutError) as e:
            self.get_logger().error(f"operator stopped: {e}")
            self.exit_code = 1
        finally:
            self._report()
            self.done.set()

    def committed(self) -> list[dict]:
        """Episodes that count: committed by the recorder (or every finished one when not recording)."""
        return [r for r in self.results if r["committed"] or (not self.cfg.record and not r.get("discarded"))]

    def _episode(self, i: int) -> dict:
        cfg, period = self.cfg, 1.0 / self.env.control_hz
        if cfg.reset_controller:  # hold during the reset, then re-seed from the reset arm
            self.reset_ctl.call(cfg.timeout_s)
        reply = json.loads(self.reset_sim.call(cfg.timeout_s).message)
        t_reset = time.time()
        if cfg.reset_controller:
            self.reset_ctl.call(cfg.timeout_s)
        # wait for the new scene on the streams (a tracker sample captured after the reset)
        deadline = time.monotonic() + cfg.timeout_s
        while (
            self.objects.msg is None
            or _stamp(self.objects.msg) < t_reset
            or _stamp(self.joints.msg) < t_reset
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("no /objects/state after /sim/reset")
            if not self.running:
                raise Stopped("stopping")
            time.sleep(0.02)
        self.expert.reset()
        committed, rec_info = False, {}
        if cfg.record:
            self._start_recorder()
        steps, success_step = 0, None
        next_t = time.monotonic()
        while self.running and steps < self.max_steps:
            action = self.expert.act(self.observation())
            self.leader.move(action[:-1], float(action[-1]), period)
            steps += 1
            status = self.sim_status.json()
            if success_step is None and status.get("episode") == reply["episode"] and status.get("succeeded"):
                success_step = steps
            if success_step is not None and steps >= success_step + cfg.hold_steps:
                break
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
        discarded = None
        if cfg.record:
            stalled = self.rec_status.json().get("stalled") if self.rec_status.msg is not None else None
            if stalled and cfg.retries > 0:  # a person would redo a take the recorder could not keep whole
                self.rec_discard.call(cfg.timeout_s, must_succeed=False)
                discarded = f"recording stalled ({stalled})"
                self.get_logger().warning(f"episode {i}: {discarded}: discarded, recording it again")
            else:
                resp = self.rec_stop.call(cfg.timeout_s, must_succeed=False)
                committed = resp.success
                rec_info = json.loads(resp.message) if resp.success else {"error": resp.message}
        result = {
            "episode": i,
            "seed": reply["seed"],
            "success": success_step is not None,
            "steps": steps,
            "success_step": success_step,
            "committed": committed,
            "recorder": rec_info,
            "discarded": discarded,
        }
        self.get_logger().info(
            f"episode {i} (seed {reply['seed']}): expert "
            f"{'succeeded at step ' + str(success_step) if success_step else 'failed'}"
            f", {steps} steps" + (f", recorded {rec_info}" if cfg.record else "")
        )
        self._walk_home(action)
        return result

    def _start_recorder(self) -> None:
        """~/start, retried while the recorder waits for fresh samples after the reset (bounded)."""
        deadline = time.monotonic() + self.cfg.timeout_s
        while True:
            resp = self.rec_start.call(self.cfg.timeout_s, must_succeed=False)
            if resp.success:
                return
            if not self.running:
                raise Stopped("stopping")
            if time.monotonic() > deadline:
                raise ServiceError(f"recorder start failed: {resp.message}")
            time.sleep(0.2)

    def _walk_home(self, last_action: np.ndarray) -> None:
        """Put the leader back at home slowly (the arm follows), ready for the next reset."""
        home = self.spec.home
        self.leader.move(home, self.spec.gripper_max, self.cfg.home_s)
        end = time.monotonic() + self.cfg.home_s + 0.5
        while self.running and time.monotonic() < end:
            time.sleep(0.05)

    def _report(self) -> None:
        lines = [f"{'episode':>7} {'seed':>6} {'success':>7} {'steps':>5} {'recorded':>8}"]
        for r in self.results:
            rec = (
                r["recorder"].get("steps", "-")
                if r["committed"]
                else ("discarded" if r["discarded"] else "-")
            )
            lines.append(f"{r['episode']:>7} {r['seed']:>6} {str(r['success']):>7} {r['steps']:>5} {rec:>8}")
        rows = self.committed()
        n_ok = sum(r["success"] for r in rows)
        lines.append(
            f"expert success {n_ok}/{len(rows)} (attempts discarded: {len(self.results) - len(rows)})"
        )
        for line in lines:
            print(line, flush=True)
        if self.cfg.results_path:
            Path(self.cfg.results_path).write_text(
                json.dumps(
                    {"episodes": rows, "success": n_ok, "n": len(rows), "attempts": self.results}, indent=1
                )
            )

    def close(self) -> None:
        self.leader.close()
        self.env.close()


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def main(argv: list[str] | None = None) -> int:
    return run_node("operator", OperatorNode, argv)


if __name__ == "__main__":
    sys.exit(main())
