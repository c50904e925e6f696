"""A synthetic store larger than a memory budget, and a training run under that budget (RLIMIT_AS).

The twin records ~10 frames a second, far too slowly to build a store of hundreds of MB in a test, so
`synthetic_store` writes smooth random frames straight through DatasetWriter (same schema, JPEG chunks,
atomic commits). `python -m tests.peers.big_store train ...` is the child a test or benchmark starts: it
imports everything, then caps its own address space at (what it already maps + `--headroom-mb`) and
trains, so the store's decoded size can be compared with the headroom it had.

    python -m tests.peers.big_store make /tmp/big.zarr --frames 8192 --hw 128
    python -m tests.peers.big_store train /tmp/big.zarr /tmp/run --headroom-mb 256 --streaming
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import numpy as np

IMAGE_KEY = "camera0_rgb"
JOINTS = 7


def synthetic_store(
    path: str | Path, frames: int, hw: int = 128, episode_len: int = 256, seed: int = 0
) -> int:
    """Write `frames` rows (episodes of `episode_len`) of a camera, joints and actions; returns decoded image MB."""
    from mimic.data.writer import DatasetWriter, StreamSpec

    streams = {
        IMAGE_KEY: StreamSpec((hw, hw, 3), "uint8", "image"),
        "robot0_joint_pos": StreamSpec((JOINTS,)),
        "action": StreamSpec((JOINTS + 1,)),
    }
    attrs = {"robot": "franka", "joint_names": [f"j{i}" for i in range(JOINTS)], "task": "synthetic"}
    w = DatasetWriter.create(path, 10.0, streams, attrs)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:hw, 0:hw] / hw
    t0 = 0.0
    try:
        for start in range(0, frames, episode_len):
            n = min(episode_len, frames - start)
            phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
            base = 127 + 100 * np.sin(6 * xx[None] + 4 * yy[None] + phase)
            img = np.repeat(base[..., None], 3, axis=-1).astype(np.uint8)
            q = np.cumsum(rng.normal(0, 0.01, (n, JOINTS)), axis=0)
            ts = t0 + np.arange(n) / 10.0
            ep = {
                IMAGE_KEY: img,
                "robot0_joint_pos": q,
                "action": np.concatenate([q, np.zeros((n, 1))], axis=1),
                "timestamp": ts,
            }
            ep.update({f"{k}_t": ts for k in streams})
            w.write_episodes([ep])
            t0 += n / 10.0 + 10.0
    finally:
        w.close()
    return frames * hw * hw * 3 // 2**20


def proc_status_mb(field: str) -> float:
    """A /proc/self/status memory field (VmSize, VmHWM, ...) in MB. VmHWM, not ru_maxrss, is the peak RSS:
    Linux carries ru_maxrss over from the parent across fork + exec, so a large parent inflates it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def train_under_limit(
    store: str, run_dir: str, headroom_mb: int, streaming: bool, cache_mb: int = 32, steps: int = 3
) -> dict:
    """Train `steps` tiny steps with the address space capped at current + headroom (0: uncapped); result as
    a dict with the peak RSS."""
    import torch

    from mimic.policies.config import load_train_config
    from mimic.workflows.train import train

    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False  # oneDNN reserves large scratch mappings that RLIMIT_AS counts
    cfg = load_train_config(
        None,
        [
            f"dataset={store}",
            f"run_dir={run_dir}",
            f"steps={steps}",
            "batch_size=8",
            "val_ratio=0",
            f"ckpt_every={steps}",
            "threads=1",
            "policy.horizon=8",
            "policy.n_action_steps=4",
            f"policy.obs_keys=[{IMAGE_KEY},robot0_joint_pos]",
            "policy.unet.down_dims=[16,32]",
            "policy.unet.time_embed_dim=16",
            "policy.image.width=4",
            "policy.image.feature_dim=16",
            "policy.image.num_keypoints=4",
            f"data.streaming={'true' if streaming else 'false'}",
            f"data.cache_mb={cache_mb}",
        ],
    )
    base = proc_status_mb("VmSize")
    if headroom_mb > 0:  # 0: no limit (a benchmark measuring peak RSS)
        limit = int((base + headroom_mb) * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = {"vm_before_mb": round(base, 1), "headroom_mb": headroom_mb, "streaming": streaming}
    try:
        train(cfg, progress=False)
        out["ok"] = True
    except (MemoryError, RuntimeError) as e:  # torch reports a failed allocation as a RuntimeError
        out["ok"] = False
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    out["peak_rss_mb"] = round(proc_status_mb("VmHWM"), 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("store")
    m.add_argument("--frames", type=int, default=8192)
    m.add_argument("--hw", type=int, default=128)
    t = sub.add_parser("train")
    t.add_argument("store")
    t.add_argument("run_dir")
    t.add_argument("--headroom-mb", type=int, default=256)
    t.add_argument("--cache-mb", type=int, default=32)
    t.add_argument("--steps", type=int, default=3)
    t.add_argument("--streaming", action="store_true")
    args = ap.parse_args()
    if args.cmd == "make":
        print(json.dumps({"decoded_mb": synthetic_store(args.store, args.frames, args.hw)}))
        return 0
    res = train_under_limit(
        args.store, args.run_dir, args.headroom_mb, args.streaming, args.cache_mb, args.steps
    )
    print(json.dumps(res), flush=True)
    return 0 if res["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
