"""Real-time chunking: when the next chunk is computed, what it must continue, and when it takes over.

A deployed chunk policy runs one of `mimic.robots.control.CHUNKING`. With `sync` the arm waits for every chunk and
executes only its first `execution_horizon` rows. Every other strategy is asynchronous: the next chunk is
computed from the newest observations while the current one keeps running, one inference every
`execution_horizon` rows (Black, Galliker, Levine 2025, "Real-Time Execution of Action Chunking Flow Policies").
It arrives an inference delay d later, stamped so that its row for the arrival time is the first to run
(`timed_chunk`); rows due before that can no longer be executed.

`rtc` makes the new chunk agree with the executing one (`continuation_prefix`): the rows that will run during the
inference delay (plus the already executed rows the window covers) are frozen, the rest of the overlap is guided
towards the old chunk with the soft, exponentially decaying mask of the paper (`soft_mask`), and nothing past the
old chunk's end is constrained. The generator does the inpainting (mimic.policies.generators.guidance); the frozen
rows are then replaced by the old chunk's rows exactly (`ChunkPrefix.apply`). With no delay nothing of the new
chunk is committed before it arrives, so `rtc` at d = 0 samples unguided, as `switch` does.

Plain Python with no torch, so the ROS policy node and `mimic eval` share it.
"""

from __future__ import annotations

import argparse
import inspect
import math
import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mimic.robots.control import CHUNKING, Chunk, continuation_of

DEFAULT_MAX_GUIDANCE = 5.0  # beta of the paper: the guidance weight is clipped to it


@dataclass(frozen=True)
class InferenceDelay:
    """Extra inference delay injected for experiments (s): fixed (`lo == hi`) or uniform in [lo, hi]."""

    lo: float = 0.0
    hi: float = 0.0

    @staticmethod
    def parse(text: str | float) -> InferenceDelay:
        """'0.2' (fixed) or '0.1:0.3' (uniform); ValueError naming the value otherwise."""
        s = str(text).strip()
        try:
            parts = [float(p) for p in s.split(":")] if s else [0.0]
        except ValueError:
            parts = []
        if len(parts) == 1:
            parts = parts * 2
        if (
            len(parts) != 2
            or not all(math.isfinite(p) and 0.0 <= p <= 10.0 for p in parts)
            or parts[0] > parts[1]
        ):
            raise ValueError(f"inference delay {text!r} is not SECONDS or LO:HI with 0 <= LO <= HI <= 10")
        return InferenceDelay(parts[0], parts[1])

    def sample(self, rng: random.Random) -> float:
        return self.lo if self.hi == self.lo else rng.uniform(self.lo, self.hi)

    def __str__(self) -> str:
        return f"{self.lo:g}" if self.lo == self.hi else f"{self.lo:g}:{self.hi:g}"


@dataclass(frozen=True)
class ChunkingConfig:
    """How a rollout or the policy node continues chunks (see the module docstring)."""

    strategy: str = "sync"
    delay: InferenceDelay = field(default_factory=InferenceDelay)
    blend_s: float = 0.1  # blend: smoothstep duration
    ensemble_decay: float = 0.01  # ensemble: ACT's m, per chunk of age
    max_guidance: float = DEFAULT_MAX_GUIDANCE  # rtc: the clip of the guidance weight

    def __post_init__(self) -> None:
        continuation_of(self.strategy)  # ValueError for an unknown strategy
        if not self.max_guidance > 0:
            raise ValueError(f"rtc max_guidance {self.max_guidance} must be > 0")

    @property
    def asynchronous(self) -> bool:
        return self.strategy != "sync"

    @property
    def continuation(self) -> str:
        return continuation_of(self.strategy)


@dataclass(frozen=True)
class ChunkPrefix:
    """What a new chunk must continue: target rows at the new chunk's row times, and their weights.

    `rows` [H, A] are absolute action rows (the policy's predict() units); rows whose weight is 0 are ignored.
    `weights` [H]: 1 for the first `frozen` rows, the soft mask over the rest of the overlap, 0 after it."""

    rows: np.ndarray
    weights: np.ndarray
    frozen: int
    max_guidance: float = DEFAULT_MAX_GUIDANCE

    def apply(self, chunk: np.ndarray) -> np.ndarray:
        """The hard mask: `chunk` with its first `frozen` rows replaced by the target rows exactly."""
        out = np.array(chunk, float, copy=True)
        out[: self.frozen] = self.rows[: self.frozen]
        return out


def soft_mask(horizon: int, frozen: int, overlap: int) -> np.ndarray:
    """RTC's guidance weights over a chunk of `horizon` rows: 1 for the `frozen` rows, then decaying exponentially
    over the rest of the `overlap` (rows the old chunk also covers), 0 after it.

    For frozen <= i < overlap, c_i = (overlap - i) / (overlap - frozen + 1) and w_i = c_i (e^c_i - 1) / (e - 1):
    close to 1 next to the frozen rows, close to 0 at the end of the old chunk."""
    if not 0 <= frozen <= overlap <= horizon:
        raise ValueError(f"soft_mask: need 0 <= frozen {frozen} <= overlap {overlap} <= horizon {horizon}")
    w = np.zeros(horizon)
    w[:frozen] = 1.0
    i = np.arange(frozen, overlap)
    c = (overlap - i) / (overlap - frozen + 1)
    w[frozen:overlap] = c * np.expm1(c) / math.expm1(1.0)
    return w


def continuation_prefix(
    executing: Chunk | None,
    t_obs: float,
    dt: float,
    action_offset: int,
    horizon: int,
    t_commit: float,
    max_guidance: float = DEFAULT_MAX_GUIDANCE,
) -> ChunkPrefix | None:
    """The rows a chunk computed from the window ending at `t_obs` must continue, or None when nothing constrains it.

    Row i of the new chunk is due at `t_obs + (i - action_offset) * dt`. The rows due before `t_commit` (the time the
    new chunk can first act: when it is expected to arrive, plus the arm's lead) are frozen to the executing chunk;
    the rows after them that the executing chunk still covers are the soft overlap. None when there is no
    executing chunk or no delay (no row due in [t_obs, t_commit))."""
    if executing is None or t_commit <= t_obs + 1e-9:
        return None
    due = t_obs + (np.arange(horizon) - action_offset) * dt
    covered = due <= executing.t_end + 1e-9
    overlap = int(np.argmin(covered)) if not covered.all() else horizon
    frozen = min(int(np.sum(due < t_commit - 1e-9)), overlap)
    if frozen <= action_offset:
        return None
    rows = np.full((horizon, executing.positions.shape[1]), np.nan)
    for i in range(overlap):
        rows[i] = executing.at(float(due[i]))
    return ChunkPrefix(rows, soft_mask(horizon, frozen, overlap), frozen, max_guidance)


def timed_chunk(
    actions: np.ndarray, t_obs: float, dt: float, action_offset: int, t_ready: float, lead_s: float
) -> tuple[float, np.ndarray] | None:
    """(t_start, rows) keeping the rows still executable: due at or after `t_ready + lead_s`. None if none is."""
    due = t_obs + (np.arange(len(actions)) - action_offset) * dt
    keep = due >= t_ready + lead_s - 1e-9
    if not keep.any():
        return None
    first = int(np.argmax(keep))
    return float(due[first]), np.asarray(actions[first:], float)


class DelayEstimate:
    """The inference delay an `rtc` prefix plans for: the largest of the last `window` measured delays.

    Planning for the worst recent delay freezes a row or two more than needed when inference is fast, which costs
    a little reactivity; planning for less leaves rows that run before the new chunk arrives unfrozen."""

    def __init__(self, window: int = 5) -> None:
        self.delays: deque[float] = deque(maxlen=window)

    def add(self, delay_s: float) -> None:
        self.delays.append(float(delay_s))

    @property
    def value(self) -> float:
        return max(self.delays) if self.delays else 0.0


def supports_prefix(policy) -> bool:
    """Whether `policy.predict` takes a real-time chunking prefix (trained joint policies do)."""
    try:
        return "prefix" in inspect.signature(policy.predict).parameters
    except (TypeError, ValueError):
        return False


def add_chunking_args(ap: argparse.ArgumentParser, default: str = "sync") -> None:
    """--chunking, --inference-delay-s and their knobs, the same on `mimic eval` and `mimic deploy`."""
    ap.add_argument(
        "--chunking",
        default=default,
        choices=CHUNKING,
        help="how chunks continue: sync waits for each; switch, ensemble, blend and rtc compute the next one while "
        "the current one runs (mimic.policies.realtime)",
    )
    ap.add_argument(
        "--inference-delay-s",
        default="0",
        help="extra inference delay injected per chunk: SECONDS, or LO:HI drawn uniformly (twin time in eval)",
    )
    ap.add_argument("--blend-s", type=float, default=0.1, help="blend: smoothstep duration (s)")
    ap.add_argument(
        "--ensemble-decay", type=float, default=0.01, help="ensemble: ACT's weight decay per chunk"
    )
    ap.add_argument(
        "--max-guidance", type=float, default=DEFAULT_MAX_GUIDANCE, help="rtc: clip of the guidance weight"
    )


def chunking_from_args(args: argparse.Namespace) -> ChunkingConfig:
    """ChunkingConfig from add_chunking_args' options; ValueError naming a bad one."""
    if not 0.0 <= args.blend_s <= 5.0:
        raise ValueError(f"--blend-s {args.blend_s} must be in [0, 5]")
    if not 0.0 <= args.ensemble_decay <= 10.0:
        raise ValueError(f"--ensemble-decay {args.ensemble_decay} must be in [0, 10]")
    return ChunkingConfig(
        args.chunking,
        InferenceDelay.parse(args.inference_delay_s),
        args.blend_s,
        args.ensemble_decay,
        args.max_guidance,
    )
