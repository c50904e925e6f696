"""Inference engines: the same policy with its denoiser and observation encoder run another way.

A chunk at batch 1 on a CPU is one or a few denoiser forwards, and a forward of a large UNet is bound by the
memory bandwidth its weights take to stream, not by arithmetic; at the default size it is bound by torch's
per-op overhead. An engine attacks one or the other without touching the sampler: it replaces
`policy.backbone` (called as `net(sample, time, obs_features)` by every generator) and the image trunks of
`policy.encoder` with modules of the same call signature, so `predict`, `sample_actions` and the processors
run unchanged. Engines, measured against each other in bench/bench_inference.py (docs/inference.md):

- `torch`: the network as trained, fp32 eager (the reference every other engine is checked against);
- `bf16`: the same modules with bfloat16 weights (half the bytes; oneDNN's bf16 kernels where the CPU has
  them) and channels-last image trunks; inputs and outputs stay fp32;
- `compiled`: `bf16` under torch.compile (inductor, C++ codegen); the first call compiles (seconds to a minute);
- `onnx`: ONNX Runtime on graphs written by `mimic export` (mimic.policies.export): fp32, exact to float
  rounding, prepacked weights and one call per graph instead of hundreds of torch ops; on 2 or more threads the
  cameras' trunks run side by side (OnnxEncoder);
- `onnx-int8`: the denoiser with dynamically quantised int8 weights (a quarter of the bytes), the encoder fp32
  (ONNX Runtime's int8 image convolutions measured slower than its fp32 ones).

Every engine but `torch` is checked by `chunk_deviation` when it is applied (and `mimic export` checks what it
writes): the chunk from the same observations and noise, in normalised action units, against fp32, within
TOLERANCE. ONNX engines have no autograd, so guided sampling (rtc) refuses them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mimic.policies.backbones.common import SinusoidalTimeEmbedding

ENGINES = ("torch", "bf16", "compiled", "onnx", "onnx-int8")
ONNX_ENGINES = ("onnx", "onnx-int8")  # the ones that need files written by `mimic export`
# Largest |chunk - fp32 chunk| over every row and action dim, in normalised action units (actions span [-1, 1]),
# from the same observation and noise. Measured at 1 step on random UNets up to DP size (bench_inference): bf16
# 0.006-0.011, int8 0.018-0.02, onnx ~2e-6, 5x below these bounds. DDIM's epsilon steps amplify a network's
# error (0.3 with bf16 on a random net), so a reduced engine is refused for such a policy unless it holds.
TOLERANCE = {"torch": 0.0, "bf16": 0.05, "compiled": 0.05, "onnx": 1e-4, "onnx-int8": 0.1}
# Largest |chunk with the feature cache - chunk without| on one engine, same observations and noise. A cached frame
# was encoded at another batch size (its own, or with the frames it arrived with) than the uncached window's: fp32
# trunks (torch, onnx, onnx-int8, whose encoder stays fp32) give the same features to float rounding (measured 0
# to 1e-6); bf16 kernels block by batch size, so their features move by bf16 rounding (measured 0.008 at 2
# threads), which the engine's own tolerance against fp32 already bounds.
CACHE_TOLERANCE = {"torch": 1e-5, "bf16": 0.05, "compiled": 0.05, "onnx": 1e-5, "onnx-int8": 1e-5}
DENOISER_INPUTS = ("sample", "time", "obs_features")


class EngineError(ValueError):
    """An engine that cannot run here (unknown name, missing export, wrong device); the message says which."""


def check_engine(name: str) -> str:
    if name not in ENGINES:
        raise EngineError(f"engine {name!r}: not one of {', '.join(ENGINES)}")
    return name


# ---- torch engines ---------------------------------------------------------------------------------


def _cast_time_embeddings(net: nn.Module, dtype: torch.dtype) -> None:
    """The sinusoidal time features are computed in fp32 by design; feed them to the reduced layers in `dtype`."""
    for m in net.modules():
        if isinstance(m, SinusoidalTimeEmbedding):
            m.register_forward_hook(lambda _m, _i, out: out.to(dtype))


class CastDenoiser(nn.Module):
    """`net(sample, time, obs_features)` with its weights in `dtype`; takes and returns fp32."""

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.dtype = dtype
        self.net = copy.deepcopy(net).to(dtype).eval()
        _cast_time_embeddings(self.net, dtype)

    def forward(self, sample: torch.Tensor, time: torch.Tensor, obs_features: torch.Tensor) -> torch.Tensor:
        out = self.net(sample.to(self.dtype), time, obs_features.to(self.dtype))
        return out.to(sample.dtype)


class CastImageEncoder(nn.Module):
    """One camera's trunk (mimic.policies.encoders.ImageEncoder) in `dtype`, channels-last (oneDNN's layout for
    convolutions, which saves a reorder per layer); crops as the original does, returns fp32 features."""

    def __init__(self, image_encoder: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.dtype = dtype
        self.inner = copy.deepcopy(image_encoder).to(dtype).to(memory_format=torch.channels_last).eval()

    def crop(self, x: torch.Tensor, random: bool) -> torch.Tensor:
        return self.inner.crop(x, random)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x.to(self.dtype).contiguous(memory_format=torch.channels_last))
        return y.to(x.dtype)


def _reduce_torch(policy: Any, dtype: torch.dtype, compile_: bool) -> None:
    backbone: nn.Module = CastDenoiser(policy.backbone, dtype)
    if compile_:
        backbone = torch.compile(backbone)
    policy.backbone = backbone
    images = policy.encoder.images
    for key in list(images.keys()):
        cam: nn.Module = CastImageEncoder(images[key], dtype)
        if compile_:
            cam.forward = torch.compile(cam.forward)  # crop() stays a plain method (random crops in training)
        images[key] = cam


# ---- ONNX Runtime engines ------------------------------------------------------------------------


def ort_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session on `path`, with torch's intra-op thread count unless told otherwise (a loop
    that set torch to 1 thread on a shared machine gets 1 here too)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Idle workers sleep instead of spinning: on a machine whose cores the control loop and other processes
    # share, spinning workers take the CPU those need (measured: p99 of a 2-thread default-size UNet 18 ms
    # spinning, 7 ms not, with another process busy on one of 2 cores).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own types for unreadable or foreign files
        raise EngineError(f"{path}: not a runnable ONNX graph ({type(e).__name__}: {e})") from None


def _numpy(x: torch.Tensor) -> np.ndarray:
    """C-contiguous fp32 numpy; the copy (camera frames arrive channels-last) by numpy on one thread: torch's
    splits over its intra-op threads, which stalled for milliseconds with another process on a core."""
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


class _NoAutograd:
    """ONNX graphs are opaque to autograd: guided sampling, which differentiates through the denoiser, must say so
    instead of returning a zero gradient."""

    name = "onnx"

    def _refuse_grad(self, *xs: torch.Tensor) -> None:
        if torch.is_grad_enabled() and any(x.requires_grad for x in xs):
            raise EngineError(
                f"engine {self.name}: guided sampling (rtc) differentiates through the denoiser, which an "
                "ONNX graph cannot; use engine torch, bf16 or compiled"
            )


class OnnxDenoiser(nn.Module, _NoAutograd):
    """The denoiser as an ONNX Runtime session, called like the backbone it was exported from."""

    def __init__(self, path: Path, name: str = "onnx") -> None:
        super().__init__()
        self.name = name
        self.session = ort_session(path)
        # Policy.device reads its first parameter; the graph holds the weights, this only says "cpu".
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, sample: torch.Tensor, time: torch.Tensor, obs_features: torch.Tensor) -> torch.Tensor:
        self._refuse_grad(sample, obs_features)
        time = time.expand(sample.shape[0]) if time.dim() else time.reshape(1).expand(sample.shape[0])
        feed = dict(zip(DENOISER_INPUTS, (_numpy(sample), _numpy(time), _numpy(obs_features)), strict=True))
        (out,) = self.session.run(None, feed)
        return torch.from_numpy(out).to(sample.device, sample.dtype)


class OnnxImageTrunk(_NoAutograd):
    """One camera's trunk as an ONNX Runtime session, called as ImageEncoder is: frames [N, 3, H, W] in [0, 1]
    -> features [N, F]; the inference (centre) crop is in the graph, so frames come uncropped."""

    def __init__(self, path: Path, name: str = "onnx", threads: int | None = None) -> None:
        self.name = name
        self.session = ort_session(path, threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._refuse_grad(x)
        (out,) = self.session.run(None, {"image": _numpy(x)})
        return torch.from_numpy(out).to(x.device)


class OnnxEncoder(nn.Module, _NoAutograd):
    """ObsEncoder with each camera's trunk an ONNX Runtime session (`images[key]`, one graph per camera, so the
    feature cache can encode one frame at a time); low-dim keys are concatenated by torch as ObsEncoder does.
    `augment` passes observations through (the centre crop is in the graphs) and refuses training's random ones.

    Cameras side by side: with a thread budget of 2 or more (torch's thread count when the engine is built, as
    the sessions take it) and 2 or more cameras, `encode_cameras` runs the cameras' trunks at once, one on the
    calling thread and the others on a small pool of its own (ONNX Runtime releases the GIL in `run`), each
    session with its share of the budget (1 intra-op thread each on 2), so they do not oversubscribe the cores.
    A steady-state chunk encodes one new frame per camera: on two free cores its trunks then take the time of
    one (docs/inference.md). The features are those of the sessions run in turn, bit for bit (a session's result
    does not depend on its thread count here). `concurrent=False` keeps them in turn, each with the whole budget."""

    def __init__(
        self,
        images: dict[str, Path],
        lowdim_keys: Sequence[str],
        image_keys: Sequence[str],
        feature_dim: int,
        name: str = "onnx",
        concurrent: bool = True,
    ) -> None:
        super().__init__()
        self.name = name
        self.lowdim_keys, self.image_keys = list(lowdim_keys), list(image_keys)
        if sorted(images) != sorted(self.image_keys):
            raise EngineError(
                f"engine {name}: image graphs for {sorted(images)}, the policy has {self.image_keys}"
            )
        budget = torch.get_num_threads()
        lanes = min(budget, len(self.image_keys)) if concurrent else 1
        self.images = {
            k: OnnxImageTrunk(images[k], name, threads=max(1, budget // lanes)) for k in self.image_keys
        }
        self.lanes = lanes  # cameras encoded at once (1: in turn)
        # lanes - 1 workers: the calling thread runs one camera itself; bounded, idle workers sleep.
        self._pool = ThreadPoolExecutor(lanes - 1, thread_name_prefix="onnx-trunk") if lanes > 1 else None
        self.feature_dim = feature_dim
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def augment(self, obs: dict[str, torch.Tensor], train: bool) -> dict[str, torch.Tensor]:
        if train:
            raise EngineError(f"engine {self.name}: inference only (training needs engine torch)")
        return obs

    def encode_cameras(self, frames: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{camera key: frames [N, 3, H, W]} -> {key: features [N, F]}, the cameras side by side where the budget
        allows (class docstring), else in turn."""
        keys = list(frames)
        if self._pool is None or len(keys) < 2:
            return {k: self.images[k](frames[k]) for k in keys}
        inference = torch.is_inference_mode_enabled()  # thread-local: the workers take the caller's mode
        futures = {k: self._pool.submit(_run_trunk, self.images[k], frames[k], inference) for k in keys[1:]}
        out = {}
        try:
            out[keys[0]] = self.images[keys[0]](frames[keys[0]])
            # A camera no worker has started yet (none got a core: another process holds it) runs here, in turn,
            # rather than this thread waiting for a worker to be scheduled.
            for k, f in futures.items():
                if f.cancel():
                    out[k] = self.images[k](frames[k])
        finally:
            wait(futures.values())  # never leave a trunk running behind an error
        return {k: out[k] if k in out else futures[k].result() for k in keys}

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """ObsEncoder.forward on the sessions: {key: [B, T, ...]} -> [B, T, F]."""
        feats = [obs[k].flatten(2) for k in self.lowdim_keys]
        images = self.encode_cameras({k: obs[k].flatten(0, 1) for k in self.image_keys})
        feats += [images[k].unflatten(0, tuple(obs[k].shape[:2])) for k in self.image_keys]
        return torch.cat(feats, -1)


def _run_trunk(trunk: OnnxImageTrunk, x: torch.Tensor, inference: bool) -> torch.Tensor:
    """`trunk(x)` on a pool thread, in the calling thread's inference mode (so its features are the same kind of
    tensor as the calling thread's)."""
    with torch.inference_mode(inference):
        return trunk(x)


@dataclass
class EngineFiles:
    """What `mimic export` wrote for one ONNX engine (mimic.policies.export.engine_files finds and checks it)."""

    denoiser: Path
    images: dict[str, Path] = field(default_factory=dict)  # camera key -> its trunk's graph; none: low-dim


# ---- applying an engine ---------------------------------------------------------------------------


def apply_engine(
    policy: Any,
    engine: str,
    files: EngineFiles | None = None,
    check: bool = True,
    warm: bool = True,
    concurrent_trunks: bool = True,
) -> Any:
    """Run `policy` (a mimic.policies.policy.Policy, eval mode) on `engine`, in place, and return it. ONNX engines
    need `files`. `check`: before the fp32 modules are dropped, compare one batch of chunks with theirs
    (chunk_deviation at the policy's own step count) and raise EngineError beyond TOLERANCE[engine], so a
    deployment never runs an engine that changes what this policy does. `warm` runs one chunk, so the first real
    call pays no compile or allocation (torch.compile compiles here, not in the middle of a control loop).
    `concurrent_trunks` (ONNX engines): the cameras' trunks side by side when torch's thread budget is 2 or more
    (OnnxEncoder); False runs them in turn, each with the whole budget."""
    check_engine(engine)
    if engine == "torch":
        return policy
    if engine in ONNX_ENGINES and getattr(policy.cfg, "prefix_rows", 0):
        raise EngineError(
            f"engine {engine}: a prefix-conditioned policy (policy.prefix_rows) runs on torch engines"
        )
    if policy.device.type != "cpu" and engine in ONNX_ENGINES:
        raise EngineError(f"engine {engine}: runs on the CPU (the policy is on {policy.device})")
    if engine in ONNX_ENGINES and files is None:
        raise EngineError(f"engine {engine}: needs the files `mimic export --format {engine}` writes")
    policy.eval()
    reference = copy.deepcopy(policy) if check else None
    if engine in ("bf16", "compiled"):
        _reduce_torch(policy, torch.bfloat16, compile_=engine == "compiled")
    else:
        enc = policy.encoder
        policy.backbone = OnnxDenoiser(files.denoiser, engine)
        if enc.image_keys:
            policy.encoder = OnnxEncoder(
                files.images,
                enc.lowdim_keys,
                enc.image_keys,
                enc.feature_dim,
                engine,
                concurrent=concurrent_trunks,
            )
    if warm:
        warm_up(policy)
    if reference is not None:
        dev = chunk_deviation(reference, policy, seeds=(0,), batch=1)
        if dev > TOLERANCE[engine]:
            raise EngineError(
                f"engine {engine}: chunks deviate from fp32 by {dev:.3g} in normalised actions (tolerance "
                f"{TOLERANCE[engine]}); run this policy on engine torch"
            )
    return policy


def example_obs(policy: Any, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Observations a policy accepts, in dataset units: low-dim values drawn uniformly across the normaliser's
    range of each key (its [-1, 1], wherever the training data lay), images uniform noise in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k in policy.obs_keys:
        shape = (batch, policy.n_obs_steps, *policy.shape_meta.obs_shapes[k])
        if k in policy.image_keys:
            x = torch.rand(shape[0], shape[1], shape[4], shape[2], shape[3], generator=gen)
        else:
            x = policy.normalizer.unnormalize(k, torch.rand(shape, generator=gen) * 2 - 1)
        out[k] = x.to(policy.device)
    return out


def warm_up(policy: Any) -> None:
    """One chunk, then (with cameras) one whose window slid by a step, the feature cache's steady state: its
    single new frame per camera is the batch size a compiled or ONNX trunk then sees at every call."""
    obs = example_obs(policy)
    with torch.inference_mode():
        policy.sample_actions(obs, 1)
        if policy.image_keys:
            new = example_obs(policy, seed=1)
            policy.sample_actions({k: torch.cat([v[:, 1:], new[k][:, -1:]], 1) for k, v in obs.items()}, 1)


def normalized_chunk(policy: Any, obs: dict[str, torch.Tensor], steps: int | None, seed: int) -> torch.Tensor:
    """The chunk [B, H, A] in normalised action units (the generator's own space) from noise seeded by `seed`."""
    gen = torch.Generator(device=policy.device).manual_seed(seed)
    with torch.inference_mode():
        actions = policy.sample_actions(obs, steps, gen)
        ref = policy.action_reference(obs)
        return policy.normalizer.normalize("action", actions if ref is None else actions - ref).float()


def chunk_deviation(
    reference: Any, candidate: Any, steps: int | None = None, seeds: Sequence[int] = range(4), batch: int = 4
) -> float:
    """Largest |candidate chunk - reference chunk| in normalised action units, from the same observations and
    noise, over `seeds` (each a batch of `batch` observation windows)."""
    worst = 0.0
    for seed in seeds:
        obs = example_obs(reference, batch, seed)
        a = normalized_chunk(reference, obs, steps, seed)
        b = normalized_chunk(candidate, obs, steps, seed)
        worst = max(worst, float((a - b).abs().max()))
    return worst
