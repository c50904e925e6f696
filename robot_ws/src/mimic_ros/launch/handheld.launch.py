"""ros2 launch mimic_ros handheld.launch.py [session:=handheld] [set:="recorder.path=demos.zarr"]

Thin over the session YAML (default: the handheld twin session); `mimic session up` runs the same file.
"""

from mimic_ros.session import launch_description


def generate_launch_description():
    return launch_description("handheld_twin")
