"""`mimic sim list|show|experts`: the twins' arms and tasks, an expert episode to look at, expert success tables.

- `mimic sim show <arm> <task> [--out file.mp4|png] [--seed N] [--size H W]`: one scripted-expert episode,
  scene and wrist camera side by side, rendered headless to an MP4 or a PNG strip of 6 moments.
- `mimic sim paths <arm> [--seed S] [--expert-seeds N] [--out paths.png]`: push_t from one start pose with N
  expert seeds, the TCP paths drawn over the T's start and goal outlines (top view): the multimodality.
- `mimic sim experts [--arms ...] [--tasks ...] [--episodes N] [--seed S]`: success rate (and mean episode
  length) of the scripted experts per arm and task, seeds S..S+N-1, printed as a table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mimic.robots.specs import ARM_NAMES  # noqa: E402
from mimic.sim.env import TASKS, make_env  # noqa: E402
from mimic.sim.expert import make_expert, run_expert_episode  # noqa: E402
from mimic.sim.show import write_expert_episode  # noqa: E402


def _show(arm: str, task: str, out: Path, seed: int, size: tuple[int, int]) -> int:
    env = make_env(task, arm, seed=seed, cameras=())
    try:
        ok, n = write_expert_episode(
            env, make_expert(env), seed, size, out, progress=f"{arm}/{task} seed {seed}"
        )
    finally:
        env.close()
    print(f"{out}: {n} frames, success={ok}")
    return 0


def expert_success(arm: str, task: str, seeds: range) -> tuple[float, float]:
    """(success rate, mean steps per episode) of the scripted expert over `seeds` (physics only, no cameras)."""
    env = make_env(task, arm, cameras=())
    expert = make_expert(env)
    ok, steps = 0, 0
    for s in tqdm(seeds, desc=f"{arm}/{task}", unit="ep", leave=False):
        success, n = run_expert_episode(env, expert, s)
        ok, steps = ok + success, steps + n
    return ok / len(seeds), steps / len(seeds)


def _experts(arms: list[str], tasks: list[str], episodes: int, seed: int) -> int:
    seeds = range(seed, seed + episodes)
    print(f"scripted expert success, seeds {seed}..{seed + episodes - 1}")
    print(f"{'arm':<8} {'task':<11} {'success':>8} {'mean steps':>11}")
    for arm in arms:
        for task in tasks:
            rate, steps = expert_success(arm, task, seeds)
            print(f"{arm:<8} {task:<11} {rate:>8.0%} {steps:>11.1f}", flush=True)
    return 0


def _paths(arm: str, seed: int, expert_seeds: int, out: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mimic.sim.tasks import push_t

    env = make_env("push_t", arm, cameras=())
    expert = make_expert(env)
    fig, ax = plt.subplots(figsize=(6, 6))
    obs = env.reset(seed=seed)
    for pose, color, label in (
        (obs["object_state"][:3], "k", "T at start"),
        (obs["object_state"][3:], "g", "goal"),
    ):
        ring = push_t.outline_world(pose)
        ax.plot(ring[:, 1], ring[:, 0], color=color, lw=2, label=label)
    for k in tqdm(range(expert_seeds), desc=f"{arm}/push_t seed {seed}", unit="demo"):
        obs, info, path = env.reset(seed=seed), {"success": False}, []
        expert.reset(seed=k)
        for _ in range(env.max_steps):
            obs, _, term, trunc, info = env.step(expert.act(obs))
            path.append(obs["robot0_eef_pos"][:2].copy())
            if term or trunc:
                break
        xy = np.array(path)
        ways = "".join({0: ".", 1: "L", -1: "R"}[w] for w in expert.route_sides)
        ax.plot(
            xy[:, 1],
            xy[:, 0],
            alpha=0.7,
            label=f"expert seed {k}: {ways} {'success' if info['success'] else 'failed'}",
        )
        print(
            f"expert seed {k}: ways round {ways} (. straight, L counter-clockwise, R clockwise), "
            f"{len(path)} steps, success={info['success']}"
        )
    ax.set(xlabel="y (m)", ylabel="x (m)", title=f"push_t on {arm}, env seed {seed}: TCP paths (top view)")
    ax.invert_xaxis()
    ax.set_aspect("equal")
    ax.legend(fontsize=7)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"{out}: {expert_seeds} demonstrations")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mimic sim", description="MuJoCo twins of the supported arms")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="arms and tasks")
    show = sub.add_parser("show", help="roll out the scripted expert and save a video or PNG strip")
    show.add_argument("arm", choices=ARM_NAMES)
    show.add_argument("task", choices=TASKS)
    show.add_argument("--out", type=Path, default=Path("sim_show.mp4"), help=".mp4 video or .png strip")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    paths = sub.add_parser(
        "paths", help="push_t: TCP paths of several expert seeds from one start pose (PNG)"
    )
    paths.add_argument("arm", choices=ARM_NAMES)
    paths.add_argument("--seed", type=int, default=4, help="env seed: the start pose")
    paths.add_argument("--expert-seeds", type=int, default=5)
    paths.add_argument("--out", type=Path, default=Path("push_t_paths.png"))
    ex = sub.add_parser("experts", help="scripted-expert success rate per arm and task")
    ex.add_argument("--arms", nargs="+", choices=ARM_NAMES, default=list(ARM_NAMES))
    ex.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    ex.add_argument("--episodes", type=int, default=100)
    ex.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.cmd == "list":
        print("arms: " + " ".join(ARM_NAMES))
        print("tasks: " + " ".join(TASKS))
        return 0
    try:
        return _run(a)
    except (ValueError, OSError) as e:  # a render size the twin refuses, an --out that cannot be written
        print(f"mimic sim {a.cmd}: error: {e}", file=sys.stderr)
        return 2


def _run(a: argparse.Namespace) -> int:
    """The chosen subcommand; bad arguments raise ValueError, and an --out under a file OSError when its folder is
    made, before any rollout; main prints either as one line."""
    if a.cmd == "paths":
        if a.out.suffix.lower() != ".png" or a.expert_seeds < 1:
            raise ValueError(f"--out {a.out} must be a .png and --expert-seeds at least 1")
        a.out.parent.mkdir(
            parents=True, exist_ok=True
        )  # an --out under a file fails here, before the rollouts
        return _paths(a.arm, a.seed, a.expert_seeds, a.out)
    if a.cmd == "experts":
        if a.episodes < 1:
            raise ValueError(f"--episodes {a.episodes}: need at least 1")
        return _experts(a.arms, a.tasks, a.episodes, a.seed)
    if a.out.suffix.lower() not in (".mp4", ".png"):
        raise ValueError(f"--out {a.out}: use a .mp4 or .png file name")
    a.out.parent.mkdir(parents=True, exist_ok=True)  # an --out under a file fails here, before the rollout
    return _show(a.arm, a.task, a.out, a.seed, tuple(a.size))
