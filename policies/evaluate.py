"""`mimic eval <checkpoint> --arm A --task T --episodes N [--action-steps K] [--video-dir D]`: roll a policy out
on the twin.

Plain Python, no ROS: sim.make_env stepped at its control rate with receding-horizon execution. Every
n_action_steps the policy sees the last n_obs_steps observations and the rows
[n_obs_steps - 1, n_obs_steps - 1 + n_action_steps) of its chunk are executed (diffusion_policy's
convention, the one the policy node uses). Evaluation seeds default to 100000+ so scenes are never
ones the demonstrations were recorded on (sim.record uses 0, 1, ...). With --video-dir, the first --videos
rollouts are written as MP4s (scene and wrist cameras); push_t ones also as a top-view PNG of the TCP path
over the block's poses.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from policies.chunk_policy import executed_rows
from sim.env import CAMERA_KEYS, make_env

KEY_TO_CAMERA = {v: k for k, v in CAMERA_KEYS.items()}
DEFAULT_SEED = 100_000


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z = 1.96); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EvalResult:
    arm: str
    task: str
    episodes: int
    successes: int
    success_rate: float
    ci_low: float
    ci_high: float
    outcomes: list[bool] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    episode_steps: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # per episode, the best reward seen (push_t: coverage/0.95)
    num_inference_steps: int | None = None
    n_action_steps: int = 0  # rows executed per prediction (the policy's receding horizon)
    inference_ms_p50: float = 0.0
    inference_ms_p99: float = 0.0
    wall_s: float = 0.0
    videos: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # inference-time config fields this run changed

    def finish(self, chunk_times_s: list[float], started: float) -> None:
        """Fill the totals from `outcomes`: successes, rate, Wilson interval, chunk p50/p99, wall time since
        `started` (time.monotonic)."""
        self.successes = int(sum(self.outcomes))
        self.success_rate = self.successes / self.episodes
        self.ci_low, self.ci_high = wilson_interval(self.successes, self.episodes)
        if chunk_times_s:
            self.inference_ms_p50 = float(np.median(chunk_times_s) * 1e3)
            self.inference_ms_p99 = float(np.percentile(chunk_times_s, 99) * 1e3)
        self.wall_s = time.monotonic() - started

    def summary(self) -> str:
        score = f", mean score {np.mean(self.scores):.3f}" if self.task == "push_t" and self.scores else ""
        return (f"{self.arm}/{self.task}: success {self.successes}/{self.episodes} = {self.success_rate:.1%} "
                f"(95% CI {self.ci_low:.1%}-{self.ci_high:.1%}){score}, chunk {self.inference_ms_p50:.1f} ms p50 / "
                f"{self.inference_ms_p99:.1f} ms p99, {self.wall_s:.0f} s")


def rollout(policy, env, seed: int, num_inference_steps: int | None = None, video_size: tuple[int, int] | None = None,
            on_step: Callable[[dict[str, np.ndarray]], None] | None = None
            ) -> tuple[bool, int, float, list[float], list[np.ndarray]]:
    """One episode -> (success, steps, best reward, chunk inference times [s], frames if video_size).

    The best reward is Diffusion Policy's Push-T score (max coverage over the episode, relative to the bar);
    1/0 on the other tasks. `on_step` sees every observation, the first (after reset) included."""
    obs = env.reset(seed=seed)
    policy.reset()
    hist: deque[dict[str, np.ndarray]] = deque([obs] * policy.n_obs_steps, maxlen=policy.n_obs_steps)
    lo, hi = executed_rows(policy.n_obs_steps, policy.n_action_steps)
    times: list[float] = []
    frames: list[np.ndarray] = []

    def frame() -> None:
        if video_size is not None:
            frames.append(np.concatenate([env.render("scene", video_size), env.render("wrist", video_size)], 1))

    frame()
    if on_step is not None:
        on_step(obs)
    success, steps, score = False, 0, 0.0
    while steps < env.max_steps:
        window = {k: np.stack([o[k] for o in hist]) for k in policy.obs_keys}
        t0 = time.perf_counter()
        chunk = policy.predict(window, num_inference_steps=num_inference_steps)
        times.append(time.perf_counter() - t0)
        for action in chunk[lo:hi]:
            obs, reward, term, trunc, info = env.step(action)
            score = max(score, float(reward))
            hist.append(obs)
            steps += 1
            frame()
            if on_step is not None:
                on_step(obs)
            if term or trunc:
                return bool(info["success"]), steps, score, times, frames
    return success, steps, score, times, frames


def _episode(policy, env, ep_seed: int, num_inference_steps: int | None, video: Path | None,
             video_size: tuple[int, int]) -> tuple[bool, int, float, list[float], str | None]:
    seen: list[dict[str, np.ndarray]] = []
    top_view = video is not None and env.task == "push_t"
    ok, steps, score, times, frames = rollout(policy, env, ep_seed, num_inference_steps,
                                              video_size if video is not None else None,
                                              seen.append if top_view else None)
    out = None
    if video is not None:
        import imageio.v3 as iio

        out = str(video.with_name(video.name.format(outcome="success" if ok else "fail")))
        iio.imwrite(out, np.stack(frames), fps=env.control_hz, codec="libx264")
        if top_view:
            push_t_top_view(seen, Path(out).with_suffix(".png"), f"seed {ep_seed}: {'success' if ok else 'failed'}, "
                            f"score {score:.2f}, {steps} steps")
    return ok, steps, score, times, out


def push_t_top_view(observations: list[dict[str, np.ndarray]], out: Path, title: str) -> None:
    """PNG of a push_t rollout seen from above: the TCP's path coloured by time over the T every 2 s and the goal.

    Where a video shows what happened, this shows where: a block knocked away while the pusher travels, or a
    pusher dithering in one place, reads at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.tasks.push_t import outline_world

    tcp = np.array([o["robot0_eef_pos"][:2] for o in observations])
    state = np.array([o["object_state"] for o in observations])
    fig, ax = plt.subplots(figsize=(5, 5))
    goal = outline_world(state[0, 3:6])
    ax.plot(goal[:, 1], goal[:, 0], "g--", lw=2, label="goal")
    every = 20  # control steps (2 s at 10 Hz)
    for k in [*range(0, len(state), every), len(state) - 1]:
        ring = outline_world(state[k, :3])
        ax.plot(ring[:, 1], ring[:, 0], color=plt.cm.viridis(k / max(len(state) - 1, 1)), lw=1)
    ax.scatter(tcp[:, 1], tcp[:, 0], c=np.arange(len(tcp)), cmap="viridis", s=4, label="TCP (dark: early)")
    ax.set(xlabel="y (m)", ylabel="x (m)", title=title)
    ax.invert_xaxis()
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


_WORKER: dict = {}  # per worker process: the policy (inherited through fork) and its env


def _worker_run(job: tuple) -> tuple[bool, int, float, list[float], str | None]:
    task, arm, cams, image_size, ep_seed, steps, video, video_size = job
    if "env" not in _WORKER:
        torch.set_num_threads(1)
        _WORKER["env"] = make_env(task, arm, seed=ep_seed, cameras=cams, image_size=image_size)
    return _episode(_WORKER["policy"], _WORKER["env"], ep_seed, steps, video, video_size)


def policy_cameras(policy) -> tuple[tuple[str, ...], tuple[int, int]]:
    """The twin cameras a policy's image keys name, and their image size (HxW) -> what make_env must render."""
    cams = []
    for k in getattr(policy, "image_keys", ()):
        if k not in KEY_TO_CAMERA:
            raise ValueError(f"eval: policy image key {k!r} is not a twin camera ({sorted(KEY_TO_CAMERA)})")
        cams.append(KEY_TO_CAMERA[k])
    image_size = (96, 96)
    if cams:
        image_size = tuple(policy.shape_meta.obs_shapes[policy.image_keys[0]][:2])
    return tuple(cams), image_size


def evaluate(policy, arm: str, task: str, episodes: int, seed: int = DEFAULT_SEED,
             num_inference_steps: int | None = None, video_dir: str | Path | None = None, n_videos: int = 3,
             video_size: tuple[int, int] = (192, 256), progress: bool = True, workers: int = 1) -> EvalResult:
    """Roll `policy` out for `episodes` seeded episodes (seed, seed+1, ...); MP4s of the first n_videos.

    workers > 1 fans the episodes out over forked processes (each with its own env and one torch thread).
    """
    if episodes < 1:
        raise ValueError(f"eval: episodes must be >= 1, got {episodes}")
    if num_inference_steps is not None and num_inference_steps < 1:
        raise ValueError(f"eval: --steps (num_inference_steps) must be >= 1, got {num_inference_steps}")
    cams, image_size = policy_cameras(policy)
    vdir = Path(video_dir) if video_dir else None
    if vdir is not None:
        vdir.mkdir(parents=True, exist_ok=True)
    jobs = [(task, arm, tuple(cams), image_size, seed + i, num_inference_steps,
             vdir / f"{task}_{arm}_seed{seed + i}_{{outcome}}.mp4" if vdir is not None and i < n_videos else None,
             video_size) for i in range(episodes)]
    result = EvalResult(arm, task, episodes, 0, 0.0, 0.0, 1.0, num_inference_steps=num_inference_steps,
                        n_action_steps=policy.n_action_steps)
    all_times: list[float] = []
    t_start = time.monotonic()
    make_env(task, arm, cameras=tuple(cams), image_size=image_size).close()  # bad arm/task: fail here, once
    bar = tqdm(total=episodes, desc=f"eval {arm}/{task}", disable=not progress, unit="ep")
    try:
        if workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            _WORKER.clear()
            _WORKER["policy"] = policy
            with ProcessPoolExecutor(min(workers, episodes), mp_context=mp.get_context("fork")) as pool:
                outcomes = pool.map(_worker_run, jobs)
                for job, out in zip(jobs, outcomes, strict=True):
                    _collect(result, all_times, job[4], out)
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(result.outcomes)}/{len(result.outcomes)}")
            _WORKER.clear()
        else:
            env = make_env(task, arm, seed=seed, cameras=tuple(cams), image_size=image_size)
            try:
                for job in jobs:
                    _collect(result, all_times, job[4], _episode(policy, env, job[4], num_inference_steps, job[6],
                                                                 video_size))
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(result.outcomes)}/{len(result.outcomes)}")
            finally:
                env.close()
    finally:
        bar.close()
    result.finish(all_times, t_start)
    return result


def _collect(result: EvalResult, all_times: list[float], ep_seed: int, out: tuple) -> None:
    ok, steps, score, times, video = out
    result.outcomes.append(bool(ok))
    result.seeds.append(ep_seed)
    result.episode_steps.append(int(steps))
    result.scores.append(score)
    all_times += times
    if video:
        result.videos.append(video)


def load_twin_policy(checkpoint: str | Path, arm: str | None = None, task: str | None = None, device: str = "cpu",
                     overrides: Sequence[str] = ()):
    """(deployable joint-space policy, arm, task) for rolling `checkpoint` out on a twin: arm and task default to
    the ones it was trained on. `overrides`: inference-time config fields (policies.checkpoint.INFERENCE_FIELDS;
    CheckpointError when one is not, or its value does not fit). ValueError for an end-effector checkpoint or
    one that names no arm/task."""
    from policies.checkpoint import action_space, load_deployable

    if action_space(checkpoint) == "eef":
        raise ValueError(f"{checkpoint}: an end-effector checkpoint; evaluate it with policies.evaluate_eef")
    policy = load_deployable(checkpoint, device=device, overrides=overrides)
    arm, task = arm or policy.shape_meta.arm, task or policy.shape_meta.task
    if not arm or not task:
        raise ValueError(f"{checkpoint}: checkpoint names no arm/task; pass --arm and --task")
    return policy, arm, task


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mimic eval", description="roll a checkpoint out on a twin task")
    ap.add_argument("checkpoint", help="checkpoint directory (e.g. <run_dir>/checkpoint)")
    ap.add_argument("--arm", default=None, help="twin arm (default: the arm the policy was trained on)")
    ap.add_argument("--task", default=None, help="twin task (default: the policy's training task)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--steps", type=int, default=None, help="num_inference_steps (default: the policy's)")
    ap.add_argument("--video-dir", default=None, help="write MP4s (push_t: and top-view PNGs) of the first --videos rollouts here")
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=None, help="chunks sampled per call, the one continuing the "
                    "last chunk kept (policy.chunk_candidates; default: the checkpoint's)")
    ap.add_argument("--action-steps", type=int, default=None, help="rows executed per prediction (default: the "
                    "checkpoint's n_action_steps)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an inference-time config field for this run, e.g. --set policy.gen.sampler=heun "
                    "(policies.checkpoint.INFERENCE_FIELDS)")
    ap.add_argument("--json", default=None, help="also write the result as JSON to this file")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 on a shared machine)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1, help="rollout processes (forked; one torch thread each)")
    args = ap.parse_args(argv)
    from policies.checkpoint import CheckpointError

    torch.set_num_threads(max(1, args.threads))
    try:
        overrides = list(args.set)
        if args.candidates is not None:
            overrides.append(f"policy.chunk_candidates={args.candidates}")
        if args.action_steps is not None:
            overrides.append(f"policy.n_action_steps={args.action_steps}")
        policy, arm, task = load_twin_policy(args.checkpoint, args.arm, args.task, args.device, overrides)
        res = evaluate(policy, arm, task, args.episodes, seed=args.seed, num_inference_steps=args.steps,
                       video_dir=args.video_dir, n_videos=args.videos, workers=args.workers)
    except (CheckpointError, ValueError, KeyError) as e:
        print(f"mimic eval: {e}", file=sys.stderr)
        return 2
    res.overrides = overrides
    print(res.summary())
    for v in res.videos:
        print(f"  video: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(res), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
