"""`mimic sim list` and `mimic sim show <arm> <task> [--out file.mp4|png] [--seed N]` (expert rollout, headless)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from robots.specs import ARM_NAMES  # noqa: E402
from sim.env import TASKS, make_env  # noqa: E402
from sim.expert import make_expert  # noqa: E402


def _show(arm: str, task: str, out: Path, seed: int, size: tuple[int, int]) -> int:
    env = make_env(task, arm, seed=seed, cameras=())
    expert = make_expert(env)
    obs = env.reset(seed=seed)
    frames, info = [], {"success": False}
    for _ in tqdm(range(env.max_steps), desc=f"{arm}/{task} seed {seed}", unit="step"):
        frames.append(np.concatenate([env.render("scene", size), env.render("wrist", size)], axis=1))
        obs, _, term, trunc, info = env.step(expert.act(obs))
        if term or trunc:
            break
    frames.append(np.concatenate([env.render("scene", size), env.render("wrist", size)], axis=1))
    env.close()
    import imageio.v3 as iio

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        picks = np.linspace(0, len(frames) - 1, 6).round().astype(int)
        iio.imwrite(out, np.concatenate([frames[i] for i in picks], axis=0))
    else:
        iio.imwrite(out, np.stack(frames), fps=env.control_hz, codec="libx264")
    print(f"{out}: {len(frames)} frames, success={info['success']}")
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
    a = p.parse_args(argv)
    if a.cmd == "list":
        print("arms: " + " ".join(ARM_NAMES))
        print("tasks: " + " ".join(TASKS))
        return 0
    if a.out.suffix.lower() not in (".mp4", ".png"):
        p.error(f"--out {a.out}: use a .mp4 or .png file name")
    return _show(a.arm, a.task, a.out, a.seed, tuple(a.size))
