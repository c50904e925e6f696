"""Outputs that appear whole or not at all: written to a hidden sibling and renamed into place on success.

A store or file written in place and killed half way looks like a finished output (a merged store with
fewer episodes still validates). So a local output is built in `.<stem>.tmp-<pid><suffixes>` beside its
final path, keeping its suffixes for writers that pick a format by extension (.mp4, .mcap, .zarr.zip), and
renamed onto the final path only when the whole write succeeded; a failure removes the sibling, and the
siblings of killed writers (their process is gone) are removed by the next write of the same output. Object stores
(s3://, gs://, memory://) have no atomic rename, so a URL output is written in place and removed on failure.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mimic.data.dataset import DatasetError
from mimic.data.storage import is_url, locate


def staging_sibling(path: Path, pid: int | None = None) -> Path:
    """The hidden sibling `path` is built in by process `pid` (this one): `.<stem>.tmp-<pid><suffixes>`."""
    stem, dot, ext = path.name.lstrip(".").partition(".")
    return path.with_name(f".{stem}.tmp-{os.getpid() if pid is None else pid}{dot}{ext}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def stale_siblings(path: Path) -> list[Path]:
    """Staging siblings of `path` left by processes that no longer run (killed before they could clean up)."""
    stem, dot, ext = path.name.lstrip(".").partition(".")
    prefix, suffix = f".{stem}.tmp-", f"{dot}{ext}"
    stale = []
    for p in path.parent.glob(glob.escape(prefix) + "*"):
        pid = p.name[len(prefix) : len(p.name) - len(suffix)] if p.name.endswith(suffix) else ""
        if pid.isdigit() and p == staging_sibling(path, int(pid)) and not _alive(int(pid)):
            stale.append(p)
    return stale


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _renamed(exc: BaseException, tmp: str, final: str) -> BaseException:
    """`exc` with the staging path in its message replaced by the final one: errors name what the user gave."""
    if not isinstance(exc, Exception) or tmp not in str(exc):
        return exc
    try:
        return type(exc)(str(exc).replace(tmp, final))
    except Exception:  # an exception type that takes other arguments keeps its own message
        return exc


def check_parent(target: str | Path) -> None:
    """Refuse a local output whose nearest existing ancestor is a file, before anything is computed for it:
    the write would fail only at the end (results lost), or on a staging sibling whose error a reader's
    handling would blame on the input instead of the output path the user gave. URLs are not checked here."""
    if is_url(str(target)):
        return
    for parent in Path(target).parents:
        if parent.exists():
            if not parent.is_dir():
                raise DatasetError(f"{target}: cannot write here ({parent} is not a directory)")
            return


def check_output_file(flag: str, path: str | Path) -> None:
    """A command's `flag` names a file it writes once its work is done: refuse a directory there, or a parent that
    is a file, before the work starts."""
    if Path(path).is_dir():
        raise ValueError(f"{flag} {path}: is a directory, not a file")
    check_parent(path)


def check_output_dir(flag: str, path: str | Path) -> None:
    """A command's `flag` names a folder it writes into: refuse a file there, or a parent that is a file, before
    the work starts."""
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a directory")
    check_parent(path)


@contextmanager
def staged_output(target: str | Path) -> Iterator[str]:
    """Yield where to write the output `target`; it appears at `target` only if the block succeeds.

    Refuses (DatasetError, one line) an output that already exists. Local: the block writes a hidden sibling,
    renamed onto `target` at the end; on any failure the sibling is removed. URL: the block writes `target`
    itself, which is removed on failure."""
    loc = locate(target)
    if loc.exists():
        raise DatasetError(f"{target}: output already exists")
    if not loc.local:
        try:
            yield str(target)
        except BaseException:
            if loc.exists():
                loc.fs.rm(loc.path, recursive=True)
            raise
        return
    final = Path(loc.path)
    check_parent(target)
    tmp = staging_sibling(final)
    for left in [tmp, *stale_siblings(final)]:  # left by killed processes, this one's id included
        _remove(left)
    try:
        yield str(tmp)
        if not tmp.exists():  # the writer wrote nothing: there is nothing to put in place
            return
        if final.exists():
            raise DatasetError(f"{target}: created by something else while this output was being written")
        tmp.rename(final)
    except BaseException as exc:
        _remove(tmp)
        new = _renamed(exc, str(tmp), str(target))
        if new is exc:
            raise
        raise new from None
