"""MuJoCo twins of the supported arms: tasks with a gym-style API, scripted experts, the TwinArm backend."""

from sim.env import TASKS, TwinEnv, make_env
from sim.expert import Expert, make_expert

__all__ = ["TASKS", "Expert", "TwinEnv", "make_env", "make_expert"]
