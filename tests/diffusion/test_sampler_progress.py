"""The one reverse loop (bundle.diffusion.sampler.sample) draws a bar over its steps when bars show."""

from __future__ import annotations

import torch

from bundle.diffusion.sampler import sample
from bundle.progress import PROGRESS_ENV


class _Halve:
    """A step rule without a Gaussian schedule: x -> x̂_0 / 2 (x̂_0 = the model output, the SAMPLE prediction)."""

    def alpha(self, index: int) -> None:
        return None

    def step(self, *, x0, eps, sample, index, generator):
        return x0 / 2


def _run(**kwargs) -> torch.Tensor:
    x, _ = sample(torch.ones(2), [30, 20, 10], model=lambda x, t: x, step_rule=_Halve(), prediction_type="sample",
                  **kwargs)
    return x


def test_sampling_bar_when_forced_on_silent_when_off(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "on")
    x = _run(desc="PET-DDS")
    assert torch.equal(x, torch.full((2,), 1 / 8))  # three halvings: the loop ran every step
    err = capsys.readouterr().err
    assert "PET-DDS" in err and "0/3" in err and "step/s" in err  # an inner bar: cleared when done (leave=False)
    _run(desc="PET-DDS", progress=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(PROGRESS_ENV, "off")
    _run()
    assert capsys.readouterr().err == ""
