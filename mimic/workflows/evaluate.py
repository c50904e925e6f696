"""`mimic eval <checkpoint> --arm A --task T --episodes N [--action-steps K] [--video-dir D]`: roll a policy out
on the twin.

Plain Python, no ROS: sim.make_env stepped at its control rate with receding-horizon execution. Every
n_action_steps the policy sees the last n_obs_steps observations and the rows
[n_obs_steps - 1, n_obs_steps - 1 + n_action_steps) of its chunk are executed (diffusion_policy's
convention, the one the policy node uses). Evaluation seeds default to 100000+ so scenes are never
ones the demonstrations were recorded on (mimic.workflows.record_expert uses 0, 1, ...). With --video-dir, the first --videos
rollouts are written as MP4s (scene and wrist cameras); push_t ones also as a top-view PNG of the TCP path
over the block's poses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mimic.policies.engines import ENGINES
from mimic.policies.realtime import ChunkingConfig, add_chunking_args, chunking_from_args
from mimic.robots.motion import MotionSamples
from mimic.sim.env import CAMERA_KEYS, make_env
from mimic.workflows.eval_result import DEFAULT_SEED, EvalResult
from mimic.workflows.evaluate_eef import ARMS, STARTS, evaluate_eef, plot_results
from mimic.workflows.rollout import Episode, rollout

KEY_TO_CAMERA = {v: k for k, v in CAMERA_KEYS.items()}


def _episode(
    policy,
    env,
    ep_seed: int,
    num_inference_steps: int | None,
    video: Path | None,
    video_size: tuple[int, int],
    chunking: ChunkingConfig | None = None,
) -> tuple[Episode, str | None]:
    seen: list[dict[str, np.ndarray]] = []
    top_view = video is not None and env.task == "push_t"
    ep = rollout(
        policy,
        env,
        ep_seed,
        num_inference_steps,
        video_size if video is not None else None,
        seen.append if top_view else None,
        chunking,
    )
    out = None
    if video is not None:
        import imageio.v3 as iio

        out = str(video.with_name(video.name.format(outcome="success" if ep.success else "fail")))
        iio.imwrite(out, np.stack(ep.frames), fps=env.control_hz, codec="libx264")
        if top_view:
            push_t_top_view(
                seen,
                Path(out).with_suffix(".png"),
                f"seed {ep_seed}: {'success' if ep.success else 'failed'}, score {ep.score:.2f}, {ep.steps} steps",
            )
    ep.frames = []
    return ep, out


def push_t_top_view(observations: list[dict[str, np.ndarray]], out: Path, title: str) -> None:
    """PNG of a push_t rollout seen from above: the TCP's path coloured by time over the T every 2 s and the goal.

    Where a video shows what happened, this shows where: a block knocked away while the pusher travels, or a
    pusher dithering in one place, reads at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mimic.sim.tasks.push_t import outline_world

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


def _worker_run(job: tuple) -> tuple[Episode, str | None]:
    task, arm, cams, image_size, ep_seed, steps, video, video_size, chunking = job
    if "env" not in _WORKER:
        torch.set_num_threads(1)
        _WORKER["env"] = make_env(task, arm, seed=ep_seed, cameras=cams, image_size=image_size)
    return _episode(_WORKER["policy"], _WORKER["env"], ep_seed, steps, video, video_size, chunking)


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


def evaluate(
    policy,
    arm: str,
    task: str,
    episodes: int,
    seed: int = DEFAULT_SEED,
    num_inference_steps: int | None = None,
    video_dir: str | Path | None = None,
    n_videos: int = 3,
    video_size: tuple[int, int] = (192, 256),
    progress: bool = True,
    workers: int = 1,
    start: str = "handheld",
    chunking: ChunkingConfig | None = None,
    rig_lag_s: float = 0.0,
    rig_ik: str | None = None,
) -> EvalResult:
    """Roll `policy` out for `episodes` seeded episodes (seed, seed+1, ...); MP4s of the first n_videos.

    A policy whose `action_space` is "eef" runs through the end-effector controller (mimic.workflows.evaluate_eef,
    pick_place only, from `start`); every other one through joint targets. workers > 1 fans the episodes out over
    forked processes (each with its own env and one torch thread). `chunking`: how chunks continue, with what
    inference delay (mimic.workflows.rollout; default sync, no delay). `rig_lag_s`: a two-gripper policy on the
    handheld rig with its hands lagging the rows, `rig_ik` with its rows through that arm's IK first
    (mimic.workflows.bimanual_eval).
    """
    chunking = chunking or ChunkingConfig()
    if getattr(policy, "action_space", "joint") == "eef":
        if chunking != ChunkingConfig():
            raise ValueError(
                "eval: --chunking and --inference-delay-s apply to joint policies, not end-effector ones"
            )
        if task != "pick_place":
            raise ValueError(f"eval: an end-effector policy is evaluated on pick_place, not {task!r}")
        return evaluate_eef(
            policy,
            arm,
            episodes,
            seed=seed,
            start=start,
            num_inference_steps=num_inference_steps,
            video_dir=video_dir,
            n_videos=n_videos,
            video_size=video_size,
            progress=progress,
            rig_lag_s=rig_lag_s,
            rig_ik=rig_ik,
        )
    if rig_lag_s or rig_ik:
        raise ValueError(
            "eval: --rig-lag-s and --rig-ik apply to a two-gripper end-effector policy on --arm handheld"
        )
    if episodes < 1:
        raise ValueError(f"eval: episodes must be >= 1, got {episodes}")
    if num_inference_steps is not None and num_inference_steps < 1:
        raise ValueError(f"eval: --steps (num_inference_steps) must be >= 1, got {num_inference_steps}")
    cams, image_size = policy_cameras(policy)
    vdir = Path(video_dir) if video_dir else None
    if vdir is not None:
        vdir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (
            task,
            arm,
            tuple(cams),
            image_size,
            seed + i,
            num_inference_steps,
            vdir / f"{task}_{arm}_seed{seed + i}_{{outcome}}.mp4"
            if vdir is not None and i < n_videos
            else None,
            video_size,
            chunking,
        )
        for i in range(episodes)
    ]
    result = EvalResult(
        arm,
        task,
        episodes,
        0,
        0.0,
        0.0,
        1.0,
        num_inference_steps=num_inference_steps,
        n_action_steps=policy.n_action_steps,
        chunking=chunking.strategy,
        inference_delay_s=str(chunking.delay),
        control_hz=float(policy.control_hz),
    )
    all_times: list[float] = []
    motion = MotionSamples()
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
                    _collect(result, all_times, motion, job[4], out)
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(result.outcomes)}/{len(result.outcomes)}")
            _WORKER.clear()
        else:
            env = make_env(task, arm, seed=seed, cameras=tuple(cams), image_size=image_size)
            try:
                for job in jobs:
                    _collect(
                        result,
                        all_times,
                        motion,
                        job[4],
                        _episode(policy, env, job[4], num_inference_steps, job[6], video_size, chunking),
                    )
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(result.outcomes)}/{len(result.outcomes)}")
            finally:
                env.close()
    finally:
        bar.close()
    result.motion = motion.summary().as_dict()
    result.finish(all_times, t_start)
    return result


def _collect(
    result: EvalResult,
    all_times: list[float],
    motion: MotionSamples,
    ep_seed: int,
    out: tuple[Episode, str | None],
) -> None:
    ep, video = out
    result.outcomes.append(ep.success)
    result.seeds.append(ep_seed)
    result.episode_steps.append(ep.steps)
    result.scores.append(ep.score)
    all_times += ep.inference_s
    motion.add(np.stack(ep.joints), np.asarray(ep.source), 1.0 / result.control_hz)
    if video:
        result.videos.append(video)


def load_twin_policy(
    checkpoint: str | Path,
    arm: str | None = None,
    task: str | None = None,
    device: str = "cpu",
    overrides: Sequence[str] = (),
    engine: str = "torch",
):
    """(deployable policy, arm, task) for rolling `checkpoint` out on a twin: arm and task default to the ones it
    was trained on (an end-effector policy trained on handheld demos: "all" arm twins, pick_place).
    `overrides`: inference-time config fields (mimic.policies.checkpoint.INFERENCE_FIELDS; CheckpointError when one
    is not, or its value does not fit). ValueError for a checkpoint that names no arm/task."""
    from mimic.policies.checkpoint import load_deployable

    policy = load_deployable(checkpoint, device=device, overrides=overrides, engine=engine)
    trained_arm = policy.shape_meta.arm
    arm = arm or ("all" if trained_arm == "handheld" else trained_arm)
    task = task or policy.shape_meta.task
    if not arm or not task:
        raise ValueError(f"{checkpoint}: checkpoint names no arm/task; pass --arm and --task")
    return policy, arm, task


def check_outputs(json_path: str | None, video_dir: str | None) -> None:
    """Check where --json and --video-dir write before any rollout: a path that cannot be written would
    otherwise fail only after every episode ran, and the results would be lost."""
    from mimic.data.staging import check_output_dir, check_output_file

    if json_path:
        check_output_file("--json", json_path)
    if video_dir:
        check_output_dir("--video-dir", video_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mimic eval", description="roll a checkpoint out on a twin task")
    ap.add_argument("checkpoint", help="checkpoint directory (e.g. <run_dir>/checkpoint)")
    ap.add_argument(
        "--arm",
        default=None,
        help=f"twin arm, or all ({', '.join(ARMS)}); default: the arm the policy "
        "was trained on (all for one trained on handheld demos)",
    )
    ap.add_argument("--task", default=None, help="twin task (default: the policy's training task)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--steps", type=int, default=None, help="num_inference_steps (default: the policy's)")
    ap.add_argument(
        "--start",
        default="handheld",
        choices=STARTS,
        help="end-effector policies: where the TCP "
        "starts (a pose drawn like the handheld demos' starts, or the arm's home)",
    )
    ap.add_argument(
        "--video-dir",
        default=None,
        help="write MP4s (push_t: and top-view PNGs) of the first --videos rollouts here",
    )
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument(
        "--rig-lag-s",
        type=float,
        default=0.0,
        help="two-gripper policies on --arm handheld: the hands follow the rows through a first-order lag "
        "of this time constant, as arm servos do (0: rows executed as they are)",
    )
    ap.add_argument(
        "--rig-ik",
        default=None,
        choices=ARMS,
        help="two-gripper policies on --arm handheld: every row first passes through this arm's IK (arm i at "
        "its two-arm base) and the hand goes to the pose the solution reaches",
    )
    ap.add_argument(
        "--candidates",
        type=int,
        default=None,
        help="chunks sampled per call, the one continuing the "
        "last chunk kept (policy.chunk_candidates; default: the checkpoint's)",
    )
    ap.add_argument(
        "--action-steps",
        type=int,
        default=None,
        help="rows executed per prediction (default: the checkpoint's n_action_steps)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an inference-time config field for this run, e.g. --set policy.gen.sampler=heun "
        "(mimic.policies.checkpoint.INFERENCE_FIELDS)",
    )
    ap.add_argument(
        "--json",
        default=None,
        help="also write the result as JSON to this file (a list with --arm all; "
        "and a PNG of the rates beside it)",
    )
    add_chunking_args(ap)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 on a shared machine)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--engine",
        default="torch",
        choices=ENGINES,
        help="how the denoiser and encoder run (mimic.policies.engines; onnx ones need `mimic export` first)",
    )
    ap.add_argument(
        "--workers", type=int, default=1, help="rollout processes (forked; one torch thread each)"
    )
    args = ap.parse_args(argv)
    from mimic.policies.checkpoint import CheckpointError

    torch.set_num_threads(max(1, args.threads))
    results: list[EvalResult] = []
    try:
        overrides = list(args.set)
        if args.candidates is not None:
            overrides.append(f"policy.chunk_candidates={args.candidates}")
        if args.action_steps is not None:
            overrides.append(f"policy.n_action_steps={args.action_steps}")
        chunking = chunking_from_args(args)
        check_outputs(args.json, args.video_dir)
        policy, arm, task = load_twin_policy(
            args.checkpoint, args.arm, args.task, args.device, overrides, engine=args.engine
        )
        for one in ARMS if arm == "all" else (arm,):
            res = evaluate(
                policy,
                one,
                task,
                args.episodes,
                seed=args.seed,
                num_inference_steps=args.steps,
                video_dir=args.video_dir,
                n_videos=args.videos,
                workers=args.workers,
                start=args.start,
                chunking=chunking,
                rig_lag_s=args.rig_lag_s,
                rig_ik=args.rig_ik,
            )
            res.overrides = overrides
            results.append(res)
            print(res.summary(), flush=True)
            for v in res.videos:
                print(f"  video: {v}")
    except (CheckpointError, ValueError, KeyError, RuntimeError) as e:
        print(f"mimic eval: {e}", file=sys.stderr)
        return 2
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(asdict(results[0]) if len(results) == 1 else [asdict(r) for r in results], indent=2)
        )
        if len(results) > 1:
            plot_results(results, out.with_suffix(".png"), f"{Path(args.checkpoint).parent.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
