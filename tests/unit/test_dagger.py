"""mimic.workflows.dagger: expert branches from the states a (barely trained) policy reaches, written as episodes that
merge with the demonstrations."""

from __future__ import annotations

import numpy as np
import pytest

from mimic.policies.config import load_train_config
from tests.tiny import TINY_RUN


@pytest.fixture(scope="module")
def reach_policy(tmp_path_factory):
    from mimic.policies import load_deployable
    from mimic.workflows.record_expert import record_expert_dataset
    from mimic.workflows.train import train

    tmp = tmp_path_factory.mktemp("dagger")
    store = record_expert_dataset(tmp / "reach.zarr", "franka", "reach", episodes=3, progress=False)
    cfg = load_train_config(
        None,
        [
            f"dataset={store}",
            f"run_dir={tmp / 'run'}",
            "steps=20",
            "batch_size=32",
            "val_every=20",
            "ckpt_every=20",
            "threads=1",
            "policy.horizon=8",
            "policy.n_action_steps=4",
            "policy.unet.down_dims=[16,32]",
            "policy.unet.time_embed_dim=16",
            "policy.gen.num_inference_steps=2",
        ],
    )
    ckpt = train(cfg, progress=False) / "checkpoint"
    return store, load_deployable(ckpt), ckpt


def replay(env, seed, actions):
    obs = env.reset(seed=seed)
    for a in actions:
        obs = env.step(a)[0]
    return obs


def test_replaying_a_rollouts_actions_reaches_the_same_state(reach_policy):
    from mimic.sim.env import make_env
    from mimic.workflows.dagger import _ActionLog
    from mimic.workflows.rollout import rollout

    _, policy, _ = reach_policy
    live, twin = _ActionLog(make_env("reach", "franka", cameras=())), make_env("reach", "franka", cameras=())
    seen: list[dict] = []
    steps = rollout(policy, live, 7, on_step=seen.append).steps
    assert len(live.actions) == steps == len(seen) - 1
    for t in (1, steps // 2, steps):
        obs = replay(twin, 7, live.actions[:t])
        for k in ("robot0_joint_pos", "robot0_eef_pos", "object_state"):
            np.testing.assert_array_equal(obs[k], seen[t][k])


def test_a_copied_state_continues_bit_identically():
    """TwinEnv.copy_state_from (how a DAgger branch starts): the copy and the original, stepped with the same
    actions, stay identical, contacts included (push_t: the pusher on the block)."""
    from mimic.sim.env import make_env
    from mimic.sim.expert import make_expert

    src, dst = make_env("push_t", "franka", cameras=()), make_env("push_t", "franka", cameras=())
    expert = make_expert(src)
    obs = src.reset(seed=3)
    expert.reset()
    actions = []
    for _ in range(60):
        actions.append(expert.act(obs))
        obs = src.step(actions[-1])[0]
    dst.reset(seed=3)
    copied = dst.copy_state_from(src)
    for k in obs:
        np.testing.assert_array_equal(copied[k], obs[k])
    for a in actions[:40]:  # the same commands again, from the copied state
        o1, o2 = src.step(a)[0], dst.step(a)[0]
        for k in o1:
            np.testing.assert_array_equal(o1[k], o2[k])
    assert dst.t == src.t == 100
    with pytest.raises(ValueError, match="same task and arm"):
        make_env("reach", "franka", cameras=()).copy_state_from(src)


def test_branches_are_expert_demonstrations_from_the_policys_states(reach_policy, tmp_path):
    from mimic.data.dataset import ReplayDataset
    from mimic.data.transform import merge
    from mimic.sim.env import make_env
    from mimic.workflows.dagger import collect_dagger

    store, policy, _ = reach_policy
    st = collect_dagger(
        policy,
        "franka",
        "reach",
        tmp_path / "dagger.zarr",
        rollouts=2,
        branch_every=10,
        hold_steps=3,
        progress=False,
    )
    max_steps = make_env("reach", "franka", cameras=()).max_steps
    # a 20-step policy does not reach its goals: each rollout runs to the limit, one branch every 10 steps
    assert st.policy_successes == 0
    assert st.branches == 2 * len(range(10, max_steps, 10))
    assert 0 < st.kept <= st.branches
    ds = ReplayDataset(tmp_path / "dagger.zarr")
    assert ds.n_episodes == st.kept and len(ds.attrs["expert_seeds"]) == st.kept
    assert set(ds.attrs["expert_seeds"]) <= {50_000, 50_001}
    for i in range(ds.n_episodes):
        ep = ds.episode(i, ["robot0_eef_pos", "object_state", "action"])
        # every branch ends the way a demonstration does: at the goal, then hold_steps more rows
        assert np.linalg.norm(ep["robot0_eef_pos"][-1] - ep["object_state"][-1, :3]) < 0.02
        assert len(ep["action"]) > 3
    # branches start where the policy was, not at the expert's own start: they start at different TCPs
    starts = np.array([ds.episode(i, ["robot0_eef_pos"])["robot0_eef_pos"][0] for i in range(ds.n_episodes)])
    assert np.ptp(starts, axis=0).max() > 1e-3
    assert merge([str(store), str(tmp_path / "dagger.zarr")], str(tmp_path / "merged.zarr")) == 3 + st.kept


def test_workers_split_the_seeds_and_merge_their_stores_in_seed_order(reach_policy, tmp_path):
    from mimic.data.dataset import ReplayDataset
    from mimic.sim.env import make_env
    from mimic.workflows.dagger import collect_dagger

    _, policy, _ = reach_policy
    out = tmp_path / "par.zarr"
    st = collect_dagger(
        policy, "franka", "reach", out, rollouts=3, branch_every=10, hold_steps=3, progress=False, workers=2
    )
    max_steps = make_env("reach", "franka", cameras=()).max_steps
    assert st.rollouts == 3 and st.policy_successes == 0
    assert st.branches == 3 * len(range(10, max_steps, 10)) and 0 < st.kept <= st.branches
    ds = ReplayDataset(out)
    seeds = ds.attrs["expert_seeds"]
    assert ds.n_episodes == st.kept == len(seeds) and ds.n_steps == st.steps
    assert seeds == sorted(seeds) and set(seeds) <= {50_000, 50_001, 50_002} and 50_002 in seeds
    assert ds.attrs["dagger_rollouts"] == 3 and ds.attrs["dagger_branch_every"] == 10
    assert ds.attrs["dagger_branches_started"] == st.branches
    assert sorted(p.name for p in tmp_path.iterdir()) == ["par.zarr"]  # the per-worker stores are gone


def test_bad_arguments_are_refused(reach_policy, tmp_path):
    from mimic.workflows.dagger import collect_dagger

    with pytest.raises(ValueError, match="branch_every"):
        collect_dagger(reach_policy[1], "franka", "reach", tmp_path / "x.zarr", rollouts=1, branch_every=0)


def test_a_train_config_with_a_dagger_section_builds_its_dataset(reach_policy, tmp_path):
    from mimic.data.dataset import DatasetError, ReplayDataset
    from mimic.policies.config import ConfigError
    from mimic.workflows.dagger import build_dagger_dataset
    from mimic.workflows.train import train

    store, _, ckpt = reach_policy
    data = tmp_path / "round1.zarr"
    sets = [
        f"dataset={data}",
        f"run_dir={tmp_path / 'run1'}",
        *TINY_RUN,
        f"dagger.policy={ckpt}",
        f"dagger.demos={store}",
        "dagger.rollouts=1",
        "dagger.branch_every=20",
    ]
    cfg = load_train_config(None, sets)
    with pytest.raises(DatasetError, match="mimic dagger"):
        train(cfg, progress=False)  # training only trains: the dagger stage builds the store first
    assert build_dagger_dataset(cfg, progress=False) and not build_dagger_dataset(cfg, progress=False)
    train(cfg, progress=False)
    branches = tmp_path / "round1.branches.zarr"
    kept = ReplayDataset(branches).n_episodes
    assert kept > 0 and not (tmp_path / "round1.branches.zarr.partial").exists()
    assert ReplayDataset(data).n_episodes == ReplayDataset(store).n_episodes + kept
    with pytest.raises(ConfigError, match="dagger.demos"):
        load_train_config(None, sets[:-3])  # dagger.policy without dagger.demos
