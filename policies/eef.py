"""A policy trained on handheld (UMI-style) demonstrations that drives any arm's TCP through IK.

Pieces, each composed from what exists:
- record: `record_handheld` runs teleop.handheld's twin capture with one more stream, the object
  tracker (`object_state`, the same layout and key as the arm twins' /objects/state), because the
  handheld store alone carries no object state and this policy observes state, not images.
- features: `EefFeatures` turns a window (or a [B, ...] batch) of absolute observations into frame-free
  ones: data.relative.RelativeTrajectory makes the TCP history and the action chunk relative to the newest
  TCP pose, and the object state becomes `object_rel` = [cube position (3) and goal position (3) in the
  newest TCP frame, cos/sin of 4 x (cube yaw - TCP yaw)] (4x: a cube looks the same every quarter turn).
  Nothing the network sees depends on where the arm's base is, which is what lets one checkpoint run on
  the Franka, UR5e and xArm7.
- training: `train_eef(cfg, eef)` is policies.train's loop (same Policy, EMA, lr schedule, validation,
  metrics, checkpoint format) on `EefBatches`, i.e. WindowBatches with the features applied per batch and
  a normaliser fitted on the relative values. policies.train.train has no hook for a batch transform,
  so the loop is reassembled here from train.py's own parts (see the report for the hook it would need).
- inference: `EefPolicy` (from `load_eef_policy(ckpt)`) keeps the deploy contract (obs_keys, n_obs_steps,
  horizon, n_action_steps, action_dim, control_hz, predict, reset) with absolute rows [tcp pos (3),
  axis-angle (3), gripper width] decoded at the *current* TCP pose; robots.eef_control executes them.

Checkpoint: policies' usual directory plus `eef.json` (relative transform, raw observation keys,
handheld gripper range). `load_policy` on it returns the inner relative-space Policy only;
policies.checkpoint.load_deployable (what the ROS policy node loads) returns the EefPolicy.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from data.dataset import DatasetError, ReplayDataset
from data.normalizer import Normalizer
from data.relative import RelativeTrajectory
from data.torch_dataset import WindowDataset
from data.writer import StreamSpec
from policies.checkpoint import EEF_JSON, CheckpointError, load_policy, save_checkpoint
from policies.config import ConfigError, TrainConfig, from_dict, to_dict
from policies.data import WindowBatches, widen_small_ranges
from policies.policy import Policy, ShapeMeta
from teleop.handheld import HandheldCapture, HandheldCaptureConfig

POS_KEY, ROT_KEY, WIDTH_KEY, OBJECT_KEY = (
    "robot0_eef_pos",
    "robot0_eef_rot_axis_angle",
    "robot0_gripper_width",
    "object_state",
)
OBJECT_REL_KEY = "object_rel"
OBJECT_REL_DIM = 8
RAW_OBS_KEYS = (POS_KEY, ROT_KEY, WIDTH_KEY, OBJECT_KEY)


# ---- recording: handheld capture + an object tracker stream ------------------------------------------
class ObjectTrackedCapture(HandheldCapture):
    """HandheldCapture with `object_state` [n] from an object tracker (UMI records no objects; a twin
    tracker, or mocap markers on hardware, does)."""

    OBJECT_DIM = 10  # pick_place: cube xyz, cube quat wxyz, goal xyz (sim.env layout)

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
    """Scripted handheld pick-place demos on the twin (teleop.handheld.record_twin's loop, no injected
    latency) with the object tracker stream; only successful demos are committed."""
    from sim.handheld import HandheldEnv, HandheldExpert
    from teleop.handheld import RAW_STREAMS, TwinStreamLatency, _arrivals

    if episodes < 1:
        raise ValueError(f"record_handheld: episodes must be >= 1, got {episodes}")
    env = HandheldEnv(seed=seed, image_size=tuple(image_size), pose_hz=100.0, camera_hz=30.0)
    expert = HandheldExpert(env)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    attrs = {
        "camera_mount_tcp_cam": env.nominal_camera_mount.tolist(),
        "gripper_max": env.spec.gripper_max,
        "source": "policies.eef.record_handheld scripted hand + object tracker",
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


# ---- frame-free features ------------------------------------------------------------------------------
def _yaw_of_quat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def object_features(object_state: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """[..., T, 10] pick_place object states, [..., 4, 4] TCP reference -> [..., T, 8] `object_rel`."""
    s = np.asarray(object_state, np.float64)
    rot, pos = ref[..., None, :3, :3], ref[..., None, :3, 3]
    rt = np.swapaxes(rot, -1, -2)
    cube = (rt @ (s[..., 0:3] - pos)[..., None])[..., 0]
    goal = (rt @ (s[..., 7:10] - pos)[..., None])[..., 0]
    tcp_yaw = np.arctan2(rot[..., 1, 0], rot[..., 0, 0])  # heading of the TCP's x axis in the base plane
    d = 4 * (_yaw_of_quat(s[..., 3:7]) - tcp_yaw)
    return np.concatenate([cube, goal, np.cos(d)[..., None], np.sin(d)[..., None]], axis=-1)


@dataclass(frozen=True)
class EefFeatures:
    """Absolute window/batch -> what the network sees (relative pose history, object_rel, actions)."""

    relative: RelativeTrajectory = RelativeTrajectory()

    @property
    def inner_keys(self) -> list[str]:
        return [POS_KEY, ROT_KEY, WIDTH_KEY, OBJECT_REL_KEY]

    def inner_shapes(self) -> dict[str, list[int]]:
        return {
            POS_KEY: [3],
            ROT_KEY: [self.relative.obs_dim(ROT_KEY, 3)],
            WIDTH_KEY: [1],
            OBJECT_REL_KEY: [OBJECT_REL_DIM],
        }

    def encode_obs(self, obs: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(inner observations, reference pose T_ref) for an absolute window ([T, d] or [B, T, d] per key)."""
        o = {k: _np(obs[k]) for k in RAW_OBS_KEYS}
        ref = self.relative.reference(o)
        rel = self.relative.encode_obs({POS_KEY: o[POS_KEY], ROT_KEY: o[ROT_KEY]}, ref)
        inner = {
            POS_KEY: rel[POS_KEY],
            ROT_KEY: rel[ROT_KEY],
            WIDTH_KEY: o[WIDTH_KEY],
            OBJECT_REL_KEY: object_features(o[OBJECT_KEY], ref),
        }
        return inner, ref

    def encode_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """{"obs": raw [B, T, ...], "action": [B, H, 7]} -> float32 torch batch in the inner space."""
        inner, ref = self.encode_obs(batch["obs"])
        act = self.relative.encode_actions(_np(batch["action"]), ref)
        return {
            "obs": {k: torch.from_numpy(v.astype(np.float32)) for k, v in inner.items()},
            "action": torch.from_numpy(act.astype(np.float32)),
        }


class EefBatches:
    """policies.data.WindowBatches with EefFeatures applied to every batch (same `batch`/`__len__` API)."""

    def __init__(self, windows: WindowDataset, features: EefFeatures, progress: bool = False) -> None:
        self.base = WindowBatches(windows, progress=progress)
        self.features = features

    def __len__(self) -> int:
        return len(self.base)

    def batch(self, ids: np.ndarray, device: str | torch.device = "cpu") -> dict[str, Any]:
        b = self.features.encode_batch(self.base.batch(ids, "cpu"))
        return {"obs": {k: v.to(device) for k, v in b["obs"].items()}, "action": b["action"].to(device)}

    def normalizer(self, lowdim_mode: str = "minmax", max_windows: int = 20000, seed: int = 0) -> Normalizer:
        """Stats of the relative values the network sees (pooled over every step of up to max_windows)."""
        rng = np.random.default_rng(seed)
        ids = rng.choice(len(self), min(len(self), max_windows), replace=False)
        b = self.batch(ids)
        arrays = {k: v.reshape(-1, v.shape[-1]).numpy() for k, v in b["obs"].items()}
        arrays["action"] = b["action"].reshape(-1, b["action"].shape[-1]).numpy()
        modes = {"action": "minmax", **{k: lowdim_mode for k in b["obs"]}}
        return widen_small_ranges(Normalizer().fit(arrays, modes), list(b["obs"]), MIN_LOWDIM_RANGE)


MIN_LOWDIM_RANGE = 0.02  # policies.train's value: caps the gain of dimensions that barely move


# ---- the deployable policy -----------------------------------------------------------------------------
class EefPolicy:
    """Deploy-contract wrapper: absolute TCP window in, absolute TCP chunk [horizon, 7] out."""

    action_space = "eef"  # what the ROS policy node and `mimic deploy` dispatch on (policies.checkpoint)

    def __init__(self, inner: Policy, features: EefFeatures, gripper_max: float) -> None:
        self.inner, self.features, self.gripper_max = inner, features, float(gripper_max)
        self.obs_keys = RAW_OBS_KEYS
        self.image_keys: tuple[str, ...] = ()
        self.n_obs_steps, self.horizon = inner.n_obs_steps, inner.horizon
        self.n_action_steps = inner.n_action_steps
        self.action_dim = 7
        self.control_hz = inner.control_hz
        self.shape_meta = inner.shape_meta

    def predict(
        self, obs_window: dict[str, np.ndarray], num_inference_steps: int | None = None
    ) -> np.ndarray:
        for k in self.obs_keys:
            if k not in obs_window:
                raise KeyError(f"eef policy: observation key {k!r} missing (have {sorted(obs_window)})")
            n = np.asarray(obs_window[k]).shape[0]
            if n != self.n_obs_steps:
                raise ValueError(f"eef policy: {k!r} has {n} steps, expected n_obs_steps={self.n_obs_steps}")
        inner, ref = self.features.encode_obs(obs_window)
        rel = self.inner.predict(inner, num_inference_steps=num_inference_steps)
        return self.features.relative.decode_actions(rel, ref)

    def reset(self) -> None:
        self.inner.reset()

    def seed(self, seed: int | None) -> None:
        self.inner.seed(seed)


def save_eef_checkpoint(
    path: Path,
    policy: Policy,
    features: EefFeatures,
    gripper_max: float,
    train_cfg: dict[str, Any],
    provenance: dict[str, Any],
) -> Path:
    save_checkpoint(path, policy, train_cfg, provenance)
    info = {
        "relative": features.relative.to_json(),
        "raw_obs_keys": list(RAW_OBS_KEYS),
        "object_features": "cube_tcp3,goal_tcp3,cos4dyaw,sin4dyaw",
        "gripper_max": gripper_max,
        "action_layout": ["tcp_x", "tcp_y", "tcp_z", "aa_x", "aa_y", "aa_z", "gripper_width"],
    }
    (path / EEF_JSON).write_text(json.dumps(info, indent=2))
    return path


def load_eef_policy(path: str | Path, device: str = "cpu", overrides: Sequence[str] = ()) -> EefPolicy:
    """An EefPolicy from a checkpoint written by train_eef (CheckpointError naming the file otherwise);
    `overrides` as in policies.checkpoint.load_policy."""
    p = Path(path)
    inner = load_policy(p, device=device, overrides=overrides)
    f = p / EEF_JSON
    if not f.is_file():
        raise CheckpointError(
            f"{f}: missing (not an end-effector policy checkpoint; train it with policies.eef)"
        )
    try:
        info = json.loads(f.read_text())
        features = EefFeatures(RelativeTrajectory.from_json(info["relative"]))
        gripper_max = float(info["gripper_max"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{f}: unreadable ({type(e).__name__}: {e})") from None
    return EefPolicy(inner, features, gripper_max)


# ---- training -----------------------------------------------------------------------------------------
@dataclass
class EefConfig:
    """The end-effector part of a handheld config (YAML section `eef:`)."""

    rotation: str = "rot6d"  # relative action/obs rotation encoding (data.relative.ROTATIONS)
    record_episodes: int = 0  # record this many handheld demos into `dataset` when it does not exist
    record_seed: int = 0


def load_eef_config(path: str | Path, overrides: list[str] | None = None) -> tuple[TrainConfig, EefConfig]:
    """handheld_*.yaml -> (TrainConfig, EefConfig); unknown keys are errors naming the key."""
    from policies.config import read_config_mapping

    d = read_config_mapping(path, overrides)
    eef = from_dict(EefConfig, d.pop("eef", {}) or {}, "eef")
    RelativeTrajectory(rotation=eef.rotation)  # validates the name
    cfg = from_dict(TrainConfig, d)
    if list(cfg.policy.obs_keys) != list(RAW_OBS_KEYS):
        raise ConfigError(f"policy.obs_keys: an eef policy observes exactly {list(RAW_OBS_KEYS)}")
    cfg.validate()
    return cfg, eef


def train_eef(cfg: TrainConfig, eef: EefConfig, progress: bool = True) -> Path:
    """policies.train's loop on relative handheld windows; returns the run dir (policy in checkpoint/)."""
    from policies.train import (
        CHECKPOINT_DIR,
        EMA,
        STATE_DIR,
        Metrics,
        load_state,
        lr_at,
        policy_from_checkpoint,
        save_state,
        stage_totals,
        validate,
    )

    cfg.validate()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if not Path(cfg.dataset).exists():
        if eef.record_episodes <= 0:
            raise DatasetError(f"{cfg.dataset}: dataset not found (set eef.record_episodes to record it)")
        record_handheld(cfg.dataset, eef.record_episodes, seed=eef.record_seed, progress=progress)
    replay = ReplayDataset(cfg.dataset)
    if replay.attrs.get("robot") != "handheld":
        raise DatasetError(
            f"{cfg.dataset}: root attr robot={replay.attrs.get('robot')!r}, expected 'handheld'"
        )
    pc = cfg.policy
    common = dict(
        obs_keys=list(RAW_OBS_KEYS),
        n_obs_steps=pc.n_obs_steps,
        horizon=pc.horizon,
        n_action_steps=pc.n_action_steps,
        val_ratio=cfg.val_ratio,
        seed=cfg.seed,
    )
    features = EefFeatures(RelativeTrajectory(rotation=eef.rotation))
    train_windows = WindowDataset(cfg.dataset, split="train", **common)
    data = EefBatches(train_windows, features, progress=progress)
    val = (
        EefBatches(WindowDataset(cfg.dataset, split="val", **common), features)
        if cfg.val_ratio > 0 and replay.n_episodes > 1
        else None
    )
    inner_cfg = copy.deepcopy(pc)
    inner_cfg.obs_keys = features.inner_keys
    meta = ShapeMeta(
        obs_shapes=features.inner_shapes(),
        action_dim=features.relative.action_dim(int(replay.array("action").shape[1])),
        control_hz=float(replay.attrs.get("fps", 10.0)),
        arm="handheld",
        task="pick_place",
    )
    init_prov: dict[str, Any] = {}
    if cfg.init_from:
        policy, init_prov = policy_from_checkpoint(cfg.init_from, inner_cfg, meta, cfg.device)
    else:
        policy = Policy(inner_cfg, meta, data.normalizer(pc.lowdim_norm, seed=cfg.seed)).to(cfg.device)
    ema = EMA(policy, cfg.ema_power, cfg.ema_max_decay)
    opt = torch.optim.AdamW(
        policy.parameters(), lr=cfg.lr, betas=(0.95, 0.999), weight_decay=cfg.weight_decay
    )
    run_dir = Path(cfg.run_dir)
    step, wall0 = 0, 0.0
    if cfg.resume and (run_dir / STATE_DIR / "state.json").exists():
        step, wall0 = load_state(run_dir, policy, ema, opt)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump({**to_dict(cfg), "eef": asdict(eef)}, sort_keys=False)
    )
    metrics = Metrics(run_dir)
    gripper_max = float(replay.attrs.get("gripper_max", 0.08))
    rng = np.random.default_rng([cfg.seed, 0, step])
    n_params = sum(p.numel() for p in policy.parameters())
    t_start = time.monotonic() - wall0
    losses, t_log, n_log = [], time.monotonic(), 0

    def provenance() -> dict[str, Any]:
        return {
            "dataset": str(cfg.dataset),
            "steps": step,
            "wall_s": round(time.monotonic() - t_start, 1),
            "seed": cfg.seed,
            "n_params": n_params,
            "train_episodes": int(train_windows.train_mask.sum()),
            "train_windows": len(data),
            "train_rows": int(replay.n_steps),
            "representation": "relative eef",
            "init_from": cfg.init_from or None,
            **stage_totals(init_prov, step, time.monotonic() - t_start),
        }

    def checkpoint() -> None:
        save_eef_checkpoint(
            run_dir / CHECKPOINT_DIR,
            ema.model,
            features,
            gripper_max,
            {**to_dict(cfg), "eef": asdict(eef)},
            provenance(),
        )
        save_state(run_dir, policy, ema, opt, step, time.monotonic() - t_start)

    bar = tqdm(
        total=cfg.steps,
        initial=step,
        desc=f"train eef {pc.generator}/{pc.backbone} {n_params / 1e6:.2f}M",
        disable=not progress,
        unit="step",
    )
    policy.train()
    while step < cfg.steps:
        lr = lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = policy(data.batch(rng.integers(0, len(data), cfg.batch_size), cfg.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(policy)
        step += 1
        n_log += cfg.batch_size
        losses.append(loss.item())
        bar.update(1)
        row: dict[str, Any] = {}
        if step % cfg.log_every == 0 or step == cfg.steps:
            sps = n_log / max(1e-9, time.monotonic() - t_log)
            row.update(loss=round(float(np.mean(losses)), 6), lr=lr, samples_per_s=round(sps, 1))
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", sps=f"{sps:.0f}")
            t_log, n_log, losses = time.monotonic(), 0, []
        if val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            vl, vm = validate(ema.model, val, cfg.seed, min(cfg.batch_size, 256), device=cfg.device)
            row.update(val_loss=round(vl, 6), val_action_mse=round(vm, 6))
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            checkpoint()
        if cfg.eval.episodes > 0 and ((cfg.eval.every and step % cfg.eval.every == 0) or step == cfg.steps):
            from policies.evaluate_eef import evaluate_eef

            res = evaluate_eef(
                EefPolicy(ema.model, features, gripper_max),
                cfg.eval.arm,
                cfg.eval.episodes,
                seed=cfg.eval.seed,
                progress=False,
            )
            tqdm.write(f"step {step}: {res.summary()}")
            row["success_rate"] = res.success_rate
        if row:
            metrics.log(step=step, wall_s=round(time.monotonic() - t_start, 2), **row)
    bar.close()
    metrics.plot()
    return run_dir


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, np.float64)


def main(argv: list[str] | None = None) -> int:
    """`python -m policies.eef train CFG.yaml [--set k=v]` | `... record OUT.zarr --episodes N`."""
    ap = argparse.ArgumentParser(prog="policies.eef", description=main.__doc__)
    sub = ap.add_subparsers(dest="verb", required=True)
    t = sub.add_parser("train", help="train an end-effector policy on a handheld store")
    t.add_argument("config")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--no-progress", action="store_true")
    r = sub.add_parser("record", help="record handheld demos with the object tracker stream on the twin")
    r.add_argument("out")
    r.add_argument("--episodes", type=int, default=100)
    r.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        if a.verb == "record":
            if Path(a.out).exists():
                raise ValueError(f"{a.out}: already exists")
            print(record_handheld(a.out, a.episodes, seed=a.seed))
            return 0
        cfg, eef = load_eef_config(a.config, a.set)
        run_dir = train_eef(cfg, eef, progress=not a.no_progress)
    except (ConfigError, DatasetError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"policies.eef: {e}", file=sys.stderr)
        return 2
    print(run_dir / "checkpoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "EefBatches",
    "EefConfig",
    "EefFeatures",
    "EefPolicy",
    "ObjectTrackedCapture",
    "load_eef_config",
    "load_eef_policy",
    "object_features",
    "record_handheld",
    "train_eef",
]
