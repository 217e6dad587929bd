"""uPETe training steps for the stock MONAI ``SupervisedTrainer``: the autoencoder's GAN iteration and the latent
diffusion ``prepare_batch``.

Autoencoder (stage 1).  MONAI's ``AdversarialTrainer`` passes the generator output straight to the discriminator,
but ``AutoencoderKL`` returns ``(x̂, μ, σ)`` and the KL term needs μ and σ, so the GAN step is an
``iteration_update`` of ``SupervisedTrainer`` (:class:`AutoencoderGANIteration`).  Per iteration, with x the
SPET patches ``(B, 1, D, H, W)``::

    x̂, μ, σ = AE(x)
    L_G = |x̂ − x|₁ + w_KL · KL(μ, σ) + w_adv(it) · ℓ_adv(Disc(x̂), real) + w_p · P(x̂, x)     (generator step)
    L_D = ½ [ℓ_adv(Disc(x̂.detach()), fake) + ℓ_adv(Disc(x), real)]                           (discriminator step)
    KL(μ, σ) = ½ Σ_{c,voxels} (μ² + σ² − log σ² − 1) / B

with MONAI's ``PatchDiscriminator`` and ``PatchAdversarialLoss`` (least squares by default); w_adv(it) = 0 for
the first ``adversarial_warmup`` iterations (as MONAI's generative tutorials), so the discriminator starts on
reasonable reconstructions.  P is the optional perceptual loss (:class:`~bundle.losses.perceptual.LocalPerceptualLoss`,
off by default); KL is :func:`bundle.losses.kl.kl_divergence`.

Latent diffusion (stage 2).  :class:`LatentDiffusionPrepareBatch` draws t ~ U{0, …, T − 1} from an explicit
generator, forms z_t with the injected process (Gaussian: z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε in latent space; Poisson:
z_t = s·E(Poisson-degraded x_0 at dose d_t), :mod:`bundle.diffusion.latent`) and returns
``(z_t, z_0, (), {"timesteps": t, "ct": ct})``; the trainer's ``SimpleInferer`` then calls
``UPETe(z_t, timesteps=t, ct=ct)`` and the loss compares ẑ0 with z_0.  In the sinogram domain (Poisson variants,
``degraded_key`` set) t and x_t were drawn before cropping by :class:`~bundle.transforms.upete.RandDoseReductiond`
(thinned counts reconstructed by OSEM), and the step only encodes them: z_t = s·E(x_t).  Importing runs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.losses import PatchAdversarialLoss
from monai.utils import CommonKeys
from torch import nn

from bundle.diffusion.latent import LatentDiffusionProcess, PoissonLatentDiffusion
from bundle.keys import Keys
from bundle.losses.kl import kl_divergence
from bundle.networks.upete import UPETe

from .._checks import check_int as _check_int

__all__ = [
    "AutoencoderGANIteration",
    "LatentDiffusionPrepareBatch",
    "paired_prepare_batch",
]


def _check_weight(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


class AutoencoderGANIteration:
    """``iteration_update(engine, batchdata)`` of a MONAI ``SupervisedTrainer`` whose ``network`` is the
    ``AutoencoderKL`` and ``optimizer`` the generator's (module docstring).

    Args (keyword-only):
        discriminator: MONAI ``PatchDiscriminator`` (3D, 1 input channel).
        d_optimizer: its optimizer.
        image_key: batch key of the SPET patches.
        kl_weight: w_KL (small; default 1e-6).
        adversarial_weight: w_adv after the warm-up (default 0.01).
        adversarial_warmup: iterations without the adversarial terms (discriminator not trained either).
        criterion: ``PatchAdversarialLoss`` criterion.
        perceptual_loss: optional module P(x̂, x) (e.g. :class:`~bundle.losses.perceptual.LocalPerceptualLoss`);
            ``None`` = off.
        perceptual_weight: w_p.
    """

    def __init__(
        self,
        *,
        discriminator: nn.Module,
        d_optimizer: torch.optim.Optimizer,
        image_key: str = Keys.PET,
        kl_weight: float = 1e-6,
        adversarial_weight: float = 0.01,
        adversarial_warmup: int = 0,
        criterion: str = "least_squares",
        perceptual_loss: nn.Module | None = None,
        perceptual_weight: float = 0.001,
    ) -> None:
        if not isinstance(discriminator, nn.Module):
            raise TypeError(f"discriminator must be a torch.nn.Module, got {type(discriminator).__name__}")
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.image_key = image_key
        self.kl_weight = _check_weight(kl_weight, "kl_weight")
        self.adversarial_weight = _check_weight(adversarial_weight, "adversarial_weight")
        self.adversarial_warmup = _check_int(adversarial_warmup, "adversarial_warmup", minimum=0)
        self.adversarial_loss = PatchAdversarialLoss(criterion=criterion)
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = _check_weight(perceptual_weight, "perceptual_weight")

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.discriminator(x.contiguous().float())
        return out[-1] if isinstance(out, list | tuple) else out

    def __call__(self, engine: Any, batchdata: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if batchdata is None or self.image_key not in batchdata:
            raise ValueError(f"the batch must hold the SPET patches under {self.image_key!r}")
        x = batchdata[self.image_key].to(engine.state.device)
        adversarial = engine.state.iteration > self.adversarial_warmup and self.adversarial_weight > 0
        network, optimizer = engine.network, engine.optimizer
        network.train()
        optimizer.zero_grad(set_to_none=True)
        recon, z_mu, z_sigma = network(x)
        l1 = (recon - x).abs().mean()
        kl = kl_divergence(z_mu, z_sigma)
        loss = l1 + self.kl_weight * kl
        g_adv = torch.zeros((), device=x.device)
        if self.perceptual_loss is not None and self.perceptual_weight > 0:
            loss = loss + self.perceptual_weight * self.perceptual_loss(recon.float(), x.float())
        if adversarial:
            g_adv = self.adversarial_loss(self._logits(recon), target_is_real=True, for_discriminator=False)
            loss = loss + self.adversarial_weight * g_adv
        loss.backward()
        optimizer.step()
        d_loss = torch.zeros((), device=x.device)
        if adversarial:
            self.discriminator.train()
            self.d_optimizer.zero_grad(set_to_none=True)
            fake = self.adversarial_loss(self._logits(recon.detach()), target_is_real=False, for_discriminator=True)
            real = self.adversarial_loss(self._logits(x), target_is_real=True, for_discriminator=True)
            d_loss = 0.5 * (fake + real)
            (self.adversarial_weight * d_loss).backward()
            self.d_optimizer.step()
        return {
            CommonKeys.IMAGE: x,
            CommonKeys.LABEL: x,
            CommonKeys.PRED: recon.detach(),
            CommonKeys.LOSS: loss.detach(),
            "l1": l1.detach(),
            "kl": kl.detach(),
            "g_adv": g_adv.detach(),
            "d_loss": d_loss.detach(),
        }


class LatentDiffusionPrepareBatch:
    """``prepare_batch`` for a MONAI ``SupervisedTrainer`` training :class:`UPETe`'s denoiser (and E_CT).

    Args (keyword-only):
        model: the :class:`UPETe` being trained (its frozen autoencoder encodes x_0 and, for Poisson, x_t).
        process: the forward process (:class:`~bundle.diffusion.latent.GaussianLatentDiffusion` or
            :class:`~bundle.diffusion.latent.PoissonLatentDiffusion`).
        image_key: batch key of the SPET patches x_0 ``(B, 1, D, H, W)`` (network units).
        ct_key: batch key of the CT patches; read only when ``model.uses_ct``.
        seed: seed of the generator for t and the noise (on the CPU; draws are moved to the batch's device).
        degraded_key: sinogram-domain Poisson training: the batch key of the x_t patches made by
            :class:`~bundle.transforms.upete.RandDoseReductiond` (their steps under ``timestep_key``); ``None``
            (default) draws t and x_t here with ``process``.  Needs a :class:`PoissonLatentDiffusion` process.
        timestep_key: batch key of the steps that go with ``degraded_key``.
    """

    def __init__(
        self,
        *,
        model: UPETe,
        process: LatentDiffusionProcess,
        image_key: str = Keys.PET,
        ct_key: str = Keys.CT,
        seed: int = 0,
        degraded_key: str | None = None,
        timestep_key: str = Keys.TIMESTEP,
    ) -> None:
        if not isinstance(model, UPETe):
            raise TypeError(f"model must be a UPETe, got {type(model).__name__}")
        if not isinstance(process, LatentDiffusionProcess):
            raise TypeError(f"process must be a LatentDiffusionProcess, got {type(process).__name__}")
        self.model = model
        self.process = process
        self.image_key = image_key
        self.ct_key = ct_key
        self.generator = torch.Generator().manual_seed(_check_int(seed, "seed", minimum=0))
        if degraded_key is not None and not isinstance(process, PoissonLatentDiffusion):
            raise ValueError(
                f"degraded_key={degraded_key!r} (sinogram-domain x_t from the data) needs a PoissonLatentDiffusion "
                f"process, got {type(process).__name__}; use degraded_key=None for the Gaussian variants"
            )
        self.degraded_key = degraded_key
        self.timestep_key = timestep_key

    def __call__(
        self, batchdata: Mapping[str, torch.Tensor], device: torch.device | str | None = None,
        non_blocking: bool = False, **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict[str, Any]]:
        x0 = batchdata[self.image_key].to(device=device, non_blocking=non_blocking)
        ct = None
        if self.model.uses_ct:
            if self.ct_key not in batchdata:
                raise ValueError(f"the model uses CT but the batch has no {self.ct_key!r} entry")
            ct = batchdata[self.ct_key].to(device=device, non_blocking=non_blocking)
        self.model.autoencoder.eval()
        z0 = self.model.encode(x0)
        if self.degraded_key is None:
            t = torch.randint(0, self.process.num_train_timesteps, (x0.shape[0],), generator=self.generator)
            z_t = self.process.perturb(x0=x0, z0=z0, timesteps=t, encode=self.model.encode, generator=self.generator)
        else:
            x_t, t = self._degraded(batchdata, x0)
            z_t = self.model.encode(x_t.to(device=x0.device, non_blocking=non_blocking))
        return z_t, z0, (), {"timesteps": t.to(x0.device), "ct": ct}


    def _degraded(self, batchdata: Mapping[str, torch.Tensor], x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for key in (self.degraded_key, self.timestep_key):
            if key not in batchdata:
                raise ValueError(f"the batch has no {key!r} entry: layer RandDoseReductiond before the patch crop "
                                 "(configs/upete/train_ldm.json, poisson_domain 'sinogram')")
        x_t = batchdata[self.degraded_key]
        if tuple(x_t.shape) != tuple(x0.shape):
            raise ValueError(f"batch[{self.degraded_key!r}] has shape {tuple(x_t.shape)}, expected the SPET patches' "
                             f"{tuple(x0.shape)}: crop it together with {self.image_key!r}")
        t = torch.as_tensor(batchdata[self.timestep_key]).reshape(-1).to(device="cpu", dtype=torch.long)
        if t.shape != (x0.shape[0],) or bool(((t < 0) | (t >= self.process.num_train_timesteps)).any()):
            raise ValueError(f"batch[{self.timestep_key!r}] must hold {x0.shape[0]} steps in "
                             f"[0, {self.process.num_train_timesteps - 1}], got {t.tolist()}")
        return x_t, t


def paired_prepare_batch(*, input_key: str = Keys.PET_LOW, target_key: str = Keys.PET):
    """``prepare_batch`` for the supervised U-Net baseline: (LPET patch, SPET patch)."""

    def prepare(batchdata, device=None, non_blocking=False, **kwargs):
        return (
            batchdata[input_key].to(device=device, non_blocking=non_blocking),
            batchdata[target_key].to(device=device, non_blocking=non_blocking),
        )

    return prepare
