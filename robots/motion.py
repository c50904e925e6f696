"""Motion quality of an executed joint trajectory: how hard the seams between action chunks are.

Input is what the arm did, sampled at a uniform period (the twin's control steps, or a real arm's joint states
resampled), and for every period the chunk its target came from (-1 while the arm held still waiting for one).
At period k the joint velocity is v_k = (q_{k+1} - q_k) / dt and the acceleration a_k = (v_k - v_{k-1}) / dt.
A boundary is a period whose chunk differs from the one before it (a new chunk taking over, or a chunk after a
wait), except the episode's first chunk, which starts from rest under every strategy. The jump at a boundary k is |v_k - v_{k-1}| (velocity) and |a_k - a_{k-1}| (acceleration), the
largest over the joints; the same quantities between periods of one chunk give the within-chunk distribution
a seam is compared to: a seam as smooth as the chunks' insides has a ratio near 1 to their p99.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class MotionSamples:
    """Jumps pooled over episodes (rad/s and rad/s^2, the largest joint), plus time spent waiting."""

    boundary_vel: list[float] = field(default_factory=list)
    within_vel: list[float] = field(default_factory=list)
    boundary_acc: list[float] = field(default_factory=list)
    within_acc: list[float] = field(default_factory=list)
    idle_s: list[float] = field(default_factory=list)  # per episode

    def add(self, q: np.ndarray, source: np.ndarray, dt: float) -> None:
        """One episode: `q` [N + 1, dof] joint positions at the period starts and end, `source` [N] chunk ids."""
        q, source = np.asarray(q, float), np.asarray(source)
        if len(q) != len(source) + 1:
            raise ValueError(f"motion: {len(q)} joint samples for {len(source)} periods (need one more)")
        self.idle_s.append(float(np.sum(source < 0)) * dt)
        v = np.diff(q, axis=0) / dt
        a = np.diff(v, axis=0) / dt
        dv = np.abs(np.diff(v, axis=0)).max(axis=1) if len(v) > 1 else np.zeros(0)  # at k = 1..N-1
        da = np.abs(np.diff(a, axis=0)).max(axis=1) if len(a) > 1 else np.zeros(0)  # at k = 2..N-1
        first = int(np.argmax(source >= 0)) if np.any(source >= 0) else len(source)
        for k in range(first + 1, len(source)):
            if source[k] < 0:
                continue
            seam = source[k] != source[k - 1]
            (self.boundary_vel if seam else self.within_vel).append(float(dv[k - 1]))
            if k >= 2 and (seam or source[k - 2] == source[k]):
                (self.boundary_acc if seam else self.within_acc).append(float(da[k - 2]))

    def summary(self) -> MotionQuality:
        def pct(x: list[float], p: float) -> float:
            return float(np.percentile(x, p)) if x else float("nan")

        within_v, within_a = pct(self.within_vel, 99), pct(self.within_acc, 99)
        return MotionQuality(
            boundaries=len(self.boundary_vel),
            boundary_vel_jump_p50=pct(self.boundary_vel, 50),
            boundary_vel_jump_p95=pct(self.boundary_vel, 95),
            within_vel_jump_p99=within_v,
            vel_jump_ratio_p50=pct(self.boundary_vel, 50) / within_v if within_v > 0 else float("nan"),
            vel_jump_ratio_p95=pct(self.boundary_vel, 95) / within_v if within_v > 0 else float("nan"),
            boundary_acc_jump_p50=pct(self.boundary_acc, 50),
            within_acc_jump_p99=within_a,
            acc_jump_ratio_p50=pct(self.boundary_acc, 50) / within_a if within_a > 0 else float("nan"),
            idle_s_mean=float(np.mean(self.idle_s)) if self.idle_s else float("nan"),
        )


@dataclass
class MotionQuality:
    """The summary `mimic eval` and `mimic deploy` report: seam jumps against the within-chunk p99."""

    boundaries: int
    boundary_vel_jump_p50: float
    boundary_vel_jump_p95: float
    within_vel_jump_p99: float
    vel_jump_ratio_p50: float  # boundary p50 / within-chunk p99
    vel_jump_ratio_p95: float
    boundary_acc_jump_p50: float
    within_acc_jump_p99: float
    acc_jump_ratio_p50: float
    idle_s_mean: float  # per episode, waiting for a chunk

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def resample(times: np.ndarray, q: np.ndarray, t0: float, dt: float, n: int) -> np.ndarray:
    """Joint samples [len(times), dof] at irregular `times` -> [n, dof] at t0 + k dt (linear), for a real arm."""
    times, q = np.asarray(times, float), np.asarray(q, float)
    grid = t0 + dt * np.arange(n)
    return np.stack([np.interp(grid, times, q[:, j]) for j in range(q.shape[1])], axis=1)
