"""PET-DDS-δ: fully 3D PET reconstruction with a 2D (slice-wise) ε-prediction diffusion model (Webber et al.).

The sampler alternates, for each of N DDIM steps t → t_prev of a MONAI ``DDIMScheduler``:

1. Tweedie denoising of every transverse slice (one network batch over slices, chunked), in normalised units::

       ε̂ = ε_θ(x_t, t),   x̂0 = (x_t − ν_t ε̂) / γ_t,   then clamp x̂0 ≥ 0 and convert to activity: x̂0 ⊙ c_z.

2. p data-consistency (DC) steps in activity units, starting from x = x̂0, subset k cycling over the view subsets
   (the cycle continues across diffusion steps; it is not restarted at every diffusion step)::

       x ← max(0, x + δ · D(x) ⊙ [s_L ∇ℓ_k(x) − λ_RDP ∇RDP_z(x) − λ_DDS (x − x̂0)]),
       ∇ℓ_k(x) = A_kᵀ(y_k / ȳ_k − 1),   ȳ_k = A_k x + b_k.

3. DDIM re-noising of the consistent image x̂0' = x / c_z (normalised units) with stochasticity η::

       x_{t_prev} = γ_prev x̂0' + sqrt(ν_prev² − σ²) ε̂ + σ z,   z ~ N(0, I),
       σ = η · sqrt((1 − ᾱ_prev) / (1 − ᾱ_t)) · sqrt(1 − ᾱ_t / ᾱ_prev)      (Song et al. 2021, eq. 16).

The output is the last consistent x (activity units, ``(n_z, n_y, n_x)``).

Weights in relative units (``weight_units="relative"``, the default; :class:`WeightUnits`).  With the EM
preconditioner D = x / Aᵀ1 the likelihood step x ⊙ s_L A_kᵀ(y_k/ȳ_k − 1) / Aᵀ1 is a *relative* change of x: it
does not change when the counts, the scan time or the detector efficiency scale A, b and y together, nor (up to
the same factor as x) when the activity unit changes.  The two penalty terms keep that property only when their
weights carry the data's units::

    λ_RDP = λ̃_RDP · s̄,            s̄ = mean of Aᵀ1 over the voxels some line of response sees (Aᵀ1 > 0),
    λ_DDS = λ̃_DDS · s̄ / ā,        ā = mean of the slice scale c_z (activity units; see below).

∇RDP is dimensionless (RDP is homogeneous of degree 1 in x), so D λ_RDP ∇RDP = λ̃_RDP (s̄ / Aᵀ1) x ⊙ ∇RDP is a
relative change, with the same relative-β convention as MAP-EM (:func:`bundle.workflows.petdds.absolute_beta`
takes the head mask instead of the FOV for s̄); (x − x̂0) has activity units, so D λ_DDS (x − x̂0) =
λ̃_DDS (s̄ / Aᵀ1) x ⊙ (x − x̂0) / ā is one too.  Then scaling (A, b, y) by k gives the same image, and expressing
the activity in units a times smaller gives a times the image (tests/inferers/test_petdds.py checks both).  In
absolute units λ_RDP = 1e-4 (the paper's value, for its scanner and units) makes the median RDP step 2–4e-5 of the
likelihood step on this project's data: the axial coupling is off.  After every call :attr:`PETDDSInferer.weights`
holds the absolute λ's used and :attr:`PETDDSInferer.step_sizes` the median |preconditioned step| of each term
(activity units, in-FOV voxels, the largest over the first diffusion step's p DC steps); a term whose weight is
> 0 but whose step is below ``negligible_ratio`` × the likelihood step draws a ``UserWarning`` that names it.

The loop is :func:`bundle.diffusion.sampler.sample`: x̂0 ≥ 0 is its ``x0_transform``, steps 1-2 after the network
call its ``consistency`` and step 3 a :class:`~bundle.diffusion.ddim.DDIMStep`; the network may also predict v or x̂0
(``scheduler.prediction_type``), converted to (x̂0, ε̂) before step 1's clamp.

Notation (code ↔ paper, Webber et al. "Generative-model-based fully 3D PET image reconstruction by conditional
diffusion sampling"; the paper writes the forward process x_t = γ_t x_0 + ν_t z):

===========================  ====================  ===============================================================
code                          paper                 meaning
===========================  ====================  ===============================================================
``alphas_cumprod[t]`` = ᾱ_t   γ_t², 1 − ν_t²        variance-preserving schedule: γ_t = sqrt(ᾱ_t), ν_t = sqrt(1 − ᾱ_t)
``eps`` (ε̂)                   −ν_{t_{k+1}} x^(s)    network output; the score is s_θ = x^(s) = −ε̂ / ν_t
``x0_hat``                    x^0_{t_{k+1}}         Tweedie estimate γ_t⁻¹ (x_t + ν_t² s_θ) = (x_t − ν_t ε̂) / γ_t
``x`` after p DC steps        x^p_{t_{k+1}}         data-consistent image
``num_subsets``               n_sub                 number of view subsets (21)
``steps_per_diffusion_step``  p                     DC steps per diffusion step (5)
``delta``                     δ                     DC step size (0.2)
``lambda_rdp``, ``lambda_dds``  λ^RDP, λ^DDS        1e-4, 1.0
``sigma`` (from ``eta``)      η_{t_{k+1}}           the paper's η_t is the noise standard deviation σ itself; our
                                                    ``eta`` ∈ [0, 1] is DDIM's η (σ = η · σ_DDPM); η = 0 makes
                                                    every step deterministic given x_T
``slice_scale`` c_z           (not in the paper)    per-slice intensity scale; normalised = activity / c_z
===========================  ====================  ===============================================================

The paper's re-noising x_{t_k} = γ_{t_k} x^p − ν_{t_{k+1}} sqrt(ν_{t_k}² − η²) x^(s) + η z is step 3 above with
−ν_{t_{k+1}} x^(s) = ε̂ and η_paper = σ.

Conventions the paper leaves open (all are constructor options; METHODS.md "PET-DDS-δ"):

- Objective scaling.  The paper's Φ_j = L_j + (1/n_sub)(λ_RDP RDP_z − λ_DDS ‖x − x̂0‖²) is multiplied by n_sub so
  that n_sub ∇L_j approximates the full-data gradient; the factor 2 of ∇‖x − x̂0‖² is absorbed into λ_DDS (our
  penalty is (λ_DDS / 2)‖x − x̂0‖²); RDP_z enters with the sign of a penalty.  ``gradient_scale`` s_L is n_sub
  by default (``None``).
- Preconditioner D(x) (:class:`Preconditioner`).  Default ``EM``: D = x / (Aᵀ1) with the *full-data* sensitivity
  Aᵀ1 = Σ_k A_kᵀ1, a fixed diagonal metric that does not change with the subset.  Then with δ = 1 and λ = 0 one DC
  step is x ⊙ [1 + n_sub A_kᵀ(y_k/ȳ_k − 1) / Aᵀ1], which equals an OSEM sub-iteration when every subset has the
  same sensitivity (A_kᵀ1 = Aᵀ1 / n_sub) and approximates it otherwise.  ``EM_SUBSET``: D = x / A_kᵀ1; with
  ``gradient_scale=1``, δ = 1, λ = 0 a DC step is *exactly* the OSEM sub-iteration x ⊙ A_kᵀ(y_k/ȳ_k) / A_kᵀ1 (up to
  rounding).  ``NONE``: D = 1 (plain gradient ascent; δ then carries units).
- Voxels no line of response sees (Aᵀ1 = 0) carry no data and are set to 0, as :func:`bundle.physics.osem` does;
  with ``EM_SUBSET`` a voxel that only subset k misses is left unchanged by that step's data and penalty terms.
- Tweedie x̂0 is clamped at 0 before DC (PET activities are non-negative), the scheduler's own ``clip_sample`` is
  not used.  DC needs ȳ_k > 0 wherever y_k > 0 (true with a positive randoms/scatter background); otherwise
  :meth:`PoissonDataModel.gradient` raises a ``ValueError`` (nothing is clipped).
- Timesteps (:class:`~bundle.diffusion.ddim.PreviousTimestep`): t runs over the scheduler's ``timesteps`` after
  ``set_timesteps(num_inference_steps)``.  Default ``NEXT_IN_SCHEDULE``: t_prev is the next entry of that list
  (ᾱ_prev = ``final_alpha_cumprod`` after the last), so the image is re-noised to exactly the time the network sees
  next.  ``DDIM_STEP``: t_prev = t − T // N as MONAI's ``DDIMScheduler.step`` does; its ``timesteps`` are
  ``linspace(T − 1, 0, N).round()``, so the two disagree by up to T/N − T//N (and more for small N): with an exact
  Gaussian ε-predictor and N = 20 this mismatch biases the sample mean by −3 % (−0.8 % at N = 100), against −0.3 %
  for ``NEXT_IN_SCHEDULE``.  With ``DDIM_STEP`` and p = 0 the sampler is MONAI's DDIM loop (plus the x̂0 ≥ 0 clamp
  and the c_z scaling).
- ``eta`` defaults to 0 (the paper does not report η_t): deterministic given x_T, so different seeds differ only
  through x_T ~ N(0, I).
- Slice scale c_z: mean over positive voxels of each slice of an OSEM volume (``osem_iterations`` passes over
  ``num_subsets`` subsets, default 2 × 21 as the paper's baseline), matching the training normalisation "slice /
  mean over positive voxels" (:func:`bundle.transforms.scaling.slice_scale_from_volume`).

Run time (:attr:`PETDDSInferer.timings`, wall-clock ``time.perf_counter`` of the last call; CUDA is synchronised
before each reading, so on a GPU the split costs some overlap): ``network_s`` inside the ε-network calls,
``projector_s`` inside ∇ℓ_k = A_kᵀ(y_k/ȳ_k − 1) (one forward and one back projection with the resolution model per
DC step), ``osem_s`` for the slice-scale OSEM when the call computes it, ``total_s`` for the whole call and
``other_s`` = total − network − projector − osem (RDP, proximity, preconditioner, DDIM arithmetic, set-up).

``prior_enabled=False`` switches the diffusion prior off for testing: no network calls, x̂0 is the current
consistent iterate (initially ``initial_osem`` or ones), so the sampler runs N · p DC steps.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from monai.inferers import Inferer
from monai.networks.schedulers import DDIMScheduler

from bundle.diffusion.ddim import DDIMStep, PredictionType, PreviousTimestep
from bundle.diffusion.sampler import sample
from bundle.physics.forward_model import PETForwardModel, PoissonDataModel, select_views, view_subsets
from bundle.physics.priors import Neighbourhood, RelativeDifferencePrior
from bundle.physics.recon import osem
from bundle.progress import progress_bar
from bundle.transforms.scaling import slice_scale_from_volume

from .._checks import check_choice, check_int, check_real
from ..metrics.bias_variance import ZeroMeanPolicy, coefficient_of_variation

__all__ = [
    "PETDDSInferer",
    "Preconditioner",
    "TimedNetwork",
    "WeightUnits",
    "check_inferer",
    "default_inferer",
    "reconstruct_many",
    "timed_network",
    "uncertainty_from_samples",
]

Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor], object]


class WeightUnits(StrEnum):
    """Units of ``lambda_rdp`` and ``lambda_dds`` (module docstring, "Weights in relative units")."""

    RELATIVE = "relative"
    """λ_RDP = λ̃ · s̄ and λ_DDS = λ̃ · s̄ / ā: invariant to count and activity units (default)."""
    ABSOLUTE = "absolute"
    """The λ's are used as given (the paper's convention; their effect depends on the data's units)."""


class Preconditioner(StrEnum):
    """Diagonal preconditioner D(x) of the data-consistency step."""

    EM = "em"
    """D = x / Aᵀ1 with the full-data sensitivity Aᵀ1 = Σ_k A_kᵀ1 (METHODS.md default)."""
    EM_SUBSET = "em_subset"
    """D = x / A_kᵀ1 with the current subset's sensitivity (with ``gradient_scale=1``, δ = 1: OSEM)."""
    NONE = "none"
    """D = 1 (plain gradient ascent)."""


def _check_image(tensor: object, name: str, shape: tuple[int, ...], *, positive: bool = False) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(tensor).__name__}")
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    if not torch.is_floating_point(tensor):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite everywhere; found NaN or Inf")
    if positive and bool((tensor <= 0).any()):
        raise ValueError(f"{name} must be > 0 everywhere; its minimum is {float(tensor.min())}")
    if bool((tensor < 0).any()):
        raise ValueError(f"{name} must be >= 0 everywhere; its minimum is {float(tensor.min())}")
    return tensor


def _check_counts(tensor: object, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of counts with shape {shape}, got {type(tensor).__name__}")
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name} must be a real tensor of counts, got dtype {tensor.dtype}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite everywhere; found NaN or Inf")
    if bool((tensor < 0).any()):
        raise ValueError(f"{name} must be >= 0 everywhere (counts); its minimum is {float(tensor.min())}")
    return tensor


@dataclass(frozen=True)
class _Problem:
    """Subset models, their data y_k and sensitivities A_kᵀ1, on one dtype/device."""

    models: list[PoissonDataModel]
    data: list[torch.Tensor]
    sensitivities: list[torch.Tensor]
    full_sensitivity: torch.Tensor
    in_fov: torch.Tensor
    lambda_rdp: float = 0.0
    lambda_dds: float = 0.0


class PETDDSInferer(Inferer):
    """PET-DDS-δ sampler; see the module docstring for the equations, notation and conventions.

    Args:
        scheduler: a MONAI ``DDIMScheduler`` (its ``alphas_cumprod`` define γ_t, ν_t;
            ``set_timesteps(num_inference_steps)`` is called on every reconstruction); its ``prediction_type`` (ε by
            default, v or x̂0) says what the network outputs (:func:`bundle.diffusion.ddim.split_prediction`).
        num_inference_steps: N diffusion steps (100).
        num_subsets: n_sub view subsets (21).
        steps_per_diffusion_step: p DC steps per diffusion step (5); 0 switches data consistency off.
        delta: δ > 0 (0.2).
        lambda_rdp: λ_RDP >= 0, weight of the axial RDP ``prior``, in ``weight_units``
            (relative: 0.1, tuned on validation, docs/petdds.md).
        lambda_dds: λ_DDS >= 0, weight of the proximity term (λ_DDS / 2)‖x − x̂0‖², in ``weight_units``
            (relative: 0.1, tuned likewise).
        weight_units: :class:`WeightUnits` of the two λ's (``RELATIVE``).
        negligible_ratio: a penalty term whose median step is below this fraction of the likelihood step draws a
            warning (1e-3; 0 switches the check off).
        eta: DDIM η in [0, 1] (0.0).
        preconditioner: :class:`Preconditioner` (``EM``).
        gradient_scale: s_L > 0 multiplying ∇ℓ_k; ``None`` = ``num_subsets``.
        previous_timestep: :class:`~bundle.diffusion.ddim.PreviousTimestep` (``NEXT_IN_SCHEDULE``).
        prior: object with ``gradient(x)`` for RDP_z; default ``RelativeDifferencePrior(neighbourhood=AXIAL)``
            (γ = 2, reflective ends).
        osem_iterations: OSEM passes for the slice scale when neither ``slice_scale`` nor ``initial_osem`` is given.
        chunk_size: slices per network batch (>= 1).
        prior_enabled: ``False`` replaces x̂0 by the current consistent iterate (no network calls; for testing).
        seed: seed of the generator used when ``__call__`` gets no ``generator``.
        progress: a progress bar over the diffusion steps (``False``: none; ``True``: as ``BUNDLE_PROGRESS``
            says, :mod:`bundle.progress`).
        callback: ``callback(step, x0_hat)`` after the DC of every diffusion step (step = 0 … N − 1, x0_hat a copy of
            the consistent image in activity units); nothing is logged inside the loop.

    Attributes:
        timings: seconds spent in the last call, ``{"network_s", "projector_s", "osem_s", "other_s", "total_s"}``
            (module docstring, "Run time"); empty before the first call.
        weights: the last call's ``{"lambda_rdp", "lambda_dds"}`` in absolute units and the ``{"mean_sensitivity",
            "activity_scale"}`` (s̄, ā) they were derived from.
        step_sizes: the last call's median |preconditioned step| ``{"likelihood", "rdp", "proximity"}``.
    """

    def __init__(
        self,
        *,
        scheduler: Any,
        num_inference_steps: int = 100,
        num_subsets: int = 21,
        steps_per_diffusion_step: int = 5,
        delta: float = 0.2,
        lambda_rdp: float = 0.1,
        lambda_dds: float = 0.1,
        weight_units: WeightUnits | str = WeightUnits.RELATIVE,
        negligible_ratio: float = 1e-3,
        eta: float = 0.0,
        preconditioner: Preconditioner | str = Preconditioner.EM,
        gradient_scale: float | None = None,
        previous_timestep: PreviousTimestep | str = PreviousTimestep.NEXT_IN_SCHEDULE,
        prior: Any = None,
        osem_iterations: int = 2,
        chunk_size: int = 16,
        prior_enabled: bool = True,
        seed: int = 0,
        progress: bool = True,
        callback: StepCallback | None = None,
    ) -> None:
        super().__init__()
        for attribute in ("alphas_cumprod", "set_timesteps", "num_train_timesteps", "final_alpha_cumprod"):
            if not hasattr(scheduler, attribute):
                raise TypeError(
                    f"scheduler must be a MONAI DDIMScheduler (needs {attribute!r}), got {type(scheduler).__name__}"
                )
        self.prediction_type = check_choice(
            getattr(scheduler, "prediction_type", None), PredictionType, "scheduler.prediction_type"
        )
        self.scheduler = scheduler
        self.num_inference_steps = check_int(num_inference_steps, "num_inference_steps", minimum=1)
        if self.num_inference_steps > scheduler.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be <= scheduler.num_train_timesteps ({scheduler.num_train_timesteps}), "
                f"got {num_inference_steps}"
            )
        self.num_subsets = check_int(num_subsets, "num_subsets", minimum=1)
        self.steps_per_diffusion_step = check_int(steps_per_diffusion_step, "steps_per_diffusion_step", minimum=0)
        self.delta = check_real(delta, "delta", "> 0", lambda v: v > 0)
        self.lambda_rdp = check_real(lambda_rdp, "lambda_rdp", ">= 0", lambda v: v >= 0)
        self.lambda_dds = check_real(lambda_dds, "lambda_dds", ">= 0", lambda v: v >= 0)
        self.weight_units = check_choice(weight_units, WeightUnits, "weight_units")
        self.negligible_ratio = check_real(negligible_ratio, "negligible_ratio", ">= 0", lambda v: v >= 0)
        self.eta = check_real(eta, "eta", ">= 0 and <= 1.0", lambda v: 0 <= v <= 1)
        self.preconditioner = check_choice(preconditioner, Preconditioner, "preconditioner")
        self.previous_timestep = check_choice(previous_timestep, PreviousTimestep, "previous_timestep")
        self.gradient_scale = (
            float(self.num_subsets)
            if gradient_scale is None
            else check_real(gradient_scale, "gradient_scale", "> 0", lambda v: v > 0)
        )
        self.prior = RelativeDifferencePrior(neighbourhood=Neighbourhood.AXIAL) if prior is None else prior
        if not callable(getattr(self.prior, "gradient", None)):
            raise TypeError(f"prior must have a gradient(x) method, got {type(self.prior).__name__}")
        self.osem_iterations = check_int(osem_iterations, "osem_iterations", minimum=1)
        self.chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
        for name, flag in (("prior_enabled", prior_enabled), ("progress", progress)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.prior_enabled = prior_enabled
        self.progress = progress
        self.seed = check_int(seed, "seed", minimum=0)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable(step, x0_hat) or None, got {type(callback).__name__}")
        self.callback = callback
        self.timings: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.step_sizes: dict[str, float] = {}
        self._measure_steps = False

    def _clock(self, device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    # ------------------------------------------------------------------ problem set-up
    def prepare(
        self, inputs: torch.Tensor | Sequence[torch.Tensor], models: PETForwardModel | Sequence[PoissonDataModel]
    ) -> tuple[list[PoissonDataModel], list[torch.Tensor]]:
        """Validated subset models and data.

        ``models`` a :class:`PETForwardModel`: ``inputs`` is the full sinogram (``projector.out_shape``), split into
        ``num_subsets`` interleaved view subsets.  ``models`` a sequence of ``num_subsets`` :class:`PoissonDataModel`
        (one per subset, same 3D ``in_shape``): ``inputs`` is the matching sequence of subset data tensors.
        """
        if isinstance(models, PETForwardModel):
            shape = models.projector.out_shape
            sinogram = _check_counts(inputs, "inputs", shape)
            if self.num_subsets > models.n_views:
                raise ValueError(
                    f"num_subsets ({self.num_subsets}) must be <= the number of sinogram views ({models.n_views})"
                )
            subsets = view_subsets(models.n_views, self.num_subsets)
            model_list = [models.subset(idx) for idx in subsets]
            data = [select_views(sinogram, idx) for idx in subsets]
        elif isinstance(models, Sequence) and not isinstance(models, str):
            model_list = list(models)
            if len(model_list) != self.num_subsets:
                raise ValueError(
                    f"models must hold num_subsets={self.num_subsets} PoissonDataModel, got {len(model_list)}"
                )
            for k, model in enumerate(model_list):
                if not isinstance(model, PoissonDataModel):
                    raise TypeError(f"models[{k}] must be a PoissonDataModel, got {type(model).__name__}")
                if model.in_shape != model_list[0].in_shape:
                    raise ValueError(f"models[{k}].in_shape {model.in_shape} must equal {model_list[0].in_shape}")
            if isinstance(inputs, torch.Tensor) or not isinstance(inputs, Sequence):
                raise TypeError(
                    "inputs must be a sequence of subset data tensors (one per model) when models is a sequence, got "
                    f"{type(inputs).__name__}"
                )
            if len(inputs) != len(model_list):
                raise ValueError(f"inputs must hold one tensor per model ({len(model_list)}), got {len(inputs)}")
            data = [
                _check_counts(y, f"inputs[{k}]", m.out_shape)
                for k, (y, m) in enumerate(zip(inputs, model_list, strict=True))
            ]
        else:
            raise TypeError(
                f"models must be a PETForwardModel or a sequence of PoissonDataModel, got {type(models).__name__}"
            )
        in_shape = model_list[0].in_shape
        if len(in_shape) != 3:
            raise ValueError(f"the models' in_shape must be 3D (n_z, n_y, n_x), got {in_shape}")
        return model_list, data

    def osem_volume(
        self, inputs: torch.Tensor | Sequence[torch.Tensor], models: PETForwardModel | Sequence[PoissonDataModel]
    ) -> torch.Tensor:
        """OSEM (``osem_iterations`` × ``num_subsets``, initial ones) of the measured data, activity units."""
        model_list, data = self.prepare(inputs, models)
        return osem(model_list, data, num_iterations=self.osem_iterations)

    def _problem(self, model_list: list[PoissonDataModel], data: list[torch.Tensor], dtype, device) -> _Problem:
        sensitivities = [m.sensitivity(dtype=dtype, device=device) for m in model_list]
        for k, s_k in enumerate(sensitivities):
            if not bool(torch.isfinite(s_k).all()) or bool((s_k < 0).any()):
                raise ValueError(f"models[{k}] has a sensitivity A_kᵀ1 with negative or non-finite values")
        full = torch.stack(sensitivities).sum(dim=0)
        return _Problem(
            models=model_list,
            data=[y.to(dtype=dtype, device=device) for y in data],
            sensitivities=sensitivities,
            full_sensitivity=full,
            in_fov=full > 0,
        )

    # ------------------------------------------------------------------ building blocks
    def data_consistency_step(self, x: torch.Tensor, x0_hat: torch.Tensor, problem: _Problem, k: int) -> torch.Tensor:
        """One DC step on subset ``k`` (activity units, ``(n_z, n_y, n_x)``):

        x ← max(0, x + δ D(x) ⊙ [s_L A_kᵀ(y_k/ȳ_k − 1) − λ_RDP ∇RDP_z(x) − λ_DDS (x − x̂0)]), 0 outside the FOV.
        """
        model = problem.models[k]
        start = self._clock(x.device)
        terms = {"likelihood": self.gradient_scale * model.gradient(x, problem.data[k])}
        if self.timings:
            self.timings["projector_s"] += self._clock(x.device) - start
        if problem.lambda_rdp > 0:
            terms["rdp"] = -problem.lambda_rdp * self.prior.gradient(x)
        if problem.lambda_dds > 0:
            terms["proximity"] = -problem.lambda_dds * (x - x0_hat)
        if self.preconditioner is Preconditioner.NONE:
            metric = None
        else:
            sens = problem.full_sensitivity if self.preconditioner is Preconditioner.EM else problem.sensitivities[k]
            seen = sens > 0
            metric = torch.where(seen, x / torch.where(seen, sens, torch.ones_like(sens)), 0.0)
        if self._measure_steps:
            for name, term in terms.items():
                size = (term if metric is None else metric * term).abs()[problem.in_fov & (x > 0)]
                median = float(size.median()) if size.numel() else 0.0
                self.step_sizes[name] = max(self.step_sizes.get(name, 0.0), median)
        direction = sum(terms.values())
        step = direction if metric is None else metric * direction
        x = torch.clamp(x + self.delta * step, min=0.0)
        return torch.where(problem.in_fov, x, torch.zeros_like(x))

    def absolute_weights(self, full_sensitivity: torch.Tensor, activity_scale: float) -> dict[str, float]:
        """λ_RDP, λ_DDS in absolute units with s̄ = mean of ``full_sensitivity`` over its positive voxels and
        ā = ``activity_scale`` (module docstring, "Weights in relative units")."""
        seen = full_sensitivity[full_sensitivity > 0]
        mean_sensitivity = float(seen.mean()) if seen.numel() else 0.0
        if self.weight_units is WeightUnits.ABSOLUTE:
            rdp, dds = self.lambda_rdp, self.lambda_dds
        else:
            if not activity_scale > 0:
                raise ValueError(f"the activity scale ā must be > 0 for relative weights, got {activity_scale}")
            rdp = self.lambda_rdp * mean_sensitivity
            dds = self.lambda_dds * mean_sensitivity / activity_scale
        return {"lambda_rdp": rdp, "lambda_dds": dds, "mean_sensitivity": mean_sensitivity,
                "activity_scale": float(activity_scale)}

    def _warn_negligible(self) -> None:
        likelihood = self.step_sizes.get("likelihood", 0.0)
        checks = [("rdp", "lambda_rdp")]
        if self.steps_per_diffusion_step > 1:  # with p = 1 the DC step starts and ends at x = x̂0: no proximity
            checks.append(("proximity", "lambda_dds"))
        for name, weight in checks:
            if getattr(self, weight) > 0 and likelihood > 0 and self.step_sizes.get(name, 0.0) < (
                self.negligible_ratio * likelihood
            ):
                warnings.warn(
                    f"PET-DDS-delta: the {name} term's step ({self.step_sizes.get(name, 0.0):.3g}) is below "
                    f"{self.negligible_ratio:g} x the likelihood step ({likelihood:.3g}): "
                    f"{weight}={getattr(self, weight)} ({self.weight_units.value} units) has no effect on this data; "
                    "raise it (relative units are the data-independent choice)",
                    UserWarning,
                    stacklevel=3,
                )

    def predict_noise(self, network: Network, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """ε̂ = network(x_t as ``(n_z, 1, n_y, n_x)`` batches of ``chunk_size`` slices, t as ``(B,)`` long)."""
        outputs = []
        for start in range(0, x_t.shape[0], self.chunk_size):
            batch = x_t[start : start + self.chunk_size].unsqueeze(1)
            timesteps = torch.full((batch.shape[0],), int(t), dtype=torch.long, device=batch.device)
            eps = network(batch, timesteps)
            if not isinstance(eps, torch.Tensor) or tuple(eps.shape) != tuple(batch.shape):
                raise ValueError(
                    f"network output must be a tensor of the input's shape {tuple(batch.shape)}, got "
                    f"{getattr(eps, 'shape', type(eps).__name__)}"
                )
            outputs.append(eps[:, 0].to(dtype=x_t.dtype, device=x_t.device))
        return torch.cat(outputs)

    # ------------------------------------------------------------------ sampler
    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor | Sequence[torch.Tensor],
        network: Network | None,
        *,
        models: PETForwardModel | Sequence[PoissonDataModel],
        slice_scale: torch.Tensor | None = None,
        initial_osem: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Reconstruct one 3D image.

        Args:
            inputs: measured counts y (see :meth:`prepare` for the two accepted forms), finite and >= 0.
            network: ε-predictor (v or x̂0 per ``scheduler.prediction_type``) ``network(x: (B, 1, n_y, n_x),
                t: (B,) long) -> (B, 1, n_y, n_x)`` (e.g. MONAI ``DiffusionModelUNet``); may be ``None`` only with
                ``prior_enabled=False``.
            models: a :class:`PETForwardModel` or ``num_subsets`` subset :class:`PoissonDataModel`.
            slice_scale: c_z, ``(n_z,)``, finite and > 0; ``None`` = :func:`slice_scale_from_volume` of
                ``initial_osem`` (computed with :meth:`osem_volume` when also ``None``).
            initial_osem: OSEM volume ``(n_z, n_y, n_x)`` >= 0 (activity units); also the first iterate when
                ``prior_enabled=False`` (ones when ``None``).
            generator: source of x_T and of the re-noising z; ``None`` = ``torch.Generator().manual_seed(seed)``.

        Returns:
            The last consistent image x̂0, ``(n_z, n_y, n_x)``, activity units, >= 0.
        """
        model_list, data = self.prepare(inputs, models)
        shape = model_list[0].in_shape
        dtype = data[0].dtype if torch.is_floating_point(data[0]) else model_list[0].background.dtype
        device = data[0].device
        self.timings = {"network_s": 0.0, "projector_s": 0.0, "osem_s": 0.0}
        call_start = self._clock(device)
        if self.prior_enabled and not callable(network):
            raise TypeError(f"network must be callable(x, t) -> eps, got {type(network).__name__}")
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if initial_osem is not None:
            initial_osem = _check_image(initial_osem, "initial_osem", shape).to(dtype=dtype, device=device)
        if slice_scale is not None:
            slice_scale = _check_image(slice_scale, "slice_scale", (shape[0],), positive=True)
        problem = self._problem(model_list, data, dtype, device)

        if self.prior_enabled:
            if slice_scale is None:
                start = self._clock(device)
                volume = initial_osem if initial_osem is not None else osem(
                    model_list, data, num_iterations=self.osem_iterations
                )
                self.timings["osem_s"] += self._clock(device) - start
                slice_scale = slice_scale_from_volume(volume.to(dtype=dtype, device=device))
            scale = slice_scale.to(dtype=dtype, device=device).reshape(-1, 1, 1)
        else:
            scale = torch.ones((shape[0], 1, 1), dtype=dtype, device=device)
        # ā: the mean slice scale, or with the prior off the mean over positive voxels of the first iterate (ones)
        first = initial_osem if initial_osem is not None else torch.ones(shape, dtype=dtype, device=device)
        activity_scale = float(scale.mean()) if self.prior_enabled else float(
            first[first > 0].mean() if bool((first > 0).any()) else 0.0
        )
        self.weights = self.absolute_weights(problem.full_sensitivity, activity_scale)
        problem = dataclasses.replace(problem, lambda_rdp=self.weights["lambda_rdp"],
                                      lambda_dds=self.weights["lambda_dds"])
        self.step_sizes = {}

        self.scheduler.set_timesteps(self.num_inference_steps)
        timesteps = [int(t) for t in self.scheduler.timesteps.tolist()]
        subsets = itertools.count()
        consistent: list[torch.Tensor] = []  # the last consistent x (activity units)

        def consistency(x0_norm: torch.Tensor, step: int) -> torch.Tensor:
            """x̂0 ⊙ c_z (0 outside the FOV), p DC steps, back to normalised units."""
            x0_hat = x0_norm * scale
            x0_hat = torch.where(problem.in_fov, x0_hat, torch.zeros_like(x0_hat))
            x = x0_hat
            self._measure_steps = step == 0 and self.negligible_ratio > 0
            for _ in range(self.steps_per_diffusion_step):
                x = self.data_consistency_step(x, x0_hat, problem, next(subsets) % self.num_subsets)
            if self._measure_steps:
                self._measure_steps = False
                self._warn_negligible()
            consistent[:] = [x]
            if self.callback is not None:
                self.callback(step, x.clone())
            return x / scale

        if not self.prior_enabled:  # N · p DC steps, x̂0 = the current iterate
            x = initial_osem if initial_osem is not None else torch.ones(shape, dtype=dtype, device=device)
            x = torch.where(problem.in_fov, x, torch.zeros_like(x))
            for step in progress_bar(range(len(timesteps)), desc="PET-DDS", unit="step", progress=self.progress,
                                     leave=False):
                x = consistency(x, step)
        else:

            def model(x_t: torch.Tensor, t: int) -> torch.Tensor:
                start = self._clock(device)
                eps = self.predict_noise(network, x_t, t)  # type: ignore[arg-type]
                self.timings["network_s"] += self._clock(device) - start
                return eps

            x_t = torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)
            rule = DDIMStep(
                scheduler=self.scheduler, timesteps=timesteps, eta=self.eta, previous_timestep=self.previous_timestep
            )
            sample(x_t, timesteps, model=model, step_rule=rule, prediction_type=self.prediction_type,
                   x0_transform=lambda x0: torch.clamp(x0, min=0.0), consistency=consistency, generator=generator,
                   progress=self.progress, desc="PET-DDS")
        x = consistent[0]
        total = self._clock(device) - call_start
        parts = self.timings["network_s"] + self.timings["projector_s"] + self.timings["osem_s"]
        self.timings.update(other_s=total - parts, total_s=total)
        return x


def default_inferer(*, num_subsets: int = 21, num_train_timesteps: int = 1000, **options: Any) -> PETDDSInferer:
    """A :class:`PETDDSInferer` with a MONAI ``DDIMScheduler(num_train_timesteps)`` (linear β schedule, as the
    training config's ``DDPMScheduler``) and the paper's defaults; ``options`` are further constructor arguments."""
    scheduler = DDIMScheduler(num_train_timesteps=check_int(num_train_timesteps, "num_train_timesteps", minimum=1))
    return PETDDSInferer(scheduler=scheduler, num_subsets=num_subsets, **options)


def check_inferer(inferer: object) -> PETDDSInferer | None:
    """``inferer`` if it is a :class:`PETDDSInferer` or ``None`` (the caller's default), else ``TypeError``."""
    if inferer is not None and not isinstance(inferer, PETDDSInferer):
        raise TypeError(f"inferer must be a PETDDSInferer or None, got {type(inferer).__name__}")
    return inferer


class TimedNetwork:
    """``network(x, t)`` on ``device`` (inputs moved there, the output moved back to the inputs' device) with the time
    spent inside it (CUDA synchronised) accumulated in :attr:`seconds`: the ``network_s`` of the PET-DDS timings."""

    def __init__(self, network: Network, device: torch.device) -> None:
        self.network = network
        self.device = device
        self.seconds = 0.0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.network(x.to(self.device), t.to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out = out.to(x.device)
        self.seconds += time.perf_counter() - start
        return out


def timed_network(network: object, device: str | torch.device = "cpu") -> TimedNetwork | None:
    """``network`` (callable ``(x, t) -> ε``; a ``torch.nn.Module`` is moved to ``device`` in eval mode) as a
    :class:`TimedNetwork`; ``None`` stays ``None``, anything else not callable is a ``TypeError``."""
    if network is None:
        return None
    if not callable(network):
        raise TypeError(f"network must be callable(x, t) -> eps (e.g. DiffusionModelUNet) or None, got {network!r}")
    device = torch.device(device)
    if isinstance(network, torch.nn.Module):
        network.to(device).eval()
    return TimedNetwork(network, device)


def reconstruct_many(
    inferer: PETDDSInferer,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    network: Network | None,
    *,
    models: PETForwardModel | Sequence[PoissonDataModel],
    seeds: Sequence[int],
    slice_scale: torch.Tensor | None = None,
    initial_osem: torch.Tensor | None = None,
    generator_device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One reconstruction per seed -> ``(n_seeds, n_z, n_y, n_x)``.

    Seed s uses ``torch.Generator(generator_device).manual_seed(s)``.

    The OSEM volume for the slice scale is computed once (when neither ``slice_scale`` nor ``initial_osem`` is given).
    """
    if not isinstance(inferer, PETDDSInferer):
        raise TypeError(f"inferer must be a PETDDSInferer, got {type(inferer).__name__}")
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence) or len(seeds) == 0:
        raise TypeError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    seeds = [check_int(s, f"seeds[{i}]", minimum=0) for i, s in enumerate(seeds)]
    if inferer.prior_enabled and slice_scale is None and initial_osem is None:
        initial_osem = inferer.osem_volume(inputs, models)
    results = []
    for seed in seeds:
        generator = torch.Generator(device=generator_device).manual_seed(seed)
        results.append(
            inferer(
                inputs, network, models=models, slice_scale=slice_scale, initial_osem=initial_osem, generator=generator
            )
        )
    return torch.stack(results)


def uncertainty_from_samples(
    samples: Sequence[torch.Tensor] | torch.Tensor, *, correction: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel-wise mean and coefficient of variation CV = std / mean over samples (the paper's uncertainty image).

    Args:
        samples: a sequence of equally shaped tensors or one tensor with the samples on axis 0 (>= 1 sample).
        correction: ``std`` degrees-of-freedom correction (0 = population std, the default; 1 = unbiased).

    Returns:
        ``(mean, cv)``, each of a sample's shape.  Where the mean is 0 the CV is undefined and set to 0 (in PET the
        mean of non-negative samples is 0 only where every sample is 0, i.e. no activity and no spread).
    """
    # validation, stacking and the CV itself are bundle.metrics' (CV := 0 where the mean is 0)
    cv = coefficient_of_variation(samples, correction=correction, eps_policy=ZeroMeanPolicy.ZERO)
    stacked = samples if isinstance(samples, torch.Tensor) else torch.stack(list(samples))
    return stacked.mean(dim=0), cv.to(stacked.dtype)
