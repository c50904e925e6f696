"""Evaluator node: runs deploy episodes on the twin and counts the task's success, then ends the session.

Per episode: /sim/reset (next seed) -> /controller/reset (each of `controllers`: one per arm) -> /policy/reset
-> optional recorder ~/start -> wait until /sim/status reports success for this episode (then `hold_s` more)
or `episode_s` passes -> optional ~/stop. Success is the twin task's own check (sim.TwinEnv.success), read by the arm node; the
policy, the controller and the arm are the real nodes of the deploy session, so what is scored is the
whole loop with its latencies.

Motion quality (mimic.robots.motion) comes from what the arm did: /robot/joint_states (by their capture stamps),
resampled at the chunks' row period, and /policy/action_chunk, whose stamped start times say which chunk each
period executes (the newest started one; none, i.e. waiting, once it has run out). Pooled over the episodes it
goes into the results as `motion`: seam jumps against the within-chunk p99, and idle time per episode.

    python -m mimic_ros.evaluator_node --ros-args -p episodes:=10 -p episode_s:=20 -p results_path:=eval.json
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from mimic.robots.motion import MotionSamples, resample
from mimic_ros.controller_node import CHUNK_TOPIC, chunk_from_msg, stamp_to_s
from mimic_ros.params import ParamError, declare_config, param
from mimic_ros.ros_client import Latest, ServiceError, TriggerClient
from mimic_ros.runtime import ManagedNode, run_node


@dataclass
class EvaluatorConfig:
    episodes: int = param(10, "episodes to run", range=(1, 100_000))
    episode_s: float = param(20.0, "time limit of one episode (s)", range=(0.5, 3600.0))
    hold_s: float = param(0.5, "time kept running after success before the next reset (s)", range=(0.0, 60.0))
    reset_policy: bool = param(True, "call /policy/reset at each episode start")
    record: bool = param(False, "record each rollout with the recorder (~/start, ~/stop)")
    recorder: str = param("/recorder", "recorder node namespace")
    controllers: str = param(
        "/controller",
        "comma-separated controller node namespaces, each reset at every episode start (one per arm)",
    )
    results_path: str = param("", "JSON file for the per-episode results ('' = log only)")
    timeout_s: float = param(30.0, "bound on every service call (s)", range=(1.0, 600.0))


class EvaluatorNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("evaluator")
        cfg = EvaluatorConfig()
        declare_config(self, cfg)
        self.cfg = cfg
        self.sim_status = Latest()
        self.create_subscription(String, "/sim/status", self.sim_status, 10)
        self.trace_lock = threading.Lock()
        self.joint_trace: list[tuple[float, np.ndarray]] = []
        self.chunk_trace: list[tuple[float, float, float]] = []  # (t_start, t_end, dt)
        self.motion = MotionSamples()
        self.create_subscription(JointState, "/robot/joint_states", self._on_joints, 50)
        self.create_subscription(JointTrajectory, CHUNK_TOPIC, self._on_chunk, 10)
        self.reset_sim = TriggerClient(self, "/sim/reset")
        names = [n.strip().rstrip("/") for n in cfg.controllers.split(",") if n.strip()]
        if not names:
            raise ParamError(f"evaluator: parameter controllers={cfg.controllers!r} names no controller")
        self.reset_ctls = [TriggerClient(self, f"{n}/reset") for n in names]
        self.reset_pol = TriggerClient(self, "/policy/reset")
        rec = cfg.recorder.rstrip("/")
        self.rec_start, self.rec_stop = (
            TriggerClient(self, f"{rec}/start"),
            TriggerClient(self, f"{rec}/stop"),
        )
        self.results: list[dict] = []
        self.done = threading.Event()

    def _on_joints(self, msg: JointState) -> None:
        with self.trace_lock:
            self.joint_trace.append((stamp_to_s(msg.header.stamp), np.asarray(msg.position, float)))

    def _on_chunk(self, msg: JointTrajectory) -> None:
        if len(msg.points) < 2:
            return
        parsed = chunk_from_msg(msg, len(msg.points[0].positions) - 1)
        if parsed is None:
            return
        t_start, dt, rows = parsed
        with self.trace_lock:
            self.chunk_trace.append((t_start, t_start + (len(rows) - 1) * dt, dt))

    def _add_motion(self, t0: float, t1: float) -> None:
        """The episode between wall times t0 and t1 into the motion samples (nothing if no chunk ran)."""
        with self.trace_lock:
            joints, chunks = self.joint_trace, self.chunk_trace
            self.joint_trace, self.chunk_trace = [], []
        chunks = [c for c in chunks if t0 <= c[0] <= t1]
        joints = [(t, q) for t, q in joints if t0 <= t <= t1]
        if not chunks or len(joints) < 4:
            return
        dt = chunks[0][2]
        start = chunks[0][0]
        n = int((min(t1, joints[-1][0]) - start) / dt)
        if n < 3:
            return
        dof = min(len(q) for _, q in joints)
        q = resample(
            np.array([t for t, _ in joints]), np.stack([q[:dof] for _, q in joints]), start, dt, n + 1
        )
        starts = np.array([c[0] for c in chunks])
        source = np.full(n, -1)
        for k in range(n):
            t = start + k * dt
            i = int(np.searchsorted(starts, t + 1e-6, side="right")) - 1
            if i >= 0 and t <= chunks[i][1] + 1e-6:
                source[k] = i
        self.motion.add(q, source, dt)

    def workers(self):
        return (self._run,)

    def finished(self) -> bool:
        return self.done.is_set()

    def _run(self) -> None:
        try:
            for i in range(self.cfg.episodes):
                if not self.running:
                    break
                self.results.append(self._episode(i))
            self.exit_code = 0 if len(self.results) == self.cfg.episodes else 1
        except (ServiceError, TimeoutError, ValueError) as e:
            self.get_logger().error(f"evaluation stopped: {e}")
            self.exit_code = 1
        finally:
            self._report()
            self.done.set()

    def _episode(self, i: int) -> dict:
        cfg = self.cfg
        for ctl in self.reset_ctls:  # stop executing the old episode's chunks now...
            ctl.call(cfg.timeout_s)
        reply = json.loads(self.reset_sim.call(cfg.timeout_s).message)
        for ctl in self.reset_ctls:  # ...and re-seed from the reset arms
            ctl.call(cfg.timeout_s)
        if cfg.reset_policy:
            self.reset_pol.call(cfg.timeout_s)
        if cfg.record:
            self._call_until_ok(self.rec_start)
        t0 = time.monotonic()
        wall0 = time.time()
        with self.trace_lock:
            self.joint_trace, self.chunk_trace = [], []
        success_s = None
        while self.running and time.monotonic() - t0 < cfg.episode_s:
            status = self.sim_status.json()
            if success_s is None and status.get("episode") == reply["episode"] and status.get("succeeded"):
                success_s = time.monotonic() - t0
            if success_s is not None and time.monotonic() - t0 >= success_s + cfg.hold_s:
                break
            time.sleep(0.05)
        self._add_motion(wall0, time.time())
        recorded = None
        if cfg.record:
            resp = self.rec_stop.call(cfg.timeout_s, must_succeed=False)
            recorded = json.loads(resp.message).get("steps") if resp.success else None
        result = {
            "episode": i,
            "seed": reply["seed"],
            "success": success_s is not None,
            "time_to_success_s": success_s,
            "recorded_steps": recorded,
        }
        self.get_logger().info(
            f"episode {i} (seed {reply['seed']}): "
            + (f"success after {success_s:.1f} s" if success_s is not None else "failed")
        )
        return result

    def _call_until_ok(self, client: TriggerClient) -> None:
        deadline = time.monotonic() + self.cfg.timeout_s
        while True:
            resp = client.call(self.cfg.timeout_s, must_succeed=False)
            if resp.success:
                return
            if not self.running or time.monotonic() > deadline:
                raise ServiceError(f"{client.name} failed: {resp.message}")
            time.sleep(0.2)

    def _report(self) -> None:
        rows = self.results
        n_ok = sum(r["success"] for r in rows)
        print(f"{'episode':>7} {'seed':>6} {'success':>7} {'time_s':>7}", flush=True)
        for r in rows:
            t = f"{r['time_to_success_s']:.1f}" if r["time_to_success_s"] is not None else "-"
            print(f"{r['episode']:>7} {r['seed']:>6} {str(r['success']):>7} {t:>7}", flush=True)
        print(f"success {n_ok}/{len(rows)}", flush=True)
        if self.cfg.results_path:
            Path(self.cfg.results_path).write_text(
                json.dumps(
                    {
                        "episodes": rows,
                        "success": n_ok,
                        "n": len(rows),
                        "motion": self.motion.summary().as_dict(),
                    },
                    indent=1,
                )
            )


def main(argv: list[str] | None = None) -> int:
    return run_node("evaluator", EvaluatorNode, argv)


if __name__ == "__main__":
    sys.exit(main())
