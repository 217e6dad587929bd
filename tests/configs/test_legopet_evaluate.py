"""LegoPET bundle configs beyond training: DeepPET baseline, EMA wiring, the tiny/paper presets and the evaluation
workflow (``evaluate.json``) run on random-weight checkpoints of the configured networks."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser

from bundle.networks.deeppet import DeepPET
from bundle.networks.legopet import LegoPETDenoiser, PnPNet
from bundle.recipes import recipe
from tests.workflows.test_legopet import write_dataset

TINY_LAYOUT = {"channels": [8, 16, 16, 16], "num_res_blocks": 1, "attention_levels": [False, False, False, True],
               "norm_num_groups": 8, "num_head_channels": 8}


def _parser(name: str, *overlays: str, **overrides) -> ConfigParser:
    """Recipe ``legopet/<name>`` (configs/recipes.json) with ``overlays`` (configs/legopet/ files) and ``overrides``."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in recipe(f"legopet/{name}").paths(*(f"legopet/{o}" for o in overlays))])
    for key, value in overrides.items():
        parser[key] = value
    return parser


def test_paper_preset_is_the_default():
    """Published sizes (METHODS.md): 256 × 256, T = 1000, batch 4, 500 epochs, Adam 3e-5, 35.7 M denoiser
    parameters; DeepPET about 11 M."""
    for name in ("pnpnet", "legopet"):
        p = _parser(name)
        assert (p["pad_size"], p["batch_size"], p["max_epochs"], p["learning_rate"]) == (256, 4, 500, 3e-5)
    legopet = _parser("legopet")
    assert legopet["num_train_timesteps"] == 1000
    denoiser = legopet.get_parsed_content("network_def")
    assert sum(p.numel() for p in denoiser.parameters()) == 35_742_849  # paper Table 1: 35.71 M
    assert _parser("pnpnet")["layout"] == legopet["layout"]  # PnPNet features fit the denoiser
    deeppet = _parser("deeppet").get_parsed_content("network_def")
    assert isinstance(deeppet, DeepPET) and sum(p.numel() for p in deeppet.parameters()) == 10_999_041


def test_deeppet_training_config():
    p = _parser("deeppet", "tiny.json", dataset_dir="unused")
    assert isinstance(p.get_parsed_content("network_def"), DeepPET)
    assert isinstance(p.get_parsed_content("loss"), torch.nn.MSELoss)
    assert p.get_parsed_content("ckpt_dir").endswith("/results/deeppet/checkpoints")
    assert p.get_parsed_content("handlers#1#final_filename") == "deeppet_final.pt"
    assert p.get_parsed_content("val_handlers#2#key_metric_filename") == "deeppet_best.pt"
    assert p["training"] == ["$@trainer.run()"]
    # the PnPNet workflow is unchanged by the model_name refactor
    assert _parser("pnpnet").get_parsed_content("ckpt_dir").endswith("/results/pnpnet/checkpoints")


def test_ema_handler_wiring_and_arithmetic():
    """The configured EMAHandler tracks @network with ema_momentum m: one update after θ ← θ + 1 gives θ0 + m, and
    the interval/final checkpoints save it as 'ema'."""
    p = _parser("cdpm", dataset_dir="unused", ema_momentum=0.25, layout=TINY_LAYOUT)
    network = p.get_parsed_content("network")
    before = {k: v.detach().clone() for k, v in network.state_dict().items()}
    ema = p.get_parsed_content("ema")
    assert ema.model is network and p.get_parsed_content("handlers#0") is ema

    def step(engine, batch):
        with torch.no_grad():
            for param in network.parameters():
                param.add_(1.0)

    engine = Engine(step)
    ema.attach(engine)
    engine.run([0], max_epochs=1)
    for name, value in ema.ema_model.state_dict().items():
        torch.testing.assert_close(value, before[name] + 0.25)
    save_dict = p["handlers"][1]["save_dict"]
    assert save_dict["ema"] == "$@ema.ema_model" and p["handlers"][1]["final_filename"] == "$@method + '_final.pt'"


@pytest.mark.slow
def test_evaluate_config_runs_on_random_checkpoints(tmp_path):
    dataset = write_dataset(tmp_path / "data")
    results = tmp_path / "run" / "results"
    torch.manual_seed(0)
    nets = {
        "pnpnet": PnPNet(**TINY_LAYOUT),
        "cdpm": LegoPETDenoiser(**TINY_LAYOUT),
        "legopet": LegoPETDenoiser(**TINY_LAYOUT),
        "deeppet": DeepPET(channels=(4, 8), convs_per_level=1),
    }
    for name, net in nets.items():
        folder = results / name / "checkpoints"
        folder.mkdir(parents=True)
        torch.save({"network": net.state_dict()}, folder / f"{name}_final.pt")
    p = _parser("evaluate", "tiny.json", dataset_dir=str(dataset),
                bundle_root=str(tmp_path / "run"), layout=TINY_LAYOUT, num_inference_steps=1, eval_limit=1,
                deeppet_layout={"channels": [4, 8], "convs_per_level": 1, "norm": "batch"})
    p.get_parsed_content("evaluating")
    table = (results / "legopet_evaluation" / "table.md").read_text(encoding="utf-8").splitlines()
    assert table[0] == "| Method | PSNR | SSIM |"
    assert [line.split(" | ")[0][2:] for line in table[2:8]] == [
        "OSEM", "DeepPET", "cDPM", "cDPM (mean of 4)", "LegoPET", "LegoPET (mean of 4)"]  # num_samples 4
    samplers = p.get_parsed_content("cost_samplers")
    assert [type(s.scheduler).__name__ for s in samplers] == ["DDIMScheduler", "DDIMScheduler", "DDPMScheduler"]
    assert [s.num_inference_steps for s in samplers] == [20, 50, 1000]
