"""Policy inference and training speed, all in one run so the ratios hold on a loaded machine.

- chunk latency at batch 1 (policy.predict: normalise, encode, sample, unnormalise) per generator and
  backbone for 1, 3, 10, 16, 100 steps, next to one bare denoiser forward (the floor);
- training samples/s per backbone with and without bf16 autocast;
- a visuomotor policy (2 cameras 96x96 + joints) at 1 step.
Weights are random: latency does not depend on them. torch uses 2 threads, as a robot laptop would.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from bench.common import BenchResult, percentiles, time_calls
from data.normalizer import Normalizer
from policies.config import PolicyConfig
from policies.policy import Policy, ShapeMeta

STATE = {"robot0_joint_pos": [7], "robot0_gripper_width": [1], "object_state": [10]}
ACTION_DIM = 8
STEPS = (1, 3, 10, 16, 100)


def make_policy(generator: str, backbone: str, obs_shapes: dict[str, list[int]] | None = None,
                image_keys: tuple[str, ...] = (), scheduler: str = "ddim") -> Policy:
    obs_shapes = obs_shapes or STATE
    cfg = PolicyConfig(obs_keys=list(obs_shapes), generator=generator, backbone=backbone)
    cfg.gen.scheduler = scheduler
    if generator == "consistency":
        cfg.gen.teacher = "(random weights: latency only)"
    rng = np.random.default_rng(0)
    arrays = {k: rng.normal(size=(64, *s)) for k, s in obs_shapes.items() if k not in image_keys}
    arrays["action"] = rng.normal(size=(64, ACTION_DIM))
    modes = {k: "minmax" for k in arrays} | {k: "identity" for k in image_keys}
    arrays |= {k: np.zeros((1, 1)) for k in image_keys}
    meta = ShapeMeta(obs_shapes=obs_shapes, action_dim=ACTION_DIM, image_keys=list(image_keys))
    return Policy(cfg, meta, Normalizer().fit(arrays, modes)).eval()


def obs_window(policy: Policy) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for k in policy.obs_keys:
        shape = (policy.n_obs_steps, *policy.shape_meta.obs_shapes[k])
        out[k] = rng.integers(0, 255, shape, dtype=np.uint8) if k in policy.image_keys else rng.normal(size=shape)
    return out


def bare_forward(policy: Policy):
    x = torch.randn(1, policy.horizon, policy.action_dim)
    t = torch.full((1,), 50.0)
    cond = torch.randn(1, policy.n_obs_steps, policy.encoder.feature_dim)

    def call() -> None:
        with torch.inference_mode():  # as Policy.predict samples
            policy.backbone(x, t, cond)
    return call


def train_rate(policy: Policy, bf16: bool, batch: int, repeats: int) -> float:
    policy.train()
    rng = np.random.default_rng(0)
    obs = {k: torch.from_numpy(rng.normal(size=(batch, policy.n_obs_steps, *policy.shape_meta.obs_shapes[k])))
           .float() for k in policy.obs_keys}
    data = {"obs": obs, "action": torch.randn(batch, policy.horizon, policy.action_dim)}
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = policy(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = time_calls(step, repeats, warmup=2)
    policy.eval()
    return batch / float(np.median(t))


def run(quick: bool) -> BenchResult:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    res = BenchResult(name="policies")
    reps = 6 if quick else 100
    bar = tqdm(total=2 * (1 + 4 * len(STEPS) + 1 + 2) + 2, desc="bench policies", unit="case")
    lat: dict[tuple[str, str, int], dict[str, float]] = {}  # (backbone, generator, steps) -> {"p50": ms, "p99": ms}
    train_sps: dict[tuple[str, str], float] = {}  # (backbone, "fp32" | "bf16") -> samples/s
    for backbone in ("unet", "transformer"):
        floor_policy = make_policy("flow", backbone)
        floor = percentiles(time_calls(bare_forward(floor_policy), reps * 4))
        n_params = sum(p.numel() for p in floor_policy.backbone.parameters())
        res.rows.append({"backbone": backbone, "generator": "bare forward", "steps": 1, "p50_ms": floor["p50"],
                         "p99_ms": floor["p99"], "params_M": round(n_params / 1e6, 2)})
        lat[(backbone, "floor", 1)] = floor
        bar.update(1)
        for generator in ("flow", "consistency", "edm", "diffusion"):
            policy = make_policy(generator, backbone)
            window = obs_window(policy)
            for steps in STEPS:
                # A 1-step chunk takes ~1.5 ms: as many calls as the floor, so its p99 is not one stray call.
                n = reps * 4 if steps == 1 else max(2, reps // (10 if steps >= 100 else 1))
                p = percentiles(time_calls(lambda policy=policy, steps=steps, window=window: policy.predict(window, steps), n,
                                           warmup=3 if steps == 1 else 1))
                bar.update(1)
                res.rows.append({"backbone": backbone, "generator": generator + ("/ddim" if generator == "diffusion"
                                                                                else ""),
                                 "steps": steps, "p50_ms": p["p50"], "p99_ms": p["p99"]})
                lat[(backbone, generator, steps)] = p
            if generator == "diffusion":
                ddpm = make_policy("diffusion", backbone, scheduler="ddpm")
                p = percentiles(time_calls(lambda ddpm=ddpm, window=window: ddpm.predict(window, 100), max(2, reps // 10), warmup=1))
                bar.update(1)
                res.rows.append({"backbone": backbone, "generator": "diffusion/ddpm", "steps": 100,
                                 "p50_ms": p["p50"], "p99_ms": p["p99"]})
        for name in ("consistency", "flow"):
            for q in ("p99", "p50"):
                res.ratios[f"{backbone}: {name}-1 {q} / bare forward {q}"] = (lat[(backbone, name, 1)][q]
                                                                             / lat[(backbone, "floor", 1)][q])
            res.ratios[f"{backbone}: ddim-16 p99 / {name}-1 p99"] = (lat[(backbone, "diffusion", 16)]["p99"]
                                                                   / lat[(backbone, name, 1)]["p99"])
        for bf16 in (False, True):
            sps = train_rate(make_policy("flow", backbone), bf16, 64 if quick else 256, 5 if quick else 20)
            res.rows.append({"backbone": backbone, "generator": "flow train", "steps": "bf16" if bf16 else "fp32",
                             "samples_per_s": round(sps)})
            train_sps[(backbone, "bf16" if bf16 else "fp32")] = sps
            bar.update(1)
        res.ratios[f"{backbone}: train bf16 / fp32 samples/s"] = train_sps[(backbone, "bf16")] / train_sps[
            (backbone, "fp32")]
    shapes = {"robot0_joint_pos": [7], "robot0_gripper_width": [1], "camera0_rgb": [96, 96, 3],
              "camera1_rgb": [96, 96, 3]}
    for generator in ("flow", "consistency"):
        vis = make_policy(generator, "unet", shapes, image_keys=("camera0_rgb", "camera1_rgb"))
        window = obs_window(vis)
        p = percentiles(time_calls(lambda vis=vis, window=window: vis.predict(window, 1), reps * 2))
        res.rows.append({"backbone": "unet+2cam resnet", "generator": generator, "steps": 1, "p50_ms": p["p50"],
                         "p99_ms": p["p99"], "params_M": round(sum(q.numel() for q in vis.parameters()) / 1e6, 2)})
        res.ratios[f"visuomotor {generator}-1 p99 ms (2 cams 96x96 + joints)"] = p["p99"]
        bar.update(1)
    bar.close()
    res.notes.append("predict() at batch 1 incl. normalisation and numpy<->torch; torch threads = 2; random weights")
    res.notes.append("state policy: obs 2 x 18 (joints, gripper, cube+goal), action 8, horizon 16; UNet dims "
                     "64-128-256; transformer d128 x 4 layers")
    return res
