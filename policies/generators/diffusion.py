"""Diffusion generators.

- `DDPMGenerator`: epsilon-prediction DDPM training (Diffusion Policy: 100 train steps, squared-cosine
  betas); sampling through diffusers' DDPMScheduler or DDIMScheduler with any number of steps.
- `EDMGenerator`: score-based EDM (Karras et al. 2022) as in BESO: preconditioned denoiser
  D(x, sigma) = c_skip x + c_out F(c_in x, c_noise), log-normal sigma training, deterministic Euler or
  Heun sampling on Karras sigmas, good at 3 to 10 steps. Also the teacher of the consistency policy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mimic.policies.config import GeneratorConfig
from mimic.policies.generators.base import Generator, Net, randn
from mimic.policies.generators.guidance import Inpaint, guided_denoise

NOISE_SCALE = 100.0  # c_noise = ln(sigma) / 4 spans ~[-1.6, 1.1]; scaled to the embedding's range


class DDPMGenerator(Generator):
    default_steps = 10

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__(cfg)
        from diffusers import DDIMScheduler, DDPMScheduler

        kw = dict(
            num_train_timesteps=cfg.num_train_timesteps,
            beta_schedule=cfg.beta_schedule,
            prediction_type=cfg.prediction_type,
            clip_sample=True,
        )
        self.train_scheduler = DDPMScheduler(**kw)
        if cfg.scheduler not in ("ddim", "ddpm"):
            raise ValueError(f"policy.gen.scheduler: {cfg.scheduler!r} is not ddim|ddpm")
        ab = self.train_scheduler.alphas_cumprod
        self.log_sigmas = 0.5 * ((1 - ab) / ab).log()  # ln sigma of each train timestep, increasing with t
        kw["timestep_spacing"] = cfg.timestep_spacing
        self.infer_scheduler = (
            DDIMScheduler(**kw, set_alpha_to_one=True) if cfg.scheduler == "ddim" else DDPMScheduler(**kw)
        )

    def timesteps(self, b: int, device: torch.device) -> torch.Tensor:
        """Training timestep indices: uniform (DDPM), or nearest to a log-normal sigma (time_sampling lognormal)."""
        c = self.cfg
        if c.time_sampling == "uniform":
            return torch.randint(0, c.num_train_timesteps, (b,), device=device)
        if c.time_sampling != "lognormal":
            raise ValueError(
                f"policy.gen.time_sampling: {c.time_sampling!r} is not uniform|lognormal for diffusion"
            )
        want = torch.randn(b, device=device) * c.p_std + c.p_mean
        return (self.log_sigmas.to(device)[None, :] - want[:, None]).abs().argmin(dim=1)

    def loss(self, net: Net, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(x0)
        t = self.timesteps(x0.shape[0], x0.device)
        xt = self.train_scheduler.add_noise(x0, noise, t)
        kind = self.cfg.prediction_type
        target = (
            noise
            if kind == "epsilon"
            else x0
            if kind == "sample"
            else self.train_scheduler.get_velocity(x0, noise, t)
        )
        return F.mse_loss(net(xt, t.float(), cond).float(), target.float())

    def sample(
        self,
        net: Net,
        cond: torch.Tensor,
        shape: tuple[int, ...],
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        guide: Inpaint | None = None,
    ) -> torch.Tensor:
        n = min(self.steps(num_inference_steps), self.cfg.num_train_timesteps)
        sched = self.infer_scheduler
        sched.set_timesteps(n, device=cond.device)
        if guide is not None and self.cfg.prediction_type != "epsilon":
            raise ValueError(
                f"rtc guidance: a diffusion policy must predict epsilon, not {self.cfg.prediction_type!r}"
            )
        x = randn(shape, cond, generator)
        for t in sched.timesteps:
            tb = t.float().expand(shape[0]).to(cond.device)
            if guide is None:
                out = net(x, tb, cond)
            else:
                out = self._guided_epsilon(net, x, t, tb, cond, guide)
            x = sched.step(out, t, x, generator=generator).prev_sample
        return x

    def _guided_epsilon(
        self, net: Net, x: torch.Tensor, t: torch.Tensor, tb: torch.Tensor, cond: torch.Tensor, guide: Inpaint
    ) -> torch.Tensor:
        """The epsilon whose clean estimate is the guided one: x = sqrt(ab) (x0 + sigma eps), sigma^2 = (1 - ab) / ab,
        so the step runs on EDM's scale x / sqrt(ab) and the guided x0 is turned back into an epsilon."""
        ab = self.infer_scheduler.alphas_cumprod[int(t)].to(x)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        x0 = guided_denoise(lambda xe: (xe * a - s * net(xe * a, tb, cond)) / a, x / a, float(s / a), guide)
        return (x - a * x0) / s


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float, device=None) -> torch.Tensor:
    """n sigmas from sigma_max down to sigma_min, spaced uniformly in sigma^(1/rho)."""
    if n == 1:
        return torch.tensor([sigma_max], device=device)
    ramp = torch.linspace(0, 1, n, device=device)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


class EDMGenerator(Generator):
    default_steps = 3

    def denoise(self, net: Net, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """D(x, sigma) with EDM preconditioning; sigma [B]."""
        sd = self.cfg.sigma_data
        s = sigma[:, None, None]
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4 * NOISE_SCALE
        return c_skip * x + c_out * net(c_in * x, c_noise, cond)

    def loss(self, net: Net, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        sigma = (torch.randn(x0.shape[0], device=x0.device) * c.p_std + c.p_mean).exp()
        weight = (sigma**2 + c.sigma_data**2) / (sigma * c.sigma_data) ** 2
        x = x0 + sigma[:, None, None] * torch.randn_like(x0)
        err = (self.denoise(net, x, sigma, cond).float() - x0.float()) ** 2
        return (weight[:, None, None] * err).mean()

    def sample(
        self,
        net: Net,
        cond: torch.Tensor,
        shape: tuple[int, ...],
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        guide: Inpaint | None = None,
    ) -> torch.Tensor:
        c, n = self.cfg, self.steps(num_inference_steps)
        sigmas = karras_sigmas(n, c.sigma_min, c.sigma_max, c.rho, cond.device)
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
        x = randn(shape, cond, generator) * sigmas[0]
        b = shape[0]

        def denoised(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            if guide is None:
                return self.denoise(net, x, s.expand(b), cond)
            return guided_denoise(lambda xx: self.denoise(net, xx, s.expand(b), cond), x, float(s), guide)

        for i in range(n):
            s, s_next = sigmas[i], sigmas[i + 1]
            d = (x - denoised(x, s)) / s
            x_next = x + (s_next - s) * d
            if c.sampler == "heun" and s_next > 0:
                d2 = (x_next - denoised(x_next, s_next)) / s_next
                x_next = x + (s_next - s) * 0.5 * (d + d2)
            x = x_next
        return x
