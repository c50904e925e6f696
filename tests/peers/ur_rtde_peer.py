"""A UR controller peer for ur-rtde 1.6.5: RTDE v2 on 30004, the dashboard on 29999, script upload on 30003.

What it emulates (learned from the RTDE guide and ur_rtde's behaviour, written from scratch):
- RTDE (port 30004): messages are size (u16 BE, header included), type (u8), payload. 'V' protocol
  version -> accepted; 'v' controller version -> 5.11.0.0; 'O' output setup (f64 frequency + names) and
  'I' input setup (names) -> recipe id + the type of each name; 'S'/'P' start/pause the stream; 'U' from
  the client = recipe id + input values, which land in the controller's registers. Once started, each
  connection gets a data package of its output recipe at its frequency (capped at 500 Hz).
- Control script (port 30003): the first upload starts "the program" (runtime_state PLAYING, robot status
  bit 1). The program then does what ur_rtde's embedded script does with the registers: it reads the command
  from input_int_register_0 (+ offset when the upper range is used), answers in output_int_register_0
  (1 ready, 2 done with command), and for servoJ (command 11) takes q from input_double_register_0..5.
  Command 16 stops servoing, 255 stops the script. Other commands are acknowledged as done, not executed.
- Joints follow the servo target as a first-order system (`tau_s`) integrated at 500 Hz.
- Robotiq 2F-85 URCap socket (63352): SET/GET of ACT, GTO, POS, SPE, FOR; STA, OBJ, FLT read back; the
  position (0 open .. 255 closed) moves toward its target at `ROBOTIQ_TICKS_PER_S` scaled by SPE.
- Dashboard (29999): the few queries ur_rtde makes (serial number, PolyScope version, remote control,
  robot/safety mode, program state, stop/play...).

ur_rtde hard-codes the ports, so the peer takes the machine-wide arm-peer port lock (shared with the xArm
peer: both need 30003), waiting a bounded time for another run, and fails clearly if a port stays busy.
Faults (`inject`): "silence" (the controller goes quiet without closing anything: no data packages,
inputs, scripts and dashboard requests ignored, new connections accepted and never answered), "corrupt"
(data packages of the right size and recipe whose values are random bytes), "disconnect" (all client
sockets closed, no new ones accepted). `script never_stops` (admin) makes the program ignore the stop-script
command and the dashboard's `stop`, as a controller whose program will not end; `silenced_at` (stats) is
the controller clock when silence began.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque

import numpy as np

from tests.peers.tcp_peer import PeerError, TcpPeer, close_socket

RTDE_PORT, DASHBOARD_PORT, SCRIPT_PORT, ROBOTIQ_PORT = 30004, 29999, 30003, 63352
ROBOTIQ_TICKS_PER_S = 500.0  # a 2F-85 at full speed closes its 0..255 range in about half a second
SERVOJ, SERVO_STOP, STOP_SCRIPT = 11, 16, 255
READY, DONE = 1, 2
RUNTIME_STOPPED, RUNTIME_PLAYING = 1, 2

# RTDE type names and their struct codes (big-endian on the wire).
_TYPES = {
    "DOUBLE": "d",
    "VECTOR6D": "6d",
    "VECTOR3D": "3d",
    "VECTOR6INT32": "6i",
    "VECTOR6UINT32": "6I",
    "INT32": "i",
    "UINT32": "I",
    "UINT64": "Q",
    "UINT8": "B",
    "BOOL": "?",
}
_VAR_TYPES = {
    "timestamp": "DOUBLE",
    "actual_execution_time": "DOUBLE",
    "speed_scaling": "DOUBLE",
    "target_speed_fraction": "DOUBLE",
    "actual_momentum": "DOUBLE",
    "actual_main_voltage": "DOUBLE",
    "actual_robot_voltage": "DOUBLE",
    "actual_robot_current": "DOUBLE",
    "payload": "DOUBLE",
    "standard_analog_input0": "DOUBLE",
    "standard_analog_input1": "DOUBLE",
    "standard_analog_output0": "DOUBLE",
    "standard_analog_output1": "DOUBLE",
    "speed_slider_fraction": "DOUBLE",
    "actual_tool_accelerometer": "VECTOR3D",
    "payload_cog": "VECTOR3D",
    "elbow_position": "VECTOR3D",
    "robot_mode": "INT32",
    "safety_mode": "INT32",
    "safety_status": "INT32",
    "tool_output_voltage": "INT32",
    "runtime_state": "UINT32",
    "robot_status_bits": "UINT32",
    "safety_status_bits": "UINT32",
    "output_bit_registers0_to_31": "UINT32",
    "output_bit_registers32_to_63": "UINT32",
    "speed_slider_mask": "UINT32",
    "actual_digital_input_bits": "UINT64",
    "actual_digital_output_bits": "UINT64",
    "joint_mode": "VECTOR6INT32",
    "payload_inertia": "VECTOR6D",
    "standard_digital_output_mask": "UINT8",
    "standard_digital_output": "UINT8",
    "configurable_digital_output_mask": "UINT8",
    "configurable_digital_output": "UINT8",
    "tool_digital_output_mask": "UINT8",
    "tool_digital_output": "UINT8",
    "standard_analog_output_mask": "UINT8",
    "standard_analog_output_type": "UINT8",
    "standard_analog_output_0": "DOUBLE",
    "standard_analog_output_1": "DOUBLE",
    "external_force_torque": "VECTOR6D",
    "ft_raw_wrench": "VECTOR6D",
}


def var_type(name: str) -> str:
    if name in _VAR_TYPES:
        return _VAR_TYPES[name]
    if name.startswith(("target_", "actual_", "joint_")):  # joint/TCP vectors: target_q, actual_TCP_pose, ...
        return "VECTOR6D"
    if "_int_register_" in name:
        return "INT32"
    if "_double_register_" in name:
        return "DOUBLE"
    if "_bit_register_" in name:
        return "BOOL"
    return "NOT_FOUND"


class _Conn:
    """One RTDE client connection: its recipes and whether its output stream runs."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.send_lock = threading.Lock()
        self.outputs: list[str] = []
        self.output_fmt = ">"
        self.frequency = 500.0
        self.inputs: dict[int, tuple[list[str], str]] = {}
        self.started = False


class URPeer(TcpPeer):
    who = "UR peer"
    refuse_on = ("disconnect",)
    client_timeout_s = 0.2

    def __init__(
        self,
        host: str = "127.0.0.1",
        q0: np.ndarray | None = None,
        rate_hz: float = 500.0,
        tau_s: float = 0.02,
        serial_number: str = "20215300001",
    ):
        self.host = host
        self.q = np.zeros(6) if q0 is None else np.asarray(q0, dtype=float).copy()
        self.qd = np.zeros(6)
        self.servo_target = self.q.copy()
        self.rate_hz, self.tau_s, self.serial_number = rate_hz, tau_s, serial_number
        self.in_int, self.in_double = [0] * 48, [0.0] * 48
        self.out_int, self.out_double = [0] * 48, [0.0] * 48
        self.reg_offset = 0
        self.program_running = False
        self.script_never_stops = False  # the program ignores stop requests
        self.stop_requests = 0  # stop-script commands and dashboard stops received
        self.silenced_at: float | None = None  # controller clock when "silence" was injected
        self.servoing = False
        self.scripts_received = 0
        self.servoj_count = 0  # servoJ input packages received: what "nothing reached the peer" checks
        self.servoj_last: np.ndarray | None = None
        self.robotiq = {"ACT": 0, "GTO": 0, "POS": 0, "SPE": 255, "FOR": 100, "STA": 0, "OBJ": 0, "FLT": 0}
        self.robotiq_target = 0
        self.robotiq_pos = 0.0
        self.t0 = time.time()
        self._rng = np.random.default_rng(0)
        self.log: deque[str] = deque(maxlen=200)  # what the client set up and uploaded (--verbose prints it)
        self._init_peer(threading.RLock())

    # --- lifecycle (TcpPeer) ---------------------------------------------------------------------------
    def _listeners(self):
        return [
            (RTDE_PORT, self._serve_rtde),
            (DASHBOARD_PORT, self._serve_dashboard),
            (SCRIPT_PORT, self._serve_script),
            (ROBOTIQ_PORT, self._serve_robotiq),
        ]

    def _loops(self):
        return [self._controller]

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            if self._stop.is_set():
                return None
            try:
                chunk = sock.recv(n - len(buf))
            except TimeoutError:
                continue
            if not chunk:
                return None
            buf += chunk
        return buf

    # --- RTDE ----------------------------------------------------------------------------------------
    def _serve_rtde(self, sock: socket.socket) -> None:
        conn = _Conn(sock)
        try:
            while not self._stop.is_set():
                header = self._recv_exact(sock, 3)
                if header is None:
                    return
                size, kind = struct.unpack(">HB", header)
                payload = self._recv_exact(sock, size - 3) if size > 3 else b""
                if payload is None:
                    return
                self._rtde_message(conn, chr(kind), payload)
        except OSError:
            pass
        finally:
            conn.started = False
            close_socket(sock)

    def _send(self, conn: _Conn, kind: str, payload: bytes) -> None:
        with conn.send_lock:
            conn.sock.sendall(struct.pack(">HB", 3 + len(payload), ord(kind)) + payload)

    def _rtde_message(self, conn: _Conn, kind: str, payload: bytes) -> None:
        if self.fault == "silence":
            return  # a silent controller answers nothing, not even a reconnecting client's setup
        if kind == "V":
            self._send(conn, "V", b"\x01")
        elif kind == "v":
            self._send(conn, "v", struct.pack(">IIII", 5, 11, 0, 0))
        elif kind == "O":
            conn.frequency = min(struct.unpack(">d", payload[:8])[0] or 500.0, 500.0)
            conn.outputs = [n for n in payload[8:].decode().split(",") if n]
            types = [var_type(n) for n in conn.outputs]
            self.log.append(f"outputs {conn.outputs}")
            conn.output_fmt = ">" + "".join(_TYPES.get(t, "") for t in types)
            self._send(conn, "O", bytes([1]) + ",".join(types).encode())
        elif kind == "I":
            names = [n for n in payload.decode().split(",") if n]
            types = [var_type(n) for n in names]
            recipe = len(conn.inputs) + 1
            conn.inputs[recipe] = (names, ">" + "".join(_TYPES.get(t, "") for t in types))
            if any(n.startswith("input_int_register_") and int(n.rsplit("_", 1)[1]) >= 24 for n in names):
                self.reg_offset = 24
            self.log.append(f"inputs {recipe} {names}")
            self._send(
                conn, "I", bytes([recipe if "NOT_FOUND" not in types else 0]) + ",".join(types).encode()
            )
        elif kind == "S":
            conn.started = True
            self._send(conn, "S", b"\x01")
            self._spawn(self._stream, conn)
        elif kind == "P":
            conn.started = False
            self._send(conn, "P", b"\x01")
        elif kind == "U":
            recipe = payload[0]
            if recipe not in conn.inputs:
                return
            names, fmt = conn.inputs[recipe]
            values = struct.unpack(fmt, payload[1:])
            with self._lock:
                if self.fault in ("silence", "disconnect"):
                    return
                before = self.in_int[self.reg_offset]
                for name, value in zip(names, values, strict=True):
                    idx = int(name.rsplit("_", 1)[1]) if name[-1].isdigit() else -1
                    if name.startswith("input_int_register_"):
                        self.in_int[idx] = value
                    elif name.startswith("input_double_register_"):
                        self.in_double[idx] = value
                o = self.reg_offset
                if f"input_int_register_{o}" in names and self.in_int[o] == STOP_SCRIPT != before:
                    self.stop_requests += 1
                if f"input_int_register_{o}" in names and self.in_int[o] == SERVOJ:
                    self.servoj_count += 1
                    self.servoj_last = np.array(self.in_double[o : o + 6])
        else:
            self.log.append(f"unhandled RTDE message {kind!r}")

    def _values(self, conn: _Conn) -> list:
        out = []
        with self._lock:
            for name in conn.outputs:
                if name == "timestamp":
                    out.append(time.time() - self.t0)
                elif name in ("actual_q", "target_q"):
                    out.extend(self.q if name == "actual_q" else self.servo_target)
                elif name in ("actual_qd", "target_qd"):
                    out.extend(self.qd)
                elif name == "runtime_state":
                    out.append(RUNTIME_PLAYING if self.program_running else RUNTIME_STOPPED)
                elif name == "robot_status_bits":
                    out.append(0b1 | (0b10 if self.program_running else 0))  # power on, program running
                elif name == "safety_status_bits":
                    out.append(0b1)  # normal mode
                elif name == "robot_mode":
                    out.append(7)  # RUNNING
                elif name in ("safety_mode", "safety_status"):
                    out.append(1)  # NORMAL
                elif name in ("speed_scaling", "target_speed_fraction"):
                    out.append(1.0)
                elif name == "joint_mode":
                    out.extend([253] * 6)  # JOINT_RUNNING_MODE
                elif name.startswith("output_int_register_"):
                    out.append(self.out_int[int(name.rsplit("_", 1)[1])])
                elif name.startswith("output_double_register_"):
                    out.append(self.out_double[int(name.rsplit("_", 1)[1])])
                else:
                    t = var_type(name)
                    n = {"VECTOR6D": 6, "VECTOR3D": 3, "VECTOR6INT32": 6, "VECTOR6UINT32": 6}.get(t, 1)
                    zero = 0.0 if t in ("DOUBLE", "VECTOR6D", "VECTOR3D") else (False if t == "BOOL" else 0)
                    out.extend([zero] * n)
        return out

    def _stream(self, conn: _Conn) -> None:
        period = 1.0 / conn.frequency
        next_t = time.perf_counter()
        try:
            while conn.started and not self._stop.is_set():
                fault = self.fault
                if fault == "disconnect":
                    return
                if fault != "silence":
                    body = bytes([1]) + struct.pack(conn.output_fmt, *self._values(conn))
                    if fault == "corrupt":  # right size and recipe id, garbage values
                        body = body[:1] + bytes(self._rng.integers(0, 256, len(body) - 1, dtype=np.uint8))
                    self._send(conn, "U", body)
                next_t += period
                time.sleep(max(0.0, next_t - time.perf_counter()))
        except OSError:
            pass

    # --- the control program ----------------------------------------------------------------------------
    def _controller(self) -> None:
        dt = 1.0 / self.rate_hz
        alpha = 1.0 - math.exp(-dt / self.tau_s)
        next_t = time.perf_counter()
        while not self._stop.is_set():
            with self._lock:
                if self.fault != "silence":
                    self._script_step()
                    q_prev = self.q.copy()
                    if self.servoing:
                        self.q += alpha * (self.servo_target - self.q)
                    self.qd = (self.q - q_prev) / dt
                    self._robotiq_step(dt)
            next_t += dt
            time.sleep(max(0.0, next_t - time.perf_counter()))

    def _script_step(self) -> None:
        o = self.reg_offset
        if not self.program_running:
            return
        cmd = self.in_int[o]
        if cmd == 0:
            self.out_int[o] = READY
        elif cmd == SERVOJ:
            self.servo_target = np.array(self.in_double[o : o + 6])
            self.servoing = True
            self.out_int[o] = READY
        elif cmd == SERVO_STOP:
            self.servoing = False
            self.out_int[o] = DONE
        elif cmd == STOP_SCRIPT:
            if not self.script_never_stops:
                self.servoing = False
                self.program_running = False
                self.out_int[o] = 0
        else:
            self.out_int[o] = DONE

    # --- Robotiq gripper (the URCap's socket on 63352) ---------------------------------------------------
    def _robotiq_step(self, dt: float) -> None:
        g = self.robotiq
        if g["ACT"] and g["STA"] != 3:
            g["STA"] = 3  # activation completes at once here
        if g["STA"] == 3 and g["GTO"]:
            step = ROBOTIQ_TICKS_PER_S * dt * g["SPE"] / 255.0
            self.robotiq_pos += float(np.clip(self.robotiq_target - self.robotiq_pos, -step, step))
            g["OBJ"] = (
                3 if abs(self.robotiq_pos - self.robotiq_target) < 0.5 else 0
            )  # 3 = at the requested position
        g["POS"] = int(round(self.robotiq_pos))

    def _serve_robotiq(self, sock: socket.socket) -> None:
        """Robotiq URCap text protocol: `SET VAR value [VAR value ...]` -> `ack`, `GET VAR` -> `VAR value`."""
        buf = b""
        try:
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    words = line.decode().split()
                    with self._lock:
                        fault = self.fault
                        if fault in ("silence", "disconnect"):
                            continue
                        if words[:1] == ["SET"] and len(words) >= 3:
                            for var, value in zip(words[1::2], words[2::2], strict=False):
                                if var == "POS":  # the request; GET POS reports where the fingers are
                                    self.robotiq_target = min(max(int(value), 0), 255)
                                else:
                                    self.robotiq[var] = int(value)
                            answer = "ack"
                        elif words[:1] == ["GET"] and len(words) == 2 and words[1] in self.robotiq:
                            answer = f"{words[1]} {self.robotiq[words[1]]}"
                        else:
                            answer = "?"
                    sock.sendall(answer.encode() + b"\n")
        except OSError:
            pass
        finally:
            close_socket(sock)

    # --- script upload and dashboard --------------------------------------------------------------------
    def _serve_script(self, sock: socket.socket) -> None:
        data = b""
        try:
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    if data:
                        break
                    continue
                if not chunk:
                    break
                data += chunk
                if b"\nend" in data[-64:] or data.rstrip().endswith(b"end"):
                    break
        except OSError:
            pass
        if data and self.fault != "silence":
            with self._lock:
                self.scripts_received += 1
                self.log.append(f"script {len(data)} bytes: {data[:60]!r}")
                self.program_running = True
                self.in_int[self.reg_offset] = 0
                self.out_int[self.reg_offset] = READY
        close_socket(sock)

    def _serve_dashboard(self, sock: socket.socket) -> None:
        try:
            if self.fault != "silence":
                sock.sendall(b"Connected: Universal Robots Dashboard Server\n")
            buf = b""
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                if not chunk or self.fault == "disconnect":
                    return
                if self.fault == "silence":
                    continue
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    sock.sendall(self._dashboard(line.decode().strip()).encode() + b"\n")
        except OSError:
            pass
        finally:
            close_socket(sock)

    def _dashboard(self, request: str) -> str:
        self.log.append(f"dashboard {request!r}")
        with self._lock:
            running = self.program_running
        answers = {
            "get serial number": self.serial_number,
            "PolyscopeVersion": "URSoftware 5.11.0.108249 (Mar 02 2022)",
            "version": "5.11.0.108249",
            "is in remote control": "true",
            "robotmode": "Robotmode: RUNNING",
            "safetystatus": "Safetystatus: NORMAL",
            "safetymode": "Safetymode: NORMAL",
            "running": f"Program running: {'true' if running else 'false'}",
            "programState": f"{'PLAYING' if running else 'STOPPED'} <unnamed>",
            "get robot model": "UR5",
            "stop": "Stopped",
            "play": "Starting program",
            "pause": "Pausing program",
            "power on": "Powering on",
            "brake release": "Brake releasing",
            "close popup": "closing popup",
            "isProgramSaved": "true <unnamed>",
            "get loaded program": "No program loaded",
        }
        if request == "stop":
            with self._lock:
                self.stop_requests += 1
                if not self.script_never_stops:
                    self.program_running = False
                    self.servoing = False
        return answers.get(request, f"could not understand: '{request}'")


class _Admin:
    """A line protocol on an ephemeral 127.0.0.1 port so a test can steer the peer process and read counters.

    ur_rtde's constructors hold the GIL while they wait for the controller, so the peer cannot share a
    process with the SDK: it runs as `python -m tests.peers.ur_rtde_peer` and tests talk to it here.
    """

    def __init__(self, peer: URPeer):
        self.peer = peer
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind((peer.host, 0))
        self.srv.listen(2)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            with conn, conn.makefile("rw") as f:
                for line in f:
                    f.write(json.dumps(self.handle(line.split())) + "\n")
                    f.flush()

    def handle(self, words: list[str]) -> dict:
        peer = self.peer
        if words[:1] == ["inject"]:
            fault = words[1] if len(words) > 1 and words[1] != "none" else None
            with peer._lock:
                peer.silenced_at = time.time() - peer.t0 if fault == "silence" else None
            peer.inject(fault)
            return {"ok": True}
        if words[:2] == ["script", "never_stops"]:
            with peer._lock:
                peer.script_never_stops = len(words) < 3 or words[2] != "off"
            return {"ok": True}
        with peer._lock:
            return {
                "servoj_count": peer.servoj_count,
                "program_running": peer.program_running,
                "scripts_received": peer.scripts_received,
                "servoing": peer.servoing,
                "q": peer.q.tolist(),
                "fault": peer.fault,
                "robotiq": dict(peer.robotiq),
                "servoj_last": None if peer.servoj_last is None else peer.servoj_last.tolist(),
                "stop_requests": peer.stop_requests,
                "silenced_at": peer.silenced_at,
            }


class URPeerClient:
    """Test-side handle on a peer process (`procs.python("-m", "tests.peers.ur_rtde_peer", ...)`)."""

    def __init__(self, proc, timeout_s: float = 150.0):  # the peer may wait for another run's port lock
        self.proc = proc
        line, seen = "", []
        deadline = time.time() + timeout_s
        while time.time() < deadline and "READY" not in line:
            line = proc.stdout.readline()
            seen.append(line.strip())
            if not line and proc.poll() is not None:
                raise PeerError(f"UR peer exited with {proc.returncode}: {' '.join(seen).strip()}")
        if "READY" not in line:
            raise PeerError("UR peer did not report READY")
        self.admin_port = int(line.split("admin=")[1])
        self._sock = socket.create_connection(("127.0.0.1", self.admin_port), timeout=5.0)
        self._file = self._sock.makefile("rw")

    def _ask(self, text: str) -> dict:
        self._file.write(text + "\n")
        self._file.flush()
        return json.loads(self._file.readline())

    def inject(self, fault: str | None) -> None:
        self._ask(f"inject {fault or 'none'}")

    def stats(self) -> dict:
        return self._ask("stats")

    def script_never_stops(self, on: bool = True) -> None:
        self._ask(f"script never_stops {'on' if on else 'off'}")

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _exit_with_parent(parent: int) -> None:
    """A peer must never outlive the test or benchmark that started it (it holds the machine's port lock)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def _print_log(peer: URPeer) -> None:
    while True:
        while peer.log:
            print(peer.log.popleft()[:2000], flush=True)
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="UR RTDE/dashboard/script peer on 127.0.0.1 (ports fixed by ur_rtde)"
    )
    ap.add_argument(
        "--q0", type=float, nargs=6, default=[0.0, -math.pi / 2, math.pi / 2, -math.pi / 2, -math.pi / 2, 0.0]
    )
    ap.add_argument("--verbose", action="store_true", help="print what the client sets up and uploads")
    args = ap.parse_args(argv)
    # A controller streams on time; this one is a Python process whose threads wait for the GIL up to the
    # switch interval (5 ms by default) behind each other, which alone can stall its clock past the
    # backend's 3-period (6 ms) limit.
    sys.setswitchinterval(0.0005)
    peer = URPeer(q0=np.array(args.q0))
    try:
        peer.start()
    except PeerError as e:
        print(e, flush=True)
        return 2
    admin = _Admin(peer)
    signal.signal(signal.SIGTERM, _interrupt)  # terminate() stops the peer as cleanly as Ctrl-C
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    print(
        f"READY rtde={RTDE_PORT} dashboard={DASHBOARD_PORT} script={SCRIPT_PORT} admin={admin.port}",
        flush=True,
    )
    if args.verbose:
        threading.Thread(target=_print_log, args=(peer,), daemon=True).start()
    try:
        admin.serve()
    except KeyboardInterrupt:
        pass
    finally:
        peer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
