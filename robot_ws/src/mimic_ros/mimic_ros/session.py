"""Session YAML: which nodes a session runs, with which parameters and remaps, and which ones it needs.

One file drives both the supervisor (`mimic session up <yaml>`) and the ROS 2 launch files, so a session
means the same thing with or without a ROS install. Schema (unknown keys are errors, so typos surface):

    session: teleop_twin            # a name for logs
    ready_timeout_s: 60             # default per-node wait for its ready line (s)
    stop_timeout_s: 10              # SIGINT -> SIGKILL grace for the whole session (s)
    nodes:
      - name: arm                   # ROS node name (and log prefix)
        executable: arm_node        # entry point in setup.py == module mimic_ros.<executable>
        required: true              # its death stops the session with an error (default true)
        enabled: true               # false: listed for reference, not started (e.g. an optional recorder)
        ends_session: false         # true: its exit ends the session with its exit status (operator, evaluator)
        ready_timeout_s: 60         # optional per-node override
        parameters: {backend: "twin:franka", task: pick_place}
        remaps: {/robot/joint_states: /follower/joint_states}

Names are ROS names (letters, digits, `_`, not starting with a digit); a node of this package must name one
of its modules as `executable`, so a typo fails when the file loads rather than when the node starts. Parameter
values are strings, finite numbers, booleans or flat lists of them; timeouts are positive finite numbers.

Session arguments: `args: {arm: franka}` at the top; string parameters use them as `${arm}` (then
${ENV_VAR} for the environment). Overrides: `name=value` sets an argument; `node.key=value` (value parsed
as YAML) sets a node field (`enabled`, `required`, `ends_session`, `ready_timeout_s`) or else a parameter.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "mimic_ros"
READY_LINE = (
    "MIMIC_NODE_READY"  # a node prints `READY_LINE <name>` on stdout once it is up (runtime.run_node)
)
NODE_FIELDS = ("enabled", "required", "ends_session", "ready_timeout_s")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a ROS node name, a module name
_PACKAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")  # a ROS parameter name (`-p name:=value`)
_INT64 = 2**63


class SessionError(ValueError):
    """The session file or an override is wrong; the message names the file and the field."""


@dataclass
class NodeSpec:
    name: str
    executable: str
    package: str = PACKAGE
    parameters: dict[str, Any] = field(default_factory=dict)
    remaps: dict[str, str] = field(default_factory=dict)
    required: bool = True
    enabled: bool = True
    ends_session: bool = False
    ready_timeout_s: float | None = None

    @property
    def module(self) -> str:
        return f"{self.package}.{self.executable}"

    def ros_args(self) -> list[str]:
        """`--ros-args` for this node: its name, its parameters (`-p k:=v`) and remaps (`-r a:=b`)."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        for key, value in self.parameters.items():
            args += ["-p", f"{key}:={format_value(value)}"]
        for src, dst in self.remaps.items():
            args += ["-r", f"{src}:={dst}"]
        return args


@dataclass
class Session:
    name: str
    path: str
    nodes: list[NodeSpec]
    ready_timeout_s: float = 60.0
    stop_timeout_s: float = 10.0
    args: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise SessionError(
            f"{self.path}: no node named {name!r} (nodes: {', '.join(n.name for n in self.nodes)})"
        )

    @property
    def enabled_nodes(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.enabled]


def format_value(value: Any) -> str:
    """A parameter value as ROS's `-p name:=value` parses it (YAML): strings quoted, lists comma-joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def config_dir() -> Path:
    """Where the packaged session files live: package data of `mimic_ros`, so a pip install, the source tree
    and a colcon install (which also copies them to share/mimic_ros/config) all find them beside this module."""
    return Path(__file__).resolve().parent / "config"


def resolve_path(name_or_path: str) -> Path:
    """A path as given, or the name of a packaged session (`teleop_twin` -> config/teleop_twin.yaml)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    for candidate in (config_dir() / name_or_path, config_dir() / f"{name_or_path}.yaml"):
        if candidate.exists():
            return candidate
    known = ", ".join(sorted(q.stem for q in config_dir().glob("*.yaml")))
    raise SessionError(f"{name_or_path}: no such session file (packaged sessions: {known})")


def _expand(value: Any, args: dict[str, Any] | None = None) -> Any:
    """`${name}` -> session argument `name`, then `${ENV}` -> environment; other values unchanged."""
    if not isinstance(value, str):
        return value
    for name, arg in (args or {}).items():
        value = value.replace("${" + name + "}", str(arg))
    return os.path.expandvars(value)


def expand_session(session: Session) -> None:
    """Substitute arguments and environment into every string parameter (after the overrides)."""
    for node in session.nodes:
        node.parameters = {k: _expand(v, session.args) for k, v in node.parameters.items()}


def _keys(mapping: dict) -> list[str]:
    """A mapping's keys for a message, sorted whatever their YAML types (1, "a", null)."""
    return sorted(map(str, mapping))


def positive_seconds(where: str, key: str, value: Any) -> float:
    """`value` as a positive finite float, or SessionError naming `key` (a bool, inf or 1e400 is not a time)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and isinstance(value, int):
        ok = 0 < value < _INT64
    if not ok or not math.isfinite(value) or value <= 0:
        raise SessionError(f"{where}: '{key}' must be a positive number, got {value!r:.40}")
    return float(value)


def _scalar_ok(value: Any) -> bool:
    if isinstance(value, bool) or isinstance(value, str):
        return True
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    return isinstance(value, float) and math.isfinite(value)


def check_parameter(where: str, key: Any, value: Any) -> None:
    """A parameter ROS's `-p name:=value` carries unchanged: a ROS name, and a string, finite number (int64
    for integers), boolean or flat list of those; anything else is a SessionError naming it."""
    if not isinstance(key, str) or not _PARAMETER.fullmatch(key):
        raise SessionError(f"{where}: parameter name {key!r:.40} is not a ROS parameter name")
    flat = isinstance(value, list) and all(_scalar_ok(v) for v in value)
    if not (flat or _scalar_ok(value)):
        raise SessionError(
            f"{where}: parameter {key!r} has unsupported value {value!r:.60} (strings, finite numbers, "
            "booleans or flat lists of them)"
        )


def _check_executable(where: str, package: Any, executable: Any) -> None:
    if not isinstance(package, str) or not _PACKAGE.fullmatch(package):
        raise SessionError(f"{where}: 'package' must be a Python package name, got {package!r:.40}")
    if not isinstance(executable, str) or not _NAME.fullmatch(executable):
        raise SessionError(f"{where}: 'executable' must be a module name, got {executable!r:.40}")
    here = Path(__file__).resolve().parent
    if package == PACKAGE and not (here / f"{executable}.py").is_file():
        nodes = ", ".join(sorted(q.stem for q in here.glob("*_node.py")))
        raise SessionError(f"{where}: no executable {executable!r} in {PACKAGE} (nodes: {nodes})")


def _node(path: str, i: int, raw: Any) -> NodeSpec:
    where = f"{path}: nodes[{i}]"
    if not isinstance(raw, dict):
        raise SessionError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name for f in fields(NodeSpec)}
    unknown = set(raw) - known
    if unknown:
        raise SessionError(f"{where}: unknown key(s) {_keys(unknown)} (known: {sorted(known)})")
    for key in ("name", "executable"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise SessionError(f"{where}: '{key}' must be a non-empty string")
    if not _NAME.fullmatch(raw["name"]):
        raise SessionError(f"{where}: 'name' {raw['name']!r:.40} is not a ROS node name (letters, digits, _)")
    where = f"{path}: node {raw['name']!r}"
    package = raw.get("package", PACKAGE)
    _check_executable(where, package, raw["executable"])
    params = raw.get("parameters") or {}
    remaps = raw.get("remaps") or {}
    if not isinstance(params, dict) or not isinstance(remaps, dict):
        raise SessionError(f"{where}: 'parameters' and 'remaps' must be mappings")
    for key, value in params.items():
        check_parameter(where, key, value)
    for src, dst in remaps.items():
        if not (isinstance(src, str) and isinstance(dst, str) and src and dst):
            raise SessionError(f"{where}: remap {src!r:.40}: {dst!r:.40} must map a name to a name")
    for key in ("required", "enabled", "ends_session"):
        if key in raw and not isinstance(raw[key], bool):
            raise SessionError(f"{where}: '{key}' must be true or false, got {raw[key]!r:.40}")
    timeout = raw.get("ready_timeout_s")
    return NodeSpec(
        name=raw["name"],
        executable=raw["executable"],
        package=package,
        parameters=dict(params),
        remaps=dict(remaps),
        required=raw.get("required", True),
        enabled=raw.get("enabled", True),
        ends_session=raw.get("ends_session", False),
        ready_timeout_s=positive_seconds(where, "ready_timeout_s", timeout) if timeout is not None else None,
    )


def parse_session(text: str, path: str = "<session>") -> Session:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # one line, whatever YAML said
        raise SessionError(f"{path}:{at} not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise SessionError(f"{path}: expected a mapping with 'nodes'")
    unknown = set(raw) - {"session", "nodes", "ready_timeout_s", "stop_timeout_s", "description", "args"}
    if unknown:
        raise SessionError(f"{path}: unknown top-level key(s) {_keys(unknown)}")
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise SessionError(f"{path}: 'nodes' must be a non-empty list")
    nodes = [_node(path, i, n) for i, n in enumerate(nodes_raw)]
    names = [n.name for n in nodes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SessionError(f"{path}: duplicate node name(s) {sorted(dup)}")
    timeouts = {}
    for key in ("ready_timeout_s", "stop_timeout_s"):
        if key in raw:
            timeouts[key] = positive_seconds(path, key, raw[key])
    args = raw.get("args") or {}
    if not isinstance(args, dict) or not all(isinstance(v, (str, int, float, bool)) for v in args.values()):
        raise SessionError(f"{path}: 'args' must map names to plain values")
    return Session(
        name=str(raw.get("session") or Path(path).stem),
        path=path,
        nodes=nodes,
        args={str(k): v for k, v in args.items()},
        **timeouts,
    )


def apply_override(session: Session, text: str) -> None:
    """Apply `node.key=value` in place (value parsed as YAML, so `true`, `3`, `0.1` get their types)."""
    target, eq, value_text = text.partition("=")
    node_name, dot, key = target.partition(".")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    if value is None:
        value = ""
    if eq and not dot and target in session.args:
        session.args[target] = value if isinstance(value, (str, int, float, bool)) else value_text
        return
    if not eq or not dot or not node_name or not key:
        known = f" (session arguments: {', '.join(session.args)})" if session.args else ""
        raise SessionError(f"--set {text!r}: expected node.parameter=value or argument=value{known}")
    node = session.node(node_name)
    if key in NODE_FIELDS:
        if key == "ready_timeout_s":
            value = positive_seconds(f"--set {text!r}", key, value)
        elif not isinstance(value, bool):
            raise SessionError(f"--set {text!r}: {key} must be a bool")
        idx = session.nodes.index(node)
        session.nodes[idx] = replace(node, **{key: value})
        return
    if not isinstance(value, (str, int, float, bool, list)):
        value = value_text
    check_parameter(f"--set {text!r}", key, value)
    node.parameters[key] = value


def load_session(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Session:
    """Read a session file (a path or a packaged session's name) and apply `node.key=value` overrides."""
    path = resolve_path(name_or_path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SessionError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise SessionError(f"{path}: not UTF-8 text, so not a session YAML (byte {e.start})") from None
    session = parse_session(text, str(path))
    for o in overrides:
        apply_override(session, o)
    expand_session(session)
    return session


def launch_description_entities(session: Session) -> list[dict[str, Any]]:
    """What a launch file needs per enabled node (package, executable, name, parameters, remappings, required)."""
    return [
        {
            "package": n.package,
            "executable": n.executable,
            "name": n.name,
            "parameters": dict(n.parameters),
            "remappings": list(n.remaps.items()),
            "required": n.required,
            "ends_session": n.ends_session,
        }
        for n in session.enabled_nodes
    ]


def launch_description(default_session: str):
    """A `launch.LaunchDescription` running a session file: what `launch/<session>.launch.py` returns.

    Launch arguments: `session:=<yaml path or packaged name>` (default `default_session`) and
    `set:="node.key=value;node.key=value"` (the supervisor's --set). Required and `ends_session` nodes
    shut the launch down when they exit, as the supervisor does; launch starts the nodes together rather
    than in order, so a node that needs another (the leader opening the operator's bus) waits for it itself.
    Imports launch/launch_ros only here: they exist on a ROS install, not in the project venv.
    """
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def nodes(context, *args, **kwargs):
        sets = [s for s in LaunchConfiguration("set").perform(context).split(";") if s.strip()]
        session = load_session(LaunchConfiguration("session").perform(context), sets)
        actions = []
        for spec in launch_description_entities(session):
            on_exit = (
                [Shutdown(reason=f"{spec['name']} exited")]
                if spec["required"] or spec["ends_session"]
                else []
            )
            actions.append(
                Node(
                    package=spec["package"],
                    executable=spec["executable"],
                    name=spec["name"],
                    parameters=[spec["parameters"]],
                    remappings=spec["remappings"],
                    output="screen",
                    emulate_tty=True,
                    on_exit=on_exit,
                )
            )
        return actions

    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "session", default_value=default_session, description="session YAML or name"
            ),
            DeclareLaunchArgument("set", default_value="", description="overrides: node.key=value;..."),
            OpaqueFunction(function=nodes),
        ]
    )
