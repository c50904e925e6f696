"""Keyboard end-effector teleop, plain Python: single keys -> a TCP target pose (position + rotation) and a
gripper width, clipped to a workspace box. The ROS node (mimic_ros.keyboard_eef_node) reads the keys and
publishes the target; this module holds the mapping, so it is testable without a terminal or ROS.

Bindings (position steps in the arm's base frame, rotations about the base axes through the TCP, so the
TCP turns in place):

    w / s   +x / -x        i / k   +rx / -rx   (rotation about the base x axis)
    a / d   +y / -y        j / l   +ry / -ry
    r / f   +z / -z        u / o   +rz / -rz
    space   gripper: toggle open (width gripper_open_m) / closed (gripper_closed_m)
    c       catch up: target := the arm's measured TCP pose (the caller passes it)

Every position key moves by `step_m`, every rotation key by `step_rad`. A position key that would leave the
workspace box stops at its face (never pushes further out; a target already outside may only move back in).
An optional `reachable(row)` check (the node passes IK on the arm's twin model) refuses a key whose target
the arm cannot reach: the target stays where it was, so the arm and the target never drift apart.
Target rows are [tcp position (3, m), axis-angle (3, rad), gripper width (m)]: the layout of
mimic.robots.eef_control and of mimic_ros.msgs' end-effector chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

# key -> (kind, axis, sign); kind "pos" steps the position, "rot" rotates about a base axis
MOTION_KEYS: dict[str, tuple[str, int, float]] = {
    "w": ("pos", 0, +1.0),
    "s": ("pos", 0, -1.0),
    "a": ("pos", 1, +1.0),
    "d": ("pos", 1, -1.0),
    "r": ("pos", 2, +1.0),
    "f": ("pos", 2, -1.0),
    "i": ("rot", 0, +1.0),
    "k": ("rot", 0, -1.0),
    "j": ("rot", 1, +1.0),
    "l": ("rot", 1, -1.0),
    "u": ("rot", 2, +1.0),
    "o": ("rot", 2, -1.0),
}
GRIPPER_KEY = " "
CATCH_UP_KEY = "c"
HELP = (
    "keys: w/s +-x, a/d +-y, r/f +-z (base frame); i/k, j/l, u/o rotate +- about x, y, z; "
    "space: gripper open/close; c: target := measured TCP"
)


@dataclass(frozen=True)
class KeyboardEefConfig:
    step_m: float = 0.01  # per position key (m)
    step_rad: float = 0.05  # per rotation key (rad)
    gripper_open_m: float = 0.08
    gripper_closed_m: float = 0.0
    workspace_lo: tuple[float, float, float] | None = None  # TCP box in the base frame (m); None = no box
    workspace_hi: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if not (self.step_m > 0 and self.step_rad > 0):
            raise ValueError(
                f"KeyboardEefConfig: step_m and step_rad must be > 0, got {self.step_m}, {self.step_rad}"
            )
        if self.gripper_closed_m < 0 or self.gripper_open_m <= self.gripper_closed_m:
            raise ValueError("KeyboardEefConfig: need 0 <= gripper_closed_m < gripper_open_m")
        if (self.workspace_lo is None) != (self.workspace_hi is None):
            raise ValueError("KeyboardEefConfig: give both workspace_lo and workspace_hi, or neither")
        if self.workspace_lo is not None:
            lo, hi = np.asarray(self.workspace_lo, float), np.asarray(self.workspace_hi, float)
            if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
                raise ValueError(f"KeyboardEefConfig: workspace needs 3 lows < 3 highs, got {lo}, {hi}")


def box_around(center: np.ndarray, half_m: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(lo, hi) of a cube of half-size `half_m` centred on `center` (e.g. the TCP where teleop starts)."""
    c = np.asarray(center, float)[:3]
    return tuple((c - half_m).tolist()), tuple((c + half_m).tolist())


@dataclass
class KeyResult:
    """What one key did: `changed` (the target moved or the gripper toggled), `clipped` (stopped at the
    box), `refused` (why the target stayed, e.g. unreachable), `known` (the key has a binding)."""

    key: str
    known: bool = True
    changed: bool = False
    clipped: bool = False
    refused: str | None = None


class KeyboardEef:
    """The teleop target: starts at the arm's TCP pose and gripper width, moved by `press(key)`."""

    def __init__(
        self,
        config: KeyboardEefConfig,
        tcp: np.ndarray,
        gripper: float,
        reachable: Callable[[np.ndarray], bool] | None = None,
    ) -> None:
        self.config, self.reachable = config, reachable
        self.lo = None if config.workspace_lo is None else np.asarray(config.workspace_lo, float)
        self.hi = None if config.workspace_hi is None else np.asarray(config.workspace_hi, float)
        mid = 0.5 * (config.gripper_open_m + config.gripper_closed_m)
        self.gripper_open = bool(gripper > mid)
        self.catch_up(tcp)
        self.counts = {"keys": 0, "clipped": 0, "unreachable": 0}

    def catch_up(self, tcp: np.ndarray) -> None:
        """Target := `tcp` ([pos (3), axis-angle (3)]), e.g. the measured pose after the arm was moved otherwise."""
        tcp = np.asarray(tcp, float)
        if tcp.shape[0] < 6 or not np.all(np.isfinite(tcp[:6])):
            raise ValueError(f"KeyboardEef: TCP pose must be 6 finite numbers, got {tcp}")
        self.pos = tcp[:3].copy()
        self.rot = Rotation.from_rotvec(tcp[3:6])

    @property
    def gripper(self) -> float:
        return self.config.gripper_open_m if self.gripper_open else self.config.gripper_closed_m

    def row(self) -> np.ndarray:
        """[pos (3), axis-angle (3), gripper width]: one end-effector chunk row."""
        return np.concatenate([self.pos, self.rot.as_rotvec(), [self.gripper]])

    def _clip(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """`new` stopped at the box faces; an axis already outside may move inwards but never further out."""
        if self.lo is None:
            return new
        return np.minimum(np.maximum(new, np.minimum(self.lo, old)), np.maximum(self.hi, old))

    def press(self, key: str, measured_tcp: np.ndarray | None = None) -> KeyResult:
        """Apply one key; `measured_tcp` is needed by the catch-up key only."""
        res = KeyResult(key)
        if key == GRIPPER_KEY:
            self.gripper_open = not self.gripper_open
            res.changed = True
        elif key == CATCH_UP_KEY:
            if measured_tcp is None:
                res.refused = "no measured TCP pose yet"
            else:
                self.catch_up(measured_tcp)
                res.changed = True
        elif key in MOTION_KEYS:
            kind, axis, sign = MOTION_KEYS[key]
            pos, rot = self.pos, self.rot
            if kind == "pos":
                want = pos.copy()
                want[axis] += sign * self.config.step_m
                pos = self._clip(self.pos, want)
                res.clipped = not np.allclose(pos, want)
            else:
                rv = np.zeros(3)
                rv[axis] = sign * self.config.step_rad
                rot = Rotation.from_rotvec(rv) * self.rot  # about the base axis, through the TCP
            moved = not np.allclose(pos, self.pos) or kind == "rot"
            if moved and self.reachable is not None:
                candidate = np.concatenate([pos, rot.as_rotvec(), [self.gripper]])
                if not self.reachable(candidate):
                    res.refused = "unreachable"
            if moved and res.refused is None:
                self.pos, self.rot = pos, rot
                res.changed = True
        else:
            res.known = False
            return res
        self.counts["keys"] += 1
        self.counts["clipped"] += int(res.clipped)
        self.counts["unreachable"] += int(res.refused == "unreachable")
        return res
