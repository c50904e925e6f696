"""Start and stop `franky-sim -s mujoco`, the libfranka protocol peer for the Franka backend.

franky-sim binds its command port (1337, gripper 1338: libfranka hard-codes them) on the first free
127.x.y.z loopback address, so two runs on one machine get different addresses and never collide; we read
the address it chose from its banner. Faults are injected on the process itself: SIGSTOP = silence
(the robot stops sending state), SIGKILL = disconnect. The simulator runs in its own process group so
it dies with the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_BANNER = re.compile(r"Connect to the server using '([0-9.]+)'")


class FrankySim:
    def __init__(self, start_timeout_s: float = 90.0):
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.host: str | None = None
        self._log: list[str] = []

    def start(self) -> str:
        """Start the simulator and return the host to connect to; raises RuntimeError with its log on failure."""
        exe = Path(sys.executable).with_name("franky-sim")
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([str(exe), "-s", "mujoco"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True, env=env)
        found = threading.Event()
        threading.Thread(target=self._pump, args=(found,), daemon=True).start()
        if not found.wait(self.start_timeout_s) or self.host is None:
            log = "".join(self._log[-20:])
            self.stop()
            raise RuntimeError(f"franky-sim did not come up within {self.start_timeout_s:.0f} s:\n{log}")
        return self.host

    def _pump(self, found: threading.Event) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:  # keep draining so the simulator never blocks on a full pipe
            self._log.append(line)
            del self._log[:-200]
            m = _BANNER.search(line)
            if m:
                self.host = m.group(1)
                found.set()
        found.set()

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        """Silence: the simulator stops stepping and sending state (the TCP connection stays open)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """Disconnect: the robot vanishes mid-stream."""
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        time.sleep(0)  # let the pump thread see EOF
