"""The one table between dataset keys and ROS 2 topics, used by `export-mcap` and `import-mcap` alike.

The live recorder node (`mimic_ros.recorder_node`) is the source of truth; a bag of a live session and a bag
exported from a store therefore carry the same topics, types and layouts:

| dataset key            | topic                              | type                           | layout                        |
|------------------------|------------------------------------|--------------------------------|-------------------------------|
| `robot0_joint_pos`     | `/robot/joint_states`              | sensor_msgs/msg/JointState     | position[:dof]                |
| `robot0_gripper_width` | `/robot/joint_states`              | sensor_msgs/msg/JointState     | position[dof] (joint "gripper") |
| `action`               | `/robot/joint_command`             | sensor_msgs/msg/JointState     | position[:dof + 1]            |
| `object_state`         | `/objects/state`                   | sensor_msgs/msg/JointState     | position                      |
| `camera<i>_rgb`        | `/cameras/<name>/image/compressed` | sensor_msgs/msg/CompressedImage | JPEG; name = attrs.cameras[i] |
| any other lowdim key   | `/mimic/<key>`                     | sensor_msgs/msg/JointState     | position = the row, flattened |
| any other image key    | `/cameras/<key>/image/compressed`  | sensor_msgs/msg/CompressedImage | JPEG                          |
| (episode start/stop)   | `/recorder/status`                 | std_msgs/msg/String            | JSON `recording`, `episodes`  |

`/leader/joint_states` is in live bags but is no dataset stream (the recorder records the controller's
command, which is what the arm was told). An `action` whose width is not dof + 1 (an end-effector action)
is no joint command and goes to `/mimic/action`; a gripper whose capture times differ from the joints'
cannot share their message and goes to `/mimic/robot0_gripper_width`.

Times: a header stamp is the sample's capture time (`<key>_t`), converted as the recorder converts it
(`sec + nanosec * 1e-9`). A message's log time is its arrival: capture time plus the stream's latency from
the store's `latencies` attr (`stream_latency_s`).

Messages are serialized by mcap_ros2 from the definitions below (the concatenated text rosbag2 writes), so
nothing here needs rclpy.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

JOINT_STATE = "sensor_msgs/msg/JointState"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"

JOINT_STATES_TOPIC = "/robot/joint_states"
JOINT_COMMAND_TOPIC = "/robot/joint_command"
LEADER_TOPIC = "/leader/joint_states"
OBJECTS_TOPIC = "/objects/state"
RECORDER_STATUS_TOPIC = "/recorder/status"
EXTRA_PREFIX = "/mimic/"
GRIPPER_JOINT = "gripper"  # the gripper's name in the arm node's and controller's JointState (mimic_ros.msgs)
METADATA_NAME = "mimic.dataset"  # MCAP metadata record of an exported store: its attrs and routes

_HEADER = """================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""
MSGDEFS: dict[str, str] = {
    JOINT_STATE: (
        "std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort\n"
        + _HEADER
    ),
    COMPRESSED_IMAGE: "std_msgs/Header header\nstring format\nuint8[] data\n" + _HEADER,
    STRING: "string data\n",
}

_CAMERA_KEY = re.compile(r"^camera(\d+)_rgb$")
_CAMERA_TOPIC = re.compile(r"^/cameras/(.+)/image/compressed$")


@dataclass(frozen=True)
class Route:
    """Where one dataset key travels: its topic and type, and for JointState the slice of `position` it fills."""

    key: str
    topic: str
    msgtype: str
    start: int = 0
    stop: int | None = None  # None: to the end of `position`

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> Route:
        return Route(**d)


def camera_topic(name: str) -> str:
    return f"/cameras/{name}/image/compressed"


def camera_name(topic: str) -> str | None:
    """`scene` for `/cameras/scene/image/compressed`, None for any other topic."""
    m = _CAMERA_TOPIC.match(topic)
    return m.group(1) if m else None


def camera_key(index: int) -> str:
    return f"camera{index}_rgb"


def plan_routes(
    streams: dict[str, tuple[tuple[int, ...], str]],
    dof: int,
    cameras: list[str],
    gripper_with_joints: bool = True,
) -> list[Route]:
    """Routes of a store's streams ({key: (row shape, kind)}), by the table in this module's docstring.

    `cameras` names camera<i>_rgb (attrs `cameras`; `camera<i>` where it has no name); `gripper_with_joints`
    is False when the store's gripper and joint capture times differ (they cannot share one message).
    """
    routes: list[Route] = []
    for key, (shape, kind) in streams.items():
        if kind == "image":
            m = _CAMERA_KEY.match(key)
            i = int(m.group(1)) if m else -1
            name = cameras[i] if m and i < len(cameras) else (f"camera{i}" if m else key)
            routes.append(Route(key, camera_topic(name), COMPRESSED_IMAGE))
        elif key == "robot0_joint_pos" and shape == (dof,):
            routes.append(Route(key, JOINT_STATES_TOPIC, JOINT_STATE, 0, dof))
        elif (
            key == "robot0_gripper_width"
            and shape == (1,)
            and gripper_with_joints
            and "robot0_joint_pos" in streams
        ):
            routes.append(Route(key, JOINT_STATES_TOPIC, JOINT_STATE, dof, dof + 1))
        elif key == "action" and shape == (dof + 1,):
            routes.append(Route(key, JOINT_COMMAND_TOPIC, JOINT_STATE, 0, dof + 1))
        elif key == "object_state" and len(shape) == 1:
            routes.append(Route(key, OBJECTS_TOPIC, JOINT_STATE))
        else:
            routes.append(Route(key, EXTRA_PREFIX + key, JOINT_STATE))
    return routes


def live_routes(topics: dict[str, str], dof: int, has_gripper: bool, cameras: list[str]) -> list[Route]:
    """Routes of what the live recorder records, for the topics ({topic: type}) a bag holds.

    Joint states are required by the caller; the command, objects and the `cameras` (in key order) are
    recorded when their topic is there, as the recorder does when its `action`/`objects`/`cameras` are on.
    """
    routes = [Route("robot0_joint_pos", JOINT_STATES_TOPIC, JOINT_STATE, 0, dof)]
    if has_gripper:
        routes.append(Route("robot0_gripper_width", JOINT_STATES_TOPIC, JOINT_STATE, dof, dof + 1))
    if topics.get(JOINT_COMMAND_TOPIC) == JOINT_STATE:
        routes.append(Route("action", JOINT_COMMAND_TOPIC, JOINT_STATE, 0, dof + 1 if has_gripper else dof))
    if topics.get(OBJECTS_TOPIC) == JOINT_STATE:
        routes.append(Route("object_state", OBJECTS_TOPIC, JOINT_STATE))
    for i, name in enumerate(cameras):
        routes.append(Route(camera_key(i), camera_topic(name), COMPRESSED_IMAGE))
    return routes


def joint_state_names(topic: str, routes: list[Route], joint_names: list[str], width: int) -> list[str]:
    """`name` of a JointState on `topic` with `width` positions: the arm's joints (+ "gripper") on the arm's
    topics, `<key>[i]` elsewhere (as the arm node names /objects/state)."""
    if topic in (JOINT_STATES_TOPIC, JOINT_COMMAND_TOPIC):
        names = [*joint_names, GRIPPER_JOINT]
        if len(names) >= width:
            return names[:width]
    key = next(r.key for r in routes if r.topic == topic)
    return [f"{key}[{i}]" for i in range(width)]


def stream_latency_s(latencies: dict[str, Any], key: str, camera: str | None = None) -> float:
    """Capture-to-arrival latency (s) of a stream from a store's `latencies` attr; 0 where none is recorded.

    Looked up as: the key itself (`{"camera0_rgb": 0.05}`); cameras: `camera_s`, one number or one per
    camera name (`calibration.latency.LatencyCalibration`); joints and gripper: `joint_s`; objects:
    `object_s`. `arm_s` is command-to-motion, not an arrival delay, so no message is logged later for it.
    """
    own = latencies.get(key)
    if isinstance(own, int | float):
        return float(own)
    if camera is not None:
        value = latencies.get("camera_s")
        if isinstance(value, dict):
            value = value.get(camera)
    else:
        group = {"robot0_joint_pos": "joint_s", "robot0_gripper_width": "joint_s", "object_state": "object_s"}
        value = latencies.get(group.get(key, ""))
    return float(value) if isinstance(value, int | float) else 0.0


def to_ns(t: float) -> int:
    return int(round(t * 1e9))


def stamp(t_ns: int) -> dict[str, int]:
    return {"sec": t_ns // 1_000_000_000, "nanosec": t_ns % 1_000_000_000}


def stamp_to_s(sec: int, nanosec: int) -> float:
    """Exactly as the recorder reads a stamp (mimic_ros.msgs.stamp_to_s), so both see the same floats."""
    return sec + nanosec * 1e-9


def status_json(recording: bool, episodes: int) -> str:
    """A `/recorder/status` payload with the two fields episode segmentation reads (the recorder sends more)."""
    return json.dumps({"recording": recording, "episodes": episodes})
