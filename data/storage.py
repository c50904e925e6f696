"""Where a store or run directory lives: a local path or an fsspec URL (s3://, gs://, memory://, file://).

Every command that names a store or a run directory resolves it here, once, instead of wrapping it in
`Path(...)`: a URL turned into a Path silently becomes a local folder named `s3:/bucket/...`, and the
command then writes hundreds of demos to the wrong disk before failing. `locate` refuses an unknown
protocol, a missing bucket or absent credentials up front with a one-line StorageError naming the URL,
and never creates anything while checking.

Zarr stores open through `Location.zarr_store()` (zarr's LocalStore or FsspecStore); other files
(checkpoints, metrics) go through `Location.fs`, a synchronous fsspec filesystem.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import fsspec
from fsspec.spec import AbstractFileSystem

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
# Protocols whose first path component is a bucket that must exist before anything is written under it.
BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
CACHE_ENV = "MIMIC_CACHE_DIR"


class StorageError(ValueError):
    """A store or run location that cannot be reached; the message is one line naming the URL."""


def is_url(target: str | Path) -> bool:
    """Whether `target` names a non-local location (file:// counts as local)."""
    m = _URL.match(str(target))
    return bool(m) and m.group(1).lower() != "file"


def cache_root() -> Path:
    """Local cache for downloaded checkpoints, run-directory staging and decoded frames ($MIMIC_CACHE_DIR)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mimic")


def url_key(url: str, *extra: str) -> str:
    """A short stable directory name for `url` (and any version tags such as an etag)."""
    return hashlib.sha1("\n".join([url, *extra]).encode()).hexdigest()[:16]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__


@dataclass(frozen=True)
class Location:
    """A resolved store or directory: `url` as the user wrote it, `protocol` ("file" for local paths) and
    `path` inside that filesystem (an absolute local path, or bucket/key)."""

    url: str
    protocol: str
    path: str

    @property
    def local(self) -> bool:
        return self.protocol == "file"

    @property
    def local_path(self) -> Path:
        if not self.local:
            raise StorageError(f"{self.url}: not a local path")
        return Path(self.path)

    @cached_property
    def fs(self) -> AbstractFileSystem:
        """Synchronous filesystem for plain files (checkpoints, metrics, listings)."""
        try:
            return fsspec.filesystem(self.protocol)
        except Exception as exc:  # unknown protocol, backend not installed, bad config
            raise StorageError(f"{self.url}: cannot open filesystem ({_one_line(exc)})") from None

    def join(self, *parts: str) -> Location:
        """The location of `parts` below this one (URL and path joined with '/')."""
        tail = "/".join(p.strip("/") for p in parts if p)
        if not tail:
            return self
        if self.local:
            path = str(Path(self.path, tail))
            url = str(Path(self.url, tail)) if not self.url.startswith("file://") else f"file://{path}"
            return Location(url, "file", path)
        return Location(f"{self.url.rstrip('/')}/{tail}", self.protocol, f"{self.path.rstrip('/')}/{tail}")

    def __str__(self) -> str:
        return self.url

    def exists(self) -> bool:
        """Whether anything (a file, a directory, a store's keys) is at this location."""
        if self.local:
            return Path(self.path).exists()
        try:
            return bool(self.fs.exists(self.path))
        except Exception as exc:
            raise StorageError(f"{self.url}: unreachable ({_one_line(exc)})") from None

    def zarr_store(self, read_only: bool = False) -> Any:
        """The zarr 3 store for this location: LocalStore for paths, FsspecStore (async backend) for URLs."""
        from zarr.storage import FsspecStore, LocalStore

        if self.local:
            return LocalStore(self.path, read_only=read_only)
        try:
            return FsspecStore.from_url(f"{self.protocol}://{self.path}", read_only=read_only)
        except Exception as exc:
            raise StorageError(f"{self.url}: cannot open as a zarr store ({_one_line(exc)})") from None


def locate(target: str | Path, check: bool = True) -> Location:
    """Resolve `target` to a Location; with `check`, prove a remote one reachable (protocol known, bucket
    present, credentials accepted) by reading its bucket, so a typo fails before any work starts."""
    text = str(target)
    m = _URL.match(text)
    if not m:
        return Location(text, "file", str(Path(text).expanduser().absolute()))
    protocol, rest = m.group(1).lower(), m.group(2)
    if protocol == "file":
        return Location(text, "file", str(Path(rest).absolute()))
    if protocol not in fsspec.available_protocols():
        raise StorageError(
            f"{text}: unknown storage protocol {protocol!r} (use a path, s3://, gs://, memory://)"
        )
    loc = Location(text, protocol, rest.rstrip("/") or rest)
    if check:
        check_reachable(loc)
    return loc


def check_reachable(loc: Location) -> None:
    """Raise StorageError unless `loc`'s filesystem answers and, for object stores, its bucket exists."""
    fs = loc.fs
    if loc.protocol not in BUCKET_PROTOCOLS:
        return
    bucket = loc.path.split("/", 1)[0]
    if not bucket:
        raise StorageError(f"{loc.url}: no bucket in the URL")
    try:
        fs.ls(bucket, detail=False)
    except FileNotFoundError:
        raise StorageError(f"{loc.url}: bucket {bucket!r} does not exist") from None
    except Exception as exc:  # credentials, endpoint, permissions: the backend's own exception types
        raise StorageError(f"{loc.url}: unreachable ({_one_line(exc)})") from None


def upload_files(files: list[Path], local_root: Path, dest: Location) -> None:
    """Copy `files` (below `local_root`) to the same relative names below `dest`, in list order."""
    if not files:
        return
    remote = [dest.join(str(f.relative_to(local_root)).replace(os.sep, "/")).path for f in files]
    try:
        dest.fs.put([str(f) for f in files], remote)
    except Exception as exc:
        raise StorageError(f"{dest.url}: upload failed ({_one_line(exc)})") from None


def upload_dir(local: Path, dest: Location, last: tuple[str, ...] = ()) -> None:
    """Upload directory `local` to `dest` (replacing what is there), the files named in `last` after all
    others: object stores have no rename, so a reader that requires those files never sees a partial copy."""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    tail = [p for p in files if p.name in last]
    head = [p for p in files if p.name not in last]
    if dest.local:
        raise StorageError(f"{dest.url}: upload_dir is for remote locations")
    try:
        for name in last:  # the old marker files go first, so the old and new copies never mix for a reader
            if dest.fs.exists(dest.join(name).path):
                dest.fs.rm(dest.join(name).path)
    except Exception as exc:
        raise StorageError(f"{dest.url}: upload failed ({_one_line(exc)})") from None
    upload_files(head, local, dest)
    upload_files(tail, local, dest)


def download_dir(src: Location, local: Path) -> list[str]:
    """Copy every file below remote `src` to `local`; returns the relative names copied ([] if none)."""
    try:
        found = src.fs.find(src.path)
    except FileNotFoundError:
        return []
    except Exception as exc:
        raise StorageError(f"{src.url}: unreachable ({_one_line(exc)})") from None
    names = [f[len(src.path) :].lstrip("/") for f in found]
    names = [n for n in names if n]
    if not names:
        return []
    local.mkdir(parents=True, exist_ok=True)
    targets = [str(local / n) for n in names]
    for t in targets:
        Path(t).parent.mkdir(parents=True, exist_ok=True)
    try:
        src.fs.get([src.join(n).path for n in names], targets)
    except Exception as exc:
        raise StorageError(f"{src.url}: download failed ({_one_line(exc)})") from None
    return names


def version_tag(loc: Location, names: tuple[str, ...]) -> str:
    """Etags (object stores) or sizes+mtimes of `names` below `loc`: changes whenever one of them is rewritten."""
    tags = []
    for n in names:
        try:
            info = loc.fs.info(loc.join(n).path)
        except FileNotFoundError:
            tags.append(f"{n}:missing")
            continue
        except Exception as exc:
            raise StorageError(f"{loc.join(n).url}: unreachable ({_one_line(exc)})") from None
        tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("mtime") or ""
        tags.append(f"{n}:{info.get('size')}:{tag}:{info.get('LastModified', '')}")
    return "|".join(tags)
