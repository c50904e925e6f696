"""Two-gripper handheld demonstrations into a UMI-style bimanual store (`.zarr.zip`), as UMI's pipeline writes one.

The scripted hands of mimic.sim.bimanual.BimanualHandheldEnv play the person holding two UMI grippers; every
10 Hz control period gives one row, the grid UMI's pipeline resamples its SLAM poses and GoPro frames to.
The store is UMI's ReplayBuffer layout (scripts_slam_pipeline/07_generate_replay_buffer.py), zarr format 2 in
a stored zip, written by mimic.data.dp_umi.ReplayBufferWriter:

- `robot<i>_eef_pos` [3] float32, `robot<i>_eef_rot_axis_angle` [3] float32 (continuous within an episode:
  mimic.teleop.handheld.continuous_axis_angle), `robot<i>_gripper_width` [1] float32,
  `robot<i>_demo_start_pose` / `robot<i>_demo_end_pose` [6] float64 (the episode's first and last TCP pose
  on every row), `camera<i>_rgb` uint8 (H, W, 3) gripper i's wrist camera, lossless JPEG XL, one frame a chunk
- `action` [14] float32 = [pos0, rot0, width0, pos1, rot1, width1]: the poses the grippers go through, UMI's
  action for each gripper concatenated (made relative per gripper at training, mimic.policies.eef_relative)
- `object_state` [20] float32: the object tracker (UMI records none; an eef_relative policy observes it),
  mimic.sim.tasks.bimanual_pick_place's layout; `timestamp` float64 (s from the episode start)
- root attrs: fps, robot "handheld", gripper_max, task, the expert seeds.

`mimic dataset import-dp <store>.zarr.zip -o <dataset>.zarr --robot handheld` imports it for training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from mimic.data.dp_umi import ReplayBufferWriter, import_dp
from mimic.sim.bimanual import CAMERA_KEYS, TASK, BimanualHandheldEnv, BimanualHandheldExpert
from mimic.sim.tasks.bimanual_pick_place import N_GRIPPERS
from mimic.teleop.handheld import continuous_axis_angle

ARM = "handheld_bimanual"  # record.arm naming this recorder


def _episode_rows(observations: list[dict[str, np.ndarray]], fps: float) -> dict[str, np.ndarray]:
    """One episode's observations -> UMI's bimanual ReplayBuffer rows."""
    out: dict[str, np.ndarray] = {}
    action = []
    for i in range(N_GRIPPERS):
        pos = np.stack([o[f"robot{i}_eef_pos"] for o in observations])
        aa, prev = [], None
        for o in observations:
            q = Rotation.from_rotvec(o[f"robot{i}_eef_rot_axis_angle"]).as_quat(scalar_first=True)
            prev = continuous_axis_angle(q, prev)
            aa.append(prev)
        rot = np.stack(aa)
        width = np.stack([o[f"robot{i}_gripper_width"] for o in observations])
        pose = np.concatenate([pos, rot], axis=1)
        out[f"robot{i}_eef_pos"] = pos.astype(np.float32)
        out[f"robot{i}_eef_rot_axis_angle"] = rot.astype(np.float32)
        out[f"robot{i}_gripper_width"] = width.astype(np.float32)
        out[f"robot{i}_demo_start_pose"] = np.repeat(pose[:1], len(pose), axis=0)
        out[f"robot{i}_demo_end_pose"] = np.repeat(pose[-1:], len(pose), axis=0)
        action += [pos, rot, width]
    for key in CAMERA_KEYS:
        out[key] = np.stack([o[key] for o in observations])
    out["action"] = np.concatenate(action, axis=1).astype(np.float32)
    out["object_state"] = np.stack([o["object_state"] for o in observations]).astype(np.float32)
    out["timestamp"] = np.arange(len(observations), dtype=np.float64) / fps
    return out


def record_bimanual_handheld(
    out: str | Path,
    episodes: int,
    seed: int = 0,
    image_size: tuple[int, int] = (96, 96),
    progress: bool = True,
    approach_error_m: float = 0.0,
) -> dict[str, Any]:
    """Scripted two-gripper demos (seeds seed, seed+1, ...; failures skipped, at most 2x tries) into a UMI-style
    bimanual store at `out` (`.zarr.zip`, or a directory store); returns counts. `approach_error_m`: the hands
    approach beside their cubes and correct while descending (mimic.sim.handheld.HandheldExpert)."""
    if episodes < 1:
        raise ValueError(f"record_bimanual_handheld: episodes must be >= 1, got {episodes}")
    env = BimanualHandheldEnv(seed=seed, cameras=CAMERA_KEYS, image_size=tuple(image_size))
    expert = BimanualHandheldExpert(env, approach_error_m=approach_error_m)
    attrs = {
        "fps": env.control_hz,
        "robot": "handheld",
        "gripper_max": float(env.spec.gripper_max),
        "task": f"{TASK} (handheld, two grippers)",
        "source": "mimic.workflows.bimanual_record scripted hands + object tracker",
        "tcp_offset_from_flange_m": env.flange_tcp[:3, 3].tolist(),
        "approach_error_m": float(approach_error_m),
    }
    seeds: list[int] = []
    attempted = rows = 0
    bar = tqdm(total=episodes, desc="bimanual demos", disable=not progress, unit="ep")
    try:
        with ReplayBufferWriter(out, attrs) as writer:
            while len(seeds) < episodes and attempted < 2 * episodes:
                ep_seed = seed + attempted
                attempted += 1
                obs = env.reset(seed=ep_seed)
                expert.reset(ep_seed)
                observations, success = [obs], False
                for _ in range(env.max_steps):
                    obs, _, term, trunc, info = env.step(expert.act(obs))
                    observations.append(obs)
                    if term or trunc:
                        success = bool(info["success"])
                        break
                if not success:
                    continue
                writer.add_episode(_episode_rows(observations, env.control_hz))
                rows += len(observations)
                seeds.append(ep_seed)
                bar.update(1)
            writer.root.attrs["expert_seeds"] = seeds
            if len(seeds) < episodes:
                raise ValueError(
                    f"record_bimanual_handheld: only {len(seeds)}/{episodes} successful demos in {attempted} tries"
                )
    finally:
        bar.close()
        env.close()
    return {"path": str(out), "episodes": len(seeds), "attempted": attempted, "rows": rows}


def record_and_import(
    dataset: str,
    episodes: int,
    seed: int = 0,
    image_size=(96, 96),
    progress=True,
    approach_error_m: float = 0.0,
) -> str:
    """`record.arm: handheld_bimanual` of a training config: the UMI-style store beside `dataset`
    (`<dataset without .zarr>.umi.zarr.zip`, kept when it exists), imported into `dataset`; returns the store."""
    umi = str(dataset).removesuffix("/").removesuffix(".zarr") + ".umi.zarr.zip"
    if not Path(umi).exists():
        record_bimanual_handheld(
            umi,
            episodes,
            seed=seed,
            image_size=image_size,
            progress=progress,
            approach_error_m=approach_error_m,
        )
    import_dp(umi, dataset, robot="handheld")
    return umi
