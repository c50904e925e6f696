"""`mimic deploy <checkpoint> --arm twin:franka --task pick_place`: a checkpoint through the ROS deploy session.

Runs `config/deploy_twin.yaml` under the supervisor (arm node on the twin with injected latency, controller
in chunk mode, policy node, optional rollout recorder, evaluator), then prints the per-episode table and
the success rate. The twin's injected latencies are ground truth; matching compensates with the same
values unless `--match-camera-s/--match-arm-s` give others (e.g. calibrated ones); `--no-matching` runs
the naive loop on the same seeds, for the with/without comparison.

The controller's mode follows the checkpoint's kind (the one place it is chosen): `chunk` for a joint-space
policy, `eef` for an end-effector policy (an eef_relative checkpoint, mimic.policies.processors; a py:module:factory whose
factory, class or function, has `action_space = "eef"`), whose TCP-pose chunks the controller solves by IK.
With `mimic session up deploy_twin` set it yourself: `--set controller.mode=eef`.

    mimic deploy runs/pp/ckpt --arm twin:franka --task pick_place --episodes 10 \
        --camera-latency-s 0.15 --arm-latency-s 0.1 [--no-matching] [--record rollouts.zarr]

A two-gripper checkpoint (`grippers` 2: trained on UMI-style bimanual demos, docs/bimanual.md) runs on two
twin arms of `--arm` at one table instead: `config/deploy_bimanual_twin.yaml`, one controller per arm, each
episode starting with both TCPs at demo-like start poses (`--start handheld`, as `mimic eval`); that twin
injects no latency, so the latency options must stay 0 there.

`--object-latency-s` delays /objects/state too (default 0: the twin reports objects live). A state policy
sees no camera, so on a moving target (task track) set it to the camera latency, as a tracker working on
those frames would be: docs/latency_matching.md measures track that way.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mimic.policies.chunk_policy import SCRIPTED_PREFIX, action_space_of, scripted_factory
from mimic.policies.realtime import add_chunking_args, chunking_from_args
from mimic_ros.session import SessionError, load_session
from mimic_ros.supervisor import EXIT_BAD_SESSION, run_session


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimic deploy", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint directory (policies.load_policy), or py:module:factory")
    p.add_argument("--arm", default="twin:franka", help="arm URI; deploy evaluates on twins (twin:<arm>)")
    p.add_argument(
        "--task",
        default=None,
        help="twin task (reach, pick_place, ...; default pick_place, bimanual_pick_place)",
    )
    p.add_argument(
        "--start",
        default="handheld",
        choices=("home", "handheld"),
        help="two-gripper policies: each episode's arms start at home or at demo-like TCP poses",
    )
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument(
        "--episode-s",
        type=float,
        default=None,
        help="time limit per episode (s; default 20, two grippers 25)",
    )
    p.add_argument("--seed", type=int, default=100_000, help="seed of episode 1 is seed+1, and so on")
    p.add_argument("--cameras", default="scene,wrist", help="twin cameras, in the policy's camera order")
    p.add_argument(
        "--camera-latency-s", type=float, default=None, help="injected camera latency (s; default 0.15)"
    )
    p.add_argument(
        "--arm-latency-s",
        type=float,
        default=None,
        help="injected command-to-motion latency (s; default 0.1)",
    )
    p.add_argument(
        "--object-latency-s",
        type=float,
        default=None,
        help="injected age of /objects/state (s); 0: live. A tracker on camera frames is as late as the camera",
    )
    p.add_argument("--match-camera-s", type=float, default=None, help="camera latency used for matching")
    p.add_argument("--match-arm-s", type=float, default=None, help="arm latency used for matching")
    p.add_argument(
        "--match-object-s", type=float, default=None, help="object-state latency used for matching"
    )
    p.add_argument("--no-matching", action="store_true", help="naive loop: no latency compensation")
    p.add_argument("--num-inference-steps", type=int, default=0, help="0: the policy's default")
    p.add_argument(
        "--chunk-candidates",
        type=int,
        default=0,
        help="chunks sampled per prediction, the one continuing the last kept (0: the checkpoint's)",
    )
    p.add_argument(
        "--action-steps",
        type=int,
        default=0,
        help="chunk rows executed per prediction, the replan period (0: the checkpoint's n_action_steps)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--engine",
        default="torch",
        help="how the policy's networks run: torch, bf16, compiled, onnx, onnx-int8 (onnx ones need `mimic export`)",
    )
    add_chunking_args(p, default="blend")
    p.add_argument("--record", default="", metavar="ZARR", help="record the rollouts to this store")
    p.add_argument("--results", default="", metavar="JSON", help="write per-episode results here")
    p.add_argument(
        "--session",
        default=None,
        help="session YAML to start from (default deploy_twin; deploy_bimanual_twin for two grippers)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.KEY=VALUE",
        help="further session overrides (applied last)",
    )
    return p


def checkpoint_action_space(checkpoint: str) -> str:
    """The policy kind, "joint" or "eef", without building it: a directory's (mimic.policies.checkpoint.action_space),
    or the `action_space` attribute of a `py:module:factory`'s factory (default joint); ValueError if unusable."""
    if checkpoint.startswith(SCRIPTED_PREFIX):
        return action_space_of(scripted_factory(checkpoint), checkpoint)
    from mimic.policies.checkpoint import action_space

    return action_space(checkpoint)  # CheckpointError (a ValueError) names the path


def check_outputs(args: argparse.Namespace) -> None:
    """--results and --record are written by nodes during or after the episodes: a path that cannot be written
    is refused here, before any node starts, instead of ending a finished session without its results."""
    from mimic.data.staging import check_output_file, check_parent

    if args.results:
        check_output_file("--results", args.results)
    if args.record:
        check_parent(args.record)


def check_checkpoint(args: argparse.Namespace) -> tuple[str, int]:
    """Load the checkpoint as the policy node will, with this run's inference overrides, before any node
    starts: a bad checkpoint is one line here rather than a node's log and a session without results.
    Returns its action space and gripper count; ValueError (CheckpointError) naming the checkpoint otherwise."""
    from mimic.policies.checkpoint import check_device, load_deployable

    check_device(args.device)
    kind = checkpoint_action_space(args.checkpoint)
    if args.checkpoint.startswith(SCRIPTED_PREFIX):
        if args.engine != "torch":
            raise ValueError(f"--engine {args.engine}: applies to a checkpoint, not to {args.checkpoint}")
        return kind, int(getattr(scripted_factory(args.checkpoint), "grippers", 1))
    overrides = []
    if args.chunk_candidates:
        overrides.append(f"policy.chunk_candidates={args.chunk_candidates}")
    if args.action_steps:
        overrides.append(f"policy.n_action_steps={args.action_steps}")
    policy = load_deployable(args.checkpoint, overrides=overrides, engine=args.engine)
    return kind, int(getattr(policy, "grippers", 1))


LATENCIES = ("camera_latency_s", "arm_latency_s", "object_latency_s")


def resolve_defaults(args: argparse.Namespace, grippers: int) -> None:
    """Fill the options whose defaults depend on the policy's gripper count; ValueError for a combination the
    two-arm twin cannot run (it injects no latency, has no cameras, runs only its own task, records nothing)."""
    if grippers == 1:
        defaults = {
            "task": "pick_place",
            "episode_s": 20.0,
            "camera_latency_s": 0.15,
            "arm_latency_s": 0.1,
            "object_latency_s": 0.0,
        }
        for key, value in defaults.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        args.session = args.session or "deploy_twin"
        return
    from mimic.sim.bimanual import TASK

    if args.task not in (None, TASK):
        raise ValueError(f"--task {args.task}: a two-gripper policy runs the two-arm twin's {TASK}")
    given = [f"--{k.replace('_', '-')}" for k in LATENCIES if getattr(args, k)]
    if given:
        raise ValueError(f"{', '.join(given)}: the two-arm twin injects no latency (leave them 0)")
    if args.record:
        raise ValueError("--record: the two-arm twin's rollouts are not recorded by the deploy session")
    args.task, args.cameras, args.session = TASK, "", args.session or "deploy_bimanual_twin"
    if args.episode_s is None:
        args.episode_s = 25.0  # the task's 200 control periods at 10 Hz, and time to settle
    for key in LATENCIES:
        setattr(args, key, 0.0)


def controller_mode(action_space: str) -> str:
    modes = {"joint": "chunk", "eef": "eef"}
    if action_space not in modes:
        raise ValueError(f"action_space {action_space!r} is not one of {sorted(modes)}")
    return modes[action_space]


def common_overrides(
    args: argparse.Namespace, results_path: str, controllers: list[str]
) -> dict[str, object]:
    """The settings every deploy session takes alike: the policy's inference, the evaluator, and each named
    controller's arm and chunking."""
    _, _, arm = args.arm.partition(":")
    sets: dict[str, object] = {
        "arm.backend": args.arm,
        "arm.seed": args.seed,
        "policy.checkpoint": args.checkpoint,
        "policy.arm": arm,
        "policy.num_inference_steps": args.num_inference_steps,
        "policy.chunk_candidates": args.chunk_candidates,
        "policy.action_steps": args.action_steps,
        "policy.device": args.device,
        "policy.engine": args.engine,
        "policy.chunking": args.chunking,
        "policy.inference_delay_s": args.inference_delay_s,
        "policy.max_guidance": args.max_guidance,
        "evaluator.episodes": args.episodes,
        "evaluator.episode_s": args.episode_s,
        "evaluator.results_path": results_path,
    }
    for name in controllers:
        sets.update(
            {
                f"{name}.arm": arm,
                f"{name}.chunking": args.chunking,
                f"{name}.blend_s": args.blend_s,
                f"{name}.ensemble_decay": args.ensemble_decay,
            }
        )
    return sets


def session_overrides(
    args: argparse.Namespace, results_path: str, action_space: str = "joint", grippers: int = 1
) -> list[str]:
    """The deploy arguments as session overrides (`node.param=value`), their defaults resolved first (in place:
    `args.session` names the session afterwards). ValueError for options the policy's twin cannot run."""
    resolve_defaults(args, grippers)
    return resolved_overrides(args, results_path, action_space, grippers)


def resolved_overrides(
    args: argparse.Namespace, results_path: str, action_space: str = "joint", grippers: int = 1
) -> list[str]:
    """`session_overrides` of arguments whose defaults `resolve_defaults` has already filled, for a caller that
    resolved them itself to report a bad combination before any session starts.

    deploy_twin: one arm with injected latencies and its matching; deploy_bimanual_twin: one arm node serving
    two arms (no latency), one eef controller per arm."""
    if grippers == 2:
        sets = common_overrides(args, results_path, ["controller0", "controller1"])
        sets["arm.start"] = args.start
        return _as_overrides(sets, args.overrides)
    _, _, arm = args.arm.partition(":")
    match_cam = args.camera_latency_s if args.match_camera_s is None else args.match_camera_s
    match_arm = args.arm_latency_s if args.match_arm_s is None else args.match_arm_s
    match_obj = args.object_latency_s if args.match_object_s is None else args.match_object_s
    matching = not args.no_matching
    sets = common_overrides(args, results_path, ["controller"])
    sets.update(
        {
            "arm.task": args.task,
            "arm.cameras": args.cameras,
            "arm.camera_latency_s": args.camera_latency_s,
            "arm.command_latency_s": args.arm_latency_s,
            "arm.object_latency_s": args.object_latency_s,
            "controller.mode": controller_mode(action_space),
            "controller.lead_s": match_arm if matching else 0.0,
            "policy.cameras": args.cameras,
            "policy.camera_latency_s": match_cam,
            "policy.arm_latency_s": match_arm,
            "policy.object_latency_s": match_obj,
            "policy.matching": matching,
        }
    )
    if args.record:
        sets.update(
            {
                "recorder.enabled": True,
                "recorder.path": args.record,
                "recorder.arm": arm,
                "recorder.task": args.task,
                "recorder.cameras": args.cameras,
                "recorder.latencies_json": json.dumps(
                    {"camera_s": args.camera_latency_s, "arm_s": args.arm_latency_s}
                ),
                "evaluator.record": True,
            }
        )
    return _as_overrides(sets, args.overrides)


def _as_overrides(sets: dict[str, object], extra: list[str]) -> list[str]:
    return [f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in sets.items()] + list(extra)


def print_table(results: dict, args: argparse.Namespace, mode: str = "chunk") -> None:
    rows = results.get("episodes", [])
    print(
        f"\nmimic deploy {args.checkpoint} on {args.arm} / {args.task}: camera {args.camera_latency_s * 1e3:.0f} ms, "
        f"arm {args.arm_latency_s * 1e3:.0f} ms, objects {args.object_latency_s * 1e3:.0f} ms injected; "
        f"matching {'off' if args.no_matching else 'on'}; controller mode {mode}; chunking {args.chunking}, "
        f"inference delay {args.inference_delay_s} s injected"
    )
    print(f"{'episode':>7} {'seed':>7} {'success':>7} {'time_s':>7}")
    for r in rows:
        t = f"{r['time_to_success_s']:.1f}" if r.get("time_to_success_s") is not None else "-"
        print(f"{r['episode']:>7} {r['seed']:>7} {str(r['success']):>7} {t:>7}")
    n, ok = len(rows), sum(bool(r["success"]) for r in rows)
    print(f"success {ok}/{n}" + (f" = {100.0 * ok / n:.0f}%" if n else ""))
    m = results.get("motion") or {}
    if m.get("boundaries"):
        print(
            f"motion: {m['boundaries']} chunk seams, velocity jump p50 {m['boundary_vel_jump_p50']:.3f} rad/s = "
            f"{m['vel_jump_ratio_p50']:.2f}x the within-chunk p99; idle {m['idle_s_mean']:.2f} s per episode"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.arm.startswith("twin:"):
        print(
            f"mimic deploy: --arm {args.arm}: deploy scores episodes on a twin (twin:<arm>); on hardware run "
            "`mimic session up deploy_franka` (a person resets the scene)",
            file=sys.stderr,
        )
        return 2
    if (
        args.episodes < 1
        or (args.episode_s is not None and args.episode_s <= 0)
        or min(getattr(args, k) or 0.0 for k in LATENCIES) < 0
    ):
        print(
            "mimic deploy: --episodes >= 1, --episode-s > 0 and latencies >= 0 are required", file=sys.stderr
        )
        return 2
    try:
        chunking_from_args(args)
        check_outputs(args)
        kind, grippers = check_checkpoint(args)
        mode = controller_mode(kind)
        resolve_defaults(args, grippers)
    except ValueError as e:  # checkpoint_action_space's errors name the checkpoint
        print(f"mimic deploy: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mimic-deploy-") as tmp:
        results_path = args.results or str(Path(tmp) / "results.json")
        try:
            session = load_session(args.session, resolved_overrides(args, results_path, kind, grippers))
            code = run_session(session)
        except SessionError as e:
            print(f"mimic deploy: {e}", file=sys.stderr)
            return EXIT_BAD_SESSION
        if not Path(results_path).exists():
            print(f"mimic deploy: the session ended (status {code}) without results", file=sys.stderr)
            return code or 1
        results = json.loads(Path(results_path).read_text())
    print_table(results, args, mode)
    return code


if __name__ == "__main__":
    sys.exit(main())
