"""One policy episode on a twin, in plain Python, with the deployed chunking strategies and an inference delay.

Time is the twin's: control period k runs from k dt to (k + 1) dt, and the simulation waits while the policy
computes, so an injected inference delay d (`ChunkingConfig.delay`) is what the arm experiences, exactly and
reproducibly, whatever the machine's load. What the policy node does with wall time, this does with twin time:

- A chunk computed from the window ending at period k (its row `action_offset` belongs to period k) arrives at
  k dt + d and is stamped with its first row due then (mimic.policies.realtime.timed_chunk); the
  mimic.robots.control.ChunkController of the strategy's continuation decides which target each period gets.
- `sync`: the next inference starts when the last chunk's `n_action_steps` rows have run; the arm holds still
  (its last target) while it waits, and only those rows of a chunk are executed. At d = 0 this is the receding
  horizon of diffusion_policy's evaluation, row for row.
- The asynchronous strategies start an inference every `n_action_steps` periods (one at a time), while the
  current chunk keeps running; `rtc` passes the policy the executing chunk's rows as its prefix
  (mimic.policies.realtime.continuation_prefix), planning for the largest of the recent delays.

The episode records what motion quality needs: the joint positions at every period and the chunk each period's
target came from (-1 while waiting), see mimic.robots.motion.

A policy with cameras and `prepare` (Policy, the TCP-position wrapper) has each of its camera frames encoded in
the period before the chunks whose window holds it as an older step are due, as a deployment encodes them while
the arm runs (docs/inference.md): each chunk then encodes only its own step's frames. Chunks are the same with or
without it (bit for bit on fp32 ONNX trunks, to float rounding on torch ones); `Episode.encoded_frames` counts
what each chunk still encoded.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mimic.policies.chunk_policy import executed_rows, feature_cache_of
from mimic.policies.realtime import (
    ChunkingConfig,
    DelayEstimate,
    continuation_prefix,
    supports_prefix,
    timed_chunk,
)
from mimic.robots.control import ChunkController

JOINT_KEY = "robot0_joint_pos"


@dataclass
class Episode:
    """What one rollout returns."""

    success: bool = False
    steps: int = 0
    score: float = 0.0  # best reward (push_t: coverage relative to the bar; 1/0 elsewhere)
    inference_s: list[float] = field(default_factory=list)  # compute time of each chunk (wall clock)
    frames: list[np.ndarray] = field(default_factory=list)
    joints: list[np.ndarray] = field(default_factory=list)  # q at every period start, and after the last
    source: list[int] = field(default_factory=list)  # per period: the chunk its target came from, -1 waiting
    idle_steps: int = 0
    # per chunk, for a policy with cameras and a feature cache: the frames it encoded (the others were cached)
    encoded_frames: list[int] = field(default_factory=list)


def rollout(
    policy,
    env,
    seed: int,
    num_inference_steps: int | None = None,
    video_size: tuple[int, int] | None = None,
    on_step: Callable[[dict[str, np.ndarray]], None] | None = None,
    chunking: ChunkingConfig | None = None,
) -> Episode:
    """One episode from `env.reset(seed)`; `on_step` sees every observation, the first (after reset) included."""
    cfg = chunking or ChunkingConfig()
    if cfg.strategy == "rtc" and not supports_prefix(policy):
        raise ValueError(f"chunking rtc: {type(policy).__name__} cannot continue a prefix")
    obs = env.reset(seed=seed)
    policy.reset()
    if callable(getattr(policy, "seed", None)):
        policy.seed(
            seed
        )  # the same sampling noise for the same episode, whatever ran before: paired comparisons
    rng = random.Random(seed)
    n_obs, horizon, s = int(policy.n_obs_steps), int(policy.horizon), int(policy.n_action_steps)
    lo, _ = executed_rows(n_obs, s)
    dt = 1.0 / float(env.control_hz)
    hist: deque[dict[str, np.ndarray]] = deque([obs] * n_obs, maxlen=n_obs)
    ctl = ChunkController(
        env.spec,
        env.control_hz,
        blend_s=cfg.blend_s,
        continuation=cfg.continuation,
        ensemble_decay=cfg.ensemble_decay,
    )
    ep = Episode()
    estimate = DelayEstimate()
    chunk_ids: dict[float, int] = {}
    pending: tuple[float, float, np.ndarray, float] | None = None  # (t_ready, t_obs, actions, delay)
    next_trigger = 0.0
    hold = np.concatenate([obs[JOINT_KEY], obs["robot0_gripper_width"]])

    def observe(o: dict[str, np.ndarray]) -> None:
        ep.joints.append(np.asarray(o[JOINT_KEY], float).copy())
        if video_size is not None:
            ep.frames.append(
                np.concatenate([env.render("scene", video_size), env.render("wrist", video_size)], 1)
            )
        if on_step is not None:
            on_step(o)

    def deliver(t: float) -> None:
        nonlocal pending, next_trigger
        if pending is None or pending[0] > t + 1e-9:
            return
        t_ready, t_obs, actions, delay = pending
        pending = None
        estimate.add(delay)
        timed = timed_chunk(actions, t_obs, dt, lo, t_ready, 0.0)
        if timed is None:
            return
        t_start, rows = timed
        if not cfg.asynchronous:
            rows = rows[:s]
            next_trigger = t_start + len(rows) * dt
        if ctl.set_chunk(t_start, dt, rows):
            chunk_ids[t_start] = len(chunk_ids)

    def due_at(t_due: float) -> bool:
        """Whether, as far as is known now, a chunk is triggered at `t_due` (a sync chunk still pending moves the
        next trigger past its own rows when it arrives)."""
        if pending is not None and (not cfg.asynchronous or pending[0] > t_due + 1e-9):
            return False
        return t_due >= next_trigger - 1e-9

    prepare = _frame_preparer(policy)
    cache = feature_cache_of(policy)
    observe(obs)
    for k in range(env.max_steps):
        t = k * dt
        deliver(t)
        if pending is None and t >= next_trigger - 1e-9:
            window = {key: np.stack([o[key] for o in hist]) for key in policy.obs_keys}
            prefix = None
            if cfg.strategy == "rtc":
                prefix = continuation_prefix(
                    ctl.chunk, t, dt, lo, horizon, t + estimate.value, cfg.max_guidance
                )
            misses = cache.misses if cache is not None else 0
            t0 = time.perf_counter()
            if prefix is None:
                actions = policy.predict(window, num_inference_steps=num_inference_steps)
            else:
                actions = policy.predict(window, num_inference_steps=num_inference_steps, prefix=prefix)
            ep.inference_s.append(time.perf_counter() - t0)
            if cache is not None:
                ep.encoded_frames.append(cache.misses - misses)
            delay = cfg.delay.sample(rng)
            pending = (t + delay, t, np.asarray(actions, float), delay)
            if cfg.asynchronous:
                next_trigger = t + s * dt
            deliver(t)
        # This period's frames are an older step of the window of a chunk due within n_obs - 1 periods.
        if prepare is not None and any(due_at(t + j * dt) for j in range(1, n_obs)):
            prepare(hist[-1])
        row = ctl.desired(t)
        if row is None:
            ep.idle_steps += 1
            ep.source.append(-1)
            action = hold
        else:
            ep.source.append(chunk_ids.get(ctl.source, -1))
            action = hold = row
        obs, reward, term, trunc, info = env.step(action)
        ep.score = max(ep.score, float(reward))
        ep.steps = k + 1
        hist.append(obs)
        observe(obs)
        if term or trunc:
            ep.success = bool(info["success"])
            break
    return ep


def _frame_preparer(policy) -> Callable[[dict[str, np.ndarray]], int] | None:
    """obs -> `policy.prepare` of its camera frames ([1, H, W, 3] each), for a policy with cameras and `prepare`;
    None for the others (low-dim, scripted, end-effector policies)."""
    keys = tuple(getattr(policy, "image_keys", ()) or ())
    prepare = getattr(policy, "prepare", None)
    if not keys or not callable(prepare):
        return None
    return lambda o: prepare({k: np.asarray(o[k])[None] for k in keys})
