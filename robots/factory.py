"""`make_arm(uri)`: the one way a session, a test or a script names an arm backend.

URIs: `twin:<arm>` (MuJoCo twin, e.g. `twin:franka`), `franka:<host>`, `ur:<host>`, `xarm:<host>`
(hardware, or a protocol peer on 127.0.0.1). Hardware backends import their SDK lazily, so the twin
works without the `hw` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from robots.arm import Arm

_BACKENDS: dict[str, Callable[..., Arm]] = {}


def register(scheme: str, factory: Callable[..., Arm]) -> None:
    """Add a backend: `factory(target, **kwargs) -> Arm`, where `target` is the URI part after the colon."""
    _BACKENDS[scheme] = factory


def _twin(target: str, **kwargs: Any) -> Arm:
    from sim.twin import TwinArm

    return TwinArm(target or "franka", **kwargs)


def _franka(target: str, **kwargs: Any) -> Arm:
    from robots.franka import FrankaArm

    return FrankaArm(target, **kwargs)


def _ur(target: str, **kwargs: Any) -> Arm:
    from robots.ur import URArm

    return URArm(target, **kwargs)


def _xarm(target: str, **kwargs: Any) -> Arm:
    from robots.xarm import XArm

    return XArm(target, **kwargs)


register("twin", _twin)
register("franka", _franka)
register("ur", _ur)
register("xarm", _xarm)


def parse_uri(uri: str) -> tuple[str, str]:
    scheme, _, target = uri.partition(":")
    if not scheme or scheme not in _BACKENDS:
        raise ValueError(f"arm {uri!r}: unknown backend {scheme!r}; use one of "
                         + ", ".join(f"{s}:<...>" for s in _BACKENDS))
    return scheme, target


def make_arm(uri: str, **kwargs: Any) -> Arm:
    """An unconnected Arm for `uri`; keyword arguments go to the backend (e.g. latency=, task= for the twin)."""
    scheme, target = parse_uri(uri)
    return _BACKENDS[scheme](target, **kwargs)
