"""A training run directory that may live at a URL: the loop writes a local directory, this mirrors it.

Training writes checkpoints, resume state and metrics with local atomic renames (mimic.workflows.train); a
run_dir such as s3://bucket/run keeps that code path unchanged by giving the loop a local staging directory
(in mimic.data.storage.cache_root, one per URL and rank, so ranks on one node never share files) and
uploading what changed after each checkpoint. Resume pulls train_state/ and metrics.csv back first, so a run
continued on another machine picks up where the bucket says it stopped.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mimic.data.storage import (
    Location,
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
    """`local`: where the loop writes; `remote`: where it is mirrored (None for a local run_dir)."""

    target: str
    local: Path
    remote: Location | None = None

    @staticmethod
    def open(target: str, rank: int = 0) -> RunDir:
        """Resolve `target`; a URL is checked (protocol, bucket, credentials) and given a fresh staging dir."""
        if not is_url(target):
            return RunDir(target, Path(target))
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
