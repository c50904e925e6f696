"""Where a session's output goes: one log file per node, plus `session.log` for the supervisor's own lines.

A terminal showing six nodes' interleaved output hides what matters (how far the session got, which node
failed and why), so the supervisor writes each node's stdout/stderr, line by line and flushed, to
`<log dir>/<node>.log` and shows only a progress view. When a node fails, `tail` gives the lines to show.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import TextIO

SESSION_LOG = "session"  # the supervisor's own lines: session.log, beside the nodes' logs
TAIL_LINES = 20


def default_log_dir(session_name: str, root: Path = Path("runs/sessions")) -> Path:
    """A fresh folder per run (`runs/sessions/<session>-<date>-<time>`), so a rerun never overwrites the logs
    of the run a person is still reading."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{session_name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{session_name}-{stamp}-{n}"
    return path


class NodeLog:
    """One node's log file. Writes never raise: the reader that drains a node's pipe must keep draining even
    when the disk is full, or the node would block on its next print."""

    def __init__(self, path: Path, stamped: bool = False) -> None:
        self.path = path
        self.stamped = stamped
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = open(path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115

    def write(self, line: str) -> None:
        if self._file is None:
            return
        if self.stamped:
            line = f"{time.strftime('%H:%M:%S')} {line}"
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except (OSError, ValueError):  # disk full, or closed under us during teardown
            pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


TRACEBACK = "Traceback (most recent call last):"


def has_traceback(path: Path) -> bool:
    """Whether a node's log holds a Python traceback: a node whose worker thread died keeps running, so
    when a session fails the root cause is often in a log other than the one of the node that exited."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return any(TRACEBACK in line for line in f)
    except OSError:
        return False


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    """The last `n` lines of a log file ([] if it cannot be read): what a person needs to see of a failure."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=n)]
    except OSError:
        return []
