"""A stand-in for `ros2 bag record -s mcap --all`, which the PyPI rclpy wheels do not ship.

Like rosbag2 it discovers topics as they appear, matches each one's publishers' QoS (so latched topics such
as `/recorder/status` arrive with their last sample), and writes every message as the serialized CDR it
received, at log time = its arrival (system clock), under a `ros2msg` schema: mcap's own writer with the
ros2 profile, as rosbag2's MCAP storage plugin writes. Types whose definition text `mimic.data.mcap_topics`
does not hold (rcl_interfaces on /rosout, ...) are skipped and listed.

    python -m tests.peers.bag_recorder --out run.mcap [--seconds 120]

Prints `MIMIC_BAG_READY` once spinning; on SIGINT/SIGTERM (or after `--seconds`) it finishes the file and
prints one JSON line: messages per topic, skipped topics.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time

import rclpy
from mcap.well_known import MessageEncoding, SchemaEncoding
from mcap.writer import Writer
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from mimic.data.mcap_topics import MSGDEFS

READY = "MIMIC_BAG_READY"


def msg_class(type_name: str) -> type:
    pkg, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class BagRecorder:
    def __init__(self, out: str) -> None:
        self.node = rclpy.create_node("bag_recorder")
        self.file = open(out, "wb")  # noqa: SIM115 - closed in finish()
        self.writer = Writer(self.file)
        self.writer.start(profile="ros2", library="mimic tests.peers.bag_recorder")
        self.schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.skipped: dict[str, str] = {}
        self.node.create_timer(0.25, self.discover)
        self.discover()

    def qos(self, topic: str) -> QoSProfile:
        pubs = self.node.get_publishers_info_by_topic(topic)
        latched = bool(pubs) and all(
            p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in pubs
        )
        best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in pubs)
        return QoSProfile(
            depth=200,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
            reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        )

    def discover(self) -> None:
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self.channels or topic in self.skipped:
                continue
            type_name = types[0]
            if type_name not in MSGDEFS:
                self.skipped[topic] = type_name
                continue
            if not self.node.get_publishers_info_by_topic(topic):
                continue  # only subscribers so far: wait for a publisher to learn its QoS
            if type_name not in self.schemas:
                self.schemas[type_name] = self.writer.register_schema(
                    type_name, SchemaEncoding.ROS2, MSGDEFS[type_name].encode()
                )
            channel = self.writer.register_channel(topic, MessageEncoding.CDR, self.schemas[type_name])
            self.channels[topic] = channel
            self.counts[topic] = 0
            self.node.create_subscription(
                msg_class(type_name), topic, self._callback(topic, channel), self.qos(topic), raw=True
            )

    def _callback(self, topic: str, channel: int):  # noqa: ANN202 - a subscription callback
        def on_message(data: bytes) -> None:
            now = time.time_ns()
            self.writer.add_message(
                channel, log_time=now, data=data, publish_time=now, sequence=self.counts[topic]
            )
            self.counts[topic] += 1

        return on_message

    def finish(self) -> None:
        self.writer.finish()
        self.file.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=300.0, help="stop after this long whatever happens")
    a = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    rec = BagRecorder(a.out)
    ex = SingleThreadedExecutor()
    ex.add_node(rec.node)
    print(READY, flush=True)
    end = time.monotonic() + a.seconds
    try:
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        rec.finish()
        print(json.dumps({"messages": rec.counts, "skipped": rec.skipped}), flush=True)
        ex.remove_node(rec.node)
        rec.node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
