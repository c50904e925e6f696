"""The per-frame image-feature cache (mimic.policies.feature_cache): a chunk with it equals the chunk without it
from the same noise, on torch and ONNX engines; a changed frame, changed weights or a swapped engine is encoded
anew (never a stale feature); it holds a bounded number of frames; training never uses it; `prepare` leaves the
chunk only the frames it has not seen."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from mimic.policies import engines
from mimic.policies.engines import CACHE_TOLERANCE, apply_engine, normalized_chunk
from mimic.policies.export import graph_files, write_graphs
from mimic.policies.feature_cache import FrameFeatureCache
from tests.unit.test_inference_engines import VISUOMOTOR, _policy

pytestmark = pytest.mark.unit
torch.set_num_threads(1)
CAMERAS = ("camera0_rgb", "camera1_rgb")


def _engine(policy, engine: str, tmp_path):
    files = None
    if engine in engines.ONNX_ENGINES:
        files = graph_files(tmp_path, write_graphs(policy, tmp_path, engine))
    return apply_engine(copy.deepcopy(policy), engine, files, check=False, warm=False)


def _frames(rng, n: int = 1) -> dict[str, np.ndarray]:
    return {k: rng.integers(0, 255, (n, 96, 96, 3), dtype=np.uint8) for k in CAMERAS}


def _window(rng, images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "robot0_joint_pos": rng.normal(size=(2, 7)),
        "robot0_gripper_width": rng.normal(size=(2, 1)),
    } | images


def _chunk(policy, window, seed: int, cached: bool = True) -> torch.Tensor:
    """The normalised chunk from `window` (a raw observation window, as predict takes) and noise `seed`."""
    cache = policy.feature_cache
    if not cached:
        policy.feature_cache = None
    try:
        return normalized_chunk(policy, policy.obs_to_tensors(window), None, seed)
    finally:
        policy.feature_cache = cache


@pytest.mark.parametrize("engine", ["torch", "bf16", "onnx", "onnx-int8"])
@pytest.mark.parametrize("generator", ["consistency", "flow"])
def test_cached_chunk_equals_uncached_chunk_in_the_steady_state(engine, generator, tmp_path):
    """A deploy loop: prepare(step t-1 frames), then the chunk of window [t-1, t]; over several steps."""
    policy = _engine(_policy(generator, shapes=VISUOMOTOR), engine, tmp_path)
    cache = policy.feature_cache
    rng = np.random.default_rng(0)
    prev = _frames(rng)
    for step in range(4):
        # From step 1 on, step t-1's frame was the newest of the previous chunk: already there.
        assert policy.prepare(prev) == (2 if step == 0 else 0)
        new = _frames(rng)
        window = _window(rng, {k: np.concatenate([prev[k], new[k]]) for k in CAMERAS})
        misses = cache.misses
        cached = _chunk(policy, window, seed=step)
        assert cache.misses - misses == 2, "only the step-t frame of each camera is encoded"
        uncached = _chunk(policy, window, seed=step, cached=False)
        # The same trunk at batch 1 instead of the window's 2: fp32 equal to float rounding (0 measured), bf16 to
        # its own rounding (its kernels block by batch size).
        assert float((cached - uncached).abs().max()) <= CACHE_TOLERANCE[engine]
        prev = new


def test_predict_is_the_same_with_and_without_the_cache(tmp_path):
    policy = _engine(_policy("flow", shapes=VISUOMOTOR), "onnx", tmp_path)
    rng = np.random.default_rng(1)
    window = _window(rng, _frames(rng, 2))
    policy.seed(3)
    cold = policy.predict(window)
    policy.seed(3)
    warm = policy.predict(window)  # every frame a hit
    policy.feature_cache = None
    policy.seed(3)
    off = policy.predict(window)
    np.testing.assert_array_equal(cold, warm)
    np.testing.assert_allclose(cold, off, atol=1e-6)


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_a_changed_frame_is_encoded_again(engine, tmp_path):
    policy = _engine(_policy("consistency", shapes=VISUOMOTOR), engine, tmp_path)
    rng = np.random.default_rng(2)
    images = _frames(rng, 2)
    window = _window(rng, images)
    _chunk(policy, window, 0)
    changed = copy.deepcopy(window)
    changed["camera1_rgb"][1, 40, 40, 0] ^= 1  # one bit of one pixel of the newest frame, inside the crop
    misses = policy.feature_cache.misses
    a = _chunk(policy, changed, 0)
    assert policy.feature_cache.misses - misses == 1
    torch.testing.assert_close(a, _chunk(policy, changed, 0, cached=False), rtol=0, atol=1e-5)
    assert not torch.equal(a, _chunk(policy, window, 0))


def test_a_hash_collision_is_a_miss_not_a_wrong_feature():
    """Entries are confirmed by their bytes: a stored entry under a frame's key but of other bytes is not served."""
    cache = FrameFeatureCache()
    calls = []

    def encode(x):
        calls.append(x.shape[0])
        return x.flatten(1).sum(1, keepdim=True)

    class OneCamera(torch.nn.Module):  # what the cache needs of an encoder: its keys and per-camera trunks
        image_keys, lowdim_keys = ("cam",), ()
        images = {"cam": encode}

    encoder = OneCamera()
    frame = torch.rand(1, 3, 8, 8)
    cache.encode_frames(encoder, {"cam": frame})
    ((key, (blob, feat)),) = cache._entries["cam"].items()
    cache._entries["cam"][key] = (bytes(len(blob)), feat + 1.0)  # same key, other bytes, a wrong feature
    torch.testing.assert_close(cache.encode(encoder, {"cam": frame[None]})[0], encode(frame))
    assert calls == [1, 1, 1]  # encoded again


def test_changed_weights_or_a_swapped_engine_drop_every_entry(tmp_path):
    """Features belong to one set of encoder weights: an in-place update (optimiser step, EMA, load_state_dict) or
    an engine applied in place must not be answered from entries computed before it."""
    policy = _policy("consistency", shapes=VISUOMOTOR)
    rng = np.random.default_rng(3)
    window = _window(rng, _frames(rng, 2))
    _chunk(policy, window, 0)
    assert len(policy.feature_cache) == 4
    with torch.no_grad():
        policy.encoder.images["camera0_rgb"].out[0].bias.add_(0.5)
    a = _chunk(policy, window, 0)
    torch.testing.assert_close(a, _chunk(policy, window, 0, cached=False), rtol=0, atol=1e-6)
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    state["encoder.images.camera1_rgb.out.0.bias"] += 0.5
    policy.load_state_dict(state)
    b = _chunk(policy, window, 0)
    torch.testing.assert_close(b, _chunk(policy, window, 0, cached=False), rtol=0, atol=1e-6)
    assert not torch.equal(a, b)
    misses = policy.feature_cache.misses
    apply_engine(policy, "bf16", check=False, warm=False)  # in place: the trunks are replaced
    c = _chunk(policy, window, 0)
    assert policy.feature_cache.misses - misses == 4
    torch.testing.assert_close(c, _chunk(policy, window, 0, cached=False), rtol=0, atol=1e-6)


def test_the_cache_holds_a_bounded_number_of_frames():
    policy = _policy("consistency", shapes=VISUOMOTOR)
    policy.feature_cache = FrameFeatureCache(capacity=3)
    rng = np.random.default_rng(4)
    for _ in range(5):
        _chunk(policy, _window(rng, _frames(rng, 2)), 0)
        assert max(policy.feature_cache.sizes().values()) <= 3
    assert policy.feature_cache.sizes() == {k: 3 for k in CAMERAS}
    policy.feature_cache.clear()
    assert len(policy.feature_cache) == 0
    # More frames of a camera in one call than it holds (batched validation): bypassed, not churned through.
    misses = policy.feature_cache.misses
    with torch.inference_mode():
        policy.sample_actions(engines.example_obs(policy, batch=4), 1)
    assert len(policy.feature_cache) == 0 and policy.feature_cache.misses == misses
    with pytest.raises(ValueError, match="capacity 0"):
        FrameFeatureCache(capacity=0)


def test_repeated_frames_in_one_call_are_encoded_once():
    """The first window of an episode repeats its first frame; chunk candidates repeat the whole window."""
    policy = _policy("consistency", shapes=VISUOMOTOR)
    policy.chunk_candidates = 3
    rng = np.random.default_rng(5)
    first = _frames(rng)
    window = _window(rng, {k: np.concatenate([first[k], first[k]]) for k in CAMERAS})
    policy.predict(window)
    assert policy.feature_cache.misses == 2 and policy.feature_cache.sizes() == {k: 1 for k in CAMERAS}


def test_training_mode_bypasses_the_cache():
    policy = _policy("consistency", shapes=VISUOMOTOR)
    rng = np.random.default_rng(6)
    window = _window(rng, _frames(rng, 2))
    policy.train()
    assert policy.prepare(window) == 0
    with torch.no_grad():
        policy.sample_actions(policy.obs_to_tensors(window), 1)  # sampling in training mode: encoded directly
    assert len(policy.feature_cache) == 0 and policy.feature_cache.misses == 0
    policy.eval()
    policy.predict(window)
    assert policy.feature_cache.misses == 4


def test_training_loss_never_touches_the_cache():
    """Policy.forward (the training loss: random crops, gradients) encodes directly, whatever the mode."""
    teacher = _policy("flow", shapes=VISUOMOTOR)
    rng = np.random.default_rng(7)
    obs = engines.example_obs(teacher, batch=2)
    batch = {
        "obs": obs,
        "action": torch.as_tensor(rng.normal(size=(2, teacher.horizon, 8)), dtype=torch.float32),
    }
    teacher.train()
    loss = teacher(batch)
    loss.backward()
    teacher.eval()
    teacher(batch)  # eval mode: still the loss path, still no cache
    assert len(teacher.feature_cache) == 0 and teacher.feature_cache.hits + teacher.feature_cache.misses == 0


def test_prepare_checks_its_frames_and_copies_start_empty():
    policy = _policy("consistency", shapes=VISUOMOTOR)
    rng = np.random.default_rng(8)
    with pytest.raises(KeyError, match="camera1_rgb"):
        policy.prepare({"camera0_rgb": _frames(rng)["camera0_rgb"]})
    with pytest.raises(ValueError, match="shape"):
        policy.prepare({k: v[0] for k, v in _frames(rng).items()})  # one frame without its step axis
    frames = _frames(rng, 2)
    assert policy.prepare(_window(rng, frames)) == 4  # a whole window; low-dim keys are ignored
    assert policy.prepare({k: v[-1:] for k, v in frames.items()}) == 0
    assert len(copy.deepcopy(policy).feature_cache) == 0
    assert len(pickle.loads(pickle.dumps(policy.feature_cache))) == 0
    policy.feature_cache = None
    assert policy.prepare(frames) == 0


def test_cameras_side_by_side_give_the_features_of_cameras_in_turn(tmp_path):
    """With a budget of 2 threads the ONNX encoder runs the two cameras' trunks at once (1 intra-op thread each):
    chunks, cached and uncached, and what prepare encodes equal those of the trunks in turn, bit for bit."""
    policy = _policy("flow", shapes=VISUOMOTOR)
    files = graph_files(tmp_path, write_graphs(policy, tmp_path, "onnx"))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        side = apply_engine(copy.deepcopy(policy), "onnx", files, check=False, warm=False)
        turn = apply_engine(
            copy.deepcopy(policy), "onnx", files, check=False, warm=False, concurrent_trunks=False
        )
    finally:
        torch.set_num_threads(threads)
    alone = apply_engine(copy.deepcopy(policy), "onnx", files, check=False, warm=False)  # a budget of 1
    assert (side.encoder.lanes, turn.encoder.lanes, alone.encoder.lanes) == (2, 1, 1)
    rng = np.random.default_rng(9)
    prev = _frames(rng)
    for step in range(3):
        assert [p.prepare(prev) for p in (side, turn, alone)] == [2 if step == 0 else 0] * 3
        new = _frames(rng)
        window = _window(rng, {k: np.concatenate([prev[k], new[k]]) for k in CAMERAS})
        misses = side.feature_cache.misses
        chunks = [_chunk(p, window, seed=step) for p in (side, turn, alone)]
        assert side.feature_cache.misses - misses == 2
        chunks += [_chunk(p, window, seed=step, cached=False) for p in (side, turn)]
        assert all(torch.equal(chunks[0], c) for c in chunks[1:])
        prev = new
    with torch.inference_mode():
        frames = {k: torch.rand(3, 3, 96, 96) for k in CAMERAS}
        a, b = side.encoder.encode_cameras(frames), turn.encoder.encode_cameras(frames)
    assert all(torch.equal(a[k], b[k]) and a[k].is_inference() for k in CAMERAS)
