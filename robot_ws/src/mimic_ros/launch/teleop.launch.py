"""ros2 launch mimic_ros teleop.launch.py [session:=teleop_franka] [set:="recorder.path=demos.zarr"]

Thin over the session YAML (default: the twin teleop session); `mimic session up` runs the same file.
"""

from mimic_ros.session import launch_description


def generate_launch_description():
    return launch_description("teleop_twin")
