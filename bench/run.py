"""Run every benchmark module, write bench/results/<name>.json, print one table per module.

python -m bench.run            # all, full size
python -m bench.run --quick    # smaller sizes, for a smoke run
python -m bench.run data sim   # only modules whose name contains one of these words
python -m bench.run inference  # inference engines side by side (docs/inference.md)
python -m bench.run policies --device cuda   # modules that take a device: only that one (default: auto,
                                             # the CPU and a GPU where torch sees one)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import sys
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import BenchResult, machine_info

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"


def discover(filters: list[str]) -> list[str]:
    names = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    return [n for n in names if not filters or any(f in n for f in filters)]


def print_result(console: Console, result: BenchResult) -> None:
    if result.rows:
        table = Table(title=result.name)
        columns = list(dict.fromkeys(k for row in result.rows for k in row))
        for col in columns:
            table.add_column(col)
        for row in result.rows:
            table.add_row(*[_fmt(row.get(c, "")) for c in columns])
        console.print(table)
    for key, value in result.ratios.items():
        console.print(f"  {key}: {_fmt(value)}")
    for note in result.notes:
        console.print(f"  note: {note}")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("filters", nargs="*")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--device", default="auto", help="cpu, cuda or auto, for the modules whose run() takes one"
    )
    args = ap.parse_args(argv)
    console = Console()
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in discover(args.filters):
        console.rule(name)
        try:
            run = importlib.import_module(f"bench.{name}").run
            kwargs = {"device": args.device} if "device" in inspect.signature(run).parameters else {}
            result = run(quick=args.quick, **kwargs)
        except Exception:  # a broken benchmark is reported and the others still run
            traceback.print_exc()
            failed.append(name)
            continue
        payload = {
            "machine": machine_info(),
            "quick": args.quick,
            "device": args.device,
            **dataclasses.asdict(result),
        }
        (RESULTS / f"{result.name}.json").write_text(json.dumps(payload, indent=2))
        print_result(console, result)
    if failed:
        console.print(f"[red]failed benchmarks: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
