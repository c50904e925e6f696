"""Chunk and follow controllers: timing, blending, stale handling and the safety rule under adversarial input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mimic.robots.control import ChunkController, FollowController, WorkspaceBox
from mimic.robots.spec import ArmSpec, DHRow

RATE = 500.0


def make_spec() -> ArmSpec:
    """A Franka-like 7-DoF spec written out here so the controller is tested independently of mimic.robots.specs."""
    lo = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
    return ArmSpec(
        name="test7",
        joint_names=tuple(f"joint{i}" for i in range(1, 8)),
        dh=tuple(DHRow(0.0, 0.0, 0.0) for _ in range(7)),
        dh_convention="modified",
        q_min=lo,
        q_max=np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
        dq_max=np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]),
        home=np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]),
        control_rate_hz=1000.0,
        gripper_min=0.0,
        gripper_max=0.08,
        flange_offset=0.107,
        source="test",
    )


SPEC = make_spec()


def row(q: np.ndarray, g: float = 0.04) -> np.ndarray:
    return np.concatenate([q, [g]])


def run_ticks(ctl, t0: float, n: int) -> list[tuple[float, tuple[np.ndarray, float] | None]]:
    return [(t0 + k / RATE, ctl.target(t0 + k / RATE)) for k in range(n)]


def test_chunk_interpolates_at_control_rate_and_holds_when_chunk_runs_out() -> None:
    ctl = ChunkController(SPEC, RATE)
    ctl.reset(SPEC.home, 0.04, t=0.0)
    q1 = SPEC.home + 0.01
    ctl.set_chunk(0.0, 0.1, np.stack([row(SPEC.home), row(q1)]))
    out = run_ticks(ctl, 0.0, 60)
    q_mid = dict((round(t, 4), o) for t, o in out)[0.05][0]
    np.testing.assert_allclose(q_mid, SPEC.home + 0.005, atol=1e-9)
    assert out[-1][1] is None, "past the chunk's last point the controller must hold (return None)"
    assert ctl.counters.stale_ticks > 0


def test_lead_sends_the_point_due_one_latency_later() -> None:
    lead = 0.1
    ctl = ChunkController(SPEC, RATE, lead_s=lead)
    ctl.reset(SPEC.home, 0.04, t=0.0)
    qs = np.stack([row(SPEC.home + 0.001 * i) for i in range(20)])
    ctl.set_chunk(0.0, 0.1, qs)
    out = run_ticks(ctl, 0.0, 251)  # ticks up to t=0.5 s, whose command executes at 0.6 -> point 6
    assert out[-1][0] == 0.5
    q, _ = out[-1][1]
    np.testing.assert_allclose(q, SPEC.home + 0.006, atol=1e-9)
    assert ctl.target(1.9 - lead + 0.01) is None


def _switch_accelerations(blend_s: float) -> np.ndarray:
    ctl = ChunkController(SPEC, RATE, blend_s=blend_s, velocity_scale=1.0)
    ctl.reset(SPEC.home, 0.04, t=0.0)
    # Old chunk moves joint 1 at +0.5 rad/s; the new one, from the same point at t=0.5 s, at -0.5 rad/s.
    t = np.arange(11) * 0.1
    e0 = np.eye(7)[0]
    ctl.set_chunk(0.0, 0.1, np.stack([row(SPEC.home + e0 * 0.5 * ti) for ti in t]))
    outs = [ctl.target(k / RATE)[0][0] for k in range(250)]
    assert ctl.set_chunk(0.5, 0.1, np.stack([row(SPEC.home + e0 * (0.25 - 0.5 * ti)) for ti in t]))
    outs += [ctl.target(k / RATE)[0][0] for k in range(250, 400)]
    vel = np.diff(outs) * RATE
    assert vel[240] > 0 > vel[-1]
    return np.diff(vel) * RATE


def test_new_chunk_blends_without_velocity_jump() -> None:
    hard = np.max(np.abs(_switch_accelerations(0.0)))
    blended = np.max(np.abs(_switch_accelerations(0.1)))
    # A hard switch reverses 1 rad/s within one 2 ms tick (~500 rad/s^2); the blend spreads it over 0.1 s.
    assert hard > 400
    assert blended < 70


def test_out_of_order_malformed_and_stale_chunks_are_refused_and_counted() -> None:
    ctl = ChunkController(SPEC, RATE)
    ctl.reset(SPEC.home, 0.04, t=0.0)
    good = np.stack([row(SPEC.home)] * 5)
    assert ctl.set_chunk(1.0, 0.1, good)
    assert not ctl.set_chunk(0.5, 0.1, good)
    assert ctl.counters.out_of_order == 1
    bad = good.copy()
    bad[2, 3] = np.nan
    assert not ctl.set_chunk(2.0, 0.1, bad)
    assert not ctl.set_chunk(2.0, 0.0, good)
    assert not ctl.set_chunk(2.0, 0.1, good[:, :5])
    assert ctl.counters.refused == 3
    assert not ctl.set_chunk(2.0, 0.1, good, t_now=10.0)
    assert ctl.chunk.t_start == 1.0


def test_follow_rate_limits_clips_and_holds_when_leader_is_stale() -> None:
    ctl = FollowController(SPEC, RATE, stale_after_s=0.05, velocity_scale=0.5)
    ctl.reset(SPEC.home, 0.04, t=0.0)
    far = SPEC.q_max + 1.0
    assert ctl.set_leader(0.0, far, 0.2)
    q, g = ctl.target(1 / RATE)
    assert np.all(np.abs(q - SPEC.home) <= 0.5 * SPEC.dq_max / RATE + 1e-12)
    assert g == SPEC.gripper_max
    assert ctl.target(0.06) is None, "leader older than stale_after_s must hold"
    assert not ctl.set_leader(-1.0, SPEC.home, 0.0)
    assert not ctl.set_leader(0.1, SPEC.home * np.nan, 0.0)
    assert ctl.set_leader(0.1, SPEC.home, 0.0)
    assert ctl.target(0.1 + 1 / RATE) is not None


def test_workspace_box_holds_previous_output() -> None:
    def fk(q: np.ndarray) -> np.ndarray:
        pose = np.eye(4)
        pose[0, 3] = q[0]  # flange x follows joint 1 in this toy kinematics
        return pose

    box = WorkspaceBox(lo=np.array([-0.01, -1, -1]), hi=np.array([0.01, 1, 1]), fk=fk)
    ctl = FollowController(SPEC, RATE, workspace=box, velocity_scale=1.0)
    ctl.reset(np.zeros(7) + np.array([0, 0, 0, -1.0, 0, 1.0, 0]), 0.04, t=0.0)
    ctl.set_leader(0.0, np.array([1.0, 0, 0, -1.0, 0, 1.0, 0]), 0.04)
    xs = [ctl.target(k / RATE)[0][0] for k in range(1, 50)]
    assert max(xs) <= 0.01 + 1e-12
    assert ctl.counters.workspace > 0


finite = st.floats(-10, 10, allow_nan=False)
value = st.one_of(finite, st.just(float("nan")), st.just(float("inf")), st.floats(-1e6, 1e6))


@st.composite
def chunk_events(draw):
    """A sequence of (tick_count, chunk) events: random, huge, NaN, out-of-order and stale chunks."""
    events = []
    t = 0.0
    for _ in range(draw(st.integers(1, 6))):
        h = draw(st.integers(1, 8))
        base = np.array(draw(st.lists(finite, min_size=8, max_size=8)))
        noise = np.array(draw(st.lists(value, min_size=8 * h, max_size=8 * h))).reshape(h, 8)
        scale = draw(st.sampled_from([0.0, 0.01, 1.0, 1e3]))
        with np.errstate(invalid="ignore", over="ignore"):
            pos = base + scale * noise
        t_start = t + draw(st.floats(-1.0, 0.5))
        dt = draw(st.sampled_from([0.1, 0.02, 0.0, -0.1, 1e-6]))
        jitter = draw(st.lists(st.floats(0.0, 4.0 / RATE), min_size=1, max_size=40))
        events.append((t_start, dt, pos, jitter))
        t += sum(jitter)
    return events


@settings(max_examples=150, deadline=None)
@given(chunk_events(), st.floats(0.0, 0.2), st.floats(0.1, 1.0))
def test_property_chunk_outputs_never_leave_limits(events, lead, vscale) -> None:
    ctl = ChunkController(SPEC, RATE, lead_s=lead, velocity_scale=vscale)
    ctl.reset(SPEC.home, 0.04, t=0.0)
    t = 0.0
    prev_q, prev_t = SPEC.home.copy(), 0.0
    for t_start, dt, pos, jitter in events:
        ctl.set_chunk(t_start, dt, pos, t_now=t if dt > 0.05 else None)
        for dtick in jitter:
            t += dtick
            out = ctl.target(t)
            if out is None:
                continue
            q, g = out
            assert np.all(np.isfinite(q)) and np.isfinite(g)
            assert np.all(q >= SPEC.q_min) and np.all(q <= SPEC.q_max)
            assert SPEC.gripper_min <= g <= SPEC.gripper_max
            allowed = SPEC.dq_max * vscale * min(t - prev_t, 1 / RATE)
            assert np.all(np.abs(q - prev_q) <= allowed + 1e-12)
            prev_q, prev_t = q, t


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.5, 0.5), st.lists(value, min_size=8, max_size=8)), max_size=30))
def test_property_follow_outputs_never_leave_limits(readings) -> None:
    ctl = FollowController(SPEC, RATE)
    ctl.reset(SPEC.home, 0.04, t=0.0)
    t, prev_q, prev_t = 0.0, SPEC.home.copy(), 0.0
    for stamp_offset, vals in readings:
        with np.errstate(invalid="ignore"):
            ctl.set_leader(t + stamp_offset, np.array(vals[:7]), vals[7])
        t += 1 / RATE
        out = ctl.target(t)
        if out is None:
            continue
        q, g = out
        assert np.all(q >= SPEC.q_min) and np.all(q <= SPEC.q_max)
        assert SPEC.gripper_min <= g <= SPEC.gripper_max
        assert np.all(np.abs(q - prev_q) <= SPEC.dq_max * 0.5 * min(t - prev_t, 1 / RATE) + 1e-12)
        prev_q, prev_t = q, t


def test_limiter_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="velocity_scale"):
        ChunkController(SPEC, RATE, velocity_scale=1.5)
    with pytest.raises(RuntimeError, match="reset"):
        ChunkController(SPEC, RATE).limiter.apply(SPEC.home, 0.0, 0.0)
