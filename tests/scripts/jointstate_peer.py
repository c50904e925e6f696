"""A publisher or a receiver of sensor_msgs/JointState, each run as its own process by the foundation test.

    python tests/scripts/jointstate_peer.py pub N     # waits for a subscriber, publishes N messages
    python tests/scripts/jointstate_peer.py sub N     # prints one JSON line per received message, exits after N

The publisher encodes the message index into positions and stamps each message with its send time, so the
receiver side can check both values and stamps.
"""

from __future__ import annotations

import json
import sys
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState

TOPIC = "/foundation/joint_states"
NAMES = [f"joint{i}" for i in range(1, 8)]


def publish(n: int) -> int:
    node = rclpy.create_node("foundation_pub")
    pub = node.create_publisher(JointState, TOPIC, 10)
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() == 0:  # the first message after discovery is otherwise lost
        if time.monotonic() > deadline:
            print("no subscriber matched within 20 s", file=sys.stderr)
            return 1
        time.sleep(0.01)
    for i in range(n):
        msg = JointState()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = str(i)
        msg.name = NAMES
        msg.position = [i + 0.1 * j for j in range(7)]
        msg.velocity = [0.0] * 7
        pub.publish(msg)
        time.sleep(0.005)
    time.sleep(0.5)  # let the last messages leave before the participant goes away
    node.destroy_node()
    return 0


def receive(n: int) -> int:
    node = rclpy.create_node("foundation_sub")
    received: list[dict] = []

    def on_msg(msg: JointState) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        received.append(
            {
                "i": int(msg.header.frame_id),
                "names": list(msg.name),
                "position": list(msg.position),
                "stamp": stamp,
                "arrival": time.time(),
            }
        )

    node.create_subscription(JointState, TOPIC, on_msg, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print("READY", flush=True)
    deadline = time.monotonic() + 30.0
    while len(received) < n and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    for rec in received:
        print(json.dumps(rec), flush=True)
    executor.remove_node(node)
    node.destroy_node()
    return 0 if len(received) >= n else 1


def main() -> int:
    mode, n = sys.argv[1], int(sys.argv[2])
    rclpy.init()
    try:
        return publish(n) if mode == "pub" else receive(n)
    finally:
        rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
