"""uPETe workflow: data loading in network units, evaluation outputs checked against independent metrics."""

from __future__ import annotations

import json

import pytest

from bundle.data.upete import load_split
from bundle.workflows.upete import ABLATIONS, BASELINES, evaluate_upete
from tests.upete_fixtures import write_dataset


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
        expected.append(float(psnr(low * scale, ref, data_range=float(ref.max()))))  # default convention: L = max r
    assert result["rows"]["LPET"]["PSNR"][0] == pytest.approx(sum(expected) / len(expected))
    assert result["tuned"]["gaussian_sigma_voxels"] in (0.5, 1.0) and result["tuned"]["nlm_h_factor"] == 0.8
    for name in ("table", "json", "csv", "dose_figure", "panel"):
        assert (tmp_path / "eval").joinpath(result["files"][name].split("/")[-1]).is_file()
    saved = json.loads((tmp_path / "eval" / "results.json").read_text(encoding="utf-8"))
    assert set(saved["curves"]["LPET"]) == {"0.1", "0.5"}
    assert BASELINES[0] == "LPET" and ABLATIONS == ("LDM", "LDM-P", "LDM-CT", "LDM-P-CT")


def test_reading_table_against_direct_lesion_metrics(tmp_path):
    """The reading table's LPET row is the mean over test cases of the lesion metrics of the LPET files in kBq/ml
    against the true activity, and the liver CoV of the eroded liver (here the body without the lesion)."""
    import nibabel as nib
    import torch

    from bundle.metrics import erode, lesion_metrics, region_cov

    root = write_dataset(tmp_path / "ds")
    result = evaluate_upete(root, output_dir=tmp_path / "eval", curve_doses=(0.1,), gaussian_grid=(0.5,),
                            nlm_grid=(0.8,), progress=False)
    assert list(result["reading_rows"]) == ["SPET (reference)", "LPET", "Gaussian", "NLM"]
    assert (tmp_path / "eval" / "reading.md").is_file()
    crs, covs = [], []
    for entry in json.loads((root / "datalist.json").read_text(encoding="utf-8"))["test"]:
        load = {k: torch.from_numpy(nib.load(str(root / entry[k])).get_fdata()).float()
                for k in ("pet_low", "activity", "labels", "lesions")}
        (row,) = lesion_metrics(load["pet_low"], load["activity"], load["lesions"])
        crs.append(row["contrast_recovery"])
        liver = erode(load["labels"] == 4, 1) & (load["lesions"] == 0)
        covs.append(100 * region_cov(load["pet_low"], liver))
    assert result["reading_rows"]["LPET"]["CR"][0] == pytest.approx(sum(crs) / len(crs), rel=1e-5)
    assert result["reading_rows"]["LPET"]["liver CoV %"][0] == pytest.approx(sum(covs) / len(covs), rel=1e-5)


def test_lesion_free_test_subjects_give_na_lesion_cells_not_a_crash(tmp_path):
    """The tiny preset draws 0-4 lesions per subject: when no test subject has one, the lesion columns are n/a
    (None in results.json) and the liver CoV is still reported (the --retrain main job failed here)."""
    import nibabel as nib
    import numpy as np

    root = write_dataset(tmp_path / "ds")
    for entry in json.loads((root / "datalist.json").read_text(encoding="utf-8"))["test"]:
        image = nib.load(str(root / entry["lesions"]))
        nib.save(nib.Nifti1Image(np.zeros(image.shape, np.float32), image.affine), str(root / entry["lesions"]))
    result = evaluate_upete(root, output_dir=tmp_path / "eval", curve_doses=(0.1,), gaussian_grid=(0.5,),
                            nlm_grid=(0.8,), progress=False)
    assert result["reading_rows"]["LPET"]["CR"] is None and result["reading_rows"]["LPET"]["SUVmax bias %"] is None
    assert len(result["reading_rows"]["LPET"]["liver CoV %"]) == 2
    lpet = next(line for line in (tmp_path / "eval" / "reading.md").read_text(encoding="utf-8").splitlines()
                if line.startswith("| LPET"))
    assert lpet.count("n/a") == 3
    saved = json.loads((tmp_path / "eval" / "results.json").read_text(encoding="utf-8"))
    assert saved["reading_rows"]["LPET"]["CR"] is None


def test_autoencoder_ceiling_is_the_round_trip_score(tmp_path):
    """A stand-in autoencoder whose round trip is 0.9 x: the ceiling equals the metrics of 0.9 · SPET against the
    SPET, through sliding windows (a linear map blends exactly) and on whole volumes."""
    import torch

    from bundle.metrics import image_metrics
    from bundle.workflows.upete import autoencoder_ceiling, evaluate_ceiling

    class Scaling(torch.nn.Module):
        def encode(self, x):
            return x, torch.ones_like(x)

        def decode_stage_2_outputs(self, z):
            return 0.9 * z

    root = write_dataset(tmp_path / "ds")
    cases = load_split(root, "test", doses=[])
    expected = [image_metrics(0.9 * c.spet * c.spet_scale, c.spet * c.spet_scale)["PSNR"] for c in cases]
    for roi in (None, (8, 8, 8)):
        ceiling = autoencoder_ceiling(cases, Scaling(), roi_size=roi)
        assert ceiling["PSNR"][0] == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    written = evaluate_ceiling(root, output_dir=tmp_path / "c", autoencoder=Scaling(), roi_size=None)
    assert json.loads((tmp_path / "c" / "ceiling.json").read_text())["cases"] == written["cases"] == ["s004", "s005"]


def test_optional_unet_loads_only_for_a_real_true(tmp_path):
    """configs/upete/shipped.json's compare_unet: True loads the checkpoint's weights, False gives no U-Net, and
    the string "true" (how the command line passes a lower-case word) is refused instead of read as truthy."""
    import torch

    from bundle.workflows.upete import optional_unet

    trained, fresh = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    torch.save({"network": trained.state_dict()}, tmp_path / "unet.pt")
    loaded = optional_unet(fresh, tmp_path / "unet.pt", compare=True)
    assert torch.equal(loaded.weight, trained.weight)
    assert optional_unet(torch.nn.Linear(2, 2), tmp_path / "missing.pt", compare=False) is None
    with pytest.raises(ValueError, match="compare_unet must be True or False"):
        optional_unet(fresh, tmp_path / "unet.pt", compare="true")


def test_shipped_evaluation_adds_the_unet_rows_only_when_asked():
    """The recipe upete/evaluate_shipped: by default no U-Net (nothing loaded, no curve); --compare_unet True puts
    it in the dose curve beside the shipped model."""
    from monai.bundle import ConfigParser

    from bundle.recipes import recipe

    parser = ConfigParser()
    parser.read_config([str(p) for p in recipe("upete/evaluate_shipped").paths()])
    assert parser.get_parsed_content("trained_unet") is None
    assert parser.get_parsed_content("curve_methods") == ["LPET", "Gaussian", "NLM", "IMG-P-CT"]
    parser["compare_unet"] = True
    assert parser.get_parsed_content("curve_methods", lazy=False) == ["LPET", "Gaussian", "NLM", "U-Net", "IMG-P-CT"]
