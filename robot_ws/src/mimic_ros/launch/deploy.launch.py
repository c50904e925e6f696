"""ros2 launch mimic_ros deploy.launch.py set:="policy.checkpoint=runs/pp/ckpt" [session:=deploy_franka]

Thin over the session YAML (default: the twin deploy session); `mimic session up` runs the same file.
"""

from mimic_ros.session import launch_description


def generate_launch_description():
    return launch_description("deploy_twin")
