"""uPETe enhancement: LPET (+ CT) -> SPET estimate through the latent diffusion model (paper Fig. 1(b)).

For one window x ``(B, 1, D, H, W)`` (network units) with CT c on the same grid::

    z   = s·E(x)                                       encode the LPET
    t*  = process.step_for_dose(d)                    d given, or estimated by a DoseEstimator
    z   = process.start(z, t*)
    for τ in process.set_timesteps(K, start_step=t*):  K = num_reverse_steps, τ descending
        ẑ0 = f_θ(z, τ, E_CT(c))                        (UPETe.forward, ẑ0-prediction)
        z  = process.step(ẑ0, ε̂, τ, prev_timestep=next τ)   (not after the last τ)
    x̂   = D(ẑ0 / s)

The loop is :func:`bundle.diffusion.sampler.sample` with a :class:`~bundle.diffusion.latent.LatentStep`.

Whole volumes go through MONAI's ``SlidingWindowInferer`` (``roi_size``, ``overlap``, Gaussian blending); PET and
CT travel as two channels of one tensor so every window gets its own CT.  A volume no larger than ``roi_size``
in every axis is processed in one pass (the sliding-window result is identical there, tested).  The output has
the input's shape; the units are the input's (network units in, network units out; the workflow's invertible
:class:`~bundle.transforms.scaling.ToNetworkUnitsd` maps back to kBq/ml).  Randomness (Poisson re-degradation) only
through the ``generator`` / ``seed``: same seed -> same output.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import torch
from monai.inferers import Inferer, SlidingWindowInferer

from bundle.diffusion.ddim import PredictionType
from bundle.diffusion.latent import (
    DoseEstimator,
    GaussianLatentDiffusion,
    LatentDiffusionProcess,
    LatentStep,
    PoissonLatentDiffusion,
    Redegradation,
)
from bundle.diffusion.poisson import PoissonDegradation, PoissonDoseSchedule
from bundle.diffusion.sampler import sample
from bundle.networks.upete import LDMVariant, UPETe

from .._checks import check_choice, check_int, check_real

__all__ = ["LatentEnhancementInferer", "PoissonDomain", "make_process"]


class LatentEnhancementInferer(Inferer):
    """MONAI inferer ``inferer(inputs, network, ct=..., dose=...)`` for :class:`~bundle.networks.upete.UPETe`.

    Args (keyword-only):
        process: :class:`~bundle.diffusion.latent.LatentDiffusionProcess` the model was trained with.
        num_reverse_steps: K, reverse steps from t* (evenly spaced).
        roi_size: sliding-window size (spatial, divisible by the autoencoder's f); ``None`` = whole volume.
        overlap: window overlap fraction in [0, 1).
        sw_batch_size: windows per network call.
        mode: MONAI blend mode (``"gaussian"`` default).
        dose: default dose fraction of the inputs; ``None`` = estimate with ``dose_estimator``.
        dose_estimator: a calibrated :class:`~bundle.diffusion.latent.DoseEstimator`.
        seed: seed of the generator when the call gives none.
        redegradation: :class:`~bundle.diffusion.latent.Redegradation` between two reverse steps (``"process"``
            default, ``"none"``); irrelevant for K = 1.
    """

    def __init__(
        self,
        *,
        process: LatentDiffusionProcess,
        num_reverse_steps: int = 4,
        roi_size: Sequence[int] | None = None,
        overlap: float = 0.5,
        sw_batch_size: int = 1,
        mode: str = "gaussian",
        dose: float | None = None,
        dose_estimator: DoseEstimator | None = None,
        seed: int = 0,
        redegradation: Redegradation | str = Redegradation.PROCESS,
    ) -> None:
        super().__init__()
        if not isinstance(process, LatentDiffusionProcess):
            raise TypeError(f"process must be a LatentDiffusionProcess, got {type(process).__name__}")
        self.process = process
        self.num_reverse_steps = check_int(num_reverse_steps, "num_reverse_steps", minimum=1)
        self.roi_size = None if roi_size is None else tuple(check_int(r, "roi_size", minimum=1) for r in roi_size)
        self.overlap = check_real(overlap, "overlap", "in [0, 1)", lambda v: 0 <= v < 1)
        self.sw_batch_size = check_int(sw_batch_size, "sw_batch_size", minimum=1)
        self.mode = mode
        self.dose = None if dose is None else check_real(dose, "dose", "in (0, 1]", lambda v: 0 < v <= 1)
        self.dose_estimator = dose_estimator
        self.seed = check_int(seed, "seed", minimum=0)
        self.redegradation = check_choice(redegradation, Redegradation, "redegradation")

    def resolve_dose(self, inputs: torch.Tensor, dose: float | None) -> float:
        """The given dose, else ``self.dose``, else the estimator's d̂ (``ValueError`` if none is available)."""
        d = self.dose if dose is None else dose
        if d is not None:
            return check_real(d, "dose", "in (0, 1]", lambda v: 0 < v <= 1)
        if self.dose_estimator is None:
            raise ValueError("dose is required (the input's dose fraction in (0, 1]) unless a dose_estimator is given")
        return self.dose_estimator(inputs)

    @torch.no_grad()
    def enhance(
        self, x: torch.Tensor, network: UPETe, *, ct: torch.Tensor | None, dose: float, generator: torch.Generator
    ) -> torch.Tensor:
        """One window (module docstring): ``(B, 1, D, H, W)`` -> ``(B, 1, D, H, W)``."""
        process = self.process
        start = process.step_for_dose(dose)
        z = process.start(network.encode(x), start)
        steps = process.set_timesteps(self.num_reverse_steps, start_step=start)

        def model(z_t: torch.Tensor, tau: int) -> torch.Tensor:
            return network(z_t, torch.full((x.shape[0],), tau, dtype=torch.long, device=x.device), ct)

        rule = LatentStep(process=process, timesteps=steps, encode=network.encode, decode=network.decode,
                          redegradation=self.redegradation)
        _, z0_hat = sample(z, steps, model=model, step_rule=rule, prediction_type=PredictionType.SAMPLE,
                           generator=generator, desc="uPETe")
        return network.decode(z0_hat)

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: UPETe,
        *args: Any,
        ct: torch.Tensor | None = None,
        dose: float | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """SPET estimate ``(B, 1, D, H, W)`` of LPET ``inputs`` ``(B, 1, D, H, W)`` (CT ``(B, 1, D, H, W)`` if used)."""
        if not isinstance(network, UPETe):
            raise TypeError(f"network must be a UPETe, got {type(network).__name__}")
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 5 or inputs.shape[1] != 1:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(f"inputs must have shape (B, 1, D, H, W), got {shape}")
        if network.uses_ct:
            if ct is None:
                raise ValueError("ct is required: this model uses CT-guided attention (LDM-CT / LDM-P-CT), got None")
            if ct.shape != inputs.shape:
                raise ValueError(
                    f"ct must be on the PET's grid with one channel: expected shape {tuple(inputs.shape)}, got "
                    f"{tuple(ct.shape)}"
                )
        d = self.resolve_dose(inputs, dose)
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        network.eval()
        spatial = tuple(inputs.shape[2:])
        use_ct = network.uses_ct
        stacked = torch.cat([inputs, ct.to(inputs)], dim=1) if use_ct else inputs

        def window(patch: torch.Tensor) -> torch.Tensor:
            return self.enhance(patch[:, :1], network, ct=patch[:, 1:2] if use_ct else None, dose=d, generator=gen)

        if self.roi_size is None:
            return window(stacked)
        if len(self.roi_size) != len(spatial):
            raise ValueError(f"roi_size must have {len(spatial)} entries, got {self.roi_size}")
        sliding = SlidingWindowInferer(
            roi_size=self.roi_size, sw_batch_size=self.sw_batch_size, overlap=self.overlap, mode=self.mode,
        )
        return sliding(stacked, window)


class PoissonDomain(StrEnum):
    """Where the Poisson variants' training degradation x_0 -> x_t happens."""

    SINOGRAM = "sinogram"
    """The paper's way (default): the subject's measured counts thinned to d_t and reconstructed by OSEM
    (:class:`~bundle.transforms.upete.RandDoseReductiond`, before the patch crop); x_t is an exact scan at d_t of
    the standard dose, so an LPET of dose d starts at the step of dose d."""
    IMAGE = "image"
    """Voxel-wise Poisson(κ_0 d_t x_0)/(κ_0 d_t) on the SPET patches (white noise added to the SPET's own noise);
    an LPET of dose d starts at the step of dose d_eff(d) (:class:`PoissonLatentDiffusion`)."""
    LADDER = "ladder"
    """The sinogram domain restricted to a precomputed dose ladder (:mod:`bundle.data.ladder`,
    :class:`~bundle.transforms.upete.RandDoseLadderd`): the same exact low-dose scans, made once instead of one
    OSEM per draw; an LPET of dose d starts at the step of dose d, as for ``"sinogram"``."""


def make_process(
    variant: LDMVariant | str,
    *,
    calibration: Any,
    num_train_timesteps: int = 400,
    min_dose: float = 0.005,
    poisson_domain: PoissonDomain | str = PoissonDomain.SINOGRAM,
) -> LatentDiffusionProcess:
    """Gaussian (LDM, LDM-CT) or Poisson (LDM-P, LDM-P-CT) process; ``calibration`` has ``count_scale``,
    ``latent_noise_variance`` and ``reference_dose`` (:class:`bundle.checkpoint.Calibration`).

    The Poisson process's own degradation is image-space at the calibrated κ_0 in both domains: it draws x_t in
    training with ``poisson_domain="image"`` and re-degrades D(ẑ0) between reverse steps in either domain.
    ``poisson_domain`` also sets the start step of an LPET: dose d_eff(d) for ``"image"`` (noise added to the
    noisy SPET), d itself for ``"sinogram"`` and ``"ladder"`` (x_t is an exact dose-d_t scan nested in the SPET's
    counts).
    """
    v = LDMVariant.parse(variant)
    domain = check_choice(poisson_domain, PoissonDomain, "poisson_domain")
    if v.uses_poisson:
        schedule = PoissonDoseSchedule(num_steps=num_train_timesteps, min_dose=min_dose)
        degradation = PoissonDegradation(schedule=schedule, count_scale=calibration.count_scale, image_space=True)
        reference = calibration.reference_dose if domain is PoissonDomain.IMAGE else None
        return PoissonLatentDiffusion(degradation=degradation, reference_dose=reference)
    return GaussianLatentDiffusion(num_train_timesteps=num_train_timesteps,
                                   latent_noise_variance=calibration.latent_noise_variance,
                                   reference_dose=calibration.reference_dose)
