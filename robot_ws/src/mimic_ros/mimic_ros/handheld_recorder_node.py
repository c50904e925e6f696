"""Handheld recorder node: a tracker's poses, gripper widths and wrist frames -> `mimic.teleop.handheld` episodes.

The ROS side of UMI-style capture: no arm, the person's motion is the data. Per gripper (`grippers`, "" for one):
- pose: /handheld/pose or /handheld/<name>/pose, geometry_msgs/PoseStamped (VIVE, Quest, phone AR, mocap, SLAM)
- width: /handheld/gripper_width or /handheld/<name>/gripper_width, sensor_msgs/JointState with one position
  (m). JointState, not std_msgs/Float64: it carries a header stamp (a capture time, DESIGN.md 3) and is what
  /robot/joint_states already uses for a gripper (joint name "gripper").
- wrist camera: /cameras/<camera>/image/compressed (the camera node), one camera per gripper (`cameras`)
Everything goes through `HandheldCapture`, so the store is the one the twin path (`record_twin`) writes:
robot<i>_eef_pos / _eef_rot_axis_angle / _gripper_width, camera<i>_rgb, action, raw/episode_<k>/ arrivals and values.

Times: a stream's `*_stamp` says what its header stamp is. `capture`: the publisher already removed the
latency (the camera node does); `arrival`: the driver stamped the sample when it received it; `receipt`: the
stamp is ignored and this node's receive time is used (a phone whose clock is not the ROS clock). Capture time
is then stamp, stamp - latency or receipt - latency; the latencies (`*_latency_s`, or `latency_file` from
`mimic calibrate latency`) go to the store's attrs as the latencies of the streams.

Episodes: ~/start, ~/stop, ~/discard (std_srvs/Trigger; `python -m mimic_ros.keys` maps them to keys). An
episode holds the samples captured after ~/start. A stream whose samples stop (a gap over twice its
tolerance) stalls the episode: nothing more is written, ~/stop commits the rows before the stall with a mark
in root attrs `episode_marks`. ~/status (std_msgs/String JSON, latched): recording, episodes, steps,
samples received / taken into the episode / dropped per raw stream, stall.

    python -m mimic_ros.handheld_recorder_node --ros-args -p path:=handheld.zarr -p cameras:=wrist
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CompressedImage, JointState
from std_srvs.srv import Trigger

from mimic.data.episode_marks import MARKS_ATTR
from mimic_ros.episode_services import EpisodeServices
from mimic_ros.msgs import decode_image, stamp_to_s
from mimic_ros.params import ParamError, declare_config, param
from mimic_ros.runtime import run_node

if TYPE_CHECKING:
    from mimic.data.writer import DatasetWriter
    from mimic.teleop.handheld import HandheldCapture

STAMPS = ("capture", "arrival", "receipt")
_ROS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KINDS = ("pose", "gripper", "camera")


@dataclass
class HandheldRecorderConfig:
    path: str = param("", "Zarr store to write (created at the first ~/start, appended to if it exists)")
    grippers: str = param(
        "", "comma-separated gripper names (topics /handheld/<name>/...); '' = one gripper on /handheld/..."
    )
    cameras: str = param("wrist", "wrist camera name per gripper, in gripper order (/cameras/<name>/...)")
    width_source: str = param(
        "topic",
        "gripper width from <gripper>/gripper_width (topic) or the wrist image",
        choices=("topic", "markers"),
    )
    marker_calibration: str = param(
        "",
        "width_source=markers: `mimic calibrate gripper-width` JSON per gripper (comma-separated, in gripper "
        "order; one file serves every gripper); frames reach it at full size, before resizing",
    )
    fps: float = param(10.0, "dataset grid rate (Hz)", range=(1.0, 1000.0))
    image_height: int = param(
        96, "stored image height (px); frames of another size are resized", range=(8, 4320)
    )
    image_width: int = param(96, "stored image width (px)", range=(8, 7680))
    pose_latency_s: float = param(0.0, "pose stream capture-to-arrival latency (s)", range=(0.0, 2.0))
    gripper_latency_s: float = param(0.0, "width stream capture-to-arrival latency (s)", range=(0.0, 2.0))
    camera_latency_s: float = param(0.0, "wrist camera capture-to-arrival latency (s)", range=(0.0, 2.0))
    latency_file: str = param(
        "", "`mimic calibrate latency` JSON: its pose_s and camera_s (by camera name) replace the parameters"
    )
    pose_stamp: str = param("arrival", "what a pose header stamp is", choices=STAMPS)
    gripper_stamp: str = param("arrival", "what a width header stamp is", choices=STAMPS)
    camera_stamp: str = param(
        "capture", "what a frame header stamp is (the camera node: capture)", choices=STAMPS
    )
    tracked_to_tcp: str = param(
        "",
        "16 comma-separated numbers, row-major 4x4 T_tracked_tcp (m); '' = the pose stream reports the TCP",
    )
    lowdim_tolerance_s: float = param(
        0.05, "pose/width: max distance of a grid row to its sample (s)", range=(1e-3, 1.0)
    )
    camera_tolerance_s: float = param(
        0.06, "frames: max distance of a grid row to its frame (s)", range=(1e-3, 1.0)
    )
    task: str = param("", "free-form task text stored in the root attrs")
    attrs_file: str = param(
        "",
        "JSON object of extra root attrs for a new store (camera_mount_tcp_cam, gripper_max, calibration_ids)",
    )
    status_rate_hz: float = param(2.0, "rate of ~/status (Hz)", range=(0.1, 50.0))


def read_latency_file(path: str, cameras: list[str]) -> dict[str, float]:
    """{pose_s?, camera_s?} from a `mimic calibrate latency` JSON; one camera latency shared by the grippers."""
    from mimic.calibration.latency import LatencyCalibration

    cal = LatencyCalibration.load(path)
    out: dict[str, float] = {}
    if cal.pose_s is not None:
        out["pose"] = float(cal.pose_s)
    found = [cal.camera_s[c] for c in cameras if c in cal.camera_s]
    if found:
        if max(found) - min(found) > 1e-9:
            raise ValueError(f"{path}: wrist cameras {cameras} have different latencies {found}")
        out["camera"] = float(found[0])
    elif len(cal.camera_s) == 1:  # `mimic calibrate latency --camera` names its only camera camera0
        out["camera"] = float(next(iter(cal.camera_s.values())))
    return out


def parse_transform(text: str) -> list[list[float]] | None:
    if not text.strip():
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 16:
        raise ParamError("handheld_recorder: parameter tracked_to_tcp must be 16 comma-separated numbers")
    return np.asarray(values).reshape(4, 4).tolist()


def topic_prefix(name: str) -> str:
    return f"/handheld/{name}" if name else "/handheld"


def topic_names(node: str, grippers: str, cameras: str) -> tuple[list[str], list[str]]:
    """Gripper names ([""] for one unnamed gripper) and one wrist camera name per gripper, checked as ROS names."""
    names = [g.strip() for g in grippers.split(",")] if grippers.strip() else [""]
    cams = [c.strip() for c in cameras.split(",")]
    bad = [n for n in [*(names if grippers.strip() else []), *cams] if not _ROS_NAME.fullmatch(n)]
    if bad:
        raise ParamError(f"{node}: parameters grippers/cameras: {bad} are not ROS names (letters, digits, _)")
    if len(cams) != len(names) or len(set(names)) != len(names):
        raise ParamError(
            f"{node}: parameter cameras={cameras!r} must name one camera per gripper "
            f"({len(names)}: {grippers or 'one unnamed'}), and gripper names must differ"
        )
    return names, cams


def marker_sources(node: str, cfg: HandheldRecorderConfig, n_grippers: int) -> list:
    """One MarkerWidthSource per gripper for width_source=markers (else none), from `marker_calibration`."""
    if cfg.width_source != "markers":
        return []
    paths = [p.strip() for p in cfg.marker_calibration.split(",") if p.strip()]
    if len(paths) not in (1, n_grippers):
        raise ParamError(
            f"{node}: parameter marker_calibration: width_source=markers needs one calibration file, or one per "
            f"gripper ({n_grippers}), got {len(paths)}"
        )
    from mimic.teleop.marker_width import MarkerWidthCalibration, MarkerWidthSource

    try:
        cals = [MarkerWidthCalibration.load(p) for p in paths]
    except ValueError as e:
        raise ParamError(f"{node}: parameter marker_calibration: {e}") from None
    return [MarkerWidthSource(cals[i % len(cals)]) for i in range(n_grippers)]


class HandheldRecorderNode(EpisodeServices):
    STATUS_KEY = "handheld_recorder"

    def __init__(self) -> None:
        super().__init__("handheld_recorder")
        cfg = HandheldRecorderConfig()
        declare_config(self, cfg)
        me = self.get_name()
        if not cfg.path:
            raise ParamError(f"{me}: parameter path is empty (where should episodes go?)")
        names, cameras = topic_names(me, cfg.grippers, cfg.cameras)
        self.width_sources = marker_sources(me, cfg, len(names))
        latency = {
            "pose": cfg.pose_latency_s,
            "gripper": cfg.gripper_latency_s,
            "camera": cfg.camera_latency_s,
        }
        if cfg.latency_file:
            try:
                latency.update(read_latency_file(cfg.latency_file, cameras))
            except ValueError as e:
                raise ParamError(f"{me}: parameter latency_file: {e}") from None
        if self.width_sources:  # a width read from a frame was captured when the frame was
            latency["gripper"] = latency["camera"]
        from mimic.teleop.handheld import HandheldCaptureConfig

        try:
            self.capture_config = HandheldCaptureConfig(
                fps=cfg.fps,
                image_size=(cfg.image_height, cfg.image_width),
                pose_latency_s=latency["pose"],
                gripper_latency_s=latency["gripper"],
                camera_latency_s=latency["camera"],
                lowdim_tolerance_s=cfg.lowdim_tolerance_s,
                camera_tolerance_s=cfg.camera_tolerance_s,
                task=cfg.task or HandheldCaptureConfig.task,
                tracked_to_tcp=parse_transform(cfg.tracked_to_tcp),
                grippers=len(names),
            )
        except ValueError as e:
            raise ParamError(f"{me}: {e}") from None
        self.extra_attrs: dict = {}
        if cfg.attrs_file:
            try:
                self.extra_attrs = json.loads(Path(cfg.attrs_file).read_text())
                assert isinstance(self.extra_attrs, dict)
            except (OSError, ValueError, AssertionError):
                raise ParamError(
                    f"{me}: parameter attrs_file: {cfg.attrs_file} is not a JSON object file"
                ) from None
        self.cfg, self.names, self.cameras, self.latency = cfg, names, cameras, latency
        self.stamp_mode = {
            "pose": cfg.pose_stamp,
            "gripper": cfg.camera_stamp if self.width_sources else cfg.gripper_stamp,
            "camera": cfg.camera_stamp,
        }
        self.cap = None
        self.recording = False
        self.t_start = 0.0
        self.stalled: str | None = None
        self.failed: str | None = None
        self.last_t: dict[str, float] = {}  # capture time of the newest sample taken into the episode
        self.last_arrival: dict[str, float] = {}
        self.received: dict[str, int] = {}
        self.taken: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.last_episode: dict = {}

        from mimic.teleop.handheld import raw_stream

        self.raw_stream = raw_stream
        self.topics: dict[str, str] = {}
        for i, (name, camera) in enumerate(zip(names, cameras, strict=True)):
            prefix = topic_prefix(name)
            self.topics[raw_stream("pose", i)] = f"{prefix}/pose"
            self.topics[raw_stream("gripper", i)] = (
                f"markers in /cameras/{camera}/image/compressed"
                if self.width_sources
                else f"{prefix}/gripper_width"
            )
            self.topics[raw_stream("camera", i)] = f"/cameras/{camera}/image/compressed"
            # queues hold ~2 s of each stream, so a recorder briefly starved of CPU loses nothing
            self.create_subscription(PoseStamped, f"{prefix}/pose", self._pose_cb(i), 400)
            if not self.width_sources:
                self.create_subscription(JointState, f"{prefix}/gripper_width", self._width_cb(i), 400)
            self.create_subscription(
                CompressedImage, f"/cameras/{camera}/image/compressed", self._frame_cb(i), 120
            )
        self._serve_episodes(self._on_start)
        self.create_timer(1.0 / cfg.status_rate_hz, self._publish_status)
        self.get_logger().info(
            f"grippers {[n or 'gripper' for n in names]}: "
            + ", ".join(f"{k} <- {v}" for k, v in self.topics.items())
        )

    # --- samples -----------------------------------------------------------------------------------
    def _capture_time(self, kind: str, stamp: float) -> tuple[float, float]:
        """(arrival time as HandheldCapture takes it, capture time) of one sample by its stream's stamp mode."""
        mode, lat = self.stamp_mode[kind], self.latency[kind]
        if mode == "capture":
            return stamp + lat, stamp
        arrival = stamp if mode == "arrival" else time.time()
        return arrival, arrival - lat

    def _pose_cb(self, i: int) -> Callable[[PoseStamped], None]:
        stream = self.raw_stream("pose", i)

        def on_pose(msg: PoseStamped) -> None:
            p, o = msg.pose.position, msg.pose.orientation
            pos = np.array([p.x, p.y, p.z], float)
            quat = np.array([o.w, o.x, o.y, o.z], float)
            if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat)) and np.linalg.norm(quat) > 1e-6):
                self._count(self.dropped, stream)
                return
            self._sample(
                stream, "pose", stamp_to_s(msg.header.stamp), lambda t: self.cap.on_pose(t, pos, quat, i)
            )

        return on_pose

    def _width_cb(self, i: int) -> Callable[[JointState], None]:
        stream = self.raw_stream("gripper", i)

        def on_width(msg: JointState) -> None:
            if len(msg.position) < 1 or not np.isfinite(msg.position[0]):
                self._count(self.dropped, stream)
                return
            w = float(msg.position[0])
            self._sample(
                stream, "gripper", stamp_to_s(msg.header.stamp), lambda t: self.cap.on_gripper(t, w, i)
            )

        return on_width

    def _frame_cb(self, i: int) -> Callable[[CompressedImage], None]:
        stream, width_stream = self.raw_stream("camera", i), self.raw_stream("gripper", i)
        h, w = self.capture_config.image_size

        def on_frame(msg: CompressedImage) -> None:
            rgb = decode_image(msg)
            if rgb is None:
                self._count(self.dropped, stream)
                return
            stamp = stamp_to_s(msg.header.stamp)
            if self.width_sources:
                full = rgb
                self._sample(
                    width_stream,
                    "gripper",
                    stamp,
                    lambda t: self.width_sources[i].feed(self.cap, t, full, i),
                )
            if rgb.shape[:2] != (h, w):
                import cv2

                rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            self._sample(stream, "camera", stamp, lambda t: self.cap.on_frame(t, rgb, i))

        return on_frame

    def _count(self, table: dict[str, int], stream: str) -> None:
        table[stream] = table.get(stream, 0) + 1

    def _sample(self, stream: str, kind: str, stamp: float, feed: Callable[[float], None]) -> None:
        """Take one sample into the open episode if it belongs there: captured after ~/start, in order, no stall."""
        self._count(self.received, stream)
        self.last_arrival[stream] = time.time()
        if not self.recording or self.failed:
            return
        arrival, t = self._capture_time(kind, stamp)
        if t < self.t_start:
            return  # captured before ~/start (in flight when it was called)
        prev = self.last_t.get(stream)
        if prev is not None and t <= prev:
            self._count(self.dropped, stream)  # a repeat or out of capture-time order: never written
            return
        if self.stalled:
            return
        tol = (
            self.capture_config.camera_tolerance_s
            if kind == "camera"
            else self.capture_config.lowdim_tolerance_s
        )
        if prev is not None and t - prev > 2 * tol:
            self.stalled = (
                f"{stream} ({self.topics[stream]}): no sample for {(t - prev) * 1e3:.0f} ms "
                f"(tolerance {tol * 1e3:.0f} ms) at t={prev:.3f}"
            )
            self.get_logger().error(
                f"stream stalled, the episode stops here (rows before it are kept): {self.stalled}"
            )
            self._publish_status()
            return
        self.last_t[stream] = t
        try:
            feed(arrival)
            self._count(self.taken, stream)
        except (ValueError, KeyError) as e:  # the writer may be inconsistent now: the episode is lost
            self.failed = f"{stream}: {e}"
            self.get_logger().error(f"episode failed, it will be discarded: {self.failed}")

    # --- store -------------------------------------------------------------------------------------
    def _open_store(self) -> str | None:
        """Create or reopen the store; returns why not."""
        from mimic.data.dataset import DatasetError
        from mimic.data.storage import StorageError, locate
        from mimic.teleop.handheld import HandheldCapture

        path = self.cfg.path
        try:
            if locate(path).exists():
                cap = HandheldCapture.open(path)
                theirs, ours = cap.config, self.capture_config
                diff = [
                    f
                    for f in (
                        "fps",
                        "image_size",
                        "grippers",
                        "tracked_to_tcp",
                        "pose_latency_s",
                        "gripper_latency_s",
                        "camera_latency_s",
                    )
                    if getattr(theirs, f) != getattr(ours, f)
                ]
                if diff:
                    cap.close()
                    return (
                        f"{path}: the store was recorded with other {', '.join(diff)} "
                        f"({', '.join(f'{f}={getattr(theirs, f)}' for f in diff)}): use another path"
                    )
            else:
                attrs = {
                    **self.extra_attrs,
                    "source": "mimic_ros.handheld_recorder_node",
                    "grippers": [n or "gripper" for n in self.names],
                    "cameras": self.cameras,
                    "topics": self.topics,
                    "stamps": self.stamp_mode,
                    MARKS_ATTR: {},
                }
                cap = HandheldCapture.create(path, self.capture_config, attrs)
                self.get_logger().info(f"created {path}")
        except (DatasetError, StorageError, ValueError, OSError) as e:
            return str(e)
        self.cap = cap
        return None

    # --- services ----------------------------------------------------------------------------------
    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.recording:
            return self._reply(response, False, "already recording: call ~/stop or ~/discard first")
        now = time.time()
        silent = [f"{s} ({t})" for s, t in self.topics.items() if now - self.last_arrival.get(s, 0.0) > 1.0]
        if silent:
            return self._reply(response, False, f"cannot start: no samples in the last second on {silent}")
        if self.cap is None:
            why = self._open_store()
            if why:
                return self._reply(response, False, f"cannot start: {why}")
        self.cap.begin_episode()
        self.recording, self.stalled, self.failed = True, None, None
        self.t_start = now
        self.last_t, self.taken, self.dropped = {}, {}, {}
        return self._reply(response, True, f"recording episode {self._n_episodes()}")

    # --- what the episode services commit, mark and report -----------------------------------------
    def _episode_store(self) -> HandheldCapture | None:
        return self.cap

    def _episode_writer(self) -> DatasetWriter | None:
        return self.cap.writer if self.cap is not None else None

    def _episode_fields(self) -> dict:
        return {"taken": dict(self.taken), "dropped": dict(self.dropped)}

    def _status_fields(self) -> dict:
        return {
            "taken": dict(self.taken),
            "dropped": dict(self.dropped),
            "stalled": self.stalled,
            "failed": self.failed,
        }


def main(argv: list[str] | None = None) -> int:
    return run_node("handheld_recorder", HandheldRecorderNode, argv)


if __name__ == "__main__":
    sys.exit(main())
