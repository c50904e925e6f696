"""A two-gripper end-effector policy rolled out on two arm twins (mimic.sim.bimanual.BimanualTwinEnv) through IK.

`mimic eval <checkpoint> --arm xarm7 --episodes N --seed S` on a checkpoint trained on two-gripper handheld
demos lands here (mimic.workflows.evaluate_eef dispatches on the policy's `grippers`). The episode loop is
mimic.workflows.eef_rollout's, with two controllers: the bimanual_pick_place scene of seed S+k (evaluation
seeds 100000+, never the demos'); each arm first moves its TCP to the start pose `start_tcp_rows` draws like
the demos' starts (`--start handheld`) or stays at home (`--start home`); every n_action_steps the policy sees
both grippers' last n_obs_steps observations in the table frame and predicts both grippers' absolute TCP
rows; gripper i's rows go to its own controller, which maps them into arm i's base frame (`base_pose`).
Success is the twin's own check (both cubes placed, both grippers open); cubes placed per gripper are counted
too. `--arm handheld` rolls the policy out on the two handheld grippers the demos were recorded with instead
(each row executed as it is, from the rig's own start draw): what the policy does without arms, IK or tracking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mimic.robots.eef_control import EefChunkController
from mimic.robots.ik import IKSolver
from mimic.sim.bimanual import TASK, BimanualHandheldEnv, BimanualTwinEnv, start_tcp_rows
from mimic.sim.tasks.bimanual_pick_place import N_GRIPPERS
from mimic.workflows.eef_rollout import EefEvalResult, rollout_arms, run_episodes, start_rows
from mimic.workflows.eval_result import DEFAULT_SEED

CAMERAS = ("scene", "wrist0", "wrist1")  # the videos' views, side by side
HANDHELD = "handheld"  # --arm naming the two handheld grippers (mimic.sim.bimanual.BimanualHandheldEnv)


@dataclass
class BimanualEvalResult(EefEvalResult):
    # episodes in which gripper i's cube was placed, whatever the other gripper did
    per_gripper_placed: list[int] = field(default_factory=list)
    rig_lag_s: float = 0.0  # --arm handheld: the hands' first-order tracking lag (BimanualHandheldEnv)
    rig_ik: str = ""  # --arm handheld: the arm whose IK every row passes through first ("": none)


def make_controllers(env: BimanualTwinEnv) -> list[EefChunkController]:
    """One end-effector chunk controller per arm, taking table-frame rows (its base pose from the env)."""
    return [
        EefChunkController(
            IKSolver.for_arm(env.spec),
            env.control_hz,
            blend_s=0.0,
            velocity_scale=0.8,
            base_pose=env.base_poses[i],
        )
        for i in range(N_GRIPPERS)
    ]


def rollout_bimanual(
    policy,
    env: BimanualTwinEnv,
    ctrls: list[EefChunkController],
    seed: int,
    start: str | list[np.ndarray] = "handheld",
    num_inference_steps: int | None = None,
    video_size: tuple[int, int] | None = None,
    n_action_steps: int | None = None,
) -> tuple[bool, int, list[bool], list[float], list[np.ndarray]]:
    """One episode -> (success, control steps, cube placed per gripper, chunk inference times [s], frames).

    `start`: "handheld" (drawn by start_tcp_rows(seed)), "home" (no move) or explicit [pos, axis-angle] rows,
    one per gripper (table frame)."""
    ok, steps, times, frames = rollout_arms(
        policy,
        env,
        ctrls,
        seed,
        _starts(start, seed),
        CAMERAS,
        num_inference_steps,
        video_size,
        n_action_steps,
    )
    return ok, steps, _placed(env), times, frames


def _starts(start: str | list[np.ndarray], seed: int) -> list[np.ndarray] | None:
    return start_rows(start, seed, start_tcp_rows)


def _placed(env: BimanualTwinEnv) -> list[bool]:
    return [env.scene.placed(env.data, i) for i in range(N_GRIPPERS)]


def evaluate_bimanual(
    policy,
    arm: str,
    episodes: int,
    seed: int = DEFAULT_SEED,
    start: str = "handheld",
    num_inference_steps: int | None = None,
    video_dir: str | Path | None = None,
    n_videos: int = 3,
    video_size: tuple[int, int] = (160, 200),
    progress: bool = True,
    n_action_steps: int | None = None,
    rig_lag_s: float = 0.0,
    rig_ik: str | None = None,
) -> BimanualEvalResult:
    """Roll a two-gripper eef policy out on two `arm` twins for `episodes` seeds (seed, seed+1, ...); the
    arguments come checked from mimic.workflows.evaluate_eef.evaluate_eef, its only entry (the rig options
    included, which apply to `--arm handheld` only). `rig_lag_s`: on the
    handheld rig, the hands follow the rows through a first-order lag of this time constant (the arms' servo
    lag without the rest of what arms change); `rig_ik`: on the rig, every row first passes through that arm's IK
    (the arms' IK without their bodies)."""
    if arm == HANDHELD:  # the two-gripper rig the demos come from: TCP rows executed as they are, no IK
        env: BimanualTwinEnv | BimanualHandheldEnv = BimanualHandheldEnv(
            seed=seed, cameras=(), tracking_lag_s=rig_lag_s, ik_arm=rig_ik
        )
        ctrls: list[EefChunkController] = []
        start = "rig"
    else:
        env = BimanualTwinEnv(arm, seed=seed)
        ctrls = make_controllers(env)
    res = BimanualEvalResult(
        f"2x {arm}",
        TASK,
        episodes,
        0,
        0.0,
        0.0,
        1.0,
        num_inference_steps=num_inference_steps,
        start=start,
        n_action_steps=n_action_steps or policy.n_action_steps,
        control_hz=env.control_hz,
        per_gripper_placed=[0] * N_GRIPPERS,
        rig_lag_s=rig_lag_s,
        rig_ik=rig_ik or "",
    )

    def count_placed() -> None:
        res.per_gripper_placed = [
            n + int(p) for n, p in zip(res.per_gripper_placed, _placed(env), strict=True)
        ]

    run_episodes(
        policy,
        env,
        ctrls,
        res,
        seed,
        lambda ep_seed: None if not ctrls else _starts(start, ep_seed),
        CAMERAS,
        lambda ep_seed, ok: f"{TASK}_{arm}_seed{ep_seed}_{'success' if ok else 'fail'}.mp4",
        f"eval bimanual 2x {arm}",
        num_inference_steps=num_inference_steps,
        video_dir=video_dir,
        n_videos=n_videos,
        video_size=video_size,
        progress=progress,
        n_action_steps=n_action_steps,
        after_episode=count_placed,
    )
    res.extra["per_gripper_placed"] = res.per_gripper_placed
    return res
