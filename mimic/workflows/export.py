"""`mimic export CKPT --format onnx|onnx-int8`: write an inference engine beside a checkpoint's weights.

The engine lands in CKPT/engines/<format>/ (mimic.policies.export) with the checkpoint's provenance and the
fingerprint of the weights it came from; `mimic eval --engine <format>` and the policy node's `engine`
parameter load it. The export is checked before it is kept: chunks from the same observations and noise must
match fp32's within the engine's tolerance (mimic.policies.engines.TOLERANCE), in normalised action units.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from mimic.data.storage import is_url
from mimic.policies.checkpoint import CheckpointError, load_policy
from mimic.policies.engines import ONNX_ENGINES, EngineError
from mimic.policies.export import export_onnx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mimic export", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="checkpoint directory (e.g. runs/<name>/checkpoint)")
    ap.add_argument("--format", default="onnx", choices=ONNX_ENGINES, help="engine to write (default onnx)")
    ap.add_argument(
        "--check-seeds",
        type=int,
        default=4,
        help="batches of 4 observation windows the accuracy check compares (default 4)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads for the check")
    args = ap.parse_args(argv)
    if is_url(args.checkpoint):
        print(f"mimic export: {args.checkpoint}: export needs a local checkpoint directory", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    t0 = time.perf_counter()
    try:
        policy = load_policy(args.checkpoint)
        out = export_onnx(policy, args.checkpoint, args.format, check_seeds=max(1, args.check_seeds))
    except (CheckpointError, EngineError) as e:
        print(f"mimic export: {e}", file=sys.stderr)
        return 2
    meta = json.loads((out / "engine.json").read_text())
    print(
        f"{args.format} engine: {out} ({time.perf_counter() - t0:.1f} s); chunk vs fp32: max "
        f"{meta['max_deviation']:.2g} normalised (tolerance {meta['tolerance']}); "
        f"load with: mimic eval {args.checkpoint} --engine {args.format}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
