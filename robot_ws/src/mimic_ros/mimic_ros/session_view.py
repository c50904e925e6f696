"""What a person sees of a running session: one progress line, or (verbose) every node's output.

`ProgressView` (the default) is one tqdm line: nodes coming up, then the session's count (episodes
recorded, rollouts; mimic_ros.progress), and at the end one line saying how the session ended. When a
node failed it prints the node's name and the last lines of its log, since the terminal no longer shows
the nodes' output. `StreamView` prints every line with its `[node]` prefix, for a person debugging a node
(`mimic session up ... --verbose`).

The supervisor calls a view from its main thread, except `line`, which node reader threads call.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

from tqdm import tqdm

from mimic_ros.node_logs import TAIL_LINES, tail
from mimic_ros.progress import Progress
from mimic_ros.session import Session


@dataclass(frozen=True)
class NodeFailure:
    node: str
    what: str  # "exited with status 3", "not ready after 60 s", ...
    log: Path


@dataclass(frozen=True)
class Outcome:
    code: int  # the session's exit status
    why: str  # the supervisor's reason for ending it
    failures: tuple[NodeFailure, ...] = ()  # the node that ended it first, then others that failed
    interrupted: bool = False
    suspects: tuple[NodeFailure, ...] = ()  # nodes that kept running with a traceback in their log


class SessionView(Protocol):
    def opened(self, session: Session, log_dir: Path) -> None: ...
    def line(self, who: str, text: str) -> None: ...
    def starting(self, node: str, ready: int, total: int) -> None: ...
    def running(self, progress: Progress | None) -> None: ...
    def tick(self) -> None: ...
    def note(self, text: str) -> None: ...
    def closed(self, outcome: Outcome, log_dir: Path) -> None: ...


def _counted(p: Progress, done: int, succeeded: int) -> str:
    return f"{succeeded}/{done} succeeded" if p.counts_successes and done else ""


def failure_report(
    failures: tuple[NodeFailure, ...], n_lines: int = TAIL_LINES, prefix: str = ""
) -> list[str]:
    """Per failed node: its name, what happened, and the last lines of its log (indented)."""
    out: list[str] = []
    for f in failures:
        lines = tail(f.log, n_lines)
        last = "last line" if len(lines) == 1 else f"last {len(lines)} lines"
        out.append(f"{prefix}{f.node} {f.what}; {last} of {f.log}:")
        out += [f"  | {line}" for line in lines] or ["  | (empty)"]
    return out


class ProgressView:
    """One tqdm line per session; `label` names it (the session's name, or the demo's stage)."""

    BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}{postfix}]"
    NODES = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}]"  # no ETA: nodes differ
    OPEN = "{desc}: {n_fmt} {unit} [{elapsed}{postfix}]"
    ELAPSED = "{desc} [{elapsed}]"

    def __init__(self, label: str = "", file: TextIO | None = None, announce: bool = True) -> None:
        """`announce=False`: no opening line (nodes, log folder) and no closing line for a clean end, for a
        caller that says both itself (the demo's stages)."""
        self.label = label
        self.file = file or sys.stderr
        self.announce = announce
        self.bar: tqdm | None = None
        self.progress: Progress | None = None
        self._shown: tuple[int, int] = (-1, -1)
        self._last_refresh = 0.0
        self._tty = bool(getattr(self.file, "isatty", lambda: False)())

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.file)
        else:
            print(text, file=self.file, flush=True)

    def opened(self, session: Session, log_dir: Path) -> None:
        self.label = self.label or session.name
        names = [n.name for n in session.enabled_nodes]
        if self.announce:
            self._print(f"{self.label}: {len(names)} nodes ({', '.join(names)}); logs: {log_dir}/<node>.log")
        self.bar = tqdm(
            total=len(names),
            desc=f"{self.label}: starting",
            unit="nodes ready",
            file=self.file,
            bar_format=self.NODES,
            dynamic_ncols=True,
            leave=True,
            mininterval=0.0,
        )

    def line(self, who: str, text: str) -> None:
        """Node output is in the log files, not here."""

    def starting(self, node: str, ready: int, total: int) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"{self.label}: starting {node}", refresh=False)
            self.bar.n = ready
            self._refresh()

    def running(self, progress: Progress | None) -> None:
        self.progress = progress
        if self.bar is None:
            return
        if progress is None:
            self.bar.bar_format = self.ELAPSED
            self.bar.set_description_str(f"{self.label}: running", refresh=False)
            self.bar.reset(total=None)
        else:
            self.bar.bar_format = self.BAR if progress.total else self.OPEN
            self.bar.unit = progress.unit
            self.bar.set_description_str(self.label, refresh=False)
            self.bar.reset(total=progress.total)
        self._shown = (-1, -1)
        self.tick()

    def tick(self) -> None:
        if self.bar is None:
            return
        if self.progress is not None:
            done, ok = self.progress.snapshot()
            if (done, ok) != self._shown:
                self._shown = (done, ok)
                self.bar.n = done
                self.bar.set_postfix_str(_counted(self.progress, done, ok), refresh=False)
                self._refresh()
                return
        if self._tty and time.monotonic() - self._last_refresh >= 1.0:  # the elapsed time keeps moving
            self._refresh()

    def _refresh(self) -> None:
        assert self.bar is not None
        self.bar.refresh()
        self._last_refresh = time.monotonic()

    def note(self, text: str) -> None:
        self._print(f"{self.label}: {text}")

    def closed(self, outcome: Outcome, log_dir: Path) -> None:
        if self.bar is not None:
            self.tick()
            self.bar.close()
            self.bar = None
        if outcome.interrupted:
            lines = [f"{self.label}: interrupted; all nodes stopped; logs in {log_dir}/"]
        elif outcome.code == 0:  # a clean end needs no more than the caller's own "done" line, if it has one
            lines = [f"{self.label}: {outcome.why}; all nodes stopped"] if self.announce else []
            # the session did its job, but a node failed on the way (e.g. while stopping)
            if outcome.failures:
                lines += [
                    *failure_report(outcome.failures, prefix=f"{self.label}: warning: "),
                    f"{self.label}: logs in {log_dir}/",
                ]
        else:
            lines = [
                f"{self.label}: FAILED (exit status {outcome.code}): {outcome.why}",
                *failure_report(outcome.failures),
                *(f"{self.label}: {s.node} {s.what}: {s.log}" for s in outcome.suspects),
                f"{self.label}: logs in {log_dir}/",
            ]
        for text in lines:
            print(text, file=self.file)
        self.file.flush()


class StreamView:
    """Every session and node line on the terminal, prefixed `[who]`: the nodes' own output, as it comes."""

    def __init__(self, emit: Callable[[str], None] | None = None) -> None:
        self._emit = emit or (lambda text: print(text, flush=True))
        self._lock = threading.Lock()

    def opened(self, session: Session, log_dir: Path) -> None:
        self.line("session", f"logs: {log_dir}/<node>.log")

    def line(self, who: str, text: str) -> None:
        with self._lock:
            self._emit(f"[{who}] {text}")

    def starting(self, node: str, ready: int, total: int) -> None:
        pass

    def running(self, progress: Progress | None) -> None:
        pass

    def tick(self) -> None:
        pass

    def note(self, text: str) -> None:
        """Already shown: the supervisor logs every note as a session line too."""

    def closed(self, outcome: Outcome, log_dir: Path) -> None:
        for f in (*outcome.failures, *outcome.suspects):
            self.line("session", f"{f.node} {f.what}; its log: {f.log}")
