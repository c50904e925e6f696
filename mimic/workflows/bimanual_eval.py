"""A two-gripper end-effector policy rolled out on two arm twins (mimic.sim.bimanual.BimanualTwinEnv) through IK.

`mimic eval <checkpoint> --arm xarm7 --episodes N --seed S` on a checkpoint trained on two-gripper handheld
demos lands here (mimic.workflows.evaluate_eef dispatches on the policy's `grippers`). Per episode: the
bimanual_pick_place scene of seed S+k (evaluation seeds 100000+, never the demos'); each arm first moves its
TCP to a start pose drawn like the demos' starts (`--start handheld`) or stays at home (`--start home`); then
every n_action_steps the policy sees both grippers' last n_obs_steps observations in the table frame and
predicts both grippers' absolute TCP rows; gripper i's rows go to its own
mimic.robots.eef_control.EefChunkController, which maps them into arm i's base frame (`base_pose`), solves
IK, refuses unreachable points and applies the Limiter; the two arms' joint targets step the twin together.
Success is the twin's own check (both cubes placed, both grippers open); the interval is Wilson's 95%.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation, Slerp
from tqdm import tqdm

from mimic.robots.eef_control import EefChunkController
from mimic.robots.ik import IKSolver
from mimic.sim.bimanual import TASK, BimanualTwinEnv, start_tcp_rows
from mimic.sim.tasks.bimanual_pick_place import N_GRIPPERS
from mimic.workflows.eval_result import DEFAULT_SEED, EvalResult

START_STEPS = 25  # control periods to reach the start pose (2.5 s) and settle
ROW = 7  # [tcp pos (3), axis-angle (3), gripper] per gripper


@dataclass
class BimanualEvalResult(EvalResult):
    start: str = "handheld"
    per_gripper_placed: list[int] = field(
        default_factory=list
    )  # episodes in which gripper i's cube was placed
    unreachable_points: int = 0
    unreachable_chunks: int = 0
    clipped_velocity: int = 0
    clipped_position: int = 0
    max_ik_pos_err_mm: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


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


def _step(env: BimanualTwinEnv, ctrls: list[EefChunkController], t: float):
    action = []
    for c in ctrls:
        out = c.target(t)
        q, g = out if out is not None else c.joint.limiter.last
        action.append(np.concatenate([q, [g]]))
    obs, _, term, trunc, info = env.step(np.concatenate(action))
    return obs, term, trunc, info


def _line(here: np.ndarray, goal: np.ndarray, n: int, total: int, width: float) -> np.ndarray:
    """`total` rows: a straight line (slerp) from `here` to `goal` in n rows, then holding the goal."""
    s = np.linspace(0, 1, n + 1)[1:]
    rots = Slerp([0, 1], Rotation.from_rotvec([here[3:6], goal[3:6]]))(s).as_rotvec()
    rows = np.column_stack([here[:3] + s[:, None] * (goal[:3] - here[:3]), rots, np.full(n, width)])
    return np.concatenate([rows, np.repeat(rows[-1:], total - n, axis=0)])


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

    `start`: "handheld" (drawn by start_tcp_rows(seed)), "home" (no move) or explicit [pos, axis-angle] rows, one
    per gripper (table frame)."""
    obs = env.reset(seed=seed)
    policy.reset()
    dt = 1.0 / env.control_hz
    k = 0
    for i, c in enumerate(ctrls):
        c.reset(obs[f"robot{i}_joint_pos"], float(obs[f"robot{i}_gripper_width"][0]), 0.0)
    frames: list[np.ndarray] = []

    def frame() -> None:
        if video_size is not None:
            views = [env.render("scene", video_size)] + [
                env.render(f"wrist{i}", video_size) for i in range(N_GRIPPERS)
            ]
            frames.append(np.concatenate(views, 1))

    frame()
    if not (isinstance(start, str) and start == "home"):
        goals = start_tcp_rows(seed) if isinstance(start, str) else [np.asarray(r, float)[:6] for r in start]
        for i, (c, goal) in enumerate(zip(ctrls, goals, strict=True)):
            here = np.concatenate([obs[f"robot{i}_eef_pos"], obs[f"robot{i}_eef_rot_axis_angle"]])
            rows = _line(here, goal, START_STEPS - 5, START_STEPS, env.spec.gripper_max)
            if not c.set_chunk(dt, dt, rows, t_now=dt):
                raise RuntimeError(
                    f"{env.spec.name} {i}: start pose {np.round(goal[:3], 3).tolist()} unreachable"
                )
        for _ in range(START_STEPS):
            k += 1
            obs, _, _, _ = _step(env, ctrls, k * dt)
            frame()
    hist: deque[dict[str, np.ndarray]] = deque([obs] * policy.n_obs_steps, maxlen=policy.n_obs_steps)
    first = policy.n_obs_steps  # the row one control period after the newest observation
    times: list[float] = []
    info: dict[str, Any] = {"success": False}
    while env.t < env.max_steps:
        window = {key: np.stack([o[key] for o in hist]) for key in policy.obs_keys}
        t0 = time.perf_counter()
        chunk = policy.predict(window, num_inference_steps=num_inference_steps)
        times.append(time.perf_counter() - t0)
        rows = chunk[first : first + (n_action_steps or policy.n_action_steps)]
        for i, c in enumerate(ctrls):
            c.set_chunk((k + 1) * dt, dt, rows[:, ROW * i : ROW * (i + 1)].copy(), t_now=(k + 1) * dt)
        for _ in range(len(rows)):
            k += 1
            obs, term, trunc, info = _step(env, ctrls, k * dt)
            hist.append(obs)
            frame()
            if term or trunc:
                break
        if info["success"] or env.t >= env.max_steps:
            break
    placed = [env.scene.placed(env.data, i) for i in range(N_GRIPPERS)]
    return bool(info["success"]), env.t, placed, times, frames


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
) -> BimanualEvalResult:
    """Roll a two-gripper eef policy out on two `arm` twins for `episodes` seeds (seed, seed+1, ...); the
    arguments come checked from mimic.workflows.evaluate_eef.evaluate_eef, its only entry."""
    env = BimanualTwinEnv(arm, seed=seed)
    ctrls = make_controllers(env)
    vdir = Path(video_dir) if video_dir else None
    if vdir is not None:
        vdir.mkdir(parents=True, exist_ok=True)
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
    )
    all_times: list[float] = []
    t_start = time.monotonic()
    bar = tqdm(range(episodes), desc=f"eval bimanual 2x {arm}", disable=not progress, unit="ep")
    try:
        for i in bar:
            ep_seed = seed + i
            want_video = vdir is not None and i < n_videos
            ok, steps, placed, times, frames = rollout_bimanual(
                policy,
                env,
                ctrls,
                ep_seed,
                start,
                num_inference_steps,
                video_size if want_video else None,
                n_action_steps,
            )
            res.outcomes.append(ok)
            res.seeds.append(ep_seed)
            res.episode_steps.append(steps)
            res.per_gripper_placed = [n + int(p) for n, p in zip(res.per_gripper_placed, placed, strict=True)]
            all_times += times
            if want_video and vdir is not None:
                import imageio.v3 as iio

                out = vdir / f"{TASK}_{arm}_seed{ep_seed}_{'success' if ok else 'fail'}.mp4"
                iio.imwrite(out, np.stack(frames), fps=env.control_hz, codec="libx264")
                res.videos.append(str(out))
            bar.set_postfix(success=f"{sum(res.outcomes)}/{len(res.outcomes)}")
    finally:
        env.close()
    res.finish(all_times, t_start)
    for c in ctrls:
        e, s = c.eef_counters, c.counters
        res.unreachable_points += e.unreachable_points
        res.unreachable_chunks += e.unreachable_chunks
        res.clipped_velocity += s.clipped_velocity
        res.clipped_position += s.clipped_position
        res.max_ik_pos_err_mm = max(res.max_ik_pos_err_mm, e.max_pos_err_m * 1e3)
    res.extra["per_gripper_placed"] = res.per_gripper_placed
    return res
