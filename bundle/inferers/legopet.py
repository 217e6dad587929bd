"""LegoPET sampling (sinogram → 2D PET) with classifier-free guidance over the condition C = {s, b_d, b_m}.

For a batch of sinograms s ``(B, 1, H, W)`` (already on the padded image grid, e.g. 256 × 256):

1. C = {s, b_d, b_m} with (b_d, b_m) = PnPNet.features(s), computed once per sample (``pnpnet=None``: C = {s},
   the cDPM); ∅ = :func:`bundle.networks.null_condition` (zeros of the same shapes).
2. x_T ~ N(0, I) from the explicit generator.
3. For every t of the scheduler's ``timesteps`` (DDPM: all T = 1000 as the paper; DDIM: k steps)::

       ε̃ = (1 + λ2) ε_θ(x_t, t, C) − λ2 ε_θ(x_t, t, ∅)         (paper §2.3, Ho & Salimans 2022)
       x_{t−1} = DDPM step of ε̃ from t to t − 1                (DDPM: paper eqs. (4)-(5); noise from the generator)
       x_{t'}  = DDIM update of ε̃ from t to the next t' of the schedule   (DDIM)

   The loop is :func:`bundle.diffusion.sampler.sample` with :class:`~bundle.diffusion.ddim.DDPMStep` (the numbers of
   MONAI's ``DDPMScheduler.step``) or :class:`~bundle.diffusion.ddim.DDIMStep`.  The network may also predict v or
   x_0 (the scheduler's ``prediction_type``); guidance then mixes those outputs the same way and
   :func:`~bundle.diffusion.ddim.split_prediction` turns them into (x̂_0, ε̂).

   With λ2 = 0 the unconditional branch is not evaluated and ε̃ = ε_θ(x_t, t, C) exactly.  Otherwise the
   conditional and unconditional inputs of a chunk go through the network as one batch of 2 × ``chunk_size``.
   DDIM takes t' from the schedule itself (``previous_timestep`` = ``next_in_schedule``), not MONAI's
   ``DDIMScheduler.step``, whose t − T // k disagrees with its own linspace ``timesteps`` (the sample would be moved
   to one noise level and the network asked about another; :mod:`bundle.diffusion.ddim`).  x̂_0 is clipped as MONAI
   does when the scheduler's ``clip_sample`` is set.
4. x_0 is cropped to the unpadded image (``crop`` = (top, left, height, width), e.g. the 172 × 172 image inside the
   256 × 256 grid).

Network contract: ``network(x_t, t, s)`` for the cDPM and ``network(x_t, t, s, down_residuals=b_d,
mid_residual=b_m)`` with PnPNet features (:class:`bundle.networks.LegoPETDenoiser`), tensors ``(b, 1, H, W)`` and
``t`` of shape ``(b,)`` long; output ε ``(b, 1, H, W)``.

:class:`LegoPETTrainingInferer` is the training-side counterpart for MONAI's ``SupervisedTrainer`` with
:class:`bundle.engines.LegoPETPrepareBatch`: it forms x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε (paper eq. (3)) and
returns ε_θ(x_t, t, C).
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from bundle._checks import check_choice, check_int, check_real
from bundle.diffusion.ddim import DDIMStep, DDPMStep, PredictionType, PreviousTimestep
from bundle.diffusion.sampler import StepRule, classifier_free_guidance, sample
from bundle.networks.legopet import FeatureShapes, LegoPETCondition, PnPNet, null_condition, pnpnet_condition
from bundle.transforms.legopet import padding_offsets
from bundle.transforms.scaling import Standardisation

__all__ = ["LegoPETInferer", "LegoPETTrainingInferer", "default_crop", "slice_condition"]

Network = Callable[..., torch.Tensor]


def _check_sinogram(sinogram: object) -> torch.Tensor:
    if not isinstance(sinogram, torch.Tensor):
        raise TypeError(f"inputs (sinogram) must be a torch.Tensor, got {type(sinogram).__name__}")
    if sinogram.ndim != 4 or sinogram.shape[1] != 1 or sinogram.shape[0] < 1:
        raise ValueError(f"inputs (sinogram) must have shape (B, 1, H, W), got {tuple(sinogram.shape)}")
    if not torch.is_floating_point(sinogram):
        raise TypeError(f"inputs (sinogram) must be floating-point, got dtype {sinogram.dtype}")
    if not bool(torch.isfinite(sinogram).all()):
        raise ValueError("inputs (sinogram) must be finite")
    return sinogram


def _call_network(network: Network, x_t: torch.Tensor, t: torch.Tensor, condition: LegoPETCondition) -> torch.Tensor:
    if condition.down_residuals is None:
        eps = network(x_t, t, condition.sinogram)
    else:
        eps = network(
            x_t, t, condition.sinogram, down_residuals=condition.down_residuals, mid_residual=condition.mid_residual
        )
    if not isinstance(eps, torch.Tensor) or tuple(eps.shape) != tuple(x_t.shape):
        raise ValueError(
            f"network output must be a tensor of the input's shape {tuple(x_t.shape)}, got "
            f"{getattr(eps, 'shape', type(eps).__name__)}"
        )
    return eps


def slice_condition(condition: LegoPETCondition, start: int, stop: int) -> LegoPETCondition:
    """Samples ``start:stop`` of every tensor of ``condition``."""
    if condition.down_residuals is None or condition.mid_residual is None:
        return LegoPETCondition(condition.sinogram[start:stop])
    return LegoPETCondition(
        condition.sinogram[start:stop],
        tuple(r[start:stop] for r in condition.down_residuals),
        condition.mid_residual[start:stop],
    )


def _cat_conditions(a: LegoPETCondition, b: LegoPETCondition) -> LegoPETCondition:
    if a.down_residuals is None or a.mid_residual is None or b.down_residuals is None or b.mid_residual is None:
        return LegoPETCondition(torch.cat([a.sinogram, b.sinogram]))
    return LegoPETCondition(
        torch.cat([a.sinogram, b.sinogram]),
        tuple(torch.cat([x, y]) for x, y in zip(a.down_residuals, b.down_residuals, strict=True)),
        torch.cat([a.mid_residual, b.mid_residual]),
    )


class LegoPETInferer(Inferer):
    """Classifier-free-guided LegoPET / cDPM sampler (module docstring), a MONAI ``Inferer``.

    Args (keyword-only):
        scheduler: MONAI ``DDPMScheduler`` (ancestral sampling over all ``num_train_timesteps``, the paper's T = 1000)
            or ``DDIMScheduler`` (``num_inference_steps`` = k steps, stochasticity ``eta``); its ``prediction_type``
            says what the network outputs (ε, v or x_0).
        num_inference_steps: number of sampling steps; ``None`` = ``scheduler.num_train_timesteps``.  A DDPM scheduler
            needs every step (MONAI's ``DDPMScheduler.step`` always goes from t to t − 1).
        guidance_scale: λ2 >= 0 (default 1.0); 0 = plain conditional sampling.
        pnpnet: the trained, frozen :class:`bundle.networks.PnPNet` (run under ``no_grad``; its train/eval mode is
            left as it is); ``None`` = cDPM (C = {s}).
        crop: ``(top, left, height, width)`` of the unpadded image in the sampled grid, or ``None`` (no crop).
        eta: DDIM η ∈ [0, 1] (0 = deterministic given x_T); must be 0 with a DDPM scheduler.
        progress: a progress bar over the steps (``False``: none; ``True``: as ``BUNDLE_PROGRESS`` says,
            :mod:`bundle.progress`).
        chunk_size: samples per network call (the network sees up to 2 × ``chunk_size`` with guidance).
        seed: seed of the generator used when ``__call__`` gets none.
        previous_timestep: DDIM only: :class:`bundle.diffusion.ddim.PreviousTimestep` (default
            ``next_in_schedule``; ``ddim_step`` reproduces MONAI's ``DDIMScheduler.step`` loop).
        standardisation: the training's :class:`~bundle.transforms.scaling.Standardisation` (the model samples
            z = (x' − mean) / std; the returned image is x' = z · std + mean, in network units); ``None`` = identity.
        pnpnet_features: add PnPNet's b_d, b_m (LegoPET; the training's ``pnpnet_features``).
        pnpnet_image: stack the PnPNet output image with s (the image-condition extension; the training's
            ``pnpnet_image``); needs ``pnpnet``.
    """

    def __init__(
        self,
        *,
        scheduler: DDPMScheduler | DDIMScheduler,
        num_inference_steps: int | None = None,
        guidance_scale: float = 1.0,
        pnpnet: PnPNet | None = None,
        crop: Sequence[int] | None = None,
        eta: float = 0.0,
        progress: bool = True,
        chunk_size: int = 16,
        seed: int = 0,
        previous_timestep: PreviousTimestep | str = PreviousTimestep.NEXT_IN_SCHEDULE,
        standardisation: Standardisation | None = None,
        pnpnet_features: bool = True,
        pnpnet_image: bool = False,
    ) -> None:
        super().__init__()
        if standardisation is not None and not isinstance(standardisation, Standardisation):
            raise TypeError(f"standardisation must be a Standardisation or None, got {type(standardisation).__name__}")
        if pnpnet is None and (pnpnet_image or not pnpnet_features):
            raise ValueError("pnpnet must be given for pnpnet_image=True or pnpnet_features=False; got pnpnet=None, "
                             f"pnpnet_features={pnpnet_features}, pnpnet_image={pnpnet_image}")
        self.standardisation = standardisation or Standardisation()
        self.pnpnet_features = bool(pnpnet_features)
        self.pnpnet_image = bool(pnpnet_image)
        if not isinstance(scheduler, DDPMScheduler | DDIMScheduler):
            raise TypeError(f"scheduler must be a MONAI DDPMScheduler or DDIMScheduler, got {type(scheduler).__name__}")
        check_choice(scheduler.prediction_type, PredictionType, "scheduler.prediction_type")
        self.scheduler = scheduler
        total = int(scheduler.num_train_timesteps)
        steps = (
            total if num_inference_steps is None else check_int(num_inference_steps, "num_inference_steps", minimum=1)
        )
        if steps > total:
            raise ValueError(f"num_inference_steps must be <= scheduler.num_train_timesteps ({total}), got {steps}")
        if isinstance(scheduler, DDPMScheduler) and steps != total:
            raise ValueError(
                f"a DDPMScheduler samples every step: num_inference_steps must be None or {total}, got {steps} "
                "(use a DDIMScheduler for fewer steps)"
            )
        self.num_inference_steps = steps
        self.guidance_scale = check_real(guidance_scale, "guidance_scale (λ2)", ">= 0", lambda v: v >= 0)
        if pnpnet is not None and not isinstance(pnpnet, PnPNet):
            raise TypeError(f"pnpnet must be a PnPNet or None, got {type(pnpnet).__name__}")
        self.pnpnet = pnpnet
        self.crop = self._check_crop(crop)
        eta = check_real(eta, "eta", "in [0, 1]", lambda v: 0 <= v <= 1)
        if isinstance(scheduler, DDPMScheduler) and eta != 0:
            raise ValueError(f"eta applies to a DDIMScheduler only; got eta={eta} with a DDPMScheduler")
        self.eta = eta
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool, got {progress!r}")
        self.progress = progress
        self.chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.previous_timestep = check_choice(previous_timestep, PreviousTimestep, "previous_timestep")

    def with_guidance(self, guidance_scale: float, *, name: str = "guidance_scale (λ2)") -> LegoPETInferer:
        """A shallow copy with λ2 = ``guidance_scale`` (same scheduler, steps, PnPNet, crop, η); ``name`` in errors."""
        copied = copy.copy(self)
        copied.guidance_scale = check_real(guidance_scale, name, ">= 0", lambda v: v >= 0)
        return copied

    @staticmethod
    def _check_crop(crop: Sequence[int] | None) -> tuple[int, int, int, int] | None:
        if crop is None:
            return None
        if (
            isinstance(crop, str | bytes)
            or not isinstance(crop, Sequence)
            or len(crop) != 4
            or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in crop)
        ):
            raise TypeError(f"crop must be None or (top, left, height, width) ints, got {crop!r}")
        top, left, height, width = (int(c) for c in crop)
        if top < 0 or left < 0 or height < 1 or width < 1:
            raise ValueError(f"crop must have top, left >= 0 and height, width >= 1, got {tuple(crop)}")
        return top, left, height, width

    # ------------------------------------------------------------------ building blocks
    @torch.no_grad()
    def condition(self, sinogram: torch.Tensor) -> LegoPETCondition:
        """C = {s, b_d, b_m} (PnPNet features once per sample, in chunks of ``chunk_size``); {s} without PnPNet."""
        sinogram = _check_sinogram(sinogram)
        if self.pnpnet is None:
            return LegoPETCondition(sinogram)
        parts = [
            pnpnet_condition(sinogram[start : start + self.chunk_size], self.pnpnet, features=self.pnpnet_features,
                             image=self.pnpnet_image, standardisation=self.standardisation)
            for start in range(0, sinogram.shape[0], self.chunk_size)
        ]
        stack = torch.cat([p.sinogram for p in parts])
        if not self.pnpnet_features:
            return LegoPETCondition(stack)
        return LegoPETCondition(
            stack,
            tuple(torch.cat(level) for level in zip(*(p.down_residuals for p in parts), strict=True)),
            torch.cat([p.mid_residual for p in parts]),
        )

    @staticmethod
    def null(condition: LegoPETCondition) -> LegoPETCondition:
        """∅ of the same shapes as ``condition`` (zeros)."""
        features = None
        if condition.down_residuals is not None and condition.mid_residual is not None:
            features = FeatureShapes(
                tuple(tuple(r.shape) for r in condition.down_residuals), tuple(condition.mid_residual.shape)
            )
        s = condition.sinogram
        return null_condition(s.shape, features, dtype=s.dtype, device=s.device)

    def guided_noise(self, network: Network, x_t: torch.Tensor, t: int, condition: LegoPETCondition) -> torch.Tensor:
        """ε̃ = (1 + λ2) ε_θ(x_t, t, C) − λ2 ε_θ(x_t, t, ∅), ``(B, 1, H, W)``; exactly ε_θ(x_t, t, C) when λ2 = 0."""
        null = self.null(condition) if self.guidance_scale > 0 else None
        outputs = []
        for start in range(0, x_t.shape[0], self.chunk_size):
            stop = start + self.chunk_size
            x = x_t[start:stop]
            cond = slice_condition(condition, start, stop)
            if null is None:
                timesteps = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
                outputs.append(_call_network(network, x, timesteps, cond))
                continue
            both = _cat_conditions(cond, slice_condition(null, start, stop))
            timesteps = torch.full((2 * x.shape[0],), int(t), dtype=torch.long, device=x.device)
            eps_c, eps_u = _call_network(network, torch.cat([x, x]), timesteps, both).chunk(2)
            outputs.append(classifier_free_guidance(eps_c, eps_u, self.guidance_scale))
        return torch.cat(outputs)

    def crop_image(self, image: torch.Tensor) -> torch.Tensor:
        """``image[..., top:top+height, left:left+width]`` (no crop when ``crop`` is ``None``)."""
        if self.crop is None:
            return image
        top, left, height, width = self.crop
        h, w = image.shape[-2:]
        if top + height > h or left + width > w:
            raise ValueError(
                f"crop (top={top}, left={left}, height={height}, width={width}) does not fit the image grid ({h}, {w})"
            )
        return image[..., top : top + height, left : left + width]

    # ------------------------------------------------------------------ sampler
    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: Network,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample x_0 given the sinograms.

        Args:
            inputs: sinograms s ``(B, 1, H, W)`` on the (padded) image grid, finite.
            network: ε- (v-, x_0-) predictor (module docstring contract).
            generator: source of x_T and of the DDPM / DDIM (η > 0) noise; must be on the device of ``inputs``
                (MONAI's schedulers draw their noise there); ``None`` = ``torch.Generator(inputs.device)`` seeded with
                ``seed``.

        Returns:
            The sampled images ``(B, 1, height, width)`` in network units (the standardisation inverted) after the
            crop (``(B, 1, H, W)`` without one).
        """
        sinogram = _check_sinogram(inputs)
        if not callable(network):
            raise TypeError(f"network must be callable, got {type(network).__name__}")
        if generator is None:
            generator = torch.Generator(device=sinogram.device).manual_seed(self.seed)
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if generator.device.type != sinogram.device.type:
            raise ValueError(
                f"generator must be on the device of inputs ({sinogram.device}), got a generator on {generator.device}"
            )
        self.crop_image(sinogram)  # validate the crop before sampling
        condition = self.condition(sinogram)
        x_t = torch.randn(sinogram.shape, generator=generator, dtype=sinogram.dtype, device=sinogram.device)
        self.scheduler.set_timesteps(self.num_inference_steps, device=sinogram.device)
        timesteps = [int(t) for t in self.scheduler.timesteps.tolist()]
        if isinstance(self.scheduler, DDIMScheduler):
            rule: DDIMStep | DDPMStep = DDIMStep(
                scheduler=self.scheduler, timesteps=timesteps, eta=self.eta, previous_timestep=self.previous_timestep
            )
        else:
            rule = DDPMStep(scheduler=self.scheduler, timesteps=timesteps)
        x_t, _ = self.sample(x_t, network, condition, timesteps, step_rule=rule, generator=generator)
        return self.crop_image(self.standardisation.inverse(x_t))

    @torch.no_grad()
    def sample_many(
        self,
        inputs: torch.Tensor,
        network: Network,
        *,
        num_samples: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``num_samples`` independent samples per sinogram: ``(num_samples, B, 1, height, width)``.

        Sample k of every sinogram is drawn with x_T (and the DDPM / η noise) of the k-th call of :meth:`__call__`
        on the same ``generator``, so sample 0 is exactly what one call gives.  Their mean is the posterior-mean
        estimate a user reports, their per-pixel standard deviation the uncertainty map.
        """
        count = check_int(num_samples, "num_samples", minimum=1)
        sinogram = _check_sinogram(inputs)
        if generator is None:
            generator = torch.Generator(device=sinogram.device).manual_seed(self.seed)
        return torch.stack([self(sinogram, network, generator=generator) for _ in range(count)])

    def sample(
        self,
        x_t: torch.Tensor,
        network: Network,
        condition: LegoPETCondition,
        timesteps: Sequence[int],
        *,
        step_rule: StepRule,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`bundle.diffusion.sampler.sample` from ``x_t`` at ``timesteps[0]`` with the guided prediction, the
        scheduler's ``prediction_type`` and its ``clip_sample``; returns (x after the last step, the last x̂_0), both
        in the model's (standardised) units."""
        clip = self.scheduler.clip_sample_values if self.scheduler.clip_sample else None
        return sample(
            x_t,
            timesteps,
            model=lambda x, t: self.guided_noise(network, x, t, condition),
            step_rule=step_rule,
            prediction_type=self.scheduler.prediction_type,
            x0_transform=None if clip is None else lambda x0: x0.clamp(*clip),
            generator=generator,
            progress=self.progress,
            desc="LegoPET",
        )


class LegoPETTrainingInferer(Inferer):
    """Training forward of the LegoPET denoiser / cDPM for MONAI's ``SupervisedTrainer``.

    Called as ``inferer(x_0, network, noise=ε, timesteps=t, condition=s[, down_residuals=b_d, mid_residual=b_m])``
    with the kwargs of :class:`bundle.engines.LegoPETPrepareBatch`; returns ε_θ(x_t, t, C) (v or x_0 for a
    scheduler with that ``prediction_type``) with x_t = ``scheduler.add_noise(x_0, ε, t)`` = sqrt(ᾱ_t) x_0 +
    sqrt(1 − ᾱ_t) ε.  The loss (MSE against the prepare-batch target) is the trainer's.

    Args (keyword-only):
        scheduler: the MONAI scheduler defining ᾱ_t (the sampler's, T = 1000 in the paper).
    """

    def __init__(self, *, scheduler: DDPMScheduler | DDIMScheduler) -> None:
        super().__init__()
        if not callable(getattr(scheduler, "add_noise", None)):
            raise TypeError(f"scheduler must be a MONAI scheduler with add_noise, got {type(scheduler).__name__}")
        self.scheduler = scheduler

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: Network,
        *,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: torch.Tensor,
        down_residuals: Sequence[torch.Tensor] | None = None,
        mid_residual: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """ε_θ(x_t, t, C), ``(B, 1, H, W)``."""
        if kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
        x_t = self.scheduler.add_noise(original_samples=inputs, noise=noise, timesteps=timesteps)
        cond = LegoPETCondition(condition, None if down_residuals is None else tuple(down_residuals), mid_residual)
        return _call_network(network, x_t, timesteps, cond)


def default_crop(image_shape: Sequence[int], pad_size: int) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of the unpadded image in the padded grid (:func:`padding_offsets`)."""
    return tuple(padding_offsets(image_shape, pad_size))  # type: ignore[return-value]
