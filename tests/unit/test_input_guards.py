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


def _one_line(err: str) -> str:
    """The single stderr line of a refused command (progress bars aside), with no traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip() and "it/s]" not in ln and "step/s]" not in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_config_that_is_not_utf8_text_is_refused_naming_it(tmp_path, capsys):
    from mimic.workflows.train import main

    f = tmp_path / "cfg.yaml"
    f.write_bytes(b"\x00\xff\xfe binary")
    with pytest.raises(ConfigError, match=r"cfg.yaml: not UTF-8 text, so not a YAML config \(byte 1\)$"):
        load_train_config(f)
    assert main([str(f)]) == 2
    assert (
        _one_line(capsys.readouterr().err)
        == f"mimic train: {f}: not UTF-8 text, so not a YAML config (byte 1)"
    )


def test_a_set_value_yaml_cannot_parse_names_the_set(capsys):
    with pytest.raises(ConfigError, match=r"^--set 'steps=\[1': not a valid YAML value \(") as e:
        load_train_config(None, [*BASE, "steps=[1"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("record.image_size=[0]", "record.image_size: [0] is not [H, W] with both >= 1"),
        ("record.image_size=[96,0]", "record.image_size: [96, 0] is not [H, W] with both >= 1"),
        ("record.hold_steps=-3", "record.hold_steps: -3 is outside [0, inf]"),
    ],
)
def test_a_bad_record_section_is_refused_at_load_naming_the_field(override, message):
    with pytest.raises(ConfigError) as e:
        load_train_config(None, [*BASE, override])
    assert str(e.value) == message


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--image-size", "abc"], "mimic record: --image-size 'abc': expected HxW, e.g. 96x96"),
        (["--image-size", "96x96x3"], "mimic record: --image-size '96x96x3': expected HxW, e.g. 96x96"),
        (["--image-size", "0x0"], "mimic record: record.image_size: [0, 0] is not [H, W] with both >= 1"),
        (["--hold-steps", "-3"], "mimic record: record.hold_steps: -3 is outside [0, inf]"),
    ],
)
def test_record_flags_are_checked_before_any_rollout(tmp_path, capsys, flags, message):
    from mimic.workflows.record import main

    out = tmp_path / "out.zarr"
    argv = [str(out), "--arm", "franka", "--task", "reach", "--episodes", "1", "--no-progress", *flags]
    assert main(argv) == 2
    assert _one_line(capsys.readouterr().err) == message
    assert not out.exists()


def test_a_store_under_a_file_is_refused_naming_the_store(tmp_path, capsys):
    from mimic.data.dataset import DatasetError
    from mimic.data.writer import DatasetWriter, StreamSpec
    from mimic.workflows.record import main

    (tmp_path / "f").write_text("a file, not a folder")
    out = tmp_path / "f" / "x.zarr"
    attrs = {"robot": "franka", "joint_names": ["j"]}
    with pytest.raises(DatasetError, match=r"f/x.zarr: cannot create the store \(Not a directory\)$"):
        DatasetWriter.create(out, 10.0, {"q": StreamSpec((1,))}, attrs)
    assert main([str(out), "--arm", "franka", "--task", "reach", "--episodes", "1", "--no-progress"]) == 2
    assert (
        _one_line(capsys.readouterr().err)
        == f"mimic record: {out}: cannot create the store (Not a directory)"
    )


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    from mimic.workflows.record_expert import record_expert_dataset

    return record_expert_dataset(
        tmp_path_factory.mktemp("guards") / "src.zarr", "franka", "reach", 2, progress=False
    )


def test_a_dataset_output_under_a_file_names_the_output_not_the_input(small_store, tmp_path, capsys):
    from mimic.data.cli import main

    (tmp_path / "f").write_text("a file, not a folder")
    for argv, out in (
        (["merge", str(small_store), "-o", str(tmp_path / "f" / "m.zarr")], tmp_path / "f" / "m.zarr"),
        (["convert", str(small_store), str(tmp_path / "f" / "c.zarr")], tmp_path / "f" / "c.zarr"),
        (["plot", str(small_store), "-o", str(tmp_path / "f" / "p.png")], tmp_path / "f" / "p.png"),
    ):
        assert main(argv) == 1
        line = _one_line(capsys.readouterr().err)
        assert (
            line
            == f"mimic dataset {argv[0]}: error: {out}: cannot write here ({tmp_path / 'f'} is not a directory)"
        )


def test_merge_names_the_input_whose_chunk_does_not_decode_and_writes_nothing(small_store, tmp_path, capsys):
    import shutil

    from mimic.data.cli import main

    bad = tmp_path / "bad.zarr"
    shutil.copytree(small_store, bad)
    chunk = bad / "data" / "action" / "0.0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    out = tmp_path / "m.zarr"
    assert main(["merge", str(small_store), str(bad), "-o", str(out)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"mimic dataset merge: error: {bad}: episode 0 unreadable ("), line
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.zarr"]


def test_merge_called_directly_leaves_no_half_store(small_store, tmp_path):
    """DAgger merges without the CLI: a damaged input must not leave an empty store that a rerun would keep."""
    import shutil

    from mimic.data.dataset import DatasetError
    from mimic.data.transform import merge

    bad = tmp_path / "bad.zarr"
    shutil.copytree(small_store, bad)
    chunk = bad / "data" / "action" / "0.0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    with pytest.raises(DatasetError, match=r"bad.zarr: episode 0 unreadable"):
        merge([str(small_store), str(bad)], str(tmp_path / "m.zarr"))
    assert [p.name for p in tmp_path.iterdir()] == ["bad.zarr"]
    assert merge([str(small_store), str(small_store)], str(tmp_path / "ok.zarr")) == 4


def test_a_session_file_that_is_not_utf8_text_is_refused_naming_it(tmp_path):
    from mimic_ros.session import SessionError, load_session

    f = tmp_path / "s.yaml"
    f.write_bytes(b"\x00\xff\xfe")
    with pytest.raises(SessionError, match=r"s.yaml: not UTF-8 text, so not a session YAML \(byte 1\)$"):
        load_session(str(f))


def test_session_up_refuses_a_log_dir_it_cannot_create_before_starting_a_node(tmp_path, capsys):
    from mimic_ros.supervisor import EXIT_BAD_SESSION, main

    (tmp_path / "f").write_text("a file, not a folder")
    logs = tmp_path / "f" / "logs"
    assert main(["up", "teleop_twin", "--log-dir", str(logs), "--time-limit-s", "1"]) == EXIT_BAD_SESSION
    line = _one_line(capsys.readouterr().err)
    assert line == f"mimic session: {logs}: cannot create the log folder (Not a directory)"


def test_eval_refuses_outputs_it_cannot_write_before_any_rollout(tmp_path, capsys):
    from mimic.workflows.evaluate import main

    (tmp_path / "f").write_text("a file, not a folder")
    ckpt = str(tmp_path / "no_checkpoint_needed_yet")
    for flags, message in (
        (["--json", str(tmp_path / "f" / "r.json")], f"{tmp_path / 'f' / 'r.json'}: cannot write here"),
        (["--json", str(tmp_path)], f"--json {tmp_path}: is a directory, not a file"),
        (
            ["--video-dir", str(tmp_path / "f")],
            f"--video-dir {tmp_path / 'f'}: exists and is not a directory",
        ),
    ):
        assert main([ckpt, "--episodes", "1", *flags]) == 2
        assert _one_line(capsys.readouterr().err).startswith(f"mimic eval: {message}")


@pytest.mark.parametrize(
    "device, message",
    [
        ("cuda", "device cuda: asked for, but torch sees no CUDA GPU on this machine"),
        ("cuda:0", "device cuda:0: asked for, but torch sees no CUDA GPU on this machine"),
        ("gpu", "device 'gpu': not a torch device (cpu, cuda or cuda:<index>)"),
        ("mps", "device 'mps': only cpu, cuda or cuda:<index> are supported"),
    ],
)
def test_eval_and_deploy_refuse_a_device_this_machine_cannot_run(
    tmp_path, capsys, monkeypatch, device, message
):
    import torch

    from mimic.policies.checkpoint import check_device
    from mimic.workflows.evaluate import main as eval_main
    from mimic_ros.deploy import main as deploy_main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_device("cpu")
    with pytest.raises(ValueError) as e:
        check_device(device)
    assert str(e.value) == message
    ckpt = str(tmp_path / "ckpt")
    assert eval_main([ckpt, "--episodes", "1", "--device", device]) == 2
    assert _one_line(capsys.readouterr().err) == f"mimic eval: {message}"
    assert deploy_main([ckpt, "--arm", "twin:franka", "--episodes", "1", "--device", device]) == 2
    assert _one_line(capsys.readouterr().err) == f"mimic deploy: {message}"


@pytest.mark.parametrize("size", [(0, 0), (481, 64), (48, 100_000)])
def test_a_render_size_outside_the_twin_buffer_is_one_line_naming_the_limits(size):
    from mimic.sim.env import make_env

    env = make_env("reach", "franka", cameras=())
    try:
        with pytest.raises(ValueError) as e:
            env.render("scene", size)
        assert (
            str(e.value)
            == f"render size {size[0]}x{size[1]}: must be 1..480 x 1..640 (the twin's offscreen buffer)"
        )
    finally:
        env.close()


def test_sim_show_refuses_an_out_under_a_file_before_the_rollout(tmp_path, capsys):
    from mimic.sim.cli import main

    (tmp_path / "f").write_text("a file, not a folder")
    out = tmp_path / "f" / "x.mp4"
    assert main(["show", "franka", "reach", "--out", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("mimic sim show: error: ") and str(tmp_path / "f") in line


@pytest.mark.parametrize(
    "content, sizes, message",
    [
        (b"\x00\xff\xfe", {}, "{cfg}: not UTF-8 text, so not a YAML config (byte 1)"),
        (b"dataset: x.zarr\n", {"train_steps": 0}, "{cfg}: steps: 0 is outside [1, inf]"),
        (b"dataset: x.zarr\nbogus: 1\n", {}, "{cfg}: config: unknown field(s) ['bogus']"),
        (b"dataset: x.zarr\n", {"demos": 0}, "--demos 0: must be at least 1"),
        (b"dataset: x.zarr\n", {"eval_episodes": -1}, "--eval-episodes -1: must be at least 1"),
    ],
)
def test_demo_checks_its_sizes_and_training_config_before_recording(tmp_path, content, sizes, message):
    from mimic.demo import DemoConfig, DemoError, run_demo

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_bytes(content)
    cfg = DemoConfig(train_config=str(cfg_file), out=str(tmp_path / "demo"), **sizes)
    with pytest.raises(DemoError) as e:
        run_demo(cfg)
    assert str(e.value).startswith(message.format(cfg=cfg_file)), str(e.value)
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("size", [(0, 0), (-5, 10), (96,)])
def test_handheld_recording_refuses_an_image_size_with_no_pixels(tmp_path, size):
    from mimic.teleop.handheld import record_twin

    out = tmp_path / "h.zarr"
    with pytest.raises(ValueError) as e:
        record_twin(out, 1, image_size=size, progress=False)
    assert str(e.value) == f"record_twin: image_size must be (H, W) with both >= 1, got {size}"
    assert not out.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[]", "processor.json: expected a JSON object, got list"),
        (
            '{"action_repr": "nope"}',
            "processor.json: action_repr 'nope' is not one of ('joint', 'tcp_position', 'eef_relative')",
        ),
    ],
)
def test_a_processor_file_a_deployment_cannot_use_is_refused_naming_it(tmp_path, text, message):
    from mimic.policies.checkpoint import CheckpointError, action_space, load_processor

    (tmp_path / "processor.json").write_text(text)
    for read in (load_processor, action_space):
        with pytest.raises(CheckpointError) as e:
            read(tmp_path)
        assert str(e.value) == f"{tmp_path}/{message}"
    (tmp_path / "processor.json").write_text('{"action_repr": "eef_relative"}')
    assert action_space(tmp_path) == "eef"


@pytest.mark.parametrize(
    "attr, value, message",
    [
        ("fps", "abc", "root attr 'fps' is 'abc', expected a positive number"),
        ("fps", 0, "root attr 'fps' is 0, expected a positive number"),
        ("streams", 5, "root attr 'streams' is 5, expected a mapping of stream specs"),
        ("streams", {"action": 1}, "root attr 'streams.action' is 1, expected a shape and a tolerance_s"),
    ],
)
def test_a_store_with_a_malformed_root_attr_is_refused_naming_it(
    small_store, tmp_path, capsys, attr, value, message
):
    import shutil

    import zarr

    from mimic.data.cli import main
    from mimic.workflows.train import main as train_main

    bad = tmp_path / "bad.zarr"
    shutil.copytree(small_store, bad)
    zarr.open_group(str(bad), mode="r+").attrs[attr] = value
    assert main(["validate", str(bad)]) == 1
    assert _one_line(capsys.readouterr().err) == f"mimic dataset validate: error: {bad}: {message}"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"dataset: {bad}\nrun_dir: {tmp_path / 'run'}\n")
    assert train_main([str(cfg), "--no-progress"]) == 2
    assert _one_line(capsys.readouterr().err) == f"mimic train: {bad}: {message}"
    assert not (tmp_path / "run").exists()


def test_chunking_study_keeps_an_earlier_study_and_checks_out_before_any_cell(tmp_path, capsys):
    from mimic.workflows.chunking_study import main

    earlier = tmp_path / "study"
    earlier.mkdir()
    (earlier / "cells.json").write_text('{"kept": true}')
    (tmp_path / "f").write_text("a file, not a folder")
    ckpt = str(tmp_path / "no_checkpoint_needed_yet")
    for out, message in (
        (earlier, f"--out {earlier}: already holds a study (cells.json); name a new folder"),
        (tmp_path / "f", f"--out {tmp_path / 'f'}: exists and is not a directory"),
        (
            tmp_path / "f" / "s",
            f"{tmp_path / 'f' / 's'}: cannot write here ({tmp_path / 'f'} is not a directory)",
        ),
    ):
        assert (
            main([ckpt, "--out", str(out), "--delays", "0", "--episodes", "1", "--strategies", "sync"]) == 2
        )
        assert _one_line(capsys.readouterr().err) == f"mimic chunking-study: {message}"
    assert (earlier / "cells.json").read_text() == '{"kept": true}'


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["convert", "{src}", "{tmp}/c.zarr", "--quality", "500"],
            "--quality 500: must be 1..100 (leave it out for lossless)",
        ),
        (
            ["video", "{src}", "-o", "{tmp}/v.txt"],
            "-o {tmp}/v.txt: an H.264 video is written as one of .mp4, .mkv, .mov, .avi",
        ),
        (["plot", "{src}", "-o", "{tmp}/p.txt"], "-o {tmp}/p.txt: a plot is written as one of .avif, .eps"),
    ],
)
def test_a_dataset_argument_the_writer_cannot_use_is_named_not_blamed_on_the_input(
    small_store, tmp_path, capsys, argv, message
):
    from mimic.data.cli import main

    assert main([a.format(src=small_store, tmp=tmp_path) for a in argv]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"mimic dataset {argv[0]}: error: {message.format(tmp=tmp_path)}"), line
    assert list(tmp_path.iterdir()) == []


def test_an_episode_whose_chunk_does_not_decode_names_store_and_episode(small_store, tmp_path):
    """Every reader of whole episodes (merge, DAgger, the handheld replay node) gets this one line, not a codec
    traceback: the replay node stops with it in its log and a failing exit status."""
    import shutil

    from mimic.data.dataset import DatasetError, ReplayDataset

    bad = tmp_path / "bad.zarr"
    shutil.copytree(small_store, bad)
    chunk = bad / "data" / "timestamp" / "0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    ds = ReplayDataset(bad)
    with pytest.raises(DatasetError) as e:
        ds.episode(0)
    assert str(e.value).startswith(f"{bad}: episode 0 unreadable (RuntimeError: ") and "\n" not in str(
        e.value
    )
    with pytest.raises(IndexError, match="out of range"):
        ds.episode(99)


def test_mimic_deploy_refuses_outputs_it_cannot_write_before_starting_any_node(tmp_path, capsys):
    from mimic_ros.deploy import main

    (tmp_path / "f").write_text("a file, not a folder")
    ckpt = str(tmp_path / "ckpt")
    for flags, message in (
        (["--results", str(tmp_path / "f" / "r.json")], f"{tmp_path / 'f' / 'r.json'}: cannot write here"),
        (["--results", str(tmp_path)], f"--results {tmp_path}: is a directory, not a file"),
        (["--record", str(tmp_path / "f" / "r.zarr")], f"{tmp_path / 'f' / 'r.zarr'}: cannot write here"),
    ):
        assert main([ckpt, "--arm", "twin:franka", "--episodes", "1", *flags]) == 2
        assert _one_line(capsys.readouterr().err).startswith(f"mimic deploy: {message}")


@pytest.mark.parametrize("limit", ["-1", "0", "nan", "inf"])
def test_session_up_refuses_a_time_limit_that_is_not_positive_before_starting_a_node(tmp_path, capsys, limit):
    from mimic_ros.supervisor import EXIT_BAD_SESSION, main

    logs = tmp_path / "logs"
    assert main(["up", "teleop_twin", "--log-dir", str(logs), "--time-limit-s", limit]) == EXIT_BAD_SESSION
    line = _one_line(capsys.readouterr().err)
    assert line == f"mimic session: --time-limit-s {float(limit):g}: must be a positive number of seconds"
    assert not logs.exists()
