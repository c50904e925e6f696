"""`mimic calibrate <what> ...`: one subcommand per calibration, each in the module that computes it.

    mimic calibrate gello --port /dev/ttyUSB0 --arm franka --out gello_franka.json
    mimic calibrate gello --emulate --arm franka --out gello_franka.json   # no hardware: an emulated leader
    mimic calibrate intrinsics --images 'calib/*.png' --out wrist.json --png wrist_views.png
    mimic calibrate handeye --poses flange_poses.json --images 'calib/*.png' --intrinsics wrist.json --out he.json
    mimic calibrate latency --arm ur:192.168.1.10 --camera 0 --out latency.json

To add a calibration, add a line to SUBCOMMANDS naming a module with `configure(parser)` and
`run(args) -> int`. A subcommand whose module does not exist yet is not listed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# name -> (module with configure/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "gello": ("mimic.calibration.gello", "GELLO leader joint offsets and signs -> calibration JSON"),
    "intrinsics": (
        "mimic.calibration.intrinsics",
        "camera intrinsics from ChArUco views (image files or the twin)",
    ),
    "handeye": (
        "mimic.calibration.handeye",
        "wrist camera to flange (eye-in-hand) from ChArUco views and flange poses",
    ),
    "latency": (
        "mimic.calibration.latency",
        "arm command-to-motion and camera capture-to-arrival latency -> JSON",
    ),
    "gripper-width": ("mimic.calibration.gripper_width", "gripper width from finger markers -> JSON"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {
        name: entry for name, entry in SUBCOMMANDS.items() if importlib.util.find_spec(entry[0]) is not None
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mimic calibrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True, metavar="{" + ",".join(_available()) + "}")
    modules = {}
    for name, (module_name, text) in _available().items():
        module = importlib.import_module(module_name)
        module.configure(
            sub.add_parser(
                name, help=text, description=text, formatter_class=argparse.RawDescriptionHelpFormatter
            )
        )
        modules[name] = module
    args = parser.parse_args(argv)
    try:
        return int(modules[args.what].run(args) or 0)
    except (ValueError, RuntimeError, OSError) as e:  # one clear line, never a traceback, for bad input
        print(f"mimic calibrate {args.what}: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print(f"\nmimic calibrate {args.what}: aborted, nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
