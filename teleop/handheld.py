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

Raw arrival times of every sample are kept per episode in `raw/episode_<k>/<stream>_arrival_t`, and the
latencies used in root attrs `latencies`; `data/<key>_t` holds the capture time of each grid row's sample.
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

    def __post_init__(self) -> None:
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
        return {
            "robot0_eef_pos": StreamSpec((3,), tolerance_s=lo),
            "robot0_eef_rot_axis_angle": StreamSpec((3,), tolerance_s=lo),
            "robot0_gripper_width": StreamSpec((1,), tolerance_s=lo),
            CAMERA_KEY: StreamSpec((*config.image_size, 3), "uint8", "image", config.camera_tolerance_s),
            "action": StreamSpec((7,), tolerance_s=lo),
        }

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
            "action_layout": ACTION_LAYOUT,
            "eef_frame": "tcp",
            "handheld_config": {**asdict(config), "image_size": list(config.image_size)},
            "raw_timestamps": "raw/episode_<k>/<pose|gripper|camera>_arrival_t: every sample's arrival time (s)",
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
        self._prev_aa: np.ndarray | None = None
        self._poses: deque[tuple[float, np.ndarray, np.ndarray]] = deque()  # waiting for a later width sample
        self._widths: deque[tuple[float, float]] = deque()
        self._raw: dict[str, list[float]] = {s: [] for s in RAW_STREAMS}

    @_locked
    def on_pose(self, t_arrival: float, position: np.ndarray, quat_wxyz: np.ndarray) -> None:
        self._check_open("pose")
        pos = np.asarray(position, float).reshape(-1)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):
            raise ValueError(
                f"handheld: pose position must be 3 finite values, got {np.asarray(position).tolist()}"
            )
        t = float(t_arrival) - self.config.pose_latency_s
        if self.config.tracked_to_tcp is not None:
            pos, quat_wxyz = self._to_tcp(pos, quat_wxyz)
        aa = continuous_axis_angle(quat_wxyz, self._prev_aa)
        self._prev_aa = aa
        self._raw["pose"].append(float(t_arrival))
        self.writer.append("robot0_eef_pos", t, pos)
        self.writer.append("robot0_eef_rot_axis_angle", t, aa)
        self._poses.append((t, pos, aa))
        self._emit_actions()

    @_locked
    def on_gripper(self, t_arrival: float, width_m: float) -> None:
        self._check_open("gripper")
        w = float(width_m)
        if not np.isfinite(w):
            raise ValueError(f"handheld: gripper width {width_m!r} is not a number")
        t = float(t_arrival) - self.config.gripper_latency_s
        self._raw["gripper"].append(float(t_arrival))
        self.writer.append("robot0_gripper_width", t, np.array([w]))
        self._widths.append((t, w))
        self._emit_actions()

    @_locked
    def on_frame(self, t_arrival: float, image: np.ndarray) -> None:
        self._check_open("camera")
        img = np.asarray(image)
        want = (*self.config.image_size, 3)
        if img.shape != want or img.dtype != np.uint8:
            raise ValueError(
                f"handheld: camera frame is {img.dtype} {img.shape}, expected uint8 {want} "
                "(resize before capture; HandheldCaptureConfig.image_size)"
            )
        self._raw["camera"].append(float(t_arrival))
        self.writer.append(CAMERA_KEY, float(t_arrival) - self.config.camera_latency_s, img)

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

    def _check_open(self, what: str) -> None:
        if not self._open:
            raise RuntimeError(f"handheld: {what} outside an episode (call begin_episode)")

    def _emit_actions(self) -> None:
        """Action rows for every pose sample whose time the width stream already covers (width interpolated)."""
        if not self._widths:
            return
        tw = np.array([w[0] for w in self._widths])
        vw = np.array([w[1] for w in self._widths])
        while self._poses and self._poses[0][0] <= tw[-1]:
            t, pos, aa = self._poses.popleft()
            self.writer.append("action", t, np.concatenate([pos, aa, [np.interp(t, tw, vw)]]))
        oldest = self._poses[0][0] if self._poses else tw[-1]
        while len(self._widths) > 2 and self._widths[1][0] <= oldest:  # keep what later poses still need
            self._widths.popleft()


def read_raw_arrivals(path: str | Path, episode: int) -> dict[str, np.ndarray]:
    """Arrival times (s) of every pose / gripper / camera sample of one committed episode."""
    try:
        group = zarr.open_group(str(path), mode="r")["raw"][f"episode_{episode}"]
    except (KeyError, FileNotFoundError):
        raise ValueError(
            f"{path}: no raw timestamps for episode {episode} (group 'raw/episode_{episode}')"
        ) from None
    return {name: np.asarray(group[f"{name}_arrival_t"][:]) for name in RAW_STREAMS}


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
) -> dict[str, Any]:
    """Scripted handheld pick-place demos on the twin through HandheldCapture -> counts and success rate.

    The twin runs unpaced; sample times are its sim time plus a per-episode offset, arrival = capture +
    injected latency (+ jitter), so the capture's latency compensation is exercised against ground truth.
    Only successful demonstrations are committed (like mimic.workflows.record_expert); `config` defaults to the injected
    latencies as the calibrated ones; `randomization` is mimic.sim.env.Randomization (TwinEnv's knobs, same draws).
    """
    from tqdm import tqdm

    from mimic.sim.handheld import HandheldEnv, HandheldExpert

    if episodes < 1:
        raise ValueError(f"record_twin: episodes must be >= 1, got {episodes}")
    inj = injected or TwinStreamLatency()
    config = config or HandheldCaptureConfig(
        image_size=tuple(image_size),
        pose_latency_s=inj.pose_s,
        gripper_latency_s=inj.gripper_s,
        camera_latency_s=inj.camera_s,
    )
    env = HandheldEnv(
        seed=seed,
        image_size=tuple(image_size),
        pose_hz=pose_hz,
        camera_hz=camera_hz,
        randomization=randomization,
    )
    expert = HandheldExpert(env)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
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
            obs = env.reset(seed=ep_seed)
            expert.reset()
            t0 = 1000.0 * len(seeds)  # episodes far apart in time
            samples: list[tuple[float, str, tuple]] = []
            success = False
            for _ in range(env.max_steps):
                obs, _, term, trunc, info = env.step(expert.act(obs))
                samples += _arrivals(info, t0, inj, rng)
                if term or trunc:
                    success = bool(info["success"])
                    break
            if not success:
                continue
            samples.sort(key=lambda s: s[0])  # the order they would arrive in
            last = {k: -np.inf for k in RAW_STREAMS}
            cap.begin_episode()
            for t, kind, payload in samples:
                t = max(t, last[kind])  # jitter never reorders one stream's own messages
                last[kind] = t
                if kind == "pose":
                    cap.on_pose(t, *payload)
                elif kind == "gripper":
                    cap.on_gripper(t, *payload)
                else:
                    cap.on_frame(t, *payload)
            rows += cap.end_episode()
            seeds.append(ep_seed)
            bar.update(1)
    finally:
        bar.close()
        cap.writer.root.attrs.update({"expert_seeds": seeds})
        cap.close()
        env.close()
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
