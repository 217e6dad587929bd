"""Checkpoint entries and the strict resume handler of bundle.engines.legopet (TrainerState, RandomStates,
KeyMetricState, resumable_checkpoint, ResumeTraining).  The config-level kill-and-resume test is
tests/configs/test_legopet_resume.py."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from bundle.engines.checkpoints import save_checkpoint
from bundle.engines.legopet import KeyMetricState, RandomStates, ResumeTraining, TrainerState, resumable_checkpoint


def _engine(epoch_length: int = 4) -> Engine:
    engine = Engine(lambda e, batch: None)
    engine.state.epoch_length = epoch_length
    engine.state.max_epochs = 3
    return engine


def test_trainer_state_proxies_the_attached_engine():
    state = TrainerState()
    with pytest.raises(RuntimeError, match="not attached"):
        state.state_dict()
    with pytest.raises(TypeError, match="engine must be an ignite Engine"):
        state.attach("trainer")
    engine = _engine()
    engine.state.iteration, engine.state.epoch = 8, 2
    state.attach(engine)
    saved = state.state_dict()
    assert (saved["iteration"], saved["epoch_length"], saved["max_epochs"]) == (8, 4, 3)
    other = _engine()
    proxy = TrainerState()
    proxy.attach(other)
    proxy.load_state_dict(saved)
    assert (other.state.iteration, other.state.epoch) == (8, 2)


def test_random_states_roundtrip_generators_and_global_rng():
    generator = torch.Generator().manual_seed(5)
    states = RandomStates(generators={"prepare_batch": generator})
    torch.manual_seed(1)
    saved = states.state_dict()
    assert set(saved) == {"generators", "torch"} and set(saved["generators"]) == {"prepare_batch"}
    expected = (torch.rand(3, generator=generator), torch.rand(3))
    torch.rand(7, generator=generator), torch.rand(7)  # move both on
    states.load_state_dict(saved)
    assert torch.equal(torch.rand(3, generator=generator), expected[0])
    assert torch.equal(torch.rand(3), expected[1])


def test_random_states_without_global_rng_leaves_it_alone():
    generator = torch.Generator().manual_seed(5)
    states = RandomStates(generators={"g": generator}, include_global=False)
    saved = states.state_dict()
    assert set(saved) == {"generators"}
    before = torch.get_rng_state()
    states.load_state_dict(saved)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"generators": [torch.Generator()]}, "generators must be a mapping"),
        ({"generators": {"": torch.Generator()}}, "generators keys"),
        ({"generators": {"g": 3}}, r"generators\['g'\] must be a torch.Generator"),
        ({"include_global": 1}, "include_global must be a bool"),
    ],
)
def test_random_states_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomStates(**kwargs)


def test_random_states_load_names_mismatched_generators():
    states = RandomStates(generators={"prepare_batch": torch.Generator()})
    message = r"holds the generators \['other'\], the configuration has \['prepare_batch'\]"
    with pytest.raises(ValueError, match=message):
        states.load_state_dict({"generators": {"other": torch.Generator().get_state()}, "torch": torch.get_rng_state()})
    with pytest.raises(ValueError, match="lacks the global RNG state 'torch'"):
        states.load_state_dict({"generators": {"prepare_batch": torch.Generator().get_state()}})
    with pytest.raises(ValueError, match="'generators' mapping"):
        states.load_state_dict({"torch": torch.get_rng_state()})


class _KeyMetricCheckpoint:
    def __init__(self) -> None:
        self._saved = [(3.5, "best.pt")]

    def state_dict(self):
        return {"_saved": list(self._saved)}


class _Saver:
    def __init__(self) -> None:
        self._key_metric_checkpoint = _KeyMetricCheckpoint()
        self.loaded = None

    def load_state_dict(self, state_dict):
        self.loaded = state_dict


def test_key_metric_state_roundtrip_and_argument_checks():
    evaluator = _engine()
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = 3.5, 2
    saved = KeyMetricState(evaluator=evaluator, saver=_Saver()).state_dict()
    assert saved == {"best_metric": 3.5, "best_metric_epoch": 2, "saved": [(3.5, "best.pt")]}
    fresh, saver = _engine(), _Saver()
    KeyMetricState(evaluator=fresh, saver=saver).load_state_dict(saved)
    assert (fresh.state.best_metric, fresh.state.best_metric_epoch) == (3.5, 2)
    assert saver.loaded == {"_saved": [(3.5, "best.pt")]}
    with pytest.raises(ValueError, match="evaluator must be an ignite Engine"):
        KeyMetricState(evaluator="evaluator", saver=_Saver())
    with pytest.raises(ValueError, match="saver must be a MONAI CheckpointSaver with save_key_metric=True"):
        KeyMetricState(evaluator=evaluator, saver=object())
    with pytest.raises(ValueError, match="best_metric_epoch"):
        KeyMetricState(evaluator=evaluator, saver=_Saver()).load_state_dict({"best_metric": 1.0})


def test_resumable_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_dir must be a folder path"):
        resumable_checkpoint("")
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=f"checkpoint folder {missing} does not exist"):
        resumable_checkpoint(missing)
    save_checkpoint({"network": {}}, tmp_path / "pnpnet_best.pt")  # weights only: not resumable
    with pytest.raises(FileNotFoundError, match=f"no checkpoint to resume from in {tmp_path}: .*'trainer' state"):
        resumable_checkpoint(tmp_path)
    save_checkpoint({"trainer": {"iteration": 4}}, tmp_path / "checkpoint_epoch=1.pt")
    save_checkpoint({"trainer": {"iteration": 8}}, tmp_path / "checkpoint_epoch=2.pt")
    assert resumable_checkpoint(tmp_path) == tmp_path / "checkpoint_epoch=2.pt"


def test_resume_training_refuses_a_fresh_start_and_attaches_trainer_states(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ResumeTraining(checkpoint_dir=tmp_path, load_dict={"trainer": TrainerState()})
    network = torch.nn.Linear(2, 1)
    source = _engine()
    source.state.iteration, source.state.epoch = 4, 1
    proxy = TrainerState()
    proxy.attach(source)
    save_checkpoint({"network": network.state_dict(), "trainer": proxy.state_dict()}, tmp_path / "a.pt")

    target, trainer_state = torch.nn.Linear(2, 1), TrainerState()
    handler = ResumeTraining(checkpoint_dir=tmp_path, load_dict={"network": target, "trainer": trainer_state})
    assert handler.checkpoint == tmp_path / "a.pt"
    engine = Engine(lambda e, batch: None)
    handler.attach(engine)
    assert trainer_state.engine is engine  # attached for ranks without train handlers
    seen = {}
    engine.add_event_handler(Events.ITERATION_STARTED(once=5), lambda e: seen.setdefault("epoch", e.state.epoch))
    engine.run([0] * 4, max_epochs=2)
    assert handler.resumed_from == tmp_path / "a.pt"
    assert seen == {"epoch": 2} and engine.state.iteration == 8
    for name, value in network.state_dict().items():
        assert torch.equal(target.state_dict()[name], value)
