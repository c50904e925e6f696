"""`mimic train <config.yaml> [--set key=value ...]`: train a policy; also `train(cfg) -> run_dir`.

Run directory layout (all written by rank 0):

    <run_dir>/checkpoint/        the policy (EMA weights) -> policies.load_policy(<run_dir>/checkpoint)
    <run_dir>/train_state/       raw weights, EMA, AdamW state, step: what `resume` continues from
    <run_dir>/config.yaml        the resolved config
    <run_dir>/metrics.csv        step, wall time, lr, losses, validation, rollout success
    <run_dir>/loss.png, success.png
    <run_dir>/teacher_targets.safetensors   consistency with gen.cd_pool: the teacher's precomputed endpoints

One loop for every action space (joint, TCP position, end-effector relative: the config's
`policy.action_repr` picks its processor, mimic.policies.processors), with bf16 autocast, DDP and resume for
all. Training only trains: the dataset is recorded (`mimic record`) or built by DAgger (`mimic dagger`) first.

The same entry point runs under `torchrun --nproc_per_node N -m mimic.workflows.train cfg.yaml`: DDP over gloo
on CPU (NCCL on CUDA), each rank draws its own batches of batch_size / N windows.

`dataset` and `run_dir` may be fsspec URLs (s3://bucket/demos.zarr, gs://..., memory://...; mimic.data.storage):
the store is read through zarr's FsspecStore, and the run directory is staged locally and uploaded after each
checkpoint (mimic.workflows.run_dir). `data.streaming: true` reads windows with bounded memory instead of
loading the store into RAM (mimic.policies.streaming), each rank from its own share of the episodes.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from mimic.data.dataset import DatasetError, ReplayDataset
from mimic.data.normalizer import Normalizer
from mimic.data.storage import StorageError, is_url, locate
from mimic.data.torch_dataset import WindowDataset
from mimic.data.validate import validate as validate_store
from mimic.policies.checkpoint import (
    CheckpointError,
    load_policy,
    load_provenance,
    save_checkpoint,
    tensors_for_save,
)
from mimic.policies.config import ConfigError, PolicyConfig, TrainConfig, load_train_config, to_dict
from mimic.policies.data import WindowBatches
from mimic.policies.policy import Policy, ShapeMeta
from mimic.policies.processors import deployable, prepare
from mimic.workflows.distill_pool import TeacherTargets, load_or_build
from mimic.workflows.run_dir import RunDir

CHECKPOINT_DIR = "checkpoint"
STATE_DIR = "train_state"
TEACHER_TARGETS = "teacher_targets.safetensors"  # gen.cd_pool's default file (mimic.workflows.distill_pool)
METRIC_FIELDS = (
    "step",
    "wall_s",
    "lr",
    "loss",
    "val_loss",
    "val_action_mse",
    "success_rate",
    "samples_per_s",
)


class TrainingError(ValueError):
    """Training stopped because going on would only produce garbage weights; the message names the step."""


# ---- small helpers ---------------------------------------------------------------------------------
def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to 0 at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class EMA:
    """diffusion_policy's EMA: decay = 1 - (1 + step)^-power, capped; the averaged copy is what ships."""

    def __init__(self, model: Policy, power: float, max_decay: float) -> None:
        teacher, model._teacher = model._teacher, []
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        model._teacher = self.model._teacher = teacher  # shared, not copied: validation's distillation loss
        self.power, self.max_decay, self.step = power, max_decay, 0

    @torch.no_grad()
    def update(self, model: Policy) -> None:
        self.step += 1
        decay = min(self.max_decay, max(0.0, 1 - (1 + self.step) ** -self.power))
        for p_ema, p in zip(self.model.parameters(), model.parameters(), strict=True):
            p_ema.mul_(decay).add_(p.detach(), alpha=1 - decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)


def dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shape_meta_for(ds: ReplayDataset, obs_keys: list[str], image_keys: set[str]) -> ShapeMeta:
    attrs = ds.attrs
    return ShapeMeta(
        obs_shapes={k: list(ds.array(k).shape[1:]) for k in obs_keys},
        action_dim=int(ds.array("action").shape[1]),
        control_hz=float(attrs.get("fps", 10.0)),
        image_keys=sorted(image_keys),
        arm=str(attrs.get("robot", "")),
        task=str(attrs.get("task", "")),
        joint_names=list(attrs.get("joint_names", [])),
    )


def same_spaces(other: Policy, pc: PolicyConfig) -> bool:
    """Whether a trained policy reads observations and writes action chunks the way config `pc` does."""
    return (
        list(other.obs_keys) == list(pc.obs_keys)
        and other.horizon == pc.horizon
        and other.cfg.action_relative_to == pc.action_relative_to
        and other.cfg.angle_obs == pc.angle_obs
        and other.cfg.action_repr == pc.action_repr
    )


def same_normalizer(a: Normalizer, b: Normalizer) -> bool:
    """Whether two normalisers map every key identically (a continued student and its teacher must)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def policy_from_checkpoint(
    path: str, pc: PolicyConfig, meta: ShapeMeta, device: str
) -> tuple[Policy, dict[str, Any]]:
    """TrainConfig.init_from: a new Policy (this run's config and shapes) holding `path`'s EMA weights and normaliser.

    Also returns that checkpoint's provenance, so the new run's total_steps / total_wall_s cover every stage. A
    checkpoint whose inputs or network differ from this run's is a one-line ConfigError naming it."""
    start = load_policy(path, device=device)
    shapes = {k: list(v) for k, v in start.shape_meta.obs_shapes.items()}
    if (
        not same_spaces(start, pc)
        or shapes != {k: list(v) for k, v in meta.obs_shapes.items()}
        or start.shape_meta.action_dim != meta.action_dim
    ):
        raise ConfigError(
            f"init_from {path}: obs_keys/shapes/horizon/action_relative_to/angle_obs/action_repr "
            "differ from this run's"
        )
    policy = Policy(pc, meta, start.normalizer).to(device)
    try:
        policy.load_weights_from(
            start
        )  # a wider UNet starts as the checkpoint's function (backbones/widen.py)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"init_from {path}: network differs ({str(e).splitlines()[0]})") from None
    return policy, load_provenance(path)


def stage_totals(prov_before: dict[str, Any], steps: int, wall_s: float) -> dict[str, Any]:
    """total_steps / total_wall_s of a run that started from a checkpoint with provenance `prov_before`."""
    return {
        "total_steps": steps + int(prov_before.get("total_steps", prov_before.get("steps", 0))),
        "total_wall_s": round(
            wall_s + float(prov_before.get("total_wall_s", prov_before.get("wall_s", 0.0))), 1
        ),
    }


def check_dataset(cfg: TrainConfig) -> None:
    """A missing store is a one-line error that names the stage producing it; an unreachable URL (unknown
    protocol, missing bucket, no credentials) one that names the URL."""
    try:
        if locate(cfg.dataset).exists():
            return
    except StorageError as e:
        raise DatasetError(str(e)) from None
    if cfg.dagger.policy:
        hint = "build it with `mimic dagger <config>` (its dagger: section)"
    elif cfg.record.episodes > 0:
        hint = "record it with `mimic record <config>` (its record: section)"
    else:
        hint = "record one (`mimic record`, a teleop session) or point dataset at one"
    raise DatasetError(f"{cfg.dataset}: dataset not found; {hint}")


def preflight_dataset(cfg: TrainConfig) -> None:
    """Run the cheap store validation (attrs and lowdim time arrays) before any step, so a broken store is one
    line naming it up front instead of an exception (or silently wrong batches) somewhere inside training."""
    ds, _ = validate_store(cfg.dataset)
    if ds.n_episodes == 0:  # a valid store that nothing was recorded into yet
        raise DatasetError(f"{cfg.dataset}: no committed episodes to train on")


def rank0_pid(world: int) -> int:
    """Rank 0's process id on every rank: it names the staging sibling of a new run directory (RunDir), which
    ranks > 0 read rank 0's files from (the consistency teacher pool)."""
    pid = [os.getpid()]
    if world > 1:
        dist.broadcast_object_list(pid, src=0)
    return int(pid[0])


def finite_on_all_ranks(value: torch.Tensor, world: int) -> bool:
    """Whether `value` is finite on every rank: under DDP all ranks must stop together, or the rest hang in
    the next all-reduce."""
    ok = torch.isfinite(value.detach().float()).all().float()
    if world > 1:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


def nonfinite_stop(step: int, what: str, value: torch.Tensor, dataset: str) -> TrainingError:
    """The one-line error for a non-finite loss or gradient norm at (1-based) `step`."""
    return TrainingError(
        f"step {step}: {what} is {float(value.detach().float()):g} (non-finite); stopped before updating the "
        f"weights, no checkpoint written for this step (check the data: mimic dataset validate --deep {dataset})"
    )


def save_state(
    run_dir: Path, policy: Policy, ema: EMA, opt: torch.optim.Optimizer, step: int, wall_s: float
) -> None:
    """Everything resume needs, as safetensors + JSON (no pickle)."""
    tmp = run_dir / (STATE_DIR + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(tensors_for_save(policy.state_dict()), str(tmp / "model.safetensors"))
    save_file(tensors_for_save(ema.model.state_dict()), str(tmp / "ema.safetensors"))
    osd = opt.state_dict()
    flat = {f"{i}.{name}": torch.as_tensor(v) for i, st in osd["state"].items() for name, v in st.items()}
    save_file(tensors_for_save(flat), str(tmp / "optim.safetensors"))
    (tmp / "state.json").write_text(
        json.dumps(
            {"step": step, "wall_s": wall_s, "ema_step": ema.step, "param_groups": osd["param_groups"]}
        )
    )
    final = run_dir / STATE_DIR
    old = run_dir / (STATE_DIR + ".old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def load_state(run_dir: Path, policy: Policy, ema: EMA, opt: torch.optim.Optimizer) -> tuple[int, float]:
    """Resume from <run_dir>/train_state -> (step, wall seconds). A state that cannot be read (truncated,
    hand-edited) or no longer fits the configured network is refused in one line naming it, before the run
    directory changes: going on from part of it would mix two runs."""
    d = run_dir / STATE_DIR
    try:
        return _read_state(d, policy, ema, opt)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"{d}: cannot resume from it ({type(e).__name__}: {_reason(e)})") from None


def _reason(e: BaseException) -> str:
    """The line of an error message that says what is wrong: torch's state-dict errors open with a heading
    ending in ':' and give the first mismatch on the next line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return lines[1]
    return lines[0] if lines else ""


def _read_state(d: Path, policy: Policy, ema: EMA, opt: torch.optim.Optimizer) -> tuple[int, float]:
    meta = json.loads((d / "state.json").read_text())
    policy.load_state_dict(load_file(str(d / "model.safetensors")))
    ema.model.load_state_dict(load_file(str(d / "ema.safetensors")))
    ema.step = int(meta["ema_step"])
    flat = load_file(str(d / "optim.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"]), float(meta["wall_s"])


class Metrics:
    """metrics.csv (appended, so a resumed run continues the same file) + PNG plots."""

    def __init__(self, run_dir: Path, fresh: bool = False) -> None:
        self.path = run_dir / "metrics.csv"
        self.run_dir = run_dir
        if fresh or not self.path.exists():
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(METRIC_FIELDS)

    def log(self, **row: Any) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(["" if row.get(k) is None else row[k] for k in METRIC_FIELDS])

    def rows(self) -> list[dict[str, str]]:
        with self.path.open() as f:
            return list(csv.DictReader(f))

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()

        def series(name: str, x: str = "step") -> tuple[list[float], list[float]]:
            pts = [(float(r[x]), float(r[name])) for r in rows if r.get(name)]
            return [p[0] for p in pts], [p[1] for p in pts]

        fig, ax = plt.subplots(figsize=(7, 4))
        for name in ("loss", "val_loss", "val_action_mse"):
            xs, ys = series(name)
            if xs:
                ax.plot(xs, ys, label=name, marker="." if name != "loss" else None)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (normalised units)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.run_dir / "loss.png", dpi=90)
        plt.close(fig)
        xs, ys = series("success_rate", "wall_s")
        if xs:
            fig, ax = plt.subplots(figsize=(7, 4))
            ax.plot([x / 60 for x in xs], ys, marker="o")
            ax.set_xlabel("training wall time [min]")
            ax.set_ylabel("twin rollout success")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(self.run_dir / "success.png", dpi=90)
            plt.close(fig)


@torch.no_grad()
def validate(
    policy: Policy,
    batches: WindowBatches,
    seed: int,
    batch_size: int,
    n_batches: int = 4,
    device: str = "cpu",
) -> tuple[float, float]:
    """(mean loss, action MSE of sampled chunks in normalised units) on fixed val windows and fixed noise."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        n = min(len(batches), batch_size * n_batches)
        ids = rng.choice(len(batches), n, replace=False)
        losses, mses = [], []
        for chunk in np.array_split(ids, max(1, math.ceil(n / batch_size))):
            b = batches.batch(chunk, device)
            was = policy.training
            policy.eval()
            if policy._teacher or policy.cfg.generator != "consistency":
                losses.append(float(policy(b)))
            pred = policy.sample_actions(b["obs"])
            policy.train(was)
            norm = policy.normalizer
            mses.append(
                float(((norm.normalize("action", pred) - norm.normalize("action", b["action"])) ** 2).mean())
            )
    return (float(np.mean(losses)) if losses else float("nan")), float(np.mean(mses))


# ---- training --------------------------------------------------------------------------------------
def check_eval_target(cfg: TrainConfig) -> None:
    """The periodic rollouts' twin (eval.arm, eval.task) must exist: it is first built after training steps
    have run, so a misspelt name would otherwise crash the run at its first evaluation instead of before its
    first step."""
    if cfg.eval.episodes <= 0:
        return
    from mimic.robots.specs import ARM_NAMES
    from mimic.sim.env import TASKS

    if cfg.eval.arm not in ARM_NAMES:
        raise ConfigError(f"eval.arm: {cfg.eval.arm!r} is not a twin arm ({', '.join(ARM_NAMES)})")
    if cfg.eval.task not in TASKS:
        raise ConfigError(f"eval.task: {cfg.eval.task!r} is not a twin task ({', '.join(TASKS)})")


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train per `cfg`; returns the run directory (policy at <run_dir>/checkpoint): for a URL run_dir, the local
    staging copy of what was uploaded there."""
    cfg.validate()
    check_eval_target(cfg)
    rank, world = dist_info()
    device = cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {device} asked for, but torch sees no CUDA GPU on this machine")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    try:
        rd = RunDir.open(cfg.run_dir, rank, tag=rank0_pid(world))
    except StorageError as e:
        raise ConfigError(f"run_dir: {e}") from None
    run_dir = rd.local
    try:
        check_dataset(cfg)
        preflight_dataset(cfg)
        pc = cfg.policy
        common = dict(
            obs_keys=pc.obs_keys,
            n_obs_steps=pc.n_obs_steps,
            horizon=pc.horizon,
            n_action_steps=pc.n_action_steps,
            val_ratio=cfg.val_ratio,
            seed=cfg.seed,
        )
        train_windows = WindowDataset(cfg.dataset, split="train", **common)
        replay = train_windows.replay
        val_windows = (
            WindowDataset(cfg.dataset, split="val", **common)
            if cfg.val_ratio > 0 and replay.n_episodes > 1
            else None
        )
        meta = shape_meta_for(replay, pc.obs_keys, train_windows.image_keys)
        prep = prepare(
            pc,
            meta,
            train_windows,
            val_windows,
            dict(replay.attrs),
            progress=progress and rank == 0,
            data=cfg.data,
            shard=(rank, world),
        )
        net_cfg, data, val = prep.policy_cfg, prep.data, prep.val
        if (
            cfg.data.streaming and world > 1
        ):  # which share of the store this rank streams: a multi-node log line
            print(f"rank {rank}/{world} reads episodes {data.episodes.tolist()}", file=sys.stderr, flush=True)
        teacher = None
        if pc.generator == "consistency":
            teacher = load_policy(pc.gen.teacher, device=device)
            if not same_spaces(teacher, net_cfg):
                raise ConfigError(
                    f"policy.gen.teacher {pc.gen.teacher}: obs_keys/horizon/action_relative_to/"
                    "angle_obs/action_repr differ from the student's"
                )
        init_prov: dict[str, Any] = {}
        if cfg.init_from:  # the checkpoint's normaliser comes with its weights; nothing is fitted
            policy, init_prov = policy_from_checkpoint(cfg.init_from, net_cfg, prep.meta, device)
            if teacher is not None and not same_normalizer(policy.normalizer, teacher.normalizer):
                raise ConfigError(
                    f"init_from {cfg.init_from}: its normaliser is not its teacher's "
                    f"({pc.gen.teacher}); a student lives in its teacher's normalised space"
                )
        else:  # a student lives in its teacher's normalised space
            normalizer = (
                teacher.normalizer if teacher is not None else prep.fit_normalizer(train_windows, cfg.seed)
            )
            policy = Policy(net_cfg, prep.meta, normalizer).to(device)
        if teacher is not None:
            try:
                policy.set_teacher(teacher, init_student=not cfg.init_from)
            except ValueError as e:
                raise ConfigError(f"policy.gen.teacher {pc.gen.teacher}: {e}") from None
        targets = None
        if (
            pc.generator == "consistency" and pc.gen.cd_pool > 0
        ):  # rank 0 builds (or checks) it, the others load

            def pool() -> TeacherTargets:
                return load_or_build(
                    Path(pc.gen.cd_pool_file or run_dir / TEACHER_TARGETS),
                    policy,
                    data,
                    pc.gen.cd_pool,
                    cfg.seed,
                    device,
                    progress=progress and rank == 0,
                )

            targets = pool() if rank == 0 else None
            if world > 1:
                dist.barrier()
                targets = targets or pool()
        ema = EMA(policy, cfg.ema_power, cfg.ema_max_decay)
        opt = torch.optim.AdamW(
            policy.parameters(), lr=cfg.lr, betas=(0.95, 0.999), weight_decay=cfg.weight_decay
        )
        step, wall0 = 0, 0.0
        if cfg.resume:
            rd.pull(STATE_DIR, "metrics.csv", TEACHER_TARGETS)
        if cfg.resume and (run_dir / STATE_DIR / "state.json").exists():
            step, wall0 = load_state(run_dir, policy, ema, opt)
        first_step = step
        metrics: Metrics | None = None

        def begin() -> Metrics:
            """The run has started (a step ran, or a resumed run has none left): only now does the run directory
            move into place and get its config and metrics, so a failed start changes nothing on disk."""
            nonlocal run_dir
            try:
                run_dir = rd.commit()
            except StorageError as e:
                raise ConfigError(f"run_dir: {e}") from None
            (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            return Metrics(run_dir, fresh=first_step == 0)  # a run from scratch starts a new file

        model: torch.nn.Module = policy
        if world > 1:
            model = torch.nn.parallel.DistributedDataParallel(policy)
        local_bs = max(1, cfg.batch_size // world)
        rng = np.random.default_rng([cfg.seed, rank, step])
        n_params = sum(p.numel() for p in policy.parameters())
        bar = tqdm(
            total=cfg.steps,
            initial=step,
            desc=f"train {pc.generator}/{pc.backbone} {n_params / 1e6:.2f}M",
            disable=not (progress and rank == 0),
            unit="step",
        )
        t_start = time.monotonic()
        t_log, n_log, losses = time.monotonic(), 0, []

        def wall() -> float:
            return wall0 + time.monotonic() - t_start

        def provenance() -> dict[str, Any]:
            return {
                "dataset": str(cfg.dataset),
                "steps": step,
                "wall_s": round(wall(), 1),
                "seed": cfg.seed,
                "world_size": world,
                "n_params": n_params,
                "train_episodes": int(train_windows.train_mask.sum()),
                "train_windows": len(data),
                "train_rows": int(replay.n_steps),
                "representation": prep.representation,
                "teacher": pc.gen.teacher or None,
                "init_from": cfg.init_from or None,
                **stage_totals(init_prov, step, wall()),
            }

        def checkpoint() -> None:
            save_checkpoint(
                run_dir / CHECKPOINT_DIR, ema.model, to_dict(cfg), provenance(), processor=prep.info
            )
            save_state(run_dir, policy, ema, opt, step, wall())
            rd.push(CHECKPOINT_DIR, last=("config.yaml",))
            rd.push(STATE_DIR, last=("state.json",))
            rd.push("config.yaml", "metrics.csv", TEACHER_TARGETS)

        def rollouts() -> float | None:
            if cfg.eval.episodes <= 0:
                return None
            from mimic.workflows.evaluate import evaluate

            res = evaluate(
                deployable(ema.model, prep.info),
                cfg.eval.arm,
                cfg.eval.task,
                cfg.eval.episodes,
                seed=cfg.eval.seed,
                progress=False,
            )
            tqdm.write(f"step {step}: {res.summary()}")
            return res.success_rate

        policy.train()
        while step < cfg.steps:
            lr = lr_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            ids = rng.integers(0, len(data), local_bs)
            batch = data.batch(ids, device)
            if targets is not None:
                batch["teacher_targets"] = targets.draw(ids, rng, device)
            with torch.autocast(
                device_type="cuda" if device.startswith("cuda") else "cpu",
                dtype=torch.bfloat16,
                enabled=cfg.bf16,
            ):
                loss = model(batch)
            if not finite_on_all_ranks(loss, world):  # a NaN step would poison the weights and the EMA
                raise nonfinite_stop(step + 1, "loss", loss, cfg.dataset)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
                if not finite_on_all_ranks(grad_norm, 1):  # DDP's all-reduced grads: one norm on every rank
                    raise nonfinite_stop(step + 1, "gradient norm", grad_norm, cfg.dataset)
            opt.step()
            ema.update(policy)
            step += 1
            n_log += local_bs * world
            losses.append(loss.item())
            bar.update(1)
            if rank != 0:
                continue
            metrics = metrics or begin()
            row: dict[str, Any] = {}
            if step % cfg.log_every == 0 or step == cfg.steps:
                sps = n_log / max(1e-9, time.monotonic() - t_log)
                row.update(loss=round(float(np.mean(losses)), 6), lr=lr, samples_per_s=round(sps, 1))
                bar.set_postfix(loss=f"{np.mean(losses):.4f}", sps=f"{sps:.0f}")
                t_log, n_log, losses = time.monotonic(), 0, []
            if val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                vl, vm = validate(ema.model, val, cfg.seed, min(cfg.batch_size, 256), device=device)
                row.update(val_loss=round(vl, 6), val_action_mse=round(vm, 6))
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                checkpoint()
            if cfg.eval.episodes > 0 and (
                (cfg.eval.every and step % cfg.eval.every == 0) or step == cfg.steps
            ):
                row["success_rate"] = rollouts()
            if row:
                metrics.log(step=step, wall_s=round(wall(), 2), **row)
        bar.close()
        if rank == 0:
            metrics = metrics or begin()
            if not (run_dir / CHECKPOINT_DIR).exists():  # resumed at/after the last step
                checkpoint()
            metrics.plot()
            rd.push("metrics.csv", "loss.png", "success.png")
    except BaseException:
        if rank == 0:
            rd.discard()  # a failed start leaves nothing new; a started run keeps what it wrote
        raise
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return rd.final or run_dir  # ranks > 0: the run directory rank 0 committed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mimic train", description="train a policy from a YAML config")
    ap.add_argument("config", help="YAML config (see policies/configs/)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set steps=500 --set policy.generator=diffusion",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        cfg = load_train_config(args.config, args.set)
        run_dir = train(cfg, progress=not args.no_progress)
    except (ConfigError, DatasetError, CheckpointError, TrainingError, StorageError, FileNotFoundError) as e:
        print(f"mimic train: {e}", file=sys.stderr)
        return 2
    if dist_info()[0] == 0:
        print(
            f"{cfg.run_dir.rstrip('/')}/{CHECKPOINT_DIR}" if is_url(cfg.run_dir) else run_dir / CHECKPOINT_DIR
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
