"""Policy: observation encoder + denoiser backbone + generator + normaliser, behind the deploy contract.

`predict(obs_window)` takes raw observations (low-dim in dataset units, images uint8 HWC) for the last
`n_obs_steps` steps and returns `horizon` absolute actions; row i belongs to time step
i - (n_obs_steps - 1) relative to the newest observation (diffusion_policy's convention), so the rows
to execute now are [n_obs_steps - 1, n_obs_steps - 1 + n_action_steps).
`forward(batch)` is the training loss, so DDP can wrap the whole module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mimic.data.normalizer import Normalizer
from mimic.policies.backbones import make_backbone
from mimic.policies.backbones.widen import widen_unet_state
from mimic.policies.chunk_policy import executed_rows
from mimic.policies.config import CD_PARAMS, PolicyConfig
from mimic.policies.encoders import ObsEncoder
from mimic.policies.feature_cache import FrameFeatureCache, supports_cache
from mimic.policies.generators import ConsistencyGenerator, make_generator
from mimic.policies.generators.guidance import Inpaint
from mimic.policies.generators.prefix import prefix_distill_loss, prefix_flow_loss, prefix_sample
from mimic.policies.realtime import ChunkPrefix


@dataclass
class ShapeMeta:
    """What a checkpoint needs to rebuild the network and check inputs, independent of the dataset."""

    obs_shapes: dict[str, list[int]]  # per-step shape; images (H, W, 3) uint8
    action_dim: int
    control_hz: float = 10.0
    image_keys: list[str] = field(default_factory=list)
    arm: str = ""
    task: str = ""
    joint_names: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> ShapeMeta:
        return ShapeMeta(**d)


class Policy(nn.Module):
    def __init__(self, cfg: PolicyConfig, shape_meta: ShapeMeta, normalizer: Normalizer) -> None:
        super().__init__()
        cfg.validate()
        missing = [k for k in cfg.obs_keys if k not in shape_meta.obs_shapes]
        if missing:
            raise ValueError(f"policy: observation keys {missing} have no shape in shape_meta")
        self.cfg, self.shape_meta, self.normalizer = cfg, shape_meta, normalizer
        self.obs_keys = tuple(cfg.obs_keys)
        self.n_obs_steps, self.horizon, self.n_action_steps = cfg.n_obs_steps, cfg.horizon, cfg.n_action_steps
        self.executed_rows = executed_rows(cfg.n_obs_steps, cfg.n_action_steps)  # [lo, hi) a rollout executes
        self.action_dim = int(shape_meta.action_dim)
        self.control_hz = float(shape_meta.control_hz)
        self.image_keys = tuple(k for k in self.obs_keys if k in shape_meta.image_keys)
        lowdim = {
            k: int(np.prod(shape_meta.obs_shapes[k])) for k in self.obs_keys if k not in self.image_keys
        }
        self.angle_dims = cfg.angle_dims()  # validate() checked the format
        for key, dims in self.angle_dims.items():
            if key in self.image_keys or max(dims) >= lowdim[key]:
                raise ValueError(f"policy.angle_obs: {key} has no low-dim entry {max(dims)}")
            lowdim[key] += len(dims)  # each angle's sine joins its cosine, which takes the angle's own place
        images = {k: tuple(shape_meta.obs_shapes[k][:2]) for k in self.image_keys}
        self.encoder = ObsEncoder(lowdim, images, cfg.image)
        self.backbone = make_backbone(cfg, self.action_dim, self.encoder.feature_dim)
        self.generator = make_generator(cfg.generator, cfg.gen)
        if isinstance(
            self.generator, ConsistencyGenerator
        ):  # rows cd_unexecuted_weight leaves at full weight
            self.generator.executed_rows = self.executed_rows
        self.relative_key = cfg.action_relative_to
        self.relative_dims = (
            int(np.prod(shape_meta.obs_shapes[self.relative_key])) if self.relative_key else 0
        )
        if self.relative_dims > self.action_dim:
            raise ValueError(
                f"policy.action_relative_to: {self.relative_key!r} has {self.relative_dims} dims > "
                f"action_dim {self.action_dim}"
            )
        self._teacher: list[Policy] = []  # consistency only; a list so it is not a registered submodule
        self._rng: torch.Generator | None = None
        self.chunk_candidates = cfg.chunk_candidates
        self._last_chunk: torch.Tensor | None = None  # [H, A] normalised, the chunk predict() returned last
        # Inference reuses each camera frame's features while the frame stays in the window (feature_cache.py);
        # None turns it off. Training (forward) never uses it.
        self.feature_cache: FrameFeatureCache | None = FrameFeatureCache()

    # ---- consistency distillation ------------------------------------------------------------
    def set_teacher(self, teacher: Policy, init_student: bool = True) -> None:
        """Freeze `teacher` (an edm or flow policy, as gen.cd_param says) and, unless this student already holds
        trained weights (`init_student=False`: a distillation continued from its checkpoint), initialise it from
        the teacher."""
        if not isinstance(self.generator, ConsistencyGenerator):
            raise ValueError("set_teacher: only a consistency policy distils from a teacher")
        want = self.cfg.gen.cd_param
        if want not in CD_PARAMS or teacher.cfg.generator != want:
            raise ValueError(
                f"consistency teacher must be an {want!r} policy for gen.cd_param {want!r}, "
                f"got {teacher.cfg.generator!r}"
            )
        mine, theirs = self.cfg.prefix_rows, teacher.cfg.prefix_rows
        if bool(mine) != bool(theirs) or mine > theirs:
            raise ValueError(
                f"policy.prefix_rows {mine}: a prefix-conditioned student needs a teacher trained on at least as "
                f"many prefix rows, and an unconditioned one an unconditioned teacher (the teacher's is {theirs})"
            )
        if init_student:
            self.load_weights_from(teacher)
        teacher.eval().requires_grad_(False)
        self._teacher = [teacher]

    def load_weights_from(self, other: Policy) -> None:
        """`other`'s encoder and backbone weights. A UNet wider than `other`'s by one whole multiple receives its
        function widened (backbones/widen.py): how a student gets more capacity than its teacher."""
        self.encoder.load_state_dict(other.encoder.state_dict())
        mine, theirs = self.cfg.unet.down_dims, other.cfg.unet.down_dims
        if self.cfg.backbone == other.cfg.backbone == "unet" and list(mine) != list(theirs):
            if self.cfg.unet.n_groups != other.cfg.unet.n_groups:
                raise ValueError(
                    f"policy.unet.n_groups {self.cfg.unet.n_groups} differs from {other.cfg.unet.n_groups}: "
                    "a widened UNet keeps its groups"
                )
            state = widen_unet_state(
                other.backbone.state_dict(), theirs, self.backbone, mine, self.cfg.unet.n_groups
            )
            self.backbone.load_state_dict(state)
        else:
            self.backbone.load_state_dict(other.backbone.state_dict())

    # ---- shared pieces -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def action_reference(self, obs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """[B, 1, A] offset that turns relative actions into absolute ones (zeros past relative_dims)."""
        if not self.relative_key:
            return None
        ref = obs[self.relative_key][:, -1].flatten(1)
        pad = ref.new_zeros(ref.shape[0], self.action_dim - self.relative_dims)
        return torch.cat([ref, pad], 1)[:, None]

    def normalize_obs(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {
            k: obs[k] if k in self.image_keys else self.normalizer.normalize(k, obs[k]) for k in self.obs_keys
        }
        for k, dims in self.angle_dims.items():
            angle = obs[k][..., dims].to(out[k].dtype)
            x = out[k].clone()
            x[..., dims] = torch.cos(angle)
            out[k] = torch.cat([x, torch.sin(angle)], -1)
        return out

    def normalized_actions(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's action chunks [B, H, A] as the generator sees them: relative where configured, normalised."""
        ref = self.action_reference(batch["obs"])
        return self.normalizer.normalize("action", batch["action"] if ref is None else batch["action"] - ref)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Training loss for a batch {"obs": {key: [B, T, ...]}, "action": [B, H, A]} (images [B,T,3,H,W] 0..1).

        A consistency batch may carry "teacher_targets", (x_sigma, sigma, the teacher's endpoint) drawn from the
        precomputed pool of gen.cd_pool (mimic.workflows.distill_pool); the teacher then does not run."""
        nobs = self.encoder.augment(self.normalize_obs(batch["obs"]), train=True)
        cond = self.encoder(nobs)
        if "teacher_targets" in batch:
            return self.generator.endpoint_loss(self.backbone, *batch["teacher_targets"], cond=cond)
        x0 = self.normalized_actions(batch)
        if isinstance(self.generator, ConsistencyGenerator):
            if not self._teacher:
                raise RuntimeError("consistency policy: call set_teacher(edm_policy) before training")
            teacher = self._teacher[0]
            with torch.no_grad():
                teacher_cond = teacher.encoder(nobs)
            parts = (self.backbone, x0, cond, teacher.generator, teacher.backbone, teacher_cond)
            if self.cfg.prefix_rows:
                return prefix_distill_loss(self.generator, *parts, self.cfg.prefix_rows)
            return self.generator.distill_loss(*parts)
        if self.cfg.prefix_rows:
            return prefix_flow_loss(self.generator, self.backbone, x0, cond, self.cfg.prefix_rows)
        return self.generator.loss(self.backbone, x0, cond)

    @torch.no_grad()
    def sample_actions(
        self,
        obs: dict[str, torch.Tensor],
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        prefix: ChunkPrefix | None = None,
    ) -> torch.Tensor:
        """Batched obs tensors (dataset units; images [B,T,3,H,W] 0..1) -> absolute actions [B, H, A].

        With `prefix` (real-time chunking) the chunk is inpainted towards the prefix's rows by guided sampling
        (mimic.policies.generators.guidance); predict() then replaces its frozen rows exactly."""
        nobs = self.encoder.augment(self.normalize_obs(obs), train=False)
        cond = self._encode(nobs)
        b = cond.shape[0]
        ref = self.action_reference(obs)
        guide = None if prefix is None else self._inpaint(prefix, ref, b)
        shape = (b, self.horizon, self.action_dim)
        if self.cfg.prefix_rows:  # trained to continue a prefix: condition on its frozen rows, no guidance
            target, frozen = (None, 0) if guide is None else (guide.target, prefix.frozen)
            x = prefix_sample(
                self.generator, self.backbone, cond, shape, target, frozen, num_inference_steps, generator
            )
        else:
            x = self.generator.sample(self.backbone, cond, shape, num_inference_steps, generator, guide)
        actions = self.normalizer.unnormalize("action", x)
        return actions if ref is None else actions + ref

    def _cache(self) -> FrameFeatureCache | None:
        """The feature cache where it applies: inference (eval mode) on the CPU, an encoder with camera trunks."""
        cache = self.feature_cache
        if cache is None or self.training or not self.image_keys or not supports_cache(self.encoder):
            return None
        return cache if self.device.type == "cpu" else None

    def _encode(self, nobs: dict[str, torch.Tensor]) -> torch.Tensor:
        cache = self._cache()
        return self.encoder(nobs) if cache is None else cache.encode(self.encoder, nobs)

    def _inpaint(self, prefix: ChunkPrefix, ref: torch.Tensor | None, b: int) -> Inpaint:
        """The prefix as the generator's target: relative to the window's reference where configured, normalised."""
        rows, weights = np.asarray(prefix.rows, float), np.asarray(prefix.weights, float)
        if rows.shape != (self.horizon, self.action_dim) or weights.shape != (self.horizon,):
            raise ValueError(
                f"rtc prefix: rows {rows.shape} / weights {weights.shape} do not fit a chunk of "
                f"{self.horizon} x {self.action_dim}"
            )
        rows = np.where(weights[:, None] > 0, rows, 0.0)
        target = torch.as_tensor(rows, dtype=torch.float32, device=self.device)[None].expand(b, -1, -1)
        if ref is not None:
            target = target - ref
        return Inpaint(
            self.normalizer.normalize("action", target),
            torch.as_tensor(weights, dtype=torch.float32, device=self.device),
            prefix.max_guidance,
        )

    # ---- deploy contract ---------------------------------------------------------------------
    def obs_to_tensors(self, obs_window: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Check and convert one raw observation window into a batch of one."""
        out = {}
        dev = self.device
        for k in self.obs_keys:
            if k not in obs_window:
                raise KeyError(f"policy.predict: observation key {k!r} missing (have {sorted(obs_window)})")
            x = np.asarray(obs_window[k])
            want = (self.n_obs_steps, *self.shape_meta.obs_shapes[k])
            if x.shape != want:
                raise ValueError(
                    f"policy.predict: {k!r} has shape {x.shape}, expected {want} "
                    f"(n_obs_steps={self.n_obs_steps})"
                )
            if k in self.image_keys:
                t = self._image_tensor(x)
            else:
                t = torch.from_numpy(x.astype(np.float32)).to(dev)
            out[k] = t[None]
        return out

    def _image_tensor(self, frames: np.ndarray) -> torch.Tensor:
        """Camera frames [T, H, W, 3] uint8 -> [T, 3, H, W] float in [0, 1] (predict's and prepare's conversion).
        In numpy, one thread: torch splits a window's frames over its intra-op threads, and with another process on
        a core each such op waited up to 20 ms for its second thread (2 threads, bench_inference); the values are
        torch's bit for bit (IEEE division)."""
        x = np.asarray(frames).transpose(0, 3, 1, 2).astype(np.float32)
        return torch.from_numpy(np.divide(x, np.float32(255.0), out=x)).to(self.device)

    def prepare(self, obs_window: dict[str, np.ndarray]) -> int:
        """Encode camera frames ahead of the next chunk request; returns how many frames were not yet encoded.

        `obs_window`: every camera key, frames [N, H, W, 3] uint8 for any N >= 1 (the window predict() would get
        at this step, or only its newest frame); other keys are ignored. Call it once a step's frames have
        arrived, in the control period before a chunk is due: the chunk then encodes only the frames of its own
        step (feature_cache.py). Exact: predict() returns the same chunk with or without it. A no-op (0) where
        the cache does not apply (turned off, training mode, no cameras, off the CPU)."""
        cache = self._cache()
        if cache is None:
            return 0
        missing = [k for k in self.image_keys if k not in obs_window]
        if missing:
            raise KeyError(f"policy.prepare: camera keys {missing} missing (have {sorted(obs_window)})")
        images = {}
        for k in self.image_keys:
            x = np.asarray(obs_window[k])
            want = tuple(self.shape_meta.obs_shapes[k])
            if x.ndim != len(want) + 1 or x.shape[1:] != want or x.shape[0] < 1:
                raise ValueError(
                    f"policy.prepare: {k!r} has shape {x.shape}, expected (N, {', '.join(map(str, want))})"
                )
            images[k] = x
        with torch.inference_mode():
            frames = {k: self._image_tensor(x)[None] for k, x in images.items()}
            # the inference crop, as sample_actions applies it
            frames = self.encoder.augment(frames, train=False)
            return cache.encode_frames(self.encoder, {k: v[0] for k, v in frames.items()})

    def predict(
        self,
        obs_window: dict[str, np.ndarray],
        num_inference_steps: int | None = None,
        prefix: ChunkPrefix | None = None,
    ) -> np.ndarray:
        """Raw observation window -> [horizon, action_dim] absolute actions (numpy, float64).

        `prefix` (mimic.policies.realtime.continuation_prefix): the chunk continues the executing one, its frozen rows
        equal to the prefix's. Guided sampling takes gradients through the network, which inference mode forbids, so
        that path runs under no_grad with gradients enabled only inside the guidance.
        Deployed policies are already in eval mode; the mode is switched (and back) only when they are not,
        since walking the module tree twice costs ~0.25 ms a call on CPU, a tenth of a 1-step chunk."""
        if self.training:
            self.eval()
            try:
                return self.predict(obs_window, num_inference_steps, prefix)
            finally:
                self.train()
        if prefix is not None:
            obs = self.obs_to_tensors(obs_window)
            chunk = self.sample_actions(obs, num_inference_steps, self._rng, prefix)[0]
            return prefix.apply(chunk.double().cpu().numpy())
        with torch.inference_mode():
            obs = self.obs_to_tensors(obs_window)
            n = self.chunk_candidates
            if n == 1:
                return self.sample_actions(obs, num_inference_steps, self._rng)[0].double().cpu().numpy()
            acts = self.sample_actions(
                {k: v.expand(n, *v.shape[1:]) for k, v in obs.items()}, num_inference_steps, self._rng
            )
            chunk = acts[self._most_coherent(acts)]
        return chunk.double().cpu().numpy()

    def _most_coherent(self, candidates: torch.Tensor) -> int:
        """Index of the candidate chunk [N, H, A] whose rows best continue the last returned chunk.

        predict() is called every n_action_steps (receding horizon), so with [lo, hi) = executed_rows candidate
        row lo + i is the step the last chunk planned in its row hi + i, one of the rows it left unexecuted;
        distance is measured in normalised action units over those overlapping rows. The first call of an
        episode (after reset) keeps candidate 0."""
        lo, hi = self.executed_rows
        overlap = self.horizon - hi
        normed = self.normalizer.normalize("action", candidates)
        best = 0
        if self._last_chunk is not None and overlap > 0:
            prev = self._last_chunk[hi:]
            best = int(((normed[:, lo : lo + overlap] - prev) ** 2).sum((1, 2)).argmin())
        self._last_chunk = normed[best].clone()
        return best

    def reset(self) -> None:
        """Forget the last chunk (chunk_candidates > 1 continues it); sampling noise is not re-seeded."""
        self._last_chunk = None

    def seed(self, seed: int | None) -> None:
        """Make predict() reproducible (its own RNG) or, with None, use torch's global RNG again."""
        if seed is None:
            self._rng = None
            return
        self._rng = torch.Generator(device=self.device)
        self._rng.manual_seed(int(seed))
