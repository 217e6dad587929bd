"""TorchScript export by tracing: the traced networks equal the eager ones on other inputs, and the check works."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bundle.app.config import method_parser
from bundle.inferers.legopet import LegoPETInferer
from bundle.zoo.torchscript import GuidedLegoPETEpsilon, export_torchscript, trace_network
from tests.app.conftest import LEGOPET_TINY, PETDDS_TINY


def _inputs(batch, size, timesteps, seed, extra=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, size, size, generator=g)
    return (x, torch.tensor(timesteps), *(torch.randn(batch, 1, size, size, generator=g) for _ in range(extra)))


def test_traced_score_network_holds_for_other_batches_and_timesteps():
    torch.manual_seed(0)
    network = method_parser("petdds", overrides=PETDDS_TINY).get_parsed_content("network_def").eval()
    traced = trace_network(network, _inputs(1, 16, [10], 0), check_inputs=[_inputs(2, 16, [999, 0], 1)])
    x, t = _inputs(3, 16, [500, 1, 250], 2)  # a third input set, not used by the trace or its check
    with torch.no_grad():
        torch.testing.assert_close(traced(x, t), network(x, t), rtol=1e-5, atol=1e-6)


class _DataDependent(nn.Module):
    """Control flow on the data: a trace records only the branch of the example input."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * 2 if float(x.sum()) > 0 else -x


def test_trace_check_rejects_a_network_the_trace_does_not_hold_for():
    positive = (torch.ones(1, 1, 4, 4), torch.tensor([1]))
    negative = (-torch.ones(1, 1, 4, 4), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"check_inputs\[0\]"):
        trace_network(_DataDependent(), positive, check_inputs=[negative])
    with pytest.raises(ValueError, match="at least one"):
        trace_network(_DataDependent(), positive, check_inputs=[])


def test_traced_guided_legopet_step_equals_the_inferers_guided_noise():
    torch.manual_seed(0)
    parser = method_parser("legopet", overrides=LEGOPET_TINY)
    denoiser, pnpnet = parser.get_parsed_content("network_def").eval(), parser.get_parsed_content("pnpnet_def").eval()
    wrapper = GuidedLegoPETEpsilon(denoiser=denoiser, pnpnet=pnpnet, guidance_scale=1.5)
    traced = trace_network(wrapper, _inputs(1, 32, [10], 0, extra=1), check_inputs=[_inputs(2, 32, [999, 3], 1, 1)])
    x, _, s = _inputs(2, 32, [0, 0], 5, extra=1)
    inferer = LegoPETInferer(scheduler=parser.get_parsed_content("scheduler"), guidance_scale=1.5, pnpnet=pnpnet)
    with torch.no_grad():
        expected = inferer.guided_noise(denoiser, x, 40, inferer.condition(s))
        torch.testing.assert_close(traced(x, torch.tensor([40, 40]), s), expected, rtol=1e-5, atol=1e-6)


def test_guidance_scale_must_be_non_negative():
    with pytest.raises(ValueError, match="guidance_scale"):
        GuidedLegoPETEpsilon(denoiser=nn.Identity(), pnpnet=None, guidance_scale=-1.0)


def test_export_writes_a_loadable_file_with_metadata(petdds_files, tmp_path):
    path = export_torchscript(method="petdds", output=tmp_path / "score.ts", checkpoint=petdds_files["checkpoint"],
                              overrides=PETDDS_TINY)
    extra = {"metadata.json": "", "inputs.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"]
    info = json.loads(extra["inputs.json"])
    network = method_parser("petdds", overrides=PETDDS_TINY).get_parsed_content("network_def").eval()
    network.load_state_dict(torch.load(petdds_files["checkpoint"], weights_only=True)["network"])
    x, t = _inputs(2, info["height"], [7, 700], 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), network(x, t), rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "score.ts.partial").exists()


def test_export_rejects_upete():
    with pytest.raises((ValueError, ImportError)):
        export_torchscript(method="upete", output="unused.ts")
