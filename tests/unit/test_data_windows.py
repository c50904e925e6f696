"""Normalizer, sampler padding and WindowDataset on a real zarr store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from mimic.data.codecs import JpegCodec
from mimic.data.normalizer import Normalizer
from mimic.data.sampler import SequenceSampler, create_indices
from mimic.data.torch_dataset import WindowDataset


def make_store(path, lengths=(5, 7, 6), img=8):
    g = zarr.open_group(str(path), mode="w")
    n = sum(lengths)
    d = g.create_group("data")
    act = np.arange(n, dtype=np.float32)[:, None] * np.array([[1.0, -2.0]], np.float32)
    d.create_array("action", data=act)
    d.create_array("robot0_joint_pos", data=act[:, :1] + 100)
    im = d.create_array(
        "camera0_rgb",
        shape=(n, img, img, 3),
        chunks=(1, img, img, 3),
        dtype="uint8",
        serializer=JpegCodec(level=95),
        compressors=None,
    )
    im[:] = np.broadcast_to((np.arange(n) * 10 % 250).astype(np.uint8)[:, None, None, None], im.shape)
    g.create_group("meta").create_array("episode_ends", data=np.cumsum(lengths).astype(np.int64))
    return act


def test_normalizer_minmax_meanstd_roundtrip_and_state():
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, (200, 4))
    x[:, 3] = 5.0  # constant dimension must not divide by zero
    n = Normalizer().fit({"a": x, "b": x}, {"a": "minmax", "b": "meanstd"})
    y = n.normalize("a", x)
    assert np.allclose(y[:, :3].min(0), -1, atol=1e-5) and np.allclose(y[:, :3].max(0), 1, atol=1e-5)
    assert np.allclose(y[:, 3], 0)
    assert np.allclose(n.normalize("b", x)[:, :3].std(0), 1, atol=1e-4)
    t = torch.tensor(x, dtype=torch.float32).reshape(10, 20, 4)
    n2 = Normalizer().load_state_dict(n.state_dict())
    assert set(n.state_dict()) == {"a.scale", "a.offset", "b.scale", "b.offset"}
    back = n2.unnormalize("a", n2.normalize("a", t))
    assert torch.allclose(back, t, atol=1e-4)


def test_sampler_pads_by_repeating_episode_edges():
    ends = np.array([3, 7])
    idx = create_indices(ends, sequence_length=4, pad_before=1, pad_after=2)
    data = np.arange(7)
    s = SequenceSampler(ends, 4, 1, 2, ["x"], lambda k, a, b: data[a:b])
    windows = [s.sample_sequence(i)["x"].tolist() for i in range(len(s))]
    # episode 0 = [0,1,2]; first window starts 1 before, last ends 2 after, edges repeated
    assert windows[0] == [0, 0, 1, 2]
    assert windows[2] == [1, 2, 2, 2]
    assert [3, 3, 4, 5] in windows and [5, 6, 6, 6] in windows
    assert all(set(w) <= {0, 1, 2} or set(w) <= {3, 4, 5, 6} for w in windows)  # never cross episodes
    assert len(idx) == (3 + 1 + 2 - 4 + 1) + (4 + 1 + 2 - 4 + 1)


@pytest.mark.parametrize("cached", [False, True])
def test_window_dataset_items_split_and_cache(tmp_path, cached):
    act = make_store(tmp_path / "s.zarr")
    kw = dict(
        obs_keys=["robot0_joint_pos", "camera0_rgb"],
        n_obs_steps=2,
        horizon=4,
        val_ratio=0.34,
        seed=1,
        cache_dir=tmp_path / "cache" if cached else None,
    )
    tr = WindowDataset(tmp_path / "s.zarr", split="train", **kw)
    va = WindowDataset(tmp_path / "s.zarr", split="val", **kw)
    assert tr.train_mask.sum() == 2 and va.episode_mask.sum() == 1
    assert not np.any(tr.episode_mask & va.episode_mask)
    item = tr[0]
    assert (
        item["obs"]["camera0_rgb"].shape == (2, 3, 8, 8) and item["obs"]["camera0_rgb"].dtype == torch.float32
    )
    assert float(item["obs"]["camera0_rgb"].max()) <= 1.0
    assert item["action"].shape == (4, 2)
    # the first window of an episode repeats its first row as the padded observation
    a0 = item["action"].numpy()
    assert np.allclose(a0[0], a0[1])
    assert np.allclose(item["obs"]["robot0_joint_pos"][:, 0].numpy(), a0[:2, 0] + 100)
    assert all(np.isin(tr[i]["action"][:, 0].numpy(), act[:, 0]).all() for i in range(len(tr)))
    norm = tr.get_normalizer({"action": "minmax", "robot0_joint_pos": "meanstd", "camera0_rgb": "identity"})
    na = norm.normalize("action", tr[len(tr) - 1]["action"])
    assert float(na.abs().max()) <= 1.0 + 1e-5
    if cached:
        assert any((tmp_path / "cache").rglob("camera0_rgb.npy"))
