"""`mimic <verb> ...`: dispatches to the package that owns the verb.

Each verb's module exposes `main(argv: list[str]) -> int`. A verb is listed only once its module
exists, so the CLI never advertises something that does nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "session": ("mimic_ros.supervisor", "start/stop a ROS 2 session from its YAML (teleop, deploy)"),
    "dataset": ("mimic.data.cli", "inspect, validate, plot, export Zarr datasets"),
    "sim": ("mimic.sim.cli", "MuJoCo twins: render an expert episode, list arms and tasks"),
    "record": ("mimic.workflows.record", "record a training config's dataset from a twin's scripted expert"),
    "dagger": (
        "mimic.workflows.dagger",
        "a DAgger round: expert branches from the states a checkpoint reaches",
    ),
    "train": ("mimic.workflows.train", "train a policy from a YAML config (every action space)"),
    "eval": ("mimic.workflows.evaluate", "roll a checkpoint out on a twin task (joint or end-effector)"),
    "export": ("mimic.workflows.export", "write a checkpoint's inference engine (ONNX, int8) beside it"),
    "chunking-study": (
        "mimic.workflows.chunking_study",
        "every chunking strategy against injected inference delay, on a twin",
    ),
    "deploy": ("mimic_ros.deploy", "deploy a checkpoint through the ROS deploy session"),
    "handheld": (
        "mimic_ros.handheld_cli",
        "handheld (UMI-style) demos: record on the twin, replay as live topics",
    ),
    "calibrate": ("mimic.calibration.cli", "GELLO offsets, camera intrinsics, hand-eye, latency"),
    "demo": ("mimic.demo", "the whole loop on a twin: teleop -> dataset -> train -> deploy -> report"),
}


def _module_exists(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (torch, rclpy are slow; parents are light)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _available() -> dict[str, tuple[str, str]]:
    return {verb: (module, text) for verb, (module, text) in VERBS.items() if _module_exists(module)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbs = _available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mimic <verb> [args...]\n\nverbs:")
        for verb, (_, text) in verbs.items():
            print(f"  {verb:<10} {text}")
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in verbs:
        print(f"mimic: unknown verb '{verb}' (known: {', '.join(verbs)})", file=sys.stderr)
        return 2
    module = importlib.import_module(verbs[verb][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
