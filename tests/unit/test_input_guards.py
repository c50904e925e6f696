"""Bad values stop at the boundary in one line: config ranges, non-finite commands and times, NaN actions."""

from __future__ import annotations

import numpy as np
import pytest

from mimic.policies.config import ConfigError, load_train_config
from mimic.robots.arm import CommandGuard, CommandRefused
from mimic.robots.specs import get_spec

pytestmark = pytest.mark.unit

BASE = ["dataset=x.zarr"]


@pytest.mark.parametrize(
    "override, field",
    [
        ("lr=-1", "lr"),
        ("warmup_steps=-10", "warmup_steps"),
        ("val_ratio=2", "val_ratio"),
        ("threads=-1", "threads"),
        ("ckpt_every=-1", "ckpt_every"),
        ("log_every=0", "log_every"),
        ("ema_max_decay=1", "ema_max_decay"),
        ("policy.gen.num_inference_steps=-3", "policy.gen.num_inference_steps"),
        ("policy.unet.down_dims=[]", "policy.unet.down_dims"),
        ("dagger.workers=0", "dagger.workers"),
        ("device=gpu", "device"),
    ],
)
def test_out_of_range_config_values_are_one_line_errors_naming_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_train_config(None, [*BASE, override])
    msg = str(e.value)
    assert msg.startswith(field), msg
    assert "\n" not in msg


def test_a_config_file_that_is_a_list_is_refused_naming_it(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="cfg.yaml: top level must be a mapping"):
        load_train_config(f)


def test_defaults_and_edges_still_load():
    cfg = load_train_config(None, [*BASE, "val_ratio=0", "warmup_steps=0", "threads=0", "device=cuda:1"])
    assert cfg.val_ratio == 0 and cfg.device == "cuda:1"


def _guard() -> CommandGuard:
    spec = get_spec("franka")
    guard = CommandGuard(spec)
    guard.reset(np.asarray(spec.home, float), t=10.0)
    return guard


def test_a_nan_time_is_refused_and_does_not_reset_the_velocity_reference():
    guard = _guard()
    q = np.asarray(guard.spec.home, float)
    with pytest.raises(CommandRefused, match="not finite"):
        guard.check(q, t=float("nan"))
    jump = q.copy()
    jump[0] += 2.0
    with pytest.raises(CommandRefused, match="exceeds"):
        guard.check(jump, t=10.02)
    guard.check(q + 1e-3, t=10.02)  # a small step is still fine


def test_a_nan_pose_cannot_become_the_velocity_reference():
    guard = _guard()
    q = np.asarray(guard.spec.home, float)
    with pytest.raises(CommandRefused, match="non-finite"):
        guard.reset(np.full_like(q, np.nan), t=11.0)
    jump = q.copy()
    jump[1] += 0.5
    with pytest.raises(CommandRefused, match="exceeds"):
        guard.check(jump, t=10.001)


def test_the_twin_refuses_a_nan_action_instead_of_simulating_it():
    from mimic.sim.env import make_env

    env = make_env("reach", "franka", cameras=())
    try:
        obs = env.reset(seed=0)
        a = np.concatenate([obs["robot0_joint_pos"], [0.04]])
        a[2] = np.nan
        with pytest.raises(ValueError, match="NaN or inf"):
            env.step(a)
        env.step(np.concatenate([obs["robot0_joint_pos"], [0.04]]))  # the env is still usable
    finally:
        env.close()


def test_mimic_deploy_refuses_a_bad_checkpoint_before_starting_any_node(tmp_path, capsys):
    from mimic_ros.deploy import main

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for name in ("config.yaml", "shape_meta.json", "normalizer.safetensors", "model.safetensors"):
        (ckpt / name).write_text("not what it should be")
    (ckpt / "processor.json").write_text('{"action_repr": "joint"}')  # its kind reads fine; the rest does not
    assert main([str(ckpt), "--arm", "twin:franka", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mimic deploy:") and str(ckpt) in err and len(err.splitlines()) == 1


def test_split_refuses_shared_paths_and_a_ratio_outside_0_1_before_writing(tmp_path, capsys):
    from mimic.data.cli import main
    from mimic.workflows.record_expert import record_expert_dataset

    src = tmp_path / "src.zarr"
    record_expert_dataset(src, "franka", "reach", 2, progress=False)
    tr, va = tmp_path / "tr.zarr", tmp_path / "va.zarr"
    for argv in (
        ["split", str(src), "--train", str(tr), "--val", str(tr)],
        ["split", str(src), "--train", str(tr), "--val", str(va), "--val-ratio", "2"],
    ):
        assert main(argv) != 0
        err = capsys.readouterr().err.strip()
        assert err.startswith("mimic dataset split: error: split:") and len(err.splitlines()) == 1, err
        assert not tr.exists() and not va.exists()


def test_the_twin_clips_a_3_rad_jump_to_the_velocity_limit_and_counts_it():
    from mimic.sim.env import make_env

    env = make_env("reach", "franka", cameras=())
    try:
        obs = env.reset(seed=0)
        home = obs["robot0_joint_pos"].copy()
        a = np.concatenate([home, [0.04]])
        a[0] += 3.0
        env.step(a)
        max_step = env.spec.dq_max / env.control_hz
        assert env.data.ctrl[0] == pytest.approx(home[0] + max_step[0])
        np.testing.assert_allclose(env.data.ctrl[1 : env.spec.dof], home[1:])
        assert env.velocity_clips == 1
        env.step(np.concatenate([env.data.ctrl[: env.spec.dof], [0.04]]))  # holding still is no clip
        assert env.velocity_clips == 1
        env.reset(seed=1)  # the reference goes back to the reset pose, not to the last target
        env.step(a)
        assert env.data.ctrl[0] == pytest.approx(home[0] + max_step[0]) and env.velocity_clips == 2
    finally:
        env.close()


def test_a_refused_nan_action_leaves_the_velocity_reference_where_it_was():
    from mimic.sim.env import make_env

    env = make_env("reach", "franka", cameras=())
    try:
        home = env.reset(seed=0)["robot0_joint_pos"].copy()
        bad = np.concatenate([home + 2.0, [0.04]])
        bad[3] = np.nan
        with pytest.raises(ValueError, match="NaN or inf"):
            env.step(bad)
        env.step(np.concatenate([home + 2.0, [0.04]]))
        np.testing.assert_allclose(
            env.data.ctrl[: env.spec.dof],
            np.clip(home + env.spec.dq_max / env.control_hz, env.spec.q_min, env.spec.q_max),
        )
    finally:
        env.close()
