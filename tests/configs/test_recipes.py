"""configs/recipes.json: every recipe's files exist, layer into one config that defines its workflow id, and every
method config file that is not an optional overlay belongs to some recipe."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from bundle.recipes import recipe, recipes

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = {"metadata.json", "resume.json", "paper.json", "tiny.json", "small.json", "unit_range.json"}
"""Files layered after a recipe's files by the caller (presets, resume) or read on their own (metadata)."""


@pytest.mark.parametrize("name", sorted(recipes()))
def test_recipe_layers_into_a_config_that_runs_its_id(name):
    row = recipe(name)
    assert row.name == name and row.files[0] == "common.json" and name.split("/")[0] in row.files[-1]
    paths = row.paths()
    assert all(p.is_file() for p in paths), [str(p) for p in paths if not p.is_file()]
    parser = ConfigParser()
    parser.read_config([str(p) for p in paths])
    assert row.run in parser.get() and "run" not in parser.get()


def test_every_method_config_belongs_to_a_recipe():
    listed = {f for row in recipes().values() for f in row.files}
    files = {p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").glob("*/*.json")
             if p.parent.name != "schema" and p.name not in OVERLAYS}
    assert files - listed == set()


def test_command_is_a_monai_bundle_run_from_the_repository_root():
    command = recipe("legopet/cdpm").command("--max_epochs", "2", overlays=("legopet/tiny.json",))
    assert command[:5] == (sys.executable, "-m", "monai.bundle", "run", "training")
    assert ast.literal_eval(command[6]) == ["configs/common.json", "configs/legopet/network.json",
                                            "configs/legopet/train_legopet.json",
                                            "configs/legopet/cdpm.json", "configs/legopet/tiny.json"]
    assert command[7:] == ("--max_epochs", "2")
    assert recipe("legopet/evaluate").command(run="guidance_sweep")[4] == "guidance_sweep"


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(ValueError, match=r"recipe must be one of \[.*'petdds/train'.*\] \(configs/recipes.json\), "
                                         r"got 'petdds/nope'"):
        recipe("petdds/nope")


def test_only_common_json_defines_imports():
    """Every other file names its imports ``<name>_imports``: a layered ``imports`` would replace common.json's."""
    offenders = [p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.json")
                 if p.name != "common.json" and "imports" in json.loads(p.read_text(encoding="utf-8"))]
    assert offenders == []
