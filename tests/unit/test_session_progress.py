"""The session's progress count, read from the nodes' own log lines, and what the progress view prints when a
session ends: the failing node's name and the last lines of its log, or one line for a clean end."""

from __future__ import annotations

import io
from pathlib import Path

from mimic_ros.node_logs import NodeLog, default_log_dir, tail
from mimic_ros.progress import session_progress
from mimic_ros.session import load_session, parse_session
from mimic_ros.session_view import NodeFailure, Outcome, ProgressView

# As rclpy prints them (RCUTILS default format), from the recorder's and evaluator's own log calls.
COMMIT = "[INFO] [1733580000.123456789] [recorder]: episode {i} committed: 57 steps"
ROLLOUT_OK = "[INFO] [1733580000.5] [evaluator]: episode {i} (seed 100001): success after 2.3 s"
ROLLOUT_FAIL = "[INFO] [1733580000.5] [evaluator]: episode {i} (seed 100002): failed"


def test_teleop_counts_recorder_commits_toward_the_operators_episodes() -> None:
    p = session_progress(load_session("teleop_twin", ["operator.episodes=7"]))
    assert p is not None and p.node == "recorder" and p.total == 7 and p.unit == "episodes recorded"
    assert p.feed("recorder", COMMIT.format(i=0)) and p.feed(
        "recorder", COMMIT.format(i=1) + " (marked: gap)"
    )
    assert not p.feed("operator", COMMIT.format(i=2))  # another node's line with the same words
    assert not p.feed("recorder", "[WARN] [1.0] [recorder]: episode discarded: no samples")
    assert not p.feed("recorder", "[INFO] [1.0] [recorder]: recording episode 2")
    assert p.snapshot() == (2, 0) and not p.counts_successes


def test_deploy_counts_rollouts_and_successes_even_when_it_records() -> None:
    p = session_progress(load_session("deploy_twin", ["evaluator.episodes=3", "recorder.enabled=true"]))
    assert p is not None and p.node == "evaluator" and p.total == 3 and p.unit == "rollouts"
    p.feed("evaluator", ROLLOUT_OK.format(i=0))
    p.feed("evaluator", ROLLOUT_FAIL.format(i=1))
    p.feed("recorder", COMMIT.format(i=0))
    assert p.snapshot() == (2, 1) and p.counts_successes


def test_a_person_recording_has_no_target_and_other_sessions_no_count() -> None:
    p = session_progress(load_session("teleop_keyboard_twin"))
    assert p is not None and p.node == "recorder" and p.total is None
    handheld = session_progress(load_session("handheld_twin"))
    assert handheld is not None and handheld.node == "recorder" and handheld.total is None
    assert handheld.feed("recorder", COMMIT.format(i=0)) and handheld.snapshot() == (1, 0)
    bare = parse_session("nodes:\n  - {name: cam, executable: camera_node}\n")
    assert session_progress(bare) is None


def test_log_tail_and_fresh_default_dirs(tmp_path: Path) -> None:
    log = NodeLog(tmp_path / "logs" / "arm.log")
    for i in range(30):
        log.write(f"line {i}")
    log.close()
    log.write("after close: dropped, no exception")
    assert tail(log.path, 20) == [f"line {i}" for i in range(10, 30)]
    assert tail(tmp_path / "missing.log") == []
    first = default_log_dir("teleop_twin", tmp_path)
    first.mkdir(parents=True)
    second = default_log_dir("teleop_twin", tmp_path)
    assert second != first and second.name.startswith("teleop_twin-")


def test_progress_view_prints_the_failing_nodes_name_and_log_tail(tmp_path: Path) -> None:
    log = NodeLog(tmp_path / "controller.log")
    for i in range(25):
        log.write(f"controller says {i}")
    log.close()
    out = io.StringIO()
    view = ProgressView("teleop_twin", file=out)
    session = load_session("teleop_twin")
    view.opened(session, tmp_path)
    view.running(session_progress(session))
    view.closed(
        Outcome(
            1,
            "required node controller died (status 1)",
            (NodeFailure("controller", "exited with status 1", log.path),),
        ),
        tmp_path,
    )
    text = out.getvalue()
    assert text.startswith(
        f"teleop_twin: 5 nodes (arm, controller, recorder, operator, leader); logs: {tmp_path}/"
    )
    assert "teleop_twin: FAILED (exit status 1): required node controller died (status 1)" in text
    assert f"controller exited with status 1; last 20 lines of {log.path}:" in text
    assert "  | controller says 24" in text and "  | controller says 5\n" in text and "says 4\n" not in text
    assert text.rstrip().endswith(f"teleop_twin: logs in {tmp_path}/")


def _clean_run(announce: bool, tmp_path: Path) -> str:
    out = io.StringIO()
    view = ProgressView("deploy", file=out, announce=announce)
    session = load_session("deploy_twin", ["evaluator.episodes=2"])
    progress = session_progress(session)
    view.opened(session, tmp_path)
    view.running(progress)
    progress.feed("evaluator", ROLLOUT_OK.format(i=0))
    progress.feed("evaluator", ROLLOUT_OK.format(i=1))
    view.closed(Outcome(0, "evaluator finished with status 0: ending the session"), tmp_path)
    return out.getvalue()


def test_progress_view_ends_in_one_line_when_all_went_well(tmp_path: Path) -> None:
    text = _clean_run(True, tmp_path)
    assert "2/2 rollouts" in text and "2/2 succeeded" in text
    assert text.rstrip().endswith(
        "deploy: evaluator finished with status 0: ending the session; all nodes stopped"
    )
    assert "FAILED" not in text and not any(line.startswith("  | ") for line in text.splitlines())
    quiet = _clean_run(
        False, tmp_path
    )  # the demo's stages say where the logs are and what they did themselves
    assert "2/2 rollouts" in quiet and "logs" not in quiet and "all nodes stopped" not in quiet
