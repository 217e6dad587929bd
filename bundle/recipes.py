"""The recipes: which config files, layered left to right, make each workflow (``configs/recipes.json``).

A recipe is one ``python -m monai.bundle run <run> --config_file "[...]"`` command's config stack, e.g.
``petdds/train`` = ``common.json`` + ``petdds/network.json`` + ``petdds/train.json`` run with ``training``.  The
table is the only place that says which files layer together; the main job (:mod:`bundle.story`), the studies
(:mod:`bundle.study`), the infer tasks (:mod:`bundle.app`), the model-zoo export and the tests all read it here.
Optional overlays (a preset such as ``legopet/tiny.json``, a ``resume.json``) are appended after the recipe's files
by the caller.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["RECIPES_FILE", "Recipe", "configs_dir", "recipe", "recipes"]

RECIPES_FILE = "recipes.json"
"""The table's name inside :func:`configs_dir`."""


def configs_dir() -> Path:
    """``configs/`` of the repository (or of an exported model-zoo bundle) that holds this package."""
    return Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """One row of the table: ``name`` (``<method>/<what>``), the workflow id ``run`` and the config ``files``
    (relative to ``configs/``, layered left to right)."""

    name: str
    run: str
    files: tuple[str, ...]

    def config_files(self, *overlays: str) -> tuple[str, ...]:
        """The recipe's files followed by ``overlays`` (also relative to ``configs/``)."""
        return (*self.files, *overlays)

    def paths(self, *overlays: str) -> list[Path]:
        """Absolute paths of :meth:`config_files`."""
        return [configs_dir() / f for f in self.config_files(*overlays)]

    def config_arg(self, *overlays: str) -> str:
        """The ``--config_file`` value of a command run from the repository root: ``"['configs/common.json',...]"``."""
        return "[" + ",".join(f"'configs/{f}'" for f in self.config_files(*overlays)) + "]"

    @property
    def meta_file(self) -> str:
        """``configs/<method>/metadata.json`` of the recipe's method, relative to the repository root (MONAI looks
        for ``metadata.json`` next to the first config file, ``configs/common.json``, otherwise)."""
        return f"configs/{self.name.split('/')[0]}/metadata.json"

    def command(self, *args: str, overlays: tuple[str, ...] = (), run: str | None = None) -> tuple[str, ...]:
        """``python -m monai.bundle run <run> --config_file <config_arg> --meta_file <meta_file> *args`` (``run``
        defaults to the recipe's id; an evaluation stack also runs its other ids, e.g. LegoPET's
        ``guidance_sweep``)."""
        return (sys.executable, "-m", "monai.bundle", "run", run or self.run, "--config_file",
                self.config_arg(*overlays), "--meta_file", self.meta_file, *args)


@cache
def recipes() -> dict[str, Recipe]:
    """Every recipe of ``configs/recipes.json`` by name (keys starting with ``_`` are comments)."""
    table = json.loads((configs_dir() / RECIPES_FILE).read_text(encoding="utf-8"))
    return {name: Recipe(name=name, run=row["run"], files=tuple(row["files"]))
            for name, row in table.items() if not name.startswith("_")}


def recipe(name: str) -> Recipe:
    """The recipe called ``name``; ``ValueError`` listing the known names otherwise."""
    table = recipes()
    if name not in table:
        raise ValueError(f"recipe must be one of {sorted(table)} (configs/{RECIPES_FILE}), got {name!r}")
    return table[name]
