"""Camera driver on a video file the test writes: every frame in order at the file's rate, capture stamps,
end of file, looping, and clear errors for a missing file."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from mimic.calibration.latency import read_time_code
from mimic.robots.camera import Camera, CameraConfig, CameraError
from tests.peers.mjpeg_server import NUMBER_ROW, render

FPS, N = 30.0, 45


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("video") / "numbers.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), FPS, (160, 120))
    for i in range(N):
        writer.write(cv2.cvtColor(render(i, 0.0, (120, 160)), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _number(image: np.ndarray) -> int:
    return round(read_time_code(image, (NUMBER_ROW, 0)) * 1e3)


def test_file_plays_every_frame_in_order_at_its_rate(video: str) -> None:
    cam = Camera(CameraConfig(source=video, name="file", latency_s=0.01))
    t0 = time.time()
    with cam:
        seen, stamps = [], []
        with pytest.raises(CameraError, match="end of file after 45 frames"):
            while True:
                f = cam.read(timeout=2.0)
                seen.append(_number(f.image))
                stamps.append(f)
        elapsed = time.time() - t0
    assert f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8
    assert seen == sorted(seen) and len(seen) + cam.missed == N and cam.frames == N
    assert len(seen) >= N - 5  # this loop keeps up with 30 fps
    assert cam.dropped == 0 and cam.eof
    assert all(abs(s.t - (s.t_arrival - 0.01)) < 1e-9 for s in stamps)
    assert 0.7 * N / FPS < elapsed < N / FPS + 3.0  # played at the file's rate, not as fast as it decodes
    rgb = render(0, 0.0, (120, 160))[60, 80]
    assert np.abs(stamps[0].image[60, 80].astype(int) - rgb).max() < 20  # RGB, not OpenCV's BGR


def test_loop_latest_and_frame_at(video: str) -> None:
    with Camera(CameraConfig(source=video, loop=True, fps=300.0, buffer=16)) as cam:
        deadline = time.monotonic() + 5.0
        while cam.frames < N + 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cam.frames >= N + 10  # went past the end and started over
        latest = cam.latest()
        assert latest is not None and latest.index >= N + 9
        older = cam.frame_at(latest.t - 0.02)
        assert older is not None and older.index < latest.index


def test_missing_file_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(CameraError, match=r"camera wrist \(.*nope.mp4\): no such video file"):
        Camera(CameraConfig(source=str(tmp_path / "nope.mp4"), name="wrist")).connect()
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(CameraError, match="junk.mp4"):
        Camera(CameraConfig(source=str(tmp_path / "junk.mp4"), open_timeout_s=2.0)).connect()
