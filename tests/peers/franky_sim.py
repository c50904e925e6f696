"""Start and stop `franky-sim -s mujoco`, the libfranka protocol peer for the Franka backend.

franky-sim binds its command port (1337, gripper 1338: libfranka hard-codes them) on the first free
127.x.y.z loopback address, so two runs on one machine get different addresses and never collide; we read
the address it chose from its banner. Faults are injected on the process itself: SIGSTOP = silence
(the robot stops sending state), SIGKILL = disconnect; corrupt frames come from
`FrankaProxy` below. The simulator runs in its own process group so it dies with the test.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import struct
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
        """Start the simulator and return the host to connect to; RuntimeError with its log on failure."""
        exe = Path(sys.executable).with_name("franky-sim")
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [str(exe), "-s", "mujoco"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=env,
        )
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


class FrankaProxy:
    """A relay between libfranka and franky-sim for the fault the simulator cannot make: corrupt frames.

    libfranka talks TCP to <host>:1337 and receives robot state as UDP datagrams on a port it announces in
    its Connect message; it sends commands back to the address the state came from. The proxy listens on
    its own loopback address, connects to the simulator from that address, rewrites the announced UDP port
    to its own, and relays both directions. `inject("corrupt")` truncates every state datagram from then on
    (libfranka rejects a datagram of the wrong size), `inject("silence")` drops them, `inject("disconnect")`
    closes everything. The gripper port (1338) is not relayed: use the arm without its gripper.
    """

    PORT = 1337

    def __init__(self, sim_host: str):
        self.sim_host = sim_host
        self.host: str | None = None
        self.fault: str | None = None
        self.datagrams_to_client = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None

    def start(self) -> str:
        for x in range(2, 250):  # a free loopback address other than the simulator's
            host = f"127.0.{x}.{17 + x % 200}"
            if host == self.sim_host:
                continue
            lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                lst.bind((host, self.PORT))
            except OSError:
                lst.close()
                continue
            lst.listen(1)
            lst.settimeout(0.1)
            self._listener, self.host = lst, host
            break
        else:
            raise RuntimeError("FrankaProxy: no free 127.0.x.y address for port 1337")
        self._thread = threading.Thread(target=self._run, name="franka-proxy", daemon=True)
        self._thread.start()
        return self.host

    def inject(self, fault: str | None) -> None:
        if fault not in (None, "silence", "corrupt", "disconnect"):
            raise ValueError(f"FrankaProxy: unknown fault {fault!r}")
        self.fault = fault

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._listener is not None:
            self._listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                self._relay(client)
            except OSError:
                pass
            finally:
                client.close()

    def _relay(self, client: socket.socket) -> None:
        sim = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sim.bind((self.host, 0))  # the simulator sends its UDP state to our TCP source address
        sim.connect((self.sim_host, self.PORT))
        udp_sim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # faces the simulator
        udp_sim.bind((self.host, 0))
        udp_client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # faces libfranka
        udp_client.bind((self.host, 0))
        client_udp: tuple[str, int] | None = None
        sim_udp: tuple[str, int] | None = None
        first = True
        socks = [client, sim, udp_sim, udp_client]
        try:
            while not self._stop.is_set() and self.fault != "disconnect":
                readable, _, _ = select.select(socks, [], [], 0.05)
                for s in readable:
                    if s is client:
                        data = client.recv(65536)
                        if not data:
                            return
                        if first and len(data) >= 16:  # Connect: <III header, then <HH version, udp port
                            version, port = struct.unpack_from("<HH", data, 12)
                            client_udp = (client.getpeername()[0], port)
                            data = (
                                data[:12] + struct.pack("<HH", version, udp_sim.getsockname()[1]) + data[16:]
                            )
                            first = False
                        sim.sendall(data)
                    elif s is sim:
                        data = sim.recv(65536)
                        if not data:
                            return
                        client.sendall(data)
                    elif s is udp_sim:
                        data, sim_udp = udp_sim.recvfrom(65536)
                        if client_udp is None or self.fault == "silence":
                            continue
                        if self.fault == "corrupt":
                            data = data[: len(data) // 2]
                        udp_client.sendto(data, client_udp)
                        self.datagrams_to_client += 1
                    elif s is udp_client:
                        data, _ = udp_client.recvfrom(65536)
                        if sim_udp is not None and self.fault != "silence":
                            udp_sim.sendto(data, sim_udp)
        finally:
            for s in (sim, udp_sim, udp_client):
                s.close()
