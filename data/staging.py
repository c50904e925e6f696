"""Outputs that appear whole or not at all: written to a hidden sibling and renamed into place on success.

A store or file written in place and killed half way looks like a finished output (a merged store with
fewer episodes still validates). So a local output is built in `.<stem>.tmp-<pid><suffixes>` beside its
final path, keeping its suffixes for writers that pick a format by extension (.mp4, .mcap, .zarr.zip), and
renamed onto the final path only when the whole write succeeded; a failure removes the sibling. Object stores
(s3://, gs://, memory://) have no atomic rename, so a URL output is written in place and removed on failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mimic.data.dataset import DatasetError
from mimic.data.storage import locate


def staging_sibling(path: Path) -> Path:
    """The hidden sibling `path` is built in: `.<stem>.tmp-<pid><suffixes>`."""
    stem, dot, ext = path.name.lstrip(".").partition(".")
    return path.with_name(f".{stem}.tmp-{os.getpid()}{dot}{ext}")


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
    tmp = staging_sibling(final)
    _remove(tmp)  # left by a killed process that had this one's id
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
