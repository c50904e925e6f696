"""A zarr-v3 JPEG codec for uint8 HWC frames (one frame per chunk).

numcodecs' zarr3 wrappers do not cover imagecodecs' Jpeg, so this is a thin ArrayBytesCodec around
`imagecodecs.jpeg_encode/decode`. Importing this module registers it as "mimic.jpeg"; every module
that opens a store imports it first (see `data.store`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import imagecodecs
import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.registry import register_codec

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec

CODEC_NAME = "mimic.jpeg"


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """Lossy JPEG of a (1, H, W, 3) uint8 chunk; `level` is the JPEG quality 1..100."""

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
