"""Plain-Python rollouts encode each camera frame ahead of the chunk whose window holds it as an older step
(`Policy.prepare`): every chunk encodes only its own step's frame per camera, and the episode is the one without
prepare, bit for bit, on the ONNX engine (fp32 trunks) and with the cameras' trunks side by side."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mimic.policies.engines import apply_engine
from mimic.policies.export import graph_files, write_graphs
from mimic.policies.realtime import ChunkingConfig, InferenceDelay
from tests.unit.test_inference_engines import VISUOMOTOR, _policy

pytestmark = pytest.mark.unit
CAMERAS = 2
STEPS = 14  # chunks at periods 0, 4, 8, 12 (n_action_steps 4)


class _WithoutPrepare:
    """The same policy as a deployment that never calls prepare sees it."""

    def __init__(self, policy) -> None:
        self._policy = policy

    def __getattr__(self, name: str):
        if name == "prepare":
            raise AttributeError(name)
        return getattr(self._policy, name)


@pytest.fixture(scope="module")
def onnx_policy(tmp_path_factory):
    """The visuomotor test policy on ONNX with a thread budget of 2, so its two trunks run side by side."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        policy = _policy("flow", shapes=VISUOMOTOR)
        out = tmp_path_factory.mktemp("onnx")
        files = graph_files(out, write_graphs(policy, out, "onnx"))
        policy = apply_engine(policy, "onnx", files, check=False)
    finally:
        torch.set_num_threads(threads)
    assert policy.encoder.lanes == 2
    return policy


@pytest.fixture(scope="module")
def env():
    from mimic.sim.env import make_env

    env = make_env("reach", "franka", cameras=("scene", "wrist"), image_size=(96, 96))
    env.max_steps = STEPS
    yield env
    env.close()


@pytest.mark.parametrize(
    "chunking",
    [ChunkingConfig("sync"), ChunkingConfig("switch", InferenceDelay(0.2, 0.2))],
    ids=["sync", "switch-delayed"],
)
def test_rollout_prepares_frames_and_chunks_stay_bit_identical(onnx_policy, env, chunking):
    from mimic.workflows.rollout import rollout

    onnx_policy.feature_cache.clear()
    bare = rollout(_WithoutPrepare(onnx_policy), env, 5, chunking=chunking)
    onnx_policy.feature_cache.clear()
    prepared = rollout(onnx_policy, env, 5, chunking=chunking)
    assert len(prepared.encoded_frames) == len(bare.encoded_frames) >= 3
    # The first window repeats the first frame: one per camera. Without prepare every later chunk encodes both
    # steps' frames; with it, only its own step's.
    assert bare.encoded_frames[1:] == [2 * CAMERAS] * (len(bare.encoded_frames) - 1)
    assert prepared.encoded_frames == [CAMERAS] * len(prepared.encoded_frames)
    np.testing.assert_array_equal(np.stack(prepared.joints), np.stack(bare.joints))
    assert prepared.source == bare.source


def test_policies_without_cameras_are_not_prepared():
    from mimic.sim.env import make_env
    from mimic.workflows.rollout import rollout

    policy = _policy(
        "consistency", shapes={k: VISUOMOTOR[k] for k in ("robot0_joint_pos", "robot0_gripper_width")}
    )
    env = make_env("reach", "franka", cameras=())
    env.max_steps = 6
    try:
        ep = rollout(policy, env, 1)
    finally:
        env.close()
    assert ep.steps == 6 and ep.encoded_frames == []
    assert policy.feature_cache.misses == 0
