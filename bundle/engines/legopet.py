"""LegoPET training batches: noise, timesteps, frozen PnPNet features and classifier-free condition dropout.

For a batch of reference images x_0 ``(B, 1, H, W)`` and sinograms s ``(B, 1, H, W)`` (on the image grid), one call
draws, in this order from one explicit ``torch.Generator``:

1. the drop mask m_b ~ Bernoulli(p_dp) per sample (``torch.rand(B) < p_dp``);
2. timesteps t_b ~ U{0, …, T − 1};
3. noise ε ~ N(0, I) of the image's shape;

computes b_d, b_m = PnPNet.features(s) once under ``torch.no_grad`` (PnPNet frozen, in eval mode for the call), and
replaces {s, b_d, b_m} of every dropped sample jointly by the null condition ∅ (zeros, :func:`null_condition`).

It returns MONAI's ``DiffusionPrepareBatch`` tuple ``(x_0, target, (), kwargs)`` with target = ε (paper eq. (6):
‖ε − ε_θ(x_t, t, C)‖²) and ``kwargs = {"noise", "timesteps", "condition", "down_residuals", "mid_residual"}``
(the last two only with a PnPNet; without one this prepares cDPM batches with sinogram dropout only).  The noisy
image x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε (paper eq. (3)) is formed by the training inferer from ``noise`` and
``timesteps``, as with MONAI's ``DiffusionInferer``.

Exact resume (``configs/legopet/resume.json``) needs more than weights in a checkpoint; the training configs save
``checkpoint_dict`` = network, optimizer, EMA (diffusion), and three entries defined here:

* :class:`TrainerState` (``trainer``): the trainer's ignite state (iteration, epoch).  A proxy attached to the trainer,
  because a ``CheckpointSaver`` listed in the trainer's own ``train_handlers`` cannot reference ``@trainer``.
* :class:`RandomStates` (``rng``): the explicit generators (``LegoPETPrepareBatch.generator``: drop mask, timesteps,
  noise) and torch's global RNG (the training loader's shuffle order, drawn from it by ``DataLoader``).
* :class:`KeyMetricState` (``validation``, PnPNet / DeepPET): the best validation metric and the best-checkpoint
  tracking of the evaluator's key-metric saver, so that a resumed run does not overwrite ``*_best.pt`` with a worse
  model.

:class:`ResumeTraining` loads them all from the newest checkpoint of a folder and refuses to start fresh.  Resuming
from a checkpoint written at the end of an epoch (the interval checkpoints, the final one of a finished run) continues
bit for bit; a final checkpoint that MONAI's saver writes when an exception stops training mid-epoch continues the
iteration count, but the rest of that epoch sees a new data order (ignite restarts the loader).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import DiffusionPrepareBatch

from bundle.engines.checkpoints import ResumeFromLatest, latest_checkpoint
from bundle.keys import Keys
from bundle.networks.legopet import LegoPETCondition, PnPNet, null_condition

__all__ = [
    "KeyMetricState",
    "LegoPETPrepareBatch",
    "RandomStates",
    "ResumeTraining",
    "TrainerState",
    "resumable_checkpoint",
]

logger = logging.getLogger(__name__)


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
        self.pnpnet = pnpnet
        self.drop_probability = float(drop_probability)
        self.image_key = str(image_key)
        self.generator = generator

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

    # ------------------------------------------------------------------ condition
    def condition(self, sinogram: torch.Tensor, drop_mask: torch.Tensor) -> LegoPETCondition:
        """C = {s, b_d, b_m} with the samples of ``drop_mask`` replaced jointly by the null condition."""
        features = None
        down = mid = None
        if self.pnpnet is not None:
            was_training = self.pnpnet.training
            self.pnpnet.eval()
            try:
                with torch.no_grad():
                    down, mid = self.pnpnet.features(sinogram)
            finally:
                self.pnpnet.train(was_training)
            features = self.pnpnet.feature_shapes(*sinogram.shape[:1], *sinogram.shape[-2:])
        null = null_condition(sinogram.shape, features, dtype=sinogram.dtype, device=sinogram.device)
        keep = ~drop_mask.to(sinogram.device)

        def select(value: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
            return torch.where(keep.reshape((-1,) + (1,) * (value.ndim - 1)), value, empty)

        if down is None or mid is None or null.down_residuals is None or null.mid_residual is None:
            return LegoPETCondition(select(sinogram, null.sinogram))
        return LegoPETCondition(
            select(sinogram, null.sinogram),
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


# ---------------------------------------------------------------------------------------------------- resume
class TrainerState:
    """The trainer's ignite state as a checkpoint entry (``state_dict`` / ``load_state_dict``).

    List it among the trainer's ``train_handlers`` (MONAI calls :meth:`attach`) and put it into the checkpoint saver's
    ``save_dict`` under ``"trainer"``: the saver then stores ``trainer.state_dict()`` (iteration, epoch_length,
    max_epochs) although the saver, itself a train handler, cannot reference the trainer in a config.
    """

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        """Remember ``engine`` (registers no event handler); attaching again replaces it."""
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be an ignite Engine, got {type(engine).__name__}")
        self.engine = engine

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("TrainerState is not attached to a trainer: list it in train_handlers or call attach()")
        return self.engine

    def state_dict(self) -> dict[str, Any]:
        """``engine.state_dict()``: ``{"iteration", "epoch_length", "max_epochs"}`` (ignite)."""
        return dict(self._engine().state_dict())

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """``engine.load_state_dict(state_dict)``."""
        self._engine().load_state_dict(state_dict)


def _distributed_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    return 1


class RandomStates:
    """States of explicit ``torch.Generator`` objects and of torch's global RNG, as one checkpoint entry.

    ``state_dict()`` = ``{"generators": {name: ByteTensor}, "torch": ByteTensor[, "torch_cuda": [ByteTensor, ...]]}``
    (``"torch"`` / ``"torch_cuda"`` only with ``include_global``; CUDA states only once CUDA is initialised).  Restoring
    them at the start of a resumed run makes every later draw (condition dropout, timesteps, noise; the training
    loader's shuffle order, which ``DataLoader`` draws from the global RNG) equal to the uninterrupted run's.  NumPy's
    and Python's RNGs are not stored: the LegoPET pipelines have no random transforms.

    Under ``torch.distributed`` with several ranks only rank 0 saves, so :meth:`load_state_dict` leaves every rank's
    generators as they are (each keeps its own ``seed + rank`` stream; the resumed run is then not bit-identical to an
    uninterrupted one) and logs a warning.

    Args (keyword-only):
        generators: name -> ``torch.Generator`` (e.g. ``{"prepare_batch": prepare_batch.generator}``); ``None`` = none.
        include_global: also store torch's global CPU (and CUDA) RNG state.
    """

    def __init__(self, *, generators: Mapping[str, torch.Generator] | None = None, include_global: bool = True) -> None:
        if generators is None:
            generators = {}
        if not isinstance(generators, Mapping):
            raise ValueError(f"generators must be a mapping name -> torch.Generator or None, got {generators!r}")
        for name, generator in generators.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"generators keys must be non-empty strings, got {name!r}")
            if not isinstance(generator, torch.Generator):
                raise ValueError(
                    f"generators[{name!r}] must be a torch.Generator, got {type(generator).__name__}"
                )
        if not isinstance(include_global, bool):
            raise ValueError(f"include_global must be a bool, got {include_global!r}")
        self.generators = dict(generators)
        self.include_global = include_global

    def state_dict(self) -> dict[str, Any]:
        """The current states (class docstring)."""
        state: dict[str, Any] = {"generators": {name: g.get_state() for name, g in self.generators.items()}}
        if self.include_global:
            state["torch"] = torch.get_rng_state()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                state["torch_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Set the generators (and the global RNG) to ``state_dict``'s states.

        Raises:
            ValueError: ``state_dict`` is not a mapping with ``"generators"``, names other generators than the
                configured ones, or lacks the global state while ``include_global`` is set.
        """
        if not isinstance(state_dict, Mapping) or not isinstance(state_dict.get("generators"), Mapping):
            raise ValueError(f"state_dict must be a mapping with a 'generators' mapping, got {state_dict!r}")
        saved = state_dict["generators"]
        if set(saved) != set(self.generators):
            raise ValueError(
                f"state_dict['generators'] holds the generators {sorted(saved)}, the configuration has "
                f"{sorted(self.generators)}"
            )
        if self.include_global and "torch" not in state_dict:
            raise ValueError(f"state_dict lacks the global RNG state 'torch' (keys {sorted(state_dict)})")
        if _distributed_world_size() > 1:
            logger.warning(
                "RandomStates: %d distributed ranks; the checkpoint holds rank 0's generator states only, so every "
                "rank keeps its own generators (the resumed run is not bit-identical to an uninterrupted one)",
                _distributed_world_size(),
            )
            return
        for name, generator in self.generators.items():
            generator.set_state(torch.as_tensor(saved[name]).cpu())
        if self.include_global:
            torch.set_rng_state(torch.as_tensor(state_dict["torch"]).cpu())
            cuda = state_dict.get("torch_cuda")
            if cuda is not None and torch.cuda.is_available():
                if len(cuda) == torch.cuda.device_count():
                    torch.cuda.set_rng_state_all([torch.as_tensor(c).cpu() for c in cuda])
                else:
                    logger.warning(
                        "RandomStates: the checkpoint holds %d CUDA RNG states, this machine has %d devices; the CUDA "
                        "RNG is not restored", len(cuda), torch.cuda.device_count(),
                    )


class KeyMetricState:
    """The evaluator's best key metric and its key-metric ``CheckpointSaver``'s tracking, as one checkpoint entry.

    Without it a resumed PnPNet / DeepPET run forgets the best validation score and its first validation overwrites
    ``*_best.pt`` even with a worse model.  ``state_dict()`` = ``{"best_metric": float, "best_metric_epoch": int,
    "saved": [(score, file name), ...]}``.

    Args (keyword-only):
        evaluator: MONAI ``SupervisedEvaluator`` (its ``state.best_metric`` / ``state.best_metric_epoch``).
        saver: MONAI ``CheckpointSaver`` with ``save_key_metric=True`` attached to ``evaluator``.
    """

    def __init__(self, *, evaluator: Engine, saver: Any) -> None:
        if not isinstance(evaluator, Engine):
            raise ValueError(f"evaluator must be an ignite Engine (MONAI evaluator), got {type(evaluator).__name__}")
        checkpoint = getattr(saver, "_key_metric_checkpoint", None)
        if checkpoint is None or not callable(getattr(checkpoint, "state_dict", None)):
            raise ValueError(
                f"saver must be a MONAI CheckpointSaver with save_key_metric=True, got {type(saver).__name__}"
            )
        self.evaluator = evaluator
        self.saver = saver

    def state_dict(self) -> dict[str, Any]:
        """Best metric, its epoch and the saver's ``(score, file name)`` list."""
        best = getattr(self.evaluator.state, "best_metric", -1)
        return {
            "best_metric": float(best) if isinstance(best, numbers.Real | torch.Tensor) else -1.0,
            "best_metric_epoch": int(getattr(self.evaluator.state, "best_metric_epoch", -1)),
            "saved": [(float(p), str(f)) for p, f in self.saver._key_metric_checkpoint.state_dict()["_saved"]],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        keys = ("best_metric", "best_metric_epoch", "saved")
        if not isinstance(state_dict, Mapping) or any(k not in state_dict for k in keys):
            raise ValueError(f"state_dict must be a mapping with the keys {list(keys)}, got {state_dict!r}")
        best = float(state_dict["best_metric"])
        self.evaluator.state.best_metric = best if math.isfinite(best) else -1
        self.evaluator.state.best_metric_epoch = int(state_dict["best_metric_epoch"])
        self.saver.load_state_dict({"_saved": [(p, str(f)) for p, f in state_dict["saved"]]})


def resumable_checkpoint(checkpoint_dir: str | Path, *, trainer_key: str = "trainer") -> Path:
    """The newest checkpoint of ``checkpoint_dir`` with trainer state (``checkpoints.latest_checkpoint``).

    Raises:
        ValueError: ``checkpoint_dir`` is not a path.
        FileNotFoundError: the folder is missing or holds no checkpoint with ``trainer_key`` state; the message names
            the folder and says how to create one.
    """
    if not isinstance(checkpoint_dir, str | Path) or str(checkpoint_dir) == "":
        raise ValueError(f"checkpoint_dir must be a folder path, got {checkpoint_dir!r}")
    folder = Path(checkpoint_dir)
    hint = ("train first without configs/legopet/resume.json (its checkpoint saver stores the trainer state a "
            "resume needs), or point ckpt_dir / bundle_root at the run to resume")
    if not folder.is_dir():
        raise FileNotFoundError(f"no checkpoint to resume from: the checkpoint folder {folder} does not exist; {hint}")
    found = latest_checkpoint(folder, trainer_key=trainer_key)
    if found is None:
        raise FileNotFoundError(
            f"no checkpoint to resume from in {folder}: no *.pt file there holds {trainer_key!r} state; {hint}"
        )
    return found


class ResumeTraining(ResumeFromLatest):
    """:class:`bundle.engines.checkpoints.ResumeFromLatest` that requires a checkpoint (the resume overlay's handler).

    Construction (config parsing) already raises ``FileNotFoundError`` naming ``checkpoint_dir`` when it holds no
    checkpoint with trainer state (:func:`resumable_checkpoint`), so a mistyped folder never silently starts a fresh
    run.  :meth:`attach` also attaches every not yet attached :class:`TrainerState` of ``load_dict`` (ranks whose
    ``train_handlers`` are empty under DDP).  Same keyword-only arguments as ``ResumeFromLatest``.
    """

    def __init__(
        self,
        *,
        checkpoint_dir: str | Path,
        load_dict: Mapping[str, Any],
        pattern: str = "*.pt",
        trainer_key: str = "trainer",
        strict: bool = True,
    ) -> None:
        super().__init__(
            checkpoint_dir=checkpoint_dir, load_dict=load_dict, pattern=pattern, trainer_key=trainer_key, strict=strict
        )
        self.checkpoint = resumable_checkpoint(self.checkpoint_dir, trainer_key=trainer_key)

    def attach(self, engine: Engine) -> None:
        """Attach unattached :class:`TrainerState` entries, then load at ``Events.STARTED``."""
        for value in self.load_dict.values():
            if isinstance(value, TrainerState) and value.engine is None:
                value.attach(engine)
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        resumable_checkpoint(self.checkpoint_dir, trainer_key=self.trainer_key)  # still there at the start
        super().__call__(engine)
        state = engine.state
        if state.max_epochs is not None and state.epoch >= state.max_epochs:
            logger.warning(
                "the checkpoint %s is at epoch %d, max_epochs is %d: nothing left to train (raise --max_epochs to "
                "continue)", self.resumed_from, state.epoch, state.max_epochs,
            )
