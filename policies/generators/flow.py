"""Flow matching (rectified flow, as in pi0): straight paths x_t = (1 - t) x0 + t z, learn v = z - x0.

Sampling integrates dx/dt = v from t = 1 (noise) to t = 0 with K Euler or Heun steps; at one Euler
step the chunk is one network call, which is what makes flow the cheap generator on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mimic.policies.generators.base import Generator, Net, randn
from mimic.policies.generators.diffusion import karras_sigmas
from mimic.policies.generators.guidance import Inpaint, estimate_and_pull, guidance_weight

TIME_SCALE = 100.0  # the backbone's sinusoidal embedding is tuned for times ~0..100


def flow_denoise(net: Net, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """x0 estimate from x = x0 + sigma z (EDM's scale; sigma [B]) with a velocity network.

    The flow path at t = sigma / (1 + sigma) is x_t = (1 - t) x0 + t z = x / (1 + sigma), and x0 = x_t - t v: so
    a flow policy is an EDM denoiser too, which is what lets it teach a consistency student."""
    t = sigma / (1 + sigma)
    xt = x / (1 + sigma)[:, None, None]
    return xt - t[:, None, None] * net(xt, t * TIME_SCALE, cond)


class FlowGenerator(Generator):
    default_steps = 10

    def denoise(self, net: Net, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """D(x, sigma) as EDMGenerator.denoise has it (flow_denoise)."""
        return flow_denoise(net, x, sigma, cond)

    def _time(self, b: int, like: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if c.time_sampling == "logit_normal":
            return torch.sigmoid(torch.randn(b, device=like.device))
        if (
            c.time_sampling == "lognormal"
        ):  # x_t / (1 - t) = x0 + sigma z with sigma = t / (1 - t): logit t = ln sigma
            return torch.sigmoid(torch.randn(b, device=like.device) * c.p_std + c.p_mean)
        if c.time_sampling != "uniform":
            raise ValueError(
                f"policy.gen.time_sampling: {c.time_sampling!r} is not uniform|logit_normal|lognormal"
            )
        return torch.rand(b, device=like.device)

    def grid(self, n: int, device: torch.device) -> torch.Tensor:
        """n + 1 times from noise to t = 0 (see GeneratorConfig.schedule)."""
        c = self.cfg
        if c.schedule == "karras":
            sigmas = karras_sigmas(n, c.sigma_min, c.sigma_max, c.rho, device)
            return torch.cat([sigmas / (1 + sigmas), sigmas.new_zeros(1)])
        if c.schedule != "uniform":
            raise ValueError(f"policy.gen.schedule: {c.schedule!r} is not uniform|karras")
        return torch.linspace(1.0, 0.0, n + 1, device=device)

    def loss(self, net: Net, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        t = self._time(x0.shape[0], x0)
        z = torch.randn_like(x0)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * z
        return F.mse_loss(net(xt, t * TIME_SCALE, cond).float(), (z - x0).float())

    def sample(
        self,
        net: Net,
        cond: torch.Tensor,
        shape: tuple[int, ...],
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        guide: Inpaint | None = None,
    ) -> torch.Tensor:
        n = self.steps(num_inference_steps)
        ts = self.grid(n, cond.device)
        x = (
            randn(shape, cond, generator) * ts[0]
        )  # x_t at t < 1 drops (1 - t) x0, as EDM starts at sigma_max z
        heun = self.cfg.sampler == "heun"

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            tb = t.expand(shape[0]) * TIME_SCALE
            if guide is None:
                return net(x, tb, cond)
            # x0 = x_t - t v; the guided velocity is v - c * J^T W (Y - x0) (guidance.py has the derivation)
            x0, pull = estimate_and_pull(lambda xx: xx - t * net(xx, tb, cond), x, guide)
            return (x - x0) / t - guidance_weight(float(t), guide.max_guidance) * pull

        for i in range(n):
            t, t_next = ts[i], ts[i + 1]
            v = velocity(x, t)
            if heun and i < n - 1:  # Heun's corrector on all but the last step (as EDM): 2 calls per step
                x_pred = x + (t_next - t) * v
                v = 0.5 * (v + velocity(x_pred, t_next))
            x = x + (t_next - t) * v
        return x
