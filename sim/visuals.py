"""The manufacturers' visual meshes as MJCF for a twin: visual-only geoms on Mimic's own bodies.

`mimic.sim.robosuite_assets` solved, once at setup time, where each robosuite link and gripper part sits on
Mimic's DH chain and wrote it to `visuals.json` beside the unpacked meshes. This module only turns that file
into XML, so a model build costs a JSON read (cached) plus MuJoCo's mesh loading. Every geom it emits is
`contype="0" conaffinity="0" mass="0"` in VISUAL_GROUP: no contact, no inertia, so dynamics, IK and the
scripted experts are exactly those of the capsule twin. When the meshes are shown, the arm's collision
capsules move to HIDDEN_GROUP, which MuJoCo's default render options skip.

Without the assets (a checkout where `make setup` never ran) `arm_visuals` returns None after one notice on
stderr and the twin keeps its capsules.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from mimic.robots.arm_mjcf import HIDDEN_GROUP
from mimic.sim.robosuite_assets import ASSETS_DIR, VISUALS_JSON

VISUAL_GROUP = 2  # rendered by default (groups 0-2 are); HIDDEN_GROUP (3) is not
__all__ = ["HIDDEN_GROUP", "VISUAL_GROUP", "ArmVisuals", "arm_visuals", "available", "load_table"]
_VISUAL = f'contype="0" conaffinity="0" group="{VISUAL_GROUP}" mass="0"'


@dataclass(frozen=True)
class ArmVisuals:
    """XML for one arm: `assets` goes inside <asset>, `bodies[name]` inside the Mimic body of that name."""

    assets: str
    bodies: dict[str, str]


def load_table(path: Path) -> dict | None:
    """visuals.json at `path`, or None with a one-line notice on stderr (missing or unreadable)."""
    if not path.is_file():
        print(
            f"mimic.sim: no arm meshes at {path.parent} (run `make setup`); the twins show capsules",
            file=sys.stderr,
        )
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"mimic.sim: {path}: unreadable ({e}); the twins show capsules", file=sys.stderr)
        return None


@functools.cache
def _table() -> dict | None:
    return load_table(VISUALS_JSON)  # read (and the notice printed) once per process


def available(arm: str) -> bool:
    table = _table()
    return table is not None and arm in table


def _nums(values: list[float]) -> str:
    return " ".join(f"{v:.9g}" for v in values)


def arm_visuals(arm: str, prefix: str = "") -> ArmVisuals | None:
    """The visual geoms of `arm` (a mimic.robots.specs name), or None without assets. `prefix` keeps asset
    names unique when one model holds two arms."""
    table = _table()
    if table is None or arm not in table:
        return None
    entry = table[arm]
    meshes: dict[str, str] = {}
    materials: dict[tuple, str] = {}
    bodies: dict[str, str] = {}
    for body, geoms in entry["bodies"].items():
        parts = []
        for g in geoms:
            key = (tuple(round(c, 4) for c in g["rgba"]), g.get("specular"), g.get("shininess"))
            if key not in materials:
                materials[key] = f"{prefix}{arm}_vis_mat{len(materials)}"
            place = f'pos="{_nums(g["pos"])}" quat="{_nums(g["quat"])}" material="{materials[key]}"'
            if "file" in g:
                stem = g["file"].rsplit(".", 1)[0].replace("/", "_")
                mesh = f"{prefix}{arm}_{stem}"
                meshes[mesh] = (
                    f'<mesh name="{mesh}" file="{ASSETS_DIR / g["file"]}" scale="{_nums(g["scale"])}"/>'
                )
                parts.append(f'<geom type="mesh" mesh="{mesh}" {place} {_VISUAL}/>')
            else:
                parts.append(f'<geom type="{g["type"]}" size="{_nums(g["size"])}" {place} {_VISUAL}/>')
        bodies[body] = "".join(parts)
    mats = "".join(
        f'<material name="{name}" rgba="{_nums(list(rgba))}"'
        + (f' specular="{spec:.3g}" shininess="{shin:.3g}"' if spec is not None else "")
        + "/>"
        for (rgba, spec, shin), name in materials.items()
    )
    return ArmVisuals(assets="".join(meshes.values()) + mats, bodies=bodies)
