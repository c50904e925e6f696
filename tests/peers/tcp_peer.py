"""What the fixed-port TCP protocol peers share: a machine-wide lock on the ports the SDKs hard-code,
listening sockets on loopback, one thread per server and client, and fault injection.

The UR and xArm peers subclass `TcpPeer`; each lists its servers (`_listeners`) and background loops
(`_loops`), says which faults turn a connecting client away (`refuse_on`) and whether client sockets get a
receive timeout. Faults: "silence", "corrupt", "disconnect" (every client socket closed, new ones refused).
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

# One lock for every fixed-port arm peer: UR's script port and xArm's real-time report port are both 30003.
PORT_LOCK_PATH = Path("/tmp/mimic-arm-peer-ports.lock")
FAULTS = (None, "silence", "corrupt", "disconnect")


class PeerError(RuntimeError):
    pass


def acquire_port_lock(who: str, wait_s: float = 120.0):
    """Take the machine-wide lock on the SDK-fixed ports, waiting (bounded) for another run to release it."""
    f = open(PORT_LOCK_PATH, "a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise PeerError(
                    f"{who}: {PORT_LOCK_PATH} still held by {holder} after {wait_s:.0f} s (the SDKs fix "
                    f"ports 502, 29999, 30003, 30004: one arm peer per machine at a time)"
                ) from None
            time.sleep(0.1)
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} ({who})")
    f.flush()
    return f


def release_port_lock(f) -> None:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def bind_fixed(host: str, port: int, who: str, retry_s: float = 3.0) -> socket.socket:
    """A listening socket on a port the SDK hard-codes; a clear PeerError if something else keeps it busy."""
    deadline = time.monotonic() + retry_s
    while True:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind((host, port))
            break
        except OSError as e:
            srv.close()
            if time.monotonic() > deadline:
                raise PeerError(
                    f"{who}: port {host}:{port} is busy ({e.strerror}); the SDK cannot use another "
                    f"port, so stop whatever listens there"
                ) from None
            time.sleep(0.1)
    srv.listen(4)
    srv.settimeout(0.1)
    return srv


def close_socket(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


class TcpPeer:
    """Lifecycle of a fixed-port peer; subclasses call `_init_peer` and implement `_listeners`/`_loops`."""

    who = "peer"  # for errors and thread names
    refuse_on: tuple[str, ...] = ("disconnect",)  # faults under which a connecting client is closed at once
    client_timeout_s: float | None = None  # receive timeout of accepted client sockets

    def _init_peer(self, lock: threading.Lock | threading.RLock) -> None:
        self.fault: str | None = None
        self._lock = lock
        self._stop = threading.Event()
        self._lockfile = None
        self._servers: list[socket.socket] = []
        self._clients: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def _listeners(self) -> list[tuple[int, Callable[[socket.socket], None]]]:
        raise NotImplementedError

    def _loops(self) -> list[Callable[[], None]]:
        raise NotImplementedError

    def start(self):
        self._lockfile = acquire_port_lock(self.who)
        try:
            for port, handler in self._listeners():
                srv = bind_fixed(self.host, port, self.who)
                self._servers.append(srv)
                self._spawn(self._accept_loop, srv, handler)
            for loop in self._loops():
                self._spawn(loop)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stop.set()
        for s in self._servers + self._clients:
            close_socket(s)
        for th in self._threads:
            th.join(timeout=2.0)
        self._servers, self._clients, self._threads = [], [], []
        if self._lockfile is not None:
            release_port_lock(self._lockfile)
            self._lockfile = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, fault: str | None) -> None:
        """'silence', 'corrupt', 'disconnect' or None (healthy)."""
        if fault not in FAULTS:
            raise ValueError(f"{self.who}: unknown fault {fault!r}")
        with self._lock:
            self.fault = fault
            clients = list(self._clients) if fault == "disconnect" else []
        for c in clients:
            close_socket(c)

    def _spawn(self, target, *args) -> None:
        name = f"{self.who.split()[0].lower()}-peer-{target.__name__}"
        th = threading.Thread(target=target, args=args, daemon=True, name=name)
        self._threads.append(th)
        th.start()

    def _accept_loop(self, srv: socket.socket, handler) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            if self.fault in self.refuse_on:
                close_socket(conn)  # unreachable: a reconnecting client is turned away
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.client_timeout_s is not None:
                conn.settimeout(self.client_timeout_s)
            with self._lock:
                self._clients.append(conn)
            self._spawn(handler, conn)
