"""Teardown of a test process's own ROS node, shared by the integration tests that spin one."""

from __future__ import annotations

import rclpy
from rclpy.executors import Executor
from rclpy.node import Node


def close_node(ex: Executor, node: Node) -> None:
    """Take `node` off `ex`, destroy it and shut rclpy's default context down, in that order: an executor must not
    hold a destroyed node, and the context must outlive its nodes, so the next test's `rclpy.init()` starts clean."""
    ex.remove_node(node)
    node.destroy_node()
    rclpy.shutdown()
