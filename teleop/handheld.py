"""Handheld (UMI-style) capture source: tracker poses, gripper width and the wrist camera into a Mimic store.

A handheld gripper has no arm and no commands: what the person did *is* the data. Three streams arrive
at their own rates, each stamped with its arrival time; each has a calibrated latency (DESIGN.md 4), so
capture time = arrival - latency, and the writer aligns them on the 10 Hz grid by capture time:

- pose stream (t, position m, quaternion wxyz) of the TCP, e.g. geometry_msgs/PoseStamped from a tracker
  or SLAM -> `robot0_eef_pos` [3], `robot0_eef_rot_axis_angle` [3]
- gripper width (t, m) -> `robot0_gripper_width` [1]
- wrist camera (t, uint8 HxWx3) -> `camera0_rgb` (UMI's naming: the wrist camera is the only camera)
- `action` [7] = [eef pos, eef axis-angle, gripper width] at the same capture time: UMI's convention,
  the policy predicts the poses the gripper goes through; mimic.data.relative makes them relative at training.

Axis-angle is kept continuous within an episode (a TCP pointing down sits at a rotation angle near pi,
where the shortest representation flips sign between samples): the representative closest to the
previous sample is stored, so grid interpolation and normalisation never see a jump. Any magnitude is a
valid rotation for every consumer (scipy, mimic.data.relative).

Raw arrival times of every sample are kept per episode in `raw/episode_<k>/<stream>_arrival_t`, the pose and
width values as received in `raw/episode_<k>/<stream>_value` (so an episode replays at its own rates,
mimic.teleop.handheld.replay_episode), and the latencies used in root attrs `latencies`; `data/<key>_t`
holds the capture time of each grid row's sample.

Several grippers (`HandheldCaptureConfig.grippers`, UMI's bimanual layout): gripper i fills `robot<i>_*` and
`camera<i>_rgb`, its raw streams are `pose<i>`, `gripper<i>`, `camera<i>` (no suffix for gripper 0), and
`action` is the concatenation of every gripper's 7 values at gripper 0's pose times (the others' poses and
widths interpolated there). The relative pose between grippers is not stored: it follows from their poses.
No ROS imports: the ROS recorder node and the twin driver (`record_twin`) both feed this class. Times
passed in are arrival times; a source that already stamps capture time (a ROS header stamped by a driver
that applied its calibration, DESIGN.md 3) passes that stamp with the stream's latency set to 0 here.
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from scipy.spatial.transform import Rotation

from mimic.data.writer import DatasetWriter, StreamSpec

EEF_KEYS = ("robot0_eef_pos", "robot0_eef_rot_axis_angle", "robot0_gripper_width")
CAMERA_KEY = "camera0_rgb"
ACTION_LAYOUT = [
    "eef_pos_x",
    "eef_pos_y",
    "eef_pos_z",
    "eef_rot_axis_angle_x",
    "eef_rot_axis_angle_y",
    "eef_rot_axis_angle_z",
    "gripper_width",
]
RAW_STREAMS = ("pose", "gripper", "camera")


def gripper_keys(i: int) -> dict[str, str]:
    """Dataset keys of gripper i: eef position, axis-angle, width, wrist camera."""
    return {
        "pos": f"robot{i}_eef_pos",
        "rot": f"robot{i}_eef_rot_axis_angle",
        "width": f"robot{i}_gripper_width",
        "camera": f"camera{i}_rgb",
    }


def raw_stream(kind: str, i: int) -> str:
    """Raw stream name of gripper i ("pose", "gripper", "camera"; gripper 0 has no suffix, as single-gripper stores)."""
    return kind if i == 0 else f"{kind}{i}"


def action_layout(n_grippers: int) -> list[str]:
    """Names of the action columns: ACTION_LAYOUT for one gripper, prefixed `robot<i>_` per gripper otherwise."""
    if n_grippers == 1:
        return list(ACTION_LAYOUT)
    return [f"robot{i}_{name}" for i in range(n_grippers) for name in ACTION_LAYOUT]


@dataclass
class HandheldCaptureConfig:
    """Grid rate, image size and the calibrated capture-to-arrival latency of each stream (s)."""

    fps: float = 10.0
    image_size: tuple[int, int] = (96, 96)
    pose_latency_s: float = 0.0
    gripper_latency_s: float = 0.0
    camera_latency_s: float = 0.0
    lowdim_tolerance_s: float = 0.05  # max distance from a grid time to the nearest pose/width sample
    camera_tolerance_s: float = 0.06  # ... and to the nearest frame (a 30 Hz camera is 17 ms away at most)
    task: str = "pick_place (handheld)"
    # T_tracked_tcp (4x4 nested lists, m): from the frame the pose stream reports to the TCP. None: the
    # stream reports the TCP. For SLAM on the wrist camera it is inv(T_tcp_cam), the camera mount.
    tracked_to_tcp: list[list[float]] | None = None
    grippers: int = 1  # grippers captured together (robot<i>_*, camera<i>_rgb); UMI's bimanual setup is 2

    def __post_init__(self) -> None:
        if isinstance(self.grippers, bool) or not isinstance(self.grippers, int) or self.grippers < 1:
            raise ValueError(f"HandheldCaptureConfig.grippers must be an integer >= 1, got {self.grippers!r}")
        for name in ("pose_latency_s", "gripper_latency_s", "camera_latency_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"HandheldCaptureConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.fps <= 0:
            raise ValueError(f"HandheldCaptureConfig.fps must be > 0, got {self.fps}")
        if self.tracked_to_tcp is not None:
            t = np.asarray(self.tracked_to_tcp, float)
            rot = t[:3, :3] if t.shape == (4, 4) else np.zeros((3, 3))
            if (
                t.shape != (4, 4)
                or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6)
                or np.linalg.det(rot) < 0
            ):
                raise ValueError("HandheldCaptureConfig.tracked_to_tcp must be a 4x4 rigid transform")
            self.tracked_to_tcp = t.tolist()


def continuous_axis_angle(quat_wxyz: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Axis-angle of a quaternion, choosing among aa and aa - 2*pi*axis the one closest to `previous`."""
    q = np.asarray(quat_wxyz, float).reshape(4)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError(f"handheld: pose quaternion {q.tolist()} is not a rotation")
    aa = Rotation.from_quat(q / norm, scalar_first=True).as_rotvec()
    if previous is None:
        return aa
    angle = float(np.linalg.norm(aa))
    if angle < 1e-9:
        return aa
    axis = aa / angle  # every representative of this rotation is (angle + 2*pi*k) * axis
    k0 = np.round((np.dot(previous, axis) - angle) / (2 * np.pi))
    cands = [(angle + 2 * np.pi * k) * axis for k in (k0 - 1, k0, k0 + 1)]
    return min(cands, key=lambda c: float(np.linalg.norm(c - previous)))


def _locked(method):
    """Run a HandheldCapture method under its lock (pose, width and frame callbacks may race)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class HandheldCapture:
    """Feed samples as they arrive (on_pose / on_gripper / on_frame) between begin_episode and end_episode."""

    def __init__(self, writer: DatasetWriter, config: HandheldCaptureConfig) -> None:
        self.writer, self.config = writer, config
        self._open = False
        self._lock = threading.RLock()  # a ROS recorder calls on_* from several callback threads

    @staticmethod
    def streams(config: HandheldCaptureConfig) -> dict[str, StreamSpec]:
        lo = config.lowdim_tolerance_s
        out: dict[str, StreamSpec] = {}
        for i in range(config.grippers):
            k = gripper_keys(i)
            out[k["pos"]] = StreamSpec((3,), tolerance_s=lo)
            out[k["rot"]] = StreamSpec((3,), tolerance_s=lo)
            out[k["width"]] = StreamSpec((1,), tolerance_s=lo)
            out[k["camera"]] = StreamSpec(
                (*config.image_size, 3), "uint8", "image", config.camera_tolerance_s
            )
        out["action"] = StreamSpec((7 * config.grippers,), tolerance_s=lo)
        return out

    @classmethod
    def create(
        cls,
        path: str | Path,
        config: HandheldCaptureConfig | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> HandheldCapture:
        """New store with the handheld schema; `attrs` adds e.g. camera_mount, gripper, calibration_ids."""
        config = config or HandheldCaptureConfig()
        base = {
            "robot": "handheld",
            "joint_names": [],
            "task": config.task,
            "capture": "handheld",
            "latencies": {
                "pose_s": config.pose_latency_s,
                "gripper_s": config.gripper_latency_s,
                "camera_s": config.camera_latency_s,
            },
            "action_layout": action_layout(config.grippers),
            "eef_frame": "tcp",
            "handheld_config": {**asdict(config), "image_size": list(config.image_size)},
            "raw_timestamps": "raw/episode_<k>/<pose|gripper|camera>_arrival_t: every sample's arrival time (s)",
            "raw_values": "raw/episode_<k>/pose_value [n, 7] (position m, quat wxyz), gripper_value [n, 1] (m): "
            "as received",
        }
        return cls(
            DatasetWriter.create(path, config.fps, cls.streams(config), {**base, **(attrs or {})}), config
        )

    @classmethod
    def open(cls, path: str | Path) -> HandheldCapture:
        """Append to an existing handheld store (its config comes from root attrs)."""
        writer = DatasetWriter.open(path)
        cfg = writer.root.attrs.get("handheld_config")
        if cfg is None:
            writer.close()
            raise ValueError(f"{path}: root attr 'handheld_config' missing (not a handheld store)")
        return cls(writer, HandheldCaptureConfig(**{**cfg, "image_size": tuple(cfg["image_size"])}))

    # ---- episodes ------------------------------------------------------------------------------
    @_locked
    def begin_episode(self) -> None:
        self.writer.begin_episode()
        self._open = True
        n = self.config.grippers
        self._prev_aa: list[np.ndarray | None] = [None] * n
        # gripper 0's poses wait here for every other stream to cover their time (then they become actions);
        # the other grippers' poses and every width are kept as long as a waiting pose may still need them
        self._poses: list[deque[tuple[float, np.ndarray, np.ndarray]]] = [deque() for _ in range(n)]
        self._widths: list[deque[tuple[float, float]]] = [deque() for _ in range(n)]
        self._action_from: float | None = None
        self._last_action_t = -np.inf
        self._raw: dict[str, list[float]] = {raw_stream(s, i): [] for i in range(n) for s in RAW_STREAMS}
        self._raw_values: dict[str, list[np.ndarray]] = {
            raw_stream(s, i): [] for i in range(n) for s in ("pose", "gripper")
        }

    @_locked
    def on_pose(
        self, t_arrival: float, position: np.ndarray, quat_wxyz: np.ndarray, gripper: int = 0
    ) -> None:
        self._check_open("pose", gripper)
        pos = np.asarray(position, float).reshape(-1)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):
            raise ValueError(
                f"handheld: pose position must be 3 finite values, got {np.asarray(position).tolist()}"
            )
        received = np.concatenate([pos, np.asarray(quat_wxyz, float).reshape(-1)[:4]])
        t = float(t_arrival) - self.config.pose_latency_s
        if self.config.tracked_to_tcp is not None:
            pos, quat_wxyz = self._to_tcp(pos, quat_wxyz)
        aa = continuous_axis_angle(quat_wxyz, self._prev_aa[gripper])
        self._prev_aa[gripper] = aa
        self._raw[raw_stream("pose", gripper)].append(float(t_arrival))
        self._raw_values[raw_stream("pose", gripper)].append(received)
        keys = gripper_keys(gripper)
        self.writer.append(keys["pos"], t, pos)
        self.writer.append(keys["rot"], t, aa)
        self._poses[gripper].append((t, pos, aa))
        self._emit_actions()

    @_locked
    def on_gripper(self, t_arrival: float, width_m: float, gripper: int = 0) -> None:
        self._check_open("gripper", gripper)
        w = float(width_m)
        if not np.isfinite(w):
            raise ValueError(f"handheld: gripper width {width_m!r} is not a number")
        t = float(t_arrival) - self.config.gripper_latency_s
        self._raw[raw_stream("gripper", gripper)].append(float(t_arrival))
        self._raw_values[raw_stream("gripper", gripper)].append(np.array([w]))
        self.writer.append(gripper_keys(gripper)["width"], t, np.array([w]))
        self._widths[gripper].append((t, w))
        self._emit_actions()

    @_locked
    def on_gripper_missing(self, t_arrival: float, gripper: int = 0) -> None:
        """A width the source could not read at `t_arrival` (e.g. a finger marker hidden in the wrist frame).

        Nothing is written to the width stream, so no width is invented: grid rows take the real samples
        around the gap within lowdim_tolerance_s (a longer gap fails the episode, as for any stream) and
        `data/<width>_t` shows which sample each row used. The time is kept in
        raw/episode_<k>/gripper_missing_arrival_t (gripper<i>_missing_arrival_t for gripper i > 0).
        """
        self._check_open("gripper", gripper)
        self._raw.setdefault(f"{raw_stream('gripper', gripper)}_missing", []).append(float(t_arrival))

    @_locked
    def on_frame(self, t_arrival: float, image: np.ndarray, gripper: int = 0) -> None:
        self._check_open("camera", gripper)
        img = np.asarray(image)
        want = (*self.config.image_size, 3)
        if img.shape != want or img.dtype != np.uint8:
            raise ValueError(
                f"handheld: camera frame is {img.dtype} {img.shape}, expected uint8 {want} "
                "(resize before capture; HandheldCaptureConfig.image_size)"
            )
        self._raw[raw_stream("camera", gripper)].append(float(t_arrival))
        self.writer.append(
            gripper_keys(gripper)["camera"], float(t_arrival) - self.config.camera_latency_s, img
        )

    @_locked
    def end_episode(self) -> int:
        """Commit the episode (rows up to the last time every stream covers); returns its number of rows."""
        self._check_open("end_episode")
        self._open = False
        rows = self.writer.end_episode()
        k = int(self.writer.root["meta"]["episode_ends"].shape[0]) - 1
        raw = zarr.open_group(self.writer.path, mode="r+").require_group("raw").require_group(f"episode_{k}")
        for name, ts in self._raw.items():
            raw.create_array(f"{name}_arrival_t", data=np.asarray(ts, np.float64), overwrite=True)
        for name, values in self._raw_values.items():
            width = 7 if name.startswith("pose") else 1
            data = np.asarray(values, np.float64).reshape(-1, width)
            raw.create_array(f"{name}_value", data=data, overwrite=True)
        return rows

    @_locked
    def discard_episode(self) -> None:
        self._open = False
        self.writer.discard_episode()

    def close(self) -> None:
        self.writer.close()

    # ---- internals -----------------------------------------------------------------------------
    def _to_tcp(self, pos: np.ndarray, quat_wxyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The TCP pose from the tracked frame's: T_world_tcp = T_world_tracked @ T_tracked_tcp."""
        q = np.asarray(quat_wxyz, float).reshape(4)
        if not np.isfinite(q).all() or np.linalg.norm(q) < 1e-6:
            raise ValueError(f"handheld: pose quaternion {q.tolist()} is not a rotation")
        t = np.eye(4)
        t[:3, :3] = Rotation.from_quat(q / np.linalg.norm(q), scalar_first=True).as_matrix()
        t[:3, 3] = pos
        tcp = t @ np.asarray(self.config.tracked_to_tcp)
        return tcp[:3, 3], Rotation.from_matrix(tcp[:3, :3]).as_quat(scalar_first=True)

    def _check_open(self, what: str, gripper: int = 0) -> None:
        if not self._open:
            raise RuntimeError(f"handheld: {what} outside an episode (call begin_episode)")
        if not (isinstance(gripper, (int, np.integer)) and 0 <= gripper < self.config.grippers):
            raise ValueError(
                f"handheld: {what} for gripper {gripper!r}, this capture has grippers 0..{self.config.grippers - 1}"
            )

    def _emit_actions(self) -> None:
        """Action rows for every gripper-0 pose whose time every other stream already covers.

        Gripper 0's pose is used as sampled; widths (and the other grippers' poses) are interpolated at its
        time. With one gripper a pose before the first width takes that width (np.interp holds it); with several,
        actions start once every stream has started.
        """
        n = self.config.grippers
        if any(not w for w in self._widths) or any(not self._poses[i] for i in range(1, n)):
            return
        tw = [np.array([w[0] for w in ws]) for ws in self._widths]
        vw = [np.array([w[1] for w in ws]) for ws in self._widths]
        others = [
            (np.array([p[0] for p in self._poses[i]]), np.array([np.r_[p[1], p[2]] for p in self._poses[i]]))
            for i in range(1, n)
        ]
        covered = min([t[-1] for t in tw] + [t[-1] for t, _ in others])
        lead = self._poses[0]
        if (
            n > 1
        ):  # no action before every gripper's streams started (never a held first value of another hand)
            if self._action_from is None:
                self._action_from = max([t[0] for t in tw] + [t[0] for t, _ in others])
            while lead and lead[0][0] < self._action_from:
                lead.popleft()
        while lead and lead[0][0] <= covered:
            t, pos, aa = lead.popleft()
            row = [pos, aa, [np.interp(t, tw[0], vw[0])]]
            for i, (tp, vp) in enumerate(others, start=1):
                row += [[np.interp(t, tp, vp[:, c]) for c in range(6)], [np.interp(t, tw[i], vw[i])]]
            self.writer.append("action", t, np.concatenate(row))
            self._last_action_t = t
        # keep what later poses still need: every one is after the last pose turned into an action, so a sample
        # goes once the next one is at or before that (never by arrival order: widths may run ahead of poses)
        oldest = lead[0][0] if lead else self._last_action_t
        for ws in self._widths:
            while len(ws) > 2 and ws[1][0] <= oldest:
                ws.popleft()
        for ps in self._poses[1:]:
            while len(ps) > 2 and ps[1][0] <= oldest:
                ps.popleft()


def _raw_group(path: str | Path, episode: int) -> zarr.Group:
    try:
        return zarr.open_group(str(path), mode="r")["raw"][f"episode_{episode}"]
    except (KeyError, FileNotFoundError):
        raise ValueError(
            f"{path}: no raw timestamps for episode {episode} (group 'raw/episode_{episode}')"
        ) from None


def read_raw_arrivals(path: str | Path, episode: int) -> dict[str, np.ndarray]:
    """Arrival times (s) of every pose / gripper / camera sample of one committed episode, by raw stream name."""
    group = _raw_group(path, episode)
    suffix = "_arrival_t"
    return {
        k[: -len(suffix)]: np.asarray(group[k][:]) for k in sorted(group.array_keys()) if k.endswith(suffix)
    }


def read_raw_values(path: str | Path, episode: int) -> dict[str, np.ndarray]:
    """Pose [n, 7] and width [n, 1] values as received, by raw stream name; empty for a store that predates them."""
    group = _raw_group(path, episode)
    suffix = "_value"
    return {
        k[: -len(suffix)]: np.asarray(group[k][:]) for k in sorted(group.array_keys()) if k.endswith(suffix)
    }


# ---- replay: a committed episode as the streams it was recorded from --------------------------------------
@dataclass
class ReplaySample:
    """One sample to publish again: times relative to the episode's first arrival (s), as recorded."""

    t_arrival: float
    t_capture: float
    kind: str  # "pose" (value [7]: position m, quat wxyz) | "gripper" (value [1], m) | "camera" (uint8 HxWx3)
    gripper: int
    value: np.ndarray


@dataclass
class ReplayEpisode:
    """A committed handheld episode as its raw streams, in arrival order."""

    samples: list[ReplaySample]
    grippers: int
    latencies: dict[str, float]
    exact: bool  # pose and width values as received (raw values stored), not re-sampled from the grid

    def counts(self) -> dict[str, int]:
        """Samples per raw stream name (pose, gripper, camera, pose1, ...)."""
        out: dict[str, int] = {}
        for s in self.samples:
            name = raw_stream(s.kind, s.gripper)
            out[name] = out.get(name, 0) + 1
        return out


def replay_episode(path: str | Path, episode: int) -> ReplayEpisode:
    """The raw streams of one episode: every sample at its recorded arrival time, with its capture time.

    Pose and width values come from `raw/episode_<k>/*_value` when stored; for an older store they are the
    grid rows interpolated at each sample's capture time (then the tracker pose is TCP @ inv(tracked_to_tcp)).
    A camera sample carries the stored grid frame whose capture time is nearest to its own, which is that very
    frame for every frame a grid row used; the frames no row used are not stored and repeat a neighbour.
    """
    from mimic.data.dataset import ReplayDataset

    ds = ReplayDataset(path)
    if not 0 <= episode < ds.n_episodes:
        raise ValueError(f"{path}: episode {episode} out of range (the store has {ds.n_episodes})")
    cfg = ds.attrs.get("handheld_config")
    if cfg is None:
        raise ValueError(f"{path}: root attr 'handheld_config' missing (not a handheld store)")
    n = int(cfg.get("grippers", 1))
    lat = {k: float(cfg[f"{k}_latency_s"]) for k in ("pose", "gripper", "camera")}
    arrivals = read_raw_arrivals(path, episode)
    values = read_raw_values(path, episode)
    ep = ds.episode(episode)
    origin = min(float(t[0]) for t in arrivals.values() if len(t))
    tracked = np.asarray(cfg["tracked_to_tcp"], float) if cfg.get("tracked_to_tcp") is not None else None
    samples: list[ReplaySample] = []
    for i in range(n):
        keys = gripper_keys(i)
        for kind in RAW_STREAMS:
            name = raw_stream(kind, i)
            if name not in arrivals:
                raise ValueError(f"{path}: episode {episode} has no raw stream {name!r}")
            t_arr = arrivals[name]
            t_cap = t_arr - lat[kind]
            if kind == "camera":
                t_rows = ep[f"{keys['camera']}_t"]
                rows = np.abs(t_cap[:, None] - t_rows[None, :]).argmin(axis=1)
                vals: Any = [ep[keys["camera"]][r] for r in rows]
            elif name in values:
                vals = values[name]
            elif kind == "gripper":
                vals = np.interp(t_cap, ep["timestamp"], ep[keys["width"]][:, 0])[:, None]
            else:
                vals = _grid_poses(t_cap, ep["timestamp"], ep[keys["pos"]], ep[keys["rot"]], tracked)
            samples += [
                ReplaySample(float(a - origin), float(c - origin), kind, i, np.asarray(v))
                for a, c, v in zip(t_arr, t_cap, vals, strict=True)
            ]
    samples.sort(key=lambda s: s.t_arrival)
    exact = all(raw_stream(k, i) in values for i in range(n) for k in ("pose", "gripper"))
    return ReplayEpisode(samples, n, lat, exact)


def _grid_poses(t: np.ndarray, grid: np.ndarray, pos: np.ndarray, aa: np.ndarray, tracked) -> np.ndarray:
    """Tracker poses [n, 7] (position, quat wxyz) at times t from the grid's TCP poses (linear interpolation)."""
    p = np.stack([np.interp(t, grid, pos[:, c]) for c in range(3)], axis=1)
    r = np.stack([np.interp(t, grid, aa[:, c]) for c in range(3)], axis=1)
    mats = np.repeat(np.eye(4)[None], len(t), axis=0)
    mats[:, :3, :3] = Rotation.from_rotvec(r).as_matrix()
    mats[:, :3, 3] = p
    if tracked is not None:
        mats = mats @ np.linalg.inv(tracked)
    quat = Rotation.from_matrix(mats[:, :3, :3]).as_quat(scalar_first=True)
    return np.concatenate([mats[:, :3, 3], quat], axis=1)


# ---- the twin as the person holding the gripper ----------------------------------------------------
@dataclass
class TwinStreamLatency:
    """Injected capture-to-arrival latency per stream (s) for twin capture; jitter uniform in [0, jitter_s]."""

    pose_s: float = 0.0
    gripper_s: float = 0.0
    camera_s: float = 0.0
    jitter_s: float = 0.0


def _arrivals(info: dict, t0: float, inj: TwinStreamLatency, rng: np.random.Generator) -> list[tuple]:
    """(arrival time, stream, payload) for every sample one HandheldEnv step produced."""
    out = []
    for base, kind, items in (
        (inj.pose_s, "pose", [(s.t, (s.position, s.quat)) for s in info["pose_samples"]]),
        (inj.gripper_s, "gripper", [(t, (w,)) for t, w in info["widths"]]),
        (inj.camera_s, "camera", [(t, (img,)) for t, img in info["frames"]]),
    ):
        for t, payload in items:
            jit = float(rng.uniform(0, inj.jitter_s)) if inj.jitter_s > 0 else 0.0
            out.append((t0 + t + base + jit, kind, payload))
    return out


SEED_STRIDE = 7919  # gripper i of a multi-gripper twin demo plays the scene of seed (episode seed + i * this)


def record_twin(
    path: str | Path,
    episodes: int,
    seed: int = 0,
    image_size: tuple[int, int] = (96, 96),
    injected: TwinStreamLatency | None = None,
    config: HandheldCaptureConfig | None = None,
    pose_hz: float = 100.0,
    camera_hz: float = 30.0,
    max_attempts: int | None = None,
    progress: bool = True,
    randomization: Any = None,
    grippers: int = 1,
    finger_markers: bool = False,
) -> dict[str, Any]:
    """Scripted handheld pick-place demos on the twin through HandheldCapture -> counts and success rate.

    The twin runs unpaced; sample times are its sim time plus a per-episode offset, arrival = capture +
    injected latency (+ jitter), so the capture's latency compensation is exercised against ground truth.
    Only successful demonstrations are committed (like mimic.workflows.record_expert); `config` defaults to the injected
    latencies as the calibrated ones; `randomization` is mimic.sim.env.Randomization (TwinEnv's knobs, same draws).
    With `grippers` > 1 each gripper is a scripted hand in its own twin scene (seed + i * SEED_STRIDE) on one
    clock, holding still once its pick-place succeeded; an episode counts when every hand succeeded.
    `finger_markers` puts the ArUco finger markers (mimic.sim.handheld.FingerMarkerSpec) in the wrist frames,
    so a store recorded at a detection-size `image_size` can be replayed to a recorder that reads the width
    from them.
    """
    from tqdm import tqdm

    from mimic.sim.handheld import HandheldEnv, HandheldExpert

    if episodes < 1:
        raise ValueError(f"record_twin: episodes must be >= 1, got {episodes}")
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"record_twin: image_size must be (H, W) with both >= 1, got {tuple(image_size)}")
    inj = injected or TwinStreamLatency()
    config = config or HandheldCaptureConfig(
        image_size=tuple(image_size),
        pose_latency_s=inj.pose_s,
        gripper_latency_s=inj.gripper_s,
        camera_latency_s=inj.camera_s,
        grippers=grippers,
    )
    if config.grippers != grippers:
        raise ValueError(f"record_twin: grippers={grippers} but config.grippers={config.grippers}")
    envs = [
        HandheldEnv(
            seed=seed + i * SEED_STRIDE,
            image_size=tuple(image_size),
            pose_hz=pose_hz,
            camera_hz=camera_hz,
            randomization=randomization,
            finger_markers=finger_markers,
            marker_image_size=tuple(image_size),
        )
        for i in range(grippers)
    ]
    experts = [HandheldExpert(env) for env in envs]
    rng = np.random.default_rng(seed)
    env = envs[0]
    for i, e in enumerate(envs):
        e.reset(seed=seed + i * SEED_STRIDE)
    attrs = {
        "camera_mount_tcp_cam": env.nominal_camera_mount.tolist(),
        "gripper_max": env.spec.gripper_max,
        "source": "mimic.teleop.handheld.record_twin scripted hand",
        "tcp_offset_from_flange_m": env.flange_tcp[:3, 3].tolist(),
    }
    cap = HandheldCapture.create(path, config, attrs)
    max_attempts = max_attempts or 2 * episodes
    seeds, attempted, rows = [], 0, 0
    bar = tqdm(total=episodes, desc="handheld demos", disable=not progress, unit="ep")
    try:
        while len(seeds) < episodes and attempted < max_attempts:
            ep_seed = seed + attempted
            attempted += 1
            obs = [e.reset(seed=ep_seed + i * SEED_STRIDE) for i, e in enumerate(envs)]
            for x in experts:
                x.reset()
            t0 = 1000.0 * len(seeds)  # episodes far apart in time
            samples: list[tuple[float, str, int, tuple]] = []
            done, ok, hold = [False] * grippers, [False] * grippers, [None] * grippers
            for _ in range(env.max_steps):
                for i, e in enumerate(envs):
                    action = experts[i].act(obs[i]) if not done[i] else hold[i]
                    obs[i], _, term, trunc, info = e.step(action)
                    samples += [(t, kind, i, payload) for t, kind, payload in _arrivals(info, t0, inj, rng)]
                    if not done[i] and (term or trunc):
                        done[i], ok[i], hold[i] = True, bool(info["success"]), action
                if all(done):
                    break
            if not all(ok):
                continue
            samples.sort(key=lambda s: s[0])  # the order they would arrive in
            last: dict[tuple[str, int], float] = {}
            cap.begin_episode()
            for t, kind, i, payload in samples:
                t = max(t, last.get((kind, i), -np.inf))  # jitter never reorders one stream's own messages
                last[(kind, i)] = t
                if kind == "pose":
                    cap.on_pose(t, *payload, gripper=i)
                elif kind == "gripper":
                    cap.on_gripper(t, *payload, gripper=i)
                else:
                    cap.on_frame(t, *payload, gripper=i)
            rows += cap.end_episode()
            seeds.append(ep_seed)
            bar.update(1)
    finally:
        bar.close()
        cap.writer.root.attrs.update({"expert_seeds": seeds})
        if grippers > 1:
            cap.writer.root.attrs.update({"gripper_seed_stride": SEED_STRIDE})
        cap.close()
        for e in envs:
            e.close()
    if len(seeds) < episodes:
        raise ValueError(
            f"record_twin: only {len(seeds)}/{episodes} successful handheld demos in {attempted} tries"
        )
    return {
        "path": str(path),
        "episodes": len(seeds),
        "attempted": attempted,
        "rows": rows,
        "success_rate": len(seeds) / attempted,
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m mimic.teleop.handheld OUT.zarr --episodes N`: record handheld demos on the twin."""
    p = argparse.ArgumentParser(prog="mimic.teleop.handheld", description=main.__doc__)
    p.add_argument("out")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, nargs=2, default=(96, 96))
    p.add_argument("--pose-latency", type=float, default=0.0, help="injected pose-stream latency (s)")
    p.add_argument("--camera-latency", type=float, default=0.0, help="injected camera latency (s)")
    p.add_argument("--video", help="also write the first demo as scene | wrist .mp4 (or .png strip)")
    a = p.parse_args(argv)
    if Path(a.out).exists():
        print(f"mimic.teleop.handheld: {a.out}: already exists", file=sys.stderr)
        return 2
    try:
        out = record_twin(
            a.out,
            a.episodes,
            a.seed,
            tuple(a.image_size),
            TwinStreamLatency(pose_s=a.pose_latency, camera_s=a.camera_latency),
        )
        if a.video:
            from mimic.sim.handheld import demo_video

            demo_video(a.video, seed=a.seed)
    except ValueError as e:
        print(f"mimic.teleop.handheld: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
