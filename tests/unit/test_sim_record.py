"""sim.record: expert demos with and without the goal held after success (the operator node's hold_steps)."""

from __future__ import annotations

import numpy as np

from data.dataset import ReplayDataset
from sim.record import record_expert_dataset


def test_hold_steps_append_expert_rows_that_stay_at_the_goal(tmp_path) -> None:
    plain = ReplayDataset(record_expert_dataset(tmp_path / "plain.zarr", "franka", "reach", 2, progress=False))
    held = ReplayDataset(record_expert_dataset(tmp_path / "held.zarr", "franka", "reach", 2, progress=False,
                                               hold_steps=4))
    for e in range(2):
        a = plain.episode(e, ["robot0_eef_pos"])["robot0_eef_pos"]
        b = held.episode(e, ["robot0_eef_pos", "object_state"])
        assert len(b["robot0_eef_pos"]) == len(a) + 4
        np.testing.assert_allclose(b["robot0_eef_pos"][: len(a)], a)  # same seeds, same expert: same start
        # the extra rows are observations after success: the TCP stays within the task's 2 cm of the goal
        dist = np.linalg.norm(b["robot0_eef_pos"][len(a) + 1:] - b["object_state"][len(a) + 1:], axis=1)
        assert np.all(dist < 0.02), dist
