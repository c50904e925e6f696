"""Handheld replay node: a recorded handheld episode played back as the live topics, the person of `handheld_twin`.

For each episode (`mimic.teleop.handheld.replay_episode`): every pose, width and wrist frame is published at
its recorded arrival time (real time, scaled by `rate`) on the topics the handheld recorder reads, with header
stamps = now-based capture (or arrival) times as each `*_stamp` says; frames are JPEG-compressed again.
Around it, what a person does: hold still at the start pose for `lead_in_s` (the first sample of each stream
repeated, captured before the episode), ~/start on the recorder, the motion, ~/stop once the recorder's status
shows it took every sample published (bounded by `timeout_s`). After the last episode the node exits, and
with `ends_session: true` the session ends with it.

If `store` does not exist and `generate` > 0, it is first recorded by the direct path (`record_twin`: the
scripted hand on the handheld twin, `inject_*` latencies), so `mimic session up handheld_twin` needs no input.

    python -m mimic_ros.handheld_replay_node --ros-args -p store:=handheld.zarr -p episodes:=0 -p rate:=1.0
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import String

from mimic_ros.handheld_recorder_node import STAMPS, topic_names, topic_prefix
from mimic_ros.msgs import GRIPPER_JOINT, jpeg_image, set_stamp
from mimic_ros.params import ParamError, declare_config, param
from mimic_ros.ros_client import Latest, ServiceError, Stopped, TriggerClient
from mimic_ros.runtime import ManagedNode, run_node


@dataclass
class HandheldReplayConfig:
    store: str = param("", "handheld store (mimic.teleop.handheld layout) whose episodes are replayed")
    episodes: str = param("", "comma-separated episode indices to replay ('' = all)")
    rate: float = param(1.0, "playback speed (1.0 = real time)", range=(0.05, 20.0))
    grippers: str = param("", "gripper names as the recorder's (topics /handheld/<name>/...); '' = one")
    cameras: str = param("wrist", "wrist camera name per gripper (/cameras/<name>/image/compressed)")
    pose_stamp: str = param("capture", "pose header stamp: capture or arrival time", choices=STAMPS)
    gripper_stamp: str = param("capture", "width header stamp: capture or arrival time", choices=STAMPS)
    camera_stamp: str = param("capture", "frame header stamp: capture or arrival time", choices=STAMPS)
    jpeg_quality: int = param(90, "JPEG quality of the published frames", range=(10, 100))
    lead_in_s: float = param(1.0, "holding still before each ~/start (s)", range=(0.0, 30.0))
    widths: bool = param(
        True,
        "publish the recorded widths (false: the recorder reads them from the finger markers in the frames)",
    )
    record: bool = param(True, "drive the recorder (~/start, ~/stop)")
    recorder: str = param("/recorder", "recorder node namespace whose services are called")
    timeout_s: float = param(
        30.0, "bound on every wait for a service or the recorder (s)", range=(1.0, 600.0)
    )
    results_path: str = param("", "JSON file for the per-episode results ('' = log only)")
    generate: int = param(
        0, "if store is absent: record this many twin episodes into it first", range=(0, 1000)
    )
    generate_grippers: int = param(1, "generate: grippers per episode", range=(1, 8))
    seed: int = param(0, "generate: first episode seed", range=(0, 2**31 - 1))
    inject_pose_s: float = param(0.0, "generate: injected pose latency (s)", range=(0.0, 2.0))
    inject_gripper_s: float = param(0.0, "generate: injected width latency (s)", range=(0.0, 2.0))
    inject_camera_s: float = param(0.0, "generate: injected camera latency (s)", range=(0.0, 2.0))
    inject_jitter_s: float = param(
        0.0, "generate: arrival jitter, uniform in [0, this] (s)", range=(0.0, 0.1)
    )


class HandheldReplayNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("handheld_replay")
        cfg = HandheldReplayConfig()
        declare_config(self, cfg)
        me = self.get_name()
        if not cfg.store:
            raise ParamError(f"{me}: parameter store is empty (which handheld store to replay?)")
        if "receipt" in (cfg.pose_stamp, cfg.gripper_stamp, cfg.camera_stamp):
            raise ParamError(
                f"{me}: *_stamp:=receipt means the stamp is ignored; replay stamps capture or arrival"
            )
        self.cfg = cfg
        if not Path(cfg.store).exists():
            if not cfg.generate:
                raise ParamError(
                    f"{me}: parameter store: {cfg.store} does not exist (generate:=N records one)"
                )
            self._generate()
        from mimic.data.dataset import ReplayDataset

        try:
            ds = ReplayDataset(cfg.store)
            n_store = ds.n_episodes
            grippers = int(dict(ds.attrs.get("handheld_config", {})).get("grippers", 1))
            if "handheld_config" not in ds.attrs:
                raise ValueError(f"{cfg.store}: root attr 'handheld_config' missing (not a handheld store)")
        except ValueError as e:
            raise ParamError(f"{me}: {e}") from None
        try:
            self.episodes = [int(e) for e in cfg.episodes.split(",") if e.strip()] or list(range(n_store))
        except ValueError:
            raise ParamError(
                f"{me}: parameter episodes={cfg.episodes!r} is not a comma-separated list of integers"
            ) from None
        bad = [e for e in self.episodes if not 0 <= e < n_store]
        if bad:
            raise ParamError(f"{me}: parameter episodes: {bad} not in the store's 0..{n_store - 1}")
        names, cameras = topic_names(me, cfg.grippers, cfg.cameras)
        if len(names) != grippers:
            raise ParamError(
                f"{me}: the store has {grippers} gripper(s); parameters grippers={cfg.grippers!r} and "
                f"cameras={cfg.cameras!r} must name as many"
            )
        self.pubs: dict[tuple[str, int], object] = {}
        for i, (name, camera) in enumerate(zip(names, cameras, strict=True)):
            prefix = topic_prefix(name)
            self.pubs[("pose", i)] = self.create_publisher(PoseStamped, f"{prefix}/pose", 100)
            self.pubs[("gripper", i)] = self.create_publisher(JointState, f"{prefix}/gripper_width", 100)
            self.pubs[("camera", i)] = self.create_publisher(
                CompressedImage, f"/cameras/{camera}/image/compressed", 30
            )
        rec = cfg.recorder.rstrip("/")
        self.rec_status = Latest()
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(String, f"{rec}/status", self.rec_status, latched)
        self.rec_start, self.rec_stop = (
            TriggerClient(self, f"{rec}/start"),
            TriggerClient(self, f"{rec}/stop"),
        )
        self.stamp_mode = {"pose": cfg.pose_stamp, "gripper": cfg.gripper_stamp, "camera": cfg.camera_stamp}
        self.results: list[dict] = []
        self._start_deadline: float | None = None  # bound on the retries of ~/start during one lead-in
        self.done = threading.Event()

    def _generate(self) -> None:
        from mimic.teleop.handheld import TwinStreamLatency, record_twin

        cfg = self.cfg
        Path(cfg.store).parent.mkdir(parents=True, exist_ok=True)
        inj = TwinStreamLatency(
            cfg.inject_pose_s, cfg.inject_gripper_s, cfg.inject_camera_s, cfg.inject_jitter_s
        )
        out = record_twin(
            cfg.store,
            cfg.generate,
            seed=cfg.seed,
            injected=inj,
            progress=False,
            grippers=cfg.generate_grippers,
        )
        self.get_logger().info(f"recorded {out['episodes']} twin episode(s) into {cfg.store} (direct path)")

    def workers(self):
        return (self._run,)

    def finished(self) -> bool:
        return self.done.is_set()

    # --- messages ------------------------------------------------------------------------------------
    def _message(self, kind: str, value: np.ndarray):
        """The message of one sample, stamp unset (set when it is published)."""
        if kind == "pose":
            msg = PoseStamped()
            msg.header.frame_id = "world"
            p, q = msg.pose.position, msg.pose.orientation
            p.x, p.y, p.z = (float(v) for v in value[:3])
            q.w, q.x, q.y, q.z = (float(v) for v in value[3:7])
            return msg
        if kind == "gripper":
            msg = JointState()
            msg.name = [GRIPPER_JOINT]
            msg.position = [float(value[0])]
            return msg
        return jpeg_image(0.0, np.ascontiguousarray(value), self.cfg.jpeg_quality)

    def _publish(self, sample, msg, t0: float) -> None:
        """Stamp (capture or arrival time on this clock, per the stream's mode) and publish."""
        rel = sample.t_capture if self.stamp_mode[sample.kind] == "capture" else sample.t_arrival
        set_stamp(msg.header.stamp, t0 + rel / self.cfg.rate)
        self.pubs[(sample.kind, sample.gripper)].publish(msg)

    # --- the replay loop (worker thread) ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            for k in self.episodes:
                if not self.running:
                    break
                self.results.append(self._episode(k))
            ok = len(self.results) == len(self.episodes) and all(
                r["committed"] or not self.cfg.record for r in self.results
            )
            self.exit_code = 0 if ok else 1
        except (ServiceError, TimeoutError, ValueError) as e:
            self.get_logger().error(f"replay stopped: {e}")
            self.exit_code = 1
        finally:
            self._report()
            self.done.set()

    def _sleep_until(self, t: float) -> None:
        while self.running and (left := t - time.time()) > 0:
            time.sleep(min(left, 0.05))
        if not self.running:
            raise Stopped("stopping")

    def _episode(self, k: int) -> dict:
        from mimic.teleop.handheld import raw_stream, replay_episode

        cfg = self.cfg
        ep = replay_episode(cfg.store, k)
        samples = [s for s in ep.samples if cfg.widths or s.kind != "gripper"]
        msgs = [self._message(s.kind, s.value) for s in samples]
        first: dict[tuple[str, int], int] = {}
        for j, s in enumerate(samples):
            first.setdefault((s.kind, s.gripper), j)
        # lead-in: the first sample of every stream at its stream's rate, captured now (before ~/start)
        period = {key: self._period(ep, *key) for key in first}
        end, next_t = time.time() + cfg.lead_in_s, {key: 0.0 for key in first}
        while True:
            now = time.time()
            for key, j in first.items():
                if now >= next_t[key]:
                    set_stamp(msgs[j].header.stamp, now)
                    self.pubs[key].publish(msgs[j])
                    next_t[key] = now + period[key]
            if now >= end and (not cfg.record or self._start_recorder()):
                break
            self._sleep_until(min(next_t.values()))
        self.get_logger().info(f"episode {k}: motion ({samples[-1].t_arrival / cfg.rate:.1f} s)")
        # the motion: arrival times from t0, stamps too, so every capture time is after ~/start (the recorder
        # subtracts a latency from an arrival stamp: at rate > 1 that is more than the scaled one)
        lead = max(0.0, -min(s.t_capture for s in samples)) / cfg.rate + max(ep.latencies.values())
        t0 = time.time() + 0.05 + lead
        sent: dict[str, int] = {}
        late = 0.0
        for s, msg in zip(samples, msgs, strict=True):
            due = t0 + s.t_arrival / cfg.rate
            self._sleep_until(due)
            late = max(late, time.time() - due)
            self._publish(s, msg, t0)
            name = raw_stream(s.kind, s.gripper)
            sent[name] = sent.get(name, 0) + 1
        result = {
            "episode": k,
            "samples": sent,
            "exact_values": ep.exact,
            "max_late_ms": round(late * 1e3, 1),
        }
        result["committed"] = False
        if cfg.record:
            taken = self._wait_taken(sent)
            resp = self.rec_stop.call(cfg.timeout_s, must_succeed=False)
            result.update(committed=resp.success, taken=taken)
            result["recorder"] = json.loads(resp.message) if resp.success else {"error": resp.message}
        self.get_logger().info(f"replayed episode {k}: {json.dumps(result)}")
        return result

    @staticmethod
    def _period(ep, kind: str, gripper: int) -> float:
        t = [s.t_arrival for s in ep.samples if s.kind == kind and s.gripper == gripper]
        return float(np.median(np.diff(t))) if len(t) > 1 else 0.1

    def _start_recorder(self) -> bool:
        """~/start; False while the recorder waits for every stream (the lead-in goes on, bounded)."""
        if self._start_deadline is None:
            self._start_deadline = time.monotonic() + self.cfg.timeout_s
        resp = self.rec_start.call(self.cfg.timeout_s, must_succeed=False)
        if resp.success:
            self._start_deadline = None
            return True
        if time.monotonic() > self._start_deadline:
            raise ServiceError(f"recorder start failed: {resp.message}")
        return False

    def _wait_taken(self, sent: dict[str, int]) -> dict[str, int]:
        """Wait (bounded) until the recorder's status counts every published sample as taken or dropped."""
        deadline = time.monotonic() + self.cfg.timeout_s
        count = self.rec_status.count
        while True:
            s = self.rec_status.json()
            taken, dropped = s.get("taken", {}), s.get("dropped", {})
            if s.get("stalled") or s.get("failed"):
                return taken
            if all(taken.get(k, 0) + dropped.get(k, 0) >= n for k, n in sent.items()):
                return taken
            if time.monotonic() > deadline:
                self.get_logger().warning(f"recorder took {taken} of {sent} after {self.cfg.timeout_s} s")
                return taken
            count = self.rec_status.count
            try:
                self.rec_status.wait(count, 1.0, "recorder status", lambda: self.running)
            except TimeoutError:
                pass

    def _report(self) -> None:
        n_ok = sum(r["committed"] for r in self.results)
        print(f"handheld replay: {n_ok}/{len(self.episodes)} episodes committed", flush=True)
        if self.cfg.results_path:
            Path(self.cfg.results_path).write_text(
                json.dumps({"episodes": self.results, "committed": n_ok}, indent=1)
            )


def main(argv: list[str] | None = None) -> int:
    return run_node("handheld_replay", HandheldReplayNode, argv)


if __name__ == "__main__":
    sys.exit(main())
