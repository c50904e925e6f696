"""Store commits are atomic: a writer dying at any store operation never loses or hides a committed episode.

Fault injection, not timing: every write and delete the local zarr store performs is counted, and the k-th
one (and every one after it, as in a dead process) raises, for k = 1, 2, ... until the operation completes
without reaching k. After each simulated death the committed episodes must read back identically and a
fresh writer must append to the store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

import mimic.data.writer as writer_mod
from mimic.data.dataset import DatasetError, ReplayDataset
from mimic.data.validate import validate
from mimic.data.writer import DatasetWriter, StreamSpec

FPS = 10.0
ATTRS = {"robot": "franka", "joint_names": ["a", "b"]}


class Died(Exception):
    """The simulated kill: raised by the k-th store operation and every later one."""


@contextlib.contextmanager
def die_at(k: int) -> Iterator[list[str]]:
    """Patch LocalStore so its k-th mutating operation and all later ones raise Died; yields the op log."""
    ops: list[str] = []
    originals = {name: getattr(LocalStore, name) for name in ("set", "set_if_not_exists", "delete")}

    def wrap(name: str, orig: Callable) -> Callable:
        async def op(self: LocalStore, key: str, *args: object) -> object:
            ops.append(f"{name} {key}")
            if len(ops) >= k:
                raise Died(f"killed at store operation {len(ops)} ({name} {key})")
            return await orig(self, key, *args)

        return op

    for name, orig in originals.items():
        setattr(LocalStore, name, wrap(name, orig))
    try:
        yield ops
    finally:
        for name, orig in originals.items():
            setattr(LocalStore, name, orig)


def streams() -> dict[str, StreamSpec]:
    return {
        "robot0_joint_pos": StreamSpec((2,), tolerance_s=0.2),
        "action": StreamSpec((2,), tolerance_s=0.2),
        "camera0_rgb": StreamSpec((8, 8, 3), "uint8", "image", tolerance_s=0.2),
    }


def episode(tag: int, n: int) -> dict[str, np.ndarray]:
    """Already-aligned rows whose values name the episode, so a mix-up cannot read back equal."""
    t = 100.0 * tag + np.arange(n) / FPS
    rows = {
        "robot0_joint_pos": np.stack([np.full(n, tag, float), np.arange(n, dtype=float)], 1),
        "action": np.stack([np.full(n, -tag, float), np.arange(n, dtype=float)], 1),
        "camera0_rgb": np.full((n, 8, 8, 3), 10 * tag, np.uint8),
        "timestamp": t,
    }
    rows.update({f"{k}_t": t for k in streams()})
    return rows


def make_store(path, monkeypatch) -> dict[int, dict[str, np.ndarray]]:
    """Three committed episodes in 4-row chunks, so every batch below spans several chunks of every array."""
    monkeypatch.setattr(writer_mod, "LOWDIM_CHUNK_ROWS", 4)
    w = DatasetWriter.create(path, FPS, streams(), ATTRS)
    eps = {1: episode(1, 5), 2: episode(2, 3), 3: episode(3, 6)}
    w.write_episodes([eps[1], eps[2]])
    w.write_episode(eps[3])
    w.close()
    return {i - 1: e for i, e in eps.items()}


def assert_committed(path, expected: dict[int, dict[str, np.ndarray]], allow_extra: bool = False) -> int:
    ds = ReplayDataset(path)
    assert ds.n_episodes == len(expected) or (allow_extra and ds.n_episodes > len(expected))
    for i, rows in expected.items():
        got = ds.episode(i)
        for key, want in rows.items():
            if want.dtype == np.uint8:  # lossy JPEG XL: flat frames 10 apart per episode, decoded within 2
                assert np.abs(got[key].astype(int) - want).max() <= 2, (i, key)
            else:
                assert np.array_equal(got[key], want), (i, key)
    return ds.n_episodes


def reopen_and_append(path, expected: dict[int, dict[str, np.ndarray]]) -> None:
    """A new writer on the survived store appends one more episode, and everything reads back."""
    w = DatasetWriter.open(path)
    n = w.write_episode(episode(9, 4))
    w.close()
    assert n == 4
    ds, _ = validate(path)
    assert ds.n_episodes == len(expected) + 1
    assert_committed(path, {**expected, len(expected): episode(9, 4)})


def sweep(run: Callable[[int], bool], limit: int = 400) -> int:
    """Call run(k) for k = 1.. until it reports the operation completed; returns how many ks died."""
    for k in range(1, limit):
        if run(k):
            return k - 1
    raise AssertionError(f"operation did not complete within {limit} store operations")


def test_batch_write_dies_at_every_store_operation(tmp_path, monkeypatch):
    base = tmp_path / "base.zarr"
    committed = make_store(base, monkeypatch)
    batch = [episode(4, 3), episode(5, 2)]  # rows 14..18 and ends 3..4: both straddle a chunk boundary

    def run(k: int) -> bool:
        path = tmp_path / f"k{k}.zarr"
        shutil.copytree(base, path)
        w = DatasetWriter.open(path)
        with die_at(k) as ops:
            try:
                w.write_episodes(batch)
                died = False
            except Died:
                died = True
        w._pool.shutdown(wait=True)
        if died:
            assert_committed(path, committed)  # nothing of the batch is visible, nothing before it is lost
            reopen_and_append(path, committed)
        else:
            assert len(ops) < k
            assert_committed(path, {**committed, **{3 + i: e for i, e in enumerate(batch)}})
        return not died

    deaths = sweep(run)
    assert (
        deaths >= 2 * 7 + 3
    )  # 7 arrays: metadata + 2 chunks each (images more); then the ends' 2 chunks + 1


def test_end_episode_dies_at_every_store_operation(tmp_path, monkeypatch):
    base = tmp_path / "base.zarr"
    committed = make_store(base, monkeypatch)

    def run(k: int) -> bool:
        path = tmp_path / f"k{k}.zarr"
        shutil.copytree(base, path)
        w = DatasetWriter.open(path)
        w.flush_every_s = 1e9  # every row waits for end_episode, whose writes are the ones under test
        w.begin_episode()
        for i in range(5):  # rows 14..18: two 4-row chunks
            t = 500.0 + i / FPS
            w.append("robot0_joint_pos", t, [7.0, i])
            w.append("action", t, [-7.0, i])
            w.append("camera0_rgb", t, np.full((8, 8, 3), 70, np.uint8))
        with die_at(k) as ops:
            try:
                rows = w.end_episode()
                died = False
            except Died:
                died = True
        w._active = None  # the dead writer must not tidy up after itself
        w._pool.shutdown(wait=True)
        if died:
            assert_committed(path, committed)
            reopen_and_append(path, committed)
        else:
            assert len(ops) < k and rows == 5
            n = assert_committed(path, committed, allow_extra=True)
            assert n == 4 and np.all(ReplayDataset(path).episode(3)["action"][:, 0] == -7.0)
        return not died

    assert sweep(run) >= 2 * 7 + 3


def test_reopen_dies_at_every_store_operation(tmp_path, monkeypatch):
    """open() trims an uncommitted tail; dying anywhere in that trim still leaves a store open() accepts."""
    base = tmp_path / "base.zarr"
    committed = make_store(base, monkeypatch)
    batch = [episode(4, 3), episode(5, 2)]
    probe = tmp_path / "probe.zarr"
    shutil.copytree(base, probe)
    w = DatasetWriter.open(probe)
    with die_at(10**9) as ops:
        w.write_episodes(batch)
    w.close()
    w = DatasetWriter.open(base)
    with die_at(len(ops)), pytest.raises(Died):  # the last operation is the commit: all rows, no ends
        w.write_episodes(batch)
    w._pool.shutdown(wait=True)
    assert ReplayDataset(base).root["data"]["timestamp"].shape[0] > ReplayDataset(base).n_steps

    def run(k: int) -> bool:
        path = tmp_path / f"k{k}.zarr"
        shutil.copytree(base, path)
        with die_at(k) as ops:
            try:
                DatasetWriter.open(path).close()
                died = False
            except Died:
                died = True
        assert_committed(path, committed)
        reopen_and_append(path, committed)
        return not died and len(ops) < k

    assert sweep(run) >= 2


@pytest.mark.parametrize(
    ("ends", "why"),
    [
        ([14, 0, 0, 0], "entry 1 is 0 after 14"),  # what resize-then-write left when killed in between
        ([5, 8, 4], "entry 2 is 4 after 8"),
        ([5, 8, 400], "rows < committed 400"),
    ],
)
def test_open_refuses_a_broken_commit_and_truncates_nothing(tmp_path, monkeypatch, ends, why):
    path = tmp_path / "bad.zarr"
    make_store(path, monkeypatch)
    g = zarr.open_group(str(path), mode="r+")
    g["meta/episode_ends"].resize((len(ends),))
    g["meta/episode_ends"][:] = ends
    rows = {k: a.shape[0] for k, a in g["data"].arrays()}
    with pytest.raises(DatasetError) as err:
        DatasetWriter.open(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and why in msg
    g = zarr.open_group(str(path), mode="r")
    assert {k: a.shape[0] for k, a in g["data"].arrays()} == rows
    assert list(g["meta/episode_ends"][:]) == ends


def test_open_drops_the_legacy_unfilled_slot_only(tmp_path, monkeypatch):
    """One trailing 0 is the slot an older writer resized for and never filled: ignored, never a commit."""
    path = tmp_path / "legacy.zarr"
    committed = make_store(path, monkeypatch)
    g = zarr.open_group(str(path), mode="r+")
    g["meta/episode_ends"].resize((4,))
    g["meta/episode_ends"][3] = 0
    assert_committed(path, committed)
    reopen_and_append(path, committed)


CHILD = r"""
import os, signal, sys
import numpy as np
from zarr.storage import LocalStore
sys.path.insert(0, os.path.dirname(sys.argv[3]))
from test_store_commit import episode
from mimic.data.writer import DatasetWriter

path, k = sys.argv[1], int(sys.argv[2])
w = DatasetWriter.open(path)
seen = [0]
orig = LocalStore.set

async def set_(self, key, value):
    seen[0] += 1
    if seen[0] == k:
        os.kill(os.getpid(), signal.SIGKILL)
    return await orig(self, key, value)

LocalStore.set = set_
w.write_episodes([episode(4, 3), episode(5, 2)])
print("DONE", seen[0], flush=True)
"""


def test_sigkill_mid_batch_keeps_every_commit(tmp_path, monkeypatch):
    """The real thing at a few points: the writer process is SIGKILLed by its own k-th store write."""
    base = tmp_path / "base.zarr"
    committed = make_store(base, monkeypatch)

    def child(k: int) -> tuple[subprocess.CompletedProcess, str]:
        path = tmp_path / f"kill{k}.zarr"
        shutil.copytree(base, path)
        args = [sys.executable, "-c", CHILD, str(path), str(k), os.path.abspath(__file__)]
        return subprocess.run(args, capture_output=True, text=True, timeout=120), str(path)

    done, path = child(10**9)
    assert done.returncode == 0 and done.stdout.startswith("DONE"), done.stderr
    assert_committed(path, {**committed, 3: episode(4, 3), 4: episode(5, 2)})
    n = int(done.stdout.split()[1])
    for k in sorted({1, n // 2, n - 2, n - 1, n}):  # the last writes are the ends' chunks and the commit
        proc, path = child(k)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert_committed(path, committed)
        reopen_and_append(path, committed)
