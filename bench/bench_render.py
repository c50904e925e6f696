"""What the twins' looks cost: render fps per arm, camera and size for the plain scene (capsules, one light,
no shadows) against the same scene with the manufacturer meshes ("meshes") and the lab cell (meshes,
textures, three lights) with its key light's shadows off ("lab", what the task envs render) and on
("lab-shadows"), and the cost of compiling each scene.

All looks of one (arm, camera, size) are timed in interleaved rounds inside this one run, so their ratios
hold on a loaded machine where absolute fps drift. fps = 1 / median frame time of `env.render` (offscreen
EGL, the pick_place scene at its reset pose, one frame copied to numpy).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import BenchResult  # noqa: E402
from mimic.robots.specs import ARM_NAMES, get_spec  # noqa: E402
from mimic.sim.env import make_env  # noqa: E402
from mimic.sim.mjcf import LAB, LAB_SHADOWS, MESHES, PLAIN, SHADOW_MAP, build_model, scene_xml  # noqa: E402
from mimic.sim.visuals import available  # noqa: E402

LOOKS = (PLAIN, MESHES, LAB, LAB_SHADOWS)
SIZES = ((96, 96), (240, 320))
CAMERAS = ("scene", "wrist")


def _fps(envs: dict, camera: str, size: tuple[int, int], frames: int, rounds: int = 5) -> dict[str, float]:
    """Median-frame fps per look, the looks taking turns for `rounds` rounds of frames // rounds each."""
    times: dict[str, list[float]] = {name: [] for name in envs}
    for env in envs.values():
        env.render(camera, size)  # renderer and scene created outside the timing
    for _ in range(rounds):
        for name, env in envs.items():
            for _ in range(max(frames // rounds, 1)):
                t0 = time.perf_counter()
                env.render(camera, size)
                times[name].append(time.perf_counter() - t0)
    return {name: 1.0 / float(np.median(t)) for name, t in times.items()}


def _compile_s(arm: str, look) -> float:
    """One uncached compile of the pick_place-free scene (the meshes are what a look adds)."""
    xml = scene_xml(get_spec(arm), look=look)
    t0 = time.perf_counter()
    mujoco.MjModel.from_xml_string(xml)
    return time.perf_counter() - t0


def run(quick: bool) -> BenchResult:
    res = BenchResult(name="render")
    arms = ARM_NAMES[:1] if quick else ARM_NAMES
    frames = 20 if quick else 150
    ratios: dict[str, list[float]] = {}
    for arm in arms:
        envs = {look.name: make_env("pick_place", arm, cameras=(), look=look) for look in LOOKS}
        for env in envs.values():
            env.reset(seed=0)
        model = envs["lab"].model
        for camera in CAMERAS:
            for size in SIZES:
                fps = _fps(envs, camera, size, frames)
                row = {"arm": arm, "camera": camera, "size": f"{size[0]}x{size[1]}"}
                row.update({f"fps {name}": round(v, 1) for name, v in fps.items()})
                row["meshes / plain"] = round(fps["meshes"] / fps["plain"], 3)
                row["lab / plain"] = round(fps["lab"] / fps["plain"], 3)
                row["lab-shadows / plain"] = round(fps["lab-shadows"] / fps["plain"], 3)
                res.rows.append(row)
                for key in ("meshes", "lab", "lab-shadows"):
                    ratios.setdefault(f"{camera} {row['size']} fps {key} / plain", []).append(
                        fps[key] / fps["plain"]
                    )
        for env in envs.values():
            env.close()
        compile_plain, compile_lab = _compile_s(arm, PLAIN), _compile_s(arm, LAB)
        build_model(get_spec(arm), look=LAB)  # compiles and caches
        t0 = time.perf_counter()
        build_model(get_spec(arm), look=LAB)  # the cached model, copied
        copy_s = time.perf_counter() - t0
        res.rows.append(
            {
                "arm": arm,
                "camera": "(build)",
                "size": f"{model.nmesh} meshes, {model.nmeshface} faces",
                "compile plain ms": round(1e3 * compile_plain, 1),
                "compile lab ms": round(1e3 * compile_lab, 1),
                "cached lab build ms": round(1e3 * copy_s, 1),
            }
        )
    for key, values in ratios.items():
        res.ratios[f"{key} (geomean over {len(arms)} arms)"] = round(
            float(np.exp(np.mean(np.log(values)))), 3
        )
    if not all(available(a) for a in arms):
        res.notes.append("arm meshes not unpacked (make setup): the lab look rendered capsules")
    res.notes.append(
        f"offscreen EGL on this machine's renderer (llvmpipe where no GPU); key light shadow map {SHADOW_MAP}^2 in 'lab-shadows'; "
        "one process on a shared machine: trust the ratios more than the fps"
    )
    return res
