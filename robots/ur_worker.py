"""The ur_rtde half of the UR backend, in its own process (`python -m mimic.robots.ur_worker IN OUT`).

mimic.robots.ur starts it through mimic.robots.sdk_process, so that a crash inside ur_rtde, or a call that
blocks for seconds, costs the child and never the node. The child owns RTDEReceiveInterface and
RTDEControlInterface and runs the servo loop itself: every control period it takes in the parent's
frames, samples the receive interface and re-sends the newest target with servoJ (servoj wants a fresh
target each `dt`).

Requests (parent -> child): b"C" connect (JSON: host, rate_hz, variables, stale_periods, max_clock_jump_s)
-> b"K"/b"E"; b"T" target (6 f64); b"P" forget the target and servoStop -> b"K"/b"E"; b"H" the parent
latched a fault: send nothing more; b"X" close: servoStop, stopScript, disconnect -> b"K", then exit.
Messages (child -> parent): b"S" a state sample (controller time, q, qd, servoJ calls so far), sent only
when the controller clock advanced; b"F" the child latched a fault (text) and sends nothing more.

Faults the child sees first: the controller clock not advancing for `stale_periods` of its own loop's
periods (and as long on its clock, so a child that was not scheduled does not count time it did not see),
a sample that cannot be real (non-finite, clock running backwards or jumping, joints far outside their
range), a servoJ that returns false or raises, a closed RTDE connection.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time

import numpy as np

from mimic.robots.sdk_process import REPLY_ERROR, REPLY_OK, Channel, child_channel

STATE = struct.Struct(">d6d6dQ")  # controller time, actual_q, actual_qd, servoJ calls
TARGET = struct.Struct(">6d")
Q_MARGIN_RAD = 0.5  # a measured joint this far outside its range is corrupt data, not motion


class Worker:
    def __init__(self, channel: Channel) -> None:
        self.ch = channel
        self.recv = self.ctrl = None
        self.cfg: dict = {}
        self.target: list[float] | None = None
        self.fault: str | None = None
        self.halted = False
        self.servoj_calls = 0
        self.controller_time = -1.0
        self.stale_ticks = 0
        self.fresh_at = time.monotonic()
        self.q_min = self.q_max = None

    # --- requests ------------------------------------------------------------------------------------------
    def connect(self, payload: bytes) -> None:
        import rtde_control
        import rtde_receive

        self.cfg = cfg = json.loads(payload)
        self.q_min, self.q_max = np.array(cfg["q_min"]), np.array(cfg["q_max"])
        try:
            self.recv = rtde_receive.RTDEReceiveInterface(cfg["host"], cfg["rate_hz"], cfg["variables"])
            self.ctrl = rtde_control.RTDEControlInterface(cfg["host"], cfg["rate_hz"])
        except Exception as e:  # RuntimeError from ur_rtde: refused, timeout, script did not start, ...
            self.ch.send(REPLY_ERROR, str(e).encode())
            return
        self.fresh_at = time.monotonic()
        self.ch.send(REPLY_OK, b"{}")

    def handle(self, kind: bytes, payload: bytes) -> bool:
        """One request; False when the child should exit."""
        if kind == b"T":
            self.target = list(TARGET.unpack(payload))
        elif kind == b"H":
            self.halted, self.target = True, None
        elif kind == b"P":
            self.target = None
            try:
                if self.fault is None and not self.halted:
                    self.ctrl.servoStop()
                self.ch.send(REPLY_OK, b"{}")
            except Exception as e:
                self._latch(f"servoStop failed: {e}")
                self.ch.send(REPLY_ERROR, str(e).encode())
        elif kind == b"X":
            self.close()
            return False
        return True

    def close(self) -> None:
        """Leave the robot without our program (servoStop, then stopScript, which waits for the program to end:
        the parent kills this process if that takes too long) and answer. The process then exits without
        ur_rtde's own disconnect (0.5 s per interface, holding the GIL): the kernel closes the sockets."""
        self.target = None
        ctrl = self.ctrl
        error = b""
        try:
            if ctrl is not None and ctrl.isConnected():
                if self.fault is None and not self.halted:
                    ctrl.servoStop()
                ctrl.stopScript()
        except Exception as e:  # noqa: BLE001 - the connection may already be gone
            error = str(e).encode()
        try:
            self.ch.send(REPLY_ERROR if error else REPLY_OK, error or b"{}")
        except OSError:
            pass  # the parent is gone

    # --- the servo loop ----------------------------------------------------------------------------------
    def _latch(self, message: str) -> None:
        if self.fault is None:
            self.fault, self.target = message, None
            self.ch.send(b"F", message.encode()[:3000])

    def sample(self) -> None:
        """Read the receive interface; validate a new controller sample and pass it on."""
        r, period = self.recv, 1.0 / self.cfg["rate_hz"]
        if not (r.isConnected() and self.ctrl.isConnected()):
            self._latch("RTDE connection closed by the controller")
            return
        t = r.getTimestamp()
        now = time.monotonic()
        if t == self.controller_time:
            self.stale_ticks += 1
            stale = self.cfg["stale_periods"]
            if self.stale_ticks >= stale and now - self.fresh_at >= stale * period:
                self._latch(
                    f"controller silent: its clock stuck at t={t:.4f} s for {self.stale_ticks} control "
                    f"periods ({(now - self.fresh_at) * 1e3:.1f} ms)"
                )
            return
        q, dq = np.array(r.getActualQ(), dtype=float), np.array(r.getActualQd(), dtype=float)
        previous = self.controller_time
        bad = (
            not np.isfinite(t)
            or q.shape != (6,)
            or dq.shape != (6,)
            or not np.all(np.isfinite(q))
            or not np.all(np.isfinite(dq))
            or t < previous
            or (previous >= 0 and t - previous > self.cfg["max_clock_jump_s"])
            or np.any(q < self.q_min - Q_MARGIN_RAD)
            or np.any(q > self.q_max + Q_MARGIN_RAD)
        )
        if bad:
            self._latch(f"corrupt state from the controller (t={t:.6g}, q={np.array2string(q, precision=3)})")
            return
        self.controller_time, self.fresh_at, self.stale_ticks = t, now, 0
        self.ch.send(b"S", STATE.pack(t, *q, *dq, self.servoj_calls))

    def tick(self) -> None:
        if self.fault is not None or self.halted:
            return
        try:
            self.sample()
            if self.fault is None and self.target is not None:
                period = 1.0 / self.cfg["rate_hz"]
                ok = self.ctrl.servoJ(
                    self.target, 0.0, 0.0, period, self.cfg["lookahead_time_s"], self.cfg["gain"]
                )
                self.servoj_calls += 1
                if not ok:
                    self._latch("servoJ refused (control script not running or connection lost)")
        except Exception as e:  # RuntimeError from ur_rtde when the socket is gone
            self._latch(f"{type(e).__name__}: {e}")

    def run(self) -> int:
        frame = self.ch.recv()
        if frame is None or frame[0] != b"C":
            return 1
        self.connect(frame[1])
        if self.ctrl is None:
            return 2
        period = 1.0 / self.cfg["rate_hz"]
        next_tick = time.perf_counter()
        while True:
            while self.ch.readable(next_tick - time.perf_counter()):  # requests until the tick
                frame = self.ch.recv()
                if frame is None:  # the parent is gone
                    self.ch.fd_out = -1  # nobody to answer
                    self.close()
                    return 0
                if not self.handle(*frame):
                    return 0
            self.tick()
            next_tick += period
            if next_tick < time.perf_counter():
                next_tick = time.perf_counter() + period  # fell behind: re-anchor, never burst


def main(argv: list[str]) -> int:
    worker = Worker(child_channel(argv))  # held: dropping it would run ur_rtde's slow destructors
    code = worker.run()
    sys.stdout.flush()
    os._exit(code)  # no interpreter teardown: ur_rtde's destructors would disconnect slowly again


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
