"""Latency ground truth for the twin: what the deploy team's calibration must recover.

Every delay is a constant plus a uniform jitter in [0, jitter_s], drawn per observation or per command
from one seeded generator so a run is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LatencyConfig:
    camera_s: float = 0.0  # age of a camera frame when it is returned
    joint_state_s: float = 0.0  # age of a joint-state reading when it is returned
    command_s: float = 0.0  # from command() until the servos start tracking it
    jitter_s: float = 0.0  # uniform extra delay in [0, jitter_s] on each of the above
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("camera_s", "joint_state_s", "command_s", "jitter_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"LatencyConfig.{name} must be >= 0, got {getattr(self, name)}")
        self._rng = np.random.default_rng(self.seed)

    def draw(self, base_s: float) -> float:
        """One delay sample (seconds) for a stream whose constant part is `base_s`."""
        return base_s + (float(self._rng.uniform(0.0, self.jitter_s)) if self.jitter_s > 0 else 0.0)

    def ground_truth(self) -> dict[str, float]:
        """Mean delay per stream (constant + jitter/2), the value a calibration should measure."""
        j = self.jitter_s / 2
        return {
            "camera_s": self.camera_s + j,
            "joint_state_s": self.joint_state_s + j,
            "command_s": self.command_s + j,
        }
