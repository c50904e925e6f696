"""Policy inference and training speed, all in one run so the ratios hold on a loaded machine.

- chunk latency at batch 1 (policy.predict: normalise, encode, sample, unnormalise) per generator and
  backbone for 1, 3, 10, 16, 100 steps, next to one bare denoiser forward (the floor);
- training samples/s per backbone with and without bf16 autocast;
- a visuomotor policy (2 cameras 96x96 + joints) at 1 step.
Weights are random: latency does not depend on them. torch uses 2 threads, as a robot laptop would.
Where torch sees a GPU the same cases run there too (rows and ratios tagged "cuda"): the CPU numbers are the
robot-laptop bar, the GPU ones what a workstation beside the arm gives. `python -m bench.run policies --device cpu`
keeps to the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from bench.common import BenchResult, percentiles, time_calls
from mimic.data.normalizer import Normalizer
from mimic.policies.config import PolicyConfig
from mimic.policies.policy import Policy, ShapeMeta

STATE = {"robot0_joint_pos": [7], "robot0_gripper_width": [1], "object_state": [10]}
ACTION_DIM = 8
STEPS = (1, 3, 10, 16, 100)


def make_policy(
    generator: str,
    backbone: str,
    obs_shapes: dict[str, list[int]] | None = None,
    image_keys: tuple[str, ...] = (),
    scheduler: str = "ddim",
    device: str = "cpu",
    action_dim: int = ACTION_DIM,
    down_dims: list[int] | None = None,
    time_embed_dim: int | None = None,
) -> Policy:
    """A policy with random weights (latency does not depend on them); UNet widths as given, else the default."""
    obs_shapes = obs_shapes or STATE
    cfg = PolicyConfig(obs_keys=list(obs_shapes), generator=generator, backbone=backbone)
    cfg.gen.scheduler = scheduler
    if down_dims is not None:
        cfg.unet.down_dims = list(down_dims)
    if time_embed_dim is not None:
        cfg.unet.time_embed_dim = time_embed_dim
    if generator == "consistency":
        cfg.gen.teacher = "(random weights: latency only)"
    rng = np.random.default_rng(0)
    arrays = {k: rng.normal(size=(64, *s)) for k, s in obs_shapes.items() if k not in image_keys}
    arrays["action"] = rng.normal(size=(64, action_dim))
    modes = {k: "minmax" for k in arrays} | {k: "identity" for k in image_keys}
    arrays |= {k: np.zeros((1, 1)) for k in image_keys}
    meta = ShapeMeta(obs_shapes=obs_shapes, action_dim=action_dim, image_keys=list(image_keys))
    return Policy(cfg, meta, Normalizer().fit(arrays, modes)).to(device).eval()


def obs_window(policy: Policy) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for k in policy.obs_keys:
        shape = (policy.n_obs_steps, *policy.shape_meta.obs_shapes[k])
        out[k] = (
            rng.integers(0, 255, shape, dtype=np.uint8) if k in policy.image_keys else rng.normal(size=shape)
        )
    return out


def synced(device: str):
    """Wait for the GPU's queued kernels, so a timed call ends when its work does (no-op on CPU)."""
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def bare_forward(policy: Policy):
    dev = policy.device
    x = torch.randn(1, policy.horizon, policy.action_dim, device=dev)
    t = torch.full((1,), 50.0, device=dev)
    cond = torch.randn(1, policy.n_obs_steps, policy.encoder.feature_dim, device=dev)
    sync = synced(dev.type)

    def call() -> None:
        with torch.inference_mode():  # as Policy.predict samples
            policy.backbone(x, t, cond)
        sync()

    return call


def train_rate(policy: Policy, bf16: bool, batch: int, repeats: int) -> float:
    policy.train()
    dev = policy.device
    rng = np.random.default_rng(0)
    obs = {
        k: torch.from_numpy(rng.normal(size=(batch, policy.n_obs_steps, *policy.shape_meta.obs_shapes[k])))
        .float()
        .to(dev)
        for k in policy.obs_keys
    }
    data = {"obs": obs, "action": torch.randn(batch, policy.horizon, policy.action_dim, device=dev)}
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    sync = synced(dev.type)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = policy(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()

    t = time_calls(step, repeats, warmup=2)
    policy.eval()
    return batch / float(np.median(t))


CASES_PER_DEVICE = 2 * (1 + 4 * len(STEPS) + 1 + 2) + 2


def devices(choice: str) -> list[str]:
    """ "auto": the CPU, and the GPU too where torch sees one; otherwise the one device named."""
    if choice == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"bench policies: --device {choice}: torch {torch.__version__} sees no GPU")
    return [choice]


def run(quick: bool, device: str = "auto") -> BenchResult:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    res = BenchResult(name="policies")
    devs = devices(device)
    bar = tqdm(total=CASES_PER_DEVICE * len(devs), desc="bench policies", unit="case")
    for dev in devs:
        measure(res, dev, 6 if quick else 100, quick, bar)
    bar.close()
    res.notes.append(
        "predict() at batch 1 incl. normalisation and numpy<->torch; torch threads = 2; random weights"
    )
    res.notes.append(
        "state policy: obs 2 x 18 (joints, gripper, cube+goal), action 8, horizon 16; UNet dims "
        "64-128-256; transformer d128 x 4 layers"
    )
    if "cpu" not in devs or len(devs) > 1:
        res.notes.append(
            "rows carry their device; ratios on a GPU start with its name (cuda), CPU ones with none"
        )
    return res


def measure(res: BenchResult, dev: str, reps: int, quick: bool, bar: tqdm) -> None:
    """Every case on one device, appended to res (rows tagged with the device, ratios prefixed off the CPU)."""
    tag = "" if dev == "cpu" else f"{dev} "
    lat: dict[
        tuple[str, str, int], dict[str, float]
    ] = {}  # (backbone, generator, steps) -> {"p50": ms, "p99": ms}
    train_sps: dict[tuple[str, str], float] = {}  # (backbone, "fp32" | "bf16") -> samples/s
    for backbone in ("unet", "transformer"):
        floor_policy = make_policy("flow", backbone, device=dev)
        floor = percentiles(time_calls(bare_forward(floor_policy), reps * 4))
        n_params = sum(p.numel() for p in floor_policy.backbone.parameters())
        res.rows.append(
            {
                "device": dev,
                "backbone": backbone,
                "generator": "bare forward",
                "steps": 1,
                "p50_ms": floor["p50"],
                "p99_ms": floor["p99"],
                "params_M": round(n_params / 1e6, 2),
            }
        )
        lat[(backbone, "floor", 1)] = floor
        bar.update(1)
        for generator in ("flow", "consistency", "edm", "diffusion"):
            policy = make_policy(generator, backbone, device=dev)
            window = obs_window(policy)
            for steps in STEPS:
                # A 1-step chunk takes ~1.5 ms: as many calls as the floor, so its p99 is not one stray call.
                n = reps * 4 if steps == 1 else max(2, reps // (10 if steps >= 100 else 1))
                p = percentiles(
                    time_calls(
                        lambda policy=policy, steps=steps, window=window: policy.predict(window, steps),
                        n,
                        warmup=3 if steps == 1 else 1,
                    )
                )
                bar.update(1)
                res.rows.append(
                    {
                        "device": dev,
                        "backbone": backbone,
                        "generator": generator + ("/ddim" if generator == "diffusion" else ""),
                        "steps": steps,
                        "p50_ms": p["p50"],
                        "p99_ms": p["p99"],
                    }
                )
                lat[(backbone, generator, steps)] = p
            if generator == "diffusion":
                ddpm = make_policy("diffusion", backbone, scheduler="ddpm", device=dev)
                p = percentiles(
                    time_calls(
                        lambda ddpm=ddpm, window=window: ddpm.predict(window, 100),
                        max(2, reps // 10),
                        warmup=1,
                    )
                )
                bar.update(1)
                res.rows.append(
                    {
                        "device": dev,
                        "backbone": backbone,
                        "generator": "diffusion/ddpm",
                        "steps": 100,
                        "p50_ms": p["p50"],
                        "p99_ms": p["p99"],
                    }
                )
        for name in ("consistency", "flow"):
            for q in ("p99", "p50"):
                res.ratios[f"{tag}{backbone}: {name}-1 {q} / bare forward {q}"] = (
                    lat[(backbone, name, 1)][q] / lat[(backbone, "floor", 1)][q]
                )
            res.ratios[f"{tag}{backbone}: ddim-16 p99 / {name}-1 p99"] = (
                lat[(backbone, "diffusion", 16)]["p99"] / lat[(backbone, name, 1)]["p99"]
            )
        for bf16 in (False, True):
            sps = train_rate(
                make_policy("flow", backbone, device=dev), bf16, 64 if quick else 256, 5 if quick else 20
            )
            res.rows.append(
                {
                    "device": dev,
                    "backbone": backbone,
                    "generator": "flow train",
                    "steps": "bf16" if bf16 else "fp32",
                    "samples_per_s": round(sps),
                }
            )
            train_sps[(backbone, "bf16" if bf16 else "fp32")] = sps
            bar.update(1)
        res.ratios[f"{tag}{backbone}: train bf16 / fp32 samples/s"] = (
            train_sps[(backbone, "bf16")] / train_sps[(backbone, "fp32")]
        )
    shapes = {
        "robot0_joint_pos": [7],
        "robot0_gripper_width": [1],
        "camera0_rgb": [96, 96, 3],
        "camera1_rgb": [96, 96, 3],
    }
    for generator in ("flow", "consistency"):
        vis = make_policy(generator, "unet", shapes, image_keys=("camera0_rgb", "camera1_rgb"), device=dev)
        vis.feature_cache = None  # one window repeated would hit the frame cache: time the full encode
        window = obs_window(vis)
        p = percentiles(time_calls(lambda vis=vis, window=window: vis.predict(window, 1), reps * 2))
        res.rows.append(
            {
                "device": dev,
                "backbone": "unet+2cam resnet",
                "generator": generator,
                "steps": 1,
                "p50_ms": p["p50"],
                "p99_ms": p["p99"],
                "params_M": round(sum(q.numel() for q in vis.parameters()) / 1e6, 2),
            }
        )
        res.ratios[f"{tag}visuomotor {generator}-1 p99 ms (2 cams 96x96 + joints)"] = p["p99"]
        bar.update(1)
