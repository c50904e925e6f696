"""The contract every chunk policy keeps, trained or scripted: what `mimic eval`, DAgger, `mimic deploy` and the
ROS policy node read from a policy object (DESIGN.md, "Policy").

A trained checkpoint meets it through `policies.load_deployable` (a `Policy`, or its TCP-position / end-effector
wrapper); a scripted baseline or test oracle meets it as a plain class named `py:module:factory` wherever a
checkpoint path is taken. Nothing here imports torch, so a node that runs a scripted policy starts without it.

Rows: `predict` returns [horizon, action_dim]; row i belongs (i - (n_obs_steps - 1)) control periods after the
newest observation in the window (diffusion_policy's convention), so a receding-horizon rollout executes
`executed_rows(n_obs_steps, n_action_steps)` and then asks again.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

SCRIPTED_PREFIX = "py:"
# What a policy's optional `action_space` may say (default "joint"): joint rows [q, gripper] for the controller's
# chunk mode, or end-effector rows [tcp pos, axis-angle, gripper] for its eef mode.
ACTION_SPACES = ("joint", "eef")
REQUIRED = ("obs_keys", "n_obs_steps", "horizon", "n_action_steps", "control_hz", "predict", "reset")


@runtime_checkable
class ChunkPolicy(Protocol):
    obs_keys: Sequence[str]  # the window's keys, each [n_obs_steps, ...]
    n_obs_steps: int
    horizon: int  # rows per chunk
    n_action_steps: int  # rows executed before the next predict
    control_hz: float  # one row per control period

    def predict(
        self, obs_window: Mapping[str, np.ndarray], num_inference_steps: int | None = None
    ) -> np.ndarray:
        """[horizon, action_dim] absolute action rows for the window; `num_inference_steps` None: its default."""
        ...

    def reset(self) -> None:
        """A new episode starts: forget the last chunk and any other state."""
        ...


def executed_rows(n_obs_steps: int, n_action_steps: int) -> tuple[int, int]:
    """[lo, hi) of a chunk that a receding-horizon rollout executes; lo is the row aligned with the newest
    observation. The one place this convention is written down in code."""
    return n_obs_steps - 1, n_obs_steps - 1 + n_action_steps


def check_chunk_policy(policy: Any, source: str) -> ChunkPolicy:
    """`policy`, or ValueError in one line naming `source` (a checkpoint path or py:module:factory) and what is
    missing or inconsistent, before a rollout or node fails on it halfway."""
    missing = [name for name in REQUIRED if not hasattr(policy, name)]
    if missing:
        raise ValueError(
            f"{source}: not a chunk policy, it has no {', '.join(missing)} "
            f"(mimic.policies.chunk_policy.ChunkPolicy lists what it needs)"
        )
    n_obs, horizon, n_act = int(policy.n_obs_steps), int(policy.horizon), int(policy.n_action_steps)
    if n_obs < 1 or n_act < 1 or executed_rows(n_obs, n_act)[1] > horizon:
        raise ValueError(
            f"{source}: n_obs_steps {n_obs} and n_action_steps {n_act} must be >= 1 and "
            f"n_obs_steps - 1 + n_action_steps <= horizon {horizon}"
        )
    if not float(policy.control_hz) > 0:
        raise ValueError(f"{source}: control_hz must be > 0, got {policy.control_hz}")
    action_space_of(policy, source)
    return policy


def action_space_of(policy_or_factory: Any, source: str) -> str:
    """Its `action_space` ("joint" when it names none); ValueError naming `source` for any other value."""
    kind = str(getattr(policy_or_factory, "action_space", "joint"))
    if kind not in ACTION_SPACES:
        raise ValueError(f"{source}: action_space {kind!r} is not one of {ACTION_SPACES}")
    return kind


def scripted_factory(spec: str) -> Callable[[], Any]:
    """`py:module:factory` -> the factory (a class or a function of no arguments); ValueError naming `spec`."""
    module, _, attr = spec[len(SCRIPTED_PREFIX) :].partition(":")
    if not (spec.startswith(SCRIPTED_PREFIX) and module and attr):
        raise ValueError(f"{spec}: a scripted policy is named py:module:factory")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{spec}: {e}") from None


def feature_cache_of(policy: Any) -> Any:
    """The feature cache behind a policy with cameras (mimic.policies.feature_cache.cache_of: its hit and miss
    counters say what each chunk encoded), else None. The cache module imports torch, so it is imported only for a
    policy with cameras: a rollout or node running a scripted policy starts without torch."""
    if not getattr(policy, "image_keys", ()):
        return None
    from mimic.policies.feature_cache import cache_of

    return cache_of(policy)
