"""`mimic dataset <verb>`: info, validate, plot, video, merge, split, import-dp, export-dp, convert,
export-mcap, export-lerobot, import-lerobot, import-mcap.

Every failure is one line naming the store and key; output files are only created after the input
passed validation, and appear whole or not at all (mimic.data.staging).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
from zarr.errors import ZarrUserWarning

from mimic.data.codecs import codec_name
from mimic.data.dataset import DatasetError
from mimic.data.staging import staged_output
from mimic.data.storage import is_url
from mimic.data.validate import validate

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")  # containers ffmpeg writes H.264 into


def _info(args: argparse.Namespace) -> int:
    ds, stats = validate(args.path)
    a = ds.attrs
    lengths = np.diff(np.concatenate([[0], ds.episode_ends]))
    print(
        f"{args.path}: {ds.n_episodes} episodes, {ds.n_steps} steps at {a['fps']:g} Hz "
        f"(episode length min/mean/max {lengths.min() if lengths.size else 0}/"
        f"{lengths.mean() if lengths.size else 0:.1f}/{lengths.max() if lengths.size else 0})"
    )
    print(f"robot={a.get('robot')!r} joints={a.get('joint_names')} task={a.get('task')!r}")
    print(f"latencies={a.get('latencies')} calibration_ids={a.get('calibration_ids')}")
    for key in ds.keys:
        arr = ds.array(key)
        codec = codec_name(arr)
        err = stats.max_error_s.get(key)
        extra = f"  max |t - grid| {err * 1e3:.2f} ms" if err is not None else ""
        print(f"  data/{key:<28} {str(arr.shape[1:]):<16} {str(arr.dtype):<8} {codec}{extra}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    ds, _ = validate(args.path, deep=args.deep)
    deep = "; every chunk decodes, floats finite, time monotonic" if args.deep else ""
    print(f"{args.path}: OK ({ds.n_episodes} episodes, {ds.n_steps} steps{deep})")
    return 0


def _output(path: str, fn, store: bool = False) -> None:  # noqa: ANN001 - small helper
    """Run fn(where) to write the output `path`, which appears only if it succeeds (staged_output). A store
    output may be a URL (mimic.data.storage); any other output (PNG, MP4, MCAP, LeRobot folder) is a local
    file, and a URL for it is refused up front."""
    if is_url(path) and not store:
        raise DatasetError(f"{path}: this output must be a local path (stores may be URLs)")
    with staged_output(path) as where:
        fn(where)


def _check_suffix(out: str, allowed: tuple[str, ...], what: str) -> None:
    """An -o whose file type the writer cannot produce is named as such before anything is written: the
    writer's own error would otherwise be reported as the input store being unreadable."""
    if Path(out).suffix.lower() not in allowed:
        raise DatasetError(f"-o {out}: {what} is written as one of {', '.join(allowed)}")


def _plot(args: argparse.Namespace) -> int:
    from matplotlib.figure import Figure

    from mimic.data.export import plot

    ds, _ = validate(args.path)
    kinds = tuple(sorted(f".{k}" for k in Figure().canvas.get_supported_filetypes()))
    _check_suffix(args.out, kinds, "a plot")
    _output(args.out, lambda p: plot(ds, p, args.episode))
    print(f"wrote {args.out}")
    return 0


def _video(args: argparse.Namespace) -> int:
    from mimic.data.export import video

    ds, _ = validate(args.path)
    _check_suffix(args.out, VIDEO_SUFFIXES, "an H.264 video")
    _output(args.out, lambda p: print(f"wrote {args.out}: {video(ds, p, args.episode)} frames"))
    return 0


def _mcap(args: argparse.Namespace) -> int:
    from mimic.data.export import export_mcap

    ds, _ = validate(args.path)
    _output(args.out, lambda p: print(f"wrote {args.out}: {export_mcap(ds, p)} messages"))
    return 0


def _import_mcap(args: argparse.Namespace) -> int:
    from mimic.data.mcap_import import import_mcap

    cams = [c for c in args.cameras.split(",") if c] if args.cameras is not None else None
    opts = (args.fps, args.episode_gap_s, args.robot, cams, args.tolerance_s, args.image_tolerance_s)
    reports = []

    def run(p: str) -> None:
        reports.append(import_mcap(args.bag, p, *opts))
        validate(p)

    _output(args.store, run, store=True)
    r = reports[0]
    print(f"wrote {args.store}: {r.episodes} episodes, {r.steps} steps (episodes by {r.segmentation})")
    for line in r.skipped:
        print(f"  skipped {line}")
    if r.dropped:
        print(f"  samples not written (repeated, out of order, unreadable): {r.dropped}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from mimic.data.transform import merge

    _output(args.out, lambda p: print(f"wrote {args.out}: {merge(args.inputs, p)} episodes"), store=True)
    return 0


def _split(args: argparse.Namespace) -> int:
    from mimic.data.transform import split

    n_tr, n_va = split(args.path, args.train, args.val, args.val_ratio, args.seed)
    print(f"wrote {args.train}: {n_tr} episodes, {args.val}: {n_va} episodes")
    return 0


def _import_dp(args: argparse.Namespace) -> int:
    from mimic.data.dp_umi import import_dp

    def run(p: str) -> None:
        print(f"wrote {args.out}: {import_dp(args.src, p, args.fps, args.robot)} episodes")
        validate(p)

    _output(args.out, run, store=True)
    return 0


def _export_dp(args: argparse.Namespace) -> int:
    from mimic.data.dp_umi import export_dp

    validate(args.path)
    _output(
        args.out,
        lambda p: print(f"wrote {args.out}: {export_dp(args.path, p)} episodes (diffusion_policy/UMI)"),
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from mimic.data.convert import convert

    if args.quality is not None and not 1 <= args.quality <= 100:
        raise DatasetError(f"--quality {args.quality}: must be 1..100 (leave it out for lossless)")

    def run(p: str) -> None:
        n = convert(args.src, p, args.quality)
        validate(p)
        print(
            f"wrote {args.out}: {n} episodes "
            f"({'lossless' if args.quality is None else f'quality {args.quality}'})"
        )

    _output(args.out, run, store=True)
    return 0


def _export_lerobot(args: argparse.Namespace) -> int:
    from mimic.data.lerobot import LeRobotExportConfig, export_lerobot

    validate(args.path)
    cfg = LeRobotExportConfig(repo_id=args.repo_id or "")
    _output(
        args.out_dir,
        lambda p: print(f"wrote {args.out_dir}: {export_lerobot(args.path, p, cfg)} episodes (LeRobot v3.0)"),
    )
    return 0


def _import_lerobot(args: argparse.Namespace) -> int:
    from mimic.data.lerobot import import_lerobot

    _output(
        args.out, lambda p: print(f"wrote {args.out}: {import_lerobot(args.src, p)} episodes"), store=True
    )
    validate(args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimic dataset", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)
    for name, fn, help_ in (
        ("info", _info, "summary, keys, codecs, alignment error"),
        ("validate", _validate, "schema check; exit 1 with one line on violation"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument("path")
        if name == "validate":
            s.add_argument(
                "--deep",
                action="store_true",
                help="also decode every chunk, require finite floats and per-episode monotonic time",
            )
        s.set_defaults(fn=fn)
    for name, fn, help_ in (
        ("plot", _plot, "PNG of joint/action trajectories"),
        ("video", _video, "MP4 of camera streams side by side"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument("path")
        s.add_argument("-o", "--out", required=True)
        s.add_argument("-e", "--episode", type=int, default=0)
        s.set_defaults(fn=fn)
    s = sub.add_parser("export-mcap", help="MCAP of every stream on the live session's topics")
    s.add_argument("path")
    s.add_argument("-o", "--out", required=True)
    s.set_defaults(fn=_mcap)
    s = sub.add_parser("import-mcap", help="store from a ROS 2 MCAP bag (a live session's or export-mcap's)")
    s.add_argument("bag")
    s.add_argument("store")
    s.add_argument(
        "--fps", type=float, default=None, help="grid rate (default: the exported store's, else 10)"
    )
    s.add_argument(
        "--episode-gap-s",
        type=float,
        default=None,
        help="cut episodes at message gaps longer than this instead of at the recorder's start/stop "
        "(used, at 1 s, when the bag has no /recorder/status)",
    )
    s.add_argument("--robot", default=None, help="arm name for attrs (default: matched by joint names)")
    s.add_argument("--cameras", default=None, help="camera names in key order (default: sorted topic names)")
    s.add_argument("--tolerance-s", type=float, default=0.05, help="joints/command/objects tolerance (s)")
    s.add_argument("--image-tolerance-s", type=float, default=0.1, help="camera tolerance (s)")
    s.set_defaults(fn=_import_mcap)
    s = sub.add_parser("merge", help="concatenate stores with equal fps and streams")
    s.add_argument("inputs", nargs="+")
    s.add_argument("-o", "--out", required=True)
    s.set_defaults(fn=_merge)
    s = sub.add_parser("split", help="split by episode into train/val stores")
    s.add_argument("path")
    s.add_argument("--train", required=True)
    s.add_argument("--val", required=True)
    s.add_argument("--val-ratio", type=float, default=0.1)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_split)
    s = sub.add_parser(
        "import-dp",
        help="import a diffusion_policy / UMI ReplayBuffer store (directory or .zarr.zip), exactly",
    )
    s.add_argument("src")
    s.add_argument("-o", "--out", required=True)
    s.add_argument(
        "--fps", type=float, default=None, help="grid rate (default: the store's attr fps, else 10)"
    )
    s.add_argument("--robot", default="")
    s.set_defaults(fn=_import_dp)
    s = sub.add_parser(
        "export-dp", help="diffusion_policy / UMI ReplayBuffer store (out.zarr or out.zarr.zip)"
    )
    s.add_argument("path")
    s.add_argument("out")
    s.set_defaults(fn=_export_dp)
    s = sub.add_parser("convert", help="rewrite a store portably (zarr format 2, standard codecs only)")
    s.add_argument("src")
    s.add_argument("out")
    s.add_argument(
        "--quality", type=int, default=None, help="lossy JPEG XL quality 1..100 (default: lossless, exact)"
    )
    s.set_defaults(fn=_convert)
    s = sub.add_parser("export-lerobot", help="LeRobot v3.0 dataset folder (parquet + MP4 videos)")
    s.add_argument("path")
    s.add_argument("out_dir")
    s.add_argument("--repo-id", default="", help="dataset name in its card (default mimic/<store name>)")
    s.set_defaults(fn=_export_lerobot)
    s = sub.add_parser("import-lerobot", help="import a LeRobot v3.0 dataset folder")
    s.add_argument("src")
    s.add_argument("out")
    s.set_defaults(fn=_import_lerobot)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            # zarr warns about each object of a damaged hierarchy it skips, and its event loop logs the
            # metadata reads it abandoned; the one-line error below says what is wrong with the store
            warnings.simplefilter("ignore", ZarrUserWarning)
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
            return int(args.fn(args))
    except (DatasetError, KeyError, ValueError, OSError, RuntimeError, TypeError) as exc:
        # A damaged store surfaces from zarr and its codecs as any of these (zstd raises RuntimeError, a
        # metadata file of the wrong shape TypeError): one line naming the input, never a traceback.
        msg = str(exc).strip("'\"").splitlines()[0] if str(exc) else type(exc).__name__
        where = next((str(getattr(args, a)) for a in ("path", "src") if getattr(args, a, None)), "")
        if not isinstance(exc, DatasetError) and where and where not in msg:
            msg = f"{where}: unreadable ({type(exc).__name__}: {msg})"
        print(f"mimic dataset {args.verb}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
