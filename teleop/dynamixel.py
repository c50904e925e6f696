"""Dynamixel Protocol 2.0: packet codec (for the emulated bus) and a thin reader over the real dynamixel-sdk.

Two halves that share the wire constants below, so the emulator and the driver cannot disagree:
- `crc16`, `stuff`/`unstuff`, `instruction_packet`/`status_packet`, `parse_packet`: the byte format from
  the ROBOTIS Protocol 2.0 e-manual (header FF FF FD 00, ID, LEN, INST, params, CRC-16/0x8005 little-endian;
  any FF FF FD inside the payload is sent as FF FF FD FD and LEN counts the stuffed bytes).
- `DynamixelBus`: opens a port with the ROBOTIS SDK, pings servos and sync-reads present positions,
  turning every SDK result code into a `BusError` that names the servo, never a silent zero. The SDK's
  group reads drop each status packet's error byte, so the bus receives sync, fast sync and bulk replies
  itself and checks every error byte: the hardware-alert bit (0x80: overheating, input voltage, encoder,
  shock, overload) raises `ServoAlarm` with the servo's decoded Hardware Error Status (register 70).

Control-table addresses are those of the X series (XL330, XM430, XC330), which GELLO leaders are built from.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
STATUS = 0x55

# Instructions
PING, READ, WRITE, REG_WRITE, ACTION, FACTORY_RESET, REBOOT, CLEAR = (
    0x01,
    0x02,
    0x03,
    0x04,
    0x05,
    0x06,
    0x08,
    0x10,
)
SYNC_READ, SYNC_WRITE, FAST_SYNC_READ, BULK_READ, BULK_WRITE = 0x82, 0x83, 0x8A, 0x92, 0x93

# Status error numbers (low 7 bits of the error byte); 0x80 is the hardware-alert bit.
ERR_RESULT_FAIL, ERR_INSTRUCTION, ERR_CRC, ERR_DATA_RANGE, ERR_DATA_LENGTH, ERR_DATA_LIMIT, ERR_ACCESS = (
    range(1, 8)
)
ERRBIT_ALERT = 0x80
# Hardware Error Status (register 70) bits of the X series, as the e-manual names them
HARDWARE_ERROR_BITS = {
    0: "input voltage",
    2: "overheating",
    3: "motor encoder",
    4: "electrical shock",
    5: "overload",
}

# X-series control table (address, size in bytes)
ADDR_MODEL_NUMBER = (0, 2)
ADDR_FIRMWARE_VERSION = (6, 1)
ADDR_ID = (7, 1)
ADDR_BAUD_RATE = (8, 1)
ADDR_RETURN_DELAY_TIME = (9, 1)  # units of 2 us
ADDR_OPERATING_MODE = (11, 1)
ADDR_TORQUE_ENABLE = (64, 1)
ADDR_STATUS_RETURN_LEVEL = (68, 1)
ADDR_HARDWARE_ERROR_STATUS = (70, 1)
ADDR_GOAL_POSITION = (116, 4)
ADDR_PRESENT_POSITION = (132, 4)
EEPROM_END = 64  # addresses below this are writable only with torque off

TICKS_PER_REV = 4096
RAD_PER_TICK = 2.0 * math.pi / TICKS_PER_REV

# Baud-rate register value <-> bits per second (X series)
BAUD_CODES = {0: 9600, 1: 57600, 2: 115200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000, 6: 4_000_000}
MODEL_XL330_M288 = 1200
MODEL_XL330_M077 = 1190


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    """CRC-16 (polynomial 0x8005, initial 0, not reflected) as Protocol 2.0 computes it over header..params."""
    crc = 0
    for b in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(payload: bytes) -> bytes:
    """Insert 0xFD after every FF FF FD inside the payload, so the receiver never sees a false header."""
    out = bytearray()
    for b in payload:
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(payload: bytes) -> bytes:
    """Inverse of `stuff`: drop the FD that follows each FF FF FD."""
    out = bytearray()
    i = 0
    while i < len(payload):
        b = payload[i]
        out.append(b)
        if (
            b == 0xFD
            and len(out) >= 3
            and out[-3] == 0xFF
            and out[-2] == 0xFF
            and i + 1 < len(payload)
            and payload[i + 1] == 0xFD
        ):
            i += 1  # skip the stuffing byte
        i += 1
    return bytes(out)


def _frame(servo_id: int, payload: bytes) -> bytes:
    body = stuff(payload)
    head = HEADER + bytes([servo_id]) + (len(body) + 2).to_bytes(2, "little")
    packet = head + body
    return packet + crc16(packet).to_bytes(2, "little")


def instruction_packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    return _frame(servo_id, bytes([instruction]) + params)


def status_packet(servo_id: int, error: int = 0, params: bytes = b"") -> bytes:
    return _frame(servo_id, bytes([STATUS, error]) + params)


@dataclass(frozen=True)
class Packet:
    servo_id: int
    instruction: int  # STATUS for a status packet
    params: bytes  # unstuffed; for a status packet the error byte comes first
    crc_ok: bool


def parse_packet(buf: bytearray) -> tuple[Packet | None, int]:
    """Find the first complete packet in `buf`: (packet or None, bytes consumed). Leading garbage is skipped.

    A packet whose CRC does not match is returned with `crc_ok=False` (a servo answers those with a CRC
    error status); when `buf` holds no complete packet, (None, bytes of garbage safe to drop) is returned.
    """
    start = buf.find(HEADER)
    if start < 0:
        return None, max(0, len(buf) - 3)  # keep a possible partial header
    if len(buf) < start + 7:
        return None, start
    length = int.from_bytes(buf[start + 5 : start + 7], "little")
    if length < 3 or length > 1024:
        return None, start + 1  # not a real header: resynchronise one byte later
    end = start + 7 + length
    if len(buf) < end:
        return None, start
    raw = bytes(buf[start:end])
    crc_ok = crc16(raw[:-2]) == int.from_bytes(raw[-2:], "little")
    payload = unstuff(raw[7:-2])
    return Packet(raw[4], payload[0], payload[1:], crc_ok), end


class BusError(RuntimeError):
    """A servo did not answer properly; `servo_id` names it (None when the whole port failed)."""

    def __init__(self, message: str, servo_id: int | None = None) -> None:
        super().__init__(message)
        self.servo_id = servo_id


class ServoAlarm(BusError):
    """A servo set the hardware-alert bit; `hardware_status` is its register 70 (None if unreadable).

    Unlike a timeout or a CRC error this is no glitch: the servo stays in alarm until it is rebooted or
    power-cycled, so callers must not retry it away."""

    def __init__(self, message: str, servo_id: int, hardware_status: int | None) -> None:
        super().__init__(message, servo_id)
        self.hardware_status = hardware_status


def decode_hardware_error(status: int) -> str:
    """Register 70 as words: 0x24 -> "overheating, overload"."""
    names = [name for bit, name in HARDWARE_ERROR_BITS.items() if status & (1 << bit)]
    unknown = status & ~sum(1 << bit for bit in HARDWARE_ERROR_BITS)
    if unknown:
        names.append(f"unknown bits 0x{unknown:02x}")
    return ", ".join(names) or "no bit set"


def tune_port_latency(port_path: str, ser: object) -> list[str]:
    """Best-effort FTDI tuning (ASYNC_LOW_LATENCY, sysfs latency_timer = 1 ms); returns what was not possible.

    A USB-serial adapter buffers for 16 ms by default, which caps a GELLO at ~30 Hz. A pty (the emulated
    bus) has neither the ioctl nor the sysfs file: both are tolerated, and reported once at debug level.
    """
    skipped = []
    try:
        ser.set_low_latency_mode(True)  # type: ignore[attr-defined]
    except (OSError, ValueError, NotImplementedError, AttributeError) as e:
        skipped.append(f"low-latency mode ({type(e).__name__})")
    name = Path(os.path.realpath(port_path)).name
    timer = Path(f"/sys/bus/usb-serial/devices/{name}/latency_timer")
    try:
        if timer.read_text().strip() != "1":
            timer.write_text("1")
    except OSError:
        skipped.append("sysfs latency_timer")
    if skipped:
        log.debug("%s: no %s (not an FTDI adapter?)", port_path, ", ".join(skipped))
    return skipped


def ticks_to_signed(value: int) -> int:
    """Present Position is an int32 the SDK hands back as unsigned."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class DynamixelBus:
    """One serial port with Protocol 2.0 servos, through the ROBOTIS dynamixel-sdk (pyserial underneath).

    Thread-safe: one transaction at a time. Every failure raises `BusError` naming the servo.
    """

    def __init__(
        self,
        port: str,
        baudrate: int,
        attempts: int = 3,
        poll_s: float = 1e-3,
        latency_timer_ms: float = 16.0,
    ) -> None:
        self.port_name = port
        self.baudrate = int(baudrate)
        self.attempts = max(1, attempts)  # for ping/read/write (setup); sync reads are retried by the caller
        self.poll_s = poll_s  # blocking-read slice instead of the SDK's busy spin (0: the SDK's spin)
        # status timeout = wire time + 2 * latency_timer_ms + 2 ms (the SDK's formula; 16 ms is the FTDI default)
        self.latency_timer_ms = latency_timer_ms
        self._lock = threading.Lock()
        self._port = None
        self._ph = None
        self.byte_time_s = 10.0 / self.baudrate  # 8N1: 10 bits on the wire per byte

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        import dynamixel_sdk as sdk
        import serial

        if not Path(self.port_name).exists():
            raise BusError(f"{self.port_name}: no such serial port (is the U2D2 / USB adapter plugged in?)")
        latency_ms = self.latency_timer_ms

        class Port(sdk.PortHandler):  # the SDK hard-codes a 16 ms FTDI latency timer into every timeout
            def setPacketTimeout(self, packet_length):
                self.packet_start_time = self.getCurrentTime()
                self.packet_timeout = self.tx_time_per_byte * packet_length + 2.0 * latency_ms + 2.0

        port = Port(self.port_name)
        try:
            ok = port.openPort() and port.setBaudRate(self.baudrate)
        except (serial.SerialException, OSError) as e:
            raise BusError(f"{self.port_name}: cannot open ({e})") from None
        if not ok:
            with contextlib.suppress(Exception):
                port.closePort()
            raise BusError(f"{self.port_name}: baud rate {self.baudrate} not supported by the SDK")
        tune_port_latency(self.port_name, port.ser)
        # The SDK opens the port non-blocking and spins on it while waiting for a status packet, burning a
        # core and starving every other Python thread of the GIL. A short blocking read waits in select()
        # instead; each wait ends as soon as the bytes asked for are in, so a read costs at most `poll_s` more.
        port.ser.timeout = self.poll_s
        self._port, self._ph = port, sdk.PacketHandler(2.0)

    def close(self) -> None:
        with self._lock:
            if self._port is not None:
                with contextlib.suppress(Exception):
                    self._port.closePort()
            self._port = self._ph = None

    def _require(self) -> None:
        if self._port is None:
            raise BusError(f"{self.port_name}: bus not open")

    def _reason(self, result: int, error: int = 0) -> str:
        import dynamixel_sdk as sdk

        if result == sdk.COMM_RX_TIMEOUT:
            return "no status packet (timeout): servo silent, unpowered or missing"
        if result == sdk.COMM_RX_CORRUPT:
            return "corrupt status packet (CRC error or truncated)"
        if result != sdk.COMM_SUCCESS:
            return self._ph.getTxRxResult(result).replace("[TxRxResult] ", "")
        return self._ph.getRxPacketError(error).replace("[RxPacketError] ", "")

    def _io(self, fn, *args):
        import termios

        import serial

        try:
            return fn(*args)
        except (serial.SerialException, OSError, termios.error, TypeError, IndexError) as e:
            # TypeError/IndexError: the SDK indexes into what a dying port returned
            raise BusError(
                f"{self.port_name}: port failed ({type(e).__name__}: {e}); adapter unplugged?"
            ) from None

    def _retry(self, fn, *args):
        """One transaction, repeated up to `attempts` times while it times out or arrives corrupt."""
        import dynamixel_sdk as sdk

        for _ in range(self.attempts):
            with self._lock:
                out = self._io(fn, self._port, *args)
            result = out[-2] if len(out) == 3 else out[0]
            if result not in (sdk.COMM_RX_TIMEOUT, sdk.COMM_RX_CORRUPT):
                break
        return out

    def _alarm(self, servo_id: int, what: str) -> ServoAlarm:
        """The ServoAlarm for `servo_id`, its Hardware Error Status read from the servo (caller holds `_lock`).

        Replies still left on the line from the transaction that carried the alert are dropped first."""
        import dynamixel_sdk as sdk

        status = None
        self._io(self._port.clearPort)
        for _ in range(self.attempts):
            value, result, _error = self._io(
                self._ph.read1ByteTxRx, self._port, servo_id, ADDR_HARDWARE_ERROR_STATUS[0]
            )
            if result == sdk.COMM_SUCCESS:
                status = int(value)
                break
        detail = (
            "Hardware Error Status (register 70) unreadable"
            if status is None
            else f"Hardware Error Status 0x{status:02x} ({decode_hardware_error(status)})"
        )
        return ServoAlarm(
            f"{self.port_name}: servo {servo_id}: hardware alert on {what}: {detail}", servo_id, status
        )

    def _check_error(self, servo_id: int, error: int, what: str) -> None:
        """Raise for a status packet's error byte (caller holds `_lock`): ServoAlarm for the alert bit."""
        if error & ERRBIT_ALERT:
            raise self._alarm(servo_id, what)
        if error:
            raise BusError(
                f"{self.port_name}: servo {servo_id}: {what} failed: {self._reason(0, error)}", servo_id
            )

    def ping(self, servo_id: int) -> int:
        """Model number of `servo_id`, or BusError (ServoAlarm when it answers in alarm)."""
        self._require()
        model, result, error = self._retry(self._ph.ping, servo_id)
        if result != 0:
            raise BusError(
                f"{self.port_name}: servo {servo_id} did not answer PING at {self.baudrate} baud: "
                f"{self._reason(result, error)}",
                servo_id,
            )
        with self._lock:
            self._check_error(servo_id, error, "PING")
        return int(model)

    def read(self, servo_id: int, address: tuple[int, int]) -> int:
        self._require()
        addr, size = address
        fn = {1: self._ph.read1ByteTxRx, 2: self._ph.read2ByteTxRx, 4: self._ph.read4ByteTxRx}[size]
        value, result, error = self._retry(fn, servo_id, addr)
        if result != 0:
            raise BusError(
                f"{self.port_name}: servo {servo_id}: read @{addr} failed: {self._reason(result, error)}",
                servo_id,
            )
        with self._lock:
            self._check_error(servo_id, error, f"read @{addr}")
        return int(value)

    def write(self, servo_id: int, address: tuple[int, int], value: int) -> None:
        self._require()
        addr, size = address
        fn = {1: self._ph.write1ByteTxRx, 2: self._ph.write2ByteTxRx, 4: self._ph.write4ByteTxRx}[size]
        result, error = self._retry(fn, servo_id, addr, int(value))
        if result != 0:
            raise BusError(
                f"{self.port_name}: servo {servo_id}: write @{addr} failed: {self._reason(result, error)}",
                servo_id,
            )
        with self._lock:
            self._check_error(servo_id, error, f"write @{addr}")

    def reboot(self, servo_id: int) -> None:
        """REBOOT: the way a Dynamixel leaves its alarm state (register 70 clears if the cause is gone)."""
        self._require()
        result, error = self._retry(self._ph.reboot, servo_id)
        if (
            result != 0 or error & ~ERRBIT_ALERT
        ):  # the status packet before the reboot may still carry the alert
            raise BusError(
                f"{self.port_name}: servo {servo_id}: REBOOT failed: {self._reason(result, error)}", servo_id
            )

    def _receive_each(self, sizes: dict[int, int], what: str) -> dict[int, bytes]:
        """Receive one status packet per servo after a sync/bulk read instruction and check every error byte.

        All replies are taken in before any is judged, so an alarm is reported even when a servo after the
        alarmed one also failed; an alert outranks a timeout, which outranks another error bit."""
        import dynamixel_sdk as sdk

        replies: dict[int, tuple[int, bytes]] = {}
        lost: tuple[int, int] | None = None
        for sid, size in sizes.items():
            data, result, error = self._ph.readRx(self._port, sid, size)
            if result != sdk.COMM_SUCCESS:
                lost = (sid, result)
                break
            replies[sid] = (int(error), bytes(data))
        return self._judge(replies, sizes, lost, what)

    def _judge(
        self,
        replies: dict[int, tuple[int, bytes]],
        sizes: dict[int, int],
        lost: tuple[int, int] | None,
        what: str,
    ) -> dict[int, bytes]:
        alarmed = next((sid for sid, (err, _) in replies.items() if err & ERRBIT_ALERT), None)
        if alarmed is not None:
            raise self._alarm(alarmed, what)
        if lost is not None:
            raise BusError(f"{self.port_name}: servo {lost[0]}: {self._reason(lost[1])}", lost[0])
        for sid, (err, data) in replies.items():
            self._check_error(sid, err, what)
            if len(data) < sizes[sid]:
                raise BusError(
                    f"{self.port_name}: servo {sid}: {what}: {len(data)} of {sizes[sid]} bytes", sid
                )
        return {sid: data for sid, (_, data) in replies.items()}

    def _sync_read(self, ids: tuple[int, ...], addr: int, size: int) -> dict[int, bytes]:
        import dynamixel_sdk as sdk

        result = self._ph.syncReadTx(self._port, addr, size, list(ids), len(ids), False)
        if result != sdk.COMM_SUCCESS:
            raise BusError(f"{self.port_name}: sync read not sent: {self._reason(result)}")
        return self._receive_each(dict.fromkeys(ids, size), "sync read")

    def _fast_sync_read(self, ids: tuple[int, ...], addr: int, size: int) -> dict[int, bytes] | None:
        """Fast Sync Read: one packet of [error, id, data, crc] per servo; None when it failed in transport
        (it cannot say which servo broke the chain), raising only on what the servos reported."""
        import dynamixel_sdk as sdk

        if self._ph.syncReadTx(self._port, addr, size, list(ids), len(ids), True) != sdk.COMM_SUCCESS:
            return None
        try:
            raw, result, _ = self._ph.fastSyncReadRx(self._port, BROADCAST_ID, (size + 4) * len(ids))
        except (IndexError, TypeError):  # the SDK indexes past the end of a truncated fast packet
            return None
        if result != sdk.COMM_SUCCESS:
            return None
        replies: dict[int, tuple[int, bytes]] = {}
        for k in range(len(ids)):
            seg = bytes(raw[k * (size + 4) : (k + 1) * (size + 4)])
            if len(seg) < size + 2 or seg[1] not in ids:
                return None
            replies[seg[1]] = (seg[0], seg[2 : 2 + size])
        if set(replies) != set(ids):
            return None
        return self._judge(replies, dict.fromkeys(ids, size), None, "fast sync read")

    def bulk_read(self, items: dict[int, tuple[int, int]], alerts_ok: bool = False) -> dict[int, int]:
        """One Bulk Read, {servo id: (address, size)} -> {servo id: unsigned value}, every error byte checked.

        `alerts_ok` returns the values of servos in alarm instead of raising (reading register 70 itself)."""
        import dynamixel_sdk as sdk

        self._require()
        param: list[int] = []
        for sid, (addr, size) in items.items():
            param += [sid, addr & 0xFF, addr >> 8, size & 0xFF, size >> 8]
        sizes = {sid: size for sid, (_, size) in items.items()}
        with self._lock:
            result = self._io(self._ph.bulkReadTx, self._port, param, len(param), False)
            if result != sdk.COMM_SUCCESS:
                raise BusError(f"{self.port_name}: bulk read not sent: {self._reason(result)}")
            if alerts_ok:
                data = {}
                for sid, size in sizes.items():
                    value, result, error = self._io(self._ph.readRx, self._port, sid, size)
                    if result != sdk.COMM_SUCCESS:
                        raise BusError(f"{self.port_name}: servo {sid}: {self._reason(result)}", sid)
                    if error & ~ERRBIT_ALERT or len(value) < size:
                        raise BusError(
                            f"{self.port_name}: servo {sid}: bulk read failed: {self._reason(0, error)}", sid
                        )
                    data[sid] = bytes(value)
            else:
                data = self._io(self._receive_each, sizes, "bulk read")
        return {sid: int.from_bytes(data[sid][: sizes[sid]], "little") for sid in sizes}

    def hardware_status(self, servo_ids: tuple[int, ...]) -> dict[int, int]:
        """Register 70 (Hardware Error Status) of each servo, in one bulk read; 0 = no alarm."""
        return self.bulk_read(dict.fromkeys(servo_ids, ADDR_HARDWARE_ERROR_STATUS), alerts_ok=True)

    def sync_read_positions(self, servo_ids: tuple[int, ...], fast: bool = False) -> tuple[float, np.ndarray]:
        """One sync read of Present Position: (time the servos latched it, signed ticks per servo).

        The time is when the instruction packet has finished arriving at the servos (each servo samples
        its encoder on receipt), estimated from the send time and the packet length at the bus baud rate.
        `fast` uses Fast Sync Read (one status packet for all servos: fewer bytes, one return delay; X
        series firmware 46+); since its failure cannot say which servo broke the chain, a failed fast
        read is repeated as a plain sync read, which names the servo (or recovers the reading). Every
        servo's error byte is checked either way: an alert raises ServoAlarm naming the servo and its
        Hardware Error Status, any other error bit BusError.
        """
        self._require()
        addr, size = ADDR_PRESENT_POSITION
        ids = tuple(servo_ids)
        with self._lock:
            data = None
            if fast:
                t_send = time.time()
                data = self._io(self._fast_sync_read, ids, addr, size)
            if data is None:
                t_send = time.time()
                data = self._io(self._sync_read, ids, addr, size)
        ticks = np.array(
            [ticks_to_signed(int.from_bytes(data[sid][:size], "little")) for sid in ids], dtype=np.int64
        )
        t_latch = t_send + (14 + len(ids)) * self.byte_time_s
        return t_latch, ticks
