"""`mimic session up <yaml>`: run a session's nodes as separate processes, like `ros2 launch` does.

- Starts the enabled nodes in file order, each as `python -m mimic_ros.<executable> --ros-args ...`, and
  waits (bounded: `ready_timeout_s`) for each one's ready line (`runtime.READY_LINE`) before starting the
  next, so a node can rely on the ones above it (the leader opens the bus the operator created).
- Writes every node's stdout/stderr to its own file, `<log dir>/<node>.log`, and its own lines to
  `session.log` beside them (default log dir: `runs/sessions/<session>-<date>-<time>`; `--log-dir`).
  The terminal shows one progress line (mimic_ros.session_view: nodes coming up, then episodes recorded or
  rollouts) and, when a node fails, its name and the last lines of its log; `--verbose` streams every
  line with a `[node]` prefix instead.
- Stops everything (SIGINT in reverse start order, SIGKILL after `stop_timeout_s`) on Ctrl-C/SIGTERM,
  when a required node dies, when a node marked `ends_session` exits, or after `--time-limit-s`. Exit
  status: that node's status for `ends_session`; 1 when a required node died, a node failed to start or
  the time limit passed; 130 on Ctrl-C; 2 for a bad session file.
- Children get PR_SET_PDEATHSIG, so a supervisor killed with SIGKILL does not leave nodes behind.

    mimic session up teleop_twin --set recorder.path=/tmp/demo.zarr --set operator.episodes=3
    mimic session up deploy_twin --verbose --log-dir runs/deploy/logs
    mimic session show deploy_twin       # the resolved command lines, nothing started
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mimic_ros.node_logs import SESSION_LOG, NodeLog, default_log_dir, has_traceback
from mimic_ros.progress import session_progress
from mimic_ros.session import READY_LINE, NodeSpec, Session, SessionError, load_session
from mimic_ros.session_view import NodeFailure, Outcome, ProgressView, SessionView, StreamView

EXIT_FAILED, EXIT_INTERRUPTED, EXIT_BAD_SESSION = 1, 130, 2
_PR_SET_PDEATHSIG = 1


try:  # resolved here, in the parent: the child between fork and exec must not load libraries or take locks
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: no parent-death signal, teardown relies on stop_all()
    _prctl = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def node_command(spec: NodeSpec, python: str = sys.executable) -> list[str]:
    return [python, "-u", "-m", spec.module, *spec.ros_args()]


@dataclass
class Running:
    spec: NodeSpec
    proc: subprocess.Popen
    log: NodeLog
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None
    reported: bool = False  # its exit has been handled


class Supervisor:
    def __init__(
        self,
        session: Session,
        log_dir: Path,
        view: SessionView | None = None,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        time_limit_s: float | None = None,
    ) -> None:
        self.session = session
        self.log_dir = Path(log_dir)
        self.view: SessionView = view or ProgressView(session.name)
        self.python = python
        self.env = dict(os.environ if env is None else env)
        self.time_limit_s = time_limit_s
        self.progress = session_progress(session)
        self.nodes: list[Running] = []
        self.failures: list[NodeFailure] = []
        self.stop_requested = threading.Event()
        self._session_log: NodeLog | None = None
        self._deadline = float("inf")

    # --- output -------------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        """A line of the supervisor's own: session.log, and the terminal when the view streams."""
        if self._session_log is not None:
            self._session_log.write(f"[session] {text}")
        self.view.line("session", text)

    def note(self, text: str) -> None:
        """A line a person must see even in the progress view (a node died, a node had to be killed)."""
        self.log(text)
        self.view.note(text)

    def _read(self, node: Running) -> None:
        """Drain the node's pipe into its log; never stop early, or the node blocks on a full pipe."""
        assert node.proc.stdout is not None
        for line in node.proc.stdout:
            line = line.rstrip("\n")
            node.log.write(line)
            if line.startswith(READY_LINE):
                node.ready.set()
            if self.progress is not None:
                self.progress.feed(node.spec.name, line)
            try:
                self.view.line(node.spec.name, line)
            except (OSError, ValueError):  # the terminal went away: the log still gets every line
                pass

    def _fail(self, node: Running, what: str) -> None:
        self.failures.append(NodeFailure(node.spec.name, what, node.log.path))

    # --- lifecycle ----------------------------------------------------------------------------------
    def command(self, spec: NodeSpec) -> list[str]:
        return node_command(spec, self.python)

    def _start(self, spec: NodeSpec) -> Running:
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        log = NodeLog(self.log_dir / f"{spec.name}.log")
        proc = subprocess.Popen(
            self.command(spec),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if _prctl is not None else None,
        )
        node = Running(spec, proc, log)
        node.reader = threading.Thread(target=self._read, args=(node,), name=f"log-{spec.name}", daemon=True)
        node.reader.start()
        self.nodes.append(node)
        self.log(f"started {spec.name} (pid {proc.pid}): {spec.module}; log {log.path}")
        return node

    def _time_left(self) -> bool:
        return time.monotonic() < self._deadline

    def _wait_ready(self, node: Running) -> str | None:
        """None once ready, else why not (exited, timed out, interrupted)."""
        timeout = node.spec.ready_timeout_s or self.session.ready_timeout_s
        deadline = time.monotonic() + timeout
        while not node.ready.wait(0.05):
            self.view.tick()
            if node.proc.poll() is not None:
                node.reader.join(timeout=2.0)  # let its last lines (the error) reach the log first
                return f"exited with status {node.proc.returncode} before it was ready"
            if self.stop_requested.is_set():
                return "interrupted"
            if time.monotonic() > deadline:
                return f"not ready after {timeout:g} s"
            if not self._time_left():
                return f"not ready when the session's {self.time_limit_s:g} s ran out"
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
                self.note(f"{n.spec.name} did not stop within {self.session.stop_timeout_s:g} s: SIGKILL")
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
            n.log.close()
        self.log("all nodes stopped")

    def _open_log_dir(self) -> None:
        """Create the log folder before any node starts: a folder that cannot be made (a parent that is a file,
        no permission) is the user's path, reported in one line naming it, with nothing started to clean up."""
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SessionError(f"{self.log_dir}: cannot create the log folder ({e.strerror})") from None

    def run(self) -> int:
        """Start, watch, stop; returns the session's exit status (see module docstring)."""
        self._open_log_dir()
        self._session_log = NodeLog(self.log_dir / f"{SESSION_LOG}.log", stamped=True)
        if self.time_limit_s is not None:
            self._deadline = time.monotonic() + self.time_limit_s
        nodes = self.session.enabled_nodes
        self.log(f"session {self.session.name} from {self.session.path}: {', '.join(n.name for n in nodes)}")
        try:
            self.view.opened(self.session, self.log_dir)
            for i, spec in enumerate(nodes):
                self.view.starting(spec.name, i, len(nodes))
                node = self._start(spec)
                why = self._wait_ready(node)
                if why == "interrupted":
                    return self._finish(EXIT_INTERRUPTED, "interrupted during start-up", interrupted=True)
                if why is not None:
                    self._fail(node, why)
                    node.reported = True
                    return self._finish(EXIT_FAILED, f"start-up failed: {spec.name} {why}")
                self.log(f"{spec.name} ready")
            self.log("all nodes ready")
            self.view.running(self.progress)
            while True:
                if self.stop_requested.wait(0.1):
                    return self._finish(EXIT_INTERRUPTED, "interrupted: stopping all nodes", interrupted=True)
                self.view.tick()
                if not self._time_left():
                    for node in self.nodes:  # the node(s) that should have ended it in time
                        if node.spec.ends_session and node.proc.poll() is None:
                            self._fail(node, f"still running after the session's {self.time_limit_s:g} s")
                    return self._finish(
                        EXIT_FAILED, f"time limit: still running after {self.time_limit_s:g} s"
                    )
                ended = self._check_exits()
                if ended is not None:
                    return ended
        except BaseException:
            self.stop_all()
            self._close()
            raise

    def _check_exits(self) -> int | None:
        """The session's exit status once a node's exit ends it, else None (an optional node may die)."""
        for node in self.nodes:
            rc = node.proc.poll()
            if rc is None or node.reported:
                continue
            node.reported = True
            name = node.spec.name
            if node.spec.ends_session:
                if rc != 0:
                    self._fail(node, f"exited with status {rc}")
                return self._finish(rc, f"{name} finished with status {rc}: ending the session")
            if node.spec.required:
                self._fail(node, f"exited with status {rc}")
                return self._finish(EXIT_FAILED, f"required node {name} died (status {rc})")
            if rc != 0:
                self._fail(node, f"exited with status {rc}")
            self.note(f"optional node {name} exited with status {rc}; continuing (log: {node.log.path})")
        return None

    def _finish(self, code: int, why: str, interrupted: bool = False) -> int:
        self.log(why)
        self.stop_all()
        if code == 0:  # a node that failed while stopping would otherwise go unnoticed behind a success
            for node in self.nodes:
                rc = node.proc.returncode
                if not node.reported and rc is not None and rc > 0:
                    self._fail(node, f"exited with status {rc} while stopping")
                    self.log(f"{node.spec.name} exited with status {rc} while stopping")
        self.log(f"exit status {code}")
        suspects = self._suspects() if code not in (0, EXIT_INTERRUPTED) else ()
        self.view.closed(Outcome(code, why, tuple(self.failures), interrupted, suspects), self.log_dir)
        self._close()
        return code

    def _suspects(self) -> tuple[NodeFailure, ...]:
        """Nodes that did not fail by their exit status but whose log holds a Python traceback (a worker
        thread that died, say): often the cause of another node's failure."""
        failed = {f.node for f in self.failures}
        return tuple(
            NodeFailure(n.spec.name, "logged a Python traceback", n.log.path)
            for n in self.nodes
            if n.spec.name not in failed and has_traceback(n.log.path)
        )

    def _close(self) -> None:
        if self._session_log is not None:
            self._session_log.close()
            self._session_log = None


def run_session(
    session: Session,
    log_dir: Path | str | None = None,
    view: SessionView | None = None,
    env: Mapping[str, str] | None = None,
    time_limit_s: float | None = None,
) -> int:
    """Run a session in this process; Ctrl-C and SIGTERM stop it cleanly (main thread only).

    `log_dir` defaults to a fresh `runs/sessions/<session>-<date>-<time>`; `view` to one progress line."""
    sup = Supervisor(
        session,
        Path(log_dir) if log_dir is not None else default_log_dir(session.name),
        view,
        env=env,
        time_limit_s=time_limit_s,
    )
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


def check_time_limit(seconds: float | None) -> None:
    """--time-limit-s must be a positive, finite number: zero, a negative or NaN limit would start the first
    node only to kill it mid-import, and show its interrupted traceback as the session's failure."""
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise SessionError(f"--time-limit-s {seconds:g}: must be a positive number of seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mimic session", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for action, text in (
        ("up", "start the session and supervise it until Ctrl-C"),
        ("show", "print the resolved node command lines and exit"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument(
            "session", help="session YAML path, or a packaged session name (teleop_twin, deploy_twin)"
        )
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="NODE.KEY=VALUE",
            help="override a node parameter (or enabled/required/ends_session/ready_timeout_s)",
        )
        if action == "up":
            p.add_argument(
                "--log-dir",
                default=None,
                help="folder for <node>.log and session.log (default runs/sessions/<session>-<time>)",
            )
            p.add_argument(
                "-v",
                "--verbose",
                action="store_true",
                help="stream every node's output, prefixed [node], instead of the progress line",
            )
            p.add_argument(
                "--time-limit-s",
                type=float,
                default=None,
                help="stop the session with status 1 if it is still running after this long",
            )
    args = parser.parse_args(argv)
    try:
        check_time_limit(getattr(args, "time_limit_s", None))
        session = load_session(args.session, args.overrides)
    except SessionError as e:
        print(f"mimic session: {e}", file=sys.stderr)
        return EXIT_BAD_SESSION
    if args.action == "show":
        for n in session.nodes:
            flags = ", ".join(k for k in ("required", "ends_session") if getattr(n, k)) or "optional"
            state = "" if n.enabled else "  # disabled"
            print(f"# {n.name} ({flags}){state}\n{shlex.join(node_command(n))}")
        return 0
    view = StreamView() if args.verbose else ProgressView(session.name)
    try:
        return run_session(session, args.log_dir, view, time_limit_s=args.time_limit_s)
    except SessionError as e:
        print(f"mimic session: {e}", file=sys.stderr)
        return EXIT_BAD_SESSION


if __name__ == "__main__":
    sys.exit(main())
