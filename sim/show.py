"""One scripted-expert episode written as scene | wrist frames: an .mp4 video or a .png strip of six moments.

Shared by `mimic sim show` (arm twins) and `mimic.sim.handheld.demo_video` (the free-floating gripper): both envs
render "scene" and "wrist" cameras and end an episode with terminated = success.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm


def write_expert_episode(
    env, expert, seed: int, size: tuple[int, int], out: Path, progress: str | None = None
) -> tuple[bool, int]:
    """Roll the expert out from `env.reset(seed)` and write `out` -> (success, frames written)."""
    import imageio.v3 as iio

    obs = env.reset(seed=seed)
    frames, ok = [], False
    for _ in tqdm(range(env.max_steps), desc=progress, unit="step", disable=progress is None):
        frames.append(np.concatenate([env.render("scene", size), env.render("wrist", size)], axis=1))
        obs, _, ok, trunc, _ = env.step(expert.act(obs))
        if ok or trunc:
            break
    frames.append(np.concatenate([env.render("scene", size), env.render("wrist", size)], axis=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        picks = np.linspace(0, len(frames) - 1, 6).round().astype(int)
        iio.imwrite(out, np.concatenate([frames[i] for i in picks], axis=0))
    else:
        iio.imwrite(out, np.stack(frames), fps=env.control_hz, codec="libx264")
    return bool(ok), len(frames)


def look_comparison(arm: str, task: str, seed: int, step: int, size: tuple[int, int], looks) -> np.ndarray:
    """One moment of the scripted expert's episode (`step` control steps after `env.reset(seed)`, physics
    being the same in every look) rendered in each of `looks`: rows scene / wrist, one column per look."""
    from mimic.sim.env import make_env
    from mimic.sim.expert import make_expert

    columns = []
    for look in looks:
        env = make_env(task, arm, cameras=(), look=look)
        expert = make_expert(env)
        obs = env.reset(seed=seed)
        expert.reset()
        for _ in range(step):
            obs, _, ok, trunc, _ = env.step(expert.act(obs))
            if ok or trunc:
                break
        columns.append(np.concatenate([env.render("scene", size), env.render("wrist", size)], axis=0))
        env.close()
    return np.concatenate(columns, axis=1)


def write_twin_pictures(out_dir: Path, size: tuple[int, int] = (240, 320)) -> list[Path]:
    """docs/twins: for each arm and task, the original look beside the lab look (scene above, wrist below),
    and the lab look with shadows for pick_place. Seeds and moments are fixed, so the pictures reproduce."""
    import imageio.v3 as iio

    from mimic.robots.specs import ARM_NAMES
    from mimic.sim.mjcf import LAB, LAB_SHADOWS, PLAIN

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for arm in ARM_NAMES:
        for task, step in (("pick_place", 30), ("push_t", 40)):
            path = out_dir / f"{arm}_{task}.png"
            iio.imwrite(path, look_comparison(arm, task, 0, step, size, (PLAIN, LAB)), optimize=True)
            written.append(path)
        path = out_dir / f"{arm}_pick_place_shadows.png"
        iio.imwrite(path, look_comparison(arm, "pick_place", 0, 30, size, (LAB_SHADOWS,)), optimize=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m mimic.sim.show", description="write the twins' look pictures (docs/twins.md)"
    )
    p.add_argument(
        "out_dir", nargs="?", default="docs/twins", help="folder for the PNGs (default docs/twins)"
    )
    args = p.parse_args(argv)
    for path in write_twin_pictures(Path(args.out_dir)):
        print(f"{path}: {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
