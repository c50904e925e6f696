"""What a session's progress is, read from its nodes' log lines: episodes recorded, rollouts evaluated.

The supervisor shows one progress view instead of the nodes' output, so it needs a count a person cares
about. The nodes already log one line per finished episode; the rules below say which node's line counts
(keyed by executable, so a session file needs no extra field) and which node parameter holds the target:

- evaluator_node: `episode 3 (seed 100004): success after 2.1 s` / `... failed`: one rollout each;
  the total is its `episodes` parameter, and the successes are counted too.
- recorder_node: `episode 3 committed: 57 steps`: one recorded episode each (a discarded take does not
  count); the total is the scripted operator's `episodes` when the session has one, else open-ended (a
  person recording until they stop).
- handheld_recorder_node: the same line, open-ended (a person with a handheld gripper, or a replay).

The first rule whose node runs in the session applies, so a deploy session that also records rollouts
counts rollouts. A session with neither node has no count; its view shows elapsed time only.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from mimic_ros.session import Session


@dataclass(frozen=True)
class Rule:
    executable: str  # the node kind whose log lines are counted
    unit: str  # what one counted line is, as the view names it
    done: re.Pattern[str]  # a line that finishes one unit
    success: re.Pattern[str] | None = None  # of the `done` lines, those that count as a success
    total_from: tuple[str, str] | None = None  # (executable, parameter) holding the target count


RULES: tuple[Rule, ...] = (
    Rule(
        "evaluator_node",
        "rollouts",
        re.compile(r"\bepisode \d+ \(seed -?\d+\): (?:success after|failed)"),
        success=re.compile(r"\): success after"),
        total_from=("evaluator_node", "episodes"),
    ),
    Rule(
        "recorder_node",
        "episodes recorded",
        re.compile(r"\bepisode \d+ committed: \d+ steps"),
        total_from=("operator_node", "episodes"),
    ),
    Rule(
        "handheld_recorder_node",
        "episodes recorded",
        re.compile(r"\bepisode \d+ committed: \d+ steps"),
    ),
)


@dataclass
class Progress:
    """A thread-safe count, fed every line of every node (reader threads) and read by the view (main thread)."""

    unit: str
    node: str  # the node whose lines count
    rule: Rule
    total: int | None = None
    done: int = 0
    succeeded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def feed(self, node: str, line: str) -> bool:
        """Count `line` if it is this session's unit of progress; True when it was."""
        if node != self.node or not self.rule.done.search(line):
            return False
        with self._lock:
            self.done += 1
            if self.rule.success is not None and self.rule.success.search(line):
                self.succeeded += 1
        return True

    def snapshot(self) -> tuple[int, int]:
        """(done, succeeded), read together."""
        with self._lock:
            return self.done, self.succeeded

    @property
    def counts_successes(self) -> bool:
        return self.rule.success is not None


def _total(session: Session, source: tuple[str, str] | None) -> int | None:
    if source is None:
        return None
    executable, parameter = source
    for node in session.enabled_nodes:
        if node.executable == executable:
            value = node.parameters.get(parameter)
            try:
                total = int(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return None
            return total if total > 0 else None
    return None


def session_progress(session: Session, rules: tuple[Rule, ...] = RULES) -> Progress | None:
    """The count this session's view shows, or None when no node of it reports one."""
    for rule in rules:
        for node in session.enabled_nodes:
            if node.executable == rule.executable:
                return Progress(
                    unit=rule.unit, node=node.name, rule=rule, total=_total(session, rule.total_from)
                )
    return None
