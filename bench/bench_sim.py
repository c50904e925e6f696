"""Twin throughput: physics steps/s per arm and task scene, render fps per camera and size, expert cost per step.

Physics runs with the arm holding its home pose (the T block / cube resting on the table: contacts included).
Rendering is one offscreen frame via EGL (shadows and reflections off, as the twin ships). The expert row is
the scripted expert's act() (push planning and IK) per 10 Hz control step, averaged over a real episode.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402

from bench.common import BenchResult, time_calls  # noqa: E402
from mimic.robots.specs import ARM_NAMES  # noqa: E402
from mimic.sim.env import make_env  # noqa: E402
from mimic.sim.expert import make_expert  # noqa: E402


def _expert_ms_per_step(arm: str, task: str, seed: int = 0) -> float:
    env = make_env(task, arm, cameras=())
    expert = make_expert(env)
    obs = env.reset(seed=seed)
    spent, steps = 0.0, 0
    for _ in range(env.max_steps):
        t0 = time.perf_counter()
        action = expert.act(obs)
        spent += time.perf_counter() - t0
        steps += 1
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            break
    return 1e3 * spent / steps


def run(quick: bool) -> BenchResult:
    res = BenchResult(name="sim")
    n_step = 500 if quick else 5000
    for arm in ARM_NAMES:
        for task in ("pick_place", "push_t"):
            env = make_env(task, arm, cameras=())
            env.reset(seed=0)
            t = time_calls(
                lambda env=env: mujoco.mj_step(env.model, env.data, nstep=100), repeats=max(n_step // 100, 3)
            )
            sps = 100 / float(t.mean())
            res.rows.append(
                {
                    "arm": arm,
                    "what": f"physics {task}",
                    "steps_per_s": round(sps),
                    "realtime_x": round(sps * env.model.opt.timestep, 1),
                }
            )
            env.close()
        env = make_env("push_t", arm, cameras=())
        env.reset(seed=0)
        for camera in ("scene", "wrist"):
            for size in ((96, 96), (240, 320)):
                env.render(camera, size)
                tr = time_calls(
                    lambda env=env, c=camera, s=size: env.render(c, s), repeats=20 if quick else 200
                )
                res.rows.append(
                    {
                        "arm": arm,
                        "what": f"render {camera} {size[0]}x{size[1]}",
                        "fps": round(1 / float(tr.mean()), 1),
                    }
                )
        env.close()
        res.rows.append(
            {
                "arm": arm,
                "what": "expert push_t act()",
                "ms_per_step": round(_expert_ms_per_step(arm, "push_t"), 2),
            }
        )
    res.notes.append(
        "physics timestep 2 ms (realtime_x = simulated seconds per wall second); "
        "renders via EGL, shadows off; one process on a shared machine"
    )
    return res
