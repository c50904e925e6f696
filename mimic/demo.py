"""`mimic demo [--arm franka|ur5e|xarm7]`: the whole loop on a twin, one command.

Stages (each a separate, resumable step; a rerun reuses a finished stage whose inputs did not change,
unless `--fresh` names it or `all`):

1. record  teleop session through the supervisor: the scripted operator moves the emulated GELLO
           leader (a Dynamixel bus on a pty), the leader node reads it through dynamixel-sdk, the
           controller follows, the twin arm moves, the ROS recorder writes N episodes to Zarr.
2. train   a policy on that dataset (mimic.workflows.train, CPU), with loss plots.
3. deploy  the checkpoint through the ROS deploy session (policy node, chunk-mode controller with
           latency matching, twin arm with injected camera/arm latency), M evaluation episodes.
4. report  success rate with a 95% interval, stage timings, paths of the dataset, checkpoint, plots
           and rollout videos, as report.md + report.json in the run directory.

The terminal shows one progress view per stage (episodes recorded, training steps, rollouts) rather than
the nodes' output: every ROS node of a stage writes to `<run_dir>/logs/<stage>/<node>.log`, and when a
node fails its name and the last lines of its log are printed (mimic_ros.session_view).

The sizes default to what finishes on 2 CPU cores in tens of minutes; `--quick` is the CI size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ARMS = ("franka", "ur5e", "xarm7")
STAGES = ("record", "train", "deploy")


def default_train_config(task: str) -> str:
    """The task's state-observation flow config: the fastest generator to a good result on CPU."""
    import mimic.policies  # light: its names load on first use

    # package data of mimic.policies, so an installed mimic finds the configs as the checkout does
    return str(Path(mimic.policies.__file__).resolve().parent / "configs" / f"{task}_state_flow.yaml")


@dataclass
class DemoConfig:
    # reach by default: it trains to a high success on 2 CPU cores in minutes (pick_place needs ~200 demos
    # and much longer training; see docs/results.md), so the loop's result says whether the loop works.
    arm: str = "franka"
    task: str = "reach"
    demos: int = 60
    train_steps: int = 2000
    eval_episodes: int = 20
    camera_latency_s: float = 0.15
    arm_latency_s: float = 0.10
    train_config: str = ""  # "" = default_train_config(task)
    out: str = "runs/demo"
    seed: int = 0
    fresh: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.train_config:
            self.train_config = default_train_config(self.task)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.arm


QUICK = {"demos": 30, "train_steps": 1500, "eval_episodes": 10}


class DemoError(RuntimeError):
    """A stage failed; the message says which and why (the stage's node logs say the rest)."""


def _fingerprint(d: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def say(text: str) -> None:
    """One line of the demo's own: what a stage is about to do, and what it did."""
    print(text, flush=True)


def run_stage(
    name: str,
    cfg: DemoConfig,
    inputs: dict[str, Any],
    fn: Callable[[], dict[str, Any]],
    what: str,
    summary: Callable[[dict[str, Any]], str],
) -> dict:
    """Run `fn` unless `<run_dir>/<name>.json` holds a result for the same inputs (and no --fresh).

    The terminal gets a line saying what the stage does, the stage's one progress view (its session's
    progress line, or training's bar), and a line with what it produced."""
    marker = cfg.run_dir / f"{name}.json"
    key = _fingerprint(inputs)
    if marker.exists() and name not in cfg.fresh and "all" not in cfg.fresh:
        done = json.loads(marker.read_text())
        if done.get("inputs_key") == key:
            say(f"{name}: reusing the finished stage ({marker}; --fresh {name} redoes it): {summary(done)}")
            return done
    say(f"{name}: {what}")
    t0 = time.monotonic()
    result = fn()
    result.update(stage=name, inputs_key=key, wall_s=round(time.monotonic() - t0, 1), finished_at=time.time())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(result, indent=1, default=str))
    say(f"{name}: done in {result['wall_s']:.0f} s: {summary(result)}")
    return result


def _ros_env() -> dict[str, str]:
    """The environment every ROS process of the demo gets: DDS on this machine, a domain of its own."""
    env = os.environ.copy()
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    # 1-100 like the Makefile and tests: ids above 101 map DDS ports into Linux's ephemeral range.
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stage_logs(cfg: DemoConfig, stage: str) -> Path:
    """Where a stage's node logs go: `<run_dir>/logs/<stage>/<node>.log`, beside its `session.log`."""
    return cfg.run_dir.resolve() / "logs" / stage


def _run_session(
    stage: str, cfg: DemoConfig, session_name: str, overrides: list[str], time_limit_s: float
) -> None:
    """A ROS session in this process under the supervisor: its nodes' output in the stage's log folder, one
    progress line on the terminal, and the failing node's log tail if it fails (then DemoError)."""
    from mimic_ros.session import load_session
    from mimic_ros.session_view import ProgressView
    from mimic_ros.supervisor import EXIT_INTERRUPTED, run_session

    session = load_session(session_name, overrides)
    logs = stage_logs(cfg, stage)
    code = run_session(
        session, logs, ProgressView(stage, announce=False), env=_ros_env(), time_limit_s=time_limit_s
    )
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    if code != 0:
        raise DemoError(
            f"{stage}: the {session.name} session failed (exit status {code}); node logs in {logs}/"
        )


# ---- stages ------------------------------------------------------------------------------------------


def record_stage(cfg: DemoConfig) -> dict[str, Any]:
    """Teleop session on the twin: operator -> emulated GELLO bus -> leader -> controller -> twin -> recorder."""
    from mimic.data.validate import validate

    run = cfg.run_dir.resolve()
    dataset = run / "demos.zarr"
    if dataset.exists():  # a half-recorded store from an interrupted run: record afresh
        import shutil

        shutil.rmtree(dataset)
    bus = run / "gello"
    sets = {
        "arm.backend": f"twin:{cfg.arm}",
        "arm.task": cfg.task,
        "arm.seed": cfg.seed * 1000,
        "controller.arm": cfg.arm,
        "recorder.arm": cfg.arm,
        "recorder.task": cfg.task,
        "recorder.path": str(dataset),
        "operator.arm": cfg.arm,
        "operator.task": cfg.task,
        "operator.episodes": cfg.demos,
        "operator.bus_link": str(bus / "port"),
        "operator.calibration": str(bus / "calibration.json"),
        "operator.results_path": str(run / "operator.json"),
        "leader.port": str(bus / "port"),
        "leader.calibration": str(bus / "calibration.json"),
        "leader.follower": cfg.arm,
        # A take the recorder could not keep whole (a stream paused on a CPU-starved machine) is redone, as a
        # person would; joint gaps up to 2 x 0.25 s are interpolated on the 10 Hz grid.
        "operator.retries": max(3, cfg.demos),
        "recorder.tolerance_s": 0.25,
    }
    bus.mkdir(parents=True, exist_ok=True)
    _run_session(
        "record", cfg, "teleop_twin", [f"{k}={v}" for k, v in sets.items()], time_limit_s=60 + 40 * cfg.demos
    )
    ds, stats = validate(dataset)
    operator = json.loads((run / "operator.json").read_text()) if (run / "operator.json").exists() else {}
    episodes = operator.get("episodes", [])
    return {
        "dataset": str(dataset),
        "episodes": ds.n_episodes,
        "steps": ds.n_steps,
        "expert_success": sum(bool(e.get("success")) for e in episodes),
        "expert_episodes": len(episodes),
        "max_alignment_error_ms": round(1e3 * max(stats.max_error_s.values(), default=0.0), 2),
    }


def train_overrides(cfg: DemoConfig, dataset: str) -> list[str]:
    """What the demo sets on its training config: its own dataset, run directory, steps and seed; no recording
    or periodic rollouts (the deploy stage evaluates), and one intra-op thread, since on a shared 2-core
    machine two threads can run many times slower than one."""
    return [
        f"dataset={dataset}",
        f"run_dir={cfg.run_dir.resolve() / 'train'}",
        f"steps={cfg.train_steps}",
        f"seed={cfg.seed}",
        "record.episodes=0",
        "eval.episodes=0",
        "resume=false",
        "threads=1",
    ]


def check_sizes(cfg: DemoConfig) -> None:
    """--demos and --eval-episodes are read by the record and deploy stages, minutes apart: a count below one is
    refused before the first stage starts, not after recording and training have run."""
    for flag, value in (("--demos", cfg.demos), ("--eval-episodes", cfg.eval_episodes)):
        if value < 1:
            raise DemoError(f"{flag} {value}: must be at least 1")


def check_train_config(cfg: DemoConfig) -> None:
    """Load the training config, with the demo's overrides, before the record stage: a config that cannot
    train would otherwise be found only after minutes of teleop recording."""
    from mimic.policies.config import ConfigError, load_train_config

    try:
        load_train_config(cfg.train_config, train_overrides(cfg, str(cfg.run_dir / "demos.zarr")))
    except ConfigError as e:
        msg = str(e)
        raise DemoError(msg if cfg.train_config in msg else f"{cfg.train_config}: {msg}") from None


def train_stage(cfg: DemoConfig, dataset: str) -> dict[str, Any]:
    """Train the demo's policy on the recorded store (mimic.workflows.train; loss plot in the run directory)."""
    from mimic.policies.config import load_train_config
    from mimic.workflows.train import CHECKPOINT_DIR, train

    tcfg = load_train_config(cfg.train_config, train_overrides(cfg, dataset))
    out = train(tcfg)
    return {
        "run_dir": str(out),
        "checkpoint": str(out / CHECKPOINT_DIR),
        "loss_plot": str(out / "loss.png"),
        "steps": cfg.train_steps,
        "generator": tcfg.policy.generator,
        "backbone": tcfg.policy.backbone,
    }


def deploy_stage(cfg: DemoConfig, checkpoint: str) -> dict[str, Any]:
    """The checkpoint through the ROS deploy session with injected latency and matching on; rollouts recorded."""
    from mimic.data.dataset import ReplayDataset
    from mimic.data.export import video

    run = cfg.run_dir.resolve()
    results = run / "deploy.json"
    rollouts = run / "rollouts.zarr"
    if rollouts.exists():
        import shutil

        shutil.rmtree(rollouts)
    from mimic_ros.deploy import build_parser, checkpoint_action_space, session_overrides

    # `mimic deploy`'s own arguments -> session overrides, so the demo deploys exactly as that command does
    args = build_parser().parse_args(
        [
            checkpoint,
            "--arm",
            f"twin:{cfg.arm}",
            "--task",
            cfg.task,
            "--episodes",
            str(cfg.eval_episodes),
            "--camera-latency-s",
            str(cfg.camera_latency_s),
            "--arm-latency-s",
            str(cfg.arm_latency_s),
            "--results",
            str(results),
            "--record",
            str(rollouts),
        ]
    )
    if results.exists():
        results.unlink()
    overrides = session_overrides(args, str(results), checkpoint_action_space(checkpoint))
    _run_session("deploy", cfg, args.session, overrides, time_limit_s=120 + 40 * cfg.eval_episodes)
    if not results.exists():
        raise DemoError(f"deploy: the session ended without results ({results})")
    episodes = json.loads(results.read_text()).get("episodes", [])
    videos = []
    if rollouts.exists():
        ds = ReplayDataset(rollouts)
        for i in range(min(2, ds.n_episodes)):
            out = run / "videos" / f"rollout_{i}.mp4"
            out.parent.mkdir(parents=True, exist_ok=True)
            video(ds, out, episode=i)
            videos.append(str(out))
    ok = sum(bool(e["success"]) for e in episodes)
    return {
        "episodes": len(episodes),
        "successes": ok,
        "results": str(results),
        "rollouts": str(rollouts),
        "videos": videos,
        "outcomes": [bool(e["success"]) for e in episodes],
    }


# ---- report ------------------------------------------------------------------------------------------
def _strip(rollouts: str, out: Path) -> str | None:
    """A PNG strip of a rollout's scene camera (six moments), the picture the README shows.

    The longest of the first five rollouts: the one that shows the most motion (the recorder may start the
    first rollout's episode a few steps late, while it waits for fresh samples on every stream)."""
    import numpy as np

    from mimic.data.dataset import ReplayDataset

    if not Path(rollouts).exists():
        return None
    ds = ReplayDataset(rollouts)
    if ds.n_episodes == 0 or "camera0_rgb" not in ds.keys:
        return None
    longest = max(
        range(min(5, ds.n_episodes)), key=lambda e: ds.episode_slice(e).stop - ds.episode_slice(e).start
    )
    frames = ds.episode(longest, ["camera0_rgb"])["camera0_rgb"]
    picks = np.linspace(0, len(frames) - 1, 6).round().astype(int)
    import imageio.v3 as iio

    strip = np.concatenate([frames[i] for i in picks], axis=1)
    iio.imwrite(out, strip.repeat(2, axis=0).repeat(2, axis=1))  # 2x: the policy's 96 px frames are small
    return str(out)


def wilson(successes: int, n: int) -> tuple[float, float]:
    from mimic.workflows.eval_result import wilson_interval

    return wilson_interval(successes, n)


def write_report(cfg: DemoConfig, stages: dict[str, dict[str, Any]], total_s: float) -> dict[str, Any]:
    rec, tr, dep = stages["record"], stages["train"], stages["deploy"]
    lo, hi = wilson(dep["successes"], dep["episodes"])
    rate = dep["successes"] / max(1, dep["episodes"])
    picture = _strip(dep["rollouts"], cfg.run_dir / "rollout_strip.png")
    report = {
        "arm": cfg.arm,
        "task": cfg.task,
        "success_rate": rate,
        "ci95": [lo, hi],
        "successes": dep["successes"],
        "episodes": dep["episodes"],
        "latency_injected_ms": {"camera": cfg.camera_latency_s * 1e3, "arm": cfg.arm_latency_s * 1e3},
        "stage_wall_s": {k: v["wall_s"] for k, v in stages.items()},
        "total_wall_s": round(total_s, 1),
        "paths": {
            "dataset": rec["dataset"],
            "checkpoint": tr["checkpoint"],
            "loss_plot": tr["loss_plot"],
            "rollouts": dep["rollouts"],
            "videos": dep["videos"],
            "picture": picture,
        },
        "demos": {
            "episodes": rec["episodes"],
            "steps": rec["steps"],
            "expert_success": f"{rec['expert_success']}/{rec['expert_episodes']}",
        },
        "policy": {"generator": tr["generator"], "backbone": tr["backbone"], "train_steps": tr["steps"]},
        "config": asdict(cfg),
    }
    (cfg.run_dir / "report.json").write_text(json.dumps(report, indent=1))
    lines = [
        f"# Mimic demo: {cfg.arm} twin, {cfg.task}",
        "",
        f"**Success {dep['successes']}/{dep['episodes']} = {100 * rate:.0f}%** (95% CI {100 * lo:.0f}-{100 * hi:.0f}%), "
        f"deployed through ROS with {cfg.camera_latency_s * 1e3:.0f} ms camera and {cfg.arm_latency_s * 1e3:.0f} ms "
        "arm latency injected, latency matching on.",
        "",
        "| stage | what | wall time |",
        "|---|---|---|",
        f"| record | {rec['episodes']} teleop demos through the emulated GELLO ({rec['steps']} steps, expert "
        f"success {rec['expert_success']}/{rec['expert_episodes']}) | {rec['wall_s']:.0f} s |",
        f"| train | {tr['generator']} / {tr['backbone']}, {tr['steps']} steps on CPU | {tr['wall_s']:.0f} s |",
        f"| deploy | {dep['episodes']} episodes through the ROS deploy session | {dep['wall_s']:.0f} s |",
        f"| total | | {total_s:.0f} s |",
        "",
        f"- dataset: `{rec['dataset']}`",
        f"- checkpoint: `{tr['checkpoint']}`",
        f"- loss plot: `{tr['loss_plot']}`",
        f"- rollouts: `{dep['rollouts']}`; videos: {', '.join(f'`{v}`' for v in dep['videos']) or 'none'}",
    ]
    if picture:
        lines.append(f"- picture: `{picture}`")
    (cfg.run_dir / "report.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines), flush=True)
    return report


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    if cfg.arm not in ARMS:
        raise DemoError(f"--arm {cfg.arm}: use one of {', '.join(ARMS)}")
    if not Path(cfg.train_config).is_file():
        raise DemoError(
            f"training config {cfg.train_config} not found (pass --train-config for task {cfg.task!r})"
        )
    check_sizes(cfg)
    check_train_config(cfg)
    t0 = time.monotonic()
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    say(f"mimic demo: {cfg.arm} twin, task {cfg.task}, run directory {cfg.run_dir}")
    say(f"node logs: {cfg.run_dir / 'logs'}/<stage>/<node>.log (the terminal shows progress only)")
    stages: dict[str, dict[str, Any]] = {}
    base = {"arm": cfg.arm, "task": cfg.task, "seed": cfg.seed}
    stages["record"] = run_stage(
        "record",
        cfg,
        {**base, "demos": cfg.demos},
        lambda: record_stage(cfg),
        f"{cfg.demos} teleop demos through the emulated GELLO leader (logs: {stage_logs(cfg, 'record')}/)",
        lambda r: (
            f"{r['episodes']} episodes, {r['steps']} steps, expert success "
            f"{r['expert_success']}/{r['expert_episodes']}"
        ),
    )
    ds = stages["record"]["dataset"]
    train_in = {
        **base,
        "record_done": stages["record"]["finished_at"],
        "steps": cfg.train_steps,
        "config": Path(cfg.train_config).read_text(),
    }  # run_demo checked it is a file
    stages["train"] = run_stage(
        "train",
        cfg,
        train_in,
        lambda: train_stage(cfg, ds),
        f"{cfg.train_steps} steps on CPU ({Path(cfg.train_config).name})",
        lambda r: f"checkpoint {r['checkpoint']}",
    )
    ckpt = stages["train"]["checkpoint"]
    deploy_in = {
        **base,
        "train_done": stages["train"]["finished_at"],
        "episodes": cfg.eval_episodes,
        "latency": [cfg.camera_latency_s, cfg.arm_latency_s],
    }
    stages["deploy"] = run_stage(
        "deploy",
        cfg,
        deploy_in,
        lambda: deploy_stage(cfg, ckpt),
        f"{cfg.eval_episodes} episodes through ROS, {cfg.camera_latency_s * 1e3:.0f} ms camera / "
        f"{cfg.arm_latency_s * 1e3:.0f} ms arm latency injected (logs: {stage_logs(cfg, 'deploy')}/)",
        lambda r: f"{r['successes']}/{r['episodes']} episodes succeeded",
    )
    return write_report(cfg, stages, time.monotonic() - t0)


def build_parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(prog="mimic demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", default=d.arm, choices=ARMS)
    p.add_argument("--task", default=d.task)
    p.add_argument("--demos", type=int, default=None, help=f"teleop episodes to record (default {d.demos})")
    p.add_argument("--train-steps", type=int, default=None, help=f"training steps (default {d.train_steps})")
    p.add_argument(
        "--eval-episodes", type=int, default=None, help=f"deploy episodes (default {d.eval_episodes})"
    )
    p.add_argument(
        "--train-config",
        default="",
        help="policy/training YAML (mimic.policies.config); default policies/configs/<task>_state_flow.yaml",
    )
    p.add_argument("--out", default=d.out, help="run directory root (one folder per arm)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quick", action="store_true", help=f"CI-sized run: {QUICK}")
    p.add_argument(
        "--fresh",
        action="append",
        default=[],
        choices=[*STAGES, "all"],
        help="redo this stage (and what depends on it) even if it finished",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    sizes = dict(QUICK) if a.quick else {}
    for name in ("demos", "train_steps", "eval_episodes"):
        if getattr(a, name) is not None:
            sizes[name] = getattr(a, name)
    cfg = DemoConfig(
        arm=a.arm,
        task=a.task,
        train_config=a.train_config,
        out=a.out,
        seed=a.seed,
        fresh=list(a.fresh),
        **sizes,
    )
    try:
        run_demo(cfg)
    except (DemoError, OSError, ValueError) as e:
        print(f"mimic demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "mimic demo: interrupted; finished stages are kept, a rerun resumes after them", file=sys.stderr
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
