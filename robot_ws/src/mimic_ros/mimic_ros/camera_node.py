"""Camera node: one hardware camera (mimic.robots.camera: device index, video file, HTTP MJPEG) as JPEG on ROS.

Publishes /cameras/<name>/image/compressed (sensor_msgs/CompressedImage), each frame stamped with its capture
time (`arrival - latency_s`, from mimic.calibration.latency), and ~/status (JSON: frames, frames the source dropped,
frames this node skipped). If the camera stalls, `mimic.robots.camera` raises a CameraError naming it: the node
publishes nothing (the recorder then marks the episode) and tries to reconnect every `retry_s`.

    python -m mimic_ros.camera_node --ros-args -p name:=scene -p source:=0 -p latency_s:=0.045
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

from sensor_msgs.msg import CompressedImage
from std_msgs.msg import String

from mimic_ros.msgs import jpeg_image
from mimic_ros.params import ParamError, declare_config, param
from mimic_ros.runtime import ManagedNode, run_node


@dataclass
class CameraNodeConfig:
    name: str = param("scene", "camera name: topic /cameras/<name>/image/compressed")
    source: str = param("", 'device index ("0"), video file path, or http(s):// MJPEG URL')
    width: int = param(0, "requested width (px, devices only; 0 = the device's)", range=(0, 7680))
    height: int = param(0, "requested height (px, devices only; 0 = the device's)", range=(0, 4320))
    fps: float = param(0.0, "requested/nominal frame rate (Hz; 0 = the source's)", range=(0.0, 240.0))
    latency_s: float = param(0.0, "calibrated capture-to-arrival latency (s)", range=(0.0, 2.0))
    loop: bool = param(False, "video files: start over at the end")
    jpeg_quality: int = param(90, "JPEG quality of published frames", range=(10, 100))
    retry_s: float = param(
        1.0, "after a camera error, seconds between reconnection attempts", range=(0.05, 60.0)
    )


class CameraNode(ManagedNode):
    def __init__(self) -> None:
        super().__init__("camera")
        cfg = CameraNodeConfig()
        declare_config(self, cfg)
        if not cfg.source or not cfg.name:
            raise ParamError(f"{self.get_name()}: parameters source and name are required")
        from mimic.robots.camera import Camera, CameraConfig, CameraError

        self.CameraError = CameraError
        self.cfg = cfg
        self.camera = Camera(
            CameraConfig(
                source=cfg.source,
                name=cfg.name,
                width=cfg.width or None,
                height=cfg.height or None,
                fps=cfg.fps or None,
                latency_s=cfg.latency_s,
                loop=cfg.loop,
            )
        )
        try:
            self.camera.connect()
        except (CameraError, OSError) as e:
            raise ParamError(f"{self.get_name()}: {e}") from None
        self.pub = self.create_publisher(CompressedImage, f"/cameras/{cfg.name}/image/compressed", 10)
        self.status_pub = self.create_publisher(String, "~/status", 1)
        self.published = 0
        self.error: str | None = None
        self.create_timer(1.0, self._status)

    def workers(self):
        return (self._loop,)

    def _loop(self) -> None:
        while self.running:
            try:
                if not self.camera.is_connected:
                    self.camera.connect()
                frame = self.camera.read()  # CameraError after the config's stall_timeout_s without a frame
            except (self.CameraError, OSError) as e:
                if self.error is None:
                    self.get_logger().error(f"camera failed, publishing nothing: {e}")
                self.error = str(e)
                self.camera.disconnect()
                time.sleep(self.cfg.retry_s)
                continue
            if self.error is not None:
                self.get_logger().info(f"camera frames are back after: {self.error}")
                self.error = None
            self.pub.publish(jpeg_image(frame.t, frame.image, self.cfg.jpeg_quality, frame_id=self.cfg.name))
            self.published += 1

    def stats(self) -> dict:
        cam = self.camera
        return {
            "published": self.published,
            "frames": cam.frames,
            "dropped_by_source": cam.dropped,
            "skipped": cam.missed,
            "error": self.error,
        }

    def _status(self) -> None:
        self.status_pub.publish(String(data=json.dumps(self.stats())))

    def close(self) -> None:
        self.camera.disconnect()
        print(json.dumps({"camera": self.stats()}), flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_node("camera", CameraNode, argv)


if __name__ == "__main__":
    sys.exit(main())
