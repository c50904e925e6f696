"""The supervisor with real child processes: start order and readiness, node output in per-node log files and
not on the terminal, the failing node's name and last log lines on the terminal, the progress line's count,
teardown on Ctrl-C, on a required node's death and on an `ends_session` node's exit, SIGKILL of a node that
ignores SIGINT, bounded start-up waits and time limit, and no orphans when the supervisor itself is SIGKILLed.

The nodes here are tiny stand-ins (no ROS) that follow the node protocol: `--ros-args -p k:=v`, the ready line
on stdout, a clean exit on SIGINT. The real nodes' own start-up is covered by the teleop and deploy tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

FAKE_NODE = textwrap.dedent('''
    """A stand-in node: behaviour from -p parameters; writes <out>/<name>.stopped on a clean SIGINT exit."""
    import os, signal, sys, time
    args = sys.argv[sys.argv.index("--ros-args") + 1:]
    params, name = {}, "?"
    for flag, value in zip(args[::2], args[1::2]):
        if flag == "-p":
            k, _, v = value.partition(":=")
            params[k] = v.strip('"')
        elif value.startswith("__node:="):
            name = value.split(":=", 1)[1]
    mode, out = params.get("mode", "run"), params["out"]
    open(os.path.join(out, name + ".pid"), "w").write(str(os.getpid()))
    if mode == "fail_start":
        print(f"{name}: parameter rate_hz=-1 outside [1, 1000]", file=sys.stderr, flush=True)
        sys.exit(2)
    if mode == "ignore_sigint":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    t0 = time.monotonic()
    try:  # before the ready line: a SIGINT right after it must still reach the clean-exit path
        if mode != "never_ready":
            print("MIMIC_NODE_READY " + name, flush=True)
        print(f"hello from {name}", flush=True)
        print(f"stderr note from {name}", file=sys.stderr, flush=True)
        if mode == "traceback":  # a worker thread that died: the process goes on
            print("Traceback (most recent call last):", file=sys.stderr, flush=True)
            print("TypeError: a worker died", file=sys.stderr, flush=True)
        if mode == "chatty_fail":  # 30 numbered lines on both streams, then a crash
            for i in range(30):
                print(f"{name} line {i:02d}", file=sys.stderr if i % 2 else sys.stdout, flush=True)
            sys.exit(3)
        for i in range(int(params.get("episodes", 0))):  # the recorder's commit line, as rclpy logs it
            print(f"[INFO] [1700000000.{i}] [{name}]: episode {i} committed: 40 steps", file=sys.stderr, flush=True)
        open(os.path.join(out, name + ".up"), "w").write("ok")
        wait_for = params.get("wait_for")
        while wait_for and not os.path.exists(os.path.join(out, wait_for + ".up")):
            time.sleep(0.05)
        t0 = time.monotonic()
        while True:
            time.sleep(0.05)
            if mode == "exit" and time.monotonic() - t0 > float(params.get("after", 0.5)):
                sys.exit(int(params.get("code", 0)))
    except KeyboardInterrupt:
        open(os.path.join(out, name + ".stopped"), "w").write("ok")
        if mode == "fail_on_stop":
            print(f"{name}: could not close the store", file=sys.stderr, flush=True)
            sys.exit(1)
        sys.exit(0)
''')


@pytest.fixture
def fake(tmp_path: Path):
    pkg = tmp_path / "fakenodes"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for executable in ("fake_node", "recorder_node", "operator_node"):  # progress rules key on the executable
        (pkg / f"{executable}.py").write_text(FAKE_NODE)
    out = tmp_path / "out"
    out.mkdir()

    def session(*nodes: dict, stop_timeout_s: float = 3.0, ready_timeout_s: float = 20.0) -> Path:
        lines = [
            f"session: fake\nstop_timeout_s: {stop_timeout_s}\nready_timeout_s: {ready_timeout_s}\nnodes:"
        ]
        for n in nodes:
            params = {"out": str(out), **n.get("parameters", {})}
            extra = "".join(
                f"    {k}: {str(v).lower()}\n"
                for k, v in n.items()
                if k not in ("name", "parameters", "executable")
            )
            lines.append(
                f"  - name: {n['name']}\n    executable: {n.get('executable', 'fake_node')}\n"
                f"    package: fakenodes\n{extra}    parameters: {params!r}".replace("'", '"')
            )
        path = tmp_path / "session.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return session, out, env


def start(procs, path: Path, env: dict, *extra: str) -> subprocess.Popen:
    logs = path.parent / "logs"
    return procs.start(
        [sys.executable, "-m", "mimic.cli", "session", "up", str(path), "--log-dir", str(logs), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def logs(path: Path) -> Path:
    return path.parent / "logs"


def wait_in_file(path: Path, needle: str, timeout: float = 60.0) -> None:
    """Until `path` (a log the supervisor writes) holds `needle`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(
        f"no {needle!r} in {path} after {timeout} s:\n" + (path.read_text() if path.exists() else "(missing)")
    )


def test_node_output_goes_to_its_log_file_not_the_terminal(procs, fake) -> None:
    session, out, env = fake
    path = session(
        {"name": "a"}, {"name": "b", "ends_session": True, "parameters": {"mode": "exit", "after": 0.3}}
    )
    proc = start(procs, path, env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, text
    for name in ("a", "b"):
        log = (logs(path) / f"{name}.log").read_text()
        assert (
            f"hello from {name}" in log and f"stderr note from {name}" in log
        )  # stdout and stderr, one file
        assert f"hello from {name}" not in text and f"stderr note from {name}" not in text
    assert "MIMIC_NODE_READY" not in text and "[session]" not in text
    assert text.splitlines()[0] == f"fake: 2 nodes (a, b); logs: {logs(path)}/<node>.log"  # said first
    assert "b finished with status 0" in text and "FAILED" not in text
    session_log = (logs(path) / "session.log").read_text()
    assert "[session] all nodes ready" in session_log and "[session] all nodes stopped" in session_log


def test_required_node_death_stops_everyone_and_fails(procs, fake) -> None:
    session, out, env = fake
    path = session(
        {"name": "a"}, {"name": "b", "parameters": {"mode": "exit", "code": 3, "after": 1.0}}, {"name": "c"}
    )
    proc = start(procs, path, env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, text
    session_log = (logs(path) / "session.log").read_text()
    assert (
        session_log.index("[session] a ready")
        < session_log.index("started b")
        < session_log.index("[session] b ready")
        < session_log.index("started c")
    )  # file order, each after ready
    assert "required node b died (status 3)" in text
    assert f"b exited with status 3; last 3 lines of {logs(path)}/b.log:" in text
    assert "  | hello from b" in text and "hello from a" not in text and "hello from c" not in text
    assert (out / "a.stopped").exists() and (out / "c.stopped").exists()


def test_failing_node_shows_its_name_and_last_20_log_lines(procs, fake) -> None:
    session, out, env = fake
    path = session({"name": "a"}, {"name": "crashy", "parameters": {"mode": "chatty_fail"}}, {"name": "c"})
    proc = start(procs, path, env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, text
    assert f"crashy exited with status 3; last 20 lines of {logs(path)}/crashy.log:" in text
    shown = [line[4:] for line in text.splitlines() if line.startswith("  | ")]
    assert shown == [f"crashy line {i:02d}" for i in range(10, 30)], (
        text
    )  # the log's last 20, stdout and stderr
    assert "crashy line 09" not in text and "hello from a" not in text
    assert "crashy line 00" in (logs(path) / "crashy.log").read_text()  # the whole output is in the file


def test_a_node_that_logged_a_traceback_is_named_when_another_fails(procs, fake) -> None:
    session, out, env = fake
    path = session(
        {"name": "policy", "parameters": {"mode": "traceback"}},
        {"name": "evaluator", "ends_session": True, "parameters": {"mode": "exit", "code": 1, "after": 0.3}},
    )
    proc = start(procs, path, env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, text
    assert f"evaluator exited with status 1; last 3 lines of {logs(path)}/evaluator.log:" in text
    assert f"fake: policy logged a Python traceback: {logs(path)}/policy.log" in text
    assert "TypeError: a worker died" not in text  # named, its log not shown: the failing node's is


def test_a_node_failing_while_stopping_is_shown_though_the_session_succeeded(procs, fake) -> None:
    session, out, env = fake
    path = session(
        {"name": "store", "parameters": {"mode": "fail_on_stop"}},
        {"name": "job", "ends_session": True, "parameters": {"mode": "exit", "after": 0.3}},
    )
    proc = start(procs, path, env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, text  # the session's status is still the job's
    assert (
        f"fake: warning: store exited with status 1 while stopping; last 4 lines of {logs(path)}/store.log:"
        in text
    ), text
    assert "  | store: could not close the store" in text


def test_progress_line_counts_the_recorders_episodes_toward_the_operators_target(procs, fake) -> None:
    session, out, env = fake
    path = session(
        {"name": "recorder", "executable": "recorder_node", "parameters": {"episodes": 3}},
        {
            "name": "operator",
            "executable": "operator_node",
            "ends_session": True,
            "parameters": {"mode": "exit", "after": 0.2, "episodes": 3, "wait_for": "recorder"},
        },
    )
    proc = start(procs, path, env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, text
    assert "3/3 episodes recorded" in text, text  # the recorder's lines count, toward the operator's 3
    assert "committed" not in text and "episode 2 committed" in (logs(path) / "recorder.log").read_text()


def test_verbose_streams_every_line_with_its_node_prefix(procs, fake) -> None:
    session, out, env = fake
    path = session(
        {"name": "a"}, {"name": "b", "ends_session": True, "parameters": {"mode": "exit", "after": 0.3}}
    )
    proc = start(procs, path, env, "--verbose")
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, text
    assert "[a] hello from a" in text and "[b] stderr note from b" in text and "[session] a ready" in text
    assert "hello from a" in (logs(path) / "a.log").read_text()


def test_ctrl_c_stops_all_nodes_cleanly(procs, fake) -> None:
    session, out, env = fake
    path = session({"name": "a"}, {"name": "b"})
    proc = start(procs, path, env)
    wait_in_file(logs(path) / "session.log", "all nodes ready")
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, text
    assert (out / "a.stopped").exists() and (out / "b.stopped").exists()
    assert "interrupted; all nodes stopped" in text and "FAILED" not in text


def test_node_ignoring_sigint_is_killed_after_the_grace_time(procs, fake) -> None:
    session, out, env = fake
    path = session(
        {"name": "stubborn", "parameters": {"mode": "ignore_sigint"}}, {"name": "ok"}, stop_timeout_s=1.0
    )
    proc = start(procs, path, env)
    wait_in_file(logs(path) / "session.log", "all nodes ready")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "stubborn did not stop within 1 s: SIGKILL" in text and time.monotonic() - t0 < 10
    pid = int((out / "stubborn.pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_start_up_failure_reports_the_nodes_error_and_starts_nothing_after_it(procs, fake) -> None:
    session, out, env = fake
    path = session({"name": "a"}, {"name": "bad", "parameters": {"mode": "fail_start"}}, {"name": "never"})
    proc = start(procs, path, env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "start-up failed: bad exited with status 2 before it was ready" in text
    assert "  | bad: parameter rate_hz=-1 outside [1, 1000]" in text  # the node's own error, from its log
    assert not (out / "never.pid").exists() and (out / "a.stopped").exists()


def test_ready_wait_is_bounded(procs, fake) -> None:
    session, out, env = fake
    proc = start(
        procs, session({"name": "mute", "parameters": {"mode": "never_ready"}}, ready_timeout_s=1.0), env
    )
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "mute not ready after 1 s" in text


def test_time_limit_ends_a_session_that_runs_too_long(procs, fake) -> None:
    session, out, env = fake
    path = session({"name": "a"}, {"name": "job", "ends_session": True})
    t0 = time.monotonic()
    proc = start(procs, path, env, "--time-limit-s", "3")
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, text
    assert (
        "time limit: still running after 3 s" in text and "job still running after the session's 3 s" in text
    )
    assert (out / "a.stopped").exists() and (out / "job.stopped").exists() and time.monotonic() - t0 < 30


@pytest.mark.parametrize("code", [0, 4])
def test_ends_session_node_exit_ends_the_session_with_its_status(procs, fake, code: int) -> None:
    session, out, env = fake
    path = session(
        {"name": "a"},
        {"name": "job", "ends_session": True, "parameters": {"mode": "exit", "code": code, "after": 0.5}},
    )
    proc = start(procs, path, env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, text
    assert f"job finished with status {code}: ending the session" in text and (out / "a.stopped").exists()
    assert ("job exited with status 4; last" in text) == (code == 4)


def test_optional_node_death_does_not_stop_the_session(procs, fake) -> None:
    session, out, env = fake
    path = session(
        {"name": "a"},
        {"name": "opt", "required": False, "parameters": {"mode": "exit", "code": 1, "after": 0.3}},
    )
    proc = start(procs, path, env)
    wait_in_file(logs(path) / "session.log", "optional node opt exited with status 1; continuing")
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and (out / "a.stopped").exists()
    assert "optional node opt exited with status 1; continuing" in text  # shown, though the session goes on


def test_killed_supervisor_leaves_no_orphans(procs, fake) -> None:
    session, out, env = fake
    path = session({"name": "a"}, {"name": "b"})
    proc = start(procs, path, env)
    wait_in_file(logs(path) / "session.log", "all nodes ready")
    pids = [int((out / f"{n}.pid").read_text()) for n in ("a", "b")]
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(
        Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]
        for p in pids
    ):
        assert time.monotonic() < deadline, "nodes outlived their supervisor"
        time.sleep(0.1)


def test_bad_session_file_is_one_line_exit_2(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("nodes:\n  - {name: a}\n")
    r = subprocess.run(
        [sys.executable, "-m", "mimic.cli", "session", "up", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "'executable'" in r.stderr
    show = subprocess.run(
        [
            sys.executable,
            "-m",
            "mimic.cli",
            "session",
            "show",
            "deploy_twin",
            "--set",
            "policy.checkpoint=ck",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert show.returncode == 0 and "-m mimic_ros.policy_node --ros-args -r __node:=policy" in show.stdout
    assert 'checkpoint:="ck"' in show.stdout and "# recorder (required)  # disabled" in show.stdout


def test_a_misspelt_node_parameter_stops_the_session_naming_node_and_parameter(tmp_path) -> None:
    """A real node (no stand-in): an unknown parameter is refused at its start instead of ignored."""
    path = tmp_path / "cam.yaml"
    path.write_text(
        "session: cam\nready_timeout_s: 60\nnodes:\n"
        "  - name: camera\n    executable: camera_node\n    parameters:\n      sourc: missing.mp4\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "mimic.cli", "session", "up", str(path), "--log-dir", str(tmp_path / "logs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "camera: unknown parameter 'sourc'" in out, out
