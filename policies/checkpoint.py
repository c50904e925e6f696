"""Checkpoint directory: everything needed to run a policy, nothing executable (no pickle).

    <ckpt>/model.safetensors       policy weights (the EMA weights when saved by training)
    <ckpt>/normalizer.safetensors  data.normalizer stats ("<key>.scale" / "<key>.offset")
    <ckpt>/config.yaml             {policy: PolicyConfig, train: TrainConfig or {}}
    <ckpt>/shape_meta.json         observation keys/shapes, action dim, control rate, arm, task
    <ckpt>/provenance.json         git commit, dataset path, steps, wall time, seed, ...

An end-effector policy (policies.eef) adds `<ckpt>/eef.json`: `load_policy` on it returns the inner relative-space
network, `load_deployable` the policy a deployment runs (absolute TCP chunks). `action_space(path)` tells them apart.

A directory is written next to its final name and renamed into place, so a reader (the policy node,
`mimic eval`) never sees a half-written checkpoint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from data.normalizer import Normalizer
from policies.config import ConfigError, PolicyConfig, apply_overrides, policy_config_from_dict, to_dict
from policies.policy import Policy, ShapeMeta

EEF_JSON = "eef.json"  # marks an end-effector checkpoint (written by policies.eef)
FILES = ("model.safetensors", "normalizer.safetensors", "config.yaml", "shape_meta.json", "provenance.json")
# Policy fields a run may choose without retraining, as `--set key=value` (the weights do not depend on them):
# rows executed per prediction, chunk candidates, and the sampler's steps, solver and grid.
INFERENCE_FIELDS = (
    "policy.n_action_steps",
    "policy.chunk_candidates",
    "policy.gen.num_inference_steps",
    "policy.gen.sampler",
    "policy.gen.schedule",
    "policy.gen.scheduler",
    "policy.gen.timestep_spacing",
)


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or inconsistent; the message names the file."""


def git_commit(repo: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo or Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def tensors_for_save(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    path: str | Path,
    policy: Policy,
    train_cfg: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write `policy` (its current weights) to directory `path`, replacing an existing one atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors_for_save(policy.state_dict()), str(tmp / "model.safetensors"))
    save_file(tensors_for_save(policy.normalizer.state_dict()), str(tmp / "normalizer.safetensors"))
    (tmp / "config.yaml").write_text(
        yaml.safe_dump({"policy": to_dict(policy.cfg), "train": train_cfg or {}}, sort_keys=False)
    )
    (tmp / "shape_meta.json").write_text(json.dumps(policy.shape_meta.to_json(), indent=2))
    prov = {"git_commit": git_commit(), "format": "mimic-policy-v1", **(provenance or {})}
    (tmp / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def load_policy(path: str | Path, device: str = "cpu", overrides: Sequence[str] = ()) -> Policy:
    """A ready policy (eval mode, on `device`) from a checkpoint directory. `overrides` (`key=value`, keys from
    INFERENCE_FIELDS, e.g. "policy.gen.sampler=heun" or "policy.n_action_steps=4": a chunk trained at 8 rows can
    be replanned every 4) change the checkpoint's config for this run, checked like its own values."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    for name in FILES[:4]:
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: missing {name}")
    try:
        cfg_all = yaml.safe_load((path / "config.yaml").read_text()) or {}
        policy_cfg = policy_config_from_dict(cfg_all.get("policy", {}))
    except (yaml.YAMLError, ConfigError) as e:
        raise CheckpointError(f"{path / 'config.yaml'}: {str(e).splitlines()[0]}") from None
    meta = ShapeMeta.from_json(read_json(path / "shape_meta.json"))
    try:
        normalizer = Normalizer().load_state_dict(load_file(str(path / "normalizer.safetensors")))
        weights = load_file(str(path / "model.safetensors"))
    except Exception as e:  # safetensors raises its own error types for truncated/foreign files
        raise CheckpointError(f"{path}: weights unreadable ({type(e).__name__}: {e})") from None
    if overrides:
        policy_cfg = _with_overrides(path, policy_cfg, overrides)
    try:
        policy = Policy(policy_cfg, meta, normalizer)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    try:
        policy.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path / 'model.safetensors'}: does not match config.yaml ({str(e).splitlines()[0]})"
        ) from None
    return policy.to(device).eval()


def _with_overrides(path: Path, policy_cfg: PolicyConfig, overrides: Sequence[str]) -> PolicyConfig:
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key not in INFERENCE_FIELDS:
            raise CheckpointError(f"{path}: --set {key}: not a field a run may change without retraining "
                                  f"(those are {', '.join(INFERENCE_FIELDS)})")
    try:
        d = apply_overrides({"policy": to_dict(policy_cfg)}, list(overrides))
        return policy_config_from_dict(d["policy"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_provenance(path: str | Path) -> dict[str, Any]:
    p = Path(path) / "provenance.json"
    return read_json(p) if p.is_file() else {}


def action_space(path: str | Path) -> str:
    """The checkpoint's kind: "eef" when it has eef.json (policies.eef), else "joint"; CheckpointError if no dir."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a checkpoint directory")
    return "eef" if (p / EEF_JSON).is_file() else "joint"


def load_deployable(path: str | Path, device: str = "cpu", overrides: Sequence[str] = ()) -> Any:
    """The policy a deployment runs, whatever its kind: policies.eef.EefPolicy for an end-effector checkpoint
    (its `action_space` is "eef"), else the joint-space Policy of `load_policy`, wrapped in
    policies.tcp_position.TcpPositionPolicy when it predicts TCP positions (its chunks are joint rows too).
    The one loading entry point of the policy node and evaluation tools; `overrides` as in `load_policy`."""
    if action_space(path) == "eef":
        from policies.eef import load_eef_policy  # policies.eef imports this module

        return load_eef_policy(path, device=device, overrides=overrides)
    from policies.tcp_position import deployable

    return deployable(load_policy(path, device=device, overrides=overrides))
