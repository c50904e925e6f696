"""`mimic train` / `mimic eval` as real processes on a recorded twin store: run dir, resume, DDP over gloo
with torchrun (2 processes), consistency distillation from an EDM teacher, MP4s, one-line errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.launch import torchrun_train

TINY = [
    "policy.unet.down_dims=[16,32]",
    "policy.unet.time_embed_dim=32",
    "policy.unet.n_groups=4",
    "policy.horizon=8",
    "policy.n_action_steps=4",
    "batch_size=16",
    "log_every=5",
    "val_every=10",
    "ckpt_every=10",
    "threads=1",
    "warmup_steps=2",
]


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def _run(procs, args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `python <args>` in its own process group (the procs fixture kills it and its children on failure)."""
    proc = procs.python(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from mimic.workflows.record_expert import record_expert_dataset

    return record_expert_dataset(
        tmp_path_factory.mktemp("data") / "reach.zarr", "franka", "reach", episodes=4, progress=False
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    p.write_text("policy:\n  obs_keys: [robot0_joint_pos, robot0_gripper_width, object_state]\n")
    return p


def test_train_resume_then_eval_with_video(store, config, tmp_path, procs):
    run = tmp_path / "run"
    base = [f"dataset={store}", f"run_dir={run}", *TINY, "eval.task=reach", "eval.episodes=1"]
    r = _run(procs, ["-m", "mimic.cli", "train", str(config), "--no-progress", *_sets([*base, "steps=10"])])
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "checkpoint" / "model.safetensors").is_file() and (run / "loss.png").is_file()
    assert json.loads((run / "checkpoint" / "provenance.json").read_text())["steps"] == 10
    r = _run(
        procs, ["-m", "mimic.cli", "train", str(config), "--no-progress", *_sets([*base, "steps=20"])]
    )  # resumes at 10
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps[-1] == 20 and steps.count(10) == 1  # one file, continued
    assert json.loads((run / "checkpoint" / "provenance.json").read_text())["steps"] == 20
    assert (run / "success.png").is_file()

    out = tmp_path / "eval.json"
    r = _run(
        procs,
        [
            "-m",
            "mimic.cli",
            "eval",
            str(run / "checkpoint"),
            "--episodes",
            "2",
            "--steps",
            "2",
            "--video-dir",
            str(tmp_path / "videos"),
            "--videos",
            "1",
            "--workers",
            "2",
            "--action-steps",
            "2",
            "--json",
            str(out),
        ],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert (res["arm"], res["task"], res["episodes"], len(res["outcomes"])) == ("franka", "reach", 2, 2)
    assert res["n_action_steps"] == 2  # replanned every 2 steps instead of the trained 4
    assert 0.0 <= res["ci_low"] <= res["success_rate"] <= res["ci_high"] <= 1.0
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
    # horizon 8, n_obs_steps 2: at most 7 rows of a chunk can be executed
    r = _run(
        procs, ["-m", "mimic.cli", "eval", str(run / "checkpoint"), "--episodes", "1", "--action-steps", "8"]
    )
    assert (
        r.returncode == 2 and "n_action_steps: 8 must be in 1..7" in r.stderr and "Traceback" not in r.stderr
    )


def test_ddp_two_processes_gloo(store, config, tmp_path, procs):
    run = tmp_path / "ddp"
    cmd = [
        *torchrun_train(2),
        str(config),
        "--no-progress",
        *_sets([f"dataset={store}", f"run_dir={run}", *TINY, "steps=6", "policy.generator=diffusion"]),
    ]
    r = _run(procs, cmd, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    prov = json.loads((run / "checkpoint" / "provenance.json").read_text())
    assert prov["world_size"] == 2 and prov["steps"] == 6
    from mimic.policies import load_policy

    assert load_policy(run / "checkpoint").cfg.generator == "diffusion"


def test_consistency_distils_from_edm_checkpoint(store, config, tmp_path, procs):
    teacher = tmp_path / "teacher"
    r = _run(
        procs,
        [
            "-m",
            "mimic.cli",
            "train",
            str(config),
            "--no-progress",
            *_sets([f"dataset={store}", f"run_dir={teacher}", *TINY, "steps=10", "policy.generator=edm"]),
        ],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    student = tmp_path / "student"
    r = _run(
        procs,
        [
            "-m",
            "mimic.cli",
            "train",
            str(config),
            "--no-progress",
            *_sets(
                [
                    f"dataset={store}",
                    f"run_dir={student}",
                    *TINY,
                    "steps=5",
                    "policy.generator=consistency",
                    f"policy.gen.teacher={teacher / 'checkpoint'}",
                ]
            ),
        ],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    from mimic.policies import load_policy

    pol = load_policy(student / "checkpoint")
    assert pol.cfg.generator == "consistency"
    assert json.loads((student / "checkpoint" / "provenance.json").read_text())["teacher"] == str(
        teacher / "checkpoint"
    )
    # the validation loss of the shipped (EMA) student is its distillation loss against the teacher, not NaN
    from mimic.workflows.train import Metrics

    last = Metrics(student).rows()[-1]
    val_loss = float(last["val_loss"])
    assert np.isfinite(val_loss) and val_loss >= 0, last

    # gen.cd_pool: the teacher's endpoints computed once into the run dir; a resumed run reuses that file.
    pooled = tmp_path / "pooled"
    args = [
        f"dataset={store}",
        f"run_dir={pooled}",
        *TINY,
        "policy.generator=consistency",
        "policy.gen.cd_target=ode",
        "policy.gen.cd_ode_steps=2",
        "policy.gen.cd_pool=2",
        f"policy.gen.teacher={teacher / 'checkpoint'}",
    ]
    r = _run(procs, ["-m", "mimic.cli", "train", str(config), "--no-progress", *_sets([*args, "steps=3"])])
    assert r.returncode == 0, r.stderr[-2000:]
    targets = pooled / "teacher_targets.safetensors"
    mtime = targets.stat().st_mtime_ns
    r = _run(procs, ["-m", "mimic.cli", "train", str(config), "--no-progress", *_sets([*args, "steps=6"])])
    assert r.returncode == 0, r.stderr[-2000:]
    assert targets.stat().st_mtime_ns == mtime and "rebuilding" not in r.stdout
    assert json.loads((pooled / "checkpoint" / "provenance.json").read_text())["steps"] == 6

    # Distillation continued from the student's own checkpoint (a DAgger round for the student): it keeps the
    # student's weights, not its teacher's, and a teacher with another normaliser is a one-line error.
    from safetensors.torch import load_file

    from mimic.workflows.record_expert import record_expert_dataset

    cont = [
        f"dataset={store}",
        *TINY,
        "steps=1",
        "lr=1e-12",
        "policy.generator=consistency",
        f"init_from={student / 'checkpoint'}",
    ]
    r = _run(
        procs,
        [
            "-m",
            "mimic.cli",
            "train",
            str(config),
            "--no-progress",
            *_sets(
                [*cont, f"run_dir={tmp_path / 'continued'}", f"policy.gen.teacher={teacher / 'checkpoint'}"]
            ),
        ],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    first, again, taught = (
        load_file(str(d / "checkpoint" / "model.safetensors"))
        for d in (student, tmp_path / "continued", teacher)
    )
    assert max((first[k] - taught[k]).abs().max().item() for k in first) > 1e-4  # 5 steps moved the student
    for k in first:
        np.testing.assert_allclose(again[k].numpy(), first[k].numpy(), atol=1e-6, err_msg=k)
    other = record_expert_dataset(
        tmp_path / "other.zarr", "franka", "reach", episodes=3, seed=500, progress=False
    )
    r = _run(
        procs,
        [
            "-m",
            "mimic.cli",
            "train",
            str(config),
            "--no-progress",
            *_sets(
                [
                    f"dataset={other}",
                    f"run_dir={tmp_path / 'teacher2'}",
                    *TINY,
                    "steps=2",
                    "policy.generator=edm",
                ]
            ),
        ],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run(
        procs,
        [
            "-m",
            "mimic.cli",
            "train",
            str(config),
            "--no-progress",
            *_sets(
                [
                    *cont,
                    f"run_dir={tmp_path / 'mixed'}",
                    f"policy.gen.teacher={tmp_path / 'teacher2' / 'checkpoint'}",
                ]
            ),
        ],
    )
    assert (
        r.returncode == 2 and "normaliser is not its teacher's" in r.stderr and "Traceback" not in r.stderr
    ), r.stderr[-2000:]


def test_init_from_starts_a_new_run_from_a_checkpoints_weights_and_normaliser(store, config, tmp_path, procs):
    """Fine-tuning on a grown dataset (as after a DAgger round): the new run keeps the checkpoint's normaliser
    even though its own data span other ranges, and a network that does not match is a one-line error."""
    from safetensors.torch import load_file

    from mimic.workflows.record_expert import record_expert_dataset

    first = tmp_path / "first"
    r = _run(
        procs,
        [
            "-m",
            "mimic.cli",
            "train",
            str(config),
            "--no-progress",
            *_sets([f"dataset={store}", f"run_dir={first}", *TINY, "steps=10"]),
        ],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    other = record_expert_dataset(
        tmp_path / "other.zarr", "franka", "reach", episodes=3, seed=500, progress=False
    )
    from mimic.data.dataset import ReplayDataset

    spans = [ReplayDataset(p).array("object_state")[:] for p in (store, other)]
    assert np.abs(spans[0].min(0) - spans[1].min(0)).max() > 1e-3  # a refit normaliser would differ
    second = tmp_path / "second"
    base = [f"dataset={other}", *TINY, "steps=1", "lr=1e-12", f"init_from={first / 'checkpoint'}"]
    r = _run(
        procs,
        ["-m", "mimic.cli", "train", str(config), "--no-progress", *_sets([*base, f"run_dir={second}"])],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = first / "checkpoint", second / "checkpoint"
    for name in ("normalizer.safetensors", "model.safetensors"):  # one step at lr 1e-12 leaves the weights
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys()
        for k in ta:
            np.testing.assert_allclose(tb[k].numpy(), ta[k].numpy(), atol=1e-6, err_msg=f"{name}:{k}")
    prov = json.loads((b / "provenance.json").read_text())
    assert (prov["init_from"], prov["steps"], prov["total_steps"]) == (str(a), 1, 11)
    r = _run(
        procs,
        [
            "-m",
            "mimic.cli",
            "train",
            str(config),
            "--no-progress",
            *_sets([*base, f"run_dir={tmp_path / 'third'}", "policy.unet.down_dims=[8,16]"]),
        ],
    )
    assert r.returncode == 2 and "init_from" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    # twice as wide: the new run starts as the checkpoint's function (Net2WiderNet, policies/backbones/widen.py)
    r = _run(
        procs,
        [
            "-m",
            "mimic.cli",
            "train",
            str(config),
            "--no-progress",
            *_sets([*base, f"run_dir={tmp_path / 'wide'}", "policy.unet.down_dims=[32,64]"]),
        ],
    )
    assert r.returncode == 0, r.stderr[-2000:]
    import torch

    from mimic.policies import load_policy

    narrow, wide = load_policy(a), load_policy(tmp_path / "wide" / "checkpoint")
    assert wide.cfg.unet.down_dims == [32, 64]
    x, t = torch.randn(4, narrow.horizon, narrow.action_dim), torch.rand(4) * 100
    obs = torch.randn(4, narrow.n_obs_steps, narrow.encoder.feature_dim)
    with torch.no_grad():
        torch.testing.assert_close(wide.backbone(x, t, obs), narrow.backbone(x, t, obs), atol=1e-4, rtol=1e-4)


def test_bad_inputs_are_one_line_errors(store, config, tmp_path, procs):
    r = _run(
        procs,
        [
            "-m",
            "mimic.cli",
            "train",
            str(config),
            "--set",
            f"dataset={store}",
            "--set",
            "policy.generatr=flow",
        ],
    )
    assert r.returncode == 2 and "generatr" in r.stderr and "Traceback" not in r.stderr
    r = _run(
        procs, ["-m", "mimic.cli", "train", str(config), "--set", f"dataset={tmp_path / 'missing.zarr'}"]
    )
    assert r.returncode == 2 and "missing.zarr" in r.stderr and "Traceback" not in r.stderr
    r = _run(procs, ["-m", "mimic.cli", "eval", str(tmp_path / "no_ckpt"), "--episodes", "1"])
    assert r.returncode == 2 and "no_ckpt" in r.stderr and "Traceback" not in r.stderr


def test_record_then_train_as_two_stages(config, tmp_path, procs):
    store = tmp_path / "recorded.zarr"
    sets = _sets(
        [
            f"dataset={store}",
            f"run_dir={tmp_path / 'run'}",
            *TINY,
            "steps=2",
            "record.task=reach",
            "record.episodes=2",
            "val_ratio=0",
        ]
    )
    r = _run(procs, ["-m", "mimic.cli", "train", str(config), "--no-progress", *sets])
    assert r.returncode == 2 and "mimic record" in r.stderr and not store.exists()  # training only trains
    r = _run(procs, ["-m", "mimic.cli", "record", str(config), "--no-progress", *sets])
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run(procs, ["-m", "mimic.cli", "record", str(config), "--no-progress", *sets])
    assert r.returncode == 0 and "exists, kept" in r.stdout  # a chain run again continues
    r = _run(procs, ["-m", "mimic.cli", "train", str(config), "--no-progress", *sets])
    assert r.returncode == 0, r.stderr[-2000:]
    from mimic.data.dataset import ReplayDataset

    ds = ReplayDataset(store)
    assert ds.n_episodes == 2 and ds.attrs["task"] == "reach" and ds.attrs["expert_success"] == [True, True]
    assert {"robot0_joint_pos", "robot0_gripper_width", "object_state", "action"} <= set(ds.keys)
