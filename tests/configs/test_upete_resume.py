"""uPETe training resume (configs/upete/resume.json): a real ``python -m monai.bundle run training`` killed with
SIGKILL mid-epoch, resumed from its last (end-of-epoch) checkpoint, ends bit-identical to an uninterrupted run.

Tiny runs on tests/upete_fixtures.py's dataset: 2 training subjects, batch 1, one 8 × 8 × 8 patch per subject and
step (smaller than the 16 × 16 × 8 volumes, so the random crops matter), i.e. 2 iterations per epoch, 2 epochs,
an interval checkpoint every epoch.  The killed run is a subprocess (its startup dominates the time); the
uninterrupted reference runs in this process meanwhile; the resumed run parses the stack with resume.json layered
last and runs its ``training`` id here.  torch and numba use one thread in both processes (same float reductions).
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

from bundle.recipes import configs_dir, recipe
from tests.upete_fixtures import write_dataset
from tests.upete_trained import TINY

ROOT = Path(__file__).resolve().parents[2]
ITERATIONS_PER_EPOCH = 2  # 2 training subjects, batch 1
MAX_EPOCHS = 2
KILL_AT = 3  # mid epoch 2: the newest checkpoint is checkpoint_epoch=1.pt (iteration 2)
STAGES = {  # recipe (configs/recipes.json); checkpoint folder under output_dir/upete; final file; checkpoint entries;
    # the stage's settings (an interval checkpoint every epoch, MAX_EPOCHS epochs)
    "autoencoder": ("upete/autoencoder", "autoencoder", "autoencoder_final.pt",
                    {"autoencoder", "discriminator", "optimizer", "d_optimizer", "trainer", "rng"},
                    {"ae_handlers#0#save_interval": 1, "ae_max_epochs": MAX_EPOCHS, "adversarial_warmup": KILL_AT}),
    "ldm": ("upete/ldm", "LDM-P-CT", "ldm_final.pt",
            {"network", "optimizer", "trainer", "rng"},
            {"ldm_handlers#0#save_interval": 1, "ldm_max_epochs": MAX_EPOCHS, "variant": "LDM-P-CT",
             "dose_osem": {"num_subsets": 2, "num_iterations": 1}}),
    "unet": ("upete/unet", "unet", "unet_final.pt",
             {"network", "optimizer", "trainer", "rng"},
             {"unet_handlers#0#save_interval": 1, "unet_max_epochs": MAX_EPOCHS, "unet_def#channels": [4, 8, 16]}),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("upete_resume") / "data")


@pytest.fixture(scope="module")
def autoencoder_file(tmp_path_factory) -> Path:
    """Stage 1's output for the latent stage: a seeded random tiny autoencoder."""
    from bundle.networks.upete import pet_autoencoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("upete_ae") / "autoencoder_final.pt"
    torch.save({"autoencoder": pet_autoencoder(latent_channels=3, **TINY["autoencoder_layout"]).state_dict()}, path)
    return path


@pytest.fixture()
def single_thread():
    """torch and numba on one thread in this process, as in the killed subprocess (numba's OpenMP layer raises
    torch's thread count to NUMBA_NUM_THREADS when it first runs, whatever OMP_NUM_THREADS says)."""
    import numba

    threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    numba.set_num_threads(numba_threads)


def _layer(folder: Path, stage: str, data: Path, output_dir: Path, **extra) -> Path:
    layer = {**TINY, "patch_size": [8, 8, 8], "dataset_dir": str(data), "output_dir": str(output_dir),
             **STAGES[stage][4], **extra}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "layer.json"
    path.write_text(json.dumps(layer), encoding="utf-8")
    return path


def _stack(stage: str, *layers: Path, resume: bool = False) -> list[str]:
    files = [*recipe(STAGES[stage][0]).paths(), *layers]
    return [str(f) for f in (*files, *([configs_dir() / "upete" / "resume.json"] if resume else []))]


def _parser(files: list[str]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(files)
    return parser


def _train(parser: ConfigParser) -> None:
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("training")


def _assert_same(a, b, path: str = "") -> None:
    """Bit-equal nested checkpoint entries (tensors, numbers, strings, lists, dicts)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}/{i}")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _kill_and_resume(tmp_path: Path, stage: str, **extra) -> tuple[dict, dict, dict]:
    """Killed subprocess + in-process reference, then the in-process resume; returns (checkpoint the resume started
    from, resumed final, reference final)."""
    _, folder, final_name, _, _ = STAGES[stage]
    folder = extra.get("variant", folder)
    data = extra.pop("data")
    killed_out, reference_out = tmp_path / "killed", tmp_path / "reference"
    killed_layer = _layer(tmp_path / "killed_cfg", stage, data, killed_out, **extra)
    kill = tmp_path / "killed_cfg" / "kill.json"  # the stage's training id plus a SIGKILL after iteration KILL_AT
    kill.write_text(json.dumps({
        "kill_imports": ["$import os", "$import signal", "$import ignite"],
        "training": ["$monai.utils.set_determinism(seed=@training_seed)",
                     f"$@trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED(once={KILL_AT}), "
                     "lambda engine: os.kill(os.getpid(), signal.SIGKILL))", "$@trainer.run()"],
    }), encoding="utf-8")
    command = [sys.executable, "-m", "monai.bundle", "run", "training",
               "--config_file", "[" + ",".join(f"'{f}'" for f in _stack(stage, killed_layer, kill)) + "]"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}  # one thread here and there (fixture single_thread): same float reductions
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _train(_parser(_stack(stage, _layer(tmp_path / "reference_cfg", stage, data, reference_out, **extra))))
    finally:
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, stderr[-3000:]

    ckpt_dir = killed_out / "upete" / folder
    assert sorted(p.name for p in ckpt_dir.glob("*.pt")) == ["checkpoint_epoch=1.pt"]  # no final file after a kill
    start = torch.load(ckpt_dir / "checkpoint_epoch=1.pt", weights_only=True)
    assert set(start) == STAGES[stage][3] | {"run_id"}
    assert start["trainer"]["iteration"] == ITERATIONS_PER_EPOCH

    resumed = _parser(_stack(stage, killed_layer, resume=True))
    trainer = resumed.get_parsed_content("trainer")
    seen: dict = {}

    @trainer.on(Events.ITERATION_STARTED)
    def _first(engine):  # ignite increments the count before ITERATION_STARTED
        seen.setdefault("start", (engine.state.epoch, engine.state.iteration))

    _train(resumed)
    seen["resumed_from"] = resumed.get_parsed_content("resume").resumed_from
    assert seen["resumed_from"] == ckpt_dir / "checkpoint_epoch=1.pt"
    assert seen["start"] == (2, ITERATIONS_PER_EPOCH + 1)  # continues after epoch 1, not from iteration 1
    assert (trainer.state.epoch, trainer.state.iteration) == (MAX_EPOCHS, MAX_EPOCHS * ITERATIONS_PER_EPOCH)
    final = torch.load(ckpt_dir / final_name, weights_only=True)
    reference = torch.load(reference_out / "upete" / folder / final_name, weights_only=True)
    return start, final, reference


def _crop_and_flip_states(rng: dict) -> list[str]:
    return [s["path"] for s in rng["numpy"]["train_dataset"]]


def test_autoencoder_killed_mid_epoch_resumes_bit_identical(tmp_path, dataset, single_thread):
    """Autoencoder + PatchDiscriminator: SIGKILL at iteration 3, resume from epoch 1; the adversarial terms switch on
    after iteration 3 by the restored iteration count; both networks, both optimizers, the trainer state and every
    random state after epoch 2 equal the uninterrupted run's."""
    start, final, reference = _kill_and_resume(tmp_path, "autoencoder", data=dataset)
    paths = _crop_and_flip_states(start["rng"])
    assert any(".cropper" in p for p in paths) and "CacheDataset.transform.transforms[5].R" in paths  # crop, flip
    assert final["trainer"]["iteration"] == reference["trainer"]["iteration"] == MAX_EPOCHS * ITERATIONS_PER_EPOCH
    for entry in STAGES["autoencoder"][3]:
        _assert_same(final[entry], reference[entry], entry)
    assert len(final["d_optimizer"]["state"]) > 0  # the discriminator trained after the warm-up
    assert any(not torch.equal(final["autoencoder"][k], v) for k, v in start["autoencoder"].items())


@pytest.mark.parametrize("variant", ["LDM-P-CT", "LDM-CT"])
def test_latent_diffusion_killed_mid_epoch_resumes_bit_identical(tmp_path, dataset, autoencoder_file, single_thread,
                                                                 variant):
    """LDM-P-CT in the default sinogram domain (RandDoseReductiond's NumPy state draws t and the thinning seed) and
    the Gaussian LDM-CT (ldm_prepare_batch's generator draws t and the noise): with those, torch's RNG and the crop
    and flip states restored, the resumed run ends bit-identical."""
    start, final, reference = _kill_and_resume(tmp_path, "ldm", data=dataset, ae_checkpoint=str(autoencoder_file),
                                               variant=variant)
    assert set(start["rng"]["generators"]) == {"prepare_batch"}
    paths = _crop_and_flip_states(start["rng"])
    crop = 5 if variant == "LDM-P-CT" else 4  # the 4 loading transforms [+ RandDoseReductiond], crop, flip
    expected = {f"CacheDataset.transform.transforms[{i}].R" for i in range(4, crop + 2)} | {"CacheDataset.transform.R"}
    assert set(paths) == expected | {f"CacheDataset.transform.transforms[{crop}].cropper.R",
                                     f"CacheDataset.transform.transforms[{crop}].cropper.cropper.R"}
    for entry in STAGES["ldm"][3]:
        _assert_same(final[entry], reference[entry], entry)
    assert any(not torch.equal(final["network"][k], v) for k, v in start["network"].items())


@pytest.mark.parametrize("stage", list(STAGES))
def test_resume_without_checkpoint_names_the_folder(tmp_path, stage):
    layer = _layer(tmp_path / "cfg", stage, tmp_path / "no_data", tmp_path / "empty")
    parser = _parser(_stack(stage, layer, resume=True))
    with pytest.raises(RuntimeError) as caught:  # MONAI wraps expression errors; the cause is ours
        parser.get_parsed_content("training")
    cause = caught.value
    while cause.__cause__ is not None and not isinstance(cause, FileNotFoundError):
        cause = cause.__cause__
    assert isinstance(cause, FileNotFoundError)
    assert str(tmp_path / "empty" / "upete" / STAGES[stage][1]) in str(cause)
    assert "no checkpoint to resume from" in str(cause) and "configs/upete/resume.json" in str(cause)
