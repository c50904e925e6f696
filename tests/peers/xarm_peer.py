"""An xArm controller peer: the register protocol on TCP 502 and the 'real' report stream on TCP 30003.

What xarm-python-sdk 1.18.4 speaks (learned from its source, written from scratch here):
- Port 502, "private Modbus-TCP": request = transaction id (u16 BE), protocol id (u16 BE: 2, or 3 once the
  SDK turns on its heartbeat for firmware >= 1.8.6), length (u16 BE, counts the register byte and the data),
  register (u8), data. Response = the same header with length = 2 + len(data), the register, a state byte
  (bit 0x40 error, 0x20 warning, 0x10 not ready) and the data. Angles and speeds are fp32 little-endian.
- Port 30003 ("real" report, 87 bytes): total length (u32 BE), state | mode << 4 (u8), command count
  (u16 BE), 7 joint angles, 6 pose values and 7 joint torques (fp32 LE).

The simulated arm is a first-order servo (time constant `tau_s`) integrated at `physics_hz`; in servo mode
(mode 1, state 0, motion enabled) each SERVOJ target becomes the setpoint. Unknown registers answer success
with zero data so the SDK's bookkeeping calls at connect time go through. The xArm Gripper answers Modbus-RTU
frames passed through register 124 (tool RS-485): enable, speed, target and current position in pulses
(0 closed .. 850 open), moving toward its target at the set speed.

The SDK hard-codes the ports, so the peer first takes a machine-wide file lock shared with the UR peer (both
use 30003), waiting a bounded time for another run, and fails with a clear error if a port stays busy.
Fault injection (`inject`): "silence" (no reports, no answers, every socket left open), "corrupt" (a report
frame with a wrong length prefix and a reply with a wrong protocol id), "disconnect" (every client socket
closed, no new connections). `set_error(error_code, warn_code)` is a controller error (a joint over its
current limit, a collision...): the controller stops (state 4) and holds, GET_ERROR answers the codes, and
the state byte of every reply carries the error (0x40) and warning (0x20) bits, as the SDK reads them.
"""

from __future__ import annotations

import math
import socket
import struct
import threading
import time

import numpy as np

from tests.peers.tcp_peer import TcpPeer, close_socket

CONTROL_PORT = 502
REPORT_PORT = 30003

# Register numbers (the SDK's XCONF.UxbusReg)
GET_VERSION, GET_ROBOT_SN, MOTION_EN, SET_STATE, GET_STATE, GET_CMDNUM, GET_ERROR = 1, 2, 11, 12, 13, 14, 15
SET_MODE, MOVE_SERVOJ = 19, 29
RS485_RTU, TGPIO_W16B, TGPIO_R16B = 124, 127, 128  # tool RS-485 pass-through, tool-board registers
RS485_HOST_ID, GRIPPER_ID = 9, 8
GRIPPER_ENABLE, GRIPPER_MODE, GRIPPER_ERROR, GRIPPER_SPEED = 0x0100, 0x0101, 0x000F, 0x0303
GRIPPER_TARGET, GRIPPER_POSITION = 0x0700, 0x0702  # 32-bit, pulses: 0 closed .. 850 open (85 mm)
TOOL_BAUD_REGISTER, TOOL_BAUD_INDEX = 0x0A0B, 11  # index of 2,000,000 baud in the SDK's table


class XArmPeer(TcpPeer):
    who = "xArm peer"

    def __init__(
        self,
        host: str = "127.0.0.1",
        dof: int = 7,
        q0: np.ndarray | None = None,
        report_hz: float = 250.0,
        physics_hz: float = 500.0,
        tau_s: float = 0.02,
    ):
        self.host, self.dof = host, dof
        self.q = np.zeros(dof) if q0 is None else np.asarray(q0, dtype=float).copy()
        self.q_set = self.q.copy()
        self.report_hz, self.physics_hz, self.tau_s = report_hz, physics_hz, tau_s
        self.mode, self.state, self.enabled = 0, 4, False  # state 4 = stopped until set_state(0)
        self.cmd_count = 0
        self.servoj_count = 0  # SERVOJ requests received: what "nothing reached the peer" checks
        self.servoj_last: np.ndarray | None = None
        self.gripper_enabled = False
        self.gripper_pos = 850.0  # open
        self.gripper_target = 850
        self.gripper_speed = 1500.0  # pulses/s (the SDK's default speed value)
        self.gripper_writes = 0  # RS-485 writes to the gripper that reached the controller
        self.error_code, self.warn_code = 0, 0
        self._init_peer(threading.Lock())

    def set_error(self, error_code: int, warn_code: int = 0) -> None:
        """A controller error (non-zero) stops the arm where it is; (0, 0) clears the codes."""
        with self._lock:
            self.error_code, self.warn_code = error_code, warn_code
            if error_code:
                self.state = 4
                self.q_set = self.q.copy()

    # --- lifecycle (TcpPeer) ---------------------------------------------------------------------------
    def _listeners(self):
        return [(CONTROL_PORT, self._serve_control), (REPORT_PORT, self._serve_report)]

    def _loops(self):
        return [self._physics]

    def _physics(self) -> None:
        dt = 1.0 / self.physics_hz
        alpha = 1.0 - math.exp(-dt / self.tau_s)
        next_t = time.perf_counter()
        while not self._stop.is_set():
            with self._lock:
                if self.fault != "silence":
                    self.q += alpha * (self.q_set - self.q)
                    if self.gripper_enabled:
                        step = self.gripper_speed * dt
                        self.gripper_pos += float(
                            np.clip(self.gripper_target - self.gripper_pos, -step, step)
                        )
            next_t += dt
            time.sleep(max(0.0, next_t - time.perf_counter()))

    def _serve_report(self, conn: socket.socket) -> None:
        period = 1.0 / self.report_hz
        next_t = time.perf_counter()
        try:
            while not self._stop.is_set():
                with self._lock:
                    fault = self.fault
                    frame = self._report_frame()
                if fault == "disconnect":
                    return
                if fault == "corrupt":
                    frame = struct.pack(">I", 999) + frame[4:]  # length prefix disagrees with the stream
                if fault != "silence":
                    conn.sendall(frame)
                next_t += period
                time.sleep(max(0.0, next_t - time.perf_counter()))
        except OSError:
            pass
        finally:
            close_socket(conn)

    def _report_frame(self) -> bytes:
        angles = np.zeros(7)
        angles[: self.dof] = self.q
        body = struct.pack(">BH", (self.state & 0x0F) | (self.mode << 4), self.cmd_count & 0xFFFF)
        body += struct.pack("<7f", *angles) + struct.pack("<6f", 200.0, 0.0, 300.0, math.pi, 0.0, 0.0)
        body += struct.pack("<7f", *([0.0] * 7))
        return struct.pack(">I", 4 + len(body)) + body

    def _serve_control(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 6:
                    length = struct.unpack(">H", buf[4:6])[0]
                    if len(buf) < 6 + length:
                        break
                    frame, buf = buf[: 6 + length], buf[6 + length :]
                    reply = self._handle(frame)
                    if reply is not None:
                        conn.sendall(reply)
        except OSError:
            pass
        finally:
            close_socket(conn)

    def _handle(self, frame: bytes) -> bytes | None:
        trans_id, prot_id, _ = struct.unpack(">HHH", frame[:6])
        if prot_id == 0 or len(frame) < 7:  # standard Modbus (gripper pass-through) is not served
            return None
        reg, data = frame[6], frame[7:]
        with self._lock:
            fault = self.fault
            if fault in ("silence", "disconnect"):
                return None
            if reg == 0 and prot_id == 3:
                return None  # heartbeat frame (0,0,0,1,0,2,0,0): no answer
            out = self._register(reg, data)
            if fault == "corrupt":
                prot_id ^= 0x55  # the SDK checks the protocol id of every answer
            state = 0x10 if self.state in (4, 5) and reg == MOVE_SERVOJ else 0
            state |= (0x40 if self.error_code else 0) | (0x20 if self.warn_code else 0)
        return struct.pack(">HHHBB", trans_id, prot_id, 2 + len(out), reg, state) + out

    def _register(self, reg: int, data: bytes) -> bytes:
        if reg == GET_VERSION:
            return b"7,7,XI1303000000,AC1303000000,v2.3.0".ljust(40, b"\0")
        if reg == GET_ROBOT_SN:
            return b"XI1303000000".ljust(40, b"\0")
        if reg == MOTION_EN:
            self.enabled = bool(data[1]) if len(data) > 1 else False
            return b""
        if reg == SET_MODE:
            self.mode = data[0]
            self.state = 4  # the controller stops on a mode change until set_state(0)
            return b""
        if reg == SET_STATE:
            self.state = data[0] if (self.enabled and not self.error_code) or data[0] != 0 else 4
            if self.state == 4:
                self.q_set = self.q.copy()
            return b""
        if reg == GET_STATE:
            return bytes([self.state])
        if reg == GET_CMDNUM:
            return struct.pack(">H", self.cmd_count)
        if reg == GET_ERROR:
            return bytes([self.error_code & 0xFF, self.warn_code & 0xFF])
        if reg == MOVE_SERVOJ:
            target = np.array(struct.unpack("<7f", data[:28]))[: self.dof]
            self.servoj_count += 1
            self.servoj_last = target
            if self.mode == 1 and self.state == 0 and self.enabled:
                self.q_set = target
            return b""
        if reg == TGPIO_R16B:
            addr = struct.unpack(">H", data[1:3])[0]
            return struct.pack(">i", TOOL_BAUD_INDEX if addr == TOOL_BAUD_REGISTER else 0)
        if reg == TGPIO_W16B:
            return b""
        if reg == RS485_RTU:
            return self._gripper_modbus(data)
        return bytes(64)  # anything else: success, zeros

    def _gripper_modbus(self, data: bytes) -> bytes:
        """The xArm Gripper behind the tool RS-485 port: Modbus-RTU function 0x10 (write) and 0x03 (read)."""
        host, device, function = data[0], data[1], data[2]
        addr, count = struct.unpack(">HH", data[3:7])
        if device != GRIPPER_ID:
            return bytes([host])  # nobody else on the tool bus
        if function == 0x10:
            words = struct.unpack(f">{count}H", data[8 : 8 + 2 * count])
            self.gripper_writes += 1
            if addr == GRIPPER_ENABLE:
                self.gripper_enabled = bool(words[0])
            elif addr == GRIPPER_SPEED:
                self.gripper_speed = float(words[0])
            elif addr == GRIPPER_TARGET and count == 2:
                self.gripper_target = int(np.clip(struct.unpack(">i", data[8:12])[0], 0, 850))
            return bytes([host, device, function]) + data[3:7]
        if function == 0x03:
            if addr == GRIPPER_POSITION and count == 2:
                values = struct.pack(">i", int(round(self.gripper_pos)))
            else:  # error code, mode, ...: zeros
                values = bytes(2 * count)
            return bytes([host, device, function, len(values)]) + values
        return bytes([host, device, function | 0x80, 1])  # illegal function


if (
    __name__ == "__main__"
):  # a standalone peer for trying the backend by hand: python -m tests.peers.xarm_peer
    with XArmPeer(q0=np.array([0.0, -0.3, 0.0, 0.9, 0.0, 1.2, 0.0])) as peer:
        print(f"xArm peer on {peer.host}:{CONTROL_PORT} and :{REPORT_PORT}; Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
