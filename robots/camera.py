"""OpenCV camera driver: a device index, a video file or an HTTP MJPEG stream, captured on its own thread.

    cam = Camera(CameraConfig(source="http://127.0.0.1:8080/stream.mjpg", latency_s=0.045))
    cam.connect()
    frame = cam.read()            # the next new frame: Frame(image RGB uint8 HWC, t, t_arrival, index)
    frame = cam.latest()          # newest frame, no waiting (None before the first)
    frame = cam.frame_at(t)       # the buffered frame captured nearest to time t (aligning with joints)

Timestamps are on the system clock (the ROS clock). `t_arrival` is when OpenCV handed the frame over;
`t = t_arrival - latency_s` is the capture time, with `latency_s` from `mimic.calibration.latency`
(camera_latency with a time code in view). A video file plays at its own frame rate (a camera that
happens to be a file); `loop` restarts it.

Counters: `frames` captured; `dropped`, frames the source lost, from arrival times against the
nominal frame period (configured fps, else measured over the first 60 frames), robust to frames that
arrive late and then in a burst (see `_count_drops`); `missed`, frames captured but never returned by
`read()` because a newer one replaced them (the consumer was slower than the camera). A stream that stops delivering for `stall_timeout_s`
makes `read()` raise `CameraError` naming the camera; a dropped HTTP stream is reopened a few times.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

_FFMPEG_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_LOW_LATENCY_FFMPEG = "probesize;32|analyzeduration;0|fflags;nobuffer"  # no probing delay, no buffering
_ENV_LOCK = threading.Lock()


class CameraError(RuntimeError):
    """The camera cannot deliver frames (cannot open, stream ended, stalled); the message names it."""


@dataclass
class CameraConfig:
    source: str | int  # device index (int or digits), video file path, or http(s):// MJPEG URL
    name: str = "camera0"
    width: int | None = None  # requested from a device (ignored for files and streams)
    height: int | None = None
    fps: float | None = (
        None  # device: requested rate; file: playback rate (default: the file's); all: nominal rate
    )
    latency_s: float = 0.0  # calibrated capture-to-arrival latency
    loop: bool = False  # files: start over at the end
    rgb: bool = True  # BGR (OpenCV) -> RGB (datasets, policies)
    buffer: int = 64  # frames kept for frame_at()
    open_timeout_s: float = 10.0
    stall_timeout_s: float = 2.0
    reconnects: int = 3  # streams and devices: reopen attempts after the source stops


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    t: float  # capture time, system clock (s)
    t_arrival: float
    index: int  # 0, 1, 2, ... in capture order


def source_kind(source: str | int) -> str:
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return "device"
    if isinstance(source, str) and source.split("://", 1)[0].lower() in (
        "http",
        "https",
        "rtsp",
        "tcp",
        "udp",
    ):
        return "stream"
    return "file"


class Camera:
    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        self.kind = source_kind(config.source)
        self._cap = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._frames: deque[Frame] = deque(maxlen=max(2, config.buffer))
        self._last_read_index = -1
        self._error: str | None = None
        self._eof = False
        self._period: float | None = 1.0 / config.fps if config.fps else None
        self._first_arrivals: deque[float] = deque(maxlen=60)
        self._offsets: deque[float] = deque(maxlen=30)  # t / period - frames received, over ~1 s
        self._offset_base: float | None = None
        self._received = 0
        self.frames = 0
        self.dropped = 0
        self.missed = 0
        self.reopened = 0
        self.nominal_fps: float | None = config.fps

    # --- lifecycle ---------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _label(self) -> str:
        return f"camera {self.config.name} ({self.config.source})"

    def _open(self):
        import cv2

        cfg = self.config
        if self.kind == "file" and not os.path.exists(str(cfg.source)):
            raise CameraError(f"{self._label()}: no such video file")
        if self.kind == "stream":
            # bounded waits inside FFmpeg, so a stalled stream cannot block the capture thread for ever
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(cfg.open_timeout_s * 1e3),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(cfg.stall_timeout_s * 1e3),
            ]
            with (
                _ENV_LOCK
            ):  # FFmpeg reads its options from the environment at open: set them for this open only
                before = os.environ.get(_FFMPEG_ENV)
                os.environ[_FFMPEG_ENV] = before or _LOW_LATENCY_FFMPEG
                try:
                    cap = cv2.VideoCapture(str(cfg.source), cv2.CAP_FFMPEG, timeouts)
                finally:
                    if before is None:
                        os.environ.pop(_FFMPEG_ENV, None)
        elif self.kind == "device":
            cap = cv2.VideoCapture(int(cfg.source))
            if cfg.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            if cfg.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            if cfg.fps:
                cap.set(cv2.CAP_PROP_FPS, cfg.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
        else:
            cap = cv2.VideoCapture(str(cfg.source))
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"{self._label()}: OpenCV cannot open it")
        if self.nominal_fps is None and self.kind != "stream":
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.nominal_fps = float(fps) if 0 < fps < 1000 else None
        return cap

    def connect(self) -> None:
        if self.is_connected:
            return
        self._cap = self._open()
        if self._period is None and self.kind == "device" and self.nominal_fps:
            self._period = 1.0 / self.nominal_fps
        self._stop.clear()
        self._error, self._eof = None, False
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.config.name}", daemon=True)
        self._thread.start()
        try:
            self.read(timeout=self.config.open_timeout_s)
        except CameraError:
            self.disconnect()
            raise
        with self._cond:
            self._last_read_index = -1  # the first frame stays readable

    def disconnect(self) -> None:
        """Stop capturing. The capture thread releases the OpenCV handle itself (releasing it under a
        blocked `read()` from another thread crashes OpenCV)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.stall_timeout_s + 1.0)
            if self._thread.is_alive():
                log.warning(
                    "%s: capture thread still blocked in OpenCV; it exits when the read times out",
                    self._label(),
                )
        elif self._cap is not None:
            with contextlib.suppress(Exception):
                self._cap.release()
            self._cap = None
        self._thread = None

    def __enter__(self) -> Camera:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # --- capture thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        holder = [self._cap]  # this thread owns the handle from now on (a reopen replaces it)
        self._cap = None
        try:
            self._capture(holder)
        finally:
            with contextlib.suppress(Exception):
                holder[0].release()

    def _capture(self, holder: list) -> None:
        import cv2

        cfg = self.config
        period = 1.0 / self.nominal_fps if (self.kind == "file" and self.nominal_fps) else 0.0
        next_due = time.perf_counter()
        failures = 0
        while not self._stop.is_set():
            if period:  # a file plays at its frame rate, like a camera
                delay = next_due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                next_due = max(next_due + period, time.perf_counter() - period)
            ok, bgr = holder[0].read()
            t_arrival = time.time()
            if not ok or bgr is None:
                if self.kind == "file":
                    if cfg.loop and self.frames > 0:
                        holder[0].set(cv2.CAP_PROP_POS_FRAMES, 0)
                        continue
                    self._finish(eof=True, error=f"{self._label()}: end of file after {self.frames} frames")
                    return
                failures += 1
                if failures > cfg.reconnects:
                    self._finish(error=f"{self._label()}: no frames (stream ended or device lost)")
                    return
                log.warning("%s: read failed, reopening (%d/%d)", self._label(), failures, cfg.reconnects)
                time.sleep(0.5)
                holder[0].release()
                with contextlib.suppress(CameraError):
                    holder[0] = self._open()
                    self.reopened += 1
                continue
            failures = 0
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if cfg.rgb else bgr
            self._add(Frame(image, t_arrival - cfg.latency_s, t_arrival, self.frames))

    def _add(self, frame: Frame) -> None:
        with self._cond:
            if self._frames:
                previous = self._frames[-1]
                if self._last_read_index >= 0 and previous.index > self._last_read_index:
                    self.missed += 1  # the consumer never saw `previous`
            if self.kind != "file":  # a file loses nothing: a late frame is only late
                self._count_drops(frame.t_arrival)
            self._frames.append(frame)
            self.frames += 1
            self._cond.notify_all()

    def _count_drops(self, t_arrival: float) -> None:
        """Frames the source lost, from arrival times alone.

        With period T and n frames received so far, `a = t / T - n` stays constant while nothing is lost,
        rises by one per lost frame for good, and rises only for a while when a frame is late (receiver
        load; a burst catches up). So the drops are the rise of the window minimum of `a` over its
        minimum at the start. T is the nominal fps, else measured over the first 60 frames.
        """
        self._first_arrivals.append(t_arrival)
        if self._period is None:
            if len(self._first_arrivals) < 60:
                return
            self._period = (self._first_arrivals[-1] - self._first_arrivals[0]) / (
                len(self._first_arrivals) - 1
            )
            if self._period <= 0:
                self._period = None
                return
            # replay what was seen so far on the new period
            for n, t in enumerate(self._first_arrivals):
                self._offsets.append(t / self._period - n)
            self._received = len(self._first_arrivals)
        else:
            self._offsets.append(t_arrival / self._period - self._received)
            self._received += 1
        if self._offset_base is None:
            if len(self._offsets) == self._offsets.maxlen:
                self._offset_base = min(self._offsets)
            return
        self.dropped = max(0, int(round(min(self._offsets) - self._offset_base)))

    def _finish(self, error: str, eof: bool = False) -> None:
        with self._cond:
            self._error, self._eof = error, eof
            self._cond.notify_all()

    # --- reads -------------------------------------------------------------------------------------
    def latest(self) -> Frame | None:
        with self._cond:
            return self._frames[-1] if self._frames else None

    def read(self, timeout: float | None = None) -> Frame:
        """The next frame newer than the last one `read()` returned; CameraError on end, stall or timeout."""
        timeout = self.config.stall_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._frames and self._frames[-1].index > self._last_read_index):
                if self._error is not None:
                    raise CameraError(self._error)
                if self._thread is None:
                    raise CameraError(f"{self._label()}: read() before connect()")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraError(f"{self._label()}: no frame for {timeout:.1f} s (stalled)")
                self._cond.wait(remaining)
            frame = self._frames[-1]
            self._last_read_index = frame.index
            return frame

    def frame_at(self, t: float) -> Frame | None:
        """The buffered frame whose capture time is nearest to `t` (None when nothing is buffered)."""
        with self._cond:
            frames = list(self._frames)
        if not frames:
            return None
        times = [f.t for f in frames]
        i = bisect.bisect_left(times, t)
        near = [j for j in (i - 1, i) if 0 <= j < len(frames)]
        return frames[min(near, key=lambda j: abs(times[j] - t))]

    def measured_fps(self) -> float | None:
        """Frames per second over the buffered frames."""
        with self._cond:
            if len(self._frames) < 2:
                return None
            first, last = self._frames[0], self._frames[-1]
        return (last.index - first.index) / max(last.t_arrival - first.t_arrival, 1e-9)

    @property
    def eof(self) -> bool:
        return self._eof
