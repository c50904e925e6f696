"""The raw frames of a camera array's last, partly filled chunk, held so that appends never re-encode.

A camera chunk holds several frames in one lossy image. Appending rows to a partly filled chunk makes
zarr decode the chunk, merge the new rows and encode it again, so without this every flush would put the
chunk's earlier frames through the lossy codec once more. The writer keeps the original frames of that
chunk and rewrites it from them (`ChunkTail.extend`), so each stored frame is encoded from the source
exactly once. The frames up to the last commit are kept too (`commit`/`truncate`), because a discarded
episode rewinds the array into that chunk. Only after a writer reopens a store, whose open chunk is on
disk and not in memory, do that chunk's committed frames (at most chunk rows - 1) get encoded a second time.
"""

from __future__ import annotations

import numpy as np


class ChunkTail:
    """Original frames of rows [start, end) of one array; start is the open chunk's first row when known."""

    def __init__(self, chunk_rows: int, n_rows: int = 0) -> None:
        self.chunk_rows = max(1, int(chunk_rows))
        self.start = int(n_rows)
        self.frames: np.ndarray | None = None
        self._committed: tuple[int, np.ndarray | None] = (self.start, None)

    @property
    def end(self) -> int:
        return self.start + (0 if self.frames is None else len(self.frames))

    def extend(self, n0: int, rows: np.ndarray) -> tuple[int, np.ndarray]:
        """(first row, rows) to write so that `rows` land at n0 and the open chunk is rewritten from originals."""
        if self.end == n0 and self.frames is not None and len(self.frames):
            start, out = self.start, np.concatenate([self.frames, rows])
        else:
            start, out = n0, rows
        n1 = start + len(out)
        keep = max(start, n1 - n1 % self.chunk_rows)  # first row of the chunk left open after this write
        self.start, self.frames = keep, (out[keep - start :].copy() if keep < n1 else None)
        return start, out

    def commit(self) -> None:
        """Remember the frames as of a commit: a later discard rewinds to exactly here."""
        self._committed = (self.start, None if self.frames is None else self.frames.copy())

    def truncate(self, n: int) -> None:
        """The array was cut to n rows: keep the originals of what remains of the open chunk, if held."""
        c_start, c_frames = self._committed
        if n == c_start + (0 if c_frames is None else len(c_frames)):
            self.start, self.frames = c_start, None if c_frames is None else c_frames.copy()
        elif self.start <= n <= self.end:
            self.frames = None if self.frames is None or n == self.start else self.frames[: n - self.start]
        else:
            self.start, self.frames = n, None
