"""The method configs an infer task is built from (the bundle configs are the one source of truth).

Each method's task parses its layered configs (the ``<method>/inference`` recipe of ``configs/recipes.json``,
:mod:`bundle.recipes`) with MONAI's ``ConfigParser`` and takes the network, the inferer and the intensity scales
from them; ``overrides`` (config id -> value, ``#`` for nested ids, as ``python -m monai.bundle run <id> --key
value``) change any of them, e.g. a tiny network or the dataset folder the LegoPET scales are read from.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bundle.recipes import recipe

__all__ = ["INFERENCE_RECIPES", "TASK_KEYS", "method_parser"]

INFERENCE_RECIPES = {"legopet": "legopet/inference", "petdds": "petdds/inference", "upete": "upete/inference"}
"""The recipe (configs/recipes.json) each method's infer task is built from."""


TASK_KEYS: dict[str, tuple[str, ...]] = {
    "petdds": ("scanner_preset", "fwhm_mm"),
    "legopet": ("count_scale",),
    "upete": ("mean_multiple", "ct_window_hu"),
}
"""Ids a method's infer task reads with a default when the configs do not define them (bundle.app.registry); an
override may set them too.  Any other override must name an id of the configs."""


def method_parser(
    method: str,
    *,
    config_files: Sequence[str | Path] | None = None,
    overrides: Mapping[str, Any] | None = None,
):
    """A ``monai.bundle.ConfigParser`` over the method's configs with ``overrides`` applied.

    Raises:
        ValueError: unknown ``method``.
        FileNotFoundError: a config file that does not exist (the message names it).
    """
    from monai.bundle import ConfigParser

    if method not in INFERENCE_RECIPES:
        raise ValueError(f"method must be one of {sorted(INFERENCE_RECIPES)}, got {method!r}")
    files = recipe(INFERENCE_RECIPES[method]).paths() if config_files is None else [Path(f) for f in config_files]
    if not files:
        raise ValueError("config_files must name at least one config file, got an empty list")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{method} inference needs the config files {missing}, which do not exist")
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    known = [str(k) for k in parser.get()] + list(TASK_KEYS.get(method, ()))
    for key, value in (overrides or {}).items():
        root = str(key).split("#")[0]
        if root not in known:
            close = difflib.get_close_matches(root, known, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"override {key!r}: {root!r} is not an id of the {method} configs{hint} (known ids: "
                             f"{', '.join(sorted(k for k in known if not k.startswith('_')))})")
        _check_text_value(parser, key, value)
        parser[key] = value
    return parser


def _check_text_value(parser, key: str, value: Any) -> None:
    """``ValueError`` for a text value (``--override key=abc``: not JSON) where the configs hold a number, list,
    mapping or bool: the value was most likely mistyped (a string that is meant must be an id holding a string)."""
    if not isinstance(value, str) or key not in parser:
        return
    current = parser[key]
    if current is None or isinstance(current, str):
        return
    kind = {bool: "true/false", int: "a number", float: "a number", list: "a JSON list",
            dict: "a JSON object"}.get(type(current), type(current).__name__)
    raise ValueError(f"override {key}={value!r}: {value!r} is not JSON, and {key!r} holds {kind} in the configs "
                     f"({json.dumps(current)[:60]}); give a JSON value, e.g. {key}={json.dumps(current)[:40]}")
