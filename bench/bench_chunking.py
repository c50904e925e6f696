"""What real-time chunking's guidance adds to a chunk, all in one run so the ratios hold on a loaded machine.

An `rtc` chunk is sampled with inpainting guidance (mimic.policies.generators.guidance): every denoising step
takes one vector-Jacobian product through the network on top of its forward. Measured at batch 1 through
`Policy.predict` with and without a prefix (8 frozen rows of a 16-row chunk, the soft mask over the rest), for 1
and 10 flow steps, on the visuomotor policy (2 cameras 96x96 + joints, the encoder runs once per chunk either way)
and on the state policy. Random weights: latency does not depend on them. torch uses 2 threads.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from bench.bench_policies import make_policy, obs_window
from bench.common import BenchResult, percentiles, time_calls
from mimic.policies.realtime import ChunkPrefix, soft_mask

STEPS = (1, 10)
VISUOMOTOR = {
    "robot0_joint_pos": [7],
    "robot0_gripper_width": [1],
    "camera0_rgb": [96, 96, 3],
    "camera1_rgb": [96, 96, 3],
}


def prefix_for(policy, window: dict[str, np.ndarray], frozen: int = 4) -> ChunkPrefix:
    """A prefix continuing the policy's own unguided chunk (as an executing chunk would be), `frozen` rows fixed."""
    rows = policy.predict(window, 1)
    overlap = policy.horizon - int(policy.n_action_steps)
    return ChunkPrefix(rows, soft_mask(policy.horizon, frozen, overlap), frozen)


def run(quick: bool) -> BenchResult:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    res = BenchResult(name="chunking")
    reps = 6 if quick else 60
    cases = [
        ("visuomotor (2 cams 96x96 + joints)", VISUOMOTOR, ("camera0_rgb", "camera1_rgb")),
        ("state", None, ()),
    ]
    bar = tqdm(total=len(cases) * len(STEPS) * 2, desc="bench chunking", unit="case")
    for name, shapes, images in cases:
        policy = make_policy("flow", "unet", shapes, image_keys=images)
        window = obs_window(policy)
        prefix = prefix_for(policy, window)
        for steps in STEPS:
            n = reps if steps == 1 else max(3, reps // 4)
            plain = percentiles(time_calls(lambda s=steps, p=policy, w=window: p.predict(w, s), n, warmup=2))
            bar.update(1)
            guided = percentiles(
                time_calls(
                    lambda s=steps, p=policy, w=window, x=prefix: p.predict(w, s, prefix=x), n, warmup=2
                )
            )
            bar.update(1)
            for kind, p in (("unguided", plain), ("rtc guided", guided)):
                res.rows.append(
                    {"policy": name, "steps": steps, "chunk": kind, "p50_ms": p["p50"], "p99_ms": p["p99"]}
                )
            res.ratios[f"{name}: rtc / unguided p50, {steps} step(s)"] = guided["p50"] / plain["p50"]
            res.ratios[f"{name}: rtc added ms p50, {steps} step(s)"] = guided["p50"] - plain["p50"]
    bar.close()
    res.notes.append("flow policy, UNet 64-128-256, horizon 16, 8 executed rows; 4 frozen rows + soft mask")
    res.notes.append("predict() at batch 1 incl. normalisation and numpy<->torch; torch threads = 2")
    return res
