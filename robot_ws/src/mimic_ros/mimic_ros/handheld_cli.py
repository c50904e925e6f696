"""`mimic handheld <record|replay> ...`: handheld (UMI-style) demos without the hardware.

    mimic handheld record demos.zarr --episodes 5 [--pose-latency 0.05]   # the twin's scripted hand, direct path
    mimic handheld replay demos.zarr --episode 0 [--rate 1.0] [--record]  # an episode as the live topics

`replay` runs the handheld replay node in this process: the episode's poses, widths and wrist frames go out on
/handheld/pose, /handheld/gripper_width and /cameras/<camera>/image/compressed at real time. With --record it
drives a running recorder's ~/start and ~/stop around the episode (`mimic session up handheld` or the
handheld recorder node); without, a person presses the keys (`python -m mimic_ros.keys`). The whole session on
the twin in one command: `mimic session up handheld_twin`.
"""

from __future__ import annotations

import argparse
import sys

from mimic_ros.session import format_value


def _replay_args(a: argparse.Namespace) -> list[str]:
    params = {
        "store": a.store,
        "episodes": ",".join(str(e) for e in a.episode),
        "rate": a.rate,
        "grippers": a.grippers,
        "cameras": a.cameras,
        "lead_in_s": a.lead_in,
        "record": a.record,
        "recorder": a.recorder,
    }
    out = ["--ros-args", "-r", "__node:=replay"]
    for key, value in params.items():
        out += ["-p", f"{key}:={format_value(value)}"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mimic handheld", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="what", required=True)
    rec = sub.add_parser("record", help="scripted handheld demos on the twin (direct path, no ROS)")
    rec.add_argument("rest", nargs=argparse.REMAINDER, help="python -m mimic.teleop.handheld arguments")
    rep = sub.add_parser("replay", help="publish a recorded handheld episode as the live topics")
    rep.add_argument("store")
    rep.add_argument(
        "--episode", type=int, action="append", default=[], help="episode index (repeatable; default all)"
    )
    rep.add_argument("--rate", type=float, default=1.0, help="playback speed (1.0 = real time)")
    rep.add_argument("--grippers", default="", help="gripper names as the recorder's ('' = one)")
    rep.add_argument("--cameras", default="wrist", help="wrist camera name per gripper")
    rep.add_argument("--lead-in", type=float, default=1.0, help="seconds holding still before each episode")
    rep.add_argument("--record", action="store_true", help="call the recorder's ~/start and ~/stop around it")
    rep.add_argument("--recorder", default="/recorder", help="recorder node namespace")
    a = p.parse_args(argv)
    if a.what == "record":
        from mimic.teleop.handheld import main as record_main

        return record_main(a.rest)
    from mimic_ros.handheld_replay_node import HandheldReplayNode
    from mimic_ros.runtime import run_node

    return run_node("replay", HandheldReplayNode, _replay_args(a))


if __name__ == "__main__":
    sys.exit(main())
