"""Push-T geometry, coverage score and pushing planner (mimic.sim.tasks.push_t), no physics."""

import numpy as np
import pytest

from mimic.sim.tasks import push_t as pt


def test_t_matches_diffusion_policy_shape_with_frame_at_centre_of_mass():
    area = 4 * (pt.BAR_HALF.prod() + pt.STEM_HALF.prod())
    assert area == pytest.approx(0.12 * 0.03 + 0.03 * 0.09)
    np.testing.assert_allclose(pt.SAMPLES.mean(axis=0), 0.0, atol=1e-9)  # body frame = centre of mass
    assert len(pt.SAMPLES) * 0.002**2 == pytest.approx(area)
    # Outline is counter-clockwise with outward normals.
    x, y = pt.OUTLINE[:, 0], pt.OUTLINE[:, 1]
    assert 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) == pytest.approx(area)
    mids = (pt.OUTLINE + np.roll(pt.OUTLINE, -1, axis=0)) / 2
    assert not pt.inside(mids + 1e-4 * pt.NORMALS).any() and pt.inside(mids - 1e-4 * pt.NORMALS).all()


def test_coverage_is_one_at_the_goal_and_drops_with_pose_error():
    goal = np.array([0.5, 0.0, np.pi / 4])
    assert pt.coverage(goal, goal) == 1.0
    assert pt.coverage(goal + [0.001, 0, 0], goal) > 0.95  # 1 mm: still a success
    assert pt.coverage(goal + [0.003, 0, 0], goal) < 0.95  # 3 mm across the diagonal T: not any more
    assert pt.coverage(goal + [0, 0, 0.06], goal) < 0.95  # 3.4 deg
    assert pt.coverage(goal + [0, 0, np.pi], goal) < 0.5  # upside down T
    assert pt.coverage(goal + [0.3, 0, 0], goal) == 0.0


def _outline_distance(p: np.ndarray) -> np.ndarray:
    """Reference: distance to the nearest of the T outline's edges."""
    a, e = pt.OUTLINE[None], pt._EDGE_VEC[None]
    p = p[:, None]
    t = np.clip(((p - a) * e).sum(-1) / (e * e).sum(-1), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * e), axis=-1).min(axis=1)


def test_clearance_is_the_distance_to_the_outline_outside_and_zero_inside():
    d = pt.clearance(np.array([[0.0, 0.0], [0.1, pt.BAR_CENTER[1]], [0.0, pt.OUTLINE[2, 1] - 0.01]]))
    np.testing.assert_allclose(d, [0.0, 0.1 - pt.BAR_HALF[0], 0.01], atol=1e-12)
    p = np.random.default_rng(0).uniform(-0.15, 0.15, (5000, 2))
    inside = pt.inside(p)
    assert 0 < inside.sum() < len(p)
    np.testing.assert_allclose(pt.clearance(p)[~inside], _outline_distance(p)[~inside], atol=1e-12)
    assert np.all(pt.clearance(p)[inside] == 0.0)


def test_quasi_static_model_translates_through_com_and_turns_off_it():
    push = np.array([[0.0, 1.0]] * 3)
    contact = np.array([[0.0, -0.05], [0.04, -0.05], [-0.04, -0.05]])
    tw = pt.quasi_static_twist(contact, push)
    np.testing.assert_allclose(tw[0], [0, 1, 0], atol=1e-12)  # pushing through the COM: pure translation
    assert (
        tw[1, 2] > 0 > tw[2, 2]
    )  # pushing up right of the COM turns counter-clockwise, left of it clockwise
    assert np.all(tw[:, 1] > 0) and np.all(tw[:, 1] <= 1 + 1e-12)  # the block never outruns the pusher


def test_planner_push_is_predicted_to_help_and_starts_clear_of_the_block():
    planner = pt.PushPlanner()
    goal = np.array([0.5, 0.0, np.pi / 4])
    pose = np.array([0.45, 0.1, -1.0])
    plan = planner.plan(pose, goal, pusher=np.array([0.3, 0.0]))
    assert plan is not None and plan.predicted_cost < planner.cost(pose, goal)
    assert len(plan.waypoints) == len(plan.speeds) >= 2
    path = np.array(plan.waypoints[:-1])
    r = planner.pusher_radius
    assert pt.clearance(pt.to_block(pose, path)).min() > r  # travel never sweeps through the block
    lo, hi = np.array(planner.cfg.workspace_min), np.array(planner.cfg.workspace_max)
    assert np.all((path >= lo) & (path <= hi))


def test_planner_has_nothing_to_do_at_the_goal():
    goal = np.array([0.5, 0.0, np.pi / 4])
    assert pt.PushPlanner().plan(goal, goal, pusher=np.array([0.3, 0.0])) is None


def test_routes_go_round_either_side_when_both_are_about_as_long():
    """Multimodality: from straight behind the block to straight in front, the coin picks the way round."""
    pose = np.array([0.5, 0.0, 0.0])
    start, end = np.array([0.5, -0.2]), np.array([0.5, 0.2])
    sides = {pt.PushPlanner(rng=np.random.default_rng(s))._route(start, end, pose)[1] for s in range(20)}
    assert sides == {-1, 1}
    # Clearly shorter one way: always that way.
    near = np.array([0.5 + 0.2 * np.cos(-1.2), 0.2 * np.sin(-1.2)])
    sides = {pt.PushPlanner(rng=np.random.default_rng(s))._route(start, near, pose)[1] for s in range(20)}
    assert len(sides) == 1


def test_outline_is_closed_and_the_top_view_png_draws_a_real_episode(tmp_path):
    """The eval's push_t top view, from 30 observations of the expert pushing on the twin."""
    import matplotlib.image as mpimg

    from mimic.sim import make_env, make_expert
    from mimic.workflows.evaluate import push_t_top_view

    ring = pt.outline_world(np.array([0.5, 0.0, 0.3]))
    assert ring.shape == (len(pt.OUTLINE) + 1, 2) and np.allclose(ring[0], ring[-1])
    env = make_env("push_t", "franka", cameras=())
    expert = make_expert(env)
    obs = env.reset(seed=3)
    expert.reset(seed=0)
    seen = [obs]
    for _ in range(30):
        obs, *_ = env.step(expert.act(obs))
        seen.append(obs)
    env.close()
    out = tmp_path / "top.png"
    push_t_top_view(seen, out, "seed 3: expert")
    img = mpimg.imread(out)
    assert img.shape[0] > 300 and img.shape[1] > 300 and img[..., :3].std() > 0.05  # drawn, not blank
