"""uPETe workflow: data loading in network units, evaluation outputs checked against independent metrics."""

from __future__ import annotations

import json

import pytest

from bundle.workflows.upete import ABLATIONS, BASELINES, evaluate_upete, load_split
from tests.upete_fixtures import write_dataset


def test_load_split_scales_each_volume_by_its_mean(tmp_path):
    root = write_dataset(tmp_path / "ds")
    cases = load_split(root, "test", mean_multiple=10.0)
    assert len(cases) == 2 and set(cases[0].low) == {0.1, 0.5}
    case = cases[0]
    assert case.spet.shape == (1, 1, 16, 16, 8) and case.ct.shape == case.spet.shape
    assert float(case.spet.mean()) == pytest.approx(0.1, rel=1e-5)  # x / (10 mean x)
    assert 0.0 <= float(case.ct.min()) and float(case.ct.max()) <= 1.0
    with pytest.raises(ValueError, match=r"datalist\.json"):
        load_split(tmp_path, "test")


def test_evaluate_writes_table_with_method_column_and_figures(tmp_path):
    root = write_dataset(tmp_path / "ds")
    result = evaluate_upete(root, output_dir=tmp_path / "eval", curve_doses=(0.1, 0.5), gaussian_grid=(0.5, 1.0),
                            nlm_grid=(0.8,), progress=False)
    header = result["table"].splitlines()[0]
    assert header == "| Method | PSNR | SSIM |"
    assert [line.split("|")[1].strip() for line in result["table"].splitlines()[2:]] == ["LPET", "Gaussian", "NLM"]
    from bundle.metrics import psnr

    expected = []
    for case in load_split(root, "test"):
        low, scale = case.low[0.1]
        ref = case.spet * case.spet_scale
        expected.append(float(psnr(low * scale, ref, data_range=float(ref.max() - ref.min()))))
    assert result["rows"]["LPET"]["PSNR"][0] == pytest.approx(sum(expected) / len(expected))
    assert result["tuned"]["gaussian_sigma_voxels"] in (0.5, 1.0) and result["tuned"]["nlm_h_factor"] == 0.8
    for name in ("table", "json", "csv", "dose_figure", "panel"):
        assert (tmp_path / "eval").joinpath(result["files"][name].split("/")[-1]).is_file()
    saved = json.loads((tmp_path / "eval" / "results.json").read_text(encoding="utf-8"))
    assert set(saved["curves"]["LPET"]) == {"0.1", "0.5"}
    assert BASELINES[0] == "LPET" and ABLATIONS == ("LDM", "LDM-P", "LDM-CT", "LDM-P-CT")


def test_poisson_domain_sets_the_start_dose():
    """Sinogram-domain x_t is an exact dose-d_t scan: an LPET of dose d starts at the step of dose d.  Image-domain
    x_t adds noise to the noisy SPET: it starts at d_eff(d) = (1 − d_ref) d / (1 − d)."""
    from bundle.checkpoint import Calibration
    from bundle.workflows.upete import make_process

    cal = Calibration(latent_scale=1.0, count_scale=50.0, latent_noise_variance=0.3, reference_dose=0.1,
                      dose_estimator_a=1.0, dose_estimator_b=0.0)
    sino = make_process("LDM-P", calibration=cal, poisson_domain="sinogram")
    image = make_process("LDM-P", calibration=cal, poisson_domain="image")
    assert sino.step_for_dose(0.05) == sino.schedule.step_for_dose(0.05)
    assert image.step_for_dose(0.05) == image.schedule.step_for_dose(0.9 * 0.05 / 0.95)
    assert sino.step_for_dose(0.05) < image.step_for_dose(0.05)
    with pytest.raises(ValueError, match="poisson_domain must be one of"):
        make_process("LDM-P", calibration=cal, poisson_domain="projector")
