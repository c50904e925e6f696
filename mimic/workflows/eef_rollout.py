"""End-effector policies rolled out on arm twins through IK: the episode loop one arm and two arms share.

Per episode: the twin's scene of the seed; each arm first moves its TCP along a straight line to its start
pose and settles there (`START_STEPS` control periods), or stays at home when no start is given; then every
n_action_steps the policy sees its last n_obs_steps observations and predicts absolute TCP rows, 7 columns
per arm ([pos, axis-angle, gripper], row n_obs_steps being the pose one control period ahead: UMI's
action = pose reached); arm i's columns go to its own mimic.robots.eef_control.EefChunkController (IK,
refusal of unreachable poses, the Limiter), and the arms' joint targets step the twin together. Success is
the twin's own check; the interval is Wilson's 95%.

mimic.workflows.evaluate_eef (one arm, pick_place) and mimic.workflows.bimanual_eval (two arms,
bimanual_pick_place) differ only in the twin, the start poses and what they report besides success.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation, Slerp
from tqdm import tqdm

from mimic.robots.eef_control import EefChunkController
from mimic.workflows.eval_result import EvalResult


@dataclass
class EefEvalResult(EvalResult):
    """An evaluation through IK: success and timing, plus the controllers' IK and safety counters."""

    start: str = "handheld"
    unreachable_points: int = 0
    unreachable_chunks: int = 0
    clipped_velocity: int = 0
    clipped_position: int = 0
    max_ik_pos_err_mm: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


START_STEPS = 25  # control periods to reach the start pose (2.5 s) and settle
ROW = 7  # [tcp pos (3), axis-angle (3), gripper] per arm


def step_arms(env: Any, ctrls: Sequence[EefChunkController], t: float) -> tuple[dict, bool, bool, dict]:
    """One control period: each controller's target (or its held last one) to the twin, arms in order."""
    action = []
    for c in ctrls:
        out = c.target(t)
        q, g = out if out is not None else c.joint.limiter.last
        action.append(np.concatenate([q, [g]]))
    obs, _, term, trunc, info = env.step(np.concatenate(action))
    return obs, term, trunc, info


def start_rows(
    start: str | np.ndarray | Sequence[np.ndarray], seed: int, draw: Callable[[int], list[np.ndarray]]
) -> list[np.ndarray] | None:
    """An episode's start as rollout_arms takes it: None for "home", `draw(seed)` (one [pos, axis-angle] row
    per arm) for a drawn start, explicit rows (one row, or one per arm) as they are."""
    if isinstance(start, str):
        return None if start == "home" else draw(seed)
    return list(np.atleast_2d(np.asarray(start, float)))


def line_rows(here: np.ndarray, goal: np.ndarray, n: int, total: int, width: float) -> np.ndarray:
    """`total` rows: a straight line (slerp) from `here` to `goal` ([pos, axis-angle]) in n rows, then
    holding the goal."""
    s = np.linspace(0, 1, n + 1)[1:]
    rots = Slerp([0, 1], Rotation.from_rotvec([here[3:6], goal[3:6]]))(s).as_rotvec()
    rows = np.column_stack([here[:3] + s[:, None] * (goal[:3] - here[:3]), rots, np.full(n, width)])
    return np.concatenate([rows, np.repeat(rows[-1:], total - n, axis=0)])


def rollout_arms(
    policy,
    env: Any,
    ctrls: Sequence[EefChunkController],
    seed: int,
    starts: Sequence[np.ndarray] | None,
    cameras: Sequence[str] = (),
    num_inference_steps: int | None = None,
    video_size: tuple[int, int] | None = None,
    n_action_steps: int | None = None,
) -> tuple[bool, int, list[float], list[np.ndarray]]:
    """One episode -> (success, control steps, chunk inference times [s], frames if video_size: the
    `cameras` side by side).

    `starts`: one [pos, axis-angle] row per arm (the twin's frame), or None to start at home. With no `ctrls`
    the twin takes the TCP rows themselves (the handheld twins the demos come from: no arm, no IK), one row
    per control period, from the start its reset draws."""
    if starts is not None and not ctrls:
        raise ValueError(
            "rollout_arms: start poses are for arms (controllers); a handheld twin draws its own"
        )
    obs = env.reset(seed=seed)
    policy.reset()
    dt = 1.0 / env.control_hz
    k = 0  # control periods since reset; the controllers' clock is k * dt
    for i, c in enumerate(ctrls):
        c.reset(obs[f"robot{i}_joint_pos"], float(obs[f"robot{i}_gripper_width"][0]), 0.0)
    frames: list[np.ndarray] = []

    def frame() -> None:
        if video_size is not None:
            frames.append(np.concatenate([env.render(cam, video_size) for cam in cameras], 1))

    frame()
    if starts is not None:
        for i, (c, goal) in enumerate(zip(ctrls, starts, strict=True)):
            here = np.concatenate([obs[f"robot{i}_eef_pos"], obs[f"robot{i}_eef_rot_axis_angle"]])
            goal = np.asarray(goal, float)[:6]
            rows = line_rows(here, goal, START_STEPS - 5, START_STEPS, env.spec.gripper_max)
            if not c.set_chunk(dt, dt, rows, t_now=dt):
                arm = env.spec.name if len(ctrls) == 1 else f"{env.spec.name} {i}"
                raise RuntimeError(f"{arm}: start pose {np.round(goal[:3], 3).tolist()} unreachable")
        for _ in range(START_STEPS):
            k += 1
            obs, _, _, _ = step_arms(env, ctrls, k * dt)
            frame()
    hist: deque[dict[str, np.ndarray]] = deque([obs] * policy.n_obs_steps, maxlen=policy.n_obs_steps)
    first = policy.n_obs_steps  # the row one control period after the newest observation
    times: list[float] = []
    while env.t < env.max_steps:
        window = {key: np.stack([o[key] for o in hist]) for key in policy.obs_keys}
        t0 = time.perf_counter()
        chunk = policy.predict(window, num_inference_steps=num_inference_steps)
        times.append(time.perf_counter() - t0)
        rows = chunk[first : first + (n_action_steps or policy.n_action_steps)]
        for i, c in enumerate(ctrls):
            c.set_chunk((k + 1) * dt, dt, rows[:, ROW * i : ROW * (i + 1)].copy(), t_now=(k + 1) * dt)
        for row in rows:
            k += 1
            if ctrls:
                obs, term, trunc, info = step_arms(env, ctrls, k * dt)
            else:
                obs, _, term, trunc, info = env.step(row)
            hist.append(obs)
            frame()
            if term or trunc:
                return bool(info["success"]), env.t, times, frames
    return False, env.t, times, frames


def run_episodes(
    policy,
    env: Any,
    ctrls: Sequence[EefChunkController],
    res: EefEvalResult,
    seed: int,
    starts_of: Callable[[int], Sequence[np.ndarray] | None],
    cameras: Sequence[str],
    video_name: Callable[[int, bool], str],
    desc: str,
    num_inference_steps: int | None = None,
    video_dir: str | Path | None = None,
    n_videos: int = 3,
    video_size: tuple[int, int] = (192, 256),
    progress: bool = True,
    n_action_steps: int | None = None,
    after_episode: Callable[[], None] | None = None,
) -> None:
    """`res.episodes` episodes (seeds seed, seed+1, ...) into `res`: outcomes, steps,
    chunk timing, the first `n_videos` as videos, and the controllers' IK and safety counters summed over the
    arms. `after_episode` reads the twin once an episode ends (what a result reports besides success).
    Closes the twin."""
    vdir = Path(video_dir) if video_dir else None
    if vdir is not None:
        vdir.mkdir(parents=True, exist_ok=True)
    all_times: list[float] = []
    t_start = time.monotonic()
    bar = tqdm(range(res.episodes), desc=desc, disable=not progress, unit="ep")
    try:
        for i in bar:
            ep_seed = seed + i
            want_video = vdir is not None and i < n_videos
            ok, steps, times, frames = rollout_arms(
                policy,
                env,
                ctrls,
                ep_seed,
                starts_of(ep_seed),
                cameras,
                num_inference_steps,
                video_size if want_video else None,
                n_action_steps,
            )
            res.outcomes.append(ok)
            res.seeds.append(ep_seed)
            res.episode_steps.append(steps)
            all_times += times
            if after_episode is not None:
                after_episode()
            if want_video and vdir is not None:
                import imageio.v3 as iio

                out = vdir / video_name(ep_seed, ok)
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
