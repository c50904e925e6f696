"""The life of one node process: init, build (bad config -> one line, exit 2), ready line, spin, clean stop.

Every Mimic node runs through `run_node` so they all behave alike under the supervisor and `ros2 launch`:
- SIGINT raises KeyboardInterrupt in the main thread (rclpy's own handler would invalidate the context
  under worker threads), installed explicitly by `init_ros`: a process started in the background of a
  non-interactive shell (a CI script, `mimic session up ... &`) inherits SIGINT *ignored*, Python then
  never raises KeyboardInterrupt, and the node could only be SIGKILLed, losing its clean close.
- Worker threads are joined and the node destroyed before `rclpy.shutdown()`, since a process exiting
  with a thread inside rclpy can abort.
- Once the node is built and its workers started it prints `READY_LINE <node name>` on stdout: the
  readiness signal the supervisor waits for.
- The single-threaded executor is spun with `spin_once` (PLATFORM.md: MultiThreadedExecutor stalls,
  EventsExecutor.spin ignores SIGINT in these wheels).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from mimic_ros.session import READY_LINE  # one definition, shared with the supervisor


def announce_ready(node: Node) -> None:
    print(f"{READY_LINE} {node.get_name()}", flush=True)


def init_ros(name: str, argv: list[str] | None = None) -> None:
    """rclpy.init without rclpy's signal handlers, with SIGINT -> KeyboardInterrupt even if inherited ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rclpy.init(
        args=sys.argv if argv is None else [name, *argv], signal_handler_options=SignalHandlerOptions.NO
    )


class ManagedNode(Node):
    """A node with optional worker loops; `running` turns False at shutdown and the loops must return."""

    running: bool = True
    exit_code: int = 0

    def workers(self) -> Sequence[Callable[[], None]]:
        return ()

    def finished(self) -> bool:
        """True when the node has done its job and the process should exit (e.g. the operator's N episodes)."""
        return False

    def close(self) -> None:
        """Release devices after the workers stopped (disconnect the arm, close the dataset...)."""


def run_node(
    name: str,
    build: Callable[[], ManagedNode],
    argv: list[str] | None = None,
    errors: tuple[type[BaseException], ...] = (ValueError, OSError),
    join_timeout_s: float = 5.0,
) -> int:
    """Run a node until SIGINT or until it reports `finished()`; returns the process exit status.

    `join_timeout_s` bounds the wait for each worker to return after `running` turns False (a policy's
    worker may be inside one long inference)."""
    init_ros(name, argv)
    try:
        node = build()
    except errors as e:
        text = str(e)
        print(text if text.startswith(f"{name}:") else f"{name}: {text}", file=sys.stderr, flush=True)
        rclpy.shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threads = [
        threading.Thread(target=w, name=f"{name}-{i}", daemon=False) for i, w in enumerate(node.workers())
    ]
    try:  # workers and the ready line inside: a SIGINT the moment the supervisor sees it still closes cleanly
        for t in threads:
            t.start()
        announce_ready(node)
        while rclpy.ok() and not node.finished():
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        if rclpy.ok():
            raise
        # rclpy raises from a take that races its own shutdown (SIGINT): a clean stop, not a failure
    finally:
        node.running = False
        for t in threads:
            if t.is_alive():
                t.join(timeout=join_timeout_s)
        try:
            node.close()
        finally:
            executor.remove_node(node)
            executor.shutdown(timeout_sec=1.0)  # before rclpy.shutdown, or its finaliser fails at exit
            node.destroy_node()
            if rclpy.ok():
                rclpy.shutdown()
    return node.exit_code
