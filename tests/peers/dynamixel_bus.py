"""The Dynamixel Protocol 2.0 bus peer for tests: the emulated bus lives in the package (the demo and the
operator node need it too), so tests import it from here under the peers' roof.

    python -m tests.peers.dynamixel_bus --arm franka --seconds 30   # prints the pty path; the leader sways
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from mimic.robots.specs import get_spec
from mimic.teleop.emulated_bus import FAULTS, EmulatedDynamixelBus
from mimic.teleop.gello import GelloLeader
from mimic.teleop.gello_calibration import example_calibration
from mimic.teleop.leader import LeaderError, LeaderReading

__all__ = ["EmulatedDynamixelBus", "FAULTS", "main", "read_along"]


def read_along(leader: GelloLeader, seconds: float, max_rejected: int = 20) -> list[LeaderReading]:
    """Read the leader for `seconds` while a `bus.follow` script moves it; the accepted readings.

    The emulator samples its script when its thread gets to a request; on a loaded 2-core machine that can
    be 200 ms after the leader stamped the request, and the leader rightly rejects the apparent jump. Tests
    that only use a ramp to carry joints somewhere skip such readings (at most `max_rejected`)."""
    readings: list[LeaderReading] = []
    rejected = 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        try:
            readings.append(leader.read())
        except LeaderError:
            rejected += 1
            assert rejected <= max_rejected, f"the leader rejected {rejected} readings of the scripted motion"
    return readings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", default="franka")
    ap.add_argument("--baud", type=int, default=57600)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--calibration", help="write the bus's calibration here (for a GelloLeader to use)")
    args = ap.parse_args(argv)
    spec = get_spec(args.arm)
    cal = example_calibration(args.arm, baudrate=args.baud)
    if args.calibration:
        cal.save(args.calibration)
    with EmulatedDynamixelBus(cal, start_pose=spec.home) as bus:
        bus.follow(lambda t: (spec.home + 0.2 * math.sin(0.5 * t) * np.ones(spec.dof), 0.04))
        print(bus.port, flush=True)
        time.sleep(args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
