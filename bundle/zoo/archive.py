"""Hashes and archives of exported bundles.

* ``checksums.sha256`` (``sha256sum`` format, paths relative to the bundle root) covers every file of an exported
  bundle; :func:`verify_bundle` recomputes them and names every missing, changed or unrecorded (added) file; only
  ``outputs/`` (where the bundle's inference writes by default) and ``__pycache__`` may hold other files.  The
  exported ``configs/inference.json`` calls it before loading weights.
* :func:`safe_extract` unpacks a zip into a new or empty folder only, and only if every member stays inside it (no
  absolute paths, no ``..``, no symbolic links, no drive letters) and, for a bundle zip (one holding
  ``checksums.sha256``), every recorded member has its recorded sha256 and no member is unrecorded: all checks run
  on the archive before anything is written.
"""

from __future__ import annotations

import hashlib
import stat
import zipfile
from pathlib import Path, PurePosixPath

__all__ = ["CHECKSUMS", "BundleIntegrityError", "safe_extract", "sha256_file", "verify_bundle", "write_checksums"]

CHECKSUMS = "checksums.sha256"


class BundleIntegrityError(ValueError):
    """A bundle file is missing or its sha256 differs from the recorded one."""


def sha256_file(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


OUTPUTS = "outputs"
"""Top-level folder of a bundle that the checksums do not cover (its inference writes there by default)."""


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != CHECKSUMS and "__pycache__" not in p.parts
                  and p.relative_to(root).parts[0] != OUTPUTS)


def write_checksums(root: str | Path) -> Path:
    """Write ``root/checksums.sha256`` for every file below ``root``; returns its path."""
    root = Path(root)
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}" for p in _files(root)]
    path = root / CHECKSUMS
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def verify_bundle(root: str | Path, *, only: str | None = None) -> dict[str, str]:
    """Check the files listed in ``root/checksums.sha256`` (those under ``only``, e.g. ``"models/"``, when given).

    Returns {relative path: sha256}.  Raises :class:`BundleIntegrityError` naming each missing or modified file,
    ``FileNotFoundError`` when the checksum file is absent.
    """
    root = Path(root)
    listing = root / CHECKSUMS
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} does not exist: not an exported bundle, or its checksum file was removed")
    recorded: dict[str, str] = {}
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise BundleIntegrityError(f"{listing}:{number} is not '<sha256>  <path>': {line!r}")
        if only is None or name.startswith(only):
            recorded[name] = digest
    problems = []
    for name, digest in recorded.items():
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif (actual := sha256_file(path)) != digest:
            problems.append(f"{name}: sha256 {actual} differs from the recorded {digest}")
    if only is None:
        problems += [f"{name}: not recorded in {CHECKSUMS} (a file added after export)"
                     for name in (p.relative_to(root).as_posix() for p in _files(root)) if name not in recorded]
    if problems:
        raise BundleIntegrityError(f"bundle {root} failed verification: " + "; ".join(problems))
    return recorded


def _check_member(info: zipfile.ZipInfo, target: Path) -> Path:
    name = info.filename
    pure = PurePosixPath(name.replace("\\", "/"))
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ValueError(f"zip member {name!r} is a symbolic link; refusing to extract")
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise ValueError(f"zip member {name!r} would be written outside {target} (absolute path, drive or '..')")
    destination = (target / Path(*pure.parts)).resolve() if pure.parts else target
    if destination != target and target not in destination.parents:
        raise ValueError(f"zip member {name!r} resolves to {destination}, outside {target}")
    return destination


def _check_archive_checksums(zf: zipfile.ZipFile, archive: str | Path) -> None:
    """For a bundle zip: every member listed in its ``checksums.sha256`` has the recorded sha256, and every file
    member next to it is listed (``BundleIntegrityError`` naming each problem); other zips pass."""
    listings = sorted((i for i in zf.infolist() if PurePosixPath(i.filename).name == CHECKSUMS),
                      key=lambda i: len(i.filename))
    if not listings:
        return
    prefix = listings[0].filename[: -len(CHECKSUMS)]
    recorded = {}
    for line in zf.read(listings[0]).decode("utf-8").splitlines():
        digest, sep, name = line.partition("  ")
        if sep:
            recorded[prefix + name] = digest
    members = {i.filename: i for i in zf.infolist() if not i.is_dir()}
    problems = []
    for name, digest in recorded.items():
        if name not in members:
            problems.append(f"{name}: missing")
            continue
        hasher = hashlib.sha256()
        with zf.open(members[name]) as source:
            while chunk := source.read(1 << 20):
                hasher.update(chunk)
        if hasher.hexdigest() != digest:
            problems.append(f"{name}: sha256 {hasher.hexdigest()} differs from the recorded {digest}")
    problems += [f"{name}: not recorded in {CHECKSUMS}" for name in members
                 if name.startswith(prefix) and name not in recorded and name != listings[0].filename
                 and "__pycache__" not in name]
    if problems:
        raise BundleIntegrityError(f"archive {archive} failed verification, nothing was extracted: "
                                   + "; ".join(problems))


def safe_extract(archive: str | Path, target: str | Path) -> list[Path]:
    """Extract ``archive`` into ``target`` (created; must be new or empty) after checking every member (module
    docstring).

    Returns the extracted file paths.  Raises ``ValueError`` for a non-empty ``target`` or naming the first
    offending member, :class:`BundleIntegrityError` for a bundle zip whose members do not match its checksums
    (nothing is written then) and for a file that is not a zip archive (damaged or truncated).
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"target {target} must be a new or empty folder (extracting into it could overwrite or mix "
                         "with its files); choose another folder")
    if not zipfile.is_zipfile(archive):
        raise ValueError(f"archive {archive} must be a zip file written by python -m bundle.zoo export; it is not a "
                         "zip archive (damaged or truncated?)")
    with zipfile.ZipFile(archive) as zf:
        _check_archive_checksums(zf, archive)
        target.mkdir(parents=True, exist_ok=True)
        target = target.resolve()
        members = [(info, _check_member(info, target)) for info in zf.infolist()]
        written = []
        for info, destination in members:
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source, open(destination, "wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
            written.append(destination)
    return written
