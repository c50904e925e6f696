"""Twin throughput: physics steps/s per arm (pick_place scene, arm holding home) and render fps per size."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402

from bench.common import BenchResult, time_calls  # noqa: E402
from robots.specs import ARM_NAMES  # noqa: E402
from sim.env import make_env  # noqa: E402


def run(quick: bool) -> BenchResult:
    res = BenchResult(name="sim")
    n_step = 500 if quick else 5000
    for arm in ARM_NAMES:
        env = make_env("pick_place", arm, cameras=())
        env.reset(seed=0)
        t = time_calls(lambda env=env: mujoco.mj_step(env.model, env.data, nstep=100), repeats=max(n_step // 100, 3))
        sps = 100 / float(t.mean())
        res.rows.append({"arm": arm, "what": "physics", "steps_per_s": round(sps), "realtime_x":
                         round(sps * env.model.opt.timestep, 1)})
        for size in ((96, 96), (240, 320)):
            env.render("scene", size)
            tr = time_calls(lambda env=env, size=size: env.render("scene", size), repeats=20 if quick else 200)
            res.rows.append({"arm": arm, "what": f"render {size[0]}x{size[1]}", "fps": round(1 / float(tr.mean()), 1)})
        env.close()
    res.notes.append("physics timestep 2 ms; render is one scene-camera frame via EGL, shadows off")
    return res
