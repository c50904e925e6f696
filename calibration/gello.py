"""GELLO calibration: per-servo offsets and signs that turn raw encoder angles into leader joint angles.

    q_leader[j] = sign[j] * (raw[j] - offset[j]) + 2*pi*k[j]

`raw` is the servo's Present Position in radians. The offset is stored as a whole number of quarter
turns plus a small residual: GELLO leaders are assembled with servo horns on a 90-degree grid, so
`offset = n * pi/2 + residual` with |residual| a few degrees of assembly tolerance. A large residual
means the leader was not held in the reference pose (or a horn sits off the grid) and is reported.

`k` is not stored: an X-series servo reports its multi-turn count from power-on, and the turn count
restarts within one revolution at every power cycle, so the same pose can read 2*pi differently after
a restart (GELLO issue #19). The driver picks `k` at connect time so each joint lands within pi of the
calibrated reference pose, which the operator starts near. The reference pose is the follower's home.

Procedure (`mimic calibrate gello`): (1) hold the leader in the follower's home pose with the trigger
released and read raw angles; (2) move every joint a little in the follower's positive direction and
squeeze the trigger, read again: the sign of each change is that joint's sign, and the trigger's two
readings are its open/closed range. Signs can instead be given. The file is then verified by reading
the reference pose back through the driver. One JSON file per physical leader (`device_id`), LeRobot
style, at an explicit path.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "mimic.gello_calibration/1"
QUARTER = math.pi / 2


@dataclass(frozen=True)
class JointCalibration:
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
        """The k per joint that puts each joint within pi of the reference pose (the issue-#19 fix), or of
        `anchor` (leader angles known a moment ago, e.g. before a reconnect) when given."""
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
            raise ValueError(f"{path}: GELLO calibration file not found (run `mimic calibrate gello`)") from None
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
            joints.append(JointCalibration(
                servo_id=need(j, "servo_id", int, where), sign=sign,
                offset_quarter_turns=need(j, "offset_quarter_turns", int, where),
                offset_residual_rad=float(need(j, "offset_residual_rad", num, where)),
                reference_rad=float(need(j, "reference_rad", num, where)),
            ))
        if not joints:
            raise ValueError(f"{source}: field joints is empty")
        g = d.get("gripper")
        gripper = None
        if g is not None:
            gripper = GripperCalibration(need(g, "servo_id", int, "gripper."),
                                         float(need(g, "open_rad", num, "gripper.")),
                                         float(need(g, "closed_rad", num, "gripper.")))
            if abs(gripper.closed_rad - gripper.open_rad) < 1e-3:
                raise ValueError(f"{source}: field gripper.closed_rad equals gripper.open_rad (no trigger travel)")
        cal = cls(
            device_id=need(d, "device_id", str, ""), follower=need(d, "follower", str, ""),
            baudrate=need(d, "baudrate", int, ""), joints=joints, gripper=gripper,
            created=str(d.get("created", "")), verified_max_error_rad=d.get("verified_max_error_rad"),
            notes=list(d.get("notes", [])),
        )
        if len(set(cal.servo_ids)) != len(cal.servo_ids):
            raise ValueError(f"{source}: servo ids {cal.servo_ids} are not unique")
        return cal


def compute_calibration(
    follower: str,
    servo_ids: tuple[int, ...],
    reference_raw: np.ndarray,
    reference_pose: np.ndarray,
    moved_raw: np.ndarray | None = None,
    signs: np.ndarray | None = None,
    gripper_id: int | None = None,
    gripper_open_raw: float | None = None,
    gripper_closed_raw: float | None = None,
    device_id: str = "gello",
    baudrate: int = 57600,
    snap_to_grid: bool = False,
    min_motion_rad: float = 0.05,
    max_residual_rad: float = 0.2,
) -> GelloCalibration:
    """Offsets and signs from the readings of the procedure in the module docstring.

    `reference_raw`: raw joint angles (rad) in the reference pose `reference_pose` (leader joint angles).
    `moved_raw`: raw joint angles after moving every joint in its positive direction (gives the signs
    unless `signs` is given). `snap_to_grid` drops the residual (GELLO's original behaviour); by default
    it is kept, since a horn a few degrees off the grid is common and the residual corrects it.
    Raises ValueError naming the servo when a sign cannot be determined.
    """
    ref_raw = np.asarray(reference_raw, float).reshape(-1)
    ref_pose = np.asarray(reference_pose, float).reshape(-1)
    n = len(servo_ids)
    if ref_raw.shape[0] != n or ref_pose.shape[0] != n:
        raise ValueError(f"calibration: {n} servos but {ref_raw.shape[0]} readings and {ref_pose.shape[0]} pose joints")
    if signs is None:
        if moved_raw is None:
            raise ValueError("calibration: give either the signs or a second (moved) pose")
        delta = np.asarray(moved_raw, float).reshape(-1) - ref_raw
        signs = np.sign(delta)
        for j, (sid, d) in enumerate(zip(servo_ids, delta, strict=True)):
            if abs(d) < min_motion_rad:
                raise ValueError(
                    f"calibration: joint {j + 1} (servo {sid}) moved {d:+.3f} rad between the two poses; move "
                    f"every joint at least {min_motion_rad} rad in its positive direction, or pass --signs"
                )
    signs = np.asarray(signs, int).reshape(-1)
    if signs.shape[0] != n or not np.all(np.isin(signs, (-1, 1))):
        raise ValueError(f"calibration: signs must be {n} values of +1/-1, got {signs.tolist()}")
    notes = []
    joints = []
    for j, sid in enumerate(servo_ids):
        offset = ref_raw[j] - signs[j] * ref_pose[j]
        quarters = int(round(offset / QUARTER))
        residual = 0.0 if snap_to_grid else float(offset - quarters * QUARTER)
        if abs(offset - quarters * QUARTER) > max_residual_rad:
            notes.append(
                f"joint {j + 1} (servo {sid}): {math.degrees(offset - quarters * QUARTER):+.1f} deg off the "
                "90-degree grid: was the leader held in the reference pose?"
            )
        joints.append(JointCalibration(sid, int(signs[j]), quarters, residual, float(ref_pose[j])))
    gripper = None
    if gripper_id is not None:
        if gripper_open_raw is None or gripper_closed_raw is None:
            raise ValueError(f"calibration: trigger servo {gripper_id} needs open and closed readings")
        if abs(gripper_closed_raw - gripper_open_raw) < 0.1:
            raise ValueError(
                f"calibration: trigger servo {gripper_id} moved only {gripper_closed_raw - gripper_open_raw:+.3f} rad; "
                "squeeze the trigger fully in the second pose"
            )
        gripper = GripperCalibration(gripper_id, float(gripper_open_raw), float(gripper_closed_raw))
    return GelloCalibration(device_id=device_id, follower=follower, baudrate=int(baudrate), joints=joints,
                            gripper=gripper, notes=notes)


def example_calibration(follower: str = "franka", seed: int = 0, baudrate: int = 57600) -> GelloCalibration:
    """A plausible assembled leader (horns on the 90-degree grid, +/-3 deg tolerance, mixed signs).

    What the emulated bus uses as its physical truth when a session has no real leader; `calibrate`
    must recover it (tests check that it does).
    """
    from robots.specs import get_spec
    from teleop.mapping import default_map

    spec = get_spec(follower)
    rng = np.random.default_rng(seed)
    ref = default_map(follower).to_leader(spec.home)
    joints = [
        JointCalibration(i + 1, int(rng.choice([-1, 1])), int(rng.integers(-4, 5)),
                         float(rng.uniform(-0.05, 0.05)), float(ref[i]))
        for i in range(spec.dof)
    ]
    gripper = GripperCalibration(spec.dof + 1, open_rad=3.40, closed_rad=2.67)  # GELLO Franka: 195 -> 153 deg
    return GelloCalibration(f"emulated-gello-{follower}", follower, baudrate, joints, gripper)


# --- the procedure against a real (or emulated) bus ------------------------------------------------------
def read_raw(port: str, baudrate: int, servo_ids: tuple[int, ...], samples: int = 5) -> np.ndarray:
    """Median raw angles (rad) of `servo_ids` over a few sync reads; BusError names a silent servo."""
    from teleop import dynamixel as dx

    bus = dx.DynamixelBus(port, baudrate)
    bus.open()
    try:
        for sid in servo_ids:
            bus.ping(sid)
        reads = []
        for _ in range(samples):
            for attempt in range(3):  # a glitch must not end a calibration the operator is holding still for
                try:
                    reads.append(bus.sync_read_positions(servo_ids)[1])
                    break
                except dx.BusError:
                    if attempt == 2:
                        raise
    finally:
        bus.close()
    return np.median(np.array(reads, float), axis=0) * dx.RAD_PER_TICK


def verify_calibration(cal: GelloCalibration, port: str, path: str | Path) -> float:
    """Max |leader reading - reference pose| (rad) through the real driver, with the leader in the reference pose."""
    from teleop.gello import GelloConfig, GelloLeader

    leader = GelloLeader(GelloConfig(port=port, calibration=path, follower=cal.follower, baudrate=cal.baudrate,
                                     retries=3))
    leader.connect()
    try:
        _, q, _ = leader.read_leader()
    finally:
        leader.disconnect()
    return float(np.max(np.abs(q - cal.reference)))


def run_procedure(
    port: str,
    follower: str,
    out: str | Path,
    baudrate: int = 57600,
    servo_ids: tuple[int, ...] | None = None,
    gripper_id: int | None = -1,
    signs: np.ndarray | None = None,
    device_id: str | None = None,
    snap_to_grid: bool = False,
    tolerance_rad: float = 0.05,
    ask=None,
    say=print,
) -> GelloCalibration:
    """The interactive calibration (module docstring); writes `out` only once the read-back verifies.

    `ask(text)` blocks until the operator has done what `text` says (default: press Enter). Servo ids
    default to 1..dof and the trigger to dof + 1 (GELLO's wiring); `gripper_id=None` means no trigger.
    """
    from robots.specs import get_spec
    from teleop.mapping import default_map

    ask = ask or (lambda text: input(f"{text} [Enter] "))
    spec = get_spec(follower)
    jmap = default_map(follower)
    ids = tuple(servo_ids) if servo_ids else tuple(range(1, jmap.leader_dof + 1))
    if len(ids) != jmap.leader_dof:
        raise ValueError(f"calibration: {len(ids)} servo ids given, a {follower} leader has {jmap.leader_dof} joints")
    gid = (jmap.leader_dof + 1) if gripper_id == -1 else gripper_id
    all_ids = ids + ((gid,) if gid is not None else ())
    reference_pose = jmap.to_leader(spec.home)
    pose_text = ", ".join(f"{math.degrees(a):.0f}" for a in spec.home)
    read_raw(port, baudrate, all_ids, samples=1)  # every servo answers before the operator is asked anything
    ask(f"1/3 Hold the leader in the {follower} home pose ({pose_text} deg), trigger released")
    ref = read_raw(port, baudrate, all_ids)
    moved = None
    if signs is None or gid is not None:
        what = "move every joint 10-20 deg in the follower's positive direction and " if signs is None else ""
        ask(f"2/3 Keep it near home, {what}squeeze the trigger fully")
        moved = read_raw(port, baudrate, all_ids)
    n = len(ids)
    cal = compute_calibration(
        follower, ids, ref[:n], reference_pose, moved_raw=None if moved is None else moved[:n], signs=signs,
        gripper_id=gid, gripper_open_raw=ref[n] if gid is not None else None,
        gripper_closed_raw=moved[n] if gid is not None else None,
        device_id=device_id or f"gello-{follower}", baudrate=baudrate, snap_to_grid=snap_to_grid,
    )
    for note in cal.notes:
        say(f"note: {note}")
    ask("3/3 Put the leader back in the home pose, trigger released (verification)")
    out = Path(out)
    tmp = out.with_name(out.name + ".unverified")
    cal.save(tmp)
    try:
        err = verify_calibration(cal, port, tmp)
    finally:
        tmp.unlink(missing_ok=True)
    if err > tolerance_rad:
        raise ValueError(
            f"calibration: read-back differs from the home pose by {math.degrees(err):.1f} deg "
            f"(> {math.degrees(tolerance_rad):.1f}); was the leader back in the home pose? {out} not written"
        )
    cal.verified_max_error_rad = err
    cal.save(out)
    say(f"wrote {out}: {len(ids)} joints, signs {[j.sign for j in cal.joints]}, "
        f"read-back error {math.degrees(err):.2f} deg")
    return cal


# --- `mimic calibrate gello` (calibration/cli.py) ---------------------------------------------------------
def configure(parser) -> None:
    parser.add_argument("--arm", required=True, help="follower arm: franka, ur5e or xarm7")
    parser.add_argument("--out", required=True, help="calibration JSON to write (one per physical leader)")
    parser.add_argument("--port", help="serial port of the leader's U2D2 / USB adapter, e.g. /dev/ttyUSB0")
    parser.add_argument("--baud", type=int, default=57600, help="bus baud rate (default 57600, GELLO's)")
    parser.add_argument("--ids", help="joint servo ids, comma separated (default 1..dof)")
    parser.add_argument("--gripper-id", default="auto", help="trigger servo id, 'none', or 'auto' (dof + 1)")
    parser.add_argument("--signs", help="joint signs, e.g. 1,-1,1,1,1,-1,1 (default: from the second pose)")
    parser.add_argument("--device-id", help="name of this leader, stored in the file (default gello-<arm>)")
    parser.add_argument("--snap", action="store_true", help="offsets on the 90-degree grid only (GELLO's way)")
    parser.add_argument("--tolerance-deg", type=float, default=3.0, help="max read-back error (default 3 deg)")
    parser.add_argument("--emulate", action="store_true",
                        help="no hardware: calibrate an emulated leader (example assembly), moved for you")


def _int_list(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--{what}: expected comma-separated integers, got {text!r}") from None


def run(args) -> int:
    from robots.specs import get_spec

    spec = get_spec(args.arm)
    ids = _int_list(args.ids, "ids")
    signs = _int_list(args.signs, "signs")
    gid = {"auto": -1, "none": None}.get(args.gripper_id.lower(), None)
    if args.gripper_id.lower() not in ("auto", "none"):
        gid = _int_list(args.gripper_id, "gripper-id")[0]
    kwargs = dict(follower=args.arm, out=args.out, baudrate=args.baud, servo_ids=tuple(ids) if ids else None,
                  gripper_id=gid, signs=None if signs is None else np.array(signs), device_id=args.device_id,
                  snap_to_grid=args.snap, tolerance_rad=math.radians(args.tolerance_deg))
    if not args.emulate:
        if not args.port:
            raise ValueError("--port is required (or --emulate for an emulated leader)")
        run_procedure(args.port, **kwargs)
        return 0
    from teleop.emulated_bus import EmulatedDynamixelBus

    truth = example_calibration(args.arm, baudrate=args.baud)
    with EmulatedDynamixelBus(truth, start_pose=spec.home) as bus:
        steps = iter([(spec.home, spec.gripper_max), (spec.home + 0.2, spec.gripper_min),
                      (spec.home, spec.gripper_max)])

        def ask(text: str) -> None:  # the emulated person does what the prompt says
            q, g = next(steps)
            print(f"{text} [emulated: done]")
            bus.set_joint_targets(np.clip(q, spec.q_min, spec.q_max), g)

        run_procedure(bus.port, ask=ask, **kwargs)
    return 0
