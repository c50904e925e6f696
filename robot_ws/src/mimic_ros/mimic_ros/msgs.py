"""Conversions between ROS messages and plain values, shared by every node (stamps, joint states, JPEG, chunks).

End-effector chunks (controller `mode:=eef`, policy node with an end-effector policy) travel on
`EEF_CHUNK_TOPIC` as the standard trajectory_msgs/MultiDOFJointTrajectory, with this convention:
- `joint_names` = ["tcp", "gripper"]; every point has exactly two `transforms`, in that order;
- transforms[0]: the TCP pose in the arm's base frame (the twins' world frame; `header.frame_id` "base"):
  translation in m, rotation a unit quaternion (ROS x, y, z, w);
- transforms[1]: the gripper, its opening width (m) in `translation.x` (everything else 0 / identity);
- `header.stamp` = the time the first point is to be executed, `time_from_start` of each point relative to it
  and uniformly spaced (as the joint chunks on /policy/action_chunk); velocities/accelerations are unused.
Internally a point is the row [tcp position (3), axis-angle (3), gripper width] (mimic.robots.eef_control).
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Quaternion, Transform, Vector3
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CompressedImage, JointState
from trajectory_msgs.msg import MultiDOFJointTrajectory, MultiDOFJointTrajectoryPoint

GRIPPER_JOINT = "gripper"
EEF_CHUNK_TOPIC = "/policy/eef_chunk"
EEF_JOINTS = ("tcp", GRIPPER_JOINT)
EEF_FRAME = "base"
SINGLE_POINT_DT = 0.1  # spacing assumed for a one-point chunk (as controller_node.chunk_from_msg)


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


def eef_chunk_msg(
    t_start: float, dt: float, rows: np.ndarray, frame_id: str = EEF_FRAME
) -> MultiDOFJointTrajectory:
    """[N, 7] rows [tcp pos, axis-angle, gripper width] executing at t_start + i * dt -> the message above."""
    rows = np.asarray(rows, float)
    quats = Rotation.from_rotvec(rows[:, 3:6]).as_quat()  # x, y, z, w
    msg = MultiDOFJointTrajectory()
    set_stamp(msg.header.stamp, t_start)
    msg.header.frame_id = frame_id
    msg.joint_names = list(EEF_JOINTS)
    for i, (row, q) in enumerate(zip(rows, quats, strict=True)):
        ns = int(round(i * dt * 1e9))
        tcp = Transform(
            translation=Vector3(x=row[0], y=row[1], z=row[2]),
            rotation=Quaternion(x=q[0], y=q[1], z=q[2], w=q[3]),
        )
        gripper = Transform(translation=Vector3(x=float(row[6])))
        msg.points.append(
            MultiDOFJointTrajectoryPoint(
                transforms=[tcp, gripper], time_from_start=Duration(sec=ns // 10**9, nanosec=ns % 10**9)
            )
        )
    return msg


def eef_chunk_from_msg(msg: MultiDOFJointTrajectory) -> tuple[float, float, np.ndarray] | None:
    """(t_start, dt, rows [N, 7]) from a message following the convention above; None if it does not (wrong
    joint names or transform count, non-uniform spacing, a quaternion that is not unit length, NaN)."""
    if list(msg.joint_names) != list(EEF_JOINTS) or not msg.points:
        return None
    if any(len(p.transforms) != 2 for p in msg.points):
        return None
    tfs = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])
    if len(tfs) > 1:
        steps = np.diff(tfs)
        if np.ptp(steps) > 1e-4 or steps.min() <= 0:
            return None
        dt = float(steps.mean())
    else:
        dt = SINGLE_POINT_DT
    tcp = [p.transforms[0] for p in msg.points]
    pos = np.array([[t.translation.x, t.translation.y, t.translation.z] for t in tcp])
    quat = np.array([[t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w] for t in tcp])
    width = np.array([p.transforms[1].translation.x for p in msg.points])
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat)) and np.all(np.isfinite(width))):
        return None
    if np.any(np.abs(np.linalg.norm(quat, axis=1) - 1.0) > 1e-3):
        return None
    rows = np.column_stack([pos, Rotation.from_quat(quat).as_rotvec(), width])
    return stamp_to_s(msg.header.stamp) + float(tfs[0]), dt, rows
