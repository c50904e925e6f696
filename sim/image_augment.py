"""Camera realism as post-render image effects: exposure, gamma, per-channel colour gain, blur, sensor noise.

A rendered frame is a perfect pinhole image; a real camera's frames are not. These effects are drawn once per
episode (a camera keeps its exposure and white balance through an episode; the noise is fresh every frame)
from the episode's seed, so a seed reproduces its frames. Lens intrinsics and distortion are a calibration
matter, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CameraEffects:
    """One episode's camera: image = noise(blur((gain * rgb_gain * x) ** gamma)) on x in [0, 1]."""

    gain: float = 1.0  # exposure, 2 ** EV
    gamma: float = 1.0
    rgb_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # colour jitter / white balance
    blur_sigma_px: float = 0.0  # Gaussian blur (defocus, motion) in pixels
    noise_std: float = 0.0  # additive Gaussian sensor noise, in 8-bit levels

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The uint8 HxWx3 `image` as this camera would have taken it; `rng` draws the frame's noise."""
        x = image.astype(np.float32) / 255.0
        x = x * (self.gain * np.asarray(self.rgb_gain, dtype=np.float32))
        x = np.clip(x, 0.0, 1.0) ** self.gamma
        if self.blur_sigma_px > 0.05:
            x = cv2.GaussianBlur(x, (0, 0), self.blur_sigma_px)
        x = x * 255.0
        if self.noise_std > 0:
            x = x + rng.normal(0.0, self.noise_std, x.shape).astype(np.float32)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def draw_effects(
    rng: np.random.Generator,
    exposure_ev: float,
    gamma: float,
    color_jitter: float,
    blur_px: float,
    noise_std: float,
) -> CameraEffects:
    """Uniform draws: EV in +/-exposure_ev, gamma in 1 +/- gamma, each channel's gain in 1 +/- color_jitter,
    blur sigma in [0, blur_px], noise std in [0, noise_std]. Zero knobs give the identity and draw nothing
    for themselves (each draw below is made only for an enabled knob)."""
    gain = float(2.0 ** rng.uniform(-exposure_ev, exposure_ev)) if exposure_ev > 0 else 1.0
    gam = float(1.0 + rng.uniform(-gamma, gamma)) if gamma > 0 else 1.0
    rgb = (
        tuple(float(v) for v in 1.0 + rng.uniform(-color_jitter, color_jitter, 3))
        if color_jitter > 0
        else (1.0,) * 3
    )
    blur = float(rng.uniform(0.0, blur_px)) if blur_px > 0 else 0.0
    noise = float(rng.uniform(0.0, noise_std)) if noise_std > 0 else 0.0
    return CameraEffects(gain, gam, rgb, blur, noise)  # type: ignore[arg-type]
