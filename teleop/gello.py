"""GELLO leader arm: Dynamixel servos read through the ROBOTIS dynamixel-sdk, mapped to follower joints.

    leader = GelloLeader(GelloConfig(port="/dev/ttyUSB0", calibration="gello_franka.json", follower="franka"))
    leader.connect()
    r = leader.read()        # LeaderReading(t, q (follower joints, rad, clipped to limits), gripper (m))

One GroupSyncRead of Present Position per `read()` covers every joint servo and the trigger, so the rate
is whatever the bus allows: with 8 servos ~37 reads/s at 57,600 baud (41 by wire time), ~55 with
`fast_sync_read` (61), and ~440 at 1 Mbaud on the emulated bus of a shared machine (700 by wire time);
see bench/bench_teleop.py. At connect the servos' Return Delay Time is set to 0 so they answer back to
back (x1.17 at 57,600 baud, x3 at 1 Mbaud over the 500 us factory default).

Unwrapping (GELLO issue #19): servos restart their turn count at power-on, so a joint can read 2*pi off
between sessions. At connect each joint is put within pi of the calibration's reference pose (the
follower's home, where the operator starts); during a session a jump by a whole turn between two
readings (a servo brown-out) is unwrapped, since a hand cannot turn a joint that far in a few ms, and a
reconnect of the same GelloLeader within `reanchor_s` unwraps near the last reading instead of the
reference pose (a UR joint may legitimately sit more than pi from home when a cable is replugged).

Failures (timeout, CRC error, missing servo, unplugged adapter, implausible jump) raise `LeaderError`
naming the servo; the caller holds the follower (mimic.teleop.leader). One retry absorbs a single glitch.

Servo alarms are not glitches: a status packet with the hardware-alert bit (overheating, input voltage,
encoder, electrical shock, overload) raises `LeaderError` naming the port, the servo and its decoded
Hardware Error Status, and latches. Every later `read()` raises the same error, so the follower holds,
until the operator calls `clear_alarm()` (which reboots the servos in alarm, the only way a Dynamixel
leaves it, and checks register 70 of every servo); a servo that recovers by itself (a brown-out restart
clears its alarm) does not end the hold.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mimic.robots.specs import get_spec
from mimic.teleop import dynamixel as dx
from mimic.teleop.dynamixel import BusError, DynamixelBus, ServoAlarm
from mimic.teleop.gello_calibration import GelloCalibration
from mimic.teleop.leader import Leader, LeaderError, LeaderReading
from mimic.teleop.mapping import clip_to_limits, default_map, trigger_to_width

__all__ = ["GelloConfig", "GelloLeader", "LeaderError", "LeaderReading"]

log = logging.getLogger(__name__)


@dataclass
class GelloConfig:
    port: str
    calibration: str | Path
    follower: str = "franka"
    baudrate: int | None = None  # None: the calibration file's
    retries: int = 1  # extra sync reads after a failed one before LeaderError
    max_joint_speed_rad_s: float = 30.0  # faster than any hand: a bigger step is a bad reading, not motion
    jump_slack_rad: float = 0.2  # added to speed * dt: timing jitter between servo sampling and the stamp
    return_delay_us: float | None = 0.0  # written at connect; None leaves the servos' setting alone
    fast_sync_read: bool = False  # one status packet for all servos (X-series firmware 46+): ~1.5x the rate
    # status timeout = wire time + 2 * latency_timer_ms + 2 ms. None: 16 ms (the FTDI default the SDK assumes)
    # for a serial adapter, 40 ms for a pty (an emulated bus is software: the scheduler can hold it back);
    # 1-2 ms with a tuned FTDI adapter finds faults sooner
    latency_timer_ms: float | None = None
    reanchor_s: float = 10.0  # a reconnect within this long of the last reading unwraps near that reading


class GelloLeader(Leader):
    def __init__(self, config: GelloConfig) -> None:
        self.config = config
        self.follower = config.follower
        get_spec(config.follower)  # unknown arm -> ValueError now, not at connect
        self.map = default_map(config.follower)
        self.calibration: GelloCalibration | None = None
        self.bus: DynamixelBus | None = None
        self._turns: np.ndarray | None = None
        self._last: tuple[float, np.ndarray] | None = None
        self._last_good: tuple[float, np.ndarray] | None = None  # survives disconnect(), for a reconnect
        self.reads = 0
        self.failures = 0
        self.unwraps = 0
        self._read_lock = threading.Lock()  # read() from several threads: one unwrap state, updated in order
        self.alarm: LeaderError | None = (
            None  # a latched servo alarm; survives disconnect(), ended by clear_alarm()
        )

    @property
    def is_connected(self) -> bool:
        return self.bus is not None and self.bus.is_open

    # --- connect -----------------------------------------------------------------------------------
    def connect(self) -> None:
        cfg = self.config
        try:
            cal = GelloCalibration.load(cfg.calibration)
        except ValueError as e:
            raise LeaderError(str(e)) from None
        spec = self.spec
        if cal.follower != cfg.follower:
            raise LeaderError(
                f"{cfg.calibration}: calibrated for follower {cal.follower!r}, not {cfg.follower!r}"
            )
        if len(cal.joints) != self.map.leader_dof:
            raise LeaderError(
                f"{cfg.calibration}: {len(cal.joints)} joint servos, a {cfg.follower} leader has {self.map.leader_dof}"
            )
        self.calibration = cal
        baud = int(cfg.baudrate or cal.baudrate)
        latency_ms = cfg.latency_timer_ms
        if latency_ms is None:
            latency_ms = 40.0 if os.path.realpath(cfg.port).startswith("/dev/pts/") else 16.0
        bus = DynamixelBus(cfg.port, baud, latency_timer_ms=latency_ms)
        try:
            bus.open()
            for sid in cal.servo_ids:
                bus.ping(sid)
            if cfg.return_delay_us is not None:
                self._set_return_delay(bus, cal.servo_ids, cfg.return_delay_us)
        except ServoAlarm as e:
            self.bus = bus  # kept open: clear_alarm() reboots the servo through it
            raise self._latch_alarm(e) from None
        except BusError as e:
            bus.close()
            raise LeaderError(f"GELLO ({cal.device_id}): {e}", e.servo_id) from None
        self.bus = bus
        try:
            t, raw = self._sync_read()
        except LeaderError:
            if self.alarm is None:  # in alarm the bus stays open for clear_alarm()
                self.disconnect()
            raise
        n = len(cal.joints)
        # reconnecting soon after a good reading (a replugged cable, a servo brown-out): that pose is a far
        # better anchor for the turn counts than the reference pose, which the arm may be far from by now
        recent = self._last_good is not None and t - self._last_good[0] < cfg.reanchor_s
        self._turns = cal.turns_near_reference(raw[:n], self._last_good[1] if recent else None)
        q = cal.leader_angles(raw[:n], self._turns)
        self._last = (t, q)
        far = np.abs(q - cal.reference) > math.radians(60)
        if recent:
            far[:] = False
        log.info(
            "GELLO %s on %s at %d baud (follower %s, %d servos)",
            cal.device_id,
            cfg.port,
            baud,
            cfg.follower,
            len(cal.servo_ids),
        )
        if far.any():
            names = ", ".join(spec.joint_names[i] for i in np.flatnonzero(far))
            log.warning(
                "GELLO %s: %s more than 60 deg from the reference pose at connect; turns were chosen "
                "nearest to it (start the leader near the follower's home)",
                cal.device_id,
                names,
            )

    @staticmethod
    def _set_return_delay(bus: DynamixelBus, ids: tuple[int, ...], delay_us: float) -> None:
        value = int(round(delay_us / 2))
        for sid in ids:
            if bus.read(sid, dx.ADDR_RETURN_DELAY_TIME) == value:
                continue
            if bus.read(sid, dx.ADDR_TORQUE_ENABLE):
                log.info("servo %d: torque on, Return Delay Time (EEPROM) left as it is", sid)
                continue
            bus.write(sid, dx.ADDR_RETURN_DELAY_TIME, value)

    def disconnect(self) -> None:
        if self.bus is not None:
            self.bus.close()
        self.bus = None
        self._last = None

    # --- read --------------------------------------------------------------------------------------
    def _sync_read(self) -> tuple[float, np.ndarray]:
        """(latch time, raw angles in rad for every servo), retried; LeaderError naming the servo."""
        if self.bus is None or self.calibration is None:
            raise LeaderError(f"GELLO on {self.config.port}: read() before connect()")
        if self.alarm is not None:
            raise self.alarm
        cal = self.calibration
        error: BusError | None = None
        for _ in range(1 + max(0, self.config.retries)):
            try:
                t, ticks = self.bus.sync_read_positions(cal.servo_ids, fast=self.config.fast_sync_read)
                return t, ticks * dx.RAD_PER_TICK
            except ServoAlarm as e:
                raise self._latch_alarm(e) from None
            except BusError as e:
                error = e
                self.failures += 1
                if e.servo_id is None:
                    break  # the port itself failed: retrying cannot help
        raise LeaderError(f"GELLO ({cal.device_id}): {error}", error.servo_id)

    def _latch_alarm(self, e: ServoAlarm) -> LeaderError:
        device = self.calibration.device_id if self.calibration is not None else self.config.port
        self.failures += 1
        self.alarm = LeaderError(
            f"GELLO ({device}): {e}; the follower holds until the operator clears the alarm", e.servo_id
        )
        log.error("%s", self.alarm)
        return self.alarm

    def clear_alarm(self, restart_s: float = 1.0) -> None:
        """The operator's acknowledgement: reboot the servo in alarm and resume if no servo reports one.

        Rebooting restarts the servo's turn count within one revolution, which `read()` unwraps as it
        does after a brown-out. Raises LeaderError (and stays latched) if a servo is still in alarm."""
        if self.alarm is None:
            return
        if self.bus is None or self.calibration is None:
            raise LeaderError(f"GELLO on {self.config.port}: clear_alarm() needs a connected bus")
        cal, bus = self.calibration, self.bus
        try:
            if self.alarm.servo_id is not None:
                bus.reboot(self.alarm.servo_id)
                deadline = time.monotonic() + restart_s
                while True:  # the servo answers again once it has restarted
                    try:
                        bus.ping(self.alarm.servo_id)
                        break
                    except ServoAlarm:
                        break  # back, and still in alarm: the status read below says why
                    except BusError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.02)
            status = bus.hardware_status(cal.servo_ids)
        except BusError as e:
            raise LeaderError(f"GELLO ({cal.device_id}): clearing the alarm: {e}", e.servo_id) from None
        still = {sid: bits for sid, bits in status.items() if bits}
        if still:
            sid, bits = next(iter(still.items()))
            self.alarm = LeaderError(
                f"GELLO ({cal.device_id}): {self.config.port}: servo {sid}: still in alarm after a reboot: Hardware Error Status 0x{bits:02x} "
                f"({dx.decode_hardware_error(bits)}); the follower holds",
                sid,
            )
            raise self.alarm
        log.info("GELLO %s: alarm cleared by the operator", cal.device_id)
        self.alarm = None
        if self._last is None:  # the alarm came at connect: finish connecting now
            self.disconnect()
            self.connect()

    def read_leader(self) -> tuple[float, np.ndarray, float]:
        """(capture time, leader joint angles unwrapped, trigger closing fraction): before the follower map."""
        with self._read_lock:
            return self._read_leader()

    def _read_leader(self) -> tuple[float, np.ndarray, float]:
        cal = self.calibration
        t, raw = self._sync_read()
        n = len(cal.joints)
        q = cal.leader_angles(raw[:n], self._turns)
        t_last, q_last = self._last
        allowed = self.config.max_joint_speed_rad_s * max(t - t_last, 0.0) + self.config.jump_slack_rad
        step = q - q_last
        wraps = np.round(step / (2 * math.pi))
        # a whole-turn jump that no hand could make, which is a small step once unwrapped, is a servo restart
        restarted = (wraps != 0) & (np.abs(step) > allowed) & (np.abs(step - 2 * math.pi * wraps) <= allowed)
        if restarted.any():
            wraps = np.where(restarted, wraps, 0.0)
            self._turns = self._turns - wraps
            q = q - 2 * math.pi * wraps
            self.unwraps += 1
            log.warning(
                "GELLO %s: servo(s) %s restarted (turn count jumped); unwrapped",
                cal.device_id,
                [cal.joints[i].servo_id for i in np.flatnonzero(restarted)],
            )
        step = np.abs(q - q_last)
        if np.any(step > allowed):
            i = int(np.argmax(step - allowed))
            self.failures += 1
            raise LeaderError(
                f"GELLO ({cal.device_id}): servo {cal.joints[i].servo_id}: position jumped {step[i]:.3f} rad in "
                f"{(t - t_last) * 1e3:.1f} ms (more than {self.config.max_joint_speed_rad_s} rad/s): bad reading",
                cal.joints[i].servo_id,
            )
        self._last = self._last_good = (t, q)
        fraction = cal.gripper.fraction(raw[n]) if cal.gripper is not None else 0.0
        return t, q, fraction

    def read(self) -> LeaderReading:
        """One reading in the follower's joint space, clipped to its limits; LeaderError on any fault."""
        t, q_leader, fraction = self.read_leader()
        spec = self.spec
        q = clip_to_limits(self.map.to_follower(q_leader), spec)
        self.reads += 1
        return LeaderReading(t=t, q=q, gripper=trigger_to_width(fraction, spec))


def measure_read_rate(leader: GelloLeader, seconds: float = 1.0) -> float:
    """Readings per second over `seconds` of back-to-back reads (for benchmarks and the CLI)."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        leader.read()
        n += 1
    return n / (time.perf_counter() - t0)
