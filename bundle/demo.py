"""Physics stage of the main job: OSEM and MAP-EM of simulated MNI152 brain scans, tuned on validation subjects.

    python -m bundle.demo --output results/physics [--preset small_3d] [--counts 3e6] [--seed 0]
                          [--betas 0.0025,0.005,0.01] [--passes 1,2,3]

Pipeline, every step an existing piece of the bundle:

1. data: ``validation_subjects`` + 1 subjects of the embedded MNI152 FDG brain (:mod:`bundle.data.mni152`, from the
   tissue maps inside the nilearn wheel; per-subject deformation, rotation and lesions), scanned on the scanner
   preset (default ``small_3d``: image 8 × 64 × 64 at 4 mm) through y = n ⊙ a ⊙ A(G x) + s: one measured scan of
   ``total_counts`` expected counts per subject and a reference scan of ``reference_counts``, reconstructed by OSEM
   (``reference_osem``, default 16 subsets × 3 passes): a ``petdds`` dataset (``bundle.data.build``, the PET-DDS-δ
   builder) in ``OUTPUT/data``;
2. choice on the validation subjects (:func:`bundle.workflows.petdds_tuning.tune_petdds`, the rule of the PET-DDS-δ
   evaluation, docs/petdds.md "Tuning on the validation subjects"): every relative β of MAP-EM (3D RDP,
   one-step-late, β = relative × mean_head Aᵀ1) is run once and read out after every pass count; OSEM is the β = 0
   row (MAP-EM with β = 0 is exactly OSEM, :func:`bundle.physics.map_em`).  Every setting is scored against the
   reference in the head mask (μ > 0) and the one with the smallest mean NRMSE over the validation cases is kept,
   for OSEM among the β = 0 rows, for MAP-EM among the β > 0 rows.  ``OUTPUT/tuning/tune.md`` lists every setting;
3. report on the held-out test subject (:func:`bundle.workflows.petdds.evaluate_petdds`, split ``test``) with the
   chosen settings: ``OUTPUT/evaluation/{table.md,per_case.csv,summary.json,reconstructions/}``;
4. ``OUTPUT/demo.md`` (the rule, the choice, the test table), ``OUTPUT/demo.png`` (phantom, reference, OSEM and
   MAP-EM of the test subject in axial, coronal and sagittal views with a colour bar,
   :func:`bundle.evaluation.volume_panel`) and ``OUTPUT/demo.json`` (every setting and number).

Metrics: :func:`bundle.metrics.image_metrics` in the head mask against the reference, in the project's default
metric convention (``docs/metrics.md``: NRMSE = ‖x − r‖₂ / ‖r‖₂, PSNR with L = max r, SSIM; as fractions).
Importing this module runs nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._checks import check_int, check_positive, check_real, check_sequence
from .physics import PRESETS, ImageGeometry

__all__ = ["DEFAULT_BETAS", "DEFAULT_PASSES", "main", "run_demo", "validation_choice"]

DEFAULT_BETAS: tuple[float, ...] = (0.0025, 0.005, 0.01)
"""Relative MAP-EM β values tried on the validation subjects (β = relative × mean_head Aᵀ1)."""
DEFAULT_PASSES: tuple[int, ...] = (1, 2, 3)
"""Pass counts (iterations over all subsets) tried for OSEM and for every β of MAP-EM."""
_METHODS = ("OSEM", "MAP-EM")


def validation_choice(map_em_rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """OSEM's and MAP-EM's settings from the MAP-EM rows of :func:`~bundle.workflows.petdds_tuning.tune_petdds`
    (already sorted by mean validation NRMSE, failed settings last): OSEM = the first β = 0 row, MAP-EM = the first
    β > 0 row.  Returns ``{"OSEM": {"iterations", "NRMSE"}, "MAP-EM": {"beta", "iterations", "NRMSE"}}`` (NRMSE: the
    mean over the validation cases).  ``RuntimeError`` when a method has no setting that ran on every case."""
    choice = {}
    for method, wanted in (("OSEM", lambda beta: beta == 0), ("MAP-EM", lambda beta: beta > 0)):
        row = next((r for r in map_em_rows if "error" not in r and wanted(r["beta"])), None)
        if row is None:
            raise RuntimeError(f"no {method} setting ran on every validation case; see tuning/tune.md")
        choice[method] = {"iterations": row["iterations"], "NRMSE": row["NRMSE"]["mean"]}
        if method == "MAP-EM":
            choice[method]["beta"] = row["beta"]
    return choice


def _passes(count: int) -> str:
    return f"{count} pass" + ("" if count == 1 else "es")


def _markdown(summary: dict[str, Any], table: str) -> str:
    s, choice = summary, summary["choice"]
    osem, mapem = choice["OSEM"], choice["MAP-EM"]
    image = " × ".join(str(n) for n in s["image_shape"])
    voxel = " × ".join(f"{v:g}" for v in s["voxel_size_mm"])
    return "\n".join([
        "# Physics stage: OSEM and MAP-EM of simulated MNI152 brain scans",
        "",
        f"Phantoms: the embedded MNI152 FDG brain (`bundle.data.mni152`, nilearn's ICBM152 2009a tissue maps, no "
        f"download), {len(s['validation_subjects']) + 1} subjects drawn with seed {s['seed']} (deformation, rotation, "
        f"lesions). Scanner `{s['scanner_preset']}` (image {image} voxels of {voxel} mm), attenuation, "
        f"{s['fwhm_mm']:g} mm FWHM resolution, background 30 % of the mean trues; measured scans of "
        f"{s['total_counts']:.3g} expected counts, {s['num_subsets']} subsets. Reference: OSEM "
        f"({s['reference_osem'][0]} subsets × {s['reference_osem'][1]} passes) of a {s['reference_counts']:.3g}-count "
        "scan of the same subject, as in the PET-DDS-δ evaluation.",
        "",
        "Choice rule (the PET-DDS-δ evaluation's, `bundle.workflows.petdds_tuning.tune_petdds`): on the validation "
        f"subjects ({', '.join(s['validation_subjects'])}) OSEM after {s['passes']} passes and MAP-EM (3D RDP, "
        f"relative β in {s['map_em_betas']}, β = relative × mean Aᵀ1 over the head) after the same pass counts are "
        "scored against the reference in the head mask (μ > 0); each method keeps the setting with the smallest mean "
        "NRMSE (OSEM = MAP-EM with β = 0; every setting in `tuning/tune.md`). The test subject "
        f"({', '.join(s['test_subjects'])}) took no part in the choice.",
        "",
        "| method | chosen on validation | validation NRMSE (mean) |",
        "|---|---|---|",
        f"| OSEM | {s['num_subsets']} subsets × {_passes(osem['iterations'])} | {osem['NRMSE']:.4f} |",
        f"| MAP-EM (RDP) | relative β {mapem['beta']:g} (absolute {s['map_em_beta_absolute']:.4g}), "
        f"{_passes(mapem['iterations'])} | {mapem['NRMSE']:.4f} |",
        "",
        f"Held-out test subject, chosen settings (metric convention {s['metric_convention']!r}, NRMSE and SSIM as "
        "fractions, PSNR in dB, head mask):",
        "",
        table,
        "",
        f"Wall time of the stage: {s['seconds']:.0f} s (data {s['stage_seconds']['data']:.0f} s, choice "
        f"{s['stage_seconds']['choice']:.0f} s, test {s['stage_seconds']['test']:.0f} s).",
        "",
        "![panel](demo.png)",
        "",
    ])


def _figure(output: Path, data: Path, test_entry: dict, total_counts: float) -> ImageGeometry:
    """``OUTPUT/demo.png``: phantom, reference, OSEM and MAP-EM of the test subject (the head's bounding box in y, x
    with a 2-voxel margin, all planes); returns the image geometry."""
    import torch

    from .data.brain import FDG_ACTIVITY_UNIT
    from .data.io import load_image
    from .evaluation import volume_panel

    stem = output / "evaluation" / "reconstructions" / f"{test_entry['id']}_r00"
    panel = {"phantom": load_image(data / test_entry["activity"])[0],
             "reference": load_image(data / test_entry["reference"])[0],
             "OSEM": load_image(Path(f"{stem}_osem.nii.gz"))[0],
             "MAP-EM (RDP)": load_image(Path(f"{stem}_map_em.nii.gz"))[0]}
    mask = load_image(data / test_entry["mu_map"])[0] > 0
    _, geometry = load_image(data / test_entry["reference"])
    rows, cols = (torch.nonzero(mask.any(dim=d))[:, 0] for d in ((0, 2), (0, 1)))
    box = (slice(None), slice(max(int(rows.min()) - 2, 0), int(rows.max()) + 3),
           slice(max(int(cols.min()) - 2, 0), int(cols.max()) + 3))
    cropped = {name: image[box] for name, image in panel.items()}
    top = float(torch.quantile(panel["reference"][mask], 0.995))  # the noisy end planes would set the max
    volume_panel(cropped, output / "demo.png", unit=FDG_ACTIVITY_UNIT, vmax=top,
                 geometry=ImageGeometry(shape=tuple(cropped["reference"].shape), voxel_size_mm=geometry.voxel_size_mm),
                 title=f"{test_entry['id']} (held-out test subject), {total_counts:.3g} counts; grey scale up to "
                       "the 99.5th percentile of the reference in the head")
    return geometry


def run_demo(
    *,
    output: Path,
    preset_name: str = "small_3d",
    total_counts: float = 3e6,
    reference_counts: float = 3e8,
    seed: int = 0,
    validation_subjects: int = 2,
    num_subsets: int = 16,
    map_em_betas: Sequence[float] = DEFAULT_BETAS,
    passes: Sequence[int] = DEFAULT_PASSES,
    reference_osem: tuple[int, int] = (16, 3),
    progress: bool = True,
) -> dict[str, Any]:
    """Run the physics stage (module docstring) into ``output``; returns the summary written to ``demo.json``.

    Args:
        output: folder of the results (created); its ``data`` subfolder is reused when it holds the same build.
        preset_name: scanner preset (:data:`bundle.physics.PRESETS`).
        total_counts: expected total counts of each measured scan (> 0).
        reference_counts: expected total counts of the reference scans (>= total_counts).
        seed: seed of the dataset (phantoms, noise, split).
        validation_subjects: subjects the settings are chosen on (>= 1); one more subject is the test subject.
        num_subsets: OSEM / MAP-EM subsets.
        map_em_betas: relative MAP-EM β values (> 0) tried on the validation subjects.
        passes: pass counts (ints >= 1) tried for OSEM and for each β.
        reference_osem: (subsets, passes) of the reference reconstruction.
        progress: progress bars and step lines.
    """
    from .data.build import build_dataset
    from .evaluation import write_json
    from .workflows.petdds import evaluate_petdds
    from .workflows.petdds_tuning import tune_petdds

    total_counts = check_positive(total_counts, "total_counts")
    if check_positive(reference_counts, "reference_counts") < total_counts:
        raise ValueError(f"reference_counts must be >= total_counts ({total_counts:g}), got {reference_counts:g}")
    if preset_name not in PRESETS:
        raise ValueError(f"preset_name must be one of {PRESETS}, got {preset_name!r}")
    validation_subjects = check_int(validation_subjects, "validation_subjects", minimum=1)
    # β = 0 is OSEM, added by the stage: the MAP-EM grid is β > 0
    betas = tuple(check_sequence(map_em_betas, "map_em_betas", lambda v, n: check_real(v, n, "> 0", lambda x: x > 0)))
    pass_counts = tuple(check_sequence(passes, "passes", lambda v, n: check_int(v, n, minimum=1)))
    output = Path(output)
    start = time.perf_counter()
    seconds: dict[str, float] = {}

    def step(text: str) -> None:
        if progress:
            print(f"[physics] {text} ({time.perf_counter() - start:.0f} s)", flush=True)

    step("1/3 data: MNI152 brain phantoms and their scans")
    data = output / "data"
    fwhm_mm = 4.5
    build_dataset("petdds", output=data, preset_name="tiny", seed=seed, progress=progress,
                  scanner_preset=preset_name, subjects=validation_subjects + 1, split=(0, validation_subjects, 1),
                  realisations=1, full_counts=float(reference_counts),
                  low_count_fraction=float(total_counts) / float(reference_counts), fwhm_mm=fwhm_mm,
                  osem_subsets=reference_osem[0], osem_iterations=reference_osem[1])
    seconds["data"] = time.perf_counter() - start

    step(f"2/3 choice on {validation_subjects} validation subject(s): OSEM and MAP-EM at {len(betas)} β × "
         f"{max(pass_counts)} passes")
    convention = "default"
    tuning = tune_petdds(data, output_dir=output / "tuning", network=None, map_em_betas=(0.0, *betas),
                         map_em_iterations=pass_counts, realisations=1, osem=(num_subsets, 1), progress=progress,
                         metric_convention=convention)
    choice = validation_choice(tuning["map_em"])
    seconds["choice"] = time.perf_counter() - start - seconds["data"]

    step(f"3/3 test subject: OSEM {choice['OSEM']['iterations']} passes, MAP-EM relative β "
         f"{choice['MAP-EM']['beta']:g} × {choice['MAP-EM']['iterations']} passes")
    evaluation = evaluate_petdds(data, output_dir=output / "evaluation", methods=_METHODS,
                                 osem=(num_subsets, choice["OSEM"]["iterations"]),
                                 map_em_beta=choice["MAP-EM"]["beta"],
                                 map_em_iterations=choice["MAP-EM"]["iterations"], realisations=1, split="test",
                                 figures=False, progress=progress, metric_convention=convention)
    seconds["test"] = time.perf_counter() - start - seconds["data"] - seconds["choice"]

    test_entry = _entry(data, "test")
    geometry = _figure(output, data, test_entry, total_counts)
    summary: dict[str, Any] = {
        "bundle_version": __version__,
        "scanner_preset": preset_name,
        "image_shape": list(geometry.shape),
        "voxel_size_mm": list(geometry.voxel_size_mm),
        "total_counts": float(total_counts),
        "reference_counts": float(reference_counts),
        "reference_osem": list(reference_osem),
        "fwhm_mm": fwhm_mm,
        "seed": seed,
        "num_subsets": num_subsets,
        "map_em_betas": list(betas),
        "passes": list(pass_counts),
        "metric_convention": convention,
        "validation_subjects": [e["id"] for e in _entries(data, "validation")],
        "test_subjects": [test_entry["id"]],
        "rule": "per method the setting with the smallest mean NRMSE over the validation cases "
                "(bundle.workflows.petdds_tuning.tune_petdds; OSEM = the beta = 0 rows)",
        "choice": choice,
        "map_em_beta_absolute": next(iter(evaluation["settings"]["map_em_beta_absolute"].values())),
        "test": {m: {k: evaluation["summary"][m][k]["mean"] for k in ("NRMSE", "PSNR", "SSIM")} for m in _METHODS},
        "files": {"tuning": tuning["files"], "evaluation": {k: v for k, v in evaluation["files"].items()
                                                            if k != "reconstructions"}},
        "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    (output / "demo.md").write_text(_markdown(summary, evaluation["table"]), encoding="utf-8")
    write_json(output / "demo.json", summary)
    step("done")
    return summary


def _entries(data: Path, split: str) -> list[dict]:
    import json

    return json.loads((data / "datalist.json").read_text(encoding="utf-8"))[split]


def _entry(data: Path, split: str) -> dict:
    return _entries(data, split)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bundle.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("results/physics"))
    parser.add_argument("--preset", default="small_3d", choices=PRESETS, help="scanner preset")
    parser.add_argument("--counts", type=float, default=3e6, help="expected total counts of each measured scan")
    parser.add_argument("--reference-counts", type=float, default=3e8, help="expected counts of the reference scans")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subsets", type=int, default=16)
    parser.add_argument("--validation-subjects", type=int, default=2,
                        help="subjects the settings are chosen on (one more is the test subject)")
    parser.add_argument("--betas", default=",".join(f"{b:g}" for b in DEFAULT_BETAS),
                        help="comma-separated relative MAP-EM β values tried on the validation subjects")
    parser.add_argument("--passes", default=",".join(str(k) for k in DEFAULT_PASSES),
                        help="comma-separated pass counts tried for OSEM and MAP-EM")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    summary = run_demo(output=args.output, preset_name=args.preset, total_counts=args.counts,
                       reference_counts=args.reference_counts, seed=args.seed, num_subsets=args.subsets,
                       validation_subjects=args.validation_subjects,
                       map_em_betas=[float(v) for v in args.betas.split(",")],
                       passes=[int(v) for v in args.passes.split(",")],
                       progress=not args.no_progress)
    for name, m in summary["test"].items():
        print(f"{name:8s} NRMSE {m['NRMSE']:.4f}  PSNR {m['PSNR']:.2f} dB  SSIM {m['SSIM']:.4f}")
    print(f"results written to {args.output.resolve()} (demo.md, demo.png, demo.json, tuning/, evaluation/)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
