"""The one check that a folder holds a dataset of the expected method: :func:`read_manifest`.

Every dataset ``python -m bundle.data build <kind> --output DIR`` writes holds ``DIR/manifest.json`` with its
``kind`` (``legopet``, ``petdds`` or ``upete``).  A reader that is given a missing folder, or the dataset of another
method, stops here with a message that names the folder, both kinds and the build command, instead of failing later
on a missing datalist key.  Importing this module runs nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["build_command", "load_datalist", "read_manifest"]


def build_command(kind: str, dataset_dir: str | Path) -> str:
    """``python -m bundle.data build <kind> --output <dataset_dir>``: how to make the dataset a reader expects."""
    return f"python -m bundle.data build {kind} --output {dataset_dir}"


def read_manifest(dataset_dir: str | Path, kind: str, *, required: bool = True) -> dict:
    """``dataset_dir/manifest.json`` after checking that it describes a ``kind`` dataset.

    Args:
        dataset_dir: the dataset folder.
        kind: ``"legopet"``, ``"petdds"`` or ``"upete"`` (the ``bundle.data build`` kind the caller reads).
        required: ``False`` returns ``{}`` when there is no manifest (a hand-made datalist).

    Raises:
        TypeError: ``dataset_dir`` not a str or Path.
        FileNotFoundError: no ``dataset_dir`` folder, or (``required``) no manifest; the message has the build command.
        ValueError: a manifest of another kind (one without ``kind`` passes), or one that is not a JSON object.
    """
    if not isinstance(dataset_dir, str | Path) or str(dataset_dir) == "":
        raise TypeError(f"dataset_dir must be a folder path (str or Path), got {dataset_dir!r}")
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset_dir {str(root)!r} is not a folder; build the dataset first: "
                                f"{build_command(kind, root)}")
    path = root / "manifest.json"
    if not path.is_file():
        if not required:
            return {}
        raise FileNotFoundError(f"dataset_dir {str(root)!r} has no manifest.json, so it is not a {kind} dataset; "
                                f"build the dataset first: {build_command(kind, root)}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"dataset_dir {str(root)!r}: manifest.json is not JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"dataset_dir {str(root)!r}: manifest.json must hold a JSON object, got "
                         f"{type(manifest).__name__}")
    found = manifest.get("kind")
    if found is not None and found != kind:  # a hand-made manifest without a kind passes
        raise ValueError(f"dataset_dir {str(root)!r} holds a {found} dataset, expected a {kind} dataset (build one "
                         f"with {build_command(kind, '<folder>')})")
    return manifest


def load_datalist(dataset_dir: str | Path, split: str, *, kind: str) -> list[dict]:
    """MONAI ``load_decathlon_datalist`` of ``dataset_dir/datalist.json`` (paths resolved against ``dataset_dir``)
    after :func:`read_manifest` checked the dataset's kind (a hand-made folder without a manifest passes); what the
    training configs read their splits with."""
    from monai.data import load_decathlon_datalist

    read_manifest(dataset_dir, kind, required=False)
    path = Path(dataset_dir) / "datalist.json"
    if not path.is_file():
        raise FileNotFoundError(f"dataset_dir {str(dataset_dir)!r} has no datalist.json; build the {kind} dataset: "
                                f"{build_command(kind, dataset_dir)}")
    return load_decathlon_datalist(str(path), data_list_key=split, base_dir=str(dataset_dir))
