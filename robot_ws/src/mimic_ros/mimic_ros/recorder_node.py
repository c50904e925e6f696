"""Recorder node: ROS streams -> `mimic.data.writer.DatasetWriter` episodes, controlled by ~/start, ~/stop, ~/discard.

Streams (dataset keys of the contract): /robot/joint_states -> `robot0_joint_pos`, `robot0_gripper_width`;
/robot/joint_command -> `action` (what the arm was commanded); /objects/state -> `object_state`;
/cameras/<name>/image/compressed -> `camera<i>_rgb` in `cameras` order. Every sample enters the writer at
its capture time (header stamp); the writer puts rows on the `fps` grid.

Survival:
- The store is created at the first ~/start, with shapes taken from the streams seen so far; an existing
  store is reopened with `DatasetWriter.open`, which trims what a killed recorder left uncommitted (only
  the open episode is lost; `trimmed_steps` in the status says how much).
- A stream whose samples stop (a gap wider than twice its tolerance, or nothing for that long) stalls the
  episode: nothing more is appended, the rows before the stall are kept, and ~/stop commits them with a
  mark in the root attrs (`episode_marks[<index>]`) saying which stream stalled where. Nothing is padded,
  with one exact exception: while the controller is silent (holding), `action` carries the held target.
- A sample out of capture-time order, or arriving while stalled, is dropped and counted.

Status (std_msgs/String JSON, latched) on ~/status at 2 Hz and after every service call: recording,
committed episodes, steps of the open episode, received and dropped samples per key, the stall if any.

    python -m mimic_ros.recorder_node --ros-args -p path:=demos.zarr -p arm:=franka -p task:=pick_place
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sensor_msgs.msg import CompressedImage, JointState
from std_srvs.srv import Trigger

from mimic.data.episode_marks import MARKS_ATTR
from mimic.data.storage import StorageError, locate
from mimic_ros.episode_services import EpisodeServices
from mimic_ros.msgs import decode_image, stamp_to_s
from mimic_ros.params import ParamError, declare_config, param
from mimic_ros.runtime import run_node

if TYPE_CHECKING:
    from mimic.data.writer import DatasetWriter


@dataclass
class RecorderConfig:
    path: str = param("", "Zarr store to write (created at the first ~/start, reopened if it exists)")
    arm: str = param("franka", "arm spec name (mimic.robots.specs): joint names and dof for the root attrs")
    task: str = param("", "free-form task text stored in the root attrs")
    fps: float = param(10.0, "dataset grid rate (Hz)", range=(1.0, 1000.0))
    cameras: str = param(
        "scene,wrist", "comma-separated camera names recorded as camera0_rgb, camera1_rgb, ..."
    )
    objects: bool = param(True, "record /objects/state as object_state")
    action: bool = param(True, "record /robot/joint_command as action")
    tolerance_s: float = param(
        0.05, "joint/object/action: max distance of a grid row to its sample (s)", range=(1e-3, 1.0)
    )
    image_tolerance_s: float = param(
        0.1, "cameras: max distance of a grid row to its frame (s)", range=(1e-3, 1.0)
    )
    latencies_json: str = param("{}", "JSON object of per-stream latencies (s) stored in the root attrs")
    status_rate_hz: float = param(2.0, "rate of ~/status (Hz)", range=(0.1, 50.0))
    flush_every_s: float = param(
        1.0,
        "how often the open episode's complete rows are written (s); a commit always writes them first",
        range=(0.0, 10.0),
    )


class RecorderNode(EpisodeServices):
    STATUS_KEY = "recorder"

    def __init__(self) -> None:
        super().__init__("recorder")
        cfg = RecorderConfig()
        declare_config(self, cfg)
        if not cfg.path:
            raise ParamError("recorder: parameter path is empty (where should episodes go?)")
        try:
            self.latencies = json.loads(cfg.latencies_json)
            assert isinstance(self.latencies, dict)
        except (ValueError, AssertionError):
            raise ParamError(
                f"recorder: parameter latencies_json={cfg.latencies_json!r} is not a JSON object"
            ) from None
        from mimic.robots.specs import get_spec

        try:
            self.spec = get_spec(cfg.arm)
        except (KeyError, ValueError) as e:
            raise ParamError(f"recorder: parameter arm={cfg.arm!r}: {e}") from None
        self.cfg = cfg
        self.camera_keys = {
            name: f"camera{i}_rgb" for i, name in enumerate(c for c in cfg.cameras.split(",") if c)
        }
        self.writer = None
        self.trimmed_steps = 0
        try:  # a store URL is checked up front (protocol, bucket, credentials): never a local "s3:/..." folder
            exists = locate(cfg.path).exists()
        except StorageError as e:
            raise ParamError(f"recorder: parameter path: {e}") from None
        if exists:
            self.writer = self._open_existing()
        self.recording = False
        self.episode_t0 = 0.0
        self.episode_keys: set[str] = set()
        self.stalled: str | None = None
        self.failed: str | None = None
        self.last_t: dict[str, float] = {}  # capture time of the newest sample per key
        self.last_arrival: dict[str, float] = {}
        self.latest: dict[
            str, np.ndarray
        ] = {}  # newest value per key (gives shapes when the store is created)
        self.received: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.last_episode: dict = {}
        self.after_stall = 0  # samples not written because the episode had stalled
        self.action_holds = 0  # held commands carried forward in this episode (see _hold_action)
        self.last_hold_t = -1.0
        self.late_actions = 0  # commands stamped before a recorded hold that arrived after it

        # Queues hold ~2 s of each stream, so a recorder briefly starved of CPU loses nothing (DDS keeps the
        # last `depth` samples per subscription and silently drops older ones).
        self.create_subscription(JointState, "/robot/joint_states", self._on_joints, 400)
        if cfg.action:
            self.create_subscription(JointState, "/robot/joint_command", self._on_command, 1000)
        if cfg.objects:
            self.create_subscription(JointState, "/objects/state", self._on_objects, 400)
        for name, key in self.camera_keys.items():
            self.create_subscription(
                CompressedImage, f"/cameras/{name}/image/compressed", self._camera_cb(key), 60
            )
        self._serve_episodes(self._on_start)
        self._last_tick = time.time()
        self.create_timer(1.0 / cfg.status_rate_hz, self._tick)

    # --- store -------------------------------------------------------------------------------------
    def _open_existing(self):
        from mimic.data.dataset import DatasetError
        from mimic.data.writer import DatasetWriter

        try:
            w = DatasetWriter.open(self.cfg.path)
        except DatasetError as e:
            raise ParamError(f"recorder: {e}") from None
        self.trimmed_steps = w.dropped_steps
        n = int(w._ends.shape[0])
        marks = dict(w.root.attrs.get(MARKS_ATTR, {}))
        stale = [k for k in marks if int(k) >= n]  # marks written for an episode that never committed
        if stale:
            w.root.attrs[MARKS_ATTR] = {k: v for k, v in marks.items() if int(k) < n}
        if self.trimmed_steps:
            self.get_logger().warning(
                f"{self.cfg.path}: trimmed {self.trimmed_steps} uncommitted steps of an "
                f"episode open when the last recorder stopped; {n} episodes intact"
            )
        return w

    def _stream_specs(self) -> dict:
        from mimic.data.writer import StreamSpec

        cfg, dof = self.cfg, self.spec.dof
        specs = {
            "robot0_joint_pos": StreamSpec((dof,), tolerance_s=cfg.tolerance_s),
            "robot0_gripper_width": StreamSpec((1,), tolerance_s=cfg.tolerance_s),
        }
        if cfg.action:
            specs["action"] = StreamSpec((dof + 1,), tolerance_s=cfg.tolerance_s)
        if cfg.objects:
            specs["object_state"] = StreamSpec(
                tuple(self.latest["object_state"].shape), tolerance_s=cfg.tolerance_s
            )
        for key in self.camera_keys.values():
            specs[key] = StreamSpec(tuple(self.latest[key].shape), "uint8", "image", cfg.image_tolerance_s)
        return specs

    def _create_store(self) -> str | None:
        """Create the store from the shapes seen so far; returns why not, if a stream has not spoken yet."""
        from mimic.data.dataset import DatasetError
        from mimic.data.writer import DatasetWriter

        needed = [
            "robot0_joint_pos",
            *(["action"] if self.cfg.action else []),
            *(["object_state"] if self.cfg.objects else []),
            *self.camera_keys.values(),
        ]
        missing = [k for k in needed if k not in self.latest]
        if missing:
            return f"no samples yet for {missing}: are the arm, controller and camera nodes running?"
        attrs = {
            "robot": self.spec.name,
            "joint_names": list(self.spec.joint_names),
            "task": self.cfg.task,
            "latencies": self.latencies,
            "cameras": list(self.camera_keys),
            MARKS_ATTR: {},
        }
        try:
            self.writer = DatasetWriter.create(self.cfg.path, self.cfg.fps, self._stream_specs(), attrs)
        except (DatasetError, OSError) as e:
            return str(e)
        self.get_logger().info(f"created {self.cfg.path}")
        return None

    # --- samples -----------------------------------------------------------------------------------
    def _add(self, key: str, t: float, value: np.ndarray) -> None:
        self.received[key] = self.received.get(key, 0) + 1
        self.latest[key] = value
        now = time.time()
        prev = self.last_t.get(key)
        if prev is not None and t <= prev:  # a repeat or an out-of-order sample: never written
            if t < prev and key == "action" and prev == self.last_hold_t:
                self.late_actions += 1  # sent before a hold we recorded, arrived after it: superseded
            elif t < prev:
                self._drop(key)
            return
        self.last_t[key], self.last_arrival[key] = t, now
        if not self.recording or self.failed:
            return
        if self.stalled:
            self.after_stall += 1
            return
        spec = self.writer.streams[key]
        if key in self.episode_keys and t - prev > 2 * spec.tolerance_s:
            self._stall(
                f"{key}: no sample for {(t - prev) * 1e3:.0f} ms (tolerance {spec.tolerance_s * 1e3:.0f} ms)"
                f" at t={prev:.3f}"
            )
            self.after_stall += 1
            return
        try:
            self.writer.append(key, t, value)
            self.episode_keys.add(key)
        except (ValueError, KeyError) as e:  # the writer's state may be inconsistent now: the episode is lost
            self.failed = str(e)
            self.get_logger().error(f"episode failed, it will be discarded: {e}")

    def _drop(self, key: str) -> None:
        self.dropped[key] = self.dropped.get(key, 0) + 1

    def _stall(self, why: str) -> None:
        self.stalled = why
        self.get_logger().error(f"stream stalled, episode stops here (rows before it are kept): {why}")
        self._publish_status()

    def _on_joints(self, msg: JointState) -> None:
        dof = self.spec.dof
        if len(msg.position) < dof + 1:
            self._drop("robot0_joint_pos")
            return
        t, pos = stamp_to_s(msg.header.stamp), np.asarray(msg.position, float)
        self._add("robot0_joint_pos", t, pos[:dof])
        self._add("robot0_gripper_width", t, pos[dof : dof + 1])
        self._hold_action(t)

    def _hold_action(self, t: float) -> None:
        """While the controller is silent (it holds when its leader goes stale), the arm keeps its last target.

        That target is what the arm is commanded, so it is what `action` records: once the newest command is
        older than the tolerance, the joint-state clock carries it forward (counted as `action_holds`). A
        backlog of commands stamped before the hold but delivered after it (a starved controller) is counted
        as `late_actions`: the arm, too, received them only then.
        Cameras and joints are never filled in this way: their silence is a stall.
        """
        if (
            not (self.recording and self.cfg.action)
            or self.stalled
            or self.failed
            or "action" not in self.episode_keys
        ):
            return
        last = self.last_t.get("action")
        if last is not None and t - last > self.writer.streams["action"].tolerance_s:
            self._add("action", t, self.latest["action"])
            self.received["action"] -= 1  # a carried value, not a received message
            self.action_holds += 1
            self.last_hold_t = t

    def _on_command(self, msg: JointState) -> None:
        if len(msg.position) < self.spec.dof + 1:
            self._drop("action")
            return
        self._add(
            "action", stamp_to_s(msg.header.stamp), np.asarray(msg.position[: self.spec.dof + 1], float)
        )

    def _on_objects(self, msg: JointState) -> None:
        self._add("object_state", stamp_to_s(msg.header.stamp), np.asarray(msg.position, float))

    def _camera_cb(self, key: str) -> Callable[[CompressedImage], None]:
        def on_image(msg: CompressedImage) -> None:
            rgb = decode_image(msg)
            if rgb is None:
                self._drop(key)
                return
            self._add(key, stamp_to_s(msg.header.stamp), rgb)

        return on_image

    # --- services ----------------------------------------------------------------------------------
    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.recording:
            return self._reply(response, False, "already recording: call ~/stop or ~/discard first")
        if self.writer is None:
            why = self._create_store()
            if why:
                return self._reply(response, False, f"cannot start: {why}")
        have, want = set(self.writer.streams), set(self._stream_specs_keys())
        if have != want:
            return self._reply(
                response,
                False,
                f"{self.cfg.path}: store streams {sorted(have)} differ from "
                f"this recorder's {sorted(want)} (use another path)",
            )
        now = time.time()
        silent = [k for k in self.writer.streams if now - self.last_arrival.get(k, 0.0) > 1.0]
        if silent:
            return self._reply(response, False, f"cannot start: no samples in the last second for {silent}")
        self.writer.flush_every_s = self.cfg.flush_every_s
        self.writer.begin_episode()
        self.recording, self.stalled, self.failed = True, None, None
        self.episode_t0 = now
        self.episode_keys: set[str] = set()  # keys with a sample in this episode (a gap is measured from it)
        self.dropped = {}
        self.after_stall = 0
        self.action_holds = self.late_actions = 0
        return self._reply(response, True, f"recording episode {self._n_episodes()}")

    def _stream_specs_keys(self) -> list[str]:
        keys = ["robot0_joint_pos", "robot0_gripper_width"]
        keys += ["action"] if self.cfg.action else []
        keys += ["object_state"] if self.cfg.objects else []
        return keys + list(self.camera_keys.values())

    # --- what the episode services commit, mark and report -----------------------------------------
    def _episode_store(self) -> DatasetWriter | None:
        return self.writer

    def _episode_writer(self) -> DatasetWriter | None:
        return self.writer

    def _stall_mark(self) -> dict:
        return {"stalled": self.stalled, "samples_after_stall": self.after_stall}

    def _episode_fields(self) -> dict:
        return {
            "dropped": dict(self.dropped),
            "samples_after_stall": self.after_stall,
            "action_holds": self.action_holds,
            "late_actions": self.late_actions,
        }

    # --- status ------------------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.time()
        # A tick a quarter period late or more means this process was starved (or its executor busy): the samples
        # sent meanwhile are still queued behind this timer, so their silence is ours, not the stream's.
        late = now - self._last_tick > 1.25 / self.cfg.status_rate_hz
        self._last_tick = now
        if self.recording and not self.stalled and not self.failed and not late:
            for key, spec in self.writer.streams.items():
                silent = now - max(self.last_arrival.get(key, 0.0), self.episode_t0)
                if (
                    silent > 2 * spec.tolerance_s + 0.25
                ):  # arrival jitter margin; a dead stream has no gap to see
                    self._stall(f"{key}: no sample for {silent * 1e3:.0f} ms while recording")
                    break
        self._publish_status()

    def _status_fields(self) -> dict:
        return {
            "dropped": dict(self.dropped),
            "stalled": self.stalled,
            "samples_after_stall": self.after_stall,
            "action_holds": self.action_holds,
            "late_actions": self.late_actions,
            "failed": self.failed,
            "trimmed_steps": self.trimmed_steps,
        }


def main(argv: list[str] | None = None) -> int:
    return run_node("recorder", RecorderNode, argv)


if __name__ == "__main__":
    sys.exit(main())
