"""Camera driver against an MJPEG-over-HTTP camera on 127.0.0.1 whose frames show their capture time and
number: order, frame rate, the drop counter against frames the server never sent, latency measured from
the time code and corrected in the stamps, and a stalled or vanished stream as a clear error."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mimic.calibration.latency import camera_latency, read_time_code
from mimic.robots.camera import Camera, CameraConfig, CameraError
from tests.peers.mjpeg_server import NUMBER_ROW, MjpegServer

LATENCY = 0.080


def _number(image: np.ndarray) -> int:
    return round(read_time_code(image, (NUMBER_ROW, 0)) * 1e3)


def _collect(cam: Camera, seconds: float) -> list:
    frames, t_end = [], time.monotonic() + seconds
    while time.monotonic() < t_end:
        frames.append(cam.read())
    return frames


def test_stream_order_rate_drops_and_latency_corrected_stamps() -> None:
    skipped = set(range(40, 45))
    with MjpegServer(fps=30.0, latency_s=LATENCY, skip=skipped, max_seconds=30) as server:
        with Camera(CameraConfig(source=server.url, name="scene", fps=30.0)) as cam:
            frames = _collect(cam, 3.0)
            numbers = [_number(f.image) for f in frames]
            fps = cam.measured_fps()
            dropped, missed, captured = cam.dropped, cam.missed, cam.frames
        lat, readable = camera_latency([(f.t_arrival, f.image) for f in frames])
        print(
            f"MJPEG: {fps:.1f} fps, dropped {dropped} (server skipped {len(skipped)}), missed {missed}, "
            f"latency {lat * 1e3:.1f} ms (injected {LATENCY * 1e3:.0f})"
        )
        assert numbers == sorted(set(numbers)) and not skipped & set(numbers)
        assert readable == len(frames) and len(frames) + missed >= captured - 1
        assert 24 < fps < 33
        assert len(skipped) <= dropped <= len(skipped) + 3  # a loaded machine may add a late frame or two
        assert LATENCY < lat < LATENCY + 0.05

        with Camera(CameraConfig(source=server.url, name="scene", latency_s=lat)) as cam:
            frames = _collect(cam, 1.0)
            probe = cam.latest()
            nearest = cam.frame_at(probe.t - 0.1)
        wrap = 2**20 * 1e-3  # the time code shows milliseconds modulo 2**20
        errors = [(f.t - read_time_code(f.image) + wrap / 2) % wrap - wrap / 2 for f in frames]
        # stamps are capture times; a frame delayed by load on this shared machine is late by that much
        assert np.median(np.abs(errors)) < 0.01 and np.percentile(np.abs(errors), 80) < 0.03
        assert abs(nearest.t - (probe.t - 0.1)) < 1 / 30


def test_stalled_and_closed_streams_raise_naming_the_camera() -> None:
    with MjpegServer(fps=30.0, stall_after=15, max_seconds=30) as server:
        with Camera(CameraConfig(source=server.url, name="wrist", stall_timeout_s=1.0)) as cam:
            with pytest.raises(CameraError, match=r"camera wrist .*no frame for 1.0 s"):
                _collect(cam, 5.0)
    with MjpegServer(fps=30.0, close_after=10, max_seconds=30) as server:
        cam = Camera(CameraConfig(source=server.url, name="wrist", reconnects=1, stall_timeout_s=5.0))
        with cam:
            with pytest.raises(CameraError, match="camera wrist") as err:
                _collect(cam, 8.0)
        assert "stream ended" in str(err.value) or "no frame" in str(err.value)
        assert server.clients >= 2  # the driver reopened the stream before giving up
    with pytest.raises(CameraError, match="OpenCV cannot open it"):
        Camera(CameraConfig(source=server.url)).connect()  # the server is gone
