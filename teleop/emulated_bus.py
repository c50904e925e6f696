"""An emulated Dynamixel Protocol 2.0 bus on a pty: a GELLO leader without the hardware.

    bus = EmulatedDynamixelBus(calibration)       # the servos of one leader; bus.port = "/dev/pts/N"
    bus.set_joint_targets(q_follower, gripper)     # the "person" moves the leader there
    leader = GelloLeader(GelloConfig(port=bus.port, calibration=path, follower="franka"))

The real dynamixel-sdk opens `bus.port` like /dev/ttyUSB0 and talks the real wire protocol to a service
thread: CRC-16, byte stuffing, PING, READ, WRITE, REG_WRITE/ACTION, REBOOT, SYNC_READ, SYNC_WRITE,
FAST_SYNC_READ, BULK_READ, BULK_WRITE; an X-series control table per servo; status packets with error
codes (CRC, access, instruction). Baud emulation delays each status packet by the time its bytes and
the servo's Return Delay Time take on a real bus, and servos ignore a host at another baud rate.

Physics of an X-series servo that GELLO depends on: Present Position counts turns from power-on, and at
power-on it restarts within one revolution [0, 4096). `power_cycle()` reproduces that, so the same pose
can read 2*pi differently after a restart (GELLO issue #19).

Faults per servo (`inject`): "silence" (stops answering), "corrupt" (status packets with a bad CRC),
"missing" (absent from the bus, PING included); for N packets or until cleared. `disconnect()` is the
USB cable pulled: the pty closes and the host's next read fails. `alarm(servo_id, bits)` is a servo in
alarm (overheating, input voltage, ...): its Hardware Error Status (register 70) holds the bits and every
status packet it sends (PING, READ, WRITE, sync, fast sync and bulk read replies) carries the alert bit
0x80 until REBOOT or a power cycle clears RAM, as on an X-series servo (`persist=True`: the cause is still
there, so the alarm comes back at once after a reboot).

The servos' angles come from the calibration the bus is built with (its physical truth): a GelloLeader
using the same calibration reads back exactly what `set_joint_targets` set.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mimic.robots.specs import get_spec
from mimic.teleop import dynamixel as dx
from mimic.teleop.gello_calibration import GelloCalibration, example_calibration
from mimic.teleop.mapping import default_map, width_to_trigger

log = logging.getLogger(__name__)

TABLE_SIZE = 148  # X series: up to Backup Ready (147)
_READ_ONLY = set(range(0, 7)) | {70} | set(range(120, 148))
FAULTS = ("silence", "corrupt", "missing")
PARTIAL_TIMEOUT_S = 0.02  # an incomplete packet older than this is line noise
_TERMIOS_BAUD = {getattr(termios, f"B{b}"): b for b in dx.BAUD_CODES.values() if hasattr(termios, f"B{b}")}


@dataclass
class EmulatedServo:
    servo_id: int
    model: int
    baudrate: int
    angle_rad: float = 0.0  # physical encoder angle, continuous (the person's hand sets it)
    turn_base_ticks: int = 0  # subtracted from the encoder count; chosen at power-on
    table: bytearray = field(default_factory=lambda: bytearray(TABLE_SIZE))
    fault: str | None = None
    fault_left: int | None = None  # packets the fault still affects; None = until cleared
    alarm_cause: int = 0  # Hardware Error Status bits whose cause outlives a reboot (an overheated motor)
    registered: tuple[int, bytes] | None = None  # REG_WRITE pending ACTION

    def __post_init__(self) -> None:
        self.reset_table()
        self.power_on()

    def reset_table(self) -> None:
        t = self.table
        t[:] = bytes(TABLE_SIZE)
        self.put(dx.ADDR_MODEL_NUMBER, self.model)
        self.put(dx.ADDR_FIRMWARE_VERSION, 52)
        self.put(dx.ADDR_ID, self.servo_id)
        self.put(dx.ADDR_BAUD_RATE, {v: k for k, v in dx.BAUD_CODES.items()}[self.baudrate])
        self.put(dx.ADDR_RETURN_DELAY_TIME, 250)
        self.put(dx.ADDR_OPERATING_MODE, 3)
        t[13] = 2  # protocol type
        self.put((48, 4), 4095)  # max position limit
        self.put(dx.ADDR_STATUS_RETURN_LEVEL, 2)

    def power_on(self) -> None:
        """The turn count restarts within one revolution, and RAM (address >= 64) returns to defaults."""
        ticks = int(math.floor(self.angle_rad / dx.RAD_PER_TICK))
        self.turn_base_ticks = (ticks // dx.TICKS_PER_REV) * dx.TICKS_PER_REV
        self.table[dx.EEPROM_END :] = bytes(TABLE_SIZE - dx.EEPROM_END)
        self.put(dx.ADDR_STATUS_RETURN_LEVEL, 2)
        self.put(dx.ADDR_HARDWARE_ERROR_STATUS, self.alarm_cause)
        self.registered = None

    def put(self, address: tuple[int, int], value: int) -> None:
        addr, size = address
        self.table[addr : addr + size] = int(value).to_bytes(size, "little", signed=value < 0)

    def get(self, address: tuple[int, int]) -> int:
        addr, size = address
        return int.from_bytes(self.table[addr : addr + size], "little")

    def refresh(self) -> None:
        """Present Position (+ Homing Offset) from the physical angle."""
        homing = int.from_bytes(self.table[20:24], "little", signed=True)
        ticks = int(round(self.angle_rad / dx.RAD_PER_TICK)) - self.turn_base_ticks + homing
        self.put(dx.ADDR_PRESENT_POSITION, ticks)

    @property
    def error_bits(self) -> int:
        """The alert bit every status packet carries while register 70 is non-zero."""
        return dx.ERRBIT_ALERT if self.get(dx.ADDR_HARDWARE_ERROR_STATUS) else 0

    def status(self, error: int = 0, params: bytes = b"") -> bytes:
        return dx.status_packet(self.servo_id, error | self.error_bits, params)

    @property
    def return_delay_s(self) -> float:
        return self.get(dx.ADDR_RETURN_DELAY_TIME) * 2e-6

    def take_fault(self) -> str | None:
        """The fault affecting the next packet (counting it down)."""
        if self.fault is None:
            return None
        fault = self.fault
        if self.fault_left is not None:
            self.fault_left -= 1
            if self.fault_left <= 0:
                self.fault, self.fault_left = None, None
        return fault


class EmulatedDynamixelBus:
    """Servos of one GELLO leader on a pty; see the module docstring. Use as a context manager or `close()`."""

    def __init__(
        self,
        calibration: GelloCalibration | str | Path | None = None,
        follower: str = "franka",
        baudrate: int | None = None,
        emulate_baud: bool = True,
        return_delay_us: float = 500.0,
        start_pose: np.ndarray | None = None,
    ) -> None:
        if calibration is None:
            calibration = example_calibration(follower)
        elif not isinstance(calibration, GelloCalibration):
            calibration = GelloCalibration.load(calibration)
        self.calibration = calibration
        self.follower = calibration.follower
        self.spec = get_spec(self.follower)
        self.map = default_map(self.follower)
        self.baudrate = int(baudrate or calibration.baudrate)
        if self.baudrate not in dx.BAUD_CODES.values():
            raise ValueError(f"emulated bus: baud rate {self.baudrate} is not one an X-series servo supports")
        self.emulate_baud = emulate_baud
        self.byte_time_s = 10.0 / self.baudrate
        self._lock = threading.Lock()
        self._script: tuple[Callable[[float], tuple[np.ndarray, float]], float] | None = None
        self.servos: dict[int, EmulatedServo] = {}
        ids = calibration.servo_ids
        for sid in ids:
            model = (
                dx.MODEL_XL330_M077
                if calibration.gripper and sid == calibration.gripper.servo_id
                else dx.MODEL_XL330_M288
            )
            servo = EmulatedServo(sid, model, self.baudrate)
            servo.put(dx.ADDR_RETURN_DELAY_TIME, int(round(return_delay_us / 2)))
            self.servos[sid] = servo
        self._set_physical(self.spec.home if start_pose is None else start_pose, self.spec.gripper_max)
        for servo in self.servos.values():
            servo.power_on()  # the leader was switched on in its start pose
        self.packets = 0
        self.crc_errors = 0
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"dxl-bus-{self.port}", daemon=True)
        self._thread.start()

    # --- the person holding the leader ----------------------------------------------------------
    def set_joint_targets(self, q_follower: np.ndarray, gripper: float) -> None:
        """Move the leader so that a GelloLeader with this calibration reads `q_follower` and `gripper` (m)."""
        with self._lock:
            self._script = None
            self._set_physical(q_follower, gripper)

    def follow(self, trajectory: Callable[[float], tuple[np.ndarray, float]]) -> None:
        """Move along `trajectory(t_since_now) -> (q_follower, gripper)`, evaluated whenever a servo is read."""
        with self._lock:
            self._script = (trajectory, time.time())

    def set_raw_angles(self, raw_rad: dict[int, float]) -> None:
        """Set servos' physical encoder angles directly (calibration tests move 'an uncalibrated leader')."""
        with self._lock:
            self._script = None
            for sid, angle in raw_rad.items():
                self.servos[sid].angle_rad = float(angle)

    def _set_physical(self, q_follower: np.ndarray, gripper: float) -> None:
        cal = self.calibration
        raw = cal.raw_for(self.map.to_leader(np.asarray(q_follower, float)))
        for jc, angle in zip(cal.joints, raw, strict=True):
            self.servos[jc.servo_id].angle_rad = float(angle)
        if cal.gripper is not None:
            self.servos[cal.gripper.servo_id].angle_rad = cal.gripper.raw_for(
                width_to_trigger(gripper, self.spec)
            )

    def _update_script(self) -> None:
        if self._script is not None:
            fn, t0 = self._script
            q, g = fn(time.time() - t0)
            self._set_physical(q, g)

    # --- faults ------------------------------------------------------------------------------------
    def inject(self, servo_id: int, fault: str | None, count: int | None = None) -> None:
        """Fault `servo_id` ("silence", "corrupt", "missing"; None clears) for `count` packets or until cleared."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"emulated bus: unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            servo = self.servos[servo_id]
            servo.fault, servo.fault_left = fault, count

    def alarm(self, servo_id: int, bits: int, persist: bool = False) -> None:
        """Put `servo_id` in alarm with Hardware Error Status `bits` (dx.HARDWARE_ERROR_BITS; 0 ends it).

        Without `persist` a REBOOT clears it (the cause is gone); with it the servo alarms again on restart."""
        with self._lock:
            servo = self.servos[servo_id]
            servo.put(dx.ADDR_HARDWARE_ERROR_STATUS, bits)
            servo.alarm_cause = bits if persist else 0

    def clear_faults(self) -> None:
        with self._lock:
            for servo in self.servos.values():
                servo.fault, servo.fault_left = None, None

    def power_cycle(self, servo_ids: tuple[int, ...] | None = None) -> None:
        """Switch servos off and on where they stand: turn counts restart within one revolution."""
        with self._lock:
            self._update_script()
            for sid in servo_ids or tuple(self.servos):
                self.servos[sid].power_on()

    def disconnect(self) -> None:
        """The cable is pulled: the pty master closes; the host's next read or write fails."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._close_fd("_master")

    # --- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self._close_fd("_master")
        self._close_fd("_slave")

    def _close_fd(self, name: str) -> None:
        fd = getattr(self, name)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
            setattr(self, name, None)

    def __enter__(self) -> EmulatedDynamixelBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # --- service thread -----------------------------------------------------------------------------
    def _host_baud(self) -> int | None:
        """The baud rate the host set on its end of the pty (pyserial's tcsetattr), if known."""
        try:
            return _TERMIOS_BAUD.get(termios.tcgetattr(self._slave)[5])
        except (termios.error, TypeError):
            return None

    def _serve(self) -> None:
        buf = bytearray()
        t_last_byte = 0.0
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.01 if buf else 0.05)
                data = os.read(self._master, 4096) if ready else b""
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            now = time.perf_counter()
            if data:
                buf += data
                t_last_byte = now
            elif buf and now - t_last_byte > PARTIAL_TIMEOUT_S:
                # a "header" in line noise that never completed: drop its first byte and look again, as a
                # servo's receiver times out a partial packet
                del buf[:1]
            while True:
                packet, used = dx.parse_packet(buf)
                del buf[:used]
                if packet is None:
                    break
                self.packets += 1
                # the instruction finishes arriving at the servos after its bytes have crossed the bus
                t_done = t_last_byte + (used * self.byte_time_s if self.emulate_baud else 0.0)
                try:
                    self._respond(packet, t_done)
                except OSError:
                    return

    def _respond(self, packet: dx.Packet, t_done: float) -> None:
        host_baud = self._host_baud()
        if self.emulate_baud:  # servos act (and latch their encoders) once the instruction has fully arrived
            delay = t_done - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        with self._lock:
            baud_before = {id(s): s.baudrate for s in self.servos.values()}
            if not packet.crc_ok:
                self.crc_errors += 1
                servo = self.servos.get(packet.servo_id)
                replies = [] if servo is None else [(servo, servo.status(dx.ERR_CRC))]
            else:
                replies = self._handle(packet)
            # a servo at another baud rate hears noise and never answers (a new baud rate applies after the reply)
            replies = [
                r
                for r in replies
                if host_baud is None or baud_before.get(id(r[0]), r[0].baudrate) == host_baud
            ]
            out = []
            for servo, reply, *pre_faulted in replies:
                fault = None if pre_faulted else servo.take_fault()
                if fault in ("silence", "missing"):
                    continue
                if fault == "corrupt":
                    reply = reply[:-2] + bytes([reply[-2] ^ 0xFF, reply[-1]])
                out.append((servo, reply))
        t = t_done
        for servo, reply in out:
            if self.emulate_baud:
                t += servo.return_delay_s + len(reply) * self.byte_time_s
                delay = t - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            os.write(self._master, reply)

    def _present(self, servo_id: int) -> EmulatedServo | None:
        servo = self.servos.get(servo_id)
        if servo is None or servo.fault == "missing" and servo.take_fault():
            return None
        return servo

    def _handle(self, p: dx.Packet) -> list[tuple[EmulatedServo, bytes]]:
        inst, prm, bid = p.instruction, p.params, p.servo_id
        broadcast = bid == dx.BROADCAST_ID
        targets: list[EmulatedServo] = []
        if inst not in (dx.SYNC_READ, dx.FAST_SYNC_READ, dx.SYNC_WRITE, dx.BULK_READ, dx.BULK_WRITE):
            present = [self._present(sid) for sid in (sorted(self.servos) if broadcast else [bid])]
            targets = [s for s in present if s is not None]
        if inst in (dx.READ, dx.SYNC_READ, dx.FAST_SYNC_READ, dx.BULK_READ):
            self._update_script()
        if inst == dx.PING:
            return [
                (s, s.status(0, s.table[0:2] + s.table[6:7]))
                for s in sorted(targets, key=lambda s: s.servo_id)
            ]
        if inst == dx.READ and not broadcast and len(prm) == 4:
            addr, n = int.from_bytes(prm[0:2], "little"), int.from_bytes(prm[2:4], "little")
            return [(s, self._read_reply(s, addr, n)) for s in targets]
        if inst in (dx.WRITE, dx.REG_WRITE) and len(prm) >= 3:
            addr, data = int.from_bytes(prm[0:2], "little"), bytes(prm[2:])
            replies = []
            for s in targets:
                if inst == dx.WRITE:
                    err = self._write(s, addr, data)
                else:
                    s.registered, err = (addr, data), 0
                if not broadcast:
                    replies.append((s, s.status(err)))
            return replies
        if inst == dx.ACTION:
            for s in targets:
                if s.registered is not None:
                    self._write(s, *s.registered)
                    s.registered = None
            return [] if broadcast else [(s, s.status()) for s in targets]
        if inst == dx.REBOOT:
            replies = [] if broadcast else [(s, s.status()) for s in targets]
            for s in targets:
                s.power_on()
            return replies
        if inst in (dx.SYNC_READ, dx.FAST_SYNC_READ) and broadcast and len(prm) >= 5:
            addr, n = int.from_bytes(prm[0:2], "little"), int.from_bytes(prm[2:4], "little")
            if inst == dx.FAST_SYNC_READ:
                return self._fast_sync_reply(bytes(prm[4:]), addr, n)
            servos = [s for s in (self._present(sid) for sid in prm[4:]) if s is not None]
            return [(s, self._read_reply(s, addr, n)) for s in servos]
        if inst == dx.SYNC_WRITE and broadcast and len(prm) >= 4:
            addr, n = int.from_bytes(prm[0:2], "little"), int.from_bytes(prm[2:4], "little")
            for i in range(4, len(prm) - n, n + 1):
                s = self._present(prm[i])
                if s is not None:
                    self._write(s, addr, bytes(prm[i + 1 : i + 1 + n]))
            return []
        if inst == dx.BULK_READ and broadcast:
            replies = []
            for i in range(0, len(prm) - 4, 5):
                s = self._present(prm[i])
                if s is not None:
                    addr, n = (
                        int.from_bytes(prm[i + 1 : i + 3], "little"),
                        int.from_bytes(prm[i + 3 : i + 5], "little"),
                    )
                    replies.append((s, self._read_reply(s, addr, n)))
            return replies
        if inst == dx.BULK_WRITE and broadcast:
            i = 0
            while i + 5 <= len(prm):
                addr, n = (
                    int.from_bytes(prm[i + 1 : i + 3], "little"),
                    int.from_bytes(prm[i + 3 : i + 5], "little"),
                )
                s = self._present(prm[i])
                if s is not None:
                    self._write(s, addr, bytes(prm[i + 5 : i + 5 + n]))
                i += 5 + n
            return []
        # unknown instruction or malformed parameters: an addressed servo says so
        return [] if broadcast else [(s, s.status(dx.ERR_INSTRUCTION)) for s in targets]

    def _read_reply(self, s: EmulatedServo, addr: int, n: int) -> bytes:
        if n == 0 or addr + n > TABLE_SIZE:
            return s.status(dx.ERR_ACCESS)
        s.refresh()
        return s.status(0, bytes(s.table[addr : addr + n]))

    def _fast_sync_reply(self, ids: bytes, addr: int, n: int) -> list[tuple]:
        """One packet for all servos: [err, id, data, crc] per servo, each crc covering the packet so far and
        the last one the packet's own. Each servo appends its part after the previous one, so a silent
        servo truncates the packet there and a corrupt one spoils the CRC. Faults are applied here."""
        if not ids or addr + n > TABLE_SIZE:
            return []
        head = dx.HEADER + bytes([dx.BROADCAST_ID]) + (1 + (n + 4) * len(ids)).to_bytes(2, "little")
        body = bytearray([dx.STATUS])
        first, complete, corrupt = None, True, False
        for i, sid in enumerate(ids):
            servo = self.servos.get(sid)
            fault = "missing" if servo is None else servo.take_fault()
            if fault in ("silence", "missing"):
                complete = False
                break
            first = first or servo
            corrupt |= fault == "corrupt"
            servo.refresh()
            body += bytes([servo.error_bits, sid]) + servo.table[addr : addr + n]
            if i < len(ids) - 1:
                body += dx.crc16(head + body).to_bytes(2, "little")
        if first is None:
            return []
        packet = bytearray(head + body)
        if complete:
            packet += dx.crc16(packet).to_bytes(2, "little")
        if corrupt:
            packet[-1] ^= 0xFF
        return [(first, bytes(packet), "faults applied")]

    def _write(self, s: EmulatedServo, addr: int, data: bytes) -> int:
        end = addr + len(data)
        if not data or end > TABLE_SIZE or any(a in _READ_ONLY for a in range(addr, end)):
            return dx.ERR_ACCESS
        if addr < dx.EEPROM_END and s.get(dx.ADDR_TORQUE_ENABLE):
            return dx.ERR_ACCESS  # EEPROM is locked while torque is on
        s.table[addr:end] = data
        if addr <= dx.ADDR_ID[0] < end:
            new_id = s.table[dx.ADDR_ID[0]]
            self.servos.pop(s.servo_id, None)
            s.servo_id = new_id
            self.servos[new_id] = s
        if addr <= dx.ADDR_BAUD_RATE[0] < end:
            s.baudrate = dx.BAUD_CODES.get(s.table[dx.ADDR_BAUD_RATE[0]], s.baudrate)
        return 0
