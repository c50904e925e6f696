"""MuJoCo twins of the supported arms: tasks with a gym-style API, scripted experts, the TwinArm backend."""

from mimic.sim.env import TASKS, Randomization, TwinEnv, make_env
from mimic.sim.expert import Expert, make_expert
from mimic.sim.latency import LatencyConfig

__all__ = ["TASKS", "Expert", "LatencyConfig", "Randomization", "TwinEnv", "make_env", "make_expert"]
