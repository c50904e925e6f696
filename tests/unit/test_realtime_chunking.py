"""Real-time chunking: the soft mask, the frozen prefix, guidance, ensembling weights, and the rollout's timing of
each strategy under an injected inference delay (twin time, so exact on any machine)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mimic.policies.generators import make_generator
from mimic.policies.generators.guidance import Inpaint, guidance_weight
from mimic.policies.realtime import (
    ChunkingConfig,
    InferenceDelay,
    continuation_prefix,
    soft_mask,
)
from mimic.robots.control import CHUNKING, Chunk, ChunkController, ensemble_weights
from mimic.robots.motion import MotionSamples
from mimic.robots.specs import get_spec
from tests.unit.test_policies_core import _policy, reach_store, train_steps  # noqa: F401  (fixture)

pytestmark = pytest.mark.unit
torch.set_num_threads(1)


def test_soft_mask_freezes_then_decays_exponentially_to_zero_at_the_overlap_end():
    w = soft_mask(16, 4, 12)
    assert np.all(w[:4] == 1.0) and np.all(w[12:] == 0.0)
    assert np.all(np.diff(w[4:12]) < 0) and 0 < w[11] < w[4] < 1
    c = (12 - 6) / (12 - 4 + 1)
    assert w[6] == pytest.approx(c * (math.e**c - 1) / (math.e - 1))
    assert np.array_equal(soft_mask(8, 3, 3), [1, 1, 1, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="frozen"):
        soft_mask(8, 5, 4)


def test_continuation_prefix_freezes_the_rows_due_before_the_new_chunk_can_act():
    dt, lo, h = 0.1, 1, 16
    old = Chunk(0.0, dt, np.arange(15 * 8, dtype=float).reshape(15, 8))  # rows for t = 0.0 .. 1.4
    p = continuation_prefix(old, t_obs=0.8, dt=dt, action_offset=lo, horizon=h, t_commit=1.0)
    # new row i is due at 0.8 + (i - 1) 0.1: rows 0..2 (0.7, 0.8, 0.9) come before 1.0; rows up to 1.4 overlap
    assert p.frozen == 3
    assert np.all(p.weights[:3] == 1) and np.all(p.weights[8:] == 0) and p.weights[3] > p.weights[7] > 0
    np.testing.assert_allclose(p.rows[:8], old.positions[7:15])
    assert continuation_prefix(old, 0.8, dt, lo, h, t_commit=0.8) is None  # no delay: nothing committed
    assert continuation_prefix(None, 0.8, dt, lo, h, t_commit=1.0) is None


def test_ensemble_weights_sum_to_one_and_favour_older_chunks():
    for n in (1, 2, 5):
        for decay in (0.0, 0.01, 0.5):
            w = ensemble_weights(n, decay)
            assert w.sum() == pytest.approx(1.0) and np.all(np.diff(w) <= 0)


def test_controller_ensembles_every_covering_chunk_and_switch_waits_for_the_new_start():
    spec = get_spec("franka")
    dof = spec.dof
    a = np.zeros((10, dof + 1))
    b = np.ones((10, dof + 1))
    ens = ChunkController(spec, 10.0, continuation="ensemble", ensemble_decay=0.5)
    ens.set_chunk(0.0, 0.1, a)
    ens.set_chunk(0.3, 0.1, b)
    w = ensemble_weights(2, 0.5)
    np.testing.assert_allclose(ens.desired(0.2), np.zeros(dof + 1))
    np.testing.assert_allclose(ens.desired(0.4), np.full(dof + 1, w[1]))
    sw = ChunkController(spec, 10.0, continuation="switch")
    sw.set_chunk(0.0, 0.1, a)
    sw.set_chunk(0.3, 0.1, b)
    assert sw.desired(0.2)[0] == 0.0 and sw.source == 0.0
    assert sw.desired(0.3)[0] == 1.0 and sw.source == 0.3


@pytest.mark.parametrize("name", ["flow", "edm", "consistency", "diffusion"])
def test_guidance_with_zero_weights_is_the_unguided_sample(name):
    gen = make_generator(
        name, __import__("mimic.policies.config", fromlist=["GeneratorConfig"]).GeneratorConfig()
    )
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 3)

    def net(x, t, cond):
        return torch.tanh(lin(x)) + 0.01 * t[:, None, None]

    cond = torch.zeros(2, 4)
    plain = gen.sample(net, cond, (2, 6, 3), 4, torch.Generator().manual_seed(1))
    zero = Inpaint(torch.full((2, 6, 3), 0.5), torch.zeros(6))
    with torch.no_grad():
        guided = gen.sample(net, cond, (2, 6, 3), 4, torch.Generator().manual_seed(1), zero)
    torch.testing.assert_close(guided, plain, atol=1e-5, rtol=0)


def test_guidance_weight_is_clipped_and_smallest_midway():
    assert guidance_weight(1.0, 5.0) == guidance_weight(0.0, 5.0) == 5.0
    assert guidance_weight(0.5, 5.0) == pytest.approx(2.0)
    assert guidance_weight(0.5, 1.0) == 1.0


def test_rtc_chunk_keeps_the_frozen_rows_and_moves_the_overlap_towards_the_old_chunk(reach_store):  # noqa: F811
    torch.manual_seed(0)
    policy, batches, _ = _policy(reach_store, "flow")
    train_steps(policy, batches, 150)  # a policy with some idea of the data, so its Jacobian means something
    policy.eval()
    window = {k: batches.arrays[k][:2].astype(np.float64) for k in policy.obs_keys}
    policy.seed(3)
    free = policy.predict(window)
    old_rows = free + 0.05  # an executing chunk the new one must continue
    old = Chunk(0.0, 0.1, old_rows[1:])  # its row 1 runs at t = 0
    prefix = continuation_prefix(old, 0.0, 0.1, 1, policy.horizon, t_commit=0.2)
    assert prefix.frozen == 3
    policy.seed(3)
    guided = policy.predict(window, prefix=prefix)
    np.testing.assert_array_equal(guided[:3], prefix.rows[:3])  # hard mask: exactly the executing rows
    soft = (prefix.weights > 0) & (prefix.weights < 1)
    w = prefix.weights[soft]

    def weighted_error(chunk: np.ndarray) -> float:  # what the guidance minimises
        return float((w * np.abs(chunk[soft] - prefix.rows[soft]).mean(1)).sum() / w.sum())

    assert weighted_error(guided) < 0.8 * weighted_error(free)
    assert np.abs(guided[3] - prefix.rows[3]).mean() < 0.5 * np.abs(free[3] - prefix.rows[3]).mean()


def test_a_zero_delay_rtc_rollout_is_the_unguided_one():
    from mimic.sim.env import make_env
    from mimic.workflows.rollout import rollout

    policy = _CountingPolicy()
    env = make_env("reach", "franka", cameras=())
    runs = {}
    for strategy in ("switch", "rtc"):
        policy.calls, policy.prefixes = 0, 0
        runs[strategy] = rollout(policy, env, 5, chunking=ChunkingConfig(strategy))
    assert policy.prefixes == 0
    np.testing.assert_array_equal(np.stack(runs["switch"].joints), np.stack(runs["rtc"].joints))


class _CountingPolicy:
    """Chunks whose rows say which call and row they are: joint 0 = home + call * 1e-2 + row * 1e-4."""

    obs_keys = ("robot0_joint_pos",)
    n_obs_steps, horizon, n_action_steps, control_hz = 2, 16, 8, 10.0

    def __init__(self) -> None:
        self.home = np.asarray(get_spec("franka").home, float)
        self.calls = self.prefixes = 0

    def predict(self, obs_window, num_inference_steps=None, prefix=None):
        self.calls += 1
        self.prefixes += prefix is not None
        rows = np.tile(np.append(self.home, 0.04), (self.horizon, 1))
        rows[:, 0] += self.calls * 1e-2 + np.arange(self.horizon) * 1e-4
        return prefix.apply(rows) if prefix is not None else rows

    def reset(self) -> None:
        pass


def _executed(strategy: str, delay: float):
    """(call, row) of every executed period's target (None while holding), from an ActionLog of the twin."""
    from mimic.sim.env import make_env
    from mimic.workflows.dagger import _ActionLog
    from mimic.workflows.rollout import rollout

    policy = _CountingPolicy()
    env = _ActionLog(make_env("reach", "franka", cameras=()))
    ep = rollout(policy, env, 3, chunking=ChunkingConfig(strategy, InferenceDelay(delay, delay)))
    out = []
    for a, src in zip(env.actions, ep.source, strict=True):
        if src < 0:
            out.append(None)
            continue
        off = (a[0] - policy.home[0]) / 1e-4
        out.append((int(round(off // 100)), int(round(off % 100))))
    return out, ep


def test_sync_at_zero_delay_is_the_receding_horizon():
    rows, ep = _executed("sync", 0.0)
    assert ep.idle_steps == 0
    assert rows[:16] == [(1, r) for r in range(1, 9)] + [(2, r) for r in range(1, 9)]


def test_sync_waits_for_each_chunk_and_runs_its_executed_rows_from_the_arrival():
    rows, ep = _executed("sync", 0.2)  # two control periods
    assert rows[:12] == [None, None, *[(1, r) for r in range(3, 11)], None, None]
    assert rows[12:14] == [(2, 3), (2, 4)]
    assert ep.idle_steps >= 4


@pytest.mark.parametrize("strategy", ["switch", "rtc", "ensemble", "blend"])
def test_async_strategies_compute_the_next_chunk_while_the_current_one_runs(strategy):
    rows, ep = _executed(strategy, 0.2)
    assert rows[:2] == [None, None]  # the first chunk is waited for, by every strategy
    assert ep.idle_steps == 2  # and never again: the next one arrives while the current one runs
    if strategy in ("switch", "rtc"):
        # chunk 2 starts at period 8 and arrives at 10, where its row 1 + 2 takes over from chunk 1's row 11
        assert rows[2:10] == [(1, r) for r in range(3, 11)]
        assert rows[10] == (2, 3)


def test_rtc_rollout_passes_the_executing_rows_as_frozen_prefix():
    _, ep = _executed("rtc", 0.2)
    assert ep.idle_steps == 2


def test_inference_delay_parses_fixed_and_uniform_and_refuses_nonsense():
    assert InferenceDelay.parse("0.2") == InferenceDelay(0.2, 0.2)
    assert InferenceDelay.parse("0.1:0.3") == InferenceDelay(0.1, 0.3)
    for bad in ("-1", "x", "0.3:0.1", "nan"):
        with pytest.raises(ValueError, match="inference delay"):
            InferenceDelay.parse(bad)
    with pytest.raises(ValueError, match="chunking"):
        ChunkingConfig("smooth")
    assert set(CHUNKING) == {"sync", "switch", "ensemble", "blend", "rtc"}


def test_motion_quality_finds_the_seam_between_chunks():
    dt = 0.1
    t = np.arange(21) * dt
    v = np.where(np.arange(20) < 10, 0.1, 0.6)  # the velocity steps up when chunk 1 takes over at period 10
    q = np.stack([np.concatenate([[0.0], np.cumsum(v * dt)]), np.zeros_like(t)], 1)
    source = np.array([0] * 10 + [1] * 10)
    m = MotionSamples()
    m.add(q, source, dt)
    s = m.summary()
    assert s.boundaries == 1
    assert s.boundary_vel_jump_p50 == pytest.approx(0.5, abs=1e-9)
    assert s.within_vel_jump_p99 < 1e-9 and s.boundary_acc_jump_p50 > 1.0


def test_a_prefix_conditioned_flow_policy_trains_on_the_rows_after_the_prefix_and_keeps_it(reach_store):  # noqa: F811
    from mimic.policies.config import ConfigError

    torch.manual_seed(0)
    policy, batches, _ = _policy(reach_store, "flow", prefix_rows=4)
    losses = train_steps(policy, batches, 40)
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5])
    policy.eval()
    window = {k: batches.arrays[k][:2].astype(np.float64) for k in policy.obs_keys}
    free = policy.predict(window)  # no prefix: the mask channel is all zeros
    old = Chunk(0.0, 0.1, free[1:] + 0.05)
    prefix = continuation_prefix(old, 0.0, 0.1, 1, policy.horizon, t_commit=0.2)
    conditioned = policy.predict(window, prefix=prefix)
    np.testing.assert_array_equal(conditioned[: prefix.frozen], prefix.rows[: prefix.frozen])
    assert np.isfinite(conditioned).all()
    with pytest.raises(ConfigError, match="prefix_rows"):
        _policy(reach_store, "edm", prefix_rows=4)


def test_the_prefix_reaches_the_network_whatever_the_sampler_carries_in_its_rows():
    from mimic.policies.generators.prefix import MaskedNet

    seen = []

    def backbone(x, time, cond):
        seen.append(x.clone())
        return x.sum(-1, keepdim=True).expand(-1, -1, 2)

    target = torch.randn(2, 6, 2)
    mask = (torch.arange(6)[None] < 3).float()
    net = MaskedNet(backbone, mask, target)
    a, b = torch.randn(2, 6, 2), torch.randn(2, 6, 2)
    b[:, 3:] = a[:, 3:]  # the carried frozen rows differ, the free rows agree
    torch.testing.assert_close(net(a, torch.zeros(2), None), net(b, torch.zeros(2), None), rtol=0, atol=0)
    torch.testing.assert_close(seen[0][:, :3, :2], target[:, :3])  # frozen rows are the prefix
    torch.testing.assert_close(seen[0][:, 3:, :2], a[:, 3:])  # free rows are the sampler's
    assert seen[0][:, :, 2].tolist() == [[1, 1, 1, 0, 0, 0]] * 2  # the mask channel


def _prefix_student(store, teacher_rows=4, student_rows=4):
    """A prefix-conditioned flow teacher (briefly trained) and a consistency student distilling from it."""
    teacher, batches, _ = _policy(store, "flow", prefix_rows=teacher_rows)
    train_steps(teacher, batches, 30)
    student, _, _ = _policy(
        store,
        "consistency",
        prefix_rows=student_rows,
        gen={"cd_param": "flow", "cd_target": "ode", "cd_ode_steps": 4},
    )
    student.normalizer = teacher.normalizer
    student.set_teacher(teacher)
    return teacher, student, batches


def test_a_prefix_conditioned_consistency_student_distils_its_teachers_continuation_and_keeps_the_prefix(
    reach_store,  # noqa: F811
):
    torch.manual_seed(0)
    _, student, batches = _prefix_student(reach_store)
    losses = train_steps(student, batches, 30)
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5])
    student.eval()
    window = {k: batches.arrays[k][:2].astype(np.float64) for k in student.obs_keys}
    free = student.predict(window)
    old = Chunk(0.0, 0.1, free[1:] + 0.05)
    prefix = continuation_prefix(old, 0.0, 0.1, 1, student.horizon, t_commit=0.2)
    conditioned = student.predict(window, prefix=prefix)
    np.testing.assert_array_equal(conditioned[: prefix.frozen], prefix.rows[: prefix.frozen])
    assert np.isfinite(conditioned).all()


def test_the_distillation_loss_ignores_the_prefix_rows(reach_store):  # noqa: F811
    """With every row given as prefix but one, only that row's error counts: perturbing the student's output on the
    prefix rows leaves the loss unchanged."""
    torch.manual_seed(0)
    _, student, _ = _prefix_student(reach_store)
    gen = student.generator
    target = torch.randn(4, 8, student.action_dim)
    pred = target.clone()
    pred[:, 5] += 1.0
    weights = torch.zeros(4, 8)
    weights[:, 5] = 1.0
    moved = pred.clone()
    moved[:, :5] += 3.0
    assert gen._distance(pred, target, weights).item() == pytest.approx(1.0)  # the mean over the counted row
    assert gen._distance(moved, target, weights).item() == pytest.approx(1.0)
    assert gen._distance(pred, target, 1 - weights).item() == 0.0


def test_prefix_conditioning_refuses_a_student_and_teacher_that_do_not_match(reach_store):  # noqa: F811
    from mimic.policies.config import ConfigError

    with pytest.raises(ConfigError, match="cd_param flow"):
        _policy(reach_store, "consistency", prefix_rows=4, gen={"cd_param": "edm"})
    with pytest.raises(ConfigError, match="cd_pool"):
        _policy(
            reach_store,
            "consistency",
            prefix_rows=4,
            gen={"cd_param": "flow", "cd_target": "ode", "cd_pool": 2},
        )
    with pytest.raises(ValueError, match="prefix rows"):
        _prefix_student(reach_store, teacher_rows=2, student_rows=4)
    plain_teacher, _, _ = _policy(reach_store, "flow")
    student, _, _ = _policy(reach_store, "consistency", prefix_rows=4, gen={"cd_param": "flow"})
    with pytest.raises(ValueError, match="prefix rows"):
        student.set_teacher(plain_teacher)
