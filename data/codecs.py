"""Image codecs of a store: the portable ones new stores are written with, and the legacy one still read.

Portable (every store written since zarr format 2 became the on-disk format): camera arrays are zarr format 2
arrays compressed with imagecodecs' numcodecs codecs, so plain zarr plus
`imagecodecs.numcodecs.register_codecs()` decodes a store with no Mimic import, and diffusion_policy / UMI
(which register the same ids) open it too.
- Lossy (what a live recorder writes): `imagecodecs_jpeg`, one frame per chunk, diffusion_policy's and UMI's
  layout. JPEG costs ~0.1 ms per 96x96 frame here, against ~6 ms for JPEG XL: a recorder encoding every
  camera frame on a laptop cannot afford the latter, and object stores read one-frame chunks through the
  training cache (mimic.policies.streaming) rather than per step.
- Lossless (imports and `mimic dataset convert`, offline): `imagecodecs_jpegxl` lossless, several frames per
  chunk (one JPEG XL multi-frame image per chunk, the one imagecodecs image codec that encodes a (k, H, W, 3)
  stack), so an imported store is pixel-exact and one object holds many frames.

The codec configs written to disk hold only the keys that were set: imagecodecs' `get_config()` also
lists newer keyword arguments as None, and the older imagecodecs codec classes diffusion_policy and UMI
register (`diffusion_policy/codecs/imagecodecs_numcodecs.py`) reject keywords they do not know.

Legacy: stores written before used the private zarr-v3 codec "mimic.jpeg" (one JPEG per chunk).
`JpegCodec` stays registered so they still read; `mimic dataset convert` rewrites one portably.
Importing this module registers both, and every module that opens a store imports it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import imagecodecs
import imagecodecs.numcodecs as icn
import numcodecs
import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.registry import register_codec

if TYPE_CHECKING:
    import zarr
    from zarr.core.array_spec import ArraySpec

CODEC_NAME = "mimic.jpeg"
PORTABLE_IMAGE_CODEC_ID = "imagecodecs_jpegxl"  # lossless, several frames per chunk
PORTABLE_JPEG_CODEC_ID = "imagecodecs_jpeg"  # lossy, one frame per chunk
# Raw bytes of one image chunk: ~8 MiB is 9 frames of 640x480; smaller frames stop at the cap. Several frames
# per object keep object stores (one request per chunk) fast; the cap bounds what a writer re-encodes per
# flush (the open chunk is rewritten whole: 64 noisy 64x64 frames took ~385 ms here, 16 a quarter of that)
# and what a reader decodes to get one frame.
IMAGE_CHUNK_BYTES = 8 << 20
MAX_IMAGE_CHUNK_ROWS = 16
JPEGXL_EFFORT = 1  # libjxl's fastest setting: ~30 ms per 640x480 frame lossless (here)


class PortableJpegxl(icn.Jpegxl):
    """imagecodecs' JPEG XL codec, same id and behaviour, whose on-disk config omits unset keys."""

    def get_config(self) -> dict[str, Any]:
        return {k: v for k, v in super().get_config().items() if v is not None}


class PortableJpeg(icn.Jpeg):
    """imagecodecs' JPEG codec, same id and behaviour, whose on-disk config omits unset keys."""

    def get_config(self) -> dict[str, Any]:
        return {k: v for k, v in super().get_config().items() if v is not None}


def register_portable_codecs() -> None:
    """Register imagecodecs' numcodecs codecs (to read any standard store) and the trimmed JPEG / JPEG XL."""
    icn.register_codecs(verbose=False)
    numcodecs.register_codec(PortableJpegxl, PORTABLE_IMAGE_CODEC_ID)
    numcodecs.register_codec(PortableJpeg, PORTABLE_JPEG_CODEC_ID)


def image_codec(quality: int | None) -> PortableJpeg | PortableJpegxl:
    """A camera array's codec: JPEG at `quality` (1..100), or lossless JPEG XL when None."""
    if quality is None:
        return PortableJpegxl(lossless=True, effort=JPEGXL_EFFORT)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"image quality must be 1..100 or None (lossless), got {quality}")
    return PortableJpeg(level=int(quality))


def image_chunk_rows(frame_shape: tuple[int, ...], quality: int | None = None) -> int:
    """Frames per chunk of a camera array of this (H, W, 3) frame shape: one for JPEG (it encodes one image),
    up to MAX_IMAGE_CHUNK_ROWS for lossless JPEG XL."""
    if quality is not None:
        return 1
    frame_bytes = int(np.prod(frame_shape))
    return max(1, min(MAX_IMAGE_CHUNK_ROWS, IMAGE_CHUNK_BYTES // max(1, frame_bytes)))


def image_quality(arr: zarr.Array) -> int | None:
    """The lossy quality a camera array was written with (legacy JPEG or JPEG XL); None if lossless/unknown."""
    compressor = getattr(arr.metadata, "compressor", None)
    if compressor is not None:
        cfg = compressor.get_config()
        if cfg.get("id") == PORTABLE_JPEG_CODEC_ID and cfg.get("level"):
            return int(cfg["level"])
        if cfg.get("id") == PORTABLE_IMAGE_CODEC_ID and not cfg.get("lossless") and cfg.get("level"):
            return int(cfg["level"])  # lossy JPEG XL, as written by an earlier portable writer
        return None
    codecs = getattr(arr.metadata, "codecs", None) or ()
    return codecs[0].level if codecs and isinstance(codecs[0], JpegCodec) else None


def codec_name(arr: zarr.Array) -> str:
    """Short codec description of an array for `mimic dataset info` (the numcodecs id or the v3 codec)."""
    compressor = getattr(arr.metadata, "compressor", None)
    if compressor is not None:
        return str(compressor.codec_id)
    codecs = getattr(arr.metadata, "codecs", None)
    if codecs:
        return type(codecs[0]).__name__
    return "none"


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """Legacy lossy JPEG of a (1, H, W, 3) uint8 chunk; `level` is the JPEG quality 1..100."""

    is_fixed_size = False
    level: int = 90

    def __init__(self, *, level: int = 90) -> None:
        object.__setattr__(self, "level", int(level))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JpegCodec:
        return cls(**(data.get("configuration") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": CODEC_NAME, "configuration": {"level": self.level}}

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        img = imagecodecs.jpeg_decode(chunk_bytes.to_bytes())
        arr = np.ascontiguousarray(img, dtype=np.uint8).reshape(chunk_spec.shape)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(arr)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        arr = np.asarray(chunk_array.as_ndarray_like())
        if arr.dtype != np.uint8 or arr.ndim < 3 or arr.shape[-1] != 3:
            raise ValueError(
                f"{CODEC_NAME}: expected uint8 (..., H, W, 3) chunk, got {arr.dtype} {arr.shape}"
            )
        img = arr.reshape(arr.shape[-3:])
        data = imagecodecs.jpeg_encode(img, level=self.level)
        return chunk_spec.prototype.buffer.from_bytes(bytes(data))

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("JPEG size is data dependent")


register_codec(CODEC_NAME, JpegCodec)
register_portable_codecs()
