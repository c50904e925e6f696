"""ament_python package: `colcon build --packages-select mimic_ros` on a ROS 2 Jazzy/Humble install.

Every node is a console script in lib/mimic_ros (what launch_ros' `Node(executable=...)` runs); the session
YAML files and launch files are installed to share/mimic_ros. In the project venv the same modules run as
`python -m mimic_ros.<node>` (the supervisor's way), with no colcon step.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mimic_ros"
NODES = (
    "arm_node",
    "camera_node",
    "controller_node",
    "evaluator_node",
    "handheld_recorder_node",
    "handheld_replay_node",
    "keyboard_eef_node",
    "leader_node",
    "operator_node",
    "policy_node",
    "recorder_node",
)

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", glob(f"{PACKAGE}/config/*.yaml")),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
    ],
    install_requires=["setuptools", "pyyaml"],
    package_data={PACKAGE: ["config/*.yaml"]},
    zip_safe=True,
    maintainer="Mimic maintainers",
    maintainer_email="mimic@example.org",
    description="Mimic ROS 2 nodes and sessions (teleop, handheld, deploy)",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.{n}:main" for n in NODES]
        + [f"session = {PACKAGE}.supervisor:main", f"deploy = {PACKAGE}.deploy:main"],
    },
)
