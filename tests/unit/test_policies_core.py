"""Policies in-process: sampler maths against ideal denoisers, every generator x backbone trains and
samples, window batches match WindowDataset, checkpoints round-trip through safetensors only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mimic.policies.config import ConfigError, GeneratorConfig, PolicyConfig, load_train_config
from mimic.policies.generators import (
    ConsistencyGenerator,
    DDPMGenerator,
    EDMGenerator,
    FlowGenerator,
    make_generator,
)
from mimic.policies.generators.diffusion import NOISE_SCALE

torch.set_num_threads(1)

TINY_UNET = {"down_dims": [16, 32], "time_embed_dim": 32, "n_groups": 4}
TINY_TF = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.0}
X_STAR = torch.tensor([0.3, -0.7, 0.1])  # the single "data point" for ideal-denoiser tests


def _ideal_flow_net(x, t_scaled, cond):
    t = (t_scaled / 100.0)[:, None, None]
    return (x - X_STAR) / t  # exact velocity of the straight path from X_STAR to x at time t


def _ideal_edm_raw(gen: EDMGenerator):
    """The raw F whose preconditioned D(x, sigma) is exactly X_STAR."""
    sd = gen.cfg.sigma_data

    def net(x_in, c_noise, cond):
        sigma = torch.exp(c_noise / NOISE_SCALE * 4)[:, None, None]
        x = x_in * (sigma**2 + sd**2).sqrt()
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        return (X_STAR - c_skip * x) / c_out

    return net


@pytest.mark.parametrize("steps", [1, 3, 10])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("schedule", ["uniform", "karras"])
def test_flow_sampler_lands_on_the_data_with_the_exact_velocity(steps, sampler, schedule):
    gen = FlowGenerator(GeneratorConfig(sampler=sampler, schedule=schedule))
    out = gen.sample(_ideal_flow_net, torch.zeros(4, 1), (4, 5, 3), steps)
    torch.testing.assert_close(out, X_STAR.expand(4, 5, 3), atol=1e-5, rtol=0)


def test_flow_karras_grid_is_edms_sigmas_in_flow_time():
    cfg = GeneratorConfig(schedule="karras")
    ts = FlowGenerator(cfg).grid(5, torch.device("cpu"))
    sigmas = ts[:-1] / (1 - ts[:-1])
    torch.testing.assert_close(
        sigmas[[0, -1]], torch.tensor([cfg.sigma_max, cfg.sigma_min]), rtol=1e-4, atol=0
    )
    assert ts[-1] == 0 and bool((ts.diff() < 0).all())
    assert (
        FlowGenerator(GeneratorConfig()).grid(10, torch.device("cpu")) > 2 / 3
    ).sum() == 4  # t 1, .9, .8, .7


@pytest.mark.parametrize("steps", [1, 3, 16])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_edm_sampler_lands_on_the_data_with_the_ideal_denoiser(steps, sampler):
    gen = EDMGenerator(GeneratorConfig(sampler=sampler))
    out = gen.sample(_ideal_edm_raw(gen), torch.zeros(2, 1), (2, 4, 3), steps)
    torch.testing.assert_close(out, X_STAR.expand(2, 4, 3), atol=1e-4, rtol=0)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddpm_sampler_lands_on_the_data_with_the_ideal_epsilon(scheduler, spacing):
    gen = DDPMGenerator(GeneratorConfig(scheduler=scheduler, timestep_spacing=spacing))
    abar = gen.train_scheduler.alphas_cumprod

    def eps(x, t, cond):
        a = abar[t.long()][:, None, None]
        return (x - a.sqrt() * X_STAR) / (1 - a).sqrt()

    out = gen.sample(eps, torch.zeros(2, 1), (2, 4, 3), 10 if scheduler == "ddim" else 100)
    torch.testing.assert_close(out, X_STAR.expand(2, 4, 3), atol=2e-3, rtol=0)


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_ddpm_trains_towards_what_its_sampler_reads(kind):
    """The training target of each prediction type is what the scheduler turns back into the data: an ideal net
    (the loss's own target, computed from the clean chunk) samples X_STAR, and it has zero training loss."""
    gen = DDPMGenerator(GeneratorConfig(prediction_type=kind))
    abar = gen.train_scheduler.alphas_cumprod

    def ideal(x, t, cond):
        a = abar[t.long()][:, None, None]
        eps = (x - a.sqrt() * X_STAR) / (1 - a).sqrt()
        return {
            "epsilon": eps,
            "sample": X_STAR.expand_as(x),
            "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * X_STAR,
        }[kind]

    out = gen.sample(ideal, torch.zeros(2, 1), (2, 4, 3), 10)
    torch.testing.assert_close(out, X_STAR.expand(2, 4, 3), atol=2e-3, rtol=0)
    assert gen.loss(ideal, X_STAR.expand(64, 4, 3).clone(), torch.zeros(64, 1)).item() < 1e-8


def _log_sigma_of_training_draws(gen_name: str, sampling: str, n: int = 20000) -> torch.Tensor:
    cfg = GeneratorConfig(time_sampling=sampling)
    torch.manual_seed(0)
    if gen_name == "flow":
        t = FlowGenerator(cfg)._time(n, torch.zeros(1))
        return (t / (1 - t)).log()
    gen = DDPMGenerator(cfg)
    abar = gen.train_scheduler.alphas_cumprod  # the test's own sigma, not the generator's table
    return 0.5 * ((1 - abar) / abar).log()[gen.timesteps(n, torch.device("cpu"))]


@pytest.mark.parametrize("gen_name", ["flow", "diffusion"])
def test_lognormal_time_sampling_draws_edms_noise_levels(gen_name):
    """time_sampling lognormal: ln sigma ~ N(p_mean, p_std) as EDM trains, where uniform puts about half of DDPM's
    and most of flow's draws above sigma 1."""
    cfg = GeneratorConfig()
    ln = _log_sigma_of_training_draws(gen_name, "lognormal")
    assert abs(ln.mean().item() - cfg.p_mean) < 0.05 and abs(ln.std().item() - cfg.p_std) < 0.08
    assert (ln < 0).float().mean().item() > 0.8  # N(-1.2, 1.2): 84% below sigma 1
    assert (_log_sigma_of_training_draws(gen_name, "uniform") < 0).float().mean().item() < 0.55


@pytest.mark.parametrize("gen_name", ["flow", "diffusion", "edm", "consistency"])
def test_num_inference_steps_none_means_the_configs_and_zero_is_refused(gen_name):
    """None (not 0) asks for the checkpoint's step count; 0 is a mistake, not a silent default."""
    gen = make_generator(gen_name, GeneratorConfig(teacher="x", num_inference_steps=3))
    assert gen.steps(None) == 3 and gen.steps(7) == 7
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        gen.steps(0)


def test_consistency_boundary_condition_is_identity_at_sigma_min():
    gen = make_generator("consistency", GeneratorConfig(teacher="x"))
    x = torch.randn(3, 4, 2)
    out = gen.consistency_fn(
        lambda a, b, c: torch.full_like(a, 9.0), x, torch.full((3,), gen.cfg.sigma_min), None
    )
    torch.testing.assert_close(out, x)


# ---- policies on a real (tiny) twin dataset -----------------------------------------------------------
@pytest.fixture(scope="module")
def reach_store(tmp_path_factory):
    from mimic.workflows.record_expert import record_expert_dataset

    path = tmp_path_factory.mktemp("store") / "reach.zarr"
    return record_expert_dataset(
        path, "franka", "reach", episodes=3, cameras=("scene", "wrist"), image_size=(32, 32), progress=False
    )


def _policy(
    store,
    generator="flow",
    backbone="unet",
    obs_keys=("robot0_joint_pos", "object_state"),
    angle_obs=(),
    unet=None,
    prefix_rows=0,
    gen=None,
):
    from mimic.data.torch_dataset import WindowDataset
    from mimic.policies.data import WindowBatches, widen_small_ranges
    from mimic.policies.policy import Policy
    from mimic.workflows.train import shape_meta_for

    cfg = PolicyConfig(
        obs_keys=list(obs_keys),
        horizon=8,
        n_obs_steps=2,
        n_action_steps=4,
        generator=generator,
        backbone=backbone,
        angle_obs=list(angle_obs),
        prefix_rows=prefix_rows,
    )
    cfg.unet = type(cfg.unet)(**{**TINY_UNET, **(unet or {})})
    cfg.transformer = type(cfg.transformer)(**TINY_TF)
    cfg.image.width, cfg.image.feature_dim, cfg.image.num_keypoints = 8, 16, 8
    if generator == "consistency":
        cfg.gen.teacher = "unused-in-unit-tests"
    for name, value in (gen or {}).items():
        setattr(cfg.gen, name, value)
    ds = WindowDataset(store, list(obs_keys), n_obs_steps=2, horizon=8, val_ratio=0.34, seed=0)
    lowdim = [k for k in obs_keys if k not in ds.image_keys]
    norm = ds.get_normalizer(
        {"action": "minmax", **{k: "minmax" for k in lowdim}, **{k: "identity" for k in ds.image_keys}}
    )
    norm = widen_small_ranges(norm, lowdim, 0.02)
    return Policy(cfg, shape_meta_for(ds.replay, list(obs_keys), ds.image_keys), norm), WindowBatches(ds), ds


def train_steps(policy, batches, steps: int) -> list[float]:
    """`steps` AdamW steps (lr 3e-3) on random batches of 32 (seeded); the losses."""
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        loss = policy(batches.batch(rng.integers(0, len(batches), 32)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _edm_taught_student(store):
    """An edm teacher and a consistency student set up to distil from it (shared normaliser, teacher's weights)."""
    teacher, batches, _ = _policy(store, "edm")
    student, _, _ = _policy(store, "consistency")
    student.normalizer = teacher.normalizer
    student.set_teacher(teacher)
    return teacher, student, batches


def test_angle_obs_turn_a_wrap_through_pi_into_a_small_step(reach_store):
    """object_state dim 2 declared an angle: +pi - e and -pi + e encode to neighbours, and the policy still
    trains and predicts with the wider input (reach's goal z stands in for an angle here)."""
    policy, batches, _ = _policy(reach_store, angle_obs=["object_state:2"])
    batch = batches.batch(np.arange(4))
    near_pi = {k: v.clone() for k, v in batch["obs"].items()}
    past_pi = {k: v.clone() for k, v in batch["obs"].items()}
    near_pi["object_state"][..., 2], past_pi["object_state"][..., 2] = np.pi - 1e-3, -np.pi + 1e-3
    a, b = policy.normalize_obs(near_pi)["object_state"], policy.normalize_obs(past_pi)["object_state"]
    assert a.shape[-1] == batch["obs"]["object_state"].shape[-1] + 1
    assert (a - b).abs().max() < 3e-3  # without the option: a jump of 2 in normalised units
    plain, _, _ = _policy(reach_store)
    gap = plain.normalize_obs(near_pi)["object_state"] - plain.normalize_obs(past_pi)["object_state"]
    assert gap.abs().max() > 1.0
    loss = policy(batch)
    loss.backward()
    window = {k: v[0].numpy() for k, v in batch["obs"].items()}
    assert np.isfinite(policy.predict(window)).all()
    with pytest.raises(ValueError, match="angle_obs"):
        _policy(reach_store, angle_obs=["object_state:9"])


def test_window_batches_match_window_dataset_items(reach_store):
    _, batches, ds = _policy(reach_store)
    ids = np.arange(len(ds))
    b = batches.batch(ids)
    for i in [0, 1, len(ds) // 2, len(ds) - 1]:  # first windows are edge-padded, last ones padded after
        item = ds[int(i)]
        torch.testing.assert_close(b["action"][i], item["action"])
        for k in ds.obs_keys:
            torch.testing.assert_close(b["obs"][k][i], item["obs"][k])


@pytest.mark.parametrize("generator", ["flow", "diffusion", "edm"])
@pytest.mark.parametrize("backbone", ["unet", "transformer"])
def test_generator_backbone_trains_and_predicts_absolute_chunks(reach_store, generator, backbone):
    torch.manual_seed(0)
    policy, batches, _ = _policy(reach_store, generator, backbone)
    losses = train_steps(policy, batches, 30)
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5])
    window = {k: batches.arrays[k][:2].astype(np.float64) for k in policy.obs_keys}
    for steps in (1, 3):
        chunk = policy.predict(window, num_inference_steps=steps)
        assert chunk.shape == (8, 8) and np.isfinite(chunk).all()
    # Called mid-training, predict() samples in eval mode (no dropout) and hands the policy back training.
    policy.train().seed(7)
    from_training = policy.predict(window, 3)
    assert policy.training
    policy.eval().seed(7)
    np.testing.assert_allclose(from_training, policy.predict(window, 3), atol=1e-6)


def test_relative_joint_actions_train_on_deltas_and_predict_absolute(reach_store):
    from mimic.policies.data import relative_action_normalizer

    torch.manual_seed(0)
    policy, batches, _ = _policy(reach_store, "flow")
    policy.cfg.action_relative_to = policy.relative_key = "robot0_joint_pos"
    policy.relative_dims = 7
    policy.normalizer = relative_action_normalizer(policy.normalizer, batches, "robot0_joint_pos")
    b = batches.batch(np.arange(len(batches)))
    rel = b["action"] - policy.action_reference(b["obs"])
    assert torch.all(rel[..., 7] == b["action"][..., 7])  # gripper stays absolute
    nrel = policy.normalizer.normalize("action", rel)
    assert float(nrel.abs().max()) <= 1 + 1e-4  # stats fit on the deltas, not on absolute targets
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    for _ in range(20):
        loss = policy(batches.batch(np.arange(32) % len(batches)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    window = {k: batches.arrays[k][10:12].astype(np.float64) for k in policy.obs_keys}
    policy.seed(3)
    chunk = policy.predict(window, 3)
    policy.relative_key = ""  # same network and noise, read as absolute: differs by exactly the reference
    policy.seed(3)
    raw = policy.predict(window, 3)
    np.testing.assert_allclose(
        chunk[:, :7] - raw[:, :7], np.broadcast_to(window["robot0_joint_pos"][-1], (8, 7)), atol=1e-5
    )
    np.testing.assert_allclose(chunk[:, 7], raw[:, 7], atol=1e-6)


def test_consistency_student_distils_from_an_edm_teacher(reach_store):
    teacher, student, batches = _edm_taught_student(reach_store)
    torch.testing.assert_close(student.backbone.state_dict(), teacher.backbone.state_dict())
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    for _ in range(3):
        loss = student(batches.batch(np.arange(16)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(loss.item())
    assert all(not p.requires_grad for p in teacher.parameters())
    window = {k: batches.arrays[k][:2].astype(np.float64) for k in student.obs_keys}
    assert student.predict(window, num_inference_steps=1).shape == (8, 8)


def test_consistency_dsm_anchor_adds_the_denoising_error(reach_store):
    """cd_dsm_weight w: the same draws give loss(w) = loss(0) + w * ||f(x_sigma, sigma) - x0||^2 > loss(0)."""
    teacher, student, batches = _edm_taught_student(reach_store)
    batch = batches.batch(np.arange(16))
    losses = {}
    for w in (0.0, 1.0, 2.0):
        student.generator.cfg.cd_dsm_weight = w
        torch.manual_seed(0)
        losses[w] = student(batch).item()
    assert losses[1.0] > losses[0.0]
    assert losses[2.0] - losses[0.0] == pytest.approx(2 * (losses[1.0] - losses[0.0]), rel=1e-4)
    # cd_dsm_sigma: the anchor fades out at high sigma, so it adds less, and nothing as cd_dsm_sigma -> 0+
    student.generator.cfg.cd_dsm_weight = 1.0
    added = {}
    for sd in (10.0, 0.05, 1e-6):
        student.generator.cfg.cd_dsm_sigma = sd
        torch.manual_seed(0)
        added[sd] = student(batch).item() - losses[0.0]
    assert losses[1.0] - losses[0.0] > added[10.0] > added[0.05] > added[1e-6] >= 0
    assert added[1e-6] == pytest.approx(0.0, abs=1e-6)


def test_visuomotor_policy_two_cameras_uint8_window(reach_store):
    keys = ("robot0_joint_pos", "camera0_rgb", "camera1_rgb")
    policy, batches, _ = _policy(reach_store, "flow", "unet", keys)
    assert policy.image_keys == ("camera0_rgb", "camera1_rgb")
    loss = policy(batches.batch(np.arange(8)))
    loss.backward()
    assert all(p.grad is not None for p in policy.encoder.images.parameters())
    window = {k: batches.arrays[k][:2] for k in keys}
    assert window["camera0_rgb"].dtype == np.uint8
    assert policy.predict(window, 1).shape == (8, 8)
    with pytest.raises(ValueError, match="camera1_rgb"):
        policy.predict({**window, "camera1_rgb": window["camera1_rgb"][:1]})
    with pytest.raises(KeyError, match="camera0_rgb"):
        policy.predict({k: v for k, v in window.items() if k != "camera0_rgb"})


def test_checkpoint_round_trip_is_safetensors_only(reach_store, tmp_path):
    from mimic.policies import CheckpointError, load_policy, save_checkpoint

    policy, batches, _ = _policy(reach_store, "edm", "transformer")
    ckpt = save_checkpoint(
        tmp_path / "ckpt", policy, {"note": "unit"}, {"dataset": str(reach_store), "steps": 0}
    )
    assert sorted(p.suffix for p in ckpt.iterdir()) == [
        ".json",
        ".json",
        ".json",
        ".safetensors",
        ".safetensors",
        ".yaml",
    ]
    loaded = load_policy(ckpt)
    window = {k: batches.arrays[k][:2].astype(np.float64) for k in policy.obs_keys}
    policy.seed(7)
    loaded.seed(7)
    np.testing.assert_allclose(loaded.predict(window), policy.eval().predict(window), atol=1e-6)
    assert (
        loaded.obs_keys,
        loaded.n_obs_steps,
        loaded.horizon,
        loaded.n_action_steps,
        loaded.action_dim,
        loaded.control_hz,
    ) == (("robot0_joint_pos", "object_state"), 2, 8, 4, 8, 10.0)
    # the executed chunk length is an inference choice, checked like the config's (horizon 8 holds 7 rows)
    assert load_policy(ckpt, overrides=["policy.n_action_steps=2"]).n_action_steps == 2
    with pytest.raises(CheckpointError, match="n_action_steps: 8 must be in 1..7"):
        load_policy(ckpt, overrides=["policy.n_action_steps=8"])
    # so are the sampler's choices; a field the weights depend on is refused, naming the fields that are not
    heun = load_policy(ckpt, overrides=["policy.gen.sampler=heun", "policy.gen.num_inference_steps=3"])
    assert (heun.generator.cfg.sampler, heun.generator.cfg.num_inference_steps) == ("heun", 3)
    with pytest.raises(CheckpointError, match="--set policy.unet.down_dims: not a field a run may change"):
        load_policy(ckpt, overrides=["policy.unet.down_dims=[8,16]"])
    with pytest.raises(CheckpointError, match="sampler"):
        load_policy(ckpt, overrides=["policy.gen.sampler=rk4"])
    (ckpt / "normalizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="normalizer.safetensors"):
        load_policy(ckpt)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_policy(tmp_path / "nope")


# ---- config, schedule, statistics -----------------------------------------------------------------
def test_config_yaml_overrides_and_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("dataset: d.zarr\nsteps: 10\npolicy:\n  generator: edm\n")
    cfg = load_train_config(p, ["policy.unet.down_dims=[8,16]", "bf16=true", "policy.obs_keys=a,b"])
    assert (cfg.steps, cfg.policy.generator, cfg.policy.unet.down_dims, cfg.bf16) == (
        10,
        "edm",
        [8, 16],
        True,
    )
    assert cfg.policy.obs_keys == ["a", "b"]
    with pytest.raises(ConfigError, match="stpes"):
        load_train_config(p, ["stpes=3"])
    with pytest.raises(ConfigError, match="steps"):
        load_train_config(p, ["steps=many"])
    with pytest.raises(ConfigError, match="generator"):
        load_train_config(p, ["policy.generator=gan"])
    with pytest.raises(ConfigError, match="teacher"):
        load_train_config(p, ["policy.generator=consistency"])
    with pytest.raises(ConfigError, match="time_sampling.*diffusion"):
        load_train_config(p, ["policy.generator=diffusion", "policy.gen.time_sampling=logit_normal"])
    with pytest.raises(ConfigError, match="timestep_spacing"):
        load_train_config(p, ["policy.generator=diffusion", "policy.gen.timestep_spacing=linspace"])
    with pytest.raises(ConfigError, match="prediction_type"):
        load_train_config(p, ["policy.generator=diffusion", "policy.gen.prediction_type=v"])
    assert (
        load_train_config(
            p, ["policy.generator=flow", "policy.gen.time_sampling=lognormal"]
        ).policy.gen.time_sampling
        == "lognormal"
    )


def test_lr_warmup_then_cosine_and_wilson_interval():
    from mimic.policies.config import TrainConfig
    from mimic.workflows.eval_result import wilson_interval
    from mimic.workflows.train import lr_at

    cfg = TrainConfig(dataset="x", lr=1.0, steps=110, warmup_steps=10)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.5) and lr_at(cfg, 110) == pytest.approx(0.0, abs=1e-12)
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.7225, abs=1e-3) and hi == 1.0
    lo, hi = wilson_interval(45, 50)
    assert lo == pytest.approx(0.7864, abs=1e-3) and hi == pytest.approx(0.9565, abs=1e-3)


def test_small_ranges_are_widened_not_amplified():
    from mimic.data.normalizer import Normalizer
    from mimic.policies.data import widen_small_ranges

    x = np.stack([np.linspace(0, 1, 50), 1e-4 * np.sin(np.arange(50))], 1)
    norm = widen_small_ranges(Normalizer().fit({"s": x}, {"s": "minmax"}), ["s"], 0.02)
    y = norm.normalize("s", x)
    assert y[:, 0].min() == pytest.approx(-1) and y[:, 0].max() == pytest.approx(1)
    assert np.abs(y[:, 1]).max() < 0.02  # 1e-4 stays small instead of being stretched to +-1


def test_every_shipped_train_config_parses():
    """A shipped config with a typo would only fail when a user starts a 40-minute run."""
    from pathlib import Path

    import yaml

    configs = sorted((Path(__file__).resolve().parents[2] / "policies" / "configs").glob("*.yaml"))
    train_configs = [p for p in configs if "eef" not in (yaml.safe_load(p.read_text()) or {})]
    assert len(train_configs) >= 10
    for path in train_configs:
        load_train_config(path)


def test_chunk_candidates_keep_the_chunk_that_continues_the_last_one(reach_store):
    torch.manual_seed(0)
    policy, batches, _ = _policy(reach_store, "flow")
    policy.eval().seed(3)
    policy.chunk_candidates = 8
    window = {k: batches.arrays[k][:2].astype(np.float64) for k in policy.obs_keys}
    first = policy.predict(window, 2)
    state = policy._rng.get_state()
    second = policy.predict(window, 2)
    policy._rng.set_state(state)
    obs = policy.obs_to_tensors(window)
    with torch.inference_mode():
        cands = policy.sample_actions({k: v.expand(8, *v.shape[1:]) for k, v in obs.items()}, 2, policy._rng)
        norm = policy.normalizer.normalize("action", cands).double().numpy()
        prev = (
            policy.normalizer.normalize("action", torch.as_tensor(first, dtype=torch.float32))
            .double()
            .numpy()
        )
    # n_obs 2, horizon 8, 4 actions per call: rows 1..3 of this call are rows 5..7 of the last one
    dist = ((norm[:, 1:4] - prev[5:8]) ** 2).sum((1, 2))
    i = int(dist.argmin())
    np.testing.assert_allclose(second, cands[i].double().numpy(), atol=1e-6)
    assert dist[i] < np.median(dist)
    # after reset() nothing is continued: the first candidate comes back
    policy.reset()
    state = policy._rng.get_state()
    third = policy.predict(window, 2)
    policy._rng.set_state(state)
    with torch.inference_mode():
        cands = policy.sample_actions({k: v.expand(8, *v.shape[1:]) for k, v in obs.items()}, 2, policy._rng)
    np.testing.assert_allclose(third, cands[0].double().numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match="chunk_candidates"):
        PolicyConfig(obs_keys=["robot0_joint_pos"], chunk_candidates=0).validate()


def test_consistency_ode_target_is_the_teachers_euler_sample(reach_store):
    """cd_target "ode": from sigma_max the target is exactly what the teacher's Euler sampler returns from the
    same noise, and the distillation loss trains the student towards it."""
    teacher, student, batches = _edm_taught_student(reach_store)
    gen, tgen = student.generator, teacher.generator
    gen.cfg.cd_target, gen.cfg.cd_ode_steps = "ode", 4
    tgen.cfg.sampler = "euler"
    batch = batches.batch(np.arange(8))
    with torch.no_grad():
        cond = teacher.encoder(teacher.encoder.augment(teacher.normalize_obs(batch["obs"]), train=False))
        shape = (8, teacher.horizon, teacher.action_dim)
        sample = tgen.sample(teacher.backbone, cond, shape, 4, torch.Generator().manual_seed(5))
        z = torch.randn(shape, generator=torch.Generator().manual_seed(5)) * tgen.cfg.sigma_max
        end = gen.teacher_endpoint(tgen, teacher.backbone, z, torch.full((8,), tgen.cfg.sigma_max), cond)
    torch.testing.assert_close(end, sample, atol=1e-5, rtol=1e-5)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    losses = []
    for i in range(25):
        torch.manual_seed(i)
        loss = student(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5])
    gen.cfg.cd_target = "bogus"
    with pytest.raises(ValueError, match="cd_target"):
        student(batch)


def test_flow_denoise_of_the_exact_velocity_is_the_data():
    """A flow network is an EDM denoiser on x = x0 + sigma z: what lets a flow policy teach consistency."""
    x = torch.randn(5, 4, 3) * 3
    sigma = torch.tensor([0.002, 0.1, 1.0, 10.0, 80.0])
    out = FlowGenerator(GeneratorConfig()).denoise(_ideal_flow_net, x, sigma, None)
    torch.testing.assert_close(out, X_STAR.expand(5, 4, 3), atol=1e-5, rtol=0)


def test_consistency_from_a_flow_teacher_starts_at_its_one_step_and_targets_its_ode(reach_store):
    """gen.cd_param flow: the student starts as the teacher's 1-step Euler sample (Karras grid, same noise), the
    "ode" target is the teacher's own K-step Karras-grid Euler sample, and an edm teacher is refused."""
    teacher, batches, _ = _policy(reach_store, "flow")
    student, _, _ = _policy(reach_store, "consistency")
    student.cfg.gen.cd_param = "flow"
    student.normalizer = teacher.normalizer
    student.set_teacher(teacher)
    gen, tgen = student.generator, teacher.generator
    gen.cfg.cd_param, gen.cfg.cd_target, gen.cfg.cd_ode_steps = "flow", "ode", 4
    tgen.cfg.schedule = "karras"
    batch = batches.batch(np.arange(8))
    shape = (8, teacher.horizon, teacher.action_dim)
    with torch.no_grad():
        cond = teacher.encoder(teacher.encoder.augment(teacher.normalize_obs(batch["obs"]), train=False))
        one = gen.sample(student.backbone, cond, shape, 1, torch.Generator().manual_seed(3))
        torch.testing.assert_close(
            one,
            tgen.sample(teacher.backbone, cond, shape, 1, torch.Generator().manual_seed(3)),
            atol=1e-5,
            rtol=1e-5,
        )
        sample = tgen.sample(teacher.backbone, cond, shape, 4, torch.Generator().manual_seed(5))
        z = torch.randn(shape, generator=torch.Generator().manual_seed(5)) * tgen.cfg.sigma_max
        end = gen.teacher_endpoint(tgen, teacher.backbone, z, torch.full((8,), tgen.cfg.sigma_max), cond)
    torch.testing.assert_close(end, sample, atol=1e-5, rtol=1e-5)
    loss = student(batch)
    loss.backward()
    assert np.isfinite(loss.item()) and loss.item() > 0
    edm_teacher, _, _ = _policy(reach_store, "edm")
    with pytest.raises(ValueError, match="'flow' policy for gen.cd_param 'flow'"):
        student.set_teacher(edm_teacher)
    with pytest.raises(ConfigError, match="cd_param"):
        PolicyConfig(
            obs_keys=["a"], generator="consistency", gen=GeneratorConfig(teacher="t", cd_param="ddpm")
        ).validate()


@pytest.mark.parametrize("mult", [2, 3])
def test_widened_unet_computes_the_narrow_ones_function(mult):
    """Net2WiderNet: every level m times wider, the same outputs (GroupNorm groups hold m copies of the same
    old group), but the copies of a channel are not equal (random input shares break their symmetry)."""
    from mimic.policies.backbones.unet import ConditionalUnet1D
    from mimic.policies.backbones.widen import widen_unet_state
    from mimic.policies.config import UnetConfig

    torch.manual_seed(0)
    narrow_dims, wide_dims = [8, 16, 32], [mult * 8, mult * 16, mult * 32]
    narrow = ConditionalUnet1D(3, 10, UnetConfig(down_dims=narrow_dims, time_embed_dim=16, n_groups=4))
    with torch.no_grad():  # GroupNorm's affine and every bias away from their initial 1 / 0
        for p in narrow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    wide = ConditionalUnet1D(3, 10, UnetConfig(down_dims=wide_dims, time_embed_dim=16, n_groups=4))
    wide.load_state_dict(widen_unet_state(narrow.state_dict(), narrow_dims, wide, wide_dims, groups=4))
    x, t, obs = torch.randn(6, 8, 3), torch.rand(6) * 100, torch.randn(6, 2, 5)
    with torch.no_grad():
        torch.testing.assert_close(wide(x, t, obs), narrow(x, t, obs), atol=1e-5, rtol=1e-5)
    w = wide.mid[0].block1[0].weight  # [out, in, k]: the mult copies of input channel 0 sit in one group
    first_copy = 32 // 4  # wide group 0 holds old group 0's 8 channels mult times: wide 8 is old 0 again
    assert not torch.allclose(w[:, 0], w[:, first_copy])
    with pytest.raises(ValueError, match="whole multiple"):
        widen_unet_state(narrow.state_dict(), narrow_dims, wide, [16, 48, 64], groups=4)


def test_consistency_student_wider_than_its_teacher_starts_at_its_one_step(reach_store):
    """A student with policy.unet.down_dims twice the teacher's starts as the teacher's function (its one step
    is the teacher's one Euler step) and distils like a same-size student."""
    teacher, batches, _ = _policy(reach_store, "flow")
    student, _, _ = _policy(reach_store, "consistency", unet={"down_dims": [32, 64]})
    student.cfg.gen.cd_param = "flow"  # the generator holds this same config
    student.normalizer = teacher.normalizer
    student.set_teacher(teacher)
    assert sum(p.numel() for p in student.parameters()) > 3 * sum(p.numel() for p in teacher.parameters())
    batch = batches.batch(np.arange(8))
    shape = (8, teacher.horizon, teacher.action_dim)
    teacher.generator.cfg.schedule = "karras"
    with torch.no_grad():
        cond = teacher.encoder(teacher.encoder.augment(teacher.normalize_obs(batch["obs"]), train=False))
        one = student.generator.sample(student.backbone, cond, shape, 1, torch.Generator().manual_seed(3))
        ref = teacher.generator.sample(teacher.backbone, cond, shape, 1, torch.Generator().manual_seed(3))
    torch.testing.assert_close(one, ref, atol=1e-5, rtol=1e-5)
    loss = student(batch)
    loss.backward()
    assert np.isfinite(loss.item()) and loss.item() > 0
    odd, _, _ = _policy(reach_store, "consistency", unet={"down_dims": [24, 48]})
    odd.cfg.gen.cd_param = "flow"
    with pytest.raises(ValueError, match="whole multiple"):
        odd.set_teacher(teacher)


def test_consistency_sigma_max_share_sets_where_ode_rows_start(reach_store):
    """cd_sigma_max_frac: that share of an "ode" batch starts at sigma_max (1.0: the 1-step map alone)."""
    teacher, student, batches = _edm_taught_student(reach_store)
    gen = student.generator
    gen.cfg.cd_target, gen.cfg.cd_ode_steps = "ode", 2
    seen: list[torch.Tensor] = []
    endpoint = gen.teacher_endpoint

    def recording_endpoint(t, net, x, sigma, cond):  # the real endpoint, noting each row's starting sigma
        seen.append(sigma.clone())
        return endpoint(t, net, x, sigma, cond)

    gen.teacher_endpoint = recording_endpoint
    batch = batches.batch(np.arange(8))
    for frac, at_max in ((1.0, 8), (0.25, 2)):
        gen.cfg.cd_sigma_max_frac = frac
        torch.manual_seed(0)
        with torch.no_grad():
            student(batch)
        sigma = seen[-1]
        assert torch.allclose(sigma[:at_max], torch.tensor(gen.cfg.sigma_max)), (frac, sigma)
        assert torch.all(sigma[at_max:] <= gen.cfg.sigma_max * (1 + 1e-6))
    with pytest.raises(ConfigError, match="cd_sigma_max_frac"):
        PolicyConfig(
            obs_keys=["robot0_joint_pos"],
            generator="consistency",
            gen=GeneratorConfig(teacher="t", cd_sigma_max_frac=1.5),
        ).validate()


def test_consistency_unexecuted_weight_spends_the_loss_on_the_executed_rows(reach_store):
    """gen.cd_unexecuted_weight: the distillation error of rows a rollout never executes is weighted down (0: ignored),
    the executed rows [n_obs_steps - 1, + n_action_steps) of the policy's own chunk keep theirs, mean weight 1."""
    student, _, _ = _policy(reach_store, "consistency")
    gen, pc = student.generator, student.cfg
    lo, hi = pc.n_obs_steps - 1, pc.n_obs_steps - 1 + pc.n_action_steps
    assert gen.executed_rows == student.executed_rows == (lo, hi) and hi < student.horizon
    pred = torch.randn(4, student.horizon, student.action_dim)
    target = pred.clone()
    target[:, lo:hi] += 0.1
    full = gen._distance(pred, target)
    gen.cfg.cd_unexecuted_weight = 0.0
    torch.testing.assert_close(gen._distance(pred, target), full * student.horizon / (hi - lo))
    moved = target.clone()
    moved[:, hi:] += 5.0  # rows past the executed ones: no longer counted
    moved[:, :lo] -= 5.0
    torch.testing.assert_close(gen._distance(pred, moved), gen._distance(pred, target))
    gen.cfg.cd_unexecuted_weight = 1.0
    assert gen._distance(pred, moved) > 10 * full
    with pytest.raises(ConfigError, match="cd_unexecuted_weight"):
        PolicyConfig(
            obs_keys=["robot0_joint_pos"],
            generator="consistency",
            gen=GeneratorConfig(teacher="t", cd_unexecuted_weight=-0.5),
        ).validate()


def test_trailing_ddim_starts_from_pure_noise_and_ends_at_the_data():
    """At 10 DDIM steps "leading" starts where alpha_bar is 0.02 (x_t still holds 0.14 x0); "trailing" starts at the
    last train timestep, where x_t is noise alone (that both land on the data is the ideal-epsilon test above)."""

    def first_abar(spacing: str) -> float:
        sched = DDPMGenerator(GeneratorConfig(timestep_spacing=spacing)).infer_scheduler
        sched.set_timesteps(10)
        return float(sched.alphas_cumprod[sched.timesteps[0]])

    assert first_abar("leading") > 0.01 and first_abar("trailing") < 1e-5


def test_consistency_pseudo_huber_distance_for_both_targets():
    """gen.cd_huber_c > 0: the distance is iCT's pseudo-Huber per chunk, sqrt(||d||^2 + c^2) - c, for "ode" targets
    as for "self" ones; 0 keeps the mean squared error."""
    pred, target = torch.randn(5, 4, 3), torch.randn(5, 4, 3)
    gen = ConsistencyGenerator(GeneratorConfig(cd_huber_c=0.0))
    torch.testing.assert_close(gen._distance(pred, target), ((pred - target) ** 2).mean())
    gen = ConsistencyGenerator(GeneratorConfig(cd_huber_c=0.1))
    want = (((pred - target) ** 2).flatten(1).sum(1) + 0.01).sqrt().sub(0.1).mean()
    torch.testing.assert_close(gen._distance(pred, target), want)


def test_consistency_pool_holds_the_teachers_endpoints_and_is_rebuilt_only_when_its_source_changes(
    reach_store, tmp_path, capsys
):
    """gen.cd_pool: each window's rows start where an online batch would (half at sigma_max), their targets are
    the teacher's ODE from there, the file is reused while teacher, store and draw are the same, and a batch that
    carries them trains the student without the teacher running."""
    from mimic.workflows.distill_pool import load_or_build

    teacher, student, batches = _edm_taught_student(reach_store)
    gen = student.generator
    gen.cfg.cd_target, gen.cfg.cd_ode_steps = "ode", 2
    path = tmp_path / "pool.safetensors"
    pool = load_or_build(path, student, batches, 3, seed=0, progress=False)
    n = len(batches)
    assert pool.x.shape == (n, 3, student.horizon, student.action_dim) == pool.target.shape
    assert pool.sigma.shape == (n, 3)
    at_max = torch.isclose(pool.sigma, torch.tensor(gen.cfg.sigma_max))
    assert (
        round(3 * n * 0.5) <= int(at_max.sum()) < 3 * n
    )  # the other bins are uniform, sigma_max's among them
    assert len({tuple(r) for r in at_max.tolist()}) > 1  # shuffled: not the first windows of each batch
    ids = np.array([0, n // 2, n - 1])
    batch = batches.batch(ids)
    with torch.no_grad():
        cond = teacher.encoder(teacher.encoder.augment(teacher.normalize_obs(batch["obs"]), train=False))
        end = gen.teacher_endpoint(
            teacher.generator, teacher.backbone, pool.x[ids, 1], pool.sigma[ids, 1], cond
        )
        x0 = teacher.normalized_actions(batch)
    torch.testing.assert_close(pool.target[ids, 1], end, atol=1e-5, rtol=1e-4)
    assert (pool.x[ids, 1] - x0).abs().max() > 0  # noised

    mtime = path.stat().st_mtime_ns
    again = load_or_build(path, student, batches, 3, seed=0, progress=False)
    assert path.stat().st_mtime_ns == mtime and torch.equal(again.target, pool.target)
    other = load_or_build(path, student, batches, 2, seed=0, progress=False)
    assert other.x.shape[1] == 2 and "made from another per_window; rebuilding it" in capsys.readouterr().out

    def no_teacher(*a, **k):
        raise AssertionError("the teacher ran although the batch carried its endpoints")

    gen.teacher_endpoint = no_teacher
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        b = batches.batch(np.arange(8))
        b["teacher_targets"] = other.draw(np.arange(8), rng)
        loss = student(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5])
    with pytest.raises(ConfigError, match="cd_pool"):
        PolicyConfig(
            obs_keys=["robot0_joint_pos"],
            generator="consistency",
            gen=GeneratorConfig(teacher="t", cd_pool=2),
        ).validate()  # cd_target "self"
