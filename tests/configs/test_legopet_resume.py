"""LegoPET training resume (configs/legopet/resume.json) and TensorBoard sample images, on tiny in-memory data.

The runs use the real training configs with a layer that swaps the datalists for a few random 16 × 16 (reference,
sinogram) pairs (no transforms) and the paper U-Net layout for the tiny one; the PnPNet of the LegoPET runs is a
seeded random PnPNet saved as a checkpoint, so that every run loads the same frozen network.  One training step takes
a few milliseconds; most of the time goes into parsing the configs and, for the kill test, one ``monai.bundle run``
subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

from bundle.recipes import recipe

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = {"channels": [8, 16, 16, 16], "num_res_blocks": 1, "attention_levels": [False, False, False, True],
          "norm_num_groups": 8, "num_head_channels": 8}
ITERATIONS_PER_EPOCH = 3  # 6 training pairs, batch 2


def _pairs(count: int, offset: int) -> str:
    """A config expression: ``count`` random (reference, sinogram) pairs ``(1, 16, 16)``, seeded by index."""
    return (f"$[{{'reference': torch.rand(1, 16, 16, generator=torch.Generator().manual_seed({offset} + i)), "
            f"'sinogram': torch.rand(1, 16, 16, generator=torch.Generator().manual_seed({offset + 100} + i)) + 0.5}} "
            f"for i in range({count})]")


def _layer(folder: Path, bundle_root: Path, name: str, **extra) -> Path:
    """The tiny-data layer (written to ``folder/layer.json``) for ``bundle_root`` and the training recipe
    ``legopet/<name>`` (configs/recipes.json)."""
    layer = {
        "train_data": _pairs(6, 0), "train_transforms#transforms": [], "image_shape": [16, 16], "layout": LAYOUT,
        "batch_size": 2, "device": "$torch.device('cpu')", "bundle_root": str(bundle_root), "ckpt_interval": 1,
        "ckpt_keep": None, "learning_rate": 1e-3,
    }
    if "legopet/train_pnpnet.json" in recipe(f"legopet/{name}").files:
        # validation set (evaluator, best checkpoint) = the sample images' set
        layer.update({"val_data": _pairs(2, 50), "val_transforms#transforms": [], "val_interval": 1})
    else:
        # previews: the first training pairs; validation PSNR/SSIM (at the end only): 2 held-out pairs
        layer.update({"image_log_steps": 2, "ema_momentum": 0.05, "val_data": _pairs(2, 50), "val_steps": 2})
    layer.update(extra)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "layer.json"
    path.write_text(json.dumps(layer), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pnpnet_ckpt(tmp_path_factory) -> Path:
    from bundle.networks.legopet import PnPNet

    path = tmp_path_factory.mktemp("pnpnet") / "pnpnet_final.pt"
    torch.manual_seed(3)
    torch.save({"network": PnPNet(**LAYOUT).state_dict()}, path)
    return path


def _parser(name: str, layer: Path, *, resume: bool = False, **overrides) -> ConfigParser:
    """Recipe ``legopet/<name>`` + ``layer`` (+ configs/legopet/resume.json) with ``overrides``."""
    files = [*recipe(f"legopet/{name}").paths(), layer]
    if resume:
        files.append(recipe(f"legopet/{name}").paths("legopet/resume.json")[-1])
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _train(parser: ConfigParser) -> None:
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("training")


def _assert_same_states(a: dict, b: dict, path: str = "") -> None:
    """Bit-equal nested checkpoint entries (tensors, numbers, lists, dicts)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            _assert_same_states(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_states(x, y, f"{path}/{i}")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _record_start(trainer) -> dict:
    seen: dict = {}

    @trainer.on(Events.EPOCH_STARTED)
    def _epoch(engine):
        seen.setdefault("epoch", engine.state.epoch)

    @trainer.on(Events.ITERATION_STARTED)
    def _iteration(engine):
        seen.setdefault("iteration", engine.state.iteration)  # ignite increments before ITERATION_STARTED

    return seen


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_legopet_killed_mid_epoch_resumes_exactly_like_an_uninterrupted_run(tmp_path, pnpnet_ckpt):
    """SIGKILL in epoch 2 (no final checkpoint), resume from epoch 1: the weights, EMA, optimizer and generator
    states after epoch 3 are bit-identical to an uninterrupted 3-epoch run's."""
    killed_root, reference_root = tmp_path / "killed", tmp_path / "reference"
    common = {"pnpnet_ckpt": str(pnpnet_ckpt), "max_epochs": 3}
    killed_layer = _layer(tmp_path / "killed_cfg", killed_root, "legopet", **common)
    kill = tmp_path / "killed_cfg" / "kill.json"  # SIGKILL itself after iteration 5 (mid epoch 2)
    kill.write_text(json.dumps({
        "kill_imports": ["$import os", "$import signal", "$import ignite"],
        "training": ["$@trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED(once=5), "
                     "lambda engine: os.kill(os.getpid(), signal.SIGKILL))", "$@trainer.run()"],
    }), encoding="utf-8")
    files = [*recipe("legopet/legopet").paths(), killed_layer, kill]
    command = [sys.executable, "-m", "monai.bundle", "run", "training",
               "--config_file", "[" + ",".join(f"'{f}'" for f in files) + "]"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "CUDA_VISIBLE_DEVICES": ""}  # same intra-op threads as this process: same float reductions
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _train(_parser("legopet", _layer(tmp_path / "reference_cfg", reference_root, "legopet", **common)))
    finally:
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, stderr[-3000:]

    ckpt_dir = killed_root / "results" / "legopet" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.glob("*.pt")) == ["checkpoint_epoch=1.pt"]  # no final file after a kill
    saved = torch.load(ckpt_dir / "checkpoint_epoch=1.pt", weights_only=True)
    assert set(saved) == {"network", "optimizer", "ema", "trainer", "rng", "run_id"}
    assert saved["trainer"]["iteration"] == ITERATIONS_PER_EPOCH
    assert set(saved["rng"]["generators"]) == {"prepare_batch"}

    resumed = _parser("legopet", killed_layer, resume=True)
    trainer = resumed.get_parsed_content("trainer")
    network = resumed.get_parsed_content("network")
    seen = _record_start(trainer)

    @trainer.on(Events.EPOCH_STARTED(once=2))
    def _weights(engine):
        seen["weights"] = {k: v.clone() for k, v in network.state_dict().items()}

    _train(resumed)
    assert resumed.get_parsed_content("resume").resumed_from == ckpt_dir / "checkpoint_epoch=1.pt"
    assert (seen["epoch"], seen["iteration"]) == (2, ITERATIONS_PER_EPOCH + 1)  # continues after epoch 1
    _assert_same_states(seen["weights"], saved["network"], "resumed start")
    assert (trainer.state.epoch, trainer.state.iteration) == (3, 3 * ITERATIONS_PER_EPOCH)

    final = torch.load(ckpt_dir / "legopet_final.pt", weights_only=True)
    reference = torch.load(reference_root / "results/legopet/checkpoints/legopet_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == reference["trainer"]["iteration"] == 9
    for entry in ("network", "ema", "optimizer", "rng"):
        _assert_same_states(final[entry], reference[entry], entry)
    assert any(not torch.equal(final["network"][k], v) for k, v in saved["network"].items())  # it did train on


def test_pnpnet_resume_is_exact_and_keeps_the_best_checkpoint_tracking(tmp_path):
    """PnPNet stopped after epoch 1 (final checkpoint at the epoch boundary) and resumed to epoch 3 ends like an
    uninterrupted run: weights, optimizer, RNG, and the evaluator's best metric and best-checkpoint list."""
    reference_root, run_root = tmp_path / "reference", tmp_path / "run"
    name = "pnpnet"
    _train(_parser(name, _layer(tmp_path / "reference_cfg", reference_root, name, max_epochs=3)))
    layer = _layer(tmp_path / "run_cfg", run_root, name)
    _train(_parser(name, layer, max_epochs=1))
    ckpt_dir = run_root / "results" / "pnpnet" / "checkpoints"
    first = torch.load(ckpt_dir / "pnpnet_final.pt", weights_only=True)
    assert set(first) == {"network", "optimizer", "trainer", "rng", "validation", "run_id"}
    validation = first["validation"]
    assert validation["best_metric_epoch"] == 1 and len(validation["saved"]) == 1  # (score, name) of pnpnet_best.pt
    assert validation["saved"][0][0] == pytest.approx(validation["best_metric"])

    resumed = _parser(name, layer, resume=True, max_epochs=3)
    trainer = resumed.get_parsed_content("trainer")
    evaluator = resumed.get_parsed_content("evaluator")
    seen = _record_start(trainer)

    @trainer.on(Events.EPOCH_STARTED(once=2))
    def _tracking(engine):  # before the first validation of the resumed run
        seen["best"] = (evaluator.state.best_metric, evaluator.state.best_metric_epoch)
        seen["saved"] = resumed.get_parsed_content("validation_state").state_dict()["saved"]

    _train(resumed)
    assert (seen["epoch"], seen["iteration"]) == (2, ITERATIONS_PER_EPOCH + 1)
    assert seen["best"] == (pytest.approx(validation["best_metric"]), 1)  # a worse epoch 2 would not replace it
    assert seen["saved"] == [tuple(item) for item in validation["saved"]]
    final = torch.load(ckpt_dir / "pnpnet_final.pt", weights_only=True)
    reference = torch.load(reference_root / "results/pnpnet/checkpoints/pnpnet_final.pt", weights_only=True)
    for entry in ("network", "optimizer", "trainer", "rng", "validation"):
        _assert_same_states(final[entry], reference[entry], entry)
    best, reference_best = (torch.load(d / "pnpnet_best.pt", weights_only=True) for d in
                            (ckpt_dir, reference_root / "results/pnpnet/checkpoints"))
    assert best.pop("run_id") == final["run_id"] == first["run_id"] != reference_best.pop("run_id")  # its own run's id
    _assert_same_states(best, reference_best, "best")  # ignite stores a single entry without its name


@pytest.mark.parametrize("name", ["cdpm", "pnpnet", "deeppet"])
def test_resume_without_checkpoint_names_the_folder(tmp_path, name):
    parser = _parser(name, _layer(tmp_path / "cfg", tmp_path / "empty", name), resume=True)
    with pytest.raises(RuntimeError) as caught:  # MONAI wraps instantiation errors; the cause is ours
        parser.get_parsed_content("training")
    cause = caught.value
    while cause.__cause__ is not None and not isinstance(cause, FileNotFoundError):
        cause = cause.__cause__
    assert isinstance(cause, FileNotFoundError)
    assert str(tmp_path / "empty" / "results" / name / "checkpoints") in str(cause)
    assert "no checkpoint to resume from" in str(cause)


def _image_tags(log_dir: Path) -> dict[str, list[tuple[int, int, int]]]:
    """tag -> [(step, height, width)] of every image summary in ``log_dir``'s event files."""
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    tags: dict[str, list[tuple[int, int, int]]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={IMAGES: 0})
        accumulator.Reload()
        for tag in accumulator.Tags()[IMAGES]:
            tags.setdefault(tag, []).extend((e.step, e.height, e.width) for e in accumulator.Images(tag))
    return tags


@pytest.mark.parametrize("model", ["legopet", "cdpm", "pnpnet"])
def test_tensorboard_sample_images_after_a_tiny_run(tmp_path, pnpnet_ckpt, model):
    """image_log_interval 1, 2 epochs: 2 samples × (input, reference, prediction, side by side) at steps 3 and 6."""
    layer = _layer(tmp_path / "cfg", tmp_path, model, pnpnet_ckpt=str(pnpnet_ckpt), max_epochs=2,
                   image_log_interval=1)
    parser = _parser(model, layer)
    _train(parser)
    tags = _image_tags(tmp_path / "results" / model / "logs")
    expected = {f"samples/{i}/{name}_HW" for i in (0, 1)
                for name in ("input", "reference", "prediction", "reference_prediction")}
    assert set(tags) == expected
    for tag, events in tags.items():
        width = 32 if tag.endswith("reference_prediction_HW") else 16
        assert sorted(events) == [(3, 16, width), (6, 16, width)], tag
    logger = parser.get_parsed_content("image_logger")
    network = parser.get_parsed_content("network")
    assert network.training  # the preview switched the model back to training mode
    if model != "pnpnet":
        assert logger.network is parser.get_parsed_content("ema").ema_model  # previews sample the EMA weights
        assert logger.inferer.num_inference_steps == 2
