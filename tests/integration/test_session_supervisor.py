"""The supervisor with real child processes: start order and readiness, log prefixes, teardown on Ctrl-C, on a
required node's death and on an `ends_session` node's exit, SIGKILL of a node that ignores SIGINT, bounded
start-up waits, and no orphans when the supervisor itself is SIGKILLed.

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
        while True:
            time.sleep(0.05)
            if mode == "exit" and time.monotonic() - t0 > float(params.get("after", 0.5)):
                sys.exit(int(params.get("code", 0)))
    except KeyboardInterrupt:
        open(os.path.join(out, name + ".stopped"), "w").write("ok")
        sys.exit(0)
''')


@pytest.fixture
def fake(tmp_path: Path):
    pkg = tmp_path / "fakenodes"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fake_node.py").write_text(FAKE_NODE)
    out = tmp_path / "out"
    out.mkdir()

    def session(*nodes: dict, stop_timeout_s: float = 3.0, ready_timeout_s: float = 10.0) -> Path:
        lines = [f"session: fake\nstop_timeout_s: {stop_timeout_s}\nready_timeout_s: {ready_timeout_s}\nnodes:"]
        for n in nodes:
            params = {"out": str(out), **n.get("parameters", {})}
            extra = "".join(f"    {k}: {str(v).lower()}\n" for k, v in n.items() if k not in ("name", "parameters"))
            lines.append(f"  - name: {n['name']}\n    executable: fake_node\n    package: fakenodes\n{extra}"
                         f"    parameters: {params!r}".replace("'", '"'))
        path = tmp_path / "session.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return session, out, env


def start(procs, path: Path, env: dict) -> subprocess.Popen:
    return procs.start([sys.executable, "-m", "mimic.cli", "session", "up", str(path)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 30.0) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no line with {needle!r}; got:\n{''.join(seen)}")


def test_required_node_death_stops_everyone_and_fails(procs, fake) -> None:
    session, out, env = fake
    path = session({"name": "a"}, {"name": "b", "parameters": {"mode": "exit", "code": 3, "after": 1.0}},
                   {"name": "c"})
    proc = start(procs, path, env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, text
    assert "[a] hello from a" in text and "[c] hello from c" in text  # logs streamed with node prefixes
    assert text.index("[session] a ready") < text.index("started b") < text.index("[session] b ready") \
        < text.index("started c")  # in file order, each after the previous one is ready
    assert "required node b died (status 3)" in text
    assert (out / "a.stopped").exists() and (out / "c.stopped").exists()


def test_ctrl_c_stops_all_nodes_cleanly(procs, fake) -> None:
    session, out, env = fake
    proc = start(procs, session({"name": "a"}, {"name": "b"}), env)
    wait_for_line(proc, "all nodes ready")
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, text
    assert (out / "a.stopped").exists() and (out / "b.stopped").exists()
    assert "all nodes stopped" in text


def test_node_ignoring_sigint_is_killed_after_the_grace_time(procs, fake) -> None:
    session, out, env = fake
    proc = start(procs, session({"name": "stubborn", "parameters": {"mode": "ignore_sigint"}}, {"name": "ok"},
                                stop_timeout_s=1.0), env)
    wait_for_line(proc, "all nodes ready")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "stubborn did not stop within 1 s: SIGKILL" in text and time.monotonic() - t0 < 10
    pid = int((out / "stubborn.pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_start_up_failure_reports_the_nodes_error_and_starts_nothing_after_it(procs, fake) -> None:
    session, out, env = fake
    proc = start(procs, session({"name": "a"}, {"name": "bad", "parameters": {"mode": "fail_start"}},
                                {"name": "never"}), env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "[bad] bad: parameter rate_hz=-1 outside [1, 1000]" in text
    assert "start-up failed: bad exited with status 2 before it was ready" in text
    assert not (out / "never.pid").exists() and (out / "a.stopped").exists()


def test_ready_wait_is_bounded(procs, fake) -> None:
    session, out, env = fake
    proc = start(procs, session({"name": "mute", "parameters": {"mode": "never_ready"}}, ready_timeout_s=1.0), env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "mute not ready after 1 s" in text


@pytest.mark.parametrize("code", [0, 4])
def test_ends_session_node_exit_ends_the_session_with_its_status(procs, fake, code: int) -> None:
    session, out, env = fake
    path = session({"name": "a"}, {"name": "job", "ends_session": True,
                                   "parameters": {"mode": "exit", "code": code, "after": 0.5}})
    proc = start(procs, path, env)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, text
    assert f"job finished with status {code}: ending the session" in text and (out / "a.stopped").exists()


def test_optional_node_death_does_not_stop_the_session(procs, fake) -> None:
    session, out, env = fake
    proc = start(procs, session({"name": "a"}, {"name": "opt", "required": False,
                                                "parameters": {"mode": "exit", "code": 1, "after": 0.3}}), env)
    wait_for_line(proc, "optional node opt exited with status 1; continuing")
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130 and (out / "a.stopped").exists()


def test_killed_supervisor_leaves_no_orphans(procs, fake) -> None:
    session, out, env = fake
    proc = start(procs, session({"name": "a"}, {"name": "b"}), env)
    wait_for_line(proc, "all nodes ready")
    pids = [int((out / f"{n}.pid").read_text()) for n in ("a", "b")]
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]
              for p in pids):
        assert time.monotonic() < deadline, "nodes outlived their supervisor"
        time.sleep(0.1)


def test_bad_session_file_is_one_line_exit_2(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("nodes:\n  - {name: a}\n")
    r = subprocess.run([sys.executable, "-m", "mimic.cli", "session", "up", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "'executable'" in r.stderr
    show = subprocess.run([sys.executable, "-m", "mimic.cli", "session", "show", "deploy_twin", "--set",
                           "policy.checkpoint=ck"], capture_output=True, text=True, timeout=60)
    assert show.returncode == 0 and "-m mimic_ros.policy_node --ros-args -r __node:=policy" in show.stdout
    assert "checkpoint:=\"ck\"" in show.stdout and "# recorder (required)  # disabled" in show.stdout
