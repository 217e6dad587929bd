"""LegoPET training batches: noise, timesteps, frozen PnPNet features and classifier-free condition dropout.

For a batch of reference images x_0 ``(B, 1, H, W)`` and sinograms s ``(B, 1, H, W)`` (on the image grid), one call
draws, in this order from one explicit ``torch.Generator``:

1. the drop mask m_b ~ Bernoulli(p_dp) per sample (``torch.rand(B) < p_dp``);
2. timesteps t_b ~ U{0, …, T − 1};
3. noise ε ~ N(0, I) of the image's shape;

computes b_d, b_m = PnPNet.features(s) once under ``torch.no_grad`` (PnPNet frozen, in eval mode for the call), and
replaces {s, b_d, b_m} of every dropped sample jointly by the null condition ∅ (zeros, :func:`null_condition`).

x_0 is first put into the schedule's units by the ``standardisation`` (z = (x' − mean) / std,
:class:`~bundle.transforms.scaling.Standardisation`); "x_0" below is that z.  It returns MONAI's
``DiffusionPrepareBatch`` tuple ``(x_0, target, (), kwargs)`` with target = ε (paper eq. (6):
‖ε − ε_θ(x_t, t, C)‖²; x_0 or v for a scheduler with that ``prediction_type``) and
``kwargs = {"noise", "timesteps", "condition", "down_residuals", "mid_residual"}`` (the last two only with a PnPNet;
without one this prepares cDPM batches with sinogram dropout only).  The noisy image
x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε (paper eq. (3)) is formed by the training inferer from ``noise`` and
``timesteps``, as with MONAI's ``DiffusionInferer``.

Exact resume (``configs/legopet/resume.json``) needs more than weights in a checkpoint; the training configs save
``checkpoint_dict`` = network, optimizer, EMA (diffusion), and three entries:

* :class:`~bundle.handlers.resume.TrainerState` (``trainer``): the trainer's ignite state (iteration, epoch).
* :class:`~bundle.checkpoint.RandomStates` (``rng``): the explicit generators
  (``LegoPETPrepareBatch.generator``: drop mask, timesteps, noise) and torch's global RNG (the training loader's
  shuffle order, drawn from it by ``DataLoader``); the LegoPET pipelines have no random transforms.
* :class:`~bundle.handlers.key_metric_state.KeyMetricState` (``validation``, PnPNet / DeepPET): the best validation
  metric and the
  best-checkpoint tracking of the evaluator's key-metric saver, so that a resumed run does not overwrite
  ``*_best.pt`` with a worse model.

:class:`~bundle.handlers.resume.ResumeTraining` loads them all from the newest checkpoint of a folder and refuses
to start fresh (shared with the uPETe resume overlay).  Resuming
from a checkpoint written at the end of an epoch (the interval checkpoints, the final one of a finished run) continues
bit for bit; a final checkpoint that MONAI's saver writes when an exception stops training mid-epoch continues the
iteration count, but the rest of that epoch sees a new data order (ignite restarts the loader).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import DiffusionPrepareBatch

from bundle._checks import check_choice
from bundle.diffusion.ddim import PredictionType
from bundle.keys import Keys
from bundle.networks.legopet import FeatureShapes, LegoPETCondition, PnPNet, null_condition, pnpnet_condition
from bundle.transforms.scaling import Standardisation

__all__ = ["LegoPETPrepareBatch"]


class LegoPETPrepareBatch(DiffusionPrepareBatch):
    """``prepare_batch`` for MONAI trainers (``SupervisedTrainer``) training the LegoPET denoiser or the cDPM.

    Args (keyword-only):
        num_train_timesteps: T (1000 in the paper).
        pnpnet: the trained, frozen :class:`PnPNet`; ``None`` = cDPM (condition = sinogram only).
        drop_probability: p_dp ∈ [0, 1] (paper: 0, 0.1, 0.2, 0.5).
        image_key: batch key of the reference image x_0 ``(B, 1, H, W)``.
        condition_name: batch key of the sinogram s ``(B, 1, H, W)``.
        generator: source of the drop mask, timesteps and noise (on the device the draws are made on; the draws are
            moved to the batch device); ``None`` = ``torch.Generator().manual_seed(0)``.
        scheduler: the training scheduler; its ``prediction_type`` sets the target (``epsilon``: ε, ``sample``: x_0,
            ``v_prediction``: v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x_0 from ``scheduler.get_velocity``); ``None`` = ε.
        standardisation: :class:`~bundle.transforms.scaling.Standardisation` of x_0 (network units → the schedule's
            units; the sampler inverts it); ``None`` = identity.
        pnpnet_features: add PnPNet's b_d, b_m (LegoPET); ``False`` with ``pnpnet_image`` = "cDPM + image condition".
        pnpnet_image: stack the PnPNet output image with s (the image-condition extension,
            :func:`bundle.networks.legopet.pnpnet_condition`); needs ``pnpnet``.
    """

    def __init__(
        self,
        *,
        num_train_timesteps: int = 1000,
        pnpnet: PnPNet | None = None,
        drop_probability: float = 0.1,
        image_key: str = Keys.REFERENCE,
        condition_name: str = Keys.SINOGRAM,
        generator: torch.Generator | None = None,
        scheduler: object | None = None,
        standardisation: Standardisation | None = None,
        pnpnet_features: bool = True,
        pnpnet_image: bool = False,
    ) -> None:
        if not isinstance(num_train_timesteps, numbers.Integral) or isinstance(num_train_timesteps, bool):
            raise TypeError(f"num_train_timesteps must be an int, got {num_train_timesteps!r}")
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        super().__init__(num_train_timesteps=int(num_train_timesteps), condition_name=str(condition_name))
        if pnpnet is not None and not isinstance(pnpnet, PnPNet):
            raise TypeError(f"pnpnet must be a PnPNet or None, got {type(pnpnet).__name__}")
        if not isinstance(drop_probability, numbers.Real) or isinstance(drop_probability, bool):
            raise TypeError(f"drop_probability must be a real number, got {drop_probability!r}")
        if not 0.0 <= float(drop_probability) <= 1.0:
            raise ValueError(f"drop_probability must be in [0, 1], got {drop_probability}")
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if standardisation is not None and not isinstance(standardisation, Standardisation):
            raise TypeError(f"standardisation must be a Standardisation or None, got {type(standardisation).__name__}")
        if pnpnet is None and (pnpnet_image or not pnpnet_features):
            raise ValueError("pnpnet must be given for pnpnet_image=True or pnpnet_features=False (cDPM: leave both "
                             f"at their defaults); got pnpnet=None, pnpnet_features={pnpnet_features}, "
                             f"pnpnet_image={pnpnet_image}")
        self.standardisation = standardisation or Standardisation()
        self.pnpnet_features = bool(pnpnet_features)
        self.pnpnet_image = bool(pnpnet_image)
        self.pnpnet = pnpnet
        self.drop_probability = float(drop_probability)
        self.image_key = str(image_key)
        self.generator = generator
        self.scheduler = scheduler
        self.prediction_type = (
            PredictionType.EPSILON if scheduler is None
            else check_choice(getattr(scheduler, "prediction_type", None), PredictionType, "scheduler.prediction_type")
        )

    # ------------------------------------------------------------------ MONAI hooks (explicit generator)
    def get_noise(self, images: torch.Tensor) -> torch.Tensor:
        """ε ~ N(0, I) of ``images``' shape, from :attr:`generator`."""
        noise = torch.randn(images.shape, generator=self.generator, dtype=images.dtype, device=self.generator.device)
        return noise.to(images.device)

    def get_timesteps(self, images: torch.Tensor) -> torch.Tensor:
        """t ~ U{0, …, T − 1} per sample, ``(B,)`` long, from :attr:`generator`."""
        t = torch.randint(
            0, self.num_train_timesteps, (images.shape[0],), generator=self.generator, device=self.generator.device
        )
        return t.long().to(images.device)

    def get_drop_mask(self, batch_size: int) -> torch.Tensor:
        """``(B,)`` bool, True where the condition is replaced by ∅ (Bernoulli(p_dp), from :attr:`generator`)."""
        u = torch.rand(batch_size, generator=self.generator, device=self.generator.device)
        return u < self.drop_probability

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The regression target of the scheduler's ``prediction_type``: ε, x_0 or v."""
        if self.prediction_type is PredictionType.SAMPLE:
            return images
        if self.prediction_type is PredictionType.V_PREDICTION:
            return self.scheduler.get_velocity(images, noise, timesteps)  # type: ignore[union-attr]
        return noise

    # ------------------------------------------------------------------ condition
    def condition(self, sinogram: torch.Tensor, drop_mask: torch.Tensor) -> LegoPETCondition:
        """C = {s, b_d, b_m} with the samples of ``drop_mask`` replaced jointly by the null condition."""
        if self.pnpnet is None:
            full = LegoPETCondition(sinogram)
        else:
            was_training = self.pnpnet.training
            self.pnpnet.eval()
            try:
                full = pnpnet_condition(sinogram, self.pnpnet, features=self.pnpnet_features,
                                        image=self.pnpnet_image, standardisation=self.standardisation)
            finally:
                self.pnpnet.train(was_training)
        down, mid = full.down_residuals, full.mid_residual
        features = None
        if down is not None and mid is not None:
            features = FeatureShapes(tuple(tuple(r.shape) for r in down), tuple(mid.shape))
        null = null_condition(full.sinogram.shape, features, dtype=sinogram.dtype, device=sinogram.device)
        keep = ~drop_mask.to(sinogram.device)

        def select(value: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
            return torch.where(keep.reshape((-1,) + (1,) * (value.ndim - 1)), value, empty)

        if down is None or mid is None or null.down_residuals is None or null.mid_residual is None:
            return LegoPETCondition(select(full.sinogram, null.sinogram))
        return LegoPETCondition(
            select(full.sinogram, null.sinogram),
            tuple(select(r, z) for r, z in zip(down, null.down_residuals, strict=True)),
            select(mid, null.mid_residual),
        )

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict[str, Any]]:
        """``(x_0, ε, (), {"noise", "timesteps", "condition"[, "down_residuals", "mid_residual"]})``."""
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"batchdata must be a mapping (dict batch), got {type(batchdata).__name__}")
        for key in (self.image_key, self.condition_name):
            if key not in batchdata:
                raise KeyError(f"batchdata has no {key!r} entry; keys: {sorted(batchdata)}")
        images = torch.as_tensor(batchdata[self.image_key]).to(device, non_blocking=non_blocking, **kwargs)
        sinogram = torch.as_tensor(batchdata[self.condition_name]).to(device, non_blocking=non_blocking, **kwargs)
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"batchdata[{self.image_key!r}] must have shape (B, 1, H, W), got {tuple(images.shape)}")
        if tuple(sinogram.shape) != tuple(images.shape):
            raise ValueError(
                f"batchdata[{self.condition_name!r}] must have the image's shape {tuple(images.shape)} (sinogram "
                f"resampled/padded to the image grid), got {tuple(sinogram.shape)}"
            )
        images = self.standardisation.forward(images)  # x_0 in the schedule's units
        drop_mask = self.get_drop_mask(images.shape[0])
        timesteps = self.get_timesteps(images)
        noise = self.get_noise(images)
        target = self.get_target(images, noise, timesteps)
        condition = self.condition(sinogram, drop_mask)
        infer_kwargs: dict[str, Any] = {"noise": noise, "timesteps": timesteps, "condition": condition.sinogram}
        if condition.down_residuals is not None:
            infer_kwargs["down_residuals"] = condition.down_residuals
            infer_kwargs["mid_residual"] = condition.mid_residual
        return images, target, (), infer_kwargs
