"""Torch DWT against PyWavelets, and the LegoPET DWT / MSE + 0.1·DWT losses."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F
from monai.utils import LossReduction

from bundle.losses import Distance, DWTLoss, MSEPlusDWTLoss, Subband, WaveletMode, dwt2, wavedec2

MODES = [m.value for m in WaveletMode]
SHAPES = [(1, 1), (2, 2), (4, 4), (5, 8), (7, 6), (9, 13)]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _bands(x: torch.Tensor, wavelet: str, mode: str) -> list[np.ndarray]:
    ll, (lh, hl, hh) = dwt2(x, wavelet, mode=mode)
    return [t.detach().cpu().numpy() for t in (ll, lh, hl, hh)]


# --------------------------------------------------------------------------------------------- dwt2 vs pywt


@pytest.mark.parametrize("wavelet", ["haar", "db2", "db4", "bior2.2"])
@pytest.mark.parametrize("mode", MODES)
def test_dwt2_matches_pywt_float64(wavelet: str, mode: str) -> None:
    rng = _rng(1)
    for h, w in SHAPES:
        if mode == "reflect" and min(h, w) < 2:
            continue
        x = rng.standard_normal((2, 3, h, w))
        ca, (ch, cv, cd) = pywt.dwt2(x, wavelet, mode=mode)
        ours = _bands(torch.from_numpy(x), wavelet, mode)
        for got, ref in zip(ours, (ca, ch, cv, cd), strict=True):
            assert got.dtype == np.float64
            assert got.shape == ref.shape, (h, w)
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("wavelet", ["haar", "db2", "db4"])
@pytest.mark.parametrize("mode", ["periodization", "zero", "symmetric"])
def test_dwt2_matches_pywt_float32(wavelet: str, mode: str) -> None:
    rng = _rng(2)
    for h, w in [(4, 4), (7, 6), (9, 13), (32, 33)]:
        x = rng.standard_normal((2, 2, h, w)).astype(np.float32)
        ca, (ch, cv, cd) = pywt.dwt2(x, wavelet, mode=mode)
        ours = _bands(torch.from_numpy(x), wavelet, mode)
        for got, ref in zip(ours, (ca, ch, cv, cd), strict=True):
            assert got.dtype == np.float32 and ref.dtype == np.float32
            np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_default_mode_is_periodization_and_output_sizes() -> None:
    x = torch.randn(1, 1, 7, 10, dtype=torch.float64)
    ll, (lh, hl, hh) = dwt2(x)  # haar, periodization
    for band in (ll, lh, hl, hh):
        assert band.shape == (1, 1, 4, 5)  # ceil(N / 2)
    np.testing.assert_allclose(ll.numpy(), pywt.dwt2(x.numpy(), "haar", mode="periodization")[0], atol=1e-12)
    ll, _ = dwt2(x, "db2", mode=WaveletMode.SYMMETRIC)
    assert ll.shape == (1, 1, (7 + 3) // 2, (10 + 3) // 2)  # floor((N + F - 1) / 2), F = 4


def test_subband_naming_matches_pywt_ch_cv_cd() -> None:
    """LH = cH (high along H: horizontal stripes), HL = cV (high along W), HH = cD (checkerboard)."""
    h = torch.arange(8, dtype=torch.float64).reshape(8, 1)
    w = torch.arange(8, dtype=torch.float64).reshape(1, 8)
    stripes_along_h = ((-1.0) ** h).expand(8, 8)[None, None]  # varies with row index
    stripes_along_w = ((-1.0) ** w).expand(8, 8)[None, None]
    checker = ((-1.0) ** (h + w))[None, None]
    for image, hot in ((stripes_along_h, 1), (stripes_along_w, 2), (checker, 3)):
        bands = _bands(image, "haar", "periodization")
        energies = [float(np.abs(b).sum()) for b in bands]
        assert energies[hot] > 0
        assert all(e == 0 for i, e in enumerate(energies) if i != hot)
        ref = pywt.dwt2(image.numpy(), "haar", mode="periodization")
        np.testing.assert_allclose(bands[hot], ref[1][hot - 1], atol=1e-12)


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
@pytest.mark.parametrize("mode", ["periodization", "zero", "symmetric", "periodic"])
def test_wavedec2_matches_pywt(wavelet: str, mode: str) -> None:
    rng = _rng(3)
    for shape, level in (((16, 16), 1), ((16, 16), 3), ((13, 10), 2), ((33, 20), 3)):
        x = rng.standard_normal((2, 1, *shape))
        with warnings.catch_warnings():  # pywt warns about boundary effects for deep levels of short signals
            warnings.simplefilter("ignore", UserWarning)
            ref = pywt.wavedec2(x, wavelet, mode=mode, level=level)
        ours = wavedec2(torch.from_numpy(x), wavelet, level, mode=mode)
        assert len(ours) == len(ref) == level + 1
        np.testing.assert_allclose(ours[0].numpy(), ref[0], rtol=0, atol=1e-12)
        for got_level, ref_level in zip(ours[1:], ref[1:], strict=True):
            assert len(got_level) == 3
            for got, r in zip(got_level, ref_level, strict=True):
                assert got.shape == r.shape
                np.testing.assert_allclose(got.numpy(), r, rtol=0, atol=1e-12)


def test_wavedec2_float32() -> None:
    x = _rng(4).standard_normal((1, 2, 20, 24)).astype(np.float32)
    ref = pywt.wavedec2(x, "db2", mode="periodization", level=2)
    ours = wavedec2(torch.from_numpy(x), "db2", 2)
    np.testing.assert_allclose(ours[0].numpy(), ref[0], rtol=1e-6, atol=1e-6)
    for got_level, ref_level in zip(ours[1:], ref[1:], strict=True):
        for got, r in zip(got_level, ref_level, strict=True):
            np.testing.assert_allclose(got.numpy(), r, rtol=1e-6, atol=1e-6)


def test_dwt2_gradcheck() -> None:
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    for wavelet, mode in (("haar", "periodization"), ("db2", "symmetric"), ("db2", "zero")):

        def fn(t: torch.Tensor, wavelet: str = wavelet, mode: str = mode) -> tuple[torch.Tensor, ...]:
            ll, (lh, hl, hh) = dwt2(t, wavelet, mode=mode)
            return ll, lh, hl, hh

        assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dwt2_and_loss_on_cuda() -> None:
    x = torch.randn(2, 1, 9, 12, dtype=torch.float64)
    y = torch.randn(2, 1, 9, 12, dtype=torch.float64)
    for mode in ("periodization", "zero", "symmetric"):
        cpu = _bands(x, "db2", mode)
        gpu = _bands(x.cuda(), "db2", mode)
        for a, b in zip(cpu, gpu, strict=True):
            np.testing.assert_allclose(b, a, atol=1e-12)
    loss = MSEPlusDWTLoss(levels=2)
    xg = x.float().cuda().requires_grad_(True)
    value = loss(xg, y.float().cuda())
    value.backward()
    assert value.device.type == "cuda" and xg.grad is not None
    torch.testing.assert_close(value.cpu(), loss(x.float(), y.float()), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- dwt2 errors


def test_dwt2_argument_errors() -> None:
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(TypeError, match=r"^x must be a torch.Tensor, got ndarray$"):
        dwt2(np.zeros((1, 1, 4, 4)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("x must have shape (B, C, H, W), got shape (4, 4)")):
        dwt2(torch.zeros(4, 4))
    with pytest.raises(TypeError, match=r"^x must be float32 or float64, got dtype torch.int64$"):
        dwt2(torch.zeros(1, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=re.escape("x must have H >= 1 and W >= 1, got shape (1, 1, 0, 4)")):
        dwt2(torch.zeros(1, 1, 0, 4))
    with pytest.raises(ValueError, match=r"^wavelet must name a discrete PyWavelets wavelet .*got 'morl'$"):
        dwt2(x, "morl")  # continuous wavelet
    with pytest.raises(ValueError, match=r"^wavelet must name a discrete PyWavelets wavelet .*got 'nope'$"):
        dwt2(x, "nope")
    with pytest.raises(TypeError, match=r"^wavelet must be a str naming a discrete PyWavelets wavelet, got Wavelet$"):
        dwt2(x, pywt.Wavelet("haar"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^mode must be one of 'periodization', .*; got 'smooth'$"):
        dwt2(x, mode="smooth")  # not a pure gather: not offered
    with pytest.raises(ValueError, match=re.escape("mode 'reflect' needs H >= 2 and W >= 2 (as in pywt)")):
        dwt2(torch.zeros(1, 1, 1, 4), mode="reflect")
    with pytest.raises(ValueError, match=r"^level must be >= 1, got 0$"):
        wavedec2(x, "haar", 0)
    with pytest.raises(TypeError, match=r"^level must be an int, got bool$"):
        wavedec2(x, "haar", True)


# --------------------------------------------------------------------------------------------- DWTLoss


def _reference_loss(
    d: np.ndarray, wavelet: str, levels: int, mode: str, weights: tuple[float, float, float], w_ll: float, power: int
) -> np.ndarray:
    """Per-image (B, C) loss from pywt.wavedec2 coefficients."""
    coeffs = pywt.wavedec2(d, wavelet, mode=mode, level=levels)
    total = w_ll * np.mean(np.abs(coeffs[0]) ** power, axis=(-2, -1))
    for detail in coeffs[1:]:
        for weight, band in zip(weights, detail, strict=True):
            total = total + weight * np.mean(np.abs(band) ** power, axis=(-2, -1))
    return total


@pytest.mark.parametrize(("distance", "power"), [(Distance.L1, 1), ("mse", 2)])
def test_dwt_loss_equals_pywt_reference(distance: Distance | str, power: int) -> None:
    rng = _rng(5)
    x = rng.standard_normal((3, 2, 16, 12))
    y = rng.standard_normal((3, 2, 16, 12))
    weights = (0.5, 2.0, 1.5)
    for wavelet, levels, mode, w_ll in (("haar", 1, "periodization", 0.0), ("db2", 2, "symmetric", 0.3)):
        ref = _reference_loss(x - y, wavelet, levels, mode, weights, w_ll, power)
        loss = DWTLoss(
            wavelet=wavelet,
            levels=levels,
            mode=mode,
            subband_weights=weights,
            include_approximation=w_ll,
            distance=distance,
            reduction="none",
        )
        got = loss(torch.from_numpy(x), torch.from_numpy(y))
        assert got.shape == (3, 2)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_dwt_loss_reductions() -> None:
    x, y = torch.randn(4, 2, 8, 8), torch.randn(4, 2, 8, 8)
    none = DWTLoss(reduction="none")(x, y)
    assert none.shape == (4, 2)
    mean = DWTLoss()(x, y)
    assert mean.ndim == 0
    torch.testing.assert_close(mean, none.mean())
    torch.testing.assert_close(DWTLoss(reduction=LossReduction.SUM)(x, y), none.sum())
    # "mean" = Σ_s w_s · mean over all coefficients of sub-band s (default haar, L1, 1 level)
    _, (lh, hl, hh) = dwt2(x - y)
    torch.testing.assert_close(mean, lh.abs().mean() + hl.abs().mean() + hh.abs().mean())


def test_dwt_loss_zero_for_identical_inputs() -> None:
    x = torch.randn(2, 3, 16, 16)
    for loss in (DWTLoss(), DWTLoss(levels=3, include_approximation=True), DWTLoss(wavelet="db2", distance="mse")):
        assert float(loss(x, x.clone())) == 0.0


def test_dwt_loss_positive_for_edges_and_high_frequencies() -> None:
    target = torch.zeros(1, 1, 16, 16)
    checker = (-1.0) ** (torch.arange(16)[:, None] + torch.arange(16)[None, :]).float()
    assert float(DWTLoss()(checker[None, None], target)) > 0  # zero-mean pattern, pure HH
    edge = torch.zeros(1, 1, 16, 16)
    edge[..., :, 5:] = 1.0  # step between columns 4 and 5: inside a Haar pair
    assert float(DWTLoss()(edge, target)) > 0
    # equal MSE, but the edge adds DWT loss: this is what λ1 · L_DWT rewards
    smooth = torch.full((1, 1, 16, 16), float(edge.square().mean().sqrt()))
    assert float(DWTLoss()(smooth, target)) == pytest.approx(0.0, abs=1e-6)  # float32 convolution rounding
    assert float(DWTLoss()(edge, target)) > 0.1
    torch.testing.assert_close(F.mse_loss(smooth, target), F.mse_loss(edge, target))


def test_dwt_loss_shift_variance_of_haar_level_one() -> None:
    """Steps between Haar pairs (columns 1 | 2, 9 | 10) are invisible at level 1, seen at level 2."""
    target = torch.zeros(1, 1, 16, 16)
    edge = torch.zeros(1, 1, 16, 16)
    edge[..., :, 2:10] = 1.0
    assert float(DWTLoss(levels=1)(edge, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(DWTLoss(levels=2)(edge, target)) > 0.1


@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (1, 2, 15, 9)])
def test_dwt_loss_ignores_constant_offset_without_approximation(shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, dtype=torch.float64)
    for levels in (1, 2, 3):
        assert float(DWTLoss(levels=levels)(x + 3.25, x)) == pytest.approx(0.0, abs=1e-12)
    # the offset lives in LL only: orthonormal 2D Haar scales a constant by 2 per level
    got = DWTLoss(levels=2, include_approximation=True, reduction="none")(x + 3.25, x)
    torch.testing.assert_close(got, torch.full(shape[:2], 4 * 3.25, dtype=torch.float64))


def test_dwt_loss_subband_weights_forms_and_selection() -> None:
    x, y = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    as_tuple = DWTLoss(subband_weights=(1.0, 0.0, 2.0))(x, y)
    as_dict = DWTLoss(subband_weights={"HH": 2.0, "LH": 1.0, "HL": 0})(x, y)
    as_enum = DWTLoss(subband_weights={Subband.LH: 1, Subband.HL: 0, Subband.HH: 2})(x, y)
    _, (lh, _, hh) = dwt2(x - y)
    expected = lh.abs().mean() + 2 * hh.abs().mean()
    for value in (as_tuple, as_dict, as_enum):
        torch.testing.assert_close(value, expected)
    only_ll = DWTLoss(subband_weights=(0, 0, 0), include_approximation=0.5)(x, y)
    torch.testing.assert_close(only_ll, 0.5 * dwt2(x - y)[0].abs().mean())


def test_dwt_loss_gradcheck() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    for loss in (
        DWTLoss(levels=2, distance="mse", include_approximation=0.5),
        DWTLoss(wavelet="db2", mode="symmetric"),  # L1: smooth away from zero coefficients (random data)
        MSEPlusDWTLoss(reduction="none"),
    ):
        assert torch.autograd.gradcheck(lambda t, loss=loss: loss(t, y), (x,))


def test_dwt_loss_is_a_module_with_reduction_attribute() -> None:
    loss = DWTLoss(reduction="sum")
    assert isinstance(loss, torch.nn.modules.loss._Loss)
    assert loss.reduction == "sum"
    assert loss.distance is Distance.L1 and loss.mode is WaveletMode.PERIODIZATION
    assert loss.subband_weights == (1.0, 1.0, 1.0) and loss.approximation_weight == 0.0
    assert DWTLoss(include_approximation=True).approximation_weight == 1.0


def test_dwt_loss_input_errors() -> None:
    loss = DWTLoss(levels=2)
    a, b = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 6)
    message = "input and target must have the same shape, got input (1, 1, 8, 8) and target (1, 1, 8, 6)"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        loss(a, b)
    message = "input and target must have shape (B, C, H, W), got shape (1, 8, 8)"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        loss(a[0], a[0])
    message = "H and W must be >= 2**levels = 4 for levels=2, got shape (1, 1, 8, 3)"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        loss(torch.zeros(1, 1, 8, 3), torch.zeros(1, 1, 8, 3))
    with pytest.raises(TypeError, match=r"^input and target must be torch.Tensors, got Tensor and ndarray$"):
        loss(a, np.zeros((1, 1, 8, 8)))  # type: ignore[arg-type]
    message = "input and target must both be float32 or float64, got torch.float32 and torch.float64"
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        loss(a, a.double())


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"levels": 0}, ValueError, "levels must be >= 1, got 0"),
        ({"levels": 1.0}, TypeError, "levels must be an int, got float"),
        ({"wavelet": "db99"}, ValueError, "wavelet must name a discrete PyWavelets wavelet"),
        ({"distance": "l2"}, ValueError, "distance must be one of 'l1', 'mse'; got 'l2'"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of 'none', 'mean', 'sum'; got 'avg'"),
        ({"mode": "antisymmetric"}, ValueError, "mode must be one of"),
        ({"subband_weights": (1, 1)}, ValueError, "subband_weights sequence must have 3 entries (LH, HL, HH), got 2"),
        (
            {"subband_weights": {"LH": 1, "HL": 1}},
            ValueError,
            "subband_weights dict must have exactly the keys ('LH', 'HL', 'HH'), got ('LH', 'HL')",
        ),
        ({"subband_weights": 1.0}, TypeError, "subband_weights must be a dict with keys"),
        ({"subband_weights": (1, -1, 1)}, ValueError, "subband_weights[HL] must be finite and >= 0, got -1.0"),
        ({"subband_weights": (1, 1, float("nan"))}, ValueError, "subband_weights[HH] must be finite and >= 0, got nan"),
        ({"subband_weights": (1, "a", 1)}, TypeError, "subband_weights[HL] must be a real number, got str"),
        ({"include_approximation": -0.5}, ValueError, "include_approximation must be finite and >= 0, got -0.5"),
        (
            {"subband_weights": (0, 0, 0)},
            ValueError,
            "all sub-band weights and the approximation weight are 0: the loss would be identically 0",
        ),
    ],
)
def test_dwt_loss_argument_errors(kwargs: dict[str, object], exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match="^" + re.escape(message)):
        DWTLoss(**kwargs)  # type: ignore[arg-type]


def test_dwt_loss_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        DWTLoss("haar")  # type: ignore[misc]
    with pytest.raises(TypeError):
        MSEPlusDWTLoss(0.1)  # type: ignore[misc]


# --------------------------------------------------------------------------------------------- MSE + 0.1·DWT


def test_mse_plus_dwt_uses_weight_point_one() -> None:
    x, y = torch.randn(3, 1, 16, 16, dtype=torch.float64), torch.randn(3, 1, 16, 16, dtype=torch.float64)
    loss = MSEPlusDWTLoss()
    assert loss.dwt_weight == 0.1
    mse = F.mse_loss(x, y)
    dwt = DWTLoss()(x, y)
    torch.testing.assert_close(loss(x, y), mse + 0.1 * dwt, rtol=1e-14, atol=0)
    # the weight really multiplies the DWT term: L(λ) is affine in λ with slope L_DWT
    torch.testing.assert_close(MSEPlusDWTLoss(dwt_weight=0.0)(x, y), mse)
    torch.testing.assert_close(MSEPlusDWTLoss(dwt_weight=1.0)(x, y) - mse, dwt)


def test_mse_plus_dwt_passes_dwt_kwargs_and_reductions() -> None:
    x, y = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.randn(2, 3, 16, 16, dtype=torch.float64)
    kwargs = {"wavelet": "db2", "levels": 2, "subband_weights": (1, 2, 3), "distance": "mse", "mode": "symmetric"}
    loss = MSEPlusDWTLoss(dwt_weight=0.25, reduction="none", **kwargs)
    assert loss.dwt.wavelet == "db2" and loss.dwt.levels == 2 and loss.dwt.distance is Distance.MSE
    per_image = loss(x, y)
    assert per_image.shape == (2, 3)
    expected = (x - y).square().mean(dim=(-2, -1)) + 0.25 * DWTLoss(reduction="none", **kwargs)(x, y)
    torch.testing.assert_close(per_image, expected)
    torch.testing.assert_close(MSEPlusDWTLoss(dwt_weight=0.25, **kwargs)(x, y), expected.mean())
    torch.testing.assert_close(MSEPlusDWTLoss(dwt_weight=0.25, reduction="sum", **kwargs)(x, y), expected.sum())


def test_mse_plus_dwt_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"^dwt_weight must be finite and >= 0, got -0.1$"):
        MSEPlusDWTLoss(dwt_weight=-0.1)
    with pytest.raises(ValueError, match=r"^levels must be >= 1, got 0$"):
        MSEPlusDWTLoss(levels=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'wavelets'"):
        MSEPlusDWTLoss(wavelets="haar")
    with pytest.raises(ValueError, match=re.escape("input and target must have the same shape")):
        MSEPlusDWTLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
