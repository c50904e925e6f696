"""Controller logic between a target source (leader arm or policy chunks) and an Arm, in plain Python.

Both controllers are clocked by the caller (`target(t_now)` once per control tick) so the same code
runs in the ROS controller node, in tests with synthetic time and in benchmarks.

Safety rule (the one documented rule, shared by both controllers, applied to every output):
1. Input that is not finite, or a chunk of the wrong shape or with a non-positive `dt`, is refused
   as a whole and counted (`refused`); the controller keeps what it had.
2. Joint targets are clipped into `[q_min + margin, q_max - margin]`, the gripper into its range
   (`clipped_position` counts outputs where a clip happened).
3. The step from the previous output is clipped per joint to `velocity_scale * dq_max * dt`, where
   `dt` is the time since the previous output, at most one control period (`clipped_velocity`).
   `velocity_scale` (default 0.5) leaves margin for jitter: the backend's `mimic.robots.arm.CommandGuard`
   measures the spacing of commands as they arrive, which can be shorter than the controller's tick.
4. With a workspace box, an output whose flange position leaves the box is not sent: the previous
   output is held instead (`workspace`).
Since the previous output is inside the limits and 2. and 3. only shrink towards it, no output ever
leaves the joint limits or exceeds the velocity limits.

`target()` returns None when there is nothing fresh to follow (stale leader, no chunk, chunk ran
out): the caller sends nothing and a position-controlled arm holds its last target.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mimic.robots.spec import ArmSpec

log = logging.getLogger(__name__)


@dataclass
class SafetyCounters:
    """How often each rule of the safety rule above fired; the controller node publishes these."""

    refused: int = 0
    clipped_position: int = 0
    clipped_velocity: int = 0
    workspace: int = 0
    stale_ticks: int = 0
    stale_chunks: int = 0
    out_of_order: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def parse_workspace(text: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """A `workspace` parameter 'xmin,ymin,zmin,xmax,ymax,zmax' (m, base frame) -> (lo, hi); '' -> None.

    The one format of the controller's flange box and the keyboard teleop's TCP box; ValueError otherwise."""
    if not text.strip():
        return None
    try:
        v = [float(x) for x in text.split(",")]
    except ValueError:
        v = []
    if len(v) != 6 or not all(a < b for a, b in zip(v[:3], v[3:], strict=True)):
        raise ValueError(f"workspace {text!r} is not 'xmin,ymin,zmin,xmax,ymax,zmax' with min < max")
    return tuple(v[:3]), tuple(v[3:])


@dataclass(frozen=True)
class WorkspaceBox:
    """Axis-aligned box (base frame, meters) the flange must stay in; `fk(q)` gives the 4x4 flange pose."""

    lo: np.ndarray
    hi: np.ndarray
    fk: Callable[[np.ndarray], np.ndarray]

    def contains(self, q: np.ndarray) -> bool:
        p = np.asarray(self.fk(q))[:3, 3]
        return bool(np.all(p >= self.lo) and np.all(p <= self.hi))


@dataclass
class Limiter:
    """Applies rules 2-4 of the safety rule to one output relative to the previous one."""

    spec: ArmSpec
    rate_hz: float
    velocity_scale: float = 0.5
    margin: float = 1e-3
    workspace: WorkspaceBox | None = None
    counters: SafetyCounters = field(default_factory=SafetyCounters)
    _q: np.ndarray | None = field(default=None, init=False)
    _g: float = field(default=0.0, init=False)
    _t: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.velocity_scale <= 1.0:
            raise ValueError(f"velocity_scale {self.velocity_scale} must be in (0, 1]")
        if self.rate_hz <= 0:
            raise ValueError(f"rate_hz {self.rate_hz} must be positive")
        self.lo = np.asarray(self.spec.q_min, float) + self.margin
        self.hi = np.asarray(self.spec.q_max, float) - self.margin

    @property
    def last(self) -> tuple[np.ndarray, float] | None:
        return None if self._q is None else (self._q.copy(), self._g)

    def reset(self, q: np.ndarray, gripper: float, t: float) -> None:
        """Start from the measured state (pulled inside the limits, so rule 3 has a valid reference)."""
        self._q = np.clip(np.asarray(q, float).reshape(-1), self.lo, self.hi)
        self._g = float(np.clip(gripper, self.spec.gripper_min, self.spec.gripper_max))
        self._t = float(t)

    def apply(self, q_des: np.ndarray, g_des: float, t: float) -> tuple[np.ndarray, float]:
        if self._q is None:
            raise RuntimeError("controller used before reset(q_measured, gripper, t)")
        dt = float(np.clip(t - self._t, 0.0, 1.0 / self.rate_hz))
        q = np.clip(q_des, self.lo, self.hi)
        g = float(np.clip(g_des, self.spec.gripper_min, self.spec.gripper_max))
        if np.any(q != q_des) or g != g_des:
            self.counters.clipped_position += 1
        max_step = self.velocity_scale * np.asarray(self.spec.dq_max, float) * dt
        step = q - self._q
        clipped = np.clip(step, -max_step, max_step)
        if np.any(clipped != step):
            self.counters.clipped_velocity += 1
        q = self._q + clipped
        if self.workspace is not None and not self.workspace.contains(q):
            self.counters.workspace += 1
            q = self._q.copy()
        self._q, self._g, self._t = q, g, float(t)
        return q.copy(), g


class FollowController:
    """Follow a leader arm: newest leader target, clipped and rate-limited; hold when the leader goes stale."""

    def __init__(
        self,
        spec: ArmSpec,
        rate_hz: float,
        stale_after_s: float = 0.1,
        velocity_scale: float = 0.5,
        workspace: WorkspaceBox | None = None,
    ) -> None:
        self.spec = spec
        self.rate_hz = rate_hz
        self.stale_after_s = stale_after_s
        self.limiter = Limiter(spec, rate_hz, velocity_scale=velocity_scale, workspace=workspace)
        self.counters = self.limiter.counters
        self._leader: tuple[float, np.ndarray, float] | None = None
        self._was_stale = False

    def reset(self, q_measured: np.ndarray, gripper: float, t: float) -> None:
        self.limiter.reset(q_measured, gripper, t)

    def set_leader(self, t_capture: float, q: np.ndarray, gripper: float) -> bool:
        """Store a leader target (already mapped to follower joints). Older or non-finite ones are refused."""
        q = np.asarray(q, float).reshape(-1)
        if q.shape[0] != self.spec.dof or not np.all(np.isfinite(q)) or not np.isfinite(gripper):
            self.counters.refused += 1
            return False
        if self._leader is not None and t_capture < self._leader[0]:
            self.counters.out_of_order += 1
            return False
        self._leader = (float(t_capture), q.copy(), float(gripper))
        return True

    def target(self, t_now: float) -> tuple[np.ndarray, float] | None:
        if self._leader is None or t_now - self._leader[0] > self.stale_after_s:
            self.counters.stale_ticks += 1
            if not self._was_stale and self._leader is not None:
                log.warning(
                    "%s: leader stale for > %.0f ms, holding pose", self.spec.name, self.stale_after_s * 1e3
                )
            self._was_stale = True
            return None
        self._was_stale = False
        _, q, g = self._leader
        return self.limiter.apply(q, g, t_now)


@dataclass(frozen=True)
class Chunk:
    """A timed action chunk: point i executes at `t_start + i * dt`; rows are `[q (dof), gripper]`."""

    t_start: float
    dt: float
    positions: np.ndarray

    @property
    def t_end(self) -> float:
        return self.t_start + (len(self.positions) - 1) * self.dt

    def at(self, t: float) -> np.ndarray:
        """Linear interpolation between points; clamped to the first/last point outside the chunk."""
        s = (t - self.t_start) / self.dt
        n = len(self.positions)
        if s <= 0 or n == 1:
            return self.positions[0]
        if s >= n - 1:
            return self.positions[-1]
        i = int(s)
        w = s - i
        return (1.0 - w) * self.positions[i] + w * self.positions[i + 1]


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


# How a deployed chunk policy continues its chunks (`mimic deploy/eval --chunking`, the policy and controller nodes'
# `chunking` parameter):
# - sync: each chunk is computed while the arm waits, and only its executed rows are sent (the baseline);
# - switch: the next chunk is computed while the current one runs and replaces it at its first executable row;
# - ensemble: ACT's temporal ensembling, every chunk covering a time step averaged with exponential weights;
# - blend: the new chunk is blended in from the old one's trajectory over `blend_s` (smoothstep);
# - rtc: real-time chunking, the new chunk computed to continue the executing one (mimic.policies.realtime), then
#   switched in like `switch`.
CHUNKING = ("sync", "switch", "ensemble", "blend", "rtc")
CONTINUATIONS = ("switch", "blend", "ensemble")


def continuation_of(chunking: str) -> str:
    """The ChunkController continuation a chunking strategy runs with; ValueError naming an unknown one."""
    if chunking not in CHUNKING:
        raise ValueError(f"chunking {chunking!r} is not one of {', '.join(CHUNKING)}")
    return chunking if chunking in CONTINUATIONS else "switch"


def ensemble_weights(n: int, decay: float) -> np.ndarray:
    """ACT's temporal-ensembling weights for `n` chunks covering one time step, oldest first: exp(-decay * i),
    normalised to sum to one (decay > 0 favours the older chunks, as ACT does; 0 is a plain mean)."""
    if n < 1:
        raise ValueError("ensemble_weights: no chunk covers the step")
    w = np.exp(-decay * np.arange(n, dtype=float))
    return w / w.sum()


class ChunkController:
    """Execute timed action chunks from a policy at the control rate.

    `lead_s` is the arm's command-to-motion latency: at wall time `t` the controller sends the chunk's
    value for `t + lead_s`, so that the arm moves there at the chunk's stamped time (DESIGN.md 4).
    Points whose time has passed are therefore never sent. How a new chunk takes over from the one running
    (`continuation`, see CHUNKING): `switch` at the new chunk's first row; `blend` over `blend_s` (smoothstep from
    the old chunk's trajectory to the new one, so the target's velocity does not jump); `ensemble` averages every
    chunk that covers the time with `ensemble_weights(n, ensemble_decay)`. `source` names the chunk the last target
    came from (its `t_start`; the newest contributing one), which is how motion quality finds chunk boundaries.
    """

    MAX_CHUNKS = 8  # chunks kept for ensembling; older ones cannot cover the present at sane horizons

    def __init__(
        self,
        spec: ArmSpec,
        rate_hz: float,
        lead_s: float = 0.0,
        blend_s: float = 0.1,
        velocity_scale: float = 0.5,
        workspace: WorkspaceBox | None = None,
        continuation: str = "blend",
        ensemble_decay: float = 0.01,
    ) -> None:
        if continuation not in CONTINUATIONS:
            raise ValueError(f"continuation {continuation!r} is not one of {', '.join(CONTINUATIONS)}")
        self.spec = spec
        self.rate_hz = rate_hz
        self.lead_s = lead_s
        self.blend_s = blend_s if continuation == "blend" else 0.0
        self.continuation = continuation
        self.ensemble_decay = ensemble_decay
        self.limiter = Limiter(spec, rate_hz, velocity_scale=velocity_scale, workspace=workspace)
        self.counters = self.limiter.counters
        self.chunks: list[Chunk] = []  # oldest first; the last one is the newest accepted
        self._t_switch: float | None = None
        self._was_stale = False
        self.source: float | None = None

    @property
    def chunk(self) -> Chunk | None:
        """The newest accepted chunk."""
        return self.chunks[-1] if self.chunks else None

    def reset(self, q_measured: np.ndarray, gripper: float, t: float) -> None:
        self.limiter.reset(q_measured, gripper, t)
        self.chunks = []
        self.source = None

    def set_chunk(self, t_start: float, dt: float, positions: np.ndarray, t_now: float | None = None) -> bool:
        """Accept a chunk unless it is malformed, older than the current one, or (given `t_now`) already over."""
        p = np.asarray(positions, float)
        if (
            p.ndim != 2
            or p.shape[0] < 1
            or p.shape[1] != self.spec.dof + 1
            or not np.all(np.isfinite(p))
            or not np.isfinite(t_start)
            or not (np.isfinite(dt) and dt > 0)
        ):
            self.counters.refused += 1
            return False
        chunk = Chunk(float(t_start), float(dt), p.copy())
        if self.chunks and chunk.t_start < self.chunks[-1].t_start:
            self.counters.out_of_order += 1
            return False
        if t_now is not None and chunk.t_end < t_now + self.lead_s:
            self.counters.stale_chunks += 1
            return False
        self.chunks = [*self.chunks[-(self.MAX_CHUNKS - 1) :], chunk]
        self._t_switch = None
        return True

    def desired(self, t_now: float) -> np.ndarray | None:
        """The unlimited target row for wall time `t_now`, or None when no chunk covers it."""
        t_exec = t_now + self.lead_s
        live = [c for c in self.chunks if t_exec <= c.t_end + 1e-9]
        if not live:
            self.source = None
            return None
        # a chunk whose first row is still ahead waits for it while an older one runs (clamped to its first row
        # when none does); live is in start order, so the started ones come first
        started = [c for c in live if c.t_start <= t_exec + 1e-9]
        new = started[-1] if started else live[-1]
        self.source = new.t_start
        if self.continuation == "ensemble":
            covering = started or [new]
            w = ensemble_weights(len(covering), self.ensemble_decay)
            return np.einsum("i,ij->j", w, np.stack([c.at(t_exec) for c in covering]))
        older = [c for c in self.chunks if c.t_start < new.t_start]
        if self.continuation == "switch" or not older or self.blend_s <= 0:
            return new.at(t_exec)
        if self._t_switch is None:
            self._t_switch = t_now
        w = _smoothstep((t_now - self._t_switch) / self.blend_s)
        if w >= 1.0:
            self.chunks = [c for c in self.chunks if c.t_start >= new.t_start]
            return new.at(t_exec)
        return (1.0 - w) * older[-1].at(t_exec) + w * new.at(t_exec)

    def target(self, t_now: float) -> tuple[np.ndarray, float] | None:
        row = self.desired(t_now)
        if row is None:
            self.counters.stale_ticks += 1
            if not self._was_stale:
                log.warning("%s: no fresh action chunk for t=%.3f, holding pose", self.spec.name, t_now)
            self._was_stale = True
            return None
        self._was_stale = False
        return self.limiter.apply(row[:-1], float(row[-1]), t_now)
