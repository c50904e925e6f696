"""Policy and training configuration: dataclasses, YAML in/out, `--set a.b=value` overrides.

One nested dataclass tree is the single source of truth: the YAML file a user writes, the overrides on
the command line, and the config stored inside a checkpoint all go through `from_dict`/`to_dict`, and
unknown keys are an error naming the key (a typo must not silently train the default).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GENERATORS = ("diffusion", "edm", "flow", "consistency")
BACKBONES = ("unet", "transformer")
ACTION_REPRS = ("joint", "tcp_position", "eef_relative")  # mimic.policies.processors
TIME_SAMPLINGS = {"flow": ("uniform", "logit_normal", "lognormal"), "diffusion": ("uniform", "lognormal")}
FLOW_SCHEDULES = ("uniform", "karras")
ODE_SOLVERS = ("euler", "heun")  # gen.sampler (edm, flow) and gen.cd_solver (the consistency teacher's ODE)
TIMESTEP_SPACINGS = ("leading", "trailing")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")  # what the DDPM network predicts (diffusers' names)
CD_PARAMS = ("edm", "flow")  # a consistency student's parameterisation, which is also its teacher's generator
PREFIX_GENERATORS = ("flow", "consistency")  # those that can learn to continue a prefix (policy.prefix_rows)


class ConfigError(ValueError):
    """A config file or override that names an unknown field or holds a value of the wrong type."""


@dataclass
class UnetConfig:
    """1D temporal Conv UNet (diffusion_policy's ConditionalUnet1D): FiLM from time + observation features."""

    down_dims: list[int] = field(default_factory=lambda: [64, 128, 256])
    kernel_size: int = 5
    n_groups: int = 8
    time_embed_dim: int = 128


@dataclass
class TransformerConfig:
    """Action tokens self-attend and cross-attend to [time, obs step 1..n] tokens (non-causal)."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    dropout: float = 0.1


@dataclass
class ImageEncoderConfig:
    """ResNet-18-style trunk (widths w, 2w, 4w, 8w; two BasicBlocks per stage), GroupNorm, one per camera."""

    width: int = 32
    feature_dim: int = 64
    pooling: str = "spatial_softmax"  # or "avg"
    num_keypoints: int = 32
    crop_ratio: float = 0.9  # random crop while training, centre crop at inference; 1.0 disables


@dataclass
class GeneratorConfig:
    """Knobs of all generators; each reads its own. Sigmas are in normalised action units ([-1, 1])."""

    num_inference_steps: int = 0  # default for predict(); 0: the generator's own default
    # diffusion (DDPM training, DDPM/DDIM sampling via diffusers)
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    scheduler: str = "ddim"  # ddim | ddpm
    # Which of the num_train_timesteps a K-step sampler visits (diffusers' names). "leading" (diffusers' default,
    # 90, 80, .., 0 at K = 10) starts from pure noise at a timestep whose x_t still holds 0.14 x0 (alpha_bar
    # 0.02 on the squared-cosine schedule); "trailing" (99, 89, .., 9) starts where x_t is noise alone (Lin et
    # al. 2024, "Common diffusion noise schedules and sample steps are flawed").
    timestep_spacing: str = "leading"  # leading | trailing
    # edm / consistency (Karras et al. 2022 preconditioning; BESO; Consistency Policy)
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2
    sampler: str = "euler"  # edm and flow: euler | heun
    # How training draws noise levels, for flow and DDPM. "uniform": the published recipes (flow t ~ U(0, 1);
    # DDPM timestep index uniform, which puts half of the draws above sigma 1 on the squared-cosine schedule).
    # "logit_normal": flow only, logit(t) ~ N(0, 1) (SD3). "lognormal": ln sigma ~ N(p_mean, p_std), EDM's
    # distribution, where the noise level sigma of flow's x_t is t / (1 - t) and DDPM's is
    # sqrt((1 - alpha_bar) / alpha_bar) at the nearest timestep: most draws in sigma 0.03-1, where a chunk's
    # last centimetres are decided.
    time_sampling: str = "uniform"  # uniform | logit_normal | lognormal
    # Flow's sampling grid (inference only): "uniform" t steps from 1 to 0, or "karras": EDM's sigma grid
    # (sigma_max .. sigma_min, rho) at t = sigma / (1 + sigma), so the steps fall where lognormal training put
    # the network's practice instead of four of ten at sigma > 2.
    schedule: str = "uniform"  # uniform | karras
    # consistency distillation
    teacher: str = (
        ""  # checkpoint directory of an edm or flow policy (required for consistency; see cd_param)
    )
    # The student's parameterisation, which is its teacher's: "edm", Karras preconditioning around the raw net
    # (an edm teacher); "flow", f(x, sigma) = x_t - t v(x_t, t) at t = sigma / (1 + sigma), x_t = x / (1 + sigma)
    # (a flow teacher: rectified flow's ODE is EDM's probability-flow ODE in those coordinates, so the same
    # distillation applies). Either way the student starts from its teacher's weights in the teacher's own
    # parameterisation, where its 1-step map starts as the teacher's 1-step Euler sample. (An edm student started
    # from a flow teacher's weights stays far behind at CPU budgets, so a student takes its teacher's.)
    cd_param: str = "edm"  # edm | flow
    cd_bins: int = 18  # Karras discretisation N of the teacher's ODE
    cd_solver: str = "heun"  # teacher ODE step: euler | heun
    cd_huber_c: float = 0.0  # pseudo-Huber constant; 0 -> squared error
    # What f(x_sigma, sigma) is trained towards: "self", the student's own f one teacher ODE step lower (consistency
    # distillation, Song et al. 2023); "ode", the teacher's whole ODE solved from x_sigma to the data in
    # cd_ode_steps Euler steps (the endpoint every consistency function must return; Luhman & Luhman 2021's
    # distillation at every sigma). "ode" has no bootstrap to drift, and one noise maps to one of the
    # teacher's modes, never their mean.
    cd_target: str = "self"
    cd_ode_steps: int = 5
    # Share of each "ode" batch that starts at sigma_max, where a 1-step sample does; the rest are spread over
    # the Karras bins that 2-3 step sampling re-noises to. 1.0 trains the 1-step map alone.
    cd_sigma_max_frac: float = 0.5
    # Weight, in the distillation error (and the DSM anchor's), of the chunk rows a rollout never executes (all
    # but rows n_obs_steps - 1 .. + n_action_steps; weights renormalised to mean 1). 1.0: every row alike. 0.0
    # spends the 1-step map on the rows that move the arm.
    cd_unexecuted_weight: float = 1.0
    cd_dsm_weight: float = (
        0.0  # weight of the denoising (DSM) anchor ||f(x_sigma, sigma) - x0||^2 beside the CD loss
    )
    # > 0: the anchor's weight falls off above this sigma, as 1 / (1 + (sigma / cd_dsm_sigma)^2). At high noise
    # the denoising target E[x0 | x_sigma] is the mean of the data's modes, which is exactly what a 1-step
    # sample must not return where demonstrations go either way round (push_t); 0: the same weight at every sigma.
    cd_dsm_sigma: float = 0.0
    # > 0 (cd_target "ode"): the teacher's endpoints for cd_pool noises per train window, drawn as each batch draws
    # them, are computed once before training (mimic.workflows.distill_pool) and every step draws one of them per window
    # instead of running the teacher: on CPU a step then costs the student's pass alone (push_t: 10.4 against 2.7
    # steps/s on one core), and the student scores what online distillation does at the same budget.
    # 0: the teacher runs on every batch. cd_pool_file: where the pool is kept (default
    # <run_dir>/teacher_targets.safetensors); runs with the same teacher, store and draw reuse one file.
    cd_pool: int = 0
    cd_pool_file: str = ""


@dataclass
class PolicyConfig:
    obs_keys: list[str] = field(
        default_factory=lambda: ["robot0_joint_pos", "robot0_gripper_width", "object_state"]
    )
    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    generator: str = "flow"
    backbone: str = "unet"
    lowdim_norm: str = "minmax"
    # Predict the first dims of the action relative to this observation key at the newest step (e.g.
    # robot0_joint_pos: joint deltas, gripper absolute); predict() still returns absolute actions. "" = absolute.
    action_relative_to: str = ""
    # Observation dims that are angles wrapping at +/-pi, as "key:dim" (push_t's block yaw: "object_state:2").
    # Each is fed as (cos, sin), so a block turning through pi is a small step for the network, not a jump
    # from +1 to -1 in the normalised input (39 of 200 push_t demonstrations cross it).
    angle_obs: list[str] = field(default_factory=list)
    # What a chunk row holds (the action space's processor, mimic.policies.processors): "joint" targets
    # [q, gripper] (the dataset's action); "tcp_position" [tcp xyz, gripper] by forward kinematics, turned back
    # into joints by IK at inference; "eef_relative" TCP poses and observations relative to the newest TCP pose
    # (handheld, UMI-style stores), decoded to absolute TCP poses for an end-effector controller.
    action_repr: str = "joint"
    # eef_relative: the rotation encoding of relative poses (mimic.data.relative.ROTATIONS).
    eef_rotation: str = "rot6d"
    # Inference only (a checkpoint's value can be overridden at deploy/eval): sample this many chunks per call
    # and keep the one whose rows best continue the previous chunk's unexecuted rows (the backward coherence
    # of Bidirectional Decoding, Liu et al. 2024). Where the data hold two ways of doing the same thing (push_t's
    # either-way-round pushes), independent chunks can alternate between them and the arm dithers; a chunk
    # chosen to continue the last one keeps the way it started. 1: one sample, no memory between calls.
    chunk_candidates: int = 1
    # Training-time real-time chunking (flow or consistency, unet): each training chunk gives the network its
    # first 0..prefix_rows rows clean, marked by a mask channel, and the loss covers the rest; `rtc` then
    # conditions on the executing chunk's frozen rows instead of guiding towards them
    # (mimic.policies.generators.prefix). A consistency student learns it from a prefix-conditioned flow teacher
    # with at least as many prefix rows. 0: off (rtc guides, training-free).
    prefix_rows: int = 0
    unet: UnetConfig = field(default_factory=UnetConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    gen: GeneratorConfig = field(default_factory=GeneratorConfig)

    def angle_dims(self) -> dict[str, list[int]]:
        """`angle_obs` parsed: {obs key: [dims]}; ConfigError for an item that is not 'key:dim' of obs_keys."""
        dims: dict[str, list[int]] = {}
        for item in self.angle_obs:
            key, _, dim = item.rpartition(":")
            if key not in self.obs_keys or not dim.isdigit():
                raise ConfigError(
                    f"policy.angle_obs: {item!r} is not 'key:dim' with key one of obs_keys {self.obs_keys}"
                )
            dims.setdefault(key, []).append(int(dim))
        return dims

    def validate(self) -> None:
        if self.generator not in GENERATORS:
            raise ConfigError(f"policy.generator: {self.generator!r} is not one of {GENERATORS}")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"policy.backbone: {self.backbone!r} is not one of {BACKBONES}")
        if not 1 <= self.n_obs_steps <= self.horizon:
            raise ConfigError(
                f"policy: need 1 <= n_obs_steps ({self.n_obs_steps}) <= horizon ({self.horizon})"
            )
        if not 1 <= self.n_action_steps <= self.horizon - self.n_obs_steps + 1:
            raise ConfigError(
                f"policy.n_action_steps: {self.n_action_steps} must be in 1.."
                f"{self.horizon - self.n_obs_steps + 1} (horizon - n_obs_steps + 1)"
            )
        if not self.unet.down_dims or any(d < 1 for d in self.unet.down_dims):
            raise ConfigError(
                f"policy.unet.down_dims: {self.unet.down_dims} must be one or more positive widths"
            )
        if self.backbone == "unet" and self.horizon % (2 ** (len(self.unet.down_dims) - 1)):
            raise ConfigError(
                f"policy.horizon: {self.horizon} must be divisible by "
                f"{2 ** (len(self.unet.down_dims) - 1)} for a UNet with {len(self.unet.down_dims)} levels"
            )
        if self.generator == "consistency" and not self.gen.teacher:
            raise ConfigError(
                "policy.gen.teacher: a consistency policy needs the checkpoint of an edm or flow teacher"
            )
        if self.generator == "consistency" and self.gen.cd_param not in CD_PARAMS:
            raise ConfigError(f"policy.gen.cd_param: {self.gen.cd_param!r} is not one of {CD_PARAMS}")
        if self.gen.time_sampling not in TIME_SAMPLINGS.get(self.generator, (self.gen.time_sampling,)):
            raise ConfigError(
                f"policy.gen.time_sampling: {self.gen.time_sampling!r} is not one of "
                f"{TIME_SAMPLINGS[self.generator]} for generator {self.generator}"
            )
        for name in ("sampler", "cd_solver"):  # anything else used to run as Euler without a word
            if getattr(self.gen, name) not in ODE_SOLVERS:
                raise ConfigError(
                    f"policy.gen.{name}: {getattr(self.gen, name)!r} is not one of {ODE_SOLVERS}"
                )
        if self.generator == "flow" and self.gen.schedule not in FLOW_SCHEDULES:
            raise ConfigError(f"policy.gen.schedule: {self.gen.schedule!r} is not one of {FLOW_SCHEDULES}")
        if self.generator == "diffusion" and self.gen.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ConfigError(
                f"policy.gen.timestep_spacing: {self.gen.timestep_spacing!r} is not one of "
                f"{TIMESTEP_SPACINGS}"
            )
        if self.generator == "diffusion" and self.gen.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                f"policy.gen.prediction_type: {self.gen.prediction_type!r} is not one of {PREDICTION_TYPES}"
            )
        if not 0.0 <= self.gen.cd_sigma_max_frac <= 1.0:
            raise ConfigError(f"policy.gen.cd_sigma_max_frac: {self.gen.cd_sigma_max_frac} is not in [0, 1]")
        if not 0.0 <= self.gen.cd_unexecuted_weight <= 1.0:
            raise ConfigError(
                f"policy.gen.cd_unexecuted_weight: {self.gen.cd_unexecuted_weight} is not in [0, 1]"
            )
        if self.gen.cd_pool < 0 or (
            self.gen.cd_pool and (self.generator, self.gen.cd_target) != ("consistency", "ode")
        ):
            raise ConfigError(
                f"policy.gen.cd_pool: {self.gen.cd_pool} must be 0, or > 0 for a consistency policy with "
                "cd_target ode (precomputed teacher endpoints)"
            )
        if not self.obs_keys:
            raise ConfigError("policy.obs_keys: at least one observation key is required")
        self.angle_dims()
        if not 0 <= self.prefix_rows < self.horizon:
            raise ConfigError(f"policy.prefix_rows: {self.prefix_rows} must be in 0..{self.horizon - 1}")
        if self.prefix_rows and (self.generator not in PREFIX_GENERATORS or self.backbone != "unet"):
            raise ConfigError(
                f"policy.prefix_rows: prefix conditioning is built for flow or consistency + unet, not "
                f"{self.generator} + {self.backbone}"
            )
        if self.prefix_rows and self.generator == "consistency" and self.gen.cd_param != "flow":
            raise ConfigError(
                "policy.prefix_rows: a prefix-conditioned consistency student distils a prefix-conditioned flow "
                f"teacher (gen.cd_param flow), not {self.gen.cd_param!r}"
            )
        if self.prefix_rows and self.gen.cd_pool:
            raise ConfigError(
                "policy.prefix_rows: gen.cd_pool holds endpoints the teacher computed without a prefix; "
                "distil a prefix-conditioned student online (cd_pool: 0)"
            )
        if self.chunk_candidates < 1:
            raise ConfigError(f"policy.chunk_candidates: must be >= 1, got {self.chunk_candidates}")
        if self.action_repr not in ACTION_REPRS:
            raise ConfigError(f"policy.action_repr: {self.action_repr!r} is not one of {ACTION_REPRS}")
        if self.action_repr != "joint" and self.action_relative_to:
            raise ConfigError("policy.action_relative_to: only for action_repr 'joint' (joint deltas)")
        if self.action_relative_to and self.action_relative_to not in self.obs_keys:
            raise ConfigError(
                f"policy.action_relative_to: {self.action_relative_to!r} is not one of obs_keys "
                f"{self.obs_keys}"
            )


@dataclass
class RecordConfig:
    """`mimic record CFG`: the dataset from a twin's scripted expert (arm "handheld": scripted handheld demos
    with an object tracker stream, for eef_relative policies)."""

    arm: str = "franka"
    task: str = "pick_place"
    episodes: int = 0
    seed: int = 0
    cameras: list[str] = field(default_factory=list)
    image_size: list[int] = field(default_factory=lambda: [96, 96])
    hold_steps: int = (
        0  # expert steps recorded after success (mimic.workflows.record_expert), as the teleop operator does
    )
    action_noise: float = 0.0  # rad: DART noise on the executed joint targets, clean targets recorded (mimic.workflows.record_expert)
    regrasp_fraction: float = 0.0  # pick_place: share of episodes showing a missed grasp and the regrasp (mimic.workflows.record_expert)
    approach_error_m: float = (
        0.0  # handheld_bimanual: hands hover beside the cube by up to this and correct on the way down
    )

    def validate(self) -> None:
        """The fields a recording reads before its first rollout, checked here so that a bad image size or
        hold count is a one-line error naming the field rather than a failure deep in the twin or the writer."""
        size = self.image_size
        if len(size) != 2 or any(v < 1 for v in size):
            raise ConfigError(f"record.image_size: {size} is not [H, W] with both >= 1")
        if self.hold_steps < 0:
            raise ConfigError(f"record.hold_steps: {self.hold_steps} is outside [0, inf]")


@dataclass
class DaggerConfig:
    """`mimic dagger CFG`: build `dataset` as `demos` plus expert branches from the states `policy` reaches
    (mimic.workflows.dagger): one DAgger round. The next round names this round's dataset and checkpoint."""

    policy: str = ""  # checkpoint of the policy to roll out ("": this config's dataset is recorded or given)
    demos: str = ""  # the store `policy` was trained on; the branches are merged onto it
    rollouts: int = 80
    seed: int = 50_000  # rollout seeds seed, seed+1, ...: neither demo (0+) nor evaluation (100000+) scenes
    branch_every: int = 16
    workers: int = 1  # rollout processes (forked, one torch thread each)


@dataclass
class EvalConfig:
    """Periodic twin rollouts during training (0 episodes disables them)."""

    arm: str = "franka"
    task: str = "pick_place"
    episodes: int = 0
    every: int = 0  # steps; 0 -> only at the end
    seed: int = 100_000  # far from recording seeds so rollouts are held-out scenes


@dataclass
class DataConfig:
    """How training reads its windows. In RAM (the default) loads every key once: fastest, and what small local
    stores use. Streaming (mimic.policies.streaming) keeps lowdim keys in RAM but reads image frames on
    demand through an LRU of decoded chunks (`cache_mb`) and, with `cache_dir`, a local on-disk cache of
    decoded chunks, so a store larger than the machine's memory (or a remote one) trains; under torchrun each
    rank then reads only its own episodes (rank r: train episodes r, r + world, ...)."""

    streaming: bool = False
    cache_mb: int = 512  # decoded-chunk LRU per process and split
    cache_dir: str = ""  # local directory for decoded chunks ("": none); one per node on a cluster


@dataclass
class TrainConfig:
    dataset: str = ""
    run_dir: str = "runs/policy"
    seed: int = 0
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    warmup_steps: int = 100
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    bf16: bool = False
    threads: int = 0  # torch intra-op threads per process; 0 leaves torch's default
    val_ratio: float = 0.05
    val_every: int = 250
    ckpt_every: int = 500
    log_every: int = 50
    device: str = "cpu"
    resume: bool = True  # continue from <run_dir>/train_state when it exists
    # Fine-tuning: a checkpoint whose EMA weights and normaliser start this run, with a fresh optimiser and lr
    # schedule (e.g. a trained policy continued on a DAgger-grown dataset). Its normaliser is kept, not refit,
    # because the weights only mean something in the space they were trained in. "": train from scratch.
    # A consistency student may continue from its own checkpoint too (distillation on a grown store); it still
    # needs its teacher (policy.gen.teacher), whose normaliser that checkpoint must share.
    init_from: str = ""
    grad_clip: float = 1.0
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    dagger: DaggerConfig = field(default_factory=DaggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> None:
        self.policy.validate()
        self.record.validate()
        if not self.dataset:
            raise ConfigError("dataset: path of the training store is required")
        if self.dagger.policy and (not self.dagger.demos or self.record.episodes > 0):
            raise ConfigError(
                "dagger: needs dagger.demos (the store dagger.policy was trained on) and no "
                "record.episodes (the dataset is built from those, not recorded)"
            )
        check_ranges(self, TRAIN_RANGES)
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ConfigError(f"device: {self.device!r} is not cpu, cuda or cuda:<index>")


# Every numeric field a run reads, with its range: (field path, low, high, low inclusive, high inclusive).
TRAIN_RANGES: tuple[tuple[str, float, float, bool, bool], ...] = (
    ("steps", 1, math.inf, True, True),
    ("batch_size", 1, math.inf, True, True),
    ("lr", 0, math.inf, False, True),
    ("weight_decay", 0, math.inf, True, True),
    ("warmup_steps", 0, math.inf, True, True),
    ("ema_power", 0, math.inf, False, True),
    ("ema_max_decay", 0, 1, True, False),
    ("threads", 0, math.inf, True, True),
    ("val_ratio", 0, 1, True, False),
    ("val_every", 1, math.inf, True, True),
    ("ckpt_every", 1, math.inf, True, True),
    ("log_every", 1, math.inf, True, True),
    ("grad_clip", 0, math.inf, True, True),
    ("data.cache_mb", 1, math.inf, True, True),
    ("policy.gen.num_inference_steps", 0, math.inf, True, True),
    ("policy.unet.kernel_size", 1, math.inf, True, True),
    ("policy.unet.n_groups", 1, math.inf, True, True),
    ("policy.unet.time_embed_dim", 1, math.inf, True, True),
    ("record.episodes", 0, math.inf, True, True),
    ("record.hold_steps", 0, math.inf, True, True),
    ("dagger.rollouts", 1, math.inf, True, True),
    ("dagger.branch_every", 1, math.inf, True, True),
    ("dagger.workers", 1, math.inf, True, True),
    ("eval.episodes", 0, math.inf, True, True),
    ("eval.every", 0, math.inf, True, True),
)


def check_ranges(cfg: Any, ranges: tuple[tuple[str, float, float, bool, bool], ...]) -> None:
    """ConfigError naming the first field (dotted path) whose value is outside its range."""
    for path, low, high, low_in, high_in in ranges:
        value: Any = cfg
        for part in path.split("."):
            value = getattr(value, part)
        ok_low = value >= low if low_in else value > low
        ok_high = value <= high if high_in else value < high
        if not (ok_low and ok_high) or (isinstance(value, float) and not math.isfinite(value)):
            lo, hi = ("[" if low_in else "(") + f"{low:g}", f"{high:g}" + ("]" if high_in else ")")
            raise ConfigError(f"{path}: {value} is outside {lo}, {hi}")


# ---- dict / YAML ------------------------------------------------------------------------------------
def _convert(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {tp.__name__}") from None
    return value


def from_dict(cls: type, d: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys raise ConfigError naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown field(s) {unknown} (known: {sorted(names)})")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in d.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`a.b.c=value` strings into the nested dict (values parsed as YAML scalars/lists)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        node = d
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p!r} is not a section")
        node[parts[-1]] = _override_value(item, raw)
    return d


def _override_value(item: str, raw: str) -> Any:
    """A `--set` value parsed as YAML, so that lists and numbers keep their types; a value YAML cannot parse is
    the user's typo, reported against the `--set` it came from rather than as a parser traceback."""
    if not raw:
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: not a valid YAML value ({str(e).splitlines()[0]})") from None


def read_config_mapping(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A YAML config file's top-level mapping with `key=value` overrides applied; one-line ConfigErrors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text, so not a YAML config (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return apply_overrides(d, overrides or [])


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """YAML file (or defaults when path is None) + overrides -> validated TrainConfig."""
    d = read_config_mapping(path, overrides) if path is not None else apply_overrides({}, overrides or [])
    cfg = from_dict(TrainConfig, d)
    cfg.validate()
    return cfg


def policy_config_from_dict(d: dict[str, Any]) -> PolicyConfig:
    cfg = from_dict(PolicyConfig, d, "policy")
    cfg.validate()
    return cfg
