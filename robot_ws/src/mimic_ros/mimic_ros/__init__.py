"""ROS 2 adapters."""
