"""An end-effector (eef_relative) policy rolled out on the arm twins' pick_place through IK (`mimic eval` on
an end-effector checkpoint; `--arm all` runs every arm twin, since one checkpoint drives them all).

Per episode (mimic.workflows.eef_rollout, the loop shared with two arms): TwinEnv pick_place on the arm
(seeds 100000+, never the demos' scenes); the arm first moves its TCP to a start pose drawn like the handheld
demos' starts (`--start handheld`, UMI deployments also begin at a start pose) or stays at its home pose
(`--start home`); then every n_action_steps the policy sees its last n_obs_steps observations (TCP pose,
gripper width, object_state: what the twin's /robot and /objects streams give) and predicts absolute TCP
poses (the gripper column already the arm's command, EefPolicy's own post-processing), which
mimic.robots.eef_control.EefChunkController executes through IK. Success is the twin's own pick_place check;
the interval is Wilson's 95%. A two-gripper policy (`grippers` 2) runs on two twins of the arm instead
(mimic.workflows.bimanual_eval).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mimic.robots.eef_control import EefChunkController
from mimic.robots.ik import IKSolver, tool_down
from mimic.sim.env import TwinEnv, make_env
from mimic.workflows.bimanual_eval import HANDHELD, BimanualEvalResult, evaluate_bimanual
from mimic.workflows.eef_rollout import EefEvalResult, rollout_arms, run_episodes, start_rows
from mimic.workflows.eval_result import DEFAULT_SEED

ARMS = ("franka", "ur5e", "xarm7")
STARTS = ("handheld", "home")
# mimic.sim.handheld.HandheldEnv.reset's start draw (m, rad): the region the demonstrations begin in
START_LOW, START_HIGH, START_YAW = np.array([0.35, -0.1, 0.2]), np.array([0.45, 0.1, 0.3]), 0.3
CAMERAS = ("scene", "wrist")  # the videos' views, side by side


def start_pose(seed: int) -> np.ndarray:
    """The episode's TCP start pose row [pos, axis-angle] drawn from the demos' start region."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng([seed, 7])
    pos = rng.uniform(START_LOW, START_HIGH)
    rot = tool_down(rng.uniform(-START_YAW, START_YAW))  # as the demos hold it
    return np.concatenate([pos, Rotation.from_matrix(rot).as_rotvec()])


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
    starts = _starts(start, seed)
    return rollout_arms(
        policy, env, [ctrl], seed, starts, CAMERAS, num_inference_steps, video_size, n_action_steps
    )


def _starts(start: str | np.ndarray, seed: int) -> list[np.ndarray] | None:
    return start_rows(start, seed, lambda s: [start_pose(s)])


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
    rig_lag_s: float = 0.0,
    rig_ik: str | None = None,
) -> EefEvalResult | BimanualEvalResult:
    """Roll `policy` (an EefPolicy) out on `arm`'s pick_place for `episodes` seeds (seed, seed+1, ...);
    `n_action_steps` overrides the policy's receding horizon (rows executed per prediction); `rig_lag_s`: a
    two-gripper policy on the handheld rig, its hands lagging the rows; `rig_ik`: the rig's rows through that arm's
    IK first (mimic.workflows.bimanual_eval)."""
    grippers = getattr(policy, "grippers", 1)
    on_rig = grippers == 2 and arm == HANDHELD  # the two-gripper rig the demos come from
    if arm not in ARMS and not on_rig:
        also = f" (or {HANDHELD} for a two-gripper policy)"
        raise ValueError(f"evaluate_eef: --arm {arm!r} is not one of {ARMS}{also}")
    if start not in STARTS:
        raise ValueError(f"evaluate_eef: --start {start!r} is not one of {STARTS}")
    if episodes < 1:
        raise ValueError(f"evaluate_eef: episodes must be >= 1, got {episodes}")
    if (rig_lag_s or rig_ik) and not on_rig:
        raise ValueError(
            f"eval: --rig-lag-s and --rig-ik apply to --arm {HANDHELD} with a two-gripper policy, "
            f"not --arm {arm} with a {grippers}-gripper one"
        )
    if n_action_steps is not None and not 1 <= n_action_steps <= policy.horizon - policy.n_obs_steps:
        raise ValueError(
            f"evaluate_eef: --action-steps {n_action_steps} must be in "
            f"1..{policy.horizon - policy.n_obs_steps}"
        )
    if (
        grippers == 2
    ):  # two grippers: two arm twins of `arm`, or the handheld rig (mimic.workflows.bimanual_eval)
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
            rig_lag_s=rig_lag_s,
            rig_ik=rig_ik,
        )
    env = make_env("pick_place", arm, seed=seed, cameras=())
    ctrl = EefChunkController(IKSolver(env.model, env.spec), env.control_hz, blend_s=0.0, velocity_scale=0.8)
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
    run_episodes(
        policy,
        env,
        [ctrl],
        res,
        seed,
        lambda ep_seed: _starts(start, ep_seed),
        CAMERAS,
        lambda ep_seed, ok: f"eef_pick_place_{arm}_seed{ep_seed}_{'success' if ok else 'fail'}.mp4",
        f"eval eef {arm}",
        num_inference_steps=num_inference_steps,
        video_dir=video_dir,
        n_videos=n_videos,
        video_size=video_size,
        progress=progress,
        n_action_steps=n_action_steps,
    )
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
