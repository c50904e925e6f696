"""Keyboard end-effector teleop over ROS, through a real pseudo-terminal: keys typed into a pty move the twin.

Real processes: the Franka twin's arm node, the controller in `mode:=eef`, and the keyboard node reading the
slave side of a pty the test opens (os.openpty); the test types into the master side, exactly the bytes a
terminal sends, and watches the twin's TCP by forward kinematics of /robot/joint_states (mimic.robots.ik).
Checked, each within POS_TOL_M / ROT_TOL_RAD of the expected motion after the arm settles:
- position keys move the TCP by step_m per key along the documented base axis and sign, orientation kept;
- rotation keys turn it by step_rad about the documented base axis, in place;
- space closes and reopens the gripper (measured width);
- a key pushing past the workspace box stops at the box face (and the node says so in its status);
- `q` ends the node with exit status 0.
The packaged session `teleop_keyboard_twin` is then run as a person would: the supervisor with the keyboard on
one pty, the recorder keys (`python -m mimic_ros.keys`) on a second; an episode typed on the keyboard is
recorded, committed, validated, and its joint rows show by FK the TCP motion the keys asked for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from mimic.data.validate import validate
from mimic.robots.eef_control import tcp_pose_row
from mimic.robots.ik import IKSolver
from tests.integration.test_session_recorder import start_node
from tests.twin_watcher import TwinWatcher

ARM = "franka"
RATE_HZ = 250.0  # controller rate: a 2-core machine shared with other jobs
STEP_M, STEP_RAD, HALF_BOX_M = 0.01, 0.05, 0.06
POS_TOL_M, ROT_TOL_RAD = 0.005, 0.02  # measured TCP vs the expected pose after settling
GRIPPER_TOL_M = 0.005
SETTLE_TIMEOUT_S = 8.0


class Peer(TwinWatcher):
    """The test's node: joint states (TCP by FK), controller diagnostics, the keyboard node's status."""

    def __init__(self) -> None:
        super().__init__("keyboard_teleop_test", ARM)
        self.status: dict = {}
        self.commands = 0
        self.node.create_subscription(JointState, "/robot/joint_command", self._on_command, 100)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(
            String, "/keyboard/status", lambda m: setattr(self, "status", json.loads(m.data)), latched
        )

    def _on_command(self, msg: JointState) -> None:
        self.commands += 1

    def gripper(self) -> float:
        return float(self.states[-1][self.spec.dof])

    def settled(self, what: str) -> np.ndarray:
        """The TCP pose once it moved < 0.2 mm / 1 mrad over 0.3 s (bounded by SETTLE_TIMEOUT_S)."""
        end = time.monotonic() + SETTLE_TIMEOUT_S
        self.spin_for(0.3)
        prev = self.tcp()
        while True:
            self.spin_for(0.3)
            now = self.tcp()
            dp, dr = pose_delta(prev, now)
            if np.linalg.norm(dp) < 2e-4 and np.linalg.norm(dr) < 1e-3:
                return now
            assert time.monotonic() < end, f"the arm did not settle after {what}"
            prev = now


def pose_delta(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(b - a position, rotation from a to b as a base-frame rotation vector)."""
    rot = Rotation.from_rotvec(b[3:6]) * Rotation.from_rotvec(a[3:6]).inv()
    return b[:3] - a[:3], rot.as_rotvec()


def test_keys_typed_into_a_pty_move_the_twin_tcp(procs) -> None:
    t_begin = time.monotonic()
    start_node(procs, "arm_node", {"backend": f"twin:{ARM}", "cameras": "", "state_rate_hz": 100.0})
    start_node(procs, "controller_node", {"arm": ARM, "mode": "eef", "rate_hz": RATE_HZ})
    master, slave = os.openpty()
    keyboard = start_node(
        procs,
        "keyboard_eef_node",
        {
            "arm": ARM,
            "tty": os.ttyname(slave),
            "step_m": STEP_M,
            "step_rad": STEP_RAD,
            "workspace_half_m": HALF_BOX_M,
        },
    )
    os.close(slave)  # the node opened its own descriptor of the slave side
    peer = Peer()
    report: list[str] = []

    def type_keys(keys: str, what: str) -> np.ndarray:
        before = len(peer.states)
        os.write(master, keys.encode())
        peer.wait_for(f"joint states after {what}", lambda: len(peer.states) > before + 5, timeout=10)
        return peer.settled(what)

    def check(name: str, start: np.ndarray, now: np.ndarray, dpos, drot) -> None:
        dp, dr = pose_delta(start, now)
        pos_err, rot_err = np.linalg.norm(dp - dpos), np.linalg.norm(dr - drot)
        report.append(
            f"{name}: moved {np.round(dp * 1e3, 1).tolist()} mm, rotated {np.round(dr, 3).tolist()} rad; "
            f"error {pos_err * 1e3:.2f} mm / {rot_err:.4f} rad"
        )
        assert pos_err < POS_TOL_M and rot_err < ROT_TOL_RAD, report[-1]

    try:
        peer.wait_for("joint states", lambda: len(peer.states) > 5)
        peer.wait_for(
            "the keyboard target seeded from /robot/joint_states", lambda: peer.status.get("seeded")
        )
        # the controller commands once DDS matched it with the keyboard node: the twin then settles under the
        # keyboard's target (its position servo sags ~1 mm below the target under gravity), the reference pose
        peer.wait_for("the controller commanding the keyboard's target", lambda: peer.commands > 50)
        home = peer.settled("start")
        zero = np.zeros(3)

        # position keys: 3 x w (+x), 2 x d (-y), 2 x r (+z), each step_m, orientation kept
        p1 = type_keys("www", "w x3")
        check("w x3", home, p1, [3 * STEP_M, 0, 0], zero)
        p2 = type_keys("dd", "d x2")
        check("d x2", p1, p2, [0, -2 * STEP_M, 0], zero)
        p3 = type_keys("rr", "r x2")
        check("r x2", p2, p3, [0, 0, 2 * STEP_M], zero)
        check("all position keys", home, p3, [3 * STEP_M, -2 * STEP_M, 2 * STEP_M], zero)

        # rotation keys: 2 x u (+z axis), then 1 x k (-x axis), in place
        r1 = type_keys("uu", "u x2")
        check("u x2", p3, r1, zero, [0, 0, 2 * STEP_RAD])
        r2 = type_keys("k", "k")
        check("k", r1, r2, zero, [-STEP_RAD, 0, 0])

        # gripper: space toggles between the spec's limits, measured on the twin
        g0 = peer.gripper()
        start_open = g0 > 0.5 * (peer.spec.gripper_min + peer.spec.gripper_max)
        first = peer.spec.gripper_min if start_open else peer.spec.gripper_max
        os.write(master, b" ")
        peer.wait_for(
            "the gripper to toggle", lambda: abs(peer.gripper() - first) < GRIPPER_TOL_M, timeout=10
        )
        g1 = peer.gripper()
        os.write(master, b" ")
        peer.wait_for(
            "the gripper to toggle back", lambda: abs(peer.gripper() - g0) < GRIPPER_TOL_M, timeout=10
        )
        report.append(f"gripper: {g0:.4f} -> {g1:.4f} -> {peer.gripper():.4f} m")
        r3 = peer.settled("gripper")
        check("gripper keys keep the TCP", r2, r3, zero, zero)

        # workspace box: a cube of half HALF_BOX_M around the start; 10 x f wants 8 cm below the start (we are
        # 2 cm above it), the box stops the target 6 cm below it
        b = type_keys("f" * 10, "f x10")
        check("f x10 against the box", r3, b, [0, 0, home[2] - HALF_BOX_M - r3[2]], zero)
        peer.wait_for(
            "the keyboard status after the box",
            lambda: peer.status.get("counts", {}).get("keys", 0) >= 7 + 3 + 2 + 10,
        )
        status = peer.status
        assert status["last"] == {"key": "f", "changed": False, "clipped": True, "refused": None}, status
        assert status["counts"]["clipped"] == 2 and status["counts"]["unreachable"] == 0, status
        assert abs(status["target"][2] - (status["box"][0][2])) < 1e-9
        report.append(f"box: TCP z {b[2]:.4f} m, box floor {status['box'][0][2]:.4f} m")
        assert peer.diag.get("mode") == "eef" and peer.diag["eef"]["unreachable_points"] == 0, peer.diag

        # q ends the node cleanly
        os.write(master, b"q")
        assert keyboard.wait(timeout=15) == 0, "".join(keyboard.log)
    finally:
        peer.close()
        os.close(master)
    print("\n".join(report), f"\nkeyboard teleop test took {time.monotonic() - t_begin:.0f} s")


def test_keys_towards_an_unreachable_target_are_refused_before_the_controller(procs) -> None:
    """10 cm steps forward, no box in the way: the keys past the arm's reach are refused by the node's IK check,
    the arm stops at the last reachable target and the controller never receives an unreachable point."""
    start_node(procs, "arm_node", {"backend": f"twin:{ARM}", "cameras": "", "state_rate_hz": 100.0})
    start_node(procs, "controller_node", {"arm": ARM, "mode": "eef", "rate_hz": RATE_HZ})
    master, slave = os.openpty()
    start_node(
        procs,
        "keyboard_eef_node",
        {"arm": ARM, "tty": os.ttyname(slave), "step_m": 0.1, "workspace": "-2,-2,-2,2,2,2"},
    )
    os.close(slave)
    peer = Peer()
    try:
        peer.wait_for("joint states", lambda: len(peer.states) > 5)
        peer.wait_for("the keyboard target seeded", lambda: peer.status.get("seeded"))
        peer.wait_for("the controller commanding the keyboard's target", lambda: peer.commands > 50)
        home = peer.settled("start")
        for _ in range(10):  # 1 m forward if every key were accepted
            os.write(master, b"w")
            peer.spin_for(0.3)
        peer.wait_for(
            "the keyboard status after 10 keys", lambda: peer.status.get("counts", {}).get("keys") == 10
        )
        end = peer.settled("10 x w")
        status = peer.status
        target = np.asarray(status["target"])
        dp, dr = pose_delta(home, end)
        accepted = 10 - status["counts"]["unreachable"]
        print(
            f"unreachable: {accepted} of 10 keys accepted, target x {target[0]:.3f} m, TCP moved "
            f"{np.round(dp * 1e3, 1).tolist()} mm; controller eef {peer.diag.get('eef')}"
        )
        assert 1 <= accepted < 10 and status["last"]["refused"] == "unreachable", status
        assert np.linalg.norm(end[:3] - target[:3]) < POS_TOL_M and np.linalg.norm(dr) < ROT_TOL_RAD
        assert abs(dp[0] - 0.1 * accepted) < POS_TOL_M
        peer.wait_for("controller diagnostics", lambda: "eef" in peer.diag)
        assert peer.diag["eef"]["unreachable_points"] == 0, peer.diag
        q = np.array([s[: peer.spec.dof] for s in peer.states])
        assert np.all(q >= peer.spec.q_min - 1e-6) and np.all(q <= peer.spec.q_max + 1e-6)
    finally:
        peer.close()
        os.close(master)


def test_bad_parameters_stop_the_node_with_one_line(procs) -> None:
    for params, expected in (
        (["tty:=/nonexistent/tty"], "keyboard: cannot open terminal '/nonexistent/tty'"),
        (["workspace:=0,0,0,1,1"], "keyboard: parameter workspace '0,0,0,1,1' is not"),
        (["step_m:=0.5"], "keyboard: parameter step_m=0.5 outside"),
    ):
        args = ["-m", "mimic_ros.keyboard_eef_node", "--ros-args"] + [a for p in params for a in ("-p", p)]
        proc = procs.python(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (params, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), (params, err)


class Lines:
    """A child's stdout, line by line on a thread; `wait(text)` blocks (bounded) until a line contains it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines = proc, []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def count(self, text: str) -> int:
        with self.cond:
            return sum(text in line for line in self.lines)

    def wait(self, text: str, timeout: float, n: int = 1) -> None:
        """Until `n` lines contain `text`."""
        with self.cond:
            ok = self.cond.wait_for(lambda: sum(text in line for line in self.lines) >= n, timeout=timeout)
        assert ok, f"no line {n} with {text!r} within {timeout} s:\n{self.text()[-4000:]}"

    def text(self) -> str:
        with self.cond:
            return "".join(self.lines)


def test_keyboard_session_records_an_episode_typed_on_a_pty(procs, tmp_path) -> None:
    t_begin = time.monotonic()
    kb_master, kb_slave = os.openpty()
    keys_master, keys_slave = os.openpty()
    store = tmp_path / "demos.zarr"
    sets = {
        "tty": os.ttyname(kb_slave),
        "recorder.path": store,
        "arm.cameras": "scene",
        "recorder.cameras": "scene",
        "controller.rate_hz": 100,
        "keyboard.step_m": STEP_M,
        # CI's starved 2 cores stalled this take after 9 rows at 250 Hz commands and 100 Hz states: the
        # lighter rates of test_session_teleop, and a 500 ms gap before a stream counts as stalled
        "arm.state_rate_hz": 50,
        "arm.camera_rate_hz": 10,
        "recorder.tolerance_s": 0.25,
    }
    # --verbose: the test follows the nodes' own lines, which the progress view keeps in the log files
    args = [
        sys.executable,
        "-m",
        "mimic.cli",
        "session",
        "up",
        "teleop_keyboard_twin",
        "--verbose",
        "--log-dir",
        str(tmp_path / "logs"),
    ]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    session = Lines(procs.start(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    keys = Lines(
        procs.python(
            "-u",
            "-m",
            "mimic_ros.keys",
            stdin=keys_slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
    os.close(kb_slave)
    os.close(keys_slave)
    try:
        session.wait("[session] all nodes ready", timeout=120)
        session.wait("[keyboard] keyboard: target seeded", timeout=30)
        keys.wait("s = start", timeout=30)
        # the recorder refuses to start until every stream has samples; the controller commands (the `action`
        # stream) once DDS has matched it with the keyboard node that just started: press s again, as a person
        deadline, presses = time.monotonic() + 30, 0
        while not keys.count("start: ok"):
            assert time.monotonic() < deadline, keys.text() + session.text()[-4000:]
            if presses:
                time.sleep(0.5)
            os.write(keys_master, b"s")
            presses += 1
            keys.wait("start: ", timeout=30, n=presses)
        for key in "wwwww" + "fff" + " ":  # 5 cm forward, 3 cm down, close the gripper: a person's pace
            os.write(kb_master, key.encode())
            time.sleep(0.2)
        time.sleep(2.0)  # the arm settles on the last target while recording
        os.write(keys_master, b"e")
        keys.wait("stop: ok", timeout=30)
        os.write(keys_master, b"q")
        assert procs.procs[1].wait(timeout=15) == 0, keys.text()
        os.write(kb_master, b"q")  # the keyboard ends the session (ends_session)
        assert session.proc.wait(timeout=60) == 0, session.text()[-4000:]
    finally:
        os.close(kb_master)
        os.close(keys_master)
    out = session.text()
    assert "[session] keyboard finished with status 0: ending the session" in out, out[-4000:]

    ds, stats = validate(store)
    assert ds.n_episodes == 1 and ds.attrs["robot"] == ARM
    rows = ds.episode_slice(0)
    q, width = ds.read("robot0_joint_pos")[rows], ds.read("robot0_gripper_width")[rows]
    action = ds.read("action")[rows]
    ik = IKSolver.for_arm(ARM)
    first, last = (tcp_pose_row(ik.fk(q[i])) for i in (0, -1))
    dp, dr = pose_delta(first, last)
    expected = np.array([5 * STEP_M, 0.0, -3 * STEP_M])
    print(
        f"recorded {len(q)} steps; TCP moved {np.round(dp * 1e3, 1).tolist()} mm (expected "
        f"{np.round(expected * 1e3, 1).tolist()}), rotated {np.linalg.norm(dr):.4f} rad; gripper "
        f"{width[0, 0]:.4f} -> {width[-1, 0]:.4f} m; alignment max ms "
        f"{ {k: round(v * 1e3, 1) for k, v in stats.max_error_s.items()} }; "
        f"s pressed {presses}x; test {time.monotonic() - t_begin:.0f} s"
    )
    assert len(q) >= 20  # > 2 s at 10 fps
    assert np.linalg.norm(dp - expected) < POS_TOL_M and np.linalg.norm(dr) < ROT_TOL_RAD
    assert width[0, 0] > 0.07 and width[-1, 0] < GRIPPER_TOL_M  # the twin starts open; space closed it
    assert action.shape[1:] == (8,) and np.median(np.abs(action[:, :7] - q)) < 0.05  # commands follow the arm
