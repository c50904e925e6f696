"""Calling services and reading latest messages from a worker thread while the main thread spins.

Nodes that script a session (the operator, the deploy evaluator) run their episode loop on a worker thread;
the executor on the main thread delivers responses and messages. Every wait here is bounded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from rclpy.node import Node
from std_srvs.srv import Trigger


class ServiceError(RuntimeError):
    """A service was unavailable, timed out, or answered success=False; the message names it."""


class Stopped(ServiceError):
    """The node is shutting down while waiting."""


class TriggerClient:
    def __init__(self, node: Node, name: str) -> None:
        self.name, self.node = name, node
        self.client = node.create_client(Trigger, name)

    def _alive(self) -> bool:
        return getattr(self.node, "running", True)

    def call(self, timeout_s: float = 10.0, must_succeed: bool = True) -> Trigger.Response:
        """Call and wait (bounded by `timeout_s`, and by the node's shutdown) for the response."""
        deadline = time.monotonic() + timeout_s
        while not self.client.wait_for_service(timeout_sec=0.1):
            if not self._alive():
                raise Stopped(f"stopping: gave up waiting for {self.name}")
            if time.monotonic() > deadline:
                raise ServiceError(f"service {self.name} not available after {timeout_s:g} s")
        future = self.client.call_async(Trigger.Request())
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        while not done.wait(0.1):
            if not self._alive() or time.monotonic() > deadline:
                future.cancel()
                if not self._alive():
                    raise Stopped(f"stopping: gave up waiting for {self.name}")
                raise ServiceError(f"service {self.name} did not answer within {timeout_s:g} s")
        response = future.result()
        if must_succeed and not response.success:
            raise ServiceError(f"service {self.name} failed: {response.message}")
        return response


class Latest:
    """The newest message of a topic with its arrival time; `wait()` blocks (bounded) for a newer one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.msg: Any = None
        self.t_arrival = 0.0
        self.count = 0

    def __call__(self, msg: Any) -> None:
        with self._cond:
            self.msg, self.t_arrival = msg, time.time()
            self.count += 1
            self._cond.notify_all()

    def wait(
        self,
        after_count: int = 0,
        timeout_s: float = 10.0,
        what: str = "message",
        alive: Callable[[], bool] = lambda: True,
    ) -> Any:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._cond.wait_for(lambda: self.count > after_count, timeout=0.1):
                if not alive():
                    raise Stopped(f"stopping: gave up waiting for {what}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {what} within {timeout_s:g} s")
            return self.msg

    def json(self) -> dict:
        return json.loads(self.msg.data) if self.msg is not None else {}
