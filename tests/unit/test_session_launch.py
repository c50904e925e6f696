"""Launch files are thin over the session YAML; the colcon package installs every node the sessions run."""

from __future__ import annotations

import ast
import runpy

import pytest

from mimic_ros.session import config_dir, launch_description_entities, load_session

PKG = config_dir().parent.parent  # the colcon package: setup.py, package.xml, launch/


def test_launch_entities_follow_the_yaml() -> None:
    session = load_session("teleop_twin", ["leader.enabled=false", "operator.output=topic"])
    ents = launch_description_entities(session)
    assert [e["name"] for e in ents] == ["arm", "controller", "recorder", "operator"]
    operator = ents[-1]
    assert operator["ends_session"] and operator["parameters"]["output"] == "topic"
    assert operator["executable"] == "operator_node" and operator["package"] == "mimic_ros"


def test_every_session_executable_is_an_installed_entry_point() -> None:
    tree = ast.parse((PKG / "setup.py").read_text())
    nodes = next(
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "NODES"
    )
    installed = set(ast.literal_eval(nodes))
    for path in config_dir().glob("*.yaml"):
        for node in load_session(str(path)).nodes:
            assert node.executable in installed, f"{path.name}: {node.executable} is not in setup.py"
    xml = (PKG / "package.xml").read_text()
    assert "<build_type>ament_python</build_type>" in xml and (PKG / "resource" / "mimic_ros").exists()
    for launch in ("teleop", "deploy", "handheld"):
        text = (PKG / "launch" / f"{launch}.launch.py").read_text()
        assert (
            "launch_description(" in text and len(text.splitlines()) < 15
        )  # thin: all logic is in session.py


@pytest.mark.parametrize(
    "launch, session", [("teleop", "teleop_twin"), ("deploy", "deploy_twin"), ("handheld", "handheld_twin")]
)
def test_launch_file_builds_the_sessions_nodes(launch: str, session: str) -> None:
    pytest.importorskip(
        "launch_ros", reason="launch_ros is not on the package registries; needs a ROS install"
    )
    from launch import LaunchContext

    module = runpy.run_path(str(PKG / "launch" / f"{launch}.launch.py"))
    ld = module["generate_launch_description"]()
    context = LaunchContext()
    for entity in ld.entities[:2]:
        entity.visit(context)
    nodes = ld.entities[2].execute(context)
    assert [type(n).__name__ for n in nodes] == ["Node"] * len(load_session(session).enabled_nodes)
