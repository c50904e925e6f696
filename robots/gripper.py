"""Gripper commands derived from a measured width: what a position-servoed arm gripper is sent."""

from __future__ import annotations

import numpy as np


def grasp_command(width_m: np.ndarray | float, gripper_max_m: float, close_below: float = 0.75) -> np.ndarray:
    """Arm gripper command for a handheld width: below `close_below` x max, close fully (0 m).

    The recorded width is what the fingers measured, and while holding an object that is the object's
    width: commanded as-is to a position-servoed gripper (the arm twins', most parallel grippers) it
    squeezes with almost no force and the object slips (0/5 replays on each arm twin vs 5/5 with this
    mapping). A force-limited gripper (UMI's WSG in force mode) can take the raw width instead.
    """
    w = np.asarray(width_m, float)
    return np.where(w < close_below * gripper_max_m, 0.0, np.minimum(w, gripper_max_m))
