"""Push-T on a real arm: the T block's geometry, Diffusion Policy's coverage score, and a pushing planner.

The block matches Diffusion Policy's Push-T T (a 4x1 bar over a 1x3 stem, 30 px units) at 1 unit = 3 cm:
a 12 x 3 cm bar and a 3 x 9 cm stem, 3 cm tall. Its body frame sits at the centre of mass (so yaw turns
about the point the quasi-static model uses), bar along +x at +y, stem toward -y. Poses are (x, y, yaw)
in the table plane, meters and radians.

The closed fingers are a rectangular pusher at a fixed yaw. For each contact point the planner places the
pusher so that its corner nearest the block touches that point (so the contact the model assumes is the
one that happens) and predicts the push with the quasi-static ellipsoidal limit-surface model of a sticking
point contact (Lynch, Maekawa & Tanie 1992): cheap enough to
score hundreds of candidate pushes (contact point x direction x length) every time it replans, so the
expert replans after each short push and corrects for the model's errors with feedback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNIT = 0.03  # m per Diffusion Policy "scale" unit
BAR_HALF = np.array([2.0 * UNIT, 0.5 * UNIT])  # half extents (x, y)
STEM_HALF = np.array([0.5 * UNIT, 1.5 * UNIT])
HEIGHT = 0.03  # m
_BAR_AREA, _STEM_AREA = 4 * BAR_HALF.prod(), 4 * STEM_HALF.prod()
# Centre of mass below the bar's top edge, then each part's centre in the COM frame.
_COM_DEPTH = (_BAR_AREA * BAR_HALF[1] + _STEM_AREA * (2 * BAR_HALF[1] + STEM_HALF[1])) / (
    _BAR_AREA + _STEM_AREA
)
BAR_CENTER = np.array([0.0, _COM_DEPTH - BAR_HALF[1]])
STEM_CENTER = np.array([0.0, _COM_DEPTH - 2 * BAR_HALF[1] - STEM_HALF[1]])

# Counter-clockwise outline in the block frame (8 corners) and each edge's outward normal.
_yb0, _yb1 = BAR_CENTER[1] - BAR_HALF[1], BAR_CENTER[1] + BAR_HALF[1]
_ys0 = STEM_CENTER[1] - STEM_HALF[1]
_bx, _sx = BAR_HALF[0], STEM_HALF[0]
OUTLINE = np.array(
    [
        (-_bx, _yb0),
        (-_sx, _yb0),
        (-_sx, _ys0),
        (_sx, _ys0),
        (_sx, _yb0),
        (_bx, _yb0),
        (_bx, _yb1),
        (-_bx, _yb1),
    ]
)
_EDGE_VEC = np.roll(OUTLINE, -1, axis=0) - OUTLINE
NORMALS = np.stack([_EDGE_VEC[:, 1], -_EDGE_VEC[:, 0]], axis=1) / np.linalg.norm(
    _EDGE_VEC, axis=1, keepdims=True
)
CIRCUM_RADIUS = float(np.linalg.norm(OUTLINE, axis=1).max())


def _grid(half: np.ndarray, center: np.ndarray, step: float) -> np.ndarray:
    xs = np.arange(-half[0] + step / 2, half[0], step)
    ys = np.arange(-half[1] + step / 2, half[1], step)
    return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2) + center


# Equal-area samples of the T (2 mm grid): coverage and the limit surface's moment integral use them.
SAMPLES = np.concatenate([_grid(BAR_HALF, BAR_CENTER, 0.002), _grid(STEM_HALF, STEM_CENTER, 0.002)])
# Ellipsoidal limit surface constant for uniform pressure: c = max friction moment / max friction force.
LIMIT_C = float(np.linalg.norm(SAMPLES, axis=1).mean())


def rot2(theta: np.ndarray | float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def wrap(a: np.ndarray | float) -> np.ndarray | float:
    """Angle(s) wrapped to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def to_world(pose: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ rot2(pose[2]).T + pose[:2]


def outline_world(pose: np.ndarray) -> np.ndarray:
    """The T's outline at `pose`, closed (first corner repeated), world xy [9, 2]: for top-view plots."""
    return to_world(pose, np.vstack([OUTLINE, OUTLINE[:1]]))


def to_block(pose: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return (pts - pose[:2]) @ rot2(pose[2])


def inside(pts_block: np.ndarray) -> np.ndarray:
    """Which block-frame points lie inside the T."""
    p = np.asarray(pts_block)
    b, s = np.abs(p - BAR_CENTER), np.abs(p - STEM_CENTER)  # per-axis tests: np.all over axis -1 costs 2x
    return ((b[..., 0] <= BAR_HALF[0]) & (b[..., 1] <= BAR_HALF[1])) | (
        (s[..., 0] <= STEM_HALF[0]) & (s[..., 1] <= STEM_HALF[1])
    )


def coverage(pose: np.ndarray, goal: np.ndarray) -> float:
    """Fraction of the goal T's area covered by the block (Diffusion Policy's Push-T score), in [0, 1]."""
    return float(inside(to_block(pose, to_world(goal, SAMPLES))).mean())


def clearance(pts_block: np.ndarray) -> np.ndarray:
    """Distance (m) from block-frame points to the T, 0 inside: the planner's collision test.

    The T is the union of two boxes, so outside it the distance is the smaller of the two box distances,
    exact, and ~18x cheaper than the distance to each of the outline's 8 edges (the planner asks for
    thousands of points per push)."""
    p = np.asarray(pts_block, float).reshape(-1, 2)
    qb = np.maximum(np.abs(p - BAR_CENTER) - BAR_HALF, 0.0)
    qs = np.maximum(np.abs(p - STEM_CENTER) - STEM_HALF, 0.0)
    return np.minimum(np.hypot(qb[:, 0], qb[:, 1]), np.hypot(qs[:, 0], qs[:, 1]))


def pose_error(pose: np.ndarray, goal: np.ndarray) -> tuple[float, float]:
    """(position error m, absolute yaw error rad) between two (x, y, yaw) poses."""
    return float(np.linalg.norm(pose[:2] - goal[:2])), float(abs(wrap(pose[2] - goal[2])))


def quasi_static_twist(contact: np.ndarray, push: np.ndarray) -> np.ndarray:
    """Block-frame (vx, vy, omega) per unit pusher motion for a sticking point contact (Lynch's model).

    `contact` [N, 2] are contact points relative to the centre of mass, `push` [N, 2] pusher velocities,
    both in the block frame.
    """
    px, py = contact[:, 0], contact[:, 1]
    ux, uy = push[:, 0], push[:, 1]
    c2 = LIMIT_C**2
    den = c2 + px**2 + py**2
    vx = ((c2 + px**2) * ux + px * py * uy) / den
    vy = (px * py * ux + (c2 + py**2) * uy) / den
    return np.stack([vx, vy, (px * vy - py * vx) / c2], axis=1)


@dataclass
class PushConfig:
    """The scripted pusher: geometry, speeds and what it optimises. Distances m, angles rad, speeds m/s."""

    pusher_half_m: tuple[float, float] = (0.008, 0.012)  # closed pads' half extents along the tool's x, y
    pusher_yaw_rad: float = 0.0  # the tool x axis' yaw in the world (the expert sets it from the arm's home)
    contact_spacing_m: float = 0.006
    push_angles_rad: tuple[float, ...] = (
        -0.5,
        -0.25,
        0.0,
        0.25,
        0.5,
    )  # about the inward normal, in the friction cone
    push_lengths_m: tuple[float, ...] = (0.002, 0.005, 0.01, 0.025, 0.05, 0.09)
    clearance_m: float = 0.012  # gap between pusher and block before a push starts
    # Travel keeps the pusher's circumcircle this far from the block, and circles round it this far out: the
    # slack a learner imitating the path has before it knocks the block.
    travel_margin_m: float = 0.002
    route_margin_m: float = 0.012
    travel_speed_m_s: float = 0.25
    push_speed_m_s: float = 0.07
    yaw_weight_m: float = 0.06  # 1 rad of yaw error counts like this many meters of position error
    overhead_s: float = 0.5  # fixed time per push (settling at the pre-contact point), favours longer pushes
    workspace_min: tuple[float, float] = (0.28, -0.30)  # pusher centre limits in the arm's base frame
    workspace_max: tuple[float, float] = (0.66, 0.30)
    side_tie: float = 0.25  # arcs within this fraction of each other: either way round is fine (multimodal)
    sub_steps: int = 8  # integration steps of the quasi-static model per candidate push


@dataclass
class Push:
    """A planned push: pusher centre waypoints (world xy) and the speed to take each at."""

    waypoints: list[np.ndarray]
    speeds: list[float]
    predicted_cost: float  # the planner's cost (m) of the block pose it predicts after the push
    side: int = 0  # how the pusher got there: 0 straight, +1 round the block counter-clockwise, -1 clockwise


@dataclass
class PushPlanner:
    cfg: PushConfig = field(default_factory=PushConfig)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def __post_init__(self) -> None:
        hx, hy = self.cfg.pusher_half_m
        self.pusher_radius = float(np.hypot(hx, hy))
        pts, normals = [], []
        for a, e, n in zip(OUTLINE, _EDGE_VEC, NORMALS, strict=True):
            length = float(np.linalg.norm(e))
            k = max(int(length / self.cfg.contact_spacing_m), 1)
            for s in (np.arange(k) + 0.5) / k:
                pts.append(a + s * e)
                normals.append(n)
        self._contacts, self._normals = np.array(pts), np.array(normals)

    def cost(self, pose: np.ndarray, goal: np.ndarray) -> np.ndarray | float:
        d = np.asarray(pose)[..., :2] - goal[:2]
        return np.sqrt(
            (d**2).sum(-1) + (self.cfg.yaw_weight_m * wrap(np.asarray(pose)[..., 2] - goal[2])) ** 2
        )

    def _candidates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All (contact, outward normal, push direction, length) combinations, block frame."""
        c, n = self._contacts, self._normals
        rows = []
        for ang in self.cfg.push_angles_rad:
            d = -n @ rot2(ang).T
            for length in self.cfg.push_lengths_m:
                rows.append((c, n, d, np.full(len(c), length)))
        return tuple(np.concatenate([r[i] for r in rows]) for i in range(4))  # type: ignore[return-value]

    def _simulate(
        self, pose: np.ndarray, contact: np.ndarray, push_b: np.ndarray, length: np.ndarray
    ) -> np.ndarray:
        """Block poses after pushing `length` along the world direction fixed at the push's start."""
        n = len(contact)
        k = self.cfg.sub_steps
        push_w = push_b @ rot2(pose[2]).T
        x = np.tile(pose, (n, 1)).astype(float)
        ds = length / k
        for _ in range(k):
            c, s = np.cos(x[:, 2]), np.sin(x[:, 2])
            ub = np.stack([c * push_w[:, 0] + s * push_w[:, 1], -s * push_w[:, 0] + c * push_w[:, 1]], axis=1)
            tw = quasi_static_twist(contact, ub)
            x[:, 0] += (c * tw[:, 0] - s * tw[:, 1]) * ds
            x[:, 1] += (s * tw[:, 0] + c * tw[:, 1]) * ds
            x[:, 2] += tw[:, 2] * ds
        return x

    def _route(self, start: np.ndarray, end: np.ndarray, pose: np.ndarray) -> tuple[list[np.ndarray], int]:
        """Waypoints from `start` to `end` (world xy) that keep the pusher clear of the block, and the way round.

        Straight (side 0) when the segment is clear; otherwise out to a circle around the block and round it
        counter-clockwise (+1) or clockwise (-1): the shorter way, or a seeded coin when the two are about as
        long (the multimodality of Push-T), never a way that leaves the workspace when the other stays in it.
        """
        r_p = self.pusher_radius
        if not self._blocked(start, end[None], pose)[0]:
            return [end], 0
        radius = CIRCUM_RADIUS + r_p + self.cfg.route_margin_m
        center = pose[:2]
        a0 = np.arctan2(*(start - center)[::-1])
        a1 = np.arctan2(*(end - center)[::-1])
        sweeps = {1: float(wrap(a1 - a0)) % (2 * np.pi)}
        sweeps[-1] = 2 * np.pi - sweeps[1]
        arcs = {}
        for sign, sweep in sweeps.items():
            n_arc = max(int(np.ceil(sweep / 0.35)), 1)
            angles = a0 + sign * sweep * np.arange(n_arc + 1) / n_arc
            arcs[sign] = center + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        inside_ws = {s: bool(self._in_workspace(a).all()) for s, a in arcs.items()}
        if inside_ws[1] != inside_ws[-1]:
            sign = 1 if inside_ws[1] else -1
        elif min(sweeps.values()) / max(sweeps.values()) > 1 - self.cfg.side_tie:
            sign = 1 if self.rng.random() < 0.5 else -1
        else:
            sign = 1 if sweeps[1] < sweeps[-1] else -1
        return [*arcs[sign], end], sign

    def _blocked(self, start: np.ndarray, ends: np.ndarray, pose: np.ndarray, n: int = 16) -> np.ndarray:
        """Whether the straight moves from `start` to each of `ends` [N, 2] would sweep the pusher into the block.

        The first `clearance_m` of a move is not checked: after a push the pusher starts touching the block,
        and backing off from it is fine.
        """
        s = np.linspace(0, 1, n)[None, :]
        length = np.linalg.norm(ends - start, axis=1)[:, None]
        seg = start[None, None] + s[..., None] * (ends[:, None] - start[None, None])
        near = (
            clearance(to_block(pose, seg.reshape(-1, 2))).reshape(len(ends), n)
            < self.pusher_radius + self.cfg.travel_margin_m
        )
        return (near & (s * length >= self.cfg.clearance_m)).any(axis=1)

    def _travel_estimate(self, start: np.ndarray, ends: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Route length (m) from `start` to each of `ends` [N, 2] as _route would take it: straight if clear,
        else radially out to the circle round the block, the shorter way round it, and in."""
        blocked = self._blocked(start, ends, pose)
        straight = np.linalg.norm(ends - start, axis=1)
        radius = CIRCUM_RADIUS + self.pusher_radius + self.cfg.route_margin_m
        v0, v1 = start - pose[:2], ends - pose[:2]
        turn = np.abs(wrap(np.arctan2(v1[:, 1], v1[:, 0]) - np.arctan2(v0[1], v0[0])))
        arc = abs(radius - np.linalg.norm(v0)) + turn * radius + np.abs(radius - np.linalg.norm(v1, axis=1))
        return np.where(blocked, arc, straight)

    def _in_workspace(self, pts: np.ndarray) -> np.ndarray:
        lo, hi = np.array(self.cfg.workspace_min), np.array(self.cfg.workspace_max)
        return np.all((pts >= lo) & (pts <= hi), axis=-1)

    def _pusher_corners(self, yaw_block: float) -> np.ndarray:
        """The pusher's 4 corners and 4 edge midpoints relative to its centre, in the block frame [8, 2]."""
        hx, hy = self.cfg.pusher_half_m
        local = np.array([(hx, hy), (-hx, hy), (-hx, -hy), (hx, -hy), (hx, 0), (-hx, 0), (0, hy), (0, -hy)])
        return local @ rot2(self.cfg.pusher_yaw_rad - yaw_block).T

    def _overlaps(self, centers: np.ndarray, yaw_block: float, margin: float) -> np.ndarray:
        """Whether the pusher (shrunk by `margin`, grown when negative) at block-frame `centers` overlaps the T."""
        hx, hy = self.cfg.pusher_half_m
        rel = self._pusher_corners(yaw_block)
        scale = np.array([max(hx - margin, 1e-4) / hx, max(hy - margin, 1e-4) / hy])
        local = (
            np.array([(hx, hy), (-hx, hy), (-hx, -hy), (hx, -hy), (hx, 0), (-hx, 0), (0, hy), (0, -hy)])
            * scale
        )
        rel = local @ rot2(self.cfg.pusher_yaw_rad - yaw_block).T
        pts = centers[:, None, :] + rel[None]
        hit = inside(pts).any(axis=1)
        # T corners inside the pusher rectangle (the pusher's sides against the T's convex corners).
        r = rot2(self.cfg.pusher_yaw_rad - yaw_block)
        d = (OUTLINE[None] - centers[:, None, :]) @ r  # T corners in the pusher frame
        in_rect = (np.abs(d[..., 0]) < hx * scale[0]) & (np.abs(d[..., 1]) < hy * scale[1])
        return hit | in_rect.any(axis=1)

    def plan(self, pose: np.ndarray, goal: np.ndarray, pusher: np.ndarray) -> Push | None:
        """The best next push from the pusher's position `pusher` (world xy), or None when none helps."""
        cfg = self.cfg
        contact, normal, push_b, length = self._candidates()
        corners = self._pusher_corners(pose[2])[:4]
        # The corner deepest toward the block touches the contact point.
        lead = corners[np.argmin(normal @ corners.T, axis=1)]
        touch = contact - lead  # pusher centre at contact
        pre = touch - push_b * cfg.clearance_m
        ok = ~self._overlaps(touch, pose[2], 5e-4) & ~self._overlaps(pre, pose[2], -1e-3)
        end_b = touch + push_b * length[:, None]
        pre_w, end_w = to_world(pose, pre), to_world(pose, end_b)
        ok &= self._in_workspace(pre_w) & self._in_workspace(end_w)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return None
        after = self._simulate(pose, contact[idx], push_b[idx], length[idx])
        pred = self.cost(after, goal)
        # The push that gains the most per second of arm time (travel, then the push itself).
        gain = self.cost(pose, goal) - pred
        seconds = (
            self._travel_estimate(pusher, pre_w[idx], pose) / cfg.travel_speed_m_s
            + (length[idx] + cfg.clearance_m) / cfg.push_speed_m_s
            + cfg.overhead_s
        )
        rate = np.where(gain > 1e-5, gain / seconds, -np.inf)
        best = int(np.argmax(rate))
        if not np.isfinite(rate[best]):
            return None
        i = idx[best]
        route, side = self._route(pusher, pre_w[i], pose)
        waypoints = route + [end_w[i]]
        speeds = [cfg.travel_speed_m_s] * len(route) + [cfg.push_speed_m_s]
        return Push(waypoints=waypoints, speeds=speeds, predicted_cost=float(pred[best]), side=side)
