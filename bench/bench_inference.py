"""Inference engines side by side: 1-step chunk latency at batch 1 per engine, next to the fp32 forward.

Three networks: diffusion_policy's Push-T low-dim UNet (down dims 256-512-1024, time embedding 256: 65.8M
parameters, obs 2 x 20, action 2, horizon 16), the same shapes at Mimic's default UNet size (64-128-256), and the
visuomotor policy (2 cameras 96x96 + joints, default UNet, ResNet-18-style trunks). Each is a 1-step consistency
policy with random weights (latency does not depend on them). For each network every engine
(mimic.policies.engines) is built first, then all timers run in interleaved rounds, so a load that comes and goes
on a shared machine falls on every engine alike and the ratios hold; absolute times do not. Accuracy: the largest
|chunk - fp32 chunk| from the same observations and noise, in normalised action units, over 8 windows.
torch and ONNX Runtime use 2 threads, as a robot laptop would, then 1.

Those rows encode every frame of the window at every call (the feature cache off). The visuomotor policy is
also timed with the per-frame feature cache (mimic.policies.feature_cache) in a deployment's steady state: before
each timed chunk, untimed, `prepare` encodes the frame of step t-1 (as a deploy loop does in the control period
before a chunk is due), so the chunk at step t encodes one new frame per camera; every call brings new frames.
Its rows say "+cache"; `cache_dev` is the largest |cached chunk - uncached chunk| of the same engine from the same
observations and noise (asserted within engines.CACHE_TOLERANCE: float rounding for fp32 trunks), and the "prepare" rows time that untimed step apart.
On 2 or more threads the ONNX engines encode the cameras' new frames side by side (engines.OnnxEncoder, `lanes` in
the +cache row); the "+cache, trunks in turn" rows time the same steady state with the trunks one after the other
(each with every thread, as before), built from the same graphs and timed in the same rounds.

python -m bench.run inference                       # every network, engine and thread count
python -m bench.bench_inference --networks visuomotor --engines onnx torch   # a narrower run, same tables
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tqdm import tqdm

from bench.bench_policies import make_policy as bench_policy
from bench.bench_policies import obs_window
from bench.common import BenchResult, percentiles
from mimic.policies.engines import (
    CACHE_TOLERANCE,
    ENGINES,
    ONNX_ENGINES,
    EngineFiles,
    apply_engine,
    chunk_deviation,
    example_obs,
    normalized_chunk,
)
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
T = TypeVar("T")
GOAL_P99_MS = 10.0  # visuomotor 1-step chunk, 2 threads (docs/inference.md)


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


def export(policy: Policy, engine: str, out: Path) -> EngineFiles | None:
    """`policy`'s graphs for an ONNX `engine`, written into `out` (None for torch engines, which run the modules).
    Exported once per engine: the trunks side by side or in turn is a choice made when the engine is built."""
    if engine not in ONNX_ENGINES:
        return None
    return graph_files(out, write_graphs(policy, out, engine))


def build(policy: Policy, engine: str, files: EngineFiles | None, concurrent_trunks: bool = True) -> Policy:
    """A copy of `policy` on `engine` (ONNX ones from `files`, as `export` wrote them), warmed up.
    `concurrent_trunks=False`: an ONNX engine's camera trunks in turn (engines.apply_engine)."""
    return apply_engine(
        copy.deepcopy(policy), engine, files, check=False, concurrent_trunks=concurrent_trunks
    )


def lanes(policy: Policy) -> int:
    """How many cameras' trunks `policy`'s encoder runs at once (1: in turn; torch engines always)."""
    return int(getattr(policy.encoder, "lanes", 1))


class SteadyState:
    """A cached policy's chunk in a deployment's steady state. Each call: untimed `setup` prepares the frame of step
    t-1 (new frames each call, as a camera gives them), then the timed call predicts on the window [t-1, t], whose
    step-t frames are new: one encode per camera on the chunk's path. `prepare_s` keeps setup's own times."""

    def __init__(self, policy: Policy, window: dict[str, np.ndarray], seed: int = 2) -> None:
        self.policy, self.window = policy, window
        self.rng = np.random.default_rng(seed)
        self.prepare_s: list[float] = []
        self.current = window

    def _frames(self, k: str) -> np.ndarray:
        return self.rng.integers(0, 255, self.window[k].shape, dtype=np.uint8)

    def setup(self) -> None:
        win = dict(self.window) | {k: self._frames(k) for k in self.policy.image_keys}
        t0 = time.perf_counter()
        self.policy.prepare({k: win[k][:-1] for k in self.policy.image_keys})  # steps up to t-1
        self.prepare_s.append(time.perf_counter() - t0)
        self.current = win

    def __call__(self) -> None:
        self.policy.predict(self.current, 1)


def interleaved(timers: dict[str, object], rounds: int, per_round: int) -> dict[str, np.ndarray]:
    """Every timer's calls in `rounds` alternating rounds (one warm-up call each first); a timer with a `setup`
    method has it run, untimed, before each call."""
    samples: dict[str, list[float]] = {name: [] for name in timers}
    for fn in timers.values():
        getattr(fn, "setup", lambda: None)()
        fn()
    for _ in range(rounds):
        for name, fn in timers.items():
            setup = getattr(fn, "setup", None)
            for _ in range(per_round):
                if setup is not None:
                    setup()
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return {k: np.asarray(v) for k, v in samples.items()}


def run(
    quick: bool,
    networks: tuple[str, ...] = tuple(NETWORKS),
    engines: tuple[str, ...] = ENGINES,
    threads: tuple[int, ...] = THREADS,
) -> BenchResult:
    res = BenchResult(name="inference")
    engines = tuple(e for e in engines if not (quick and e == "compiled"))
    rounds, per_round = (4, 3) if quick else (10, 10)
    bar = tqdm(total=len(threads) * len(networks) * (len(engines) + 1), desc="bench inference", unit="step")
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        for n_threads in threads:
            torch.set_num_threads(n_threads)  # ONNX Runtime sessions take torch's count when they are built
            for name in networks:
                policy = make_policy(*NETWORKS[name])
                measure(res, name, policy, list(engines), n_threads, rounds, per_round, Path(tmp), bar)
    bar.close()
    load.append(os.getloadavg())
    res.notes.append(
        "load average (1/5/15 min) at start {:.2f}/{:.2f}/{:.2f}, at end {:.2f}/{:.2f}/{:.2f} on {} cores".format(
            *load[0], *load[1], os.cpu_count()
        )
    )
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
    steady: dict[str, SteadyState] = {}
    in_turn: dict[
        str, str
    ] = {}  # engine -> its timer with the camera trunks in turn, where it has them side by side
    for engine in engines:
        t0 = time.perf_counter()
        files = export(ref, engine, tmp / f"{name.replace(' ', '_')}_{threads}" / engine)
        built[engine] = build(ref, engine, files)
        prep[engine] = time.perf_counter() - t0
        timers[engine] = lambda p=built[engine], obs=obs: uncached(p, lambda: p.predict(obs, 1))
        if ref.image_keys:
            steady[engine] = timers[f"{engine} +cache"] = SteadyState(built[engine], obs)
        if ref.image_keys and lanes(built[engine]) > 1:
            key = in_turn[engine] = f"{engine} +cache, trunks in turn"
            steady[key] = timers[key] = SteadyState(build(ref, engine, files, concurrent_trunks=False), obs)
        bar.update(1)
    lat = {k: percentiles(v) for k, v in interleaved(timers, rounds, per_round).items()}
    bar.update(1)
    tag = f"{name} @{threads}t"
    # The floor a 1-step chunk is held to: one fp32 forward of everything it must run (the encoder too, with cameras).
    floor = "fp32 encoder + forward" if ref.image_keys else "fp32 forward"
    for key in [k for k in timers if k.startswith("fp32")]:
        res.rows.append(_row(name, threads, key, lat[key], params_M=round(params, 2)))
    for engine in engines:
        dev = uncached(
            built[engine], lambda e=engine: chunk_deviation(ref, built[e], 1, seeds=range(8), batch=1)
        )
        extra = {"max_dev": float(f"{dev:.2g}"), "prep_s": round(prep[engine], 1)}
        res.rows.append(_row(name, threads, f"{engine} 1-step chunk", lat[engine], **extra))
        for q in ("p50", "p99"):
            res.ratios[f"{tag}: {engine} 1-step {q} / {floor} {q}"] = lat[engine][q] / lat[floor][q]
        if not ref.image_keys:
            continue
        res.ratios[f"{tag}: {engine} 1-step p99 ms"] = lat[engine]["p99"]
        cached = f"{engine} +cache"
        cache_dev = cached_vs_uncached(built[engine])
        if cache_dev > CACHE_TOLERANCE[engine]:
            raise AssertionError(f"{tag}: {cached} chunk differs from uncached by {cache_dev:.3g}")
        dev = chunk_deviation(ref, built[engine], 1, seeds=range(8), batch=1)
        row = _row(name, threads, f"{cached} 1-step chunk", lat[cached], max_dev=float(f"{dev:.2g}"))
        res.rows.append(row | {"cache_dev": cache_dev, "lanes": lanes(built[engine])})
        res.rows.append(
            _row(name, threads, f"{engine} prepare (untimed above)", percentiles(steady[engine].prepare_s))
        )
        if engine in in_turn:
            turn = in_turn[engine]
            res.rows.append(_row(name, threads, f"{turn} 1-step chunk", lat[turn], lanes=1))
            res.rows.append(
                _row(name, threads, f"{turn}: prepare (untimed above)", percentiles(steady[turn].prepare_s))
            )
            for q in ("p50", "p99"):
                res.ratios[f"{tag}: {cached} 1-step {q}, trunks side by side / in turn"] = (
                    lat[cached][q] / lat[turn][q]
                )
        for q in ("p50", "p99"):
            res.ratios[f"{tag}: {cached} 1-step {q} / {floor} {q}"] = lat[cached][q] / lat[floor][q]
            res.ratios[f"{tag}: {cached} 1-step {q} / uncached {q}"] = lat[cached][q] / lat[engine][q]
        res.ratios[f"{tag}: {cached} 1-step p99 ms"] = lat[cached]["p99"]
        if threads == 2:
            met = "met" if lat[cached]["p99"] <= GOAL_P99_MS else "not met"
            res.notes.append(
                f"{tag}: {cached} p99 {lat[cached]['p99']:.1f} ms: goal <= {GOAL_P99_MS} ms {met}"
            )


def uncached(policy: Policy, fn: Callable[[], T]) -> T:
    """`fn()` with `policy`'s feature cache off: every frame of the window encoded, as before the cache."""
    cache, policy.feature_cache = policy.feature_cache, None
    try:
        return fn()
    finally:
        policy.feature_cache = cache


def cached_vs_uncached(policy: Policy, windows: int = 8) -> float:
    """Largest |chunk with the cache - chunk without| (normalised actions) from the same observations and noise,
    over `windows` steady-state windows: the step t-1 frames prepared, the step t ones new."""
    state = SteadyState(policy, obs_window(policy), seed=7)
    worst = 0.0
    for seed in range(windows):
        state.setup()
        obs = policy.obs_to_tensors(state.current)
        a = normalized_chunk(policy, obs, 1, seed)
        b = uncached(policy, lambda obs=obs, seed=seed: normalized_chunk(policy, obs, 1, seed))
        worst = max(worst, float((a - b).abs().max()))
    return worst


def _row(network: str, threads: int, what: str, p: dict[str, float], **extra: object) -> dict[str, object]:
    return {
        "network": network,
        "threads": threads,
        "path": what,
        "p50_ms": p["p50"],
        "p99_ms": p["p99"],
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    """A narrower run than `python -m bench.run inference`: some networks, engines or thread counts; the same
    tables, written to bench/results/inference.json as bench.run does."""
    import dataclasses
    import json

    from rich.console import Console

    from bench.common import machine_info
    from bench.run import RESULTS, print_result

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    ap.add_argument("--threads", nargs="+", type=int, default=list(THREADS))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.quick, tuple(args.networks), tuple(args.engines), tuple(args.threads))
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), "quick": args.quick, "device": "cpu", **dataclasses.asdict(res)}
    (RESULTS / f"{res.name}.json").write_text(json.dumps(payload, indent=2))
    print_result(Console(), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
