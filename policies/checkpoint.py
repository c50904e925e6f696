"""Checkpoint directory: everything needed to run a policy, nothing executable (no pickle).

    <ckpt>/model.safetensors       policy weights (the EMA weights when saved by training)
    <ckpt>/normalizer.safetensors  mimic.data.normalizer stats ("<key>.scale" / "<key>.offset")
    <ckpt>/config.yaml             {policy: PolicyConfig, train: TrainConfig or {}}
    <ckpt>/shape_meta.json         observation keys/shapes, action dim, control rate, arm, task
    <ckpt>/provenance.json         git commit, dataset path, steps, wall time, seed, ...

    <ckpt>/processor.json          the action space's processor state (mimic.policies.processors)

`load_policy` returns the network as trained (for an eef_relative policy, the one in relative space);
`load_deployable` the policy a deployment runs, its processor applied.

A directory is written next to its final name and renamed into place, so a reader (the policy node,
`mimic eval`) never sees a half-written checkpoint. A checkpoint at a URL (s3://, gs://, ...;
mimic.data.storage) is written the same way into a local staging directory and then uploaded with
config.yaml last (object stores have no rename, and a reader requires config.yaml); loading one downloads it
first into a local cache keyed by the URL and the files' etags, so a rewritten checkpoint is fetched anew.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from mimic.data.normalizer import Normalizer
from mimic.data.storage import (
    StorageError,
    cache_root,
    download_dir,
    is_url,
    locate,
    upload_dir,
    url_key,
    version_tag,
)
from mimic.policies.config import (
    ACTION_REPRS,
    ConfigError,
    PolicyConfig,
    apply_overrides,
    policy_config_from_dict,
    to_dict,
)
from mimic.policies.engines import ONNX_ENGINES, EngineError, apply_engine, check_engine
from mimic.policies.export import engine_files
from mimic.policies.policy import Policy, ShapeMeta
from mimic.policies.processors import PROCESSOR_JSON, action_space_of_repr, deployable

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
    processor: dict[str, Any] | None = None,
) -> Path:
    """Write `policy` (its current weights) to directory `path`, replacing an existing one atomically.
    `processor`: the action space's state a deployment needs (mimic.policies.processors.Prepared.info).
    A URL `path` is written to a local staging directory and uploaded (see the module docstring)."""
    if is_url(path):
        locate(path)  # reachable (protocol, bucket, credentials) before anything is written
        local = save_checkpoint(
            cache_root() / "upload" / url_key(str(path)) / "checkpoint",
            policy,
            train_cfg,
            provenance,
            processor,
        )
        upload_checkpoint(local, str(path))
        return local
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
    proc = {"action_repr": policy.cfg.action_repr, **(processor or {})}
    (tmp / PROCESSOR_JSON).write_text(json.dumps(proc, indent=2))
    prov = {"git_commit": git_commit(), "format": "mimic-policy-v1", **(provenance or {})}
    (tmp / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def upload_checkpoint(local: Path, url: str) -> None:
    """Upload a finished local checkpoint directory to `url`, config.yaml last (a reader's marker)."""
    upload_dir(local, locate(url), last=("config.yaml",))


def local_checkpoint(path: str | Path) -> Path:
    """`path` itself for a local checkpoint; for a URL, a local copy in the cache (downloaded once per version
    of its files: the key covers the URL and the etags of FILES), so loading never reads the network twice."""
    if not is_url(path):
        return Path(path)
    try:
        src = locate(path)
        key = url_key(str(path), version_tag(src, (*FILES, PROCESSOR_JSON)))
    except StorageError as e:
        raise CheckpointError(str(e)) from None
    local = cache_root() / "checkpoints" / key
    if (local / "config.yaml").is_file():
        return local
    tmp = local.with_name(local.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        names = download_dir(src, tmp)
    except StorageError as e:
        raise CheckpointError(str(e)) from None
    if "config.yaml" not in names:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{path}: not a checkpoint directory (no config.yaml there)")
    shutil.rmtree(local, ignore_errors=True)
    tmp.rename(local)
    return local


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def check_device(device: str) -> None:
    """Refuse a torch device this machine cannot run before a checkpoint is read: torch itself reports a
    missing GPU as an assertion deep in its lazy CUDA set-up, only once the weights are moved."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r}: not a torch device (cpu, cuda or cuda:<index>)") from None
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise ValueError(f"device {device!r}: only cpu, cuda or cuda:<index> are supported")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device}: asked for, but torch sees no CUDA GPU on this machine")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")


def load_policy(path: str | Path, device: str = "cpu", overrides: Sequence[str] = ()) -> Policy:
    """A ready policy (eval mode, on `device`) from a checkpoint directory. `overrides` (`key=value`, keys from
    INFERENCE_FIELDS, e.g. "policy.gen.sampler=heun" or "policy.n_action_steps=4": a chunk trained at 8 rows can
    be replanned every 4) change the checkpoint's config for this run, checked like its own values.
    A URL is downloaded to the local cache first (local_checkpoint)."""
    check_device(device)
    path = local_checkpoint(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    for name in FILES[:4]:
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: missing {name}")
    try:
        cfg_all = yaml.safe_load((path / "config.yaml").read_text()) or {}
        if not isinstance(cfg_all, dict) or not isinstance(cfg_all.get("policy", {}), dict):
            raise ConfigError("not a mapping with a 'policy' mapping")
        policy_cfg = policy_config_from_dict(cfg_all.get("policy", {}))
    except (yaml.YAMLError, ValueError) as e:  # ConfigError, UnicodeDecodeError
        raise CheckpointError(f"{path / 'config.yaml'}: {str(e).splitlines()[0]}") from None
    try:
        meta = ShapeMeta.from_json(read_json(path / "shape_meta.json"))
    except (TypeError, AttributeError) as e:
        raise CheckpointError(f"{path / 'shape_meta.json'}: not a shape description ({e})") from None
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
            raise CheckpointError(
                f"{path}: --set {key}: not a field a run may change without retraining "
                f"(those are {', '.join(INFERENCE_FIELDS)})"
            )
    try:
        d = apply_overrides({"policy": to_dict(policy_cfg)}, list(overrides))
        return policy_config_from_dict(d["policy"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_provenance(path: str | Path) -> dict[str, Any]:
    p = local_checkpoint(path) / "provenance.json"
    return read_json(p) if p.is_file() else {}


def load_processor(path: str | Path) -> dict[str, Any]:
    """The checkpoint's processor state ({"action_repr": ...}); CheckpointError if it is not a checkpoint."""
    p = local_checkpoint(path)
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a checkpoint directory")
    if (p / PROCESSOR_JSON).is_file():
        return _checked_processor(p / PROCESSOR_JSON, read_json(p / PROCESSOR_JSON))
    try:  # written before processors were saved: the config names the action space
        cfg = yaml.safe_load((p / "config.yaml").read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise CheckpointError(f"{p / 'config.yaml'}: unreadable ({type(e).__name__})") from None
    policy = cfg.get("policy") if isinstance(cfg, dict) else None
    return _checked_processor(
        p / "config.yaml",
        {"action_repr": (policy if isinstance(policy, dict) else {}).get("action_repr", "joint")},
    )


def _checked_processor(where: Path, info: Any) -> dict[str, Any]:
    """The processor state read from `where`, refused in one line naming it when it is not a mapping or names an
    action representation no processor has: an unknown one would otherwise be deployed as joint targets."""
    if not isinstance(info, dict):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(info).__name__}")
    action_repr = info.get("action_repr", "joint")
    if action_repr not in ACTION_REPRS:
        raise CheckpointError(f"{where}: action_repr {action_repr!r} is not one of {ACTION_REPRS}")
    return info


def action_space(path: str | Path) -> str:
    """The controller mode the checkpoint's policy needs, "eef" or "joint", without building it."""
    return action_space_of_repr(str(load_processor(path).get("action_repr", "joint")))


def load_deployable(
    path: str | Path, device: str = "cpu", overrides: Sequence[str] = (), engine: str = "torch"
) -> Any:
    """The policy a deployment runs, whatever its action space: the network of `load_policy` behind its
    processor (mimic.policies.processors.deployable). The one loading entry point of the policy node,
    `mimic eval` and `mimic deploy`; `overrides` as in `load_policy`. `engine` (mimic.policies.engines.ENGINES)
    runs the denoiser and encoder another way; "onnx" and "onnx-int8" use what `mimic export` wrote beside it."""
    policy = load_policy(path, device=device, overrides=overrides)
    if engine != "torch":
        policy = _with_engine(path, policy, engine)
    info = load_processor(path)
    try:
        return deployable(policy, {k: v for k, v in info.items() if k != "action_repr"})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{Path(path) / PROCESSOR_JSON}: unreadable ({type(e).__name__}: {e})"
        ) from None


def _with_engine(path: str | Path, policy: Policy, engine: str) -> Policy:
    try:
        files = engine_files(local_checkpoint(path), engine) if check_engine(engine) in ONNX_ENGINES else None
        return apply_engine(policy, engine, files)
    except EngineError as e:
        raise CheckpointError(str(e)) from None
