"""``python -m bundle.run <id> --config_file "[...]" [--meta_file F] [--key value ...]``: ``monai.bundle run`` with
bad input reported as one line.

The arguments are those of ``python -m monai.bundle run`` (MONAI's ``fire`` command line; ``bundle.run`` calls
``monai.bundle.scripts.run``).  Two differences:

* the config list is checked first: every file must exist, and a method file (``configs/<method>/*.json``) needs
  ``configs/common.json`` in the list (it defines ``imports``, ``device``, ``seed``, ``output_dir``);
  ``configs/recipes.json`` lists the files of every workflow;
* an error whose root cause is bad input (a missing or wrong-kind dataset, an unknown ``--variant``, a checkpoint
  of another architecture, ...; :mod:`bundle.errors`) is printed first and alone, ``error: <message>``, with exit
  status 2, instead of MONAI's ``Failed to evaluate ConfigExpression`` traceback with the cause above it.

``python -m monai.bundle run`` itself still works and raises the same messages; it is MONAI's entry point, so it
prints them under its traceback.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bundle.errors import report

__all__ = ["check_config_files", "main"]

METHOD_FOLDERS = ("legopet", "petdds", "upete")


def _as_list(config_file: Any) -> list[str]:
    if isinstance(config_file, str):
        text = config_file.strip()
        if text.startswith("["):
            try:
                config_file = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise ValueError(f"--config_file must be a file or a list \"['a.json','b.json']\", got {text!r}") \
                    from None
        else:
            return [text]
    if not isinstance(config_file, list | tuple) or not config_file:
        raise ValueError(f"--config_file must name the config files, e.g. \"['configs/common.json',...]\" "
                         f"(configs/recipes.json), got {config_file!r}")
    return [str(f) for f in config_file]


def check_config_files(config_file: Any) -> list[str]:
    """The config list as paths, after the checks of the module docstring (``ValueError`` / ``FileNotFoundError``
    naming ``--config_file``)."""
    files = _as_list(config_file)
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"--config_file names files that do not exist: {missing}")
    method_files = [f for f in files if Path(f).parent.name in METHOD_FOLDERS
                    and (Path(f).parent.parent / "common.json").is_file()]
    if method_files and not any(Path(f).name == "common.json" for f in files):
        common = Path(method_files[0]).parent.parent / "common.json"
        raise ValueError(f"--config_file lists {method_files} without {common}, which defines imports, device, seed "
                         f"and output_dir; put it first, as configs/recipes.json does: \"['{common}', "
                         + ", ".join(f"'{f}'" for f in files) + "]\"")
    return files


def _run(run_id: str | None = None, *, config_file: Any = None, **kwargs: Any) -> None:
    from monai.bundle.scripts import run

    files = check_config_files(config_file)
    run(run_id, config_file=files, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``argv`` (default ``sys.argv[1:]``) as ``monai.bundle run`` does; 2 with one line for bad input."""
    import fire

    try:
        fire.Fire(_run, command=list(sys.argv[1:] if argv is None else argv), name="python -m bundle.run")
    except fire.core.FireExit as error:
        return int(error.code or 0)
    except Exception as error:  # report() re-raises anything that is not bad input
        return report(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
