"""Nothing non-finite is trained: `mimic dataset validate --deep` and `mimic train` refuse a NaN store in one
line, train refuses a store the cheap validation rejects before any step, and a non-finite loss or gradient
norm stops training without writing a checkpoint of those weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import zarr

from mimic.data.cli import main as dataset_main
from mimic.data.dataset import DatasetError
from mimic.data.integrity import deep_check
from mimic.data.validate import validate
from mimic.policies.config import load_train_config
from tests.tiny import TINY_RUN

TINY = TINY_RUN


@pytest.fixture(scope="module")
def reach_store(tmp_path_factory):
    from mimic.workflows.record_expert import record_expert_dataset

    tmp = tmp_path_factory.mktemp("guards")
    return record_expert_dataset(tmp / "reach.zarr", "franka", "reach", episodes=2, progress=False)


def poisoned(src, dst, key: str = "action", row: int = 7, value: float = np.nan):
    shutil.copytree(src, dst)
    arr = zarr.open_group(str(dst), mode="r+")[f"data/{key}"]
    arr[row] = np.full(arr.shape[1:], value)
    return dst


def config(store, run_dir, *extra: str):
    return load_train_config(None, [f"dataset={store}", f"run_dir={run_dir}", *TINY, *extra])


def one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_finite_store_trains_and_passes_the_deep_check(reach_store, tmp_path, capsys):
    from mimic.workflows.train import train

    assert dataset_main(["validate", "--deep", str(reach_store)]) == 0
    assert "every chunk decodes" in capsys.readouterr().out
    ds, _ = validate(reach_store)
    stats = deep_check(ds)
    assert stats.arrays >= len(ds.keys) + 1 and stats.chunks >= stats.arrays
    run = train(config(reach_store, tmp_path / "run"), progress=False)
    assert (run / "checkpoint").is_dir()


def test_nan_action_is_refused_by_validate_deep_and_by_train(reach_store, tmp_path, capsys):
    from mimic.workflows.train import main as train_main

    bad = poisoned(reach_store, tmp_path / "nan.zarr")
    assert dataset_main(["validate", str(bad)]) == 0  # the cheap checks read no action rows
    capsys.readouterr()
    assert dataset_main(["validate", "--deep", str(bad)]) == 1
    line = one_line(capsys.readouterr().err)
    assert str(bad) in line and "'data/action' row 7 (episode 0)" in line and "non-finite" in line

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"dataset: {bad}\nrun_dir: {tmp_path / 'run'}\n")
    args = [str(cfg_file), "--no-progress"] + [a for s in TINY for a in ("--set", s)]
    assert train_main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("mimic train: step 1: loss is nan") and str(bad) in line
    assert not (tmp_path / "run" / "checkpoint").exists()
    assert not (tmp_path / "run" / "train_state").exists()


def test_a_later_nan_keeps_the_earlier_finite_checkpoint(reach_store, tmp_path):
    from mimic.workflows.train import TrainingError, train

    run = tmp_path / "run"
    train(config(reach_store, run), progress=False)
    before = {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()}
    state = {p.name: p.read_bytes() for p in (run / "train_state").iterdir()}
    bad = poisoned(reach_store, tmp_path / "nan.zarr", value=np.inf)
    with pytest.raises(TrainingError, match=r"^step 3: loss is"):
        train(config(bad, run, "steps=4"), progress=False)  # resumes at step 2 from the finite state
    assert {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()} == before
    assert {p.name: p.read_bytes() for p in (run / "train_state").iterdir()} == state


def test_nonfinite_gradient_norm_stops_without_a_checkpoint(reach_store, tmp_path, monkeypatch):
    from mimic.workflows.train import TrainingError, train

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: torch.tensor(float("inf")))
    with pytest.raises(TrainingError, match=r"^step 1: gradient norm is inf"):
        train(config(reach_store, tmp_path / "run", "grad_clip=1.0"), progress=False)
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_train_refuses_a_store_the_cheap_validation_rejects(reach_store, tmp_path):
    from mimic.workflows.train import train

    bad = tmp_path / "late.zarr"
    shutil.copytree(reach_store, bad)
    g = zarr.open_group(str(bad), mode="r+")
    t = g["data/robot0_joint_pos_t"]
    t[3] = t[3] + 5.0  # five seconds off its grid row: past the stream's tolerance
    with pytest.raises(
        DatasetError, match=r"late\.zarr: key 'data/robot0_joint_pos_t' alignment error"
    ) as err:
        train(config(bad, tmp_path / "run"), progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoint").exists()


# ---- a failed start leaves no run directory -----------------------------------------------------------
def leftovers(parent) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name == "run" or ".tmp-" in p.name)


def empty_store(path):
    from mimic.sim.env import make_env
    from mimic.workflows.record_expert import create_twin_store

    env = make_env("reach", "franka", cameras=())
    try:
        create_twin_store(path, env, env.reset(seed=0), {}).close()
    finally:
        env.close()
    return path


def test_a_store_with_no_episodes_is_one_line_and_leaves_no_run_dir(tmp_path, capsys):
    from mimic.workflows.train import main as train_main

    store = empty_store(tmp_path / "empty.zarr")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"dataset: {store}\nrun_dir: {tmp_path / 'runs' / 'a' / 'run'}\n")
    assert train_main([str(cfg_file), "--no-progress"] + [a for s in TINY for a in ("--set", s)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("mimic train:") and str(store) in line
    assert not (tmp_path / "runs").exists()  # nor the parent folders made for it


def test_a_nan_first_step_leaves_no_run_dir_and_a_good_run_no_staging(reach_store, tmp_path):
    from mimic.workflows.train import TrainingError, train

    bad = poisoned(reach_store, tmp_path / "nan.zarr")
    with pytest.raises(TrainingError, match=r"^step 1: loss is nan"):
        train(config(bad, tmp_path / "run"), progress=False)
    assert leftovers(tmp_path) == []
    run = train(config(reach_store, tmp_path / "run"), progress=False)
    assert run == tmp_path / "run" and (run / "checkpoint").is_dir() and (run / "config.yaml").is_file()
    assert leftovers(tmp_path) == ["run"]


def test_a_failed_resume_changes_nothing_in_the_existing_run_dir(reach_store, tmp_path):
    from mimic.workflows.train import TrainingError, train

    run = tmp_path / "run"
    train(config(reach_store, run), progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    bad = poisoned(reach_store, tmp_path / "nan.zarr")
    with pytest.raises(TrainingError):
        train(config(bad, run, "steps=4", "lr=0.002"), progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert leftovers(tmp_path) == ["run"]


def test_a_run_dir_that_is_a_file_is_refused_in_one_line(reach_store, tmp_path):
    from mimic.policies.config import ConfigError
    from mimic.workflows.train import train

    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"^run_dir: .*run: exists and is not a directory$"):
        train(config(reach_store, tmp_path / "run"), progress=False)


def _damage_state(run, how: str) -> None:
    state = run / "train_state"
    if how == "truncated weights":
        (state / "model.safetensors").write_bytes((state / "model.safetensors").read_bytes()[:50])
    elif how == "bad state.json":
        (state / "state.json").write_text("{")
    elif how == "missing optimiser":
        (state / "optim.safetensors").unlink()


@pytest.mark.parametrize(
    "how, extra, why",
    [
        ("truncated weights", (), "SafetensorError: Error while deserializing header"),
        ("bad state.json", (), "JSONDecodeError: Expecting property name"),
        ("missing optimiser", (), "FileNotFoundError: No such file or directory"),
        ("", ("policy.unet.down_dims=[8,16]",), "RuntimeError: "),
    ],
)
def test_a_train_state_that_cannot_resume_is_one_line_and_changes_nothing(
    reach_store, tmp_path, capsys, how, extra, why
):
    import yaml

    from mimic.workflows.train import main, train

    run = tmp_path / "run"
    train(config(reach_store, run), progress=False)
    _damage_state(run, how)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": str(reach_store), "run_dir": str(run)}))
    argv = [str(cfg), "--no-progress", *(a for s in [*TINY, "steps=4", *extra] for a in ("--set", s))]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"mimic train: {run / 'train_state'}: cannot resume from it ({why}"), line
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("arm", "nope", "eval.arm: 'nope' is not a twin arm (franka, ur5e, xarm7)"),
        ("task", "nope", "eval.task: 'nope' is not a twin task (reach, pick_place, push_t, track)"),
    ],
)
def test_a_misspelt_eval_twin_stops_the_run_before_its_first_step(
    reach_store, tmp_path, field, value, message
):
    from mimic.policies.config import ConfigError
    from mimic.workflows.train import train

    cfg = config(reach_store, tmp_path / "run", "eval.episodes=1", f"eval.{field}={value}")
    with pytest.raises(ConfigError) as e:
        train(cfg, progress=False)
    assert str(e.value) == message
    assert list(tmp_path.iterdir()) == []
