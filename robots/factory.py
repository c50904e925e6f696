"""`make_arm(uri)`: the one way a session, a test or a script names an arm backend.

URIs: `twin:<arm>` (MuJoCo twin, e.g. `twin:franka`), `franka:<host>`, `ur:<host>`, `xarm:<host>`
(hardware, or a protocol peer on 127.0.0.1). Hardware backends import their SDK lazily, so the twin
works without the `hw` extra.

Backends register themselves: each backend module calls `register(scheme, factory)` when it is imported,
so this module imports none of them. That keeps `mimic.robots` below the simulator, whose twin
(`mimic.sim.twin`) registers "twin" the same way. `BACKEND_MODULES` names, as plain strings, the module
where each built-in scheme registers; the first URI that uses a scheme not registered yet imports that
module by name, so `make_arm("twin:franka")` works without the caller importing the twin first, and a
hardware session never loads MuJoCo.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from mimic.robots.arm import Arm

BACKEND_MODULES: dict[str, str] = {
    "twin": "mimic.sim.twin",
    "franka": "mimic.robots.franka",
    "ur": "mimic.robots.ur",
    "xarm": "mimic.robots.xarm",
}

_BACKENDS: dict[str, Callable[..., Arm]] = {}


def register(scheme: str, factory: Callable[..., Arm]) -> None:
    """Add a backend: `factory(target, **kwargs) -> Arm`, where `target` is the URI part after the colon."""
    _BACKENDS[scheme] = factory


def schemes() -> list[str]:
    """Every scheme a URI may use: the built-in ones, then any registered from elsewhere."""
    return list(BACKEND_MODULES) + [s for s in _BACKENDS if s not in BACKEND_MODULES]


def parse_uri(uri: str) -> tuple[str, str]:
    """(scheme, target) of an arm URI; ValueError listing the schemes when the scheme is unknown."""
    scheme, _, target = uri.partition(":")
    if not scheme or scheme not in schemes():
        raise ValueError(
            f"arm {uri!r}: unknown backend {scheme!r}; use one of "
            + ", ".join(f"{s}:<...>" for s in schemes())
        )
    return scheme, target


def _backend(scheme: str) -> Callable[..., Arm]:
    """The registered factory for `scheme`, importing its backend module first if it has not registered."""
    if scheme not in _BACKENDS:
        module = BACKEND_MODULES[scheme]
        importlib.import_module(module)
        if scheme not in _BACKENDS:
            raise RuntimeError(f"arm backend {scheme!r}: {module} was imported but did not register it")
    return _BACKENDS[scheme]


def make_arm(uri: str, **kwargs: Any) -> Arm:
    """An unconnected Arm for `uri`; keyword arguments go to the backend (e.g. latency=, task= for the twin)."""
    scheme, target = parse_uri(uri)
    return _backend(scheme)(target, **kwargs)
