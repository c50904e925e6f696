"""Two-gripper handheld twin -> UMI-style bimanual .zarr.zip -> import -> tiny train -> rollout on two arm twins.

The mechanics end to end through the CLIs (`mimic record`, `mimic dataset import-dp`, `mimic train`,
`mimic eval`); the success measurement of a properly trained policy is docs/bimanual.md's command, not a test.
The deployment path is checked with a replay oracle: the recorded demos' chunks, relative per gripper and
decoded at each arm's measured TCP, must place both cubes on two arm twins through the same rollout, IK and
Limiter code the policy uses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from mimic.data.dataset import ReplayDataset
from mimic.data.relative import RelativeTrajectory, pose_to_matrix
from mimic.robots.gripper import grasp_command
from mimic.sim.bimanual import BimanualHandheldEnv, BimanualTwinEnv
from mimic.workflows.bimanual_eval import make_controllers, rollout_bimanual
from mimic.workflows.eef_rollout import rollout_arms
from tests.tiny import TINY_RUN

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "policies" / "configs" / "bimanual_pick_place_eef.yaml"
SEED = 40


def _mimic(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mimic.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("bimanual")
    umi, store = d / "demos.zarr.zip", d / "demos.zarr"
    out = _mimic(
        "record",
        str(umi),
        "--arm",
        "handheld_bimanual",
        "--episodes",
        "2",
        "--seed",
        str(SEED),
        "--image-size",
        "48x64",
        "--approach-error-m",
        "0.03",
        "--no-progress",
    )
    assert out.returncode == 0, out.stderr
    out = _mimic("dataset", "import-dp", str(umi), "-o", str(store), "--robot", "handheld")
    assert out.returncode == 0, out.stderr
    return umi, store


def test_store_is_umi_bimanual_layout(stores):
    """Plain zarr (format 2, zip) reads UMI's keys, dtypes and shapes; the import keeps every value."""
    umi, store = stores
    zs = zarr.storage.ZipStore(str(umi), mode="r")
    try:
        root = zarr.open_group(zs, mode="r")
        assert root.metadata.zarr_format == 2
        assert root.attrs["approach_error_m"] == 0.03
        data = root["data"]
        ends = root["meta"]["episode_ends"][:]
        assert ends.dtype == np.int64 and len(ends) == 2
        n = int(ends[-1])
        for i in range(2):
            assert data[f"robot{i}_eef_pos"].shape == (n, 3) and data[f"robot{i}_eef_pos"].dtype == np.float32
            assert data[f"robot{i}_eef_rot_axis_angle"].dtype == np.float32
            assert data[f"robot{i}_gripper_width"].shape == (n, 1)
            assert data[f"robot{i}_demo_start_pose"].dtype == np.float64
            assert data[f"camera{i}_rgb"].shape == (n, 48, 64, 3) and data[f"camera{i}_rgb"].chunks[0] == 1
        action = data["action"][:]
        assert action.shape == (n, 14)
        for i in range(2):  # UMI's action: each gripper's [pos, rot, width], concatenated
            row = np.concatenate(
                [data[f"robot{i}_{k}"][:] for k in ("eef_pos", "eef_rot_axis_angle", "gripper_width")], 1
            )
            np.testing.assert_array_equal(action[:, 7 * i : 7 * (i + 1)], row)
        ds = ReplayDataset(str(store))
        np.testing.assert_array_equal(ds.read("action"), action)
        np.testing.assert_array_equal(ds.read("camera1_rgb"), data["camera1_rgb"][:])
        assert ds.attrs["robot"] == "handheld"
    finally:
        zs.close()


class BimanualReplayOracle:
    """The BimanualEefPolicy interface predicting the recorded demo's chunks, each gripper's relative to that
    gripper's demo pose and decoded at its arm's measured TCP (a perfectly trained policy)."""

    obs_keys = (
        "robot0_eef_pos",
        "robot0_eef_rot_axis_angle",
        "robot0_gripper_width",
        "robot1_eef_pos",
        "robot1_eef_rot_axis_angle",
        "robot1_gripper_width",
        "object_state",
    )
    n_obs_steps, horizon, n_action_steps, gripper_max, grippers = 2, 16, 8, 0.08, 2

    def __init__(self, actions: np.ndarray) -> None:
        self.actions, self.i = actions, 0

    def reset(self) -> None:
        self.i = 0

    def predict(self, window, num_inference_steps=None):
        a, i = self.actions, min(self.i, len(self.actions) - 1)
        self.i += self.n_action_steps
        idx = np.clip(np.arange(i - 1, i - 1 + self.horizon), 0, len(a) - 1)
        out = []
        for g in range(2):
            tf = RelativeTrajectory(pos_key=f"robot{g}_eef_pos", rot_key=f"robot{g}_eef_rot_axis_angle")
            demo = a[:, 7 * g : 7 * (g + 1)]
            rel = tf.encode_actions(demo[idx], pose_to_matrix(demo[i, :3], demo[i, 3:6]))
            here = pose_to_matrix(window[f"robot{g}_eef_pos"][-1], window[f"robot{g}_eef_rot_axis_angle"][-1])
            rows = tf.decode_actions(rel, here)
            rows[:, 6] = grasp_command(rows[:, 6], self.gripper_max)
            out.append(rows)
        return np.concatenate(out, 1)


def test_demos_replayed_through_two_arms_place_both_cubes(stores):
    """The demos' own relative chunks, from the demos' start poses, succeed on two xArm7 twins (same scenes)."""
    _, store = stores
    ds = ReplayDataset(str(store))
    env = BimanualTwinEnv("xarm7")
    ctrls = make_controllers(env)
    try:
        for ep, seed in enumerate((SEED, SEED + 1)):
            s0 = 0 if ep == 0 else int(ds.episode_ends[ep - 1])
            actions = ds.read("action")[s0 : int(ds.episode_ends[ep])].astype(np.float64)
            starts = [actions[0, 7 * g : 7 * g + 6] for g in range(2)]
            ok, steps, placed, _, _ = rollout_bimanual(
                BimanualReplayOracle(actions), env, ctrls, seed, starts
            )
            assert ok, f"seed {seed}: placed {placed} after {steps} steps"
    finally:
        env.close()
    assert sum(c.eef_counters.unreachable_points for c in ctrls) == 0


def test_demos_replayed_on_the_handheld_rig_place_both_cubes(stores):
    """The same chunks on the two handheld grippers (no controllers): the rig's own start, rows as they are."""
    _, store = stores
    ds = ReplayDataset(str(store))
    env = BimanualHandheldEnv()
    try:
        for ep, seed in enumerate((SEED, SEED + 1)):
            s0 = 0 if ep == 0 else int(ds.episode_ends[ep - 1])
            actions = ds.read("action")[s0 : int(ds.episode_ends[ep])].astype(np.float64)
            ok, steps, _, _ = rollout_arms(BimanualReplayOracle(actions), env, [], seed, None)
            assert ok, f"seed {seed}: failed after {steps} steps"
    finally:
        env.close()


def test_tiny_train_then_eval_on_two_arms(stores, tmp_path):
    """`mimic train` on the imported store, then `mimic eval` drives two arm twins and writes its JSON."""
    _, store = stores
    run = tmp_path / "run"
    sets = [f"--set={s}" for s in [*TINY_RUN, f"dataset={store}", f"run_dir={run}", "val_ratio=0"]]
    out = _mimic("train", str(CONFIG), *sets, "--no-progress")
    assert out.returncode == 0, out.stderr[-2000:]
    result = tmp_path / "eval.json"
    out = _mimic(
        "eval",
        str(run / "checkpoint"),
        "--arm",
        "xarm7",
        "--episodes",
        "1",
        "--seed",
        "100000",
        "--json",
        str(result),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(result.read_text())
    assert res["arm"] == "2x xarm7" and res["task"] == "bimanual_pick_place"
    assert res["episodes"] == 1 and len(res["outcomes"]) == 1 and res["episode_steps"][0] > 0
    assert len(res["per_gripper_placed"]) == 2
    # the same checkpoint on the handheld rig its demos come from: rows executed as they are, no IK
    out = _mimic(
        "eval", str(run / "checkpoint"), "--arm", "handheld", "--episodes", "1", "--json", str(result)
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(result.read_text())
    assert res["arm"] == "2x handheld" and res["start"] == "rig" and res["episode_steps"][0] > 0
    assert res["unreachable_points"] == 0 and len(res["per_gripper_placed"]) == 2
    assert res["rig_lag_s"] == 0.0
    # the rig with its hands lagging the rows, through an arm's IK; either for the arms is refused in one line
    lagged = ["eval", str(run / "checkpoint"), "--episodes", "1", "--rig-lag-s", "0.1", "--json", str(result)]
    out = _mimic(*lagged, "--arm", "handheld", "--rig-ik", "xarm7")
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(result.read_text())
    assert res["rig_lag_s"] == 0.1 and res["rig_ik"] == "xarm7"
    out = _mimic(*lagged, "--arm", "xarm7")
    assert out.returncode == 2 and "--rig-lag-s and --rig-ik apply to --arm handheld" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_approach_error_applies_to_the_bimanual_handheld_recorder_only(tmp_path):
    out = _mimic("record", str(tmp_path / "x.zarr"), "--arm", "franka", "--approach-error-m", "0.03")
    assert out.returncode == 2 and "record.approach_error_m: applies to arm handheld_bimanual" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "x.zarr").exists()
