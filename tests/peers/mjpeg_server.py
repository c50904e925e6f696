"""An MJPEG-over-HTTP camera on 127.0.0.1 (multipart/x-mixed-replace, what IP cameras and mjpg-streamer serve).

Every frame shows, as `mimic.calibration.latency` time codes, its capture time (row 0) and its frame number
(row 8), plus the number in large digits, so a test can check order, drops and latency from the
pixels alone. Faults: `skip` (frame numbers that are captured but never sent: drops), `latency_s`
(each frame is sent that long after its capture), `stall_after` (stop sending, keep the connection),
`close_after` (drop the connection after that many frames in all). Bounded: stops after `max_seconds` whatever happens.

    python -m tests.peers.mjpeg_server --fps 30 --seconds 20     # prints the URL, serves until done
"""

from __future__ import annotations

import argparse
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from mimic.calibration.latency import draw_time_code

BOUNDARY = "mimicframe"
NUMBER_ROW = 8  # the frame-number code sits below the time code (4 px cells)


def render(number: int, t_capture: float, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    """RGB frame showing its capture time and number (both machine-readable) and the number in big digits."""
    h, w = size
    img = np.full((h, w, 3), 64, np.uint8)
    img[:, :, 2] = (number * 7) % 256  # a changing colour, so consecutive frames differ everywhere
    img = draw_time_code(img, t_capture, origin=(0, 0))
    img = draw_time_code(img, number * 1e-3, origin=(NUMBER_ROW, 0))
    cv2.putText(img, str(number), (10, h - 20), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 4)
    return img


class MjpegServer:
    def __init__(
        self,
        fps: float = 30.0,
        size: tuple[int, int] = (240, 320),
        latency_s: float = 0.0,
        skip: set[int] | None = None,
        stall_after: int | None = None,
        close_after: int | None = None,
        max_seconds: float = 60.0,
        quality: int = 90,
    ) -> None:
        self.fps, self.size, self.latency_s = fps, size, latency_s
        self.skip = set(skip or ())
        self.stall_after, self.close_after = stall_after, close_after
        self.max_seconds, self.quality = max_seconds, quality
        self.sent = 0
        self.clients = 0
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if not self.path.startswith("/stream"):
                    self.send_error(404)
                    return
                server.clients += 1
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                try:
                    server._stream(self.wfile)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._t_start = time.monotonic()
        self._thread.start()
        self._deadline = threading.Timer(max_seconds, self.stop)
        self._deadline.daemon = True
        self._deadline.start()

    def _stream(self, out) -> None:
        """Frame n is captured at t0 + n / fps (that time is drawn on it) and sent latency_s later."""
        period = 1.0 / self.fps
        perf0, wall0 = time.perf_counter(), time.time()
        n = -1
        while not self._stop.is_set():
            n += 1
            t_capture = wall0 + n * period
            delay = perf0 + n * period + self.latency_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if n in self.skip:
                continue
            if self.close_after is not None and self.sent >= self.close_after:
                return  # counted over all connections: a reconnecting client gets nothing more
            if self.stall_after is not None and n >= self.stall_after:
                self._stop.wait(self.max_seconds)
                return
            rgb = render(n, t_capture, self.size)
            ok, jpg = cv2.imencode(
                ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality]
            )
            data = jpg.tobytes()
            out.write(
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            )
            out.write(data + b"\r\n")
            out.flush()
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._deadline.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MjpegServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds between capture and send")
    args = ap.parse_args(argv)
    with MjpegServer(fps=args.fps, latency_s=args.latency, max_seconds=args.seconds) as server:
        print(server.url, flush=True)
        server._stop.wait(args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
