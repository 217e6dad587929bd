"""The method configs an infer task is built from (the bundle configs are the one source of truth).

Each method's task parses its layered configs (``configs/common.json`` + method files) with MONAI's
``ConfigParser`` and takes the network, the inferer and the intensity scales from them; ``overrides`` (config id ->
value, ``#`` for nested ids, as ``python -m monai.bundle run <id> --key value``) change any of them, e.g. a tiny
network or the dataset folder the LegoPET scales are read from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_FILES", "configs_dir", "method_parser"]

CONFIG_FILES: dict[str, tuple[str, ...]] = {
    "legopet": ("common.json", "legopet/train_legopet.json", "legopet/inference.json"),
    "petdds": ("common.json", "petdds/train.json", "petdds/inference.json"),
    "upete": ("common.json", "upete/train_autoencoder.json", "upete/train_ldm.json", "upete/evaluate.json",
              "upete/inference.json"),
}
"""Config files per method, relative to the configs folder, layered left to right."""


def configs_dir() -> Path:
    """``configs/`` of the repository (or of an exported model-zoo bundle) that holds this package."""
    return Path(__file__).resolve().parents[2] / "configs"


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

    if method not in CONFIG_FILES:
        raise ValueError(f"method must be one of {sorted(CONFIG_FILES)}, got {method!r}")
    files = [configs_dir() / f for f in CONFIG_FILES[method]] if config_files is None else [Path(f) for f in
                                                                                            config_files]
    if not files:
        raise ValueError("config_files must name at least one config file, got an empty list")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{method} inference needs the config files {missing}, which do not exist")
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser
