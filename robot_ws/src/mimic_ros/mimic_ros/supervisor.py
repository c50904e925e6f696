"""`mimic session up <yaml>`: run a session's nodes as separate processes, like `ros2 launch` does.

- Starts the enabled nodes in file order, each as `python -m mimic_ros.<executable> --ros-args ...`, and
  waits (bounded: `ready_timeout_s`) for each one's ready line (`runtime.READY_LINE`) before starting the
  next, so a node can rely on the ones above it (the leader opens the bus the operator created).
- Streams every node's stdout/stderr, line by line, prefixed with `[name]`.
- Stops everything (SIGINT in reverse start order, SIGKILL after `stop_timeout_s`) on Ctrl-C/SIGTERM,
  when a required node dies, or when a node marked `ends_session` exits. Exit status: that node's status
  for `ends_session`; 1 when a required node died or a node failed to start; 130 on Ctrl-C; 2 for a bad
  session file.
- Children get PR_SET_PDEATHSIG, so a supervisor killed with SIGKILL does not leave nodes behind.

    mimic session up teleop_twin --set recorder.path=/tmp/demo.zarr --set operator.episodes=3
    mimic session show deploy_twin       # the resolved command lines, nothing started
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mimic_ros.session import READY_LINE, NodeSpec, Session, SessionError, load_session

EXIT_FAILED, EXIT_INTERRUPTED, EXIT_BAD_SESSION = 1, 130, 2
_PR_SET_PDEATHSIG = 1


try:  # resolved here, in the parent: the child between fork and exec must not load libraries or take locks
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: no parent-death signal, teardown relies on stop_all()
    _prctl = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


@dataclass
class Running:
    spec: NodeSpec
    proc: subprocess.Popen
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None
    reported: bool = False  # its exit has been handled


class Supervisor:
    def __init__(self, session: Session, emit: Callable[[str], None] | None = None,
                 python: str = sys.executable) -> None:
        self.session = session
        self.python = python
        self._emit = emit or (lambda line: print(line, flush=True))
        self._emit_lock = threading.Lock()
        self.nodes: list[Running] = []
        self.stop_requested = threading.Event()

    # --- output -------------------------------------------------------------------------------------
    def log(self, text: str, who: str = "session") -> None:
        with self._emit_lock:
            self._emit(f"[{who}] {text}")

    def _read(self, node: Running) -> None:
        assert node.proc.stdout is not None
        for line in node.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(READY_LINE):
                node.ready.set()
            self.log(line, node.spec.name)

    # --- lifecycle ----------------------------------------------------------------------------------
    def command(self, spec: NodeSpec) -> list[str]:
        return [self.python, "-u", "-m", spec.module, *spec.ros_args()]

    def _start(self, spec: NodeSpec) -> Running:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            self.command(spec), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, bufsize=1, env=env, start_new_session=True,
            preexec_fn=_die_with_parent if _prctl is not None else None,
        )
        node = Running(spec, proc)
        node.reader = threading.Thread(target=self._read, args=(node,), name=f"log-{spec.name}", daemon=True)
        node.reader.start()
        self.nodes.append(node)
        self.log(f"started {spec.name} (pid {proc.pid}): {spec.module}")
        return node

    def _wait_ready(self, node: Running) -> str | None:
        """None once ready, else why not (exited, timed out, interrupted)."""
        timeout = node.spec.ready_timeout_s or self.session.ready_timeout_s
        deadline = time.monotonic() + timeout
        while not node.ready.wait(0.05):
            if node.proc.poll() is not None:
                node.reader.join(timeout=2.0)  # let its last lines (the error) reach the log first
                return f"{node.spec.name} exited with status {node.proc.returncode} before it was ready"
            if self.stop_requested.is_set():
                return "interrupted"
            if time.monotonic() > deadline:
                return f"{node.spec.name} not ready after {timeout:g} s"
        return None

    def stop_all(self) -> None:
        """SIGINT to every live node (reverse start order); SIGKILL whatever is left after the grace time."""
        live = [n for n in reversed(self.nodes) if n.proc.poll() is None]
        for n in live:
            try:
                os.killpg(n.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.session.stop_timeout_s
        for n in live:
            try:
                n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{n.spec.name} did not stop within {self.session.stop_timeout_s:g} s: SIGKILL")
                try:
                    os.killpg(n.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                n.proc.wait(timeout=5.0)
        for n in self.nodes:
            if n.reader is not None:
                n.reader.join(timeout=2.0)
            if n.proc.stdout is not None:
                n.proc.stdout.close()
        self.log("all nodes stopped")

    def run(self) -> int:
        """Start, watch, stop; returns the session's exit status (see module docstring)."""
        self.log(f"session {self.session.name} from {self.session.path}: "
                 f"{', '.join(n.name for n in self.session.enabled_nodes)}")
        try:
            for spec in self.session.enabled_nodes:
                node = self._start(spec)
                why = self._wait_ready(node)
                if why == "interrupted":
                    return self._finish(EXIT_INTERRUPTED, "interrupted during start-up")
                if why is not None:
                    return self._finish(EXIT_FAILED, f"start-up failed: {why}")
                self.log(f"{spec.name} ready")
            self.log("all nodes ready")
            while True:
                if self.stop_requested.wait(0.1):
                    return self._finish(EXIT_INTERRUPTED, "interrupted: stopping all nodes")
                for node in self.nodes:
                    rc = node.proc.poll()
                    if rc is None or node.reported:
                        continue
                    node.reported = True
                    if node.spec.ends_session:
                        return self._finish(rc, f"{node.spec.name} finished with status {rc}: ending the session")
                    if node.spec.required:
                        return self._finish(EXIT_FAILED, f"required node {node.spec.name} died (status {rc})")
                    self.log(f"optional node {node.spec.name} exited with status {rc}; continuing")
        except BaseException:
            self.stop_all()
            raise

    def _finish(self, code: int, why: str) -> int:
        self.log(why)
        self.stop_all()
        self.log(f"exit status {code}")
        return code


def run_session(session: Session, emit: Callable[[str], None] | None = None) -> int:
    """Run a session in this process; Ctrl-C and SIGTERM stop it cleanly (main thread only)."""
    sup = Supervisor(session, emit)
    if threading.current_thread() is not threading.main_thread():
        return sup.run()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(signum, frame) -> None:
        sup.stop_requested.set()

    for s in previous:
        signal.signal(s, request_stop)
    try:
        return sup.run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mimic session", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for action, text in (("up", "start the session and supervise it until Ctrl-C"),
                         ("show", "print the resolved node command lines and exit")):
        p = sub.add_parser(action, help=text)
        p.add_argument("session", help="session YAML path, or a packaged session name (teleop_twin, deploy_twin)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.KEY=VALUE",
                       help="override a node parameter (or enabled/required/ends_session/ready_timeout_s)")
    args = parser.parse_args(argv)
    try:
        session = load_session(args.session, args.overrides)
    except SessionError as e:
        print(f"mimic session: {e}", file=sys.stderr)
        return EXIT_BAD_SESSION
    if args.action == "show":
        sup = Supervisor(session)
        for n in session.nodes:
            flags = ", ".join(k for k in ("required", "ends_session") if getattr(n, k)) or "optional"
            state = "" if n.enabled else "  # disabled"
            print(f"# {n.name} ({flags}){state}\n{shlex.join(sup.command(n))}")
        return 0
    return run_session(session)


if __name__ == "__main__":
    sys.exit(main())
