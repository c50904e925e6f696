"""Leader devices and the leader -> follower mapping (DESIGN.md 2).

- `mimic.teleop.leader`: `Leader` ABC, `LeaderReading(t, q, gripper)`, `LeaderError`, `ScriptedLeader`; the
  failure rule (a failed read raises, the caller holds the follower).
- `mimic.teleop.gello`: `GelloLeader(GelloConfig(port, calibration, follower, baudrate))` over dynamixel-sdk.
- `mimic.teleop.gello_calibration`: `GelloCalibration`, the leader's calibration file (offsets, signs, trigger
  range) the driver and the emulated bus read; `mimic.calibration.gello` (`mimic calibrate gello`) writes it.
- `mimic.teleop.dynamixel`: Protocol 2.0 codec and `DynamixelBus`, the SDK wrapper that names failing servos.
- `mimic.teleop.emulated_bus`: `EmulatedDynamixelBus`, a GELLO's servos on a pty (no hardware needed).
- `mimic.teleop.mapping`: `JointMap` per follower arm, limit clipping, trigger <-> gripper width.
- `mimic.teleop.keyboard_eef`: `KeyboardEef`, keys -> TCP target pose + gripper in a workspace box (the ROS
  `keyboard_eef_node` reads a terminal and drives the controller's eef mode with it).
- `mimic.teleop.follow`: `follow(leader, arm, ...)` the teleop loop without ROS, and `plot_follow`.
"""
