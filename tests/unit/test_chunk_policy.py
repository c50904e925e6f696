"""mimic.policies.chunk_policy: the contract a scripted or trained policy keeps before a node or rollout runs it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mimic.policies.chunk_policy import ChunkPolicy, check_chunk_policy, executed_rows, scripted_factory


class Hold:
    """The smallest chunk policy: holds the newest joint position."""

    obs_keys = ("robot0_joint_pos",)
    n_obs_steps, horizon, n_action_steps, control_hz = 2, 16, 8, 10.0

    def predict(self, obs_window, num_inference_steps=None) -> np.ndarray:
        return np.repeat(obs_window["robot0_joint_pos"][-1:], self.horizon, axis=0)

    def reset(self) -> None:
        pass


def test_executed_rows_start_at_the_row_of_the_newest_observation() -> None:
    assert executed_rows(2, 8) == (1, 9)
    assert executed_rows(1, 2) == (0, 2)


@pytest.mark.parametrize(
    "spec",
    [
        "py:tests.integration.test_deploy_eef:ReachEefPolicy",
        "py:tests.integration.test_deploy_matching:ScriptedPolicy",
        "py:tests.integration.test_session_deploy:ExpertPolicy",
        "py:tests.e2e.test_whole_loop:frozen_policy",  # a function, not a class
    ],
)
def test_the_scripted_policies_the_tests_deploy_keep_the_contract(spec: str) -> None:
    policy = check_chunk_policy(scripted_factory(spec)(), spec)
    assert isinstance(policy, ChunkPolicy)


def test_a_policy_missing_attributes_is_refused_in_one_line_naming_them() -> None:
    bare = type("Bare", (), {"predict": Hold.predict})()
    with pytest.raises(ValueError) as e:
        check_chunk_policy(bare, "py:my.module:Bare")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("py:my.module:Bare: not a chunk policy")
    for name in ("obs_keys", "n_obs_steps", "horizon", "n_action_steps", "control_hz", "reset"):
        assert name in msg
    assert "predict" not in msg.split("it has no")[1].split("(")[0]


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"n_action_steps": 16}, "<= horizon 16"),  # 1 + 16 rows do not fit a 16-row chunk
        ({"n_obs_steps": 0}, "must be >= 1"),
        ({"control_hz": 0.0}, "control_hz must be > 0"),
        ({"action_space": "tcp"}, "action_space 'tcp' is not one of"),
    ],
)
def test_inconsistent_horizons_and_rates_are_refused(fields: dict, words: str) -> None:
    policy = Hold()
    for k, v in fields.items():
        setattr(policy, k, v)
    with pytest.raises(ValueError, match=words):
        check_chunk_policy(policy, "scripted")
    assert check_chunk_policy(Hold(), "scripted").predict({"robot0_joint_pos": np.zeros((2, 7))}).shape == (
        16,
        7,
    )


@pytest.mark.parametrize(
    "spec, words",
    [
        ("py:tests.no_such_module:x", "no_such_module"),
        ("py:tests.unit.test_chunk_policy:Nope", "Nope"),
        ("py:only_a_module", "py:module:factory"),
    ],
)
def test_bad_scripted_names_are_one_line_errors(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words) as e:
        scripted_factory(spec)
    assert str(e.value).startswith(spec) and "\n" not in str(e.value)


def test_the_contract_imports_without_torch() -> None:
    """A policy node running a scripted policy checks it without paying torch's import (seconds, ~200 MB)."""
    code = "import sys, mimic.policies.chunk_policy, policies; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_policy_node_parameters_become_checkpoint_overrides_and_a_scripted_policy_refuses_them() -> None:
    """chunk_candidates / action_steps reach the checkpoint as INFERENCE_FIELDS overrides (0: the checkpoint's);
    a py: policy has no checkpoint to change, so asking for one is a one-line error, not silently ignored."""
    from mimic.policies.checkpoint import INFERENCE_FIELDS
    from mimic_ros.policy_node import PolicyNodeConfig, inference_overrides, load_checkpoint

    cfg = PolicyNodeConfig()
    assert inference_overrides(cfg) == []
    cfg.action_steps, cfg.chunk_candidates = 4, 2
    overrides = inference_overrides(cfg)
    assert sorted(overrides) == ["policy.chunk_candidates=2", "policy.n_action_steps=4"]
    assert all(o.split("=")[0] in INFERENCE_FIELDS for o in overrides)
    with pytest.raises(
        ValueError, match=r"policy.n_action_steps=4: inference overrides apply to a checkpoint"
    ):
        load_checkpoint(f"py:{__name__}:no_such_factory", "cpu", ["policy.n_action_steps=4"])
