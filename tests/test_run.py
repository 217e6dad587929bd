"""python -m bundle.run: monai.bundle run with the config list checked and bad input reported on one line."""

from __future__ import annotations

import pytest

from bundle.recipes import configs_dir
from bundle.run import check_config_files, main

CONFIGS = configs_dir()
PETDDS_TRAIN = [str(CONFIGS / f) for f in ("common.json", "petdds/network.json", "petdds/train.json")]


def test_config_list_without_common_json_is_named():
    with pytest.raises(ValueError, match=r"without .*common\.json, which defines imports"):
        check_config_files(PETDDS_TRAIN[1:])
    with pytest.raises(FileNotFoundError, match=r"do not exist: \['nothere\.json'\]"):
        check_config_files(["nothere.json"])
    assert check_config_files(str(PETDDS_TRAIN)) == PETDDS_TRAIN  # fire passes the list as text or as a list


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("missing", "is not a folder; build the dataset first: python -m bundle.data build petdds"),
        ("legopet", "holds a legopet dataset, expected a petdds dataset"),
    ],
)
def test_training_dataset_errors_print_the_root_cause_alone(tmp_path, capsys, dataset, message):
    """What MONAI prints under 'Failed to evaluate ConfigExpression' comes out alone, with exit status 2."""
    folder = tmp_path / dataset
    if dataset == "legopet":
        folder.mkdir()
        (folder / "manifest.json").write_text('{"kind": "legopet"}')
    argv = ["training", "--config_file", str(PETDDS_TRAIN), "--dataset_dir", str(folder),
            "--output_dir", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: dataset_dir {str(folder)!r}") and message in last
    assert "Traceback" not in err and "ConfigExpression" not in err
