"""Node parameters from config dataclasses: one declaration gives ROS parameters, descriptions and ranges.

Every node keeps its configuration in a dataclass whose fields are built with `param(...)`. The same
dataclass is what the session YAML sets (supervisor and launch file alike, as `-p name:=value`), what
`ros2 param describe` shows (description, range, choices), and what is checked at start: a value of the
wrong type or outside its range stops the node with one line naming the parameter (exit 2).
"""

from __future__ import annotations

from dataclasses import MISSING, Field, field, fields
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

ROS_PARAMETERS = {"use_sim_time", "start_type_description_service"}  # rclpy's own, accepted by every node


class ParamError(ValueError):
    """A parameter value is unusable; the message names the node and the parameter."""


def param(
    default: Any, help: str, range: tuple[float, float] | None = None, choices: tuple[str, ...] | None = None
) -> Any:
    """A dataclass field that is also a declared ROS parameter (`range` is inclusive, in the field's units)."""
    return field(default=default, metadata={"help": help, "range": range, "choices": choices})


def describe(f: Field) -> ParameterDescriptor:
    meta = f.metadata or {}
    text = meta.get("help", "")
    if meta.get("choices"):
        text += f" (one of: {', '.join(meta['choices'])})"
    d = ParameterDescriptor(description=text, dynamic_typing=True)
    lo_hi = meta.get("range")
    if lo_hi is not None:
        # Shown by `ros2 param describe`; enforced by cast_and_check() with a message naming the node, not by
        # integer_range/floating_point_range, which rclpy applies only when the value's type matches exactly.
        d.additional_constraints = f"range [{lo_hi[0]}, {lo_hi[1]}]"
    return d


def cast_and_check(node_name: str, f: Field, value: Any) -> Any:
    """`value` cast to the field's type and checked against its range/choices, or ParamError."""
    default = f.default if f.default is not MISSING else None
    kind = type(default)
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError
                value = low in ("1", "true", "yes", "on")
            value = bool(value)
        elif isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            value = int(value)
        else:
            value = kind(value)
    except (TypeError, ValueError):
        raise ParamError(f"{node_name}: parameter {f.name}={value!r} is not a {kind.__name__}") from None
    meta = f.metadata or {}
    lo_hi = meta.get("range")
    if lo_hi is not None and not (lo_hi[0] <= value <= lo_hi[1]):
        raise ParamError(f"{node_name}: parameter {f.name}={value!r} outside [{lo_hi[0]}, {lo_hi[1]}]")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ParamError(
            f"{node_name}: parameter {f.name}={value!r} is not one of {', '.join(map(repr, choices))}"
        )
    return value


def declare_config(node: Node, cfg: object) -> None:
    """Declare every field of `cfg` as a parameter (default = field value), read it back, cast, check.

    Parameters are dynamically typed so that `rate_hz:=500` (an integer on the command line) sets a float
    field; the cast and the range check happen here, with an error naming the parameter.
    """
    known = {f.name for f in fields(cfg)}  # type: ignore[arg-type]
    unknown = sorted(set(getattr(node, "_parameter_overrides", {})) - known - ROS_PARAMETERS)
    if unknown:  # a misspelt parameter would otherwise be ignored and the node run on its default
        raise ParamError(
            f"{node.get_name()}: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    for f in fields(cfg):  # type: ignore[arg-type]
        value = node.declare_parameter(f.name, getattr(cfg, f.name), describe(f)).value
        setattr(cfg, f.name, cast_and_check(node.get_name(), f, value))
