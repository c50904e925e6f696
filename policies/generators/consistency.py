"""Consistency policy: a one-to-three-step student distilled from an EDM or flow teacher (Consistency Policy).

Consistency distillation (Song et al. 2023): on the teacher's Karras discretisation sigma_0 < ... < sigma_N,
take x at sigma_{n+1}, run one teacher ODE step (Heun or Euler) down to sigma_n, and train the student
f(x, sigma) so that f(x_{n+1}, sigma_{n+1}) == stopgrad f(x_n, sigma_n). The boundary condition
f(x, sigma_min) = x is built into the parameterisation (c_skip -> 1, c_out -> 0), so every sigma maps
to the clean chunk; sampling is one call at sigma_max, optionally refined by re-noising to lower sigmas.
The student starts from the teacher's weights; its c_in / c_noise match the teacher's EDM ones. A flow teacher
(`gen.cd_param: flow`) is the same ODE in other coordinates (flow.flow_denoise); its student keeps flow's
parameterisation, f(x, sigma) = flow_denoise(...), so at initialisation its one step is the teacher's one
Euler step, and the boundary f(x, sigma_min) = x holds to O(sigma_min).

With the online student as its own target (mu = 0) and few CPU steps, the consistency term alone drifts:
measured on pick_place, a teacher-initialised student fell from 45% to 15% success at 1 step after 2500
distillation steps (action MSE 0.0055 -> 0.013). `cd_dsm_weight` adds the denoising loss
||f(x_sigma, sigma) - x0||^2 of CTM / Consistency Policy, which anchors every sigma to the data.
At high sigma that anchor's minimiser is E[x0 | x_sigma], the mean of the data's modes; `cd_dsm_sigma`
confines it to the low-noise end, leaving the high-noise jumps to the consistency term (which follows the
teacher's ODE to one mode).
"""

from __future__ import annotations

import torch

from mimic.policies.generators.base import Generator, Net, randn
from mimic.policies.generators.diffusion import NOISE_SCALE, EDMGenerator, karras_sigmas
from mimic.policies.generators.flow import FlowGenerator, flow_denoise
from mimic.policies.generators.guidance import Inpaint, guided_denoise

Teacher = EDMGenerator | FlowGenerator  # anything with denoise(net, x, sigma, cond) on EDM's scale


class ConsistencyGenerator(Generator):
    default_steps = 1
    executed_rows: tuple[int, int] | None = (
        None  # [lo, hi) of the chunk a rollout executes; set by the Policy
    )

    def consistency_fn(
        self, net: Net, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        c = self.cfg
        if c.cd_param == "flow":
            return flow_denoise(net, x, sigma, cond)
        if c.cd_param != "edm":
            raise ValueError(f"policy.gen.cd_param: {c.cd_param!r} is not edm|flow")
        sd, s = c.sigma_data, sigma[:, None, None]
        c_skip = sd**2 / ((s - c.sigma_min) ** 2 + sd**2)
        c_out = (s - c.sigma_min) * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        return c_skip * x + c_out * net(c_in * x, sigma.log() / 4 * NOISE_SCALE, cond)

    def distill_loss(
        self,
        net: Net,
        x0: torch.Tensor,
        cond: torch.Tensor,
        teacher: Teacher,
        teacher_net: Net,
        teacher_cond: torch.Tensor,
        row_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The distillation loss of one batch; `row_weights` [B, H] (prefix.py: 0 on a given prefix's rows) scales
        each row's error on top of cd_unexecuted_weight."""
        c = self.cfg
        if c.cd_target == "ode":
            return self._ode_loss(net, x0, cond, teacher, teacher_net, teacher_cond, row_weights)
        if c.cd_target != "self":
            raise ValueError(f"policy.gen.cd_target: {c.cd_target!r} is not self|ode")
        b = x0.shape[0]
        sigmas = karras_sigmas(c.cd_bins + 1, c.sigma_min, c.sigma_max, c.rho, x0.device).flip(0)  # ascending
        n = torch.randint(0, c.cd_bins, (b,), device=x0.device)
        s_lo, s_hi = sigmas[n], sigmas[n + 1]
        x_hi = x0 + s_hi[:, None, None] * torch.randn_like(x0)
        with torch.no_grad():
            d_hi = (x_hi - teacher.denoise(teacher_net, x_hi, s_hi, teacher_cond)) / s_hi[:, None, None]
            dt = (s_lo - s_hi)[:, None, None]
            x_lo = x_hi + dt * d_hi
            if c.cd_solver == "heun":
                d_lo = (x_lo - teacher.denoise(teacher_net, x_lo, s_lo, teacher_cond)) / s_lo[:, None, None]
                x_lo = x_hi + dt * 0.5 * (d_hi + d_lo)
            target = self.consistency_fn(net, x_lo, s_lo, cond)  # stop-gradient target (mu = 0, as in iCT)
        pred = self.consistency_fn(net, x_hi, s_hi, cond)
        loss = self._distance(pred, target, row_weights)
        if c.cd_dsm_weight > 0:  # anchor f(x, sigma) to the data itself, as CTM / Consistency Policy do
            dsm = self._row_weighted((pred.float() - x0.float()) ** 2, row_weights).flatten(1).mean(1)
            if c.cd_dsm_sigma > 0:  # only where x_sigma still tells the modes apart (config.py: cd_dsm_sigma)
                dsm = dsm / (1 + (s_hi.float() / c.cd_dsm_sigma) ** 2)
            loss = loss + c.cd_dsm_weight * dsm.mean()
        return loss

    def _ode_loss(
        self,
        net: Net,
        x0: torch.Tensor,
        cond: torch.Tensor,
        teacher: Teacher,
        teacher_net: Net,
        teacher_cond: torch.Tensor,
        row_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """||f(x_sigma, sigma) - ODE_teacher(x_sigma: sigma -> 0)||^2 (cd_target "ode"; config.py says why)."""
        x_hi, s_hi = self.ode_starts(x0)
        with torch.no_grad():
            target = self.teacher_endpoint(teacher, teacher_net, x_hi, s_hi, teacher_cond)
        return self.endpoint_loss(net, x_hi, s_hi, target, cond, row_weights)

    def ode_starts(
        self, x0: torch.Tensor, generator: torch.Generator | None = None, shuffle: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Where "ode" rows start: x0 + sigma z, cd_sigma_max_frac of them (the first, or anywhere with shuffle) at
        sigma_max, where a 1-step sample starts, the rest at uniform Karras bins."""
        c = self.cfg
        b = x0.shape[0]
        sigmas = karras_sigmas(c.cd_bins + 1, c.sigma_min, c.sigma_max, c.rho, x0.device).flip(0)
        n = torch.randint(1, c.cd_bins + 1, (b,), device=x0.device, generator=generator)
        n[: round(b * c.cd_sigma_max_frac)] = c.cd_bins
        if shuffle:
            n = n[torch.randperm(b, device=x0.device, generator=generator)]
        s = sigmas[n]
        z = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        return x0 + s[:, None, None] * z, s

    def endpoint_loss(
        self,
        net: Net,
        x: torch.Tensor,
        sigma: torch.Tensor,
        target: torch.Tensor,
        cond: torch.Tensor,
        row_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The "ode" loss given the teacher's endpoints: online (`_ode_loss`) or precomputed (gen.cd_pool)."""
        return self._distance(self.consistency_fn(net, x, sigma, cond), target, row_weights)

    def _distance(
        self, pred: torch.Tensor, target: torch.Tensor, row_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean squared error, or with cd_huber_c > 0 iCT's pseudo-Huber sqrt(||d||^2 + c^2) - c per chunk (an L2
        norm for errors far above c: a chunk's gradient no longer grows with its error); rows weighted by
        cd_unexecuted_weight and `row_weights`."""
        c = self.cfg.cd_huber_c
        err = self._row_weighted((pred.float() - target.float()) ** 2, row_weights)
        if c > 0:
            return ((err.flatten(1).sum(1) + c**2).sqrt() - c).mean()
        if row_weights is not None:  # the mean over the rows that count
            return err.sum() / (row_weights.float().sum() * err.shape[-1]).clamp(min=1)
        return err.mean()

    def _row_weighted(self, err: torch.Tensor, row_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Squared error [B, H, A] with the rows a rollout never executes weighted by cd_unexecuted_weight (weights
        renormalised to mean 1, so the loss's scale, and the lr tuned for it, keeps its meaning), then by
        `row_weights` [B, H] where given."""
        if row_weights is not None:
            err = err * row_weights.to(err.dtype)[..., None]
        u = self.cfg.cd_unexecuted_weight
        if u == 1.0 or self.executed_rows is None:  # config.py: cd_unexecuted_weight
            return err
        w = err.new_full((err.shape[1],), u)
        w[slice(*self.executed_rows)] = 1.0
        return err * (w * len(w) / w.sum())[None, :, None]

    def teacher_endpoint(
        self, teacher: Teacher, teacher_net: Net, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        """The teacher's probability-flow ODE from x at sigma [B] to the data: cd_ode_steps Euler steps on each
        row's own Karras schedule (sigma .. sigma_min, then 0), i.e. the teacher's Euler sampler started there."""
        c = self.cfg
        ramp = torch.linspace(0, 1, c.cd_ode_steps, device=x.device)
        lo, hi = c.sigma_min ** (1 / c.rho), sigma[:, None] ** (1 / c.rho)
        sched = torch.cat([(hi + ramp * (lo - hi)) ** c.rho, sigma.new_zeros(len(sigma), 1)], 1)
        for i in range(c.cd_ode_steps):
            s, s_next = sched[:, i], sched[:, i + 1]
            d = (x - teacher.denoise(teacher_net, x, s, cond)) / s[:, None, None]
            x = x + (s_next - s)[:, None, None] * d
        return x

    def loss(self, net: Net, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("a consistency policy trains by distillation: use distill_loss with its teacher")

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
        sigmas = karras_sigmas(n + 1, c.sigma_min, c.sigma_max, c.rho, cond.device)[:n]
        b = shape[0]

        def clean(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            if guide is None:
                return self.consistency_fn(net, x, s.expand(b), cond)
            return guided_denoise(
                lambda xx: self.consistency_fn(net, xx, s.expand(b), cond), x, float(s), guide
            )

        x = clean(randn(shape, cond, generator) * sigmas[0], sigmas[0])
        for s in sigmas[1:]:
            noisy = x + (s**2 - c.sigma_min**2).clamp(min=0).sqrt() * randn(shape, cond, generator)
            x = clean(noisy, s)
        return x
