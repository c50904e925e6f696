"""GELLO calibration procedure: measure a leader's per-servo offsets and signs and write its calibration file.

The file format, and how the driver turns raw angles into leader joint angles with it, is
mimic.teleop.gello_calibration (beside the driver that reads it). The offset of each servo is stored as
quarter turns plus a residual; a large residual means the leader was not held in the reference pose (or a
horn sits off the grid) and is reported.

Procedure (`mimic calibrate gello`): (1) hold the leader in the follower's home pose with the trigger
released and read raw angles; (2) move every joint a little in the follower's positive direction and
squeeze the trigger, read again: the sign of each change is that joint's sign, and the trigger's two
readings are its open/closed range. Signs can instead be given. The file is then verified by reading
the reference pose back through the driver. One JSON file per physical leader (`device_id`), LeRobot
style, at an explicit path.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mimic.teleop.gello_calibration import (
    QUARTER,
    GelloCalibration,
    GripperCalibration,
    JointCalibration,
    example_calibration,
)


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
        raise ValueError(
            f"calibration: {n} servos but {ref_raw.shape[0]} readings and {ref_pose.shape[0]} pose joints"
        )
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
    return GelloCalibration(
        device_id=device_id,
        follower=follower,
        baudrate=int(baudrate),
        joints=joints,
        gripper=gripper,
        notes=notes,
    )


# --- the procedure against a real (or emulated) bus ------------------------------------------------------
def read_raw(port: str, baudrate: int, servo_ids: tuple[int, ...], samples: int = 5) -> np.ndarray:
    """Median raw angles (rad) of `servo_ids` over a few sync reads; BusError names a silent servo."""
    from mimic.teleop import dynamixel as dx

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
    from mimic.teleop.gello import GelloConfig, GelloLeader

    leader = GelloLeader(
        GelloConfig(port=port, calibration=path, follower=cal.follower, baudrate=cal.baudrate, retries=3)
    )
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
    from mimic.robots.specs import get_spec
    from mimic.teleop.mapping import default_map

    ask = ask or (lambda text: input(f"{text} [Enter] "))
    spec = get_spec(follower)
    jmap = default_map(follower)
    ids = tuple(servo_ids) if servo_ids else tuple(range(1, jmap.leader_dof + 1))
    if len(ids) != jmap.leader_dof:
        raise ValueError(
            f"calibration: {len(ids)} servo ids given, a {follower} leader has {jmap.leader_dof} joints"
        )
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
        follower,
        ids,
        ref[:n],
        reference_pose,
        moved_raw=None if moved is None else moved[:n],
        signs=signs,
        gripper_id=gid,
        gripper_open_raw=ref[n] if gid is not None else None,
        gripper_closed_raw=moved[n] if gid is not None else None,
        device_id=device_id or f"gello-{follower}",
        baudrate=baudrate,
        snap_to_grid=snap_to_grid,
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
    say(
        f"wrote {out}: {len(ids)} joints, signs {[j.sign for j in cal.joints]}, "
        f"read-back error {math.degrees(err):.2f} deg"
    )
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
    parser.add_argument(
        "--snap", action="store_true", help="offsets on the 90-degree grid only (GELLO's way)"
    )
    parser.add_argument(
        "--tolerance-deg", type=float, default=3.0, help="max read-back error (default 3 deg)"
    )
    parser.add_argument(
        "--emulate",
        action="store_true",
        help="no hardware: calibrate an emulated leader (example assembly), moved for you",
    )


def _int_list(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--{what}: expected comma-separated integers, got {text!r}") from None


def run(args) -> int:
    from mimic.robots.specs import get_spec

    spec = get_spec(args.arm)
    ids = _int_list(args.ids, "ids")
    signs = _int_list(args.signs, "signs")
    gid = {"auto": -1, "none": None}.get(args.gripper_id.lower(), None)
    if args.gripper_id.lower() not in ("auto", "none"):
        gid = _int_list(args.gripper_id, "gripper-id")[0]
    kwargs = dict(
        follower=args.arm,
        out=args.out,
        baudrate=args.baud,
        servo_ids=tuple(ids) if ids else None,
        gripper_id=gid,
        signs=None if signs is None else np.array(signs),
        device_id=args.device_id,
        snap_to_grid=args.snap,
        tolerance_rad=math.radians(args.tolerance_deg),
    )
    if not args.emulate:
        if not args.port:
            raise ValueError("--port is required (or --emulate for an emulated leader)")
        run_procedure(args.port, **kwargs)
        return 0
    from mimic.teleop.emulated_bus import EmulatedDynamixelBus

    truth = example_calibration(args.arm, baudrate=args.baud)
    with EmulatedDynamixelBus(truth, start_pose=spec.home) as bus:
        steps = iter(
            [
                (spec.home, spec.gripper_max),
                (spec.home + 0.2, spec.gripper_min),
                (spec.home, spec.gripper_max),
            ]
        )

        def ask(text: str) -> None:  # the emulated person does what the prompt says
            q, g = next(steps)
            print(f"{text} [emulated: done]")
            bus.set_joint_targets(np.clip(q, spec.q_min, spec.q_max), g)

        run_procedure(bus.port, ask=ask, **kwargs)
    return 0
