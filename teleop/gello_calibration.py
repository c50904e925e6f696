"""GELLO calibration file: per-servo offsets and signs that turn raw encoder angles into leader joint angles.

    q_leader[j] = sign[j] * (raw[j] - offset[j]) + 2*pi*k[j]

`raw` is the servo's Present Position in radians. The offset is stored as a whole number of quarter
turns plus a small residual: GELLO leaders are assembled with servo horns on a 90-degree grid, so
`offset = n * pi/2 + residual` with |residual| a few degrees of assembly tolerance.

`k` is not stored: an X-series servo reports its multi-turn count from power-on, and the turn count
restarts within one revolution at every power cycle, so the same pose can read 2*pi differently after
a restart (a known problem of the original GELLO driver). The driver picks `k` at connect time so each
joint lands within pi of the calibrated reference pose, which the operator starts near. The reference
pose is the follower's home.

The format lives beside the driver (mimic.teleop.gello) and the emulated bus that read it, so teleop
never depends on the calibration procedure that writes it (mimic.calibration.gello, `mimic calibrate
gello`). One JSON file per physical leader (`device_id`), LeRobot style, at an explicit path.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mimic.robots.specs import get_spec
from mimic.teleop.mapping import default_map

FORMAT = "mimic.gello_calibration/1"
QUARTER = math.pi / 2


@dataclass(frozen=True)
class JointCalibration:
    """One joint servo: its sign and offset (quarter turns + residual) and the reference pose angle that
    anchors the turn count at connect."""

    servo_id: int
    sign: int  # +1 or -1: leader joint angle grows with the raw angle, or against it
    offset_quarter_turns: int
    offset_residual_rad: float
    reference_rad: float  # leader joint angle in the reference pose (the follower's home)

    @property
    def offset_rad(self) -> float:
        return self.offset_quarter_turns * QUARTER + self.offset_residual_rad


@dataclass(frozen=True)
class GripperCalibration:
    """The trigger servo: raw angles released and squeezed, mapped linearly to a closing fraction."""

    servo_id: int
    open_rad: float  # raw angle with the trigger released
    closed_rad: float  # raw angle with the trigger squeezed fully

    def fraction(self, raw_rad: float) -> float:
        """Closing fraction in [0, 1] for a raw trigger angle (unwrapped to the nearest turn of `open_rad`)."""
        raw = raw_rad - 2 * math.pi * round((raw_rad - self.open_rad) / (2 * math.pi))
        return float(np.clip((raw - self.open_rad) / (self.closed_rad - self.open_rad), 0.0, 1.0))

    def raw_for(self, fraction: float) -> float:
        return self.open_rad + float(fraction) * (self.closed_rad - self.open_rad)


@dataclass
class GelloCalibration:
    """One physical leader's calibration file: the follower it was calibrated for, its bus baud rate, the
    joint servos in leader order and the optional trigger; validated on load so a bad file names its field."""

    device_id: str
    follower: str
    baudrate: int
    joints: list[JointCalibration]
    gripper: GripperCalibration | None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    verified_max_error_rad: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def servo_ids(self) -> tuple[int, ...]:
        """Joint servos then the trigger servo: the order of one GroupSyncRead."""
        ids = tuple(j.servo_id for j in self.joints)
        return ids + ((self.gripper.servo_id,) if self.gripper else ())

    @property
    def signs(self) -> np.ndarray:
        return np.array([j.sign for j in self.joints], float)

    @property
    def offsets(self) -> np.ndarray:
        return np.array([j.offset_rad for j in self.joints], float)

    @property
    def reference(self) -> np.ndarray:
        return np.array([j.reference_rad for j in self.joints], float)

    def leader_angles(self, raw_rad: np.ndarray, turns: np.ndarray | None = None) -> np.ndarray:
        """Leader joint angles from raw joint angles, with `turns` (k above) added, 0 when None."""
        q = self.signs * (np.asarray(raw_rad, float) - self.offsets)
        return q if turns is None else q + 2 * math.pi * np.asarray(turns, float)

    def turns_near_reference(self, raw_rad: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
        """The k per joint that puts each joint within pi of the reference pose (the turn-count fix in the
        module docstring), or of `anchor` (leader angles known a moment ago, e.g. before a reconnect)."""
        target = self.reference if anchor is None else np.asarray(anchor, float)
        return np.round((target - self.leader_angles(raw_rad)) / (2 * math.pi))

    def raw_for(self, q_leader: np.ndarray) -> np.ndarray:
        """Raw angles (k = 0) at which a leader reads `q_leader`: what the emulated bus needs."""
        return self.offsets + self.signs * np.asarray(q_leader, float)

    # --- file -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d = {"format": FORMAT, **d}
        for j, jc in zip(d["joints"], self.joints, strict=True):
            j["offset_rad"] = jc.offset_rad
        return d

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> GelloCalibration:
        """Read and validate a calibration file; ValueError names the file and the bad field."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(
                f"{path}: GELLO calibration file not found (run `mimic calibrate gello`)"
            ) from None
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a GELLO calibration file ({e})") from None
        return cls.from_dict(d, str(path))

    @classmethod
    def from_dict(cls, d: dict, source: str = "calibration") -> GelloCalibration:
        def need(obj: dict, key: str, kind: type | tuple[type, ...], where: str):
            if not isinstance(obj, dict) or key not in obj:
                raise ValueError(f"{source}: missing field {where}{key}")
            value = obj[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{source}: field {where}{key} has the wrong type ({type(value).__name__})")
            return value

        if d.get("format") != FORMAT:
            raise ValueError(f"{source}: field format is {d.get('format')!r}, expected {FORMAT!r}")
        num = (int, float)
        joints = []
        for i, j in enumerate(need(d, "joints", list, "")):
            where = f"joints[{i}]."
            sign = need(j, "sign", int, where)
            if sign not in (-1, 1):
                raise ValueError(f"{source}: field {where}sign must be +1 or -1, got {sign}")
            joints.append(
                JointCalibration(
                    servo_id=need(j, "servo_id", int, where),
                    sign=sign,
                    offset_quarter_turns=need(j, "offset_quarter_turns", int, where),
                    offset_residual_rad=float(need(j, "offset_residual_rad", num, where)),
                    reference_rad=float(need(j, "reference_rad", num, where)),
                )
            )
        if not joints:
            raise ValueError(f"{source}: field joints is empty")
        g = d.get("gripper")
        gripper = None
        if g is not None:
            gripper = GripperCalibration(
                need(g, "servo_id", int, "gripper."),
                float(need(g, "open_rad", num, "gripper.")),
                float(need(g, "closed_rad", num, "gripper.")),
            )
            if abs(gripper.closed_rad - gripper.open_rad) < 1e-3:
                raise ValueError(
                    f"{source}: field gripper.closed_rad equals gripper.open_rad (no trigger travel)"
                )
        cal = cls(
            device_id=need(d, "device_id", str, ""),
            follower=need(d, "follower", str, ""),
            baudrate=need(d, "baudrate", int, ""),
            joints=joints,
            gripper=gripper,
            created=str(d.get("created", "")),
            verified_max_error_rad=d.get("verified_max_error_rad"),
            notes=list(d.get("notes", [])),
        )
        if len(set(cal.servo_ids)) != len(cal.servo_ids):
            raise ValueError(f"{source}: servo ids {cal.servo_ids} are not unique")
        return cal


def example_calibration(follower: str = "franka", seed: int = 0, baudrate: int = 57600) -> GelloCalibration:
    """A plausible assembled leader (horns on the 90-degree grid, +/-3 deg tolerance, mixed signs).

    What the emulated bus uses as its physical truth when a session has no real leader; the calibration
    procedure (mimic.calibration.gello) must recover it (tests check that it does).
    """
    spec = get_spec(follower)
    rng = np.random.default_rng(seed)
    ref = default_map(follower).to_leader(spec.home)
    joints = [
        JointCalibration(
            i + 1,
            int(rng.choice([-1, 1])),
            int(rng.integers(-4, 5)),
            float(rng.uniform(-0.05, 0.05)),
            float(ref[i]),
        )
        for i in range(spec.dof)
    ]
    gripper = GripperCalibration(spec.dof + 1, open_rad=3.40, closed_rad=2.67)  # GELLO Franka: 195 -> 153 deg
    return GelloCalibration(f"emulated-gello-{follower}", follower, baudrate, joints, gripper)
