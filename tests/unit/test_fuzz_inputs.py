"""Random corruptions of a small store, checkpoint and config: a one-line error or success, never a traceback,
never a committed episode lost. Bounded: a fixed number of examples each, no deadline on a loaded machine.
"""

from __future__ import annotations

import io
import random
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

# No explain phase: it re-parses this file's source, which trips an ast bug of Python 3.11.7.
FUZZ = settings(
    database=None,
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)


def _cli(main, argv: list[str]) -> tuple[int, str]:
    """Run a CLI main in-process; an exception escaping it is a traceback, which the test reports."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return int(code or 0), err.getvalue().strip()


def _one_line(code: int, err: str) -> None:
    if code != 0:
        assert err and len(err.splitlines()) == 1 and "Traceback" not in err, err


# ---- stores -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    from mimic.workflows.record_expert import record_expert_dataset

    path = tmp_path_factory.mktemp("fuzz") / "src.zarr"
    record_expert_dataset(path, "franka", "reach", 2, progress=False)
    return path


def _corrupt_file(f: Path, how: str, rng: random.Random) -> None:
    data = f.read_bytes()
    if how == "truncate":
        f.write_bytes(data[: rng.randrange(0, max(1, len(data)))])
    elif how == "garbage":
        f.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
    elif how == "delete":
        f.unlink()
    elif how == "flip" and data:
        b = bytearray(data)
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
        f.write_bytes(bytes(b))


@FUZZ
@given(
    seed=st.integers(0, 2**31 - 1),
    how=st.sampled_from(["truncate", "garbage", "delete", "flip"]),
    n=st.integers(1, 3),
)
def test_a_corrupted_store_is_validated_in_one_line_or_passes(small_store, tmp_path_factory, seed, how, n):
    from mimic.data.cli import main

    rng = random.Random(seed)
    store = tmp_path_factory.mktemp("case") / "s.zarr"
    shutil.copytree(small_store, store)
    files = sorted(p for p in store.rglob("*") if p.is_file())
    for f in rng.sample(files, min(n, len(files))):
        _corrupt_file(f, how, rng)
    for argv in (["validate", str(store)], ["validate", "--deep", str(store)], ["info", str(store)]):
        _one_line(*_cli(main, argv))


@FUZZ
@given(seed=st.integers(0, 2**31 - 1), how=st.sampled_from(["truncate", "garbage", "flip"]))
def test_a_crashed_writer_never_loses_a_committed_episode(small_store, tmp_path_factory, seed, how):
    """Damage only what lies past the committed end (what a killed writer leaves); the next writer appends."""
    from mimic.data.dataset import ReplayDataset
    from mimic.data.writer import DatasetWriter

    store = tmp_path_factory.mktemp("crash") / "s.zarr"
    shutil.copytree(small_store, store)
    before = ReplayDataset(store)
    want = [before.episode(i)["action"].copy() for i in range(before.n_episodes)]
    w = DatasetWriter.open(store)
    w.begin_episode()
    rng = np.random.default_rng(seed)
    t0 = float(before.read("timestamp")[-1]) + 10.0
    for k in range(int(rng.integers(1, 6))):
        t = t0 + 0.1 * k
        for key, spec in w.streams.items():
            w.append(key, t, rng.normal(size=spec.shape).astype(spec.dtype))
    w.flush() if hasattr(w, "flush") else None
    del w  # never committed: the process "died" here
    after = ReplayDataset(store)
    assert after.n_episodes == len(want)
    for i, a in enumerate(want):
        assert np.array_equal(after.episode(i)["action"], a)
    w2 = DatasetWriter.open(store)
    w2.close()


# ---- checkpoints ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    from mimic.data.normalizer import Normalizer
    from mimic.policies import Policy, PolicyConfig, ShapeMeta, save_checkpoint

    cfg = PolicyConfig(obs_keys=["robot0_joint_pos"], horizon=8, n_action_steps=4)
    cfg.unet.down_dims = [16, 32]
    cfg.unet.time_embed_dim = 16
    meta = ShapeMeta(obs_shapes={"robot0_joint_pos": [7]}, action_dim=8, arm="franka", task="reach")
    rng = np.random.default_rng(0)
    norm = Normalizer().fit(
        {"robot0_joint_pos": rng.normal(size=(50, 7)), "action": rng.normal(size=(50, 8))},
        {"robot0_joint_pos": "minmax", "action": "minmax"},
    )
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    save_checkpoint(path, Policy(cfg, meta, norm))
    return path


@FUZZ
@given(seed=st.integers(0, 2**31 - 1), how=st.sampled_from(["truncate", "garbage", "delete", "flip"]))
def test_a_corrupted_checkpoint_loads_or_fails_in_one_line(small_checkpoint, tmp_path_factory, seed, how):
    from mimic.policies.checkpoint import CheckpointError, load_deployable

    rng = random.Random(seed)
    ckpt = tmp_path_factory.mktemp("c") / "checkpoint"
    shutil.copytree(small_checkpoint, ckpt)
    _corrupt_file(rng.choice(sorted(ckpt.iterdir())), how, rng)
    try:
        load_deployable(ckpt)
    except CheckpointError as e:
        assert len(str(e).splitlines()) == 1 and str(ckpt) in str(e)


# ---- configs ----------------------------------------------------------------------------------------------
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.lists(st.integers(-2, 64), max_size=3),
)
_FIELDS = st.sampled_from(
    [
        "lr",
        "steps",
        "batch_size",
        "val_ratio",
        "warmup_steps",
        "threads",
        "device",
        "policy.horizon",
        "policy.n_obs_steps",
        "policy.n_action_steps",
        "policy.generator",
        "policy.unet.down_dims",
        "policy.gen.num_inference_steps",
        "policy.obs_keys",
        "policy.action_repr",
        "eval.episodes",
        "dagger.workers",
        "nonsense",
        "policy.nonsense",
    ]
)


@FUZZ
@given(fields=st.dictionaries(_FIELDS, _VALUES, max_size=4))
def test_a_random_config_loads_or_fails_in_one_line(tmp_path_factory, fields):
    from mimic.policies.config import ConfigError, load_train_config

    doc: dict = {"dataset": "x.zarr"}
    for key, value in fields.items():
        node = doc
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    f = tmp_path_factory.mktemp("cfg") / "c.yaml"
    f.write_text(yaml.safe_dump(doc))
    try:
        load_train_config(f)
    except ConfigError as e:
        assert len(str(e).splitlines()) == 1, str(e)


# ---- session YAML ---------------------------------------------------------------------------------------
_SESSION = {
    "session": "fuzz",
    "ready_timeout_s": 30,
    "args": {"arm": "franka"},
    "nodes": [
        {"name": "arm", "executable": "arm_node", "parameters": {"backend": "twin:${arm}", "rate_hz": 100}},
        {"name": "recorder", "executable": "recorder_node", "required": False, "remaps": {"/a": "/b"}},
    ],
}
_ANY = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**400), 10**400),
        st.floats(),
        st.text(max_size=8),
        st.sampled_from(
            ["", "../x", "a b", "a\nb", "arm_node.py", "os", "mimic_ros.x", "session", "${NOPE}"]
        ),
        st.sampled_from([10**400, -(10**400), float("inf"), float("nan"), True, 0, -1, 1e308]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
_SESSION_KEYS = st.sampled_from(
    [
        "session",
        "ready_timeout_s",
        "stop_timeout_s",
        "args",
        "nodes",
        "description",
        "sesion",
        "nodes.0",
        "nodes.0.name",
        "nodes.0.executable",
        "nodes.0.package",
        "nodes.0.parameters",
        "nodes.0.parameters.rate_hz",
        "nodes.0.parameters.rate_hzz",
        "nodes.0.remaps",
        "nodes.0.required",
        "nodes.0.enabled",
        "nodes.0.ends_session",
        "nodes.0.ready_timeout_s",
        "nodes.0.nmae",
        "nodes.1.name",
        "nodes.1.remaps./a",
        "args.arm",
    ]
)
_OVERRIDES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "arm=ur5e",
                "arm.ready_timeout_s=1e999",
                "arm.ready_timeout_s=-1",
                "arm.ready_timeout_s=true",
                "arm.enabled=3",
                "arm.rate_hz=[1, {a: 2}]",
                "arm.typo_param=1",
                "ghost.x=1",
                "=",
                ".=",
                "arm.=1",
            ]
        ),
        st.text(max_size=12),
    ),
    max_size=2,
)


def _mutated(doc: dict, edits: list[tuple[str, str, object]]) -> object:
    """`doc` with each (op, dotted key, value) edit applied: set, delete, or replace the whole document."""
    import copy

    out: object = copy.deepcopy(doc)
    for op, key, value in edits:
        if op == "document":
            out = value
            continue
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            if isinstance(node, list) and p.isdigit() and int(p) < len(node):
                node = node[int(p)]
            elif isinstance(node, dict) and p in node:
                node = node[p]
            else:
                node = None
                break
        if isinstance(node, list) and leaf.isdigit() and int(leaf) < len(node):
            if op == "delete":
                del node[int(leaf)]
            else:
                node[int(leaf)] = value
        elif isinstance(node, dict):
            if op == "delete":
                node.pop(leaf, None)
            else:
                node[leaf] = value
    return out


@FUZZ
@example(edits=[("set", "ready_timeout_s", 10**400)], overrides=[], cut=None)
@example(edits=[("set", "nodes.0.ready_timeout_s", float("inf"))], overrides=[], cut=None)
@example(edits=[("set", "nodes.0.name", "a b")], overrides=[], cut=None)
@example(edits=[("set", "nodes.0.executable", "../x")], overrides=[], cut=None)
@example(edits=[("set", "nodes.0.executable", "arm_nod")], overrides=[], cut=None)
@example(edits=[("set", "nodes.0.package", 3)], overrides=[], cut=None)
@example(edits=[("set", "nodes.0.parameters.rate_hz", [1, {"a": 2}])], overrides=[], cut=None)
@example(edits=[("set", "nodes.0.parameters.rate_hzz", float("nan"))], overrides=[], cut=None)
@example(edits=[("set", "nodes.1.remaps./a", [1])], overrides=[], cut=None)
@example(edits=[("set", "nodes.0", {1: "x", "a": "y"})], overrides=[], cut=None)
@example(edits=[("document", "nodes", "\x00")], overrides=[], cut=None)
@example(edits=[("set", "description", "x")], overrides=["arm.ready_timeout_s=1" + "0" * 400], cut=None)
@example(
    edits=[("set", "description", "x")], overrides=["arm.ready_timeout_s=-1", "arm.x=[1, {a: 2}]"], cut=None
)
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(["set", "set", "delete", "document"]), _SESSION_KEYS, _ANY),
        min_size=1,
        max_size=3,
    ),
    overrides=_OVERRIDES,
    cut=st.one_of(st.none(), st.integers(0, 400)),
)
def test_a_corrupted_session_file_loads_or_fails_in_one_line(tmp_path_factory, edits, overrides, cut):
    from mimic_ros.session import SessionError, load_session
    from mimic_ros.supervisor import node_command

    doc = _mutated(_SESSION, edits)
    try:
        text = yaml.safe_dump(doc, sort_keys=False)
    except (yaml.YAMLError, ValueError):  # a value plain YAML cannot hold: nothing a user could write
        return
    if cut is not None:
        text = text[:cut]  # a file cut short while it was written
    f = tmp_path_factory.mktemp("session") / "s.yaml"
    f.write_text(text)
    try:
        session = load_session(str(f), overrides)
    except SessionError as e:
        msg = str(e)
        assert msg and len(msg.splitlines()) == 1, msg
        return
    for node in session.enabled_nodes:  # what `session up` and `session show` run for each node
        cmd = node_command(node)
        assert all(isinstance(a, str) and "\n" not in a for a in cmd), cmd


# ---- the twin's plain-Python step ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def twin():
    from mimic.sim.env import make_env

    env = make_env("reach", "franka", cameras=())
    yield env
    env.close()


_FINITE = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)


@FUZZ
@given(
    seed=st.integers(0, 3),
    actions=st.lists(st.lists(_FINITE, min_size=8, max_size=8), min_size=1, max_size=6),
)
def test_no_finite_action_sequence_moves_the_twin_command_faster_than_the_limit(twin, seed, actions):
    spec = twin.spec
    twin.reset(seed=seed)
    max_step = np.asarray(spec.dq_max) / twin.control_hz
    prev = twin.data.ctrl[: spec.dof].copy()
    for a in actions:
        twin.step(np.asarray(a))
        q = twin.data.ctrl[: spec.dof].copy()
        assert np.all(np.isfinite(q))
        assert np.all(np.abs(q - prev) <= max_step * (1 + 1e-12)), (q - prev, max_step)
        assert np.all(q >= spec.q_min) and np.all(q <= spec.q_max)
        prev = q
