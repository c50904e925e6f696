"""Conversions between ROS messages and plain values, shared by every node (stamps, joint states, JPEG)."""

from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, JointState

GRIPPER_JOINT = "gripper"


def stamp_to_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def set_stamp(stamp, t: float) -> None:
    sec = int(t)
    stamp.sec, stamp.nanosec = sec, min(int(round((t - sec) * 1e9)), 999_999_999)


def joint_state(t: float, names: list[str], position, velocity=None) -> JointState:
    msg = JointState()
    set_stamp(msg.header.stamp, t)
    msg.name = list(names)
    msg.position = [float(x) for x in position]
    if velocity is not None:
        msg.velocity = [float(x) for x in velocity]
    return msg


def jpeg_image(t: float, rgb: np.ndarray, quality: int = 90, frame_id: str = "") -> CompressedImage:
    """CompressedImage (JPEG) of an RGB uint8 HxWx3 frame; `array.array` fills msg.data in ~1 ms (PLATFORM.md)."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    msg = CompressedImage(format="jpeg")
    set_stamp(msg.header.stamp, t)
    msg.header.frame_id = frame_id
    msg.data = array.array("B", buf.tobytes())
    return msg


def decode_image(msg: CompressedImage) -> np.ndarray | None:
    """RGB uint8 HxWx3, or None if the payload is not a decodable image."""
    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
