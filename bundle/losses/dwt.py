"""Discrete wavelet transform in torch (PyWavelets filter banks, differentiable) and the DWT loss of LegoPET.

The 2D DWT is computed with strided ``torch.nn.functional.conv2d`` using the decomposition filters of
``pywt.Wavelet(wavelet).dec_lo`` / ``dec_hi``; the signal extension ("mode") is an exact index gather, so the
result equals ``pywt.dwt2(x, wavelet, mode=mode, axes=(-2, -1))`` up to floating-point rounding, works on CPU and
CUDA, in float32 and float64, and is differentiable with respect to the input.

Correspondence with PyWavelets (``pywt.dwt2`` returns ``(cA, (cH, cV, cD))``; first filter letter = along H
(rows, axis -2), second = along W (columns, axis -1)):

==========  ================  =====================  ==================================================
ours        pywt.dwt2         pywt.dwtn key          filters (along H, along W) / content
==========  ================  =====================  ==================================================
``LL``      ``cA``            ``'aa'``               (low, low): approximation
``LH``      ``cH``            ``'da'``               (high, low): horizontal details (edges along W)
``HL``      ``cV``            ``'ad'``               (low, high): vertical details (edges along H)
``HH``      ``cD``            ``'dd'``               (high, high): diagonal details
==========  ================  =====================  ==================================================

Per axis of length ``N`` with a filter ``f`` of length ``F`` (``dec_lo`` or ``dec_hi``) PyWavelets computes

- ``periodization``: ``y[o] = Σ_j f[j] · x̃[(F//2 + 2o - j) mod N']`` for ``o < N'/2``, where ``N' = N + (N mod 2)``
  and ``x̃`` is ``x`` with its last sample repeated once when ``N`` is odd; output length ``ceil(N / 2)``;
- every other mode: ``y[o] = Σ_j f[j] · x_ext[2o + 1 - j]`` for ``o < floor((N + F - 1) / 2)``, with ``x_ext`` the
  signal extended beyond its ends by the mode (zero: 0; constant: edge value; symmetric: half-sample mirror
  ``x1 x0 | x0 x1 …``; reflect: whole-sample mirror ``x2 x1 | x0 x1 …``; periodic: period ``N``).

Both are true convolutions (filter reversed); here they are a gather of the extended signal followed by a
cross-correlation (``conv2d``) with the reversed filter and stride 2. Modes that are not a pure gather of input
samples (``smooth``, ``antisymmetric``, ``antireflect``) are not offered.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pywt
import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = [
    "DWTLoss",
    "Distance",
    "MSEPlusDWTLoss",
    "Subband",
    "WaveletMode",
    "dwt2",
    "wavedec2",
]


class WaveletMode(enum.StrEnum):
    """Signal extension modes supported exactly (same names and results as PyWavelets' modes)."""

    PERIODIZATION = "periodization"
    ZERO = "zero"
    CONSTANT = "constant"
    SYMMETRIC = "symmetric"
    REFLECT = "reflect"
    PERIODIC = "periodic"


class Subband(enum.StrEnum):
    """High-frequency sub-bands of one DWT level (see the module table for the pywt names)."""

    LH = "LH"
    HL = "HL"
    HH = "HH"


class Distance(enum.StrEnum):
    """Element-wise distance between wavelet coefficients: ``L1`` = ``|d|``, ``MSE`` = ``d²``."""

    L1 = "l1"
    MSE = "mse"


def _parse_enum(enum_cls: type[enum.Enum], value: object, name: str) -> enum.Enum:
    try:
        return enum_cls(value)
    except ValueError:
        options = ", ".join(repr(m.value) for m in enum_cls)
        raise ValueError(f"{name} must be one of {options}; got {value!r}") from None


def _filters(wavelet: str) -> tuple[np.ndarray, np.ndarray]:
    """(dec_lo, dec_hi) of a discrete PyWavelets wavelet, float64, equal length."""
    if not isinstance(wavelet, str):
        raise TypeError(f"wavelet must be a str naming a discrete PyWavelets wavelet, got {type(wavelet).__name__}")
    return _filters_cached(wavelet)


@functools.cache
def _filters_cached(wavelet: str) -> tuple[np.ndarray, np.ndarray]:
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ValueError(
            f"wavelet must name a discrete PyWavelets wavelet (pywt.wavelist(kind='discrete')), got {wavelet!r}"
        )
    w = pywt.Wavelet(wavelet)
    lo = np.asarray(w.dec_lo, dtype=np.float64)
    hi = np.asarray(w.dec_hi, dtype=np.float64)
    if lo.shape != hi.shape:  # pragma: no cover - pywt pads its filter banks to a common length
        raise ValueError(f"wavelet {wavelet!r} has decomposition filters of different lengths")
    return lo, hi


@functools.cache
def _extension_index(n: int, filter_len: int, mode: WaveletMode) -> tuple[tuple[int, ...], int]:
    """Indices into ``x`` (``n`` means "a zero sample") forming the extended signal, and the output length.

    The extended signal ``e`` satisfies ``out[o] = Σ_m w[m] · e[2o + m]`` with ``w`` the reversed filter.
    """
    if mode == WaveletMode.PERIODIZATION:
        n_even = n + (n % 2)
        n_out = n_even // 2
        start = filter_len // 2 - filter_len + 1
        positions = np.arange(start, start + 2 * (n_out - 1) + filter_len)
        index = np.minimum(np.mod(positions, n_even), n - 1)
        return tuple(int(i) for i in index), n_out
    n_out = (n + filter_len - 1) // 2
    start = 2 - filter_len
    k = np.arange(start, start + 2 * (n_out - 1) + filter_len)
    if mode == WaveletMode.ZERO:
        index = np.where((k >= 0) & (k < n), k, n)
    elif mode == WaveletMode.CONSTANT:
        index = np.clip(k, 0, n - 1)
    elif mode == WaveletMode.PERIODIC:
        index = np.mod(k, n)
    elif mode == WaveletMode.SYMMETRIC:
        r = np.mod(k, 2 * n)
        index = np.where(r < n, r, 2 * n - 1 - r)
    elif mode == WaveletMode.REFLECT:  # n >= 2, checked by the caller
        r = np.mod(k, 2 * n - 2)
        index = np.where(r < n, r, 2 * n - 2 - r)
    else:  # pragma: no cover - exhaustive over WaveletMode
        raise AssertionError(mode)
    return tuple(int(i) for i in index), n_out


def _check_image(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if x.shape[-2] < 1 or x.shape[-1] < 1:
        raise ValueError(f"{name} must have H >= 1 and W >= 1, got shape {tuple(x.shape)}")
    return x


def _dwt2(x: torch.Tensor, wavelet: str, mode: WaveletMode) -> tuple[torch.Tensor, ...]:
    """Unchecked single-level 2D DWT: returns ``(LL, LH, HL, HH)``."""
    lo, hi = _filters(wavelet)
    flen = lo.shape[0]
    b, c, h, w = x.shape
    if mode == WaveletMode.REFLECT and min(h, w) < 2:
        raise ValueError(f"mode 'reflect' needs H >= 2 and W >= 2 (as in pywt), got shape {tuple(x.shape)}")
    idx_h, h_out = _extension_index(h, flen, mode)
    idx_w, w_out = _extension_index(w, flen, mode)
    bank = torch.as_tensor(np.stack([lo[::-1], hi[::-1]]).copy(), dtype=x.dtype, device=x.device)  # (2, F)

    y = x.reshape(b * c, 1, h, w)
    if mode == WaveletMode.ZERO:  # index h (resp. w) addresses an appended zero row (column)
        y = F.pad(y, (0, 1, 0, 1))
    # along H: (N, 1, H_ext, W) -> (N, 2, h_out, W); channel 0 = low, 1 = high
    y = torch.index_select(y, -2, torch.as_tensor(idx_h, device=x.device))
    y = F.conv2d(y, bank.reshape(2, 1, flen, 1), stride=(2, 1))
    # along W: (2N, 1, h_out, W_ext) -> (2N, 2, h_out, w_out)
    y = torch.index_select(y, -1, torch.as_tensor(idx_w, device=x.device))
    y = y.reshape(b * c * 2, 1, h_out, y.shape[-1])
    y = F.conv2d(y, bank.reshape(2, 1, 1, flen), stride=(1, 2))
    y = y.reshape(b, c, 2, 2, h_out, w_out)  # [filter along H, filter along W]
    return y[:, :, 0, 0], y[:, :, 1, 0], y[:, :, 0, 1], y[:, :, 1, 1]


def dwt2(
    x: torch.Tensor,
    wavelet: str = "haar",
    *,
    mode: WaveletMode | str = WaveletMode.PERIODIZATION,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Single-level 2D discrete wavelet transform over the last two axes.

    Equals ``pywt.dwt2(x, wavelet, mode=mode, axes=(-2, -1))`` = ``(cA, (cH, cV, cD))`` sub-band for sub-band
    (``LL = cA``, ``LH = cH``, ``HL = cV``, ``HH = cD``; see the module docstring). Note that the default mode here
    is ``periodization`` (pywt's default is ``symmetric``).

    Args:
        x: ``(B, C, H, W)``, float32 or float64, any device; gradients flow back to ``x``.
        wavelet: a discrete PyWavelets wavelet name (``"haar"``, ``"db2"``, ``"sym4"``, ``"bior2.2"``, ...).
        mode: signal extension, a :class:`WaveletMode` (or its string value).

    Returns:
        ``(LL, (LH, HL, HH))``, each ``(B, C, H', W')`` in ``x``'s dtype/device with ``H' = ceil(H / 2)`` for
        ``periodization`` and ``H' = floor((H + F - 1) / 2)`` otherwise (``F`` = filter length; same for W).
    """
    x = _check_image(x, "x")
    mode = _parse_enum(WaveletMode, mode, "mode")
    ll, lh, hl, hh = _dwt2(x, wavelet, mode)
    return ll, (lh, hl, hh)


def _check_level(level: object) -> int:
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"level must be an int, got {type(level).__name__}")
    if level < 1:
        raise ValueError(f"level must be >= 1, got {level}")
    return level


def wavedec2(
    x: torch.Tensor,
    wavelet: str = "haar",
    level: int = 1,
    *,
    mode: WaveletMode | str = WaveletMode.PERIODIZATION,
) -> list[torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Multi-level 2D DWT (the approximation is decomposed again ``level`` times).

    Same layout as ``pywt.wavedec2(x, wavelet, mode=mode, level=level, axes=(-2, -1))``:
    ``[LL_n, (LH_n, HL_n, HH_n), ..., (LH_1, HL_1, HH_1)]`` (coarsest first), with ``(LH, HL, HH) = (cH, cV, cD)``.
    Unlike pywt, a level above ``pywt.dwt_max_level`` is computed without a warning.

    Args:
        x: ``(B, C, H, W)``, float32 or float64.
        wavelet: a discrete PyWavelets wavelet name.
        level: number of levels, ``>= 1``.
        mode: signal extension, a :class:`WaveletMode`.

    Returns:
        List of ``level + 1`` entries as above; shapes follow :func:`dwt2` level by level.
    """
    x = _check_image(x, "x")
    mode = _parse_enum(WaveletMode, mode, "mode")
    level = _check_level(level)
    details: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    approx = x
    for _ in range(level):
        approx, lh, hl, hh = _dwt2(approx, wavelet, mode)
        details.append((lh, hl, hh))
    return [approx, *reversed(details)]


def _check_weight(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def _parse_subband_weights(weights: object) -> tuple[float, float, float]:
    names = tuple(s.value for s in Subband)
    if isinstance(weights, Mapping):
        keys = {str(k) for k in weights}
        if keys != set(names) or len(weights) != 3:
            raise ValueError(f"subband_weights dict must have exactly the keys {names}, got {tuple(weights)}")
        lookup = {str(k): v for k, v in weights.items()}
        values = [lookup[n] for n in names]
    elif isinstance(weights, Sequence) and not isinstance(weights, str):
        if len(weights) != 3:
            raise ValueError(f"subband_weights sequence must have 3 entries (LH, HL, HH), got {len(weights)}")
        values = list(weights)
    else:
        raise TypeError(
            f"subband_weights must be a dict with keys {names} or a 3-tuple (LH, HL, HH), got {type(weights).__name__}"
        )
    return tuple(_check_weight(v, f"subband_weights[{n}]") for n, v in zip(names, values, strict=True))  # type: ignore[return-value]


def _parse_reduction(reduction: object) -> str:
    return _parse_enum(LossReduction, reduction, "reduction").value


def _check_pair(input: object, target: object, levels: int) -> None:
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"input and target must be torch.Tensors, got {type(input).__name__} and {type(target).__name__}"
        )
    if input.shape != target.shape:
        raise ValueError(
            f"input and target must have the same shape, got input {tuple(input.shape)} "
            f"and target {tuple(target.shape)}"
        )
    if input.ndim != 4:
        raise ValueError(f"input and target must have shape (B, C, H, W), got shape {tuple(input.shape)}")
    if input.dtype != target.dtype or input.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"input and target must both be float32 or float64, got {input.dtype} and {target.dtype}")
    min_size = 2**levels
    if input.shape[-2] < min_size or input.shape[-1] < min_size:
        raise ValueError(
            f"H and W must be >= 2**levels = {min_size} for levels={levels}, got shape {tuple(input.shape)}"
        )


class DWTLoss(_Loss):
    r"""Wavelet-domain loss: distance between the DWT coefficients of ``input`` and ``target`` (LegoPET L_DWT).

    With ``d = input - target`` (the DWT is linear, so ``W(input) - W(target) = W(d)``), ``J = levels``,
    sub-band weights ``w_LH, w_HL, w_HH`` and approximation weight ``w_LL``, per image ``(b, c)``:

    .. math::

        \ell_{b,c} = \sum_{j=1}^{J} \sum_{s \in \{LH, HL, HH\}} w_s \,
                     \operatorname{mean}_{p,q} \rho\big(W^{j}_{s}(d)_{b,c,p,q}\big)
                     + w_{LL} \operatorname{mean}_{p,q} \rho\big(W^{J}_{LL}(d)_{b,c,p,q}\big)

    with ``ρ(t) = |t|`` (``Distance.L1``, default) or ``ρ(t) = t²`` (``Distance.MSE``) and ``W^j_s`` sub-band ``s``
    at level ``j`` (level ``j`` decomposes ``LL`` of level ``j - 1``; ``W^0_LL = d``). Every sub-band is averaged
    over its own spatial positions, levels are summed (not averaged). ``reduction`` then acts on ``ℓ`` of shape
    ``(B, C)``: ``"mean"`` (default) -> scalar mean, ``"sum"`` -> scalar sum, ``"none"`` -> ``(B, C)``. For
    ``"mean"`` this equals ``Σ_s w_s · mean(ρ(W_s(d)))`` over all coefficients of each sub-band.

    The default (Haar, 1 level, periodization, L1 over LH/HL/HH, LL excluded) is the LegoPET design choice; with
    Haar + periodization a constant offset between ``input`` and ``target`` gives zero detail coefficients (up to
    floating-point rounding of the convolution, ~1e-8 relative in float32).
    The decimated DWT is shift-variant: with Haar at level 1 a step edge between pixel pairs (between index
    ``2k - 1`` and ``2k``) lies entirely in ``LL`` and is only seen by deeper levels (or ``include_approximation``).

    Args:
        wavelet: discrete PyWavelets wavelet name.
        levels: number of DWT levels ``J >= 1``.
        subband_weights: ``{"LH": w, "HL": w, "HH": w}`` (exactly these keys) or a 3-tuple in the order
            (LH, HL, HH); non-negative. Default all 1.
        include_approximation: weight ``w_LL`` of the coarsest approximation; ``False`` -> 0 (default),
            ``True`` -> 1, or a non-negative number.
        distance: :class:`Distance` (``"l1"`` or ``"mse"``).
        mode: signal extension :class:`WaveletMode` (default periodization).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``monai.utils.LossReduction``).
    """

    def __init__(
        self,
        *,
        wavelet: str = "haar",
        levels: int = 1,
        subband_weights: Mapping[str, float] | Sequence[float] = (1.0, 1.0, 1.0),
        include_approximation: bool | float = False,
        distance: Distance | str = Distance.L1,
        mode: WaveletMode | str = WaveletMode.PERIODIZATION,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=_parse_reduction(reduction))
        _filters(wavelet)  # validates the name
        if isinstance(levels, bool) or not isinstance(levels, int):
            raise TypeError(f"levels must be an int, got {type(levels).__name__}")
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.wavelet = wavelet
        self.levels = levels
        self.subband_weights = _parse_subband_weights(subband_weights)
        if isinstance(include_approximation, bool):
            self.approximation_weight = 1.0 if include_approximation else 0.0
        else:
            self.approximation_weight = _check_weight(include_approximation, "include_approximation")
        if sum(self.subband_weights) == 0 and self.approximation_weight == 0:
            raise ValueError("all sub-band weights and the approximation weight are 0: the loss would be identically 0")
        self.distance = _parse_enum(Distance, distance, "distance")
        self.mode = _parse_enum(WaveletMode, mode, "mode")

    def _rho_mean(self, coeffs: torch.Tensor) -> torch.Tensor:
        rho = coeffs.abs() if self.distance == Distance.L1 else coeffs.square()
        return rho.mean(dim=(-2, -1))

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Unreduced loss ``ℓ`` of shape ``(B, C)`` (after the same checks as :meth:`forward`)."""
        _check_pair(input, target, self.levels)
        approx = input - target
        total = input.new_zeros(input.shape[:2])
        for _ in range(self.levels):
            approx, *details = _dwt2(approx, self.wavelet, self.mode)
            for weight, band in zip(self.subband_weights, details, strict=True):
                if weight != 0:
                    total = total + weight * self._rho_mean(band)
        if self.approximation_weight != 0:
            total = total + self.approximation_weight * self._rho_mean(approx)
        return total

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: ``input``, ``target``: ``(B, C, H, W)``, same shape and dtype, ``H, W >= 2**levels``.

        Returns: scalar for ``reduction`` ``"mean"``/``"sum"``, ``(B, C)`` for ``"none"``.
        """
        return _reduce(self.per_image(input, target), self.reduction)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == LossReduction.MEAN:
        return values.mean()
    if reduction == LossReduction.SUM:
        return values.sum()
    return values


class MSEPlusDWTLoss(_Loss):
    r"""PnPNet training loss of LegoPET, eq. (1): ``L = L_MSE + λ1 · L_DWT`` with ``λ1 = dwt_weight = 0.1``.

    Per image ``(b, c)``: ``ℓ_{b,c} = mean_{h,w} (input - target)² + λ1 · ℓ^{DWT}_{b,c}`` (see :class:`DWTLoss`),
    then ``reduction`` over ``(B, C)``. With ``"mean"`` (default) this is exactly
    ``F.mse_loss(input, target) + λ1 · DWTLoss(...)(input, target)``; ``"sum"`` sums the per-image values (the
    MSE term is a per-image mean, not torch's sum over all pixels); ``"none"`` returns ``(B, C)``.

    Args:
        dwt_weight: ``λ1 >= 0`` (paper: 0.1), keyword-only like everything else.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        **dwt_kwargs: keyword arguments of :class:`DWTLoss` (``wavelet``, ``levels``, ``subband_weights``,
            ``include_approximation``, ``distance``, ``mode``).
    """

    def __init__(
        self,
        *,
        dwt_weight: float = 0.1,
        reduction: LossReduction | str = LossReduction.MEAN,
        **dwt_kwargs: object,
    ) -> None:
        super().__init__(reduction=_parse_reduction(reduction))
        self.dwt_weight = _check_weight(dwt_weight, "dwt_weight")
        self.dwt = DWTLoss(reduction=LossReduction.NONE, **dwt_kwargs)  # type: ignore[arg-type]

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: ``input``, ``target``: ``(B, C, H, W)``. Returns: scalar, or ``(B, C)`` for ``"none"``."""
        dwt = self.dwt.per_image(input, target)
        mse = (input - target).square().mean(dim=(-2, -1))
        return _reduce(mse + self.dwt_weight * dwt, self.reduction)
