"""Episode marks: the root attrs entry that says which stream of a committed episode stalled, and where.

A stalled episode is committed only together with its mark, so a reader never meets an unmarked episode that
stalled: the mark is written before the commit and taken back if the commit is refused. The recorder nodes and
the bag importer commit this way, since other tools (validation, the session tooling) read what they wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MARKS_ATTR = "episode_marks"  # root attrs: {"<episode index>": {"stalled": ..., ...}}


def commit_marked(root: Any, end_episode: Callable[[], int], index: int, mark: dict | None) -> int:
    """Commit the open episode (`end_episode`, which returns its row count) as episode `index` of the store whose
    root group is `root`, with `mark` (None: not stalled) in its `episode_marks`. A refused commit (ValueError,
    re-raised) leaves the marks as they were."""
    marks = dict(root.attrs.get(MARKS_ATTR, {}))
    if mark is not None:
        marks[str(index)] = mark
        root.attrs[MARKS_ATTR] = marks
    try:
        return end_episode()
    except ValueError:
        if mark is not None:
            marks.pop(str(index), None)
            root.attrs[MARKS_ATTR] = marks
        raise
