"""Latent forward/reverse processes of uPETe's ablations, with one scheduler-like interface (MONAI style:
``num_train_timesteps``, ``set_timesteps``, ``timesteps``, ``alpha``, ``step``) so that training
(:class:`~bundle.engines.upete.LatentDiffusionPrepareBatch`) and enhancement
(:class:`~bundle.inferers.upete.LatentEnhancementInferer`, through :func:`bundle.diffusion.sampler.sample` with a
:class:`LatentStep`) share it.

Notation: x_0 SPET (network units), z_0 = s·E(x_0), ẑ0 the denoiser's prediction, d_t the dose of step t
(:class:`~bundle.diffusion.poisson.PoissonDoseSchedule`), T = ``num_train_timesteps`` (paper: 400).

Gaussian (LDM, LDM-CT; MONAI ``DDPMScheduler`` with ``prediction_type="sample"``)::

    training   z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε                                   (DDPM, in latent space)
    start      z_{t*} = √ᾱ_{t*} z_LPET,  t* = argmin_t |(1 − ᾱ_t)/ᾱ_t − σ²(d)|  (LPET latent noise as the noise)
    reverse    ε̂ = (z_t − √ᾱ_t ẑ0)/√(1 − ᾱ_t),  z_{t'} = √ᾱ_{t'} ẑ0 + √(1 − ᾱ_{t'}) ε̂   (DDIM, η = 0, ᾱ as floats;
               :func:`~bundle.diffusion.ddim.ddim_update`)

σ²(d) = σ²_ref (1/d − 1)/(1/d_ref − 1) is the latent noise variance of an LPET at dose d, from
σ²_ref = mean((z_LPET − z_SPET)²) measured at d_ref (:func:`latent_noise_variance`).  (1/d − 1) is exact for
binomially thinned data: Var(x_d − x_1) = Var(x_1)(1/d − 1).

Poisson (LDM-P, LDM-P-CT; paper eq. (1), METHODS.md: degrade in image space, then encode)::

    training   z_t = s·E(x_t),  x_t = PoissonDegradation(x_0, t)  (dose d_t)
    start      z_{t*} = z_LPET,  t* = schedule.step_for_dose(d_eff(d))
    reverse    z_{t'} = s·E(PoissonDegradation(max(D(ẑ0), 0), t'))           (cold-diffusion re-degradation)

The degradation adds noise to an SPET that already has noise.  With κ_0 calibrated so that degrading the SPET to
d_ref reproduces ‖x_LPET − x_SPET‖² (:func:`calibrate_count_scale`), an LPET of dose d matches the step of dose
d_eff(d) = (1 − d_ref) d / (1 − d) (same thinning argument; d_eff(d_ref) = d_ref; no ``reference_dose``: d_eff = d).

The reverse chain visits ``set_timesteps(K, start_step=t*)``: K steps t* = τ_K > … > τ_1 (evenly spaced, τ_1 ≥ 1
unless t* = 0); after the last denoising the output is ẑ0.  Between two steps (:class:`Redegradation`) the process's
own step moves ẑ0 to the next τ (``"process"``: DDIM for the Gaussian process, cold-diffusion re-degradation by
image-space thinning for the Poisson process), or ẑ0 itself is the next input (``"none"``: iterative refinement,
no fresh noise; for the Poisson process trained in the sinogram domain, whose noise a voxel-wise re-degradation
does not imitate).  K = 1 has no step in between.  Randomness only through explicit generators.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from enum import StrEnum

import torch
from monai.networks.schedulers import DDPMScheduler

from .._checks import check_choice, check_int, check_real
from .ddim import ddim_update
from .poisson import PoissonDegradation

__all__ = [
    "DoseEstimator",
    "GaussianLatentDiffusion",
    "LatentDiffusionProcess",
    "LatentStep",
    "PoissonLatentDiffusion",
    "Redegradation",
    "calibrate_count_scale",
    "latent_noise_variance",
]

Codec = Callable[[torch.Tensor], torch.Tensor]


def _check_dose(dose: object) -> float:
    return check_real(dose, "dose", "in (0, 1]", lambda v: 0.0 < v <= 1.0)


def _spaced(start_step: int, num_steps: int) -> list[int]:
    if start_step == 0:
        return [0]
    k = min(num_steps, start_step)
    steps = sorted({max(1, round(start_step * i / k)) for i in range(1, k + 1)}, reverse=True)
    return steps


class LatentDiffusionProcess(ABC):
    """Scheduler-like interface of a latent forward process (module docstring)."""

    num_train_timesteps: int
    timesteps: list[int]

    def set_timesteps(self, num_inference_steps: int, *, start_step: int) -> list[int]:
        """The reverse chain: ``num_inference_steps`` steps from ``start_step`` down (``self.timesteps``)."""
        k = check_int(num_inference_steps, "num_inference_steps", minimum=1)
        start = check_int(start_step, "start_step", minimum=0)
        if start >= self.num_train_timesteps:
            raise ValueError(f"start_step must lie in [0, {self.num_train_timesteps - 1}], got {start}")
        self.timesteps = _spaced(start, k)
        return self.timesteps

    @abstractmethod
    def perturb(
        self, *, x0: torch.Tensor, z0: torch.Tensor, timesteps: torch.Tensor, encode: Codec,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """z_t for training: x0 ``(B, 1, D, H, W)`` network units, z0 = encode(x0) ``(B, c, d, h, w)``, t ``(B,)``."""

    @abstractmethod
    def step_for_dose(self, dose: float) -> int:
        """t* whose perturbation matches an input of dose ``dose`` ∈ (0, 1]."""

    @abstractmethod
    def start(self, z_input: torch.Tensor, step: int) -> torch.Tensor:
        """z_{t*} from the encoded input z_LPET."""

    @abstractmethod
    def alpha(self, timestep: int) -> float | None:
        """ᾱ_t of a Gaussian process (ẑ0 → ε̂ conversion), ``None`` for a process without one."""

    @abstractmethod
    def step(
        self, x0: torch.Tensor, eps: torch.Tensor | None, timestep: int, *, prev_timestep: int,
        encode: Codec, decode: Codec, generator: torch.Generator | None,
    ) -> torch.Tensor:
        """z_{t'} (t' = ``prev_timestep`` < t = ``timestep``) from ẑ0 = ``x0`` and ε̂ = ``eps``."""


class Redegradation(StrEnum):
    """What carries ẑ0 to the next step of a reverse chain (module docstring)."""

    PROCESS = "process"
    """The process's own step: DDIM (Gaussian) or image-space Poisson re-degradation (Poisson)."""
    NONE = "none"
    """ẑ0 is the next step's input as it is."""


class LatentStep:
    """Step rule of :func:`bundle.diffusion.sampler.sample` for a :class:`LatentDiffusionProcess` over the chain
    ``timesteps``: ``process.step`` to the next entry (or ẑ0 itself with ``redegradation="none"``); after the last
    entry the chain ends at ẑ0 (no step)."""

    def __init__(
        self, *, process: LatentDiffusionProcess, timesteps: Sequence[int], encode: Codec, decode: Codec,
        redegradation: Redegradation | str = Redegradation.PROCESS,
    ) -> None:
        self.process, self.timesteps, self.encode, self.decode = process, list(timesteps), encode, decode
        self.redegradation = check_choice(redegradation, Redegradation, "redegradation")

    def alpha(self, index: int) -> float | None:
        return self.process.alpha(self.timesteps[index])

    def step(
        self, *, x0: torch.Tensor, eps: torch.Tensor | None, sample: torch.Tensor, index: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        if index + 1 >= len(self.timesteps) or self.redegradation is Redegradation.NONE:
            return x0
        return self.process.step(
            x0, eps, self.timesteps[index], prev_timestep=self.timesteps[index + 1], encode=self.encode,
            decode=self.decode, generator=generator,
        )


class GaussianLatentDiffusion(LatentDiffusionProcess):
    """LDM / LDM-CT: MONAI ``DDPMScheduler`` (ẑ0 prediction) with dose matching by latent noise variance.

    Args (keyword-only):
        num_train_timesteps: T (paper 400).
        schedule: MONAI beta schedule name.
        beta_start, beta_end: MONAI beta range.
        latent_noise_variance: σ²_ref > 0 at ``reference_dose`` (:func:`latent_noise_variance`).
        reference_dose: d_ref ∈ (0, 1).
    """

    def __init__(
        self,
        *,
        num_train_timesteps: int = 400,
        schedule: str = "linear_beta",
        beta_start: float = 1e-4,
        beta_end: float = 2e-2,
        latent_noise_variance: float = 0.1,
        reference_dose: float = 0.1,
    ) -> None:
        self.num_train_timesteps = check_int(num_train_timesteps, "num_train_timesteps", minimum=2)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=self.num_train_timesteps, schedule=schedule, beta_start=beta_start,
            beta_end=beta_end, prediction_type="sample",
        )
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(torch.float64)
        self.latent_noise_variance = check_real(latent_noise_variance, "latent_noise_variance", "> 0", lambda v: v > 0)
        self.reference_dose = check_real(reference_dose, "reference_dose", "in (0, 1)", lambda v: 0 < v < 1)
        self.timesteps = []

    def noise_variance_at(self, dose: float) -> float:
        """σ²(d) = σ²_ref (1/d − 1) / (1/d_ref − 1)."""
        d = _check_dose(dose)
        return self.latent_noise_variance * (1.0 / d - 1.0) / (1.0 / self.reference_dose - 1.0)

    def step_for_dose(self, dose: float) -> int:
        target = self.noise_variance_at(dose)
        ratio = (1.0 - self.alphas_cumprod) / self.alphas_cumprod
        return int(torch.argmin((ratio - target).abs()))

    def perturb(self, *, x0, z0, timesteps, encode, generator):
        noise = torch.randn(z0.shape, generator=generator, device=generator.device, dtype=z0.dtype).to(z0.device)
        return self.scheduler.add_noise(original_samples=z0, noise=noise, timesteps=timesteps.to(z0.device))

    def start(self, z_input: torch.Tensor, step: int) -> torch.Tensor:
        return math.sqrt(float(self.alphas_cumprod[step])) * z_input

    def alpha(self, timestep: int) -> float:
        return float(self.alphas_cumprod[timestep])

    def step(self, x0, eps, timestep, *, prev_timestep, encode, decode, generator):
        return ddim_update(x0, eps, self.alpha(timestep), self.alpha(prev_timestep))


class PoissonLatentDiffusion(LatentDiffusionProcess):
    """LDM-P / LDM-P-CT: Poisson degradation in image space, then encoding (module docstring).

    Args (keyword-only):
        degradation: :class:`~bundle.diffusion.poisson.PoissonDegradation` (its schedule has T steps).
        reference_dose: d_ref of the κ_0 calibration (dose map d_eff), or ``None`` (d_eff = d).
    """

    def __init__(self, *, degradation: PoissonDegradation, reference_dose: float | None = 0.1) -> None:
        if not isinstance(degradation, PoissonDegradation):
            raise TypeError(f"degradation must be a PoissonDegradation, got {type(degradation).__name__}")
        self.degradation = degradation
        self.schedule = degradation.schedule
        self.num_train_timesteps = self.schedule.num_steps
        self.reference_dose = (
            None if reference_dose is None
            else check_real(reference_dose, "reference_dose", "in (0, 1)", lambda v: 0 < v < 1)
        )
        self.timesteps = []

    def effective_dose(self, dose: float) -> float:
        """d_eff(d) = (1 − d_ref) d / (1 − d), capped to 1 (d itself without a reference dose)."""
        d = _check_dose(dose)
        if self.reference_dose is None:
            return d
        if d >= 1.0:
            return 1.0
        return min(1.0, (1.0 - self.reference_dose) * d / (1.0 - d))

    def step_for_dose(self, dose: float) -> int:
        return self.schedule.step_for_dose(self.effective_dose(dose))

    def _degrade(self, x: torch.Tensor, t: torch.Tensor | int, generator: torch.Generator) -> torch.Tensor:
        x = x.clamp_min(0)
        if x.device != generator.device:
            return self.degradation(x.to(generator.device), t, generator=generator).to(x.device)
        return self.degradation(x, t, generator=generator)

    def perturb(self, *, x0, z0, timesteps, encode, generator):
        return encode(self._degrade(x0, timesteps.cpu(), generator))

    def start(self, z_input: torch.Tensor, step: int) -> torch.Tensor:
        return z_input

    def alpha(self, timestep: int) -> None:
        return None

    def step(self, x0, eps, timestep, *, prev_timestep, encode, decode, generator):
        return encode(self._degrade(decode(x0), int(prev_timestep), generator))


def calibrate_count_scale(standard: torch.Tensor, low: torch.Tensor, *, dose: float) -> float:
    """κ_0 (counts per network unit per voxel) so that image-space degradation of ``standard`` to ``dose`` has the
    squared error of ``low``: κ_0 = Σ x_SPET / (d Σ (x_LPET − x_SPET)²)  (E‖Poisson(κ d x)/(κ d) − x‖² = Σx / (κ d))."""
    d = check_real(dose, "dose", "in (0, 1)", lambda v: 0 < v < 1)
    if standard.shape != low.shape:
        raise ValueError(f"standard and low must have the same shape, got {tuple(standard.shape)}, {tuple(low.shape)}")
    err = float(((low.double() - standard.double()) ** 2).sum())
    if not err > 0:
        raise ValueError("low equals standard: no noise to calibrate the count scale from")
    return float(standard.double().clamp_min(0).sum()) / (d * err)


def latent_noise_variance(z_standard: torch.Tensor, z_low: torch.Tensor) -> float:
    """σ²_ref = mean((z_LPET − z_SPET)²) of scaled latents."""
    if z_standard.shape != z_low.shape:
        raise ValueError(f"latents must have the same shape, got {tuple(z_standard.shape)}, {tuple(z_low.shape)}")
    return float(((z_low.double() - z_standard.double()) ** 2).mean())


def _haar_noise_statistic(image: torch.Tensor, mask_fraction: float) -> float:
    """s(x) = (MAD(w / √m) / 0.6745)²: the robust variance of the finest 3D Haar detail w = HHH (orthonormal), each
    coefficient divided by the square root of its 2 × 2 × 2 block mean m (Poisson-like noise has variance ∝ mean),
    over blocks with m > ``mask_fraction`` · mean(m).  Edges are few, so the median ignores them (Donoho's MAD)."""
    x = image.double().reshape(image.shape[-3:])
    n = [s - s % 2 for s in x.shape]
    if min(n) < 2:
        raise ValueError(f"image must be at least 2 voxels along each axis to estimate its dose, got {tuple(x.shape)}")
    x = x[: n[0], : n[1], : n[2]]
    w = x[0::2] - x[1::2]
    w = w[:, 0::2] - w[:, 1::2]
    w = (w[:, :, 0::2] - w[:, :, 1::2]) / 2**1.5
    m = x.reshape(n[0] // 2, 2, n[1] // 2, 2, n[2] // 2, 2).mean(dim=(1, 3, 5))
    if not float(m.mean()) > 0:
        raise ValueError(f"image must have a positive mean to estimate its dose, got {float(m.mean())}")
    keep = m > mask_fraction * float(m.mean())
    return (float((w[keep] / m[keep].sqrt()).abs().median()) / 0.6745) ** 2


class DoseEstimator:
    """d̂ from the image alone: s(x) ≈ a/d + b, s the robust, intensity-normalised noise variance of the finest Haar
    detail band (:func:`_haar_noise_statistic`; Poisson-like noise variance ∝ activity / d, anatomy mostly cancels
    in the detail band and the rest is rejected by the median).

    :meth:`calibrate` fits a, b by least squares from SPETs (d = 1) and LPETs of a known dose (validation data);
    then d̂ = a / (s(x) − b), clipped to [``min_dose``, 1].

    Args (keyword-only):
        mask_fraction: blocks darker than this fraction of the mean are left out (air).
        min_dose: lower clip of d̂.
    """

    def __init__(self, *, mask_fraction: float = 0.2, min_dose: float = 1e-3) -> None:
        self.mask_fraction = check_real(mask_fraction, "mask_fraction", "in [0, 1)", lambda v: 0 <= v < 1)
        self.min_dose = check_real(min_dose, "min_dose", "in (0, 1)", lambda v: 0 < v < 1)
        self.a: float | None = None
        self.b: float | None = None

    def statistic(self, image: torch.Tensor) -> float:
        """s(x) of a volume ``(..., X, Y, Z)``."""
        return _haar_noise_statistic(image, self.mask_fraction)

    def calibrate(
        self,
        standard: torch.Tensor | Sequence[torch.Tensor],
        low: torch.Tensor | Sequence[torch.Tensor],
        *,
        dose: float,
    ) -> DoseEstimator:
        """Fit a, b from SPET volume(s) ``standard`` (d = 1) and the paired LPET(s) ``low`` at ``dose``."""
        d = check_real(dose, "dose", "in (0, 1)", lambda v: 0 < v < 1)
        standard = [standard] if isinstance(standard, torch.Tensor) else list(standard)
        low = [low] if isinstance(low, torch.Tensor) else list(low)
        if not standard or len(standard) != len(low):
            raise ValueError(f"standard and low must pair up, got {len(standard)} and {len(low)} volumes")
        s1 = torch.tensor([self.statistic(x) for x in standard], dtype=torch.float64)
        sd = torch.tensor([self.statistic(x) for x in low], dtype=torch.float64)
        if not float(sd.mean()) > float(s1.mean()):
            raise ValueError("the low-dose images are not noisier than the standard-dose ones; cannot calibrate")
        # least squares of s = a u + b over the points (u = 1, s1) and (u = 1/d, sd): a from the mean difference
        self.a = float(sd.mean() - s1.mean()) / (1.0 / d - 1.0)
        self.b = float(torch.cat([s1 - self.a, sd - self.a / d]).mean())
        return self

    def __call__(self, image: torch.Tensor) -> float:
        if self.a is None or self.b is None:
            raise ValueError("DoseEstimator is not calibrated: call calibrate(standard, low, dose=...) first")
        excess = self.statistic(image) - self.b
        if excess <= self.a:
            return 1.0
        return max(self.min_dose, self.a / excess)
