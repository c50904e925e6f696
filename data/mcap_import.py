"""`mimic dataset import-mcap`: a ROS 2 bag -> a Mimic store, aligned exactly as the live recorder aligns.

Why: users may record raw bags (`ros2 bag record -s mcap`) and convert later. Samples go through
`DatasetWriter` in arrival (log-time) order at their header stamps, so the grid, interpolation, per-stream
tolerances and `<key>_t` are the writer's, as in `mimic_ros.recorder_node`. For a bag of a live session the
recorder's per-sample rules apply too: a repeated or out-of-order stamp is dropped; a gap wider than twice a
stream's tolerance stalls the episode (rows before it kept, the episode marked in `episode_marks`); while the
controller is silent the joint-state clock carries the last command forward as `action`. A bag exported by
`export-mcap` holds one sample per grid row and its store's layout (MCAP metadata), so its samples are fed
as they are: its rows already passed those rules once.

Episodes (`segment_mode`):
- `/recorder/status` in the bag (a live session's recorder, or an exported store): an episode is what the
  recorder recorded between its status turning `recording` true and false, kept when the recorder committed
  it (its `episodes` count grew); one already open when the bag began, or still open when it ended, is left out.
- otherwise, or with `episode_gap_s` given: the bag is cut wherever no message of a recorded topic arrived
  for longer than `episode_gap_s` (default `DEFAULT_EPISODE_GAP_S`), so a bag per take, or takes recorded with
  the bag paused between them, become one episode each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mimic.data import mcap_topics as mt
from mimic.data.dataset import DatasetError
from mimic.data.episode_marks import MARKS_ATTR, commit_marked
from mimic.data.mcap_bag import Bag, first_messages, iter_bag, open_bag
from mimic.data.writer import DatasetWriter, StreamSpec

DEFAULT_EPISODE_GAP_S = 1.0
WRITER_ATTRS = ("schema_version", "fps", "streams", MARKS_ATTR)  # set by the writer/importer, never carried


@dataclass
class Layout:
    """The store a bag becomes: its routes, streams, fps and root attrs, and whether it is a live bag."""

    routes: list[mt.Route]
    streams: dict[str, StreamSpec]
    fps: float
    attrs: dict[str, Any]
    live: bool


@dataclass
class ImportReport:
    episodes: int = 0
    steps: int = 0
    segmentation: str = ""
    skipped: list[str] = field(default_factory=list)  # one line per bag episode that did not become one
    dropped: dict[str, int] = field(default_factory=dict)  # samples never written, per key


def decode_frame(fmt: str, data: bytes) -> np.ndarray | None:
    """RGB uint8 HxWx3 of a CompressedImage payload (JPEG, or PNG when `format` says so); None if unreadable."""
    import imagecodecs

    try:
        img = imagecodecs.png_decode(data) if "png" in fmt.lower() else imagecodecs.jpeg_decode(data)
    except Exception:  # a corrupt frame is dropped and counted, as the recorder does
        return None
    img = np.asarray(img, np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3] if img.ndim == 3 and img.shape[2] >= 3 else None


def _robot_of(joint_names: list[str]) -> str:
    from mimic.robots.specs import ARM_NAMES, get_spec

    return next((n for n in ARM_NAMES if list(get_spec(n).joint_names) == joint_names), "")


def plan_layout(
    bag: Bag,
    fps: float | None,
    robot: str | None,
    cameras: list[str] | None,
    tolerance_s: float,
    image_tolerance_s: float,
) -> Layout:
    """The exported store's layout from the bag's metadata, else what the recorder would record from its topics."""
    meta = bag.metadata.get(mt.METADATA_NAME)
    if meta is not None:
        try:
            attrs = json.loads(meta["attrs"])
            routes = [mt.Route.from_json(r) for r in json.loads(meta["routes"])]
            streams = {k: StreamSpec.from_json(v) for k, v in dict(attrs["streams"]).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{bag.path}: metadata {mt.METADATA_NAME!r} unreadable ({exc})") from None
        for r in routes:
            bag.require(r.topic, r.msgtype)
        carried = {k: v for k, v in attrs.items() if k not in WRITER_ATTRS}
        if robot:
            carried["robot"] = robot
        return Layout(routes, streams, float(fps or attrs["fps"]), carried, live=False)

    bag.require(mt.JOINT_STATES_TOPIC, mt.JOINT_STATE)
    if cameras is None:
        cameras = sorted(
            name for t, ty in bag.topics.items() if (name := mt.camera_name(t)) and ty == mt.COMPRESSED_IMAGE
        )
    for name in cameras:
        bag.require(mt.camera_topic(name), mt.COMPRESSED_IMAGE)
    names = list(first_messages(bag, [mt.JOINT_STATES_TOPIC])[mt.JOINT_STATES_TOPIC].name)
    has_gripper = mt.GRIPPER_JOINT in names
    dof = names.index(mt.GRIPPER_JOINT) if has_gripper else len(names)
    routes = mt.live_routes(bag.topics, dof, has_gripper, cameras)
    first = first_messages(bag, sorted({r.topic for r in routes}))
    streams: dict[str, StreamSpec] = {}
    for r in routes:
        msg = first[r.topic]
        if r.msgtype == mt.COMPRESSED_IMAGE:
            frame = decode_frame(msg.format, msg.data)
            if frame is None:
                raise DatasetError(f"{bag.path}: topic {r.topic}: first frame is no readable JPEG/PNG image")
            streams[r.key] = StreamSpec(frame.shape, "uint8", "image", image_tolerance_s)
        else:
            width = len(msg.position[r.start : r.stop])
            streams[r.key] = StreamSpec((width,), tolerance_s=tolerance_s)
    attrs = {
        "robot": robot if robot is not None else _robot_of(names[:dof]),
        "joint_names": names[:dof],
        "task": "",
        "latencies": {},
        "cameras": cameras,
    }
    return Layout(routes, streams, float(fps or 10.0), attrs, live=True)


class _Recorder:
    """The live recorder's handling of samples (mimic_ros.recorder_node `_add`, `_hold_action`, `_on_stop`)."""

    def __init__(self, writer: DatasetWriter, live: bool, report: ImportReport) -> None:
        self.writer, self.live, self.report = writer, live, report
        self.recording = False
        self.last_t: dict[str, float] = {}
        self.latest_action: np.ndarray | None = None
        self.last_hold_t = -1.0
        self.episode_keys: set[str] = set()
        self.stalled: str | None = None
        self.failed: str | None = None
        self.after_stall = 0

    def begin(self) -> None:
        self.writer.begin_episode()
        self.recording, self.stalled, self.failed = True, None, None
        self.episode_keys, self.after_stall = set(), 0

    def add(self, key: str, t: float, value: np.ndarray | Callable[[], np.ndarray | None]) -> None:
        prev = self.last_t.get(key)
        if prev is not None and t <= prev:  # a repeat or an out-of-order sample: never written
            if t < prev and not (key == "action" and prev == self.last_hold_t):
                self._drop(key)
            return
        if self.recording and not self.failed and not self.stalled and callable(value):
            value = value()
            if value is None:
                self._drop(key)
                return
        if key == "action":
            self.latest_action = value  # type: ignore[assignment]
        self.last_t[key] = t
        if not self.recording or self.failed:
            return
        if self.stalled:
            self.after_stall += 1
            return
        tol = self.writer.streams[key].tolerance_s
        if self.live and key in self.episode_keys and prev is not None and t - prev > 2 * tol:
            self.stalled = f"{key}: no sample for {(t - prev) * 1e3:.0f} ms (tolerance {tol * 1e3:.0f} ms) at t={prev:.3f}"
            self.after_stall += 1
            return
        try:
            self.writer.append(key, t, value)
            self.episode_keys.add(key)
        except (ValueError, KeyError) as exc:  # the writer's episode is inconsistent now: it is lost
            self.failed = str(exc)

    def hold_action(self, t: float) -> None:
        """While the controller is silent the arm keeps its last target: carry it on the joint-state clock."""
        if (
            not (self.live and self.recording)
            or self.stalled
            or self.failed
            or "action" not in self.episode_keys
        ):
            return
        last = self.last_t.get("action")
        if last is not None and t - last > self.writer.streams["action"].tolerance_s:
            self.add("action", t, self.latest_action)  # type: ignore[arg-type]
            self.last_hold_t = t

    def end(self, keep: bool, label: str, why: str = "") -> None:
        self.recording = False
        if not keep or self.failed:
            self.writer.discard_episode()
            self.report.skipped.append(f"{label}: {self.failed or why}")
            return
        index = int(self.writer._ends.shape[0])
        mark = {"stalled": self.stalled, "samples_after_stall": self.after_stall} if self.stalled else None
        try:
            rows = commit_marked(self.writer.root, self.writer.end_episode, index, mark)
        except ValueError as exc:
            self.report.skipped.append(f"{label}: {exc}")
            return
        self.report.episodes += 1
        self.report.steps += rows

    def _drop(self, key: str) -> None:
        self.report.dropped[key] = self.report.dropped.get(key, 0) + 1


def _samples(
    route: mt.Route, spec: StreamSpec, msg: Any
) -> np.ndarray | Callable[[], np.ndarray | None] | None:
    """The route's value in a decoded message (an image decodes only when asked); None if it does not fit."""
    if route.msgtype == mt.COMPRESSED_IMAGE:
        return lambda: decode_frame(msg.format, msg.data)
    pos = np.asarray(msg.position[route.start : route.stop], float)
    if pos.size != int(np.prod(spec.shape)):
        return None
    return pos.reshape(spec.shape)


def import_mcap(
    bag_path: str | Path,
    out: str | Path,
    fps: float | None = None,
    episode_gap_s: float | None = None,
    robot: str | None = None,
    cameras: list[str] | None = None,
    tolerance_s: float = 0.05,
    image_tolerance_s: float = 0.1,
) -> ImportReport:
    """Build the store `out` from the bag; returns what was committed and skipped (see the module docstring)."""
    if episode_gap_s is not None and episode_gap_s <= 0:
        raise DatasetError(f"{bag_path}: episode gap must be > 0 s, got {episode_gap_s}")
    bag = open_bag(bag_path)
    layout = plan_layout(bag, fps, robot, cameras, tolerance_s, image_tolerance_s)
    by_topic: dict[str, list[mt.Route]] = {}
    for r in sorted(layout.routes, key=lambda r: r.start):
        by_topic.setdefault(r.topic, []).append(r)
    status_mode = episode_gap_s is None and bag.topics.get(mt.RECORDER_STATUS_TOPIC) == mt.STRING
    gap_ns = mt.to_ns(episode_gap_s if episode_gap_s is not None else DEFAULT_EPISODE_GAP_S)
    report = ImportReport(
        segmentation=f"{mt.RECORDER_STATUS_TOPIC} start/stop"
        if status_mode
        else f"gaps > {gap_ns * 1e-9:g} s"
    )
    writer = DatasetWriter.create(out, layout.fps, layout.streams, {**layout.attrs, MARKS_ATTR: {}})
    rec = _Recorder(writer, layout.live, report)
    topics = [*by_topic, *([mt.RECORDER_STATUS_TOPIC] if status_mode else [])]
    start_count: int | None = None
    seen_status, prev_log, n_bag_episodes = False, None, 0
    try:
        for topic, log_ns, msg in iter_bag(bag, topics):
            if topic == mt.RECORDER_STATUS_TOPIC:
                try:
                    status = json.loads(msg.data)
                    on, count = bool(status["recording"]), int(status["episodes"])
                except (ValueError, KeyError, TypeError):
                    continue  # not a recorder's status
                if on and not rec.recording and (seen_status or not layout.live):
                    rec.begin()
                    start_count = count
                elif not on and rec.recording:
                    label = f"bag episode {n_bag_episodes}"
                    n_bag_episodes += 1
                    rec.end(count > (start_count or 0), label, "the recorder did not commit it")
                elif on and not seen_status:  # a live bag that began mid-episode
                    report.skipped.append("an episode already recording when the bag began")
                seen_status = True
                continue
            if not status_mode:
                if prev_log is None or log_ns - prev_log > gap_ns:
                    if rec.recording:
                        rec.end(True, f"bag episode {n_bag_episodes}")
                        n_bag_episodes += 1
                    rec.begin()
                prev_log = log_ns
            t = mt.stamp_to_s(msg.header.stamp.sec, msg.header.stamp.nanosec)
            for route in by_topic[topic]:
                value = _samples(route, layout.streams[route.key], msg)
                if value is None:
                    rec._drop(route.key)
                    continue
                rec.add(route.key, t, value)
            if topic == mt.JOINT_STATES_TOPIC:
                rec.hold_action(t)
        if rec.recording:
            label = f"bag episode {n_bag_episodes}"
            rec.end(not status_mode, label, "still recording when the bag ended")
    finally:
        writer.close()
    if report.episodes == 0:
        why = "; ".join(report.skipped) or (
            f"{mt.RECORDER_STATUS_TOPIC} never shows recording (pass --episode-gap-s to cut by gaps instead)"
            if status_mode
            else "no messages on the recorded topics"
        )
        raise DatasetError(f"{bag.path}: no episode imported ({why})")
    return report
