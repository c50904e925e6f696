"""Stores and run directories at s3:// URLs, against a real S3-protocol server on 127.0.0.1 (moto): record,
train (in RAM and streaming, one process and two under torchrun), checkpoint upload and `mimic eval` of the
uploaded checkpoint; an unreachable URL is one line and never becomes a local `s3:` folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from tests.launch import torchrun_train
from tests.tiny import TINY_RUN

TINY = TINY_RUN
LOWDIM = "policy:\n  obs_keys: [robot0_joint_pos, robot0_gripper_width, object_state]\n"
IMAGES = (
    "policy:\n  obs_keys: [camera0_rgb, robot0_joint_pos, robot0_gripper_width]\n"
    "  image:\n    width: 4\n    feature_dim: 16\n    num_keypoints: 4\n"
)


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def _mimic(procs, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m mimic.cli <args>` run in `cwd` (so a misrouted URL would show up there as an `s3:` folder)."""
    proc = procs.python(
        "-m", "mimic.cli", *args, cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def _no_lookalike(cwd: Path) -> None:
    assert not [p.name for p in cwd.iterdir() if p.name.startswith(("s3:", "s4:", "gs:"))]


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cwd"
    d.mkdir()
    monkeypatch.setenv("MIMIC_CACHE_DIR", str(tmp_path / "cache"))
    return d


def test_record_train_eval_through_s3(s3_server, cwd, procs):
    store, run = "s3://bucket/reach.zarr", "s3://bucket/run"
    r = _mimic(
        procs, cwd, "record", store, "--arm", "franka", "--task", "reach", "--episodes", "2", "--no-progress"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    r = _mimic(procs, cwd, "dataset", "info", store)
    assert r.returncode == 0 and r.stdout.startswith(f"{store}: 2 episodes"), r.stderr[-2000:]
    (cwd / "cfg.yaml").write_text(LOWDIM)
    r = _mimic(
        procs,
        cwd,
        "train",
        "cfg.yaml",
        "--no-progress",
        *_sets([f"dataset={store}", f"run_dir={run}", *TINY]),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == f"{run}/checkpoint"
    fs = fsspec.filesystem("s3")
    names = {p.rsplit("/", 1)[-1] for p in fs.find("bucket/run")}
    assert {"model.safetensors", "config.yaml", "state.json", "metrics.csv", "loss.png"} <= names
    prov = json.loads(fs.cat("bucket/run/checkpoint/provenance.json"))
    assert prov["dataset"] == store and prov["steps"] == 2

    r = _mimic(procs, cwd, "eval", f"{run}/checkpoint", "--episodes", "1", "--steps", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "franka/reach: success" in r.stdout
    _no_lookalike(cwd)


def test_unreachable_urls_are_one_line_and_create_nothing(s3_server, cwd, monkeypatch, capsys):
    from mimic.data.cli import main as dataset_main
    from mimic.workflows.record import main as record_main
    from mimic.workflows.train import main as train_main

    monkeypatch.chdir(cwd)
    (cwd / "cfg.yaml").write_text(LOWDIM)
    for url, why in (
        ("s3://no-such-bucket/demos.zarr", "bucket 'no-such-bucket' does not exist"),
        ("s4://bucket/demos.zarr", "unknown storage protocol 's4'"),
    ):
        assert record_main([url, "--task", "reach", "--episodes", "200", "--no-progress"]) == 2
        line = _one_line(capsys.readouterr().err)
        assert url in line and why in line, line
        assert train_main(["cfg.yaml", "--no-progress", *_sets([f"dataset={url}", *TINY])]) == 2
        line = _one_line(capsys.readouterr().err)
        assert url in line and why in line, line
        assert dataset_main(["info", url]) == 1
        line = _one_line(capsys.readouterr().err)
        assert url in line and why in line, line
    bad_run = "s3://no-such-bucket/run"
    assert (
        train_main(
            ["cfg.yaml", "--no-progress", *_sets(["dataset=s3://bucket/none.zarr", f"run_dir={bad_run}"])]
        )
        == 2
    )
    line = _one_line(capsys.readouterr().err)
    assert bad_run in line and "run_dir" in line and "does not exist" in line, line
    assert train_main(["cfg.yaml", "--no-progress", *_sets(["dataset=s3://bucket/none.zarr"])]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "s3://bucket/none.zarr: dataset not found" in line, line

    # no credentials at all: botocore refuses to sign; still one line naming the URL
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(cwd / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(cwd / "none"))
    fsspec.filesystem("s3").clear_instance_cache()
    url = "s3://bucket/demos.zarr"
    assert record_main([url, "--task", "reach", "--episodes", "200", "--no-progress"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert url in line and ("credentials" in line.lower() or "unreachable" in line), line
    _no_lookalike(cwd)


def test_torchrun_two_ranks_stream_their_own_episodes_from_s3(s3_server, cwd, procs):
    store, run = "s3://bucket/reach_img.zarr", "s3://bucket/ddp"
    r = _mimic(
        procs,
        cwd,
        "record",
        store,
        "--task",
        "reach",
        "--episodes",
        "4",
        "--cameras",
        "scene",
        "--image-size",
        "32x32",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (cwd / "cfg.yaml").write_text(IMAGES)
    cmd = [
        sys.executable,
        *torchrun_train(2),
        "cfg.yaml",
        "--no-progress",
        *_sets(
            [
                f"dataset={store}",
                f"run_dir={run}",
                *TINY,
                "val_ratio=0",
                "data.streaming=true",
                "data.cache_mb=4",
                f"data.cache_dir={cwd / 'frames'}",
            ]
        ),
    ]
    proc = procs.start(cmd, cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    shares = {
        int(m.group(1)): json.loads(m.group(2))
        for m in re.finditer(r"rank (\d)/2 reads episodes (\[.*?\])", err)
    }
    assert sorted(shares) == [0, 1], err[-3000:]
    assert shares[0] == [0, 2] and shares[1] == [1, 3]  # rank r: episodes r, r + world, ...
    prov = json.loads(fsspec.filesystem("s3").cat("bucket/ddp/checkpoint/provenance.json"))
    assert prov["world_size"] == 2 and prov["steps"] == 2
    assert (cwd / "frames").is_dir()  # decoded chunks cached locally
    _no_lookalike(cwd)


def test_streaming_trains_a_store_larger_than_its_memory_headroom(tmp_path, procs):
    """12288 frames of 128x128x3 = 576 MB decoded; the trainer may grow its address space by only 320 MB past
    what its imports map. Streaming (32 MB chunk LRU) trains; loading the store into RAM cannot."""
    from tests.peers.big_store import synthetic_store

    store = tmp_path / "big.zarr"
    decoded_mb = synthetic_store(store, frames=12288, hw=128)
    headroom = 320
    assert decoded_mb > headroom
    env = {**__import__("os").environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}
    results = {}
    for streaming in (True, False):
        args = ["-m", "tests.peers.big_store", "train", str(store), str(tmp_path / f"run{streaming}")]
        args += ["--headroom-mb", str(headroom), *(["--streaming"] if streaming else [])]
        proc = procs.python(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=300)
        results[streaming] = (proc.returncode, json.loads(out.strip().splitlines()[-1]), err)
    code, res, err = results[True]
    assert code == 0 and res["ok"], (res, err[-2000:])
    assert (tmp_path / "runTrue" / "checkpoint" / "model.safetensors").is_file()
    code, res, _ = results[False]
    assert code == 3 and "MemoryError" in res["error"], res
