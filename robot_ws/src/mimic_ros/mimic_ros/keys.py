"""Keyboard trigger for a running recorder: the person at the leader starts, stops and discards episodes.

    python -m mimic_ros.keys [--recorder /recorder]
    keys: s = start, e = end (stop and commit), d = discard, q = quit; one key, no Enter (Enter-terminated
    lines when stdin is not a terminal, so it can be scripted)

Each key calls the recorder's std_srvs/Trigger service and prints its answer and the recorder's status
(committed episodes, steps, drops, stalls). Runs beside a session (`mimic session up ...`) in another
terminal: the supervisor gives its nodes no stdin.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import termios
import threading
import tty

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import String

from mimic_ros.ros_client import Latest, ServiceError, TriggerClient
from mimic_ros.runtime import init_ros

ACTIONS = {"s": "start", "e": "stop", "d": "discard"}


@contextlib.contextmanager
def raw_terminal():
    """Single keypresses from a terminal (restored on exit); plain lines otherwise."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mimic_ros.keys", description=__doc__.split("\n\n")[0])
    ap.add_argument("--recorder", default="/recorder", help="recorder node namespace")
    ap.add_argument("--timeout-s", type=float, default=10.0)
    args = ap.parse_args(argv)
    init_ros("recorder_keys", [])
    node = rclpy.create_node("recorder_keys")
    rec = args.recorder.rstrip("/")
    clients = {k: TriggerClient(node, f"{rec}/{name}") for k, name in ACTIONS.items()}
    status = Latest()
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, f"{rec}/status", status, latched)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        while spinning.is_set() and rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.05)
            except ExternalShutdownException:
                return

    spinner = threading.Thread(target=spin, name="keys-spin")
    spinner.start()
    print("s = start, e = end (commit), d = discard, q = quit", flush=True)
    try:
        with raw_terminal() as raw:
            while True:
                key = sys.stdin.read(1) if raw else (sys.stdin.readline() or "q")[:1]
                if key in ("q", "\x04", ""):
                    break
                if key not in clients:
                    continue
                try:
                    resp = clients[key].call(args.timeout_s, must_succeed=False)
                    print(
                        f"{ACTIONS[key]}: {'ok' if resp.success else 'refused'}: {resp.message}", flush=True
                    )
                except ServiceError as e:
                    print(f"{ACTIONS[key]}: {e}", flush=True)
                if status.msg is not None:
                    s = status.json()
                    print(
                        f"  episodes {s['episodes']}, recording {s['recording']}, steps {s['steps']}, "
                        f"dropped {json.dumps(s['dropped'])}, stalled {s['stalled']}",
                        flush=True,
                    )
    except KeyboardInterrupt:
        pass
    finally:
        spinning.clear()
        spinner.join(timeout=2.0)
        executor.remove_node(node)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
