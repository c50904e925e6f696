"""Object storage and streaming training: windows/s from an S3-protocol server vs a local store, and the
peak RSS of streaming training on a store several times larger than that RSS.

The S3 server is moto on 127.0.0.1 (tests.peers.s3_server): it measures the request path (s3fs, zarr's
FsspecStore, one HTTP GET per chunk) without network latency, so a cloud bucket is slower per request;
the chunk LRU and the on-disk cache of decoded chunks are what hide that after the first epoch.
Windows: StreamingBatches (two obs steps of one 128x128 camera + joints) with a cold 8 MB LRU, so every
batch fetches and decodes whole chunks (64 frames each) for its random windows, then with a warm 512 MB
LRU (after one pass), vs WindowBatches holding the whole local store in RAM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import BenchResult
from tests.peers.big_store import IMAGE_KEY, synthetic_store

REPO = Path(__file__).resolve().parents[1]


def _windows_per_s(batches, n_batches: int, batch_size: int = 32) -> float:
    rng = np.random.default_rng(0)
    batches.batch(rng.integers(0, len(batches), batch_size))  # warm: event loop, first chunk
    t0 = time.perf_counter()
    for _ in range(n_batches):
        batches.batch(rng.integers(0, len(batches), batch_size))
    return n_batches * batch_size / (time.perf_counter() - t0)


def bench_windows(root: Path, frames: int, n_batches: int) -> list[dict]:
    import fsspec

    from mimic.data.torch_dataset import WindowDataset
    from mimic.policies.data import WindowBatches
    from mimic.policies.streaming import StreamingBatches
    from tests.peers.s3_server import S3Server

    local = root / "win.zarr"
    synthetic_store(local, frames, hw=128)
    server = S3Server().start()
    old_env = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    rows = []
    try:
        server.create_bucket("bench")
        fs = fsspec.filesystem("s3")
        fs.clear_instance_cache()
        fs = fsspec.filesystem("s3")
        fs.put(str(local), "bench/win.zarr", recursive=True)
        kw = dict(obs_keys=[IMAGE_KEY, "robot0_joint_pos"], n_obs_steps=2, horizon=8, val_ratio=0.0)
        for where, url in (("local", str(local)), ("s3 (moto, 127.0.0.1)", "s3://bench/win.zarr")):
            w = WindowDataset(url, **kw)
            sb = StreamingBatches(w, cache_mb=8)
            rows.append(
                {
                    "source": where,
                    "reader": "streaming, 8 MB LRU",
                    "windows_per_s": _windows_per_s(sb, n_batches),
                    "chunks_fetched": sb.chunks_fetched,
                }
            )
            warm = StreamingBatches(w, cache_mb=512)
            warm.batch(np.arange(len(warm)))  # one pass: every chunk decoded into the LRU
            rows.append(
                {
                    "source": where,
                    "reader": "streaming, 512 MB LRU, warm",
                    "windows_per_s": _windows_per_s(warm, n_batches),
                    "chunks_fetched": warm.chunks_fetched,
                }
            )
            if where == "local":
                t0 = time.perf_counter()
                wb = WindowBatches(w)
                load_s = time.perf_counter() - t0
                rows.append(
                    {
                        "source": where,
                        "reader": f"in RAM (load {load_s:.1f} s)",
                        "windows_per_s": _windows_per_s(wb, n_batches),
                        "chunks_fetched": 0,
                    }
                )
    finally:
        server.stop()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rows


def bench_peak_rss(root: Path, frames: int, steps: int) -> dict:
    store = root / "big.zarr"
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}
    make = [sys.executable, "-m", "tests.peers.big_store", "make", str(store), "--frames", str(frames)]
    made = subprocess.run(
        make, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=1800, check=True
    )
    decoded_mb = json.loads(made.stdout.strip().splitlines()[-1])["decoded_mb"]
    args = [sys.executable, "-m", "tests.peers.big_store", "train", str(store), str(root / "run")]
    args += ["--headroom-mb", "0", "--streaming", "--steps", str(steps)]
    out = subprocess.run(args, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=1800)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {"store_decoded_mb": decoded_mb, "steps": steps, **res}


def run(quick: bool = False) -> BenchResult:
    result = BenchResult("storage")
    with tempfile.TemporaryDirectory(prefix="bench_storage_") as tmp:
        root = Path(tmp)
        result.rows += bench_windows(root, frames=1024 if quick else 4096, n_batches=10 if quick else 40)
        rss = bench_peak_rss(root, frames=8192 if quick else 53248, steps=3 if quick else 20)
    local = next(
        r["windows_per_s"] for r in result.rows if r["source"] == "local" and "stream" in r["reader"]
    )
    s3 = next(r["windows_per_s"] for r in result.rows if r["source"].startswith("s3"))
    result.ratios["s3_over_local_streaming_windows_per_s"] = s3 / local
    result.ratios["store_decoded_mb_over_peak_rss_mb"] = rss["store_decoded_mb"] / rss["peak_rss_mb"]
    result.rows.append(
        {
            "source": "local",
            "reader": f"streaming training, {rss['steps']} steps",
            "store_decoded_mb": rss["store_decoded_mb"],
            "peak_rss_mb": rss["peak_rss_mb"],
            "ok": rss["ok"],
        }
    )
    result.notes.append("peak RSS: VmHWM of the training process, imports (torch, zarr, mujoco) included")
    return result
