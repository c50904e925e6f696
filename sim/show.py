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
