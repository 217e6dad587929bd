"""Every checkpoint saver of every training recipe (interval, final and best-metric files) stores the run id, and
every resume overlay passes resume_run_id to its ResumeTraining (bundle.checkpoint.run_id)."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser

from bundle.recipes import configs_dir, recipe, recipes

RECIPES = sorted(name for name, entry in recipes().items() if entry.run == "training")


def _savers(node, path=""):
    if isinstance(node, dict):
        if "AtomicCheckpointSaver" in str(node.get("_target_", "")):
            yield path, node
        for key, value in node.items():
            yield from _savers(value, f"{path}#{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _savers(value, f"{path}#{index}")


def _raw(parser: ConfigParser, value):
    while isinstance(value, str) and value.startswith("@"):
        value = parser[value[1:].replace("::", "#")]
    return value


@pytest.mark.parametrize("name", RECIPES)
def test_every_saver_stores_the_run_id(name):
    parser = ConfigParser()
    parser.read_config([str(p) for p in recipe(name).paths()])
    savers = list(_savers(parser.config))
    assert savers, f"{name}: no AtomicCheckpointSaver"
    for path, saver in savers:
        save_dict = _raw(parser, saver["save_dict"])
        assert save_dict.get("run_id") == "@training_run_id", f"{name}: saver {path} does not store the run id"
    assert parser["training_run_id"]["_target_"] == "bundle.checkpoint.run_id.RunId"


@pytest.mark.parametrize("method", ["legopet", "petdds", "upete"])
def test_resume_overlays_take_the_run_to_continue(method):
    parser = ConfigParser()
    parser.read_config(str(configs_dir() / method / "resume.json"))
    assert parser["resume_run_id"] is None  # default: one run per folder, or the ValueError listing them
    assert parser["resume"]["_target_"] == "bundle.handlers.resume.ResumeTraining"
    assert parser["resume"]["run_id"] == "@resume_run_id"
