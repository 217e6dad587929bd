"""uPETe "Poisson diffusion" (Jiang et al., MICCAI 2023, Sect. 2.2, eq. (1)): a forward process that degrades a
standard-dose PET image by Poisson counting noise of increasing intensity instead of adding Gaussian noise.

The paper writes z_t = perturb(z_{t−1}, λ_t), λ_1 < … < λ_T, "applying Poisson deviates on the projected sinograms"
(as Song et al.'s Noise2Void simulation).  We implement it as a *dose schedule* (METHODS.md, uPETe defaults): step t
simulates a scan of the standard-dose image x0 at the dose fraction d_t and reconstructs it, in image space, before
the encoder (z_t = E(x_t))::

    x_t = Recon(Poisson(κ_t A x0) / κ_t),   κ_t = κ_0 d_t,   1 = d_0 > d_1 > … > d_{T−1} = d_min,

with κ_0 the counts per unit activity of the standard dose and A the forward model.  Each x_t is drawn directly
from x0 (not from x_{t−1}); its noise grows as the dose falls (Var ∝ 1 / κ_t), which is the paper's increasing
Poisson intensity λ_t.  x0 (the standard-dose image) is treated as the noise-free expectation, so even t = 0 is a
fresh standard-dose realisation around it.  Reverse sampling (LatentEnhancementInferer, not here) starts from
E(LPET) at ``step_for_dose(dose of the input)`` and re-degrades the predicted ẑ0 cold-diffusion style.

Notation (code ↔ paper/METHODS.md):

=================================  ==========  =============================================================
code                               symbol      meaning
=================================  ==========  =============================================================
``PoissonDoseSchedule.num_steps``  T           number of steps (400 in the paper), t = 0 … T − 1
``dose_at(t)``                     d_t         dose fraction of step t (relative to the standard dose)
``min_dose``                       d_min       d_{T−1}
``count_scale``                    κ_0         counts per unit activity at the standard dose
``count_scale_at(t)``              κ_t         κ_0 d_t
``forward_model``                  A           ``PETForwardModel``: ȳ = n ⊙ a ⊙ A(G x) + s (s scales with κ_t too)
``reconstruct``                    Recon       counts -> image in activity units (default OSEM)
=================================  ==========  =============================================================

Schedules (:class:`DoseScheduleKind`): ``GEOMETRIC`` (default) d_t = d_min^(t / (T−1)), equal dose *ratios* per
step, so the noise standard deviation ∝ d_t^(−1/2) grows geometrically; ``LINEAR`` d_t = 1 − (1 − d_min) t / (T−1)
(the paper's "λ_t linearly interpolated"; it spends most steps at high doses).  d_min = 0.01 by default (the paper's
LPET is 10 % dose; its dose-generalisation study goes lower).

Two forward modes of :class:`PoissonDegradation`:

- projector (default, the paper's "Poisson deviates on the projected sinograms"): ȳ = A x0 (the full
  ``PETForwardModel``, background included), y ~ Poisson(κ_t ȳ), x_t = Recon(y) / κ_t.  The default Recon is
  :class:`OSEMReconstruction` (4 subsets × 2 iterations), whose few iterations give PET-like correlated noise and a
  slight loss of resolution.  κ_0 is in counts per (activity unit × mm) here (A gives line integrals in mm).
- ``image_space=True``: x_t = Poisson(κ_t x0) / κ_t voxel by voxel (κ_0 in counts per voxel per unit activity).
  An approximation for fast training: unbiased (E x_t = x0) with Var x_t = x0 / κ_t like a real scan's variance
  scaling with 1/dose, but the noise is white and uncorrelated and no reconstruction blur is introduced.

The Gaussian-diffusion ablations (LDM, LDM-CT) need no code here: they use MONAI's ``DDPMScheduler`` /
``DDIMScheduler`` (``num_train_timesteps=400``, ``prediction_type="sample"`` for ẑ0) on the latents.

Randomness only through the explicit ``torch.Generator`` (same generator state -> same x_t).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from enum import StrEnum

import torch

from bundle.physics.build import forward_model_from_arrays
from bundle.physics.forward_model import PETForwardModel, PoissonDataModel, select_views, view_subsets
from bundle.physics.noise import poisson_noise
from bundle.physics.operators import LinearOperator
from bundle.physics.recon import osem

from .._checks import check_int, check_real

__all__ = [
    "DoseScheduleKind",
    "OSEMReconstruction",
    "PoissonDegradation",
    "PoissonDoseSchedule",
    "Reconstruction",
]

Reconstruction = Callable[..., torch.Tensor]
"""``reconstruct(counts, *, count_scale) -> image``: counts ``forward_model`` sinogram shape, image ``in_shape`` in
activity units (the estimate of counts / count_scale's activity)."""


class DoseScheduleKind(StrEnum):
    """How the dose fraction d_t falls from 1 to d_min."""

    GEOMETRIC = "geometric"
    """d_t = d_min^(t / (T − 1)) (default)."""
    LINEAR = "linear"
    """d_t = 1 − (1 − d_min) · t / (T − 1)."""


class PoissonDoseSchedule:
    """Dose fractions d_0 = 1 > d_1 > … > d_{T−1} = d_min of the Poisson forward process.

    Args (keyword-only):
        num_steps: T >= 2 (paper: 400).
        min_dose: d_min in (0, 1).
        kind: :class:`DoseScheduleKind`.

    Attributes:
        doses: ``(T,)`` float64 tensor of d_t.
    """

    def __init__(
        self,
        *,
        num_steps: int = 400,
        min_dose: float = 0.01,
        kind: DoseScheduleKind | str = DoseScheduleKind.GEOMETRIC,
    ) -> None:
        self.num_steps = check_int(num_steps, "num_steps", minimum=2)
        self.min_dose = check_real(min_dose, "min_dose", "in (0, 1)", lambda v: 0.0 < v < 1.0)
        try:
            self.kind = DoseScheduleKind(kind)
        except ValueError:
            raise ValueError(f"kind must be one of {[k.value for k in DoseScheduleKind]}, got {kind!r}") from None
        s = torch.arange(self.num_steps, dtype=torch.float64) / (self.num_steps - 1)
        if self.kind is DoseScheduleKind.GEOMETRIC:
            doses = torch.exp(s * math.log(self.min_dose))
        else:
            doses = 1.0 - (1.0 - self.min_dose) * s
        doses[0], doses[-1] = 1.0, self.min_dose  # exact end points
        self.doses = doses

    def __len__(self) -> int:
        return self.num_steps

    def _check_steps(self, t: object) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
                raise TypeError(f"t must be an int or an integer tensor, got dtype {t.dtype}")
            steps = t.to(device="cpu", dtype=torch.long)
        elif isinstance(t, numbers.Integral) and not isinstance(t, bool):
            steps = torch.tensor(int(t))
        else:
            raise TypeError(f"t must be an int or an integer tensor, got {t!r}")
        if steps.numel() and bool(((steps < 0) | (steps >= self.num_steps)).any()):
            raise ValueError(f"t must lie in [0, {self.num_steps - 1}], got {t.tolist() if steps.ndim else int(t)}")
        return steps

    def dose_at(self, t: int | torch.Tensor) -> float | torch.Tensor:
        """d_t: a float for an int t, a float64 tensor of t's shape (on the CPU) for an integer tensor."""
        steps = self._check_steps(t)
        return self.doses[steps] if isinstance(t, torch.Tensor) else float(self.doses[steps])

    def step_for_dose(self, dose: float) -> int:
        """The step whose dose is closest to ``dose`` ∈ (0, 1] (e.g. the known or estimated dose of an LPET).

        Closeness is measured in log dose for ``GEOMETRIC`` (the schedule's own spacing) and in dose for ``LINEAR``;
        ties go to the smaller t.  Doses below d_min map to T − 1.  Inverts :meth:`dose_at` on the grid.
        """
        d = check_real(dose, "dose", "in (0, 1]", lambda v: 0.0 < v <= 1.0)
        if self.kind is DoseScheduleKind.GEOMETRIC:
            distance = (torch.log(self.doses) - math.log(d)).abs()
        else:
            distance = (self.doses - d).abs()
        return int(torch.argmin(distance))  # first minimum = smallest t on ties


class OSEMReconstruction:
    """Default Recon: OSEM of counts drawn at count scale κ, returned in activity units (÷ κ).

    The data model for counts at scale κ is ȳ = κ (K x + s); OSEM with operator K and background κ s estimates κ x
    (as :meth:`bundle.data.simulate.SimulatedScan.reconstruct_osem`), which is divided by κ.

    Args (keyword-only):
        forward_model: the :class:`PETForwardModel` the counts were drawn from (at κ = 1).
        num_subsets: OSEM view subsets (default 4).
        num_iterations: OSEM passes (default 2).
    """

    def __init__(self, *, forward_model: PETForwardModel, num_subsets: int = 4, num_iterations: int = 2) -> None:
        if not isinstance(forward_model, PETForwardModel):
            raise TypeError(f"forward_model must be a PETForwardModel, got {type(forward_model).__name__}")
        self.num_subsets = check_int(num_subsets, "num_subsets", minimum=1)
        self.num_iterations = check_int(num_iterations, "num_iterations", minimum=1)
        self.forward_model = forward_model
        self._views = view_subsets(forward_model.n_views, self.num_subsets)
        self._models = [forward_model.subset(v) for v in self._views]

    def __call__(self, counts: torch.Tensor, *, count_scale: float) -> torch.Tensor:
        """Image ``forward_model.projector.in_shape`` ≈ activity from ``counts`` (sinogram shape) at scale κ."""
        kappa = check_real(count_scale, "count_scale", "> 0", lambda v: v > 0)
        models = [PoissonDataModel(operator=m.operator, background=m.background * kappa) for m in self._models]
        data = [select_views(counts, v) for v in self._views]
        return osem(models, data, num_iterations=self.num_iterations) / kappa


class PoissonDegradation:
    """x_t = Recon(Poisson(κ_t A x0) / κ_t) (projector mode) or Poisson(κ_t x0) / κ_t (``image_space=True``).

    Args (keyword-only):
        schedule: the :class:`PoissonDoseSchedule` (d_t).
        count_scale: κ_0 > 0, counts per unit activity at the standard dose (per voxel in image space, per
            activity × mm through a projector).
        forward_model: projector mode: a :class:`PETForwardModel`, or a bare ``LinearOperator`` projector (e.g.
            ``SinogramProjector``) that is wrapped in one; must be ``None`` with ``image_space=True``.
        reconstruct: projector mode: ``reconstruct(counts, *, count_scale) -> image`` in activity units; default
            :class:`OSEMReconstruction` (4 subsets × 2 iterations) of ``forward_model``.
        image_space: the voxel-wise approximation (module docstring).
    """

    def __init__(
        self,
        *,
        schedule: PoissonDoseSchedule,
        count_scale: float,
        forward_model: PETForwardModel | LinearOperator | None = None,
        reconstruct: Reconstruction | None = None,
        image_space: bool = False,
    ) -> None:
        if not isinstance(schedule, PoissonDoseSchedule):
            raise TypeError(f"schedule must be a PoissonDoseSchedule, got {type(schedule).__name__}")
        if not isinstance(image_space, bool):
            raise TypeError(f"image_space must be a bool, got {image_space!r}")
        self.schedule = schedule
        self.count_scale = check_real(count_scale, "count_scale", "> 0", lambda v: v > 0)
        self.image_space = image_space
        self.forward_model: PETForwardModel | None = None
        self.reconstruct: Reconstruction | None = None
        if image_space:
            if forward_model is not None or reconstruct is not None:
                raise ValueError(
                    "image_space=True draws voxel-wise Poisson noise: forward_model and reconstruct must be None"
                )
            return
        if forward_model is None:
            raise ValueError("forward_model is required unless image_space=True, got None")
        if isinstance(forward_model, LinearOperator) and not isinstance(forward_model, PETForwardModel):
            forward_model = forward_model_from_arrays(projector=forward_model)
        if not isinstance(forward_model, PETForwardModel):
            raise TypeError(
                f"forward_model must be a PETForwardModel or a LinearOperator, got {type(forward_model).__name__}"
            )
        if reconstruct is not None and not callable(reconstruct):
            raise TypeError(f"reconstruct must be callable(counts, *, count_scale) or None, got {reconstruct!r}")
        self.forward_model = forward_model
        self.reconstruct = OSEMReconstruction(forward_model=forward_model) if reconstruct is None else reconstruct

    def count_scale_at(self, t: int | torch.Tensor) -> float | torch.Tensor:
        """κ_t = κ_0 d_t (float for an int t, float64 tensor for an integer tensor)."""
        return self.count_scale * self.schedule.dose_at(t)

    def _check_inputs(self, x0: object, t: object, generator: object) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x0, torch.Tensor):
            raise TypeError(f"x0 must be a torch.Tensor (B, ...), got {type(x0).__name__}")
        if not torch.is_floating_point(x0):
            raise TypeError(f"x0 must be floating-point, got dtype {x0.dtype}")
        if x0.ndim < 1 or x0.shape[0] < 1:
            raise ValueError(f"x0 must have a non-empty leading batch dimension, got shape {tuple(x0.shape)}")
        if self.forward_model is not None:
            in_shape = self.forward_model.projector.in_shape
            if x0.ndim <= len(in_shape) or tuple(x0.shape[-len(in_shape) :]) != in_shape:
                raise ValueError(
                    f"x0 must have shape (B, ..., {', '.join(map(str, in_shape))}) (batch + the forward model's "
                    f"image shape), got {tuple(x0.shape)}"
                )
        if not bool(torch.isfinite(x0).all()):
            raise ValueError("x0 must be finite everywhere; found NaN or Inf")
        if bool((x0 < 0).any()):
            raise ValueError(f"x0 must be >= 0 everywhere (activity); its minimum is {float(x0.min())}")
        steps = self.schedule._check_steps(t)
        if steps.ndim == 0:
            steps = steps.expand(x0.shape[0])
        elif steps.shape != (x0.shape[0],):
            raise ValueError(f"t must be an int or have shape (B,) = ({x0.shape[0]},), got {tuple(steps.shape)}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return x0, steps

    @torch.no_grad()
    def __call__(self, x0: torch.Tensor, t: int | torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """Draw x_t for every batch item.

        Args:
            x0: standard-dose images ``(B, ...)``, >= 0; projector mode: ``(B, ..., n_z, n_y, n_x)`` ending in the
                forward model's image shape (all leading items are degraded independently).
            t: one step for the batch (int) or one per item (integer tensor ``(B,)``), in [0, T − 1].
            generator: the source of randomness (on x0's device).

        Returns:
            x_t of x0's shape and dtype.
        """
        x0, steps = self._check_inputs(x0, t, generator)
        kappa = (self.count_scale * self.schedule.doses[steps]).to(device=x0.device)  # (B,), float64
        if self.image_space:
            k = kappa.reshape(-1, *([1] * (x0.ndim - 1)))
            return (poisson_noise(x0.to(torch.float64) * k, generator=generator) / k).to(x0.dtype)
        forward_model, reconstruct = self.forward_model, self.reconstruct
        if forward_model is None or reconstruct is None:  # unreachable: set in __init__ unless image_space
            raise RuntimeError("projector mode needs forward_model and reconstruct")
        in_shape = forward_model.projector.in_shape
        batch = x0.shape[0]
        flat = x0.reshape(batch, -1, *in_shape)
        out = torch.empty_like(flat)
        for b in range(batch):
            k = float(kappa[b])
            for c in range(flat.shape[1]):
                expected = forward_model.expectation(flat[b, c])
                counts = poisson_noise(expected * k, generator=generator)
                out[b, c] = reconstruct(counts, count_scale=k).to(dtype=x0.dtype, device=x0.device)
        return out.reshape(x0.shape)
