"""Twin expert rollouts -> DatasetWriter -> validate -> WindowDataset batches a policy can train on."""

from __future__ import annotations

import numpy as np
import torch

from mimic.data.torch_dataset import WindowDataset
from mimic.data.validate import validate
from mimic.data.writer import DatasetWriter, StreamSpec

LOWDIM = ("robot0_joint_pos", "robot0_gripper_width", "robot0_eef_pos")


def test_twin_rollouts_round_trip_into_training_windows(tmp_path):
    import mimic.sim as sim

    env = sim.make_env("reach", "franka", seed=0, cameras=("scene",), image_size=(96, 96))
    expert = sim.make_expert(env)
    obs = env.reset(seed=0)
    dof = obs["robot0_joint_pos"].shape[0]
    streams = {k: StreamSpec(obs[k].shape) for k in LOWDIM}
    streams["camera0_rgb"] = StreamSpec((96, 96, 3), "uint8", "image")
    streams["action"] = StreamSpec((dof + 1,))
    path = tmp_path / "twin.zarr"
    w = DatasetWriter.create(
        path,
        env.control_hz,
        streams,
        {"robot": "franka", "joint_names": list(env.spec.joint_names), "task": "reach"},
    )
    recorded = []
    for ep in range(3):
        obs = env.reset(seed=ep)
        expert.reset()
        w.begin_episode()
        actions = []
        for i in range(15):
            t = ep * 1000.0 + i / env.control_hz
            act = expert.act(obs)
            for k in LOWDIM:
                w.append(k, t, obs[k])
            w.append("camera0_rgb", t, obs["camera0_rgb"])
            w.append("action", t, act)
            actions.append(act)
            obs, *_ = env.step(act)
        assert w.end_episode() == 15
        recorded.append(np.stack(actions))
    w.close()

    ds, stats = validate(path)
    assert ds.n_episodes == 3 and max(stats.max_error_s.values()) < 1e-9  # same-time samples: exact
    assert np.allclose(ds.episode(2)["action"], recorded[2])
    assert ds.attrs["joint_names"] == list(env.spec.joint_names)

    train = WindowDataset(
        path,
        obs_keys=["robot0_joint_pos", "camera0_rgb"],
        n_obs_steps=2,
        horizon=8,
        val_ratio=0.34,
        cache_dir=tmp_path / "cache",
    )
    loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True)
    batch = next(iter(loader))
    assert batch["obs"]["camera0_rgb"].shape == (8, 2, 3, 96, 96)
    assert batch["action"].shape == (8, 8, dof + 1)
    assert batch["obs"]["camera0_rgb"].std() > 0.01  # a rendered scene, not a blank frame
    norm = train.get_normalizer({"action": "minmax", "robot0_joint_pos": "minmax", "camera0_rgb": "identity"})
    a = norm.normalize("action", batch["action"])
    assert float(a.abs().max()) <= 1.0 + 1e-5
    assert torch.allclose(norm.unnormalize("action", a), batch["action"], atol=1e-5)
