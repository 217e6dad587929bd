"""The GAN baselines' configs (configs/legopet/gan.json + cgan.json / pix2pix.json over train_pnpnet.json): the
layering and the paper-preset networks, a 2-epoch training of each GAN on the 64 × 64 fabricated dataset followed by
the evaluation with and without the GAN rows, and an exact resume that restores the discriminator and its optimizer.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.networks.nets import PatchDiscriminator, UNet

from bundle.engines import ConditionalGANIteration
from tests.configs.test_legopet_resume import ITERATIONS_PER_EPOCH, _assert_same_states, _layer, _train
from tests.configs.test_legopet_resume import _parser as _resume_parser
from tests.configs.test_legopet_small import SMALL, _parser, _run, write_small_dataset

GANS = {"cgan": ("cGAN", "bce", 0.0), "pix2pix": ("Pix2Pix", "least_squares", 100.0)}


def _cause(error: BaseException, kind: type[BaseException]) -> BaseException:
    """The first exception of type ``kind`` in the ``__cause__`` chain (MONAI wraps instantiation errors)."""
    while error is not None and not isinstance(error, kind):
        error = error.__cause__
    assert error is not None, f"no {kind.__name__} in the chain"
    return error


@pytest.mark.parametrize("model", sorted(GANS))
def test_gan_configs_layer_over_the_regression_workflow(model):
    _, criterion, l1_weight = GANS[model]
    p = _parser(model, dataset_dir="unused")
    iteration = p.get_parsed_content("gan_iteration")
    assert isinstance(iteration, ConditionalGANIteration)
    assert (iteration.criterion, iteration.adversarial_weight, iteration.l1_weight) == (criterion, 1.0, l1_weight)
    assert p["trainer"]["iteration_update"] == "@gan_iteration"
    assert p.get_parsed_content("ckpt_dir").endswith(f"/results/{model}/checkpoints")
    assert p.get_parsed_content("handlers#1#final_filename") == f"{model}_final.pt"
    assert p.get_parsed_content("val_handlers#2#key_metric_filename") == f"{model}_best.pt"
    assert p["checkpoint_dict"].replace("::", "#") == "@handlers#1#save_dict"  # what resume.json loads
    assert set(p["handlers"][1]["save_dict"]) == {"network", "optimizer", "trainer", "rng", "validation", "run_id",
                                                  "discriminator", "d_optimizer"}
    assert p["handlers"][3]["_target_"] == "StatsHandler"  # gan.json prints the loss terms with this handler
    for name in ("optimizer", "d_optimizer"):
        group = p.get_parsed_content(name).param_groups[0]
        assert (group["lr"], group["betas"]) == (2e-4, (0.5, 0.999))  # the pix2pix repository's Adam
    assert p["training"] == ["$@trainer.run()"]

    generator, discriminator = p.get_parsed_content("network_def"), p.get_parsed_content("discriminator_def")
    assert isinstance(generator, UNet) and isinstance(discriminator, PatchDiscriminator)
    assert sum(q.numel() for q in generator.parameters()) == 28_254_529  # 64 -> 512 channels, 7 stride-2 levels
    assert sum(q.numel() for q in discriminator.parameters()) == 2_764_609  # 64 channels, 3 layers
    with torch.no_grad():  # the paper grid: 256 -> 2 x 2 bottleneck, the 70 x 70 PatchGAN gives 30 x 30 logits
        assert generator.eval()(torch.zeros(1, 1, 256, 256)).shape == (1, 1, 256, 256)
        assert discriminator.eval()(torch.zeros(1, 2, 256, 256))[-1].shape == (1, 1, 30, 30)

    small = _parser(model, *SMALL, dataset_dir="unused")
    assert small["learning_rate"] == 1e-3 and small["gan_layout"]["generator_channels"] == [8, 16, 32, 32]
    with torch.no_grad():
        assert small.get_parsed_content("network_def").eval()(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def _scalar_tags(log_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for path in log_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def _save_random(parser, name: str, model: str, results: Path) -> None:
    folder = results / model / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"network": parser.get_parsed_content(name).state_dict()}, folder / f"{model}_final.pt")


def _rows(folder: Path) -> dict[tuple[str, str], tuple[str, str]]:
    with (folder / "metrics.csv").open(encoding="utf-8") as f:
        return {(r["method"], r["id"]): (r["PSNR"], r["SSIM"]) for r in csv.DictReader(f)}


@pytest.mark.slow
def test_gans_train_and_join_the_evaluation_table(tmp_path):
    dataset = write_small_dataset(tmp_path / "data")
    common = {"dataset_dir": str(dataset), "bundle_root": str(tmp_path / "run"), "max_epochs": 2, "batch_size": 2}
    results = tmp_path / "run" / "results"
    for model in GANS:
        parser = _run((model, *SMALL), "training", **common,
                      val_interval=1)
        folder = results / model / "checkpoints"
        state = torch.load(folder / f"{model}_final.pt", weights_only=True)
        assert set(state) >= {"network", "optimizer", "discriminator", "d_optimizer", "trainer", "rng", "validation"}
        assert int(state["trainer"]["iteration"]) == 2 and (folder / f"{model}_best.pt").is_file()
        discriminator = parser.get_parsed_content("discriminator")
        _assert_same_states(state["discriminator"], discriminator.state_dict(), "discriminator")
        output = parser.get_parsed_content("trainer").state.output  # decollated like the stock iteration's
        assert isinstance(output, list) and len(output) == 2  # batch 2
        assert {"loss", "l1", "g_adv", "d_loss", "d_real", "d_fake"} <= set(output[0]) and output[0]["d_loss"] > 0
        assert _scalar_tags(results / model / "logs") >= {"train_loss", "l1", "g_adv", "d_loss", "d_real", "d_fake",
                                                          "val_psnr", "val_ssim"}

    names = ("evaluate", *SMALL)
    networks = _parser(*names, dataset_dir=str(dataset))
    for name, model in (("pnpnet_def", "pnpnet"), ("network_def", "cdpm"), ("network_def", "legopet"),
                        ("deeppet_def", "deeppet")):
        _save_random(networks, name, model, results)
    evaluation = {**common, "num_inference_steps": 2}
    _run(names, "evaluating", **evaluation, eval_dir=str(tmp_path / "plain"))
    with_gans = ("evaluate_gan", *SMALL)
    _run(with_gans, "evaluating", **evaluation, eval_dir=str(tmp_path / "gans"), gan_rows=["Pix2Pix", "cGAN"])
    table = (tmp_path / "gans" / "table.md").read_text(encoding="utf-8").splitlines()
    assert [line.split(" | ")[0][2:] for line in table[2:10]] == [  # the paper's Table-1 order
        "OSEM", "DeepPET", "cGAN", "Pix2Pix", "cDPM", "cDPM (mean of 4)", "LegoPET", "LegoPET (mean of 4)"]
    plain, gans = _rows(tmp_path / "plain"), _rows(tmp_path / "gans")
    assert {m for m, _ in plain} == {"OSEM", "DeepPET", "cDPM", "cDPM (mean of 4)", "LegoPET", "LegoPET (mean of 4)"}
    assert {k: v for k, v in gans.items() if k[0] not in ("cGAN", "Pix2Pix")} == plain  # other rows unchanged
    assert [v for k, v in gans.items() if k[0] == "cGAN"] != [v for k, v in gans.items() if k[0] == "Pix2Pix"]

    missing = tmp_path / "nowhere" / "cgan_final.pt"
    with pytest.raises(RuntimeError) as caught:
        _run(with_gans, "evaluating", **evaluation, eval_dir=str(tmp_path / "x"), gan_rows=["cGAN"],
             cgan_ckpt=str(missing))
    assert str(missing) in str(_cause(caught.value, FileNotFoundError))
    with pytest.raises(RuntimeError) as caught:  # rows requested without gan.json's generator
        _run(names, "evaluating", **evaluation, eval_dir=str(tmp_path / "y"), gan_rows=["cGAN"])
    assert "configs/legopet/gan.json" in str(_cause(caught.value, TypeError))


GAN_LAYOUT = {"generator_channels": [4, 8, 8], "norm": "batch", "discriminator_channels": 4,
              "discriminator_layers": 2}


def test_pix2pix_resume_restores_the_discriminator_exactly(tmp_path):
    """Stopped after epoch 1 (final checkpoint at the epoch boundary) and resumed to epoch 3 with resume.json: the
    discriminator and its optimizer start from the checkpoint and everything ends bit-equal to an uninterrupted run."""
    name = "pix2pix"
    reference_root, run_root = tmp_path / "reference", tmp_path / "run"
    _train(_resume_parser(name, _layer(tmp_path / "reference_cfg", reference_root, name, max_epochs=3,
                                          gan_layout=GAN_LAYOUT)))
    layer = _layer(tmp_path / "run_cfg", run_root, name, gan_layout=GAN_LAYOUT)
    _train(_resume_parser(name, layer, max_epochs=1))
    ckpt_dir = run_root / "results" / "pix2pix" / "checkpoints"
    first = torch.load(ckpt_dir / "pix2pix_final.pt", weights_only=True)
    assert first["trainer"]["iteration"] == ITERATIONS_PER_EPOCH and first["d_optimizer"]["state"]

    resumed = _resume_parser(name, layer, resume=True, max_epochs=3)
    trainer = resumed.get_parsed_content("trainer")
    discriminator = resumed.get_parsed_content("discriminator")
    d_optimizer = resumed.get_parsed_content("d_optimizer")
    seen: dict = {}

    @trainer.on(Events.EPOCH_STARTED(once=2))
    def _restored(engine):
        seen["iteration"] = engine.state.iteration
        seen["discriminator"] = {k: v.clone() for k, v in discriminator.state_dict().items()}
        seen["d_optimizer"] = copy.deepcopy(d_optimizer.state_dict())  # its tensors change in place later

    _train(resumed)
    assert seen["iteration"] == ITERATIONS_PER_EPOCH
    _assert_same_states(seen["discriminator"], first["discriminator"], "restored discriminator")
    _assert_same_states(seen["d_optimizer"], first["d_optimizer"], "restored d_optimizer")
    final = torch.load(ckpt_dir / "pix2pix_final.pt", weights_only=True)
    reference = torch.load(reference_root / "results/pix2pix/checkpoints/pix2pix_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == reference["trainer"]["iteration"] == 3 * ITERATIONS_PER_EPOCH
    for entry in ("network", "optimizer", "discriminator", "d_optimizer", "rng", "validation"):
        _assert_same_states(final[entry], reference[entry], entry)
    assert any(not torch.equal(final["discriminator"][k], v) for k, v in first["discriminator"].items())
