"""Session YAML model: the packaged sessions load, name real nodes and real parameters; errors name the field."""

from __future__ import annotations

import importlib
from dataclasses import fields

import pytest

from mimic_ros.session import (
    SessionError,
    apply_override,
    config_dir,
    format_value,
    load_session,
    parse_session,
)

# executable -> its config dataclass: every parameter a session sets must be one the node declares
CONFIGS = {
    "arm_node": "ArmNodeConfig",
    "camera_node": "CameraNodeConfig",
    "controller_node": "ControllerConfig",
    "evaluator_node": "EvaluatorConfig",
    "handheld_recorder_node": "HandheldRecorderConfig",
    "handheld_replay_node": "HandheldReplayConfig",
    "keyboard_eef_node": "KeyboardEefNodeConfig",
    "leader_node": "LeaderNodeConfig",
    "operator_node": "OperatorConfig",
    "policy_node": "PolicyNodeConfig",
    "recorder_node": "RecorderConfig",
}
PACKAGED = sorted(p.stem for p in config_dir().glob("*.yaml"))


def test_packaged_sessions_exist() -> None:
    assert {"teleop_twin", "deploy_twin", "teleop_franka", "deploy_franka"} <= set(PACKAGED)


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_session_names_declared_parameters(name: str) -> None:
    session = load_session(name)
    assert session.nodes
    for node in session.nodes:
        assert node.executable in CONFIGS, f"{name}: node {node.name} runs unknown {node.executable}"
        module = importlib.import_module(node.module)
        declared = {f.name for f in fields(getattr(module, CONFIGS[node.executable]))}
        unknown = set(node.parameters) - declared
        assert not unknown, f"{name}: node {node.name} sets undeclared parameters {unknown}"
        assert hasattr(module, "main")


def test_ros_args_and_value_formatting() -> None:
    s = parse_session("""
nodes:
  - name: arm
    executable: arm_node
    parameters: {backend: "twin:franka", seed: 3, rate: 1.5, flag: true, cams: [scene, wrist], empty: ""}
    remaps: {/a: /b}
""")
    args = s.nodes[0].ros_args()
    assert args[:3] == ["--ros-args", "-r", "__node:=arm"]
    assert "-p" in args and 'backend:="twin:franka"' in args and "seed:=3" in args and "rate:=1.5" in args
    assert "flag:=true" in args and 'cams:="scene,wrist"' in args and 'empty:=""' in args
    assert args[-2:] == ["-r", "/a:=/b"]
    assert format_value(False) == "false"


def test_overrides_set_parameters_and_node_fields() -> None:
    s = load_session(
        "deploy_twin",
        [
            "policy.checkpoint=ckpt/x",
            "recorder.enabled=true",
            "arm.seed=7",
            "controller.lead_s=0",
            "evaluator.ends_session=false",
        ],
    )
    assert s.node("policy").parameters["checkpoint"] == "ckpt/x"
    assert s.node("recorder").enabled and s.node("arm").parameters["seed"] == 7
    assert s.node("controller").parameters["lead_s"] == 0 and not s.node("evaluator").ends_session
    assert [n.name for n in s.enabled_nodes] == ["arm", "controller", "policy", "recorder", "evaluator"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("nodes: []", "'nodes' must be a non-empty list"),
        ("nodes:\n  - {name: a}", "nodes[0]: 'executable'"),
        ("nodes:\n  - {name: a, executable: arm_node, colour: red}", "unknown key(s) ['colour']"),
        (
            "nodes:\n  - {name: a, executable: arm_node}\n  - {name: a, executable: arm_node}",
            "duplicate node name",
        ),
        ("nodes:\n  - {name: a, executable: arm_node, required: maybe}", "'required' must be true or false"),
        (
            "nodes:\n  - {name: a, executable: arm_node, parameters: {x: {y: 1}}}",
            "parameter 'x' has unsupported",
        ),
        (
            "stop_timeout_s: -1\nnodes:\n  - {name: a, executable: arm_node}",
            "'stop_timeout_s' must be a positive",
        ),
        ("nodes: [\n", "not valid YAML"),
        ("sessions: x\nnodes:\n  - {name: a, executable: arm_node}", "unknown top-level key(s) ['sessions']"),
    ],
)
def test_bad_session_files_name_the_field(text: str, needle: str) -> None:
    with pytest.raises(SessionError) as e:
        parse_session(text, "s.yaml")
    assert needle in str(e.value) and str(e.value).startswith("s.yaml")


def test_bad_overrides_and_paths() -> None:
    s = load_session("teleop_twin")
    for bad, needle in [
        ("nodot=1", "expected node.parameter=value"),
        ("ghost.x=1", "no node named 'ghost'"),
        ("arm.enabled=3", "enabled must be a bool"),
    ]:
        with pytest.raises(SessionError, match=needle.replace("(", r"\(").replace("'", "'")):
            apply_override(s, bad)
    with pytest.raises(SessionError, match="no such session file"):
        load_session("no_such_session")


def test_env_vars_expand_in_string_parameters(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MIMIC_TEST_DIR", str(tmp_path))
    path = tmp_path / "s.yaml"
    path.write_text(
        'nodes:\n  - {name: r, executable: recorder_node, parameters: {path: "${MIMIC_TEST_DIR}/d.zarr"}}\n'
    )
    assert load_session(str(path)).node("r").parameters["path"] == f"{tmp_path}/d.zarr"


def test_session_arguments_substitute_into_parameters() -> None:
    s = load_session("teleop_twin", ["arm=ur5e", "recorder.task=stack ${arm}"])
    assert s.node("arm").parameters["backend"] == "twin:ur5e"
    assert {s.node(n).parameters.get("arm") for n in ("controller", "recorder", "operator")} == {"ur5e"}
    assert (
        s.node("leader").parameters["follower"] == "ur5e"
        and s.node("recorder").parameters["task"] == "stack ur5e"
    )
    assert load_session("teleop_twin").node("arm").parameters["backend"] == "twin:franka"
    with pytest.raises(SessionError, match="session arguments: arm"):
        load_session("teleop_twin", ["robot=ur5e"])


def test_arm_node_task_choices_are_the_twin_tasks() -> None:
    """arm_node spells sim.TASKS out (importing sim loads mujoco, which hardware arm nodes do without)."""
    from mimic.sim import TASKS
    from mimic_ros.arm_node import ArmNodeConfig

    task = next(f for f in fields(ArmNodeConfig) if f.name == "task")
    assert task.metadata["choices"] == ("", *TASKS)
