"""Precomputed teacher endpoints for consistency distillation (`policy.gen.cd_pool`).

With cd_target "ode" every batch row is trained towards the teacher's ODE solved from its noisy chunk, which
costs cd_ode_steps teacher passes per row: on CPU four fifths of a distillation step. The pool draws
cd_pool starting points per train window once, exactly as a batch would (`ConsistencyGenerator.ode_starts`),
solves the teacher's ODE for all of them in large batches, and keeps (x_sigma, sigma, endpoint). Training
then draws one of a window's entries per row, and a step costs the student alone. The pool is a safetensors
file stamped with what it was made from (teacher weights, store, windows, draw), so a resumed run, or another
student of the same teacher and store, reuses it, and one made from anything else is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from mimic.policies.data import WindowBatches
from mimic.policies.policy import Policy

BUILD_BATCH = 1024  # windows per teacher pass while building (x cd_pool rows)


@dataclass
class TeacherTargets:
    """Per train window, cd_pool rows of (x_sigma [H, A], sigma, the teacher's endpoint [H, A])."""

    x: torch.Tensor  # [N, K, H, A]
    sigma: torch.Tensor  # [N, K]
    target: torch.Tensor  # [N, K, H, A]

    def draw(
        self, ids: np.ndarray, rng: np.random.Generator, device: str | torch.device = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One entry per row of a batch of windows `ids`: (x_sigma, sigma, endpoint) on `device`."""
        rows = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        pick = torch.as_tensor(rng.integers(0, self.x.shape[1], len(rows)), dtype=torch.long)
        return (
            self.x[rows, pick].to(device),
            self.sigma[rows, pick].to(device),
            self.target[rows, pick].to(device),
        )


def stamp(student: Policy, batches: WindowBatches, per_window: int, seed: int) -> dict[str, str]:
    """What a pool was made from; a pool whose stamp differs is rebuilt."""
    teacher = student._teacher[0]
    weights = hashlib.sha256()
    for name, t in sorted(teacher.state_dict().items()):
        weights.update(name.encode())
        weights.update(t.detach().cpu().contiguous().numpy().tobytes())
    c = student.cfg.gen
    draw = {
        k: getattr(c, k)
        for k in ("cd_bins", "cd_ode_steps", "cd_sigma_max_frac", "sigma_min", "sigma_max", "rho", "cd_param")
    }
    return {
        "teacher_sha256": weights.hexdigest(),
        "store": str(Path(batches.windows.path).resolve()),
        "windows": str(len(batches)),
        "rows_sha256": hashlib.sha256(batches.rows.tobytes()).hexdigest(),
        "per_window": str(per_window),
        "seed": str(seed),
        "draw": json.dumps(draw, sort_keys=True),
    }


@torch.no_grad()
def build(
    student: Policy,
    batches: WindowBatches,
    per_window: int,
    seed: int,
    device: str = "cpu",
    progress: bool = True,
) -> TeacherTargets:
    """Solve the teacher's ODE from per_window starting points of every window of `batches`."""
    teacher, gen = student._teacher[0], student.generator
    g = torch.Generator(device=device).manual_seed(seed)
    xs, sigmas, targets = [], [], []
    n = len(batches)
    for lo in tqdm(
        range(0, n, BUILD_BATCH),
        desc=f"teacher endpoints x{per_window}",
        unit="batch",
        disable=not progress,
        leave=False,
    ):
        batch = batches.batch(np.arange(lo, min(n, lo + BUILD_BATCH)), device)
        nobs = teacher.encoder.augment(teacher.normalize_obs(batch["obs"]), train=False)
        cond = teacher.encoder(nobs).repeat_interleave(per_window, 0)
        x0 = teacher.normalized_actions(batch).repeat_interleave(per_window, 0)
        x, s = gen.ode_starts(x0, generator=g, shuffle=True)
        end = gen.teacher_endpoint(teacher.generator, teacher.backbone, x, s, cond)
        m = len(x) // per_window
        xs.append(x.view(m, per_window, *x.shape[1:]).float().cpu())
        sigmas.append(s.view(m, per_window).float().cpu())
        targets.append(end.view(m, per_window, *x.shape[1:]).float().cpu())
    return TeacherTargets(torch.cat(xs), torch.cat(sigmas), torch.cat(targets))


def load_or_build(
    path: Path,
    student: Policy,
    batches: WindowBatches,
    per_window: int,
    seed: int,
    device: str = "cpu",
    progress: bool = True,
) -> TeacherTargets:
    """The pool at `path` if it was made from the same teacher, store and draw; else build it and save it there."""
    want = stamp(student, batches, per_window, seed)
    if path.exists():
        with safe_open(str(path), framework="pt") as f:
            have = f.metadata() or {}
            if have == want:
                return TeacherTargets(f.get_tensor("x"), f.get_tensor("sigma"), f.get_tensor("target"))
        changed = sorted(k for k in want if have.get(k) != want[k])
        print(f"{path}: made from another {', '.join(changed)}; rebuilding it", flush=True)
    pool = build(student, batches, per_window, seed, device, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    save_file({"x": pool.x, "sigma": pool.sigma, "target": pool.target}, str(tmp), metadata=want)
    tmp.replace(path)
    return pool
