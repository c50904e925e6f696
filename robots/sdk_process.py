"""A vendor SDK that can crash the process runs in a child process behind a small pipe protocol.

A segfault inside a C++ SDK (ur_rtde was seen to crash inside its own reconnect path) must become a
latched fault with a clear message, not a dead node; and an SDK call that blocks for seconds (ur_rtde
reconnects from inside `servoJ`, `stopScript` waits for the program to end) must not hold anything the
parent's watchdog or shutdown needs. `SdkProcess` starts `python -m <module> <fd_in> <fd_out>` with two
pipes; the child serves requests and streams samples back.

Frames, both ways: kind (1 byte), payload length (u32 big-endian), payload. Frames stay under PIPE_BUF
(4096 bytes), so a write is atomic. The parent writes non-blocking: a child that stops reading (stuck in
its SDK) makes `send` raise `ChildGone` at once instead of blocking the caller. Replies to `request` are
kinds b"K" (ok, payload = JSON) and b"E" (error text); every other kind goes to `on_message`. The child's
stdout and stderr are kept as a ring of lines that the exit message quotes; `on_exit(message)` runs once
when the child is gone (crashed, killed, or exited), from the reader thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

FRAME = struct.Struct(">cI")
MAX_FRAME = 4000  # < PIPE_BUF: one write, never interleaved, never partial
REPLY_OK, REPLY_ERROR = b"K", b"E"


class ChildGone(RuntimeError):
    """The child process is gone, or not reading its pipe."""


class Channel:
    """One direction pair of pipe file descriptors with the frame format above."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in, self.fd_out = fd_in, fd_out
        self._buf = bytearray()

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        frame = FRAME.pack(kind, len(payload)) + payload
        if len(frame) > MAX_FRAME:
            raise ValueError(f"frame of {len(frame)} bytes is over {MAX_FRAME}")
        os.write(self.fd_out, frame)  # atomic under PIPE_BUF: all of it, or BlockingIOError

    def readable(self, timeout_s: float) -> bool:
        """A frame (or part of one) is waiting, within `timeout_s`."""
        if len(self._buf) >= FRAME.size:
            return True
        ready, _, _ = select.select([self.fd_in], [], [], max(0.0, timeout_s))
        return bool(ready)

    def recv(self) -> tuple[bytes, bytes] | None:
        """The next frame, blocking; None at end of file (the other side closed or died)."""
        while True:
            if len(self._buf) >= FRAME.size:
                kind, n = FRAME.unpack_from(self._buf)
                if len(self._buf) >= FRAME.size + n:
                    payload = bytes(self._buf[FRAME.size : FRAME.size + n])
                    del self._buf[: FRAME.size + n]
                    return kind, payload
            try:
                chunk = os.read(self.fd_in, 65536)
            except OSError:
                return None
            if not chunk:
                return None
            self._buf += chunk


def child_channel(argv: list[str]) -> Channel:
    """The child's end: file descriptors from its command line; the child dies with its parent."""
    _die_with_parent()
    return Channel(int(argv[0]), int(argv[1]))


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: if the parent dies (even by SIGKILL) the kernel kills the child, closing the
    connections it holds to the robot, so no orphan keeps streaming."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    if os.getppid() == 1:
        os._exit(1)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return f"died of {signal.Signals(-returncode).name}"
        except ValueError:
            return f"died of signal {-returncode}"
    return f"exited with status {returncode}"


class SdkProcess:
    """The parent's handle on one SDK child process (see the module docstring)."""

    def __init__(
        self,
        module: str,
        what: str,
        on_message: Callable[[bytes, bytes], None],
        on_exit: Callable[[str], None],
        log_lines: int = 20,
    ) -> None:
        self.module, self.what = module, what
        self.on_message, self.on_exit = on_message, on_exit
        self.log: deque[str] = deque(maxlen=log_lines)
        self.proc: subprocess.Popen | None = None
        self._channel: Channel | None = None
        self._write_lock = threading.Lock()  # held only around one non-blocking write
        self._request_lock = threading.Lock()  # one request in flight
        self._reply: tuple[bytes, bytes] | None = None
        self._reply_ready = threading.Event()
        self._exited = threading.Event()
        self.exit_message: str | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self._exited.is_set()

    def start(self) -> None:
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, str(child_r), str(child_w)],
                pass_fds=(child_r, child_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        finally:
            os.close(child_r)
            os.close(child_w)
        os.set_blocking(parent_w, False)
        self._channel = Channel(parent_r, parent_w)
        for target, name in ((self._read, "reader"), (self._drain_output, "output")):
            threading.Thread(target=target, name=f"{self.what}-{name}", daemon=True).start()

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        """Non-blocking; ChildGone if the child is gone or has not read its pipe for a while."""
        if self._channel is None or self._exited.is_set():
            raise ChildGone(f"{self.what} {self.exit_message or 'is not running'}")
        try:
            with self._write_lock:
                self._channel.send(kind, payload)
        except BlockingIOError:
            raise ChildGone(f"{self.what} is not reading its requests (stuck inside the SDK)") from None
        except OSError as e:
            raise ChildGone(f"{self.what} {self.exit_message or f'pipe closed ({e.strerror})'}") from None

    def request(self, kind: bytes, payload: bytes = b"", timeout_s: float = 1.0) -> tuple[bool, bytes]:
        """Send and wait for the reply: (True, JSON payload) or (False, error text); ChildGone on timeout
        or when the child dies meanwhile."""
        with self._request_lock:
            self._reply_ready.clear()
            self._reply = None
            self.send(kind, payload)
            deadline = time.monotonic() + timeout_s
            while not self._reply_ready.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                if self._exited.is_set():
                    raise ChildGone(f"{self.what} {self.exit_message}")
                if time.monotonic() >= deadline:
                    raise ChildGone(f"{self.what}: no answer to {kind.decode()!r} within {timeout_s:.2f} s")
            reply_kind, reply = self._reply
            return reply_kind == REPLY_OK, reply

    def pending(self) -> bool:
        """A frame from the child is waiting that the reader thread has not taken yet (it lacks the CPU)."""
        if self._channel is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            ready, _, _ = select.select([self._channel.fd_in], [], [], 0.0)
            return bool(ready)
        return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def close(self, timeout_s: float = 0.5) -> None:
        """Wait up to `timeout_s` for the child to exit, then kill it; release the pipes."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.0, timeout_s))
        except subprocess.TimeoutExpired:
            self.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=1.0)
        self._exited.wait(0.5)
        if self._channel is not None:
            with self._write_lock:  # a late send must not write into a reused descriptor
                with contextlib.suppress(OSError):
                    os.close(self._channel.fd_out)
                self._channel.fd_out = -1

    # --- threads ------------------------------------------------------------------------------------------
    def _read(self) -> None:
        channel = self._channel
        while True:
            frame = channel.recv()
            if frame is None:
                break
            kind, payload = frame
            if kind in (REPLY_OK, REPLY_ERROR):
                self._reply = (kind, payload)
                self._reply_ready.set()
            else:
                try:
                    self.on_message(kind, payload)
                except Exception as e:  # noqa: BLE001 - a bad frame is the child's fault; report, keep reading
                    self.log.append(f"bad {kind!r} frame: {type(e).__name__}: {e}")
        returncode = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            returncode = self.proc.wait(timeout=1.0)
        last = " | ".join(line for line in self.log if line)[-600:]
        self.exit_message = describe_exit(returncode) + (f" (its last output: {last})" if last else "")
        with contextlib.suppress(OSError):
            os.close(channel.fd_in)
        channel.fd_in = -1
        self._exited.set()
        self.on_exit(self.exit_message)

    def _drain_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.log.append(raw.decode(errors="replace").strip())
