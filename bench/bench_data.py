"""Dataset numbers: real-time writer throughput and training-window sampling speed.

Writer: two 640x480 cameras at 30 Hz and joints at 500 Hz are appended on their real-time schedule
(one thread, deadline-paced) into a 30 Hz grid. A frame counts as dropped if its append starts more
than one camera period late, since a camera driver with a one-frame buffer would have overwritten it.
Sampler: WindowDataset windows/s with two 96x96 cameras, JPEG-decoding from zarr vs the decoded memmap
cache, measured in the same run.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import BenchResult, percentiles
from mimic.data.torch_dataset import WindowDataset
from mimic.data.writer import DatasetWriter, StreamSpec


def _frame(h: int, w: int, i: int, rng: np.random.Generator) -> np.ndarray:
    """A camera-like image: smooth gradient that moves, plus sensor noise (JPEG-realistic)."""
    y, x = np.mgrid[0:h, 0:w]
    base = (np.sin((x + 4 * i) / 37.0) * 60 + np.cos(y / 23.0) * 50 + 128)[..., None] + np.array([0, 20, -20])
    return np.clip(base + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)


def bench_writer(root: Path, seconds: float) -> dict:
    rng = np.random.default_rng(0)
    frames = [_frame(480, 640, i, rng) for i in range(8)]
    streams = {
        "robot0_joint_pos": StreamSpec((7,), tolerance_s=0.01),
        "camera0_rgb": StreamSpec((480, 640, 3), "uint8", "image", tolerance_s=0.02),
        "camera1_rgb": StreamSpec((480, 640, 3), "uint8", "image", tolerance_s=0.02),
    }
    w = DatasetWriter.create(
        root / "rt.zarr", 30.0, streams, {"robot": "franka", "joint_names": list("abcdefg")}
    )
    events = [(i / 500, "robot0_joint_pos", i) for i in range(int(seconds * 500))]
    events += [
        (i / 30 + 0.001, k, i) for k in ("camera0_rgb", "camera1_rgb") for i in range(int(seconds * 30))
    ]
    events.sort()
    lags = {"joints": [], "camera": []}
    cpu0 = time.process_time()
    w.begin_episode()
    t0 = time.perf_counter() + 0.05
    for t, key, i in events:
        while (now := time.perf_counter() - t0) < t:
            time.sleep(min(0.002, t - now))
        lag = time.perf_counter() - t0 - t
        if key == "robot0_joint_pos":
            lags["joints"].append(lag)
            w.append(key, t, np.sin(t + np.arange(7)))
        else:
            lags["camera"].append(lag)
            w.append(key, t, frames[i % len(frames)])
    rows = w.end_episode()
    cpu = time.process_time() - cpu0
    cam = np.asarray(lags["camera"])
    size = sum(f.stat().st_size for f in (root / "rt.zarr").rglob("*") if f.is_file())
    return {
        "rows": rows,
        "expected_rows": int(seconds * 30),
        "frames": cam.size,
        "dropped": int((cam > 1 / 30).sum()),
        "cam_lag": percentiles(cam),
        "joint_lag": percentiles(lags["joints"]),
        "cpu_per_s": cpu / seconds,
        "mb_per_s": size / seconds / 1e6,
    }


def make_sampling_store(path: Path, episodes: int, steps: int) -> None:
    rng = np.random.default_rng(1)
    streams = {
        "robot0_joint_pos": StreamSpec((7,)),
        "action": StreamSpec((8,)),
        "camera0_rgb": StreamSpec((96, 96, 3), "uint8", "image"),
        "camera1_rgb": StreamSpec((96, 96, 3), "uint8", "image"),
    }
    w = DatasetWriter.create(path, 10.0, streams, {"robot": "franka", "joint_names": list("abcdefg")})
    for e in range(episodes):
        ts = np.arange(steps) / 10.0
        rows = {
            "robot0_joint_pos": np.sin(ts[:, None] + np.arange(7)),
            "action": np.cos(ts[:, None] + np.arange(8)),
            "camera0_rgb": np.stack([_frame(96, 96, i + e, rng) for i in range(steps)]),
            "camera1_rgb": np.stack([_frame(96, 96, 2 * i, rng) for i in range(steps)]),
            "timestamp": ts,
        }
        rows.update({f"{k}_t": ts for k in streams})
        w.write_episode(rows)


def bench_sampler(root: Path, episodes: int, steps: int, samples: int) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    make_sampling_store(root / "s.zarr", episodes, steps)
    out = []
    kw = dict(obs_keys=["robot0_joint_pos", "camera0_rgb", "camera1_rgb"], n_obs_steps=2, horizon=16)
    t0 = time.perf_counter()
    cached = WindowDataset(root / "s.zarr", cache_dir=root / "cache", **kw)
    build = time.perf_counter() - t0
    direct = WindowDataset(root / "s.zarr", **kw)
    idx = np.random.default_rng(0).integers(0, len(direct), samples)
    for name, ds in (("direct (zarr JPEG decode)", direct), ("cached (decoded memmap)", cached)):
        ds[int(idx[0])]
        t0 = time.perf_counter()
        for i in idx:
            ds[int(i)]
        dt = time.perf_counter() - t0
        out.append({"measure": f"windows/s {name}", "value": samples / dt, "windows": len(ds)})
    out.append({"measure": "cache build (s)", "value": build, "windows": len(cached)})
    out.append(
        {
            "measure": "policy training samples/s (visuomotor, 2 cams 96x96 + joints)",
            "value": policy_train_rate(cached, batch=32, repeats=3 if samples < 500 else 8),
        }
    )
    return out


def policy_train_rate(ds, batch: int, repeats: int) -> float:
    """Samples/s of one training step (forward + backward + AdamW) of the small visuomotor policy on real windows.

    The sampler must outrun this: the ratio windows/s : samples/s says whether data loading can starve
    training. The policy is the one `bench_policies` times (the default UNet, ResNet-18-style encoders).
    """
    import torch
    from torch.utils.data import default_collate

    from bench.bench_policies import make_policy

    shapes = {"robot0_joint_pos": [7], "camera0_rgb": [96, 96, 3], "camera1_rgb": [96, 96, 3]}
    policy = make_policy("flow", "unet", shapes, image_keys=("camera0_rgb", "camera1_rgb")).train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    idx = np.random.default_rng(1).integers(0, len(ds), batch)
    data = default_collate([ds[int(i)] for i in idx])
    data["action"] = torch.randn(batch, policy.horizon, policy.action_dim)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        policy(data).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch * repeats / (time.perf_counter() - t0)


def run(quick: bool) -> BenchResult:
    res = BenchResult("data")
    root = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        wr = bench_writer(root, 3.0 if quick else 10.0)
        res.rows.append(
            {"measure": "writer rows written / expected", "value": f"{wr['rows']}/{wr['expected_rows']}"}
        )
        res.rows.append(
            {"measure": "camera frames dropped (>1 period late)", "value": f"{wr['dropped']}/{wr['frames']}"}
        )
        res.rows.append({"measure": "camera append lag (ms)", **wr["cam_lag"]})
        res.rows.append({"measure": "joint append lag (ms)", **wr["joint_lag"]})
        res.rows.append({"measure": "writer CPU s per s recorded", "value": round(wr["cpu_per_s"], 3)})
        res.rows.append({"measure": "store MB per s recorded (JPEG q90)", "value": round(wr["mb_per_s"], 2)})
        rows = bench_sampler(root, 4 if quick else 20, 100, 200 if quick else 1000)
        res.rows.extend(rows)
        res.ratios["sampler cached/direct"] = rows[1]["value"] / rows[0]["value"]
        res.ratios["sampler cached windows/s / policy training samples/s"] = (
            rows[1]["value"] / rows[3]["value"]
        )
        res.ratios["frames_dropped"] = float(wr["dropped"])
        res.notes.append(
            "writer: 2x640x480 @30 Hz + 7 joints @500 Hz into a 30 Hz grid, real time, one caller thread + the writer's background thread"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return res
