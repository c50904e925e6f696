"""Leader devices and the leader -> follower mapping (DESIGN.md 2).

- `teleop.leader`: `Leader` ABC, `LeaderReading(t, q, gripper)`, `LeaderError`, `ScriptedLeader`; the
  failure rule (a failed read raises, the caller holds the follower).
- `teleop.gello`: `GelloLeader(GelloConfig(port, calibration, follower, baudrate))` over dynamixel-sdk.
- `teleop.dynamixel`: Protocol 2.0 codec and `DynamixelBus`, the SDK wrapper that names failing servos.
- `teleop.emulated_bus`: `EmulatedDynamixelBus`, a GELLO's servos on a pty (no hardware needed).
- `teleop.mapping`: `JointMap` per follower arm, limit clipping, trigger <-> gripper width.
- `teleop.keyboard_eef`: `KeyboardEef`, keys -> TCP target pose + gripper in a workspace box (the ROS
  `keyboard_eef_node` reads a terminal and drives the controller's eef mode with it).
- `teleop.follow`: `follow(leader, arm, ...)` the teleop loop without ROS, and `plot_follow`.
Calibration files: `calibration.gello` (`mimic calibrate gello`).
"""
