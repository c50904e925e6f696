"""Inference engines side by side: 1-step chunk latency at batch 1 per engine, next to the fp32 forward.

Three networks: diffusion_policy's Push-T low-dim UNet (down dims 256-512-1024, time embedding 256: 65.8M
parameters, obs 2 x 20, action 2, horizon 16), the same shapes at Mimic's default UNet size (64-128-256), and the
visuomotor policy (2 cameras 96x96 + joints, default UNet, ResNet-18-style trunks). Each is a 1-step consistency
policy with random weights (latency does not depend on them). For each network every engine
(mimic.policies.engines) is built first, then all timers run in interleaved rounds, so a load that comes and goes
on a shared machine falls on every engine alike and the ratios hold; absolute times do not. Accuracy: the largest
|chunk - fp32 chunk| from the same observations and noise, in normalised action units, over 8 windows.
torch and ONNX Runtime use 2 threads, as a robot laptop would, then 1.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.bench_policies import make_policy as bench_policy
from bench.bench_policies import obs_window
from bench.common import BenchResult, percentiles
from mimic.policies.engines import ENGINES, ONNX_ENGINES, apply_engine, chunk_deviation, example_obs
from mimic.policies.export import graph_files, write_graphs
from mimic.policies.policy import Policy

PUSH_T = {"obs": [20]}
VISUOMOTOR = {
    "robot0_joint_pos": [7],
    "robot0_gripper_width": [1],
    "camera0_rgb": [96, 96, 3],
    "camera1_rgb": [96, 96, 3],
}
NETWORKS = {  # name -> (observation shapes, action dim, UNet down dims, time embedding dim)
    "dp-size unet": (PUSH_T, 2, [256, 512, 1024], 256),
    "default unet": (PUSH_T, 2, [64, 128, 256], 128),
    "visuomotor": (VISUOMOTOR, 8, [64, 128, 256], 128),
}
# 2 threads as a robot laptop gives a policy; 1 as a loop sharing its cores should (on a loaded machine 2 OpenMP
# threads can stall each other far below 1).
THREADS = (2, 1)


def make_policy(shapes: dict[str, list[int]], action_dim: int, dims: list[int], time_dim: int) -> Policy:
    """A 1-step consistency policy of these shapes and UNet widths (bench_policies.make_policy, seeded)."""
    torch.manual_seed(0)
    images = tuple(k for k in shapes if k.startswith("camera"))
    return bench_policy(
        "consistency", "unet", shapes, images, action_dim=action_dim, down_dims=dims, time_embed_dim=time_dim
    )


def forward_calls(policy: Policy) -> dict[str, object]:
    """The fp32 floor: one bare denoiser forward; with cameras also encoder + denoiser (what 1 step must run)."""
    obs = example_obs(policy)
    x = torch.randn(1, policy.horizon, policy.action_dim)
    t = torch.full((1,), 50.0)
    with torch.inference_mode():
        nobs = policy.encoder.augment(policy.normalize_obs(obs), train=False)
        cond = policy.encoder(nobs)

    def bare() -> None:
        with torch.inference_mode():
            policy.backbone(x, t, cond)

    def with_encoder() -> None:
        with torch.inference_mode():
            policy.backbone(x, t, policy.encoder(nobs))

    return {"fp32 forward": bare} | ({"fp32 encoder + forward": with_encoder} if policy.image_keys else {})


def build(policy: Policy, engine: str, tmp: Path) -> tuple[Policy, float]:
    """`policy` on `engine` (ONNX ones exported into `tmp` first) and the seconds that took (export, compile)."""
    t0 = time.perf_counter()
    files = None
    if engine in ONNX_ENGINES:
        out = tmp / engine
        files = graph_files(out, write_graphs(policy, out, engine))
    return apply_engine(copy.deepcopy(policy), engine, files, check=False), time.perf_counter() - t0


def interleaved(timers: dict[str, object], rounds: int, per_round: int) -> dict[str, np.ndarray]:
    """Every timer's calls in `rounds` alternating rounds (one warm-up call each first)."""
    samples: dict[str, list[float]] = {name: [] for name in timers}
    for fn in timers.values():
        fn()
    for _ in range(rounds):
        for name, fn in timers.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return {k: np.asarray(v) for k, v in samples.items()}


def run(quick: bool) -> BenchResult:
    res = BenchResult(name="inference")
    engines = [e for e in ENGINES if not (quick and e == "compiled")]
    rounds, per_round = (4, 3) if quick else (10, 10)
    bar = tqdm(total=len(THREADS) * len(NETWORKS) * (len(engines) + 1), desc="bench inference", unit="step")
    with tempfile.TemporaryDirectory() as tmp:
        for threads in THREADS:
            torch.set_num_threads(threads)  # ONNX Runtime sessions take torch's count when they are built
            for name, spec in NETWORKS.items():
                measure(res, name, make_policy(*spec), engines, threads, rounds, per_round, Path(tmp), bar)
    bar.close()
    res.notes.append(
        "batch 1, policy.predict (normalise, encode, 1 consistency step, unnormalise); random weights; timers "
        "interleaved in rounds within each network and thread count; torch and ONNX Runtime get the same threads"
    )
    res.notes.append(
        "max_dev: largest |chunk - fp32 chunk|, normalised actions, same observations and noise, 8 windows; "
        "prep_s: export (onnx) or compile (compiled) plus the warm-up chunk"
    )
    res.notes.append("absolute times drift with the load of a shared machine: compare ratios within this run")
    if quick:
        res.notes.append("--quick leaves out the compiled engine (its compile takes minutes on 2 cores)")
    return res


def measure(
    res: BenchResult,
    name: str,
    ref: Policy,
    engines: list[str],
    threads: int,
    rounds: int,
    per_round: int,
    tmp: Path,
    bar: tqdm,
) -> None:
    """One network at one thread count: every engine built, then timed interleaved with the fp32 floor."""
    params = sum(p.numel() for p in ref.backbone.parameters()) / 1e6
    obs = obs_window(ref)
    timers = forward_calls(ref)
    built: dict[str, Policy] = {}
    prep: dict[str, float] = {}
    for engine in engines:
        built[engine], prep[engine] = build(ref, engine, tmp / f"{name.replace(' ', '_')}_{threads}")
        timers[engine] = lambda p=built[engine], obs=obs: p.predict(obs, 1)
        bar.update(1)
    lat = {k: percentiles(v) for k, v in interleaved(timers, rounds, per_round).items()}
    bar.update(1)
    tag = f"{name} @{threads}t"
    # The floor a 1-step chunk is held to: one fp32 forward of everything it must run (the encoder too, with cameras).
    floor = "fp32 encoder + forward" if ref.image_keys else "fp32 forward"
    for key in [k for k in timers if k.startswith("fp32")]:
        res.rows.append(_row(name, threads, key, lat[key], params_M=round(params, 2)))
    for engine in engines:
        dev = chunk_deviation(ref, built[engine], 1, seeds=range(8), batch=1)
        extra = {"max_dev": float(f"{dev:.2g}"), "prep_s": round(prep[engine], 1)}
        res.rows.append(_row(name, threads, f"{engine} 1-step chunk", lat[engine], **extra))
        for q in ("p50", "p99"):
            res.ratios[f"{tag}: {engine} 1-step {q} / {floor} {q}"] = lat[engine][q] / lat[floor][q]
        if ref.image_keys:
            res.ratios[f"{tag}: {engine} 1-step p99 ms"] = lat[engine]["p99"]


def _row(network: str, threads: int, what: str, p: dict[str, float], **extra: object) -> dict[str, object]:
    return {
        "network": network,
        "threads": threads,
        "path": what,
        "p50_ms": p["p50"],
        "p99_ms": p["p99"],
        **extra,
    }
