"""Real-time chunking through the ROS deploy session: `mimic deploy --chunking rtc` with injected inference delay.

The policy is the scripted track policy of test_deploy_track, made able to continue a prefix (its frozen rows
kept, the rest its own plan). The test process listens to the session's chunks and the policy node's
diagnostics and checks the protocol: every chunk after an episode's first is computed with the executing
chunk as its prefix, and arrives while that chunk still runs, so the arm does not wait for it although each
inference takes 0.3 s more than the twin's. A chunk covers 1.4 s after its observation and the next starts
0.8 s later, so 0.6 s are left for the delay, the policy's compute and any latency: the streams run without
injected latency here, which leaves a loaded machine's compute room (a few late chunks are tolerated). That the frozen rows equal the executing chunk's is a unit test's
(tests/unit/test_realtime_chunking.py): they are the rows that run before the new chunk arrives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from mimic.robots.control import Chunk
from mimic_ros.controller_node import CHUNK_TOPIC, chunk_from_msg
from tests.integration.test_deploy_track import ARM, TrackPolicy

REPO = Path(__file__).resolve().parents[2]
DELAY_S = 0.3  # injected per chunk: 3 control periods, 37% of the 8 executed rows' 0.8 s


class PrefixTrackPolicy(TrackPolicy):
    def predict(self, obs_window, num_inference_steps=None, prefix=None) -> np.ndarray:
        rows = super().predict(obs_window, num_inference_steps)
        return rows if prefix is None else prefix.apply(rows)


def test_rtc_chunks_continue_the_executing_chunk_through_the_deploy_session(tmp_path) -> None:
    rclpy.init()
    node = rclpy.create_node("rtc_listener")
    chunks: list[tuple[float, Chunk]] = []
    diags: list[dict] = []
    lock = threading.Lock()
    dof = 7

    def on_chunk(msg: JointTrajectory) -> None:
        parsed = chunk_from_msg(msg, dof)
        if parsed is not None:
            with lock:
                chunks.append((time.time(), Chunk(*parsed)))

    def on_diag(msg: String) -> None:
        with lock:
            diags.append(json.loads(msg.data))

    node.create_subscription(JointTrajectory, CHUNK_TOPIC, on_chunk, 50)
    node.create_subscription(String, "/policy/diagnostics", on_diag, 50)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(
        target=lambda: [ex.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)]
    )
    spinner.start()
    results = tmp_path / "results.json"
    cmd = [
        sys.executable, "-m", "mimic.cli", "deploy", f"py:{__name__}:PrefixTrackPolicy",
        "--arm", f"twin:{ARM}", "--task", "track", "--episodes", "2", "--episode-s", "8", "--cameras", "",
        "--camera-latency-s", "0", "--arm-latency-s", "0", "--object-latency-s", "0",
        "--chunking", "rtc", "--inference-delay-s", str(DELAY_S), "--results", str(results),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO, env=os.environ)
    finally:
        stop.set()
        spinner.join(5)
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "chunking rtc" in out
    with lock:
        got, diag = list(chunks), list(diags)
    assert all(abs(d["injected_delay_s"] - DELAY_S) < 1e-9 for d in diag)
    assert all(d["delay_s"] >= DELAY_S for d in diag)
    # every chunk that continues one (same episode) was computed with the executing chunk as its prefix ...
    with_prefix = [d for d in diag if d["frozen_rows"] > 0]
    assert len(with_prefix) >= len(diag) - 2 * 3, (
        len(with_prefix),
        len(diag),
    )  # at most a few per episode start
    # ... and arrived while that chunk was still running: the arm never waited for it
    continued = waited = 0
    for (_, prev), (arrived, new) in zip(got, got[1:], strict=False):
        if new.t_start <= prev.t_start or new.t_start > prev.t_end + 1.0:
            continue  # an episode boundary
        continued += 1
        waited += arrived > prev.t_end
    assert continued >= 6 and waited <= continued // 4, (continued, waited)
    report = json.loads(results.read_text())
    assert sum(bool(e["success"]) for e in report["episodes"]) >= 1, report["episodes"]
    # the evaluator measured the seams from the arm's joint states and the chunks' stamps
    motion = report["motion"]
    assert motion["boundaries"] >= 3 and motion["within_vel_jump_p99"] > 0, motion
    assert "chunk seams" in out
