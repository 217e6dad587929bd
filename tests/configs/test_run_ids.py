"""Workflow ids: every method trains with `training`, evaluates with `evaluating`, infers with `inferring`.

No config defines a bare `run` (the id ``python -m monai.bundle run`` falls back to when none is given), and every
``monai.bundle run`` command written in the docs, config comments and code names its id; where the command lists
its config files literally, the id must exist in those layered files.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("legopet", "petdds", "upete")

# the evaluation ids each method's evaluate.json defines (docs/ecosystem.md, "Workflow ids"). Training configs
# (train*.json, resume.json, multi_gpu_train.json) define `training` or, as overlays, nothing; inference.json defines
# `inferring` (and may add helpers); every other file (presets, network overlays) defines no workflow id
EVALUATION_IDS = {
    "petdds": {"evaluating", "evaluating_baselines", "bias_variance", "uncertainty", "count_sweep", "tuning",
               "tuning_baselines"},
    "legopet": {"evaluating", "training_progress", "denoising_loss", "restart_from_reference", "sampling_cost",
                "guidance_sweep"},
    "upete": {"evaluating", "ceiling"},
}

# the layered stacks of the recipes (configs/recipes.json) are checked in test_recipes.py; these are the optional
# overlays layered after a recipe's files (presets, resume.json), which inherit the recipe's id (resume.json
# redefines `training`)
STACKS = [
    ("petdds", ("network.json", "train.json", "resume.json"), "training"),
    ("petdds", ("network.json", "train.json", "../multi_gpu.json", "multi_gpu_train.json", "resume.json"), "training"),
    ("petdds", ("network.json", "train.json", "paper.json"), "training"),
    ("legopet", ("train_pnpnet.json", "tiny.json"), "training"),
    ("legopet", ("network.json", "train_legopet.json", "tiny.json", "resume.json"), "training"),
    ("legopet", ("train_pnpnet.json", "resume.json"), "training"),
    ("legopet", ("train_pnpnet.json", "tiny.json", "../multi_gpu.json", "multi_gpu_regression.json"), "training"),
    ("legopet", ("train_pnpnet.json", "../multi_gpu.json", "multi_gpu_regression.json", "resume.json"), "training"),
    ("upete", ("network.json", "train_autoencoder.json", "train_unet.json", "paper.json"), "training"),
    ("upete", ("network.json", "train_autoencoder.json", "resume.json"), "training"),
    ("upete", ("network.json", "train_autoencoder.json", "train_ldm.json", "resume.json"), "training"),
    ("upete", ("network.json", "train_autoencoder.json", "train_unet.json", "resume.json"), "training"),
    ("upete", ("network.json", "train_autoencoder.json", "train_unet.json", "paper.json", "resume.json"), "training"),
    ("upete", ("network.json", "train_autoencoder.json", "../multi_gpu.json", "multi_gpu_train.json", "resume.json"),
     "training"),
    ("upete", ("network.json", "train_autoencoder.json", "train_ldm.json", "../multi_gpu.json",
               "multi_gpu_train.json", "multi_gpu_ldm.json", "resume.json"), "training"),
]


def _role(name: str) -> str | None:
    if name.startswith("train") or name in ("resume.json", "../multi_gpu.json", "multi_gpu_train.json"):
        return "training"
    return {"evaluate.json": "evaluating", "inference.json": "inferring"}.get(name)


def _method_configs() -> list[Path]:
    return sorted(p for m in METHODS for p in (ROOT / "configs" / m).glob("*.json") if p.name != "metadata.json")


def _workflow_ids(config: dict) -> set[str]:
    """Top-level ids whose value is a list of ``$`` expressions, i.e. something ``monai.bundle run`` can run."""
    return {k for k, v in config.items()
            if k not in ("initialize", "finalize") and not k.endswith("imports") and isinstance(v, list) and v
            and all(isinstance(e, str) and e.startswith("$") for e in v)}


@pytest.mark.parametrize("path", _method_configs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_defines_the_ids_of_its_role(path):
    config = json.loads(path.read_text(encoding="utf-8"))
    assert "run" not in config, f"{path.name} defines a bare `run` id"
    ids, role = _workflow_ids(config), _role(path.name)
    assert not [i for i in ids if i.startswith("run")], f"{path.name}: {sorted(ids)}"  # no run_* leftovers
    if role == "training":
        assert ids <= {"training"}, f"{path.name} defines {sorted(ids)}"
    elif role == "evaluating":
        assert EVALUATION_IDS[path.parent.name] <= ids, f"{path.name} defines {sorted(ids)}"
    elif role == "inferring":
        assert "inferring" in ids, f"{path.name} defines {sorted(ids)}"
    else:
        assert not ids, f"{path.name} is no workflow config but defines {sorted(ids)}"


def test_every_method_has_a_config_defining_each_id():
    for method in METHODS:
        defined = set().union(*(_workflow_ids(json.loads(p.read_text(encoding="utf-8")))
                                for p in (ROOT / "configs" / method).glob("*.json")))
        assert {"training", "inferring"} | EVALUATION_IDS[method] <= defined, method
        assert "run" not in defined, method


@pytest.mark.parametrize(("method", "files", "run_id"), STACKS, ids=lambda v: v if isinstance(v, str) else None)
def test_layered_stack_runs_its_id(method, files, run_id):
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "common.json"), *(str(ROOT / "configs" / method / f) for f in files)])
    assert run_id in parser.get() and "run" not in parser.get()


# --- documented commands ----------------------------------------------------------------------------------------

_COMMAND = re.compile(r"monai\.bundle run\s+(\S+)([^\n]*)")
_CONFIG_LIST = re.compile(r"""--config_file\s+["']?(\[[^\]]*\])""")


def _texts() -> list[tuple[str, str]]:
    """(where, text) for the docs, the config comments, the shell scripts and every string constant in the code."""
    texts = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8"))
             for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *ROOT.glob("scripts/**/*.sh")]]
    for path in sorted((ROOT / "configs").rglob("*.json")):
        config = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(config, dict) and isinstance(config.get("_comment"), str):
            texts.append((str(path.relative_to(ROOT)), config["_comment"]))
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):  # implicit concatenation is joined
                texts.append((f"{path.relative_to(ROOT)}:{node.lineno}", node.value))
    return [(where, text.replace("\\\n", " ")) for where, text in texts]


def _python_files() -> list[Path]:
    return sorted(p for d in ("bundle", "scripts", "tests") for p in (ROOT / d).rglob("*.py"))


def test_documented_commands_name_an_id_the_configs_define():
    checked = resolved = 0
    for where, text in _texts():
        for match in _COMMAND.finditer(text):
            run_id, rest = match.group(1).strip("`\"'"), match.group(2)
            if run_id == "--run_id":
                continue
            assert not run_id.startswith("-"), f"{where}: `monai.bundle run {run_id}` relies on the implicit id 'run'"
            checked += 1
            files = _CONFIG_LIST.search(rest)
            if files is None or "$" in files.group(1):
                continue
            names = ast.literal_eval(files.group(1))
            if not all(isinstance(f, str) for f in names):  # a placeholder such as "[...]"
                continue
            paths = [ROOT / f for f in names]
            assert all(p.is_file() for p in paths), f"{where}: {files.group(1)}"
            parser = ConfigParser()
            parser.read_config([str(p) for p in paths])
            assert run_id in parser.get(), f"{where}: id {run_id!r} is not defined in {files.group(1)}"
            resolved += 1
    assert checked >= 20 and resolved >= 8, (checked, resolved)


def test_code_commands_name_an_id():
    """``[..., "monai.bundle", "run", X, ...]`` argument lists: X must not be an option (the implicit id 'run')."""
    checked = 0
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.List | ast.Tuple):
                continue
            values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            for i in range(len(values) - 2):
                if values[i:i + 2] == ["monai.bundle", "run"]:
                    after = values[i + 2]
                    assert not (isinstance(after, str) and after.startswith("-")), \
                        f"{path.relative_to(ROOT)}:{node.lineno}: monai.bundle run without an id"
                    checked += 1
    assert checked >= 5, checked


def _strings(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}#{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}#{i}")
    elif isinstance(node, str):
        yield path, node


@pytest.mark.parametrize("name", sorted(json.loads((ROOT / "configs" / "recipes.json").read_text())))
def test_every_reference_a_run_id_reaches_resolves(name):
    """Each ``@id`` (``@a#b`` included) reachable from a recipe's run id (and from every evaluation id its files
    define) names an item its layered files define,
    so the run cannot fail on a dangling or non-indexable reference (``@osem#0`` once pointed into an expression)."""
    from monai.bundle.reference_resolver import ReferenceResolver

    from bundle.recipes import recipe

    if name.startswith("_"):
        pytest.skip("comment")
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / f) for f in recipe(name).files])
    config = parser.get()

    def lookup(ref: str):
        node = config
        for part in ref.replace("::", "#").split("#"):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise KeyError(ref)
        return node

    ids = [recipe(name).run, "initialize", *(i for i in EVALUATION_IDS[name.split("/")[0]] if i in config)]
    missing, seen, todo = [], set(), ids
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        try:
            node = lookup(ref)
        except KeyError:
            if ref != "initialize":
                missing.append(ref)
            continue
        for _, text in _strings(node):
            todo.extend(ReferenceResolver.match_refs_pattern(text))
    assert not missing, f"{name}: its workflow ids reach undefined items: {missing}"
