"""ONNX engines on disk: what `mimic export` writes beside a checkpoint's weights, and how a loader finds it.

    <ckpt>/engines/<format>/denoiser.onnx   the backbone, net(sample, time, obs_features); batch axis dynamic
    <ckpt>/engines/<format>/image_<i>.onnx  policies with cameras: camera i's trunk (image_keys order), frames
                                            [N, 3, H, W] in [0, 1] -> features [N, F], centre crop included; one
                                            graph per camera so each frame can be encoded once and its features
                                            reused (feature_cache.py)
    <ckpt>/engines/<format>/engine.json     format, graph inputs, the checkpoint's provenance, the fingerprint
                                            (sha256) of the files the graphs were exported from, and the chunk
                                            deviation from fp32 measured at export

ONNX files are protobuf (no pickle, as the checkpoint's safetensors). A graph holds weights, so an engine belongs
to one version of the checkpoint: `engine_files` refuses one whose fingerprint no longer matches (a checkpoint
retrained in place), and save_checkpoint's atomic replace drops the engines with the old directory anyway.
The directory is written beside its final name and renamed into place, as checkpoints are.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import time
import types
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mimic.policies.encoders import SpatialSoftmax
from mimic.policies.engines import (
    DENOISER_INPUTS,
    ONNX_ENGINES,
    TOLERANCE,
    EngineError,
    EngineFiles,
    apply_engine,
    chunk_deviation,
    example_obs,
)

ENGINES_DIR = "engines"
ENGINE_JSON = "engine.json"
FINGERPRINTED = ("model.safetensors", "config.yaml", "shape_meta.json")
OPSET = 17


def engine_dir(ckpt: str | Path, fmt: str) -> Path:
    return Path(ckpt) / ENGINES_DIR / fmt


def fingerprint(ckpt: str | Path) -> dict[str, str]:
    """sha256 of each file an exported graph depends on (weights, architecture, shapes)."""
    out = {}
    for name in FINGERPRINTED:
        h = hashlib.sha256()
        with open(Path(ckpt) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[name] = h.hexdigest()
    return out


class _ImageGraph(nn.Module):
    """One camera's trunk with its inference (centre) crop: frames [N, 3, H, W] in [0, 1] -> [N, F], the batch
    axis symbolic (SpatialSoftmax flattens by axis, not by a batch size read at trace time)."""

    def __init__(self, image_encoder: nn.Module) -> None:
        super().__init__()
        self.cam = copy.deepcopy(image_encoder)
        for m in self.cam.modules():
            if isinstance(m, SpatialSoftmax):
                m.forward = types.MethodType(_spatial_softmax, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam(self.cam.crop(x, random=False))


def _spatial_softmax(self: SpatialSoftmax, x: torch.Tensor) -> torch.Tensor:
    """SpatialSoftmax.forward, flattening [B, K, 2] keypoints by axis instead of by the batch size read."""
    h, w = x.shape[-2:]
    maps = self.proj(x).flatten(2).softmax(-1)
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=maps.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=maps.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return (maps @ torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)).flatten(1)


def _to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], names: tuple[str, ...], path: Path) -> None:
    """Trace `module` to ONNX. Gradients stay enabled: under no_grad, nn.TransformerEncoderLayer takes its fused
    fast path, an op ONNX has no symbol for."""
    axes = {n: {0: "batch"} for n in names} | {"out": {0: "batch"}}
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(names),
            output_names=["out"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def _quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 (per output channel) weights for every Conv / MatMul / Gemm; activations quantised per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # a pre-processing hint printed on every call
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)


def write_graphs(policy: Any, out: Path, fmt: str) -> dict[str, Any]:
    """Export `policy`'s denoiser (and, with cameras, its encoder) into directory `out`; the engine.json fields
    that describe the graphs."""
    if getattr(policy.cfg, "prefix_rows", 0):
        raise EngineError(
            f"engine {fmt}: a prefix-conditioned policy (policy.prefix_rows) runs on torch engines"
        )
    out.mkdir(parents=True, exist_ok=True)
    obs = example_obs(policy, batch=2)
    with torch.no_grad():
        nobs = policy.normalize_obs(obs)
        cond = policy.encoder(policy.encoder.augment(nobs, train=False))
    sample = torch.randn(2, policy.horizon, policy.action_dim)
    dn = out / ("denoiser.fp32.onnx" if fmt == "onnx-int8" else "denoiser.onnx")
    _to_onnx(policy.backbone, (sample, torch.full((2,), 50.0), cond), DENOISER_INPUTS, dn)
    if fmt == "onnx-int8":
        _quantize_int8(dn, out / "denoiser.onnx")
        dn.unlink()
    info: dict[str, Any] = {"denoiser": "denoiser.onnx", "images": {}}
    for i, k in enumerate(policy.encoder.image_keys):
        frames = obs[k].flatten(0, 1)  # [B * T, 3, H, W], uncropped: the crop is in the graph
        _to_onnx(_ImageGraph(policy.encoder.images[k]), (frames,), ("image",), out / f"image_{i}.onnx")
        info["images"][k] = f"image_{i}.onnx"
    return info


def export_onnx(policy: Any, ckpt: str | Path, fmt: str, check_seeds: int = 4) -> Path:
    """Write engine `fmt` ("onnx" | "onnx-int8") of `policy`, loaded from checkpoint directory `ckpt`, into
    engine_dir(ckpt, fmt). Before it is moved into place, the engine's chunks are compared with fp32's from the
    same noise (chunk_deviation, `check_seeds` batches); beyond TOLERANCE[fmt] nothing is written and EngineError
    says by how much."""
    if fmt not in ONNX_ENGINES:
        raise EngineError(f"format {fmt!r}: not one of {', '.join(ONNX_ENGINES)}")
    ckpt = Path(ckpt)
    final = engine_dir(ckpt, fmt)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        graphs = write_graphs(policy.eval(), tmp, fmt)
        engine = apply_engine(copy.deepcopy(policy), fmt, graph_files(tmp, graphs), check=False, warm=False)
        dev = chunk_deviation(policy, engine, seeds=range(check_seeds))
        if dev > TOLERANCE[fmt]:
            raise EngineError(
                f"{final}: {fmt} chunks deviate from fp32 by {dev:.3g} (normalised actions; tolerance "
                f"{TOLERANCE[fmt]}): not written"
            )
        prov_file = ckpt / "provenance.json"
        meta = {
            "format": fmt,
            "opset": OPSET,
            **graphs,
            "checkpoint": fingerprint(ckpt),
            "provenance": json.loads(prov_file.read_text()) if prov_file.is_file() else {},
            "max_deviation": dev,
            "tolerance": TOLERANCE[fmt],
            "exported": {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "torch": torch.__version__,
                "onnxruntime": _ort_version(),
            },
        }
        (tmp / ENGINE_JSON).write_text(json.dumps(meta, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def graph_files(root: Path, meta: dict[str, Any]) -> EngineFiles:
    """The graphs in directory `root` as `write_graphs` described them (`meta`), unchecked."""
    return EngineFiles(
        denoiser=root / str(meta["denoiser"]),
        images={str(k): root / str(v) for k, v in (meta.get("images") or {}).items()},
    )


def engine_files(ckpt: str | Path, fmt: str) -> EngineFiles:
    """The graphs of engine `fmt` exported from checkpoint `ckpt`, checked to belong to its current weights."""
    root = engine_dir(ckpt, fmt)
    hint = f"run: mimic export {ckpt} --format {fmt}"
    if not (root / ENGINE_JSON).is_file():
        raise EngineError(f"{root}: no {fmt} engine exported from this checkpoint ({hint})")
    try:
        meta = json.loads((root / ENGINE_JSON).read_text())
        files = graph_files(root, meta)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EngineError(f"{root / ENGINE_JSON}: unreadable ({type(e).__name__}: {e})") from None
    if meta.get("format") != fmt:
        raise EngineError(f"{root / ENGINE_JSON}: holds format {meta.get('format')!r}, not {fmt!r}")
    if meta.get("encoder") and not meta.get("images"):  # one graph over the whole window: cannot reuse frames
        raise EngineError(f"{root}: exported before per-camera image graphs ({hint})")
    if meta.get("checkpoint") != fingerprint(ckpt):
        raise EngineError(f"{root}: exported from other weights than the checkpoint's current ones ({hint})")
    for p in (files.denoiser, *files.images.values()):
        if not p.is_file():
            raise EngineError(f"{p}: missing ({hint})")
    return files
