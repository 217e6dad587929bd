"""Inference and export never depend on the studies: importing bundle.app and bundle.zoo and parsing every inference
recipe's network and inferer (tiny) imports no ``bundle.workflows`` module, also not through a ``$import`` of a config
file the recipe layers.  Run in a fresh interpreter so other tests' imports cannot hide one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bundle.app.config import INFERENCE_RECIPES
from bundle.recipes import recipe
from tests.app.conftest import LEGOPET_TINY, PETDDS_TINY

ROOT = Path(__file__).resolve().parents[2]

PARSED_IDS = {  # built by bundle.app.registry; the samplers and upete_network also need checkpoints
    "legopet": (LEGOPET_TINY, ["network_def", "pnpnet_def"]),
    "petdds": (PETDDS_TINY, ["network_def", "petdds_inferer"]),
    "upete": ({"device": "cpu"}, ["autoencoder_def", "inferer_options"]),
}

SCRIPT = """
import json, sys
import bundle.app, bundle.zoo
from bundle.app.config import method_parser
for method, (overrides, ids) in json.loads(sys.argv[1]).items():
    parser = method_parser(method, overrides=overrides)
    for name in ids:
        parser.get_parsed_content(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[:2] == ["bundle", "workflows"])))
"""


def test_app_zoo_and_inference_recipes_import_no_workflows():
    assert set(PARSED_IDS) == set(INFERENCE_RECIPES)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(PARSED_IDS)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_inference_run_ids_call_no_workflows():
    for method, name in INFERENCE_RECIPES.items():
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config([str(p) for p in recipe(name).paths()])
        run_id = recipe(name).run
        text = json.dumps([parser[run_id]] + [parser[k] for k in ("inference_model", "inference_task") if k in parser])
        assert "bundle.workflows" not in text, (method, run_id)
