"""Bad inputs across the command lines, each run in a subprocess and classified: :class:`Case`, :func:`run_cases`.

``python scripts/check_bad_inputs.py`` runs the list of issue 14 (the app, the dataset builder, training through
``python -m bundle.run``, the model-zoo archive checks) on tiny inputs fabricated in a temporary folder and prints
one line per case and the counts per :class:`Outcome`.  The promise of docs/ecosystem.md ("Bad input") is that every
case ends as expected: a *named error* (exit status 2, the last line ``error: ...`` naming the argument, no
traceback) or, for the few inputs that are legal but suspicious, *handled* (exit 0 with the right result or a
warning).  The other outcomes are the failures the list exists to catch: a *traceback*, a *silent wrong* result (exit
0 where an error or another result was due), *data lost* (a file the case protects changed or vanished) and an
*unclear* exit (non-zero without the one-line message).

Adding a case: append a :class:`Case` to ``CASES`` in :mod:`bundle.app.bad_input_cases` (or pass your own list to
:func:`run_cases`).  ``setup``
fabricates the inputs in the case's own folder (the :class:`Workspace` also offers shared tiny checkpoints and
datasets, built once); ``commands`` returns the command lines ``[module, *args]`` run one after the other as
``python -m module args``; ``protect`` names the files that must come out unchanged; ``verify`` inspects a run that
exited 0 (or checks the error message) and returns what is wrong, or ``None``.

By default each command runs in a child process forked from this one after ``torch``/``monai``/``bundle`` are
imported (``runpy`` of the module as ``__main__``: exit status, stdout and stderr as ``python -m`` gives them, an
uncaught exception printed as a traceback with status 1), which keeps the whole list within a few minutes on two
cores; ``fresh=True`` starts a new interpreter per command instead.  Importing this module runs nothing.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["Case", "Outcome", "Run", "Workspace", "classify", "fabricate_petdds_dataset", "run_case", "run_cases",
           "summary"]

REPO = Path(__file__).resolve().parents[2]


class Outcome(enum.StrEnum):
    """How a case ended (module docstring)."""

    NAMED_ERROR = "named error"
    HANDLED = "handled"
    TRACEBACK = "traceback"
    SILENT_WRONG = "silent wrong"
    DATA_LOST = "data lost"
    UNCLEAR = "unclear exit"


@dataclass(frozen=True)
class Run:
    """One command's exit status and output."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        """The last non-empty line of stderr (the error or warning a user reads first)."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""


def _is_named(run: Run) -> bool:
    """Exit 2, no traceback, and a last stderr line ``error: ...`` (argparse: ``prog: error: ...``)."""
    message = run.message
    return (run.returncode == 2 and "Traceback (most recent call last)" not in run.stderr
            and (message.startswith("error: ") or ": error: " in message))


def classify(runs: Sequence[Run], *, changed: Sequence[str] = (), problem: str | None = None) -> Outcome:
    """The :class:`Outcome` of a case from its runs, the protected files that ``changed`` and the ``problem`` its
    ``verify`` found (``None``: nothing wrong).  Precedence: data lost, traceback, then the last run's exit."""
    if changed:
        return Outcome.DATA_LOST
    if any("Traceback (most recent call last)" in run.stderr for run in runs):
        return Outcome.TRACEBACK
    last = runs[-1]
    if last.returncode == 0:
        return Outcome.SILENT_WRONG if problem else Outcome.HANDLED
    if _is_named(last):
        return Outcome.UNCLEAR if problem else Outcome.NAMED_ERROR
    return Outcome.UNCLEAR


def fabricate_petdds_dataset(
    root: Path,
    *,
    sample_id: str,
    split: str,
    seed: int,
    background: float,
    full_counts: float,
    low_counts: float,
    count_scale_full: float,
    low_count_fraction: float = 0.25,
    extra_entry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A hand-made petdds dataset of one sample on the tiny_3d scanner, laid out as ``bundle.data build`` writes it:
    ``samples/<sample_id>/`` with uniform(0.5, 1) multiplicative factors, a constant ``background`` (full dose),
    Poisson(``full_counts``) and two Poisson(``low_counts``) realisations, its ``sample.json``, a datalist with the
    sample in ``split`` and a complete manifest.  Returns ``{"root", "folder", <array name>: array}``."""
    import numpy as np

    from bundle.physics import preset

    folder = root / "samples" / sample_id
    folder.mkdir(parents=True)
    shape = preset("tiny_3d").layout.shape
    rng = np.random.default_rng(seed)
    arrays = {"multiplicative_factors": rng.uniform(0.5, 1.0, shape), "background_full": np.full(shape, background),
              "sinogram_full": rng.poisson(full_counts, shape), "sinogram_low_00": rng.poisson(low_counts, shape),
              "sinogram_low_01": rng.poisson(low_counts, shape)}
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array.astype(np.float32))
    entry = {"sinogram_high": f"samples/{sample_id}/sinogram_full.npy",
             "sinogram_low": [f"samples/{sample_id}/sinogram_low_00.npy", f"samples/{sample_id}/sinogram_low_01.npy"],
             "multiplicative_factors": f"samples/{sample_id}/multiplicative_factors.npy",
             "background_full": f"samples/{sample_id}/background_full.npy", "count_scale_full": count_scale_full,
             "low_count_fraction": low_count_fraction, **(extra_entry or {}), "id": sample_id}
    (folder / "sample.json").write_text(json.dumps(entry), encoding="utf-8")
    datalist = {name: [entry] if name == split else [] for name in ("training", "validation", "test")}
    (root / "datalist.json").write_text(json.dumps(datalist), encoding="utf-8")
    (root / "manifest.json").write_text(json.dumps({"kind": "petdds", "complete": True, "config": {
        "scanner_preset": "tiny_3d", "fwhm_mm": 0.0}}), encoding="utf-8")
    return {"root": root, "folder": folder, **arrays}


class Workspace:
    """The temporary folder of a check run: ``case_dir(name)`` per case, and tiny shared inputs built on first use
    (``torch`` imported lazily)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.shared = self.root / "_shared"
        self.shared.mkdir(parents=True, exist_ok=True)

    def case_dir(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # ---------------------------------------------------------------- PET-DDS-δ
    PETDDS_TINY: ClassVar[dict[str, object]] = {
        "network_def#channels": [8, 8], "network_def#attention_levels": [False, False],
        "network_def#num_head_channels": 8, "network_def#norm_num_groups": 8, "num_inference_steps": 2,
        "num_subsets": 2, "steps_per_diffusion_step": 1, "osem_iterations": 1, "scanner_preset": "tiny_3d",
        "fwhm_mm": 0.0, "device": "cpu",
    }
    """Config overrides of a tiny PET-DDS-δ (the tiny_3d scanner, two sampling steps)."""

    @property
    def petdds_overrides(self) -> list[str]:
        return [a for key, value in self.PETDDS_TINY.items() for a in ("--override", f"{key}={json.dumps(value)}")]

    @cached_property
    def petdds_checkpoint(self) -> Path:
        """Random (seeded) weights of the tiny PET-DDS-δ network, ``{"network": state_dict}``."""
        import torch

        from .config import method_parser

        torch.manual_seed(0)
        path = self.shared / "petdds_tiny.pt"
        network = method_parser("petdds", overrides=self.PETDDS_TINY).get_parsed_content("network_def")
        torch.save({"network": network.state_dict()}, path)
        return path

    @cached_property
    def sinogram(self) -> Path:
        """Poisson(3) counts of the tiny_3d scanner's sinogram shape."""
        import numpy as np

        from bundle.physics import preset

        path = self.shared / "sinogram.npy"
        shape = preset("tiny_3d").layout.shape
        np.save(path, np.random.default_rng(0).poisson(3.0, shape).astype(np.float32))
        return path

    def petdds_infer(self, *args: str, image: str | Path | None = None, background: str = "1.0") -> list[str]:
        """``bundle.app infer --method petdds`` of the tiny model with ``args`` (image: the shared sinogram)."""
        inputs = ["--image", str(image or self.sinogram)] if "--sample" not in args else []
        if "--sample" not in args and "--background" not in args:
            inputs += ["--background", background]
        return ["bundle.app", "infer", "--method", "petdds", *inputs, "--checkpoint", str(self.petdds_checkpoint),
                *self.petdds_overrides, *args]

    @cached_property
    def petdds_dataset(self) -> Path:
        """A hand-made petdds dataset of one sample ``s00`` on the tiny_3d scanner, laid out as ``bundle.data build``
        writes it (``samples/s00/``, two low-count realisations at f = 0.25, a reference volume of ones)."""
        from bundle.physics import preset

        root = self.shared / "petdds_dataset"
        fabricate_petdds_dataset(root, sample_id="s00", split="training", seed=1, background=2.0,
                                 full_counts=12.0, low_counts=3.0, count_scale_full=4.0,
                                 extra_entry={"reference": "samples/s00/reference.nii.gz", "training_slices": [0]})
        self.nifti(root / "samples" / "s00" / "reference.nii.gz", preset("tiny_3d").image.shape[::-1])  # (x, y, z)
        return root

    def fake_dataset(self, kind: str) -> Path:
        """A folder whose manifest says ``kind`` (and an empty datalist): enough for the kind checks."""
        root = self.shared / f"fake_{kind}"
        if not root.is_dir():
            root.mkdir()
            (root / "manifest.json").write_text(json.dumps({"kind": kind, "complete": True}))
            (root / "datalist.json").write_text(json.dumps({"training": [], "validation": [], "test": []}))
        return root

    # ---------------------------------------------------------------- uPETe
    @cached_property
    def upete_checkpoint(self) -> Path:
        """A combined uPETe checkpoint (:mod:`bundle.checkpoint.upete`) of random tiny weights, variant LDM-CT."""
        import torch

        from bundle.checkpoint.upete import Calibration, combined_state

        from .config import method_parser

        tiny = {"autoencoder_layout": {"channels": [4, 8, 8], "num_res_blocks": 1, "norm_num_groups": 4},
                "denoiser_layout": {"channels": [8, 16], "num_res_blocks": 1, "attention_levels": [False, True],
                                    "norm_num_groups": 4, "num_head_channels": 8, "ct_head_channels": 8,
                                    "ct_window": 2},
                "ct_encoder_layout": {"channels": [4, 8, 8], "num_res_blocks": 1, "norm_num_groups": 4},
                "variant": "LDM-CT", "device": "cpu"}
        calibration = Calibration(latent_scale=1.0, count_scale=1.0, latent_noise_variance=0.01, reference_dose=0.5,
                                  dose_estimator_a=1.0, dose_estimator_b=0.0)
        torch.manual_seed(0)
        parser = method_parser("upete", overrides=tiny)
        parser["upete_calibration"] = calibration
        network = parser.get_parsed_content("upete_network")
        settings = parser.get_parsed_content("upete_settings")
        path = self.shared / "upete_tiny.pt"
        torch.save(combined_state(network=network, calibration=calibration, variant="LDM-CT",
                                  settings=json.loads(json.dumps(settings, default=list))), path)
        return path

    def nifti(self, path: Path, shape: Sequence[int], value: float = 1.0) -> Path:
        """A float32 NIfTI of ``shape`` (2 mm voxels) filled with ``value``."""
        import nibabel as nib
        import numpy as np

        nib.save(nib.Nifti1Image(np.full(tuple(shape), value, dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0])),
                 str(path))
        return path

    def upete_infer(self, *args: str) -> list[str]:
        return ["bundle.app", "infer", "--method", "upete", "--checkpoint", str(self.upete_checkpoint),
                "--override", "device=\"cpu\"", *args]

    # ---------------------------------------------------------------- model zoo
    @cached_property
    def zoo_bundle(self) -> Path:
        """A two-file bundle folder with its ``checksums.sha256`` (:func:`bundle.zoo.archive.write_checksums`)."""
        from bundle.zoo.archive import write_checksums

        root = self.shared / "zoo" / "tiny_bundle"
        (root / "configs").mkdir(parents=True)
        (root / "configs" / "inference.json").write_text("{}\n")
        (root / "models").mkdir()
        (root / "models" / "model.pt").write_bytes(b"weights")
        write_checksums(root)
        return root

    def zoo_zip(self, path: Path, *, tamper: bool = False) -> Path:
        """The zoo bundle zipped to ``path``; ``tamper``: ``models/model.pt`` altered after its checksum."""
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            for file in sorted(p for p in self.zoo_bundle.rglob("*") if p.is_file()):
                data = file.read_bytes()
                if tamper and file.name == "model.pt":
                    data = b"other weights"
                archive.writestr(f"tiny_bundle/{file.relative_to(self.zoo_bundle)}", data)
        return path


Commands = Callable[[Workspace, Path], Sequence[Sequence[str]]]


@dataclass(frozen=True, kw_only=True)
class Case:
    """One bad input: its ``name``, the ``commands`` (``[module, *args]`` each, run in order in the case folder),
    what ``setup`` fabricates, the files it ``protect``s, the ``expect``ed :class:`Outcome` and a ``verify`` of the
    runs (returns what is wrong or ``None``); ``what`` says the input in words (the docs table)."""

    name: str
    what: str
    commands: Commands
    setup: Callable[[Workspace, Path], None] | None = None
    protect: Callable[[Workspace, Path], Sequence[Path]] | None = None
    expect: Outcome = Outcome.NAMED_ERROR
    verify: Callable[[Workspace, Path, Sequence[Run]], str | None] | None = None


@dataclass
class Result:
    """A case's outcome, its runs and the time it took."""

    case: Case
    outcome: Outcome
    runs: list[Run]
    seconds: float
    problem: str | None = None
    changed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == self.case.expect


# -------------------------------------------------------------------------------------------------- running
def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _rebind_streams() -> None:
    """In a forked child: ``sys.stdout`` / ``sys.stderr`` (and the logging handlers that wrote to the old ones) on
    file descriptors 1 and 2, as in a fresh interpreter (the parent's may be a test runner's capture objects)."""
    import logging

    old = {id(sys.stdout): "out", id(sys.stderr): "err", id(sys.__stdout__): "out", id(sys.__stderr__): "err"}
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for handler in (h for logger in loggers for h in logger.handlers):
        stream = getattr(handler, "stream", None)
        if isinstance(handler, logging.StreamHandler) and id(stream) in old:
            handler.setStream(sys.stdout if old[id(stream)] == "out" else sys.stderr)


def _run_forked(command: Sequence[str], cwd: Path, out: Path) -> Run:
    """``python -m command[0] command[1:]`` in a child forked from this process (module docstring)."""
    stdout_path, stderr_path = out / "stdout.txt", out / "stderr.txt"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            import runpy
            import traceback

            with open(stdout_path, "wb") as o, open(stderr_path, "wb") as e:
                os.dup2(o.fileno(), 1)
                os.dup2(e.fileno(), 2)
            _rebind_streams()
            os.chdir(cwd)
            sys.argv = [f"python -m {command[0]}", *command[1:]]
            try:
                runpy.run_module(command[0], run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if not isinstance(stop.code, int | None):
                    print(stop.code, file=sys.stderr)
            except BaseException:  # what the interpreter does with an uncaught exception
                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return Run(code, stdout_path.read_text(errors="replace"), stderr_path.read_text(errors="replace"))


def _run_fresh(command: Sequence[str], cwd: Path, timeout_s: float) -> Run:
    done = subprocess.run([sys.executable, "-m", *command], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    return Run(done.returncode, done.stdout, done.stderr)


def run_case(case: Case, workspace: Workspace, *, fresh: bool = False, timeout_s: float = 300.0) -> Result:
    """Set up, run and classify one case."""
    folder = workspace.case_dir(case.name)
    start = time.perf_counter()
    if case.setup is not None:
        case.setup(workspace, folder)
    protected = list(case.protect(workspace, folder)) if case.protect else []
    before = {str(p): _digest(p) for p in protected}
    missing = [p for p, digest in before.items() if digest is None]
    if missing:
        raise ValueError(f"case {case.name}: protect names files that setup did not write: {missing}")
    commands = [list(c) for c in case.commands(workspace, folder)]
    runs = []
    for index, command in enumerate(commands):
        out = folder / f"_run{index}"
        out.mkdir(exist_ok=True)
        runs.append(_run_fresh(command, REPO, timeout_s) if fresh else _run_forked(command, REPO, out))
    changed = [p for p, digest in before.items() if _digest(Path(p)) != digest]
    problem = case.verify(workspace, folder, runs) if case.verify else None
    if problem is None and case.expect == Outcome.NAMED_ERROR and runs[-1].returncode == 0:
        problem = "exited 0 where an error was due"
    outcome = classify(runs, changed=changed, problem=problem)
    return Result(case, outcome, runs, time.perf_counter() - start, problem, changed)


def run_cases(cases: Sequence[Case] | None = None, *, root: str | Path | None = None, fresh: bool = False,
              select: Sequence[str] | None = None, report: Callable[[Result], None] | None = None) -> list[Result]:
    """Run ``cases`` (default :data:`bundle.app.bad_input_cases.CASES`; ``select``: those names only) in ``root``
    (default: a new temporary folder, removed afterwards); ``report`` is called after each case."""
    if cases is None:
        from .bad_input_cases import CASES as cases
    cases = list(cases)
    if select is not None:
        unknown = sorted(set(select) - {c.name for c in cases})
        if unknown:
            raise ValueError(f"select names unknown cases {unknown}; known: {[c.name for c in cases]}")
        cases = [c for c in cases if c.name in set(select)]
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"case names must be unique, got {sorted(n for n in set(names) if names.count(n) > 1)}")
    if not fresh:  # import once, before the children are forked
        import monai  # noqa: F401
        import torch

        import bundle.app.cli  # noqa: F401

        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") if root is None else _keep(root) as folder:
        workspace = Workspace(folder)
        results = []
        for case in cases:
            result = run_case(case, workspace, fresh=fresh)
            results.append(result)
            if report is not None:
                report(result)
    return results


class _keep:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __enter__(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        return str(self.root)

    def __exit__(self, *exc: object) -> None:
        return None


def summary(results: Sequence[Result]) -> dict[str, int]:
    """``{"tried": n, "named error": ..., "handled": ..., "traceback": ..., "silent wrong": ..., "data lost": ...,
    "unclear exit": ..., "not as expected": ...}``."""
    counts = {"tried": len(results), **{o.value: sum(r.outcome == o for r in results) for o in Outcome}}
    counts["not as expected"] = sum(not r.ok for r in results)
    return counts

