"""bimanual_pick_place: two grippers side by side at one table, each picks its own cube and places it on its own goal.

The scene is pick_place twice, mirrored: robot0 works at y < 0 and robot1 at y > 0, each arm's base frame facing
+x (`BASE_POSES`). In its base frame robot0 sees exactly the single-arm pick_place draw (cube in the outer
half, goal towards the middle); robot1 sees the same draw mirrored about the xz plane, so both grippers carry
their cubes towards the middle of the table and end up about 20-40 cm apart. The episode succeeds only when
both cubes rest on their goals with both grippers open: one gripper alone never succeeds.

World frame = the table frame (z = 0 the table top). Both the two-arm twin and the two-gripper handheld twin
use this module's draws, in the same order from the same generator, so one seed is one scene in both.

`object_state` [20] = robot0's [cube x, y, z (m), cube quat w, x, y, z, goal x, y, z] then robot1's; each half
has the single-arm pick_place layout (mimic.sim.env), so a per-gripper view of it is the single-arm state.
"""

from __future__ import annotations

import mujoco
import numpy as np

from mimic.sim.env import CUBE_HALF

N_GRIPPERS = 2
BASE_Y = (-0.3, 0.3)  # m: world y of robot0's and robot1's bases (both at x = 0, facing +x)
MIRROR = (1.0, -1.0)  # robot1's draw is robot0's with y (and yaw) negated
OBJECT_DIM = 10  # per gripper
# Single-arm pick_place spawn ranges in an arm's base frame (mimic.sim.env.TwinEnv.reset), before mirroring
CUBE_LOW, CUBE_HIGH = (0.45, -0.15), (0.6, 0.0)
GOAL_LOW, GOAL_HIGH = (0.4, 0.08), (0.55, 0.2)
YAW_LIMIT = np.pi / 4
# Where a gripper starts, in its arm's base frame before mirroring (mimic.sim.handheld.HandheldEnv.reset)
START_LOW, START_HIGH, START_YAW = np.array([0.35, -0.1, 0.2]), np.array([0.45, 0.1, 0.3]), 0.3
MAX_STEPS = 200  # 10 Hz control periods


def base_pose(i: int) -> np.ndarray:
    """T_world_base of arm `i` (4x4): a pure translation, so base-frame rotations are world rotations."""
    t = np.eye(4)
    t[1, 3] = BASE_Y[i]
    return t


BASE_POSES = tuple(base_pose(i) for i in range(N_GRIPPERS))


def to_world(i: int, local_xy: np.ndarray) -> np.ndarray:
    """An (x, y) drawn in arm `i`'s unmirrored base frame -> world (x, y)."""
    x, y = np.asarray(local_xy, float)[:2]
    return np.array([x, BASE_Y[i] + MIRROR[i] * y])


def objects_xml() -> str:
    """Two cubes (cube0, cube1) and two flat goals (goal0, goal1) placed by `reset_objects`."""
    out = []
    for i in range(N_GRIPPERS):
        y = BASE_Y[i]
        out.append(
            f'<body name="cube{i}" pos="0.5 {y} {CUBE_HALF}"><freejoint name="cube{i}"/>'
            f'<geom name="cube{i}" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.05" '
            'rgba="0.8 0.1 0.1 1" friction="1.5 0.02 0.001" condim="4"/></body>'
            f'<site name="goal{i}" type="cylinder" pos="0.5 {y + 0.2 * MIRROR[i]} 0.001" size="0.04 0.001" '
            'rgba="0 0.8 0 0.6"/>'
        )
    return "".join(out)


class Scene:
    """Object addresses of a compiled bimanual model; draws and reads the task state."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        self.cube_adr = [int(model.joint(f"cube{i}").qposadr[0]) for i in range(N_GRIPPERS)]
        self.goal_site = [int(model.site(f"goal{i}").id) for i in range(N_GRIPPERS)]
        self.cube_geom = [int(model.geom(f"cube{i}").id) for i in range(N_GRIPPERS)]
        self.light0 = model.light_diffuse.copy()
        self.cam0 = model.cam_pos.copy()

    def randomize(self, rng: np.random.Generator, light: float = 0.2, camera_pos_m: float = 0.01) -> None:
        """Cube colours, light intensity and camera position jitter, as the single-arm twin draws them."""
        m = self.model
        for g in self.cube_geom:
            m.geom_rgba[g, :3] = rng.uniform(0.2, 1.0, 3)
        m.light_diffuse[:] = self.light0 * (1 + rng.uniform(-1, 1) * light)
        m.cam_pos[:] = self.cam0 + rng.uniform(-1, 1, self.cam0.shape) * camera_pos_m

    def reset_objects(self, data: mujoco.MjData, rng: np.random.Generator) -> None:
        """Cube pose and goal per gripper: the single-arm draw in each arm's (mirrored) base frame."""
        for i in range(N_GRIPPERS):
            cube = to_world(i, rng.uniform(CUBE_LOW, CUBE_HIGH))
            goal = to_world(i, rng.uniform(GOAL_LOW, GOAL_HIGH))
            yaw = MIRROR[i] * float(rng.uniform(-YAW_LIMIT, YAW_LIMIT))
            adr = self.cube_adr[i]
            data.qpos[adr : adr + 7] = [*cube, CUBE_HALF, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
            self.model.site_pos[self.goal_site[i]] = [*goal, 0.001]

    def object_state(self, data: mujoco.MjData) -> np.ndarray:
        parts = []
        for i in range(N_GRIPPERS):
            adr = self.cube_adr[i]
            parts += [data.qpos[adr : adr + 7], self.model.site_pos[self.goal_site[i]]]
        return np.concatenate(parts).astype(float)

    def placed(self, data: mujoco.MjData, i: int) -> bool:
        """Cube `i` rests on the table within 3 cm of its goal (the single-arm test, gripper width aside)."""
        cube = data.qpos[self.cube_adr[i] : self.cube_adr[i] + 3]
        goal = self.model.site_pos[self.goal_site[i]]
        return bool(np.linalg.norm(cube[:2] - goal[:2]) < 0.03 and cube[2] < CUBE_HALF + 0.005)


def start_poses(rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    """(TCP start position in the world, tool yaw) per gripper, drawn like the single handheld start."""
    out = []
    for i in range(N_GRIPPERS):
        p = rng.uniform(START_LOW, START_HIGH)
        xy = to_world(i, p[:2])
        out.append((np.array([xy[0], xy[1], p[2]]), MIRROR[i] * float(rng.uniform(-START_YAW, START_YAW))))
    return out


def gripper_view(object_state: np.ndarray, i: int) -> np.ndarray:
    """Gripper `i`'s half of the 20-value state: the single-arm pick_place layout [10]."""
    s = np.asarray(object_state)
    return s[..., OBJECT_DIM * i : OBJECT_DIM * (i + 1)]
