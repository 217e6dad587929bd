"""configs/<method>/metadata.json validate against the MONAI bundle metadata schema (vendored copy, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "configs" / "schema" / "meta_schema_20240725.json"
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
METHODS = ("legopet", "petdds", "upete")


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("method", METHODS)
def test_metadata_validates_against_the_monai_schema(method):
    metadata = _load(ROOT / "configs" / method / "metadata.json")
    jsonschema.validate(metadata, _load(SCHEMA_FILE))
    assert metadata["schema"] == SCHEMA_URL  # the public URL, the file is only the offline copy
    assert metadata["version"] in metadata["changelog"]
    assert metadata["intended_use"] and metadata["references"] and metadata["deviations_from_paper"]
    for argument in metadata["network_data_format"]["inputs"].values():
        assert {"spatial_shape", "value_range", "dtype"} <= set(argument)


def test_vendored_schema_is_the_expected_draft():
    schema = _load(SCHEMA_FILE)
    assert schema["$schema"] == "https://json-schema.org/draft/2019-09/schema"
    assert "network_data_format" in schema["required"]


def test_schema_rejects_metadata_without_required_fields():
    metadata = _load(ROOT / "configs" / "petdds" / "metadata.json")
    del metadata["network_data_format"]
    with pytest.raises(jsonschema.ValidationError, match="network_data_format"):
        jsonschema.validate(metadata, _load(SCHEMA_FILE))
