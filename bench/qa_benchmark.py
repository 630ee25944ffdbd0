"""QA benchmark: does the quality verdict flag failed registrations and pass good ones, whichever image is fixed?

The cases are the capture benchmark's (capture_benchmark.py: the MR moved by random rigid poses, rotation
uniform over SO(3), offset up to 250 mm). Each case is registered by `ctmr-register` with the CT fixed and
with the MR fixed, and by the two peers with the CT fixed (elastix generic rigid from the geometric
centres; moments + Mattes MI), which fail most poses. Every transform is then assessed by the library's
`qa.assess` (what `ctmr-qa` runs) twice, with the CT fixed and with the MR fixed (the inverse transform), and
scored against the truth: its p95 error over CT-object points against the reference transform composed with
the pose.

Prints per case the error and verdict of each method, then for each direction the confusion table of truth band
against verdict, the false-alarm rate (within 2 mm, read failed), the silent rate (beyond 10 mm, read ok or
check), how many 3-10 mm results read check or failed, the error bound's coverage, the verdicts that differ
between the directions, and the cue values per truth band. --bundled runs on the 2 mm sample pair instead of
the full-resolution data (faster, same failure modes). The labelled calibration set with exact truth is
qa_calibration.py's.

--near-misses N adds N transforms that no method produced: the reference disturbed by small rigid motions
about the CT object's centre (0-3 degrees, 0-6 mm), whose errors fall around the 5 mm line. They are
scored in their own table: the hard band that the registrations above rarely visit.

    python bench/qa_benchmark.py [--cases 20] [--near-misses 40] [--threads 2] [--restarts 2] [--bundled]
                                 [--no-moments] [--json runs.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from CTMRRegistrationLib.core import resources
from CTMRRegistrationLib.core.geometry import matrix_from_sitk, p95_distance
from CTMRRegistrationLib.core.imaging import resample_isotropic, shrink_to_spacing
from CTMRRegistrationLib.core.masks import ct_body_mask
from CTMRRegistrationLib.qa.assess import QAOptions
from CTMRRegistrationLib.qa.images import QA_SPACING_MM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture_benchmark import (  # noqa: E402
    data_dir,
    move_header,
    moved_cases,
    run_generic_rigid,
    run_moments_mi,
    run_ours,
)
from qa_calibration import (  # noqa: E402
    DIRECTIONS,
    assess_both_ways,
    bound_lines,
    confusion,
    cue_table,
    rates,
    symmetry_lines,
)


def inputs(bundled: bool) -> tuple[Path, sitk.Image, np.ndarray]:
    """CT path, MR image and reference CT->MR matrix: the 2 mm sample pair or the full-resolution data."""
    if bundled:
        ct_path, mr_path = resources.sample_ct_path(), resources.sample_mr_path()
        reference_path = resources.sample_reference_transform_path()
    else:
        folder = data_dir()
        ct_path, mr_path = folder / "ct_fullres.nii.gz", folder / "mr_t2_fullres.nii.gz"
        reference_path = folder / "reference_rigid_fixedCT_movingMR.tfm"
    return ct_path, sitk.ReadImage(str(mr_path)), matrix_from_sitk(sitk.ReadTransform(str(reference_path)))


def ct_object_points(ct: sitk.Image, count: int = 3000) -> np.ndarray:
    """Points (LPS) inside the CT body, where errors are measured (as capture_benchmark.py does)."""
    coarse = shrink_to_spacing(sitk.Cast(ct, sitk.sitkFloat32), 2.0)
    voxels = np.argwhere(sitk.GetArrayFromImage(ct_body_mask(coarse)) > 0)[:, ::-1].astype(float)
    voxels = voxels[np.random.default_rng(0).choice(len(voxels), min(count, len(voxels)), replace=False)]
    return np.array([coarse.TransformContinuousIndexToPhysicalPoint(v.tolist()) for v in voxels])


def registrations(ct_path: Path, moved: Path, work: Path, threads: int, moments: bool) -> dict:
    """Fixed->moving CT->MR matrices (None on failure) of every method; 'ours MR fixed' inverted."""
    runs = {"ours CT fixed": run_ours(ct_path, moved, work, threads)[0]}
    backward = run_ours(moved, ct_path, work, threads)[0]
    runs["ours MR fixed"] = None if backward is None else np.linalg.inv(backward)
    runs["elastix generic rigid"] = run_generic_rigid(ct_path, moved, work, threads)[0]
    if moments:
        runs["moments + Mattes MI"] = run_moments_mi(ct_path, moved, work, threads)[0]
    return runs


def near_misses(count: int, seed: int, reference: np.ndarray, centre: np.ndarray) -> list[np.ndarray]:
    """The reference disturbed by rigid motions about `centre`: 0-3 degrees about a random axis, 0-6 mm."""
    rng = np.random.default_rng(seed + 1)
    disturbed = []
    for _ in range(count):
        axis, direction = rng.normal(size=3), rng.normal(size=3)
        motion = np.eye(4)
        motion[:3, :3] = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(rng.uniform(0, 3))).as_matrix()
        motion[:3, 3] = centre - motion[:3, :3] @ centre + direction / np.linalg.norm(direction) * rng.uniform(0, 6)
        disturbed.append(reference @ motion)
    return disturbed


def scored_run(case: int, name: str, matrix, expected, points, ct_qa, mr_qa, options: QAOptions) -> dict:
    """One transform's p95 error against `expected` and its assessment with the CT fixed and with the MR fixed."""
    return {"case": case, "method": name, "true_error_mm": p95_distance(matrix, expected, points),
            "directions": assess_both_ways(ct_qa, mr_qa, matrix, options)}


def summary(title: str, runs: list[dict]) -> None:
    """Per direction: the confusion table of truth band against verdict, the rates and the bound's coverage."""
    print(f"\n{title}: {len(runs)} assessed transforms, each both ways")
    for direction in DIRECTIONS:
        print(f"\n{direction}\n{confusion(runs, direction)}")
        for line in rates(runs, direction) + bound_lines(runs, direction):
            print(line)
    for line in symmetry_lines(runs):
        print(line)


def cell(run: dict) -> str:
    verdicts = "/".join(run["directions"][d]["verdict"] for d in DIRECTIONS)
    seconds = np.mean([run["directions"][d]["seconds"] for d in DIRECTIONS])
    return f"{run['true_error_mm']:6.1f} mm {verdicts:<13} ({seconds:.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--near-misses", type=int, default=0, help="disturbed reference transforms to assess")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--restarts", type=int, default=QAOptions.restarts, help="QA restarts per assessment")
    parser.add_argument("--bundled", action="store_true", help="use the 2 mm sample pair (faster)")
    parser.add_argument("--no-moments", action="store_true", help="skip the slow moments + Mattes MI peer")
    parser.add_argument("--json", type=Path, help="write every run's error, verdict and cues here")
    args = parser.parse_args()

    ct_path, mr, reference = inputs(args.bundled)
    ct = sitk.ReadImage(str(ct_path))
    points = ct_object_points(ct)
    # The QA grids are 2 mm isotropic; resampling once here is what assess() would do on every call.
    ct_qa, mr_qa = resample_isotropic(ct, QA_SPACING_MM), resample_isotropic(mr, QA_SPACING_MM)
    centre = np.asarray(mr.TransformContinuousIndexToPhysicalPoint([s / 2 for s in mr.GetSize()]))
    options = QAOptions(restarts=args.restarts, threads=args.threads)
    runs, no_transform = [], 0
    with tempfile.TemporaryDirectory(prefix="ctmr-qa-bench-") as work:
        work = Path(work)
        for case, pose, moved in moved_cases(mr, args.cases, args.seed, centre, work):
            expected = pose @ reference
            cells = []
            for name, matrix in registrations(ct_path, moved, work, args.threads, not args.no_moments).items():
                if matrix is None:
                    no_transform += 1
                    cells.append(f"{name}: no transform")
                    continue
                run = scored_run(case, name, matrix, expected, points, ct_qa, move_header(mr_qa, pose), options)
                runs.append(run)
                cells.append(f"{name}: {cell(run)}")
            rotation = np.degrees(Rotation.from_matrix(pose[:3, :3]).magnitude())
            print(f"case {case:3d} {rotation:6.1f}° | " + " | ".join(cells), flush=True)
    for index, matrix in enumerate(near_misses(args.near_misses, args.seed, reference, points.mean(axis=0))):
        run = scored_run(index, "near miss", matrix, reference, points, ct_qa, mr_qa, options)
        runs.append(run)
        print(f"near miss {index:3d}: {cell(run)} {'; '.join(run['directions']['CT fixed']['reasons'])}", flush=True)

    registered = [run for run in runs if run["method"] != "near miss"]
    print(f"\n{no_transform} registration runs gave no transform")
    summary("Registrations (ours and the peers')", registered)
    if args.near_misses:
        summary("Near misses (the reference disturbed by 0-3 degrees, 0-6 mm)",
                [run for run in runs if run["method"] == "near miss"])
    seconds = [run["directions"][d]["seconds"] for run in runs for d in DIRECTIONS]
    print(f"\nmedian QA time: {np.median(seconds):.1f} s\n")
    print(cue_table(runs))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1, default=float))


if __name__ == "__main__":
    main()
