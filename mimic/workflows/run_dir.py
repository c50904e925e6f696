"""A training run directory that may live at a URL: the loop writes a local directory, this mirrors it.

Training writes checkpoints, resume state and metrics with local atomic renames (mimic.workflows.train); a
run_dir such as s3://bucket/run keeps that code path unchanged by giving the loop a local staging directory
(in mimic.data.storage.cache_root, one per URL and rank, so ranks on one node never share files) and
uploading what changed after each checkpoint. Resume pulls train_state/ and metrics.csv back first, so a run
continued on another machine picks up where the bucket says it stopped.

A run that fails to start leaves nothing new behind. A new local run_dir is built in a hidden sibling,
`.<name>.tmp-<pid>`, and renamed into place by `commit()` once the run has started (its first step ran);
`discard()` removes the sibling, and any parent folders made for it, after a failed start. Siblings left by
killed runs (their process is gone) are removed by the next run of the same name. An existing run_dir
(a resumed run) is written in place, and a URL run_dir is only uploaded to from the first checkpoint on.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mimic.data.staging import staging_sibling, stale_siblings
from mimic.data.storage import (
    Location,
    StorageError,
    cache_root,
    download_dir,
    is_url,
    locate,
    upload_dir,
    upload_files,
    url_key,
)


@dataclass
class RunDir:
    """`local`: where the loop writes; `remote`: where it is mirrored (None for a local run_dir); `final`: where
    `local` is renamed by commit() (None once committed, or when `local` already is the run directory);
    `made`: the outermost parent folder created for the staging sibling, removed again by discard()."""

    target: str
    local: Path
    remote: Location | None = None
    final: Path | None = None
    made: Path | None = None

    @staticmethod
    def open(target: str, rank: int = 0, tag: int | None = None) -> RunDir:
        """Resolve `target`; a URL is checked (protocol, bucket, credentials) and given a fresh staging dir.

        A local run_dir that does not exist yet is staged in `.<stem>.tmp-<tag><suffixes>` beside it (data.staging's sibling) (`tag`: the process
        id of rank 0, the same on every rank so that all of them find the files rank 0 stages); only rank 0
        creates it."""
        if not is_url(target):
            final = (
                Path(locate(target, check=False).path) if str(target).startswith("file://") else Path(target)
            )
            if final.exists():
                if not final.is_dir():
                    raise StorageError(f"{target}: exists and is not a directory")
                return RunDir(target, final)
            if not final.name:
                raise StorageError(f"{target}: not a directory name")
            staging = staging_sibling(final, tag)
            made = next((p for p in reversed(staging.parents) if not p.exists()), None)
            if rank == 0:
                for left in [staging, *stale_siblings(final)]:  # left by killed processes, this id included
                    shutil.rmtree(left, ignore_errors=True)
                try:
                    staging.mkdir(parents=True)
                except OSError as e:
                    raise StorageError(f"{target}: cannot create the run directory ({e.strerror})") from None
            return RunDir(target, staging, final=final, made=made)
        remote = locate(target)
        local = cache_root() / "runs" / f"{url_key(target)}-rank{rank}"
        shutil.rmtree(local, ignore_errors=True)  # what a previous run staged is not this run's state
        local.mkdir(parents=True)
        return RunDir(target, local, remote)

    def url(self, name: str) -> str:
        """The user-facing name of `name` inside the run directory (a URL for a remote run)."""
        return self.remote.join(name).url if self.remote is not None else str(self.local / name)

    def pull(self, *names: str) -> None:
        """Download these files/directories of a remote run (those that exist) into the staging dir."""
        if self.remote is None:
            return
        for name in names:
            src = self.remote.join(name)
            if src.fs.isdir(src.path):
                download_dir(src, self.local / name)
            elif src.exists():
                (self.local / name).parent.mkdir(parents=True, exist_ok=True)
                src.fs.get(src.path, str(self.local / name))

    def push(self, *names: str, last: tuple[str, ...] = ()) -> None:
        """Upload these staged files/directories (those that exist); directories with `last` files last."""
        if self.remote is None:
            return
        for name in names:
            p = self.local / name
            if p.is_dir():
                upload_dir(p, self.remote.join(name), last=last)
            elif p.is_file():
                upload_files([p], self.local, self.remote)

    def commit(self) -> Path:
        """The run has started: rename the staging sibling into place (once; later calls do nothing) -> the run
        directory. Refuses (one line) if something took the name meanwhile; discard() then removes the sibling."""
        if self.final is None:
            return self.local
        if self.final.exists():
            raise StorageError(f"{self.target}: created by something else while this run was starting")
        self.local.rename(self.final)
        self.local, self.final, self.made = self.final, None, None
        return self.local

    def discard(self) -> None:
        """A start that failed: remove the uncommitted staging sibling and the parent folders made for it."""
        if self.final is None:
            return
        shutil.rmtree(self.local, ignore_errors=True)
        if self.made is None:
            return
        for p in [self.local.parent, *self.local.parent.parents]:
            try:
                p.rmdir()  # only while empty: a folder something else wrote into stays
            except OSError:
                return
            if p == self.made:
                return
