"""An end-effector (eef_relative) policy rolled out on the arm twins' pick_place through IK (`mimic eval` on
an end-effector checkpoint; `--arm all` runs every arm twin, since one checkpoint drives them all).

Per episode: TwinEnv pick_place on the arm (seeds 100000+, never the demos' scenes); the arm first moves
its TCP to a start pose drawn like the handheld demos' starts (`--start handheld`, UMI deployments
also begin at a start pose) or stays at its home pose (`--start home`); then every n_action_steps the
policy sees its last n_obs_steps observations (TCP pose, gripper width, object_state: what the twin's
/robot and /objects streams give) and predicts absolute TCP poses; the rows for the next n_action_steps
control periods (row n_obs_steps is the pose one period ahead: UMI's action = pose reached; the gripper column
is already the arm's command, EefPolicy's own post-processing) go through
mimic.robots.eef_control.EefChunkController (IK, refusal of unreachable poses, the Limiter), whose joint
targets the twin executes. Success is the twin's own pick_place check; the interval is Wilson's 95%. A two-gripper policy (`grippers` 2)
runs on two twins of the arm instead (mimic.workflows.bimanual_eval).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mimic.robots.eef_control import EefChunkController
from mimic.robots.ik import IKSolver, tool_down
from mimic.sim.env import TwinEnv, make_env
from mimic.workflows.bimanual_eval import BimanualEvalResult, evaluate_bimanual
from mimic.workflows.eval_result import DEFAULT_SEED, EvalResult

ARMS = ("franka", "ur5e", "xarm7")
STARTS = ("handheld", "home")
# mimic.sim.handheld.HandheldEnv.reset's start draw (m, rad): the region the demonstrations begin in
START_LOW, START_HIGH, START_YAW = np.array([0.35, -0.1, 0.2]), np.array([0.45, 0.1, 0.3]), 0.3
START_STEPS = 25  # control periods to go there (2.5 s) and settle


@dataclass
class EefEvalResult(EvalResult):
    start: str = "handheld"
    unreachable_points: int = 0
    unreachable_chunks: int = 0
    clipped_velocity: int = 0
    clipped_position: int = 0
    max_ik_pos_err_mm: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def start_pose(seed: int) -> np.ndarray:
    """The episode's TCP start pose row [pos, axis-angle] drawn from the demos' start region."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng([seed, 7])
    pos = rng.uniform(START_LOW, START_HIGH)
    rot = tool_down(rng.uniform(-START_YAW, START_YAW))  # as the demos hold it
    return np.concatenate([pos, Rotation.from_matrix(rot).as_rotvec()])


def _step(env: TwinEnv, ctrl: EefChunkController, t: float) -> tuple[dict, bool, bool, dict]:
    """One control period: the controller's target (or the held last one) to the twin."""
    out = ctrl.target(t)
    q, g = out if out is not None else ctrl.joint.limiter.last
    obs, _, term, trunc, info = env.step(np.concatenate([q, [g]]))
    return obs, term, trunc, info


def rollout_eef(
    policy,
    env: TwinEnv,
    ctrl: EefChunkController,
    seed: int,
    start: str | np.ndarray = "handheld",
    num_inference_steps: int | None = None,
    video_size: tuple[int, int] | None = None,
    n_action_steps: int | None = None,
) -> tuple[bool, int, list[float], list[np.ndarray]]:
    """One episode -> (success, control steps, chunk inference times [s], frames if video_size).

    `start`: "handheld" (drawn by start_pose(seed)), "home" (no move) or an explicit [pos, axis-angle] row.
    """
    obs = env.reset(seed=seed)
    policy.reset()
    dt = 1.0 / env.control_hz
    k = 0  # control periods since reset; the controller's clock is k * dt
    ctrl.reset(obs["robot0_joint_pos"], float(obs["robot0_gripper_width"][0]), 0.0)
    frames: list[np.ndarray] = []

    def frame() -> None:
        if video_size is not None:
            frames.append(
                np.concatenate([env.render("scene", video_size), env.render("wrist", video_size)], 1)
            )

    frame()
    if not (isinstance(start, str) and start == "home"):  # straight line to the start pose, then settle
        here = np.concatenate([obs["robot0_eef_pos"], obs["robot0_eef_rot_axis_angle"]])
        goal = start_pose(seed) if isinstance(start, str) else np.asarray(start, float)[:6]
        from scipy.spatial.transform import Rotation, Slerp

        n = START_STEPS - 5
        s = np.linspace(0, 1, n + 1)[1:]
        rots = Slerp([0, 1], Rotation.from_rotvec([here[3:], goal[3:]]))(s).as_rotvec()
        rows = np.column_stack(
            [here[:3] + s[:, None] * (goal[:3] - here[:3]), rots, np.full(n, env.spec.gripper_max)]
        )
        rows = np.concatenate([rows, np.repeat(rows[-1:], START_STEPS - n, axis=0)])  # settle there
        if not ctrl.set_chunk(dt, dt, rows, t_now=dt):
            raise RuntimeError(f"{env.spec.name}: start pose {np.round(goal[:3], 3).tolist()} unreachable")
        for _ in range(START_STEPS):
            k += 1
            obs, _, _, _ = _step(env, ctrl, k * dt)
            frame()
    hist: deque[dict[str, np.ndarray]] = deque([obs] * policy.n_obs_steps, maxlen=policy.n_obs_steps)
    first = policy.n_obs_steps  # the row one control period after the newest observation
    times: list[float] = []
    while env.t < env.max_steps:
        window = {key: np.stack([o[key] for o in hist]) for key in policy.obs_keys}
        t0 = time.perf_counter()
        chunk = policy.predict(window, num_inference_steps=num_inference_steps)
        times.append(time.perf_counter() - t0)
        rows = chunk[first : first + (n_action_steps or policy.n_action_steps)].copy()
        ctrl.set_chunk((k + 1) * dt, dt, rows, t_now=(k + 1) * dt)
        for _ in range(len(rows)):
            k += 1
            obs, term, trunc, info = _step(env, ctrl, k * dt)
            hist.append(obs)
            frame()
            if term or trunc:
                return bool(info["success"]), env.t, times, frames
    return False, env.t, times, frames


def evaluate_eef(
    policy,
    arm: str,
    episodes: int,
    seed: int = DEFAULT_SEED,
    start: str = "handheld",
    num_inference_steps: int | None = None,
    video_dir: str | Path | None = None,
    n_videos: int = 3,
    video_size: tuple[int, int] = (192, 256),
    progress: bool = True,
    n_action_steps: int | None = None,
) -> EefEvalResult | BimanualEvalResult:
    """Roll `policy` (an EefPolicy) out on `arm`'s pick_place for `episodes` seeds (seed, seed+1, ...);
    `n_action_steps` overrides the policy's receding horizon (rows executed per prediction)."""
    if arm not in ARMS:
        raise ValueError(f"evaluate_eef: --arm {arm!r} is not one of {ARMS}")
    if start not in STARTS:
        raise ValueError(f"evaluate_eef: --start {start!r} is not one of {STARTS}")
    if episodes < 1:
        raise ValueError(f"evaluate_eef: episodes must be >= 1, got {episodes}")
    if n_action_steps is not None and not 1 <= n_action_steps <= policy.horizon - policy.n_obs_steps:
        raise ValueError(
            f"evaluate_eef: --action-steps {n_action_steps} must be in "
            f"1..{policy.horizon - policy.n_obs_steps}"
        )
    if (
        getattr(policy, "grippers", 1) == 2
    ):  # two grippers: two arm twins of `arm` (mimic.workflows.bimanual_eval)
        return evaluate_bimanual(
            policy,
            arm,
            episodes,
            seed=seed,
            start=start,
            num_inference_steps=num_inference_steps,
            video_dir=video_dir,
            n_videos=n_videos,
            progress=progress,
            n_action_steps=n_action_steps,
        )
    env = make_env("pick_place", arm, seed=seed, cameras=())
    ctrl = EefChunkController(IKSolver(env.model, env.spec), env.control_hz, blend_s=0.0, velocity_scale=0.8)
    vdir = Path(video_dir) if video_dir else None
    if vdir is not None:
        vdir.mkdir(parents=True, exist_ok=True)
    res = EefEvalResult(
        arm,
        "pick_place",
        episodes,
        0,
        0.0,
        0.0,
        1.0,
        num_inference_steps=num_inference_steps,
        start=start,
        n_action_steps=n_action_steps or policy.n_action_steps,
    )
    all_times: list[float] = []
    t_start = time.monotonic()
    bar = tqdm(range(episodes), desc=f"eval eef {arm}", disable=not progress, unit="ep")
    try:
        for i in bar:
            ep_seed = seed + i
            want_video = vdir is not None and i < n_videos
            ok, steps, times, frames = rollout_eef(
                policy,
                env,
                ctrl,
                ep_seed,
                start,
                num_inference_steps,
                video_size if want_video else None,
                n_action_steps,
            )
            res.outcomes.append(ok)
            res.seeds.append(ep_seed)
            res.episode_steps.append(steps)
            all_times += times
            if want_video and vdir is not None:
                import imageio.v3 as iio

                out = vdir / f"eef_pick_place_{arm}_seed{ep_seed}_{'success' if ok else 'fail'}.mp4"
                iio.imwrite(out, np.stack(frames), fps=env.control_hz, codec="libx264")
                res.videos.append(str(out))
            bar.set_postfix(success=f"{sum(res.outcomes)}/{len(res.outcomes)}")
    finally:
        env.close()
    res.finish(all_times, t_start)
    e, c = ctrl.eef_counters, ctrl.counters
    res.unreachable_points, res.unreachable_chunks = e.unreachable_points, e.unreachable_chunks
    res.clipped_velocity, res.clipped_position = c.clipped_velocity, c.clipped_position
    res.max_ik_pos_err_mm = e.max_pos_err_m * 1e3
    return res


def plot_results(results: list[EefEvalResult], out: Path, title: str) -> None:
    """Success rate per arm with its Wilson 95% interval, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = np.arange(len(results))
    rates = [r.success_rate for r in results]
    err = [[r.success_rate - r.ci_low for r in results], [r.ci_high - r.success_rate for r in results]]
    ax.bar(x, rates, yerr=err, capsize=6, color="#4c72b0")
    ax.axhline(0.8, color="k", ls="--", lw=1, label="80%")
    ax.set_xticks(x, [f"{r.arm}\n{r.successes}/{r.episodes}" for r in results])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pick_place success (Wilson 95%)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
