"""The teleop session on the Franka twin, end to end, as separate processes started by the supervisor.

Chain under test: operator (sim expert on /robot/joint_states + /objects/state) -> emulated GELLO
Dynamixel bus (a pty) -> dynamixel-sdk in the leader node -> /leader/joint_states -> controller (follow)
-> /robot/joint_command -> arm node (MuJoCo twin, 2 rendered cameras) -> recorder -> Zarr store. The
store must pass `mimic dataset validate`, hold 5 committed episodes, and show the expert's success: the
cube resting on the goal at the end of each successful episode.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from mimic.data.validate import validate

EPISODES = 5


def session_args(tmp_path, episodes: int) -> list[str]:
    sets = {
        "recorder.path": tmp_path / "demos.zarr",
        "operator.episodes": episodes,
        "operator.bus_link": tmp_path / "gello",
        "operator.calibration": tmp_path / "gello.json",
        "operator.results_path": tmp_path / "operator.json",
        "leader.port": tmp_path / "gello",
        "leader.calibration": tmp_path / "gello.json",
        # Six processes share CI's 2 cores, and CI has failed this test with every process starved (the
        # controller's tick 460 ms late, the arm's states 1.2 s apart). Measured here pinned to ONE core
        # (taskset -c 0): at 100 Hz commands/leader/states and 10 Hz cameras the session needs more than that
        # core (busy 100%, the arm publishing 24 of its 100 Hz) and every take stalls; at these 50 Hz rates it
        # keeps the core 64% busy, the arm publishes 49 Hz and all takes commit. The recorder's 10 fps grid
        # still gets 5 samples per step from each low-dim stream and a frame per step from each camera.
        "operator.retries": 4,  # a take whose recording stalls (CPU-starved machine) is re-recorded
        "controller.rate_hz": 50,
        "leader.rate_hz": 50,
        "arm.state_rate_hz": 50,
        "arm.camera_rate_hz": 10,
        "recorder.tolerance_s": 0.25,  # a joint/command gap over 500 ms stalls a take (a real laptop: 200 ms)
    }
    # --verbose: the lines asserted below are the nodes' own, which the progress view keeps in the log files
    args = [
        sys.executable,
        "-m",
        "mimic.cli",
        "session",
        "up",
        "teleop_twin",
        "--verbose",
        "--log-dir",
        str(tmp_path / "logs"),
    ]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def test_teleop_session_records_pick_place_through_the_emulated_gello(procs, tmp_path) -> None:
    proc = procs.start(
        session_args(tmp_path, EPISODES), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out, _ = proc.communicate(timeout=420)
    assert proc.returncode == 0, out[-4000:]
    for node in ("arm", "controller", "recorder", "operator", "leader"):
        assert f"[session] {node} ready" in out
    assert "[leader]" in out and "all nodes stopped" in out

    results = json.loads((tmp_path / "operator.json").read_text())
    assert results["n"] == EPISODES and all(e["committed"] for e in results["episodes"]), results
    assert results["success"] >= EPISODES - 1, results  # the expert succeeds 100/100 offline; allow one miss

    ds, stats = validate(tmp_path / "demos.zarr")
    assert ds.n_episodes == EPISODES
    cli = subprocess.run(
        [sys.executable, "-m", "mimic.cli", "dataset", "validate", str(tmp_path / "demos.zarr")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    attrs = ds.attrs
    assert attrs["robot"] == "franka" and attrs["task"] == "pick_place" and attrs["fps"] == 10.0
    assert attrs["cameras"] == ["scene", "wrist"]
    for key in (
        "robot0_joint_pos",
        "robot0_gripper_width",
        "action",
        "object_state",
        "camera0_rgb",
        "camera1_rgb",
    ):
        assert key in ds.keys
    assert ds.array("camera0_rgb").shape[1:] == (96, 96, 3) and ds.array("action").shape[1:] == (8,)
    marks = dict(attrs.get("episode_marks", {}))
    for ep in results["episodes"]:
        i = ep["episode"]
        rows = ds.episode_slice(i)
        obj = ds.read("object_state")[rows]
        q = ds.read("robot0_joint_pos")[rows]
        assert len(obj) == ep["recorder"]["steps"] >= 30
        assert np.ptp(q, axis=0).max() > 0.2, f"the arm did not move in episode {i}"
        assert np.ptp(ds.read("camera0_rgb")[rows][:, ::8, ::8].astype(float), axis=0).max() > 0
        if ep["success"] and str(i) not in marks:
            cube, goal = obj[-1, :3], obj[-1, 7:10]
            assert np.linalg.norm(cube[:2] - goal[:2]) < 0.03, f"episode {i}: cube {cube} not on goal {goal}"
            assert np.linalg.norm(obj[0, :2] - obj[0, 7:9]) > 0.05, "the cube started on the goal"
    # commanded actions lead the measured joints: the follower tracks what the leader asked for
    q, a = ds.read("robot0_joint_pos"), ds.read("action")
    assert np.median(np.abs(a[:, :7] - q)) < 0.05
    print(
        f"expert success {results['success']}/{results['n']}; steps "
        f"{[e['recorder']['steps'] for e in results['episodes']]}; alignment max ms "
        f"{ {k: round(v * 1e3, 1) for k, v in stats.max_error_s.items()} }; marks {marks}"
    )
