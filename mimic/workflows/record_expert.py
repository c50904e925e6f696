"""Record scripted-expert demonstrations from the twin into a Mimic Zarr store.

The store carries the cross-team dataset keys (robot0_joint_pos, robot0_gripper_width, object_state,
camera<i>_rgb, action) plus robot0_eef_pos / robot0_eef_rot_axis_angle, written through
mimic.data.writer.DatasetWriter exactly as a teleoperated session would, so a policy trained on it trains
on the same schema as one recorded through ROS. Sample times are synthetic (10 Hz grid, episodes a
gap apart) because the twin runs unpaced here; the writer's alignment is then exact.

`action_noise` (rad) records DART-style demonstrations (Laskey et al. 2017): the arm executes the
expert's joint targets plus Gaussian noise while the stored action is the expert's clean target, so the
data show states off the expert's path together with the action that leads back. A policy's own small
errors put it in such states; without them in the data it has never seen how to recover.

`regrasp_fraction` of the episodes demonstrate a recovery: the expert's first grasp lands 3.5-5 cm beside
the cube (mimic.sim.expert's `miss_m`), closes on air and lifts, sees the empty gripper and goes back for the cube.
Only the rows from that failed lift on are stored: the deliberate miss itself is not something to imitate,
what follows it is what a policy whose grasp slipped must do (a policy from images missed its grasp in every
failure and then carried nothing to the goal, having never seen a regrasp).

Failed expert episodes are kept only when `keep_failed` is set: the per-episode expert outcome is
stored in root attrs `expert_success` (list of bool, one per recorded episode, in order) and
`expert_seeds`, so a training run knows which seeds the demos came from and evaluation can use others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mimic.data.storage import is_url
from mimic.data.writer import DatasetWriter, StreamSpec
from mimic.sim.env import CAMERA_KEYS, make_env
from mimic.sim.expert import make_expert

LOWDIM_KEYS = (
    "robot0_joint_pos",
    "robot0_gripper_width",
    "robot0_eef_pos",
    "robot0_eef_rot_axis_angle",
    "object_state",
)
EPISODE_GAP_S = 100.0  # synthetic time between episodes: far beyond any stream tolerance


def perturbed(act: np.ndarray, dof: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """The action the arm executes under DART noise: joint targets + N(0, std), gripper untouched."""
    if std == 0.0:
        return act
    return np.r_[act[:dof] + rng.normal(0.0, std, dof), act[dof:]]


def create_twin_store(path: str | Path, env, obs: dict[str, np.ndarray], attrs: dict) -> DatasetWriter:
    """A new store for rows of `env` (its arm, task and cameras; streams shaped like `obs`) plus `attrs`."""
    streams = {k: StreamSpec(tuple(np.asarray(obs[k]).shape)) for k in LOWDIM_KEYS}
    for cam in env.cameras:
        streams[CAMERA_KEYS[cam]] = StreamSpec((*env.image_size, 3), "uint8", "image")
    streams["action"] = StreamSpec((env.spec.dof + 1,))
    base = {
        "robot": env.spec.name,
        "joint_names": list(env.spec.joint_names),
        "task": env.task,
        "latencies": {},
    }
    return DatasetWriter.create(path, env.control_hz, streams, {**base, **attrs})


def write_twin_episode(
    writer: DatasetWriter, rows: list[tuple[dict[str, np.ndarray], np.ndarray]], t0: float, env
) -> int:
    """Commit (observation, action) rows as one episode on the 10 Hz grid from synthetic time `t0`; -> rows."""
    writer.begin_episode()
    for i, (o, act) in enumerate(rows):
        t = t0 + i / env.control_hz
        for k in LOWDIM_KEYS:
            writer.append(k, t, o[k])
        for cam in env.cameras:
            writer.append(CAMERA_KEYS[cam], t, o[CAMERA_KEYS[cam]])
        writer.append("action", t, act)
    return writer.end_episode()


@dataclass
class RecordStats:
    """What came out of a recording run."""

    path: str | Path  # a Path for a local store, the URL as given for a remote one (mimic.data.storage)
    episodes: int  # committed episodes
    attempted: int  # expert rollouts run (failures included)
    steps: int  # committed rows
    expert_success_rate: float  # over attempted rollouts


def record_expert_dataset(
    path: str | Path,
    arm: str,
    task: str,
    episodes: int,
    seed: int = 0,
    cameras: tuple[str, ...] = (),
    image_size: tuple[int, int] = (96, 96),
    keep_failed: bool = False,
    max_attempts: int | None = None,
    progress: bool = True,
    hold_steps: int = 0,
    action_noise: float = 0.0,
    regrasp_fraction: float = 0.0,
) -> str | Path:
    """Roll out the scripted expert for `episodes` successful episodes (seeds seed, seed+1, ...) -> store path.

    An episode ends at the expert's success plus `hold_steps` more expert steps (the operator node's
    `hold_steps`: without them a policy never sees the goal held and drifts off after a near miss) or at
    the task's step limit.
    Unsuccessful rollouts are skipped unless `keep_failed`; at most `max_attempts` (default 2x episodes)
    rollouts are tried. Raises ValueError for an empty/impossible request; the store must not exist.
    """
    return record_expert_dataset_stats(
        path,
        arm,
        task,
        episodes,
        seed,
        cameras,
        image_size,
        keep_failed,
        max_attempts,
        progress,
        hold_steps,
        action_noise,
        regrasp_fraction,
    ).path


def record_expert_dataset_stats(
    path: str | Path,
    arm: str,
    task: str,
    episodes: int,
    seed: int = 0,
    cameras: tuple[str, ...] = (),
    image_size: tuple[int, int] = (96, 96),
    keep_failed: bool = False,
    max_attempts: int | None = None,
    progress: bool = True,
    hold_steps: int = 0,
    action_noise: float = 0.0,
    regrasp_fraction: float = 0.0,
) -> RecordStats:
    """record_expert_dataset, returning counts and the expert's success rate as well."""
    if episodes < 1:
        raise ValueError(f"record: episodes must be >= 1, got {episodes}")
    if not 0.0 <= action_noise < 0.5:
        raise ValueError(f"record: action_noise must be in [0, 0.5) rad, got {action_noise}")
    if not 0.0 <= regrasp_fraction <= 1.0 or (regrasp_fraction and task != "pick_place"):
        raise ValueError(
            f"record: regrasp_fraction must be in [0, 1] and only for pick_place, got {regrasp_fraction} "
            f"for {task}"
        )
    path = str(path) if is_url(path) else Path(path)  # Path("s3://b/x") is a local folder "s3:/b/x"
    env = make_env(task, arm, seed=seed, cameras=tuple(cameras), image_size=tuple(image_size))
    expert = make_expert(env)
    obs = env.reset(seed=seed)
    dof = env.spec.dof
    writer = create_twin_store(
        path,
        env,
        obs,
        {
            "source": "mimic.workflows.record_expert scripted expert",
            "expert_action_noise_rad": action_noise,
            "expert_regrasp_fraction": regrasp_fraction,
        },
    )
    max_attempts = max_attempts if max_attempts is not None else 2 * episodes
    outcomes: list[bool] = []
    seeds: list[int] = []
    attempted = ok_total = steps = 0
    bar = tqdm(total=episodes, desc=f"record {task}/{arm}", disable=not progress, unit="ep")
    try:
        while len(outcomes) < episodes and attempted < max_attempts:
            ep_seed = seed + attempted
            attempted += 1
            obs = env.reset(seed=ep_seed)
            draw = np.random.default_rng([ep_seed, 0x6A5B])
            regrasp = bool(draw.random() < regrasp_fraction)
            miss = float(draw.uniform(0.035, 0.05) * draw.choice([-1.0, 1.0])) if regrasp else 0.0
            expert.reset(miss_m=miss)
            rows: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
            noise = np.random.default_rng([ep_seed, 0xDA27])
            success = False
            for _ in range(env.max_steps):
                act = expert.act(obs)
                rows.append((obs, act))
                obs, _, term, trunc, info = env.step(perturbed(act, dof, action_noise, noise))
                if term or trunc:
                    success = bool(info["success"])
                    break
            for _ in range(hold_steps if success else 0):
                act = expert.act(obs)
                rows.append((obs, act))
                obs, *_ = env.step(perturbed(act, dof, action_noise, noise))
            ok_total += success
            if regrasp:  # keep the recovery only: from the failed lift on (none if the miss caught the cube)
                if expert.grasp_attempts == 1:
                    continue
                rows = rows[expert.first_lift_step :]
            if not success and not keep_failed:
                continue
            steps += write_twin_episode(writer, rows, len(outcomes) * EPISODE_GAP_S, env)
            outcomes.append(success)
            seeds.append(ep_seed)
            bar.update(1)
            bar.set_postfix(expert_ok=f"{ok_total}/{attempted}")
    finally:
        bar.close()
        writer.root.attrs.update({"expert_success": outcomes, "expert_seeds": seeds})
        writer.close()
        env.close()
    if len(outcomes) < episodes:
        raise ValueError(
            f"record: only {len(outcomes)}/{episodes} successful expert episodes for {task} on {arm} "
            f"after {attempted} attempts (store kept at {path})"
        )
    return RecordStats(path, len(outcomes), attempted, steps, ok_total / max(attempted, 1))
