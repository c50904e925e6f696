"""Latency matching on the twin's timing-sensitive task: `mimic deploy` of a scripted predictive policy on track.

The goal circles at 0.15 m/s and must be followed within 2 cm for 1 s (mimic.sim.env). The arm node injects 100 ms
of command latency and reports /objects/state 150 ms late (a tracker on a 150 ms camera); the policy is
skilled: from the newest object state in its window it predicts the goal's path from that moment on and
follows it by IK, as a trained policy would. With matching the deploy session succeeds; with the naive loop
(same policy, same seeds) the arm runs ~0.3 s behind the goal, 4 cm, and never holds it: a matching that
stopped compensating would fail here. docs/latency_matching.md has the same comparison with a trained policy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
ARM = "franka"
LOOKAHEAD_S = 0.13  # the twin servo's lag, as in the scripted expert


class TrackPolicy:
    """Scripted stand-in for a track checkpoint: row i aims at where the goal will be at its due time
    (`t_obs + (i - offset) / control_hz`, plus the servo's lag), by the track expert's IK, from the newest
    observation on (n_obs_steps - 1 is the row aligned with it, the policies' convention)."""

    obs_keys = ("robot0_joint_pos", "robot0_gripper_width", "object_state")
    n_obs_steps, horizon, n_action_steps, control_hz = 2, 16, 8, 10.0

    def __init__(self) -> None:
        from mimic.sim import make_env

        self.env = make_env("track", ARM, seed=0, cameras=())
        self.action_dim = self.env.spec.dof + 1

    def reset(self) -> None:
        pass

    def predict(self, obs_window: dict[str, np.ndarray], num_inference_steps=None) -> np.ndarray:
        from mimic.sim.expert import Expert

        obs = {k: np.asarray(obs_window[k][-1], float) for k in self.obs_keys}
        expert = Expert(self.env)  # starts from the observed TCP, closes in at its speed limit
        rows = []
        for i in range(self.horizon):
            expert.track_lookahead_s = LOOKAHEAD_S + (i - (self.n_obs_steps - 1)) / self.control_hz
            rows.append(expert.act(obs))
        return np.stack(rows)


def deploy(tmp_path: Path, matching: bool, episodes: int = 2) -> dict:
    results = tmp_path / f"results_{matching}.json"
    cmd = [
        sys.executable,
        "-m",
        "mimic.cli",
        "deploy",
        f"py:{__name__}:TrackPolicy",
        "--arm",
        f"twin:{ARM}",
        "--task",
        "track",
        "--episodes",
        str(episodes),
        "--episode-s",
        "8",
        "--cameras",
        "",
        "--camera-latency-s",
        "0.15",
        "--arm-latency-s",
        "0.1",
        "--object-latency-s",
        "0.15",
        "--results",
        str(results),
    ]
    if not matching:
        cmd.append("--no-matching")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    print(out[-500:], f"\nmimic deploy track (matching {matching}) took {time.monotonic() - t0:.0f} s")
    return json.loads(results.read_text())


def test_track_needs_latency_matching_through_the_deploy_session(tmp_path) -> None:
    on = deploy(tmp_path, matching=True)
    assert on["success"] == on["n"] == 2, on
    off = deploy(tmp_path, matching=False)
    assert off["n"] == 2 and off["success"] == 0, off
    assert [e["seed"] for e in on["episodes"]] == [e["seed"] for e in off["episodes"]]
