"""`mimic record <config.yaml> | <out.zarr> --arm A --task T ...`: scripted demonstrations on a twin.

Recording is its own stage, before `mimic train`: the config's `record:` section says what to record
into its `dataset`. An arm twin (`record.arm`: franka, ur5e, xarm7) runs the task's scripted expert
(mimic.sim.record); `record.arm: handheld` runs scripted handheld pick-place demos through the handheld
capture (mimic.teleop.handheld) with one more stream, the object tracker (`object_state`, the same
layout and key as the arm twins' /objects/state), because the handheld store alone carries no object
state and an eef_relative policy observes state, not images. A dataset that already exists is left as
it is, so a chain of stages can be run again and continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mimic.data.dataset import DatasetError
from mimic.data.storage import locate
from mimic.data.writer import StreamSpec
from mimic.policies.config import ConfigError, RecordConfig, load_train_config
from mimic.teleop.handheld import HandheldCapture, HandheldCaptureConfig
from mimic.workflows.record_expert import record_expert_dataset_stats

OBJECT_KEY = "object_state"
BIMANUAL_ARM = (
    "handheld_bimanual"  # record.arm of two-gripper handheld demos (mimic.workflows.bimanual_record)
)


class ObjectTrackedCapture(HandheldCapture):
    """HandheldCapture with `object_state` [n] from an object tracker (UMI records no objects; a twin
    tracker, or mocap markers on hardware, does)."""

    OBJECT_DIM = 10  # pick_place: cube xyz, cube quat wxyz, goal xyz (mimic.sim.env layout)

    @staticmethod
    def streams(config: HandheldCaptureConfig) -> dict[str, StreamSpec]:
        s = HandheldCapture.streams(config)
        # a 10 Hz tracker: the nearest sample is at most half a period from a grid time
        s[OBJECT_KEY] = StreamSpec((ObjectTrackedCapture.OBJECT_DIM,), tolerance_s=0.06)
        return s

    def on_objects(self, t_capture: float, state: np.ndarray) -> None:
        x = np.asarray(state, float).reshape(-1)
        if x.shape != (self.OBJECT_DIM,) or not np.all(np.isfinite(x)):
            raise ValueError(f"handheld: object_state must be {self.OBJECT_DIM} finite values, got {x.shape}")
        with self._lock:
            self._check_open("object_state")
            self.writer.append(OBJECT_KEY, float(t_capture), x)


def record_handheld(
    path: str | Path,
    episodes: int,
    seed: int = 0,
    image_size: tuple[int, int] = (96, 96),
    progress: bool = True,
) -> dict[str, Any]:
    """Scripted handheld pick-place demos on the twin (mimic.teleop.handheld.record_twin's loop, no injected
    latency) with the object tracker stream; only successful demos are committed."""
    from mimic.sim.handheld import HandheldEnv, HandheldExpert
    from mimic.teleop.handheld import RAW_STREAMS, TwinStreamLatency, _arrivals

    if episodes < 1:
        raise ValueError(f"record_handheld: episodes must be >= 1, got {episodes}")
    env = HandheldEnv(seed=seed, image_size=tuple(image_size), pose_hz=100.0, camera_hz=30.0)
    expert = HandheldExpert(env)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    attrs = {
        "camera_mount_tcp_cam": env.nominal_camera_mount.tolist(),
        "gripper_max": env.spec.gripper_max,
        "source": "mimic.workflows.record.record_handheld scripted hand + object tracker",
        "tcp_offset_from_flange_m": env.flange_tcp[:3, 3].tolist(),
    }
    cap = ObjectTrackedCapture.create(path, HandheldCaptureConfig(image_size=tuple(image_size)), attrs)
    seeds, attempted, rows = [], 0, 0
    bar = tqdm(total=episodes, desc="handheld demos", disable=not progress, unit="ep")
    try:
        while len(seeds) < episodes and attempted < 2 * episodes:
            ep_seed = seed + attempted
            attempted += 1
            obs = env.reset(seed=ep_seed)
            expert.reset()
            t0 = 1000.0 * len(seeds)
            samples = [(t0 + float(env.data.time), "objects", (obs[OBJECT_KEY],))]
            success = False
            for _ in range(env.max_steps):
                obs, _, term, trunc, info = env.step(expert.act(obs))
                samples += _arrivals(info, t0, TwinStreamLatency(), rng)
                samples.append((t0 + float(env.data.time), "objects", (obs[OBJECT_KEY],)))
                if term or trunc:
                    success = bool(info["success"])
                    break
            if not success:
                continue
            samples.sort(key=lambda s: s[0])
            cap.begin_episode()
            feed = {
                "pose": cap.on_pose,
                "gripper": cap.on_gripper,
                "camera": cap.on_frame,
                "objects": cap.on_objects,
            }
            for t, kind, payload in samples:
                feed[kind](t, *payload)
            rows += cap.end_episode()
            seeds.append(ep_seed)
            bar.update(1)
    finally:
        bar.close()
        cap.writer.root.attrs.update({"expert_seeds": seeds, "raw_streams": list(RAW_STREAMS)})
        cap.close()
        env.close()
    if len(seeds) < episodes:
        raise ValueError(
            f"record_handheld: only {len(seeds)}/{episodes} successful demos in {attempted} tries"
        )
    return {"path": str(path), "episodes": len(seeds), "attempted": attempted, "rows": rows}


def record_dataset(dataset: str, r: RecordConfig, progress: bool = True, keep_failed: bool = False) -> bool:
    """Record `dataset` per `r` unless it exists -> whether anything was recorded."""
    if locate(dataset).exists():  # a URL is checked (protocol, bucket, credentials) before any rollout
        return False
    if r.episodes <= 0:
        raise ConfigError("record.episodes: must be > 0 to record a dataset")
    r.validate()
    if (
        r.arm == BIMANUAL_ARM
    ):  # two handheld grippers: a UMI-style .zarr.zip (imported unless asked for as one)
        from mimic.workflows.bimanual_record import record_and_import, record_bimanual_handheld

        how = dict(
            seed=r.seed,
            image_size=(r.image_size[0], r.image_size[1]),
            progress=progress,
            approach_error_m=r.approach_error_m,
        )
        if str(dataset).endswith(".zarr.zip"):
            out = record_bimanual_handheld(dataset, r.episodes, **how)
            print(f"{dataset}: UMI-style bimanual store, {out['episodes']} episodes, {out['rows']} rows")
        else:
            umi = record_and_import(dataset, r.episodes, **how)
            print(f"{umi}: UMI-style bimanual store; imported into {dataset}")
        return True
    if r.approach_error_m:
        raise ConfigError(f"record.approach_error_m: applies to arm {BIMANUAL_ARM}, not {r.arm}")
    if r.arm == "handheld":
        record_handheld(
            dataset, r.episodes, seed=r.seed, image_size=(r.image_size[0], r.image_size[1]), progress=progress
        )
        return True
    stats = record_expert_dataset_stats(
        dataset,
        r.arm,
        r.task,
        r.episodes,
        seed=r.seed,
        cameras=tuple(r.cameras),
        image_size=(r.image_size[0], r.image_size[1]),
        keep_failed=keep_failed,
        hold_steps=r.hold_steps,
        action_noise=r.action_noise,
        regrasp_fraction=r.regrasp_fraction,
        progress=progress,
    )
    print(
        f"{stats.path}: {stats.episodes} episodes, {stats.steps} steps, expert success "
        f"{stats.expert_success_rate:.0%} over {stats.attempted} rollouts"
    )
    return True


def parse_image_size(text: str) -> tuple[int, int]:
    """`--image-size HxW` as (H, W): a malformed value names the flag instead of Python's unpacking error."""
    parts = text.lower().split("x")
    try:
        h, w = (int(v) for v in parts)
    except ValueError:
        raise ConfigError(f"--image-size {text!r}: expected HxW, e.g. 96x96") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    """`mimic record CFG.yaml [--set k=v]` (a training config's record: section into its dataset) or
    `mimic record OUT.zarr --arm A --task T --episodes N [...]` (the same fields as flags)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="mimic record",
        description="record scripted demonstrations on a twin into a "
        "store: a training config's record: section, or the same fields as flags; an "
        "existing store is kept",
    )
    ap.add_argument("target", help="training YAML with a record: section, or the store to write")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config mode: override a field"
    )
    ap.add_argument(
        "--arm",
        default="franka",
        help="arm twin, handheld (scripted handheld demos) or handheld_bimanual (two grippers; a "
        "target ending .zarr.zip is written as a UMI-style bimanual store and not imported)",
    )
    ap.add_argument("--task", default="pick_place")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cameras", default="", help="comma-separated: scene,wrist")
    ap.add_argument("--image-size", default="96x96", help="HxW")
    ap.add_argument("--keep-failed", action="store_true")
    ap.add_argument("--hold-steps", type=int, default=0, help="expert steps recorded after success")
    ap.add_argument(
        "--regrasp-fraction",
        type=float,
        default=0.0,
        help="pick_place: this share of episodes shows "
        "a missed first grasp and the regrasp (stored from the failed lift on)",
    )
    ap.add_argument(
        "--action-noise",
        type=float,
        default=0.0,
        help="std (rad) of noise on the executed joint targets; the clean target is recorded (DART)",
    )
    ap.add_argument(
        "--approach-error-m",
        type=float,
        default=0.0,
        help="handheld_bimanual: the hands hover beside their cubes by up to this (m) and correct on the way down",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.target.endswith((".yaml", ".yml")):
            cfg = load_train_config(args.target, args.set)
            dataset, rec = cfg.dataset, cfg.record
        else:
            h, w = parse_image_size(args.image_size)
            dataset = args.target
            rec = RecordConfig(
                arm=args.arm,
                task=args.task,
                episodes=args.episodes,
                seed=args.seed,
                cameras=[c for c in args.cameras.split(",") if c],
                image_size=[h, w],
                hold_steps=args.hold_steps,
                action_noise=args.action_noise,
                regrasp_fraction=args.regrasp_fraction,
                approach_error_m=args.approach_error_m,
            )
        done = record_dataset(dataset, rec, progress=not args.no_progress, keep_failed=args.keep_failed)
    except (ConfigError, DatasetError, ValueError, KeyError, FileNotFoundError) as e:
        print(f"mimic record: {str(e).removeprefix('record: ')}", file=sys.stderr)
        return 2
    if not done:
        print(f"{dataset}: exists, kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
