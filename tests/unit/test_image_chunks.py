"""Camera arrays hold several lossy frames per chunk, yet appends never re-encode a stored frame."""

from __future__ import annotations

import numpy as np

from mimic.data import codecs
from mimic.data.codecs import image_chunk_rows
from mimic.data.dataset import ReplayDataset
from mimic.data.image_chunks import ChunkTail
from mimic.data.writer import DatasetWriter, StreamSpec

FPS = 10.0
ATTRS = {"robot": "franka", "joint_names": ["a"]}
STREAMS = {
    "robot0_joint_pos": StreamSpec((1,), tolerance_s=0.2),
    "camera0_rgb": StreamSpec((16, 16, 3), "uint8", "image", tolerance_s=0.2),
}


def frames(n: int, seed: int) -> np.ndarray:
    """Textured frames (noise on a gradient): lossy coding changes them, so a re-encode would show."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, 16)[None, :, None, None] + np.linspace(0, 50, 16)[None, None, :, None]
    return np.clip(ramp + rng.normal(0, 20, (n, 16, 16, 3)), 0, 255).astype(np.uint8)


def episode(imgs: np.ndarray, t0: float) -> dict[str, np.ndarray]:
    t = t0 + np.arange(len(imgs)) / FPS
    return {
        "robot0_joint_pos": np.arange(len(imgs), dtype=float)[:, None],
        "camera0_rgb": imgs,
        "robot0_joint_pos_t": t,
        "camera0_rgb_t": t,
        "timestamp": t,
    }


def test_chunk_tail_keeps_open_chunk_and_restores_commit():
    tail = ChunkTail(4)
    start, rows = tail.extend(0, np.arange(6))
    assert start == 0 and list(rows) == list(range(6)) and (tail.start, list(tail.frames)) == (4, [4, 5])
    tail.commit()
    start, rows = tail.extend(6, np.arange(6, 9))
    assert start == 4 and list(rows) == [4, 5, 6, 7, 8] and (tail.start, list(tail.frames)) == (8, [8])
    tail.truncate(6)  # a discarded episode rewinds to the commit: its originals come back
    assert (tail.start, list(tail.frames)) == (4, [4, 5])
    tail.truncate(2)  # rewinding further than held: nothing to rewrite from
    assert (tail.start, tail.frames) == (2, None)


def record(w: DatasetWriter, imgs: np.ndarray, t0: float) -> None:
    w.begin_episode()
    for i, img in enumerate(imgs):
        w.append("robot0_joint_pos", t0 + i / FPS, [float(i)])
        w.append("camera0_rgb", t0 + i / FPS, img)


def test_incremental_appends_store_the_same_frames_as_one_write(tmp_path, monkeypatch):
    monkeypatch.setattr(codecs, "MAX_IMAGE_CHUNK_ROWS", 8)
    chunk = image_chunk_rows((16, 16, 3))  # lossless: several frames per chunk
    assert chunk == 8
    imgs = frames(2 * chunk + 10, 0)
    one = DatasetWriter.create(tmp_path / "one.zarr", FPS, STREAMS, ATTRS, image_quality=None)
    one.write_episodes([episode(imgs[:5], 0.0), episode(imgs[5:], 100.0)])
    one.close()
    inc = DatasetWriter.create(tmp_path / "inc.zarr", FPS, STREAMS, ATTRS, image_quality=None)
    inc.flush_every_s = 0.0  # every row is written as it completes: the open chunk is rewritten per row
    record(inc, imgs[:5], 0.0)
    assert inc.end_episode() == 5  # commit inside the first chunk
    record(inc, frames(chunk + 3, 1), 50.0)
    inc.discard_episode()  # rewinds from the second chunk into the committed part of the first
    record(inc, imgs[5:], 100.0)
    assert inc.end_episode() == len(imgs) - 5
    inc.close()
    a = ReplayDataset(tmp_path / "one.zarr").read("camera0_rgb")
    b = ReplayDataset(tmp_path / "inc.zarr").read("camera0_rgb")
    assert np.array_equal(a, imgs)  # lossless: every stored frame is its source, however often appended
    assert np.array_equal(a, b)
