"""`mimic dagger <config.yaml>` | `mimic dagger <checkpoint> <out>`: the scripted expert's answer on the states a
trained policy reaches.

With a training config, its `dagger:` section builds its `dataset`: `dagger.demos` plus the expert branches from
`dagger.policy`'s rollouts (one DAgger round, before `mimic train` of that config). With a checkpoint, the
branches alone are written to a new store.

Behaviour cloning only sees the expert's own states. A policy's small errors take it off them (the push_t
block turned a little, the pusher on the wrong side) and from there it has never seen what to do, so the
errors compound. DAgger (Ross, Gordon & Bagnell 2011) closes the gap: roll the policy out, ask the expert
what it would do from the states the policy visited, add those demonstrations, retrain.

The expert here is stateful (a push plan it follows for several steps), so its answer is a whole
demonstration, not one label: a second env replays the policy's executed actions from the same seed
(MuJoCo is deterministic; the replayed state is checked against the rollout's), and every `branch_every`
control steps its state is copied into a third env (TwinEnv.copy_state_from), where a fresh expert takes
over and runs to success plus `hold_steps`, and that branch becomes one episode of the output store. Branches end the way recorded demonstrations end
(holding at the goal), so no training window is padded past a cut-off motion. Branches the expert does not
finish within `branch_max_steps` are dropped and counted.

The output store has the streams mimic.workflows.record_expert writes, so `mimic dataset merge <demos> <out> <merged>` joins it
to the demonstrations it was trained on. Rollout seeds default to 50000+, apart from the recorded demos
(0, 1, ...) and from evaluation's held-out seeds (100000+).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mimic.data.dataset import DatasetError, ReplayDataset, open_group
from mimic.data.transform import merge
from mimic.policies.config import ConfigError, TrainConfig, load_train_config
from mimic.sim.env import make_env
from mimic.sim.expert import make_expert
from mimic.workflows.evaluate import load_twin_policy, policy_cameras
from mimic.workflows.record_expert import EPISODE_GAP_S, create_twin_store, write_twin_episode
from mimic.workflows.rollout import rollout

DEFAULT_SEED = 50_000


@dataclass
class DaggerStats:
    """What a collection run produced."""

    path: Path
    rollouts: int
    policy_successes: int  # rollouts the policy itself finished
    branches: int  # expert branches started
    kept: int  # branches the expert finished (the episodes written)
    steps: int  # rows written


class _ActionLog:
    """An env that remembers the actions stepped since its last reset (for replaying a rollout's prefix)."""

    def __init__(self, env) -> None:
        self.env, self.actions = env, []

    def reset(self, seed: int | None = None):
        self.actions = []
        return self.env.reset(seed=seed)

    def step(self, action):
        self.actions.append(np.asarray(action, float).copy())
        return self.env.step(action)

    def __getattr__(self, name: str):
        return getattr(self.env, name)


def expert_branch(
    env, expert, obs: dict[str, np.ndarray], max_steps: int, hold_steps: int
) -> list[tuple[dict[str, np.ndarray], np.ndarray]] | None:
    """A fresh expert from `obs` (env's current state) to success + hold_steps -> rows, or None if it fails.

    The env's own step limit is ignored here: a branch from late in a rollout gets its own `max_steps`."""
    expert.reset()
    rows: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    for _ in range(max_steps):
        act = expert.act(obs)
        rows.append((obs, act))
        obs, _, ok, _, _ = env.step(act)
        if ok:
            for _ in range(hold_steps):
                act = expert.act(obs)
                rows.append((obs, act))
                obs = env.step(act)[0]
            return rows
    return None


def collect_dagger(
    policy,
    arm: str,
    task: str,
    out: str | Path,
    rollouts: int,
    seed: int = DEFAULT_SEED,
    branch_every: int = 16,
    branch_max_steps: int = 200,
    hold_steps: int = 10,
    num_inference_steps: int | None = None,
    progress: bool = True,
    source: str = "a policy",
    workers: int = 1,
    on_rollout: Callable[[], None] | None = None,
) -> DaggerStats:
    """Roll `policy` out `rollouts` times (seeds seed, seed+1, ...) and write expert branches into store `out`.

    workers > 1 splits the seeds into contiguous ranges, one forked process each (one torch thread), each
    writing its own store beside `out`; those are merged into `out` in seed order and removed."""
    if rollouts < 1 or branch_every < 1 or branch_max_steps < 1 or hold_steps < 0 or workers < 1:
        raise ValueError(
            f"dagger: rollouts, branch_every, branch_max_steps and workers must be >= 1 and hold_steps "
            f">= 0, got {rollouts}, {branch_every}, {branch_max_steps}, {workers}, {hold_steps}"
        )
    if workers > 1 and rollouts > 1:
        return _collect_parallel(
            policy,
            arm,
            task,
            Path(out),
            rollouts,
            seed,
            min(workers, rollouts),
            dict(
                branch_every=branch_every,
                branch_max_steps=branch_max_steps,
                hold_steps=hold_steps,
                num_inference_steps=num_inference_steps,
                source=source,
            ),
            progress,
        )
    cams, image_size = policy_cameras(policy)
    live = _ActionLog(make_env(task, arm, seed=seed, cameras=cams, image_size=image_size))
    twin = make_env(task, arm, seed=seed, cameras=cams, image_size=image_size)
    replayer = make_env(task, arm, seed=seed, cameras=(), image_size=image_size)
    expert = make_expert(twin)
    writer = create_twin_store(
        out,
        twin,
        twin.reset(seed=seed),
        {
            "source": f"mimic.workflows.dagger expert branches from {source}",
            "dagger_branch_every": branch_every,
            "dagger_hold_steps": hold_steps,
        },
    )
    stats = DaggerStats(Path(out), rollouts, 0, 0, 0, 0)
    seeds: list[int] = []  # the rollout seed of each written branch
    bar = tqdm(total=rollouts, desc=f"dagger {arm}/{task}", disable=not progress, unit="rollout")
    try:
        for ep_seed in range(seed, seed + rollouts):
            seen: list[dict[str, np.ndarray]] = []
            ep = rollout(policy, live, ep_seed, num_inference_steps, on_step=seen.append)
            ok, steps = ep.success, ep.steps
            stats.policy_successes += ok
            actions = list(live.actions)
            replayer.reset(seed=ep_seed)
            twin.reset(
                seed=ep_seed
            )  # the seed's goal and colours (model edits); each branch then copies the state
            done = 0
            for t in range(branch_every, steps, branch_every):
                for a in actions[done:t]:  # the replay advances once per rollout, not once per branch
                    replayer.step(a)
                done = t
                obs = twin.copy_state_from(replayer)
                for k in ("robot0_joint_pos", "object_state"):
                    if not np.allclose(obs[k], seen[t][k], atol=1e-9):
                        raise RuntimeError(
                            f"dagger: seed {ep_seed} step {t}: replayed {k} differs from the rollout "
                            "(the twin is not deterministic here)"
                        )
                stats.branches += 1
                rows = expert_branch(twin, expert, obs, branch_max_steps, hold_steps)
                if rows is None:
                    continue
                stats.steps += write_twin_episode(writer, rows, stats.kept * EPISODE_GAP_S, twin)
                stats.kept += 1
                seeds.append(ep_seed)
            bar.update(1)
            if on_rollout is not None:
                on_rollout()
            bar.set_postfix(
                policy_ok=f"{stats.policy_successes}/{bar.n}", branches=f"{stats.kept}/{stats.branches}"
            )
    finally:
        bar.close()
        writer.root.attrs.update(_branch_attrs(seeds, stats))
        writer.close()
        live.close()
        twin.close()
        replayer.close()
    return stats


def _branch_attrs(seeds: list[int], stats: DaggerStats) -> dict:
    """The store attrs a collection ends with: the rollout seed of each written branch (every one finished)
    and the run's counts."""
    return {
        "expert_success": [True] * len(seeds),
        "expert_seeds": seeds,
        "dagger_rollouts": stats.rollouts,
        "dagger_policy_successes": stats.policy_successes,
        "dagger_branches_started": stats.branches,
    }


_WORKER: dict = {}  # per forked worker: the policy, the shared rollout counter


def _worker_collect(job: tuple[str, str, str, int, int, dict]) -> DaggerStats:
    arm, task, out, rollouts, seed, kw = job
    torch.set_num_threads(1)
    counter = _WORKER["done"]

    def tick() -> None:
        with counter.get_lock():
            counter.value += 1

    return collect_dagger(
        _WORKER["policy"], arm, task, out, rollouts, seed, progress=False, on_rollout=tick, **kw
    )


def _collect_parallel(
    policy, arm: str, task: str, out: Path, rollouts: int, seed: int, workers: int, kw: dict, progress: bool
) -> DaggerStats:
    if out.exists():
        raise ValueError(f"dagger: {out}: output already exists")
    ctx = mp.get_context("fork")
    chunks = [c for c in np.array_split(np.arange(seed, seed + rollouts), workers) if c.size]
    parts = [out.with_name(f"{out.name}.part{k}") for k in range(len(chunks))]
    for p in parts:
        shutil.rmtree(p, ignore_errors=True)
    _WORKER.clear()
    _WORKER.update(policy=policy, done=ctx.Value("i", 0))
    bar = tqdm(
        total=rollouts,
        desc=f"dagger {arm}/{task} ({len(chunks)} workers)",
        disable=not progress,
        unit="rollout",
    )
    try:
        with ProcessPoolExecutor(len(chunks), mp_context=ctx) as pool:
            futures = [
                pool.submit(_worker_collect, (arm, task, str(p), int(c.size), int(c[0]), kw))
                for p, c in zip(parts, chunks, strict=True)
            ]
            while wait(futures, timeout=1.0).not_done:
                bar.update(_WORKER["done"].value - bar.n)
            results = [f.result() for f in futures]
        bar.update(rollouts - bar.n)
    finally:
        bar.close()
        _WORKER.clear()
    merge([str(p) for p in parts], str(out))
    firsts = [ReplayDataset(p).attrs for p in parts]
    stats = DaggerStats(
        out,
        rollouts,
        *(sum(getattr(r, f) for r in results) for f in ("policy_successes", "branches", "kept", "steps")),
    )
    seeds = [s for a in firsts for s in a["expert_seeds"]]
    attrs = {k: v for k, v in firsts[0].items() if k.startswith("dagger_") or k == "source"}
    attrs.update(_branch_attrs(seeds, stats))
    open_group(out, "r+").attrs.update(attrs)
    for p in parts:
        shutil.rmtree(p)
    return stats


def build_dagger_dataset(cfg: TrainConfig, progress: bool = True) -> bool:
    """`cfg.dataset` = `dagger.demos` + expert branches from `dagger.policy`'s rollouts, unless it exists ->
    whether it was built. The branches are kept beside it as <dataset stem>.branches.zarr, so a crash in the
    merge does not cost the rollouts."""
    d, out = cfg.dagger, Path(cfg.dataset)
    if out.exists():
        return False
    if not d.policy:
        raise ConfigError("dagger.policy: this config names no policy to roll out")
    for path, what in ((d.policy, "dagger.policy"), (d.demos, "dagger.demos")):
        if not Path(path).exists():
            raise DatasetError(f"{path}: {what} not found (train/record it first)")
    branches = out.with_name(out.stem + ".branches.zarr")
    if not branches.exists():  # collected under another name first: a killed run leaves no short store behind
        partial = branches.with_name(branches.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        policy, arm, task = load_twin_policy(d.policy)
        st = collect_dagger(
            policy,
            arm,
            task,
            partial,
            d.rollouts,
            d.seed,
            d.branch_every,
            source=d.policy,
            workers=d.workers,
            progress=progress,
        )
        tqdm.write(
            f"dagger: {st.kept} of {st.branches} expert branches kept ({st.steps} steps); {d.policy} "
            f"finished {st.policy_successes} of {st.rollouts} rollouts"
        )
        partial.rename(branches)
    merge([d.demos, str(branches)], str(out))
    return True


def _main_config(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="mimic dagger",
        description="build a training config's dataset from its "
        "dagger: section (demos + expert branches); an existing dataset is kept",
    )
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from mimic.policies.checkpoint import CheckpointError

    torch.set_num_threads(max(1, args.threads))
    try:
        cfg = load_train_config(args.config, args.set)
        built = build_dagger_dataset(cfg, progress=not args.no_progress)
    except (ConfigError, CheckpointError, DatasetError, ValueError, FileNotFoundError) as e:
        print(f"mimic dagger: {e}", file=sys.stderr)
        return 2
    print(f"{cfg.dataset}{'' if built else ' (exists, kept)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        return _main_config(argv)
    ap = argparse.ArgumentParser(
        prog="mimic dagger",
        description="expert demonstrations from the states a policy "
        "reaches (DAgger); merge the store with the demos and retrain",
    )
    ap.add_argument("checkpoint", help="checkpoint directory (e.g. <run_dir>/checkpoint)")
    ap.add_argument("out", help="new store for the expert branches")
    ap.add_argument("--rollouts", type=int, default=100)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--branch-every", type=int, default=16, help="control steps between branch points")
    ap.add_argument(
        "--branch-max-steps",
        type=int,
        default=200,
        help="a branch the expert has not finished by then is dropped",
    )
    ap.add_argument(
        "--hold-steps",
        type=int,
        default=10,
        help="expert steps kept after its success (as mimic.workflows.record_expert)",
    )
    ap.add_argument("--steps", type=int, default=None, help="num_inference_steps (default: the policy's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--workers", type=int, default=1, help="rollout processes (forked; one torch thread each)"
    )
    args = ap.parse_args(argv)
    from mimic.policies.checkpoint import CheckpointError

    torch.set_num_threads(max(1, args.threads))
    try:
        policy, arm, task = load_twin_policy(args.checkpoint)
        st = collect_dagger(
            policy,
            arm,
            task,
            args.out,
            args.rollouts,
            args.seed,
            args.branch_every,
            args.branch_max_steps,
            args.hold_steps,
            args.steps,
            source=args.checkpoint,
            workers=args.workers,
        )
    except (CheckpointError, DatasetError, ValueError, KeyError) as e:
        print(f"mimic dagger: {e}", file=sys.stderr)
        return 2
    print(
        f"{st.path}: {st.kept} expert branches ({st.steps} steps) of {st.branches} started, from {st.rollouts} "
        f"rollouts the policy finished {st.policy_successes} of"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
