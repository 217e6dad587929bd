"""The GAN baselines of the LegoPET study (paper section 3.3): cGAN and Pix2Pix, sinogram -> PET image.

One training iteration for the stock MONAI ``SupervisedTrainer`` (:class:`ConditionalGANIteration`, its
``iteration_update``): the trainer's ``network`` is the generator G, its ``optimizer`` G's optimizer; the
discriminator D and its optimizer belong to the iteration.  The batch comes through the trainer's
``prepare_batch`` as (s, x): the sinogram in network units and the reference image, both zero-padded to one square
grid ``(B, 1, S, S)`` (``configs/legopet/train_pnpnet.json``).  D is *conditional*: it sees the pair
[s, image] as 2 channels ``(B, 2, S, S)`` and returns patch logits ``(B, 1, P, P)`` (MONAI ``PatchDiscriminator``;
its last output).  Per iteration::

    x̂ = G(s)
    L_G = w_adv · ℓ(D([s, x̂]), real) + w_L1 · mean|x̂ − x|                  (generator step, D frozen)
    L_D = ½ [ℓ(D([s, x]), real) + ℓ(D([s, x̂.detach()]), fake)]              (discriminator step, G untouched)

ℓ is MONAI's ``PatchAdversarialLoss`` (mean over patches) with ``criterion``:

* ``"least_squares"`` (LSGAN, Mao et al. 2017, as pix2pix's ``lsgan`` mode): ℓ(l, real) = mean (l − 1)²,
  ℓ(l, fake) = mean l² on the raw logits l (``no_activation_leastsq=True``: MONAI's default would first apply a
  leaky ReLU).
* ``"bce"`` (Goodfellow et al. 2014 / Mirza & Osindero 2014): ℓ(l, real) = mean −log σ(l),
  ℓ(l, fake) = mean −log(1 − σ(l)); the generator uses the non-saturating form −log σ(l).
* ``"hinge"``: MONAI's hinge loss (not used by the baselines).

The two baselines differ only in ℓ and the weights (``configs/legopet/cgan.json``, ``configs/legopet/pix2pix.json``):

* **Pix2Pix** (Isola et al. 2017; the paper: "a conditional least squares GAN"): least squares, w_L1 = 100,
  w_adv = 1, PatchGAN D.
* **cGAN** (Mirza & Osindero 2014; the paper: "a standard conditional GAN for image reconstruction"): bce,
  w_adv = 1 and w_L1 = 0 by default, i.e. the adversarial objective alone with the condition s given to both G and
  D.  The paper states neither the cGAN's losses nor its weights; this is our reading of "standard", and w_L1 stays
  configurable (``l1_weight``).

Order within one iteration (as MONAI's GAN tutorials and :class:`bundle.engines.upete.AutoencoderGANIteration`):
the generator step first (D's parameters frozen, so G's backward pass leaves no gradient on D), then the
discriminator step on the fake of that same forward pass, detached (so it leaves no gradient on G).  D runs in train
mode in both steps, so its batch-norm statistics also see the batch of the generator step (as in pix2pix).  With
w_adv = 0 D is neither evaluated nor trained (the step is plain L1 regression).  No AMP.  Randomness: none beyond
torch's global RNG (the training loader's order; G's dropout when configured).

The output is a dict with ``image`` (s), ``label`` (x), ``pred`` (x̂, detached), ``loss`` (L_G) and the terms
``l1``, ``g_adv``, ``d_loss``, ``d_real``, ``d_fake`` as 0-dim tensors.  As in ``SupervisedTrainer._iteration`` it
is set as ``engine.state.output`` and ``IterationEvents.MODEL_COMPLETED`` is fired, so a trainer with
``decollate=True`` (the default) turns it into its usual per-item list and the regression configs' handlers
(``from_engine(['loss'], first=True)``, :func:`bundle.handlers.output_transforms.scalar_terms`) read it unchanged.
Importing this module runs nothing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.losses import PatchAdversarialLoss
from monai.losses.adversarial_loss import AdversarialCriterions
from monai.utils import CommonKeys
from torch import nn

__all__ = ["AdversarialCriterions", "ConditionalGANIteration"]


def _weight(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


def _pair(sinogram: object, image: object) -> None:
    for name, value in (("sinogram", sinogram), ("image", image)):
        if not isinstance(value, torch.Tensor) or value.ndim != 4 or value.shape[1] != 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a (B, 1, H, W) tensor, got {shape}")
    if sinogram.shape != image.shape:
        raise ValueError(f"sinogram and image must be on one padded grid, got {tuple(sinogram.shape)} and "
                         f"{tuple(image.shape)}")


class ConditionalGANIteration:
    """``iteration_update(engine, batchdata)`` of a MONAI ``SupervisedTrainer`` training a conditional GAN
    (module docstring; ``engine.network`` = G, ``engine.optimizer`` = G's optimizer).

    Args (keyword-only):
        discriminator: D, taking ``(B, 2, H, W)`` = [sinogram, image] (MONAI ``PatchDiscriminator`` with
            ``in_channels=2``; a list/tuple output counts by its last entry).
        d_optimizer: D's optimizer (it must optimise D's parameters only).
        criterion: ``"least_squares"`` (Pix2Pix), ``"bce"`` (cGAN) or ``"hinge"``
            (:class:`monai.losses.adversarial_loss.AdversarialCriterions`).
        adversarial_weight: w_adv ≥ 0.
        l1_weight: w_L1 ≥ 0 (at least one of the two weights > 0).

    Raises:
        TypeError: ``discriminator`` is no ``nn.Module``, ``d_optimizer`` no ``torch.optim.Optimizer``, a weight is
            no real number.
        ValueError: unknown ``criterion``, a negative or non-finite weight, both weights 0, or ``d_optimizer``
            holding parameters that are not D's.
    """

    def __init__(
        self,
        *,
        discriminator: nn.Module,
        d_optimizer: torch.optim.Optimizer,
        criterion: str = AdversarialCriterions.LEAST_SQUARE,
        adversarial_weight: float = 1.0,
        l1_weight: float = 100.0,
    ) -> None:
        if not isinstance(discriminator, nn.Module):
            raise TypeError(f"discriminator must be a torch.nn.Module, got {type(discriminator).__name__}")
        if not isinstance(d_optimizer, torch.optim.Optimizer):
            raise TypeError(f"d_optimizer must be a torch.optim.Optimizer, got {type(d_optimizer).__name__}")
        own = {id(p) for p in discriminator.parameters()}
        if any(id(p) not in own for group in d_optimizer.param_groups for p in group["params"]):
            raise ValueError("d_optimizer must optimise the discriminator's parameters only, but it holds others "
                             "(e.g. the generator's)")
        if not isinstance(criterion, str) or criterion not in list(AdversarialCriterions):
            raise ValueError(f"criterion must be one of {[c.value for c in AdversarialCriterions]}, got {criterion!r}")
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.criterion = AdversarialCriterions(criterion)
        self.adversarial_weight = _weight(adversarial_weight, "adversarial_weight")
        self.l1_weight = _weight(l1_weight, "l1_weight")
        if self.adversarial_weight == 0 and self.l1_weight == 0:
            raise ValueError("adversarial_weight and l1_weight are both 0: nothing would be trained")
        self.adversarial_loss = PatchAdversarialLoss(criterion=self.criterion, no_activation_leastsq=True)

    # ------------------------------------------------------------------------------------------------ parts
    def logits(self, sinogram: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """D's patch logits for the pairs [s, image]: ``(B, 1, H, W)`` each → D(``(B, 2, H, W)``)."""
        _pair(sinogram, image)
        out = self.discriminator(torch.cat([sinogram, image], dim=1).contiguous().float())
        return out[-1] if isinstance(out, list | tuple) else out

    def generator_step(
        self, generator: nn.Module, optimizer: torch.optim.Optimizer, sinogram: torch.Tensor, reference: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimiser step of G on L_G (D's parameters frozen during it).

        Returns:
            x̂ = G(s) ``(B, 1, H, W)`` detached (before the step), and ``{"loss": L_G, "l1", "g_adv"}`` (detached).
        """
        _pair(sinogram, reference)
        generator.train()
        optimizer.zero_grad(set_to_none=True)
        fake = generator(sinogram)
        if fake.shape != reference.shape:
            raise ValueError(f"the generator must return the reference's shape {tuple(reference.shape)}, "
                             f"got {tuple(fake.shape)}")
        l1 = (fake - reference).abs().mean()
        loss = self.l1_weight * l1
        g_adv = torch.zeros((), device=fake.device)
        if self.adversarial_weight > 0:
            frozen = [(p, p.requires_grad) for p in self.discriminator.parameters()]
            try:
                for p, _ in frozen:
                    p.requires_grad_(False)
                self.discriminator.train()
                g_adv = self.adversarial_loss(self.logits(sinogram, fake), target_is_real=True,
                                              for_discriminator=False)
                loss = loss + self.adversarial_weight * g_adv
                loss.backward()
            finally:
                for p, flag in frozen:
                    p.requires_grad_(flag)
        else:
            loss.backward()
        optimizer.step()
        return fake.detach(), {"loss": loss.detach(), "l1": l1.detach(), "g_adv": g_adv.detach()}

    def discriminator_step(
        self, sinogram: torch.Tensor, reference: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One optimiser step of D on L_D; ``fake`` is detached here, so no gradient reaches G.

        Returns:
            ``{"d_loss": L_D, "d_real": ℓ(D([s, x]), real), "d_fake": ℓ(D([s, x̂]), fake)}`` (detached).
        """
        self.discriminator.train()
        self.d_optimizer.zero_grad(set_to_none=True)
        real = self.adversarial_loss(self.logits(sinogram, reference), target_is_real=True, for_discriminator=True)
        fake_term = self.adversarial_loss(self.logits(sinogram, fake.detach()), target_is_real=False,
                                          for_discriminator=True)
        d_loss = 0.5 * (real + fake_term)
        d_loss.backward()
        self.d_optimizer.step()
        return {"d_loss": d_loss.detach(), "d_real": real.detach(), "d_fake": fake_term.detach()}

    # ------------------------------------------------------------------------------------------------ engine
    def __call__(self, engine: Any, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        if batchdata is None:
            raise ValueError("batchdata must be a training batch, got None")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking,
                                     **getattr(engine, "to_kwargs", {}))
        if len(batch) != 2:
            raise ValueError(f"prepare_batch must return (sinogram, reference), got {len(batch)} items")
        sinogram, reference = batch
        fake, g_terms = self.generator_step(engine.network, engine.optimizer, sinogram, reference)
        zero = torch.zeros((), device=fake.device)
        d_terms = {"d_loss": zero, "d_real": zero, "d_fake": zero}
        if self.adversarial_weight > 0:
            d_terms = self.discriminator_step(sinogram, reference, fake)
        engine.state.output = {
            CommonKeys.IMAGE: sinogram,
            CommonKeys.LABEL: reference,
            CommonKeys.PRED: fake,
            CommonKeys.LOSS: g_terms["loss"],
            "l1": g_terms["l1"],
            "g_adv": g_terms["g_adv"],
            **d_terms,
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)  # MONAI decollates the output here (decollate=True)
        return engine.state.output
