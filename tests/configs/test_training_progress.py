"""Every training recipe's trainer shows a progress bar (bundle.handlers.progress_bar.TrainingProgressBar) that the
common `progress` key (and BUNDLE_PROGRESS, bundle.progress) switches."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser

from bundle.recipes import recipe, recipes

RECIPES = sorted(name for name, entry in recipes().items() if entry.run == "training")
BAR = "bundle.handlers.progress_bar.TrainingProgressBar"


def _raw(parser: ConfigParser, value):
    while isinstance(value, str) and value.startswith("@"):
        value = parser[value[1:].replace("::", "#")]
    return value


@pytest.mark.parametrize("name", RECIPES)
def test_every_trainer_has_the_switched_progress_bar(name):
    parser = ConfigParser()
    parser.read_config([str(p) for p in recipe(name).paths()])
    assert parser["progress"] is True  # common.json: bars as BUNDLE_PROGRESS says; --progress false: none
    trainer = _raw(parser, "@trainer")
    handlers = _raw(parser, trainer["train_handlers"])
    if isinstance(handlers, str):  # a multi-GPU layer's "$@handlers if @main_rank else []"
        handlers = _raw(parser, "@" + handlers.split("@", 1)[1].split()[0])
    bars = [h for h in (_raw(parser, h) for h in handlers) if isinstance(h, dict) and h.get("_target_") == BAR]
    assert len(bars) == 1 and bars[0]["progress"] == "@progress", f"{name}: trainer handlers lack {BAR}"
