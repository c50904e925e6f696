"""Inference engines: each one's chunk matches fp32's from the same observations and noise within its stated
tolerance (low-dim and visuomotor policies, encoder included), exported engines round-trip through a checkpoint
directory, and every way of asking for one that cannot run is one line naming the file or the engine."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from mimic.data.normalizer import Normalizer
from mimic.policies import engines
from mimic.policies.checkpoint import CheckpointError, load_deployable, save_checkpoint
from mimic.policies.config import PolicyConfig
from mimic.policies.engines import (
    TOLERANCE,
    EngineError,
    apply_engine,
    chunk_deviation,
    example_obs,
    normalized_chunk,
)
from mimic.policies.export import engine_dir, export_onnx, graph_files, write_graphs
from mimic.policies.policy import Policy, ShapeMeta

pytestmark = pytest.mark.unit
torch.set_num_threads(1)

LOWDIM = {"robot0_joint_pos": [7], "robot0_gripper_width": [1], "object_state": [10]}
VISUOMOTOR = {
    "robot0_joint_pos": [7],
    "robot0_gripper_width": [1],
    "camera0_rgb": [96, 96, 3],
    "camera1_rgb": [96, 96, 3],
}


def _policy(generator="consistency", backbone="unet", shapes=None, seed=0) -> Policy:
    """A small randomly initialised policy (latency and agreement do not need trained weights)."""
    torch.manual_seed(seed)
    shapes = shapes or LOWDIM
    images = [k for k in shapes if k.startswith("camera")]
    cfg = PolicyConfig(
        obs_keys=list(shapes), generator=generator, backbone=backbone, horizon=8, n_action_steps=4
    )
    cfg.unet = type(cfg.unet)(down_dims=[16, 32], time_embed_dim=32, n_groups=4)
    cfg.transformer = type(cfg.transformer)(d_model=32, n_layers=1, n_heads=2, dropout=0.0)
    cfg.image.width, cfg.image.feature_dim, cfg.image.num_keypoints = 8, 16, 8
    if generator == "consistency":
        cfg.gen.teacher = "unused-in-unit-tests"
    rng = np.random.default_rng(seed)
    arrays = {k: rng.normal(size=(64, *s)) for k, s in shapes.items() if k not in images}
    arrays["action"] = rng.normal(size=(64, 8))
    modes = {k: "minmax" for k in arrays} | {k: "identity" for k in images}
    arrays |= {k: np.zeros((1, 1)) for k in images}
    meta = ShapeMeta(obs_shapes=shapes, action_dim=8, image_keys=images, arm="franka", task="reach")
    return Policy(cfg, meta, Normalizer().fit(arrays, modes)).eval()


def _on_engine(policy: Policy, engine: str, tmp_path) -> Policy:
    files = None
    if engine in engines.ONNX_ENGINES:
        files = graph_files(tmp_path, write_graphs(policy, tmp_path, engine))
    return apply_engine(copy.deepcopy(policy), engine, files, check=False)


CASES = [
    ("consistency", "unet", None),  # 1 step
    ("flow", "unet", None),  # 10 Euler steps: errors compound over calls
    ("flow", "transformer", None),
    ("edm", "unet", None),
]


@pytest.mark.parametrize("engine", ["bf16", "onnx", "onnx-int8"])
@pytest.mark.parametrize(("generator", "backbone", "steps"), CASES)
def test_engine_chunk_matches_fp32_lowdim(engine, generator, backbone, steps, tmp_path):
    ref = _policy(generator, backbone)
    dev = chunk_deviation(ref, _on_engine(ref, engine, tmp_path), steps, seeds=range(3), batch=3)
    assert dev <= TOLERANCE[engine], f"{engine}: {dev}"
    if engine == "onnx":  # fp32 to float rounding
        assert dev < 1e-4


@pytest.mark.parametrize("engine", ["bf16", "onnx", "onnx-int8"])
@pytest.mark.parametrize("generator", ["consistency", "flow"])
def test_engine_chunk_matches_fp32_visuomotor(engine, generator, tmp_path):
    """2 cameras 96x96 + joints: the image trunks run on the engine too (ONNX: one graph per camera, centre crop
    inside)."""
    ref = _policy(generator, shapes=VISUOMOTOR)
    fast = _on_engine(ref, engine, tmp_path)
    if engine in engines.ONNX_ENGINES:
        assert isinstance(fast.encoder, engines.OnnxEncoder)
        assert sorted(fast.encoder.images) == ["camera0_rgb", "camera1_rgb"]
        assert (tmp_path / "image_0.onnx").is_file() and (tmp_path / "image_1.onnx").is_file()
    else:
        assert all(isinstance(m, engines.CastImageEncoder) for m in fast.encoder.images.values())
    assert chunk_deviation(ref, fast, seeds=range(2), batch=2) <= TOLERANCE[engine]


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inductor's own imports
def test_compiled_engine_matches_fp32_visuomotor():
    """torch.compile (inductor, C++ codegen with the system compiler) over the bf16 modules."""
    ref = _policy("consistency", shapes=VISUOMOTOR)
    fast = apply_engine(copy.deepcopy(ref), "compiled")  # compiles here, and checks one chunk
    assert chunk_deviation(ref, fast, seeds=range(2), batch=1) <= TOLERANCE["compiled"]


def test_same_noise_gives_the_same_chunk_on_one_engine(tmp_path):
    """The guard compares like with like: the seeded noise is the whole randomness of a chunk."""
    fast = _on_engine(_policy("flow"), "onnx", tmp_path)
    obs = example_obs(fast, 2, seed=5)
    torch.testing.assert_close(normalized_chunk(fast, obs, 3, 9), normalized_chunk(fast, obs, 3, 9))
    assert not torch.equal(normalized_chunk(fast, obs, 3, 9), normalized_chunk(fast, obs, 3, 10))


def test_predict_with_chunk_candidates_runs_batched_on_onnx(tmp_path):
    ref = _policy("flow", shapes=VISUOMOTOR)
    ref.chunk_candidates = 3
    fast = _on_engine(ref, "onnx", tmp_path)
    rng = np.random.default_rng(0)
    window = {
        k: rng.integers(0, 255, (2, *s), dtype=np.uint8)
        if k.startswith("camera")
        else rng.normal(size=(2, *s))
        for k, s in VISUOMOTOR.items()
    }
    ref.seed(3)
    fast.seed(3)
    np.testing.assert_allclose(fast.predict(window), ref.predict(window), atol=1e-4)


def test_export_round_trips_through_the_checkpoint(tmp_path):
    policy = _policy("consistency", shapes=VISUOMOTOR)
    ckpt = save_checkpoint(tmp_path / "ckpt", policy, provenance={"dataset": "demos.zarr", "steps": 7})
    out = export_onnx(policy, ckpt, "onnx")
    assert out == engine_dir(ckpt, "onnx")
    meta = json.loads((out / "engine.json").read_text())
    assert meta["provenance"]["dataset"] == "demos.zarr" and meta["provenance"]["steps"] == 7
    assert meta["max_deviation"] <= TOLERANCE["onnx"] and set(meta["checkpoint"]) >= {"model.safetensors"}
    assert sorted(p.name for p in out.iterdir()) == [
        "denoiser.onnx",
        "engine.json",
        "image_0.onnx",
        "image_1.onnx",
    ]
    assert meta["images"] == {"camera0_rgb": "image_0.onnx", "camera1_rgb": "image_1.onnx"}

    fp32 = load_deployable(ckpt)
    fast = load_deployable(ckpt, engine="onnx")
    assert isinstance(fast.backbone, engines.OnnxDenoiser)
    window = {k: v[0].cpu().numpy() for k, v in example_obs(policy, 1, seed=2).items()}
    window |= {k: (window[k].transpose(0, 2, 3, 1) * 255).astype(np.uint8) for k in policy.image_keys}
    fp32.seed(11)
    fast.seed(11)
    np.testing.assert_allclose(fast.predict(window), fp32.predict(window), atol=1e-4)


def test_loading_an_engine_that_cannot_run_is_one_line(tmp_path):
    policy = _policy("flow")
    ckpt = save_checkpoint(tmp_path / "ckpt", policy)
    with pytest.raises(CheckpointError, match="no onnx-int8 engine.*mimic export") as e:
        load_deployable(ckpt, engine="onnx-int8")
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="engine 'tensorrt': not one of"):
        load_deployable(ckpt, engine="tensorrt")
    export_onnx(policy, ckpt, "onnx")
    with torch.no_grad():  # the checkpoint's weights change in place: its engine no longer belongs to it
        policy.backbone.final[1].bias.add_(1.0)
    from safetensors.torch import save_file

    from mimic.policies.checkpoint import tensors_for_save

    save_file(tensors_for_save(policy.state_dict()), str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match="exported from other weights"):
        load_deployable(ckpt, engine="onnx")
    (engine_dir(ckpt, "onnx") / "engine.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="engine.json: unreadable"):
        load_deployable(ckpt, engine="onnx")


def test_an_export_with_one_encoder_graph_is_refused_with_the_command_that_replaces_it(tmp_path):
    """Exports before per-camera image graphs held one encoder.onnx over the whole window, which cannot encode one
    frame at a time (the feature cache): loading one names `mimic export`."""
    policy = _policy("consistency", shapes=VISUOMOTOR)
    ckpt = save_checkpoint(tmp_path / "ckpt", policy)
    out = export_onnx(policy, ckpt, "onnx", check_seeds=1)
    meta = json.loads((out / "engine.json").read_text())
    meta |= {"encoder": "encoder.onnx", "encoder_keys": ["camera0_rgb", "camera1_rgb"]}
    del meta["images"]
    (out / "engine.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="exported before per-camera image graphs.*mimic export") as e:
        load_deployable(ckpt, engine="onnx")
    assert "\n" not in str(e.value)


def test_an_engine_beyond_its_tolerance_is_refused(tmp_path, monkeypatch):
    policy = _policy("flow")
    ckpt = save_checkpoint(tmp_path / "ckpt", policy)
    monkeypatch.setitem(TOLERANCE, "onnx-int8", 1e-6)
    with pytest.raises(EngineError, match="deviate from fp32 by .* not written"):
        export_onnx(policy, ckpt, "onnx-int8")
    assert not (ckpt / "engines" / "onnx-int8").exists() and not (ckpt / "engines" / "onnx-int8.tmp").exists()
    monkeypatch.setitem(TOLERANCE, "bf16", 1e-6)
    with pytest.raises(EngineError, match="engine bf16: chunks deviate"):
        apply_engine(copy.deepcopy(policy), "bf16")


def test_onnx_engine_refuses_gradients_instead_of_faking_them(tmp_path):
    """Guided sampling (rtc) differentiates through the denoiser; an ONNX graph cannot, and says so."""
    fast = _on_engine(_policy("flow"), "onnx", tmp_path)
    x = torch.zeros(1, fast.horizon, fast.action_dim, requires_grad=True)
    cond = torch.zeros(1, fast.n_obs_steps, 18)
    with torch.enable_grad(), pytest.raises(EngineError, match="rtc.*torch, bf16 or compiled"):
        fast.backbone(x, torch.ones(1), cond)


def test_export_cli(tmp_path, capsys):
    from mimic.workflows.export import main

    ckpt = save_checkpoint(tmp_path / "ckpt", _policy("consistency"))
    assert main([str(ckpt), "--format", "onnx-int8", "--check-seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "onnx-int8 engine" in out and "tolerance 0.1" in out
    assert (ckpt / "engines" / "onnx-int8" / "denoiser.onnx").is_file()
    assert main([str(tmp_path / "nowhere"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mimic export:") and "nowhere" in err and "\n" not in err
