"""The manufacturer meshes dress the twins without touching them: kinematics, masses and contacts are the
capsule twin's, and every mesh rides its Mimic link at the fixed offset solved at setup time."""

import json

import mujoco
import numpy as np
import pytest

from mimic.robots.kinematics import forward_kinematics
from mimic.robots.specs import ARM_NAMES, get_spec
from mimic.sim.mjcf import LAB, PLAIN, build_model, scene_xml
from mimic.sim.robosuite_assets import (
    ASSETS_DIR,
    MAX_DEV_M,
    MAX_DEV_RAD,
    SOURCES,
    pose,
    pose_error,
)
from mimic.sim.visuals import HIDDEN_GROUP, VISUAL_GROUP, available, load_table

needs_assets = pytest.mark.skipif(
    not all(available(a) for a in ARM_NAMES),
    reason=f"robosuite meshes not unpacked at {ASSETS_DIR} (run `make setup`)",
)


def _body(m: mujoco.MjModel, d: mujoco.MjData, name: str) -> np.ndarray:
    b = m.body(name).id
    return pose(d.xpos[b], d.xmat[b])


@pytest.mark.parametrize("arm", ARM_NAMES)
def test_lab_twin_flange_is_the_spec_fk_and_dynamics_are_the_capsule_twins(arm):
    spec = get_spec(arm)
    lab, plain = build_model(spec, look=LAB), build_model(spec, look=PLAIN)
    for field in ("body_mass", "body_inertia", "body_ipos", "body_iquat", "dof_armature", "jnt_range"):
        np.testing.assert_array_equal(getattr(lab, field), getattr(plain, field), err_msg=field)
    assert (lab.nq, lab.nv, lab.nu, lab.nbody) == (plain.nq, plain.nv, plain.nu, plain.nbody)
    d = mujoco.MjData(lab)
    site, base = lab.site("flange").id, lab.body("base").id
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.uniform(spec.q_min, spec.q_max)
        d.qpos[: spec.dof] = q
        mujoco.mj_kinematics(lab, d)
        flange = np.linalg.inv(_body(lab, d, "base")) @ pose(d.site_xpos[site], d.site_xmat[site])
        dp, da = pose_error(flange, forward_kinematics(spec, q))
        assert dp < 1e-6 and da < 1e-6, (q, dp, da)
    assert base == plain.body("base").id


@needs_assets
@pytest.mark.parametrize("arm", ARM_NAMES)
def test_visual_geoms_are_massless_contactless_and_collision_geoms_are_hidden(arm):
    m = build_model(get_spec(arm), look=LAB)
    visual = [g for g in range(m.ngeom) if m.geom_group[g] == VISUAL_GROUP and m.geom_bodyid[g] != 0]
    assert len(visual) > 10
    for g in visual:
        assert m.geom_contype[g] == 0 and m.geom_conaffinity[g] == 0, m.geom(g).name
    arm_bodies = {m.body(n).id for n in ("hand", "finger_left", "finger_right", "link1")}
    collide = [g for g in range(m.ngeom) if m.geom_bodyid[g] in arm_bodies and m.geom_contype[g] != 0]
    assert collide and all(m.geom_group[g] == HIDDEN_GROUP for g in collide)
    for name in ("hand", "finger_left", "finger_right"):  # the gripper rides Mimic's own bodies
        assert any(m.geom_bodyid[g] == m.body(name).id for g in visual), name


def _robosuite_model(arm: str, entry: dict) -> mujoco.MjModel:
    """robosuite's robot MJCF as shipped, with the lengths setup recorded as rounded set to their exact values
    (each record's robosuite value must be the file's)."""
    rs = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / "robots" / SOURCES[arm].robot / "robot.xml"))
    for e in entry["exact_lengths"]:
        b = rs.body(e["body"]).id
        assert rs.body_pos[b][e["axis"]] == pytest.approx(e["robosuite"], abs=1e-12), e
        rs.body_pos[b][e["axis"]] = e["exact"]
    return rs


@needs_assets
@pytest.mark.parametrize("arm", ARM_NAMES)
def test_each_robosuite_link_sits_at_its_fixed_offset_on_the_mimic_link(arm):
    """robosuite's own FK (its MJCF with the rounded lengths set exact, joints mapped by the solved sign/offset)
    against Mimic's link frame composed with the stored offset, per link, over 25 random configurations: each
    mesh frame within 1 mm / 0.5 deg of its link frame, and in fact the two chains coincide."""
    entry = json.loads((ASSETS_DIR / "visuals.json").read_text())[arm]
    spec = get_spec(arm)
    mim = build_model(spec, look=LAB)
    md = mujoco.MjData(mim)
    rs = _robosuite_model(arm, entry)
    rd = mujoco.MjData(rs)
    hinges = [j for j in range(rs.njnt) if int(rs.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_HINGE)][
        : spec.dof
    ]
    sign, offset = np.array(entry["joint_sign"]), np.array(entry["joint_offset"])
    rng = np.random.default_rng(7)
    worst = np.zeros(2)
    for _ in range(25):
        q = rng.uniform(spec.q_min, spec.q_max)
        md.qpos[: spec.dof] = q
        mujoco.mj_kinematics(mim, md)
        rd.qpos[[rs.jnt_qposadr[j] for j in hinges]] = sign * q + offset
        mujoco.mj_kinematics(rs, rd)
        base = _body(mim, md, "base")
        for body, link in entry["links"].items():
            placed = np.linalg.inv(base) @ _body(mim, md, body) @ pose(np.array(link["pos"]), link["quat"])
            worst = np.maximum(worst, pose_error(placed, _body(rs, rd, link["robosuite_body"])))
    assert worst[0] <= MAX_DEV_M and worst[1] <= MAX_DEV_RAD, (arm, worst)
    assert worst[0] < 1e-6 and worst[1] < 1e-6, ("robosuite's exact chain is not Mimic's", arm, worst)


@needs_assets
@pytest.mark.parametrize("arm", ARM_NAMES)
def test_exact_lengths_move_no_mesh_by_a_millimetre(arm):
    """Only the UR5e's lengths are rounded in robosuite. Setting one exact moves a body by under 1 mm on its
    parent, and stretching the parent's meshes with it moves none of their vertices by 1 mm or more."""
    entry = json.loads((ASSETS_DIR / "visuals.json").read_text())[arm]
    assert bool(entry["exact_lengths"]) == (arm == "ur5e")
    rs = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / "robots" / SOURCES[arm].robot / "robot.xml"))
    moved: dict[str, np.ndarray] = {}
    for e in entry["exact_lengths"]:
        moved.setdefault(e["body"], np.zeros(3))[e["axis"]] = e["exact"] - e["robosuite"]
    assert all(0 < np.linalg.norm(d) < MAX_DEV_M for d in moved.values()), moved
    for e in entry["exact_lengths"]:
        if e["stretched"] is None:
            continue
        assert e["ratio"] == pytest.approx(e["exact"] / e["robosuite"], rel=1e-12), e
        parent = rs.body(e["stretched"]).id
        assert rs.body_parentid[rs.body(e["body"]).id] == parent, e
        reach = 0.0  # farthest visual-mesh vertex from the parent's origin along the stretched axis
        for g in range(rs.ngeom):
            if rs.geom_bodyid[g] != parent or rs.geom_group[g] != 1:
                continue
            m = rs.geom_dataid[g]
            verts = rs.mesh_vert[rs.mesh_vertadr[m] : rs.mesh_vertadr[m] + rs.mesh_vertnum[m]]
            in_body = pose(rs.geom_pos[g], rs.geom_quat[g])
            reach = max(reach, np.abs(verts @ in_body[:3, :3].T + in_body[:3, 3])[:, e["axis"]].max())
        assert 0 < reach * abs(e["ratio"] - 1) < MAX_DEV_M, (e, reach)


def test_missing_assets_leave_the_capsules_with_a_one_line_notice(tmp_path, capsys):
    assert load_table(tmp_path / "visuals.json") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make setup" in err[0]
    (tmp_path / "visuals.json").write_text("{not json")
    assert load_table(tmp_path / "visuals.json") is None
    assert "unreadable" in capsys.readouterr().err


def test_plain_look_is_the_original_scene_and_lab_adds_no_physics_geoms():
    spec = get_spec("franka")
    plain = scene_xml(spec)
    assert "<mesh" not in plain and "<texture" not in plain and 'group="3"' not in plain
    lab = build_model(spec, look=LAB)
    world_extra = [
        g
        for g in range(lab.ngeom)
        if lab.geom_bodyid[g] == 0 and lab.geom(g).name != "table" and lab.geom_contype[g] != 0
    ]
    assert world_extra == []  # floor, legs and walls never touch anything
