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
OVERLAYS = {"metadata.json", "resume.json", "paper.json", "tiny.json", "small.json", "unit_range.json",
            "image_space.json"}
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
    assert command[7:] == ("--meta_file", "configs/legopet/metadata.json", "--max_epochs", "2")
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


def _documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every ``monai.bundle run`` command with a ``--config_file`` in the README's and docs'
    code blocks (continuation lines joined; a shell variable holding ``--config_file`` counts)."""
    commands = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = path.read_text(encoding="utf-8").split("```")[1::2]
        for block in blocks:
            for command in block.replace("\\\n", " ").splitlines():
                if "monai.bundle run" in command or command.lstrip().startswith("R=\"--config_file"):
                    commands.append((path.name, command))
    return commands


def test_documented_commands_pass_the_method_metadata():
    """MONAI looks for metadata.json next to the first config file (configs/common.json) and logs "Cannot find the
    metadata config file" without --meta_file; an exported bundle's configs/inference.json has its own."""
    missing = []
    for name, command in _documented_commands():
        if "--config_file" not in command:
            continue
        if "_bundle/configs/inference.json" in command:  # an exported bundle: its own metadata
            if "_bundle/configs/metadata.json" not in command:
                missing.append(f"{name}: {command.strip()[:160]}")
            continue
        methods = {m for m in ("legopet", "petdds", "upete") if f"configs/{m}/" in command or f"{m}_bundle" in command}
        if "$C/" in command or "'$C" in command:
            methods.add("legopet")
        expected = [f"--meta_file configs/{m}/metadata.json" for m in methods] or ["--meta_file "]
        if not any(e in command for e in expected):
            missing.append(f"{name}: {command.strip()[:160]}")
    assert len(_documented_commands()) > 30
    assert missing == []
