"""What an evaluation run reports: outcomes per seed, the success rate with its Wilson interval, chunk timing."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

DEFAULT_SEED = 100_000  # evaluation seeds: never the scenes demonstrations were recorded on (0, 1, ...)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z = 1.96); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EvalResult:
    arm: str
    task: str
    episodes: int
    successes: int
    success_rate: float
    ci_low: float
    ci_high: float
    outcomes: list[bool] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    episode_steps: list[int] = field(default_factory=list)
    scores: list[float] = field(
        default_factory=list
    )  # per episode, the best reward seen (push_t: coverage/0.95)
    num_inference_steps: int | None = None
    n_action_steps: int = 0  # rows executed per prediction (the policy's receding horizon)
    inference_ms_p50: float = 0.0
    inference_ms_p99: float = 0.0
    wall_s: float = 0.0
    videos: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # inference-time config fields this run changed
    chunking: str = "sync"  # how chunks continued (mimic.robots.control.CHUNKING)
    inference_delay_s: str = "0"  # injected inference delay: fixed, or LO:HI uniform
    control_hz: float = 0.0
    task_time_s: float = float("nan")  # mean over the successful episodes
    motion: dict[str, float] = field(default_factory=dict)  # mimic.robots.motion.MotionQuality

    def finish(self, chunk_times_s: list[float], started: float) -> None:
        """Fill the totals from `outcomes`: successes, rate, Wilson interval, chunk p50/p99, wall time since
        `started` (time.monotonic)."""
        self.successes = int(sum(self.outcomes))
        self.success_rate = self.successes / self.episodes
        self.ci_low, self.ci_high = wilson_interval(self.successes, self.episodes)
        if chunk_times_s:
            self.inference_ms_p50 = float(np.median(chunk_times_s) * 1e3)
            self.inference_ms_p99 = float(np.percentile(chunk_times_s, 99) * 1e3)
        self.wall_s = time.monotonic() - started
        done = [n for n, ok in zip(self.episode_steps, self.outcomes, strict=False) if ok]
        if done and self.control_hz > 0:
            self.task_time_s = float(np.mean(done)) / self.control_hz

    def summary(self) -> str:
        score = f", mean score {np.mean(self.scores):.3f}" if self.task == "push_t" and self.scores else ""
        return (
            f"{self.arm}/{self.task}: success {self.successes}/{self.episodes} = {self.success_rate:.1%} "
            f"(95% CI {self.ci_low:.1%}-{self.ci_high:.1%}){score}, chunk {self.inference_ms_p50:.1f} ms p50 / "
            f"{self.inference_ms_p99:.1f} ms p99, {self.wall_s:.0f} s{self._chunking_summary()}"
        )

    def _chunking_summary(self) -> str:
        if self.chunking == "sync" and self.inference_delay_s == "0":
            return ""
        m = self.motion
        seam = f", seam/within p99 {m['vel_jump_ratio_p50']:.2f}" if m else ""
        idle = f", idle {m['idle_s_mean']:.2f} s" if m else ""
        return (
            f"; {self.chunking}, delay {self.inference_delay_s} s{seam}{idle}, task {self.task_time_s:.2f} s"
        )
