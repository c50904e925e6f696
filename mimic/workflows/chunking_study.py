"""`mimic chunking-study <checkpoint> --delays 0,0.1,0.2,0.3 --episodes 100 --out DIR`: every chunking strategy
against injected inference delay, on the twin, in plain Python.

Each cell (strategy x delay) is one `mimic eval` run on the same seeds (mimic.workflows.evaluate with a
ChunkingConfig); cells run in parallel processes, one torch thread each. The output directory gets `cells.json`
(one EvalResult per cell, motion quality included), `table.md` (success with its Wilson interval, task time,
idle time, and the velocity jump at chunk seams against the within-chunk p99) and `study.png` (success and seam
ratio against delay, per strategy). The delay is twin time (mimic.workflows.rollout), so the numbers do not depend
on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mimic.policies.realtime import ChunkingConfig, InferenceDelay
from mimic.robots.control import CHUNKING
from mimic.workflows.eval_result import DEFAULT_SEED
from mimic.workflows.evaluate import evaluate, load_twin_policy

_CELL: dict = {}  # per worker process: the policy (inherited through fork), arm, task


def _run_cell(job: tuple[str, float, int, int, int | None]) -> dict:
    strategy, delay, episodes, seed, steps = job
    torch.set_num_threads(1)
    res = evaluate(
        _CELL["policy"],
        _CELL["arm"],
        _CELL["task"],
        episodes,
        seed=seed,
        num_inference_steps=steps,
        progress=False,
        chunking=ChunkingConfig(strategy, InferenceDelay(delay, delay)),
    )
    return asdict(res)


def run_study(
    checkpoint: str,
    strategies: list[str],
    delays: list[float],
    episodes: int,
    seed: int,
    workers: int,
    out: Path,
    arm: str | None = None,
    task: str | None = None,
    steps: int | None = None,
) -> list[dict]:
    """Run every cell, write cells.json, table.md and study.png into `out`; return the cells."""
    policy, arm, task = load_twin_policy(checkpoint, arm, task)
    out.mkdir(parents=True, exist_ok=True)
    _CELL.update(policy=policy, arm=arm, task=task)
    jobs = [(s, d, episodes, seed, steps) for d in delays for s in strategies]
    cells: list[dict] = []
    started = time.monotonic()
    with ProcessPoolExecutor(max(1, workers), mp_context=mp.get_context("fork")) as pool:
        futures = {pool.submit(_run_cell, job): job for job in jobs}
        for n, fut in enumerate(as_completed(futures), 1):
            cell = fut.result()
            cells.append(cell)
            print(
                f"[{n}/{len(jobs)}] {cell['chunking']:<8} d={cell['inference_delay_s']:>4} s: "
                f"{cell['successes']}/{cell['episodes']}, seam/within p99 "
                f"{cell['motion'].get('vel_jump_ratio_p50', float('nan')):.2f} "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
    cells.sort(key=lambda c: (float(c["inference_delay_s"]), strategies.index(c["chunking"])))
    meta = {"checkpoint": str(checkpoint), "arm": arm, "task": task, "seed": seed, "episodes": episodes}
    (out / "cells.json").write_text(json.dumps({"study": meta, "cells": cells}, indent=1))
    (out / "table.md").write_text(table(cells, meta))
    plot(cells, strategies, out / "study.png", f"{task} on the {arm} twin, {episodes} seeds from {seed}")
    return cells


def table(cells: list[dict], meta: dict) -> str:
    rows = [
        f"{meta['task']} on the {meta['arm']} twin, seeds {meta['seed']}-{meta['seed'] + meta['episodes'] - 1}, "
        f"`{meta['checkpoint']}`",
        "",
        "| delay (s) | strategy | success | 95% interval | task time (s) | idle (s) | seam vel. jump / within p99 "
        "(p50, p95) | seam acc. jump / within p99 (p50) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        m = c["motion"]
        rows.append(
            f"| {c['inference_delay_s']} | {c['chunking']} | {c['successes']}/{c['episodes']} = "
            f"{c['success_rate']:.0%} | {c['ci_low']:.0%}-{c['ci_high']:.0%} | {c['task_time_s']:.2f} | "
            f"{m['idle_s_mean']:.2f} | {m['vel_jump_ratio_p50']:.2f}, {m['vel_jump_ratio_p95']:.2f} | "
            f"{m['acc_jump_ratio_p50']:.2f} |"
        )
    return "\n".join(rows) + "\n"


def check_study_out(out: Path) -> None:
    """Refuse, before any cell runs, an --out that cannot hold the study or already holds one: a study takes
    up to hours, and writing over an earlier one would lose it without a word."""
    from mimic.data.staging import check_output_dir

    check_output_dir("--out", out)
    if (out / "cells.json").exists():
        raise ValueError(f"--out {out}: already holds a study (cells.json); name a new folder")


def plot(cells: list[dict], strategies: list[str], out: Path, title: str) -> None:
    """Success (with Wilson intervals) and seam ratio against delay, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for s in strategies:
        mine = [c for c in cells if c["chunking"] == s]
        d = np.array([float(c["inference_delay_s"]) for c in mine]) * 1e3
        rate = np.array([c["success_rate"] for c in mine])
        err = [rate - [c["ci_low"] for c in mine], [c["ci_high"] for c in mine] - rate]
        a1.errorbar(d, rate, yerr=err, marker="o", capsize=3, label=s)
        a2.plot(d, [c["motion"]["vel_jump_ratio_p50"] for c in mine], marker="o", label=s)
    a1.set(xlabel="injected inference delay (ms)", ylabel="success (Wilson 95%)", ylim=(0, 1.05))
    a2.axhline(1.5, color="k", ls="--", lw=1)
    a2.set(
        xlabel="injected inference delay (ms)", ylabel="seam velocity jump / within-chunk p99", yscale="log"
    )
    a1.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x]
    except ValueError:
        raise ValueError(f"--delays {text!r} is not a comma-separated list of seconds") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mimic chunking-study", description="every chunking strategy against injected inference delay"
    )
    ap.add_argument("checkpoint")
    ap.add_argument("--out", required=True, help="directory for cells.json, table.md and study.png")
    ap.add_argument("--strategies", default=",".join(CHUNKING))
    ap.add_argument("--delays", default="0,0.1,0.2,0.3", help="seconds, comma-separated")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--workers", type=int, default=2, help="cells run in parallel (one torch thread each)")
    ap.add_argument("--arm", default=None)
    ap.add_argument("--task", default=None)
    ap.add_argument("--steps", type=int, default=None, help="num_inference_steps (default: the policy's)")
    args = ap.parse_args(argv)
    from mimic.policies.checkpoint import CheckpointError

    try:
        strategies = [s for s in args.strategies.split(",") if s]
        bad = [s for s in strategies if s not in CHUNKING]
        if bad or not strategies:
            raise ValueError(f"--strategies {args.strategies!r}: use some of {', '.join(CHUNKING)}")
        delays = [InferenceDelay.parse(d).lo for d in _floats(args.delays)]
        if not delays:
            raise ValueError("--delays names no delay")
        if args.episodes < 1 or args.workers < 1:
            raise ValueError("--episodes and --workers must be >= 1")
        check_study_out(Path(args.out))
        cells = run_study(
            args.checkpoint,
            strategies,
            delays,
            args.episodes,
            args.seed,
            args.workers,
            Path(args.out),
            args.arm,
            args.task,
            args.steps,
        )
    except (CheckpointError, ValueError, KeyError, OSError) as e:
        print(f"mimic chunking-study: {e}", file=sys.stderr)
        return 2
    print(table(cells, json.loads((Path(args.out) / "cells.json").read_text())["study"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
